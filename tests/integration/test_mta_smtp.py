"""tern-mta's SMTP server with real clients (smtplib, swaks, raw sockets): the ESMTP
extensions, relay control against every known trick, SMTP smuggling and STARTTLS
injection, size limits, and Postfix's restrictions with Postfix's replies."""
import os
import re
import smtplib
import socket
import ssl
import subprocess

import pytest

from mta_util import Raw, add_user, mta_settings
from tern_harness import wait_for

OUTSIDE = "192.0.2.0/24"  # mynetworks that do not contain the test client 127.0.0.1


@pytest.fixture
def mx(tern_factory, tmp_path):
    """A Tern (authd + mta, no MDA) where 127.0.0.1 is outside mynetworks."""
    t = tern_factory(settings=mta_settings(mynetworks=OUTSIDE,
                                           master_services="authd, mta"))
    add_user(t, "alice@example.test")
    return t


def smtp(t, port="smtp"):
    return smtplib.SMTP("127.0.0.1", t.port(port), timeout=15)


def test_ehlo_lists_the_extensions(mx):
    s = smtp(mx)
    code, text = s.ehlo("client.example.org")
    assert code == 250
    ext = text.decode().split("\n")
    assert ext[0] == "mail.example.test"
    for e in ["PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "STARTTLS",
              "CHUNKING", "DSN"]:
        assert e in ext, e
    # The MX port offers no AUTH unless smtpd_sasl_auth_enable is set (Postfix).
    assert not any(x.startswith("AUTH") for x in ext)
    s.quit()


def test_local_recipient_accepted_unknown_refused_at_rcpt(mx):
    s = smtp(mx)
    s.ehlo("client.example.org")
    assert s.mail("someone@sender.example") == (250, b"2.1.0 Ok")
    assert s.rcpt("alice@example.test")[0] == 250
    assert s.rcpt("Alice+tag@EXAMPLE.test")[0] == 250  # recipient_delimiter, case
    code, msg = s.rcpt("nobody@example.test")
    assert (code, msg.decode()) == (550, "5.1.1 <nobody@example.test>: Recipient address rejected: "
                                         "User unknown in local recipient table")
    assert s.rcpt("postmaster@example.test")[0] == 250  # an alias
    code, msg = s.data(b"Subject: t\r\n\r\nbody\r\n")
    assert code == 250 and msg.decode().startswith("2.0.0 Ok: queued as ")
    s.quit()
    log = mx.wait_log("nobody@example.test")
    assert re.search(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 550 5\.1\.1 <nobody@example\.test>: "
                     r"Recipient address rejected: User unknown in local recipient table; "
                     r"from=<someone@sender\.example> to=<nobody@example\.test> proto=ESMTP helo=<client\.example\.org>",
                     log) or re.search(r"\w+: reject: RCPT from localhost\[127\.0\.0\.1\]: 550 5\.1\.1", log)


RELAY_TRICKS = [
    "user@remote.example",
    "user@REMOTE.EXAMPLE",
    "user%remote.example@example.test",          # percent hack through our own domain
    "user%remote.example@[127.0.0.1]",
    "remote.example!user@example.test",          # bang path
    "remote.example!user",                        # bang path without domain
    "\"user@remote.example\"@example.test",       # quoted local part with an '@'
    "\"user%remote.example\"@example.test",
    "user@remote.example@example.test",           # two '@'
    "@example.test:user@remote.example",          # source route through us
    "@example.test,@other.example:user@remote.example",
    "user@[127.0.0.1]",                            # IP literals, even our own address
    "user@[IPv6:::1]",
    "user@[192.0.2.1]",
    "user@remote.example.",                        # trailing dots
    "user@example.test.",
    "user@example.test.remote.example",            # our name as a subdomain of theirs
    "user@remote-example.test",
    "user@example.test@remote.example",
]


def test_open_relay_probe_is_refused_every_time(mx):
    """No AUTH, and 127.0.0.1 is outside mynetworks: every trick gets no 250."""
    s = Raw(mx.port("smtp"))
    assert s.reply()[0] == 220
    assert s.cmd("EHLO probe.example.org")[0] == 250
    results = {}
    for rcpt in RELAY_TRICKS:
        assert s.cmd("MAIL FROM:<probe@probe.example.org>")[0] == 250
        code, lines = s.cmd(f"RCPT TO:<{rcpt}>")
        results[rcpt] = (code, lines[0])
        assert s.cmd("RSET")[0] == 250
    s.cmd("QUIT")
    for rcpt, (code, text) in results.items():
        assert code >= 500, (rcpt, code, text)
        # Either the relay check or the syntax check refused it.
        assert ("Relay access denied" in text or text.startswith("5.1.3") or text.startswith("5.5.4")
                or "User unknown" in text), (rcpt, code, text)
    assert results["user@remote.example"] == (554, "5.7.1 <user@remote.example>: Relay access denied")
    assert results["user%remote.example@example.test"] == (
        554, "5.7.1 <user%remote.example@example.test>: Relay access denied")
    assert results["remote.example!user@example.test"][1].endswith("Relay access denied")
    assert results["\"user@remote.example\"@example.test"][1].endswith("Relay access denied")
    assert results["user@[127.0.0.1]"][1].endswith("Relay access denied")
    # Nothing was queued.
    assert "queued as" not in mx.log() and "client=" not in mx.log()


def test_open_relay_probe_with_swaks(mx):
    for rcpt in ["user@remote.example", "user%remote.example@example.test", "remote.example!user@example.test"]:
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(mx.port("smtp")), "--from",
                            "probe@probe.example.org", "--to", rcpt, "--quit-after", "RCPT", "--timeout", "15"],
                           capture_output=True, text=True, timeout=60)
        assert "<** 554 5.7.1" in r.stdout and "Relay access denied" in r.stdout, r.stdout


def test_relay_allowed_from_mynetworks(tern_factory, tmp_path):
    t = tern_factory(settings=mta_settings(mynetworks="127.0.0.0/8", master_services="authd, mta"))
    s = smtp(t)
    s.ehlo("client.example.org")
    s.mail("a@example.test")
    assert s.rcpt("user@remote.example")[0] == 250
    s.quit()


SMUGGLING = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r",
    b"\r\n.\r",
    b"\r.\r\n",
    b".\r\r\n",
    b"\r\n\x00.\r\n",
]


@pytest.mark.parametrize("marker", SMUGGLING, ids=[repr(m) for m in SMUGGLING])
def test_smtp_smuggling_variant_is_refused(mx, marker):
    """A fake end of DATA followed by a second transaction: the fake marker does not
    end DATA, the message is refused with 550 5.5.2 and the client disconnected, so
    the smuggled MAIL FROM is never executed (and neither message is queued)."""
    s = Raw(mx.port("smtp"))
    s.reply()
    s.cmd("EHLO client.example.org")
    assert s.cmd("MAIL FROM:<sender@sender.example>")[0] == 250
    assert s.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert s.cmd("DATA")[0] == 354
    smuggled = (b"Subject: first\r\n\r\nhello" + marker +
                b"MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\nevil\r\n.\r\n")
    s.send(smuggled)
    code, lines = s.reply()
    if b"\x00" in marker and b"\n." not in marker.replace(b"\r\n", b""):
        # No bare newline at all: the NUL is body; the real end of data ends it.
        assert code == 250
    else:
        assert (code, lines[0][:5]) == (550, "5.5.2"), (code, lines)
        assert "bare" in lines[0]
        assert s.closed()
    log = mx.log()
    assert "smuggled@evil.example" not in log.replace("from=<sender@sender.example>", "")
    assert log.count("message-id=") + log.count("queued as") <= (1 if code == 250 else 0)


def test_bare_lf_in_a_command_disconnects(mx):
    s = Raw(mx.port("smtp"))
    s.reply()
    s.send(b"EHLO client.example.org\nMAIL FROM:<x@y.example>\r\n")
    code, lines = s.reply()
    assert (code, lines[0]) == (550, "5.5.2 Error: bare <LF> received")
    assert s.closed()


def test_starttls_command_injection_is_dropped(mx):
    """CVE-2011-0411: commands sent with STARTTLS in one packet are thrown away."""
    s = Raw(mx.port("smtp"))
    s.reply()
    s.cmd("EHLO client.example.org")
    s.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\nRCPT TO:<alice@example.test>\r\n")
    assert s.reply()[0] == 220
    s.starttls()
    code, lines = s.cmd("EHLO client.example.org")
    assert code == 250 and "STARTTLS" not in lines  # not offered twice
    # Had the injected MAIL run, this RCPT would be accepted.
    code, lines = s.cmd("RCPT TO:<alice@example.test>")
    assert (code, lines[0]) == (503, "5.5.1 Error: need MAIL command")
    assert s.cmd("MAIL FROM:<real@sender.example>")[0] == 250
    s.cmd("QUIT")
    assert "injected@evil.example" not in mx.log()
    mx.wait_log("TLS connection established from localhost[127.0.0.1]")


def test_starttls_then_mail(mx):
    s = smtp(mx)
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo("client.example.org")
    s.mail("a@sender.example")
    s.rcpt("alice@example.test")
    code, msg = s.data(b"Subject: tls\r\n\r\nover tls\r\n")
    assert code == 250
    s.quit()
    log = mx.wait_log("(queue active)")
    assert re.search(r"\w+: client=localhost\[127\.0\.0\.1\]", log)


def exact_message(size):
    """A message of exactly `size` bytes as DATA content (after unstuffing), ending in CRLF."""
    head = b"Subject: size\r\n\r\n"
    body_len = size - len(head) - 2
    lines = []
    left = body_len
    while left > 0:
        n = min(76, left)
        lines.append(b"x" * n)
        left -= n + 2
    body = b"\r\n".join(lines)
    msg = head + body + b"\r\n"
    # Adjust for the rounding of the last line.
    msg = head + body[: len(body) - (len(msg) - size)] + b"\r\n" if len(msg) > size else msg
    assert len(msg) == size, (len(msg), size)
    return msg


def send_raw(t, msg, size_param=None):
    s = Raw(t.port("smtp"))
    s.reply()
    s.cmd("EHLO client.example.org")
    mail = "MAIL FROM:<a@sender.example>" + (f" SIZE={size_param}" if size_param is not None else "")
    code, lines = s.cmd(mail)
    if code != 250:
        return code, lines
    assert s.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert s.cmd("DATA")[0] == 354
    s.send(msg + b".\r\n")
    r = s.reply()
    s.cmd("QUIT")
    return r


def test_message_size_limit_exact_and_one_over(tern_factory, tmp_path):
    t = tern_factory(settings=mta_settings(message_size_limit=20000, mynetworks=OUTSIDE,
                                           master_services="authd, mta"))
    add_user(t, "alice@example.test")
    code, lines = send_raw(t, exact_message(20000))
    assert code == 250, lines
    code, lines = send_raw(t, exact_message(20001))
    assert (code, lines[0]) == (552, "5.3.4 Message size exceeds fixed limit")
    # SIZE= over the limit is refused at MAIL (RFC 1870).
    code, lines = send_raw(t, b"", size_param=20001)
    assert (code, lines[0]) == (552, "5.3.4 Message size exceeds fixed limit")


def test_chunking_bdat(mx):
    s = Raw(mx.port("smtp"))
    s.reply()
    s.cmd("EHLO client.example.org")
    s.cmd("MAIL FROM:<a@sender.example> BODY=8BITMIME")
    s.cmd("RCPT TO:<alice@example.test>")
    part1 = b"Subject: bdat\r\n\r\nfirst "
    part2 = b"second\r\n.line with a dot\r\n"
    s.send(b"BDAT %d\r\n" % len(part1) + part1)
    code, lines = s.reply()
    assert code == 250
    s.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
    code, lines = s.reply()
    assert code == 250 and "queued as" in lines[0]
    s.cmd("QUIT")


def test_pipelining_dsn_and_smtputf8(mx):
    s = Raw(mx.port("smtp"))
    s.reply()
    s.cmd("EHLO client.example.org")
    # One write, every command (RFC 2920), with DSN and SMTPUTF8 parameters.
    s.send("MAIL FROM:<jürgen@sender.example> SMTPUTF8 RET=HDRS ENVID=abc+2Bdef\r\n"
           "RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.test\r\n"
           "RCPT TO:<nobody@example.test>\r\n"
           "DATA\r\n".encode())
    assert s.reply()[0] == 250
    assert s.reply()[0] == 250
    assert s.reply()[0] == 550
    assert s.reply()[0] == 354
    s.send("Subject: ünïcode\r\n\r\nbody\r\n.\r\n".encode())
    code, lines = s.reply()
    assert code == 250
    s.cmd("QUIT")
    # The DSN parameters are kept on the queue for the notices they ask for (no
    # tern-mda here, so the message waits).
    show = wait_for(lambda: (lambda o: o if "attempts=1" in o else None)(mx.ternctl("queue", "show").stdout), 15,
                    what="first delivery attempt recorded")
    assert "sender: <jürgen@sender.example>" in show
    assert "smtputf8: yes" in show and "envid: abc+def" in show and "ret: HDRS" in show
    assert "recipient: alice@example.test state=pending" in show
    assert "notify=SUCCESS,FAILURE orcpt=rfc822;alice@example.test" in show


def test_delay_warning_notice(tern_factory):
    t = tern_factory(settings=mta_settings(mynetworks=OUTSIDE, master_services="authd, mta",
                                           delay_warning_time="1s", minimal_backoff_time="1s",
                                           maximal_backoff_time="2s"))
    add_user(t, "alice@example.test")
    add_user(t, "bob@example.test")
    s = smtp(t)
    s.sendmail("bob@example.test", ["alice@example.test"], b"Subject: slow\r\n\r\nx\r\n")
    s.quit()
    log = t.wait_log("sender delay notification", timeout=30)
    notice = re.search(r"(\w+): sender delay notification: (\w+)", log)
    show = t.ternctl("queue", "show", notice.group(2)).stdout
    assert "sender: <>" in show and "recipient: bob@example.test" in show
    # One notice per recipient, not one per retry.
    wait_for(lambda: t.log().count("(queue active)") >= 5, 30, what="more retries")
    assert t.log().count("sender delay notification") == 1


def test_helo_and_address_restrictions(tern_factory, tmp_path):
    t = tern_factory(settings=mta_settings(
        mynetworks=OUTSIDE, master_services="authd, mta",
        smtpd_helo_restrictions="reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname",
        smtpd_sender_restrictions="reject_non_fqdn_sender",
        smtpd_recipient_restrictions="reject_non_fqdn_recipient"))
    add_user(t, "alice@example.test")
    s = Raw(t.port("smtp"))
    s.reply()
    s.cmd("EHLO localhostname")
    s.cmd("MAIL FROM:<a@sender.example>")
    # smtpd_delay_reject = yes: the HELO restriction speaks at RCPT.
    assert s.cmd("RCPT TO:<alice@example.test>") == (
        504, ["5.5.2 <localhostname>: Helo command rejected: need fully-qualified hostname"])
    s.cmd("RSET")
    s.cmd("EHLO client.example.org")
    s.cmd("MAIL FROM:<a@sender>")
    assert s.cmd("RCPT TO:<alice@example.test>") == (
        504, ["5.5.2 <a@sender>: Sender address rejected: need fully-qualified address"])
    s.cmd("RSET")
    s.cmd("MAIL FROM:<a@sender.example>")
    assert s.cmd("RCPT TO:<alice@localhost>") == (
        504, ["5.5.2 <alice@localhost>: Recipient address rejected: need fully-qualified address"])
    assert s.cmd("RCPT TO:<alice@example.test>")[0] == 250
    s.cmd("QUIT")


def test_client_restrictions_and_helo_required(tern_factory, tmp_path):
    t = tern_factory(settings=mta_settings(mynetworks="127.0.0.0/8", master_services="authd, mta",
                                           smtpd_client_restrictions="permit_mynetworks, reject",
                                           smtpd_helo_required="yes"))
    add_user(t, "alice@example.test")
    s = Raw(t.port("smtp"))
    s.reply()
    assert s.cmd("MAIL FROM:<a@sender.example>") == (503, ["5.5.1 Error: send HELO/EHLO first"])
    s.cmd("HELO client.example.org")
    assert s.cmd("MAIL FROM:<a@sender.example>")[0] == 250
    assert s.cmd("RCPT TO:<alice@example.test>")[0] == 250
    s.cmd("QUIT")
    t2 = tern_factory(settings=mta_settings(mynetworks=OUTSIDE,
                                            master_services="authd, mta",
                                            smtpd_client_restrictions="permit_mynetworks, reject"))
    s = Raw(t2.port("smtp"))
    s.reply()
    s.cmd("EHLO client.example.org")
    s.cmd("MAIL FROM:<a@sender.example>")
    assert s.cmd("RCPT TO:<alice@example.test>") == (
        554, ["5.7.1 <localhost[127.0.0.1]>: Client host rejected: Access denied"])
    s.cmd("QUIT")


def test_limits_per_client(tern_factory, tmp_path):
    t = tern_factory(settings=mta_settings(mynetworks=OUTSIDE, master_services="authd, mta",
                                           smtpd_client_event_limit_exceptions="",
                                           smtpd_client_connection_count_limit=2,
                                           smtpd_recipient_limit=2,
                                           smtpd_client_message_rate_limit=3))
    add_user(t, "alice@example.test")
    a, b = Raw(t.port("smtp")), Raw(t.port("smtp"))
    assert a.reply()[0] == 220 and b.reply()[0] == 220
    c = Raw(t.port("smtp"))
    code, lines = c.reply()
    assert code == 421 and "too many connections from 127.0.0.1" in lines[0]
    assert c.closed()
    b.cmd("QUIT")
    a.cmd("EHLO client.example.org")
    a.cmd("MAIL FROM:<a@sender.example>")
    assert a.cmd("RCPT TO:<alice@example.test>")[0] == 250
    assert a.cmd("RCPT TO:<alice+1@example.test>")[0] == 250
    assert a.cmd("RCPT TO:<alice+2@example.test>") == (452, ["4.5.3 Error: too many recipients"])
    a.cmd("RSET")
    a.cmd("MAIL FROM:<a@sender.example>")
    a.cmd("RSET")
    code, lines = a.cmd("MAIL FROM:<a@sender.example>")
    assert code == 250
    a.cmd("RSET")
    assert a.cmd("MAIL FROM:<a@sender.example>") == (450, ["4.7.1 Error: too much mail from 127.0.0.1"])
    a.cmd("QUIT")


def test_hard_error_limit_disconnects(tern_factory, tmp_path):
    t = tern_factory(settings=mta_settings(master_services="authd, mta", smtpd_hard_error_limit=3))
    s = Raw(t.port("smtp"))
    s.reply()
    assert s.cmd("FOO")[0] == 500
    assert s.cmd("BAR")[0] == 500
    s.send("BAZ\r\n")
    assert s.reply()[0] == 500
    code, lines = s.reply()
    assert code == 421 and "too many errors" in lines[0]
    assert s.closed()


def test_banner_and_recipient_rate_limit(tern_factory):
    t = tern_factory(settings=mta_settings(mynetworks=OUTSIDE, master_services="authd, mta",
                                           smtpd_banner="$myhostname ESMTP ready, no UCE",
                                           smtpd_client_event_limit_exceptions="",
                                           smtpd_client_recipient_rate_limit=3,
                                           smtpd_client_connection_rate_limit=2))
    add_user(t, "alice@example.test")
    s = Raw(t.port("smtp"))
    assert s.reply() == (220, ["mail.example.test ESMTP ready, no UCE"])
    s.cmd("EHLO client.example.org")
    s.cmd("MAIL FROM:<a@sender.example>")
    for i in range(3):
        assert s.cmd(f"RCPT TO:<alice+{i}@example.test>")[0] == 250
    assert s.cmd("RCPT TO:<alice@example.test>") == (450, ["4.7.1 Error: too many recipients from 127.0.0.1"])
    s.cmd("QUIT")
    Raw(t.port("smtp")).reply()
    c = Raw(t.port("smtp"))
    code, lines = c.reply()
    assert code == 421 and "too many connections from 127.0.0.1" in lines[0]
    assert "Connection rate limit exceeded" in t.wait_log("Connection rate limit exceeded")


def test_bdat_before_mail_does_not_poison_the_next_transaction(mx):
    # RFC 3030: a BDAT without a transaction is read, thrown away and refused; a MAIL
    # after it starts a normal transaction (it used to stay stuck in a failed BDAT
    # until RSET).
    s = Raw(mx.port("smtp"))
    s.reply()
    s.cmd("EHLO client.example.org")
    s.send(b"BDAT 5\r\nhello")
    assert s.reply()[0] == 503
    assert s.cmd("MAIL FROM:<a@sender.example>")[0] == 250
    assert s.cmd("RCPT TO:<alice@example.test>")[0] == 250
    body = b"Subject: after\r\n\r\nok\r\n"
    s.send(b"BDAT %d LAST\r\n" % len(body) + body)
    code, lines = s.reply()
    assert code == 250 and "queued as" in lines[0], (code, lines)
    s.cmd("QUIT")
