"""Outbound networking: an instance with egress reaches hosts beyond its
namespace through a slirp4netns of its own (the host's loopback stays out
of reach) and resolves names through its DNS forwarder; one without has
loopback only."""
import json
import os
import subprocess
import tempfile
import time

import pytest

from conftest import service_manifest, free_port

# A documentation address (RFC 5737) added to the host's loopback device: an
# outside server the test owns, on any machine (not in 127.0.0.0/8, which
# an instance's egress does not reach).
OUTSIDE = "198.51.100.7"

PROBE = r"""
mkdir -p /tmp/www
wget -O /tmp/www/got http://%s:%d/hello.txt > /tmp/www/err 2>&1
cat /etc/resolv.conf > /tmp/www/resolv 2>&1
wget -O /tmp/www/loop http://10.0.2.2:%d/ > /tmp/www/looperr 2>&1
wget -O /tmp/www/meta http://169.254.169.254/ > /tmp/www/metaerr 2>&1
wget -O /tmp/www/fwd http://10.0.2.3:8080/ > /tmp/www/fwderr 2>&1
nslookup deb.debian.org > /tmp/www/dns 2>&1
exec httpd -f -p "$PORT" -h /tmp/www
"""


@pytest.fixture
def outside():
    subprocess.run(["ip", "addr", "add", OUTSIDE + "/32", "dev", "lo"], check=True)
    try:
        root = tempfile.mkdtemp()
        with open(os.path.join(root, "hello.txt"), "w") as f:
            f.write("from outside\n")
        port = free_port()
        srv = subprocess.Popen(["python3", "-m", "http.server", str(port), "--bind", OUTSIDE,
                                "--directory", root], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if subprocess.run(["curl", "-sf", "http://%s:%d/hello.txt" % (OUTSIDE, port)],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        yield port
        srv.kill()
        srv.wait()
    finally:
        subprocess.run(["ip", "addr", "del", OUTSIDE + "/32", "dev", "lo"], check=False)


def slirps():
    r = subprocess.run(["pgrep", "-x", "slirp4netns"], capture_output=True, text=True)
    return set(r.stdout.split())


def probe_service(name, image, port, router_port, egress=None, runtime_class=None):
    doc = json.loads(service_manifest(name, image, PROBE % (OUTSIDE, port, router_port)))
    if egress is not None:
        doc["spec"]["template"]["metadata"] = {"annotations": {"sluice.dev/egress": egress}}
    if runtime_class:
        doc["spec"]["template"]["spec"]["runtimeClassName"] = runtime_class
    return json.dumps(doc)


def test_egress(make_daemon, images, outside):
    before = slirps()
    d = make_daemon("--egress")  # on unless a revision says otherwise
    for name, kw in [("out", {}), ("boxed", {"runtime_class": "sandboxed"}),
                     ("closed", {"egress": "false"})]:
        d.cli("apply", "-f", "-", "--wait",
              input=probe_service(name, images["busybox"], outside, d.port, **kw))
    for name in ("out", "boxed"):
        assert d.curl(name, "/got") == (200, "from outside\n"), d.curl(name, "/err")
        code, resolv = d.curl(name, "/resolv")
        assert code == 200 and "nameserver 10.0.2.3" in resolv, resolv
        # the host's loopback (the router, here) is out of reach, and so are
        # the DNS forwarder's other ports and link-local addresses (a cloud's
        # metadata endpoint): refused at once
        for what in ("loop", "meta", "fwd"):
            assert d.curl(name, "/" + what)[0] == 404
            assert "can't connect" in d.curl(name, "/%serr" % what)[1], what
        # names resolve through the forwarder wherever the host resolves them
        host_resolves = subprocess.run(["getent", "hosts", "deb.debian.org"],
                                       capture_output=True).returncode == 0
        if host_resolves:
            assert "Address" in d.curl(name, "/dns")[1].split("Name:")[-1], d.curl(name, "/dns")
    assert d.curl("closed", "/got")[0] == 404
    assert "unreachable" in d.curl("closed", "/err")[1].lower()
    assert len(slirps() - before) == 2  # one each for out and boxed
    d.cli("delete", "out")
    d.cli("delete", "boxed")
    deadline = time.time() + 20
    while time.time() < deadline and slirps() - before:
        time.sleep(0.2)
    assert not slirps() - before  # each went with its instance


def test_egress_is_off_by_default_and_validated(daemon, images):
    d = daemon
    r = d.cli("deploy", "x", "--image", images["busybox"], "--egress", "maybe", check=False)
    assert r.returncode == 2 and "--egress: expected on or off" in r.stderr
    doc = json.loads(service_manifest("x", images["busybox"]))
    doc["spec"]["template"]["metadata"] = {"annotations": {"sluice.dev/egress": "yes"}}
    r = d.cli("apply", "-f", "-", input=json.dumps(doc), check=False)
    assert r.returncode != 0 and 'sluice.dev/egress: must be "true" or "false"' in r.stderr


def test_an_instance_that_loses_its_network_is_replaced(make_daemon, images, outside):
    """Its slirp4netns gone, an instance with egress has no network left:
    it stops, says why, and its revision starts another with egress."""
    d = make_daemon("--egress")
    doc = json.loads(probe_service("lose", images["busybox"], outside, d.port))
    doc["spec"]["template"]["metadata"] = {
        "annotations": {"autoscaling.knative.dev/min-scale": "1"}}
    before = slirps()
    d.cli("apply", "-f", "-", "--wait", input=json.dumps(doc))
    first = [i["name"] for i in d.json("instances", "lose")["items"]]
    mine = slirps() - before
    assert len(first) == 1 and len(mine) == 1
    subprocess.run(["kill", "-9", mine.pop()], check=True)
    deadline = time.time() + 30
    now = first
    while time.time() < deadline:
        now = [i["name"] for i in d.json("instances", "lose")["items"] if i["state"] == "Ready"]
        if now and now != first:
            break
        time.sleep(0.2)
    assert now and now != first, now
    assert d.curl("lose", "/got") == (200, "from outside\n")
    out = d.cli("logs", "lose").stdout
    assert "failed: its outbound network ended (slirp4netns exited)" in out, out
