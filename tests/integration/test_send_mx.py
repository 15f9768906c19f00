"""tern-mta sending mail through MX: two Tern instances, mx.a.test on 127.0.0.2:25 and
mx.b.test on 127.0.0.3:25, a dnsmasq with their MX and A records, all in a network
namespace of the test's own (send_util.py). Mail from alice@a.test reaches
bob@b.test over STARTTLS; the TLS policy levels, connection reuse and the
concurrency limit, the source address and HELO name, BDAT, the 8BITMIME downgrade,
SMTPUTF8 and SIZE against a server without them, and MX answers with a CNAME chain
and without MX records."""
import re
import smtplib

import pytest

from send_util import (ScriptedPeer, dns, domain_tern, log_lines, maildir_messages, message_of, netns,  # noqa: F401
                       reconfigure, report_fields, smtp_sink, wait_messages)
from tern_harness import wait_for


def send(ip, sender, rcpts, body, **kw):
    s = smtplib.SMTP(ip, 25, timeout=30)
    s.ehlo("client.a.test")
    refused = s.sendmail(sender, rcpts, body, **kw)
    s.quit()
    assert refused == {}


@pytest.fixture
def b(tern_factory, dns):
    return domain_tern(tern_factory, dns, "b.test", "127.0.0.3", users=["bob"])


def test_mx_delivery_over_starttls(tern_factory, dns, b):
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"])
    send("127.0.0.2", "alice@a.test", ["bob@b.test"],
         b"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: over MX\r\n\r\nhello bob\r\n.leading dot\r\n")
    (m,) = wait_messages(b, "bob", "b.test")
    assert b"Subject: over MX" in m and b"hello bob" in m
    assert b"\r\n.leading dot" in m or b"\n.leading dot" in m
    # B's Received header: from A's HELO name (myhostname) and source address
    # (smtp_bind_address), with TLS.
    assert re.search(rb"Received: from mx\.a\.test \(mx\.a\.test \[127\.0\.0\.2\]\)\r?\n"
                     rb"\t\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)\r?\n"
                     rb"\tby mx\.b\.test \(Tern\) with ESMTPS id \w+", m), m
    log = a.wait_log(": removed")
    assert re.search(r"tern/smtp\[\d+\]: Untrusted TLS connection established to mx\.b\.test\[127\.0\.0\.3\]:25: "
                     r"TLSv1\.[23] with cipher", log), log
    assert re.search(r"tern/smtp\[\d+\]: \w+: to=<bob@b\.test>, relay=mx\.b\.test\[127\.0\.0\.3\]:25, delay=[\d.]+, "
                     r"delays=[\d./]+, dsn=2\.0\.0, status=sent \(250 2\.0\.0 Ok: queued as \w+\)", log), log
    blog = b.wait_log("disconnect from mx.a.test[127.0.0.2]")
    assert "Anonymous TLS connection established from mx.a.test[127.0.0.2]" in blog
    # CHUNKING: the message went as one BDAT chunk, pipelined behind MAIL and RCPT.
    assert re.search(r"disconnect from mx\.a\.test\[127\.0\.0\.2\] ehlo=2 starttls=1 mail=1 rcpt=1 bdat=1", blog), blog


def test_tls_policy_verify(tern_factory, dns, b):
    # The CA file is B's own self-signed certificate: verification succeeds for
    # mx.b.test.
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], smtp_tls_security_level="verify",
                    smtp_tls_CAfile=b.cert)
    send("127.0.0.2", "alice@a.test", ["bob@b.test"], b"Subject: verified\r\n\r\nx\r\n")
    wait_messages(b, "bob", "b.test")
    log = a.wait_log("status=sent")
    assert "Verified TLS connection established to mx.b.test[127.0.0.3]:25" in log
    # A CA that did not sign B's certificate (A's own): no delivery.
    reconfigure(a, smtp_tls_CAfile=a.cert)
    send("127.0.0.2", "alice@a.test", ["bob@b.test"], b"Subject: not verified\r\n\r\nx\r\n")
    log = a.wait_log("dsn=4.7.5, status=deferred")
    assert re.search(r"to=<bob@b\.test>, relay=mx\.b\.test\[127\.0\.0\.3\]:25, .*dsn=4\.7\.5, status=deferred \(Cannot "
                     r"start TLS: handshake "
                     r"failure with mx\.b\.test\[127\.0\.0\.3\]:25", log), log
    assert len(maildir_messages(b, "bob", "b.test")) == 1


def test_tls_policy_encrypt_then_may(tern_factory, dns):
    b = domain_tern(tern_factory, dns, "b.test", "127.0.0.3", users=["bob"], smtpd_tls_security_level="none")
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], smtp_tls_security_level="encrypt",
                    minimal_backoff_time="300s", maximal_backoff_time="600s")
    send("127.0.0.2", "alice@a.test", ["bob@b.test"], b"Subject: tls or nothing\r\n\r\nx\r\n")
    log = a.wait_log("status=deferred")
    assert re.search(r"to=<bob@b\.test>, relay=mx\.b\.test\[127\.0\.0\.3\]:25, .*dsn=4\.7\.4, status=deferred \(TLS is "
                     r"required, but was not offered by host mx\.b\.test\[127\.0\.0\.3\]\)", log), log
    assert maildir_messages(b, "bob", "b.test") == []
    # Opportunistic TLS (the default) sends it in plaintext.
    reconfigure(a, smtp_tls_security_level="may")  # and flushes the queue
    (m,) = wait_messages(b, "bob", "b.test")
    assert b"(using TLS" not in m
    assert b"with ESMTP id" in m


def test_connection_reuse_and_concurrency_limit(tern_factory, dns, b):
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], smtp_destination_concurrency_limit="2",
                    smtp_connection_cache_time_limit="30s")
    s = smtplib.SMTP("127.0.0.2", 25, timeout=30)
    for i in range(12):
        s.sendmail("alice@a.test", ["bob@b.test"], f"Subject: message {i}\r\n\r\nbody {i}\r\n".encode())
    s.quit()
    msgs = wait_messages(b, "bob", "b.test", 12)
    assert sorted(re.search(rb"Subject: message (\d+)", m).group(1) for m in msgs) == sorted(
        str(i).encode() for i in range(12))
    # Twelve messages over at most two connections: reused, and never more than the limit.
    connects = log_lines(b, "connect from mx.a.test[127.0.0.2]")
    connects = [l for l in connects if "disconnect" not in l]
    assert 1 <= len(connects) <= 2, connects
    assert len(log_lines(a, "Untrusted TLS connection established")) == len(connects)


def test_8bit_to_a_server_without_8bitmime_is_converted(tern_factory, dns, b):
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"],
                    smtp_discard_ehlo_keywords="8bitmime, chunking")
    body = ("From: alice@a.test\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\nSubject: umlauts\r\n\r\nGr\u00fc\u00dfe aus A\r\n").encode()
    send("127.0.0.2", "alice@a.test", ["bob@b.test"], body, mail_options=["BODY=8BITMIME"])
    (m,) = wait_messages(b, "bob", "b.test")
    assert b"Content-Transfer-Encoding: quoted-printable" in m
    assert b"Gr=C3=BC=C3=9Fe aus A" in m
    assert message_of(m).get_payload(decode=True).decode("utf-8").rstrip() == "Gr\u00fc\u00dfe aus A"
    assert not any(c >= 0x80 for c in m.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1])
    blog = b.wait_log("disconnect from mx.a.test")
    assert "data=1" in blog  # DATA, since CHUNKING was discarded


def test_smtputf8_needed_but_not_offered_bounces(tern_factory, dns, b):
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], smtp_discard_ehlo_keywords="smtputf8")
    utf8 = "From: alice@a.test\r\nSubject: J\u00fcrgen\r\n\r\nhallo\r\n".encode()
    send("127.0.0.2", "alice@a.test", ["bob@b.test"], utf8, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    # Submitted with SMTPUTF8 but all ASCII where it matters: goes without it.
    ascii_ = b"From: alice@a.test\r\nSubject: plain\r\n\r\nhallo\r\n"
    send("127.0.0.2", "alice@a.test", ["bob@b.test"], ascii_, mail_options=["SMTPUTF8"])
    (m,) = wait_messages(b, "bob", "b.test")
    assert b"Subject: plain" in m
    (bounce,) = wait_messages(a, "alice", "a.test")
    msg, blocks = report_fields(bounce)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    rcpt = blocks[1]
    assert rcpt["Final-Recipient"] == "rfc822; bob@b.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.6.7"
    log = a.log()
    assert re.search(r"to=<bob@b\.test>, relay=mx\.b\.test\[127\.0\.0\.3\]:25, .*dsn=5\.6\.7, status=bounced "
                     r"\(SMTPUTF8 is required, but was not offered by host mx\.b\.test\[127\.0\.0\.3\]\)", log), log


def test_message_over_the_servers_size_limit_bounces(tern_factory, dns):
    b = domain_tern(tern_factory, dns, "b.test", "127.0.0.3", users=["bob"], message_size_limit="2000")
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"])
    send("127.0.0.2", "alice@a.test", ["bob@b.test"], b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 0 +
         (b"y" * 76 + b"\r\n") * 60)
    (bounce,) = wait_messages(a, "alice", "a.test")
    _, blocks = report_fields(bounce)
    assert blocks[1]["Status"] == "5.3.4"
    log = a.log()
    assert re.search(r"dsn=5\.3\.4, status=bounced \(message size \d+ exceeds size limit 2000 of server "
                     r"mx\.b\.test\[127\.0\.0\.3\]\)", log), log
    # The size was known from EHLO: nothing was sent.
    assert "mail=" not in "".join(log_lines(b, "disconnect from mx.a.test"))
    assert maildir_messages(b, "bob", "b.test") == []


def test_cname_chain_and_implicit_mx(tern_factory, dns):
    sink = smtp_sink("127.0.0.4")
    try:
        a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"])
        send("127.0.0.2", "alice@a.test", ["x@c.test", "y@nomx.test"], b"Subject: to the sink\r\n\r\nx\r\n")
        log = a.wait_log("to=<y@nomx.test>")
        wait_for(lambda: "to=<x@c.test>" in a.log(), 20, what="c.test delivery")
        log = a.log()
        # c.test's MX is mxalias.c.test, a CNAME chain to mx.c.test's address.
        assert re.search(r"to=<x@c\.test>, relay=mxalias\.c\.test\[127\.0\.0\.4\]:25, .*status=sent", log), log
        # nomx.test has no MX: its own address is the mail exchanger (RFC 5321 5.1).
        assert re.search(r"to=<y@nomx\.test>, relay=nomx\.test\[127\.0\.0\.4\]:25, .*status=sent", log), log
    finally:
        sink.terminate()
        sink.wait()


def test_backup_mx_when_the_primary_is_down(tern_factory, dns):
    """f.test: MX 10 at 127.0.0.6, where nobody listens, then MX 20 (the sink):
    tried in preference order within one attempt (RFC 5321 5.1)."""
    sink = smtp_sink("127.0.0.4")
    try:
        a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"])
        send("127.0.0.2", "alice@a.test", ["x@f.test"], b"Subject: to the backup\r\n\r\nx\r\n")
        log = a.wait_log("status=sent")
        assert re.search(r"to=<x@f\.test>, relay=mx2\.f\.test\[127\.0\.0\.4\]:25, .*status=sent", log), log
        assert "status=deferred" not in log
    finally:
        sink.terminate()
        sink.wait()


def test_helo_fallback_for_a_server_without_ehlo(tern_factory, dns):
    peer = ScriptedPeer("127.0.0.4", behaviour="helo-only")
    try:
        a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"])
        send("127.0.0.2", "alice@a.test", ["user@d.test"], b"Subject: old school\r\n\r\nhello\r\n")
        wait_for(lambda: peer.received, 20, what="the message at the peer")
        assert b"hello" in peer.received[0]
        # HELO with our name, then the plain commands: no ESMTP parameters.
        assert peer.commands[0] == b"HELO MX.A.TEST"
        assert peer.commands[1] == b"MAIL FROM:<ALICE@A.TEST>"
        log = a.wait_log("status=sent")
        assert re.search(r"to=<user@d\.test>, relay=mx\.d\.test\[127\.0\.0\.4\]:25, .*status=sent \(250 2\.0\.0 Ok: "
                         r"queued as SCRIPTED\)", log), log
    finally:
        peer.stop()
