"""Instance logs are bounded: a running instance's log keeps its newest
output under --instance-log-max, and exited instances' logs go after
--instance-log-retention (and beyond --instance-logs-per-revision)."""
import glob
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import recv_until_close, service_manifest

CAP = 256 * 1024

# ~3.3 MB of numbered lines in the background while httpd serves.
CHATTY = r"""
mkdir -p /tmp/www
echo hi > /tmp/www/index.html
(
  pad=0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789
  i=0
  while [ $i -lt 30000 ]; do echo "line $i $pad"; i=$((i+1)); done
  echo "newest-line-of-output"
) &
exec httpd -f -p "$PORT" -h /tmp/www
"""


def manifest(name, image, script, env=()):
    return service_manifest(name, image, script, env=[{"name": k, "value": v} for k, v in env])


def log_files(d, name):
    return sorted(glob.glob(os.path.join(d.state_dir, "logs", "default", name, "*.log")))


def wait_for(cond, what, d, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError("%s never happened\n%s" % (what, d.daemon_log()[-3000:]))


@pytest.fixture(params=["disk", "tmpfs"])
def log_fs(request):
    """Where the daemon's state lives: the test's directory (ext4 or XFS
    here: a trim collapses the log's start), or tmpfs (as on btrfs, it is
    punched out: the log keeps its length and starts with a hole). Requested
    before make_daemon, so it is removed after the daemon stopped."""
    if request.param == "disk":
        yield None
        return
    d = tempfile.mkdtemp(prefix="sluice-e2e-", dir="/dev/shm")
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


def test_log_cap_keeps_the_newest_output(log_fs, make_daemon, images):
    d = make_daemon("--instance-log-max", "256Ki", under=log_fs)
    d.cli("apply", "-f", "-", "--wait", input=manifest("chatty", images["busybox"], CHATTY))
    first = d.json("instances", "chatty")["items"][0]["name"]
    [path] = log_files(d, "chatty")

    def trimmed():
        with open(path, "rb") as f:
            data = f.read()
        held = os.stat(path).st_blocks * 512
        return b"newest-line-of-output" in data and len(data.lstrip(b"\0")) <= CAP and held <= CAP

    # The app writes more than ten times the cap; once it is done, its log
    # is under the cap and still ends with its newest line.
    wait_for(trimmed, "log under the cap with the newest line", d)
    # Collapsed (ext4, XFS), the file got shorter; punched out (tmpfs, btrfs
    # and others), it kept its length.
    fs = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True).stdout
    collapses = fs.strip() in ("ext2/ext3", "xfs")
    assert (os.stat(path).st_size > CAP) == (not collapses), fs
    out = d.cli("logs", "chatty").stdout
    assert "newest-line-of-output" in out
    assert "line 29999 " in out
    assert "line 0 " not in out
    assert "\0" not in out  # the hole of a punched-out start is skipped
    # The lines kept are the app's last ones, each once, in order.
    kept = [int(l.split()[2]) for l in out.splitlines() if l.split()[1:2] == ["line"]]
    assert kept[1:] == list(range(kept[1], 30000)), kept[:5]
    # The same instance, still serving.
    code, body = d.curl("chatty", "/index.html")
    assert code == 200 and body.strip() == "hi"
    assert [i["name"] for i in d.json("instances", "chatty")["items"]] == [first]


def test_logs_start_at_the_last_mib_and_follow(daemon, images):
    """`sluice logs` and `logs -f` start at the last MiB of a log, at a
    whole line, and go on from there, each line once."""
    daemon.cli("apply", "-f", "-", "--wait", input=manifest("chatty", images["busybox"], CHATTY))
    [path] = log_files(daemon, "chatty")
    wait_for(lambda: b"newest-line-of-output" in open(path, "rb").read(), "the app's output", daemon)
    assert os.path.getsize(path) > 3 << 20

    def numbered(out):
        lines = [l.split() for l in out.splitlines() if l.split()[1:2] == ["line"]]
        assert all(len(l) == 4 and len(l[3]) == 100 for l in lines), "a cut line"
        return [int(l[2]) for l in lines]

    out = daemon.cli("logs", "chatty").stdout
    kept = numbered(out)
    assert kept == list(range(kept[0], 30000)) and kept[0] > 0
    assert len(out) <= (1 << 20) + 30 * len(kept)
    env = dict(os.environ, SLUICE_STATE_DIR=daemon.state_dir)
    p = subprocess.Popen([os.environ.get("SLUICE_BIN", "build/sluice"), "logs", "chatty", "-f"],
                         stdout=subprocess.PIPE, env=env)
    try:
        seen = b""
        os.set_blocking(p.stdout.fileno(), False)
        deadline = time.time() + 20
        while time.time() < deadline and b"newest-line-of-output" not in seen:
            seen += p.stdout.read() or b""
            time.sleep(0.1)
    finally:
        p.terminate()
        p.wait()
    assert b"newest-line-of-output" in seen
    assert numbered(seen.decode()) == kept


def test_logs_of_two_services_on_one_connection(daemon, images):
    """Two `logs` requests on one keep-alive API connection: each answer is
    its own service's log, whole."""
    serve = 'echo "output of $MARK"; exec httpd -f -p "$PORT" -h /'
    for name in ("one", "two"):
        daemon.cli("apply", "-f", "-", "--wait",
                   input=manifest(name, images["busybox"], serve, env=[("MARK", name)]))
        wait_for(lambda: "output of %s" % name in daemon.cli("logs", name).stdout, name, daemon)
    req = "GET /apis/sluice.dev/v1/namespaces/default/services/%s/logs HTTP/1.1\r\nHost: x\r\n%s\r\n"
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(daemon.state_dir, "sluice.sock"))
    s.sendall((req % ("one", "") + req % ("two", "Connection: close\r\n")).encode())
    out, _ = recv_until_close(s, 15)
    s.close()
    first, _, second = out.partition(b"HTTP/1.1 200 OK", )[2].partition(b"HTTP/1.1 200 OK")
    assert b"output of one" in first and b"output of two" not in first, out
    assert b"output of two" in second and b"output of one" not in second, out
    # An HTTP/1.0 follower has no chunked coding: the lines come unframed,
    # and the stream ends with the connection.
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(daemon.state_dir, "sluice.sock"))
    s.sendall(b"GET /apis/sluice.dev/v1/namespaces/default/services/one/logs?follow=1 "
              b"HTTP/1.0\r\n\r\n")
    out, closed = recv_until_close(s, 3)
    s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head, out
    assert b"Transfer-Encoding" not in head and body.startswith(b"[one-"), out
    assert b"output of one" in body and not closed, out


def test_exited_instance_logs_expire(make_daemon, images):
    d = make_daemon("--instance-log-retention", "1s")
    serve = 'echo "output of $MARK"; exec httpd -f -p "$PORT" -h /'
    d.cli("apply", "-f", "-", "--wait",
          input=manifest("rot", images["busybox"], serve, env=[("MARK", "rev-one")]))
    [old] = log_files(d, "rot")
    wait_for(lambda: "output of rev-one" in d.cli("logs", "rot").stdout, "rev-one output", d)
    # A new revision takes the traffic; the old instance drains and exits.
    d.cli("apply", "-f", "-", "--wait",
          input=manifest("rot", images["busybox"], serve, env=[("MARK", "rev-two")]))
    wait_for(lambda: not os.path.exists(old), "the exited instance's log removed", d)
    out = d.cli("logs", "rot").stdout
    assert "output of rev-one" not in out
    assert "output of rev-two" in out  # the live instance's log stays
    assert d.curl("rot", "/")[0] in (200, 403, 404)


def test_crashed_instance_log_stays_readable(daemon, images):
    script = "echo 'fatal: missing DATABASE_URL' >&2; exit 3"
    r = daemon.cli("apply", "-f", "-", "--wait", check=False,
                   input=manifest("broken", images["busybox"], script))
    assert r.returncode != 0
    # The default retention keeps the exited instances' logs: `sluice logs`
    # shows why they crashed.
    out = daemon.cli("logs", "broken").stdout
    assert "missing DATABASE_URL" in out
    # and how each instance ended, after what it wrote
    assert "[sluice] instance broken-00001-" in out and "failed: exited with status 3" in out, out
    # The failure's reason quotes the app's last lines, not sluice's own.
    rev = daemon.json("revisions", "broken")["items"][0]
    msg = [c for c in rev["status"]["conditions"] if c["type"] == "Ready"][0]["message"]
    assert "missing DATABASE_URL" in msg and "[sluice]" not in msg, msg
