"""Helpers for the tern-mra tests: a Tern with a user and mail, Python's imaplib and
poplib connected to it, deliveries over LMTP to tern-mda (as tern-mta would), and a
raw socket client for the bad-input tests."""
import imaplib
import os
import poplib
import socket
import ssl
import subprocess

from mda_helpers import Lmtp, add_user, maildir_of, message, prepare_mail_dir
from tern_harness import Tern, wait_for

PW = "pw-secret-123"
USER = "demo@example.test"

# Fast failures and plaintext logins on loopback for most tests; the tests of the
# secure defaults set these back.
FAST = {"auth_failure_delay": "0", "auth_penalty_max": "0", "disable_plaintext_auth": "no", "mail_fsync": "never"}


def make_mra(settings=None, users=(USER,), start=True, expect_crashes=False):
    s = dict(FAST)
    s.update(settings or {})
    t = Tern(settings=s)
    if expect_crashes:
        t.expect_crashes()
    prepare_mail_dir(t)
    if start:
        t.start()
        for u in users:
            add_user(t, u, password=PW)
    return t


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def imap(t, user=USER, password=PW, login=True, tls=False):
    if tls:
        c = imaplib.IMAP4_SSL("127.0.0.1", t.port("imaps"), ssl_context=tls_context(), timeout=30)
    else:
        c = imaplib.IMAP4("127.0.0.1", t.port("imap"), timeout=30)
    if login:
        typ, data = c.login(user, password)
        assert typ == "OK", data
    return c


def pop(t, user=USER, password=PW, login=True, tls=False):
    if tls:
        c = poplib.POP3_SSL("127.0.0.1", t.port("pop3s"), context=tls_context(), timeout=30)
    else:
        c = poplib.POP3("127.0.0.1", t.port("pop3"), timeout=30)
    if login:
        c.user(user)
        c.pass_(password)
    return c


def deliver(t, rcpt, subject, body="hello\r\n", extra=""):
    """Delivers one message through tern-mda's LMTP socket; returns the reply."""
    with Lmtp(t.socket_path("lmtp")) as l:
        replies, data = l.transaction("sender@example.org", [rcpt], message(subject, body=body, extra=extra))
    assert data and data[0][0] == 250, (replies, data)
    return data[0]


class Raw:
    """A raw client for bad input: bytes out, lines in."""

    def __init__(self, port, timeout=30):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError(self.buf)
            self.buf += d
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def until(self, prefix):
        """Lines up to and including the first that starts with prefix."""
        out = []
        while True:
            l = self.line()
            out.append(l)
            if l.startswith(prefix):
                return out

    def closed(self):
        """True once the server has closed (reads the rest)."""
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def mra_pids(t):
    """{'login': pid, 'postlogin': pid, 'workers': [pids]}."""
    st = t.status()
    post = st["mra-postlogin"]["pid"]
    from tern_harness import children_of
    return {"login": st["mra"]["pid"], "postlogin": post, "workers": children_of(post)}


def files_in(maildir, sub="cur"):
    d = os.path.join(maildir, sub)
    return sorted(n for n in os.listdir(d) if not n.startswith("."))


__all__ = ["PW", "USER", "FAST", "make_mra", "imap", "pop", "deliver", "Raw", "mra_pids", "files_in", "maildir_of",
           "wait_for", "add_user", "tls_context", "subprocess"]
