"""tern-mra over IMAP with Python's imaplib: every command and extension against the
real daemons (login process, post-login process, session worker) and the real
Maildir++ and index, with mail delivered by tern-mda over LMTP."""
import os
import re
import socket
import time

import pytest

from mra_helpers import (PW, USER, Raw, add_user, deliver, files_in, imap, maildir_of, make_mra, mra_pids, pop,
                         tls_context, wait_for)
from tern_harness import is_root, proc_status


def fetch_one(c, seq, items):
    typ, data = c.fetch(seq, items)
    assert typ == "OK", data
    return data


def test_login_select_fetch_everything(mra):
    deliver(mra, USER, "first", body="line one\r\nline two\r\n")
    deliver(mra, USER, "second")
    c = imap(mra)
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"2"]
    assert c.untagged_responses.get("RECENT") == [b"2"]
    # The session claimed them: new/ is empty, cur/ has both (mutt and Dovecot agree).
    root = maildir_of(mra, USER)
    assert files_in(root, "new") == [] and len(files_in(root, "cur")) == 2
    data = fetch_one(c, "1", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)")
    head = data[0] if isinstance(data[0], bytes) else data[0][0]
    assert b"UID 1" in head and b"\\Recent" in head and b'"first"' in head
    assert b'("text" "plain"' in head.lower() or b'("TEXT" "PLAIN"' in head
    size = int(re.search(rb"RFC822\.SIZE (\d+)", head).group(1))
    typ, data = c.fetch("1", "(BODY.PEEK[])")
    body = data[0][1]
    assert len(body) == size and body.endswith(b"line one\r\nline two\r\n")
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert data[0][1].strip() == b"Subject: first"
    typ, data = c.fetch("1", "(BODY.PEEK[TEXT]<5.3>)")
    assert data[0][1] == b"one"
    typ, data = c.fetch("1", "(BINARY.PEEK[1] RFC822.HEADER)")
    assert any(b"line two" in p[1] for p in data if isinstance(p, tuple))
    # PEEK left \Seen alone; BODY[] sets it.
    typ, data = c.fetch("1", "(FLAGS)")
    assert b"\\Seen" not in data[0]
    c.fetch("2", "(BODY[])")
    typ, data = c.fetch("2", "(FLAGS)")
    assert b"\\Seen" in data[0]
    typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
    assert len([d for d in data if d]) == 2
    c.logout()


def test_store_writes_flags_to_maildir_file_names(mra):
    deliver(mra, USER, "flag me")
    c = imap(mra)
    c.select("INBOX")
    typ, data = c.store("1", "+FLAGS", r"(\Seen \Flagged \Answered $Label1)")
    assert typ == "OK"
    root = maildir_of(mra, USER)
    names = files_in(root, "cur")
    assert len(names) == 1 and names[0].endswith(":2,FRSa"), names
    with open(os.path.join(root, "dovecot-keywords")) as f:
        assert "0 $Label1" in f.read()
    typ, data = c.store("1", "-FLAGS", r"(\Flagged $Label1)")
    assert files_in(root, "cur")[0].endswith(":2,RS")
    typ, data = c.store("1", "FLAGS.SILENT", r"(\Deleted)")
    assert typ == "OK" and data == [None]
    assert files_in(root, "cur")[0].endswith(":2,T")
    # A rename by another program (mutt marking it read) is seen as a flag change.
    name = files_in(root, "cur")[0]
    os.rename(os.path.join(root, "cur", name), os.path.join(root, "cur", name.split(":")[0] + ":2,S"))
    c.noop()
    assert any(b"\\Seen" in x and b"\\Deleted" not in x for x in c.untagged_responses.get("FETCH", [])), c.untagged_responses
    typ, data = c.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0] and b"\\Deleted" not in data[0], data
    c.logout()


def test_search_keys(mra):
    deliver(mra, USER, "apples", body="I like fruit\r\n", extra="Cc: carol@example.org\r\n")
    deliver(mra, USER, "bananas", body="yellow and long " * 200 + "\r\n")
    deliver(mra, USER, "cherries", body="red\r\n")
    c = imap(mra)
    c.select("INBOX")
    c.store("2", "+FLAGS", r"(\Flagged)")
    c.store("3", "+FLAGS", r"(\Seen $Important)")

    def search(*crit, uid=False):
        typ, data = c.uid("SEARCH", *crit) if uid else c.search(None, *crit)
        assert typ == "OK", data
        return data[0].split()

    assert search("ALL") == [b"1", b"2", b"3"]
    assert search("SUBJECT", "bananas") == [b"2"]
    assert search("BODY", "fruit") == [b"1"]
    assert search("TEXT", "carol") == [b"1"]
    assert search("CC", "carol@example.org") == [b"1"]
    assert search("FROM", "sender@example.org") == [b"1", b"2", b"3"]
    assert search("HEADER", "Message-ID", "cherries") == [b"3"]
    assert search("FLAGGED") == [b"2"]
    assert search("UNSEEN") == [b"1", b"2"]
    assert search("KEYWORD", "$Important") == [b"3"]
    assert search("UNKEYWORD", "$Important") == [b"1", b"2"]
    assert search("LARGER", "2000") == [b"2"]
    assert search("SMALLER", "2000") == [b"1", b"3"]
    assert search("OR", "SUBJECT", "apples", "SUBJECT", "cherries") == [b"1", b"3"]
    assert search("NOT", "SUBJECT", "apples") == [b"2", b"3"]
    assert search("2:3", "UNFLAGGED") == [b"3"]
    assert search("SINCE", "1-Jan-2000", "BEFORE", "1-Jan-2100") == [b"1", b"2", b"3"]
    assert search("SENTBEFORE", "1-Jan-2000") == []
    assert search("UID", "2:*", uid=True) == [b"2", b"3"]
    typ, data = c.search("UTF-8", "SUBJECT", "cherries")
    assert data[0] == b"3"
    with pytest.raises(imaplib_error()) as e:
        c.search(None, "BOGUS")
    assert "BAD" in str(e.value)
    c.logout()


def test_append_copy_move_expunge_uidplus(mra):
    c = imap(mra)
    msg = b"From: a@example.org\r\nSubject: appended\r\n\r\nbody\r\n"
    typ, data = c.append("Drafts", r"(\Draft $Work)", '"01-Feb-2024 10:00:00 +0000"', msg)
    assert typ == "OK" and b"APPENDUID" in data[0], data
    drafts = maildir_of(mra, USER, "Drafts")
    # In new/ with its flags: \Recent for the first session that selects Drafts.
    names = files_in(drafts, "new")
    assert len(names) == 1 and names[0].endswith(":2,Da")
    with open(os.path.join(drafts, "new", names[0]), "rb") as f:
        assert f.read() == msg.replace(b"\r\n", b"\n")  # stored with LF, served with CRLF
    typ, data = c.select("Drafts")
    typ, data = c.fetch("1", "(INTERNALDATE FLAGS BODY.PEEK[])")
    assert b'01-Feb-2024 10:00:00 +0000' in data[0][0] and b"$Work" in data[0][0]
    assert data[0][1] == msg
    typ, data = c.copy("1", "Sent")
    assert typ == "OK" and b"COPYUID" in data[0], data
    typ, data = c.uid("MOVE", "1", "Trash")
    assert typ == "OK", data
    assert c.untagged_responses.get("EXPUNGE") == [b"1"], c.untagged_responses
    typ, data = c.status("Drafts", "(MESSAGES)")
    assert b"MESSAGES 0" in data[0]
    typ, data = c.status("Trash", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE)")
    assert b"MESSAGES 1" in data[0] and b"SIZE %d" % len(msg) in data[0], data
    c.select("Trash")
    c.store("1", "+FLAGS", r"(\Deleted)")
    typ, data = c.expunge()
    assert typ == "OK" and data == [b"1"], data
    assert files_in(maildir_of(mra, USER, "Trash"), "cur") == []
    # UID EXPUNGE removes only the named ones.
    c.select("Sent")
    c.append("Sent", r"(\Seen)", None, msg)
    c.store("1:*", "+FLAGS", r"(\Deleted)")
    typ, data = c.uid("EXPUNGE", "1")
    assert typ == "OK"
    typ, data = c.search(None, "ALL")
    assert data[0] == b"1"
    # CLOSE expunges silently, UNSELECT does not.
    typ, _ = c.close()
    typ, data = c.status("Sent", "(MESSAGES)")
    assert b"MESSAGES 0" in data[0]
    c.logout()


def test_examine_check_uid_store_uid_copy_unsubscribe_getquota(mra):
    deliver(mra, USER, "alpha")
    deliver(mra, USER, "beta")
    c = imap(mra)
    # EXAMINE: read-only, flags cannot change, \Recent stays for the next SELECT.
    typ, data = c.select("INBOX", readonly=True)
    assert typ == "OK" and data == [b"2"]
    assert c.untagged_responses.get("READ-ONLY") is not None, c.untagged_responses
    typ, data = c._simple_command("STORE", "1", "+FLAGS", r"(\Flagged)")
    assert typ == "NO", data
    c.fetch("1", "(BODY[])")  # in a read-only mailbox BODY[] does not set \Seen
    typ, data = c.fetch("1", "(FLAGS)")
    assert b"\\Seen" not in data[0], data
    c.close()
    typ, data = c.select("INBOX")
    assert c.untagged_responses.get("RECENT") == [b"2"], c.untagged_responses
    assert c.check()[0] == "OK"
    # UID STORE and UID COPY address messages by UID, not by sequence number.
    typ, data = c.uid("STORE", "2", "+FLAGS", r"(\Answered)")
    assert typ == "OK" and b"UID 2" in data[0] and b"\\Answered" in data[0], data
    name = files_in(maildir_of(mra, USER), "cur")
    assert sum(1 for n in name if n.endswith(":2,R")) == 1, name
    # (imaplib's uid() returns untagged data; COPYUID is in the tagged OK.)
    typ, data = c._simple_command("UID", "COPY", "2", "Junk")
    assert typ == "OK" and re.search(rb"\[COPYUID \d+ 2 1\]", data[0]), data
    typ, data = c._simple_command("UID", "COPY", "99", "Junk")  # no such UID: nothing to copy, still OK
    assert typ == "OK", data
    typ, data = c.status("Junk", "(MESSAGES)")
    assert b"MESSAGES 1" in data[0], data
    typ, data = c._simple_command("UID", "COPY", "1", "Nowhere")
    assert typ == "NO" and b"TRYCREATE" in data[0], data
    # SUBSCRIBE, then UNSUBSCRIBE takes it out of LSUB again.
    assert c.subscribe("Junk")[0] == "OK"
    assert any(b"Junk" in d for d in c.lsub('""', "*")[1] if d)
    assert c.unsubscribe("Junk")[0] == "OK"
    assert not any(b"Junk" in d for d in c.lsub('""', "*")[1] if d)
    # No quota_rule: INBOX has no quota root (RFC 9208 4.3.2), and GETQUOTA of the
    # user's root says there are no resources to report.
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK" and data[0] == [b"INBOX"], data
    typ, data = c.getquota('""')
    assert typ == "NO" and b"NONEXISTENT" in data[0], data
    c.logout()


def test_mailboxes_list_subscribe_special_use_mutf7(mra):
    c = imap(mra)
    typ, data = c.list()
    listed = b"\n".join(data)
    for name, use in ((b"Drafts", b"\\Drafts"), (b"Junk", b"\\Junk"), (b"Sent", b"\\Sent"), (b"Trash", b"\\Trash")):
        assert re.search(rb"\(([^)]*" + re.escape(use) + rb"[^)]*)\) \"/\" \"?" + name, listed), listed
    assert c.create("Lists/tern")[0] == "OK"
    assert os.path.isdir(os.path.join(maildir_of(mra, USER), ".Lists.tern", "cur"))
    # Modified UTF-7 on the wire and, as Dovecot stores it, on disk.
    assert c.create('"Entw&APw-rfe"')[0] == "OK"
    assert os.path.isdir(os.path.join(maildir_of(mra, USER), ".Entw&APw-rfe"))
    typ, data = c.list('""', "*")
    listed = b"\n".join(data)
    assert b"Entw&APw-rfe" in listed and b"Lists/tern" in listed and b"\\HasChildren" in listed
    assert c.subscribe("Lists/tern")[0] == "OK"
    typ, data = c.lsub('""', "*")
    assert any(b"Lists/tern" in d for d in data)
    typ, data = c._simple_command("LIST", '(SUBSCRIBED)', '""', '"*"')
    typ, data = c._untagged_response(typ, data, "LIST")
    assert any(b"Lists/tern" in d and b"\\Subscribed" in d for d in data), data
    typ, data = c._simple_command("LIST", '""', '"%"', "RETURN", "(STATUS (MESSAGES UNSEEN SIZE))")
    assert typ == "OK"
    assert any(b"MESSAGES" in d for d in c.untagged_responses.get("STATUS", [])), c.untagged_responses
    assert c.rename("Lists", "Old")[0] == "OK"  # a \\Noselect parent: its children move
    assert os.path.isdir(os.path.join(maildir_of(mra, USER), ".Old.tern"))
    assert c.rename("Old/tern", "Projects/tern")[0] == "OK"
    assert os.path.isdir(os.path.join(maildir_of(mra, USER), ".Projects.tern"))
    assert c.delete("Projects/tern")[0] == "OK"
    assert not os.path.exists(os.path.join(maildir_of(mra, USER), ".Projects.tern"))
    assert c.select("Projects/tern")[0] == "NO"
    assert c.create("a.b")[0] == "NO"  # '.' is Maildir++'s separator
    c.logout()


def test_namespace_id_enable_quota_capability(tern_factory):
    from mda_helpers import prepare_mail_dir
    from mra_helpers import FAST
    s = dict(FAST)
    s["quota_rule"] = "*:storage=10M"
    t = tern_factory(settings=s, start=False)
    prepare_mail_dir(t)
    t.start()
    add_user(t, USER, password=PW)
    deliver(t, USER, "quota")
    c = imap(t)
    typ, data = c.capability()
    caps = data[0].split()
    for cap in (b"IMAP4rev1", b"IMAP4rev2", b"IDLE", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"NAMESPACE", b"ID",
                b"ENABLE", b"LITERAL+", b"UNSELECT", b"CHILDREN", b"LIST-STATUS", b"STATUS=SIZE", b"QUOTA",
                b"CONDSTORE"):
        assert cap in caps, cap
    assert any(cp.startswith(b"APPENDLIMIT=") for cp in caps)
    typ, data = c.namespace()
    assert typ == "OK" and b'(("" "/"))' in data[0]
    import imaplib
    imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))
    typ, data = c._simple_command("ID", '("name" "pytest")')
    assert typ == "OK"
    typ, data = c._simple_command("ENABLE", "CONDSTORE")
    assert typ == "OK"
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK"
    flat = b" ".join(x for part in data for x in (part if isinstance(part, list) else [part]) if isinstance(x, bytes))
    assert b"STORAGE" in flat and b"10240" in flat, data
    root = data[0][0].split(None, 1)[1] if b" " in data[0][0] else b'""'
    typ, data = c.getquota(root.decode())
    assert typ == "OK" and b"STORAGE" in data[0] and b"10240" in data[0], data
    c.select("INBOX")
    typ, data = c._simple_command("UNSELECT")
    assert typ == "OK"
    c.logout()
    t.stop()


def test_two_clients_see_each_others_changes(mra):
    deliver(mra, USER, "one")
    deliver(mra, USER, "two")
    a, b = imap(mra), imap(mra)
    a.select("INBOX")
    b.select("INBOX")
    a.store("1", "+FLAGS", r"(\Flagged)")
    typ, data = b.noop()
    assert any(b"FLAGS" in x and b"\\Flagged" in x for x in b.untagged_responses.get("FETCH", [])), b.untagged_responses
    deliver(mra, USER, "three")
    typ, data = b.noop()
    assert b"3" in b.untagged_responses.get("EXISTS", [])
    a.store("2", "+FLAGS", r"(\Deleted)")
    a.expunge()
    typ, data = b.noop()
    assert b.untagged_responses.get("EXPUNGE") == [b"2"], b.untagged_responses
    b.untagged_responses.clear()
    typ, data = b.fetch("1:*", "(UID)")
    assert [re.search(rb"UID (\d+)", d).group(1) for d in data] == [b"1", b"3"]
    a.logout()
    b.logout()


def test_idle_is_woken_by_an_lmtp_delivery(mra):
    c = imap(mra)
    c.select("INBOX")
    tag = c._new_tag()
    c.send(tag + b" IDLE\r\n")
    assert c.readline().startswith(b"+")
    start = time.monotonic()
    deliver(mra, USER, "wake up")
    c.sock.settimeout(10)
    line = c.readline()  # no sleep: the read blocks until the server pushes
    took = time.monotonic() - start
    assert line == b"* 1 EXISTS\r\n", line
    print(f"IDLE woke {took * 1000:.0f} ms after the LMTP delivery began")
    c.send(b"DONE\r\n")
    rest = c.readline()
    while not rest.startswith(tag):
        rest = c.readline()
    assert b"OK" in rest
    c.logout()


@pytest.mark.skipif(not is_root(), reason="using up the mail uid's inotify instances needs root (to become vmail)")
def test_idle_without_inotify_still_wakes(mra):
    # A busy Dovecot on the same uid can use up fs.inotify.max_user_instances (it
    # happened on the shared test machine). Here a child process becomes vmail and
    # takes every instance left, before the worker starts; IDLE must still wake
    # within a second, by checking the mailbox.
    import pwd
    import signal
    import subprocess
    vmail = pwd.getpwnam("vmail")
    hog = subprocess.Popen(
        ["/usr/bin/python3", "-c",
         "import ctypes, os, sys, time\n"
         f"os.setgid({vmail.pw_gid}); os.setuid({vmail.pw_uid})\n"
         "libc = ctypes.CDLL(None, use_errno=True)\n"
         "fds = []\n"
         "while len(fds) < 100000:\n"
         "    fd = libc.inotify_init1(0)\n"
         "    if fd < 0: break\n"
         "    fds.append(fd)\n"
         "print(len(fds), flush=True)\n"
         # Other tests' vmail processes (ctest -j2) end and free instances:
         # keep taking them, so the worker started below finds none.
         "end = time.monotonic() + 120\n"
         "while time.monotonic() < end:\n"
         "    fd = libc.inotify_init1(0)\n"
         "    if fd >= 0: fds.append(fd)\n"
         "    else: time.sleep(0.002)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert hog.stdout.readline().strip().isdigit()  # it holds all the rest now
        c = imap(mra)
        c.select("INBOX")
        assert "IDLE checks the mailboxes every" in mra.wait_log("IDLE checks the mailboxes every")
        tag = c._new_tag()
        c.send(tag + b" IDLE\r\n")
        assert c.readline().startswith(b"+")
        start = time.monotonic()
        deliver(mra, USER, "wake up without inotify")
        c.sock.settimeout(10)
        line = c.readline()
        took = time.monotonic() - start
        assert line == b"* 1 EXISTS\r\n", line
        print(f"IDLE without inotify woke {took * 1000:.0f} ms after the LMTP delivery began")
        c.send(b"DONE\r\n")
        while not c.readline().startswith(tag):
            pass
        c.logout()
    finally:
        hog.send_signal(signal.SIGKILL)
        hog.wait()


def test_idle_sees_flag_changes_from_another_program(mra):
    deliver(mra, USER, "watched")
    c = imap(mra)
    c.select("INBOX")
    tag = c._new_tag()
    c.send(tag + b" IDLE\r\n")
    assert c.readline().startswith(b"+")
    root = maildir_of(mra, USER)
    name = files_in(root, "cur")[0]
    os.rename(os.path.join(root, "cur", name), os.path.join(root, "cur", name.split(":")[0] + ":2,FS"))
    c.sock.settimeout(10)
    line = c.readline()
    assert b"FETCH" in line and b"\\Flagged" in line and b"\\Seen" in line, line
    c.send(b"DONE\r\n")
    c.readline()
    c.logout()


def test_starttls_logindisabled_and_imaps(tern_factory):
    from mda_helpers import prepare_mail_dir
    from mra_helpers import FAST
    s = dict(FAST)
    s["disable_plaintext_auth"] = "yes"
    t = tern_factory(settings=s, start=False)
    prepare_mail_dir(t)
    t.start()
    add_user(t, USER, password=PW)
    c = imap(t, login=False)
    assert "LOGINDISABLED" in c.capabilities and "STARTTLS" in c.capabilities
    typ, data = c._simple_command("LOGIN", USER, PW)
    assert typ == "NO", data
    c.starttls(ssl_context=tls_context())
    assert "LOGINDISABLED" not in c.capabilities
    assert c.login(USER, PW)[0] == "OK"
    c.select("INBOX")
    deliver(t, USER, "over tls")
    c.noop()
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"over tls" in data[0][1]
    c.logout()
    s = imap(t, tls=True)
    s.select("INBOX")
    assert s.fetch("1", "(UID)")[0] == "OK"
    s.logout()
    log = t.wait_log("method=PLAIN")
    assert re.search(r"imap-login\[\d+\]: Login: user=<demo@example.test>, method=PLAIN, rip=127\.0\.0\.1, "
                     r"lip=127\.0\.0\.1, mpid=\d+, TLS, session=<", log), log
    t.stop()


def test_authenticate_plain_sasl_ir_and_failures_logged_for_fail2ban(mra):
    import base64
    import shutil
    import subprocess
    c = imap(mra, login=False)
    ir = base64.b64encode(b"\0" + USER.encode() + b"\0" + PW.encode()).decode()
    typ, data = c._simple_command("AUTHENTICATE", "PLAIN", ir)
    assert typ == "OK", data
    c.logout()
    bad = imap(mra, login=False)
    with pytest.raises(imaplib_error()):
        bad.login(USER, "wrong")
    bad.logout()
    log = mra.wait_log("Disconnected (auth failed")
    assert re.search(r"imap-login\[\d+\]: Disconnected \(auth failed, 1 attempts in \d+ secs\): "
                     r"user=<demo@example.test>, method=PLAIN, rip=127\.0\.0\.1, lip=127\.0\.0\.1, session=<", log), log
    assert "wrong" not in log
    if shutil.which("fail2ban-regex"):
        r = subprocess.run(["fail2ban-regex", mra.log_path, 'dovecot[_daemon="tern/imap-login"]'], capture_output=True,
                           text=True, timeout=120)
        assert "Failregex: 1 total" in r.stdout, r.stdout


def imaplib_error():
    import imaplib
    return imaplib.IMAP4.error


@pytest.mark.skipif(not is_root(), reason="the processes run as other users only when started as root")
def test_processes_run_as_the_configured_users(mra):
    deliver(mra, USER, "who")
    c = imap(mra)
    c.select("INBOX")
    pids = mra_pids(mra)
    assert len(pids["workers"]) == 1
    import pwd
    login, vmail = pwd.getpwnam("tern-login"), pwd.getpwnam("vmail")
    assert proc_status(pids["login"])["Uid"].split()[0] == str(login.pw_uid)
    assert proc_status(pids["postlogin"])["Uid"].split() == ["0"] * 4
    st = proc_status(pids["workers"][0])
    assert st["Uid"].split() == [str(vmail.pw_uid)] * 4 and st["Gid"].split()[0] == str(vmail.pw_gid)
    assert st["Groups"].split() == [str(vmail.pw_gid)]
    # The login process cannot read the mail.
    root = maildir_of(mra, USER)
    assert os.stat(root).st_uid == vmail.pw_uid and (os.stat(root).st_mode & 0o077) == 0
    # The worker's session is the user's: its mail files belong to vmail.
    assert all(os.stat(os.path.join(root, "cur", n)).st_uid == vmail.pw_uid for n in files_in(root, "cur"))
    c.logout()


def test_a_crashed_worker_takes_only_its_sessions(crashing_mra):
    import signal
    mra = crashing_mra
    deliver(mra, USER, "survive")
    c = imap(mra)
    c.select("INBOX")
    worker = mra_pids(mra)["workers"][0]
    os.kill(worker, signal.SIGSEGV)
    with pytest.raises((OSError, EOFError, imaplib_error().__bases__[0], Exception)):
        c.sock.settimeout(10)
        c.noop()
        c.noop()
    # The daemon is still there; the next login gets a new worker.
    d = imap(mra)
    assert d.select("INBOX")[0] == "OK"
    assert mra_pids(mra)["workers"] != [worker]
    assert mra.status()["mra"]["restarts"] == 0 and mra.status()["mra-postlogin"]["restarts"] == 0
    d.logout()
    assert "was killed by signal 11" in mra.wait_log("was killed by signal")


def test_sigterm_ends_sessions_cleanly(mra):
    deliver(mra, USER, "still here")
    plain = imap(mra)
    plain.select("INBOX")
    idle = imap(mra, tls=True)  # relayed by the login process
    idle.select("INBOX")
    tag = idle._new_tag()
    idle.send(tag + b" IDLE\r\n")
    assert idle.readline().startswith(b"+")
    p = pop(mra)
    assert p.stat()[0] == 1
    pre = imap(mra, login=False)  # still talking to the login process
    pids = mra_pids(mra)
    # The three sessions are spread over up to one worker per CPU (mra_workers_per_uid).
    assert 1 <= len(pids["workers"]) <= max(1, min(3, os.cpu_count() or 1))
    import signal
    mra.proc.send_signal(signal.SIGTERM)
    # Each client is told, in its protocol, before the connection ends.
    for name, c in (("plain", plain), ("tls", idle), ("not logged in", pre)):
        c.sock.settimeout(15)
        assert c.readline() == b"* BYE Server shutting down.\r\n", name
    p.sock.settimeout(15)
    assert p.file.readline() == b"-ERR Server shutting down.\r\n"
    mra.proc.wait(timeout=20)
    assert mra.proc.returncode == 0
    log = mra.log()
    assert f"tern-mra pid {pids['login']} stopped: exit status 0" in log
    assert f"tern-mra-postlogin pid {pids['postlogin']} stopped: exit status 0" in log
    assert log.count("Disconnected: Server shutting down. in=") == 3, log
    # The workers ended on their own (no "exited with status", no signal), and the
    # POP3 maildrop was not changed (no QUIT).
    for w in pids["workers"]:
        assert f"session worker pid={w} was killed" not in log, log
        assert f"session worker pid={w} exited" not in log, log
    assert len(files_in(maildir_of(mra, USER), "cur")) + len(files_in(maildir_of(mra, USER), "new")) == 1
    # tern-mra-postlogin reaped its workers before it exited itself.
    for w in pids["workers"]:
        assert not os.path.exists(f"/proc/{w}")


@pytest.mark.parametrize("spread", [1, 2, 3])
def test_sessions_of_one_uid_are_spread_over_workers(tern_factory, spread):
    # Virtual users share one uid; one worker runs on one core, so their sessions go
    # to mra_workers_per_uid workers, least busy first, each serving them correctly.
    from mda_helpers import prepare_mail_dir
    from mra_helpers import FAST
    s = dict(FAST)
    s["mra_workers_per_uid"] = str(spread)
    t = tern_factory(settings=s, start=False)
    prepare_mail_dir(t)
    t.start()
    add_user(t, USER, password=PW)
    deliver(t, USER, "spread")
    clients = [imap(t) for _ in range(2 * spread)]
    for c in clients:
        assert c.select("INBOX")[0] == "OK"
        typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: spread" in data[0][1], data
    workers = mra_pids(t)["workers"]
    assert len(workers) == spread, workers
    # Least busy first: every worker has two of the sessions.
    per_worker = [len([fd for fd in os.listdir(f"/proc/{w}/fd")
                       if os.readlink(f"/proc/{w}/fd/{fd}").startswith("socket:")]) for w in workers]
    assert len(set(per_worker)) == 1, per_worker
    # A change made in one worker's session reaches a session in another.
    clients[0].store("1", "+FLAGS", "(\\Flagged)")
    typ, data = clients[-1].fetch("1", "(FLAGS)")
    assert typ == "OK" and b"\\Flagged" in data[0], data
    for c in clients:
        c.logout()
    t.stop()


def test_mail_max_userip_connections(tern_factory):
    from mda_helpers import prepare_mail_dir
    from mra_helpers import FAST
    s = dict(FAST)
    s["mail_max_userip_connections"] = "2"
    t = tern_factory(settings=s, start=False)
    prepare_mail_dir(t)
    t.start()
    add_user(t, USER, password=PW)
    a, b = imap(t), imap(t)
    c = imap(t, login=False)
    with pytest.raises(Exception) as e:
        c.login(USER, PW)
    assert "Maximum number of connections from user+IP exceeded" in str(e.value)
    a.logout()
    # The slot is free again once a session has ended.
    wait_for(lambda: try_login(t), 10, what="a login after a logout")
    b.logout()
    t.stop()


def test_mail_max_user_connections_counts_every_ip(tern_factory):
    # Two client addresses on loopback (127.0.0.1 and 127.0.0.2) for one user: the
    # per-user limit counts them together, the per-user+IP limit apart.
    from mda_helpers import prepare_mail_dir
    from mra_helpers import FAST
    s = dict(FAST)
    s.update({"mail_max_user_connections": "3", "mail_max_userip_connections": "2"})
    t = tern_factory(settings=s, start=False)
    prepare_mail_dir(t)
    t.start()
    add_user(t, USER, password=PW)

    def from_ip(src):
        import imaplib

        class Imap(imaplib.IMAP4):
            def _create_socket(self, timeout):
                return socket.create_connection((self.host, self.port), timeout, source_address=(src, 0))

        c = Imap("127.0.0.1", t.port("imap"), timeout=30)
        return c

    a1, a2 = from_ip("127.0.0.1"), from_ip("127.0.0.1")
    for c in (a1, a2):
        assert c.login(USER, PW)[0] == "OK"
    b1, b2 = from_ip("127.0.0.2"), from_ip("127.0.0.2")
    assert b1.login(USER, PW)[0] == "OK"
    with pytest.raises(Exception) as e:
        b2.login(USER, PW)
    assert "Maximum number of connections for user exceeded (mail_max_user_connections=3)" in str(e.value)
    a1.logout()
    wait_for(lambda: try_login_from(from_ip, "127.0.0.2"), 10, what="a login once a session has ended")
    for c in (a2, b1):
        c.logout()
    t.stop()


def try_login_from(make, ip):
    try:
        c = make(ip)
        c.login(USER, PW)
        c.logout()
        return True
    except Exception:
        return False


def try_login(t):
    try:
        c = imap(t)
        c.logout()
        return True
    except Exception:
        return False


def test_a_store_that_cannot_open_is_an_internal_error_for_that_session_only(mra):
    # A home below a regular file can never be created: the worker says so in the log
    # under the session's protocol, the client gets Dovecot's UNAVAILABLE, and the
    # other users' sessions on the same worker go on.
    add_user(mra, "broken@example.test", "--home", "/dev/null/broken", "--mail", "maildir:/dev/null/broken/Maildir",
             password=PW)
    ok = imap(mra)
    with pytest.raises(imaplib_error()) as e:
        imap(mra, user="broken@example.test")
    assert "UNAVAILABLE" in str(e.value)
    log = mra.wait_log("imap(broken@example.test): Disconnected: Internal error")
    assert re.search(r"imap\[\d+\]: error: broken@example\.test: cannot open the mail store: .*/dev/null", log), log
    assert "pop3(broken@example.test)" not in log
    assert ok.noop()[0] == "OK"
    ok.logout()
