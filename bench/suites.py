"""The two suites bench/run compares, each a private instance in the run's scratch
directory on loopback ports:

- Tern: the real tern-master and its daemons (tests/integration/tern_harness.py),
  users imported from the same passwd-file Dovecot reads.
- Postfix + Dovecot from Debian: a private Postfix (its own config directory, queue
  and SMTP port) delivering with virtual(8) into Maildir, and a private Dovecot
  (IMAP and POP3) reading the same Maildirs, users in a passwd-file.

Durability settings are left at each suite's defaults (Postfix has no switch to
turn its fsyncs off; Dovecot mail_fsync = optimized; Tern mail_fsync = optimized).
What is changed from the defaults is only what a benchmark on one host needs:
loopback ports, private directories, plaintext logins over loopback, limits on
connections per user and processes raised so that 1,000 or 10,000 idle IMAP
connections can exist, and the SMTP client's address in mynetworks (no relay
checks differ between the two: both accept for their one domain).
"""
import os
import pwd
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from mda_interop_helpers import Postfix  # noqa: E402
from mta_util import mta_settings  # noqa: E402
from tern_harness import BIN, Tern, free_port, port_open, wait_for  # noqa: E402

DOMAIN = "example.test"
PASSWORD = "bench-Passw0rd"
SCHEME = "SHA512-CRYPT"


def vmail():
    pw = pwd.getpwnam("vmail")
    return pw.pw_uid, pw.pw_gid


def make_passwd_file(path, users):
    """A Dovecot passwd-file with one {SHA512-CRYPT} hash per user (doveadm pw: the
    hashes Dovecot itself makes). Both suites read this one file."""
    with open(path, "w") as f:
        for u in users:
            h = subprocess.run(["doveadm", "pw", "-s", SCHEME, "-p", PASSWORD], capture_output=True, text=True,
                               check=True).stdout.strip()
            f.write(f"{u}:{h}::::::\n")
    os.chmod(path, 0o644)


def passwd_schemes(path):
    """{user: scheme} as written in a passwd-file."""
    out = {}
    with open(path) as f:
        for line in f:
            user, _, rest = line.partition(":")
            pw = rest.split(":", 1)[0]
            out[user] = pw[1:pw.index("}")] if pw.startswith("{") else "crypt"
    return out


class TernSuite:
    name = "Tern"

    def __init__(self, scratch, passwd_file, users):
        d = os.path.join(scratch, "tern")
        os.makedirs(d, exist_ok=True)
        self.passwd_file = passwd_file
        self.users = users
        wanted = mta_settings(tmpdir=scratch, smtpd_client_connection_count_limit=0, mynetworks="127.0.0.0/8")
        wanted.update({
            "auth_password_scheme": SCHEME,
            "disable_plaintext_auth": "no",
            "mail_max_userip_connections": "100000",
            # Dovecot has no per-user limit; ours (50) refused the 10,000-connection
            # idle run at connection 1,001 (20 users x 50).
            "mail_max_user_connections": "100000",
            "login_max_connections_per_ip": "100000",
            "login_max_connections": "100000",
        })
        self.t = Tern(settings={}, dirname=d)
        known = self._known_keys()
        self.skipped_keys = sorted(k for k in wanted if k not in known)
        self.t.set(**{k: v for k, v in wanted.items() if k in known})

    def _known_keys(self):
        r = self.t.ternctl("config", "-d")
        return {line.split("=", 1)[0].strip() for line in r.stdout.splitlines() if "=" in line}

    def start(self):
        self.t.start()
        mail = os.path.join(self.t.dir, "mail")
        os.makedirs(mail, exist_ok=True)
        os.chown(mail, *vmail())
        r = self.t.ternctl("user", "import", self.passwd_file)
        if "imported" not in r.stdout:
            raise RuntimeError("ternctl user import: " + r.stdout + r.stderr)

    def roots(self):
        return [self.t.proc.pid] if self.t.proc else []

    def maildir(self, user):
        local = user.split("@")[0]
        return os.path.join(self.t.dir, "mail", DOMAIN, local, "Maildir")

    def smtp_port(self):
        return self.t.port("smtp")

    def imap_port(self):
        return self.t.port("imap")

    def pop3_port(self):
        return self.t.port("pop3")

    def user_scheme(self, user):
        for line in self.t.ternctl("user", "show", user).stdout.splitlines():
            if line.startswith("password"):
                return line.split()[1]
        return "?"

    def fsync_setting(self):
        r = self.t.ternctl("config", "mail_fsync", check=False)
        return r.stdout.strip() or "mail_fsync = ?"

    def queue_empty(self):
        # `ternctl queue list` prints mailq's "Mail queue is empty" when it is.
        r = self.t.ternctl("queue", "list", check=False)
        return r.returncode == 0 and (not r.stdout.strip() or "queue is empty" in r.stdout)

    def stop(self):
        self.t.stop()


class PostfixDovecotSuite:
    name = "Postfix/Dovecot"

    def __init__(self, scratch, passwd_file, users):
        self.scratch = scratch
        self.passwd_file = passwd_file
        self.users = users
        self.mail = os.path.join(scratch, "pfmail")
        os.makedirs(os.path.join(self.mail, DOMAIN), exist_ok=True)
        for d in (self.mail, os.path.join(self.mail, DOMAIN)):
            os.chown(d, *vmail())
        base = os.path.join(scratch, "postfix")
        os.makedirs(base, exist_ok=True)
        self.pf = Postfix(base, "/nonexistent", domain=DOMAIN)
        maps = os.path.join(base, "vmailbox")
        with open(maps, "w") as f:
            for u in users:
                f.write(f"{u} {DOMAIN}/{u.split('@')[0]}/Maildir/\n")
        uid, gid = vmail()
        # Local delivery to Maildir with virtual(8), Postfix's own delivery agent.
        self.postconf(virtual_transport="virtual", virtual_mailbox_base=self.mail,
                      virtual_mailbox_maps=f"texthash:{maps}", virtual_uid_maps=f"static:{uid}",
                      virtual_gid_maps=f"static:{gid}", virtual_minimum_uid=str(min(uid, 100)))
        self.dovecot_proc = None
        self.imap = free_port()
        self.pop3 = free_port()
        self.dconf = os.path.join(scratch, "dovecot.conf")
        self._write_dovecot_conf()

    def postconf(self, **kv):
        subprocess.run(["postconf", "-c", self.pf.conf, "-e"] + [f"{k}={v}" for k, v in kv.items()], check=True,
                       capture_output=True)

    def _write_dovecot_conf(self):
        run = os.path.join(self.scratch, "dovecot-run")
        state = os.path.join(self.scratch, "dovecot-state")
        for d in (run, state):
            os.makedirs(d, exist_ok=True)
        with open(self.dconf, "w") as f:
            f.write(f"""# written by bench/suites.py: Dovecot's defaults except where said
base_dir = {run}
state_dir = {state}
log_path = {os.path.join(self.scratch, "dovecot.log")}
protocols = imap pop3
listen = 127.0.0.1
ssl = no
# Plaintext logins over loopback, as Tern's disable_plaintext_auth = no.
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
# Room for 10,000 idle connections (one imap process each: Dovecot's default).
default_process_limit = 12000
default_client_limit = 30000
mail_max_userip_connections = 100000
passdb {{
  driver = passwd-file
  args = {self.passwd_file}
}}
userdb {{
  driver = static
  args = uid=vmail gid=vmail home={self.mail}/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
# Dovecot's built-in process_limit of the imap and pop3 services is 1024.
service imap {{
  process_limit = 12000
}}
service pop3 {{
  process_limit = 12000
}}
service anvil {{
  client_limit = 30000
}}
service auth {{
  client_limit = 30000
}}
""")

    def start(self):
        self.pf.start()
        r = subprocess.run(["doveconf", "-c", self.dconf, "-n"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("doveconf: " + r.stderr.strip())
        self.dovecot_proc = subprocess.Popen(["dovecot", "-F", "-c", self.dconf], stdout=subprocess.DEVNULL,
                                             stderr=open(os.path.join(self.scratch, "dovecot.stderr"), "ab"))
        wait_for(lambda: port_open("127.0.0.1", self.imap) and port_open("127.0.0.1", self.pop3), timeout=30,
                 what="dovecot imap and pop3")

    def postfix_pid(self):
        try:
            with open(os.path.join(self.pf.queue, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def smtp_roots(self):
        p = self.postfix_pid()
        return [p] if p else []

    def imap_roots(self):
        return [self.dovecot_proc.pid] if self.dovecot_proc else []

    def roots(self):
        return self.smtp_roots() + self.imap_roots()

    def maildir(self, user):
        return os.path.join(self.mail, DOMAIN, user.split("@")[0], "Maildir")

    def smtp_port(self):
        return self.pf.port

    def imap_port(self):
        return self.imap

    def pop3_port(self):
        return self.pop3

    def fsync_setting(self):
        r = subprocess.run(["doveconf", "-c", self.dconf, "mail_fsync"], capture_output=True, text=True)
        return "Dovecot " + (r.stdout.strip() or "mail_fsync = ?")

    def queue_empty(self):
        r = subprocess.run(["postqueue", "-c", self.pf.conf, "-j"], capture_output=True, text=True)
        return r.returncode == 0 and not r.stdout.strip()

    def stop(self):
        if self.dovecot_proc and self.dovecot_proc.poll() is None:
            self.dovecot_proc.send_signal(signal.SIGTERM)
            try:
                self.dovecot_proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.dovecot_proc.kill()
                self.dovecot_proc.wait()
        self.pf.stop()
