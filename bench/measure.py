"""What bench/run measures with, independent of which suite is measured.

- Memory is PSS (proportional set size, /proc/<pid>/smaps_rollup), summed over
  every process of a suite: a page shared by n processes counts 1/n in each, so a
  suite of 100 forked processes is not charged 100 times for its shared libraries
  (summed RSS would be).
- fsync behaviour is observed, not assumed: strace -f -c counts the sync calls of
  every process of a suite while a few messages go through it.
- Rates are the median of several runs, with min and max (runs on a shared machine
  vary by 10-25 %).
"""
import os
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "msync", "syncfs", "sync")


# --- processes -------------------------------------------------------------------
def _parents():
    """{pid: ppid} of every process now."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                data = f.read()
            # comm may contain spaces and parentheses: the fields start after the last ')'.
            rest = data[data.rindex(b")") + 2:].split()
            out[int(d)] = int(rest[1])
        except (OSError, ValueError, IndexError):
            pass
    return out


def tree(root_pids):
    """The given pids and all their descendants (that exist now)."""
    parents = _parents()
    children = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    seen = set()
    todo = [p for p in root_pids if p in parents]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(children.get(p, ()))
    return sorted(seen)


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


# --- memory ------------------------------------------------------------------------
def pss_kib(pid):
    """PSS of one process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def pss_anon_kib(pid):
    """Pss_Anon of one process in KiB: PSS without file-backed pages (a mapped
    LMDB file's resident pages are in PSS; a file read with read() is not)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss_Anon:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def suite_pss_anon(root_pids, exclude=()):
    pids = [p for p in tree(root_pids) if not comm(p).startswith(tuple(exclude))] if exclude else tree(root_pids)
    return sum(pss_anon_kib(p) for p in pids)


def suite_pss(root_pids, exclude=()):
    """(total PSS in KiB, number of processes) over root_pids and their descendants,
    leaving out processes whose command name starts with one of `exclude` (a suite's
    daemons that take no part in the scenario)."""
    pids = [p for p in tree(root_pids) if not comm(p).startswith(tuple(exclude))] if exclude else tree(root_pids)
    return sum(pss_kib(p) for p in pids), len(pids)


class PeakPss:
    """Samples a suite's summed PSS in a thread while a run goes on; .peak in KiB."""

    def __init__(self, roots, exclude=(), interval=0.25):
        self.roots = roots
        self.exclude = exclude
        self.interval = interval
        self.peak = 0
        self.peak_anon = 0
        self.peak_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            total, n = suite_pss(self.roots(), self.exclude)
            if total > self.peak:
                self.peak, self.peak_procs = total, n
            self.peak_anon = max(self.peak_anon, suite_pss_anon(self.roots(), self.exclude))
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        total, n = suite_pss(self.roots(), self.exclude)
        if total > self.peak:
            self.peak, self.peak_procs = total, n


# --- fsync behaviour ------------------------------------------------------------------
class SyncCount:
    """strace -f -c on every process of a suite (and whatever they fork) while the
    `with` body runs; .calls = {syscall: count} for the sync family."""

    def __init__(self, roots):
        self.roots = roots
        self.calls = {}
        self.error = None

    def __enter__(self):
        pids = tree(self.roots)
        fd, self.out = tempfile.mkstemp(prefix="tern-bench-strace-")
        os.close(fd)
        args = ["strace", "-f", "-c", "-e", "trace=" + ",".join(SYNC_CALLS), "-o", self.out]
        for p in pids:
            args += ["-p", str(p)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Attached when every process names strace as its tracer.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(_tracer(p) != 0 for p in pids if os.path.exists(f"/proc/{p}")):
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        try:
            with open(self.out) as f:
                text = f.read()
        finally:
            os.unlink(self.out)
        for line in text.splitlines():
            f = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(f) >= 5 and f[-1] in SYNC_CALLS and f[3].isdigit():
                self.calls[f[-1]] = int(f[3])
        if not text.strip():
            self.error = (err or b"").decode(errors="replace").strip()[-300:] or "strace wrote nothing"

    def total(self):
        return sum(self.calls.values())


def _tracer(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- statistics ------------------------------------------------------------------------
def summary(values):
    """(median, min, max) of the values that are numbers, or None when there are none."""
    v = [x for x in values if isinstance(x, (int, float))]
    if not v:
        return None
    return statistics.median(v), min(v), max(v)


# --- Maildir counting -------------------------------------------------------------------
def count_files(*dirs):
    n = 0
    for d in dirs:
        try:
            with os.scandir(d) as it:
                for _ in it:
                    n += 1
        except FileNotFoundError:
            pass
    return n


def move_aside(maildir, aside, owner):
    """Renames maildir/new and maildir/cur to a directory under `aside` and makes
    them anew (owner uid, gid), so the next run starts with empty directories and no
    file is deleted (mass deletes make new inodes slow on ext4 without a journal)."""
    os.makedirs(aside, exist_ok=True)
    for sub in ("new", "cur"):
        d = os.path.join(maildir, sub)
        if os.path.isdir(d):
            n = len(os.listdir(aside))
            os.rename(d, os.path.join(aside, f"{n:04d}-{sub}"))
            os.mkdir(d, 0o700)
            os.chown(d, *owner)


# --- smtp-source -------------------------------------------------------------------------
def smtp_source(port, sessions, messages, size, recipient, parallel=1, host="127.0.0.1"):
    """Sends `messages` messages of `size` body bytes with Postfix's smtp-source,
    `sessions` at a time, a new connection per message (what an MX sees), split over
    `parallel` smtp-source processes. Returns (seconds, client CPU seconds)."""
    procs = []
    t0 = time.monotonic()
    r0 = os.times()
    per_m = [messages // parallel + (1 if i < messages % parallel else 0) for i in range(parallel)]
    per_s = [max(1, sessions // parallel + (1 if i < sessions % parallel else 0)) for i in range(parallel)]
    for i in range(parallel):
        if per_m[i] == 0:
            continue
        procs.append(subprocess.Popen(
            ["smtp-source", "-s", str(per_s[i]), "-m", str(per_m[i]), "-l", str(size), "-f", "bench@sender.example",
             "-t", recipient, "-M", "client.example", f"{host}:{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    errors = []
    for p in procs:
        out, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            errors.append((err or out).decode(errors="replace").strip()[-300:])
    dt = time.monotonic() - t0
    r1 = os.times()
    cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    if errors:
        raise RuntimeError("smtp-source: " + errors[0])
    return dt, cpu


def wait_count(fn, target, timeout, interval=0.02):
    """Polls fn() until it reaches target; returns the monotonic time it did, or
    raises TimeoutError with how far it got."""
    deadline = time.monotonic() + timeout
    n = fn()
    while n < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} of {target} after {timeout:.0f}s")
        time.sleep(interval)
        n = fn()
    return time.monotonic()


# --- mailload (bench/mailload.cc) ------------------------------------------------------------
def build_mailload(build_dir):
    """Compiles bench/mailload.cc into <build>/bench/mailload when it is missing or
    older than its source; returns the path."""
    src = os.path.join(HERE, "mailload.cc")
    out_dir = os.path.join(build_dir, "bench")
    exe = os.path.join(out_dir, "mailload")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(src):
        return exe
    os.makedirs(out_dir, exist_ok=True)
    cxx = os.environ.get("CXX", "c++")
    subprocess.run([cxx, "-std=c++20", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-o", exe + ".tmp", src], check=True)
    os.replace(exe + ".tmp", exe)
    return exe


def parse_kv(line):
    """key=value pairs; error=<reason> is the rest of the line (reasons have spaces)."""
    out = {}
    head, sep, reason = line.partition("error=")
    if sep and (not head or head.endswith(" ")):
        out["error"] = reason.strip()
        line = head
    for part in line.split():
        k, _, v = part.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def mailload(exe, mode, port, timeout=900, **opts):
    """Runs mailload; returns its key=value result as a dict. Raises RuntimeError with
    the client's reason when a command failed."""
    args = [exe, mode, "--port", str(port)]
    for k, v in opts.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    last = (r.stdout.strip().splitlines() or [""])[-1]
    res = parse_kv(last)
    if r.returncode != 0 or "error" in res:
        raise RuntimeError(str(res.get("error", last or r.stderr.strip()[-300:])))
    return res


class HeldConnections:
    """mailload idle: opens n IDLE connections and holds them until close()."""

    def __init__(self, exe, port, n, timeout, **opts):
        args = [exe, "idle", "--port", str(port), "--conns", str(n)]
        for k, v in opts.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = _readline_timeout(self.proc, timeout)
        if not line.startswith("ready"):
            self.close()
            raise RuntimeError(parse_kv(line).get("error", line or "mailload idle gave no answer"))
        self.seconds = parse_kv(line).get("seconds", 0)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=120)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait()


def _readline_timeout(proc, timeout):
    result = []
    t = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        proc.kill()
        return "error=timed-out"
    return result[0].strip()
