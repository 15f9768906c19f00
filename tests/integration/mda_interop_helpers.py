"""Private instances of the real Postfix and Dovecot from Debian for the tern-mda
interop tests, configured entirely inside the test's temporary directory and
listening only on test ports."""
import os
import pwd
import shutil
import subprocess

from tern_harness import free_port, port_open, wait_for


class Postfix:
    """A private Postfix: its own config directory, queue, log and SMTP port, handing
    every virtual domain recipient to tern-mda over LMTP (virtual_transport =
    lmtp:unix:...), the way a Postfix + Dovecot host does it."""

    def __init__(self, base, lmtp_socket, domain="example.test"):
        self.base = base
        self.conf = os.path.join(base, "postfix-etc")
        self.queue = os.path.join(base, "postfix-spool")
        self.data = os.path.join(base, "postfix-data")
        self.log_path = os.path.join(base, "postfix.log")
        self.port = free_port()
        for d in (self.conf, self.data, self.queue):
            os.makedirs(d, exist_ok=True)
        pw = pwd.getpwnam("postfix")
        os.chown(self.data, pw.pw_uid, pw.pw_gid)  # data_directory belongs to mail_owner
        master = open("/etc/postfix/master.cf").read().splitlines()
        out = []
        for line in master:
            f = line.split()
            if f and not line.startswith((" ", "#")) and len(f) >= 8:
                if f[0] == "smtp" and f[1] == "inet":
                    f[0] = f"127.0.0.1:{self.port}"
                f[4] = "n"  # no chroot: the private queue has no copies of /etc
                line = "  ".join(f[:8]) + (" " + " ".join(f[8:]) if len(f) > 8 else "")
            out.append(line)
        with open(os.path.join(self.conf, "master.cf"), "w") as fh:
            fh.write("\n".join(out) + "\n")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "mx.example.test",
            "mydomain": domain,
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "virtual_mailbox_domains": domain,
            "virtual_transport": f"lmtp:unix:{lmtp_socket}",
            "smtpd_reject_unlisted_recipient": "no",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "maillog_file": self.log_path,
            "maillog_file_prefixes": base,
            "smtputf8_enable": "yes",
            "lmtp_destination_recipient_limit": "50",
            "delay_warning_time": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
        }
        with open(os.path.join(self.conf, "main.cf"), "w") as fh:
            for k, v in settings.items():
                fh.write(f"{k} = {v}\n")
        self.started = False

    def run(self, *args, check=True):
        return subprocess.run(["postfix", "-c", self.conf, *args], capture_output=True, text=True, check=check,
                              timeout=120)

    def start(self):
        r = self.run("check", check=False)
        if r.returncode != 0:
            # Postfix writes its reasons to stderr only when that is a terminal.
            why = subprocess.run(["script", "-qc", f"postfix -c {self.conf} check", "/dev/null"], capture_output=True,
                                 text=True, timeout=60).stdout
            raise RuntimeError(f"postfix check failed: {why}")
        self.run("start")
        self.started = True
        wait_for(lambda: port_open("127.0.0.1", self.port), timeout=30, what="postfix smtpd")
        return self

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.started:
            self.run("stop", check=False)
            self.started = False
            # master -w exits when its children are gone; make sure none is left.
            pid_file = os.path.join(self.queue, "pid", "master.pid")
            wait_for(lambda: not os.path.exists(pid_file) or not _alive(pid_file), timeout=30,
                     what="postfix master exit")


def _alive(pid_file):
    try:
        pid = int(open(pid_file).read().strip())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


class Dovecot:
    """doveadm with a private dovecot.conf: the real Dovecot mail storage code opens
    the Maildirs tern-mda wrote. Users are looked up over tern-authd's auth-userdb
    socket (auth_socket_path): Dovecot's own auth-master client talking to Tern."""

    def __init__(self, base, auth_userdb_socket):
        self.base = base
        self.conf = os.path.join(base, "dovecot.conf")
        run = os.path.join(base, "dovecot-run")
        os.makedirs(run, exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(f"""
base_dir = {run}
state_dir = {run}
log_path = {os.path.join(base, "dovecot.log")}
ssl = no
protocols =
first_valid_uid = 1
auth_socket_path = {auth_userdb_socket}
mail_location = maildir:~/Maildir
""")

    def doveadm(self, *args):
        r = subprocess.run(["doveadm", "-c", self.conf, *args], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)}: {r.returncode} {r.stderr}")
        return r.stdout

    def fetch(self, user, mailbox="INBOX"):
        """[(uid, flags, subject)] as Dovecot sees them."""
        out = self.doveadm("-f", "tab", "fetch", "-u", user, "uid flags hdr.subject", "mailbox", mailbox, "all")
        rows = []
        for line in out.splitlines()[1:]:
            parts = line.split("\t")
            subject = parts[2] if len(parts) > 2 else ""
            rows.append((int(parts[0]), parts[1], subject))
        return rows
