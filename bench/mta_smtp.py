#!/usr/bin/python3
"""tern-mta next to a private Postfix, measured with Postfix's smtp-source.

Both MTAs hand their mail to the same tern-mda over LMTP (Postfix with
virtual_transport = lmtp:unix:..., as on a Postfix + Dovecot host), so the numbers
compare the MTAs: messages per second accepted (smtp-source's run time) and end
to end (until the last message is in the Maildir), 1 KB messages, concurrency 1,
10 and 50.

Fsync behaviour: tern-mta sends 250 after the message and its envelope are in an
LMDB commit (fsync), shared by every session that finished meanwhile (group
commit); Postfix fsyncs each queue file before its 250. tern-mda fsyncs each
delivered file and its directory (mail_fsync = optimized) in both runs.

    bench/mta_smtp.py [messages-at-concurrency-1]
Needs root (Postfix), a build in build/, and smtp-source (Debian's postfix).
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from mda_interop_helpers import Postfix  # noqa: E402
from mta_util import add_user, mta_settings, prepare_mail_dir  # noqa: E402
from tern_harness import Tern, wait_for  # noqa: E402


def delivered(t):
    d = os.path.join(t.dir, "mail", "example.test", "alice", "Maildir", "new")
    try:
        return len(os.listdir(d))
    except FileNotFoundError:
        return 0


def run(t, port, sessions, messages):
    before = delivered(t)
    t0 = time.monotonic()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", "1024", "-f",
                    "bench@sender.example", "-t", "alice@example.test", f"127.0.0.1:{port}"], check=True,
                   capture_output=True, timeout=3600)
    accepted = time.monotonic() - t0
    wait_for(lambda: delivered(t) >= before + messages, timeout=3600, interval=0.05, what="deliveries")
    end_to_end = time.monotonic() - t0
    return messages / accepted, messages / end_to_end


def main():
    n1 = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    t = Tern(settings=mta_settings(smtpd_client_connection_count_limit=0, mynetworks="127.0.0.0/8"))
    t.start()
    pf = None
    try:
        prepare_mail_dir(t)
        add_user(t, "alice@example.test")
        pf = Postfix(t.dir, t.socket_path("lmtp"))
        pf.start()
        print("| MTA | concurrency | messages | accepted msg/s | end to end msg/s |")
        print("|---|---|---|---|---|")
        for sessions, messages in ((1, n1), (10, n1 * 4), (50, n1 * 8)):
            for name, port in (("tern-mta", t.port("smtp")), ("Postfix 3.7", pf.port)):
                acc, e2e = run(t, port, sessions, messages)
                print(f"| {name} | {sessions} | {messages} | {acc:.0f} | {e2e:.0f} |", flush=True)
    finally:
        if pf:
            pf.stop()
        t.stop()
        t.cleanup()


if __name__ == "__main__":
    main()
