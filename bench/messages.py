"""Test mailboxes for the IMAP and POP3 scenarios: the same files, byte for byte and
name for name, are put into each suite's Maildir, so both servers read identical
mail.

The messages look like a real inbox: distinct senders, subjects, dates and
Message-IDs; sizes from a few hundred bytes to tens of kilobytes; about one in five
a multipart/alternative (text and HTML), one in ten with a base64 attachment.
Every `needle_every`-th message carries the word NEEDLE_WORD in its text, so SEARCH
TEXT has a known number of hits. Generated from a fixed seed: every run gets the
same mailbox.
"""
import base64
import os
import random

NEEDLE_WORD = "zanzibarquartz"

_WORDS = ("the mail server queue message delivery index folder account meeting report budget review "
          "project schedule update release network storage backup invoice customer order status team "
          "weekly notes draft reply forward attachment contract proposal holiday travel office lunch "
          "please thanks regards question answer issue patch build test deploy config error warning").split()
_NAMES = ("Alice Martin", "Bob Dubois", "Carol Nguyen", "Dan Okafor", "Eva Schmidt", "Frank Rossi",
          "Grace Kim", "Hugo Silva", "Ines Moreau", "Jan Novak", "Kira Ivanova", "Liam Walsh")


def _text(rng, n_words):
    lines, line = [], []
    for _ in range(n_words):
        line.append(rng.choice(_WORDS))
        if len(line) >= 12:
            lines.append(" ".join(line))
            line = []
    if line:
        lines.append(" ".join(line))
    return "\n".join(lines)


def message(i, rng, needle):
    """One message (str, LF line ends, as stored in a Maildir)."""
    name = rng.choice(_NAMES)
    addr = name.lower().replace(" ", ".") + "@example.org"
    subject = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 7))).capitalize()
    day = 1 + i % 28
    date = f"{['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'][i % 7]}, {day:02d} Mar 2024 " \
           f"{(i // 60) % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d} +0100"
    # Mostly short mail, some long (a heavy tail, as in a real mailbox).
    words = int(min(6000, rng.expovariate(1 / 350))) + 20
    body = _text(rng, words)
    if needle:
        body += f"\nreference {NEEDLE_WORD} attached\n"
    head = (f"Return-Path: <{addr}>\n"
            f"Received: from mx.example.org (mx.example.org [192.0.2.{i % 250 + 1}])\n"
            f"\tby mail.example.test with ESMTP id {i:08X}; {date}\n"
            f"From: {name} <{addr}>\n"
            f"To: Bench User <bench@example.test>\n"
            f"Subject: {subject}\n"
            f"Date: {date}\n"
            f"Message-ID: <{i}.{rng.randrange(1 << 30)}@example.org>\n"
            f"MIME-Version: 1.0\n")
    kind = rng.random()
    if kind < 0.7:
        return head + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + body + "\n"
    boundary = f"=_bench_{i}"
    html = "<html><body><p>" + body.replace("\n", "</p>\n<p>") + "</p></body></html>"
    parts = [f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n\n{body}\n",
             f"--{boundary}\nContent-Type: text/html; charset=utf-8\n\n{html}\n"]
    ctype = "multipart/alternative"
    if kind > 0.9:
        ctype = "multipart/mixed"
        blob = rng.randbytes(rng.randint(2000, 30000))
        b64 = base64.encodebytes(blob).decode()
        parts = parts[:1] + [f"--{boundary}\nContent-Type: application/octet-stream\n"
                             f"Content-Disposition: attachment; filename=\"file{i}.bin\"\n"
                             f"Content-Transfer-Encoding: base64\n\n{b64}"]
    return head + f"Content-Type: {ctype}; boundary=\"{boundary}\"\n\n" + "".join(parts) + f"--{boundary}--\n"


def mailbox(count, needle_every=100, seed=8):
    """[(file name, bytes)] for a Maildir cur/ directory; count messages."""
    rng = random.Random(seed)
    out = []
    t0 = 1700000000
    for i in range(count):
        data = message(i, rng, needle=(i % needle_every == needle_every // 2)).encode()
        size = len(data)
        vsize = size + data.count(b"\n")
        flags = "S" if rng.random() < 0.7 else ""
        name = f"{t0 + i}.M{i:06d}P1.bench,S={size},W={vsize}:2,{flags}"
        out.append((name, data))
    return out


def needles(count, needle_every=100):
    return sum(1 for i in range(count) if i % needle_every == needle_every // 2)


def write_maildir(root, files, owner):
    """Makes the Maildir `root` (cur/ new/ tmp/) and writes the files into cur/,
    owned by owner = (uid, gid)."""
    # Every directory made here belongs to the mail user, the parents too (the
    # domain and user directories): the delivery agents create their siblings.
    missing = []
    d = os.path.abspath(root)
    while not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        os.mkdir(d, 0o700)
        os.chown(d, *owner)
    for sub in ("cur", "new", "tmp"):
        d = os.path.join(root, sub)
        os.makedirs(d, mode=0o700, exist_ok=True)
        os.chown(d, *owner)
    cur = os.path.join(root, "cur")
    for name, data in files:
        p = os.path.join(cur, name)
        with open(p, "wb") as f:
            f.write(data)
        os.chown(p, *owner)
