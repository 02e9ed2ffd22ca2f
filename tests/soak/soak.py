#!/usr/bin/python3
"""Soak: one real `sluice serve` (the ASan build) under continuous mixed
load while faults are injected on a schedule, with every response counted.

Services (all the distroless hello sample):
  hello   default containerConcurrency; hey (rate-limited) + prober threads;
          its instances are kill -9'd and it is redeployed (new revisions,
          the old ones deleted once they carry no traffic)
  one     containerConcurrency 1, max 4; wrk rounds on /sleep?ms=20 with
          pauses (scales out and back); its instances are kill -9'd
  split   two revisions; `sluice traffic` moves the split between them
  sleepy  scaled to zero, woken repeatedly by a burst of concurrent requests
  grpc    the e2e tests' HTTP/2-only nghttpd image (--use-http2); its instances
          are kill -9'd under HTTP/2 streams and translated HTTP/1.1 requests
plus HTTP/2 clients (several streams at once on one connection, uploads
echoed back) of hello (translated to HTTP/1.1) and of grpc (HTTP/2 to the
instance), an HTTP/1.1 prober of grpc (each request translated to a stream;
GETs and echoed uploads), bursts of smuggling vectors and garbage, and slowloris
connections.

Accounting. The prober records every request's outcome (status or client
error) with a timestamp; hey and wrk report per round. A request is LOST if
it got no response or a 5xx, unless a kill -9 of an instance of the same
service happened in the preceding KILL_WINDOW seconds: such failures are the
requests the killed instance held (or connects it refused before the
supervisor saw it die) and are counted as kill-attributable, up to a bound
per kill (5 x the clients on that service: held <= clients, refused connects
<= 4 x clients, as tests/e2e/test_crash_restart.py allows); anything beyond
the bound is lost too. The activator answering 429/503/504 is a 5xx/4xx
the product chose and is reported by status; 5xx count as lost.

The daemon's RSS and fd count are sampled each second; at the end it must
exit 0 on SIGTERM with nothing from ASan/UBSan/LSan in its log and no
mounts or cgroups left. Exit status 0 only if nothing was lost and the
daemon behaved.

  SLUICE_BIN=build/asan/sluice SOAK_SECONDS=600 python3 tests/soak/soak.py
  (SOAK_SERVE_FLAGS adds `sluice serve` flags, e.g. "--busy-poll 50us")
"""
import collections
import errno
import http.client
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import Daemon, cgroups_named, free_port, mounts_under  # noqa: E402

SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
KILL_WINDOW = 5.0
HEY_C, HEY_Q = 8, 40          # hey workers on hello, queries/s per worker
WRK_C = 6                     # wrk connections on one
PROBE_CLIENTS = {"hello": 2, "split": 2, "one": 1, "grpc": 1}
H2_CLIENTS = {"hello": 1, "grpc": 1}  # HTTP/2 connections, H2_STREAMS streams at a time
H2_STREAMS = 4
SLOW_N = 300
SERVE_FLAGS = ("--stable-window", "4s", "--scale-to-zero-grace", "1s",
               "--autoscale-tick", "100ms", "--log-level", "info") + tuple(
    os.environ.get("SOAK_SERVE_FLAGS", "").split())  # e.g. "--busy-poll 50us"
SAN_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
               "SUMMARY: UndefinedBehaviorSanitizer", "SUMMARY: AddressSanitizer")


def log(msg):
    print("[%7.1fs] %s" % (time.time() - T0, msg), flush=True)


T0 = time.time()


class Ledger:
    """Every outcome, thread-safe. Prober outcomes are per request; tool
    rounds (hey, wrk) are aggregated with their time span."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []      # (t, source, service, outcome) outcome: int status or "err:..."
        self.rounds = []      # (t0, t1, tool, service, clients, codes{}, errors{})
        self.kills = []       # (t, service, instance)
        self.faults = collections.Counter()
        self.notes = []

    def add(self, source, service, outcome):
        with self.lock:
            self.events.append((time.time(), source, service, outcome))

    def round(self, *r):
        with self.lock:
            self.rounds.append(r)

    def kill(self, service, inst):
        with self.lock:
            self.kills.append((time.time(), service, inst))

    def fault(self, name):
        with self.lock:
            self.faults[name] += 1


L = Ledger()
STOP = threading.Event()       # stops the load
FAULTS_STOP = threading.Event()


# ---- load --------------------------------------------------------------


def prober(port, service, path="/"):
    """A keep-alive client looping on one service, counting everything. On
    grpc (HTTP/2 instances) every third request is an upload echoed back."""
    host = "%s.localhost" % service
    conn = None
    upload, n = os.urandom(20000), 0
    while not STOP.is_set():
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            n += 1
            echo = service == "grpc" and n % 3 == 0
            if echo:
                conn.request("POST", "/echo", body=upload, headers={"Host": host})
            else:
                conn.request("GET", path, headers={"Host": host})
            r = conn.getresponse()
            body = r.read()
            if service == "grpc":
                want = upload if echo else b"hello over h2c\n"
                L.add("prober", service, r.status if r.status != 200 or body == want
                      else "err:200 with another body")
            elif r.status == 200 and path == "/" and b"revision=" not in body:
                L.add("prober", service, "err:200 without revision")
            else:
                if r.status == 200 and path == "/":
                    REVS[body.split(b"revision=")[1].split()[0].decode()] += 1
                L.add("prober", service, r.status)
            if r.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            L.add("prober", service, "err:%s" % type(e).__name__)
            if conn:
                conn.close()
            conn = None
            time.sleep(0.02)
        time.sleep(0.01)
    if conn:
        conn.close()


def h2_prober(port, service):
    """An HTTP/2 connection to one service: rounds of H2_STREAMS streams at
    once (GETs and an echoed upload), every stream counted."""
    from h2client import H2
    host = "%s.localhost" % service
    upload = os.urandom(20000)
    c = None
    while not STOP.is_set():
        try:
            if c is None:
                c = H2(port)
            ids = [c.request(host, "/") for _ in range(H2_STREAMS - 1)]
            ids.append(c.request(host, "/echo", "POST", upload))
            for sid, e in zip(ids, c.wait(ids, timeout=60)):
                if e.reset is not None:
                    L.add("h2", service, "err:reset %s" % e.reset)
                elif e.status == 200 and sid == ids[-1] and e.data != upload:
                    L.add("h2", service, "err:echo differs")
                else:
                    L.add("h2", service, e.status)
            if c.closed or c.goaway is not None:
                c.close()
                c = None
        except Exception as e:  # noqa: BLE001 (counted, then a new connection)
            L.add("h2", service, "err:%s" % type(e).__name__)
            if c:
                c.close()
            c = None
            time.sleep(0.02)
        time.sleep(0.01)
    if c:
        c.close()


def parse_hey(out):
    codes, errors, section = {}, {}, None
    for line in out.splitlines():
        t = line.strip()
        if t.startswith("Status code distribution"):
            section = "codes"
        elif t.startswith("Error distribution"):
            section = "errors"
        elif section == "codes" and t.startswith("["):
            code, n = t[1:].split("]")
            codes[int(code)] = int(n.split()[0])
        elif section == "errors" and t.startswith("["):
            n, _, what = t[1:].partition("]")
            errors[what.strip()] = int(n)
    return codes, errors


def hey_loop(port):
    while not STOP.is_set():
        t0 = time.time()
        dur = max(1, min(30, int(END_LOAD - t0)))
        r = subprocess.run(["hey", "-z", "%ds" % dur, "-c", str(HEY_C), "-q", str(HEY_Q),
                            "-t", "30", "-host", "hello.localhost",
                            "http://127.0.0.1:%d/" % port], capture_output=True, text=True)
        codes, errors = parse_hey(r.stdout)
        L.round(t0, time.time(), "hey", "hello", HEY_C, codes, errors)


def parse_wrk(out):
    total = non2xx = 0
    errors = {}
    for line in out.splitlines():
        t = line.strip()
        if "requests in" in t:
            total = int(t.split()[0])
        elif t.startswith("Non-2xx or 3xx responses:"):
            non2xx = int(t.split(":")[1])
        elif t.startswith("Socket errors:"):
            for part in t.split(":", 1)[1].split(","):
                k, v = part.split()
                if int(v):
                    errors[k] = int(v)
    return {200: total - non2xx, "non-2xx": non2xx} if non2xx else {200: total}, errors


def wrk_loop(port):
    while not STOP.is_set():
        t0 = time.time()
        dur = max(1, min(20, int(END_LOAD - t0)))
        r = subprocess.run(["wrk", "-t", "2", "-c", str(WRK_C), "-d", "%ds" % dur,
                            "--timeout", "30s", "-H", "Host: one.localhost",
                            "http://127.0.0.1:%d/sleep?ms=20" % port],
                           capture_output=True, text=True)
        codes, errors = parse_wrk(r.stdout)
        L.round(t0, time.time(), "wrk", "one", WRK_C, codes, errors)
        STOP.wait(8)  # idle: let it scale back down


def sleepy_loop(d):
    """Waits until sleepy has no instance, then wakes it with a burst."""
    wakes = 0
    while not STOP.is_set():
        deadline = time.time() + 40
        while not STOP.is_set() and time.time() < deadline:
            if not instances(d, "sleepy"):
                break
            STOP.wait(0.5)
        if STOP.is_set():
            break
        if instances(d, "sleepy"):
            L.notes.append("sleepy did not scale to zero within 40s")
            continue
        results = []

        def one():
            try:
                c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
                c.request("GET", "/", headers={"Host": "sleepy.localhost"})
                r = c.getresponse()
                r.read()
                c.close()
                L.add("waker", "sleepy", r.status)
            except (OSError, http.client.HTTPException) as e:
                L.add("waker", "sleepy", "err:%s" % type(e).__name__)

        ts = [threading.Thread(target=one) for _ in range(10)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wakes += 1
        L.fault("sleepy woken from zero")


def guarded(fn, arg):
    """A load thread that dies is a soak failure, not a silent gap."""
    try:
        fn(arg)
    except Exception as e:
        L.notes.append("%s died: %r" % (fn.__name__, e))


# ---- hostile connections -------------------------------------------------

H = b"Host: hello.localhost\r\n"
VECTORS = [
    b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : hello.localhost\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
]
FOLLOW = b"GET /smuggled HTTP/1.1\r\nHost: hello.localhost\r\n\r\n"


def garbage_burst(port, n=60):
    """Smuggling vectors (each followed by a valid request that must not be
    answered) and random bytes; counts the answers by status."""
    statuses = collections.Counter()
    rng = random.Random(len(L.events))
    for i in range(n):
        payload = VECTORS[i % len(VECTORS)] + FOLLOW if i % 3 else \
            bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096))) + b"\r\n\r\n"
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                s.sendall(payload)
            except OSError:
                pass
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            n_resp = data.count(b"HTTP/1.1 ")
            st = data[9:12].decode(errors="replace") if data.startswith(b"HTTP/1.1 ") else "none"
            statuses[st] += 1
            if n_resp > 1:
                statuses["answered twice (smuggled!)"] += 1
        except socket.timeout:
            statuses["not closed in 10s"] += 1
        except OSError as e:
            statuses["err:%s" % type(e).__name__] += 1
    return statuses


GARBAGE = collections.Counter()
REVS = collections.Counter()  # revisions that answered the prober
SLOW = collections.Counter()


def slowloris(port, seconds=15):
    socks = []
    for _ in range(SLOW_N):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            SLOW["connect failed"] += 1
    head = b"GET / HTTP/1.1\r\nHost: hello.localhost\r\nX-Slow: " + b"a" * 100
    for sec in range(seconds):
        if STOP.is_set():
            break
        for s in socks:
            try:
                s.send(head[sec:sec + 1])
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET):
                    raise
        time.sleep(1)
    held = 0
    for s in socks:
        try:
            held += s.recv(1) != b""
        except BlockingIOError:
            held += 1
        except OSError:
            pass
        s.close()
    SLOW["opened"] += len(socks)
    SLOW["held to the end"] += held


# ---- faults ------------------------------------------------------------


def instances(d, name):
    r = d.cli("instances", name, "-o", "json", check=False)
    if r.returncode != 0:
        return []
    items = json.loads(r.stdout)["items"]
    for i in items:
        SEEN_IDS.add(i["name"])
    return items


SEEN_IDS = set()


def kill_one(d, service):
    ready = [i for i in instances(d, service) if i.get("pid") and i["state"] == "Ready"]
    if not ready:
        return
    victim = random.choice(ready)
    try:
        os.kill(victim["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return
    L.kill(service, victim["name"])
    L.fault("kill -9 %s instance" % service)


class Faults:
    def __init__(self, d):
        self.d = d
        self.gen = 1
        self.split = 0
        self.errors = []

    def cli(self, *args):
        r = self.d.cli(*args, check=False)
        if r.returncode != 0:
            self.errors.append("sluice %s: %s" % (" ".join(args), r.stderr.strip()))
        return r

    def kill_hello(self):
        kill_one(self.d, "hello")

    def kill_one(self):
        kill_one(self.d, "one")

    def kill_grpc(self):
        kill_one(self.d, "grpc")

    def traffic(self):
        splits = [(100, 0), (50, 50), (0, 100), (10, 90), (90, 10)]
        self.split = (self.split + 1) % len(splits)
        a, b = splits[self.split]
        if self.cli("traffic", "split", "split-00001=%d" % a, "split-00002=%d" % b).returncode == 0:
            L.fault("traffic moved between split revisions")

    def redeploy(self):
        self.gen += 1
        old = [x["metadata"]["name"] for x in
               json.loads(self.cli("revisions", "hello", "-o", "json").stdout or '{"items":[]}')["items"]]
        if self.cli("deploy", "hello", "--env", "GEN=%d" % self.gen).returncode == 0:
            L.fault("redeploy hello")
        # keep the two newest revisions; the rest carry no traffic any more
        for rev in sorted(old)[:-1]:
            if self.cli("revisions", "delete", rev).returncode == 0:
                L.fault("old hello revision deleted")

    def garbage(self):
        GARBAGE.update(garbage_burst(self.d.port))
        L.fault("smuggling/garbage burst (60 connections)")

    def slow(self):
        threading.Thread(target=slowloris, args=(self.d.port,), daemon=True).start()
        L.fault("slowloris (%d connections, 15s)" % SLOW_N)

    def run(self, t_end):
        plan = [self.kill_hello, self.traffic, self.garbage, self.kill_one, self.redeploy,
                self.traffic, self.kill_hello, self.slow, self.kill_one, self.traffic,
                self.kill_grpc]
        interval = max(4.0, min(8.0, (t_end - time.time()) / 30))
        k = 0
        while not FAULTS_STOP.is_set() and time.time() < t_end:
            f = plan[k % len(plan)]
            k += 1
            try:
                f()
            except Exception as e:  # a fault that could not be injected is reported
                self.errors.append("%s: %r" % (f.__name__, e))
            FAULTS_STOP.wait(interval)


# ---- daemon observation ---------------------------------------------------


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak_rss, self.peak_fd = pid, 0, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, rss_kib(self.pid))
                self.peak_fd = max(self.peak_fd, fd_count(self.pid))
            except OSError:
                return
            self.stop.wait(1)


# ---- accounting ------------------------------------------------------------


def is_failure(outcome):
    return isinstance(outcome, str) or outcome >= 500


def account():
    """Returns (by_status, lost, attributable, details)."""
    by_status = collections.Counter()
    sent = 0
    fail_by_kill = collections.defaultdict(list)  # kill index -> failures
    lost = collections.Counter()
    kills = L.kills

    def kill_for(service, t0, t1):
        """Index of a kill of `service` within [t0 - KILL_WINDOW, t1]."""
        for i, (tk, svc, _) in enumerate(kills):
            if svc == service and t0 - KILL_WINDOW <= tk <= t1:
                return i
        return None

    for t, src, svc, out in L.events:
        sent += 1
        by_status[out] += 1
        if not is_failure(out):
            continue
        # the request finished at t; the kill must precede it by < KILL_WINDOW
        k = kill_for(svc, t, t + 0.5)
        if k is None:
            lost["%s %s %s" % (src, svc, out)] += 1
        else:
            fail_by_kill[k].append(("prober", out))
    for t0, t1, tool, svc, clients, codes, errors in L.rounds:
        n_fail = sum(errors.values()) + sum(v for c, v in codes.items()
                                            if not isinstance(c, int) or c >= 500)
        sent += sum(codes.values()) + sum(errors.values())
        for c, v in codes.items():
            by_status[c] += v
        for e, v in errors.items():
            by_status["err:%s" % e[:60]] += v
        if not n_fail:
            continue
        ks = [i for i, (tk, s, _) in enumerate(kills) if s == svc and t0 <= tk <= t1]
        bound = 5 * clients * len(ks)
        attributed = min(n_fail, bound)
        for i in ks:
            fail_by_kill[i] += [(tool, "failure")] * (attributed // max(1, len(ks)))
        if n_fail > attributed:
            lost["%s %s failures beyond the kill bound" % (tool, svc)] += n_fail - attributed
    # per-kill bound for the prober as well
    for k, fails in fail_by_kill.items():
        pf = [f for f in fails if f[0] == "prober"]
        svc = kills[k][1]  # each HTTP/2 stream held is a client too
        bound = 5 * (PROBE_CLIENTS.get(svc, 1) + H2_CLIENTS.get(svc, 0) * H2_STREAMS)
        if len(pf) > bound:
            lost["prober %s failures beyond the kill bound" % kills[k][1]] += len(pf) - bound
    attributable = sum(len(v) for v in fail_by_kill.values()) - sum(
        v for k, v in lost.items() if "beyond the kill bound" in k and "prober" in k)
    return sent, by_status, lost, attributable, fail_by_kill


# ---- main --------------------------------------------------------------------


def main():
    global END_LOAD
    work = tempfile.mkdtemp(prefix="sluice-soak.")
    src_bin = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "build", "asan", "sluice"))
    # A private copy: a rebuild of build/ during the soak must not swap the
    # binary under the CLI calls.
    bin_ = os.path.join(work, "sluice")
    shutil.copy2(src_bin, bin_)
    import conftest
    conftest.BIN = bin_
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))

    images = os.path.join(ROOT, "build", "e2e-images")
    subprocess.run(["sh", os.path.join(ROOT, "examples/hello/build-image.sh"),
                    os.path.join(images, "hello")], check=True, stdout=subprocess.DEVNULL)
    hello_img = "oci:%s/hello/oci:latest" % images
    subprocess.run(["sh", os.path.join(ROOT, "tests/e2e/images/h2c-image.sh"),
                    os.path.join(images, "h2c")], check=True, stdout=subprocess.DEVNULL)
    h2c_img = "oci:%s/h2c/oci:latest" % images

    state = os.path.join(work, "state")
    d = Daemon(state, free_port(), extra=SERVE_FLAGS)
    print("soak: %ds, daemon %s (copy of %s) on 127.0.0.1:%d, state %s, log %s"
          % (SECONDS, bin_, src_bin, d.port, state, d.log_path), flush=True)
    d.start()
    problems = []
    try:
        d.cli("deploy", "hello", "--image", hello_img, "--env", "GEN=1")
        d.cli("deploy", "one", "--image", hello_img, "--concurrency", "1", "--max", "4")
        d.cli("deploy", "split", "--image", hello_img, "--env", "V=1")
        d.cli("deploy", "split", "--env", "V=2")
        d.cli("traffic", "split", "split-00001=100", "split-00002=0")
        d.cli("deploy", "sleepy", "--image", hello_img)
        d.cli("deploy", "grpc", "--image", h2c_img, "--use-http2")
        for svc in ("hello", "one", "split"):
            for _ in range(20):
                assert d.curl(svc)[0] == 200
        pid = d.proc.pid
        rss0, fd0 = rss_kib(pid), fd_count(pid)
        sampler = Sampler(pid)
        sampler.start()
        log("warm: RSS %d KiB, %d fds" % (rss0, fd0))

        t_start = time.time()
        END_LOAD = t_start + SECONDS
        threads = [threading.Thread(target=guarded, args=(f, a)) for f, a in
                   ((hey_loop, d.port), (wrk_loop, d.port), (sleepy_loop, d))]
        for svc, n in PROBE_CLIENTS.items():
            path = "/sleep?ms=5" if svc == "one" else "/"
            threads += [threading.Thread(target=prober, args=(d.port, svc, path))
                        for _ in range(n)]
        for svc, n in H2_CLIENTS.items():
            threads += [threading.Thread(target=h2_prober, args=(d.port, svc)) for _ in range(n)]
        for t in threads:
            t.start()
        faults = Faults(d)
        ft = threading.Thread(target=faults.run, args=(END_LOAD - 15,))
        STOP.wait(min(10, SECONDS / 10))
        ft.start()
        while time.time() < END_LOAD:
            time.sleep(min(30, max(0.1, END_LOAD - time.time())))
            log("%d prober/waker requests, %d tool rounds, %d kills, RSS %d KiB, %d fds"
                % (len(L.events), len(L.rounds), len(L.kills), rss_kib(pid), fd_count(pid)))
        FAULTS_STOP.set()
        ft.join()
        STOP.set()
        for t in threads:
            t.join()

        # settle: idle conns closed, sleepy back to zero
        time.sleep(15)
        rss1, fd1 = rss_kib(pid), fd_count(pid)
        sampler.stop.set()
        for svc in ("hello", "one", "split"):
            code, _ = d.curl(svc, check=False)
            if code != 200:
                problems.append("%s answered %d after the soak" % (svc, code))
        instances(d, "hello"), instances(d, "one"), instances(d, "split"), instances(d, "sleepy")

        t_term = time.time()
        rc = d.stop()
        stop_s = time.time() - t_term
        text = open(d.log_path, "rb").read().decode(errors="replace")
        san = [m for m in SAN_MARKERS if m in text]
        mounts = mounts_under(state)
        cgs = cgroups_named(sorted(SEEN_IDS))

        sent, by_status, lost, attributable, fail_by_kill = account()
        n_lost = sum(lost.values())
        if rc != 0:
            problems.append("daemon exited %s on SIGTERM" % rc)
        if san:
            problems.append("sanitizer output in the daemon log: %s" % san)
        if mounts:
            problems.append("mounts left: %s" % mounts[:5])
        if cgs:
            problems.append("cgroups left: %s" % cgs[:5])
        if fd1 > fd0 + 20:
            problems.append("fds grew %d -> %d" % (fd0, fd1))
        if n_lost:
            problems.append("%d requests lost" % n_lost)
        if faults.errors:
            problems.append("%d CLI faults failed" % len(faults.errors))
        problems += L.notes

        width = 44
        print("\n==================== sluice soak summary ====================")
        rows = [
            ("duration of load", "%ds" % SECONDS),
            ("requests sent (hey+wrk+prober+waker)", sent),
            ("  by hey (hello)", sum(sum(r[5].values()) + sum(r[6].values())
                                     for r in L.rounds if r[2] == "hey")),
            ("  by wrk (one, /sleep?ms=20)", sum(sum(r[5].values()) + sum(r[6].values())
                                                for r in L.rounds if r[2] == "wrk")),
            ("  by the prober (hello, split, one, grpc)",
             sum(1 for e in L.events if e[1] == "prober")),
            ("  by the waker (sleepy, from zero)", sum(1 for e in L.events if e[1] == "waker")),
            ("  by HTTP/2 clients (streams: hello, grpc)",
             sum(1 for e in L.events if e[1] == "h2")),
        ]
        for k, v in sorted(by_status.items(), key=lambda kv: str(kv[0])):
            rows.append(("responses %s" % k, v))
        rows += [
            ("kill -9 of instances", len(L.kills)),
            ("failures attributable to a kill", attributable),
            ("LOST (no response / unexplained 5xx)", n_lost),
        ]
        for k, v in sorted(lost.items()):
            rows.append(("  lost: %s" % k[:width - 10], v))
        for k, v in sorted(L.faults.items()):
            rows.append(("fault: %s" % k[:width - 7], v))
        for k, v in sorted(REVS.items()):
            if k.startswith("split-"):
                rows.append(("prober answered by %s" % k, v))
        rows.append(("hello revisions that answered the prober",
                     len([k for k in REVS if k.startswith("hello-")])))
        for k, v in sorted(GARBAGE.items()):
            rows.append(("garbage/smuggling answered %s" % k, v))
        for k, v in sorted(SLOW.items()):
            rows.append(("slowloris %s" % k, v))
        rows += [
            ("daemon RSS start / peak / end (KiB)", "%d / %d / %d" % (rss0, sampler.peak_rss, rss1)),
            ("daemon fds start / peak / end", "%d / %d / %d" % (fd0, sampler.peak_fd, fd1)),
            ("SIGTERM: exit status, seconds", "%s, %.1fs" % (rc, stop_s)),
            ("sanitizer reports in the log", len(san)),
            ("mounts / cgroups left (%d instances seen)" % len(SEEN_IDS),
             "%d / %d" % (len(mounts), len(cgs))),
        ]
        for k, v in rows:
            print("%-*s %s" % (width, k, v))
        for e in faults.errors[:10]:
            print("fault error:", e)
        print("kill-attributable failures per kill: %s" % sorted(
            collections.Counter(len(v) for v in fail_by_kill.values()).items()))
        print("RESULT: %s" % ("PASS" if not problems else "FAIL: " + "; ".join(problems)))
        return 1 if problems else 0
    finally:
        STOP.set()
        FAULTS_STOP.set()
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        if not mounts_under(state):
            shutil.rmtree(state, ignore_errors=True)
        os.unlink(bin_)


if __name__ == "__main__":
    END_LOAD = time.time() + SECONDS
    sys.exit(main())
