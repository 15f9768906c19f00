"""tern-mra serving a user whose mail_location is mbox (mbox:~/mail:INBOX=~/inbox):
tern-mda appends over LMTP, imaplib and poplib read and change the same file, and the
file stays what mutt and Dovecot read (From_ lines, >From quoting, X-UID/X-IMAPbase,
Status/X-Status flags)."""
import os
import re
import shutil
import threading
import time

import pytest

from mda_helpers import home_of
from mra_helpers import PW, add_user, deliver, imap, make_mra, pop, wait_for

MUSER = "old@example.test"


@pytest.fixture
def mra(request):
    t = make_mra(users=())
    add_user(t, MUSER, "--mail", "mbox:~/mail:INBOX=~/inbox", password=PW)
    yield t
    t.stop()
    rep = getattr(request.node, "rep_call", None)
    if not (rep is not None and rep.failed):
        t.cleanup()


def inbox_path(t):
    return os.path.join(home_of(t, MUSER), "inbox")


def parse_mbox(path):
    """A plain mboxrd parse: [(from_line, {header: value}, body)]."""
    with open(path, "rb") as f:
        data = f.read()
    msgs = []
    prev_blank = True
    cur = None
    for line in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
        if prev_blank and line.startswith(b"From "):
            cur = [line, [], True]
            msgs.append(cur)
        elif cur is not None:
            if cur[2] and line == b"":
                cur[2] = False
            elif cur[2]:
                cur[1].append(line)
        prev_blank = line == b""
    out = []
    for fl, hdrs, _ in msgs:
        h = {}
        for l in hdrs:
            if b":" in l and not l[:1].isspace():
                k, _, v = l.partition(b":")
                h[k.decode().lower()] = v.strip().decode()
        out.append((fl, h))
    return out, data


def subjects(c):
    typ, data = c.fetch("1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", data
    out = []
    for item in data:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            out.append((uid, item[1].decode().strip().replace("Subject: ", "")))
    return out


def test_deliver_then_fetch_and_uids_persist_in_the_file(mra):
    deliver(mra, MUSER, "first", body="From me\r\n>From you\r\nline\r\n")
    deliver(mra, MUSER, "second")
    c = imap(mra, user=MUSER)
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"2"], data
    assert subjects(c) == [(1, "first"), (2, "second")]
    typ, data = c.uid("FETCH", "1", "(BODY.PEEK[TEXT] RFC822.SIZE)")
    assert typ == "OK"
    # The client sees the body as sent: one '>' less than in the file.
    assert data[0][1] == b"From me\r\n>From you\r\nline\r\n", data
    # The store headers are not shown.
    typ, data = c.uid("FETCH", "1", "(BODY.PEEK[HEADER])")
    assert b"X-UID" not in data[0][1] and b"Status" not in data[0][1]
    c.logout()
    msgs, raw = parse_mbox(inbox_path(mra))
    assert len(msgs) == 2
    validity, uidnext = msgs[0][1]["x-imapbase"].split()
    assert [m[1]["x-uid"] for m in msgs] == ["1", "2"]
    assert b"\n>From me\n>>From you\n" in raw
    # A new session (and a new delivery) keeps the UIDs and UIDVALIDITY.
    deliver(mra, MUSER, "third")
    c = imap(mra, user=MUSER)
    c.select("INBOX")
    assert subjects(c) == [(1, "first"), (2, "second"), (3, "third")]
    typ, data = c.status("INBOX", "(UIDVALIDITY UIDNEXT MESSAGES)")
    assert f"UIDVALIDITY {validity}".encode() in data[0] and b"UIDNEXT 4" in data[0], data
    c.logout()


def test_flags_are_written_to_status_and_x_status(mra):
    for s in ("a", "b", "c"):
        deliver(mra, MUSER, s)
    c = imap(mra, user=MUSER)
    c.select("INBOX")
    assert c.store("1", "+FLAGS", r"(\Seen \Flagged)")[0] == "OK"
    assert c.store("2", "+FLAGS", r"(\Answered \Draft $Work)")[0] == "OK"
    c.logout()
    msgs, _ = parse_mbox(inbox_path(mra))
    st = [(m[1].get("status", ""), m[1].get("x-status", ""), m[1].get("x-keywords", "")) for m in msgs]
    assert st == [("RO", "F", ""), ("O", "AT", "$Work"), ("O", "", "")], st
    # A new session reads the flags back from the file.
    c = imap(mra, user=MUSER)
    c.select("INBOX")
    typ, data = c.fetch("1:3", "(FLAGS)")
    flags = [d.decode() for d in data]
    assert "\\Seen" in flags[0] and "\\Flagged" in flags[0]
    assert "\\Answered" in flags[1] and "\\Draft" in flags[1] and "$Work" in flags[1]
    assert "\\Seen" not in flags[2]
    c.logout()


def test_expunge_while_tern_mda_delivers_loses_nothing(mra):
    n = 10
    for i in range(n):
        deliver(mra, MUSER, f"m{i}")
    c = imap(mra, user=MUSER)
    c.select("INBOX")
    assert c.store("1:*", "+FLAGS", r"(\Deleted)")[0] == "OK"
    # Keep the even ones.
    assert c.store("1,3,5,7,9", "-FLAGS", r"(\Deleted)")[0] == "OK"
    extra = 20
    errors = []

    def deliver_more():
        try:
            for i in range(extra):
                deliver(mra, MUSER, f"late{i}")
        except Exception as e:  # reported by the main thread
            errors.append(e)

    th = threading.Thread(target=deliver_more)
    th.start()
    typ, data = c.expunge()
    assert typ == "OK", data
    th.join(60)
    assert not errors, errors
    assert not th.is_alive()
    c.noop()
    got = [s for _, s in subjects(c)]
    assert got[:5] == [f"m{i}" for i in range(0, n, 2)], got
    assert sorted(got[5:]) == sorted(f"late{i}" for i in range(extra)), got
    uids = [u for u, _ in subjects(c)]
    assert uids == sorted(uids) and len(set(uids)) == len(uids)
    c.logout()
    msgs, _ = parse_mbox(inbox_path(mra))
    assert len(msgs) == 5 + extra
    assert not os.listdir(os.path.join(home_of(mra, MUSER), "mail", ".tern-mbox")) or all(
        f.endswith(".pop3") for f in os.listdir(os.path.join(home_of(mra, MUSER), "mail", ".tern-mbox")))


def test_folders_append_copy_move_subscriptions(mra):
    deliver(mra, MUSER, "one")
    deliver(mra, MUSER, "two")
    c = imap(mra, user=MUSER)
    assert c.create("Work/Projects")[0] == "OK"
    assert c.create("Archive")[0] == "OK"
    assert c.subscribe("Work/Projects")[0] == "OK"
    typ, data = c.list()
    names = b"\n".join(data)
    assert b'"Work/Projects"' in names or b"Work/Projects" in names
    assert os.path.isfile(os.path.join(home_of(mra, MUSER), "mail", "Work", "Projects"))
    with open(os.path.join(home_of(mra, MUSER), "mail", ".subscriptions")) as f:
        assert "Work/Projects" in f.read().split()
    typ, data = c.append("Archive", r"(\Seen)", None, b"Subject: appended\r\n\r\nFrom the start\r\nbye\r\n")
    assert typ == "OK", data
    assert b"APPENDUID" in data[0]
    c.select("INBOX")
    typ, data = c._simple_command("UID", "COPY", "1", "Archive")  # COPYUID is in the tagged OK
    assert typ == "OK" and re.search(rb"\[COPYUID \d+ 1 2\]", data[0]), data
    typ, data = c.uid("MOVE", "2", "Work/Projects")
    assert typ == "OK", data
    assert [s for _, s in subjects(c)] == ["one"]
    c.select("Archive")
    assert [s for _, s in subjects(c)] == ["appended", "one"]
    typ, data = c.fetch("1", "(FLAGS BODY.PEEK[TEXT])")
    assert b"\\Seen" in data[0][0] and data[0][1] == b"From the start\r\nbye\r\n"
    with open(os.path.join(home_of(mra, MUSER), "mail", "Archive"), "rb") as f:
        assert b"\n>From the start\n" in f.read()
    c.select("Work/Projects")
    assert [s for _, s in subjects(c)] == ["two"]
    c.close()
    assert c.rename("Work/Projects", "Done")[0] == "OK"
    assert c.delete("Archive")[0] == "OK"
    typ, data = c.list()
    names = b"\n".join(data)
    assert b"Done" in names and b"Archive" not in names
    assert c.delete("INBOX")[0] == "NO"
    # Names that would be our own files or leave the root are refused.
    assert c.create(".tern-mbox")[0] == "NO"
    c.logout()


def test_symlink_out_of_the_mail_root_is_not_followed(mra):
    deliver(mra, MUSER, "x")
    root = os.path.join(home_of(mra, MUSER), "mail")
    secret = os.path.join(mra.dir, "secret-mbox")
    with open(secret, "wb") as f:
        f.write(b"From a Thu Jan  1 00:00:00 2026\nSubject: secret\n\nno\n\n")
    os.symlink(secret, os.path.join(root, "Evil"))
    os.symlink(mra.dir, os.path.join(root, "EvilDir"))
    c = imap(mra, user=MUSER)
    typ, data = c.select("Evil")
    assert typ == "NO", data
    typ, data = c.select("EvilDir/secret-mbox")
    assert typ == "NO", data
    c.logout()


def test_pop3_uidl_stable_and_dele_at_quit(mra):
    for s in ("p1", "p2", "p3"):
        deliver(mra, MUSER, s)
    p = pop(mra, user=MUSER)
    assert p.stat()[0] == 3
    uidl1 = p.uidl()[1]
    p.quit()
    p = pop(mra, user=MUSER)
    assert p.uidl()[1] == uidl1
    p.dele(2)
    # A second POP3 session is refused while this one holds the maildrop.
    with pytest.raises(Exception):
        pop(mra, user=MUSER)
    p.quit()
    msgs, _ = parse_mbox(inbox_path(mra))
    assert len(msgs) == 2
    p = pop(mra, user=MUSER)
    assert p.stat()[0] == 2
    uidl = [l.split()[1] for l in p.uidl()[1]]
    assert uidl == [uidl1[0].split()[1], uidl1[2].split()[1]]
    assert b"Subject: p3" in b"\n".join(p.retr(2)[1])
    # RSET: nothing is deleted without QUIT.
    p.dele(1)
    p.rset()
    p.quit()
    assert len(parse_mbox(inbox_path(mra))[0]) == 2


def test_idle_sees_an_lmtp_delivery(mra):
    deliver(mra, MUSER, "before")
    c = imap(mra, user=MUSER)
    c.select("INBOX")
    tag = c._new_tag()
    c.send(tag + b" IDLE\r\n")
    assert c.readline().startswith(b"+")
    deliver(mra, MUSER, "wake up")
    c.sock.settimeout(10)
    line = c.readline()  # blocks until the server pushes
    assert line == b"* 2 EXISTS\r\n", line
    c.send(b"DONE\r\n")
    rest = c.readline()
    while not rest.startswith(tag):
        rest = c.readline()
    assert b"OK" in rest
    c.logout()


def test_interrupted_rewrite_is_recovered_from_the_journal(mra):
    """A journal left by a crash mid-rewrite: the old tail comes back, with what tern-mda
    appended since."""
    deliver(mra, MUSER, "keep1")
    deliver(mra, MUSER, "keep2")
    c = imap(mra, user=MUSER)
    c.select("INBOX")
    c.logout()
    path = inbox_path(mra)
    with open(path, "rb") as f:
        good = f.read()
    # Simulate a crash after the journal and a partial in-place write of a shrink.
    second = good.index(b"\n\nFrom ") + 2
    jdir = os.path.join(home_of(mra, MUSER), "mail", ".tern-mbox")
    jname = re.sub(rb"[^A-Za-z0-9_-]", lambda m: b"%%%02X" % m.group(0)[0], path.encode()).decode() + ".journal"
    with open(os.path.join(jdir, jname), "wb") as f:
        f.write(b"TERNMBOXJ1 0 %d %d %d\n" % (second, len(good), second) + good[second:])
    with open(path, "r+b") as f:
        f.seek(second)
        f.write(b"GARBAGE GARBAGE")
    deliver(mra, MUSER, "after crash")
    c = imap(mra, user=MUSER)
    c.select("INBOX")
    assert [s for _, s in subjects(c)] == ["keep1", "keep2", "after crash"]
    c.logout()
    assert not os.path.exists(os.path.join(jdir, jname))


@pytest.mark.skipif(not shutil.which("doveadm"), reason="needs Dovecot's doveadm (scripts/setup installs dovecot-core)")
def test_dovecot_reads_the_same_uids_and_flags_and_we_read_its_changes(mra):
    from mda_interop_helpers import Dovecot
    for s in ("one", "two", "three"):
        deliver(mra, MUSER, s)
    c = imap(mra, user=MUSER)
    c.select("INBOX")
    c.store("1", "+FLAGS", r"(\Seen)")
    c.store("3", "+FLAGS", r"(\Flagged \Deleted)")
    c.expunge()
    c.logout()
    dv = Dovecot(mra.dir, mra.socket_path("auth-userdb"))
    rows = dv.fetch(MUSER)
    assert [(u, s) for u, _, s in rows] == [(1, "one"), (2, "two")], rows
    assert "\\Seen" in rows[0][1] and "\\Seen" not in rows[1][1]
    # Dovecot changes the file (under the same locks); our sessions see it, same UIDs.
    dv.doveadm("flags", "add", "-u", MUSER, "\\Answered", "mailbox", "INBOX", "header", "Subject", "two")
    deliver(mra, MUSER, "four")
    c = imap(mra, user=MUSER)
    c.select("INBOX")
    got = subjects(c)
    # UIDs 1 and 2 kept; the expunged 3 is not reused (Dovecot's X-IMAPbase may have
    # moved uidnext further on, which IMAP allows).
    assert got[:2] == [(1, "one"), (2, "two")] and got[2][1] == "four" and got[2][0] > 3, got
    typ, data = c.fetch("2", "(FLAGS)")
    assert b"\\Answered" in data[0], data
    c.logout()
    # Dovecot's own index already counted past 4 (its uidnext is its own), so it
    # renumbers the new message in the file, as it does for any other writer; a new
    # session of ours reads its X-UID, and both agree again.
    dv_rows = [(u, s) for u, _, s in dv.fetch(MUSER)]
    assert dv_rows[:2] == got[:2] and [s for _, s in dv_rows] == ["one", "two", "four"]
    c = imap(mra, user=MUSER)
    c.select("INBOX")
    assert subjects(c) == dv_rows
    c.logout()
