"""End-to-end fixtures: build real images with the project's packer
(umoci/skopeo), run the real `sluice serve` daemon on a private state dir
and port, and drive it through the real CLI and curl."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "build", "sluice"))
IMAGES = os.path.join(ROOT, "build", "e2e-images")


_ports_given = set()


def free_port():
    """A port nothing listens on, never one this run gave before: two taken
    back to back (an API and a metrics listener) must differ, and the kernel
    may hand the one just closed out again."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


@pytest.fixture(scope="session")
def images():
    """Builds the sample (distroless hello), a busybox and an h2c image once."""
    os.makedirs(IMAGES, exist_ok=True)
    subprocess.run(["sh", os.path.join(ROOT, "examples/hello/build-image.sh"),
                    os.path.join(IMAGES, "hello")], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sh", os.path.join(ROOT, "tests/e2e/images/busybox-image.sh"),
                    os.path.join(IMAGES, "busybox")], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sh", os.path.join(ROOT, "tests/e2e/images/h2c-image.sh"),
                    os.path.join(IMAGES, "h2c")], check=True, stdout=subprocess.DEVNULL)
    return {
        "hello": "oci:%s/hello/oci:latest" % IMAGES,
        "hello_archive": "docker-archive:%s/hello/hello.tar" % IMAGES,
        "busybox": "oci:%s/busybox/oci:latest" % IMAGES,
        "busybox_dir": os.path.join(IMAGES, "busybox"),
        "h2c": "oci:%s/h2c/oci:latest" % IMAGES,
    }


class Daemon:
    def __init__(self, state_dir, port, runtime="crun", extra=()):
        self.state_dir = state_dir
        self.port = port
        self.runtime = runtime
        self.extra = list(extra)
        self.proc = None
        self.log_path = os.path.join(os.path.dirname(state_dir), "daemon-%d.log" % port)

    def start(self):
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:%d" % self.port,
             "--state-dir", self.state_dir, "--runtime", self.runtime] + self.extra,
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sluice serve exited: %s" % self.daemon_log())
            r = self.cli("services", check=False)
            if r.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("sluice serve did not start: %s" % self.daemon_log())

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        rc = self.proc.returncode if self.proc else 0
        self.proc = None
        self.log.close()
        return rc

    def daemon_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-6000:]
        except OSError:
            return ""

    def cli(self, *args, check=True, input=None, timeout=180):
        env = dict(os.environ, SLUICE_STATE_DIR=self.state_dir,
                   ASAN_OPTIONS="detect_leaks=1")
        r = subprocess.run([BIN] + list(args), capture_output=True, text=True,
                           env=env, input=input, timeout=timeout, cwd=ROOT)
        if check and r.returncode != 0:
            raise AssertionError("sluice %s failed (%d): %s\n%s" % (
                " ".join(args), r.returncode, r.stderr, self.daemon_log()[-3000:]))
        return r

    def json(self, *args):
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def host(self, name, ns="default"):
        return "%s.localhost" % name if ns == "default" else "%s.%s.localhost" % (name, ns)

    def curl(self, name, path="/", *extra, ns="default", check=True):
        url = "http://%s:%d%s" % (self.host(name, ns), self.port, path)
        r = subprocess.run(["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}",
                            *extra, url], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError("curl %s: %s" % (url, r.stderr))
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body


@pytest.fixture
def make_daemon(tmp_path):
    """Factory for daemons with extra `sluice serve` flags, their state in
    tmp_path or `under`; all are stopped (and checked for a clean exit and
    no leftovers) at the end."""
    made = []

    def make(*extra, runtime="crun", under=None):
        state = (under or tmp_path) / ("state%d" % len(made) if made else "state")
        d = Daemon(str(state), free_port(), runtime=runtime, extra=extra)
        d.start()
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc:
            rc = d.stop()
            assert rc == 0, "daemon exited %d: %s" % (rc, d.daemon_log())
        assert_no_leftovers(d.state_dir)


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [l.split()[4] for l in f if l.split()[4].startswith(path)]


def cgroups_named(instance_ids):
    found = []
    for ctl in os.listdir("/sys/fs/cgroup"):
        for iid in instance_ids:
            p = os.path.join("/sys/fs/cgroup", ctl, "sluice", iid)
            if os.path.exists(p):
                found.append(p)
    return found


def instance_netns_curl(pid, path, port=8080):
    """GET from inside an instance's network namespace (bypassing sluice)."""
    r = subprocess.run(["nsenter", "--net=/proc/%d/ns/net" % pid, "curl", "-sS",
                        "--max-time", "10", "http://127.0.0.1:%d%s" % (port, path)],
                       capture_output=True, text=True)
    return r.stdout


def recv_until_close(sock, timeout):
    """What the peer sends until it closes or the timeout passes: (bytes, closed)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                return out, True
            out += b
    except ConnectionResetError:
        return out, True
    except socket.timeout:
        return out, False


def refused_requests(head):
    """Requests the API refuses before their bodies, each with a body the
    client sends whole before it reads, and the status it gets: over 4 MiB,
    chunked, an unparsable head. head: request line and headers so far."""
    chunk = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
    return [((head + "Content-Length: 5242880\r\n\r\n").encode() + b"x" * 5242880, b" 413 "),
            ((head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunk * 5, b" 411 "),
            ((head + "Bad Header: 1\r\n\r\n").encode() + b"x" * 5242880, b" 400 ")]


def send_refused(sock, req, timeout=10):
    """Sends all of req (a request the daemon refuses before its body) and
    reads the answer to the daemon's close, which must be an orderly one
    (a lingering close): a reset raises here."""
    sock.sendall(req)
    sock.settimeout(timeout)
    return read_until_close(sock)


def exchange(port, data, timeout=15):
    """Send data, then read until the router closes. Returns (bytes, closed)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(timeout)
    try:
        s.sendall(data)
        return recv_until_close(s, timeout)
    except ConnectionResetError:
        return b"", True
    except socket.timeout:
        return b"", False
    finally:
        s.close()


def open_file_limits(pid):
    """A process's limit on open files: (soft, hard)."""
    with open("/proc/%d/limits" % pid) as f:
        fields = [l for l in f if l.startswith("Max open files")][0].split()
    return int(fields[3]), int(fields[4])


def service_manifest(name, image, script=None, metadata=None, template_metadata=None,
                     traffic=None, **container):
    """A Knative Service (JSON text) of one container: image, `sh -c script`
    as its command when given, and any other container fields."""
    c = {"image": image}
    if script:
        c["command"] = ["/bin/sh", "-c", script]
    c.update(container)
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
           "metadata": dict({"name": name}, **(metadata or {})),
           "spec": {"template": {"spec": {"containers": [c]}}}}
    if template_metadata:
        doc["spec"]["template"]["metadata"] = template_metadata
    if traffic is not None:
        doc["spec"]["traffic"] = traffic
    return json.dumps(doc)


def read_until_close(s):
    """Every byte from socket s until the peer closes it."""
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return got
        got += chunk


def h2_frames(got):
    """(type, payload) of each whole HTTP/2 frame in the bytes got."""
    frames, i = [], 0
    while i + 9 <= len(got):
        n = int.from_bytes(got[i:i + 3], "big")
        frames.append((got[i + 3], got[i + 9:i + 9 + n]))
        i += 9 + n
    return frames


def goaway_code(frames):
    """The error code of the first GOAWAY among frames; None without one."""
    g = [p for t, p in frames if t == 7]
    return int.from_bytes(g[0][4:8], "big") if g else None


def wait_for(pred, timeout, step=0.05):
    """pred() once true (or its last value after timeout seconds)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def scrape_metrics(port):
    """The text of GET /metrics on a daemon's --metrics-listen port."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        return r.read().decode()


def unlabelled_metrics(text):
    """The unlabelled samples of a /metrics text: {name: value}."""
    return {l.split()[0]: float(l.split()[1]) for l in text.splitlines()
            if l and not l.startswith("#") and "{" not in l}


def hey(url, *args):
    """Runs hey and returns (status code counts, error lines, raw output)."""
    r = subprocess.run(["hey", *args, url], capture_output=True, text=True, timeout=600)
    codes = {}
    errors = []
    section = None
    for line in r.stdout.splitlines():
        t = line.strip()
        if t.startswith("Status code distribution"):
            section = "codes"
        elif t.startswith("Error distribution"):
            section = "errors"
        elif section == "codes" and t.startswith("["):
            code, n = t[1:].split("]")
            codes[int(code)] = int(n.split()[0])
        elif section == "errors" and t:
            errors.append(t)
    return codes, errors, r.stdout


def assert_no_leftovers(state):
    assert mounts_under(state) == [], "mounts left behind"
