"""Faults on the way from mx.a.test (127.0.0.2) to mx.b.test (127.0.0.3), to a
scripted peer (mx.d.test, 127.0.0.4) and to domains whose DNS fails, in the test's
own network namespace with dnsmasq (send_util.py): the receiver down (deferred,
delivered once it is up and the queue is flushed), 4xx then 250, 5xx (an RFC 3464
bounce in the sender's Maildir, a copy for the postmaster), an undeliverable bounce
(to the postmaster), the queue lifetime running out, a delay warning, the peer
hanging up in the middle of DATA and of a BDAT chunk, a server that never greets
(smtp_helo_timeout); NXDOMAIN and a null MX (bounced), SERVFAIL, no DNS answer and
REFUSED (deferred)."""
import re
import smtplib
import subprocess

import pytest

from send_util import (ScriptedPeer, dns, domain_tern, log_lines, maildir_messages, message_of, netns,  # noqa: F401
                       report_fields, start_domain, wait_messages, wait_queue_empty)
from mta_util import add_user
from tern_harness import BIN, wait_for


def send(sender, rcpts, body, **kw):
    s = smtplib.SMTP("127.0.0.2", 25, timeout=30)
    s.ehlo("client.a.test")
    assert s.sendmail(sender, rcpts, body, **kw) == {}
    s.quit()


def flush(t):
    r = t.ternctl("queue", "flush")
    assert "Queue flush started" in r.stdout, r.stdout


def test_receiver_down_then_up(tern_factory, dns):
    b = domain_tern(tern_factory, dns, "b.test", "127.0.0.3", users=["bob"], start=False)
    # A long backoff: only the flush can make the second attempt happen now.
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], minimal_backoff_time="300s",
                    maximal_backoff_time="600s")
    send("alice@a.test", ["bob@b.test"], b"Subject: patience\r\n\r\nwait for it\r\n")
    log = a.wait_log("status=deferred")
    assert re.search(r"to=<bob@b\.test>, relay=none, delay=[\d.]+, delays=[\d./]+, dsn=4\.4\.1, status=deferred "
                     r"\(connect to mx\.b\.test\[127\.0\.0\.3\]:25: Connection refused\)", log), log
    show = wait_for(lambda: (lambda s: s if "attempts=1" in s else None)(a.ternctl("queue", "show").stdout), 10,
                    what="the deferral recorded")
    assert "recipient: bob@b.test state=pending attempts=1" in show
    assert "dsn=4.4.1 (connect to mx.b.test[127.0.0.3]:25: Connection refused)" in show
    start_domain(b)
    # sendmail -q, as Postfix's: everything deferred is tried now.
    subprocess.run([f"{BIN}/sendmail", "-q"], env=a.env(), check=True, timeout=30)
    (m,) = wait_messages(b, "bob", "b.test")
    assert b"wait for it" in m
    wait_queue_empty(a)
    assert maildir_messages(a, "alice", "a.test") == []  # no bounce, no delay notice


def test_4xx_then_250(tern_factory, dns):
    b = domain_tern(tern_factory, dns, "b.test", "127.0.0.3", users=["bob"], unknown_local_recipient_reject_code="450")
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], minimal_backoff_time="300s",
                    maximal_backoff_time="600s")
    send("alice@a.test", ["carol@b.test"], b"Subject: for carol\r\n\r\nhi carol\r\n")
    log = a.wait_log("status=deferred")
    assert re.search(r"to=<carol@b\.test>, relay=mx\.b\.test\[127\.0\.0\.3\]:25, .*dsn=4\.1\.1, status=deferred "
                     r"\(host mx\.b\.test\[127\.0\.0\.3\] said: 450 4\.1\.1 <carol@b\.test>: Recipient address "
                     r"rejected: .* \(in reply to RCPT TO command\)\)", log), log
    add_user(b, "carol@b.test")
    wait_for(lambda: "attempts=1" in a.ternctl("queue", "show").stdout, 10, what="the deferral recorded")
    flush(a)
    (m,) = wait_messages(b, "carol", "b.test")
    assert b"hi carol" in m
    wait_for(lambda: re.search(r"to=<carol@b\.test>, relay=mx\.b\.test\[127\.0\.0\.3\]:25, .*status=sent", a.log()), 10,
             what="sent")
    wait_queue_empty(a)


def test_5xx_bounces_to_the_sender_with_a_postmaster_copy(tern_factory, dns):
    domain_tern(tern_factory, dns, "b.test", "127.0.0.3", users=["bob"])
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], notify_classes="bounce")
    send("alice@a.test", ["nobody@b.test", "bob@b.test"],
         b"From: alice@a.test\r\nSubject: who is there\r\nMessage-ID: <q1@a.test>\r\n\r\nthe original text\r\n")
    # alice is the sender and, through the alias, the postmaster: two notices.
    msgs = wait_messages(a, "alice", "a.test", 2)
    by_subject = {message_of(m)["Subject"]: m for m in msgs}
    assert set(by_subject) == {"Undelivered Mail Returned to Sender", "Postmaster Copy: Undelivered Mail Returned to Sender"}
    bounce, blocks = report_fields(by_subject["Undelivered Mail Returned to Sender"])
    assert bounce["From"] == "MAILER-DAEMON@mx.a.test (Mail Delivery System)"
    assert bounce["To"] == "alice@a.test"
    assert blocks[0]["Reporting-MTA"] == "dns; mx.a.test"
    assert len(blocks) == 2  # only the recipient that failed
    r = blocks[1]
    assert r["Final-Recipient"] == "rfc822; nobody@b.test"
    assert r["Action"] == "failed"
    assert r["Status"] == "5.1.1"
    assert r["Remote-MTA"] == "dns; mx.b.test"
    assert re.match(r"smtp; 550 5\.1\.1 <nobody@b\.test>: Recipient address rejected", r["Diagnostic-Code"]), r
    parts = bounce.get_payload()
    assert parts[0].get_content_type() == "text/plain"
    assert "host mx.b.test[127.0.0.3] said: 550 5.1.1" in parts[0].get_payload()
    assert parts[2].get_content_type() == "message/rfc822"
    assert b"the original text" in parts[2].as_bytes()
    # The postmaster copy has the headers only.
    copy = message_of(by_subject["Postmaster Copy: Undelivered Mail Returned to Sender"])
    assert copy.get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert b"the original text" not in copy.get_payload()[2].as_bytes()
    log = a.log()
    assert re.search(r"to=<nobody@b\.test>, relay=mx\.b\.test\[127\.0\.0\.3\]:25, .*dsn=5\.1\.1, status=bounced "
                     r"\(host mx\.b\.test\[127\.0\.0\.3\] said: 550 5\.1\.1 <nobody@b\.test>: .*\(in reply to RCPT TO "
                     r"command\)\)", log), log
    assert re.search(r"tern/bounce\[\d+\]: \w+: sender non-delivery notification: \w+", log)
    assert re.search(r"to=<bob@b\.test>, relay=mx\.b\.test\[127\.0\.0\.3\]:25, .*status=sent", log)


def test_an_undeliverable_bounce_goes_to_the_postmaster(tern_factory, dns):
    """ghost@b.test does not exist: the bounce to it fails too, and with 2bounce the
    postmaster gets that bounce, whole; nothing else is made (no loop)."""
    domain_tern(tern_factory, dns, "b.test", "127.0.0.3", users=["bob"])
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], notify_classes="2bounce")
    send("ghost@b.test", ["nobody@b.test"], b"Subject: from a ghost\r\n\r\nboo\r\n")
    (m,) = wait_messages(a, "alice", "a.test")
    msg, blocks = report_fields(m)
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail Returned to Sender"
    assert blocks[1]["Final-Recipient"] == "rfc822; ghost@b.test"
    assert blocks[1]["Status"] == "5.1.1"
    inner = msg.get_payload()[2]
    assert inner.get_content_type() == "message/rfc822"
    assert b"Undelivered Mail Returned to Sender" in inner.as_bytes()  # the bounce that failed, whole
    wait_queue_empty(a)
    assert len(maildir_messages(a, "alice", "a.test")) == 1
    assert len(log_lines(a, "status=bounced")) == 2


def test_lifetime_expiry(tern_factory, dns):
    # Nobody listens on mx.e.test: every attempt is refused. After two seconds in the
    # queue the next attempt is the last, and the message comes back.
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], maximal_queue_lifetime="2s",
                    minimal_backoff_time="1s", maximal_backoff_time="1s")
    send("alice@a.test", ["user@e.test"], b"Subject: too late\r\n\r\nnever arrives\r\n")
    (m,) = wait_messages(a, "alice", "a.test", timeout=30)
    msg, blocks = report_fields(m)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Status"] == "4.4.1"
    assert "connect to mx.e.test[127.0.0.6]:25: Connection refused" in msg.get_payload()[0].get_payload()
    log = a.log()
    assert re.search(r"to=<user@e\.test>, relay=none, .*dsn=4\.4\.1, status=deferred", log)
    assert re.search(r"to=<user@e\.test>, relay=none, .*dsn=4\.4\.1, status=expired \(connect to", log), log
    wait_queue_empty(a)


def test_delay_warning_then_delivery(tern_factory, dns):
    # A retries every second: one attempt may come between B's start and bob's
    # creation, so B answers unknown users with 450 (tried again), not 550.
    b = domain_tern(tern_factory, dns, "b.test", "127.0.0.3", users=["bob"], start=False,
                    unknown_local_recipient_reject_code="450")
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], delay_warning_time="1s",
                    notify_classes="delay", minimal_backoff_time="1s", maximal_backoff_time="1s")
    send("alice@a.test", ["bob@b.test"], b"Subject: slow\r\nMessage-ID: <slow@a.test>\r\n\r\nslow body\r\n")
    msgs = wait_messages(a, "alice", "a.test", 2, timeout=30)
    by_subject = {message_of(m)["Subject"]: m for m in msgs}
    assert set(by_subject) == {"Delayed Mail (still being retried)", "Postmaster Copy: Delayed Mail (still being retried)"}
    msg, blocks = report_fields(by_subject["Delayed Mail (still being retried)"])
    assert blocks[1]["Action"] == "delayed"
    assert blocks[1]["Status"].startswith("4.")
    assert msg.get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert b"Message-ID: <slow@a.test>" in msg.get_payload()[2].as_bytes()
    start_domain(b)
    flush(a)
    (m,) = wait_messages(b, "bob", "b.test")
    assert b"slow body" in m
    wait_queue_empty(a)
    # One warning per recipient, not one per attempt.
    assert len(maildir_messages(a, "alice", "a.test")) == 2


def test_peer_closes_in_the_middle_of_data(tern_factory, dns):
    peer = ScriptedPeer("127.0.0.4", behaviour="cut-data", cut_after=20)
    try:
        a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], minimal_backoff_time="300s",
                        maximal_backoff_time="600s")
        body = b"Subject: cut short\r\n\r\n" + b"line of the body\r\n" * 200
        send("alice@a.test", ["user@d.test"], body)
        # The body fits in the socket buffers: whether the client had written the final
        # dot when the peer hung up depends on the scheduling, and the log says which.
        log = a.wait_log("status=deferred")
        assert re.search(r"to=<user@d\.test>, relay=mx\.d\.test\[127\.0\.0\.4\]:25, .*dsn=4\.4\.2, status=deferred "
                         r"\(lost connection with mx\.d\.test\[127\.0\.0\.4\]:25 while sending (message body|end of data -- "
                         r"message may be sent more than once)\)", log), log
        assert peer.received == []
        # The peer behaves now: the retry delivers the whole message, once.
        peer.behaviour = "accept"
        wait_for(lambda: "attempts=1" in a.ternctl("queue", "show").stdout, 10, what="the deferral recorded")
        flush(a)
        wait_for(lambda: peer.received, 20, what="the message at the peer")
        assert peer.received[0].count(b"line of the body") == 200
        wait_queue_empty(a)
        assert maildir_messages(a, "alice", "a.test") == []
    finally:
        peer.stop()


def test_peer_closes_in_the_middle_of_a_bdat_chunk(tern_factory, dns):
    peer = ScriptedPeer("127.0.0.4", behaviour="cut-bdat", cut_after=100)
    try:
        a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], minimal_backoff_time="300s",
                        maximal_backoff_time="600s")
        send("alice@a.test", ["user@d.test"], b"Subject: chunk\r\n\r\n" + b"x" * 5000 + b"\r\n")
        log = a.wait_log("status=deferred")
        assert re.search(r"to=<user@d\.test>, relay=mx\.d\.test\[127\.0\.0\.4\]:25, .*dsn=4\.4\.2, status=deferred "
                         r"\(lost connection with mx\.d\.test\[127\.0\.0\.4\]:25 while sending ", log), log
        assert "status=sent" not in log and "status=bounced" not in log
    finally:
        peer.stop()


def test_dns_nxdomain_bounces(tern_factory, dns):
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"])
    send("alice@a.test", ["user@nowhere.test"], b"Subject: to nowhere\r\n\r\nx\r\n")
    (m,) = wait_messages(a, "alice", "a.test")
    msg, blocks = report_fields(m)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert blocks[1]["Final-Recipient"] == "rfc822; user@nowhere.test"
    assert blocks[1]["Status"] == "5.4.4"
    assert "Remote-MTA" not in blocks[1]
    log = a.log()
    assert re.search(r"to=<user@nowhere\.test>, relay=none, .*dsn=5\.4\.4, status=bounced \(Host or domain name not "
                     r"found\. Name service error for name=nowhere\.test type=MX: Host not found\)", log), log
    wait_queue_empty(a)


@pytest.mark.parametrize("domain", ["servfail.test", "timeout.test", "refused.test"])
def test_dns_failure_defers(tern_factory, dns, domain):
    """SERVFAIL (dnsmasq passing on its upstream's), no answer at all (the resolver
    times out after dns_timeout x dns_tries) and REFUSED: temporary, the message stays."""
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], minimal_backoff_time="300s",
                    maximal_backoff_time="600s")
    before = dns.servfail.queries
    send("alice@a.test", [f"user@{domain}"], b"Subject: dns trouble\r\n\r\nx\r\n")
    log = a.wait_log("status=deferred")
    assert re.search(rf"to=<user@{re.escape(domain)}>, relay=none, .*dsn=4\.4\.3, status=deferred \(Host or domain "
                     rf"name not found\. Name service error for name={re.escape(domain)} type=MX: Host not found, "
                     rf"try again\)", log), log
    show = wait_for(lambda: (lambda s: s if "attempts=1" in s else None)(a.ternctl("queue", "show").stdout), 10,
                    what="the deferral recorded")
    assert f"recipient: user@{domain} state=pending attempts=1" in show
    if domain == "servfail.test":
        assert dns.servfail.queries > before  # the SERVFAIL came from the upstream, through dnsmasq
    assert "status=bounced" not in a.log()
    assert maildir_messages(a, "alice", "a.test") == []


def test_null_mx_bounces(tern_factory, dns):
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"])
    send("alice@a.test", ["user@nullmx.test"], b"Subject: to a null MX\r\n\r\nx\r\n")
    (m,) = wait_messages(a, "alice", "a.test")
    msg, blocks = report_fields(m)
    assert blocks[1]["Final-Recipient"] == "rfc822; user@nullmx.test"
    assert blocks[1]["Status"] == "5.1.10"
    log = a.log()
    assert re.search(r"to=<user@nullmx\.test>, relay=none, .*dsn=5\.1\.10, status=bounced \(Domain nullmx\.test does "
                     r"not accept mail \(nullMX\)\)", log), log
    wait_queue_empty(a)


def test_server_that_never_greets_times_out(tern_factory, dns):
    # smtp_helo_timeout covers the greeting too (Postfix): 1 s here.
    peer = ScriptedPeer("127.0.0.4", behaviour="silent")
    try:
        a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], smtp_helo_timeout="1s",
                        minimal_backoff_time="300s", maximal_backoff_time="600s")
        send("alice@a.test", ["user@d.test"], b"Subject: anyone there\r\n\r\nx\r\n")
        log = a.wait_log("status=deferred", timeout=20)
        assert re.search(r"to=<user@d\.test>, relay=none, .*dsn=4\.4\.2, status=deferred \(conversation with "
                         r"mx\.d\.test\[127\.0\.0\.4\]:25 timed out while receiving the initial server greeting\)",
                         log), log
        assert peer.sessions == 1
    finally:
        peer.stop()
