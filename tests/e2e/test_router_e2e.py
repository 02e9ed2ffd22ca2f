"""The router against the real daemon: WebSocket upgrades are tunnelled to
a real instance (busybox nc answering the 101 and echoing with cat), count
as one request in flight until closed, and outlive the request timeout."""
import ctypes
import json
import os
import platform
import resource
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import BIN, exchange, free_port, hey, open_file_limits, scrape_metrics

LIBC = ctypes.CDLL(None, use_errno=True)

WS_SCRIPT = r"""
set -u
cat > /tmp/ws.sh <<'EOS'
#!/bin/sh
# One connection: read the request head, answer 101 to an upgrade (then
# echo every byte with cat) or 426 to anything else.
up=no
while IFS= read -r line; do
  line=${line%$(printf '\r')}
  [ -z "$line" ] && break
  case "$line" in [Uu]pgrade:*websocket*) up=yes ;; esac
done
if [ "$up" = yes ]; then
  printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'
  exec cat
fi
printf 'HTTP/1.1 426 Upgrade Required\r\nContent-Length: 9\r\nConnection: close\r\n\r\nupgrade!\n'
EOS
chmod 755 /tmp/ws.sh
exec nc -ll -p "$PORT" -e /tmp/ws.sh
"""


def ws_manifest(image, timeout_s=1):
    c = {"image": image, "command": ["/bin/sh", "-c", WS_SCRIPT]}
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
           "metadata": {"name": "ws"},
           "spec": {"template": {"spec": {"timeoutSeconds": timeout_s, "containers": [c]}}}}
    return json.dumps(doc)


def recv_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, "connection closed before a response head: %r" % buf
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        fields[k.strip().lower()] = v.strip()
    return lines[0], fields, rest


def recv_exact(s, n, rest=b""):
    buf = rest
    while len(buf) < n:
        chunk = s.recv(min(65536, n - len(buf)))
        assert chunk, "tunnel closed after %d of %d bytes" % (len(buf), n)
        buf += chunk
    return buf


def in_flight(daemon):
    return sum(i["inFlight"] for i in daemon.json("instances", "ws")["items"])


def test_websocket_is_tunnelled_to_the_instance(daemon, images):
    daemon.cli("apply", "-f", "-", "--wait", input=ws_manifest(images["busybox"]))
    # A plain request is answered by the instance as a normal response.
    code, body = daemon.curl("ws", "/chat")
    assert code == 426 and body == "upgrade!\n"

    s = socket.create_connection(("127.0.0.1", daemon.port), timeout=20)
    s.sendall(b"GET /chat HTTP/1.1\r\nHost: ws.localhost\r\nConnection: Upgrade\r\n"
              b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    status, fields, rest = recv_head(s)
    assert status.startswith("HTTP/1.1 101 "), status
    assert fields.get("upgrade") == "websocket"
    assert fields.get("connection", "").lower() == "upgrade"

    msg = b"hello through the tunnel\n"
    s.sendall(msg)
    assert recv_exact(s, len(msg), rest) == msg
    assert in_flight(daemon) == 1  # one request until the tunnel closes

    # timeoutSeconds is 1: it stopped applying at the 101.
    time.sleep(1.5)
    s.sendall(b"still here\n")
    assert recv_exact(s, 11) == b"still here\n"

    # A few MB both ways at once: back-pressure, no loss, no reordering.
    payload = bytes((i * 7 + i // 4096) & 0xFF for i in range(3 << 20))
    w = threading.Thread(target=s.sendall, args=(payload,))
    w.start()
    got = recv_exact(s, len(payload))
    w.join()
    assert got == payload

    # Half-close: the instance's cat sees EOF and exits, the router closes.
    s.shutdown(socket.SHUT_WR)
    assert s.recv(1) == b""
    s.close()
    deadline = time.time() + 10
    while time.time() < deadline and in_flight(daemon) != 0:
        time.sleep(0.05)
    assert in_flight(daemon) == 0

    # The service keeps serving afterwards.
    code, body = daemon.curl("ws", "/again")
    assert code == 426


CGI_SCRIPT = r"""
set -u
mkdir -p /tmp/www/cgi-bin
cat > /tmp/www/cgi-bin/lf <<'EOS'
#!/bin/sh
echo "Content-Type: text/plain"
echo "X-From: cgi"
echo
echo "lines ended by LF alone"
EOS
chmod 755 /tmp/www/cgi-bin/lf
exec httpd -f -p "$PORT" -h /tmp/www
"""


def test_cgi_head_with_bare_lf_is_relayed_with_crlf(daemon, images):
    """busybox httpd passes a CGI script's "\\n"-terminated header lines on as
    they are; RFC 9112 §2.2 lets a recipient take a bare LF as a line end, so
    the router serves the response and sends every line with CRLF."""
    c = {"image": images["busybox"], "command": ["/bin/sh", "-c", CGI_SCRIPT]}
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
           "metadata": {"name": "cgi"}, "spec": {"template": {"spec": {"containers": [c]}}}}
    daemon.cli("apply", "-f", "-", "--wait", input=json.dumps(doc))
    raw, _ = exchange(daemon.port, ("GET /cgi-bin/lf HTTP/1.1\r\nHost: %s\r\nConnection: close"
                                    "\r\n\r\n" % daemon.host("cgi")).encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw
    lines = head.split(b"\r\n")
    assert b"Content-Type: text/plain" in lines and b"X-From: cgi" in lines, raw
    assert all(b"\n" not in l for l in lines), raw  # no bare LF reaches the client
    assert b"lines ended by LF alone" in body


def assert_serve_refuses(tmp_path, flag, cases):
    """`sluice serve FLAG VALUE` for each (VALUE, why): a usage error (exit
    2) naming the flag and why, before the state directory is made."""
    for bad, why in cases:
        r = subprocess.run([BIN, "serve", "--state-dir", str(tmp_path / "x"), flag, bad],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and flag in r.stderr and why in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_busy_poll_serves_and_refuses_bad_values(make_daemon, images, tmp_path):
    """`serve --busy-poll`: a daemon polling 50us after each read serves
    keep-alive and fresh connections alike (hey, real client), and values
    out of range are refused naming the flag. The time spent polling is
    exported in /metrics."""
    mport = free_port()
    d = make_daemon("--busy-poll", "50us", "--metrics-listen", "127.0.0.1:%d" % mport)
    d.cli("deploy", "bp", "--image", images["hello"])
    codes, errors, out = hey("http://127.0.0.1:%d/" % d.port, "-host", d.host("bp"),
                             "-n", "2000", "-c", "4")
    assert errors == [] and codes == {200: 2000}, out
    codes, errors, out = hey("http://127.0.0.1:%d/" % d.port, "-host", d.host("bp"),
                             "-n", "200", "-c", "2", "-disable-keepalive")
    assert errors == [] and codes == {200: 200}, out
    time.sleep(0.2)  # the last window (50us) has ended
    text = scrape_metrics(mport)
    polled = [float(l.split()[1]) for l in text.splitlines()
              if l.startswith("sluice_router_busy_poll_seconds_total ")]
    assert polled and polled[0] >= 50e-6, text
    assert_serve_refuses(tmp_path, "--busy-poll", (("11ms", "at most 10ms"),
                                                   ("soon", "expected a duration")))


SCHED_ATTR = struct.Struct("IIQiIQQQII")  # struct sched_attr, SCHED_ATTR_SIZE_VER1


def sched_attr(tid):
    """sched_getattr(2) of a thread: (policy, flags, nice, slice in ns)."""
    buf = ctypes.create_string_buffer(SCHED_ATTR.size)
    if LIBC.syscall(315, tid, buf, SCHED_ATTR.size, 0) != 0:  # SYS_sched_getattr, x86-64
        raise OSError(ctypes.get_errno(), "sched_getattr(%d)" % tid)
    size, policy, flags, nice, _prio, runtime = SCHED_ATTR.unpack(buf.raw)[:6]
    return policy, flags, nice, runtime


def kernel_has_task_slices():
    """Linux 6.12+ (EEVDF) reads a fair task's sched_runtime as its slice,
    and reports the slice back; earlier kernels report 0."""
    if platform.machine() != "x86_64":
        return False
    try:
        return sched_attr(0)[3] > 0
    except OSError:  # sched_getattr refused (a seccomp filter)
        return False


def test_sched_slice_on_the_loop_thread_alone(make_daemon, images, tmp_path):
    """`serve --sched-slice 500us`: the daemon's loop thread asks for that
    scheduler slice; its other threads, the runtime and the instances it
    starts keep the kernel's default, and so does the loop without the
    flag. Values out of range are refused."""
    if not kernel_has_task_slices():
        pytest.skip("kernel without per-task scheduler slices (Linux 6.12+)")
    default = sched_attr(0)[3]
    d = make_daemon("--sched-slice", "500us")
    d.cli("deploy", "slice", "--image", images["hello"])
    assert d.curl("slice", "/")[0] == 200
    policy, flags, _nice, runtime = sched_attr(d.proc.pid)
    assert (policy, runtime) == (0, 500000) and flags & 1, (policy, flags, runtime)
    threads = [int(t) for t in os.listdir("/proc/%d/task" % d.proc.pid)]
    assert len(threads) > 1, threads  # the thread pool has run the image import
    for tid in threads:
        if tid != d.proc.pid:
            assert sched_attr(tid)[3] == default, tid
    inst = d.json("instances", "slice")["items"][0]
    assert sched_attr(inst["pid"])[3] == default
    d.stop()
    d0 = make_daemon()
    assert sched_attr(d0.proc.pid)[3] == default
    assert_serve_refuses(tmp_path, "--sched-slice", (("50us", "between 100us and 100ms"),
                                                     ("101ms", "between 100us and 100ms"),
                                                     ("short", "expected a duration")))


def read_sys(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def test_doctor_reports_guest_halt_polling():
    """On a KVM guest with the haltpoll cpuidle driver and governor, `sluice
    doctor` reports the guest's halt polling, with the remedies when it is
    off; elsewhere it says nothing about it."""
    r = subprocess.run([BIN, "doctor"], capture_output=True, text=True, timeout=30)
    assert "This host can run sluice." in r.stdout or "Some checks failed." in r.stdout, r.stdout
    cpuidle = "/sys/devices/system/cpu/cpuidle/"
    driver = read_sys(cpuidle + "current_driver")
    governor = read_sys(cpuidle + "current_governor") or read_sys(cpuidle + "current_governor_ro")
    ns = read_sys("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    if driver == "haltpoll" and governor == "haltpoll" and ns is not None:
        assert "[info] cpuidle: haltpoll, guest_halt_poll_ns %s\n" % ns in r.stdout, r.stdout
        assert ("--busy-poll" in r.stdout) == (ns == "0"), r.stdout
    else:
        assert "cpuidle" not in r.stdout, r.stdout


def test_daemon_raises_its_open_file_limit(make_daemon, images):
    """Started with the common soft limit of a few hundred or 1024 open
    files, the daemon takes the hard limit: it holds more connections than
    the soft limit it was given and still serves."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4096:
        pytest.skip("hard limit on open files below 4096")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        d = make_daemon()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert open_file_limits(d.proc.pid) == (hard, hard)
    d.cli("deploy", "hello", "--image", images["hello"])
    assert d.curl("hello", "/")[0] == 200
    held = [socket.create_connection(("127.0.0.1", d.port)) for _ in range(600)]
    try:
        time.sleep(0.5)
        code, body = d.curl("hello", "/")
        assert code == 200 and "hello-00001" in body
    finally:
        for s in held:
            s.close()
