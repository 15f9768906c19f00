"""`cmake --install build --prefix /usr` (the README's root install), staged into a
DESTDIR: every program tern-master starts is installed where daemon_directory
points, sendmail/mailq/newaliases are there under their alternatives(8) names, and
a Tern running from the installed daemons (not build/bin) delivers mail handed to
the installed sendmail.tern and lists the queue through a mailq.tern link."""
import glob
import os
import shutil
import subprocess
import tempfile

import pytest

from mta_util import add_user, mta_settings, prepare_mail_dir, table_dir
from tern_harness import BIN, Tern, wait_for

BUILD = os.path.dirname(BIN)


@pytest.fixture(scope="module")
def staged():
    # /tmp and 0755: the daemons' users run the installed programs from here.
    d = tempfile.mkdtemp(prefix="tern-install-", dir="/tmp")
    os.chmod(d, 0o755)
    r = subprocess.run(["cmake", "--install", BUILD, "--prefix", "/usr"], env=dict(os.environ, DESTDIR=d),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_every_program_is_installed(staged):
    libexec = os.path.join(staged, "usr/libexec/tern")
    for prog in ("tern-authd", "tern-mda", "tern-mta", "tern-mra", "tern-mra-postlogin", "tern-deliver",
                 "tern-index"):
        assert os.access(os.path.join(libexec, prog), os.X_OK), prog
    for prog in ("tern-master", "ternctl", "sendmail.tern"):
        assert os.access(os.path.join(staged, "usr/sbin", prog), os.X_OK), prog
    for name in ("mailq.tern", "newaliases.tern"):
        link = os.path.join(staged, "usr/bin", name)
        assert os.readlink(link) == "/usr/sbin/sendmail.tern", name
    assert os.path.exists(os.path.join(staged, "etc/tern/tern.conf"))
    assert os.path.exists(os.path.join(staged, "usr/lib/systemd/system/tern-master.service"))
    # Nothing is installed under the configure-time default prefix.
    assert not os.path.exists(os.path.join(staged, "usr/local"))
    # Every daemon the master starts is in the installed daemon_directory.
    started = {os.path.basename(p) for p in glob.glob(os.path.join(BIN, "tern-*"))} - {"tern-master"}
    assert started <= set(os.listdir(libexec)) | {"tern-master"}


def test_installed_programs_run_the_suite(staged, tern_factory, tmp_path):
    d = table_dir()
    t = tern_factory(settings=mta_settings(d, daemon_directory=os.path.join(staged, "usr/libexec/tern"),
                                           command_directory=os.path.join(staged, "usr/sbin")))
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    st = t.status()
    for svc in ("authd", "mda", "mta", "mra", "mra-postlogin"):
        assert st[svc]["state"] == "running", st
    # The running daemons are the installed ones.
    exe = os.readlink(f"/proc/{st['mra-postlogin']['pid']}/exe")
    assert exe.startswith(staged), exe

    sendmail = os.path.join(staged, "usr/sbin/sendmail.tern")
    r = subprocess.run([sendmail, "-f", "root@example.test", "alice@example.test"],
                       input="Subject: via sendmail.tern\n\ninstalled\n", text=True, capture_output=True,
                       env=t.env(), timeout=60)
    assert r.returncode == 0, r.stderr
    maildir = os.path.join(t.dir, "mail", "example.test", "alice", "Maildir")
    got = wait_for(lambda: glob.glob(os.path.join(maildir, "new", "*")), 30, what="delivery to alice")
    with open(got[0], "rb") as f:
        assert b"Subject: via sendmail.tern" in f.read()

    # mailq.tern is a link to sendmail.tern; the name before ".tern" decides.
    link = tmp_path / "mailq.tern"
    os.symlink(sendmail, link)
    # (Run as sendmail it would read a message from stdin; stdin is empty here.)
    def mailq():
        r = subprocess.run([str(link)], capture_output=True, text=True, env=t.env(), timeout=30,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("Mail queue is empty") or r.stdout.startswith("-Queue ID-"), r.stdout
        return r.stdout.startswith("Mail queue is empty")
    wait_for(mailq, 30, what="mailq.tern: Mail queue is empty")
