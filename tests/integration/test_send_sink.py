"""Outbound throughput: mx.a.test (Tern, 127.0.0.2) sends 1 KB messages to
Postfix's smtp-sink on mx.d.test (127.0.0.4:25) over MX, at most 20 connections at
once (smtp_destination_concurrency_limit = 20), with the queue's fsync on (the
default). The messages are queued first while nobody listens on the sink's
address (deferred with a long backoff), then smtp-sink starts and the queue is
flushed: what is measured is sending alone, from the flush to the last "sent".

In CI it runs with 200 messages and checks only that every one went out, once
(Tern's log and smtp-sink's own count agree), over at most 20 connections;
TERN_SEND_BENCH_N=5000 makes it the measurement, printed as "outbound: N messages
in S s: R msg/s". No timing is asserted."""
import os
import re
import subprocess
import time

from send_util import dns, domain_tern, log_lines, netns, smtp_sink, wait_queue_empty  # noqa: F401
from tern_harness import wait_for

N = int(os.environ.get("TERN_SEND_BENCH_N", "200"))
SMTP_SOURCE = "/usr/sbin/smtp-source"


def count(t, needle):
    with open(os.path.join(t.dir, "maillog"), "rb") as f:
        return f.read().count(needle)


def test_outbound_to_smtp_sink_at_concurrency_20(tern_factory, dns):
    a = domain_tern(tern_factory, dns, "a.test", "127.0.0.2", users=["alice"], smtp_destination_concurrency_limit="20",
                    minimal_backoff_time="3600s", maximal_backoff_time="3600s", queue_run_delay="3600s",
                    smtp_connection_cache_time_limit="10s", dns_timeout="5s", dns_tries="2")
    # Queue N messages of 1 KB for user@d.test; the first attempts are refused.
    subprocess.run([SMTP_SOURCE, "-s", "10", "-m", str(N), "-l", "1024", "-f", "alice@a.test", "-t", "user@d.test",
                    "-M", "client.a.test", "127.0.0.2:25"], check=True, timeout=300, capture_output=True)
    wait_for(lambda: count(a, b"status=deferred") >= N, 120, what=f"{N} deferrals")
    # -c: smtp-sink prints its counters (messages received: mesg=) as they change.
    counters = open(os.path.join(a.dir, "sink.out"), "wb")
    sink = smtp_sink("127.0.0.4", extra=["-c"], stdout=counters)
    try:
        t0 = time.monotonic()
        a.ternctl("queue", "flush")
        deadline = t0 + 120
        while count(a, b"status=sent") < N:
            if time.monotonic() > deadline:
                show = a.ternctl("queue", "show").stdout
                raise AssertionError(f"only {count(a, b'status=sent')} of {N} sent; the queue:\n{show[:3000]}\n"
                                     f"the log's end:\n{a.log()[-5000:]}")
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        print(f"\noutbound: {N} messages in {elapsed:.2f} s: {N / elapsed:.0f} msg/s "
              f"(1 KB, smtp_destination_concurrency_limit = 20, fsync on)")
        # The connections, still cached (smtp_connection_cache_time_limit): how many.
        ss = subprocess.run(["ss", "-Htn", "state", "established", "dst", "127.0.0.4:25"], capture_output=True,
                            text=True).stdout
        conns = len(ss.splitlines())
        print(f"connections to the sink (still cached): {conns}")
        assert 1 <= conns <= 20  # the destination's concurrency limit
        wait_queue_empty(a, timeout=60)
        sent = log_lines(a, "status=sent")
        assert len(sent) == N
        assert all(re.search(r"to=<user@d\.test>, relay=mx\.d\.test\[127\.0\.0\.4\]:25, .*dsn=2\.0\.0, status=sent \(250 ",
                             line) for line in sent), sent[:3]
        # Each message went once (one "sent" per queue id).
        ids = [re.search(r": (\w+): to=", line).group(1) for line in sent]
        assert len(set(ids)) == N
        assert count(a, b"status=bounced") == 0
    finally:
        sink.terminate()
        sink.wait()
        counters.close()
    with open(os.path.join(a.dir, "sink.out"), "rb") as f:
        out = f.read().decode(errors="replace")
    # smtp-sink's own count of the messages it took (its "mesg=" counter).
    assert max(int(x) for x in re.findall(r"mesg=(\d+)", out)) == N, out[-200:]
