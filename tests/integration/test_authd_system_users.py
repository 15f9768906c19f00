"""System users, as in a classic Postfix + Dovecot install: passwords through PAM
(service `tern`, else `other`), uid/gid/home from passwd, first_valid_uid respected.
The test creates a real system user with a real password (root only)."""
import os
import pwd
import subprocess
import uuid

import pytest

from authd_client import AuthClient, UserdbClient, fields
from tern_harness import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="creating a system user and reading /etc/shadow needs root")


@pytest.fixture
def system_user(tmp_path):
    name = "tt" + uuid.uuid4().hex[:8]
    password = "Sys-" + uuid.uuid4().hex[:12]
    home = tmp_path / name
    subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh", name], check=True)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    try:
        yield name, password, pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)


def start(tern_factory, **extra):
    settings = {"auth_passdb": "lmdb pam", "auth_userdb": "lmdb passwd", "auth_failure_delay": "0s"}
    settings.update(extra)
    return tern_factory(settings=settings)


def test_pam_password_and_passwd_userdb(tern_factory, system_user):
    name, password, pw = system_user
    t = start(tern_factory, first_valid_uid="1000")
    c = AuthClient(t.socket_path("auth-client"))
    cmd, rid, f = c.plain(1, name, password, service="imap")
    assert cmd == "OK", f
    assert fields(f)["user"] == name
    cmd, rid, f = c.plain(2, name, password + "x", service="imap")
    assert cmd == "FAIL"
    u = UserdbClient(t.socket_path("auth-userdb"))
    r = u.call(f"USER\t1\t{name}\tservice=lmtp")
    assert r[:3] == ["USER", "1", name]
    uf = fields(r[3:])
    assert uf["uid"] == str(pw.pw_uid)
    assert uf["gid"] == str(pw.pw_gid)
    assert uf["home"] == pw.pw_dir
    # Failures are logged for fail2ban with the client address, never the password.
    log = t.wait_log(f"{name}")
    assert password not in log


def test_first_valid_uid_is_respected(tern_factory, system_user):
    name, password, pw = system_user
    t = start(tern_factory, first_valid_uid=str(pw.pw_uid + 1))
    c = AuthClient(t.socket_path("auth-client"))
    cmd, _, _ = c.plain(1, name, password, service="imap")
    assert cmd == "FAIL"
    u = UserdbClient(t.socket_path("auth-userdb"))
    assert u.call(f"USER\t1\t{name}\tservice=lmtp")[0] == "NOTFOUND"
    # root is below any sane first_valid_uid: never a mail user.
    assert u.call("USER\t2\troot\tservice=lmtp")[0] == "NOTFOUND"


def test_virtual_and_system_users_side_by_side(tern_factory, system_user):
    name, password, pw = system_user
    t = start(tern_factory, first_valid_uid="1000")
    t.ternctl("user", "add", "virt@example.test", input="virt-pass-123\n")
    c = AuthClient(t.socket_path("auth-client"))
    assert c.plain(1, "virt@example.test", "virt-pass-123")[0] == "OK"
    assert c.plain(2, name, password)[0] == "OK"
