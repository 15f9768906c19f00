"""Interop: a real Postfix from Debian, started privately by the test, authenticates
SMTP clients through tern-authd (smtpd_sasl_type = dovecot, smtpd_sasl_path = the
auth-client socket). Python's smtplib does AUTH PLAIN and AUTH LOGIN after STARTTLS."""
import os
import pathlib
import shutil
import smtplib
import ssl
import subprocess

import pytest

from tern_harness import free_port, is_root, port_open, wait_for

PW = "correct horse 9"
POSTFIX = "/usr/sbin/postfix"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(POSTFIX), reason="postfix is not installed (scripts/setup installs it)"),
    pytest.mark.skipif(not is_root(), reason="a private Postfix instance needs root to start"),
]


@pytest.fixture
def postfix(tern_factory):
    t = tern_factory(settings={"master_services": "authd", "auth_failure_delay": "0", "auth_penalty_max": "0"})
    t.ternctl("user", "add", "demo@example.test", input=PW + "\n")
    # Inside the Tern instance's directory (0755): the postfix user must traverse it.
    base = pathlib.Path(t.dir) / "postfix"
    conf, queue, data = base / "conf", base / "queue", base / "data"
    for d in (conf, queue, data):
        d.mkdir(parents=True)
    os.chmod(base, 0o755)
    shutil.chown(data, "postfix")
    port = free_port()
    log = base / "maillog"
    (conf / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
myhostname = mx.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = {log}
maillog_file_prefixes = {base}
smtpd_tls_cert_file = {t.cert}
smtpd_tls_key_file = {t.key}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {t.socket_path("auth-client")}
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
local_recipient_maps =
""")
    # Not chrooted, so smtpd reaches the socket by its absolute path.
    (conf / "master.cf").write_text(f"127.0.0.1:{port} inet n - n - - smtpd\n"
                                    "proxymap unix - - n - - proxymap\n"
                                    "anvil unix - - n - 1 anvil\n"
                                    "tlsmgr unix - - n 1000? 1 tlsmgr\n"
                                    "postlog unix-dgram n - n - 1 postlogd\n")
    env = dict(os.environ, MAIL_CONFIG=str(conf))
    proc = subprocess.Popen([POSTFIX, "-c", str(conf), "start-fg"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: port_open("127.0.0.1", port), timeout=30, what="private postfix smtpd")
        yield t, port, log
    finally:
        subprocess.run([POSTFIX, "-c", str(conf), "stop"], capture_output=True, env=env, timeout=60)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def session(port):
    s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    s.ehlo("client.example.test")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s.starttls(context=ctx)
    s.ehlo("client.example.test")
    return s


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_postfix_authenticates_through_tern(postfix, mech):
    t, port, log = postfix
    s = session(port)
    offered = s.esmtp_features.get("auth", "").upper().split()
    assert "PLAIN" in offered and "LOGIN" in offered
    s.user, s.password = "demo@example.test", PW
    code, _ = s.auth(mech, getattr(s, "auth_" + mech.lower()), initial_response_ok=(mech == "PLAIN"))
    assert code == 235
    s.quit()
    s = session(port)
    s.user, s.password = "demo@example.test", "wrong password"
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        s.auth(mech, getattr(s, "auth_" + mech.lower()), initial_response_ok=(mech == "PLAIN"))
    assert e.value.smtp_code == 535
    s.quit()
    t.wait_log("lmdb(demo@example.test,127.0.0.1,")
    wait_for(lambda: f"SASL {mech} authentication failed" in log.read_text(), timeout=10,
             what="postfix logged the failure")
    assert "auth=1 quit=1" in log.read_text()
