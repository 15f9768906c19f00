"""relayhost: mx.a.test (Tern, 127.0.0.2) sends everything through a smarthost, a
real Postfix from Debian started privately by the test on smtp.relay.test
(127.0.0.5), with submission on :587 (STARTTLS) and :465 (implicit TLS, RFC 8314)
and SASL authentication through a Tern authd of its own (smtpd_sasl_type =
dovecot). Tern authenticates with its in-house SASL client (PLAIN, LOGIN) using the
credentials of smtp_sasl_password_maps; Postfix relays the mail on to mx.b.test
(Tern, 127.0.0.3), where it is delivered. All in the test's own network namespace
with dnsmasq (send_util.py)."""
import os
import pathlib
import re
import shutil
import smtplib
import subprocess

import pytest

from send_util import dns, domain_tern, maildir_messages, module_factory, netns, wait_messages  # noqa: F401
from tern_harness import port_open, wait_for

POSTFIX = "/usr/sbin/postfix"
USER, PW = "relay@relay.test", "relay pass 9"

pytestmark = pytest.mark.skipif(not os.path.exists(POSTFIX), reason="postfix is not installed (scripts/setup does)")


@pytest.fixture(scope="module")
def smarthost(netns, module_factory):
    """Postfix on 127.0.0.5:587 and :465, authenticating through a Tern authd,
    relaying to [127.0.0.3]:25. Yields (authd instance, maillog path)."""
    t = module_factory(settings={"master_services": "authd", "auth_failure_delay": "0", "auth_penalty_max": "0"},
                       hostname="smtp.relay.test", domain="relay.test")
    t.ternctl("user", "add", USER, input=PW + "\n")
    base = pathlib.Path(t.dir) / "postfix"  # the postfix user must traverse t.dir (0755)
    conf, queue, data = base / "conf", base / "queue", base / "data"
    for d in (conf, queue, data):
        d.mkdir(parents=True)
    os.chmod(base, 0o755)
    shutil.chown(data, "postfix")
    log = base / "maillog"
    (conf / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
myhostname = smtp.relay.test
mydestination =
inet_interfaces = all
inet_protocols = ipv4
maillog_file = {log}
maillog_file_prefixes = {base}
smtpd_peername_lookup = no
smtpd_tls_cert_file = {t.cert}
smtpd_tls_key_file = {t.key}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_tls_received_header = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {t.socket_path("auth-client")}
smtpd_relay_restrictions = permit_sasl_authenticated, reject
local_recipient_maps =
relayhost = [127.0.0.3]:25
smtp_bind_address = 127.0.0.5
smtp_tls_security_level = may
smtp_connection_cache_on_demand = no
""")
    # inet_interfaces = all: Postfix wants its addresses on an interface, and lo has
    # 127.0.0.1/8, not 127.0.0.5; the listeners below name the address anyway.
    # Not chrooted, so smtpd reaches the auth socket by its absolute path.
    (conf / "master.cf").write_text("""127.0.0.5:587 inet n - n - - smtpd -o smtpd_tls_security_level=encrypt
127.0.0.5:465 inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
smtp unix - - n - - smtp
relay unix - - n - - smtp
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
proxymap unix - - n - - proxymap
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
tlsmgr unix - - n 1000? 1 tlsmgr
showq unix n - n - - showq
postlog unix-dgram n - n - 1 postlogd
""")
    env = dict(os.environ, MAIL_CONFIG=str(conf))
    errors = base / "postfix.stderr"
    with open(errors, "wb") as err:
        proc = subprocess.Popen([POSTFIX, "-c", str(conf), "start-fg"], stdout=err, stderr=err, env=env)
    try:
        def up():
            if proc.poll() is not None:
                raise AssertionError(f"postfix exited with {proc.returncode}: {errors.read_text()}"
                                     f"{log.read_text() if log.exists() else ''}")
            return port_open("127.0.0.5", 587) and port_open("127.0.0.5", 465)

        wait_for(up, timeout=30, what="the private postfix's smtpd")
        yield t, log
    finally:
        subprocess.run([POSTFIX, "-c", str(conf), "stop"], capture_output=True, env=env, timeout=60)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sender(tern_factory, dns, smarthost, relayhost, password=PW, **extra):
    """mx.a.test with relayhost and credentials for it; every TLS certificate is
    checked against the authd instance's (self-signed, for smtp.relay.test)."""
    t, _ = smarthost
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], start=False, relayhost=relayhost,
                    smtp_sasl_auth_enable="yes", smtp_tls_security_level="verify", smtp_tls_CAfile=t.cert, **extra)
    maps = os.path.join(a.dir, "sasl_passwd")
    with open(maps, "w") as f:
        f.write(f"{relayhost} {USER}:{password}\n")
    a.set(smtp_sasl_password_maps=f"texthash:{maps}")
    from send_util import start_domain
    start_domain(a)
    return a


def send(body):
    s = smtplib.SMTP("127.0.0.2", 25, timeout=30)
    s.ehlo("client.a.test")
    assert s.sendmail("alice@a.test", ["bob@b.test"], body) == {}
    s.quit()


@pytest.mark.parametrize("port,mech", [(587, "PLAIN"), (465, "LOGIN")])
def test_relayhost_with_auth(tern_factory, dns, smarthost, port, mech):
    _, plog = smarthost
    b = domain_tern(tern_factory, dns, "b.test", "127.0.0.3", users=["bob"])
    a = sender(tern_factory, dns, smarthost, f"[smtp.relay.test]:{port}", smtp_sasl_mechanism_filter=mech.lower())
    send(f"From: alice@a.test\r\nSubject: via the smarthost on {port}\r\n\r\nrelayed\r\n".encode())
    (m,) = wait_messages(b, "bob", "b.test")
    assert f"Subject: via the smarthost on {port}".encode() in m
    # Postfix's Received header: from Tern A, authenticated (ESMTPSA) over TLS.
    assert re.search(rb"Received: from mx\.a\.test \(unknown \[127\.0\.0\.2\]\)\r?\n"
                     rb"\t\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)?\r?\n"
                     rb"(\t [^\n]*\n)*"                        # key-exchange ... )
                     rb"\t\(No client certificate requested\)\r?\n"
                     rb"\tby smtp\.relay\.test \(Postfix\) with ESMTPSA id \w+", m), m
    log = a.wait_log("status=sent")
    assert re.search(rf"Verified TLS connection established to smtp\.relay\.test\[127\.0\.0\.5\]:{port}: TLSv1\.[23]",
                     log), log
    assert re.search(rf"to=<bob@b\.test>, relay=smtp\.relay\.test\[127\.0\.0\.5\]:{port}, .*dsn=2\.0\.0, status=sent "
                     rf"\(250 2\.0\.0 Ok: \d+ bytes queued as \w+\)", log), log
    wait_for(lambda: f"sasl_method={mech}, sasl_username={USER}" in plog.read_text(), 10,
             what="postfix logging the authentication")
    if port == 587:
        # STARTTLS on 587: the password went after the handshake (Postfix's
        # smtpd_tls_auth_only would not even offer AUTH before it).
        wait_for(lambda: re.search(r"disconnect from unknown\[127\.0\.0\.2\] ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 "
                                   r"(data|bdat)=1 quit=1", plog.read_text()), 10, what="postfix's disconnect line")


def test_relayhost_wrong_password_defers(tern_factory, dns, smarthost):
    domain_tern(tern_factory, dns, "b.test", "127.0.0.3", users=["bob"])
    a = sender(tern_factory, dns, smarthost, "[smtp.relay.test]:587", password="not the password",
               minimal_backoff_time="300s", maximal_backoff_time="600s")
    send(b"Subject: refused\r\n\r\nx\r\n")
    log = a.wait_log("status=deferred")
    assert re.search(r"to=<bob@b\.test>, relay=smtp\.relay\.test\[127\.0\.0\.5\]:587, .*dsn=4\.7\.\d+, status=deferred "
                     r"\(SASL authentication failed; server smtp\.relay\.test\[127\.0\.0\.5\] said: 535 5\.7\.8 ",
                     log), log
    assert "status=bounced" not in log
    assert maildir_messages(a, "alice", "a.test") == []
