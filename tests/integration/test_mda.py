"""tern-mda over its real LMTP socket, with the real tern-master, tern-authd (userdb)
and ternctl, driven by Python's smtplib.LMTP: mixed recipients, pipelining, BDAT,
a 50 MB message, a client that vanishes mid-DATA, a full disk, kill -9 during a
stream of deliveries, SMTP smuggling, mbox, quota, and tern-deliver."""
import hashlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from mda_helpers import (Lmtp, add_user, files, home_of, index, maildir_of, make_tern, message, raw_lmtp,
                         read_message, reply_codes)
from tern_harness import BIN, children_of, is_root, proc_status, wait_for


@pytest.fixture
def mda():
    t = make_tern()
    add_user(t, "demo@example.test")
    add_user(t, "full@example.test", "--quota", "*:bytes=2800")
    yield t
    t.cleanup()


def lmtp(t):
    return Lmtp(t.socket_path("lmtp"))


def test_mixed_recipients_one_reply_each(mda):
    c = lmtp(mda)
    _, data = c.transaction("x@example.org", ["full@example.test"], message("fill", body="x" * 2300 + "\r\n"))
    assert data[0][0] == 250
    rcpt, data = c.transaction(
        "sender@example.org",
        ["demo@example.test", "nobody@example.test", "demo+Sent@example.test", "full@example.test",
         "Demo@Example.TEST"],
        message("mixed"))
    assert rcpt["nobody@example.test"][0] == 550
    assert b"5.1.1" in rcpt["nobody@example.test"][1]
    assert [r[0] for r in rcpt.values()] == [250, 550, 250, 250, 250]
    # One reply per accepted recipient, in order: INBOX, Sent, over quota, INBOX again.
    assert data[0][0] == 250 and data[1][0] == 250 and data[3][0] == 250
    assert data[2][0] == 552 and data[2][1].startswith(b"5.2.2")
    c.quit()

    inbox, tmp = files(maildir_of(mda, "demo@example.test"))
    sent, _ = files(maildir_of(mda, "demo@example.test", "Sent"))
    assert not tmp
    assert len(inbox) == 2 and len(sent) == 1
    full_inbox, full_tmp = files(maildir_of(mda, "full@example.test"))
    assert len(full_inbox) == 1 and not full_tmp
    msg = read_message(maildir_of(mda, "demo@example.test", "Sent"), *next(iter(sent.values())))
    assert msg.startswith(b"Return-Path: <sender@example.org>\nDelivered-To: demo+Sent@example.test\nReceived: from mx.example.test")
    assert b"\r\n" not in msg  # stored with LF line ends
    assert b"Subject: mixed\n" in msg
    # The UIDs were assigned at delivery: the index lists every file, in order.
    idx = index(mda, "demo@example.test")
    assert [m["uid"] for m in idx] == [1, 2]
    assert {m["base"] for m in idx} == set(inbox)
    log = mda.wait_log("saved mail to Sent")
    assert "lmtp(demo@example.test)" in log and "msgid=<mixed@test.example>" in log


def test_pipelining_all_commands_in_one_write(mda):
    body = b"Subject: piped\r\n\r\n.leading dot\r\n..two\r\nend\r\n"
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    script = (b"LHLO mx.example.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<demo@example.test>\r\n"
              b"RCPT TO:<ghost@example.test>\r\nRCPT TO:<demo+Trash@example.test>\r\nDATA\r\n" + stuffed + b".\r\n"
              b"MAIL FROM:<>\r\nRCPT TO:<demo@example.test>\r\nDATA\r\nSubject: second\r\n\r\nx\r\n.\r\nQUIT\r\n")
    raw = raw_lmtp(mda.socket_path("lmtp"), script)
    assert reply_codes(raw) == [250, 250, 250, 550, 250, 354, 250, 250, 250, 250, 354, 250, 221]
    inbox, _ = files(maildir_of(mda, "demo@example.test"))
    trash, _ = files(maildir_of(mda, "demo@example.test", "Trash"))
    assert len(inbox) == 2 and len(trash) == 1
    got = read_message(maildir_of(mda, "demo@example.test", "Trash"), *next(iter(trash.values())))
    assert got.endswith(b"Subject: piped\n\n.leading dot\n..two\nend\n")


def test_bdat_chunks_and_binarymime(mda):
    c = lmtp(mda)
    msg = message("chunked", body="line\r\n" * 1000)
    _, data = c.transaction("a@example.org", ["demo@example.test"], msg, use_bdat=True, chunk=997)
    assert data[0][0] == 250
    c.mail("a@example.org", ["BODY=BINARYMIME"])
    c.rcpt("demo@example.test")
    c.send(b"BDAT 20 LAST\r\nSubject: bin\r\n\r\n\x00\x01\n\r")
    assert c.getreply()[0] == 250
    c.quit()
    inbox, _ = files(maildir_of(mda, "demo@example.test"))
    bodies = [read_message(maildir_of(mda, "demo@example.test"), *v) for v in inbox.values()]
    assert any(b.endswith(b"line\n" * 1000) for b in bodies)
    assert any(b.endswith(b"Subject: bin\n\n\x00\x01\n\r") for b in bodies)


def test_50_megabyte_message(mda):
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
    body = line * (50 * 1024 * 1024 // len(line) + 1)
    msg = b"Subject: big\r\n\r\n" + body
    assert len(msg) > 50 * 1024 * 1024
    c = lmtp(mda)
    _, data = c.transaction("a@example.org", ["demo@example.test"], msg)
    assert data[0][0] == 250
    c.quit()
    inbox, tmp = files(maildir_of(mda, "demo@example.test"))
    assert not tmp and len(inbox) == 1
    stored = read_message(maildir_of(mda, "demo@example.test"), *next(iter(inbox.values())))
    assert hashlib.sha256(stored.split(b"Subject: big\n\n", 1)[1]).digest() == \
        hashlib.sha256(body.replace(b"\r\n", b"\n")).digest()
    assert index(mda, "demo@example.test")[0]["size"] == len(stored)


def test_size_limit(tern_factory):
    from mda_helpers import prepare_mail_dir
    t = tern_factory(settings={"lmtp_message_size_limit": "10k"}, start=False)
    prepare_mail_dir(t)
    t.start()
    add_user(t, "demo@example.test")
    c = lmtp(t)
    assert c.mail("a@example.org", ["SIZE=20000"])[0] == 552
    _, data = c.transaction("a@example.org", ["demo@example.test"], message("big", body="x" * 20000 + "\r\n"))
    assert data[0][0] == 552 and data[0][1].startswith(b"5.3.4")
    _, data = c.transaction("a@example.org", ["demo@example.test"], message("small"))
    assert data[0][0] == 250
    c.quit()
    inbox, tmp = files(maildir_of(t, "demo@example.test"))
    assert len(inbox) == 1 and not tmp


def test_client_disconnects_in_the_middle_of_data(mda):
    c = lmtp(mda)
    c.mail("a@example.org")
    c.rcpt("demo@example.test")
    assert c.docmd("DATA")[0] == 354
    c.send(b"Subject: cut\r\n\r\n" + b"partial line\r\n" * 100000)
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    # The server notices, drops the spool, and serves the next client.
    c2 = lmtp(mda)
    _, data = c2.transaction("a@example.org", ["demo@example.test"], message("after"))
    assert data[0][0] == 250
    c2.quit()
    inbox, tmp = files(maildir_of(mda, "demo@example.test"))
    assert len(inbox) == 1 and not tmp
    assert b"Subject: after" in read_message(maildir_of(mda, "demo@example.test"), *next(iter(inbox.values())))
    # The 1.4 MB spool went to an unnamed file in mail_temp_dir; it is closed again.
    pid = mda.pid_of("mda")

    def spool_files():
        out = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:
                continue
            if target.startswith("/tmp/#"):
                out.append(target)
        return out
    wait_for(lambda: not spool_files(), timeout=10, what="the spool file closed")


@pytest.mark.skipif(not is_root(), reason="mounting a small tmpfs needs root")
def test_full_disk_is_a_temporary_failure_and_nothing_is_half_written(mda):
    home = home_of(mda, "small@example.test")
    pw = pwd.getpwnam(mda.settings["mail_uid"])
    for d in (os.path.dirname(home), home):
        os.makedirs(d, exist_ok=True)
        os.chown(d, pw.pw_uid, pw.pw_gid)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", home], check=True)
    try:
        os.chown(home, pw.pw_uid, pw.pw_gid)
        add_user(mda, "small@example.test")
        c = lmtp(mda)
        _, data = c.transaction("a@example.org", ["small@example.test"], message("fits"))
        assert data[0][0] == 250
        _, data = c.transaction("a@example.org", ["small@example.test", "demo@example.test"],
                                message("too big", body="y" * 1024 * 1024 + "\r\n"))
        assert data[0][0] == 452 and data[0][1].startswith(b"4.3.1"), data
        assert data[1][0] == 250  # the other recipient is not affected
        _, data = c.transaction("a@example.org", ["small@example.test"], message("fits again"))
        assert data[0][0] == 250
        c.quit()
        inbox, tmp = files(maildir_of(mda, "small@example.test"))
        assert not tmp, tmp
        subjects = sorted(read_message(maildir_of(mda, "small@example.test"), *v).split(b"Subject: ")[1].split(b"\n")[0]
                          for v in inbox.values())
        assert subjects == [b"fits", b"fits again"]
        assert {m["base"] for m in index(mda, "small@example.test")} == set(inbox)
        assert "No space left on device" in mda.log()
    finally:
        subprocess.run(["umount", "-l", home])


def test_kill_9_during_a_stream_of_deliveries(mda):
    """Every message that got 250 is in the Maildir exactly once, and the index agrees."""
    acked, stop = [], threading.Event()
    errors = []

    def sender(worker):
        n = 0
        while not stop.is_set():
            n += 1
            subject = f"w{worker}-{n}"
            try:
                c = lmtp(mda)
                _, data = c.transaction("a@example.org", ["demo@example.test"], message(subject, body="z" * 2000 + "\r\n"))
                if data and data[0][0] == 250:
                    acked.append(subject)
                c.close()
            except (OSError, smtplib_errors()) as e:
                errors.append(e)
                time.sleep(0.05)

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(3)]
    for th in threads:
        th.start()
    wait_for(lambda: len(acked) >= 30, timeout=60, what="30 deliveries")
    old = mda.pid_of("mda")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: mda.status()["mda"]["pid"] not in (0, old) and mda.status()["mda"]["state"] == "running",
             timeout=30, what="tern-mda restarted")
    n0 = len(acked)
    wait_for(lambda: len(acked) >= n0 + 20, timeout=60, what="deliveries after the restart")
    stop.set()
    for th in threads:
        th.join()

    md = maildir_of(mda, "demo@example.test")
    inbox, tmp = files(md)
    subjects = {}
    for base, v in inbox.items():
        s = read_message(md, *v).split(b"Subject: ")[1].split(b"\n")[0].decode()
        subjects.setdefault(s, []).append(base)
    for s in acked:
        assert len(subjects.get(s, [])) == 1, f"{s} acknowledged but found {len(subjects.get(s, []))} times"
    # The index: every record points at a file, UIDs are unique, and every
    # acknowledged message has a UID (its 250 came after the index update).
    recs = index(mda, "demo@example.test")
    by_base = {r["base"]: r for r in recs}
    assert len(by_base) == len(recs) and len({r["uid"] for r in recs}) == len(recs)
    assert set(by_base) <= set(inbox)
    for s in acked:
        assert subjects[s][0] in by_base
    # Files the index does not know can only be ones that never got a 250 (killed
    # between rename and index); a sync adopts them, and then the two agree exactly.
    for base in set(inbox) - set(by_base):
        s = [k for k, v in subjects.items() if base in v][0]
        assert s not in acked
    index(mda, "demo@example.test", "sync")
    recs = index(mda, "demo@example.test")
    assert {r["base"] for r in recs} == set(inbox)
    assert len({r["uid"] for r in recs}) == len(recs)
    # tmp/ may hold the file of the delivery that was killed mid-write; nothing else.
    assert len(tmp) <= 3


def smtplib_errors():
    import smtplib
    return smtplib.SMTPException


def test_smuggling_bare_lf_end_marker_is_refused(mda):
    script = (b"LHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<demo@example.test>\r\nDATA\r\n"
              b"Subject: real\r\n\r\nbody\n.\n"
              b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<demo@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n"
              b"QUIT\r\n")
    raw = raw_lmtp(mda.socket_path("lmtp"), script)
    assert reply_codes(raw) == [250, 250, 250, 354, 550]
    assert b"550 5.5.2 Error: bare <LF> received" in raw
    inbox, tmp = files(maildir_of(mda, "demo@example.test"))
    assert not inbox and not tmp


def test_mbox_user(mda):
    add_user(mda, "old@example.test", "--mail", "mbox:~/mail:INBOX=~/inbox")
    c = lmtp(mda)
    _, data = c.transaction("a@example.org", ["old@example.test"], message("to mbox", body="From me\r\n>From you\r\n"))
    assert data[0][0] == 250
    _, data = c.transaction("", ["old@example.test"], message("second"))
    assert data[0][0] == 250
    c.quit()
    with open(os.path.join(home_of(mda, "old@example.test"), "inbox"), "rb") as f:
        mbox = f.read()
    assert mbox.startswith(b"From a@example.org ")
    assert b"\n>From me\n>>From you\n\nFrom MAILER-DAEMON " in mbox
    assert mbox.endswith(b"\n\n")


def test_tern_deliver(mda):
    deliver = os.path.join(BIN, "tern-deliver")

    def run(*args, data=b"Subject: lda\n\nbody\n"):
        return subprocess.run([deliver, "-c", mda.conf_path, *args], input=data, capture_output=True, env=mda.env(),
                              timeout=60)

    r = run("-d", "demo@example.test", "-f", "s@example.org", "-a", "demo@example.test")
    assert r.returncode == 0, r.stderr
    r = run("-d", "demo@example.test", "-m", "Junk", data=b"From x@example.org Thu Jan  1 00:00:00 2026\nSubject: junk\n\nj\n")
    assert r.returncode == 0, r.stderr
    assert run("-d", "nobody@example.test").returncode == 67     # EX_NOUSER
    assert run("-d", "full@example.test", data=b"Subject: q\n\n" + b"q" * 5000 + b"\n").returncode == 77  # EX_NOPERM
    assert run("-x").returncode == 64                            # EX_USAGE
    inbox, _ = files(maildir_of(mda, "demo@example.test"))
    junk, _ = files(maildir_of(mda, "demo@example.test", "Junk"))
    assert len(inbox) == 1 and len(junk) == 1
    m = read_message(maildir_of(mda, "demo@example.test"), *next(iter(inbox.values())))
    assert m == b"Return-Path: <s@example.org>\nDelivered-To: demo@example.test\nSubject: lda\n\nbody\n"
    j = read_message(maildir_of(mda, "demo@example.test", "Junk"), *next(iter(junk.values())))
    assert j.startswith(b"Return-Path: <x@example.org>\nSubject: junk\n")
    assert index(mda, "demo@example.test", "status", "Junk").startswith("uidvalidity=")


@pytest.mark.skipif(not is_root(), reason="system users' mail is written by a root helper's child; needs root")
def test_system_user_mail_is_written_as_that_user(mda):
    """A userdb entry with another uid: tern-mda (as vmail) hands the message to its
    privileged helper, whose child writes it as the user. uid 0 and uids below
    first_valid_uid are refused."""
    name = "ternmdatest"
    home = os.path.join(mda.dir, "syshome")
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["useradd", "--system", "--user-group", "--home-dir", home, "--create-home", "--shell",
                    "/usr/sbin/nologin", name], check=True)
    try:
        pw = pwd.getpwnam(name)
        add_user(mda, "sys@example.test", "--uid", str(pw.pw_uid), "--gid", str(pw.pw_gid), "--home", home)
        add_user(mda, "root@example.test", "--uid", "0", "--gid", "0", "--home", os.path.join(mda.dir, "roothome"))
        add_user(mda, "low@example.test", "--uid", "1", "--gid", "1", "--home", os.path.join(mda.dir, "lowhome"))
        c = lmtp(mda)
        _, data = c.transaction("a@example.org", ["sys@example.test", "root@example.test", "low@example.test",
                                                  "demo@example.test"], message("system"))
        c.quit()
        assert [d[0] for d in data] == [250, 451, 451, 250], data
        md = os.path.join(home, "Maildir")
        inbox, tmp = files(md)
        assert len(inbox) == 1 and not tmp
        for p in [md, os.path.join(md, "new"), os.path.join(md, "new", next(iter(inbox.values()))[1]),
                  os.path.join(md, "tern-index")]:
            st = os.stat(p)
            assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid), p
        demo = os.path.join(maildir_of(mda, "demo@example.test"), "new")
        vmail = pwd.getpwnam(mda.settings["mail_uid"])
        assert all(os.stat(os.path.join(demo, f)).st_uid == vmail.pw_uid for f in os.listdir(demo))
        assert not os.path.exists(os.path.join(mda.dir, "roothome"))
        assert not os.path.exists(os.path.join(mda.dir, "lowhome"))
        log = mda.log()
        assert "user root@example.test: uid 0 is root; not delivering" in log
        # The helper runs as root but holds no listening socket.
        helper = [p for p in children_of(mda.pid_of("mda"))]
        assert len(helper) == 1
        assert proc_status(helper[0])["Uid"].split()[0] == "0"
        fds = os.listdir(f"/proc/{helper[0]}/fd")
        socks = [os.readlink(f"/proc/{helper[0]}/fd/{f}") for f in fds]
        listener_inode = os.readlink(f"/proc/{mda.pid_of('mda')}/fd/3")
        assert listener_inode not in socks
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)


def test_symlinked_maildir_leaving_the_home_is_refused(mda):
    add_user(mda, "sly@example.test")
    home = home_of(mda, "sly@example.test")
    outside = os.path.join(mda.dir, "outside")
    vmail = pwd.getpwnam(mda.settings["mail_uid"])
    for d in (os.path.dirname(home), home, outside):
        os.makedirs(d, exist_ok=True)
        os.chown(d, vmail.pw_uid, vmail.pw_gid)
    os.symlink(outside, os.path.join(home, "Maildir"))
    c = lmtp(mda)
    _, data = c.transaction("a@example.org", ["sly@example.test", "demo@example.test"], message("sly"))
    c.quit()
    assert data[0][0] == 451 and data[1][0] == 250
    assert os.listdir(outside) == []
    assert "outside the home directory" in mda.log()


@pytest.mark.skipif(not is_root(), reason="connecting as another local user needs root to switch to it")
def test_delivery_ids_only_for_tern_mta_and_root():
    # XTERN-DELIVERY-ID lets tern-mta's retries skip recipients already served. A
    # local user that lmtp_allow_users lets speak LMTP still may not use the
    # extension, only root and the MTA's user: otherwise a user could pre-record ids
    # and make tern-mda drop someone else's mail.
    mda = make_tern({"lmtp_allow_users": "nobody"})
    try:
        delivery_ids_only_for_tern_mta_and_root(mda)
    finally:
        mda.cleanup()


def delivery_ids_only_for_tern_mta_and_root(mda):
    c = lmtp(mda)
    assert c.has_extn("xtern-delivery-id")
    c.quit()
    path = mda.socket_path("lmtp")
    probe = ("import smtplib,sys; c=smtplib.LMTP(sys.argv[1]); c.ehlo('x'); "
             "print(sorted(c.esmtp_features)); print(c.mail('<a@example.test>', ['XTERN-DELIVERY-ID=Q1'])[0]); "
             "c.quit()")
    # The socket's directory must be reachable for the probe user.
    r = subprocess.run(["/usr/bin/python3", "-c", probe, path], user="nobody", capture_output=True, text=True,
                       timeout=30)
    if "Permission denied" in r.stderr:
        pytest.skip(f"the test's runtime directory is not reachable for nobody: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    features, mail_code = r.stdout.splitlines()
    assert "pipelining" in features  # the probe really got an LHLO answer
    assert "xtern-delivery-id" not in features
    # The parameter itself is refused when the extension was not offered.
    assert mail_code.startswith("5"), r.stdout


@pytest.mark.skipif(not is_root(), reason="XTERN-DELIVERY-ID is offered only to root and tern-mta's user")
def test_delivery_id_repeated_after_a_restart_is_not_delivered_twice(mda):
    """tern-mta resends a message under the same XTERN-DELIVERY-ID when it crashed
    after our 250: a resend, even to a tern-mda killed and restarted meanwhile,
    gets 250 and no second copy. For a Maildir user the pair is recorded in the
    user's mailbox index in the UID's transaction (no commit of its own), for an
    mbox user in tern-mda's own store."""
    add_user(mda, "old@example.test", "--mail", "mbox:~/mail:INBOX=~/inbox")

    def send(delivery_id):
        c = lmtp(mda)
        assert c.has_extn("xtern-delivery-id")
        code, text = c.mail("<a@example.org>", [f"XTERN-DELIVERY-ID={delivery_id}"])
        assert code == 250, text
        for r in ("demo@example.test", "old@example.test"):
            assert c.rcpt(r)[0] == 250
        code, text = c.docmd("DATA")
        assert code == 354
        c.send(message("once").replace(b"\r\n.", b"\r\n..") + b".\r\n")
        replies = [c.getreply(), c.getreply()]
        c.quit()
        return replies

    first = send("Q1TEST")
    assert [r[0] for r in first] == [250, 250] and all(b"Saved" in r[1] for r in first), first
    old_pid = mda.pid_of("mda")
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: mda.pid_of("mda") not in (None, old_pid) and _lmtp_answers(mda), timeout=30,
             what="tern-mda restarted and answering")
    again = send("Q1TEST")
    assert [r[0] for r in again] == [250, 250] and all(b"already delivered" in r[1] for r in again), again
    # Where each pair lives: without tern-mda's own store, the Maildir user's pair
    # is still known (it is in the mailbox index), the mbox user's is not.
    mda.stop()
    store = os.path.join(mda.settings["data_directory"], "mda", "delivery-ids.lmdb")
    assert os.path.exists(store)
    for p in (store, store + "-lock"):
        if os.path.exists(p):
            os.unlink(p)
    mda.start()
    third = send("Q1TEST")
    assert b"already delivered" in third[0][1] and b"Saved" in third[1][1], third
    inbox, _ = files(maildir_of(mda, "demo@example.test"))
    assert len(inbox) == 1
    with open(os.path.join(home_of(mda, "old@example.test"), "inbox"), "rb") as f:
        assert f.read().count(b"\nSubject: once") == 2
    assert [m["uid"] for m in index(mda, "demo@example.test")] == [1]


def _lmtp_answers(t):
    try:
        lmtp(t).quit()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not is_root(), reason="the other local user (nobody) needs root to become")
def test_lmtp_socket_refuses_local_users_it_does_not_know(mda):
    """The lmtp socket is 0666, but only root, mail_owner, mail_uid and
    lmtp_allow_users may deliver through it (SO_PEERCRED): another local user would
    otherwise write mail with forged trace into any mailbox, past tern-mta's checks
    (Postfix keeps its LMTP socket in private/; independent review, finding 4)."""
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(sys.argv[1])\n"
             "data = b''\n"
             "while True:\n"
             "    b = s.recv(512)\n"
             "    if not b: break\n"
             "    data += b\n"
             "print(data.decode())\n")
    nobody = pwd.getpwnam("nobody")
    r = subprocess.run([sys.executable, "-c", probe, mda.socket_path("lmtp")], user=nobody.pw_uid,
                       group=nobody.pw_gid, extra_groups=[], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("554 5.7.1 "), r.stdout  # no greeting, then closed
    mda.wait_log(f"connection from uid {nobody.pw_uid} (pid ")
    # root (and tern-mta's user) still deliver.
    _, data = lmtp(mda).transaction("a@example.org", ["demo@example.test"], message("still"))
    assert data[0][0] == 250
