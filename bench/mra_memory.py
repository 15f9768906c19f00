#!/usr/bin/python3
"""Memory of idle IMAP sessions: tern-mra side by side with Dovecot.

Creates USERS virtual users with MESSAGES messages each in INBOX (delivered by
tern-mda; Dovecot gets a copy of the same Maildirs), then opens CONNECTIONS
authenticated IMAP connections spread over the users (LOGIN, SELECT INBOX, then
nothing), and sums RSS and PSS (from /proc/<pid>/smaps_rollup) over
  - every tern-mra process (the login process, tern-mra-postlogin, the workers), and
  - every Dovecot process of a private instance on other ports (imap-login, imap,
    and its master, auth, anvil, log, config, stats), and its imap + imap-login alone,
before and after the connections. Plaintext IMAP on loopback (both allow it there);
with --tls the connections use implicit TLS (993-style) instead.

    bench/mra_memory.py [--connections 1000] [--users 100] [--messages 20] [--tls]

Needs root (Dovecot drops to the mail user; Tern's processes run as their users).
"""
import argparse
import os
import pwd
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from mra_helpers import FAST, PW, deliver, make_mra, maildir_of  # noqa: E402
from mda_helpers import add_user  # noqa: E402
from tern_harness import free_port, port_open, wait_for  # noqa: E402

import measure  # noqa: E402  (bench/, next to this file)


def smaps(pid):
    out = {"Rss": 0, "Pss": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in out:
                    out[k] = int(v.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def total(pids):
    rss = pss = 0
    for p in pids:
        m = smaps(p)
        rss += m["Rss"]
        pss += m["Pss"]
    return rss, pss


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def descendants(pid):
    """Every process below pid (measure.tree: one pass over /proc)."""
    return [p for p in measure.tree([pid]) if p != pid]


def open_sessions(port, users, count, tls):
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    socks = []
    for i in range(count):
        user = users[i % len(users)]
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        if ctx:
            s = ctx.wrap_socket(s)
        f = s.makefile("rb")
        assert f.readline().startswith(b"* OK"), "greeting"
        s.sendall(f"a LOGIN {user} {PW}\r\nb SELECT INBOX\r\n".encode())
        while True:
            line = f.readline()
            if not line:
                raise RuntimeError(f"connection {i} closed during login")
            if line.startswith(b"a NO") or line.startswith(b"a BAD"):
                raise RuntimeError(f"login {i} failed: {line!r}")
            if line.startswith(b"b "):
                assert line.startswith(b"b OK"), line
                break
        socks.append((s, f))
    return socks


def start_dovecot(base, mail_user, users, tls_cert, tls_key):
    run = os.path.join(base, "dovecot-run")
    os.makedirs(run, exist_ok=True)
    conf = os.path.join(base, "dovecot.conf")
    pwfile = os.path.join(base, "dovecot-passwd")
    with open(pwfile, "w") as f:
        for u in users:
            f.write(f"{u}:{{PLAIN}}{PW}\n")
    port, sport = free_port(), free_port()
    with open(conf, "w") as f:
        f.write(f"""
base_dir = {run}
state_dir = {run}
log_path = {os.path.join(base, "dovecot.log")}
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{tls_cert}
ssl_key = <{tls_key}
disable_plaintext_auth = no
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_max_userip_connections = 100000
default_process_limit = 5000
default_client_limit = 10000
default_vsz_limit = 0
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {sport}
    ssl = yes
  }}
}}
service imap {{
  process_limit = 5000
}}
service anvil {{
  chroot =
}}
passdb {{
  driver = passwd-file
  args = {pwfile}
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_user} home={base}/dovecot-mail/%d/%n
}}
""")
    proc = subprocess.Popen(["dovecot", "-F", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: port_open("127.0.0.1", port), timeout=30, what="dovecot imap")
    return proc, port, sport


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--no-dovecot", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/mra_memory.py needs root")
    # Both servers and this client hold one descriptor per connection (and more).
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    users = [f"u{i}@example.test" for i in range(args.users)]
    t = make_mra(settings={"mail_max_userip_connections": "100000", "mail_max_user_connections": "100000",
                           "login_max_connections_per_ip": "100000"},
                 users=())
    dproc = None
    try:
        for u in users:
            add_user(t, u, password=PW)
        for u in users:
            for m in range(args.messages):
                deliver(t, u, f"message {m}", body=("lorem ipsum dolor sit amet " * 20 + "\r\n") * 5)
        results = []
        # --- Tern
        st = t.status()
        login, post = st["mra"]["pid"], st["mra-postlogin"]["pid"]

        def tern_pids():
            return [login, post] + descendants(post)

        before = total(tern_pids())
        socks = open_sessions(t.port("imaps" if args.tls else "imap"), users, args.connections, args.tls)
        time.sleep(1)  # let the workers settle; nothing to wait for but the kernel's accounting
        after = total(tern_pids())
        workers = descendants(post)
        print(f"tern-mra: {len(workers)} worker(s), {len(tern_pids())} processes")
        for p in tern_pids():
            m = smaps(p)
            print(f"  {p:>7} {comm(p):<20} RSS {m['Rss'] / 1024:8.1f} MiB  PSS {m['Pss'] / 1024:8.1f} MiB")
        results.append(("tern-mra (all processes)", before, after))
        for s, f in socks:
            s.close()
        # --- Dovecot
        if not args.no_dovecot and shutil.which("dovecot"):
            base = t.dir
            shutil.copytree(os.path.join(t.dir, "mail"), os.path.join(base, "dovecot-mail"), symlinks=True)
            pw = pwd.getpwnam(t.settings["mail_uid"])
            for d, dirs, files in os.walk(os.path.join(base, "dovecot-mail")):
                os.chown(d, pw.pw_uid, pw.pw_gid)
                for n in files:
                    if n.startswith("tern-index"):
                        os.unlink(os.path.join(d, n))
                    else:
                        os.chown(os.path.join(d, n), pw.pw_uid, pw.pw_gid)
            dproc, dport, dsport = start_dovecot(base, t.settings["mail_uid"], users, t.cert, t.key)

            def dovecot_pids():
                return [dproc.pid] + descendants(dproc.pid)

            def imap_pids():
                return [p for p in dovecot_pids() if comm(p) in ("imap", "imap-login")]

            time.sleep(1)  # a moment for Dovecot's start-up processes; nothing to wait for
            before_all, before_imap = total(dovecot_pids()), total(imap_pids())
            socks = open_sessions(dsport if args.tls else dport, users, args.connections, args.tls)
            time.sleep(1)
            after_all, after_imap = total(dovecot_pids()), total(imap_pids())
            print(f"dovecot: {len(dovecot_pids())} processes ({len(imap_pids())} imap/imap-login)")
            results.append(("dovecot (all processes)", before_all, after_all))
            results.append(("dovecot (imap + imap-login)", before_imap, after_imap))
            for s, f in socks:
                s.close()
        n = args.connections
        print(f"\n{n} authenticated idle IMAP connections ({'TLS' if args.tls else 'plaintext'}), "
              f"{args.users} users, {args.messages} messages each")
        print(f"{'':<30} {'RSS before':>11} {'RSS after':>10} {'PSS before':>11} {'PSS after':>10} "
              f"{'PSS/conn':>10}")
        for name, b, a in results:
            print(f"{name:<30} {b[0] / 1024:9.1f}Mi {a[0] / 1024:8.1f}Mi {b[1] / 1024:9.1f}Mi {a[1] / 1024:8.1f}Mi "
                  f"{(a[1] - b[1]) / n:8.1f}Ki")
        if len(results) > 1:
            tern_pss = results[0][2][1]
            dc_pss = results[1][2][1]
            print(f"\nPSS with {n} connections: tern-mra {tern_pss / 1024:.1f} MiB, Dovecot {dc_pss / 1024:.1f} MiB "
                  f"(ratio 1/{dc_pss / max(tern_pss, 1):.1f})")
    except Exception:
        log = os.path.join(t.dir, "dovecot.log")
        if os.path.exists(log):
            with open(log) as f:
                sys.stderr.write("dovecot.log (tail):\n" + "".join(f.readlines()[-20:]))
        raise
    finally:
        if dproc:
            dproc.send_signal(signal.SIGTERM)
            try:
                dproc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                dproc.kill()
        t.cleanup()


if __name__ == "__main__":
    main()
