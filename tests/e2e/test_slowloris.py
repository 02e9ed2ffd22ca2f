"""Slowloris: thousands of connections trickling a request head one byte a
second must not starve normal clients nor grow the daemon without bound.

The router holds each trickling connection (no request is dispatched until
its head is complete, within header_timeout_ms of its first byte) with a
bounded buffer; normal requests keep being served meanwhile."""
import errno
import resource
import socket
import threading
import time

from conftest import goaway_code, h2_frames, read_until_close

N_SLOW = 2000
DURATION = 20  # seconds of trickling


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fd_count(pid):
    import os
    return len(os.listdir("/proc/%d/fd" % pid))


def open_slow(port, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        socks.append(s)
    return socks


def still_open(s):
    try:
        return s.recv(1) != b""  # any byte would be an early answer
    except BlockingIOError:
        return True
    except OSError:
        return False


def test_slowloris_does_not_starve_normal_clients(daemon, images):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < N_SLOW + 500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, N_SLOW + 1000), hard))
    daemon.cli("deploy", "hello", "--image", images["hello"])
    for _ in range(20):  # warm up: instance, pools, buffers
        assert daemon.curl("hello", "/")[0] == 200
    pid = daemon.proc.pid
    rss0, fds0 = rss_kib(pid), fd_count(pid)

    socks = open_slow(daemon.port, N_SLOW)
    head = b"GET / HTTP/1.1\r\nHost: hello.localhost\r\nX-Slow: " + b"a" * 200
    results = []  # (code, seconds)
    stop = threading.Event()

    def normal_client():
        while not stop.is_set():
            t0 = time.time()
            code, body = daemon.curl("hello", "/", check=False)
            results.append((code, time.time() - t0, body))
            time.sleep(0.2)

    t = threading.Thread(target=normal_client)
    t.start()
    peak = rss0
    try:
        for sec in range(DURATION):
            t0 = time.time()
            for s in socks:
                try:
                    s.send(head[sec:sec + 1])
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET):
                        raise
            peak = max(peak, rss_kib(pid))
            time.sleep(max(0.0, 1.0 - (time.time() - t0)))
        held = sum(still_open(s) for s in socks)
        fds_peak = fd_count(pid)
    finally:
        stop.set()
        t.join()
        for s in socks:
            s.close()

    # Let the router notice the closes, then measure again.
    deadline = time.time() + 15
    while time.time() < deadline and fd_count(pid) > fds0 + 50:
        time.sleep(0.2)
    rss1, fds1 = rss_kib(pid), fd_count(pid)
    worst = max(r[1] for r in results)
    print("\nslowloris: %d trickling connections for %ds, %d held to the end; "
          "%d normal requests, worst %.3fs; daemon fds %d -> peak %d -> %d after; "
          "RSS %d KiB -> peak %d KiB -> %d KiB after"
          % (N_SLOW, DURATION, held, len(results), worst, fds0, fds_peak, fds1,
             rss0, peak, rss1))

    # Normal clients were served all along.
    assert len(results) >= DURATION, results[-3:]
    bad = [r for r in results if r[0] != 200 or "hello-00001" not in r[2]]
    assert bad == [], bad[:3]
    assert worst < 10, "a normal request took %.1fs" % worst
    # The router held the slow connections (none was answered or dropped early).
    assert held == N_SLOW
    assert fds_peak >= fds0 + N_SLOW
    # Memory is bounded: well under 64 KiB per held connection (ASan build),
    # and the fds are given back once the clients leave.
    assert (peak - rss0) < N_SLOW * 64, "RSS grew %d KiB" % (peak - rss0)
    assert fds1 <= fds0 + 50
    code, body = daemon.curl("hello", "/")
    assert code == 200 and "hello-00001" in body


def test_client_timeouts_are_serve_flags(make_daemon, images):
    """--client-header-timeout, --client-body-timeout and
    --client-idle-timeout replace the 30 s / 30 s / 60 s defaults: a head
    that trickles and a body that stops are a 408, an idle keep-alive
    connection is closed, over HTTP/1.1 and HTTP/2 alike (a header block
    that never ends takes the session down; an idle session is closed).
    Every socket waits at most 15 s, well below the defaults."""
    d = make_daemon("--client-header-timeout", "1s", "--client-body-timeout", "1s",
                    "--client-idle-timeout", "2s")
    d.cli("deploy", "web", "--image", images["hello"])
    host = d.host("web").encode()
    assert d.curl("web", "/")[0] == 200

    def conn(first):
        s = socket.create_connection(("127.0.0.1", d.port), timeout=15)
        s.sendall(first)
        return s

    s = conn(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nX-Slow: ")
    got = read_until_close(s)
    assert got.startswith(b"HTTP/1.1 408 "), got
    s = conn(b"POST /echo HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 10\r\n\r\nabc")
    got = read_until_close(s)
    assert got.startswith(b"HTTP/1.1 408 ") and b"body" in got, got
    s = conn(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    got = read_until_close(s)  # answered, then closed once idle
    assert got.startswith(b"HTTP/1.1 200 ") and got.count(b"HTTP/1.1") == 1, got

    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    # HEADERS (type 1) on stream 1 without END_HEADERS: a block left open
    block = b"\x82\x86\x84"  # :method GET, :scheme http, :path /
    s = conn(preface + len(block).to_bytes(3, "big") + b"\x01\x00\x00\x00\x00\x01" + block)
    frames = h2_frames(read_until_close(s))
    assert frames[0][0] == 4 and goaway_code(frames) is not None, frames  # SETTINGS ... GOAWAY
    s = conn(preface)
    frames = h2_frames(read_until_close(s))  # closed once idle, with a GOAWAY (NO_ERROR)
    assert frames[0][0] == 4 and frames[-1][0] == 7 and goaway_code(frames) == 0, frames
    assert d.curl("web", "/")[0] == 200
