"""Start the real Tern daemons for a test and drive them.

Each Tern() gets a short temporary directory (UNIX socket paths are limited to 108
bytes), free loopback ports, a tern.conf written like the development default, and
runs the real tern-master, which starts the real daemons. Everything it starts is
killed when the test ends, even when the test fails. Waiting is always for a
condition with a deadline, never a bare sleep.

Binaries come from $TERN_BUILD_DIR/bin (ctest sets it), else build/bin.
"""
import atexit
import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("TERN_BUILD_DIR", os.path.join(REPO, "build"))
BIN = os.path.join(BUILD, "bin")
# scripts/test --sanitize: the daemons are built with ASan+UBSan (memory figures
# include ASan's shadow and quarantine; a deliberate SIGSEGV meets ASan's handler).
SANITIZED = "ASAN_OPTIONS" in os.environ

_live = []


def _cleanup_all():
    for inst in list(_live):
        inst.stop(kill=True)


atexit.register(_cleanup_all)


def is_root():
    return os.geteuid() == 0


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Polls predicate() until it returns a true value; raises TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = predicate()
            if v:
                return v
        except Exception as e:  # the thing may not exist yet
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_open(path):
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(path)
            return True
    except OSError:
        return False


def proc_status(pid):
    """Fields of /proc/<pid>/status as a dict (Uid, Gid, Groups, State...)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def children_of(pid):
    """PIDs whose parent is pid."""
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if int(proc_status(int(d)).get("PPid", "0")) == pid:
                kids.append(int(d))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return kids


class Tern:
    """One Tern installation: config, state directory, master process."""

    PORT_KEYS = ["smtpd_port", "submission_port", "smtps_port", "imap_port", "imaps_port", "pop3_port", "pop3s_port"]

    def __init__(self, settings=None, address="127.0.0.1", dirname=None, hostname="mail.example.test",
                 domain="example.test"):
        self.address = address
        self.dir = dirname or tempfile.mkdtemp(prefix="tern-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.hostname = hostname
        self.domain = domain
        self.ports = {k: free_port(address) for k in self.PORT_KEYS}
        self.proc = None
        self.extra_env = {}  # added to the environment the master (and so every daemon) gets
        self.log_path = os.path.join(self.dir, "maillog")
        self.conf_path = os.path.join(self.dir, "tern.conf")
        self.settings = {}
        self._write_cert()
        self.settings.update(self._base_settings())
        self.settings.update(settings or {})
        self.write_config()

    # --- paths -----------------------------------------------------------------
    @property
    def run_dir(self):
        return self.settings["base_dir"]

    def socket_path(self, name):
        return os.path.join(self.run_dir, name)

    def port(self, name):
        """Port by service name: smtp, submission, smtps, imap, imaps, pop3, pop3s."""
        key = {"smtp": "smtpd_port"}.get(name, f"{name}_port")
        return int(self.settings[key])

    # --- config ----------------------------------------------------------------
    def _write_cert(self):
        tls = os.path.join(self.dir, "tls")
        os.makedirs(tls, exist_ok=True)
        self.cert = os.path.join(tls, "cert.pem")
        self.key = os.path.join(tls, "key.pem")
        if not os.path.exists(self.cert):
            # The same self-signed certificate code the development default uses.
            subprocess.run([os.path.join(BIN, "ternctl"), "tls-selfsigned", self.cert, self.key, self.hostname],
                           check=True, capture_output=True)

    def _base_settings(self):
        if is_root():
            owner, login, auth, muid, mgid, first = "tern", "tern-login", "tern-auth", "vmail", "vmail", "100"
        else:
            me = pwd.getpwuid(os.geteuid())
            owner = login = auth = muid = me.pw_name
            mgid = str(me.pw_gid)
            first = str(min(me.pw_uid, 500))
        s = {
            "myhostname": self.hostname,
            "mydomain": self.domain,
            "mydestination": "$myhostname, localhost.$mydomain, localhost, $mydomain",
            "inet_interfaces": self.address,
            "inet_protocols": "ipv4",
            "base_dir": os.path.join(self.dir, "run"),
            "queue_directory": os.path.join(self.dir, "spool"),
            "data_directory": os.path.join(self.dir, "lib"),
            "daemon_directory": BIN,
            "command_directory": BIN,
            "mail_home": os.path.join(self.dir, "mail", "%d", "%n"),
            "maillog_file": self.log_path,
            "smtpd_tls_cert_file": self.cert,
            "smtpd_tls_key_file": self.key,
            "mail_owner": owner,
            "default_login_user": login,
            "authd_user": auth,
            "mail_uid": muid,
            "mail_gid": mgid,
            "first_valid_uid": first,
            "master_restart_delay": "1s",
            # A sanitized daemon's exit runs LeakSanitizer over its heap (a ptrace'd
            # stop of every thread): on a loaded 2-core machine that took over 10 s.
            "master_stop_timeout": "60s" if SANITIZED else "10s",
        }
        s.update({k: str(v) for k, v in self.ports.items()})
        return s

    def write_config(self):
        with open(self.conf_path, "w") as f:
            f.write("# written by tests/integration/tern_harness.py\n")
            for k, v in self.settings.items():
                f.write(f"{k} = {v}\n")
        # The log file must be writable by the daemons' users.
        open(self.log_path, "a").close()
        os.chmod(self.log_path, 0o666)

    def set(self, **kv):
        """Changes settings and rewrites tern.conf (call reload() to apply)."""
        self.settings.update({k: str(v) for k, v in kv.items()})
        self.write_config()

    # --- processes -------------------------------------------------------------
    def env(self):
        e = dict(os.environ)
        e["TERN_CONFIG"] = self.conf_path
        e.update(self.extra_env)
        return e

    def sanitizer_option(self, option):
        """Adds an ASAN_OPTIONS entry for this instance's daemons in a sanitized build
        (scripts/test --sanitize); nothing in a plain build."""
        if SANITIZED:
            self.extra_env["ASAN_OPTIONS"] = self.env()["ASAN_OPTIONS"] + ":" + option

    def expect_crashes(self):
        """Marks the daemons of this instance as ones the test crashes on purpose
        (kill -SEGV). In a sanitized build (scripts/test --sanitize) ASan's own
        SIGSEGV handler would otherwise catch the signal, write a report that counts
        as a finding, and abort, so the master would see signal 6, not 11. Call before
        start(); a plain build is unchanged."""
        self.sanitizer_option("handle_segv=0")

    def start(self, wait=True):
        # free_port() only says a port was free a moment ago: a test running in
        # parallel may take it first. Then tern-master exits naming the port in use,
        # and we try again on fresh ports (only ports this harness chose).
        for attempt in range(5):
            self.stderr = open(os.path.join(self.dir, "master.stderr"), "ab")
            self._log_mark = len(self.log())  # what this attempt logs starts here
            self.proc = subprocess.Popen([os.path.join(BIN, "tern-master"), "-c", self.conf_path],
                                         stdout=self.stderr, stderr=self.stderr, env=self.env())
            if self not in _live:
                _live.append(self)
            if not wait:
                return self
            try:
                self.wait_ready()
                return self
            except RuntimeError as e:
                ours = all(str(self.settings.get(k)) == str(v) for k, v in self.ports.items())
                if "Address already in use" not in str(e) or not ours or attempt == 4:
                    raise
                self.stderr.close()
                self.ports = {k: free_port(self.address) for k in self.PORT_KEYS}
                self.settings.update({k: str(v) for k, v in self.ports.items()})
                self.write_config()
        return self

    def wait_ready(self, timeout=20):
        services = self.settings.get("master_services", "authd, mda, mta, mra").replace(",", " ").split()

        def ready():
            if self.proc.poll() is not None:
                return "exited"  # not an exception: wait_for would keep polling on one
            st = self.status()
            return st is not None and all(st.get(s, {}).get("state") == "running" for s in services)

        if wait_for(ready, timeout, what="all daemons running") == "exited":
            # With maillog_file set, the master's fatal line is in the log, not on stderr.
            raise RuntimeError(f"tern-master exited with {self.proc.returncode}:\n{self.master_output()}"
                               f"{self.log()[getattr(self, '_log_mark', 0):][-2000:]}")

    def status(self):
        """ternctl status as {service: {pid, uptime, restarts, state, last_exit}}, or None."""
        r = self.ternctl("status", check=False)
        if r.returncode != 0:
            return None
        out = {}
        for line in r.stdout.splitlines():
            parts = line.split(" ", 5)
            name = parts[0]
            fields = {}
            for p in parts[1:]:
                k, _, v = p.partition("=")
                fields[k] = v
            if "last_exit" in line:
                fields["last_exit"] = line.split("last_exit=", 1)[1]
            fields["pid"] = int(fields.get("pid", "0"))
            fields["restarts"] = int(fields.get("restarts", "0"))
            out[name] = fields
        return out

    def pid_of(self, service):
        return self.status()[service]["pid"]

    def ternctl(self, *args, check=True, input=None, timeout=30):
        r = subprocess.run([os.path.join(BIN, "ternctl"), "-c", self.conf_path, *args], capture_output=True,
                           text=True, env=self.env(), input=input, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"ternctl {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def reload(self):
        return self.ternctl("reload")

    def master_output(self):
        try:
            with open(os.path.join(self.dir, "master.stderr"), "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self):
        """Everything logged so far (maillog_file)."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, text, timeout=10):
        """Waits until `text` appears in the log; returns the log."""
        return wait_for(lambda: self.log() if text in self.log() else None, timeout, what=f"log line {text!r}")

    def stop(self, kill=False):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Children of a killed master exit on their own (parent-death signal); make sure.
        self._kill_leftovers()
        if self in _live:
            _live.remove(self)
        self.proc = None
        if hasattr(self, "stderr"):
            self.stderr.close()

    def _kill_leftovers(self):
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                if self.conf_path.encode() in cmd:
                    os.kill(int(d), signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass

    def cleanup(self):
        self.stop(kill=True)
        shutil.rmtree(self.dir, ignore_errors=True)
