"""tern-mra over POP3 with Python's poplib: RFC 1939 with CAPA, UIDL, TOP, USER/PASS,
SASL AUTH, STLS and port 995, against the real daemons and the real Maildir."""
import base64
import os
import poplib

import pytest

from mra_helpers import PW, USER, deliver, files_in, maildir_of, make_mra, pop, tls_context, wait_for


def try_pop(t):
    try:
        return pop(t)
    except poplib.error_proto as e:
        if b"[IN-USE]" in e.args[0]:
            return None
        raise


def test_stat_list_uidl_top_retr(mra):
    deliver(mra, USER, "pop one", body="a\r\nb\r\nc\r\n.dotted line\r\n")
    deliver(mra, USER, "pop two")
    p = pop(mra)
    count, size = p.stat()
    assert count == 2
    resp, listing, _ = p.list()
    sizes = [int(x.split()[1]) for x in listing]
    assert sum(sizes) == size
    resp, uidls, _ = p.uidl()
    assert len(uidls) == 2 and len({u.split()[1] for u in uidls}) == 2
    resp, lines, octets = p.retr(1)
    assert b"Subject: pop one" in lines and b".dotted line" in lines  # dot-stuffing undone by poplib
    assert octets >= sizes[0]
    resp, lines, _ = p.top(1, 1)
    assert b"Subject: pop one" in lines and b"a" in lines and b"b" not in lines
    caps = p.capa()
    for cap in ("UIDL", "TOP", "RESP-CODES", "PIPELINING"):
        assert cap in caps, caps
    p.quit()
    pre = pop(mra, login=False)
    caps = pre.capa()
    for cap in ("USER", "SASL", "UIDL", "TOP", "STLS"):
        assert cap in caps, caps
    pre.quit()
    # UIDLs are the same in the next session.
    q = pop(mra)
    assert q.uidl()[1] == uidls
    q.quit()


def test_dele_takes_effect_only_at_quit(mra):
    for i in range(3):
        deliver(mra, USER, f"msg {i}")
    p = pop(mra)
    p.dele(1)
    p.dele(2)
    with pytest.raises(poplib.error_proto):
        p.retr(1)  # deleted in this session
    # The connection drops without QUIT: nothing is deleted.
    p.close()  # poplib's close() sends nothing: the connection just ends
    root = maildir_of(mra, USER)
    # The server notices the dropped connection and releases the maildrop lock.
    q = wait_for(lambda: try_pop(mra), 10, what="the maildrop lock of the dropped session to go")
    assert q.stat()[0] == 3
    q.dele(1)
    q.rset()
    q.dele(2)
    q.quit()
    assert len(files_in(root, "cur")) + len(files_in(root, "new")) == 2
    r = pop(mra)
    assert r.stat()[0] == 2
    r.quit()


def test_one_session_per_maildrop(mra):
    deliver(mra, USER, "locked")
    p = pop(mra)
    q = pop(mra, login=False)
    q.user(USER)
    with pytest.raises(poplib.error_proto) as e:
        q.pass_(PW)
    assert b"[IN-USE]" in e.value.args[0]
    p.quit()
    r = pop(mra)
    assert r.stat()[0] == 1
    r.quit()


def test_auth_plain_stls_and_pop3s(tern_factory):
    from mda_helpers import add_user, prepare_mail_dir
    from mra_helpers import FAST
    s = dict(FAST)
    s["disable_plaintext_auth"] = "yes"
    t = tern_factory(settings=s, start=False)
    prepare_mail_dir(t)
    t.start()
    add_user(t, USER, password=PW)
    deliver(t, USER, "secure")
    p = pop(t, login=False)
    assert "STLS" in p.capa() and "USER" not in p.capa()
    with pytest.raises(poplib.error_proto):
        p.user(USER)
    p.stls(context=tls_context())
    assert "USER" in p.capa()
    ir = base64.b64encode(b"\0" + USER.encode() + b"\0" + PW.encode()).decode()
    assert p._shortcmd("AUTH PLAIN " + ir).startswith(b"+OK")
    assert p.stat()[0] == 1
    p.quit()
    q = pop(t, tls=True)
    assert q.stat()[0] == 1
    q.quit()
    bad = pop(t, tls=True, login=False)
    bad.user(USER)
    with pytest.raises(poplib.error_proto) as e:
        bad.pass_("wrong")
    assert b"[AUTH]" in e.value.args[0]
    bad.quit()
    log = t.wait_log("pop3-login")
    assert "pop3-login" in log and "Login: user=<demo@example.test>" in log
    t.stop()
