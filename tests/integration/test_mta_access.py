"""Postfix access restrictions in tern-mta, carried over from a Postfix main.cf:
check_{client,helo,sender,recipient}_access with hash: (compiled by `ternctl
postmap`) and texthash: tables, every access(5) action, the lookup order, DNS
lists (reject_rbl_client, reject_rhsbl_*, permit_dnswl_client) against a real
dnsmasq, and reject_unauth_pipelining over raw sockets."""
import os
import re
import smtplib
import socket
import struct
import subprocess
import threading

import pytest

from mta_util import Raw, add_user, mta_settings, table_dir
from tern_harness import BIN, wait_for
from test_mta_dns import free_udp_port

OUTSIDE = "192.0.2.0/24"  # mynetworks that do not contain the test clients 127.0.0.x


def write_table(name, text):
    d = table_dir()
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def postmap(spec):
    """Compiles a table as an admin would, before Tern starts (it opens its tables
    at start-up, as Postfix does before its chroot)."""
    r = subprocess.run([os.path.join(BIN, "ternctl"), "postmap", spec], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def smtp(t, source=None):
    return smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=15,
                        source_address=(source, 0) if source else None)


def rcpt_result(t, sender, rcpt="alice@example.test", helo="client.example.org", source=None):
    s = smtp(t, source)
    s.ehlo(helo)
    code, msg = s.mail(sender)
    assert code == 250, (sender, code, msg)
    code, msg = s.rcpt(rcpt)
    s.quit()
    return code, msg.decode()


SENDER_TABLE = """\
# user@domain is looked up before the domain, the domain before user@
friend@spam.example OK
spam.example REJECT
boss@ REJECT 5.7.9 Impersonation attempt
parent.example DEFER Greylisted
dunno.sub.parent.example DUNNO
code.example 553 5.1.3 Bad sender syntax here
numeric.example 1234567
<> 550 No bounces today
odd.example FROBNICATE
tag+x@tagged.example REJECT tagged one
tag@tagged.example OK
"""


@pytest.fixture
def sender_access(tern_factory):
    path = write_table("sender_access", SENDER_TABLE)
    postmap(f"hash:{path}")
    t = tern_factory(settings=mta_settings(mynetworks=OUTSIDE, master_services="authd, mta",
                                           smtpd_sender_restrictions=f"check_sender_access hash:{path}, "
                                                                     "reject_non_fqdn_sender"))
    add_user(t, "alice@example.test")
    t.table = path
    return t


def test_sender_access_lookup_order(sender_access):
    t = sender_access
    # user@domain says OK first: the REJECT of the domain is never reached.
    assert rcpt_result(t, "friend@spam.example")[0] == 250
    assert rcpt_result(t, "other@spam.example") == (
        554, "5.7.1 <other@spam.example>: Sender address rejected: Access denied")
    # Parent domains match (parent_domain_matches_subdomains has smtpd_access_maps).
    assert rcpt_result(t, "x@deep.sub.spam.example") == (
        554, "5.7.1 <x@deep.sub.spam.example>: Sender address rejected: Access denied")
    # user@ applies to any domain, after the domain lookups.
    assert rcpt_result(t, "boss@anywhere.example") == (
        554, "5.7.9 <boss@anywhere.example>: Sender address rejected: Impersonation attempt")
    # DUNNO ends the search: the parent's DEFER is not applied.
    assert rcpt_result(t, "a@dunno.sub.parent.example")[0] == 250
    assert rcpt_result(t, "a@other.parent.example") == (
        450, "4.7.1 <a@other.parent.example>: Sender address rejected: Greylisted")
    # Extensions: user+ext@domain first, then user@domain.
    assert rcpt_result(t, "tag+x@tagged.example") == (
        554, "5.7.1 <tag+x@tagged.example>: Sender address rejected: tagged one")
    assert rcpt_result(t, "tag+y@tagged.example")[0] == 250
    # No entry: on to the next restriction.
    assert rcpt_result(t, "someone@unlisted.example")[0] == 250
    log = t.wait_log("other@spam.example")
    assert re.search(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 554 5\.7\.1 <other@spam\.example>: "
                     r"Sender address rejected: Access denied; from=<other@spam\.example> "
                     r"to=<alice@example\.test> proto=ESMTP helo=<client\.example\.org>", log), log


def test_sender_access_actions(sender_access):
    t = sender_access
    # NNN text, with the enhanced code made a sender's (X.1.3 -> X.1.7, as Postfix).
    assert rcpt_result(t, "a@code.example") == (553, "5.1.7 <a@code.example>: Sender address rejected: "
                                                     "Bad sender syntax here")
    # All-numeric is OK.
    assert rcpt_result(t, "a@numeric.example")[0] == 250
    # The null sender is looked up as smtpd_null_access_lookup_key.
    assert rcpt_result(t, "<>") == (550, "5.7.1 <>: Sender address rejected: No bounces today")
    # An unknown action: 451 4.3.5 and a warning naming the table and the key.
    assert rcpt_result(t, "a@odd.example") == (451, "4.3.5 Server configuration error")
    log = t.wait_log("unknown smtpd restriction")
    assert 'unknown smtpd restriction: "frobnicate"' in log
    assert f'access table hash:{t.table} entry "odd.example" has value "FROBNICATE"' in log


def test_access_codes_and_null_key_are_configurable(tern_factory):
    path = write_table("sender_access", "spam.example REJECT\nslow.example DEFER\nNULL REJECT no bounces\n")
    t = tern_factory(settings=mta_settings(mynetworks=OUTSIDE, master_services="authd, mta",
                                           access_map_reject_code="550", access_map_defer_code="421",
                                           smtpd_null_access_lookup_key="NULL",
                                           smtpd_sender_restrictions=f"check_sender_access texthash:{path}"))
    add_user(t, "alice@example.test")
    assert rcpt_result(t, "a@spam.example") == (550, "5.7.1 <a@spam.example>: Sender address rejected: Access denied")
    code, msg = rcpt_result(t, "a@slow.example")
    assert code == 421 and "Access denied" in msg
    assert rcpt_result(t, "<>") == (550, "5.7.1 <>: Sender address rejected: no bounces")


def test_parent_domain_style_without_smtpd_access_maps(tern_factory):
    path = write_table("sender_access", "spam.example REJECT\n.dotted.example REJECT dotted\n")
    t = tern_factory(settings=mta_settings(mynetworks=OUTSIDE, master_services="authd, mta",
                                           parent_domain_matches_subdomains="relay_domains",
                                           smtpd_sender_restrictions=f"check_sender_access texthash:{path}"))
    add_user(t, "alice@example.test")
    assert rcpt_result(t, "a@spam.example")[0] == 554
    assert rcpt_result(t, "a@sub.spam.example")[0] == 250  # needs ".spam.example" now
    assert rcpt_result(t, "a@sub.dotted.example")[0] == 554
    assert rcpt_result(t, "a@dotted.example")[0] == 250  # ".domain" does not match the domain itself


def test_client_and_helo_access(tern_factory):
    clients = write_table("client_access", "127.0.0.2 REJECT by address\n127.0.0.4 OK\n127.0 REJECT by prefix\n")
    helos = write_table("helo_access", "bad.example REJECT\nlocalhost DUNNO\n")
    t = tern_factory(settings=mta_settings(
        mynetworks=OUTSIDE, master_services="authd, mta",
        smtpd_client_restrictions=f"check_client_access texthash:{clients}",
        smtpd_helo_restrictions=f"check_helo_access texthash:{helos}"))
    add_user(t, "alice@example.test")
    assert rcpt_result(t, "a@sender.example", source="127.0.0.2") == (
        554, "5.7.1 <localhost[127.0.0.2]>: Client host rejected: by address")
    # The full address is found before its prefix "127.0": OK wins.
    assert rcpt_result(t, "a@sender.example", source="127.0.0.4")[0] == 250
    # No entry for 127.0.0.5 or 127.0.0: the shorter prefix 127.0 matches.
    assert rcpt_result(t, "a@sender.example", source="127.0.0.5") == (
        554, "5.7.1 <localhost[127.0.0.5]>: Client host rejected: by prefix")
    # A HELO name's parent domain matches, and the reply names the HELO.
    assert rcpt_result(t, "a@sender.example", helo="mx.bad.example", source="127.0.0.4") == (
        554, "5.7.1 <mx.bad.example>: Helo command rejected: Access denied")
    log = t.wait_log("by prefix")
    assert "NOQUEUE: reject: RCPT from localhost[127.0.0.5]: 554 5.7.1 <localhost[127.0.0.5]>: Client host " \
           "rejected: by prefix; from=<a@sender.example> to=<alice@example.test> proto=ESMTP " \
           "helo=<client.example.org>" in log


def test_client_access_cidr(tern_factory):
    nets = write_table("client_cidr", "# cidr_table(5)\n127.0.0.2/32 REJECT listed host\n"
                                      "127.0.0.0/30 OK\n127.0.0.0/8 DEFER loopback net\n")
    t = tern_factory(settings=mta_settings(mynetworks=OUTSIDE, master_services="authd, mta",
                                           smtpd_client_restrictions=f"check_client_access cidr:{nets}"))
    add_user(t, "alice@example.test")
    # First match wins: 127.0.0.2 is in all three networks.
    assert rcpt_result(t, "a@sender.example", source="127.0.0.2") == (
        554, "5.7.1 <localhost[127.0.0.2]>: Client host rejected: listed host")
    assert rcpt_result(t, "a@sender.example", source="127.0.0.3")[0] == 250
    assert rcpt_result(t, "a@sender.example", source="127.0.0.9") == (
        450, "4.7.1 <localhost[127.0.0.9]>: Client host rejected: loopback net")


def test_early_checks_without_delay_reject(tern_factory, rbl_dns):
    # smtpd_delay_reject = no: HELO and MAIL are refused at once, after their DNS
    # list lookups (asynchronous: the session waits for them).
    t = tern_factory(settings=mta_settings(
        dns_servers=rbl_dns, mynetworks=OUTSIDE, master_services="authd, mta", smtpd_delay_reject="no",
        smtpd_helo_restrictions="reject_rhsbl_helo dbl.test",
        smtpd_sender_restrictions="reject_rhsbl_sender dbl.test"))
    s = Raw(t.port("smtp"))
    assert s.reply()[0] == 220
    assert s.cmd("EHLO bad-helo.example") == (
        554, ["5.7.1 Service unavailable; Helo command [bad-helo.example] blocked using dbl.test"])
    assert s.cmd("EHLO good.example")[0] == 250
    assert s.cmd("MAIL FROM:<a@spammer.example>") == (
        554, ["5.7.1 Service unavailable; Sender address [a@spammer.example] blocked using dbl.test"])
    assert s.cmd("MAIL FROM:<a@fine.example>")[0] == 250
    s.cmd("QUIT")
    log = t.wait_log("blocked using dbl.test; from=<a@spammer.example>")
    assert "reject: EHLO from unknown[127.0.0.1]: 554 5.7.1 Service unavailable; Helo command " \
           "[bad-helo.example] blocked using dbl.test" in log


def test_recipient_access_with_a_nested_restriction_list(tern_factory):
    rcpts = write_table("recipient_access", "internal@example.test permit_mynetworks, reject\n"
                                            "example.test DEFER_IF_PERMIT Try later\n"
                                            "open@example.test OK\n")
    t = tern_factory(settings=mta_settings(mynetworks=OUTSIDE, master_services="authd, mta",
                                           smtpd_recipient_restrictions=f"check_recipient_access texthash:{rcpts}"))
    for u in ["alice", "internal", "open"]:
        add_user(t, f"{u}@example.test")
    # permit_mynetworks does not apply to 127.0.0.1 here, so the nested reject does.
    assert rcpt_result(t, "a@sender.example", rcpt="internal@example.test") == (
        554, "5.7.1 <internal@example.test>: Recipient address rejected: Access denied")
    assert rcpt_result(t, "a@sender.example", rcpt="open@example.test")[0] == 250
    # DEFER_IF_PERMIT: what would be accepted is deferred with the text given.
    assert rcpt_result(t, "a@sender.example", rcpt="alice@example.test") == (
        450, "4.7.1 <alice@example.test>: Recipient address rejected: Try later")


def queue_show(t, qid):
    return t.ternctl("queue", "show", qid, check=False)


def send(t, sender, rcpt="alice@example.test"):
    s = smtp(t)
    s.ehlo("client.example.org")
    s.mail(sender)
    assert s.rcpt(rcpt)[0] == 250
    code, msg = s.data(b"Subject: access test\r\n\r\nbody\r\n")
    s.quit()
    assert code == 250, msg
    m = re.match(r"2\.0\.0 Ok: queued as (\w+)", msg.decode())
    assert m, msg
    return m.group(1)


def test_hold_and_discard(tern_factory):
    path = write_table("sender_access", "held.example HOLD\ngone.example DISCARD\n"
                                        "warned.example WARN suspicious sender\n")
    t = tern_factory(settings=mta_settings(mynetworks=OUTSIDE, master_services="authd, mta",
                                           smtpd_sender_restrictions=f"check_sender_access texthash:{path}"))
    add_user(t, "alice@example.test")
    held = send(t, "a@held.example")
    normal = send(t, "a@warned.example")
    gone = send(t, "a@gone.example")
    log = t.wait_log(f"{gone}: discarded")
    assert re.search(rf"{held}: hold: RCPT from localhost\[127\.0\.0\.1\]: <a@held\.example>: Sender address "
                     r"triggers HOLD action; from=<a@held\.example> to=<alice@example\.test> proto=ESMTP "
                     r"helo=<client\.example\.org>", log) or \
        re.search(r"NOQUEUE: hold: RCPT from localhost\[127\.0\.0\.1\]: <a@held\.example>: Sender address "
                  r"triggers HOLD action", log), log
    assert re.search(r": warn: RCPT from localhost\[127\.0\.0\.1\]: suspicious sender; from=<a@warned\.example>", log)
    assert "discard: RCPT from localhost[127.0.0.1]: <a@gone.example>: Sender address triggers DISCARD action" in log
    # HOLD: in the queue, on hold (ternctl queue release would let it go).
    wait_for(lambda: "hold: yes" in queue_show(t, held).stdout, 10, what="held message on hold")
    # The others: the WARNed one is queued normally; the DISCARDed one was never stored.
    assert "hold: yes" not in queue_show(t, normal).stdout
    listing = t.ternctl("queue", "show").stdout
    assert held in listing and normal in listing
    assert gone not in listing
    assert f"{held}: placed on hold" in log


# --- DNS lists -----------------------------------------------------------------------

def start_dnsmasq(records):
    """dnsmasq on a free loopback port, authoritative for *.test; another is tried
    when the port was taken meanwhile (dnsmasq binds TCP too, and exits)."""
    q = bytes.fromhex("abcd01000001000000000000") + b"\x01\x32\x010\x010\x03127\x03zen\x04test\x00\x00\x01\x00\x01"
    for _ in range(5):
        port = free_udp_port()
        args = ["/usr/sbin/dnsmasq", "-k", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--log-facility=/dev/null",
                "--local=/test/", "--local=/0.0.127.in-addr.arpa/", *records]
        if os.geteuid() == 0:
            args.append("--user=root")
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers():
            if p.poll() is not None:
                return "exited"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.2)
                s.sendto(q, ("127.0.0.1", port))
                try:
                    return s.recv(512)[:2] == b"\xab\xcd"
                except socket.timeout:
                    return False

        if wait_for(answers, 30, what="dnsmasq answering") != "exited":
            return p, f"127.0.0.1:{port}"
        p.wait()
    raise RuntimeError("dnsmasq did not start")


@pytest.fixture
def rbl_dns():
    p, address = start_dnsmasq([
        # 127.0.0.2 is listed in zen.test with a reason; 127.0.0.3 with code 127.0.0.10 only.
        "--host-record=2.0.0.127.zen.test,127.0.0.2",
        "--txt-record=2.0.0.127.zen.test,Listed; see https://zen.test/query/127.0.0.2",
        "--host-record=3.0.0.127.zen.test,127.0.0.10",
        # 127.0.0.4 is on a whitelist.
        "--host-record=4.0.0.127.wl.test,127.0.10.1",
        # A sender domain and a HELO name on a domain list.
        "--host-record=spammer.example.dbl.test,127.0.1.2",
        "--host-record=bad-helo.example.dbl.test,127.0.1.2"])
    yield address
    p.terminate()
    p.wait()


def test_reject_rbl_client(tern_factory, rbl_dns):
    t = tern_factory(settings=mta_settings(
        dns_servers=rbl_dns, mynetworks=OUTSIDE, master_services="authd, mta",
        # A zone nobody serves (dnsmasq refuses it): a DNS error is "not listed".
        smtpd_client_restrictions="reject_rbl_client broken.invalid, reject_rbl_client zen.test=127.0.0.[2..9]"))
    add_user(t, "alice@example.test")
    assert rcpt_result(t, "a@sender.example", source="127.0.0.2") == (
        554, "5.7.1 Service unavailable; Client host [127.0.0.2] blocked using zen.test; "
             "Listed; see https://zen.test/query/127.0.0.2")
    # 127.0.0.3 is listed with 127.0.0.10, outside the =pattern; 127.0.0.1 is not listed.
    assert rcpt_result(t, "a@sender.example", source="127.0.0.3")[0] == 250
    assert rcpt_result(t, "a@sender.example", source="127.0.0.1")[0] == 250
    log = t.wait_log("blocked using zen.test")
    # (dnsmasq's host record also gives 127.0.0.2 a PTR name.)
    assert re.search(r"NOQUEUE: reject: RCPT from \S+\[127\.0\.0\.2\]: 554 5\.7\.1 Service unavailable; "
                     r"Client host \[127\.0\.0\.2\] blocked using zen\.test; Listed; see https://zen\.test/query/"
                     r"127\.0\.0\.2; from=<a@sender\.example> to=<alice@example\.test>", log), log
    assert re.search(r"warning: 2\.0\.0\.127\.broken\.invalid: RBL lookup error", log), log


def test_rhsbl_dnswl_and_rbl_reply(tern_factory, rbl_dns):
    t = tern_factory(settings=mta_settings(
        dns_servers=rbl_dns, mynetworks=OUTSIDE, master_services="authd, mta",
        maps_rbl_reject_code="550",
        smtpd_helo_restrictions="reject_rhsbl_helo dbl.test",
        smtpd_sender_restrictions="permit_dnswl_client wl.test, reject_rhsbl_sender dbl.test"))
    add_user(t, "alice@example.test")
    assert rcpt_result(t, "a@spammer.example") == (
        550, "5.7.1 Service unavailable; Sender address [a@spammer.example] blocked using dbl.test")
    assert rcpt_result(t, "a@fine.example")[0] == 250
    # The whitelisted client skips the rest of smtpd_sender_restrictions.
    assert rcpt_result(t, "a@spammer.example", source="127.0.0.4")[0] == 250
    assert rcpt_result(t, "a@fine.example", helo="bad-helo.example") == (
        550, "5.7.1 Service unavailable; Helo command [bad-helo.example] blocked using dbl.test")


def test_dnswl_never_opens_the_relay(tern_factory, rbl_dns):
    t = tern_factory(settings=mta_settings(
        dns_servers=rbl_dns, mynetworks=OUTSIDE, master_services="authd, mta",
        smtpd_relay_restrictions="permit_dnswl_client wl.test, reject_unauth_destination"))
    add_user(t, "alice@example.test")
    assert rcpt_result(t, "a@fine.example", rcpt="someone@remote.example", source="127.0.0.4") == (
        554, "5.7.1 <someone@remote.example>: Relay access denied")
    assert rcpt_result(t, "a@fine.example", source="127.0.0.4")[0] == 250


# --- reject_unauth_pipelining ----------------------------------------------------------

@pytest.fixture
def pipelining(tern_factory):
    t = tern_factory(settings=mta_settings(mynetworks=OUTSIDE, master_services="authd, mta",
                                           smtpd_data_restrictions="reject_unauth_pipelining"))
    add_user(t, "alice@example.test")
    return t


def test_pipelining_without_ehlo_is_refused_at_data(pipelining):
    s = Raw(pipelining.port("smtp"))
    assert s.reply()[0] == 220
    assert s.cmd("HELO client.example.org")[0] == 250
    s.send(b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert s.reply()[0] == 250
    assert s.reply()[0] == 250
    assert s.reply() == (503, ["5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining"])
    s.cmd("QUIT")
    log = pipelining.wait_log("improper command pipelining")
    assert "improper command pipelining after MAIL from localhost[127.0.0.1]: RCPT TO:<alice@example.test>" in log
    assert re.search(r"\w+: reject: DATA from localhost\[127\.0\.0\.1\]: 503 5\.5\.0 <DATA>: Data command "
                     r"rejected: Improper use of SMTP command pipelining; from=<a@sender\.example> "
                     r"to=<alice@example\.test> proto=SMTP helo=<client\.example\.org>", log), log


def test_pipelining_after_ehlo_is_accepted(pipelining):
    s = Raw(pipelining.port("smtp"))
    assert s.reply()[0] == 220
    assert s.cmd("EHLO client.example.org")[0] == 250
    s.send(b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert s.reply()[0] == 250
    assert s.reply()[0] == 250
    assert s.reply()[0] == 354
    code, lines = s.cmd("Subject: t\r\n\r\nbody\r\n.")
    assert code == 250, lines
    s.cmd("QUIT")
    assert "improper command pipelining" not in pipelining.log()


def test_data_sent_with_the_data_command_is_refused(pipelining):
    # DATA ends a group (RFC 2920): the body may only follow the 354.
    s = Raw(pipelining.port("smtp"))
    s.reply()
    s.cmd("EHLO client.example.org")
    s.send(b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: t\r\n\r\nx\r\n.\r\n")
    assert s.reply()[0] == 250
    assert s.reply()[0] == 250
    code, lines = s.reply()
    assert code == 503 and "Improper use of SMTP command pipelining" in lines[0]
    s.close()
    assert "improper command pipelining after DATA" in pipelining.wait_log("improper command pipelining")


class SlowDns:
    """A DNS server that answers every query NXDOMAIN, but only when told to: Tern
    greets after its PTR lookup, so the test decides when the greeting comes."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.queries = []
        self.release = threading.Event()
        self.got_query = threading.Event()
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            self.got_query.set()
            self.release.wait(20)
            if len(data) < 12:
                continue
            # Same id and question; QR, RD, RA, RCODE=3 (NXDOMAIN); no answers.
            qid = data[:2]
            qd = struct.unpack("!H", data[4:6])[0]
            end = 12
            for _ in range(qd):
                while end < len(data) and data[end] != 0:
                    end += data[end] + 1
                end += 5
            reply = qid + b"\x81\x83" + struct.pack("!HHHH", qd, 0, 0, 0) + data[12:end]
            self.sock.sendto(reply, peer)

    def close(self):
        self.stop = True
        self.release.set()
        self.thread.join(5)
        self.sock.close()


def test_talking_before_the_greeting(tern_factory):
    dns = SlowDns()
    try:
        t = tern_factory(settings=mta_settings(dns_servers=dns.address, mynetworks=OUTSIDE,
                                               master_services="authd, mta",
                                               smtpd_data_restrictions="reject_unauth_pipelining"))
        add_user(t, "alice@example.test")
        s = Raw(t.port("smtp"))
        s.send(b"EHLO early.example.org\r\n")
        # Tern has accepted and asks for our PTR: the EHLO is already in its socket.
        assert dns.got_query.wait(10)
        dns.release.set()
        assert s.reply()[0] == 220
        assert s.reply()[0] == 250  # the EHLO itself is answered
        assert s.cmd("MAIL FROM:<a@sender.example>")[0] == 250
        assert s.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert s.cmd("DATA") == (503, ["5.5.0 <DATA>: Data command rejected: Improper use of SMTP command "
                                       "pipelining"])
        s.cmd("QUIT")
        assert "improper command pipelining after CONNECT from unknown[127.0.0.1]: EHLO early.example.org" in \
            t.wait_log("improper command pipelining")
    finally:
        dns.close()
