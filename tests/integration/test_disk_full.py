"""A full disk (issue 11): the queue's file system full gives 452 4.3.1 (RFC 3463
"mail system full"; Postfix's "Insufficient system storage"), at MAIL FROM when SIZE=
says the message cannot fit above queue_minfree, else at the end of DATA; a full
mailbox file system makes tern-mda answer 452 4.3.1 and tern-mta defer. Nothing is
lost, and once space returns every message is delivered, once.

Each file system is a small tmpfs the test mounts (root only), filled with a filler
file to the last few kilobytes."""
import errno
import os
import smtplib
import subprocess
import tempfile

import pytest

from mta_util import add_user, mta_settings, prepare_mail_dir, table_dir
from tern_harness import BIN, is_root, wait_for
from test_mta_delivery import messages

pytestmark = pytest.mark.skipif(not is_root(), reason="mounting a small tmpfs needs root")


@pytest.fixture
def mount_small():
    mounted = []

    def mount(path, size):
        os.makedirs(path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(path)

    yield mount
    for p in reversed(mounted):
        subprocess.run(["umount", "-l", p], capture_output=True)


def fill(path, leave):
    """Fills the file system of `path` up to about `leave` free bytes; returns the filler.

    Written in chunks against a fresh statvfs each time: the daemons may still be
    writing (an index, a log), so a single write of the free space seen once can
    itself run out. Running out is not an error here: the filler gives `leave`
    bytes back."""
    filler = os.path.join(path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        written = 0
        while True:
            st = os.statvfs(path)
            want = st.f_bavail * st.f_frsize - leave
            if want <= 0:
                break
            try:
                written += os.write(fd, b"\0" * min(want, 1024 * 1024))
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                os.ftruncate(fd, max(0, written - leave))
                break
    finally:
        os.close(fd)
    return filler


def body(token, size):
    line = b"x" * 76 + b"\r\n"
    return (f"Subject: {token}\r\nX-Token: {token}\r\n\r\n".encode() + line * (size // len(line)))


def copies(t, token):
    return sum(1 for m in messages(t, "alice") if f"X-Token: {token}\r".encode() in m or
               f"X-Token: {token}\n".encode() in m)


def queue_empty(t):
    return "Mail queue is empty" in subprocess.run([f"{BIN}/mailq"], capture_output=True, text=True,
                                                   env=t.env()).stdout


def test_full_mailbox_file_system_defers_and_delivers_once_space_returns(tern_factory, mount_small):
    t = tern_factory(settings=mta_settings(table_dir(), minimal_backoff_time="1s", maximal_backoff_time="2s",
                                           queue_run_delay="1s"))
    mail = os.path.join(t.dir, "mail")
    mount_small(mail, "4m")
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=20)
    s.sendmail("a@sender.example", ["alice@example.test"], body("tok-first", 1000))
    wait_for(lambda: copies(t, "tok-first") == 1, 30, what="the first message delivered")
    filler = fill(mail, 16 * 1024)
    s.sendmail("a@sender.example", ["alice@example.test"], body("tok-full", 300 * 1024))  # 250: the queue has room
    s.quit()
    t.wait_log("dsn=4.3.1, status=deferred", timeout=30)
    assert "452 4.3.1 Insufficient system storage" in t.log()
    assert copies(t, "tok-full") == 0
    os.unlink(filler)
    wait_for(lambda: copies(t, "tok-full") == 1, 60, what="the deferred message delivered once space returned")
    wait_for(lambda: queue_empty(t), 30, what="empty queue")
    assert copies(t, "tok-first") == 1 and copies(t, "tok-full") == 1


def test_full_queue_file_system_is_452_and_recovers(tern_factory, mount_small):
    d = tempfile.mkdtemp(prefix="tern-q-", dir="/tmp")
    os.chmod(d, 0o755)
    queue = os.path.join(d, "spool")
    mount_small(queue, "16m")
    t = tern_factory(settings=mta_settings(table_dir(), queue_directory=queue, queue_minfree=64 * 1024),
                     start=False)
    t.start()
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    filler = fill(queue, 256 * 1024)

    s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=20)
    s.ehlo("client.example")
    # SIZE= that cannot fit above queue_minfree: refused at MAIL FROM (RFC 1870 6.1).
    code, msg = s.mail("a@sender.example", ["SIZE=400000"])
    assert (code, msg) == (452, b"4.3.1 Insufficient system storage")
    s.rset()
    # No SIZE= (smtplib's sendmail would send one): the write runs out of space,
    # and the end of DATA says so.
    assert s.mail("a@sender.example")[0] == 250
    assert s.rcpt("alice@example.test")[0] == 250
    assert s.data(body("tok-big", 1024 * 1024)) == (452, b"4.3.1 Insufficient system storage")
    # Below queue_minfree nothing starts at all.
    with open(filler, "ab") as f:
        f.write(b"\0" * ((256 - 32) * 1024))  # written, not a sparse extension
    code, msg = s.mail("a@sender.example")
    assert (code, msg) == (452, b"4.3.1 Insufficient system storage")
    s.rset()
    os.unlink(filler)
    s.sendmail("a@sender.example", ["alice@example.test"], body("tok-after", 1024 * 1024))
    s.quit()
    wait_for(lambda: copies(t, "tok-after") == 1, 30, what="the message sent once space returned")
    wait_for(lambda: queue_empty(t), 30, what="empty queue")
    assert copies(t, "tok-big") == 0
    assert "reject: MAIL from" in t.log() or "452 4.3.1" in t.log()
