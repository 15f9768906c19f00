"""tern-authd's auth-userdb socket (Dovecot auth-master protocol) with the real
tern-master, tern-authd and ternctl: users made by `ternctl user add` are looked up
over the real socket."""
import os
import pwd

import pytest

from authd_client import UserdbClient, fields
from tern_harness import is_root


def add_user(tern, user, password, *opts):
    return tern.ternctl("user", "add", *opts, user, input=password + "\n")


def test_user_lookup_of_a_new_user(tern):
    add_user(tern, "demo@example.test", "s3cret-pass")
    c = UserdbClient(tern.socket_path("auth-userdb"))
    r = c.call("USER\t1\tDemo@Example.TEST\tservice=lmtp")
    assert r[:3] == ["USER", "1", "demo@example.test"]
    f = fields(r[3:])
    mail_uid = tern.settings["mail_uid"]
    assert f["uid"] == str(pwd.getpwnam(mail_uid).pw_uid)
    assert f["home"] == os.path.join(tern.dir, "mail", "example.test", "demo")
    assert f["mail"] == "maildir:~/Maildir"
    assert c.call("USER\t2\tnobody@example.test\tservice=lmtp") == ["NOTFOUND", "2"]
    # Names no database can hold are not found, not a (temporary) failure.
    assert c.call("USER\t21\ta b@example.test\tservice=lmtp") == ["NOTFOUND", "21"]
    assert c.call("USER\t22\ta/b@example.test\tservice=lmtp") == ["NOTFOUND", "22"]
    assert c.call("PASS\t23\t\"q\"@example.test\tservice=lmtp") == ["NOTFOUND", "23"]
    # Pipelined requests on one connection, answered by id.
    c.send("USER\t3\tdemo@example.test\tservice=imap")
    c.send("PASS\t4\tdemo@example.test\tservice=imap")
    c.send("LIST\t5")
    got = [c.readline() for _ in range(4)]
    assert got[0].startswith("USER\t3\tdemo@example.test\t")
    assert got[1] == "PASS\t4\tuser=demo@example.test"
    assert got[2:] == ["LIST\t5\tdemo@example.test", "DONE\t5"]
    assert "password" not in got[1] and "$y$" not in "".join(got)


def test_per_user_and_per_domain_overrides(tern):
    tern.ternctl("domain", "add", "--home", "/srv/mail/%d/%n", "--quota", "*:storage=2G", "other.test")
    add_user(tern, "ann@other.test", "pw-ann-123", "--uid", "6001", "--mail", "mbox:~/mail")
    c = UserdbClient(tern.socket_path("auth-userdb"))
    f = fields(c.call("USER\t1\tann@other.test\tservice=lmtp")[3:])
    assert f["uid"] == "6001"
    assert f["home"] == "/srv/mail/other.test/ann"
    assert f["mail"] == "mbox:~/mail"
    assert f["quota_rule"] == "*:storage=2G"


def test_disabled_and_deleted_users_are_not_found(tern):
    add_user(tern, "gone@example.test", "pw-gone-123")
    add_user(tern, "off@example.test", "pw-off-123", "--disabled")
    c = UserdbClient(tern.socket_path("auth-userdb"))
    assert c.call("USER\t1\toff@example.test\tservice=lmtp") == ["NOTFOUND", "1"]
    assert c.call("USER\t2\tgone@example.test\tservice=lmtp")[0] == "USER"
    tern.ternctl("user", "del", "gone@example.test")
    assert c.call("USER\t3\tgone@example.test\tservice=lmtp") == ["NOTFOUND", "3"]


@pytest.mark.skipif(not is_root(), reason="needs root to connect as another uid")
def test_other_uids_are_refused(tern):
    path = tern.socket_path("auth-userdb")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            c = UserdbClient(path)
            out = c.call("USER\t1\tdemo@example.test\tservice=lmtp")
            os.write(w, repr(out).encode())
        except Exception as e:  # closed before the greeting
            os.write(w, ("refused:" + type(e).__name__).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    got = os.read(r, 1000).decode()
    assert got.startswith("refused"), got
    tern.wait_log("auth-userdb: connection from uid 65534")


def test_userdb_files_belong_to_authd_user(tern):
    add_user(tern, "demo@example.test", "s3cret-pass")
    auth_dir = os.path.join(tern.dir, "lib", "auth")
    st = os.stat(auth_dir)
    assert st.st_mode & 0o777 == 0o700
    owner = pwd.getpwnam(tern.settings["authd_user"]).pw_uid
    assert st.st_uid == owner
    for name in os.listdir(auth_dir):
        f = os.stat(os.path.join(auth_dir, name))
        assert f.st_uid == owner, name
        assert f.st_mode & 0o077 == 0, name
