"""Defence in depth around the processes that switch to a mail user or hold secrets:
first_valid_gid/last_valid_gid and never gid 0 where a userdb answer's gid becomes a
process's group (tern-mra-postlogin's session workers, tern-mda's delivery helper,
tern-authd's passwd userdb); no core dumps and no ptrace by a same-uid process for
tern-authd, its auth worker and tern-mra's session workers (process_core_dumps = yes
for debugging); and the root auth worker holding none of tern-authd's listening
sockets. Root only: the ids are real."""
import imaplib
import os
import pwd
import subprocess
import uuid

import pytest

from authd_client import AuthClient, UserdbClient
from mda_helpers import Lmtp, message
from mra_helpers import PW, imap, make_mra
from tern_harness import children_of, is_root, wait_for

pytestmark = pytest.mark.skipif(not is_root(), reason="switching to other uids and gids needs root")


def core_limit(pid):
    """(soft, hard) of RLIMIT_CORE from /proc/PID/limits."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max core file size"):
                soft, hard = line.split()[4:6]
                return soft, hard
    raise AssertionError("no core limit line")


def dumpable(pid):
    """A process that is not dumpable has its /proc/PID files owned by root (and no
    process of its own uid may ptrace it or read its memory)."""
    owner = os.stat(f"/proc/{pid}/status").st_uid
    with open(f"/proc/{pid}/status") as f:
        uid = int(next(l for l in f if l.startswith("Uid:")).split()[1])
    assert uid != 0, "only tells for a process that is not root"
    return owner == uid


def login_fails(t, user, password=PW):
    c = imap(t, login=False)
    try:
        c.login(user, password)
    except imaplib.IMAP4.error:
        return True
    finally:
        try:
            c.logout()
        except Exception:
            pass
    return False


def test_userdb_gid_0_is_refused_for_imap_sessions(tmp_path):
    t = make_mra()
    try:
        t.ternctl("user", "add", "--gid", "0", "zero@example.test", input=PW + "\n")
        assert login_fails(t, "zero@example.test")
        t.wait_log("user zero@example.test: gid 0 is root's group: login refused")
        # Nobody got a worker in root's group.
        for pid in children_of(t.pid_of("mra-postlogin")):
            with open(f"/proc/{pid}/status") as f:
                gid = int(next(l for l in f if l.startswith("Gid:")).split()[1])
            assert gid != 0
        imap(t).logout()  # the ordinary user still logs in
    finally:
        t.cleanup()


def test_first_valid_gid_bounds_session_workers():
    vmail_gid = pwd.getpwnam("vmail").pw_gid
    t = make_mra(settings={"first_valid_gid": str(vmail_gid + 1)})
    try:
        assert login_fails(t, "demo@example.test")
        t.wait_log(f"user demo@example.test: gid {vmail_gid} is outside first_valid_gid..last_valid_gid "
                   f"({vmail_gid + 1}..): login refused")
    finally:
        t.cleanup()


def test_delivery_helper_refuses_gid_0():
    t = make_mra(settings={"first_valid_uid": "100"})
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
        t.ternctl("user", "add", "--uid", str(nobody), "--gid", "0", "zero@example.test", input=PW + "\n")
        with Lmtp(t.socket_path("lmtp")) as l:
            _, data = l.transaction("sender@example.org", ["zero@example.test"], message("to gid 0"))
        assert data and data[0][0] == 451, data
        t.wait_log("user zero@example.test: gid 0 is root's group; not delivering")
    finally:
        t.cleanup()


def test_session_workers_do_not_dump_core():
    t = make_mra()
    try:
        c = imap(t)
        workers = wait_for(lambda: children_of(t.pid_of("mra-postlogin")), what="a session worker")
        for pid in workers:
            assert core_limit(pid) == ("0", "0")
            assert not dumpable(pid)
        c.logout()
    finally:
        t.cleanup()


def test_process_core_dumps_yes_keeps_them_for_debugging():
    t = make_mra(settings={"process_core_dumps": "yes"})
    try:
        c = imap(t)
        workers = wait_for(lambda: children_of(t.pid_of("mra-postlogin")), what="a session worker")
        assert all(dumpable(pid) for pid in workers)
        c.logout()
    finally:
        t.cleanup()


@pytest.fixture
def with_worker(tern_factory):
    # The auth worker exists for PAM and passwd lookups.
    return tern_factory(settings={"auth_passdb": "lmdb pam", "auth_userdb": "lmdb passwd",
                                  "master_services": "authd", "auth_failure_delay": "0"})


def auth_worker(t):
    authd = t.pid_of("authd")
    kids = wait_for(lambda: children_of(authd), what="the auth worker")
    assert len(kids) == 1, kids
    return authd, kids[0]


def listening_unix_inodes():
    out = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if int(parts[3], 16) & 0x10000:  # __SO_ACCEPTCON: a listening socket
                out.add(parts[6])
    return out


def socket_inodes(pid):
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def test_auth_worker_holds_none_of_authds_listening_sockets(with_worker):
    authd, worker = auth_worker(with_worker)
    listening = listening_unix_inodes()
    assert socket_inodes(authd) & listening, "authd's own listeners should show"
    assert not socket_inodes(worker) & listening
    # And it still does its job.
    u = UserdbClient(with_worker.socket_path("auth-userdb"))
    assert u.call("USER\t1\tnobody\tservice=lmtp")[0] in ("USER", "NOTFOUND")


def test_authd_and_its_worker_do_not_dump_core(with_worker):
    authd, worker = auth_worker(with_worker)
    assert core_limit(authd) == ("0", "0")
    assert not dumpable(authd)
    assert core_limit(worker) == ("0", "0")
    # The worker runs as root (auth_worker_user): whether it is dumpable cannot be
    # read from /proc; a request's child inherits the limit.
    with open(f"/proc/{worker}/status") as f:
        assert int(next(l for l in f if l.startswith("Uid:")).split()[1]) == 0


@pytest.fixture
def gid0_user(tmp_path):
    name = "tg" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--gid", "0", "--no-create-home", "--home-dir", str(tmp_path), "--shell", "/bin/sh",
                    name], check=True)
    try:
        yield name, pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_passwd_userdb_refuses_a_system_user_in_group_root(tern_factory, gid0_user):
    name, pw = gid0_user
    t = tern_factory(settings={"auth_userdb": "lmdb passwd", "auth_passdb": "lmdb pam", "master_services": "authd",
                               "first_valid_uid": "1000"})
    u = UserdbClient(t.socket_path("auth-userdb"))
    r = u.call(f"USER\t1\t{name}\tservice=lmtp")
    assert r[0] == "NOTFOUND", r
    # An ordinary user's gid passes (root's own entry never does).
    assert u.call("USER\t2\troot\tservice=lmtp")[0] == "NOTFOUND"


def test_passwd_userdb_respects_first_valid_gid(tern_factory, tmp_path):
    name = "tv" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--user-group", "--no-create-home", "--home-dir", str(tmp_path), name], check=True)
    try:
        pw = pwd.getpwnam(name)
        base = {"auth_userdb": "lmdb passwd", "auth_passdb": "lmdb pam", "master_services": "authd",
                "first_valid_uid": "1000"}
        t = tern_factory(settings=dict(base, first_valid_gid=str(pw.pw_gid + 1)))
        assert UserdbClient(t.socket_path("auth-userdb")).call(f"USER\t1\t{name}\tservice=lmtp")[0] == "NOTFOUND"
        t.stop()
        t.set(first_valid_gid=str(pw.pw_gid))
        t.start()
        assert UserdbClient(t.socket_path("auth-userdb")).call(f"USER\t2\t{name}\tservice=lmtp")[0] == "USER"
    finally:
        subprocess.run(["userdel", name], capture_output=True)
