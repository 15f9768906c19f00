"""The development default creates a demo user with a random password, keeps it
0600 in the state directory, prints it with commands to try, and tern-authd accepts
it over the real auth-client socket."""
import os
import pathlib
import signal
import stat
import subprocess
import tempfile

from authd_client import AuthClient
from tern_harness import BIN, Tern, free_port, wait_for


def test_dev_default_has_a_working_demo_user(tmp_path):
    # Not under pytest's tmp_path: its parent is 0700, and as root the daemons run
    # as their own users, who must reach the state directory.
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tern-dev-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    d = tmp / "var"
    opts = []
    for k in Tern.PORT_KEYS:
        opts += ["-o", f"{k}={free_port()}"]
    p = subprocess.Popen([os.path.join(BIN, "tern-master"), "--dev", str(d), *opts], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        conf = d / "tern.conf"
        # authd, mda, mta, mra and mra-postlogin (which runs whenever tern-mra does).
        wait_for(lambda: conf.exists() and subprocess.run([os.path.join(BIN, "ternctl"), "-c", str(conf), "status"],
                                                          capture_output=True, text=True).stdout.count("state=running") == 5,
                 timeout=30, what="dev default running")
        pw_file = d / "demo-password"
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
        pw = pw_file.read_text().strip()
        assert len(pw) == 16
        c = AuthClient(str(d / "run" / "auth-client"))
        assert c.plain(1, "demo@example.test", pw, secured=False) == ("OK", 1, ["user=demo@example.test"])
        assert c.plain(2, "demo@example.test", pw + "x")[0] == "FAIL"
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    assert f"password {pw}" in err
    assert "swaks --server 127.0.0.1:" in err and f"--auth-user demo@example.test --auth-password {pw}" in err
    assert f"a LOGIN demo@example.test {pw}" in err
    assert "mutt -f 'imaps://demo%40example.test@127.0.0.1:" in err
    # Only in the banner (password, swaks, telnet lines), never in the daemons' logs.
    assert err.count(pw) == 3
