"""ternctl queue hold|release|delete|flush|show on mail deferred by tern-mta's SMTP
transport, and `mailq`: mx.a.test (127.0.0.2) holding mail for mx.b.test
(127.0.0.3), in the test's own network namespace with dnsmasq (send_util.py)."""
import re
import smtplib
import subprocess

from send_util import (dns, domain_tern, log_lines, maildir_messages, netns, start_domain,  # noqa: F401
                       wait_messages, wait_queue_empty)
from tern_harness import BIN, wait_for


def send(sender, rcpts, body):
    s = smtplib.SMTP("127.0.0.2", 25, timeout=30)
    s.ehlo("client.a.test")
    assert s.sendmail(sender, rcpts, body) == {}
    s.quit()


def queue_ids(t):
    return re.findall(r"^queue_id: (\w+)$", t.ternctl("queue", "show").stdout, re.M)


def test_hold_release_delete(tern_factory, dns):
    b = domain_tern(tern_factory, dns, "b.test", "127.0.0.3", users=["bob"], start=False)
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], minimal_backoff_time="300s",
                    maximal_backoff_time="600s")
    send("alice@a.test", ["bob@b.test"], b"Subject: first\r\n\r\nheld back\r\n")
    wait_for(lambda: "attempts=1" in a.ternctl("queue", "show").stdout, 10, what="the first deferral")
    (held,) = queue_ids(a)
    a.ternctl("queue", "hold", held)
    show = a.ternctl("queue", "show", held).stdout
    assert "hold: yes" in show
    # mailq marks a held message with "!" after its id, as Postfix's does.
    mailq = subprocess.run([f"{BIN}/mailq"], env=a.env(), capture_output=True, text=True, timeout=30).stdout
    assert re.search(rf"^{held}!", mailq, re.M), mailq

    send("alice@a.test", ["bob@b.test"], b"Subject: second\r\n\r\nnot held\r\n")
    send("alice@a.test", ["user@e.test"], b"Subject: third\r\n\r\nnobody listens at e.test\r\n")
    wait_for(lambda: len(log_lines(a, "status=deferred")) >= 3, 20, what="three deferrals")
    start_domain(b)
    # A flush of everything: the second message goes; the held one stays.
    a.ternctl("queue", "flush")
    (m,) = wait_messages(b, "bob", "b.test")
    assert b"Subject: second" in m
    wait_for(lambda: len(queue_ids(a)) == 2, 10, what="the second message gone from the queue")
    assert held in queue_ids(a)
    assert "hold: yes" in a.ternctl("queue", "show", held).stdout

    # Release: back to delivery and tried at once.
    a.ternctl("queue", "release", held)
    msgs = wait_messages(b, "bob", "b.test", 2)
    assert any(b"Subject: first" in x for x in msgs)

    # Delete: the message for e.test is gone, without a bounce.
    # (The released message leaves the queue once its delivery is recorded.)
    (third,) = wait_for(lambda: (lambda ids: ids if len(ids) == 1 else None)(queue_ids(a)), 10,
                        what="only the message for e.test left")
    assert "user@e.test" in a.ternctl("queue", "show", third).stdout
    a.ternctl("queue", "delete", third)
    wait_queue_empty(a)
    assert maildir_messages(a, "alice", "a.test") == []
    assert re.search(rf"{third}: removed", a.log())
    # An id that is not queued is an error a person can read.
    r = a.ternctl("queue", "delete", third, check=False)
    assert r.returncode != 0
    assert third in (r.stdout + r.stderr)
