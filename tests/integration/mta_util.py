"""Helpers for the tern-mta integration tests: a Tern set up for mail, a raw SMTP
client for the byte-exact cases smtplib cannot express, and queue inspection."""
import atexit
import os
import shutil
import tempfile
import re
import socket
import ssl
import subprocess
import time

from tern_harness import BIN, Tern, wait_for


def table_dir():
    """A directory the daemons' users can read (pytest's tmp_path is not: its
    parents are private to root)."""
    d = tempfile.mkdtemp(prefix="tern-tables-", dir="/tmp")
    os.chmod(d, 0o755)
    _dirs.append(d)
    return d


_dirs = []
atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _dirs])


def mta_settings(tmpdir=None, **extra):
    """Settings for a Tern whose mail tests do not depend on /etc (aliases in a
    directory of the test) and never send a DNS query off the machine."""
    tmpdir = tmpdir or table_dir()
    aliases = os.path.join(tmpdir, "aliases")
    if not os.path.exists(aliases):
        with open(aliases, "w") as f:
            f.write("postmaster: alice\n")
    s = {
        "alias_maps": f"texthash:{aliases}",
        "alias_database": f"texthash:{aliases}",
        "smtpd_error_sleep_time": "0",
        "minimal_backoff_time": "2s",
        "maximal_backoff_time": "4s",
        "queue_run_delay": "2s",
    }
    s.update({k: str(v) for k, v in extra.items()})
    return s


def add_user(tern, user, password="s3cret-pass"):
    tern.ternctl("user", "add", user, input=password + "\n")


class Raw:
    """A byte-level SMTP client: send exactly these bytes, read replies."""

    def __init__(self, port, host="127.0.0.1", timeout=10, source=None):
        self.s = socket.create_connection((host, port), timeout=timeout,
                                          source_address=(source, 0) if source else None)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed; have %r" % self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode(errors="replace")

    def reply(self):
        """(code, [lines]) of one complete reply."""
        lines = []
        while True:
            l = self._line()
            lines.append(l[4:])
            if len(l) < 4 or l[3] != "-":
                return int(l[:3]), lines

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=10):
        """True once the server closed the connection (reads nothing more)."""
        self.s.settimeout(timeout)
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def starttls(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.s = ctx.wrap_socket(self.s, server_hostname="mail.example.test")
        self.buf = b""

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def queued_ids(tern):
    """Queue ids that got a 250 'queued as' according to the log (smtpd accepted)."""
    return re.findall(r"(\w+): message-id=", tern.log())


def queue_show(tern):
    return tern.ternctl("queue", "show").stdout


def prepare_mail_dir(t):
    """<dir>/mail, where mail_home puts virtual users, owned by the mail user (as
    /var/mail/vhosts belongs to vmail), so tern-mda can create the homes."""
    import pwd
    mail = os.path.join(t.dir, "mail")
    os.makedirs(mail, exist_ok=True)
    pw = pwd.getpwnam(t.settings["mail_uid"])
    os.chown(mail, pw.pw_uid, pw.pw_gid)
    return mail
