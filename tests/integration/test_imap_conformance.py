"""tern-mra against the points of the IMAP/POP3 conformance audit (/work/audit-imap.md):
octet counts of messages stored with CRLF or stray CRs, APPEND byte-exactness,
keywords across RENAME INBOX, \\Recent on APPEND/COPY/MOVE, subscriptions to
mailboxes that do not exist, SEARCHRES with MIN/MAX, and LSUB attributes. Real
daemons, imaplib/poplib where they pass bytes through unchanged, raw sockets where
they do not (imaplib's append() rewrites a stray CR as CRLF)."""
import os
import re

import pytest

from mra_helpers import PW, USER, Raw, deliver, files_in, imap, maildir_of, make_mra, pop


def place_in_cur(root, name, data):
    """Writes a message straight into cur/, as a migration tool (or another MDA) does:
    no S=/W= in the name, CRLF line ends kept. Owned like the folder."""
    path = os.path.join(root, "cur", name)
    with open(path, "wb") as f:
        f.write(data)
    st = os.stat(os.path.join(root, "cur"))
    if os.geteuid() == 0:
        os.chown(path, st.st_uid, st.st_gid)
    return path


def size_and_body(c, seq):
    typ, data = c.fetch(seq, "(RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK", data
    head, body = data[0]
    return int(re.search(rb"RFC822\.SIZE (\d+)", head).group(1)), body


class RawImap(Raw):
    def __init__(self, t):
        super().__init__(t.port("imap"))
        self.line()  # greeting
        self.n = 0

    def cmd(self, text):
        """Sends one command (bytes or str); returns its response lines."""
        self.n += 1
        tag = b"t%d" % self.n
        self.send(tag + b" " + (text if isinstance(text, bytes) else text.encode()) + b"\r\n")
        lines = self.until(tag + b" ")
        return lines

    def login(self):
        assert self.cmd('LOGIN "%s" "%s"' % (USER, PW))[-1].split()[1] == b"OK"


CRLF_FILE = b"Subject: crlf-file\r\nFrom: a@b\r\n\r\nline1\r\nline2\r\n"
MIXED_FILE = b"Subject: mixed\nFrom: a@b\r\n\r\nx\r\r\ny\nlast line\r\n"


def test_sizes_of_a_crlf_maildir_file_match_the_octets_served(mra):
    deliver(mra, USER, "lf one", body="a\r\nb\r\n")  # an ordinary LF file with S=/W=
    root = maildir_of(mra, USER)
    place_in_cur(root, "1700000100.M1P1.migrated:2,S", CRLF_FILE)
    place_in_cur(root, "1700000200.M2P1.migrated:2,", MIXED_FILE)
    c = imap(mra)
    typ, data = c.select("INBOX")
    assert data == [b"3"]
    expect = {2: CRLF_FILE, 3: MIXED_FILE.replace(b"mixed\n", b"mixed\r\n").replace(b"y\n", b"y\r\n")}
    for seq in (1, 2, 3):
        size, body = size_and_body(c, str(seq))
        assert size == len(body), (seq, size, body)
        if seq in expect:
            assert body == expect[seq]
        typ, data = c.fetch(str(seq), "(BINARY.SIZE[] BODY.PEEK[]<0.10000>)")
        head = data[0][0]
        assert int(re.search(rb"BINARY\.SIZE\[\] (\d+)", head).group(1)) == size
        assert data[0][1] == body
    # A partial fetch at the last octets ends exactly where RFC822.SIZE says.
    size, body = size_and_body(c, "2")
    typ, data = c.fetch("2", "(BODY.PEEK[]<%d.100>)" % (size - 5))
    assert data[0][1] == body[-5:]
    typ, data = c.status("INBOX", "(SIZE)")
    total = sum(size_and_body(c, str(s))[0] for s in (1, 2, 3))
    assert b"SIZE %d" % total in data[0]
    c.logout()

    # POP3: LIST equals what RETR sends (after dot-unstuffing, without the terminator).
    r = Raw(mra.port("pop3"))
    r.line()
    r.send(b"USER %s\r\nPASS %s\r\n" % (USER.encode(), PW.encode()))
    assert r.line().startswith(b"+OK") and r.line().startswith(b"+OK")
    r.send(b"LIST\r\n")
    listing = r.until(b".")
    sizes = {int(l.split()[0]): int(l.split()[1]) for l in listing[1:-1]}
    assert len(sizes) == 3
    for n, want in sizes.items():
        r.send(b"RETR %d\r\n" % n)
        first = r.line()
        assert first == b"+OK %d octets" % want, first
        while b"\r\n.\r\n" not in r.buf:
            r.buf += r.s.recv(65536)
        raw, _, r.buf = r.buf.partition(b"\r\n.\r\n")
        msg = re.sub(rb"(^|\r\n)\.", rb"\1", raw) + b"\r\n"
        assert len(msg) == want, (n, msg)
        if n in expect:
            assert msg == expect[n]
    r.send(b"QUIT\r\n")
    r.line()
    r.close()


def test_append_keeps_a_stray_cr_byte_for_byte(mra):
    msg = b"Subject: cr\r\n\r\nx\r\r\ny\r\nlone\rcr\r\n"
    r = RawImap(mra)
    r.login()
    r.send(b"a APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
    assert r.until(b"a ")[-1].startswith(b"a OK")
    r.close()
    c = imap(mra)
    c.select("INBOX")
    size, body = size_and_body(c, "1")
    assert body == msg and size == len(msg)
    c.logout()
    p = pop(mra)
    resp, listing, _ = p.list()
    assert listing == [b"1 %d" % len(msg)]
    p.quit()


def flags_of(c, seq):
    typ, data = c.fetch(seq, "(FLAGS)")
    assert typ == "OK", data
    return set(re.search(rb"FLAGS \(([^)]*)\)", data[0]).group(1).split())


def test_rename_inbox_keeps_every_keyword_on_its_message(mra):
    deliver(mra, USER, "one")
    deliver(mra, USER, "two")
    c = imap(mra)
    c.select("INBOX")
    typ, data = c.store("1", "FLAGS", r"(\Seen $Forwarded foo)")
    assert typ == "OK", data
    typ, data = c.store("2", "+FLAGS", "(bar)")
    assert typ == "OK", data
    typ, data = c.rename("INBOX", "OldInbox")
    assert typ == "OK", data
    typ, data = c.select("OldInbox")
    assert data == [b"2"]
    assert flags_of(c, "1") == {b"\\Seen", b"$Forwarded", b"foo"}
    assert flags_of(c, "2") == {b"bar"}
    # A keyword new to OldInbox gets a letter of its own, not one its messages use.
    c.store("2", "+FLAGS", "(newkw $Junk)")
    assert flags_of(c, "1") == {b"\\Seen", b"$Forwarded", b"foo"}
    assert flags_of(c, "2") == {b"bar", b"newkw", b"$Junk"}
    c.logout()
    # A second session (a fresh read of the map) agrees; INBOX is empty and usable.
    d = imap(mra)
    d.select("OldInbox")
    assert flags_of(d, "1") == {b"\\Seen", b"$Forwarded", b"foo"}
    assert flags_of(d, "2") == {b"bar", b"newkw", b"$Junk"}
    typ, data = d.select("INBOX")
    assert data == [b"0"]
    d.logout()


def recent_on_select(t, mailbox):
    c = imap(t)
    typ, data = c.select(mailbox)
    assert typ == "OK", data
    recent = int(c.untagged_responses["RECENT"][0])
    return c, recent


def test_append_copy_and_move_set_recent_for_the_first_session(mra):
    deliver(mra, USER, "one")
    deliver(mra, USER, "two")
    c = imap(mra)
    c.create("Filed")
    c.select("INBOX")
    c.store("1", "+FLAGS", r"(\Seen \Flagged kw1)")
    typ, data = c.copy("1", "Filed")
    assert typ == "OK", data
    typ, data = c._simple_command("MOVE", "2", "Filed")
    assert typ == "OK", data
    typ, data = c.append("Filed", r"(\Draft)", None, b"Subject: appended\r\n\r\nbody\r\n")
    assert typ == "OK", data
    c.logout()
    root = maildir_of(mra, USER, "Filed")
    assert len(files_in(root, "new")) == 3 and files_in(root, "cur") == []
    # The first session to select Filed gets all three as \Recent, flags intact.
    d, recent = recent_on_select(mra, "Filed")
    assert recent == 3
    assert flags_of(d, "1") == {b"\\Seen", b"\\Flagged", b"kw1", b"\\Recent"}
    assert flags_of(d, "2") == {b"\\Recent"}
    assert flags_of(d, "3") == {b"\\Draft", b"\\Recent"}
    d.logout()
    # ... and a later one does not; the files are in cur/ with their flags.
    e, recent = recent_on_select(mra, "Filed")
    assert recent == 0
    assert flags_of(e, "1") == {b"\\Seen", b"\\Flagged", b"kw1"}
    e.logout()
    assert files_in(root, "new") == [] and len(files_in(root, "cur")) == 3
    assert any(":2,FSa" in n for n in files_in(root, "cur"))


def test_append_to_the_selected_mailbox_is_recent_there(mra):
    c = imap(mra)
    c.select("INBOX")
    typ, data = c.append("INBOX", None, None, b"Subject: a\r\n\r\nb\r\n")
    assert typ == "OK", data
    typ, data = c.noop()
    assert typ == "OK", data
    assert flags_of(c, "1") == {b"\\Recent"}
    c.logout()


def list_lines(r, command):
    lines = r.cmd(command)
    assert lines[-1].split()[1] == b"OK", lines
    return [l for l in lines[:-1] if l.startswith(b"* LIST ") or l.startswith(b"* LSUB ")]


def test_a_subscription_to_a_missing_mailbox_is_listed_so_it_can_be_removed(mra):
    r = RawImap(mra)
    r.login()
    assert r.cmd("SUBSCRIBE Gone")[-1].split()[1] == b"OK"
    assert r.cmd("SUBSCRIBE Never/Was")[-1].split()[1] == b"OK"
    lsub = list_lines(r, 'LSUB "" "*"')
    assert b'* LSUB (\\Noselect) "/" Gone' in lsub
    assert b'* LSUB (\\Noselect) "/" Never/Was' in lsub
    assert not any(l.endswith(b" Never") for l in lsub)  # "*": no unsubscribed parent
    # "%" shows the unsubscribed parent of a subscribed name it hides (RFC 3501 6.3.9).
    assert b'* LSUB (\\Noselect) "/" Never' in list_lines(r, 'LSUB "" "%"')
    ext = list_lines(r, 'LIST (SUBSCRIBED) "" "*"')
    assert b'* LIST (\\NonExistent \\Subscribed) "/" Gone' in ext
    assert b'* LIST (\\NonExistent \\Subscribed) "/" Never/Was' in ext
    # Plain LIST shows only what exists.
    plain = list_lines(r, 'LIST "" "*"')
    assert not any(b"Gone" in l or b"Never" in l for l in plain), plain
    # ... and now the client can remove them.
    assert r.cmd("UNSUBSCRIBE Gone")[-1].split()[1] == b"OK"
    assert r.cmd("UNSUBSCRIBE Never/Was")[-1].split()[1] == b"OK"
    for cmd in ('LSUB "" "*"', 'LIST (SUBSCRIBED) "" "*"'):
        assert not any(b"Gone" in l or b"Never" in l for l in list_lines(r, cmd))
    r.close()


def test_lsub_names_each_attribute_once_and_no_unsubscribed_parents_for_star(mra):
    c = imap(mra)
    for name in ("Work/Sub/Deep", "Other"):
        typ, data = c.create(name)
        assert typ == "OK", data
    c.subscribe("Work/Sub/Deep")
    c.subscribe("Other")
    c.logout()
    r = RawImap(mra)
    r.login()
    ours = lambda lines: sorted(l for l in lines if b"Work" in l or b"Other" in l)  # not the default folders
    star = ours(list_lines(r, 'LSUB "" "*"'))
    assert star == [b'* LSUB () "/" Other', b'* LSUB () "/" Work/Sub/Deep'], star
    pct = ours(list_lines(r, 'LSUB "" "%"'))
    assert pct == [b'* LSUB () "/" Other', b'* LSUB (\\Noselect) "/" Work'], pct
    assert list_lines(r, 'LSUB "" "Work/%"') == [b'* LSUB (\\Noselect) "/" Work/Sub']
    r.close()


def test_header_fetches_and_top_of_a_crlf_file(mra):
    """The FETCH path that reads only the header, and POP3 TOP, on a CRLF file."""
    deliver(mra, USER, "lf one")  # creates the Maildir; message 1
    root = maildir_of(mra, USER)
    place_in_cur(root, "1700000100.M1P1.migrated:2,S", CRLF_FILE)
    head, _, text = CRLF_FILE.partition(b"\r\n\r\n")
    c = imap(mra)
    c.select("INBOX")
    typ, data = c.fetch("2", "(BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    parts = [p[1] for p in data if isinstance(p, tuple)]
    assert parts == [head + b"\r\n\r\n", text, b"Subject: crlf-file\r\n\r\n"], parts
    typ, data = c.fetch("2", "(BODYSTRUCTURE)")
    assert b'"7BIT" 14 2' in data[0].upper(), data  # body octets and lines of the CRLF form
    c.logout()
    p = pop(mra)
    resp, lines, octets = p.top(2, 1)
    assert lines == head.split(b"\r\n") + [b"", b"line1"], lines
    p.quit()


def test_delete_of_a_noselect_parent_says_why(mra):
    r = RawImap(mra)
    r.login()
    assert r.cmd("CREATE Top/Child")[-1].split()[1] == b"OK"
    assert b'* LIST (\\Noselect \\HasChildren) "/" Top' in list_lines(r, 'LIST "" "Top"')
    no = r.cmd("DELETE Top")[-1]
    assert no.startswith(b"t") and b" NO [CANNOT] Mailbox has children" in no, no
    assert b" NO [NONEXISTENT] " in r.cmd("DELETE Nowhere")[-1]
    r.close()
