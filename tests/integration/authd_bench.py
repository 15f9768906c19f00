"""Successful PLAIN authentications per second through tern-authd's auth-client
socket: one connection (requests one after another) and 20 connections at once.
Not a test (no timing is asserted anywhere); run by hand:

    TERN_BUILD_DIR=build /usr/bin/python3 tests/integration/authd_bench.py [seconds]
"""
import sys
import threading
import time

from authd_client import AuthClient
from tern_harness import Tern

PW = "correct horse 9"


def run(path, conns, seconds):
    counts = [0] * conns
    stop = time.monotonic() + seconds
    errors = []

    def worker(k):
        c = AuthClient(path)
        i = 0
        while time.monotonic() < stop:
            i += 1
            r = c.plain(i, "demo@example.test", PW, service="imap")
            if r[0] != "OK":
                errors.append(r)
                return
            counts[k] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    assert not errors, errors[:3]
    return sum(counts) / elapsed


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10
    results = {}
    for scheme in ("yescrypt", "SHA512-CRYPT", "BLF-CRYPT"):
        t = Tern(settings={"master_services": "authd"})
        t.start()
        try:
            t.ternctl("user", "add", "-s", scheme, "demo@example.test", input=PW + "\n")
            one = run(t.socket_path("auth-client"), 1, seconds)
            twenty = run(t.socket_path("auth-client"), 20, seconds)
            results[scheme] = (one, twenty)
            print(f"{scheme:13s} 1 connection: {one:8.1f} auth/s   20 connections: {twenty:8.1f} auth/s", flush=True)
        finally:
            t.cleanup()


if __name__ == "__main__":
    main()
