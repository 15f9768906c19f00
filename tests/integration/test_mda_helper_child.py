"""The per-user child of tern-mda's root delivery helper: it holds none of the
helper's fds (above all not the helper's socket to tern-mda), keeps
mail_privileged_group only when it writes outside the user's home, and is killed
after local_time_limit, so one stuck delivery gets 451 4.3.0 and the next system
user's mail still goes through. The delivery is held up by a live dotlock on the
user's mbox (mbox_lock_timeout longer than the test waits). Real tern-master,
tern-authd, tern-mda, real system users made with useradd, and smtplib.LMTP."""
import grp
import os
import pwd
import subprocess
import threading

import pytest

from mda_helpers import Lmtp, add_user, make_tern, message
from tern_harness import is_root, proc_status, wait_for

pytestmark = pytest.mark.skipif(not is_root(), reason="system users' mail is written by a root helper's child, and "
                                "the test makes system users with useradd; needs root")

STUCK, OTHER = "ternhelperstuck", "ternhelperother"


@pytest.fixture
def helper_tern(request):
    """(tern, {name: passwd entry}): two fresh system users, STUCK with an mbox INBOX in
    its home, OTHER with a Maildir, both delivered through the helper."""
    settings = {"master_services": "authd, mda", "mbox_lock_timeout": "1h", "mail_privileged_group": "mail",
                **getattr(request, "param", {})}
    t = make_tern(settings, start=False)
    users = {}
    try:
        for name, mail in ((STUCK, "mbox:~/mail:INBOX=~/inbox"), (OTHER, "maildir:~/Maildir")):
            subprocess.run(["userdel", "-r", name], capture_output=True)
            home = os.path.join(t.dir, name)
            subprocess.run(["useradd", "--system", "--user-group", "--home-dir", home, "--create-home", "--shell",
                            "/usr/sbin/nologin", name], check=True)
            users[name] = (pwd.getpwnam(name), mail)
        t.start()
        for name, (pw, mail) in users.items():
            add_user(t, f"{name}@example.test", "--uid", str(pw.pw_uid), "--gid", str(pw.pw_gid), "--home",
                     pw.pw_dir, "--mail", mail)
        yield t, {name: pw for name, (pw, _) in users.items()}
    finally:
        t.cleanup()
        for name in (STUCK, OTHER):
            subprocess.run(["userdel", "-r", name], capture_output=True)


def hold_dotlock(pw):
    """A live dotlock (fresh, another process's) on the user's INBOX: the delivery
    waits for it up to mbox_lock_timeout."""
    lock = os.path.join(pw.pw_dir, "inbox.lock")
    with open(lock, "w") as f:
        f.write("1\n")
    return lock


def processes_of(uid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(proc_status(int(d))["Uid"].split()[0]) == uid:
                    out.append(int(d))
            except (FileNotFoundError, ProcessLookupError, KeyError):
                pass
    return out


def fd_links(pid):
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            pass
    return out


def deliver_in_background(t, rcpts, subject):
    result = {}

    def run():
        c = Lmtp(t.socket_path("lmtp"), timeout=600)
        try:
            result["replies"] = c.transaction("a@example.org", rcpts, message(subject))[1]
        except Exception as e:  # reported by the test, not lost in the thread
            result["error"] = e
        finally:
            c.close()

    th = threading.Thread(target=run)
    th.start()
    return th, result


def test_delivery_child_holds_no_helper_fd_and_no_privileged_group(helper_tern):
    t, users = helper_tern
    pw = users[STUCK]
    lock = hold_dotlock(pw)
    th, result = deliver_in_background(t, [f"{STUCK}@example.test"], "while the child waits")
    try:
        [child] = wait_for(lambda: processes_of(pw.pw_uid) or None, timeout=30, what="the delivery child")
        helper = int(proc_status(child)["PPid"])
        assert int(proc_status(helper)["Uid"].split()[0]) == 0  # the root helper
        child_fds, helper_fds = fd_links(child), fd_links(helper)
        helper_sockets = {v for v in helper_fds.values() if v.startswith("socket:")}
        assert helper_sockets, helper_fds  # its SOCK_SEQPACKET to tern-mda
        leaked = {fd: v for fd, v in child_fds.items() if v in helper_sockets}
        assert not leaked, f"the user's delivery process holds the helper's sockets: {leaked}"
        # Nothing but stdio, the message, the reply pipe, the log and its own files.
        assert not any(v.startswith("socket:") for v in child_fds.values()), child_fds
        # The INBOX is in the user's home: no use for the group mail, not even as the
        # saved set-group-ID that could be made effective again.
        gids = proc_status(child)["Gid"].split()
        assert gids == [str(pw.pw_gid)] * 4, gids
        assert str(grp.getgrnam("mail").gr_gid) not in proc_status(child)["Groups"].split()
    finally:
        os.unlink(lock)
        th.join(120)
    assert "error" not in result, result
    [(code, text)] = result["replies"]
    assert code == 250, text
    with open(os.path.join(pw.pw_dir, "inbox"), "rb") as f:
        assert b"Subject: while the child waits" in f.read()


@pytest.mark.parametrize("helper_tern", [{"local_time_limit": "2s"}], indirect=True)
def test_stuck_delivery_is_killed_and_the_next_user_still_gets_mail(helper_tern):
    t, users = helper_tern
    stuck, other = users[STUCK], users[OTHER]
    hold_dotlock(stuck)
    # One transaction: the stuck recipient first, so the other one's delivery is
    # queued behind it in the helper (one request at a time).
    th, result = deliver_in_background(t, [f"{STUCK}@example.test", f"{OTHER}@example.test"], "behind a stuck one")
    th.join(120)
    assert not th.is_alive()
    assert "error" not in result, result
    (code1, text1), (code2, text2) = result["replies"]
    assert (code1, text1[:5]) == (451, b"4.3.0"), text1
    assert code2 == 250, text2
    new = os.path.join(other.pw_dir, "Maildir", "new")
    assert len(os.listdir(new)) == 1
    log = t.wait_log("took longer than local_time_limit (2s)")
    assert f"delivery for {STUCK}@example.test took longer" in log, log
    # The stuck process is gone, not left behind waiting for the lock.
    wait_for(lambda: not processes_of(stuck.pw_uid), timeout=30, what="the stuck delivery process killed")
    assert not os.path.exists(os.path.join(stuck.pw_dir, "inbox"))
