"""Real mail clients against tern-mra: mbsync (isync) syncing both ways with flags over
IMAPS, fetchmail downloading over POP3 with STLS, and mutt reading over IMAP in a
tmux terminal."""
import os
import re
import shutil
import subprocess
import time

import pytest

from mra_helpers import PW, USER, deliver, files_in, imap, maildir_of, make_mra, pop
from tern_harness import wait_for


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    assert r.returncode == 0, f"{cmd[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


@pytest.mark.skipif(not shutil.which("mbsync"), reason="isync is not installed (scripts/setup installs it)")
def test_mbsync_syncs_both_ways_with_flags(mra):
    deliver(mra, USER, "to the laptop")
    deliver(mra, USER, "flag me on the server")
    local = os.path.join(mra.dir, "laptop")
    os.makedirs(local)
    rc = os.path.join(mra.dir, "mbsyncrc")
    with open(rc, "w") as f:
        f.write(f"""IMAPAccount tern
Host {mra.hostname}
Tunnel "nc 127.0.0.1 {mra.port('imaps')}"
User {USER}
Pass {PW}
SSLType IMAPS
CertificateFile {mra.cert}
SystemCertificates no

IMAPStore remote
Account tern

MaildirStore laptop
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel all
Far :remote:
Near :laptop:
Patterns *
Create Both
Expunge Both
SyncState *
Sync All
""")
    run(["mbsync", "-c", rc, "-a"])
    inbox = os.path.join(local, "INBOX")
    got = files_in(inbox, "cur") + files_in(inbox, "new")
    assert len(got) == 2
    for sub in ("Drafts", "Junk", "Sent", "Trash"):
        assert os.path.isdir(os.path.join(local, sub, "cur")), sub

    # Laptop side: mark the first read, write a message into Sent.
    def local_file(subject):
        for sub in ("cur", "new"):
            for n in os.listdir(os.path.join(inbox, sub)):
                with open(os.path.join(inbox, sub, n), "rb") as fh:
                    if subject.encode() in fh.read():
                        return sub, n
        raise AssertionError(subject)

    sub, name = local_file("to the laptop")
    base = name.split(":2,")[0]
    os.rename(os.path.join(inbox, sub, name), os.path.join(inbox, "cur", base + ":2,S"))
    sent_new = os.path.join(local, "Sent", "new")
    with open(os.path.join(sent_new, "1700000000.M1P1.laptop"), "wb") as fh:
        fh.write(b"From: demo@example.test\nTo: x@example.org\nSubject: written offline\n\nhi\n")
    # Server side: flag the second.
    c = imap(mra)
    c.select("INBOX")
    typ, data = c.search(None, "SUBJECT", '"flag me"')
    c.store(data[0].decode(), "+FLAGS", r"(\Flagged)")
    c.logout()

    run(["mbsync", "-c", rc, "-a"])
    c = imap(mra)
    c.select("INBOX")
    typ, data = c.search(None, "SEEN", "SUBJECT", '"to the laptop"')
    assert data[0] != b"", "the laptop's \\Seen did not reach the server"
    server_inbox = maildir_of(mra, USER)
    assert any(n.endswith(":2,S") for n in files_in(server_inbox, "cur"))
    typ, data = c.select("Sent")
    assert data == [b"1"]
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"written offline" in data[0][1]
    sub, name = local_file("flag me on the server")
    assert "F" in name.split(":2,")[1], name
    # An expunge on the server reaches the laptop.
    c.select("INBOX")
    typ, data = c.search(None, "SUBJECT", '"to the laptop"')
    c.store(data[0].decode(), "+FLAGS", r"(\Deleted)")
    c.expunge()
    c.logout()
    run(["mbsync", "-c", rc, "-a"])
    assert len(files_in(inbox, "cur") + files_in(inbox, "new")) == 1


@pytest.mark.skipif(not shutil.which("fetchmail"), reason="fetchmail is not installed (scripts/setup installs it)")
def test_fetchmail_downloads_over_pop3_with_stls(tern_factory):
    from mda_helpers import add_user, prepare_mail_dir
    from mra_helpers import FAST
    s = dict(FAST)
    s["disable_plaintext_auth"] = "yes"  # USER/PASS only after STLS
    t = tern_factory(settings=s, start=False)
    prepare_mail_dir(t)
    t.start()
    add_user(t, USER, password=PW)
    for i in range(3):
        deliver(t, USER, f"fetch me {i}")
    out = os.path.join(t.dir, "fetched.mbox")
    rc = os.path.join(t.dir, "fetchmailrc")
    with open(rc, "w") as f:
        f.write(f'poll 127.0.0.1 with proto POP3 port {t.port("pop3")}\n'
                f'  user "{USER}" there with password "{PW}" is root here\n'
                f'  sslproto "tls1.2+" no sslcertck\n'
                f'  mda "/bin/sh -c \'cat >> {out}\'"\n')
    os.chmod(rc, 0o600)
    env = dict(os.environ, FETCHMAILHOME=t.dir, HOME=t.dir)
    r = subprocess.run(["fetchmail", "-f", rc, "-v", "--nodetach", "--nosyslog"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "STLS" in r.stdout + r.stderr
    with open(out, "rb") as f:
        data = f.read()
    for i in range(3):
        assert f"Subject: fetch me {i}".encode() in data
    # fetchmail deletes what it fetched (no "keep"): the maildrop is empty.
    p = pop(t, login=False)
    p.stls(context=__import__("mra_helpers").tls_context())
    p.user(USER)
    p.pass_(PW)
    assert p.stat()[0] == 0
    p.quit()
    t.stop()


@pytest.mark.skipif(not shutil.which("mutt") or not shutil.which("tmux"),
                    reason="mutt and tmux are not installed (scripts/setup installs them)")
def test_mutt_reads_over_imap(mra):
    deliver(mra, USER, "hello mutt", body="This is the body mutt shows.\r\n")
    home = os.path.join(mra.dir, "mutthome")
    os.makedirs(home)
    rc = os.path.join(home, "muttrc")
    with open(rc, "w") as f:
        f.write(f"""set imap_user = "{USER}"
set imap_pass = "{PW}"
set folder = "imap://127.0.0.1:{mra.port('imap')}/"
set spoolfile = "+INBOX"
set ssl_starttls = no
set ssl_force_tls = no
set imap_check_subscribed = no
set header_cache = ""
set message_cachedir = ""
set mail_check = 1
set timeout = 1
set sort = date
set pager_stop = yes
set mark_old = no
""")
    sock = os.path.join(mra.dir, "tmux.sock")
    env = dict(os.environ, HOME=home, TERM="xterm")
    tmux = ["tmux", "-S", sock]
    subprocess.run(tmux + ["new-session", "-d", "-x", "120", "-y", "40", "mutt", "-n", "-F", rc], check=True, env=env)
    try:
        def screen():
            return subprocess.run(tmux + ["capture-pane", "-p"], capture_output=True, text=True, env=env).stdout

        try:
            wait_for(lambda: "hello mutt" in screen(), 30, what="mutt's index showing the message")
        except TimeoutError:
            raise AssertionError(screen())
        subprocess.run(tmux + ["send-keys", "Enter"], check=True, env=env)
        wait_for(lambda: "This is the body mutt shows." in screen(), 30, what="mutt's pager showing the body")
        # A new delivery shows up in the index mutt is looking at.
        subprocess.run(tmux + ["send-keys", "q"], check=True, env=env)
        deliver(mra, USER, "second for mutt")
        wait_for(lambda: "second for mutt" in screen(), 30, what="mutt noticing new mail")
        subprocess.run(tmux + ["send-keys", "q"], check=True, env=env)  # mutt quits (and syncs \\Seen)
        wait_for(lambda: subprocess.run(tmux + ["has-session"], capture_output=True, env=env).returncode != 0, 30,
                 what="mutt to quit")
    finally:
        subprocess.run(tmux + ["kill-server"], env=env)
    # Reading it marked it \Seen on the server, in the Maildir file name.
    c = imap(mra)
    c.select("INBOX")
    typ, data = c.search(None, "SEEN")
    assert data[0] == b"1", data
    c.logout()
    assert any(n.endswith(":2,S") for n in files_in(maildir_of(mra, USER), "cur"))
