"""The HTTP edge is strict: raw-socket smuggling vectors sent to the real
daemon's router are answered with an error status and the connection is
closed, so a request hidden behind a rejected one is never processed.

Each vector is followed on the same connection by a valid request for a
path the hello app would log and answer; the test reads everything until
EOF and asserts exactly one response (the router's rejection)."""
import json
import time

import pytest

from conftest import Daemon, assert_no_leftovers, exchange, free_port, goaway_code, h2_frames

H = b"Host: hello.localhost\r\n"
FOLLOW = b"GET /smuggled HTTP/1.1\r\nHost: hello.localhost\r\n\r\n"

# (id, raw request, expected status). 400 unless the RFC gives another code:
# 414 request line, 431 header line / head / count, 501 a transfer coding
# sluice does not implement, 505 an HTTP version it does not speak.
VECTORS = [
    ("CL.TE", b"POST /echo HTTP/1.1\r\n" + H +
     b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400),
    ("TE.CL", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400),
    ("TE.TE chunked twice", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE.TE chunked not final", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", 400),
    ("TE.TE list not final", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
    ("TE.TE xchunked", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),
    ("TE.TE space before colon", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE.TE obs-fold", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE.TE vertical tab", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", 400),
    ("TE.TE quoted", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n", 400),
    ("TE.TE underscore", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("TE on HTTP/1.0", b"POST /echo HTTP/1.0\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("duplicate differing CL", b"POST /echo HTTP/1.1\r\n" + H +
     b"Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc", 400),
    ("duplicate identical CL", b"POST /echo HTTP/1.1\r\n" + H +
     b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("CL list identical", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc", 400),
    ("CL list differing", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 3, 40\r\n\r\nabc", 400),
    ("CL plus sign", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc", 400),
    ("CL hex", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc", 400),
    ("CL overflow", b"POST /echo HTTP/1.1\r\n" + H +
     b"Content-Length: 99999999999999999999999\r\n\r\nabc", 400),
    ("CL underscore", b"POST /echo HTTP/1.1\r\n" + H + b"Content_Length: 3\r\n\r\nabc", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", 400),
    ("whitespace before colon", b"GET / HTTP/1.1\r\nHost : hello.localhost\r\n\r\n", 400),
    ("NUL in value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    ("bare CR in value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rX-B: b\r\n\r\n", 400),
    ("bare LF in head", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\nX-B: b\r\n\r\n", 400),
    ("bare LF everywhere", b"GET / HTTP/1.1\n" + b"Host: hello.localhost\n\n", 400),
    ("CR in target", b"GET /a\rb HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space in target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target without slash", b"GET env HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("asterisk for GET", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute-form with userinfo",
     b"GET http://evil.example@hello.localhost/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("two Host headers", b"GET / HTTP/1.1\r\n" + H + b"Host: other.localhost\r\n\r\n", 400),
    ("missing Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("bad chunk size", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n", 400),
    ("chunk size overflow", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nx\r\n0\r\n\r\n", 400),
    ("bad chunk extension", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n1;a=\x01\r\nx\r\n0\r\n\r\n", 400),
    ("chunk data overrun", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked\r\n\r\n1\r\nxyz\r\n0\r\n\r\n", 400),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("header line too long", b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ("head too large", b"GET / HTTP/1.1\r\n" + H +
     b"".join(b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(5)) + b"\r\n", 431),
    ("too many headers", b"GET / HTTP/1.1\r\n" + H +
     b"".join(b"X-%d: a\r\n" % i for i in range(120)) + b"\r\n", 431),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory, images):
    """One daemon with hello deployed, shared by the whole table."""
    tmp = tmp_path_factory.mktemp("smuggling")
    d = Daemon(str(tmp / "state"), free_port())
    d.start()
    d.cli("deploy", "hello", "--image", images["hello"])
    code, body = d.curl("hello", "/")
    assert code == 200, body
    yield d
    rc = d.stop()
    assert rc == 0, "daemon exited %d: %s" % (rc, d.daemon_log())
    assert_no_leftovers(d.state_dir)


def statuses(raw):
    """Status codes of the responses in raw (status lines at message starts)."""
    codes = []
    rest = raw
    while rest.startswith(b"HTTP/1."):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        codes.append(int(head.split(b" ", 2)[1]))
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        rest = rest[length:]
    return codes, rest


@pytest.mark.parametrize("name,raw,status", VECTORS, ids=[v[0] for v in VECTORS])
def test_vector_rejected_and_connection_closed(served, name, raw, status):
    out, closed = exchange(served.port, raw + FOLLOW)
    codes, rest = statuses(out)
    assert codes == [status], (name, out[:400])
    assert closed, "%s: connection left open after %d" % (name, status)
    assert rest == b"", (name, rest[:200])
    assert b"Connection: close" in out.split(b"\r\n\r\n")[0]


def test_http1_after_the_http2_preface_is_not_served(served):
    """After the HTTP/2 preface the connection speaks HTTP/2 (prior
    knowledge): HTTP/1.1 bytes behind it are a protocol error, answered
    with the server's SETTINGS and a GOAWAY (PROTOCOL_ERROR), never as a
    request."""
    out, closed = exchange(served.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + FOLLOW)
    assert closed and not out.startswith(b"HTTP/"), out[:200]
    frames = h2_frames(out)
    assert frames[0][0] == 4, frames  # SETTINGS
    assert goaway_code(frames) == 1, frames
    assert "smuggled" not in served.cli("logs", "hello").stdout


def test_absolute_form_for_a_foreign_authority_is_not_proxied(served):
    # The authority of an absolute-form target is the routing host (it wins
    # over Host, RFC 9112 3.2.2): a host sluice does not serve is a 404 from
    # the router itself, never forwarded to the Host header's service.
    out, _ = exchange(served.port, b"GET http://evil.example/ HTTP/1.1\r\n" + H +
                      b"Connection: close\r\n\r\n")
    codes, _ = statuses(out)
    assert codes == [404], out[:300]
    assert b"no service for host evil.example" in out
    assert b"Hello from sluice" not in out
    # The same form naming the service works, sent upstream as origin-form.
    out, _ = exchange(served.port, b"GET http://hello.localhost/ HTTP/1.1\r\n"
                      b"Host: ignored.localhost\r\nConnection: close\r\n\r\n")
    assert statuses(out)[0] == [200] and b"revision=hello-00001" in out


def test_valid_pipelined_requests_still_work(served):
    # The control: the same follow-up request is served when what precedes
    # it is valid, so the rejections above are the vectors' doing.
    out, _ = exchange(served.port, b"GET / HTTP/1.1\r\n" + H + b"\r\n" +
                      b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert statuses(out)[0] == [200, 200], out[:400]


def test_connection_option_cannot_drop_content_length(served):
    # Naming Content-Length in Connection must not strip it on the way
    # upstream: the body would arrive as a request of its own (and a
    # partial one would prefix the next client's request on that pooled
    # connection). The body stays the POST's; two requests, two responses.
    body = FOLLOW
    out, _ = exchange(served.port, b"POST / HTTP/1.1\r\n" + H +
                      b"Connection: content-length, host\r\nContent-Length: %d\r\n\r\n" % len(body) +
                      body + b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    codes, rest = statuses(out)
    assert len(codes) == 2 and codes[1] == 200, out[:600]
    assert rest == b""


def test_no_smuggled_request_reached_the_app(served):
    # Runs after the table (pytest keeps file order): the app logs every
    # request line; none of the hidden follow-ups may be among them.
    time.sleep(0.5)
    logs = served.cli("logs", "hello").stdout
    assert "GET /" in logs, logs[-2000:]
    assert "/smuggled" not in logs, logs[-2000:]
    code, body = served.curl("hello", "/")
    assert code == 200 and "hello-00001" in body


HEADERS_SCRIPT = r"""
mkdir -p /tmp/www/cgi-bin
cat > /tmp/www/cgi-bin/h <<'EOS'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
env | grep '^HTTP_' | sort
EOS
chmod 755 /tmp/www/cgi-bin/h
exec httpd -f -p "$PORT" -h /tmp/www
"""


def test_hop_by_hop_headers_named_in_connection_are_stripped(served, images):
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
           "metadata": {"name": "hdrs"},
           "spec": {"template": {"spec": {"containers": [
               {"image": images["busybox"], "command": ["/bin/sh", "-c", HEADERS_SCRIPT]}]}}}}
    served.cli("apply", "-f", "-", "--wait", input=json.dumps(doc))
    code, body = served.curl("hdrs", "/cgi-bin/h", "-H", "Connection: keep-alive, X-Secret, Host",
                             "-H", "X-Secret: s3cr3t", "-H", "Keep-Alive: timeout=5",
                             "-H", "TE: trailers", "-H", "X-Kept: yes",
                             "-H", "X-Forwarded-Host: evil.example")
    assert code == 200, body
    env = dict(l.split("=", 1) for l in body.splitlines() if "=" in l)
    assert env.get("HTTP_X_KEPT") == "yes", body
    assert env.get("HTTP_HOST") == "hdrs.localhost:%d" % served.port, body  # never dropped
    for gone in ("HTTP_X_SECRET", "HTTP_KEEP_ALIVE", "HTTP_TE"):
        assert gone not in env, (gone, body)
    assert env.get("HTTP_X_FORWARDED_HOST") == "hdrs.localhost:%d" % served.port, body
    assert env.get("HTTP_X_FORWARDED_FOR") == "127.0.0.1", body
    served.cli("delete", "hdrs")
