"""The API's doors: a 0600 unix socket, and a TCP listener only with a
bearer token."""
import json
import os
import select
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request

from conftest import (BIN, Daemon, free_port, recv_until_close, refused_requests, send_refused,
                      wait_for)


def cli_env(d, **extra):
    env = dict(os.environ, SLUICE_STATE_DIR="/nonexistent")
    env.update(extra)
    return env


def run(args, env):
    return subprocess.run([BIN] + args, capture_output=True, text=True, env=env, timeout=120)


def test_unix_socket_is_owner_only(daemon):
    mode = stat.S_IMODE(os.stat(os.path.join(daemon.state_dir, "sluice.sock")).st_mode)
    assert mode == 0o600


def test_tcp_api_needs_the_token(make_daemon, images):
    port = free_port()
    d = make_daemon("--api-listen", "127.0.0.1:%d" % port)
    tok_path = os.path.join(d.state_dir, "api-token")
    assert stat.S_IMODE(os.stat(tok_path).st_mode) == 0o600
    token = open(tok_path).read().strip()
    assert len(token) >= 32
    server = "http://127.0.0.1:%d" % port

    # no token, a wrong token: 401 with a message, nothing done
    r = run(["services"], cli_env(d, SLUICE_SERVER=server))
    assert r.returncode != 0 and "Bearer" in r.stderr
    r = run(["deploy", "x", "--image", images["hello"]],
            cli_env(d, SLUICE_SERVER=server, SLUICE_TOKEN="0" * len(token)))
    assert r.returncode != 0 and "Bearer" in r.stderr
    assert d.json("services")["items"] == []
    with urllib.request.urlopen(server + "/healthz", timeout=5) as resp:
        assert resp.status == 200

    # the right token, from the environment or a file
    r = run(["deploy", "x", "--image", images["hello"]],
            cli_env(d, SLUICE_SERVER=server, SLUICE_TOKEN=token))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "http://x.localhost:%d" % d.port
    r = run(["services", "-o", "json"], cli_env(d, SLUICE_SERVER=server, SLUICE_TOKEN_FILE=tok_path))
    assert r.returncode == 0 and json.loads(r.stdout)["items"][0]["metadata"]["name"] == "x"
    code, _ = d.curl("x", "/")
    assert code == 200


def test_tcp_clients_cannot_hold_memory_or_connections(make_daemon):
    """Without the token a body is refused from the head alone, before it is
    read (so no client makes the daemon hold 4 MiB for it); the metrics
    listener takes no bodies; a TCP client that sends no whole request
    within 75 s is closed."""
    api_port, metrics_port = free_port(), free_port()
    d = make_daemon("--api-listen", "127.0.0.1:%d" % api_port,
                    "--metrics-listen", "127.0.0.1:%d" % metrics_port)
    token = open(os.path.join(d.state_dir, "api-token")).read().strip()
    head = ("PUT /apis/serving.knative.dev/v1/namespaces/default/services/x HTTP/1.1\r\n"
            "Host: x\r\nContent-Length: 4194304\r\n%s\r\n")
    for port, hdr, status in [(api_port, "", b" 401 "),
                              (api_port, "Authorization: Bearer %s\r\n" % ("0" * len(token)), b" 401 "),
                              (metrics_port, "", b" 413 ")]:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall((head % hdr).encode())  # the head only: the answer comes anyway
        out, closed = recv_until_close(s, 10)
        s.close()
        assert out.startswith(b"HTTP/1.1" + status) and closed, out
        # A client that sends the whole body before reading still gets the
        # answer (the rest is read and dropped), not a reset.
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall((head % hdr).encode() + b"x" * 4194304)
        out, closed = recv_until_close(s, 10)
        s.close()
        assert out.startswith(b"HTTP/1.1" + status) and closed, out[:200]
    # So does a client with the token whose request is refused before its
    # body: one over 4 MiB, a chunked one, an unparsable head.
    put = ("PUT /apis/serving.knative.dev/v1/namespaces/default/services/x HTTP/1.1\r\n"
           "Host: x\r\nAuthorization: Bearer %s\r\n" % token)
    for req, status in refused_requests(put):
        with socket.create_connection(("127.0.0.1", api_port)) as s:
            out = send_refused(s, req)
        assert out.startswith(b"HTTP/1.1" + status), out[:200]
    idle = socket.create_connection(("127.0.0.1", api_port))
    trickle = socket.create_connection(("127.0.0.1", api_port))
    start = time.time()
    closed = False
    for ch in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 30:
        try:
            trickle.send(bytes([ch]))  # a byte each 5 s, never a whole head
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if select.select([trickle], [], [], 5)[0]:  # readable: the daemon closed it
            closed = True
            break
    assert closed and 73 < time.time() - start < 85, time.time() - start
    assert recv_until_close(idle, 5) == (b"", True)
    # A whole request on a fresh connection is served.
    with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % api_port, timeout=5) as resp:
        assert resp.status == 200


def read_responses(s, n, timeout=60):
    """Reads until n HTTP/1.1 status lines are in (or the peer closes)."""
    s.settimeout(timeout)
    out = b""
    while out.count(b"HTTP/1.1 ") < n:
        b = s.recv(1 << 20)
        if not b:
            break
        out += b
    return out


def test_pipelined_requests_and_clients_that_do_not_read(make_daemon):
    """Thousands of requests in one write are answered one after another
    (they took a stack frame each, and crashed the daemon, before); a client
    that pipelines requests and reads nothing makes the daemon stop reading
    it rather than queue answers without end, and is closed after 75 s; a
    request whose target is not a path is a 400, token or not."""
    metrics_port, api_port = free_port(), free_port()
    d = make_daemon("--metrics-listen", "127.0.0.1:%d" % metrics_port,
                    "--api-listen", "127.0.0.1:%d" % api_port)
    n = 5000
    for family, addr in [(socket.AF_INET, ("127.0.0.1", metrics_port)),
                         (socket.AF_INET, ("127.0.0.1", api_port)),
                         (socket.AF_UNIX, os.path.join(d.state_dir, "sluice.sock"))]:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.connect(addr)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n" * n)
        out = read_responses(s, n)
        s.close()
        assert out.count(b"HTTP/1.1 200 OK\r\n") == n, (addr, out.count(b"HTTP/1.1 200"))
    assert d.proc.poll() is None

    for line, want in ((b"CONNECT a:1", b"400 "), (b"OPTIONS *", b"400 "),
                       (b"GET http://a/healthz", b"200 ")):  # absolute-form: its path
        s = socket.create_connection(("127.0.0.1", api_port))
        s.sendall(line + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        out = read_responses(s, 1, 10)
        s.close()
        assert out.startswith(b"HTTP/1.1 " + want), out
        assert want == b"200 " or b"must be a path" in out, out
    assert d.proc.poll() is None

    # Asks for a last answer (Connection: close) larger than the kernel's
    # socket buffers, 9 MB of configmaps, and never takes it: closed by
    # the same timeout, not held for ever.
    token = open(os.path.join(d.state_dir, "api-token")).read().strip()
    sock = os.path.join(d.state_dir, "sluice.sock")
    for i in range(10):
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big%d" % i},
                           "data": {"blob": "x" * 900000}})
        subprocess.run(["curl", "-sSf", "-o", "/dev/null", "--unix-socket", sock, "-X", "PUT",
                        "--data-binary", "@-", "http://x/api/v1/namespaces/default/configmaps/big%d" % i],
                       input=body.encode(), check=True)
    closer = socket.socket()
    closer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    closer.connect(("127.0.0.1", api_port))
    closer.sendall(("GET /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: a\r\n"
                    "Authorization: Bearer %s\r\nConnection: close\r\n\r\n" % token).encode())
    closer_port = closer.getsockname()[1]
    # Never reads: /metrics requests are sent until the daemon stops taking
    # them (the socket's buffers stay full for 3 s). Before, it read and
    # answered them as fast as it could, queueing every answer.
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.connect(("127.0.0.1", metrics_port))
    hog.setblocking(False)
    req = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" * 64
    sent, stalled_since, stopped = 0, None, False
    start = time.time()
    while sent < 64 << 20 and time.time() - start < 40:
        try:
            sent += hog.send(req)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.time()
            if time.time() - stalled_since > 3:
                stopped = True  # the daemon reads no more of it
                break
            time.sleep(0.05)
    # What it took: its read-ahead (one whole request's room, 4.1 MiB) and
    # the kernel's socket buffers on both sides.
    assert stopped and sent < 24 << 20, (stopped, sent)
    # Others are served meanwhile; the closer's connection is still open.
    with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % metrics_port, timeout=5) as resp:
        assert resp.status == 200
    assert daemon_holds(d.proc.pid, closer_port)
    # The send timeout closes both: 75 s in which they take nothing (the
    # kernel taking a little more of the hog's queue after it stalled
    # counts as progress, and may start its 75 s again once).
    closed = {}
    while len(closed) < 2 and time.time() - start < 170:
        for name, port in (("hog", hog.getsockname()[1]), ("closer", closer_port)):
            if name not in closed and not daemon_holds(d.proc.pid, port):
                closed[name] = time.time() - start
        time.sleep(1)
    hog.close()
    closer.close()
    assert set(closed) == {"hog", "closer"} and min(closed.values()) > 70, closed
    assert closed["closer"] < 100, closed
    assert d.proc.poll() is None

    # Each TCP listener has its own connection limit: clients of the
    # metrics listener (no token needed) cannot take the API's.
    many = [socket.create_connection(("127.0.0.1", metrics_port)) for _ in range(70)]
    time.sleep(1)
    refused = sum(recv_until_close(c, 0)[1] for c in select.select(many, [], [], 0)[0])
    assert refused == 6, refused
    with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % api_port, timeout=5) as resp:
        assert resp.status == 200
    for c in many:
        c.close()
    # Connections that never send the token are at most 256 of the API's:
    # past that the oldest idle one is closed, so a client with the token
    # still gets in.
    anon = [socket.create_connection(("127.0.0.1", api_port)) for _ in range(300)]
    req = urllib.request.Request(
        "http://127.0.0.1:%d/apis/serving.knative.dev/v1/namespaces/default/services" % api_port,
        headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
    time.sleep(1)
    evicted = sum(recv_until_close(c, 0)[1] for c in select.select(anon, [], [], 0)[0])
    assert evicted >= 300 - 256, evicted
    for c in anon:
        c.close()
    assert d.proc.poll() is None


def daemon_holds(pid, client_port):
    """Whether process pid still has the socket of the connection from
    client_port open (ss: its users)."""
    out = subprocess.run(["ss", "-tnpH", "dport = :%d" % client_port],
                         capture_output=True, text=True).stdout
    return "pid=%d," % pid in out


def test_readable_token_file_is_refused(tmp_path):
    tok = tmp_path / "token"
    tok.write_text("a" * 40 + "\n")
    os.chmod(tok, 0o644)
    state = tmp_path / "state"
    r = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:%d" % free_port(),
                        "--state-dir", str(state), "--api-listen", "127.0.0.1:%d" % free_port(),
                        "--api-token-file", str(tok)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "readable by others" in r.stderr


def test_image_root_confines_what_the_api_reads(make_daemon, images, tmp_path):
    """With --image-root, a token holder deploys oci: and docker-archive:
    images from below it only: nothing else on the host is read as an image
    or used as a root filesystem, and a refusal stores nothing."""
    archive = images["hello_archive"].split(":", 1)[1]
    hello_dir = os.path.dirname(archive)
    port = free_port()
    d = make_daemon("--api-listen", "127.0.0.1:%d" % port, "--image-root", hello_dir)
    token = open(os.path.join(d.state_dir, "api-token")).read().strip()
    env = cli_env(d, SLUICE_SERVER="http://127.0.0.1:%d" % port, SLUICE_TOKEN=token)
    for name, ref in (("oci", images["hello"]), ("archive", images["hello_archive"])):
        r = run(["deploy", name, "--image", ref], env)
        assert r.returncode == 0, r.stderr
        assert d.curl(name, "/")[0] == 200
    refused = (("other", images["busybox"], "is outside the image root"),
               ("rootfs", "dir:" + images["busybox_dir"], "dir: images are not accepted"),
               ("up", "oci:%s/../busybox/oci:latest" % hello_dir,
                "is outside the image root"))
    for name, ref, why in refused:
        r = run(["deploy", name, "--image", ref], env)
        assert r.returncode != 0 and why in r.stderr and hello_dir in r.stderr, r.stderr
    r = run(["images", "import", images["busybox"]], env)
    assert r.returncode != 0 and "is outside the image root" in r.stderr, r.stderr
    names = sorted(s["metadata"]["name"] for s in d.json("services")["items"])
    assert names == ["archive", "oci"]
    assert d.curl("oci", "/")[0] == 200

    # a root that is not a directory, or that holds the state directory
    state = tmp_path / "s"
    for root, why in ((str(tmp_path / "none"), "No such file"),
                      (archive, "is not a directory"),
                      (str(tmp_path), "holds the state directory")):
        r = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:%d" % free_port(),
                            "--state-dir", str(state), "--image-root", root],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "--image-root" in r.stderr and why in r.stderr, r.stderr
