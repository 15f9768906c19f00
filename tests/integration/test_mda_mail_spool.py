"""A system user's INBOX in a Debian-style mail spool (mbox:~/mail:INBOX=/var/mail/%n):
the spool directory is root:mail 2775 and a new user's spool file does not exist
yet. tern-mda's privileged helper delivers in a child that is the user; with
mail_privileged_group = mail (Dovecot's setting) that child creates the spool file
and its dotlock with the group mail, and without it the delivery is a temporary
failure whose log line says what to set. Real tern-master, tern-authd, tern-mda,
a real system user made with useradd, and smtplib.LMTP."""
import grp
import os
import pwd
import subprocess
import time

import pytest

from mda_helpers import Lmtp, add_user, make_tern, message
from tern_harness import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="system users' mail is written by a root helper's child, and "
                                "the test makes a system user and a root:mail spool directory; needs root")

USER = "ternspooltest"


@pytest.fixture
def spool_tern(request):
    """(tern, passwd entry, spool dir): a Tern started with the settings the test
    asks for (indirect parametrisation), a fresh system user whose INBOX is in a
    private root:mail 2775 spool directory."""
    settings = {"mbox_lock_timeout": "1s", **getattr(request, "param", {})}
    t = make_tern(settings, start=False)
    subprocess.run(["userdel", "-r", USER], capture_output=True)
    home = os.path.join(t.dir, "syshome")
    subprocess.run(["useradd", "--system", "--user-group", "--home-dir", home, "--create-home", "--shell",
                    "/usr/sbin/nologin", USER], check=True)
    try:
        spool = os.path.join(t.dir, "varmail")
        os.mkdir(spool)
        os.chown(spool, 0, grp.getgrnam("mail").gr_gid)
        os.chmod(spool, 0o2775)
        t.start()
        pw = pwd.getpwnam(USER)
        add_user(t, "sys@example.test", "--uid", str(pw.pw_uid), "--gid", str(pw.pw_gid), "--home", home,
                 "--mail", f"mbox:~/mail:INBOX={spool}/%n")
        yield t, pw, spool
    finally:
        t.cleanup()
        subprocess.run(["userdel", "-r", USER], capture_output=True)


def deliver(t, subject):
    c = Lmtp(t.socket_path("lmtp"))
    try:
        _, data = c.transaction("a@example.org", ["sys@example.test"], message(subject))
    finally:
        c.quit()
    assert len(data) == 1
    return data[0]


def test_without_mail_privileged_group_a_missing_spool_file_is_a_temporary_failure(spool_tern):
    t, pw, spool = spool_tern
    code, text = deliver(t, "no group")
    assert code == 451, text
    assert os.listdir(spool) == []
    t.wait_log("set mail_privileged_group = mail")
    # An existing spool file of the user's is delivered to as before (the user can
    # write the file, and without the group only the fcntl lock is taken).
    path = os.path.join(spool, "sys")
    with open(path, "wb"):
        pass
    os.chown(path, pw.pw_uid, grp.getgrnam("mail").gr_gid)
    os.chmod(path, 0o600)
    code, text = deliver(t, "existing file")
    assert code == 250, text
    with open(path, "rb") as f:
        assert b"Subject: existing file" in f.read()
    assert sorted(os.listdir(spool)) == ["sys"]


@pytest.mark.parametrize("spool_tern", [{"mail_privileged_group": "mail", "mail_access_groups": "users"}],
                         indirect=True)
def test_mail_privileged_group_creates_the_spool_file_and_the_dotlock(spool_tern):
    t, pw, spool = spool_tern
    mail_gid = grp.getgrnam("mail").gr_gid
    path = os.path.join(spool, "sys")
    lock = path + ".lock"
    # A stale dotlock left by a crash (root's, older than mbox_dotlock_change_timeout):
    # only a process with the group mail can remove it from the spool directory.
    with open(lock, "w") as f:
        f.write("99999\n")
    old = time.time() - 3600
    os.utime(lock, (old, old))

    code, text = deliver(t, "first")
    assert code == 250, text
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid) == (pw.pw_uid, mail_gid)
    assert st.st_mode & 0o7777 == 0o600
    assert not os.path.exists(lock), "the stale dotlock was not broken, or ours was not removed"
    with open(path, "rb") as f:
        first = f.read()
    assert first.startswith(b"From a@example.org ") and b"Subject: first" in first

    # A live dotlock (fresh, another process's) holds the delivery off: 451 4.2.0
    # after mbox_lock_timeout, and the mbox is untouched.
    with open(lock, "w") as f:
        f.write("1\n")
    code, text = deliver(t, "while locked")
    assert code == 451 and b"locked" in text, text
    with open(path, "rb") as f:
        assert f.read() == first
    os.unlink(lock)

    code, text = deliver(t, "second")
    assert code == 250, text
    with open(path, "rb") as f:
        both = f.read()
    assert both.startswith(first) and b"Subject: second" in both and b"while locked" not in both
    assert sorted(os.listdir(spool)) == ["sys"]
    # The user's own ~/mail was made as the user, without the group.
    st = os.lstat(os.path.join(pw.pw_dir, "mail"))
    assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid)


@pytest.mark.parametrize("spool_tern", [{"mail_privileged_group": "mail"}], indirect=True)
def test_spool_file_that_is_a_symlink_is_refused(spool_tern):
    t, pw, spool = spool_tern
    target = os.path.join(t.dir, "elsewhere")
    with open(target, "wb"):
        pass
    os.symlink(target, os.path.join(spool, "sys"))
    code, text = deliver(t, "symlink")
    assert code == 451, text
    assert os.path.getsize(target) == 0
    assert os.listdir(spool) == ["sys"]  # and no dotlock left behind


@pytest.mark.parametrize("spool_tern", [{"mail_privileged_group": "no-such-group-tern"}], indirect=True)
def test_unknown_mail_privileged_group_is_a_temporary_failure_that_names_it(spool_tern):
    t, pw, spool = spool_tern
    code, text = deliver(t, "bad group")
    assert code == 451, text
    t.wait_log("mail_privileged_group: no such group: no-such-group-tern")
    assert os.listdir(spool) == []
