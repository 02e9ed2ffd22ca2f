#!/usr/bin/env python3
"""holdconns.py PORT HOST N — open N keep-alive client connections to the
sluice router, send one GET on each (so each is an ordinary keep-alive
connection that has served a request), then hold them idle.

Prints "ready OPEN FAILED" once all are open and answered, then on every line
read from stdin prints "alive N" (connections the router still holds open)
and exits on EOF. Used by bench.py for the per-connection memory figure.
"""
import os
import resource
import select
import socket
import sys


def main():
    port, host, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, n + 64)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    req = ("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host).encode()
    conns, failed = [], 0
    # Open in batches so the listen backlog never overflows.
    batch = 200
    for start in range(0, n, batch):
        pending = []
        for _ in range(min(batch, n - start)):
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(req)
                pending.append(s)
            except OSError:
                failed += 1
                s.close()
        for s in pending:
            s.settimeout(30)
            try:
                data = s.recv(4096)
                if data.startswith(b"HTTP/1.1 200"):
                    conns.append(s)
                else:
                    failed += 1
                    s.close()
            except OSError:
                failed += 1
                s.close()
    print("ready %d %d" % (len(conns), failed), flush=True)
    for _ in sys.stdin:
        alive = 0
        for s in conns:
            p = select.poll()
            p.register(s, select.POLLIN)
            if not p.poll(0):
                alive += 1
                continue
            try:
                if s.recv(1, socket.MSG_PEEK):
                    alive += 1
            except OSError:
                pass
        print("alive %d" % alive, flush=True)
    for s in conns:
        s.close()
    os._exit(0)


if __name__ == "__main__":
    main()
