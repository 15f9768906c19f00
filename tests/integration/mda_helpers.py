"""Helpers for the tern-mda tests: a Tern whose mail directory the mail user can
write, an LMTP client built on Python's smtplib.LMTP that reads the one reply per
recipient that RFC 2033 gives after DATA (smtplib's sendmail reads only one), and
readers for the Maildir and for the mailbox index (through tern-index)."""
import os
import pwd
import re
import smtplib
import socket
import subprocess

from tern_harness import BIN, Tern, wait_for


def prepare_mail_dir(t):
    """<dir>/mail, where mail_home puts virtual users, owned by the mail user (the
    way /var/mail/vhosts belongs to vmail)."""
    mail = os.path.join(t.dir, "mail")
    os.makedirs(mail, exist_ok=True)
    pw = pwd.getpwnam(t.settings["mail_uid"])
    os.chown(mail, pw.pw_uid, pw.pw_gid)
    return mail


def make_tern(settings=None, start=True):
    t = Tern(settings=settings or {})
    prepare_mail_dir(t)
    if start:
        t.start()
    return t


def add_user(t, user, *opts, password="pw-secret-123"):
    t.ternctl("user", "add", *opts, user, input=password + "\n")


def home_of(t, user):
    local, _, domain = user.partition("@")
    return os.path.join(t.dir, "mail", domain, local)


def maildir_of(t, user, folder=None):
    root = os.path.join(home_of(t, user), "Maildir")
    return root if not folder else os.path.join(root, "." + folder.replace("/", "."))


class Lmtp(smtplib.LMTP):
    """smtplib.LMTP with RFC 2033's per-recipient replies after DATA and BDAT LAST."""

    def __init__(self, path, timeout=60):
        super().__init__(path, timeout=timeout)
        self.ehlo("mx.example.test")  # smtplib sends LHLO for LMTP

    def transaction(self, sender, rcpts, msg, use_bdat=False, chunk=None):
        """Returns ({rcpt: (code, text)}, [(code, text) per accepted rcpt in order])."""
        code, text = self.mail(sender)
        assert code == 250, (code, text)
        rcpt_replies, accepted = {}, []
        for r in rcpts:
            rc = self.rcpt(r)
            rcpt_replies[r] = rc
            if rc[0] == 250:
                accepted.append(r)
        if not accepted:
            self.rset()
            return rcpt_replies, []
        if isinstance(msg, str):
            msg = msg.encode()
        if use_bdat:
            chunk = chunk or len(msg) or 1
            pieces = [msg[i:i + chunk] for i in range(0, len(msg), chunk)] or [b""]
            for i, p in enumerate(pieces):
                last = i == len(pieces) - 1
                self.send(f"BDAT {len(p)}{' LAST' if last else ''}\r\n".encode() + p)
                if not last:
                    c, t = self.getreply()
                    assert c == 250, (c, t)
        else:
            code, text = self.docmd("DATA")
            assert code == 354, (code, text)
            crlf = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", msg)
            stuffed = re.sub(rb"(?m)^\.", b"..", crlf)
            self.send(stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        return rcpt_replies, [self.getreply() for _ in accepted]


def message(subject, body="hello\r\n", msgid=None, extra=""):
    msgid = msgid or f"<{subject.replace(' ', '-')}@test.example>"
    return (f"From: sender@example.org\r\nTo: demo@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: {msgid}\r\n{extra}\r\n{body}").encode()


def files(maildir):
    """{base: (subdir, name)} of every message file, and the names in tmp/."""
    out = {}
    for sub in ("new", "cur"):
        d = os.path.join(maildir, sub)
        if not os.path.isdir(d):
            continue
        for n in os.listdir(d):
            if n.startswith("."):
                continue
            base = n.split(":", 1)[0]
            assert base not in out, f"{base} listed twice"
            out[base] = (sub, n)
    tmp = os.path.join(maildir, "tmp")
    return out, (os.listdir(tmp) if os.path.isdir(tmp) else [])


def read_message(maildir, sub, name):
    with open(os.path.join(maildir, sub, name), "rb") as f:
        return f.read()


def index(t, user, cmd="list", mailbox="INBOX"):
    r = subprocess.run([os.path.join(BIN, "tern-index"), "-c", t.conf_path, "-d", user, cmd, mailbox],
                       capture_output=True, text=True, env=t.env(), timeout=60)
    assert r.returncode == 0, r.stderr
    if cmd != "list":
        return r.stdout.strip()
    out = []
    for line in r.stdout.splitlines():
        uid, flags, modseq, size, path = line.split("\t")
        out.append({"uid": int(uid), "flags": flags, "modseq": int(modseq), "size": int(size), "path": path,
                    "base": path.split("/", 1)[1].split(":", 1)[0]})
    return out


def raw_lmtp(path, data, read_until=None, timeout=30):
    """Sends raw bytes on the LMTP socket and returns everything read until the
    server closes (or `read_until` appears)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    got = b""
    try:
        got += s.recv(4096)  # greeting
        s.sendall(data)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
            if read_until and read_until in got:
                break
    finally:
        s.close()
    return got


def reply_codes(raw):
    """Final-line reply codes in a raw server transcript (after the greeting)."""
    codes = []
    for line in raw.split(b"\r\n")[1:]:
        if len(line) >= 4 and line[3:4] == b" ":
            codes.append(int(line[:3]))
    return codes
