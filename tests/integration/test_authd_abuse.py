"""Abuse resistance of tern-authd over the real socket: failure delay, per-IP
penalty, and log lines that Debian's fail2ban filters match (checked with the real
fail2ban-regex and the exact filter lines an admin puts in jail.local)."""
import shutil
import subprocess
import threading
import time

import pytest

from authd_client import AuthClient

PW = "correct horse 9"
BAD_IP = "192.0.2.66"
GOOD_IP = "192.0.2.99"

# What authd/README.md tells an admin to put in /etc/fail2ban/jail.local.
JAIL_DOVECOT = 'dovecot[_daemon="tern/auth"]'
JAIL_POSTFIX = 'postfix[mode=auth, _daemon="tern/auth"]'


def test_wrong_passwords_from_one_ip_are_slowed_and_logged(tern_factory):
    t = tern_factory(settings={"master_services": "authd", "auth_failure_delay": "1s", "auth_penalty_max": "2s"})
    t.ternctl("user", "add", "demo@example.test", input=PW + "\n")
    path = t.socket_path("auth-client")
    streams, per_stream = 20, 10          # 200 wrong passwords, 20 at a time
    results = []                          # (elapsed seconds, reply command, index in stream)
    lock = threading.Lock()

    def attacker():
        c = AuthClient(path)
        for i in range(per_stream):
            start = time.monotonic()
            r = c.plain(i + 1, "demo@example.test", f"guess-{i}", rip=BAD_IP, service="imap")
            with lock:
                results.append((time.monotonic() - start, r[0], i))

    threads = [threading.Thread(target=attacker) for _ in range(streams)]
    for th in threads:
        th.start()
    # Meanwhile, once the attack is under way, a user on another IP logs in.
    good = AuthClient(path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lock:
            if len(results) >= 40:
                break
        time.sleep(0.05)
    start = time.monotonic()
    reply = good.plain(1, "demo@example.test", PW, rip=GOOD_IP, service="imap")
    good_elapsed = time.monotonic() - start
    with lock:
        attack_still_running = len(results) < streams * per_stream
    for th in threads:
        th.join()

    assert reply[0] == "OK"
    assert attack_still_running
    assert len(results) == 200
    assert all(cmd == "FAIL" for _, cmd, _ in results)
    # Every failure waits auth_failure_delay (1 s); every guess after a stream's first
    # was made after failures were counted for the IP, so it also paid the penalty
    # (2 s): lower bounds set by timers, not by machine speed.
    assert min(e for e, _, _ in results) >= 0.95
    later = [e for e, _, i in results if i > 0]
    assert len(later) == 180 and min(later) >= 2.9
    # The other IP paid neither: it was answered well inside the 3 s the attacker pays.
    assert good_elapsed < 2.0, good_elapsed
    log = t.log()
    assert log.count(f"lmdb(demo@example.test,{BAD_IP},") == 200
    assert log.count("Password mismatch") == 200
    assert f"lmdb(demo@example.test,{GOOD_IP}," not in log


def test_penalty_resets_after_success(tern_factory):
    t = tern_factory(settings={"master_services": "authd", "auth_failure_delay": "0", "auth_penalty_max": "3s"})
    t.ternctl("user", "add", "demo@example.test", input=PW + "\n")
    c = AuthClient(t.socket_path("auth-client"))
    assert c.plain(1, "demo@example.test", "bad", rip=BAD_IP)[0] == "FAIL"
    start = time.monotonic()
    assert c.plain(2, "demo@example.test", PW, rip=BAD_IP)[0] == "OK"
    assert time.monotonic() - start >= 1.9  # paid the 2 s penalty of one failure
    # The success cleared it; no-penalty skips it too.
    assert c.plain(3, "demo@example.test", "bad", rip=BAD_IP, extra=("no-penalty",))[0] == "FAIL"


@pytest.mark.skipif(shutil.which("fail2ban-regex") is None, reason="fail2ban is not installed (scripts/setup installs it)")
def test_fail2ban_filters_match_the_log(tern_factory):
    t = tern_factory(settings={"master_services": "authd", "auth_failure_delay": "0", "auth_penalty_max": "0"})
    t.ternctl("user", "add", "demo@example.test", input=PW + "\n")
    c = AuthClient(t.socket_path("auth-client"))
    assert c.plain(1, "demo@example.test", "bad1", rip="198.51.100.7", service="smtp")[0] == "FAIL"
    assert c.plain(2, "nobody@example.test", "bad2", rip="198.51.100.7", service="smtp")[0] == "FAIL"
    c.auth(3, "LOGIN", rip="198.51.100.8", service="imap")
    c.reply()
    c.cont(3, b"demo@example.test")
    c.reply()
    c.cont(3, b"bad3")
    assert c.reply()[0] == "FAIL"
    assert c.plain(4, "demo@example.test", PW, rip="198.51.100.9", service="smtp")[0] == "OK"
    t.wait_log("198.51.100.8")

    def regex(filt):
        r = subprocess.run(["fail2ban-regex", "--print-all-matched", "--print-no-missed", t.log_path, filt], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = regex(JAIL_DOVECOT)
    assert "Lines: " in out
    # Three failures: two from .7 over SMTP, one from .8 over IMAP; the success is not counted.
    assert "Failregex: 3 total" in out, out
    assert "198.51.100.7" in out and "198.51.100.8" in out and "198.51.100.9" not in out
    out = regex(JAIL_POSTFIX)
    # The Postfix shape is logged for SMTP services only: the two from .7.
    assert "Failregex: 2 total" in out, out
    assert "198.51.100.7" in out and "198.51.100.8" not in out
