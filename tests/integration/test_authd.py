"""tern-authd's auth-client socket (Dovecot auth protocol 1.2) with the real daemons:
every mechanism over the real socket, CONT rounds, many requests in flight, REQUEST
on auth-userdb with the right and a wrong cookie, garbage, vanishing clients."""
import base64
import hashlib
import hmac
import imaplib
import os
import poplib
import socket
import threading

import pytest

from authd_client import AuthClient, LineSocket, UserdbClient, fields
from tern_harness import wait_for

FAST = {"auth_failure_delay": "0", "auth_penalty_max": "0"}
PW = "correct horse 9"
# SCRAM secrets are stored only when asked for (test_scram_secrets_* below).
SCRAM = {"auth_scram_secrets": "yes"}


@pytest.fixture
def authd(tern_factory):
    t = tern_factory(settings=dict(FAST, **SCRAM, master_services="authd"))
    t.ternctl("user", "add", "demo@example.test", input=PW + "\n")
    return t


def client(t, **kw):
    return AuthClient(t.socket_path("auth-client"), **kw)


def test_handshake_lists_mechanisms_with_flags(authd):
    c = client(authd)
    assert c.mechs["PLAIN"] == ["plaintext"]
    assert c.mechs["LOGIN"] == ["plaintext"]
    assert c.mechs["SCRAM-SHA-256"] == ["mutual-auth"]
    assert "SCRAM-SHA-1" in c.mechs
    assert "CRAM-MD5" not in c.mechs  # not in the default auth_mechanisms
    assert len(c.cookie) == 32 and int(c.cookie, 16) >= 0
    assert c.spid == authd.pid_of("authd")
    # Two connections get different cookies.
    assert client(authd).cookie != c.cookie


def test_plain_with_initial_response(authd):
    c = client(authd)
    assert c.plain(1, "demo@example.test", PW) == ("OK", 1, ["user=demo@example.test"])
    # The user name is canonical (lower case) whatever the client typed.
    assert c.plain(2, "Demo@EXAMPLE.test", PW) == ("OK", 2, ["user=demo@example.test"])
    cmd, rid, rest = c.plain(3, "demo@example.test", PW + "x")
    assert (cmd, rid) == ("FAIL", 3)
    assert "user=demo@example.test" in rest
    cmd, rid, rest = c.plain(4, "nobody@example.test", PW)
    assert (cmd, rid) == ("FAIL", 4)
    log = authd.wait_log("lmdb(nobody@example.test,127.0.0.1,")
    assert "Password mismatch" in log and "unknown user" in log
    assert PW not in log


def test_plain_without_initial_response_uses_cont(authd):
    c = client(authd)
    c.auth(5, "PLAIN")
    assert c.reply() == ("CONT", 5, [""])
    c.cont(5, b"\0demo@example.test\0" + PW.encode())
    assert c.reply() == ("OK", 5, ["user=demo@example.test"])
    # An empty initial response ("resp==", RFC 4954's "=") is an empty PLAIN
    # message, which is invalid: it fails rather than asking again.
    c.auth(6, "PLAIN", resp=b"")
    assert c.reply()[:2] == ("FAIL", 6)
    c.auth(7, "PLAIN")
    assert c.reply() == ("CONT", 7, [""])
    c.cont(7, b"\0demo@example.test\0wrong")
    assert c.reply()[:2] == ("FAIL", 7)


def test_plain_authorization_identity_must_match(authd):
    c = client(authd)
    c.auth(1, "PLAIN", b"root@example.test\0demo@example.test\0" + PW.encode())
    assert c.reply()[0] == "FAIL"
    c.auth(2, "PLAIN", b"demo@example.test\0demo@example.test\0" + PW.encode())
    assert c.reply()[:2] == ("OK", 2)


def test_login_two_cont_rounds(authd):
    c = client(authd)
    c.auth(7, "LOGIN")
    cmd, rid, rest = c.reply()
    assert (cmd, rid) == ("CONT", 7)
    assert base64.b64decode(rest[0]) == b"Username:"
    c.cont(7, b"demo@example.test")
    cmd, rid, rest = c.reply()
    assert base64.b64decode(rest[0]) == b"Password:"
    c.cont(7, PW.encode())
    assert c.reply() == ("OK", 7, ["user=demo@example.test"])
    c.auth(8, "LOGIN", resp=b"demo@example.test")  # initial response = the user
    assert base64.b64decode(c.reply()[2][0]) == b"Password:"
    c.cont(8, b"nope")
    assert c.reply()[:2] == ("FAIL", 8)


def scram(c, rid, mech, user, password, tamper=False, final_resp_ok=False):
    """A SCRAM client (RFC 5802/7677): returns the final reply. Without
    final-resp-ok the server's signature comes as a CONT answered with an empty one
    (what Postfix and Dovecot's login processes without the flag get)."""
    h = hashlib.sha256 if mech == "SCRAM-SHA-256" else hashlib.sha1
    cnonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={user},r={cnonce}"
    c.auth(rid, mech, ("n,," + first_bare).encode(), extra=("final-resp-ok",) if final_resp_ok else ())
    cmd, _, rest = c.reply()
    if cmd != "CONT":
        return cmd, rest
    server_first = base64.b64decode(rest[0]).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert attrs["r"].startswith(cnonce)
    salted = hashlib.pbkdf2_hmac(h().name, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored_key = h(client_key).digest()
    final_wo_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{final_wo_proof}".encode()
    sig = hmac.new(stored_key, auth_message, h).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    if tamper:
        proof = bytes([proof[0] ^ 1]) + proof[1:]
    c.cont(rid, f"{final_wo_proof},p={base64.b64encode(proof).decode()}".encode())
    cmd, _, rest = c.reply()
    server_key = hmac.new(salted, b"Server Key", h).digest()
    want = "v=" + base64.b64encode(hmac.new(server_key, auth_message, h).digest()).decode()
    if cmd == "CONT":
        assert not final_resp_ok
        # Mutual authentication: the server proves it knows ServerKey.
        assert base64.b64decode(rest[0]).decode() == want
        c.send(f"CONT\t{rid}\t")
        cmd, _, rest = c.reply()
        assert cmd == "OK"
    elif cmd == "OK":
        assert final_resp_ok
        assert base64.b64decode(fields(rest)["resp"]).decode() == want
    return cmd, rest


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_from_stored_secrets(authd, mech):
    c = client(authd)
    cmd, rest = scram(c, 1, mech, "demo@example.test", PW)
    assert cmd == "OK" and "user=demo@example.test" in rest
    cmd, rest = scram(c, 5, mech, "demo@example.test", PW, final_resp_ok=True)
    assert cmd == "OK" and "user=demo@example.test" in rest
    assert scram(c, 2, mech, "demo@example.test", "wrong password")[0] == "FAIL"
    assert scram(c, 3, mech, "demo@example.test", PW, tamper=True)[0] == "FAIL"
    assert scram(c, 4, mech, "nobody@example.test", PW)[0] == "FAIL"
    authd.wait_log("lmdb(demo@example.test,127.0.0.1,<")


def server_first(c, rid, mech, user):
    """Starts SCRAM and returns the server-first-message's attributes (or the FAIL)."""
    c.auth(rid, mech, f"n,,n={user},r=abcdefghijklmnop".encode())
    cmd, _, rest = c.reply()
    if cmd != "CONT":
        return cmd, rest
    attrs = dict(kv.split("=", 1) for kv in base64.b64decode(rest[0]).decode().split(","))
    c.send(f"CONT\t{rid}\t{base64.b64encode(b'c=biws,r=x,p=AAAA').decode()}")  # ends it
    c.reply()
    return cmd, attrs


def test_scram_secrets_are_not_stored_by_default(tern_factory):
    # A SCRAM secret is PBKDF2: a stolen database would be guessed at PBKDF2's speed,
    # not yescrypt's. By default only the crypt hash is stored, and SCRAM, which
    # could not work for anyone, is not offered.
    t = tern_factory(settings=dict(FAST, master_services="authd"))
    t.ternctl("user", "add", "demo@example.test", input=PW + "\n")
    assert "scram      none" in t.ternctl("user", "show", "demo@example.test").stdout
    # (authd read the empty database at start; a restart sees this user.)
    t.stop()
    t.start()
    t.wait_log("SCRAM-SHA-256, SCRAM-SHA-1 not offered: auth_scram_secrets = no and no user has SCRAM secrets")
    c = client(t)
    assert not [m for m in c.mechs if m.startswith("SCRAM-")]
    c.auth(1, "SCRAM-SHA-256", b"n,,n=demo@example.test,r=abc")
    assert c.reply() == ("FAIL", 1, ["reason=Unsupported authentication mechanism"])
    assert c.plain(2, "demo@example.test", PW)[0] == "OK"


def test_imap_and_pop3_do_not_advertise_scram_that_authd_does_not_offer(tern_factory):
    # Plaintext allowed, so that AUTH=PLAIN shows before STARTTLS next to what is left out.
    t = tern_factory(settings=dict(FAST, master_services="authd, mra", disable_plaintext_auth="no"))

    def caps():
        with imaplib.IMAP4("127.0.0.1", t.port("imap"), timeout=30) as c:
            imap = c.capabilities
        p = poplib.POP3("127.0.0.1", t.port("pop3"), timeout=30)
        try:
            pop = p.capa().get("SASL", [])
        finally:
            p.quit()
        return imap, pop

    # The login process learns the list from tern-authd's handshake, right after start.
    imap, pop = wait_for(lambda: (lambda c: c if "AUTH=PLAIN" in c[0] and "AUTH=SCRAM-SHA-256" not in c[0]
                                  else None)(caps()), timeout=10, what="IMAP capabilities without SCRAM")
    assert not [x for x in imap if x.startswith("AUTH=SCRAM")]
    assert "PLAIN" in pop and not [x for x in pop if x.startswith("SCRAM")]


def test_scram_secrets_when_configured_use_the_iteration_count(tern_factory):
    t = tern_factory(settings=dict(FAST, **SCRAM, master_services="authd"))
    t.ternctl("user", "add", "demo@example.test", input=PW + "\n")
    t.set(auth_scram_iterations="12000")
    t.ternctl("user", "add", "more@example.test", input=PW + "\n")
    c = client(t)
    assert scram(c, 1, "SCRAM-SHA-256", "demo@example.test", PW)[0] == "OK"
    assert scram(c, 2, "SCRAM-SHA-1", "more@example.test", PW)[0] == "OK"
    # RFC 7677 section 4: 4096 is the floor, not a good default for SHA-256.
    assert server_first(c, 3, "SCRAM-SHA-256", "demo@example.test")[1]["i"] == "10000"
    assert server_first(c, 4, "SCRAM-SHA-256", "more@example.test")[1]["i"] == "12000"
    assert server_first(c, 5, "SCRAM-SHA-1", "more@example.test")[1]["i"] == "12000"


def test_existing_scram_secrets_keep_working_when_switched_off(tern_factory):
    t = tern_factory(settings=dict(FAST, **SCRAM, master_services="authd"))
    t.ternctl("user", "add", "old@example.test", input=PW + "\n")
    t.stop()
    t.set(auth_scram_secrets="no")
    t.ternctl("user", "add", "new@example.test", input=PW + "\n")
    t.start()
    c = client(t)
    # Some user still has secrets: SCRAM stays offered, and works for them.
    assert "SCRAM-SHA-256" in c.mechs
    assert scram(c, 1, "SCRAM-SHA-256", "old@example.test", PW)[0] == "OK"
    # A user without any fails, and the log says why.
    assert scram(c, 2, "SCRAM-SHA-256", "new@example.test", PW)[0] == "FAIL"
    t.wait_log("lmdb(new@example.test,127.0.0.1,<")
    assert "no SCRAM secret stored for this user (its password was set with auth_scram_secrets = no)" in t.log()
    assert c.plain(3, "new@example.test", PW)[0] == "OK"
    # A password change with the switch off drops the old secrets.
    t.ternctl("user", "passwd", "old@example.test", input=PW + "\n")
    assert "scram      none" in t.ternctl("user", "show", "old@example.test").stdout
    assert scram(c, 4, "SCRAM-SHA-256", "old@example.test", PW)[0] == "FAIL"


def test_cram_md5_needs_plaintext_equivalent_storage(tern_factory):
    t = tern_factory(settings=dict(FAST, master_services="authd", auth_mechanisms="plain cram-md5",
                                   auth_plaintext_equivalent="yes"))
    t.ternctl("user", "add", "demo@example.test", input=PW + "\n")
    c = client(t)
    assert c.mechs["CRAM-MD5"] == ["dictionary"]

    def cram(rid, user, password):
        c.auth(rid, "CRAM-MD5")
        cmd, _, rest = c.reply()
        assert cmd == "CONT"
        challenge = base64.b64decode(rest[0])
        assert challenge.startswith(b"<") and challenge.endswith(b">")
        digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
        c.cont(rid, f"{user} {digest}".encode())
        return c.reply()

    assert cram(1, "demo@example.test", PW) == ("OK", 1, ["user=demo@example.test"])
    assert cram(2, "demo@example.test", "wrong")[0] == "FAIL"
    # A user created before the switch has no such secret: CRAM-MD5 cannot work.
    t.set(auth_plaintext_equivalent="no")
    t.ternctl("user", "add", "old@example.test", input=PW + "\n")
    t.set(auth_plaintext_equivalent="yes")
    assert cram(3, "old@example.test", PW)[0] == "FAIL"
    assert "cram-md5   no" in t.ternctl("user", "show", "old@example.test").stdout


def test_plaintext_refused_unless_secured(tern_factory):
    t = tern_factory(settings=dict(FAST, **SCRAM, master_services="authd"))
    t.ternctl("user", "add", "demo@example.test", input=PW + "\n")
    c = client(t)
    cmd, rid, rest = c.plain(1, "demo@example.test", PW, secured=False)
    assert (cmd, rid) == ("FAIL", 1)
    assert "reason=Plaintext authentication disallowed on non-secure (SSL/TLS) connections." in rest
    assert c.plain(2, "demo@example.test", PW, secured=True)[0] == "OK"
    # SCRAM sends no password: allowed without TLS.
    assert scram(c, 3, "SCRAM-SHA-256", "demo@example.test", PW)[0] == "OK"
    t.set(disable_plaintext_auth="no")
    t.reload()
    wait_for(lambda: client(t).plain(1, "demo@example.test", PW, secured=False)[0] == "OK", timeout=20,
             what="plaintext allowed after reload")


def test_unknown_mechanism_and_bad_auth_lines_fail_politely(authd):
    c = client(authd)
    c.send("AUTH\t1\tGSSAPI\tservice=imap")
    assert c.reply() == ("FAIL", 1, ["reason=Unsupported authentication mechanism"])
    c.send("AUTH\t2\tPLAIN")
    assert c.reply() == ("FAIL", 2, ["reason=service parameter missing"])
    c.send("AUTH\t3\tPLAIN\tservice=smtp\tsecured\tresp=!!notbase64")
    assert c.reply()[:2] == ("FAIL", 3)
    # The connection still works.
    assert c.plain(4, "demo@example.test", PW)[0] == "OK"


def test_many_requests_in_flight_on_one_connection(authd):
    c = client(authd)
    n = 40
    for i in range(1, n + 1):
        good = i % 3 != 0
        c.auth(i, "PLAIN", b"\0demo@example.test\0" + (PW if good else "bad").encode())
    got = {}
    for _ in range(n):
        cmd, rid, _ = c.reply()
        got[rid] = cmd
    assert got == {i: ("OK" if i % 3 else "FAIL") for i in range(1, n + 1)}


def test_concurrent_connections(authd):
    errors = []

    def worker(k):
        try:
            c = client(authd)
            for i in range(1, 6):
                r = c.plain(i, "demo@example.test", PW)
                if r[0] != "OK":
                    errors.append((k, i, r))
        except Exception as e:
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_request_turns_id_and_cookie_into_the_user(authd):
    c = client(authd, pid=31337)
    assert c.plain(9, "demo@example.test", PW)[0] == "OK"
    u = UserdbClient(authd.socket_path("auth-userdb"))
    wrong = ("0" if c.cookie[0] != "0" else "1") + c.cookie[1:]
    assert u.call(f"REQUEST\t1\t31337\t9\t{wrong}") == ["NOTFOUND", "1"]
    assert u.call(f"REQUEST\t2\t31338\t9\t{c.cookie}") == ["NOTFOUND", "2"]   # other pid
    assert u.call(f"REQUEST\t3\t31337\t8\t{c.cookie}") == ["NOTFOUND", "3"]   # other id
    r = u.call(f"REQUEST\t4\t31337\t9\t{c.cookie}")
    assert r[:3] == ["USER", "4", "demo@example.test"]
    assert "uid" in fields(r[3:]) and "home" in fields(r[3:])
    # Once only.
    assert u.call(f"REQUEST\t5\t31337\t9\t{c.cookie}") == ["NOTFOUND", "5"]
    # A failed login leaves nothing to take.
    assert c.plain(10, "demo@example.test", "wrong")[0] == "FAIL"
    assert u.call(f"REQUEST\t6\t31337\t10\t{c.cookie}") == ["NOTFOUND", "6"]
    assert u.call("REQUEST\t7\t31337\t9\tshort") == ["FAIL", "7", "reason=Invalid REQUEST"]


GARBAGE = [
    ("no VERSION first", b"CPID\t1\n"),
    ("wrong major version", b"VERSION\t2\t0\n"),
    ("second VERSION", b"VERSION\t1\t2\nVERSION\t1\t2\n"),
    ("no CPID before AUTH", b"VERSION\t1\t2\nAUTH\t1\tPLAIN\tservice=smtp\n"),
    ("unknown command", b"VERSION\t1\t2\nCPID\t1\nFROB\n"),
    ("NUL byte", b"VERSION\t1\t2\nCPID\t1\nAUTH\t1\tPL\0AIN\tservice=smtp\n"),
    ("bad escape", b"VERSION\t1\t2\nCPID\t1\nAUTH\t1\tPLAIN\tservice=\x01z\n"),
    ("overlong line", b"VERSION\t1\t2\nCPID\t1\nAUTH\t1\tPLAIN\tservice=smtp\tresp=" + b"A" * 70000 + b"\n"),
    ("bad id", b"VERSION\t1\t2\nCPID\t1\nAUTH\tx\tPLAIN\tservice=smtp\n"),
    ("duplicate id", b"VERSION\t1\t2\nCPID\t1\nAUTH\t1\tLOGIN\tservice=smtp\tsecured\nAUTH\t1\tLOGIN\tservice=smtp\tsecured\n"),
    ("CONT before challenge", b"VERSION\t1\t2\nCPID\t1\nAUTH\t1\tPLAIN\tservice=smtp\tsecured\tresp=AGEAYg==\nCONT\t1\tAA==\n"),
]


@pytest.mark.parametrize("what,data", GARBAGE, ids=[g[0] for g in GARBAGE])
def test_garbage_closes_only_that_connection(authd, what, data):
    good = client(authd)
    pid = authd.pid_of("authd")
    bad = LineSocket(authd.socket_path("auth-client"))
    bad.send_raw(data)
    lines = []
    while True:
        line = bad.readline()
        if line is None:
            break
        lines.append(line)
    assert not any(line.startswith("OK") for line in lines), lines
    # The other client never noticed; the daemon did not restart.
    assert good.plain(1, "demo@example.test", PW)[0] == "OK"
    assert authd.pid_of("authd") == pid


def test_client_vanishing_mid_request(authd):
    pid = authd.pid_of("authd")
    for i in range(20):
        c = client(authd)
        c.auth(1, "LOGIN")
        assert c.reply()[0] == "CONT"
        c.auth(2, "PLAIN", b"\0demo@example.test\0" + PW.encode())  # in flight when we vanish
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
    good = client(authd)
    assert good.plain(1, "demo@example.test", PW)[0] == "OK"
    assert authd.pid_of("authd") == pid


def test_password_never_logged(authd):
    c = client(authd)
    c.plain(1, "demo@example.test", PW)
    c.plain(2, "demo@example.test", "Wr0ng-S3cret")
    c.plain(3, "Wr0ng-S3cret-user@example.test", "Wr0ng-S3cret2")
    # User names are logged in canonical (lower-case) form; passwords never.
    authd.wait_log("wr0ng-s3cret-user@example.test")
    log = authd.log()
    assert PW not in log
    assert "Wr0ng-S3cret" not in log
