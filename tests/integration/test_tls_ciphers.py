"""TLS 1.2 cipher suites per port, as Postfix splits smtpd_tls_ciphers (opportunistic
STARTTLS on port 25) from smtpd_tls_mandatory_ciphers (submission, smtps) and Dovecot
has ssl_cipher_list (IMAP, POP3): where TLS is mandatory, only ECDHE with AES-GCM or
ChaCha20-Poly1305 (no 3DES, no static RSA key exchange, no CBC); port 25 still talks
to an old sender that has only 3DES or static RSA, since the alternative there is
plaintext.

The weak suites are probed with a hand-built TLS 1.2 ClientHello (the local OpenSSL
can no longer offer 3DES at all, which is what testssl's own sockets do too); the
strong ones with Python's ssl module. One connection per probe: seconds. Debian's
testssl.sh (in scripts/setup) gives the same verdict by hand,
`testssl --fast -s -f 127.0.0.1:PORT`, but took over five minutes here even limited
to those categories, too slow for the suite."""
import imaplib
import os
import smtplib
import socket
import ssl
import struct

import pytest

# IANA code points (RFC 5246 appendix A.5, RFC 4492, RFC 5289, RFC 7905).
WEAK = {
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",          # 3DES (Sweet32), static RSA
    0xC012: "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",    # 3DES
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",           # static RSA: no forward secrecy
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",        # static RSA even with an AEAD
    0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",     # CBC-SHA (padding oracles)
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
}
STRONG = ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"]


def client_hello(suites):
    """A TLS 1.2 ClientHello offering exactly `suites`, with what ECDHE needs."""
    def ext(t, body):
        return struct.pack("!HH", t, len(body)) + body
    groups = struct.pack("!HHH", 4, 0x001D, 0x0017)                     # x25519, secp256r1
    sigalgs = struct.pack("!HHHH", 6, 0x0804, 0x0401, 0x0201)          # rsa_pss_sha256, rsa_sha256, rsa_sha1
    exts = ext(0x000A, groups) + ext(0x000B, b"\x01\x00") + ext(0x000D, sigalgs) + ext(0xFF01, b"\x00")
    cs = b"".join(struct.pack("!H", s) for s in suites)
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + struct.pack("!H", len(cs)) + cs + b"\x01\x00" +
            struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            return None
        out += d
    return out


def chosen_suite(s, suites):
    """Sends the ClientHello on connected socket s: the suite the server picked, or
    None when it refused (an alert or a close)."""
    s.sendall(client_hello(suites))
    head = recv_exact(s, 5)
    if head is None or head[0] != 0x16:
        return None  # 0x15: alert (handshake_failure), or closed
    rec = recv_exact(s, struct.unpack("!H", head[3:5])[0])
    assert rec and rec[0] == 0x02, "expected a ServerHello"
    sid_len = rec[4 + 2 + 32]
    return struct.unpack("!H", rec[4 + 2 + 32 + 1 + sid_len:4 + 2 + 32 + 1 + sid_len + 2])[0]


def connect(t, service):
    """A socket where the next bytes are the TLS handshake: implicit TLS ports as
    they are, STARTTLS ports after the plaintext dialogue."""
    port = t.port(service)
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = s.makefile("rb")
    if service in ("smtp", "submission"):
        assert f.readline().startswith(b"220")
        s.sendall(b"EHLO client.example.org\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        s.sendall(b"STARTTLS\r\n")
        assert f.readline().startswith(b"220"), "STARTTLS refused"
    elif service == "imap":
        assert f.readline().startswith(b"* OK")
        s.sendall(b"a STARTTLS\r\n")
        assert f.readline().startswith(b"a OK")
    return s


def probe(t, service, suites):
    with connect(t, service) as s:
        return chosen_suite(s, suites)


def ctx12(cipher):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.minimum_version = c.maximum_version = ssl.TLSVersion.TLSv1_2
    c.set_ciphers(cipher)
    return c


@pytest.fixture
def tern(tern_factory):
    return tern_factory(settings={"master_services": "authd, mta, mra"})


@pytest.mark.parametrize("service", ["imaps", "imap", "pop3s", "submission", "smtps"])
def test_mandatory_tls_offers_no_weak_suite(tern, service):
    picked = probe(tern, service, list(WEAK))
    assert picked is None, f"{service} negotiated {WEAK.get(picked, hex(picked or 0))}"
    # One at a time too: a server that prefers a strong suite would hide a weak one
    # it still accepts, but none is offered here but the weak one.
    for code, name in WEAK.items():
        assert probe(tern, service, [code]) is None, f"{service} accepts {name}"


@pytest.mark.parametrize("cipher", STRONG)
def test_mandatory_tls_negotiates_ecdhe_aead(tern, cipher):
    with imaplib.IMAP4_SSL("127.0.0.1", tern.port("imaps"), ssl_context=ctx12(cipher), timeout=30) as c:
        assert c.sock.version() == "TLSv1.2"
        assert c.sock.cipher()[0] == cipher
    with smtplib.SMTP("127.0.0.1", tern.port("submission"), timeout=30) as c:
        c.starttls(context=ctx12(cipher))
        assert c.sock.cipher()[0] == cipher
    # TLS 1.3 is BoringSSL's as it is.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with imaplib.IMAP4_SSL("127.0.0.1", tern.port("imaps"), ssl_context=ctx, timeout=30) as c:
        assert c.sock.version() == "TLSv1.3"


def test_port_25_stays_broad_for_old_senders(tern):
    # Opportunistic TLS (smtpd_tls_ciphers = medium): refusing 3DES or static RSA
    # here would only make such a sender fall back to plaintext.
    assert probe(tern, "smtp", [0x000A]) == 0x000A
    assert probe(tern, "smtp", [0x002F]) == 0x002F
    # A modern client still gets forward secrecy: the server prefers ECDHE + AEAD.
    with smtplib.SMTP("127.0.0.1", tern.port("smtp"), timeout=30) as c:
        c.starttls(context=ctx12("ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA"))
        assert c.sock.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"


def test_grades_and_lists_are_configurable(tern_factory):
    t = tern_factory(settings={"master_services": "authd, mta, mra", "smtpd_tls_ciphers": "high",
                               "smtpd_tls_mandatory_ciphers": "medium",
                               "ssl_cipher_list": "ECDHE-RSA-AES256-GCM-SHA384"})
    assert probe(t, "smtp", [0x000A]) is None
    assert probe(t, "submission", [0x002F]) == 0x002F
    assert probe(t, "imaps", [0xC02F]) is None  # ECDHE-RSA-AES128-GCM-SHA256: not in the list
    assert probe(t, "imaps", [0xC030]) == 0xC030


def test_bad_cipher_settings_are_fatal_with_the_key_named(tern_factory):
    t = tern_factory(settings={"master_services": "authd, mta", "smtpd_tls_mandatory_ciphers": "export"}, start=False)
    t.start(wait=False)
    t.wait_log("fatal: " + t.conf_path)
    assert "parameter 'smtpd_tls_mandatory_ciphers': unknown cipher grade 'export' (high or medium)" in t.log()
    t.stop()
    t = tern_factory(settings={"master_services": "authd, mra", "ssl_cipher_list": "ECDHE-RSA-AES128-GCM-SHA256:NOPE"},
                     start=False)
    t.start(wait=False)
    t.wait_log("fatal: ssl_cert/ssl_key/ssl_cipher_list: invalid TLS cipher list 'ECDHE-RSA-AES128-GCM-SHA256:NOPE'")
