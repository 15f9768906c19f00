"""A power cut (issue 11): what a 250 acknowledged must be on the disk, not in the
page cache. The queue, the state directory and the mailboxes live on an ext4 file
system in a loop-mounted image. The kernel's periodic writeback is off for the test
(vm.dirty_writeback_centisecs = 0) and the journal commits only when asked
(commit=3600), so the image file holds exactly what Tern fsynced. While clients
send, every Tern process is frozen (SIGSTOP) and the image is copied: that copy is
the disk as a power cut at that instant leaves it. Tern is killed, the copy mounted
where the file system was (ext4 replays its journal) and Tern started on it again:
every message acknowledged before the cut is delivered, exactly once.

There is no device-mapper here (dm-flakey would drop the writes instead), and
dropping the page cache is no power cut; this is the closest model this kernel
allows. It needs root (mount) and skips with the reason otherwise.
TERN_POWER_CUT_MAIL_FSYNC=never shows the test can fail: with tern-mda's fsyncs off,
about 99% of the acknowledged messages are gone after the cut."""
import glob
import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import threading
import time

import pytest

from mta_util import add_user, mta_settings, table_dir
from tern_harness import BIN, children_of, is_root, wait_for

pytestmark = pytest.mark.skipif(not is_root(), reason="mounting a loop file system needs root")

WRITEBACK = "/proc/sys/vm/dirty_writeback_centisecs"


def run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")


@pytest.fixture
def disk():
    d = tempfile.mkdtemp(prefix="tern-pc-", dir="/tmp")
    os.chmod(d, 0o755)
    img, fs = os.path.join(d, "disk.img"), os.path.join(d, "fs")
    os.makedirs(fs)
    with open(img, "wb") as f:
        f.truncate(256 << 20)
    try:
        run("mkfs.ext4", "-q", "-F", img)
        run("mount", "-o", "loop,commit=3600", img, fs)
    except (RuntimeError, FileNotFoundError) as e:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"cannot make a loop file system here: {e}")
    with open(WRITEBACK) as f:
        saved = f.read().strip()
    with open(WRITEBACK, "w") as f:
        f.write("0")
    os.chmod(fs, 0o755)
    yield {"dir": d, "img": img, "fs": fs}
    with open(WRITEBACK, "w") as f:
        f.write(saved)
    subprocess.run(["umount", "-l", fs], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def tree(pid):
    out = [pid]
    for c in children_of(pid):
        out += tree(c)
    return out


def delivered(fs):
    counts = {}
    for sub in ("new", "cur"):  # not tmp/: a file there was never delivered
        for p in glob.glob(os.path.join(fs, "mail", "example.test", "alice", "Maildir", sub, "*")):
            with open(p, "rb") as f:
                m = re.search(rb"X-Token: (tok-\d+-\d+)", f.read())
            if m:
                counts[m.group(1).decode()] = counts.get(m.group(1).decode(), 0) + 1
    return counts


def test_what_was_acknowledged_survives_a_power_cut_once(tern_factory, disk):
    import pwd
    fs = disk["fs"]
    mail = os.path.join(fs, "mail")
    os.makedirs(mail)
    t = tern_factory(settings=mta_settings(
        table_dir(), queue_directory=os.path.join(fs, "spool"), data_directory=os.path.join(fs, "lib"),
        mail_home=os.path.join(mail, "%d", "%n"), smtpd_client_connection_count_limit=0,
        minimal_backoff_time="1s", maximal_backoff_time="2s", queue_run_delay="1s",
        **({"mail_fsync": os.environ["TERN_POWER_CUT_MAIL_FSYNC"]} if "TERN_POWER_CUT_MAIL_FSYNC" in os.environ else {})))
    pw = pwd.getpwnam(t.settings["mail_uid"])
    os.chown(mail, pw.pw_uid, pw.pw_gid)
    add_user(t, "alice@example.test")
    os.sync()  # the user was added long before the cut

    acked = {}  # token -> monotonic time its 250 arrived
    lock = threading.Lock()
    stop = threading.Event()

    def client(n):
        i = 0
        while not stop.is_set():
            token = f"tok-{n}-{i}"
            i += 1
            try:
                s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=5)
                s.sendmail("a@sender.example", ["alice@example.test"],
                           f"Subject: {token}\r\nX-Token: {token}\r\n\r\nbody {token}\r\n".encode())
                now = time.monotonic()
                with lock:
                    acked[token] = now
                s.close()
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(6)]
    for th in threads:
        th.start()
    wait_for(lambda: len(acked) >= 300, 60, what="300 accepted messages")
    # The cut: freeze the master first (it would restart what it sees die), then
    # every process below it, and copy the disk as it is.
    procs = tree(t.proc.pid)
    cut = time.monotonic()
    for pid in procs:
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass
    with lock:
        before = {k for k, v in acked.items() if v < cut}
    snap = os.path.join(disk["dir"], "after-the-cut.img")
    run("cp", "--sparse=always", disk["img"], snap)
    stop.set()
    for pid in tree(t.proc.pid) + procs:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    t.proc.wait()
    t.stop(kill=True)
    for th in threads:
        th.join(timeout=30)
    with lock:
        after = set(acked) - before
    run("umount", "-l", fs)
    run("mount", "-o", "loop", snap, fs)

    t.start()
    try:
        wait_for(lambda: before <= set(delivered(fs)), 120, what="every message acknowledged before the cut delivered")
    except TimeoutError:
        missing = sorted(before - set(delivered(fs)))
        print(f"power cut: {len(missing)} of {len(before)} missing, e.g. {missing[:5]}; delivered {len(delivered(fs))}")
        raise
    wait_for(lambda: "Mail queue is empty" in subprocess.run([f"{BIN}/mailq"], capture_output=True, text=True,
                                                             env=t.env()).stdout, 60, what="empty queue")
    got = delivered(fs)
    lost = sorted(before - set(got))
    dupes = {k: v for k, v in got.items() if v > 1}
    print(f"power cut: {len(before)} acknowledged before the cut, {len(after)} after it; "
          f"lost {len(lost)}, duplicates {len(dupes)}; {len(set(got) & after)} of the later ones survived too")
    assert not lost, lost
    assert not dupes, dupes
