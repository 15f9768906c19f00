"""tern-mda with real peers from Debian: a private Postfix delivers into it through
`virtual_transport = lmtp:unix:<tern-mda's lmtp socket>`; the real Dovecot
(doveadm, with its own config in the test directory, looking users up over
tern-authd's auth-userdb socket) opens the resulting Maildirs and shows the same
messages and flags, and its changes are picked up by Tern's index; mutt opens the
Maildir too."""
import os
import shutil
import smtplib
import subprocess

import pytest

from mda_helpers import add_user, files, index, maildir_of, make_tern, read_message
from mda_interop_helpers import Dovecot, Postfix
from tern_harness import is_root, wait_for

pytestmark = [
    pytest.mark.skipif(not is_root(), reason="a private Postfix needs root (its daemons drop to the postfix user)"),
    pytest.mark.skipif(not shutil.which("postfix") or not shutil.which("doveadm") or not shutil.which("mutt"),
                       reason="postfix, dovecot-core and mutt come from scripts/setup"),
]


@pytest.fixture
def stack():
    t = make_tern()
    add_user(t, "demo@example.test")
    add_user(t, "ann@example.test")
    pf = Postfix(t.dir, t.socket_path("lmtp"))
    pf.start()
    yield t, pf
    pf.stop()
    t.cleanup()


def subjects_in(t, user, folder=None):
    md = maildir_of(t, user, folder)
    found, tmp = files(md)
    assert not tmp
    out = {}
    for base, v in found.items():
        m = read_message(md, *v)
        out[m.split(b"\nSubject: ", 1)[1].split(b"\n", 1)[0].decode()] = base
    return out


def test_postfix_to_tern_mda_to_dovecot(stack):
    t, pf = stack
    s = smtplib.SMTP("127.0.0.1", pf.port)
    s.sendmail("alice@example.org", ["demo@example.test", "ann@example.test"], "Subject: one\r\n\r\nfor both\r\n")
    s.sendmail("alice@example.org", ["demo@example.test"], "Subject: two\r\n\r\n.dot line\r\n")
    s.sendmail("alice@example.org", ["demo+Sent@example.test"], "Subject: filed\r\n\r\nto the Sent folder\r\n")
    s.sendmail("alice@example.org", ["demo@example.test"], "Subject: big\r\n\r\n" + "b" * 998 + "\r\n" * 2000)
    s.sendmail("alice@example.org", ["nobody@example.test"], "Subject: lost\r\n\r\nno such user\r\n")
    s.quit()

    wait_for(lambda: len(subjects_in(t, "demo@example.test")) == 3 and len(subjects_in(t, "ann@example.test")) == 1
             and len(subjects_in(t, "demo@example.test", "Sent")) == 1, timeout=60, what="Postfix deliveries")
    log = wait_for(lambda: pf.log() if pf.log().count("status=sent") >= 5 and "status=bounced" in pf.log() else None,
                   timeout=60, what="Postfix log lines")
    assert "relay=mx.example.test[" + t.socket_path("lmtp") + "]" in log
    assert "said: 550 5.1.1 <nobody@example.test> User doesn't exist" in log
    demo = subjects_in(t, "demo@example.test")
    assert set(demo) == {"one", "two", "big"}
    m = read_message(maildir_of(t, "demo@example.test"), *files(maildir_of(t, "demo@example.test"))[0][demo["two"]])
    assert m.startswith(b"Return-Path: <alice@example.org>\nDelivered-To: demo@example.test\n")
    assert b"\n.dot line\n" in m

    # Tern's index gave UIDs at delivery; set flags through it, as tern-mra would.
    recs = {r["base"]: r for r in index(t, "demo@example.test")}
    assert set(recs) == set(demo.values())
    uid_one, uid_two = recs[demo["one"]]["uid"], recs[demo["two"]]["uid"]
    run_flags(t, uid_one, "+S")
    run_flags(t, uid_two, "+FS")

    # The real Dovecot opens the same Maildir: same messages, same flags.
    dv = Dovecot(t.dir, t.socket_path("auth-userdb"))
    rows = dv.fetch("demo@example.test")
    by_subject = {subj: set(flags.split()) for _, flags, subj in rows}
    assert set(by_subject) == {"one", "two", "big"}
    assert "\\Seen" in by_subject["one"] and "\\Flagged" not in by_subject["one"]
    assert {"\\Seen", "\\Flagged"} <= by_subject["two"]
    assert not ({"\\Seen", "\\Flagged"} & by_subject["big"])
    assert [s for _, _, s in dv.fetch("demo@example.test", "Sent")] == ["filed"]
    assert [s for _, _, s in dv.fetch("ann@example.test")] == ["one"]

    # Dovecot changes flags and expunges; Tern's next sync sees it, keeping UIDs.
    dv.doveadm("flags", "add", "-u", "demo@example.test", "\\Answered", "mailbox", "INBOX", "header", "Subject", "big")
    dv.doveadm("expunge", "-u", "demo@example.test", "mailbox", "INBOX", "header", "Subject", "one")
    out = index(t, "demo@example.test", "sync")
    assert "added=0" in out and "expunged=1" in out
    after = {r["base"]: r for r in index(t, "demo@example.test")}
    assert set(after) == {demo["two"], demo["big"]}
    assert "R" in after[demo["big"]]["flags"]
    assert after[demo["big"]]["uid"] == recs[demo["big"]]["uid"]
    assert after[demo["two"]]["flags"] == "FS"
    # Dovecot's own files (dovecot.index*, dovecot-uidlist) beside ours do no harm.
    assert os.path.exists(os.path.join(maildir_of(t, "demo@example.test"), "dovecot-uidlist"))


def run_flags(t, uid, arg):
    from tern_harness import BIN
    r = subprocess.run([os.path.join(BIN, "tern-index"), "-c", t.conf_path, "-d", "demo@example.test", "flags",
                        str(uid), arg], capture_output=True, text=True, env=t.env(), timeout=60)
    assert r.returncode == 0, r.stderr


def mutt_copy(maildir, pattern, out):
    """mutt, read-only, copies the messages matching `pattern` to the mbox `out`.
    mutt needs a terminal: `script` gives it one. `folder` points at an existing
    directory, or mutt would first ask whether to create ~/Mail and eat the keys."""
    home = os.path.dirname(out)
    settings = f"set copy=no confirmcreate=no confirmappend=no quit=yes mbox_type=mbox folder={home}"
    keys = f"<tag-pattern>{pattern}<enter><tag-prefix><copy-message>{out}<enter><quit>"
    cmd = f"mutt -n -F /dev/null -R -f {maildir} -e '{settings}' -e 'push \"{keys}\"'"
    env = dict(os.environ, TERM="xterm", HOME=home)
    subprocess.run(["script", "-qec", cmd, "/dev/null"], env=env, capture_output=True, timeout=60, check=True)
    if not os.path.exists(out):
        return []
    with open(out, "rb") as f:
        return [line.split(b": ", 1)[1].decode() for line in f.read().split(b"\n") if line.startswith(b"Subject: ")]


def test_mutt_opens_the_maildir(stack):
    t, pf = stack
    s = smtplib.SMTP("127.0.0.1", pf.port)
    for subj in ("alpha", "beta", "gamma"):
        s.sendmail("alice@example.org", ["demo@example.test"], f"Subject: {subj}\r\n\r\n{subj}\r\n")
    s.quit()
    wait_for(lambda: len(subjects_in(t, "demo@example.test")) == 3, timeout=60, what="deliveries")
    recs = index(t, "demo@example.test")
    run_flags(t, recs[1]["uid"], "+F")
    md = maildir_of(t, "demo@example.test")
    all_out = os.path.join(t.dir, "mutt-all.mbox")
    flagged_out = os.path.join(t.dir, "mutt-flagged.mbox")
    assert sorted(mutt_copy(md, "~A", all_out)) == ["alpha", "beta", "gamma"]
    flagged = mutt_copy(md, "~F", flagged_out)
    assert len(flagged) == 1
    flagged_subject = subjects_in(t, "demo@example.test")
    assert flagged_subject[flagged[0]] == recs[1]["base"]
