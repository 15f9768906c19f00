"""tern-mta's DNS-based restrictions against a real DNS server (dnsmasq on a
loopback port, started by the test): reject_unknown_sender_domain,
reject_unknown_recipient_domain (with NXDOMAIN, null MX and address-only domains)
and the client hostname (PTR plus forward confirmation, "unknown" otherwise, as
Postfix does) with reject_unknown_client_hostname."""
import os
import re
import socket
import subprocess

import pytest

from mta_util import Raw, add_user, mta_settings
from tern_harness import wait_for


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dns():
    port = free_udp_port()
    args = ["/usr/sbin/dnsmasq", "-k", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--log-facility=/dev/null",
            # Authoritative for these zones: unknown names are NXDOMAIN, not REFUSED.
            "--local=/test/", "--local=/0.0.127.in-addr.arpa/",
            "--mx-host=sender.test,mx.sender.test,10", "--host-record=mx.sender.test,127.0.0.9",
            "--host-record=addronly.test,127.0.0.8",
            "--mx-host=nullmx.test,.,0",
            "--ptr-record=1.0.0.127.in-addr.arpa,client.test", "--host-record=client.test,127.0.0.1",
            "--ptr-record=3.0.0.127.in-addr.arpa,liar.test", "--host-record=liar.test,127.0.0.99"]
    if os.geteuid() == 0:
        args.append("--user=root")
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Ready when it answers (dig is not installed everywhere; a UDP query by hand).
    q = bytes.fromhex("abcd01000001000000000000") + b"\x06sender\x04test\x00\x00\x0f\x00\x01"

    def answers():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.sendto(q, ("127.0.0.1", port))
            return s.recv(512)[:2] == b"\xab\xcd"

    wait_for(answers, 10, what="dnsmasq answering")
    yield f"127.0.0.1:{port}"
    p.terminate()
    p.wait()


def test_unknown_sender_domain(tern_factory, dns):
    t = tern_factory(settings=mta_settings(dns_servers=dns, mynetworks="192.0.2.0/24", master_services="authd, mta",
                                           smtpd_sender_restrictions="reject_unknown_sender_domain"))
    add_user(t, "alice@example.test")
    s = Raw(t.port("smtp"))
    s.reply()
    s.cmd("EHLO client.test")
    results = {}
    for sender in ["a@sender.test", "a@addronly.test", "a@nx.test", "a@nullmx.test", "a@example.test"]:
        assert s.cmd(f"MAIL FROM:<{sender}>")[0] == 250
        results[sender] = s.cmd("RCPT TO:<alice@example.test>")
        s.cmd("RSET")
    s.cmd("QUIT")
    assert results["a@sender.test"][0] == 250
    assert results["a@addronly.test"][0] == 250  # no MX: the address is the mail exchanger
    assert results["a@example.test"][0] == 250  # our own domain is not looked up
    assert results["a@nx.test"] == (450, ["4.1.8 <a@nx.test>: Sender address rejected: Domain not found"])
    assert results["a@nullmx.test"] == (550, ["5.7.27 <a@nullmx.test>: Sender address rejected: "
                                              "Domain does not accept mail"])


def test_unknown_recipient_domain_and_client_hostname(tern_factory, dns):
    t = tern_factory(settings=mta_settings(dns_servers=dns, mynetworks="127.0.0.0/8", master_services="authd, mta",
                                           smtpd_recipient_restrictions="reject_unknown_recipient_domain",
                                           smtpd_client_restrictions="reject_unknown_client_hostname",
                                           unknown_address_reject_code="550"))
    s = Raw(t.port("smtp"))
    s.reply()
    s.cmd("EHLO client.test")
    s.cmd("MAIL FROM:<a@sender.test>")
    assert s.cmd("RCPT TO:<u@sender.test>")[0] == 250
    assert s.cmd("RCPT TO:<u@nx.test>") == (550, ["5.1.2 <u@nx.test>: Recipient address rejected: Domain not found"])
    assert s.cmd("RCPT TO:<u@nullmx.test>") == (
        556, ["5.1.10 <u@nullmx.test>: Recipient address rejected: Domain does not accept mail"])
    s.cmd("QUIT")
    # 127.0.0.1 has a PTR that resolves back: the client is client.test.
    log = t.wait_log("connect from client.test[127.0.0.1]")
    # 127.0.0.2 has no PTR at all; 127.0.0.3's PTR names a host that does not resolve
    # back to it: both are "unknown" and refused by reject_unknown_client_hostname.
    for src in ["127.0.0.2", "127.0.0.3"]:
        c = Raw(t.port("smtp"), source=src)
        c.reply()
        c.cmd("EHLO somewhere.test")
        c.cmd("MAIL FROM:<a@sender.test>")
        code, lines = c.cmd("RCPT TO:<u@sender.test>")
        assert (code, lines[0]) == (450, f"4.7.25 Client host rejected: cannot find your hostname, [{src}]")
        c.cmd("QUIT")
    log = t.wait_log("connect from unknown[127.0.0.3]")
    assert "connect from unknown[127.0.0.2]" in log
    assert "hostname liar.test does not resolve to address 127.0.0.3" in log
