"""tern-mta end to end with the real tern-mda and tern-authd: smtplib and swaks to
port 25 landing in the user's Maildir, bsd-mailx through sendmail, the maildrop
when tern-mta is down, mailq while tern-mda is down, aliases, bounces, AUTH on
submission and smtps, big messages, pflogsumm over the log, and kill -9 of tern-mta
while 20 clients send."""
import glob
import os
import re
import signal
import smtplib
import ssl
import subprocess
import threading
import time

import pytest

from mta_util import Raw, add_user, mta_settings, prepare_mail_dir, table_dir
from tern_harness import BIN, REPO, SANITIZED, wait_for

# These tests deliver through the real tern-mda (issue 4). On a tree where tern-mda
# is still the placeholder that answers 421, there is nothing to deliver to.
pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(REPO, "mda", "lmtp_session.cc")),
                                reason="tern-mda's LMTP server is not in this tree yet (issue 4)")


def maildir(t, user, domain="example.test"):
    return os.path.join(t.dir, "mail", domain, user, "Maildir")


def messages(t, user, domain="example.test"):
    """Contents of every message in the user's INBOX (new/ and cur/)."""
    out = []
    for sub in ("new", "cur"):
        for p in sorted(glob.glob(os.path.join(maildir(t, user, domain), sub, "*"))):
            with open(p, "rb") as f:
                out.append(f.read())
    return out


def wait_messages(t, user, n, timeout=30, domain="example.test"):
    return wait_for(lambda: (lambda m: m if len(m) >= n else None)(messages(t, user, domain)), timeout,
                    what=f"{n} message(s) for {user}")


def sendmail_env(t):
    e = t.env()
    return e


@pytest.fixture
def mail(tern_factory):
    d = table_dir()
    t = tern_factory(settings=mta_settings(d))
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    add_user(t, "bob@example.test")
    t.tables = d
    return t


def test_smtplib_to_port_25_lands_in_the_maildir(mail):
    s = smtplib.SMTP("127.0.0.1", mail.port("smtp"), timeout=15)
    s.ehlo("client.example.org")
    refused = s.sendmail("someone@sender.example", ["alice@example.test"],
                         b"Subject: hello alice\r\nMessage-ID: <m1@sender.example>\r\n\r\nfirst line\r\n.dotted\r\n")
    assert refused == {}
    s.quit()
    (m,) = wait_messages(mail, "alice", 1)
    assert b"Subject: hello alice" in m
    assert b"\n.dotted" in m  # dot-unstuffed once, stuffed again for LMTP, unstuffed by tern-mda
    assert re.search(rb"Received: from client\.example\.org \(localhost \[127\.0\.0\.1\]\)\r?\n\tby mail\.example\.test "
                     rb"\(Tern\) with ESMTP id \w+\r?\n\tfor <alice@example\.test>; ", m)
    log = mail.wait_log("status=sent")
    assert re.search(r"tern/lmtp\[\d+\]: \w+: to=<alice@example\.test>, relay=tern-mda\[.*\], delay=[\d.]+, "
                     r"delays=[\d./]+, dsn=2\.\d\.\d, status=sent \(250 ", log)
    mail.wait_log(": removed")


def test_swaks_to_port_25(mail):
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(mail.port("smtp")), "--from",
                        "swaks@sender.example", "--to", "bob@example.test", "--header", "Subject: from swaks",
                        "--body", "swaks body", "--timeout", "20"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<-  250 2.0.0 Ok: queued as" in r.stdout
    (m,) = wait_messages(mail, "bob", 1)
    assert b"Subject: from swaks" in m and b"swaks body" in m


def test_mail_s_through_sendmail(mail, tmp_path):
    """bsd-mailx's mail(1) hands the message to our sendmail, which submits it over
    the local socket."""
    rc = tmp_path / "mailrc"
    rc.write_text(f"set sendmail={BIN}/sendmail\n")
    env = mail.env()
    env["MAILRC"] = str(rc)
    r = subprocess.run(["mail", "-s", "subject from mailx", "-r", "from@example.test", "alice@example.test"],
                       input="body from mailx\n", text=True, capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    (m,) = wait_messages(mail, "alice", 1)
    assert b"Subject: subject from mailx" in m and b"body from mailx" in m
    assert re.search(rb"Received: by mail\.example\.test \(Tern, from userid \d+\)", m)
    assert b"Message-Id: <" in m or b"Message-ID: <" in m
    log = mail.log()
    assert re.search(r"tern/pickup\[\d+\]: \w+: uid=\d+ from=<from@example\.test>", log)
    r = subprocess.run(["pflogsumm", "--syslog_name=tern", mail.log_path], capture_output=True, text=True, timeout=60)
    assert re.search(r"^\s*1\s+received", r.stdout, re.M), r.stdout


def test_sendmail_t_and_bcc(mail):
    msg = "To: alice@example.test\nBcc: bob@example.test\nSubject: with bcc\n\nhello\n.\nnot part of it\n"
    r = subprocess.run([f"{BIN}/sendmail", "-t"], input=msg, text=True, capture_output=True, env=mail.env(),
                       timeout=60)
    assert r.returncode == 0, r.stderr
    (a,) = wait_messages(mail, "alice", 1)
    (b,) = wait_messages(mail, "bob", 1)
    for m in (a, b):
        assert b"Subject: with bcc" in m
        assert b"Bcc:" not in m  # -t removes it
        assert b"not part of it" not in m  # without -i a lone dot ends the message
        assert b"From: " in m  # added for the local user


def test_mda_down_mailq_shows_deferred_then_delivered(tern_factory):
    """tern-mda is not running: the message waits in the queue, mailq says why;
    once tern-mda runs, it is delivered."""
    d = table_dir()
    t = tern_factory(settings=mta_settings(d, master_services="authd, mta", minimal_backoff_time="300s",
                                           maximal_backoff_time="600s"))
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=15)
    s.sendmail("a@sender.example", ["alice@example.test"], b"Subject: waits\r\n\r\nbody\r\n")
    s.quit()
    t.wait_log("status=deferred")

    def mailq():
        q = subprocess.run([f"{BIN}/mailq"], capture_output=True, text=True, env=t.env(), timeout=30)
        assert q.returncode == 0
        return q

    # The deferral is logged before it is committed; wait for the queue to say it.
    q = wait_for(lambda: (lambda q: q if "No such file or directory" in q.stdout else None)(mailq()), 15,
                 what="mailq showing the deferral")
    assert q.stdout.startswith("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n")
    assert "a@sender.example" in q.stdout and "alice@example.test" in q.stdout
    assert "lmtp" in q.stdout and "No such file or directory" in q.stdout
    assert "-- 1 Kbytes in 1 Request." in q.stdout
    show = t.ternctl("queue", "show").stdout
    assert "state=pending" in show and "attempts=1" in show
    # Start tern-mda by itself on the same config (it binds the lmtp socket).
    mda = subprocess.Popen([f"{BIN}/tern-mda", "-c", t.conf_path, "-o", "master_services=authd, mda, mta"], env=t.env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(t.socket_path("lmtp")), 15, what="lmtp socket")
        subprocess.run([f"{BIN}/sendmail", "-q"], env=t.env(), check=True, timeout=30)
        (m,) = wait_messages(t, "alice", 1)
        assert b"Subject: waits" in m
        wait_for(lambda: "Mail queue is empty" in subprocess.run([f"{BIN}/mailq"], capture_output=True, text=True,
                                                                 env=t.env()).stdout, 15, what="empty queue")
    finally:
        mda.kill()
        mda.wait()


def test_sendmail_uses_the_maildrop_when_the_mta_is_down(tern_factory):
    d = table_dir()
    t = tern_factory(settings=mta_settings(d, master_services="authd, mda"))
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    r = subprocess.run([f"{BIN}/sendmail", "-f", "me@example.test", "alice@example.test"],
                       input="Subject: from the maildrop\n\nkept safe\n", text=True, capture_output=True,
                       env=t.env(), timeout=60)
    assert r.returncode == 0, r.stderr
    drop = t.settings.get("maildrop_directory", os.path.join(t.settings["queue_directory"], "maildrop"))
    files = [f for f in os.listdir(drop) if not f.startswith(".")]
    assert len(files) == 1
    # Now tern-mta starts (by itself, on the same config): pickup finds the file.
    mta = subprocess.Popen([f"{BIN}/tern-mta", "-c", t.conf_path, "-o", "master_services=authd, mda, mta"],
                           env=t.env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        (m,) = wait_messages(t, "alice", 1)
        assert b"Subject: from the maildrop" in m and b"kept safe" in m
        wait_for(lambda: not [f for f in os.listdir(drop) if not f.startswith(".")], 10, what="maildrop emptied")
        assert re.search(r"tern/pickup\[\d+\]: \w+: uid=\d+ from=<me@example\.test>", t.log())
    finally:
        mta.terminate()
        mta.wait()


def test_aliases_commands_files_and_bounces(tern_factory):
    d = table_dir()
    out = os.path.join(d, "piped")
    copy = os.path.join(d, "copy.mbox")
    os.chmod(d, 0o777)
    with open(os.path.join(d, "aliases"), "w") as f:
        f.write(f"postmaster: alice\nteam: alice, bob\npipe: \"|/bin/sh -c 'cat > {out}'\"\nfile: {copy}\n"
                f"ghost: nobody-at-all\nteam2: :include:{d}/members\n")
    with open(os.path.join(d, "members"), "w") as f:
        f.write("bob\n")
    with open(os.path.join(d, "virtual"), "w") as f:
        f.write("info@virtual.test  alice@example.test\n@virtual.test  bob@example.test\n")
    t = tern_factory(settings=mta_settings(d, virtual_alias_maps=f"texthash:{d}/virtual"))
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    add_user(t, "bob@example.test")
    s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=15)
    s.sendmail("alice@example.test", ["team@example.test"], b"Subject: to the team\r\n\r\nx\r\n")
    s.sendmail("alice@example.test", ["team2@example.test"], b"Subject: to the included team\r\n\r\nx\r\n")
    s.sendmail("alice@example.test", ["pipe@example.test"], b"Subject: to a pipe\r\n\r\npiped body\r\n")
    s.sendmail("alice@example.test", ["file@example.test"], b"Subject: to a file\r\n\r\nfile body\r\n")
    s.sendmail("x@sender.example", ["info@virtual.test", "anyone@virtual.test"], b"Subject: virtual\r\n\r\nv\r\n")
    s.sendmail("alice@example.test", ["ghost@example.test"], b"Subject: to a ghost\r\n\r\nboo\r\n")
    s.quit()
    wait_for(lambda: os.path.exists(out) and b"piped body" in open(out, "rb").read(), 20, what="command output")
    wait_for(lambda: os.path.exists(copy) and b"file body" in open(copy, "rb").read(), 20, what="file delivery")
    assert open(copy, "rb").read().startswith(b"From alice@example.test ")
    # alice: team, virtual info, and the bounce for ghost; bob: team, virtual catch-all.
    got = wait_messages(t, "alice", 3)
    bounce = [m for m in got if b"Undelivered Mail Returned to Sender" in m]
    assert len(bounce) == 1
    b = bounce[0]
    assert b"Content-Type: multipart/report; report-type=delivery-status;" in b
    assert b"Final-Recipient: rfc822; nobody-at-all@" in b
    assert b"Action: failed" in b and b"Status: 5.1.1" in b
    assert b"Subject: to a ghost" in b
    bob = wait_messages(t, "bob", 3)
    assert any(b"Subject: virtual" in m for m in bob)
    assert any(b"Subject: to the included team" in m for m in bob)
    assert "status=bounced" in t.log()
    assert re.search(r"tern/bounce\[\d+\]: \w+: sender non-delivery notification: \w+", t.log())


def test_null_sender_never_gets_a_bounce(tern_factory):
    d = table_dir()
    with open(os.path.join(d, "aliases"), "w") as f:
        f.write("ghost: nobody-at-all\n")
    t = tern_factory(settings=mta_settings(d))
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=15)
    s.sendmail("", ["ghost@example.test"], b"Subject: bounce of a bounce\r\n\r\nx\r\n")
    s.quit()
    t.wait_log("status=bounced")
    t.wait_log(": removed")
    assert "non-delivery notification" not in t.log()


def test_submission_requires_auth_and_tls(mail):
    add_user(mail, "carol@example.test", "carol-pass")
    s = smtplib.SMTP("127.0.0.1", mail.port("submission"), timeout=15)
    s.ehlo("client.example.org")
    assert "auth" not in s.esmtp_features  # no plaintext AUTH before STARTTLS
    code, msg = s.mail("carol@example.test")
    assert (code, msg) == (530, b"5.7.0 Must issue a STARTTLS command first")
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo("client.example.org")
    assert "PLAIN" in s.esmtp_features["auth"]
    code, msg = s.mail("carol@example.test")
    assert (code, msg) == (530, b"5.7.0 Authentication required")
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        s.login("carol@example.test", "wrong")
    assert e.value.smtp_code == 535
    s.login("carol@example.test", "carol-pass")
    s.sendmail("carol@example.test", ["alice@example.test", "someone@remote.example"], b"Subject: submitted\r\n\r\nx\r\n")
    s.quit()
    (m,) = wait_messages(mail, "alice", 1)
    # A submission without Message-ID and Date gets them (Postfix cleanup).
    assert b"Message-Id: <" in m and b"\nDate: " in m
    assert b"with ESMTPSA id" in m
    log = mail.log()
    assert re.search(r"client=localhost\[127\.0\.0\.1\], sasl_method=PLAIN, sasl_username=carol@example\.test", log)
    assert "SASL PLAIN authentication failed" in log


def test_smtps_implicit_tls_and_auth(mail):
    add_user(mail, "carol@example.test", "carol-pass")
    s = smtplib.SMTP_SSL("127.0.0.1", mail.port("smtps"), timeout=15, context=ssl._create_unverified_context())
    s.ehlo("client.example.org")
    assert "starttls" not in s.esmtp_features
    s.login("carol@example.test", "carol-pass")
    s.sendmail("carol@example.test", ["bob@example.test"], b"Subject: over smtps\r\n\r\nx\r\n")
    s.quit()
    (m,) = wait_messages(mail, "bob", 1)
    assert b"Subject: over smtps" in m


def test_mx_port_auth_when_configured_with_broken_clients_line(tern_factory):
    d = table_dir()
    t = tern_factory(settings=mta_settings(d, smtpd_sasl_auth_enable="yes", broken_sasl_auth_clients="yes"))
    prepare_mail_dir(t)
    s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=15)
    s.starttls(context=ssl._create_unverified_context())
    code, text = s.ehlo("client.example.org")
    lines = text.decode().split("\n")
    auth = [l for l in lines if l.startswith("AUTH")]
    assert len(auth) == 2 and auth[1].startswith("AUTH=") and "PLAIN" in auth[0]
    s.quit()


def test_ten_thousand_lines_and_fifty_megabytes(tern_factory):
    d = table_dir()
    t = tern_factory(settings=mta_settings(d, message_size_limit="60M", lmtp_message_size_limit="60M"),
                     start=False)
    # Under ASan, freed buffers wait in a 256 MB quarantine and count as resident:
    # a small quarantine keeps the figure about what tern-mta holds, not what ASan does.
    t.sanitizer_option("quarantine_size_mb=4")
    t.start()
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    lines = b"".join(b"line %05d of ten thousand, with some text to make it longer\r\n" % i for i in range(10000))
    s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=120)
    s.sendmail("a@sender.example", ["alice@example.test"], b"Subject: ten thousand\r\n\r\n" + lines)
    wait_messages(t, "alice", 1, timeout=120)
    before_kb = vm_hwm_kb(t.pid_of("mta"))
    big = (b"x" * 998 + b"\r\n") * (50 * 1024 * 1024 // 1000)
    s.sendmail("a@sender.example", ["alice@example.test"], b"Subject: fifty megabytes\r\n\r\n" + big)
    s.quit()
    got = wait_messages(t, "alice", 2, timeout=120)
    ten = [m for m in got if b"Subject: ten thousand" in m][0]
    assert ten.count(b"of ten thousand") == 10000
    fifty = [m for m in got if b"Subject: fifty megabytes" in m][0]
    assert fifty.count(b"x" * 998 + b"\n") == 50 * 1024 * 1024 // 1000  # Maildir keeps LF line ends
    # Bounded memory: the session streamed the body into the queue file and the
    # LMTP client streamed it out; tern-mta never held the 50 MB.
    hwm_kb = vm_hwm_kb(t.pid_of("mta"))
    # The peak grew by far less than the message (50 MiB) after the first one ...
    print(f"tern-mta VmHWM: {before_kb} kB before the 50 MiB message, {hwm_kb} kB after")
    assert hwm_kb - before_kb < 16 * 1024, (before_kb, hwm_kb)
    # ... and, in a plain build, stays small in absolute terms (ASan's shadow memory
    # alone is more than this).
    if not SANITIZED:
        assert hwm_kb < 40 * 1024, hwm_kb


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))


def test_pflogsumm_reads_the_log(mail):
    s = smtplib.SMTP("127.0.0.1", mail.port("smtp"), timeout=15)
    for i in range(3):
        s.sendmail("a@sender.example", ["alice@example.test"], b"Subject: %d\r\n\r\nx\r\n" % i)
    try:
        s.sendmail("a@sender.example", ["nobody@example.test"], b"Subject: no\r\n\r\nx\r\n")
    except smtplib.SMTPRecipientsRefused:
        pass
    s.quit()
    wait_messages(mail, "alice", 3)
    wait_for(lambda: mail.log().count(": removed") >= 3, 20, what="3 removed")
    r = subprocess.run(["pflogsumm", "--syslog_name=tern", mail.log_path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"^\s*3\s+received", out, re.M), out
    assert re.search(r"^\s*3\s+delivered", out, re.M), out
    assert re.search(r"^\s*1\s+rejected", out, re.M), out


def test_kill_9_while_twenty_clients_send(tern_factory):
    """Every message that got 250 is delivered exactly once after tern-mta is
    killed with SIGKILL in the middle of 20 concurrent senders and restarted by
    tern-master."""
    d = table_dir()
    t = tern_factory(settings=mta_settings(d, smtpd_client_connection_count_limit=0))
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    accepted = set()
    lock = threading.Lock()
    stop = threading.Event()
    killed = threading.Event()

    def client(n):
        i = 0
        while not stop.is_set() and i < 40:
            token = f"tok-{n}-{i}"
            i += 1
            try:
                s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=20)
                s.sendmail("a@sender.example", ["alice@example.test"],
                           f"Subject: {token}\r\nX-Token: {token}\r\n\r\nbody {token}\r\n".encode())
                with lock:
                    accepted.add(token)
                try:
                    s.quit()
                except Exception:
                    pass
            except (OSError, smtplib.SMTPException):
                if not killed.is_set():
                    time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for th in threads:
        th.start()
    wait_for(lambda: len(accepted) >= 60, 60, what="60 accepted messages")
    old = t.pid_of("mta")
    os.kill(old, signal.SIGKILL)
    killed.set()
    wait_for(lambda: (t.status() or {}).get("mta", {}).get("pid") not in (None, 0, old)
             and t.status()["mta"]["state"] == "running", 30, what="mta restarted")
    for th in threads:
        th.join(timeout=300)
    stop.set()
    assert len(accepted) > 60

    def delivered():
        counts = {}
        for m in messages(t, "alice"):
            tok = re.search(rb"X-Token: (tok-\d+-\d+)", m)
            if tok:
                counts[tok.group(1).decode()] = counts.get(tok.group(1).decode(), 0) + 1
        return counts

    wait_for(lambda: accepted <= set(delivered()), 120, what="every accepted message delivered")
    wait_for(lambda: "Mail queue is empty" in subprocess.run([f"{BIN}/mailq"], capture_output=True, text=True,
                                                             env=t.env()).stdout, 60, what="empty queue")
    counts = delivered()
    dupes = {k: v for k, v in counts.items() if v > 1}
    assert not dupes, dupes
    assert accepted <= set(counts)
    print("deliveries repeated under XTERN-DELIVERY-ID and not written again:", t.log().count("already delivered to"))


def test_newaliases_and_postmap_tables(tern_factory):
    """Compiled tables: newaliases (sendmail -bi) for alias_database, ternctl
    postmap for virtual_alias_maps, both read as hash: (LMDB) by tern-mta."""
    d = table_dir()
    with open(os.path.join(d, "aliases"), "w") as f:
        f.write("# comment\nsales:\n  alice,\n  bob\n")
    with open(os.path.join(d, "virtual"), "w") as f:
        # The domain as a key makes it a virtual alias domain (virtual(5), and
        # virtual_alias_domains defaults to $virtual_alias_maps).
        f.write("virtual.test        anything\ninfo@virtual.test   alice@example.test\n")
    t = tern_factory(settings=mta_settings(d, alias_maps=f"hash:{d}/aliases", alias_database=f"hash:{d}/aliases",
                                           virtual_alias_maps=f"hash:{d}/virtual"))
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    add_user(t, "bob@example.test")
    r = subprocess.run([f"{BIN}/newaliases"], env=t.env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(os.path.join(d, "aliases.lmdb"))
    t.ternctl("postmap", f"hash:{d}/virtual")
    assert t.ternctl("postmap", "-q", "info@virtual.test", f"hash:{d}/virtual").stdout == "alice@example.test\n"
    assert t.ternctl("postmap", "-q", "nobody@virtual.test", f"hash:{d}/virtual", check=False).returncode == 1
    s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=15)
    s.sendmail("x@sender.example", ["sales@example.test"], b"Subject: sales\r\n\r\nx\r\n")
    s.sendmail("x@sender.example", ["INFO@virtual.test"], b"Subject: info\r\n\r\nx\r\n")
    code, msg = s.docmd("RCPT", "TO:<other@virtual.test>")
    s.quit()
    got = wait_messages(t, "alice", 2)
    assert {b"Subject: sales" in m for m in got} == {True, False}
    (b,) = wait_messages(t, "bob", 1)
    assert b"Subject: sales" in b
    # Changing a table and compiling it again takes effect without a restart.
    with open(os.path.join(d, "virtual"), "a") as f:
        f.write("news@virtual.test   bob@example.test\n")
    t.ternctl("postmap", f"hash:{d}/virtual")
    s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=15)
    s.sendmail("x@sender.example", ["news@virtual.test"], b"Subject: news\r\n\r\nx\r\n")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        s.sendmail("x@sender.example", ["nobody@virtual.test"], b"Subject: no\r\n\r\nx\r\n")
    assert e.value.recipients["nobody@virtual.test"] == (
        550, b"5.1.1 <nobody@virtual.test>: Recipient address rejected: User unknown in virtual alias table")
    s.quit()
    wait_messages(t, "bob", 2)


def test_sendmail_with_a_body_only_keeps_it_body(mail):
    # `echo hi | sendmail user`: no header at all. As with Postfix, the added headers
    # are followed by one blank line and "hi" stays body (it used to end up as a
    # header line, invisible in every mail reader).
    r = subprocess.run([f"{BIN}/sendmail", "alice@example.test"], input="hi there\nsecond line\n", text=True,
                       capture_output=True, env=mail.env(), timeout=60)
    assert r.returncode == 0, r.stderr
    (m,) = wait_messages(mail, "alice", 1)
    head, sep, body = m.replace(b"\r\n", b"\n").partition(b"\n\n")
    assert sep, m
    assert body == b"hi there\nsecond line\n", m
    assert b"hi there" not in head and b"Message-Id:" in head


def test_unusable_local_parts_are_unknown_users_not_temporary_failures(mail):
    # "a b"@ and a/b@ can be no one's mailbox: 550 at RCPT (a 451 would make the
    # sending server retry for days).
    with smtplib.SMTP("127.0.0.1", mail.port("smtpd"), timeout=30) as s:
        s.ehlo("client.test")
        s.mail("x@example.net")
        for rcpt in ('"a b"@example.test', "a/b@example.test"):
            code, msg = s.rcpt(rcpt)
            assert code == 550 and b"5.1.1" in msg, (rcpt, code, msg)
        assert s.rcpt("alice@example.test")[0] == 250


def test_bcc_and_return_path_headers_are_dropped(mail):
    # Postfix's message_drop_headers default: a Bcc header sent over SMTP must not
    # show the hidden recipients to the others; a Return-Path from the client is
    # replaced by the one tern-mda writes.
    msg = (b"From: x@example.net\r\nTo: alice@example.test\r\nBcc: bob@example.test\r\n"
           b"Return-Path: <forged@evil.test>\r\nSubject: drop\r\n\r\nBcc: body text stays\r\n")
    with smtplib.SMTP("127.0.0.1", mail.port("smtpd"), timeout=30) as s:
        s.sendmail("x@example.net", ["alice@example.test", "bob@example.test"], msg)
    for user in ("alice", "bob"):
        (m,) = wait_messages(mail, user, 1)
        head, _, body = m.replace(b"\r\n", b"\n").partition(b"\n\n")
        assert b"\nBcc:" not in head and not head.startswith(b"Bcc:"), m
        assert b"forged@evil.test" not in head, m
        assert head.count(b"Return-Path:") == 1 and b"Return-Path: <x@example.net>" in head, m
        assert body == b"Bcc: body text stays\n"


def test_smtputf8_mail_is_received_with_utf8smtp_and_bs_offers_no_starttls(mail):
    # RFC 6531 3.7.3: the Received header of SMTPUTF8 mail says UTF8SMTP.
    with smtplib.SMTP("127.0.0.1", mail.port("smtpd"), timeout=30) as s:
        s.ehlo("client.test")
        s.sendmail("jürgen@example.net", ["alice@example.test"], "Subject: ü\r\n\r\nbody\r\n".encode(),
                   mail_options=["SMTPUTF8"])
    (m,) = wait_messages(mail, "alice", 1)
    assert re.search(rb"\)\r?\n\tby [^ ]+ \(Tern\) with UTF8SMTP id ", m), m
    # sendmail -bs talks SMTP on stdin/stdout over the local socket, where STARTTLS
    # is refused: it must not be offered either.
    r = subprocess.run([f"{BIN}/sendmail", "-bs"], input="EHLO me\r\nQUIT\r\n", text=True, capture_output=True,
                       env=mail.env(), timeout=30)
    assert "250-PIPELINING" in r.stdout or "250 PIPELINING" in r.stdout, r.stdout
    assert "STARTTLS" not in r.stdout, r.stdout


def test_hostile_maildrop_files_inject_nothing(tern_factory):
    """A maildrop file is written by an unprivileged user: a sender that closes the
    path early (RFC 5321 4.1.2) is refused whole, a bare CR becomes a line end
    (RFC 5321 2.3.8) instead of reaching tern-mda's LMTP, a stale sendmail temp file
    is removed, and sendmail stops copying at message_size_limit."""
    d = table_dir()
    t = tern_factory(settings=mta_settings(d, master_services="authd, mda", message_size_limit="20000"))
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    r = subprocess.run([f"{BIN}/sendmail", "alice@example.test"], input="x" * 30000, text=True,
                       capture_output=True, env=t.env(), timeout=60)
    assert r.returncode == 65 and "message file too big" in r.stderr, r.stderr  # EX_DATAERR
    drop = t.settings.get("maildrop_directory", os.path.join(t.settings["queue_directory"], "maildrop"))
    assert not [f for f in os.listdir(drop) if not f.startswith(".")]
    files = {"1.hostile": b"TERN-MAILDROP 1\nS a@b> AUTH=<x>\nR alice@example.test\n\nSubject: injected\n\nx\n",
             "2.good": b"TERN-MAILDROP 1\nS me@example.test\nR alice@example.test\n\nSubject: cr\n\nline1\rline2\n",
             ".stale": b"half"}
    for name, data in files.items():
        with open(os.path.join(drop, name), "wb") as f:
            f.write(data)
        os.chown(os.path.join(drop, name), 65534, 65534)
    os.utime(os.path.join(drop, ".stale"), (time.time() - 7200, time.time() - 7200))
    mta = subprocess.Popen([f"{BIN}/tern-mta", "-c", t.conf_path, "-o", "master_services=authd, mda, mta"],
                           env=t.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (m,) = wait_messages(t, "alice", 1)
        assert b"Subject: cr" in m and b"line1\nline2\n" in m and b"\r" not in m
        wait_for(lambda: not os.listdir(drop), 15, what="maildrop emptied")
        assert re.search(r"pickup: uid=65534: ignoring malformed message file \S+1\.hostile: .*bad sender", t.log())
        assert "AUTH=<x>" not in "".join(messages(t, "alice")[0].decode(errors="replace"))
    finally:
        mta.terminate()
        mta.wait()
