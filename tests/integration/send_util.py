"""Multi-host helpers for the tests of tern-mta's sending half (test_send*.py).

Each test process moves into a network namespace of its own (unshare(CLONE_NEWNET),
then `ip link set lo up`), so the hosts of the test world, two Tern instances on
127.0.0.2:25 and 127.0.0.3:25, a private Postfix, smtp-sink, dnsmasq, can use the
real SMTP port without meeting the machine's own mail system or a test running in
parallel, and nothing can leave the machine. The namespace needs root, as binding
port 25 does.

The DNS of the test world is dnsmasq, started here with its own records:

    a.test       MX 10 mx.a.test     mx.a.test  A 127.0.0.2     (Tern A)
    b.test       MX 10 mx.b.test     mx.b.test  A 127.0.0.3     (Tern B)
    c.test       MX 10 mxalias.c.test, a CNAME chain to mx.c.test A 127.0.0.4
    d.test       MX 10 mx.d.test     mx.d.test  A 127.0.0.4     (a scripted peer)
    e.test       MX 10 mx.e.test     mx.e.test  A 127.0.0.6     (nobody listens)
    f.test       MX 10 mx1.f.test    mx1.f.test A 127.0.0.6 (nobody listens)
                 MX 20 mx2.f.test    mx2.f.test A 127.0.0.4 (the backup MX)
    smtp.relay.test  A 127.0.0.5     (a private Postfix, the smarthost of test_send_relay)
    nullmx.test  MX 0 .              (RFC 7505)
    nomx.test    no MX, A 127.0.0.4  (the implicit MX)
    anything else under test.        NXDOMAIN
    timeout.test                     forwarded to a dead upstream: dnsmasq 2.90 then
                                     never answers (verified by hand: it does not make
                                     up a SERVFAIL), so the resolver times out
    servfail.test                    forwarded to ServfailUpstream below, which answers
                                     every query with rcode 2; dnsmasq passes that
                                     SERVFAIL on to the client (verified by hand)
    refused.test                     forwarded to a dnsmasq without that zone, which
                                     answers REFUSED, passed on as it is
"""
import ctypes
import os
import re
import socket
import subprocess
import threading

import pytest

from mta_util import add_user, mta_settings, prepare_mail_dir
from tern_harness import Tern, is_root, proc_status, wait_for

CLONE_NEWNET = 0x40000000
_in_netns = False


def enter_netns():
    """Moves this process (and everything it starts from now on) into a new network
    namespace with the loopback interface up. Once per process."""
    global _in_netns
    if _in_netns:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "unshare(CLONE_NEWNET): " + os.strerror(err))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    _in_netns = True


needs_root = pytest.mark.skipif(not is_root(), reason="port 25 and a network namespace of its own need root")


def free_udp_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def dns_answers(port, name=b"\x01a\x04test\x00"):
    """True when a DNS server answers an MX query on 127.0.0.1:port."""
    q = bytes.fromhex("abcd01000001000000000000") + name + b"\x00\x0f\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(q, ("127.0.0.1", port))
        return s.recv(512)[:2] == b"\xab\xcd"


class ServfailUpstream:
    """The upstream dnsmasq forwards servfail.test to: it answers every query with
    SERVFAIL (rcode 2), as a broken authoritative server does. Only dnsmasq talks to it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self.stopping = False
        self.sock.settimeout(0.2)  # to notice stop(); closing does not wake recvfrom
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(q) < 12:
                continue
            self.queries += 1
            r = bytearray(q)
            r[2] = 0x80 | (q[2] & 0x01)  # QR, the client's RD
            r[3] = 0x80 | 2              # RA, rcode SERVFAIL
            r[6:12] = bytes(6)           # no answer, authority or additional records
            self.sock.sendto(bytes(r), peer)

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=5)
        self.sock.close()


class Dns:
    """dnsmasq with the test world's records (see the module doc)."""

    def __init__(self):
        self.port = free_udp_port()
        self.dead_port = free_udp_port()  # nobody listens here
        self.refuser_port = free_udp_port()
        self.servfail = ServfailUpstream()
        common = ["-k", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                  "--conf-file=/dev/null", "--log-facility=/dev/null", "--pid-file="]
        if os.geteuid() == 0:
            common.append("--user=root")
        self.refuser = subprocess.Popen(["/usr/sbin/dnsmasq", f"--port={self.refuser_port}", *common],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        records = [
            "--local=/test/",
            "--mx-host=a.test,mx.a.test,10", "--host-record=mx.a.test,127.0.0.2",
            "--mx-host=b.test,mx.b.test,10", "--host-record=mx.b.test,127.0.0.3",
            "--mx-host=c.test,mxalias.c.test,10", "--cname=mxalias.c.test,mxalias2.c.test",
            "--cname=mxalias2.c.test,mx.c.test", "--host-record=mx.c.test,127.0.0.4",
            "--mx-host=d.test,mx.d.test,10", "--host-record=mx.d.test,127.0.0.4",
            "--mx-host=e.test,mx.e.test,10", "--host-record=mx.e.test,127.0.0.6",
            "--mx-host=f.test,mx1.f.test,10", "--host-record=mx1.f.test,127.0.0.6",
            "--mx-host=f.test,mx2.f.test,20", "--host-record=mx2.f.test,127.0.0.4",
            "--host-record=smtp.relay.test,127.0.0.5",
            "--mx-host=nullmx.test,.,0",
            "--host-record=nomx.test,127.0.0.4",
            f"--server=/timeout.test/127.0.0.1#{self.dead_port}",
            f"--server=/servfail.test/127.0.0.1#{self.servfail.port}",
            f"--server=/refused.test/127.0.0.1#{self.refuser_port}",
        ]
        self.proc = subprocess.Popen(["/usr/sbin/dnsmasq", f"--port={self.port}", *common, *records],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: dns_answers(self.port), 10, what="dnsmasq answering")

    @property
    def servers(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        for p in (self.proc, self.refuser):
            p.terminate()
            p.wait()
        self.servfail.stop()


def domain_settings(dns, ip, tables=None, **extra):
    """Settings for a domain's Tern instance on `ip`, port 25, sending from `ip`,
    retrying quickly, asking the test world's DNS. myorigin is the domain, as on a
    real domain's mail host, so that postmaster (an alias of alice) is alice@<domain>."""
    s = mta_settings(tables, dns_servers=dns.servers, smtpd_port="25", smtp_bind_address=ip, myorigin="$mydomain",
                     master_services="authd, mda, mta", minimal_backoff_time="1s", maximal_backoff_time="2s",
                     queue_run_delay="1s", dns_timeout="1s", dns_tries="1")
    s.update({k: str(v) for k, v in extra.items()})
    return s


def domain_tern(tern_factory, dns, domain, ip, users=(), start=True, **extra):
    """The Tern instance of `domain` (myhostname mx.<domain>) on ip:25, with users."""
    t = tern_factory(settings=domain_settings(dns, ip, **extra), start=False, address=ip, hostname=f"mx.{domain}",
                     domain=domain)
    t.pending_users = [f"{u}@{domain}" for u in users]
    if start:
        start_domain(t)
    return t


def start_domain(t):
    """Starts an instance made with start=False and adds its users."""
    t.start()
    prepare_mail_dir(t)
    for u in getattr(t, "pending_users", []):
        add_user(t, u)


def maildir_messages(t, user, domain):
    out = []
    base = os.path.join(t.dir, "mail", domain, user, "Maildir")
    for sub in ("new", "cur"):
        d = os.path.join(base, sub)
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                with open(os.path.join(d, name), "rb") as f:
                    out.append(f.read())
    return out


def wait_messages(t, user, domain, n=1, timeout=30):
    return wait_for(lambda: (lambda m: m if len(m) >= n else None)(maildir_messages(t, user, domain)), timeout,
                    what=f"{n} message(s) for {user}@{domain}")


def wait_queue_empty(t, timeout=30):
    wait_for(lambda: t.ternctl("queue", "show").stdout.strip() == "", timeout, what="an empty queue")


def log_lines(t, needle):
    return [l for l in t.log().splitlines() if needle in l]


class ScriptedPeer:
    """An SMTP server on ip:25 that follows a script, for what a real server will not
    do on purpose (hang up in the middle of DATA). `behaviour` is "cut-data" (354,
    then close after `cut_after` body bytes), "cut-bdat" (CHUNKING, close inside the
    chunk), "accept" (take the message: 250) or "helo-only" (refuse EHLO with 502, as
    an old server does, and take the message after HELO) or "silent" (accept the
    connection and never say a word)."""

    def __init__(self, ip="127.0.0.4", behaviour="cut-data", cut_after=10):
        self.ip = ip
        self.behaviour = behaviour
        self.cut_after = cut_after
        self.sessions = 0
        self.received = []
        self.commands = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, 25))
        self.sock.listen(8)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.sessions += 1
            try:
                self._session(c)
            except OSError:
                pass
            finally:
                c.close()

    def _session(self, c):
        f = c.makefile("rb")
        if self.behaviour == "silent":
            f.read()  # never greet; wait for the client to give up and close
            return
        c.sendall(b"220 mx.d.test ESMTP scripted\r\n")
        while True:
            line = f.readline()
            if not line:
                return
            cmd = line.strip().upper()
            if cmd.startswith(b"EHLO") and self.behaviour == "helo-only":
                c.sendall(b"502 5.5.2 Error: command not recognized\r\n")
            elif cmd.startswith(b"HELO"):
                self.commands.append(cmd)
                c.sendall(b"250 mx.d.test\r\n")
            elif cmd.startswith(b"EHLO"):
                ext = b"250-mx.d.test\r\n250-PIPELINING\r\n"
                if self.behaviour == "cut-bdat":
                    ext += b"250-CHUNKING\r\n"
                c.sendall(ext + b"250 8BITMIME\r\n")
            elif cmd.startswith(b"MAIL") or cmd.startswith(b"RCPT") or cmd.startswith(b"RSET"):
                self.commands.append(cmd)
                c.sendall(b"250 2.0.0 Ok\r\n")
            elif cmd.startswith(b"BDAT"):
                size = int(cmd.split()[1])
                if self.behaviour == "cut-bdat":
                    f.read(min(self.cut_after, size))
                    return  # hang up inside the chunk
                self.received.append(f.read(size))
                c.sendall(b"250 2.0.0 Ok: queued\r\n")
            elif cmd == b"DATA":
                c.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                if self.behaviour == "cut-data":
                    f.read(self.cut_after)
                    return  # hang up in the middle of the message
                body = b""
                while True:
                    l = f.readline()
                    if not l or l == b".\r\n":
                        break
                    body += l
                self.received.append(body)
                c.sendall(b"250 2.0.0 Ok: queued as SCRIPTED\r\n")
            elif cmd == b"QUIT":
                c.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                c.sendall(b"502 5.5.2 Error: command not recognized\r\n")

    def stop(self):
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


def smtp_sink(ip, port=25, extra=(), stdout=subprocess.DEVNULL):
    """Postfix's smtp-sink on ip:port (it advertises PIPELINING, 8BITMIME, and
    accepts everything)."""
    # As root it must be told which user to become (-u); it binds first.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    p = subprocess.Popen(["/usr/sbin/smtp-sink", *user, *extra, f"{ip}:{port}", "100"], stdout=stdout,
                         stderr=subprocess.DEVNULL)

    def up():
        try:
            with socket.create_connection((ip, port), timeout=0.5):
                return True
        except OSError:
            if p.poll() is not None:
                raise RuntimeError(f"smtp-sink exited with {p.returncode}")
            return False

    wait_for(up, 10, what="smtp-sink listening")
    return p


# --- fixtures (imported by the test_send*.py modules) ----------------------------

@pytest.fixture(scope="module")
def netns():
    if not is_root():
        pytest.skip("port 25 and a network namespace of its own need root")
    enter_netns()


@pytest.fixture(scope="module")
def dns(netns):
    d = Dns()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def module_factory(request):
    """Like conftest's tern_factory, for instances shared by a module's tests."""
    made = []

    def make(settings=None, start=True, **kw):
        inst = Tern(settings=settings or {}, **kw)
        made.append(inst)
        if start:
            inst.start()
        return inst

    yield make
    for inst in made:
        inst.stop()
        inst.cleanup()


def message_of(raw):
    import email
    import email.policy
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def report_fields(raw):
    """The per-message and per-recipient fields of an RFC 3464 report, as one dict per
    block (the first is the per-message block)."""
    m = message_of(raw)
    assert m.get_content_type() == "multipart/report", m.get_content_type()
    assert m.get_param("report-type") == "delivery-status"
    parts = m.get_payload()
    status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    assert len(status) == 1
    text = status[0].as_bytes().decode(errors="replace").split("\n\n", 1)[1]
    blocks = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = {}
        # Unfold first: a long Diagnostic-Code is folded (RFC 5322 2.2.3).
        for line in re.sub(r"\n[ \t]+", " ", block).splitlines():
            if ":" in line:
                k, _, v = line.partition(":")
                fields[k.strip()] = v.strip()
        if fields:
            blocks.append(fields)
    return m, blocks


def reconfigure(t, **settings):
    """Changes settings and waits until a new tern-mta runs on them."""
    old = t.pid_of("mta")
    t.set(**settings)
    t.reload()
    wait_for(lambda: (lambda st: st and st["mta"]["pid"] not in (0, old) and st["mta"]["state"] == "running")(t.status()),
             20, what="tern-mta restarted on the new configuration")
    # The old tern-mta shares the listening sockets until it has exited: a flush it
    # accepted while stopping would be lost with it.
    wait_for(lambda: not os.path.exists(f"/proc/{old}") or proc_status(old).get("State", "").startswith("Z"), 20,
             what=f"the old tern-mta (pid {old}) to exit")
    # Its local socket answers once it runs; queue commands may go now.
    wait_for(lambda: t.ternctl("queue", "flush", "ALL", check=False).returncode == 0, 20, what="tern-mta answering")
