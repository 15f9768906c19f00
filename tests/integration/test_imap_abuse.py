"""Bad input to tern-mra over the real socket, each a test: what the issue lists and
the limits. Every test also checks that the daemon is still serving afterwards and
that nothing was written that should not have been."""
import base64
import os
import re
import threading

import pytest

from mra_helpers import PW, USER, Raw, deliver, files_in, imap, maildir_of, make_mra, mra_pids
from tern_harness import wait_for


def login_raw(t):
    r = Raw(t.port("imap"))
    assert r.line().startswith(b"* OK")
    r.send(b"a LOGIN " + USER.encode() + b" " + PW.encode() + b"\r\n")
    assert r.until(b"a ")[-1].startswith(b"a OK")
    return r


def still_serving(t):
    c = imap(t)
    assert c.select("INBOX")[0] == "OK"
    c.logout()
    st = t.status()
    assert st["mra"]["restarts"] == 0 and st["mra-postlogin"]["restarts"] == 0


def all_messages(t):
    root = maildir_of(t, USER)
    out = []
    for d, _, names in os.walk(root):
        if os.path.basename(d) in ("cur", "new", "tmp"):
            out += [os.path.join(d, n) for n in names]
    return out


def test_unterminated_literal_before_and_after_login(mra):
    r = Raw(mra.port("imap"))
    r.line()
    r.send(b"a LOGIN {20}\r\n")
    assert r.line().startswith(b"+")
    r.send(b"abc")
    r.close()
    r = login_raw(mra)
    r.send(b"b APPEND INBOX {100}\r\n")
    assert r.line().startswith(b"+")
    r.send(b"Subject: half\r\n")
    r.close()
    wait_for(lambda: all_messages(mra) == [], 10, what="no message left by the cut APPEND")
    still_serving(mra)
    assert all_messages(mra) == []


def test_literal_announcing_a_gigabyte(mra):
    r = Raw(mra.port("imap"))
    r.line()
    r.send(b"a LOGIN {1000000000}\r\n")
    reply = r.line()
    assert reply.startswith(b"a NO") or reply.startswith(b"a BAD") or reply.startswith(b"* BYE"), reply
    r.close()
    r = login_raw(mra)
    r.send(b"b APPEND INBOX {1000000000}\r\n")
    reply = r.line()
    assert reply.startswith(b"b NO") and b"TOOBIG" in reply, reply
    # The synchronising literal was refused, so the connection goes on.
    r.send(b"c NOOP\r\n")
    assert r.until(b"c ")[-1].startswith(b"c OK")
    # A non-synchronising one cannot be refused: the server must hang up.
    r.send(b"d APPEND INBOX {1000000000+}\r\n")
    lines = []
    try:
        lines = r.until(b"* BYE")
    except EOFError:
        pass
    assert r.closed()
    assert all_messages(mra) == []
    still_serving(mra)


def test_100000_pipelined_commands(mra):
    r = login_raw(mra)
    n = 100000
    data = b"".join(b"t%d NOOP\r\n" % i for i in range(n))
    got = {"count": 0}

    def reader():
        while got["count"] < n:
            line = r.line()
            if line.startswith(b"t") and b" OK " in line:
                got["count"] += 1

    th = threading.Thread(target=reader)
    th.start()
    r.send(data)
    th.join(timeout=300)
    assert got["count"] == n
    r.send(b"z LOGOUT\r\n")
    assert r.until(b"z ")[-1].startswith(b"z OK")
    still_serving(mra)


def test_pipelined_garbage_before_login_is_cut_off(mra):
    r = Raw(mra.port("imap"))
    r.line()
    r.send(b"".join(b"x%d FROB\r\n" % i for i in range(1000)))
    lines = r.until(b"* BYE")
    assert len(lines) <= 20
    assert r.closed()
    still_serving(mra)


def test_invalid_sequence_sets(mra):
    deliver(mra, USER, "one")
    r = login_raw(mra)
    r.send(b"s SELECT INBOX\r\n")
    r.until(b"s OK")
    for i, bad in enumerate([b"0", b"1:*:2", b"a", b"4294967296", b"1,", b",1", b"*:", b"1:0x2", b"-1"]):
        tag = b"f%d" % i
        r.send(tag + b" FETCH " + bad + b" (FLAGS)\r\n")
        reply = r.until(tag + b" ")[-1]
        assert reply.startswith(tag + b" BAD"), (bad, reply)
        r.send(b"n NOOP\r\n")  # tolerated bad commands reset with a good one
        r.until(b"n OK")
    r.send(b"u UID FETCH 99999 (FLAGS)\r\n")
    assert r.until(b"u ")[-1].startswith(b"u OK")
    still_serving(mra)


def test_invalid_modified_utf7_names(mra):
    r = login_raw(mra)
    for i, bad in enumerate([b"&Jjo", b"&AGE-", b"&ZeVnLIqe", b"&Jjo-&Jjo-", b"&\xff-", b"caf\xc3\xa9"]):
        tag = b"c%d" % i
        r.send(tag + b' CREATE "' + bad + b'"\r\n')
        reply = r.until(tag + b" ")[-1]
        assert reply.startswith(tag + b" NO") or reply.startswith(tag + b" BAD"), (bad, reply)
    root = maildir_of(mra, USER)
    assert sorted(n for n in os.listdir(root) if n.startswith(".")) == [".Drafts", ".Junk", ".Sent", ".Trash"]
    still_serving(mra)


def test_names_that_leave_the_mail_root(mra):
    root = maildir_of(mra, USER)
    c = imap(mra)
    for name in ["../x", "../../etc", "/etc", "a/../b", "..", ".", "~root", "a//b", "Trash/../../x", "x\x01y"]:
        for cmd in ("CREATE", "SELECT", "DELETE"):
            typ, data = getattr(c, cmd.lower())('"' + name + '"')
            assert typ != "OK", (cmd, name, data)
    # A symlink planted in the Maildir that leads out of it is refused too.
    outside = os.path.join(mra.dir, "outside")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(outside, sub))
    os.symlink(outside, os.path.join(root, ".Evil"))
    typ, data = c.select("Evil")
    assert typ == "NO", data
    typ, data = c.status("Evil", "(MESSAGES)")
    assert typ == "NO", data
    typ, data = c.append("Evil", None, None, b"Subject: x\r\n\r\nx\r\n")
    assert typ == "NO", data
    assert os.listdir(os.path.join(outside, "cur")) == [] and os.listdir(os.path.join(outside, "tmp")) == []
    assert not os.path.exists(os.path.join(mra.dir, "mail", "x"))
    c.logout()
    still_serving(mra)


def test_garbage_and_overlong_lines_before_login(mra):
    r = Raw(mra.port("imap"))
    r.line()
    r.send(b"\x00\x01\x02\xff\xfe garbage\r\n")
    assert r.line() == b"* BAD Error in IMAP command: Invalid tag"
    r.send(b"a " + b"x" * 100000 + b"\r\n")
    assert r.until(b"* BYE") == [b"* BYE Line too long"]
    assert r.closed()
    r = Raw(mra.port("imap"))
    r.line()
    r.send(os.urandom(200000))
    try:
        r.until(b"* BYE")
    except EOFError:
        pass
    assert r.closed()
    still_serving(mra)


def test_disconnect_in_the_middle_of_append(mra):
    r = login_raw(mra)
    r.send(b"a APPEND INBOX (\\Seen) {100000+}\r\n" + b"Subject: cut\r\n\r\n" + b"y" * 50000)
    r.close()
    wait_for(lambda: all_messages(mra) == [], 10, what="no message from the cut APPEND")
    c = imap(mra)
    c.select("INBOX")
    typ, data = c.search(None, "ALL")
    assert data == [b""]
    assert c.append("INBOX", None, None, b"Subject: whole\r\n\r\nbody\r\n")[0] == "OK"
    c.logout()
    assert len(all_messages(mra)) == 1


def test_login_timeout_and_connection_limits(tern_factory):
    from mda_helpers import add_user, prepare_mail_dir
    from mra_helpers import FAST
    s = dict(FAST)
    s.update({"login_timeout": "5s", "login_max_connections_per_ip": "3"})
    t = tern_factory(settings=s, start=False)
    prepare_mail_dir(t)
    t.start()
    add_user(t, USER, password=PW)
    conns = [Raw(t.port("imap")) for _ in range(3)]
    for c in conns:
        assert c.line().startswith(b"* OK")
    extra = Raw(t.port("imap"))
    assert extra.line().startswith(b"* BYE")
    assert extra.closed()
    # The pre-login timeout ends the idle ones (no sleep: the read waits for it).
    for c in conns:
        c.s.settimeout(30)
        assert c.line() == b"* BYE Disconnected for inactivity."
        assert c.closed()
    # Logged-in sessions no longer count against the login process's per-IP limit.
    sessions = [imap(t) for _ in range(4)]
    for c in sessions:
        c.logout()
    t.stop()


def test_idle_times_out_after_imap_idle_timeout(tern_factory):
    # RFC 3501 5.4: at least 30 minutes (the default); the shortest allowed here is
    # one minute, so the test waits that long, for the server's BYE (no sleep).
    from mda_helpers import add_user, prepare_mail_dir
    from mra_helpers import FAST
    s = dict(FAST)
    s["imap_idle_timeout"] = "60s"
    t = tern_factory(settings=s, start=False)
    prepare_mail_dir(t)
    t.start()
    add_user(t, USER, password=PW)
    r = login_raw(t)
    r.send(b"s SELECT INBOX\r\n")
    r.until(b"s OK")
    r.send(b"i IDLE\r\n")
    assert r.line().startswith(b"+")
    r.s.settimeout(180)
    assert r.line() == b"* BYE Disconnected for inactivity."
    assert r.closed()
    assert re.search(r"imap\(demo@example\.test\): Disconnected for inactivity in=\d+ out=\d+",
                     t.wait_log("Disconnected for inactivity")), t.log()
    t.stop()


def _postlogin_request(t, fields, fd):
    """Sends one hand-over request to tern-mra-postlogin, as the login process would
    (root may connect too); returns the reply packet's verb and fields."""
    import socket as so
    import struct

    def esc(v):
        return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\0", "\\0")

    packet = "LOGIN" + "".join(f"\t{k}={esc(v)}" for k, v in sorted(fields.items()))
    data = packet.encode()
    s = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    s.settimeout(30)
    s.connect(t.socket_path("login/mra-postlogin"))
    so.send_fds(s, [struct.pack(">I", len(data)) + data], [fd])
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    assert len(buf) >= 4, buf
    reply = buf[4:4 + struct.unpack(">I", buf[:4])[0]].decode()
    verb, *items = reply.split("\t")
    return verb, dict(i.split("=", 1) for i in items)


def test_postlogin_learns_the_user_from_tern_authd_only(mra):
    import socket as so
    from authd_client import AuthClient
    from mda_helpers import add_user
    other = "other@example.test"
    add_user(mra, other, password="other-secret-456")
    deliver(mra, other, "not yours")
    base = {"proto": "imap", "method": "PLAIN", "rip": "127.0.0.1", "rport": "1", "lip": "127.0.0.1",
            "lport": str(mra.port("imap")), "tls": "0", "buffered": "", "ok": "a OK Logged in\r\n"}
    login_pid = mra_pids(mra)["login"]
    # 1. A forged request (what a compromised login process could send): an auth id
    #    tern-authd never issued, with a made-up cookie. Refused; no worker starts.
    ours, theirs = so.socketpair()
    verb, f = _postlogin_request(mra, dict(base, auth_id="77", auth_pid=str(login_pid), cookie="0" * 32,
                                           user=other), theirs.fileno())
    theirs.close()
    assert verb == "FAIL" and f.get("kind") == "temp", (verb, f)
    assert "REQUEST for auth id 77: tern-authd knows no finished login" in mra.wait_log("REQUEST for auth id 77: ")
    assert mra_pids(mra)["workers"] == []
    ours.settimeout(5)
    assert ours.recv(100) == b""  # the descriptor was closed unused
    ours.close()
    # 2. A real authentication of USER through tern-authd, handed over with another
    #    user's name in the request: the session is USER's (tern-authd's answer).
    a = AuthClient(mra.socket_path("auth-client"), pid=os.getpid())
    cmd, rid, rest = a.plain(1, USER, PW, service="imap")
    assert cmd == "OK", (cmd, rest)
    ours, theirs = so.socketpair()
    verb, f = _postlogin_request(mra, dict(base, auth_id=str(rid), auth_pid=str(os.getpid()), cookie=a.cookie,
                                           user=other), theirs.fileno())
    theirs.close()
    assert verb == "OK" and f.get("user") == USER, (verb, f)
    ours.settimeout(10)
    rf = ours.makefile("rb")
    assert rf.readline() == b"a OK Logged in\r\n"
    ours.sendall(b"b SELECT INBOX\r\n")
    lines = []
    while not lines or not lines[-1].startswith(b"b "):
        lines.append(rf.readline())
    assert b"* 0 EXISTS\r\n" in lines, lines  # USER's empty INBOX, not other's one message
    ours.sendall(b"c LOGOUT\r\n")
    ours.close()
    a.close()
    assert f"imap({USER})" in mra.wait_log(f"imap({USER}): Disconnected")
    assert f"imap({other})" not in mra.log()
    # 3. The same auth id again (a replay): tern-authd has forgotten it.
    ours, theirs = so.socketpair()
    verb, f = _postlogin_request(mra, dict(base, auth_id=str(rid), auth_pid=str(os.getpid()), cookie=a.cookie,
                                           user=USER), theirs.fileno())
    theirs.close()
    ours.close()
    assert verb == "FAIL", (verb, f)
    assert f"REQUEST for auth id {rid}: " in mra.wait_log(f"REQUEST for auth id {rid}: ")
    still_serving(mra)
