#!/usr/bin/python3
"""LMTP delivery rate of tern-mda, side by side with Dovecot's LMTP server.

Delivers COUNT messages of 1 KB and of 100 KB to one Maildir user over the LMTP
UNIX socket with 1 and with 4 concurrent clients (one message per transaction,
connections kept open), fsync on (Tern: mail_fsync = optimized, the default: file
fsync, rename, directory fsync shared by deliveries that finish together, LMDB
index commit; Dovecot: mail_fsync = optimized, its default). Prints messages per
second and the Tern/Dovecot ratio.

    bench/mda_lmtp.py [--count N] [--no-dovecot]

Needs a build (build/bin) and, for Dovecot, root (dovecot drops to the mail user).
"""
import argparse
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from mda_helpers import Lmtp, add_user, make_tern, message  # noqa: E402
from tern_harness import wait_for, unix_open  # noqa: E402


def run_clients(sock, count, clients, size):
    body = ("x" * 76 + "\r\n") * max(1, size // 78)
    msg = message("bench", body=body)
    per = count // clients
    errors = []

    def worker(i):
        try:
            c = Lmtp(sock)
            for _ in range(per):
                _, data = c.transaction("bench@example.org", ["demo@example.test"], msg)
                if not data or data[0][0] != 250:
                    errors.append(data)
            c.quit()
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.monotonic() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} failed deliveries, first: {errors[0]}")
    return per * clients / dt


def start_dovecot(base, mail_user):
    run = os.path.join(base, "dovecot-run")
    os.makedirs(run, exist_ok=True)
    conf = os.path.join(base, "dovecot.conf")
    mail = os.path.join(base, "dovecot-mail")
    os.makedirs(mail, exist_ok=True)
    pw = pwd.getpwnam(mail_user)
    os.chown(mail, pw.pw_uid, pw.pw_gid)
    with open(conf, "w") as f:
        f.write(f"""
base_dir = {run}
state_dir = {run}
log_path = {os.path.join(base, "dovecot.log")}
ssl = no
protocols = lmtp
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_fsync = optimized
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_user} home={mail}/%d/%n
}}
""")
    proc = subprocess.Popen(["dovecot", "-F", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = os.path.join(run, "lmtp")
    wait_for(lambda: unix_open(sock), timeout=30, what="dovecot lmtp")
    return proc, sock


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--no-dovecot", action="store_true")
    args = ap.parse_args()
    t = make_tern()
    results = {}
    dproc = None
    try:
        add_user(t, "demo@example.test")
        targets = [("tern-mda", t.socket_path("lmtp"))]
        if not args.no_dovecot and os.geteuid() == 0 and shutil.which("dovecot"):
            dproc, dsock = start_dovecot(t.dir, t.settings["mail_uid"])
            targets.append(("dovecot", dsock))
        for size, label in ((1024, "1 KB"), (100 * 1024, "100 KB")):
            for clients in (1, 4):
                for name, sock in targets:
                    count = args.count if size <= 1024 else max(40, args.count // 4)
                    run_clients(sock, 20, 1, size)  # warm-up: user's Maildir and index exist
                    results[(name, label, clients)] = run_clients(sock, count, clients, size)
        print(f"{'size':>7} {'clients':>7} " + " ".join(f"{n:>12}" for n, _ in targets) +
              ("     ratio" if len(targets) > 1 else ""))
        for label in ("1 KB", "100 KB"):
            for clients in (1, 4):
                row = [results[(n, label, clients)] for n, _ in targets]
                line = f"{label:>7} {clients:>7} " + " ".join(f"{v:10.0f}/s" for v in row)
                if len(row) > 1:
                    line += f"  {row[0] / row[1]:8.2f}"
                print(line)
    finally:
        if dproc:
            dproc.send_signal(signal.SIGTERM)
            dproc.wait(timeout=30)
        t.cleanup()


if __name__ == "__main__":
    main()
