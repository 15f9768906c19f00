"""What the README's first command promises, end to end: `tern-master --dev DIR` in a
fresh directory (as scripts/run starts it) accepts mail from the demo user over
submission with STARTTLS and AUTH, delivers it, and serves it back over IMAPS and
POP3 with STLS. As root the daemons run as tern/vmail, so this also checks that
everything they must create under the state directory is theirs to create."""
import imaplib
import os
import pathlib
import poplib
import shutil
import signal
import smtplib
import ssl
import stat
import subprocess
import tempfile

from tern_harness import BIN, Tern, free_port, wait_for


def insecure():
    # The development default's certificate is self-signed.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_fresh_dev_default_delivers_and_serves_the_demo_users_mail():
    # Not under pytest's tmp_path (0700 parents): the daemons' users must reach it.
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tern-devmail-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    d = tmp / "var"
    ports = {k: free_port() for k in Tern.PORT_KEYS}
    opts = []
    for k, v in ports.items():
        opts += ["-o", f"{k}={v}"]
    p = subprocess.Popen([os.path.join(BIN, "tern-master"), "--dev", str(d), *opts], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    err = ""
    try:
        conf = d / "tern.conf"
        wait_for(lambda: conf.exists() and subprocess.run([os.path.join(BIN, "ternctl"), "-c", str(conf), "status"],
                                                          capture_output=True, text=True).stdout.count("state=running") == 5,
                 timeout=30, what="dev default running")
        user = "demo@example.test"
        pw = (d / "demo-password").read_text().strip()

        with smtplib.SMTP("127.0.0.1", ports["submission_port"], timeout=30) as s:
            s.starttls(context=insecure())
            s.login(user, pw)
            s.sendmail(user, [user], b"Subject: hello from the README\r\n\r\nIt works.\r\n")

        def imap_count():
            c = imaplib.IMAP4_SSL("127.0.0.1", ports["imaps_port"], ssl_context=insecure(), timeout=30)
            try:
                c.login(user, pw)
                typ, data = c.select("INBOX")
                assert typ == "OK", data
                n = int(data[0])
                if n:
                    typ, got = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                    assert typ == "OK" and b"hello from the README" in got[0][1], got
                return n
            finally:
                c.logout()

        assert wait_for(imap_count, timeout=30, what="the message in INBOX over IMAPS") == 1

        # RFC 5321 4.5.1: postmaster, with or without a domain, is deliverable (the
        # development default aliases it and root to the demo user).
        with smtplib.SMTP("127.0.0.1", ports["smtpd_port"], timeout=30) as s:
            s.ehlo("client.test")
            refused = s.sendmail("someone@example.net", ["postmaster", "postmaster@example.test"],
                                 b"Subject: to postmaster\r\n\r\nhello\r\n")
            assert refused == {}
        assert wait_for(lambda: imap_count() == 2 or None, timeout=30, what="postmaster's mail in demo's INBOX")

        pop = poplib.POP3("127.0.0.1", ports["pop3_port"], timeout=30)
        try:
            pop.stls(context=insecure())
            pop.user(user)
            pop.pass_(pw)
            count, _ = pop.stat()
            assert count == 2
            assert b"It works." in b"\n".join(pop.retr(1)[1])
        finally:
            pop.quit()

        # The mail root was made for the mail user, not left to root.
        base = d / "mail"
        if os.geteuid() == 0:
            import pwd
            assert base.stat().st_uid == pwd.getpwnam("vmail").pw_uid
        assert stat.S_IMODE(base.stat().st_mode) == 0o750
    finally:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    assert "Permission denied" not in err, err[-3000:]
    # The banner shows the ports that listen (-o overrides), not the file's.
    assert f"SMTP       127.0.0.1:{ports['smtpd_port']}" in err, err[-3000:]
    assert f"IMAPS      127.0.0.1:{ports['imaps_port']}" in err, err[-3000:]
    assert p.returncode == 0, err[-3000:]
    shutil.rmtree(tmp, ignore_errors=True)
