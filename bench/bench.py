#!/usr/bin/env python3
"""sluice benchmarks (issue 6): data path vs nginx, added latency, cold start
with its crun floor, control plane, density, scale-out.

Every figure is compared with a baseline measured in the same run (nginx, a
direct request, a bare `crun run`), because absolute times on a shared 2-core
machine drift from run to run. Run through `make bench` (bench/run.sh); the
results go to bench/out/results.json and bench/out/summary.md, and the
figures worth keeping are copied by hand into bench/RESULTS.md.

Fair data-path setup. The backend is the sample hello server running as a
sluice instance. It listens on 127.0.0.1:8080 inside the instance's own
network namespace, and the sluice router reaches it there (it opens its
upstream sockets inside that namespace). So that all three paths talk to the
very same process over loopback:
  direct: wrk runs inside the instance's netns (nsenter) → 127.0.0.1:8080
  nginx:  nginx (1 worker, upstream keepalive, access_log off, adding the
          same forwarding headers sluice adds) runs inside the netns; wrk,
          also inside, → nginx → 127.0.0.1:8080
  sluice: wrk on the host loopback → router → upstream socket in the netns
Loopback costs the same in every namespace. Both proxies get the same
request (wrk sends sluice's Host to both) and send the backend the same
fields (Host as sent, X-Forwarded-For, Forwarded, X-Forwarded-Proto,
X-Forwarded-Host): before, nginx forwarded a bare request and the backend
did less work per request behind it than behind sluice. The service is pinned to one
instance (--min 1 --max 1) with concurrency 1000 so that 256 clients never
queue or add instances, which would give sluice more backends than nginx.
The paths run interleaved, several rounds, and the median round is kept;
latency percentiles are taken over all of a path's rounds (bench/latency.lua).

Safety: own state dirs under /tmp/sluice-bench-*, ports 18600-18699, only
processes this script started are signalled, the daemon is stopped with
SIGTERM and leftover mounts are checked.
"""
import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PORT = 18600          # router
NGINX_PORT = 18680    # nginx, inside the instance's netns only
NGINX_H2_PORT = 18681  # nginx for the h2c stage, likewise
NGINX_H2_CLIENT_PORT = 18682  # the data path's nginx, its HTTP/2 listener
NGINX_H2_H1_PORT = 18683  # the h2c stage's nginx, its HTTP/1.1 listener
OUT = os.path.join(HERE, "out")

results = {}


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def pct(xs, p):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(math.ceil(p / 100.0 * len(s))) - 1))
    return s[k]


def stats(xs):
    if not xs:
        return None
    return {"n": len(xs), "p50": pct(xs, 50), "p90": pct(xs, 90), "p99": pct(xs, 99),
            "max": max(xs), "min": min(xs)}


def median(xs):
    return pct(xs, 50)


# ----------------------------------------------------------------- daemon


class Daemon:
    def __init__(self, binary, base, port=PORT, flags=()):
        self.bin = binary
        self.base = base
        self.port = port
        self.flags = list(flags)
        self.state = os.path.join(base, "st")
        self.log_path = os.path.join(base, "daemon.log")
        self.proc = None

    def start(self):
        self.logf = open(self.log_path, "ab")
        extra = []
        helptext = subprocess.run([self.bin, "serve", "--help"], capture_output=True, text=True)
        if "--scale-to-zero-grace" in helptext.stdout + helptext.stderr:
            # Scale-from-zero samples without waiting 30 s per round.
            extra = ["--scale-to-zero-grace", "1s"]
        if "--capacity-cpu" in helptext.stdout + helptext.stderr:
            # Node capacity admission reserves each instance's requests plus
            # its runtime class overhead (default 100m cpu, 128Mi): on this
            # 2-core machine that admits ~19 instances. The density, apply
            # and cold stages measure idle instances, not admission, so the
            # bench raises allocatable far above what they need.
            extra += ["--capacity-cpu", "1000", "--capacity-memory", "1Ti"]
        self.extra = extra + self.flags
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--listen", "127.0.0.1:%d" % self.port, "--state-dir", self.state,
             "--log-level", "debug"] + self.extra, stdout=self.logf, stderr=subprocess.STDOUT)
        with open(os.path.join(self.base, "daemon.pid"), "w") as f:
            f.write("%d\n" % self.proc.pid)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sluice serve exited; see %s" % self.log_path)
            if self.cli("services", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("sluice serve did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                log("daemon did not stop within 120 s after SIGTERM; sending SIGKILL")
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else 0
        self.proc = None
        return rc

    def cli(self, *args, check=True, input=None):
        env = dict(os.environ, SLUICE_STATE_DIR=self.state)
        r = subprocess.run([self.bin] + list(args), capture_output=True, text=True, env=env,
                           input=input, timeout=600)
        if check and r.returncode != 0:
            raise RuntimeError("sluice %s: %s" % (" ".join(args), r.stderr.strip()))
        return r

    def instances(self, name=None):
        args = ["instances"] + ([name] if name else []) + ["-o", "json"]
        r = self.cli(*args, check=False)
        if r.returncode != 0:
            return []
        return json.loads(r.stdout).get("items", [])

    def rss_kib(self):
        return proc_rss_kib(self.proc.pid)

    def cpu_ns(self):
        return proc_cpu_ns(self.proc.pid)

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def steal_ms():
    """Time the hypervisor ran something else while this VM's vCPUs were
    runnable (/proc/stat "steal", all CPUs), ms. A round with steal has a
    latency tail the proxies did not cause; it is recorded per round."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8]) * 1000 // os.sysconf("SC_CLK_TCK")


def proc_cpu_ns(pid):
    """CPU time of every thread of pid, ns (schedstat: ns precision)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def cgroup_mem(iid):
    try:
        with open("/sys/fs/cgroup/memory/sluice/%s/memory.usage_in_bytes" % iid) as f:
            return int(f.read())
    except OSError:
        return None


def host(name):
    return "%s.localhost:%d" % (name, PORT)


def first_byte(name, path="/", timeout=60):
    """Seconds from connect() to the first response byte through the router."""
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host(name))).encode()
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
    try:
        s.sendall(req)
        data = s.recv(1)
        t1 = time.perf_counter()
        rest = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        status = (data + rest)[:12].decode(errors="replace")
    finally:
        s.close()
    return t1 - t0, status


# ----------------------------------------------------------------- wrk


def wrk(url, conns, secs, hdr=None, netns_pid=None, cpu=None):
    cmd = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % secs, "--latency", "--timeout", "10s",
           "-s", os.path.join(HERE, "latency.lua")]
    if hdr:
        cmd += ["-H", "Host: %s" % hdr]
    cmd.append(url)
    if netns_pid:
        cmd = ["nsenter", "--net=/proc/%d/ns/net" % netns_pid] + cmd
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60).stdout
    return parse_wrk(out)


def _us(v, unit):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def parse_wrk(out):
    r = {"rps": 0.0, "p50_us": None, "p99_us": None, "errors": 0, "non2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    for p, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % p, out, re.M)
        if m:
            r[key] = _us(m.group(1), m.group(2))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"^HIST (\S*)$", out, re.M)
    if m:  # bench/latency.lua: every latency recorded, with its count
        r["hist"] = {int(v): int(n) for v, n in (x.split(":") for x in m.group(1).split(",") if x)}
    return r


def hist_pct(hist, p):
    """Nearest-rank percentile of a {value: count} histogram."""
    n = sum(hist.values())
    rank, seen = max(1, int(math.ceil(p / 100.0 * n))), 0
    for v in sorted(hist):
        seen += hist[v]
        if seen >= rank:
            return v
    return None


def p99_of(r):
    """A path's p99: pooled over its rounds where wrk gave histograms."""
    return r["pooled"]["p99_us"] if r.get("pooled") else r.get("p99_us")


def median_rounds(rounds):
    """{path: [round results]} → {path: its median-req/s round, with the
    percentiles of all its rounds pooled beside it}, and the sluice/nginx
    ratios of req/s and p99."""
    row = {}
    for name, rs in rounds.items():
        pooled = pool_rounds(rs)
        row[name] = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
        if pooled:
            row[name]["pooled"] = pooled
        row[name]["rounds_rps"] = [round(r["rps"]) for r in rs]
        row[name]["rounds_steal_ms"] = [r.get("steal_ms") for r in rs]
    n, s = row["nginx"], row["sluice"]
    row["ratio_rps_sluice_nginx"] = s["rps"] / n["rps"] if n["rps"] else None
    row["ratio_p99_sluice_nginx"] = p99_of(s) / p99_of(n) if p99_of(n) and p99_of(s) else None
    pairs = list(zip(rounds["sluice"], rounds["nginx"]))
    ratios = [sr["rps"] / nr["rps"] if nr["rps"] else 0.0 for sr, nr in pairs]
    p99s = [sr["p99_us"] / nr["p99_us"] for sr, nr in pairs if sr.get("p99_us") and nr.get("p99_us")]
    row["round_ratios"] = [round(x, 3) for x in ratios]
    row["median_round_ratio"] = median(ratios)
    row["round_p99_ratios"] = [round(x, 3) for x in p99s]
    row["median_round_p99_ratio"] = median(p99s) if p99s else None
    return row


def run_rounds(run, names, n_rounds, secs, label, cpu_of=None):
    """run(name) for each path in names, n_rounds times → ({path: [round
    results]}, [discarded attempts]). The two proxies run back to back,
    their order swapped every round: a slow spell of the shared machine
    lands on both, and the round's ratio cancels it. A round whose paths
    lost more than 1 % of the machine's CPU time to the hypervisor (steal)
    measured the host, not the proxies: it is run again, at most twice, and
    what it measured is returned beside the rounds kept. cpu_of[name]()
    gives a proxy's CPU time (ns), for its CPU per request."""
    rounds = {k: [] for k in names}
    steal_limit = secs * 1000 * os.cpu_count() // 100
    discarded = []
    for k in range(n_rounds):
        order = [x for x in names if x == "direct"] + (
            ["nginx", "sluice"] if k % 2 == 0 else ["sluice", "nginx"])
        for attempt in range(3):
            got = {}
            for name in order:
                c0, st0 = cpu_of[name]() if cpu_of else 0, steal_ms()
                r = got[name] = run(name)
                if cpu_of:
                    used = cpu_of[name]() - c0
                    r["proxy_cpu_us_per_req"] = (used / 1e3 / r["requests"]) if r["requests"] and used else None
                r["steal_ms"] = steal_ms() - st0
            if attempt == 2 or max(r["steal_ms"] for r in got.values()) <= steal_limit:
                break
            discarded.append({name: {"rps": round(r["rps"]), "p99_us": r.get("p99_us"),
                                     "steal_ms": r["steal_ms"]} for name, r in got.items()})
            log("  %s round %d again: %s ms of CPU stolen by the host" % (
                label, k, "/".join("%s %d" % (x, got[x]["steal_ms"]) for x in order)))
        for name in order:
            rounds[name].append(got[name])
    return rounds, discarded


def pool_rounds(rs):
    """Percentiles over every request of a path's rounds (wrk's histograms
    merged), not one round's: a round's p99 at c=1 rests on a few hundred
    requests, and one slow spell of the shared machine moves it. Each
    round's histogram is dropped from the round once pooled."""
    hist = {}
    for r in rs:
        for v, n in r.pop("hist", {}).items():
            hist[v] = hist.get(v, 0) + n
    if not hist:
        return None
    out = {"n": sum(hist.values())}
    for p, key in ((50, "p50_us"), (90, "p90_us"), (99, "p99_us"), (99.9, "p999_us")):
        out[key] = hist_pct(hist, p)
    out["rounds_p99_us"] = [r["p99_us"] for r in rs]
    return out


# ----------------------------------------------------------------- 1+2: data path


# What both nginx configurations share: one worker, no access log, temp
# paths under the run's directory.
NGINX_HEAD = """\
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
"""

NGINX_CONF = NGINX_HEAD + """\
    # The same forwarding headers sluice's router adds (RFC 7239 Forwarded
    # appended to the client's, X-Forwarded-* as a production reverse proxy
    # sets them), so the backend parses the same request from both proxies.
    map $http_forwarded $fwd {{
        ""      "for=$remote_addr;host=\\"$http_host\\";proto=$scheme";
        default "$http_forwarded, for=$remote_addr;host=\\"$http_host\\";proto=$scheme";
    }}
    # nginx ends a client connection after 1000 requests by default
    # (keepalive_requests); sluice has no such limit.
    keepalive_requests 100000000;
    upstream backend {{
        server 127.0.0.1:8080;
        keepalive 512;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        # HTTP/2 clients (prior knowledge) of the same HTTP/1.1 backend
        listen 127.0.0.1:{h2port} http2 backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Forwarded $fwd;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
        }}
    }}
}}
"""


NGINX_H2_CONF = NGINX_HEAD + """\
    http2_max_concurrent_streams 100;
    # nginx ends an HTTP/2 connection after 1000 requests by default
    # (keepalive_requests); h2load does not reconnect in a timed run, so
    # the connection would go idle for the rest of it. sluice has no limit.
    keepalive_requests 100000000;
    map $http_forwarded $fwd {{
        ""      "for=$remote_addr;host=\\"$http_host\\";proto=$scheme";
        default "$http_forwarded, for=$remote_addr;host=\\"$http_host\\";proto=$scheme";
    }}
    upstream backend {{
        server 127.0.0.1:8080;
        keepalive 512;
    }}
    server {{
        listen 127.0.0.1:{port} http2 backlog=4096;
        # HTTP/1.1 clients of the same HTTP/2 backend (grpc_pass turns each
        # request into a stream, as sluice does)
        listen 127.0.0.1:{h1port} backlog=4096;
        location / {{
            grpc_pass grpc://backend;
            grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            grpc_set_header Forwarded $fwd;
            grpc_set_header X-Forwarded-Proto $scheme;
            grpc_set_header X-Forwarded-Host $http_host;
        }}
    }}
}}
"""


def children(pid):
    kids = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
            kids += [int(x) for x in f.read().split()]
    return kids


def start_nginx(base, netns_pid, template=NGINX_CONF, port=NGINX_PORT, name="nginx"):
    d = os.path.join(base, name)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(template.format(d=d, port=port, h2port=NGINX_H2_CLIENT_PORT,
                                h1port=NGINX_H2_H1_PORT))
    proc = subprocess.Popen(["nsenter", "--net=/proc/%d/ns/net" % netns_pid, "nginx", "-c", conf,
                             "-p", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        time.sleep(0.02)
        if proc.poll() is not None:
            raise RuntimeError("nginx exited; see %s/nginx-error.log" % d)
        kids = children(proc.pid)
        if kids:
            return proc, kids[0]
    raise RuntimeError("nginx worker did not start")


def set_affinity(tids, cpus):
    for t in tids:
        try:
            os.sched_setaffinity(t, cpus)
        except OSError:
            pass  # a thread that exited meanwhile


PLACEMENTS = (("one_core", 0, 0), ("split", 0, 1))


class Rig:
    """The data-path rig of one daemon: the backend deployed as "dp", nginx
    in its network namespace, and the three paths to it."""

    def __init__(self, d, a):
        self.d, self.a = d, a
        self.nginx = None
        # ACCESS_LOG=off: the backend writes no log line per request, so its
        # cost is the socket I/O alone and the proxies' share of the machine
        # (what this stage compares) is not diluted by a file write per request.
        # --no-cpu-throttling: the direct and nginx paths do not go through
        # sluice, which would see an idle instance and hold its CPU
        # (request-based CPU allocation) while they measure it.
        d.cli("deploy", "dp", "--image", a.image, "--concurrency", "1000", "--min", "1",
              "--max", "1", "--env", "ACCESS_LOG=off", "--no-cpu-throttling")
        try:
            inst = [i for i in d.instances("dp") if i["state"] == "Ready"][0]
            self.pid = pid = inst["pid"]
            self.nginx, self.worker = start_nginx(d.base, pid)
            direct_url = "http://127.0.0.1:8080/"
            nginx_url = "http://127.0.0.1:%d/" % NGINX_PORT
            sluice_url = "http://127.0.0.1:%d/" % d.port
            self.cpu = None  # the client's CPU under the current placement
            self.paths = {
                "direct": lambda c, s: wrk(direct_url, c, s, netns_pid=pid, cpu=self.cpu),
                "nginx": lambda c, s: wrk(nginx_url, c, s, hdr=host("dp"), netns_pid=pid, cpu=self.cpu),
                "sluice": lambda c, s: wrk(sluice_url, c, s, hdr=host("dp"), cpu=self.cpu),
            }
            self.cpu_of = {"nginx": lambda: proc_cpu_ns(self.worker), "sluice": d.cpu_ns,
                           "direct": lambda: 0}
            for fn in self.paths.values():  # warm pools and caches
                fn(64, 1)
        except BaseException:
            self.close()
            raise

    def level(self, c, names, n_rounds):
        rounds, discarded = run_rounds(lambda name: self.paths[name](c, self.a.dp_secs), names,
                                       n_rounds, self.a.dp_secs, "c=%d" % c, self.cpu_of)
        row = median_rounds(rounds)
        row["discarded_rounds"] = discarded
        n, s = row["nginx"], row["sluice"]
        log("  c=%-3d %snginx %8.0f  sluice %8.0f req/s  (sluice/nginx %.2f, per round %s)"
            % (c, ("direct %8.0f  " % row["direct"]["rps"]) if "direct" in row else "", n["rps"],
               s["rps"], row["ratio_rps_sluice_nginx"] or 0,
               " ".join("%.2f" % x for x in row["round_ratios"])))
        log("        p99 sluice/nginx %s/%s us%s; per round %s; CPU stolen by the host %s/%s ms"
            % (p99_of(s), p99_of(n), " (all rounds' requests)" if "pooled" in s else "",
               " ".join("%.2f" % x for x in row["round_p99_ratios"]), sum(s["rounds_steal_ms"]),
               sum(n["rounds_steal_ms"])))
        return row

    def placed(self, levels, n_rounds, places=PLACEMENTS):
        """Fixed placements. Unpinned, a request at low concurrency crosses
        CPUs several times, and on this VM each cross-CPU wake-up is an IPI
        (a VM exit) costing more than either proxy's own work, so where the
        scheduler happens to put the three processes decides c=1. Pinned the
        same way for both proxies, that noise goes:
          one_core: client, proxy and backend all on CPU 0 — no IPIs; the
                    chain's CPU per request alone sets the rate;
          split:    client and proxy on CPU 0, the backend on CPU 1."""
        out = {}
        proxies = [self.worker] + [int(t) for t in os.listdir("/proc/%d/task" % self.d.proc.pid)]
        try:
            for place, proxy_cpu, backend_cpu in places:
                log("  placement %s: client and proxy on CPU %d, backend on CPU %d"
                    % (place, proxy_cpu, backend_cpu))
                set_affinity(proxies, {proxy_cpu})
                set_affinity([self.pid], {backend_cpu})
                self.cpu = proxy_cpu
                out[place] = self.proxies(levels, n_rounds)
        finally:
            self.cpu = None
            set_affinity(proxies + [self.pid], set(range(os.cpu_count())))
        return out

    def proxies(self, levels, n_rounds):
        """nginx and sluice (no direct path) at each concurrency level, under
        whatever placement is in force."""
        return {"c%d" % c: self.level(c, ["nginx", "sluice"], n_rounds) for c in levels}

    def close(self):
        if self.nginx:
            self.nginx.send_signal(signal.SIGTERM)  # nginx: fast shutdown
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
                self.nginx.wait()
        self.d.cli("delete", "dp", check=False)


HALT_POLL = "/sys/module/haltpoll/parameters/guest_halt_poll_ns"
HALT_POLL_DEFAULT_NS = 200000  # the kernel's default (drivers/cpuidle/Kconfig)


CPUIDLE_DRIVER = "/sys/devices/system/cpu/cpuidle/current_driver"
CPUIDLE_GOVERNOR = "/sys/devices/system/cpu/cpuidle/current_governor"  # its parameter


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def read_int(path):
    try:
        return int(read_text(path))
    except (TypeError, ValueError):
        return None


def bench_halt_poll(rig, a):
    """The same comparison with the guest kernel's halt polling at its
    default. This VM's cpuidle driver is haltpoll with guest_halt_poll_ns=0:
    an idle vCPU halts at once, so every wake-up of a sleeping proxy,
    backend or client is a halt exit plus a wake-up IPI. With the kernel's
    default an idle vCPU polls up to 200 us first. The setting is machine-wide,
    so it is changed only for this sub-stage and put back."""
    was = read_int(HALT_POLL)
    driver = read_text(CPUIDLE_DRIVER)
    governor = read_text(CPUIDLE_GOVERNOR) or read_text(CPUIDLE_GOVERNOR + "_ro")
    if driver != "haltpoll" or governor != "haltpoll" or was is None \
            or was == HALT_POLL_DEFAULT_NS or not os.access(HALT_POLL, os.W_OK):
        return {"skipped": "cpuidle driver %s, governor %s, guest_halt_poll_ns %s"
                           % (driver, governor, was)}
    log("  guest halt polling: guest_halt_poll_ns %d -> %d for this sub-stage"
        % (was, HALT_POLL_DEFAULT_NS))
    out = {"guest_halt_poll_ns": HALT_POLL_DEFAULT_NS, "machine_value": was}
    try:
        with open(HALT_POLL, "w") as f:
            f.write(str(HALT_POLL_DEFAULT_NS))
        out["unpinned"] = rig.proxies(a.dp_extra_levels, a.dp_pinned_rounds)
        out.update(rig.placed(a.dp_extra_levels, a.dp_pinned_rounds, PLACEMENTS[1:]))
    finally:
        try:
            with open(HALT_POLL, "w") as f:
                f.write(str(was))
        except OSError as e:
            log("  could not put guest_halt_poll_ns back to %d: %s" % (was, e))
        log("  guest_halt_poll_ns back to %s" % read_int(HALT_POLL))
    return out


def bench_variant(a, key, flags, levels, placed):
    """sluice started with other flags (`--busy-poll 50us`, `--sched-slice
    0`) against nginx, on a daemon of its own: its own state, port, backend
    instance and nginx. placed: also at the fixed placements."""
    base = os.path.join(a.base, key)
    os.makedirs(base, exist_ok=True)
    d = Daemon(a.bin, base, port=PORT + 1, flags=flags)
    out = {"flag": " ".join(flags)}
    rig = None
    try:
        d.start()
        log("  sluice serve %s (daemon pid %d)" % (out["flag"], d.proc.pid))
        rig = Rig(d, a)
        out["unpinned"] = rig.proxies(levels, a.dp_pinned_rounds)
        if placed:
            out.update(rig.placed(levels, a.dp_pinned_rounds))
    finally:
        if rig:
            rig.close()
        out["daemon_exit"] = d.stop()
    return out


def substage(out, key, fn, *args):
    """A variant's failure is recorded and logged; the figures measured
    before it are kept."""
    try:
        out[key] = fn(*args)
    except Exception as e:  # noqa: BLE001 (the run goes on)
        log("  %s failed: %s" % (key, e))
        out[key] = {"error": str(e)}


def bench_datapath(d, a):
    log("data path: deploying the backend (one instance, concurrency 1000)")
    rig = Rig(d, a)
    out = {"setup": "wrk -t1 -cN -d%ds --latency; %d round(s), proxies' order swapped each round; "
                    "median round per path, and the median of the rounds' sluice/nginx ratios; "
                    "latency percentiles pooled over all of a path's rounds; backend pid %d"
           % (a.dp_secs, a.dp_rounds, rig.pid)}
    results["datapath"] = out
    pinned = a.dp_pinned_rounds and len(os.sched_getaffinity(0)) >= 2
    try:
        for c in (1, 32, 256):
            out["c%d" % c] = rig.level(c, ["direct", "nginx", "sluice"], a.dp_rounds)
        c1 = out["c1"]
        lat = lambda name, key: (c1[name].get("pooled") or c1[name])[key]
        out["added_latency_us"] = {
            "%s_%s" % (name, key[:3]): lat(name, key) - lat("direct", key)
            for name in ("sluice", "nginx") for key in ("p50_us", "p99_us")}
        log("  added latency at c=1: sluice p50 %+.0f us p99 %+.0f us; nginx p50 %+.0f us p99 %+.0f us"
            % tuple(out["added_latency_us"][k] for k in ("sluice_p50", "sluice_p99", "nginx_p50", "nginx_p99")))
        if shutil.which("h2load"):
            substage(out, "h2_clients", bench_h2_clients, rig, a)
        if pinned:
            out.update(rig.placed((1, 32, 256), a.dp_pinned_rounds))
            substage(out, "halt_poll", bench_halt_poll, rig, a)
        if a.perf:
            out["perf"] = profile_router(d, a)
    finally:
        rig.close()
    if pinned and a.busy_poll:
        substage(out, "busy_poll", bench_variant, a, "busy-poll",
                 ["--busy-poll", a.busy_poll], a.dp_extra_levels, True)
    if pinned:
        # The loop thread asking for a shorter scheduler slice (opt-in):
        # what it does where the client, backend and proxy contend for the
        # CPUs.
        substage(out, "sched_slice", bench_variant, a, "sched-slice",
                 ["--sched-slice", "500us"], (32, 256), False)


def profile_router(d, a):
    """perf record of the daemon under wrk -c32 load; top symbols."""
    data = os.path.join(a.base, "perf.data")
    load = subprocess.Popen(["wrk", "-t1", "-c32", "-d8s", "-H", "Host: %s" % host("dp"),
                             "http://127.0.0.1:%d/" % PORT], stdout=subprocess.DEVNULL)
    time.sleep(1)
    subprocess.run(["perf", "record", "-q", "-F", "999", "-g", "-o", data, "-p", str(d.proc.pid),
                    "--", "sleep", "5"], capture_output=True, timeout=60)
    load.wait()
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "-g", "none",
                          "--percent-limit", "1.5", "--sort", "dso,symbol"],
                         capture_output=True, text=True, timeout=120).stdout
    lines = [l for l in rep.splitlines() if l.strip() and not l.startswith("#")]
    dsos = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "-g", "none",
                           "--sort", "dso"], capture_output=True, text=True, timeout=120).stdout
    dso_lines = [l.strip() for l in dsos.splitlines() if l.strip() and not l.startswith("#")][:8]
    user = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "-g", "none",
                           "--sort", "dso,symbol", "--percent-limit", "0.3"],
                          capture_output=True, text=True, timeout=120).stdout
    user_lines = [l.strip() for l in user.splitlines()
                  if l.strip() and not l.startswith("#") and "[k]" not in l][:15]
    with open(os.path.join(OUT, "perf-router.txt"), "w") as f:
        f.write(dsos + "\n" + rep + "\n" + user)
    log("  perf (router under wrk -c32), share by DSO:")
    for l in dso_lines:
        log("    " + l)
    log("  top user-space symbols:")
    for l in user_lines[:10]:
        log("    " + l)
    return {"dso": dso_lines, "kernel_top": lines[:12], "user_top": user_lines}


# ----------------------------------------------------------------- 3: cold start


def extract_rootfs(oci_dir, dest):
    with open(os.path.join(oci_dir, "index.json")) as f:
        idx = json.load(f)
    def blob(desc):
        algo, hexd = desc["digest"].split(":")
        return os.path.join(oci_dir, "blobs", algo, hexd)
    with open(blob(idx["manifests"][0])) as f:
        man = json.load(f)
    for layer in man["layers"]:
        with tarfile.open(blob(layer)) as t:
            t.extractall(dest)


def floor_bundle(a):
    b = os.path.join(a.base, "floor")
    rootfs = os.path.join(b, "rootfs")
    if os.path.exists(b):
        shutil.rmtree(b)
    os.makedirs(rootfs)
    extract_rootfs(a.oci_dir, rootfs)
    os.makedirs(os.path.join(rootfs, "bin"), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "true"))  # applet by argv[0]
    subprocess.run(["crun", "spec"], cwd=b, check=True)
    with open(os.path.join(b, "config.json")) as f:
        spec = json.load(f)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    spec["root"]["readonly"] = False
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(spec, f)
    return b


def bench_floor(a, n):
    b = floor_bundle(a)
    times = []
    for i in range(n):
        cid = "sluice-bench-floor-%d-%d" % (os.getpid(), i)
        t0 = time.perf_counter()
        r = subprocess.run(["crun", "run", "-b", b, cid], capture_output=True, text=True)
        t1 = time.perf_counter()
        if r.returncode != 0:
            subprocess.run(["crun", "delete", "-f", cid], capture_output=True)
            raise RuntimeError("crun run floor failed: %s" % r.stderr.strip())
        times.append((t1 - t0) * 1e3)
    shutil.rmtree(b)
    return stats(times)


COLD_YAML = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "0"
        autoscaling.knative.dev/window: "6s"
        autoscaling.knative.dev/scale-to-zero-pod-retention-period: "0s"
    spec:
      containerConcurrency: 80
      containers:
        - image: {image}
"""


def cold_apply(d, a, n):
    """Zero mode, step 1: services that may scale to zero while other stages run."""
    docs = [COLD_YAML.format(name="cold-%d" % i, image=a.image) for i in range(n)]
    d.cli("apply", "-f", "-", "--wait", input="---\n".join(docs))
    return ["cold-%d" % i for i in range(n)]


DEBUG_RE = {
    "spawned": re.compile(r"instance (\S+): prepared and \S+ spawned in ([\d.]+) ms"),
    "run_done": re.compile(r"instance (\S+): \S+ run done at ([\d.]+) ms"),
    "probe_ready": re.compile(r"instance (\S+): ready at ([\d.]+) ms"),
    "ready": re.compile(r"instance (\S+) ready in ([\d.]+) ms"),
}

# The supervisor's info line splits each start into phases (durations, not
# cumulative): "instance X ready in T ms (rootfs R ms, bundle B ms, runtime U ms, app A ms)".
SPLIT_RE = re.compile(r"instance (\S+) ready in [\d.]+ ms \(rootfs ([\d.]+) ms, bundle ([\d.]+) ms, "
                      r"runtime ([\d.]+) ms, app ([\d.]+) ms\)")
SPLIT_KEYS = ("rootfs", "bundle", "runtime", "app")


def breakdown(d, ids):
    """Per-instance phases from the daemon's debug log, ms since start."""
    text = d.log_text()
    per = {}
    for key, rx in DEBUG_RE.items():
        for m in rx.finditer(text):
            if m.group(1) in ids:
                per.setdefault(m.group(1), {})[key] = float(m.group(2))
    out = {}
    for key in DEBUG_RE:
        xs = [p[key] for p in per.values() if key in p]
        if xs:
            out[key] = stats(xs)
    split = {}
    for m in SPLIT_RE.finditer(text):
        if m.group(1) in ids:
            for k, v in zip(SPLIT_KEYS, m.groups()[1:]):
                split.setdefault(k, []).append(float(v))
    if split:
        out["phases_ms"] = {k: stats(v) for k, v in split.items()}
    return out


def bench_cold(d, a, names, waited_from):
    n = a.cold_n
    out = {"samples_wanted": n}
    mode = a.cold_mode
    if mode in ("auto", "zero") and names:
        deadline = waited_from + a.zero_wait
        log("cold start: waiting (up to %.0f s after apply) for the %d cold-* services to scale to zero"
            % (a.zero_wait, len(names)))
        while time.time() < deadline:
            live = [i for i in d.instances() if i["service"].startswith("cold-")]
            if not live:
                break
            time.sleep(1)
        live = [i for i in d.instances() if i["service"].startswith("cold-")]
        if live:
            out["zero_probe"] = ("%d cold-* instances still running %.0f s after apply "
                                 "(min-scale 0, window 6s, retention 0s): scale-to-zero not available"
                                 % (len(live), time.time() - waited_from))
            log("  " + out["zero_probe"] + "; falling back to fresh-revision mode")
            mode = "fresh"
        else:
            mode = "zero"
        if mode == "fresh":
            for nm in names:
                d.cli("delete", nm, check=False)
            wait_gone(d, "cold-")
    elif mode == "auto":
        mode = "fresh"
    out["mode"] = mode
    before = {i["name"] for i in d.instances()}
    fb, total, startup = [], [], []
    statuses = {}
    if mode == "zero":
        log("cold start: scale-from-zero, %d samples (first byte of the first request)" % len(names))
        outside = []
        for nm in names:
            t, st = first_byte(nm)
            fb.append(t * 1e3)
            statuses[st] = statuses.get(st, 0) + 1
            for inst in d.instances(nm):
                if inst.get("startupMs") is not None:
                    startup.append(inst["startupMs"])
                    outside.append(t * 1e3 - inst["startupMs"])
            time.sleep(0.2)
        total = fb
        # First byte minus the instance's own start-up: activator, routing, proxying.
        out["first_byte_minus_startup_ms"] = stats(outside)
    else:
        log("cold start: fresh-revision mode, %d samples (deploy CLI start → first response byte)" % n)
        for i in range(n):
            nm = "coldf-%d" % i
            t0 = time.perf_counter()
            d.cli("deploy", nm, "--image", a.image, "--env", "BENCH_SAMPLE=%d" % i)
            t1 = time.perf_counter()
            t, st = first_byte(nm)
            total.append((time.perf_counter() - t0) * 1e3)
            fb.append(t * 1e3)
            statuses[st] = statuses.get(st, 0) + 1
            for inst in d.instances(nm):
                if inst.get("startupMs") is not None:
                    startup.append(inst["startupMs"])
            d.cli("delete", nm)
            wait_gone(d, nm)
    new_ids = {i for i in re.findall(r"instance (\S+) ready in", d.log_text())
               if i.startswith("cold-" if mode == "zero" else "coldf-")} - before
    out["end_to_end_ms"] = stats(total)
    out["first_request_ms"] = stats(fb)
    if startup:
        out["instance_startupMs"] = stats(startup)
    out["statuses"] = statuses
    out["breakdown_ms_since_instance_start"] = breakdown(d, new_ids)
    log("  cold start (%s): %s" % (mode, fmt_stats(out["end_to_end_ms"])))
    if mode == "zero":
        for nm in names:
            d.cli("delete", nm, check=False)
        wait_gone(d, "cold-")
    log("cold start floor: crun run /bin/true on the image's rootfs, %d samples" % n)
    out["floor_crun_true_ms"] = bench_floor(a, n)
    log("  floor: %s" % fmt_stats(out["floor_crun_true_ms"]))
    results["cold_start"] = out


def wait_gone(d, prefix, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not [i for i in d.instances() if i["service"].startswith(prefix)]:
            return
        time.sleep(0.05)
    log("  warning: instances of %s* still present after %d s" % (prefix, timeout))


def fmt_stats(s):
    if not s:
        return "-"
    return "p50 %.1f  p90 %.1f  p99 %.1f  max %.1f ms (n=%d)" % (s["p50"], s["p90"], s["p99"], s["max"], s["n"])


# ----------------------------------------------------------------- 4: control plane


def bench_deploys(d, a):
    n = a.deploys
    log("control plane: %d deploys → Ready of one service (alternating --env)" % n)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        d.cli("deploy", "cp", "--image", a.image, "--env", "BENCH_REV=%d" % (i % 2 + i))
        times.append((time.perf_counter() - t0) * 1e3)
    d.cli("delete", "cp")
    wait_gone(d, "cp")
    results.setdefault("control_plane", {})["deploy_ready_ms"] = stats(times)
    log("  deploy → Ready: %s" % fmt_stats(stats(times)))


def apply_docs(a, prefix, lo, hi):
    return "---\n".join(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: %s-%d\n"
        "spec:\n  template:\n    metadata:\n      annotations:\n"
        "        autoscaling.knative.dev/min-scale: \"1\"\n    spec:\n      containers:\n        - image: %s\n" % (prefix, i, a.image)
        for i in range(lo, hi))


def settle(d, prefix, want, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready = [i for i in d.instances() if i["service"].startswith(prefix) and i["state"] == "Ready"]
        if len(ready) >= want:
            return ready
        time.sleep(0.1)
    raise RuntimeError("%d %s* instances not Ready within %d s" % (want, prefix, timeout))


def bench_apply(d, a):
    n = a.apply_n
    log("control plane: apply of %d services in one manifest" % n)
    rss0 = d.rss_kib()
    t0 = time.perf_counter()
    d.cli("apply", "-f", "-", input=apply_docs(a, "ap", 0, n))
    t1 = time.perf_counter()
    ready = settle(d, "ap-", n, timeout=600)
    t2 = time.perf_counter()
    time.sleep(1)
    rss1 = d.rss_kib()
    mem = [cgroup_mem(i["name"]) for i in ready]
    mem = [m for m in mem if m is not None]
    t3 = time.perf_counter()
    for i in range(n):
        d.cli("delete", "ap-%d" % i)
    wait_gone(d, "ap-", timeout=600)
    t4 = time.perf_counter()
    out = {"services": n, "apply_cli_ms": (t1 - t0) * 1e3, "all_ready_ms": (t2 - t0) * 1e3,
           "delete_all_gone_ms": (t4 - t3) * 1e3, "daemon_rss_delta_kib": rss1 - rss0,
           "daemon_kib_per_instance": (rss1 - rss0) / n,
           "cgroup_mem_total_mib": sum(mem) / 2**20,
           "cgroup_kib_per_instance": (sum(mem) / len(mem) / 1024) if mem else None}
    results.setdefault("control_plane", {})["apply"] = out
    log("  apply %d: CLI %.0f ms, all Ready %.0f ms, delete all %.0f ms; daemon +%d KiB; "
        "instances' cgroups %.0f MiB" % (n, out["apply_cli_ms"], out["all_ready_ms"],
                                         out["delete_all_gone_ms"], rss1 - rss0, out["cgroup_mem_total_mib"]))


# ----------------------------------------------------------------- 5: density


def bench_conns(d, a):
    log("density: idle keep-alive client connections %s" % (a.conn_steps,))
    d.cli("deploy", "dn", "--image", a.image, "--concurrency", "1000")
    first_byte("dn")
    time.sleep(0.5)
    rows = []
    base = d.rss_kib()
    rows.append({"conns": 0, "daemon_rss_kib": base})
    for n in a.conn_steps:
        h = subprocess.Popen([sys.executable, os.path.join(HERE, "holdconns.py"), str(PORT), host("dn"), str(n)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            ready = h.stdout.readline().split()
            time.sleep(1)
            rss = d.rss_kib()
            h.stdin.write("check\n")
            h.stdin.flush()
            time.sleep(2)
            h.stdin.write("check\n")
            h.stdin.flush()
            h.stdout.readline()
            alive = int(h.stdout.readline().split()[1])
            prev = rows[-1]
            row = {"conns": n, "open": int(ready[1]), "failed": int(ready[2]), "alive_after_3s": alive,
                   "daemon_rss_kib": rss, "bytes_per_conn": (rss - base) * 1024.0 / n,
                   "bytes_per_conn_marginal": (rss - prev["daemon_rss_kib"]) * 1024.0 / (n - prev["conns"])}
            rows.append(row)
            log("  %5d conns: open %d failed %d alive %d; daemon RSS %d KiB → %.0f B/conn"
                % (n, row["open"], row["failed"], alive, rss, row["bytes_per_conn"]))
        finally:
            h.stdin.close()
            h.wait(60)
        time.sleep(1)
    d.cli("delete", "dn")
    wait_gone(d, "dn")
    results.setdefault("density", {})["connections"] = rows


def bench_instances(d, a):
    log("density: idle instances %s" % (a.inst_steps,))
    time.sleep(1)
    base = d.rss_kib()
    rows = [{"instances": 0, "daemon_rss_kib": base}]
    have = 0
    for n in a.inst_steps:
        d.cli("apply", "-f", "-", input=apply_docs(a, "den", have, n))
        ready = settle(d, "den-", n)
        have = n
        time.sleep(1)
        rss = d.rss_kib()
        mem = [m for m in (cgroup_mem(i["name"]) for i in ready) if m is not None]
        prev = rows[-1]
        row = {"instances": n, "daemon_rss_kib": rss, "daemon_kib_per_instance": (rss - base) / n,
               # slope from the previous step: first-use growth (heap, SQLite cache) excluded
               "daemon_kib_per_instance_marginal": (rss - prev["daemon_rss_kib"]) / (n - prev["instances"]),
               "cgroup_kib_per_instance": (sum(mem) / len(mem) / 1024) if mem else None}
        rows.append(row)
        log("  %3d instances: daemon RSS %d KiB → %.1f KiB/instance; cgroup memory %.0f KiB/instance"
            % (n, rss, row["daemon_kib_per_instance"], row["cgroup_kib_per_instance"] or 0))
    for i in range(have):
        d.cli("delete", "den-%d" % i)
    wait_gone(d, "den-")
    results.setdefault("density", {})["instances"] = rows


# ----------------------------------------------------------------- 6: scale-out


def bench_scaleout(d, a):
    """A step from 1 to 100 closed-loop clients against containerConcurrency 10.

    Each request holds its slot for sleep_ms (the sample's /sleep), so 100
    clients need 10 instances. Client view from hey's per-request CSV: a
    request that took more than 1.5x sleep_ms waited in the activator queue;
    the offset of the last such request is when queueing stopped. Server view:
    `sluice instances` polled every 100 ms.
    """
    log("scale-out: concurrency 10, 1 → 100 clients on /sleep?ms=%d for %d s" % (a.sleep_ms, a.step_secs))
    d.cli("deploy", "so", "--image", a.image, "--concurrency", "10")
    url = "http://127.0.0.1:%d/sleep?ms=%d" % (PORT, a.sleep_ms)
    subprocess.run(["hey", "-z", "3s", "-c", "1", "-host", host("so"), url], capture_output=True)
    n0 = len([i for i in d.instances("so") if i["state"] == "Ready"])
    csv_path = os.path.join(OUT, "scaleout-hey.csv")
    t0 = time.time()
    with open(csv_path, "w") as csvf:
        step = subprocess.Popen(["hey", "-z", "%ds" % a.step_secs, "-c", "100", "-host", host("so"),
                                 "-o", "csv", url], stdout=csvf, stderr=subprocess.DEVNULL)
        timeline = []
        while step.poll() is None:
            insts = d.instances("so")
            ready = [i for i in insts if i["state"] == "Ready"]
            timeline.append((round(time.time() - t0, 3), len(insts), len(ready),
                             sum(i.get("inFlight", 0) for i in ready)))
            time.sleep(0.1)
    reqs = []
    with open(csv_path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) >= 8 and parts[0][:1].isdigit():
                reqs.append((float(parts[7]), float(parts[0]) * 1e3, parts[6]))  # offset s, ms, code
    need = 10
    slow = [r for r in reqs if r[1] > a.sleep_ms * 1.5]
    codes = {}
    for r in reqs:
        codes[r[2]] = codes.get(r[2], 0) + 1
    lat = [r[1] for r in reqs]
    after = [r[1] for r in reqs if r[0] > 2.0]
    out = {"instances_before": n0, "clients": 100, "containerConcurrency": 10,
           "request_ms": a.sleep_ms, "needed_instances": need,
           "time_to_capacity_s": next((t for t, _, r, _ in timeline if r >= need), None),
           "max_ready": max((r for _, _, r, _ in timeline), default=0),
           "final_ready": timeline[-1][2] if timeline else None,
           "requests": len(reqs), "status_codes": codes,
           "failed": len(reqs) - codes.get("200", 0),
           "queued_requests": len(slow),
           "last_queued_at_s": max((r[0] for r in slow), default=None),
           "max_wait_ms": max((r[1] - a.sleep_ms for r in reqs), default=None),
           "latency_ms": stats(lat), "latency_after_2s_ms": stats(after),
           "timeline": [t for k, t in enumerate(timeline) if k % 3 == 0]}
    log("  Ready instances %d → %d (max %d); ≥10 Ready at %s s; %d requests, failed %d, queued (> %d ms) %d, "
        "last queued at %s s, max wait %.0f ms"
        % (n0, out["final_ready"] or 0, out["max_ready"], out["time_to_capacity_s"], len(reqs), out["failed"],
           a.sleep_ms * 1.5, len(slow), out["last_queued_at_s"], out["max_wait_ms"] or 0))
    d.cli("delete", "so")
    wait_gone(d, "so")
    results["scale_out"] = out


# ----------------------------------------------------------------- main


# ----------------------------------------------------------------- 8: idle CPU


def h2load(url, conns, streams, secs, authority=None, netns_pid=None):
    """h2load over HTTP/2 with prior knowledge: requests/s and the mean
    time per request (h2load reports no percentiles)."""
    cmd = ["h2load", "-c%d" % conns, "-m%d" % streams, "-D%d" % secs, "-T10"]
    if authority:
        cmd += ["-H", ":authority: %s" % authority]
    cmd.append(url)
    if netns_pid:
        cmd = ["nsenter", "--net=/proc/%d/ns/net" % netns_pid] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60).stdout
    r = {"rps": 0.0, "requests": 0, "failed": None, "mean_us": None}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    if m:
        r["requests"], r["failed"] = int(m.group(3)), int(m.group(4))
    m = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    if m:
        r["mean_us"] = _us(m.group(1), m.group(2))
    if not r["requests"]:
        r["output"] = out[-800:]
    return r


def h2_levels(out, paths, a, shapes=((1, 1), (4, 8), (16, 16))):
    """h2load (or wrk, whose paths ignore m) at client/stream shapes over
    `paths` (direct optional), in rounds as run_rounds runs them; the
    median round per path."""
    for fn in paths.values():
        fn(8, 8)  # warm pools
    for c, m in shapes:
        rounds, discarded = run_rounds(lambda name: paths[name](c, m), list(paths), a.dp_rounds,
                                       a.dp_secs, "c=%d m=%d" % (c, m))
        row = median_rounds(rounds)
        row["discarded_rounds"] = discarded
        n, s = row["nginx"]["rps"], row["sluice"]["rps"]
        out["c%d_m%d" % (c, m)] = row
        sl, ng = row["sluice"], row["nginx"]
        lat = ("mean %s/%s us; failed %s/%s" % (sl["mean_us"], ng["mean_us"], sl["failed"],
                                                 ng["failed"]) if "mean_us" in sl else
               "p99 %s/%s us; errors %s/%s, non-2xx %s/%s"
               % (p99_of(sl), p99_of(ng), sl["errors"], ng["errors"], sl["non2xx"],
                  ng["non2xx"]))
        log("  c=%-3d m=%-2d %snginx %8.0f  sluice %8.0f req/s  (sluice/nginx %.2f; %s)"
            % (c, m, ("direct %8.0f  " % row["direct"]["rps"]) if "direct" in row else "", n, s,
               row["ratio_rps_sluice_nginx"] or 0, lat))


def bench_h2_clients(rig, a):
    """HTTP/2 clients (h2load, prior knowledge) of the data path's HTTP/1.1
    backend: nginx's http2 listener (proxy_pass, upstream keepalive) against
    sluice's translation, in the same rig as the HTTP/1.1 paths."""
    log("data path: HTTP/2 clients of the HTTP/1.1 backend")
    out = {"setup": "h2load -cC -mM -D%d; %d round(s)" % (a.dp_secs, a.dp_rounds)}
    paths = {
        "nginx": lambda c, m: h2load("http://127.0.0.1:%d/" % NGINX_H2_CLIENT_PORT, c, m,
                                     a.dp_secs, authority=host("dp"), netns_pid=rig.pid),
        "sluice": lambda c, m: h2load("http://127.0.0.1:%d/" % rig.d.port, c, m, a.dp_secs,
                                      authority=host("dp")),
    }
    h2_levels(out, paths, a)
    return out


def bench_h2c(d, a):
    """HTTP/2 end to end (h2c): h2load → proxy → nghttpd, an HTTP/2-only
    server (the e2e tests' h2c image) in a sluice instance. nginx
    (grpc_pass, upstream keepalive, the same forwarding headers) runs in
    the instance's netns like the HTTP/1.1 stage's; direct is h2load in the
    netns straight to nghttpd."""
    log("h2c: deploying the HTTP/2 backend (nghttpd, one instance)")
    d.cli("deploy", "h2", "--image", a.h2c_image, "--use-http2", "--concurrency", "1000",
          "--min", "1", "--max", "1", "--no-cpu-throttling")  # as the data path's (Rig)
    out = {"setup": "h2load -cC -mM -D%d; %d round(s), proxies' order swapped each round"
                    % (a.dp_secs, a.dp_rounds)}
    results["h2c"] = out
    nginx = None
    try:
        pid = [i for i in d.instances("h2") if i["state"] == "Ready"][0]["pid"]
        nginx, _ = start_nginx(d.base, pid, NGINX_H2_CONF, NGINX_H2_PORT, "nginx-h2")
        paths = {
            "direct": lambda c, m: h2load("http://127.0.0.1:8080/", c, m, a.dp_secs,
                                          netns_pid=pid),
            "nginx": lambda c, m: h2load("http://127.0.0.1:%d/" % NGINX_H2_PORT, c, m,
                                         a.dp_secs, authority=host("h2"), netns_pid=pid),
            "sluice": lambda c, m: h2load("http://127.0.0.1:%d/" % d.port, c, m, a.dp_secs,
                                          authority=host("h2")),
        }
        h2_levels(out, paths, a)
        log("h2c: HTTP/1.1 clients (wrk) of the same backend, each request one stream")
        h1 = out["http1_clients"] = {"setup": "wrk -t1 -cN -d%ds; %d round(s), proxies' order "
                                              "swapped each round" % (a.dp_secs, a.dp_rounds)}
        h2_levels(h1, {
            "nginx": lambda c, m: wrk("http://127.0.0.1:%d/" % NGINX_H2_H1_PORT, c, a.dp_secs,
                                      hdr=host("h2"), netns_pid=pid),
            "sluice": lambda c, m: wrk("http://127.0.0.1:%d/" % d.port, c, a.dp_secs,
                                       hdr=host("h2")),
        }, a, shapes=((1, 1), (32, 1), (256, 1)))
    finally:
        if nginx:
            nginx.send_signal(signal.SIGTERM)
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        d.cli("delete", "h2", check=False)


def bench_idle(d, a):
    """Request-based CPU: a request to an instance held to idle CPU (the
    default, run.googleapis.com/cpu-throttling) against one to an instance
    that keeps its CPU (--no-cpu-throttling); same app, same gaps. The
    difference is what giving the CPU back costs the request."""
    n, gap = a.idle_n, 0.4
    log("idle CPU: %d requests each, %.0f ms apart, to a held instance and to an "
        "always-allocated one" % (n, gap * 1e3))
    d.cli("deploy", "held", "--image", a.image, "--min", "1", "--env", "ACCESS_LOG=off")
    d.cli("deploy", "always", "--image", a.image, "--min", "1", "--no-cpu-throttling",
          "--env", "ACCESS_LOG=off")
    times = {"held": [], "always": []}
    held_before = 0
    for _ in range(n):
        for name in ("held", "always"):
            time.sleep(gap)  # past the hold's 100 ms delay and an autoscaler tick
            # both paths make the same CLI call just before, so the machine is
            # equally awake for both requests
            held = all(i.get("cpuIdle") for i in d.instances(name))
            if name == "held":
                held_before += held
            t, status = first_byte(name)
            if "200" in status:
                times[name].append(t * 1e3)
    out = {k: stats(v) for k, v in times.items()}
    out["held_before_request"] = "%d of %d" % (held_before, n)
    if out["held"] and out["always"]:
        out["added_p50_ms"] = out["held"]["p50"] - out["always"]["p50"]
    results["idle_cpu"] = out
    for name in ("held", "always"):
        d.cli("delete", name)
        wait_gone(d, name)
    log("  held:   %s (held before %s requests)" % (fmt_stats(out["held"]),
                                                   out["held_before_request"]))
    log("  always: %s" % fmt_stats(out["always"]))


def machine():
    def sh(*c):
        try:
            return subprocess.run(c, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cores": os.cpu_count(),
            "kernel": sh("uname", "-r"), "crun": sh("crun", "--version").splitlines()[0],
            "nginx": sh("nginx", "-v") or subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
            "wrk": "wrk -t1", "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
            "mem_total_kib": int(open("/proc/meminfo").readline().split()[1]),
            "cpuidle_driver": read_text(CPUIDLE_DRIVER),
            "guest_halt_poll_ns": read_int(HALT_POLL),
            "sluice": sh(BIN_COPY[0], "version")}


BIN_COPY = [None]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--bin", required=True)
    p.add_argument("--oci", required=True, help="OCI layout dir of the hello image")
    p.add_argument("--base", required=True, help="state base dir, /tmp/sluice-bench-*")
    p.add_argument("--h2c-oci", help="OCI layout dir of the h2c (nghttpd) image")
    p.add_argument("--only", default="", help="comma list: datapath,cold,deploy,apply,conns,instances,scaleout,idle,h2c")
    p.add_argument("--cold-mode", default=os.environ.get("BENCH_COLD_MODE", "auto"),
                   choices=["auto", "zero", "fresh"])
    p.add_argument("--no-perf", action="store_true")
    p.add_argument("--busy-poll", default="50us",
                   help="window of the data path's extra `serve --busy-poll` run (0: skip it)")
    a = p.parse_args()
    # SIGTERM unwinds like ^C: the finally blocks stop the daemons and put
    # guest_halt_poll_ns back.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if re.fullmatch(r"0*(\.0*)?[a-zµ]*", a.busy_poll):  # 0, 0us, 0.0ms: skip the variant
        a.busy_poll = None
    a.oci_dir = a.oci
    a.image = "oci:%s:latest" % a.oci
    a.h2c_image = "oci:%s:latest" % a.h2c_oci if a.h2c_oci else None
    q = a.quick
    a.dp_secs, a.dp_rounds = (2, 1) if q else (4, 6)
    a.dp_pinned_rounds = 0 if q else 4
    a.dp_extra_levels = (1, 32)  # halt-poll and busy-poll sub-stages
    a.cold_n = 10 if q else 50
    a.zero_wait = 40 if q else 90
    a.deploys = 10 if q else 50
    a.apply_n = 20 if q else 200
    a.conn_steps = [100, 1000] if q else [100, 1000, 10000]
    a.inst_steps = [5] if q else [10, 50]
    a.step_secs = 5 if q else 10
    a.idle_n = 10 if q else 40
    a.sleep_ms = 50
    a.perf = not q and not a.no_perf and shutil.which("perf")
    only = set(filter(None, a.only.split(",")))
    want = lambda s: not only or s in only
    BIN_COPY[0] = a.bin
    os.makedirs(OUT, exist_ok=True)
    results["machine"] = machine()
    results["mode"] = "quick" if q else "full"
    d = Daemon(a.bin, a.base)
    d.start()
    results["daemon_flags"] = d.extra
    log("daemon pid %d on 127.0.0.1:%d, state %s" % (d.proc.pid, PORT, d.state))
    t_start = time.time()
    try:
        if want("instances"):
            bench_instances(d, a)
        if want("datapath"):
            bench_datapath(d, a)
        cold_names, t_apply = [], time.time()
        if want("cold") and a.cold_mode in ("auto", "zero"):
            cold_names = cold_apply(d, a, a.cold_n)
            t_apply = time.time()
        if want("deploy"):
            bench_deploys(d, a)
        if want("conns"):
            bench_conns(d, a)
        if want("cold"):
            bench_cold(d, a, cold_names, t_apply)
        if want("apply"):
            bench_apply(d, a)
        if want("scaleout"):
            bench_scaleout(d, a)
        if want("idle"):
            bench_idle(d, a)
        if want("h2c") and a.h2c_image and shutil.which("h2load"):
            bench_h2c(d, a)
    finally:
        rc = d.stop()
        results["daemon_exit"] = rc
        left = [l for l in open("/proc/self/mountinfo") if "sluice-bench" in l]
        results["leftover_mounts"] = len(left)
        results["elapsed_s"] = round(time.time() - t_start, 1)
        shutil.copy(d.log_path, os.path.join(OUT, "daemon-%s.log" % results["mode"]))
        with open(os.path.join(OUT, "results-%s.json" % results["mode"]), "w") as f:
            json.dump(results, f, indent=1, default=str)
        log("daemon exited %d; leftover mounts: %d; results in bench/out/results-%s.json"
            % (rc, len(left), results["mode"]))
    if rc != 0 or left:
        sys.exit(1)


if __name__ == "__main__":
    main()
