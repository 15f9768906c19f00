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
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from mda_helpers import Lmtp, add_user, make_tern, message
from tern_harness import is_root, wait_for

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
    # Fault points (common/fault.h) the tests arm; the delivery child is the user.
    t.fault_dir = tempfile.mkdtemp(prefix="tern-fault-", dir="/tmp")
    os.chmod(t.fault_dir, 0o777)
    t.extra_env["TERN_FAULT_DIR"] = t.fault_dir
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
        shutil.rmtree(t.fault_dir, ignore_errors=True)
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


@pytest.mark.parametrize("spool_tern", [{"mail_privileged_group": "mail"}], indirect=True)
def test_a_folder_in_the_home_is_written_without_the_privileged_group(spool_tern):
    """mail_privileged_group is for creating the spool INBOX and its dotlock. A
    delivery into a folder in the user's home (user+folder, lmtp_save_to_detail_mailbox)
    gives it up, even as saved gid, before it writes there (independent review,
    finding 10): the delivery process is stopped at its append and its ids read."""
    t, pw, spool = spool_tern
    mail_gid = grp.getgrnam("mail").gr_gid
    folders = os.path.join(pw.pw_dir, "mail")
    os.makedirs(folders, exist_ok=True)
    lists = os.path.join(folders, "Lists")
    open(lists, "wb").close()
    for p in (folders, lists):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    armed = os.path.join(t.fault_dir, "mda.mbox.append")

    def delivery_gids(rcpt):
        """(real, effective, saved, fs) gids of the delivery process at its append."""
        open(armed, "w").close()
        result = {}
        c = Lmtp(t.socket_path("lmtp"))
        th = threading.Thread(target=lambda: result.update(
            data=c.transaction("a@example.org", [rcpt], message("to " + rcpt))[1]))
        th.start()
        hit = wait_for(lambda: [f for f in os.listdir(t.fault_dir) if f.startswith("mda.mbox.append.")], 60,
                       what="the delivery at its append")
        pid = int(hit[0].rsplit(".", 1)[1])
        wait_for(lambda: open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "T", 30, what="stopped")
        with open(f"/proc/{pid}/status") as f:
            gids = next(tuple(int(x) for x in line.split()[1:]) for line in f if line.startswith("Gid:"))
        os.unlink(os.path.join(t.fault_dir, hit[0]))
        os.kill(pid, signal.SIGCONT)
        th.join(60)
        c.quit()
        assert result["data"][0][0] == 250, result
        return gids

    # The spool INBOX: the group is kept as saved gid, to be effective only while
    # the spool file or the dotlock is made (and the dotlock removed).
    gids = delivery_gids("sys@example.test")
    assert gids[0] == gids[1] == pw.pw_gid and gids[2] == mail_gid, gids
    # The folder in the home: the group is gone.
    gids = delivery_gids("sys+Lists@example.test")
    assert set(gids) == {pw.pw_gid}, gids
    with open(lists, "rb") as f:
        assert b"Subject: to sys+Lists@example.test" in f.read()
