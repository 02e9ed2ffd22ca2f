"""HTTP/2 without TLS (h2c) end to end: Knative's "h2c" port, what gRPC
servers speak. A real HTTP/2-only server (nghttpd) in the instance, a real
HTTP/2 client (the h2 library, curl) at the ingress."""
import json
import socket
import subprocess
import time

from conftest import goaway_code, h2_frames, read_until_close, service_manifest, wait_for
from h2client import H2, Exchange, get


def deploy_h2c(d, images, name, command=None, **spec):
    extra = {"command": command} if command else {}
    doc = json.loads(service_manifest(name, images["h2c"],
                                      ports=[{"name": "h2c", "containerPort": 8080}], **extra))
    doc["spec"]["template"]["spec"].update(spec)
    d.cli("apply", "-f", "-", input=json.dumps(doc))


def inflight(d, name):
    return [i["inFlight"] for i in d.json("instances", name)["items"]]


def test_streams_multiplexed_with_bodies_and_trailers(make_daemon, images):
    """Five requests at once on one connection: a page, a 300 KB upload
    echoed back, a 1 MiB download (both past every flow-control window),
    the instance's own 404, and a host no service has. Every response the
    instance made ends with its trailer, as gRPC's grpc-status does."""
    d = make_daemon()
    deploy_h2c(d, images, "grpc")
    host = d.host("grpc")
    upload = bytes(range(256)) * 1200
    c = H2(d.port)
    try:
        ids = [c.request(host, "/"),
               c.request(host, "/echo", "POST", upload),
               c.request(host, "/big"),
               c.request(host, "/missing"),
               c.request(d.host("nobody"), "/")]
        page, echo, big, missing, nobody = c.wait(ids)
    finally:
        c.close()
    assert page.status == 200 and page.data == b"hello over h2c\n", page.__dict__
    assert page.trailers == {"grpc-status": "0"}
    assert echo.status == 200 and echo.data == upload and echo.trailers == {"grpc-status": "0"}
    assert big.status == 200 and big.data == b"x" * 1048576 and big.trailers
    assert missing.status == 404 and missing.trailers == {"grpc-status": "0"}
    assert nobody.status == 404 and nobody.data == b"no service for host nobody.localhost\n"
    assert nobody.trailers is None
    assert wait_for(lambda: inflight(d, "grpc") == [0], 10), inflight(d, "grpc")
    # curl, a second client implementation, on a connection of its own
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}",
                        "http://%s:%d/" % (host, d.port)], capture_output=True, text=True)
    assert r.stdout == "hello over h2c\n\n2", (r.stdout, r.stderr)


def test_each_stream_is_one_request_in_flight(make_daemon, images):
    """containerConcurrency counts streams, not connections: four uploads
    held open on one connection to a revision of concurrency 1 are four
    requests in flight on four instances, and each completes when its body
    ends."""
    d = make_daemon()
    deploy_h2c(d, images, "one", containerConcurrency=1)
    host = d.host("one")
    c = H2(d.port)
    try:
        ids = [c.request(host, "/echo", "POST", end=False) for _ in range(4)]
        for sid in ids:
            c.conn.send_data(sid, b"part-%d " % sid)
        c.flush()

        def spread():
            c.pump(0.05)
            busy = inflight(d, "one")
            return sorted(busy) if busy.count(1) == 4 else None
        busy = wait_for(spread, 30)
        assert busy and max(busy) == 1 and sum(busy) == 4, inflight(d, "one")
        for sid in ids:
            c.conn.send_data(sid, b"end", end_stream=True)
        c.flush()
        out = c.wait(ids)
    finally:
        c.close()
    for sid, e in zip(ids, out):
        assert e.status == 200 and e.data == b"part-%d end" % sid, e.__dict__
    assert wait_for(lambda: sum(inflight(d, "one")) == 0, 10), inflight(d, "one")


def test_timeout_and_cancel(make_daemon, images):
    """A request whose instance does not answer within timeoutSeconds is a
    504 on its stream; a stream the client resets gives its instance slot
    back at once; the connection serves on after both."""
    d = make_daemon()
    deploy_h2c(d, images, "slow", timeoutSeconds=2)
    host = d.host("slow")
    c = H2(d.port)
    try:
        held = c.request(host, "/echo", "POST", end=False)  # no response until the body ends
        gone = c.request(host, "/echo", "POST", end=False)
        assert wait_for(lambda: c.pump(0.05) or sum(inflight(d, "slow")) == 2, 20)
        c.cancel(gone)
        assert wait_for(lambda: c.pump(0.05) or sum(inflight(d, "slow")) == 1, 10), \
            inflight(d, "slow")
        t0 = time.time()
        e = c.wait([held])[0]
        assert e.status == 504, e.__dict__
        assert e.data == b"instance did not answer within 2000 ms\n"
        assert time.time() - t0 < 10
        after = c.request(host, "/")
        assert c.wait([after])[0].status == 200
    finally:
        c.close()
    assert wait_for(lambda: sum(inflight(d, "slow")) == 0, 10), inflight(d, "slow")


ENV_CGI = r"""
mkdir -p /tmp/www/cgi-bin
cat > /tmp/www/cgi-bin/env <<'EOS'
#!/bin/sh
printf 'Content-Type: text/plain\r\nX-Mixed-Case: yes\r\n\r\n'
env | grep -E '^(HTTP_|REQUEST_METHOD|CONTENT_LENGTH)' | sort
EOS
chmod 755 /tmp/www/cgi-bin/env
exec httpd -f -p "$PORT" -h /tmp/www
"""


def test_http2_clients_of_http1_instances(make_daemon, images):
    """HTTP/2 to a revision whose instances speak HTTP/1.1 is translated:
    many streams at once on one connection, bodies with and without a
    Content-Length (chunked to the instance), HEAD, a close-delimited CGI
    response; Cookie fields joined, TE dropped, forwarding fields added,
    response field names lower-cased."""
    d = make_daemon()
    d.cli("deploy", "web", "--image", images["hello"])
    host = d.host("web")
    upload = bytes(range(256)) * 1200
    c = H2(d.port)
    try:
        ids = [c.request(host, "/"),
               c.request(host, "/echo", "POST", upload,
                         headers=[("content-length", str(len(upload)))]),
               c.request(host, "/echo", "POST", upload),
               c.request(host, "/", "HEAD"),
               c.request(host, "/sleep?ms=200")]
        page, sized, chunked, head, slept = c.wait(ids)
    finally:
        c.close()
    assert page.status == 200 and page.data.startswith(b"Hello from sluice!"), page.__dict__
    assert sized.status == 200 and sized.data == upload
    assert chunked.status == 200 and chunked.data == upload
    assert head.status == 200 and head.data == b""
    assert head.headers["content-length"] == str(len(page.data))
    assert slept.status == 200
    assert wait_for(lambda: inflight(d, "web") == [0], 10), inflight(d, "web")

    doc = json.loads(service_manifest("cgi", images["busybox"], script=ENV_CGI))
    d.cli("apply", "-f", "-", input=json.dumps(doc))
    e = get(d.port, d.host("cgi"), "/cgi-bin/env",
            headers=[("cookie", "a=1"), ("cookie", "b=2"), ("te", "trailers"),
                     ("x-forwarded-for", "192.0.2.7")])
    assert e.status == 200 and e.headers.get("x-mixed-case") == "yes", e.__dict__
    env = e.data.decode()
    assert "HTTP_COOKIE=a=1; b=2" in env, env
    assert "HTTP_X_FORWARDED_FOR=192.0.2.7, 127.0.0.1" in env, env
    assert "HTTP_X_FORWARDED_PROTO=http" in env and "HTTP_TE" not in env, env



def http1(port, req, read_delay=0.0):
    """Send req raw (HTTP/1.1 requests, pipelined or not, or any bytes);
    every byte the router sent until it closed the connection."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(req)
    if read_delay:
        time.sleep(read_delay)
    got = read_until_close(s)
    s.close()
    return got


def test_http1_clients_of_h2c_instances(make_daemon, images, tmp_path):
    """HTTP/1.1 to a revision whose instances speak only HTTP/2 is
    translated, each request one stream: a page, uploads with and without a
    Content-Length echoed back, a 1 MiB download to a client that reads
    late, HEAD, the instance's own 404, pipelined requests on one
    connection, an HTTP/1.0 client, the instance's trailers in the last
    chunk. A WebSocket handshake is refused, and the instance never sees a
    request the translation could not make."""
    d = make_daemon()
    deploy_h2c(d, images, "grpc", containerConcurrency=2)
    host = d.host("grpc")
    code, body = d.curl("grpc", "/")
    assert (code, body) == (200, "hello over h2c\n"), (code, body)

    upload = bytes(range(256)) * 1200
    with open(str(tmp_path) + "/upload", "wb") as f:
        f.write(upload)
    for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
        r = subprocess.run(["curl", "-sS", "--max-time", "60", "--data-binary",
                            "@" + str(tmp_path) + "/upload", *extra, "-o", str(tmp_path) + "/echoed",
                            "-w", "%{http_code}", "http://%s:%d/echo" % (host, d.port)],
                           capture_output=True, text=True)
        assert r.stdout == "200", (extra, r.stdout, r.stderr)
        with open(str(tmp_path) + "/echoed", "rb") as f:
            assert f.read() == upload, extra

    # the response head as HTTP/1.1, its body chunked with the instance's
    # trailer (it sends no content-length), pipelined requests answered in
    # order on one connection, the last one closing it
    got = http1(d.port, b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n"
                b"HEAD / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n"
                b"GET /missing HTTP/1.1\r\nHost: " + host.encode() +
                b"\r\nConnection: close\r\n\r\n")
    text = got.decode("latin-1")
    assert text.startswith("HTTP/1.1 200 OK\r\n"), text
    heads = [p for p in text.split("HTTP/1.1 ")[1:]]
    assert [h[:3] for h in heads] == ["200", "200", "404"], text
    first = heads[0]
    if "transfer-encoding: chunked" in first.lower():
        assert "\r\n0\r\ngrpc-status: 0\r\n\r\n" in first, first
    assert "hello over h2c\n" in first
    assert heads[1].endswith("\r\n\r\n") and "hello" not in heads[1], heads[1]
    assert "connection: close" in heads[2].lower(), heads[2]

    # a client that reads nothing for a second: the instance is held by
    # flow control, and the 1 MiB arrives whole
    got = http1(d.port, b"GET /big HTTP/1.1\r\nHost: " + host.encode() +
                b"\r\nConnection: close\r\n\r\n", read_delay=1.0)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    if b"chunked" in head.lower():
        body = dechunk(body)[0]
    assert body == b"x" * 1048576, len(body)

    # HTTP/1.0: the body is not chunked for it
    r = subprocess.run(["curl", "-sS", "-0", "-i", "http://%s:%d/" % (host, d.port)],
                       capture_output=True)
    assert r.stdout.startswith(b"HTTP/1.1 200"), r.stdout
    assert r.stdout.endswith(b"\r\n\r\nhello over h2c\n"), r.stdout
    assert b"chunked" not in r.stdout.lower(), r.stdout

    code, body = d.curl("grpc", "/", "-H", "Connection: Upgrade", "-H", "Upgrade: websocket",
                        "-H", "Sec-WebSocket-Version: 13", "-H", "Sec-WebSocket-Key: " + "A" * 22 + "==")
    assert code == 501 and "WebSocket" in body, (code, body)
    # a head the ingress takes (16 KiB) that the forwarding fields take
    # over what the translation holds
    head = b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n"
    head += b"X-A: " + b"a" * 5400 + b"\r\nX-C: " + b"c" * 5400 + b"\r\n"
    head += b"X-B: " + b"b" * (16300 - len(head) - 9) + b"\r\n\r\n"
    got = http1(d.port, head)
    assert got.startswith(b"HTTP/1.1 431") and b"translate" in got, got

    # four clients at once against concurrency 2: every request served
    procs = [subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                               "--data-binary", "@" + str(tmp_path) + "/upload",
                               "http://%s:%d/echo" % (host, d.port)],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    assert [p.communicate()[0] for p in procs] == ["200"] * 4
    assert wait_for(lambda: set(inflight(d, "grpc")) == {0}, 10), inflight(d, "grpc")


def dechunk(body):
    """(data, trailer lines) of a chunked body."""
    data, rest = b"", body
    while True:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        data, rest = data + rest[:n], rest[n + 2:]
    trailers, _, _ = rest.partition(b"\r\n\r\n")
    return data, trailers.split(b"\r\n") if trailers else []


def test_http1_clients_of_a_streaming_h2c_instance(make_daemon, images):
    """An h2c server whose responses have no length (h2stream: several DATA
    frames, then trailers): HTTP/1.1 clients get them chunked, the trailers
    in the last chunk; an HTTP/1.0 client gets the body and a close; a
    stream the instance resets after its head leaves the client a truncated
    body, never a complete-looking one, and so does a trailer section too big
    to relay; the connection is pooled again after clean exchanges."""
    d = make_daemon()
    deploy_h2c(d, images, "sse", command=["/usr/bin/h2stream"])
    host = d.host("sse").encode()
    got = http1(d.port, b"GET /stream?n=50 HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
                b"POST /echo HTTP/1.1\r\nHost: " + host + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
                b"GET /stream?n=2 HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    parts = got.split(b"HTTP/1.1 200 OK\r\n")
    assert len(parts) == 4 and parts[0] == b"", got
    for part, want, lines in ((parts[1], "".join("line %d\n" % i for i in range(1, 51)), b"50"),
                              (parts[2], "abcdefg", b"0"), (parts[3], "line 1\nline 2\n", b"2")):
        head, _, body = part.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower() and b"content-length" not in head
        data, trailers = dechunk(body)
        assert data.decode() == want, (data, part)
        assert trailers == [b"x-lines: " + lines, b"grpc-status: 0"], trailers

    r = subprocess.run(["curl", "-sS", "-0", "-i", "http://%s:%d/stream?n=3" % (host.decode(), d.port)],
                       capture_output=True)
    assert r.stdout.startswith(b"HTTP/1.1 200") and b"chunked" not in r.stdout.lower(), r.stdout
    assert r.stdout.endswith(b"\r\n\r\nline 1\nline 2\nline 3\n"), r.stdout

    got = http1(d.port, b"GET /reset HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head, got
    assert body.startswith(b"7\r\nline 1\n\r\n") and not body.endswith(b"0\r\n\r\n"), got
    # a malformed response head: the router resets the instance's stream
    # as it sends the reset, and the client has its 502 at once
    t0 = time.time()
    got = http1(d.port, b"GET /badhead HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 502") and time.time() - t0 < 20, got
    # trailers over what the relay takes (8 KiB): the response is cut, not
    # passed off as whole with some of them
    got = http1(d.port, b"GET /stream?n=2&big=1 HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head, got
    assert body == b"7\r\nline 1\n\r\n7\r\nline 2\n\r\n", got  # no last chunk
    # the service serves on, and curl sees the trailers too
    r = subprocess.run(["curl", "-sS", "--raw", "http://%s:%d/stream?n=1" % (host.decode(), d.port)],
                       capture_output=True)
    assert r.stdout == b"7\r\nline 1\n\r\n0\r\nx-lines: 1\r\ngrpc-status: 0\r\n\r\n", r.stdout
    assert wait_for(lambda: set(inflight(d, "sse")) == {0}, 10), inflight(d, "sse")


def test_http1_upload_to_a_slow_reader(make_daemon, images):
    """A 16 MiB upload to an h2c instance that stops reading its connection
    for 3 s (its HTTP/2 windows wide open, so only TCP holds the router
    back): the client is paused while the instance does not read and
    resumed when it does, and the whole body arrives."""
    import threading
    d = make_daemon()
    deploy_h2c(d, images, "up", command=["/usr/bin/h2stream"])
    host = d.host("up").encode()
    size = 16 << 20
    s = socket.create_connection(("127.0.0.1", d.port), timeout=60)
    s.sendall(b"POST /slowread?ms=3000 HTTP/1.1\r\nHost: " + host +
              b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
    sent = [0]

    def pump():
        chunk = b"a" * 65536
        while sent[0] < size:
            sent[0] += s.send(chunk[:size - sent[0]])

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    t.join(25)
    assert sent[0] == size, sent
    got = read_until_close(s)
    s.close()
    assert got.startswith(b"HTTP/1.1 200") and b"\r\ngot %d\n\r\n" % size in got, got


def test_versions_and_broken_connections(make_daemon, images):
    """`deploy --use-http2` names the port h2c (Cloud Run's flag);
    --no-use-http2 takes the name away. A connection that breaks HTTP/2
    after its preface is ended with a GOAWAY, and the daemon serves on.
    (HTTP/2 to the port without the name is then translated to HTTP/1.1,
    which the HTTP/2-only server does not read: a 502.)"""
    d = make_daemon()
    d.cli("deploy", "grpc", "--image", images["h2c"], "--use-http2", "--port", "8080")
    svc = [x for x in d.json("services")["items"] if x["metadata"]["name"] == "grpc"][0]
    port = svc["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert port == [{"name": "h2c", "containerPort": 8080}], port
    assert get(d.port, d.host("grpc"), "/").status == 200
    d.cli("deploy", "grpc", "--no-use-http2")
    svc = [x for x in d.json("services")["items"] if x["metadata"]["name"] == "grpc"][0]
    assert svc["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 8080}]

    got = http1(d.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" +
                b"\x00\x00\x04\x09\x00\x00\x00\x00\x07junk")
    # a SETTINGS frame, then a GOAWAY (type 7) with PROTOCOL_ERROR (1)
    frames = h2_frames(got)
    assert goaway_code(frames) == 1, frames
    # translated to HTTP/1.1 now, which the HTTP/2-only server cannot read
    e = get(d.port, d.host("grpc"), "/")
    assert e.status == 502 and e.data.startswith(b"instance failed: "), e.__dict__


def test_instance_killed_mid_stream(make_daemon, images):
    """kill -9 of the instance while streams are open on it: each open
    stream ends with an error of its own (a 502 before its response
    started), its slot is given back, and the connection and the service
    serve on from the replacement instance."""
    import os
    import signal
    d = make_daemon()
    deploy_h2c(d, images, "crash")
    host = d.host("crash")
    c = H2(d.port)
    try:
        held = [c.request(host, "/echo", "POST", end=False) for _ in range(3)]
        assert wait_for(lambda: c.pump(0.05) or sum(inflight(d, "crash")) == 3, 20)
        pid = d.json("instances", "crash")["items"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        out = c.wait(held, timeout=30)
        for e in out:
            assert e.status == 502 and e.data.startswith(b"instance failed: "), e.__dict__
        assert not c.closed and c.goaway is None
        after = c.request(host, "/")
        e = c.wait([after], timeout=60)[0]
        assert e.status == 200 and e.data == b"hello over h2c\n", e.__dict__
    finally:
        c.close()
    assert wait_for(lambda: sum(inflight(d, "crash")) == 0, 10), inflight(d, "crash")


def test_idle_timeout_per_stream(make_daemon, images):
    """idleTimeoutSeconds bounds an instance's silence on an HTTP/2 stream
    as on HTTP/1.1: a 504 naming it before the response head."""
    d = make_daemon()
    deploy_h2c(d, images, "quiet", idleTimeoutSeconds=1)
    c = H2(d.port)
    try:
        held = c.request(d.host("quiet"), "/echo", "POST", end=False)  # nghttpd waits for the body
        t0 = time.time()
        e = c.wait([held], timeout=30)[0]
        assert e.status == 504 and b"idleTimeoutSeconds" in e.data, e.__dict__
        assert 0.9 < time.time() - t0 < 10
    finally:
        c.close()
    assert wait_for(lambda: sum(inflight(d, "quiet")) == 0, 10), inflight(d, "quiet")


def test_hostile_streams(make_daemon, images):
    """Streams built to break the router: a header name larger than any
    buffer (431, the daemon serves on); 20 MB of uploads the router answers
    itself before reading them (404s; their windows come back, so a real
    upload on the same connection still completes)."""
    d = make_daemon()
    deploy_h2c(d, images, "grpc")
    host = d.host("grpc")
    e = get(d.port, host, "/", headers=[("x" * 17000, "")])
    assert e.status == 431, e.__dict__
    # over the 32 KiB SETTINGS_MAX_HEADER_LIST_SIZE the router advertises:
    # the client's fault, never the instance's (three failures in a row
    # would have it replaced)
    before = [i["name"] for i in d.json("instances", "grpc")["items"]]
    many = [("x-f%d" % i, "v" * 900) for i in range(45)]
    for _ in range(4):
        e = get(d.port, host, "/", headers=many)
        assert e.status == 431, e.__dict__
    assert get(d.port, host, "/").status == 200
    assert [i["name"] for i in d.json("instances", "grpc")["items"]] == before
    # an absolute :path (accepted by nghttp2 for a scheme other than http)
    # would have the instance route by another host; CGI reads
    # transfer_encoding as Transfer-Encoding: both refused
    c = H2(d.port)
    try:
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "foo"), (":authority", host),
                                  (":path", "http://evil.example/admin")], end_stream=True)
        c.ex[sid] = Exchange(None)
        c.flush()
        e = c.wait([sid])[0]
        assert e.status == 400 and b":path" in e.data, e.__dict__
        e = c.wait([c.request(host, "/", headers=[("transfer_encoding", "chunked")])])[0]
        assert e.status == 400 and b"transfer_encoding" in e.data, e.__dict__
    finally:
        c.close()
    c = H2(d.port)
    try:
        junk = b"j" * 100000
        for _ in range(20):
            ids = [c.request(d.host("nobody"), "/", "POST", junk) for _ in range(10)]
            for x in c.wait(ids):
                assert x.status == 404, x.__dict__
        upload = b"u" * 300000
        sid = c.request(host, "/echo", "POST", upload)
        e = c.wait([sid], timeout=30)[0]
        assert e.status == 200 and e.data == upload
    finally:
        c.close()
    assert get(d.port, host, "/").status == 200


def test_streams_the_server_resets_are_limited(make_daemon, images):
    """Streams a client gets the server to reset, by a protocol error of
    its own, are counted as nghttp2 counts the resets a client sends
    (CVE-2025-8671, "MadeYouReset"): past a burst the connection ends with
    GOAWAY ENHANCE_YOUR_CALM, and other connections are served on."""
    d = make_daemon()
    d.cli("deploy", "hello", "--image", images["hello"])
    host = d.host("hello")
    assert get(d.port, host, "/").status == 200
    c = H2(d.port)
    try:
        for i in range(400):
            # content-length 0, then a byte of DATA: the server resets it
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                      (":authority", host), (":path", "/"),
                                      ("content-length", "0")])
            c.ex[sid] = Exchange(None)
            c.flush()
            c.sock.sendall(b"\x00\x00\x01\x00\x00" + sid.to_bytes(4, "big") + b"x")
            if i % 20 == 19:
                c.pump(0.05)
            if c.goaway is not None or c.closed:
                break
        assert wait_for(lambda: c.pump(0.05) or c.goaway is not None or c.closed, 10)
        assert c.goaway == 11, (i, c.goaway)  # ENHANCE_YOUR_CALM
        assert 150 <= i < 400, i
    finally:
        c.close()
    assert get(d.port, host, "/").status == 200


def test_what_an_h2c_instance_is_not_sent(make_daemon, images):
    """A Host field beside :authority (the instance gets the authority the
    request was routed by, RFC 9113 §8.3.1), Proxy-Authorization (for this
    hop), and trailer fields that frame, route, forward or authenticate
    (RFC 9110 §6.5.1) do not reach the instance; other trailers do."""
    d = make_daemon()
    deploy_h2c(d, images, "seen", command=[
        "/bin/sh", "-c", 'exec nghttpd --no-tls -v -d /www --echo-upload "$PORT"'])
    host = d.host("seen")
    c = H2(d.port)
    c.conn.config.validate_outbound_headers = False  # a Host the authority does not match
    try:
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", host),
                                  (":path", "/"), ("host", "evil.example"),
                                  ("proxy-authorization", "Basic c2VjcmV0"),
                                  ("x-head", "kept")])
        c.conn.send_data(sid, b"abc")
        # (nghttp2 itself resets a stream whose trailers have content-length or host)
        c.conn.send_headers(sid, [("x-forwarded-for", "192.0.2.66"), ("authorization", "x"),
                                  ("x-trail", "kept")], end_stream=True)
        c.ex[sid] = Exchange(None)
        c.flush()
        e = c.wait([sid])[0]
        assert e.status == 200 and e.data == b"abc", (e.reset, e.status, c.goaway)
        # more trailer fields than the router keeps (32): none go on, not the first 32
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", host),
                                  (":path", "/"), ("x-head", "second")])
        c.conn.send_data(sid, b"def")
        c.conn.send_headers(sid, [("x-many-%d" % i, "v") for i in range(40)], end_stream=True)
        c.ex[sid] = Exchange(None)
        c.flush()
        e = c.wait([sid])[0]
        assert e.status == 200 and e.data == b"def", (e.reset, e.status, c.goaway)
    finally:
        c.close()
    log = wait_for(lambda: (lambda t: "x-trail" in t and "x-head: second" in t and t)(
        d.cli("logs", "seen").stdout), 10)
    assert "x-head: kept" in log and "x-trail: kept" in log, log
    for absent in ("evil.example", "c2VjcmV0", "192.0.2.66", "authorization: x", "x-many-"):
        assert absent not in log, (absent, log)


def test_trailers_that_do_not_fit_are_not_cut(make_daemon, images):
    """An instance's trailer section with more fields than the router
    keeps (32) ends the stream in a reset, never a partial set (a gRPC
    client would miss its grpc-status); one that fits is relayed whole."""
    d = make_daemon()
    many = " ".join("--trailer 'x-t%d: %d'" % (i, i) for i in range(40))
    deploy_h2c(d, images, "trl", command=[
        "/bin/sh", "-c", 'exec nghttpd --no-tls -d /www %s "$PORT"' % many])
    deploy_h2c(d, images, "few", command=[
        "/bin/sh", "-c", "exec nghttpd --no-tls -d /www --trailer 'x-a: 1' --trailer "
        "'grpc-status: 0' \"$PORT\""])
    e = get(d.port, d.host("trl"), "/")
    assert e.reset == 2 and not e.trailers, e.__dict__  # INTERNAL_ERROR
    e = get(d.port, d.host("few"), "/")
    assert e.status == 200 and e.trailers == {"x-a": "1", "grpc-status": "0"}, e.__dict__


def test_grpc_probes(make_daemon, images):
    """Kubernetes' grpc probes speak the gRPC Health Checking Protocol over
    HTTP/2: a server that says SERVING becomes Ready and stays alive; one
    that says NOT_SERVING never becomes Ready, and the revision's reason
    says so; grpc on a port that speaks HTTP/1.1 fails naming that."""
    d = make_daemon()
    probe = {"grpc": {"port": 8080}, "periodSeconds": 1}

    def serve(root):  # the image's server without --echo-upload: files answer POSTs
        return ["/bin/sh", "-c", 'nghttpd --no-tls -d %s --trailer "grpc-status: 0" "$PORT" & '
                'pid=$!; trap "kill $pid; wait $pid; exit 0" TERM; wait $pid' % root]
    doc = json.loads(service_manifest("healthy", images["h2c"],
                                      ports=[{"name": "h2c", "containerPort": 8080}],
                                      command=serve("/www"), readinessProbe=probe,
                                      livenessProbe=dict(probe)))
    d.cli("apply", "-f", "-", "--wait", input=json.dumps(doc))
    assert get(d.port, d.host("healthy"), "/").status == 200
    first = [i["name"] for i in d.json("instances", "healthy")["items"]]
    time.sleep(3)  # three liveness periods: the instance is kept
    assert [i["name"] for i in d.json("instances", "healthy")["items"]] == first

    # a startup probe fails an instance after failureThreshold × period
    once = dict(probe, failureThreshold=1)
    down = json.loads(service_manifest(
        "down", images["h2c"], ports=[{"name": "h2c", "containerPort": 8080}],
        startupProbe=once, command=serve("/www-down")))
    r = d.cli("apply", "-f", "-", "--wait", input=json.dumps(down), check=False)
    assert r.returncode != 0 and 'gRPC probe: service "" is NOT_SERVING' in r.stderr, r.stderr

    web = json.loads(service_manifest("web", images["hello"], startupProbe=once))
    r = d.cli("apply", "-f", "-", "--wait", input=json.dumps(web), check=False)
    assert r.returncode != 0 and "does not speak HTTP/2" in r.stderr, r.stderr
