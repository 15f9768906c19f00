"""Exactly once under crashes (issue 11): tern-mta and tern-mda killed together with
SIGKILL, at each step of the commit path deterministically (fault points, see
common/fault.h) and at random moments under load, and restarted by tern-master.
Every message that got its 250 is in the Maildir exactly once; a message whose
DATA got no reply (the client cannot know) is there at most once; nothing else is.

The windows (mda/delivery.cc, mta/qmgr.cc): tern-mda renames the message into new/,
then commits its UID and the XTERN-DELIVERY-ID pair to the index, then replies 250;
tern-mta records the 250 in its queue, then removes the message. A crash between any
two of them makes tern-mta send the message again under the same delivery id."""
import os
import random
import re
import signal
import smtplib
import tempfile
import threading
import time

import pytest

from mta_util import add_user, mta_settings, prepare_mail_dir, table_dir
from tern_harness import BIN, wait_for
from test_mta_delivery import messages

POINTS = ["mda.before_rename", "mda.after_rename", "mda.after_index", "mta.after_lmtp_reply",
          "mta.after_queue_update"]


def crash_settings(d):
    # Restart at once, and retry a deferred message within a second or two.
    return mta_settings(d, smtpd_client_connection_count_limit=0, master_restart_delay="0s",
                        service_throttle_time="1s", master_stable_time="1s", minimal_backoff_time="1s",
                        maximal_backoff_time="2s", queue_run_delay="1s")


@pytest.fixture
def crashable(tern_factory, monkeypatch):
    fdir = tempfile.mkdtemp(prefix="tern-fault-", dir="/tmp")
    os.chmod(fdir, 0o777)  # the daemons' users take (unlink) the armed points
    monkeypatch.setenv("TERN_FAULT_DIR", fdir)
    d = table_dir()
    t = tern_factory(settings=crash_settings(d))
    prepare_mail_dir(t)
    add_user(t, "alice@example.test")
    t.fault_dir = fdir
    return t


def running(t, service, not_pid):
    st = (t.status() or {}).get(service, {})
    return st.get("state") == "running" and st.get("pid") not in (None, 0, not_pid)


def kill_both(t):
    """SIGKILL tern-mta and tern-mda at the same moment; wait for both to be back."""
    st = t.status()
    mta, mda = st["mta"]["pid"], st["mda"]["pid"]
    for pid in (mta, mda):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: running(t, "mta", mta) and running(t, "mda", mda), 30, what="mta and mda restarted")


def counts(t):
    out = {}
    for m in messages(t, "alice"):
        tok = re.search(rb"X-Token: (tok-[\w-]+)", m)
        if tok:
            k = tok.group(1).decode()
            out[k] = out.get(k, 0) + 1
    return out


def queue_empty(t):
    import subprocess
    return "Mail queue is empty" in subprocess.run([f"{BIN}/mailq"], capture_output=True, text=True,
                                                   env=t.env()).stdout


def send(t, token, timeout=20):
    """'ok' (250 after DATA), 'unsure' (DATA sent, no reply), 'failed' (before DATA)."""
    try:
        s = smtplib.SMTP("127.0.0.1", t.port("smtp"), timeout=timeout)
        s.ehlo("client.example")
        s.mail("a@sender.example")
        code, _ = s.rcpt("alice@example.test")
        if code != 250:
            return "failed"
    except (OSError, smtplib.SMTPException):
        return "failed"
    try:
        code, _ = s.data(f"Subject: {token}\r\nX-Token: {token}\r\n\r\nbody {token}\r\n".encode())
    except (OSError, smtplib.SMTPException):
        return "unsure"
    try:
        s.quit()
    except (OSError, smtplib.SMTPException):
        pass
    return "ok" if code == 250 else "failed"


@pytest.mark.parametrize("point", POINTS)
def test_both_killed_at_each_step_deliver_once(crashable, point):
    """Stopped at one step of the commit path, both daemons are killed there: after
    the restart the message is in the Maildir once, and the log says which path the
    retry took."""
    t = crashable
    token = "tok-" + point.replace(".", "-")
    open(os.path.join(t.fault_dir, point), "w").close()
    assert send(t, token) == "ok"
    hit = wait_for(lambda: [f for f in os.listdir(t.fault_dir) if f.startswith(point + ".")], 30,
                   what=f"fault point {point} reached")
    stopped = int(hit[0].rsplit(".", 1)[1])

    def state():
        with open(f"/proc/{stopped}/stat") as f:
            return f.read().split(") ", 1)[1][0]
    # The process writes its marker, then stops itself (common/fault.cc): the stop
    # can come a moment after the marker is seen.
    wait_for(lambda: state() == "T", 10, what="the process stopped at the point")
    kill_both(t)
    wait_for(lambda: counts(t).get(token), 60, what="the message delivered after the restart")
    wait_for(lambda: queue_empty(t), 60, what="empty queue")
    time.sleep(1)  # nothing more must arrive: a second copy would come from a retry already in flight
    assert counts(t) == {token: 1}
    log = t.log()
    if point == "mda.after_rename":
        assert "written by an interrupted attempt; not again" in log, log[-3000:]
    if point in ("mda.after_index", "mta.after_lmtp_reply"):
        assert "already delivered to alice@example.test: not again" in log, log[-3000:]


def test_fifty_kills_of_both_under_load_lose_and_repeat_nothing(crashable):
    """10 clients send for the whole run, one message per connection; meanwhile
    tern-mta and tern-mda are killed together 50 times at random moments."""
    t = crashable
    results = {}
    lock = threading.Lock()
    stop = threading.Event()

    def client(n):
        i = 0
        while not stop.is_set():
            token = f"tok-{n}-{i}"
            i += 1
            r = send(t, token, timeout=10)
            with lock:
                results[token] = r
            if r != "ok":
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(10)]
    for th in threads:
        th.start()
    rng = random.Random(int(os.environ.get("TERN_CRASH_SEED", time.time())))
    wait_for(lambda: sum(1 for r in results.values() if r == "ok") >= 20, 60, what="20 accepted messages")
    kills = 0
    for _ in range(50):
        time.sleep(rng.uniform(0.1, 1.2))
        kill_both(t)
        kills += 1
    time.sleep(1)
    stop.set()
    for th in threads:
        th.join(timeout=60)
    ok = {k for k, r in results.items() if r == "ok"}
    unsure = {k for k, r in results.items() if r == "unsure"}
    failed = {k for k, r in results.items() if r == "failed"}
    wait_for(lambda: ok <= set(counts(t)), 180, what="every accepted message delivered")
    wait_for(lambda: queue_empty(t), 120, what="empty queue")
    got = counts(t)
    lost = sorted(ok - set(got))
    dupes = {k: v for k, v in got.items() if v > 1}
    strays = sorted(set(got) & failed)
    log = t.log()
    print(f"crash test: {kills} kills of tern-mta + tern-mda, {len(ok)} acknowledged, {len(unsure)} unsure, "
          f"{len(failed)} refused while down; lost {len(lost)}, duplicates {len(dupes)}; "
          f"retries answered from the index: {log.count('not again')}")
    assert not lost, lost
    assert not dupes, dupes
    assert not strays, strays
    assert len(ok) > 100
