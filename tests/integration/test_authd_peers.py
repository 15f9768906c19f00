"""Who may vouch for a client on tern-authd's auth-client socket. The socket is 0666,
so any local user can talk to it; rip (the penalty key and PAM_RHOST), secured (TLS:
plaintext mechanisms allowed) and no-penalty are believed only from root and the
users of auth_client_trusted_users (mail_owner, default_login_user, postfix), by
SO_PEERCRED. The untrusted client runs as a real other uid (nobody) in a child
process over the real socket."""
import json
import os
import pwd
import subprocess
import sys
import time

import pytest

from authd_client import AuthClient
from tern_harness import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="the untrusted peer is another uid (nobody): needs root")

PW = "correct horse 9"
HERE = os.path.dirname(os.path.abspath(__file__))

# Runs a list of PLAIN attempts on one connection as the uid it was started with and
# prints [[reply, seconds], ...] as JSON.
AS_USER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from authd_client import AuthClient
c = AuthClient(sys.argv[2])
out = []
for i, step in enumerate(json.loads(sys.argv[3])):
    start = time.monotonic()
    r = c.plain(i + 1, step["user"], step["password"], rip=step.get("rip", "127.0.0.1"),
                secured=step.get("secured", True), extra=tuple(step.get("extra", ())))
    out.append([list(r), time.monotonic() - start])
print(json.dumps(out))
"""


def plain_as(t, user, steps):
    """The replies (and how long each took) of PLAIN attempts made by `user`."""
    r = subprocess.run([sys.executable, "-c", AS_USER, HERE, t.socket_path("auth-client"), json.dumps(steps)],
                       user=user, group=pwd.getpwnam(user).pw_gid, extra_groups=[], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return [(tuple(reply[:2]) + (reply[2],), secs) for reply, secs in json.loads(r.stdout)]


@pytest.fixture
def authd(tern_factory, request):
    settings = {"master_services": "authd", "auth_failure_delay": "0", **getattr(request, "param", {})}
    t = tern_factory(settings=settings)
    t.ternctl("user", "add", "demo@example.test", input=PW + "\n")
    return t


@pytest.mark.parametrize("authd", [{"auth_penalty_max": "2s", "disable_plaintext_auth": "no"}], indirect=True)
def test_untrusted_peer_cannot_rotate_rip_or_skip_the_penalty(authd):
    t = authd
    # Every guess claims another client address, and the later ones say the penalty
    # was applied already. From nobody, neither is believed: the failures count
    # against its uid, so each guess after the first pays the penalty of one or more
    # failures (at least 2 s: a lower bound set by a timer).
    got = plain_as(t, "nobody", [
        {"user": "demo@example.test", "password": "guess-1", "rip": "198.51.100.1"},
        {"user": "demo@example.test", "password": "guess-2", "rip": "198.51.100.2", "extra": ["no-penalty"]},
        {"user": "demo@example.test", "password": "guess-3", "rip": "198.51.100.3", "extra": ["no-penalty"]},
    ])
    assert [r[0] for r, _ in got] == ["FAIL", "FAIL", "FAIL"]
    assert got[1][1] >= 1.9, got
    assert got[2][1] >= 1.9, got
    log = t.wait_log("not in auth_client_trusted_users")
    nobody = pwd.getpwnam("nobody").pw_uid
    # One warning for the connection, naming what was ignored; the failure lines do
    # not carry the forged addresses.
    assert log.count("not in auth_client_trusted_users") == 1
    assert f"uid {nobody}, C" in log
    assert "ignoring rip, lip, secured" in log
    assert log.count("lmdb(demo@example.test,unknown,") == 3
    assert "198.51.100." not in log

    # root (a trusted peer) keeps today's behaviour: its rip is the key, so the
    # address nobody claimed has no failures, and no-penalty is honoured. The failure
    # line names the address.
    c = AuthClient(t.socket_path("auth-client"))
    assert c.plain(1, "demo@example.test", "bad", rip="198.51.100.1", extra=("no-penalty",))[0] == "FAIL"
    assert c.plain(2, "demo@example.test", PW, rip="198.51.100.1", extra=("no-penalty",))[0] == "OK"
    assert "lmdb(demo@example.test,198.51.100.1," in t.wait_log("lmdb(demo@example.test,198.51.100.1,")
    assert t.log().count("not in auth_client_trusted_users") == 1


def test_secured_from_an_untrusted_peer_does_not_allow_plaintext(authd):
    t = authd
    # disable_plaintext_auth = yes (the default): PLAIN needs a secured connection,
    # and only a trusted login process can say it has one.
    [(reply, _)] = plain_as(t, "nobody", [{"user": "demo@example.test", "password": PW, "secured": True}])
    assert reply[0] == "FAIL"
    assert any("Plaintext authentication disallowed" in f for f in reply[2]), reply
    t.wait_log("not in auth_client_trusted_users")
    # The mail_owner (tern-mta's user) and root are trusted: the same request passes.
    [(reply, _)] = plain_as(t, t.settings["mail_owner"], [{"user": "demo@example.test", "password": PW,
                                                          "secured": True}])
    assert reply == ("OK", 1, ["user=demo@example.test"])
    assert AuthClient(t.socket_path("auth-client")).plain(1, "demo@example.test", PW, secured=True)[0] == "OK"
    # Unsecured is refused for everyone.
    [(reply, _)] = plain_as(t, t.settings["mail_owner"], [{"user": "demo@example.test", "password": PW,
                                                          "secured": False}])
    assert reply[0] == "FAIL"
    assert t.log().count("not in auth_client_trusted_users") == 1


@pytest.mark.parametrize("authd", [{"auth_client_trusted_users": "nobody", "disable_plaintext_auth": "yes"}],
                         indirect=True)
def test_auth_client_trusted_users_names_who_is_trusted(authd):
    t = authd
    # A real Postfix's smtpd runs as a user the admin names here; with the list set,
    # only root, tern-authd's own user and the listed users are trusted.
    [(reply, _)] = plain_as(t, "nobody", [{"user": "demo@example.test", "password": PW, "secured": True}])
    assert reply == ("OK", 1, ["user=demo@example.test"])
    [(reply, _)] = plain_as(t, t.settings["mail_owner"], [{"user": "demo@example.test", "password": PW,
                                                          "secured": True}])
    assert reply[0] == "FAIL"
    assert "not in auth_client_trusted_users" in t.wait_log("not in auth_client_trusted_users")

