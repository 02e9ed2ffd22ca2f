"""Readiness and liveness probes with Kubernetes' fields."""
import time

from conftest import instance_netns_curl, service_manifest

SLOW_START = r"""
mkdir -p /tmp/www
echo hello > /tmp/www/index.html
(sleep 1; echo ok > /tmp/www/healthz) &
exec httpd -f -p "$PORT" -h /tmp/www
"""


def manifest(name, image, script, **probes):
    return service_manifest(name, image, script, **probes)


def test_http_readiness_gates_traffic(daemon, images):
    d = daemon
    doc = manifest("slow", images["busybox"], SLOW_START,
                   readinessProbe={"httpGet": {"path": "/healthz"}, "periodSeconds": 1})
    t0 = time.time()
    d.cli("apply", "-f", "-", "--wait", input=doc)
    took = time.time() - t0
    # Ready only once /healthz exists (about 1 s after start), and the first
    # request after Ready succeeds.
    assert took >= 0.9, took
    code, body = d.curl("slow", "/index.html")
    assert code == 200 and body.strip() == "hello"


LIVENESS = r"""
mkdir -p /tmp/www
echo ok > /tmp/www/healthz
echo hi > /tmp/www/index.html
(sleep 2; rm /tmp/www/healthz) &
exec httpd -f -p "$PORT" -h /tmp/www
"""


def test_failing_liveness_replaces_the_instance(daemon, images):
    d = daemon
    doc = manifest("live", images["busybox"], LIVENESS,
                   livenessProbe={"httpGet": {"path": "/healthz"}, "periodSeconds": 1,
                                  "failureThreshold": 2})
    d.cli("apply", "-f", "-", "--wait", input=doc)
    first = d.json("instances", "live")["items"][0]["name"]
    deadline = time.time() + 30
    replaced = None
    while time.time() < deadline and not replaced:
        items = [i for i in d.json("instances", "live")["items"]
                 if i["name"] != first and i["state"] == "Ready"]
        replaced = items[0]["name"] if items else None
        time.sleep(0.2)
    assert replaced, d.daemon_log()
    logs = d.daemon_log()
    assert "liveness probe failed" in logs


def test_invalid_probe_is_rejected(daemon, images):
    d = daemon
    doc = manifest("bad", images["busybox"], "exec httpd -f -p $PORT",
                   readinessProbe={"httpGet": {"path": "healthz"}})
    r = d.cli("apply", "-f", "-", input=doc, check=False)
    assert r.returncode != 0 and "readinessProbe.httpGet.path" in r.stderr
    doc = manifest("bad", images["busybox"], "exec httpd -f -p $PORT",
                   livenessProbe={"httpGet": {"path": "/"}, "tcpSocket": {"port": 8080}})
    r = d.cli("apply", "-f", "-", input=doc, check=False)
    assert r.returncode != 0 and "one of httpGet" in r.stderr


def test_readiness_failing_after_ready_shows_not_ready(daemon, images):
    """An instance whose readiness probe fails after it was Ready leaves
    rotation and is listed NotReady, then Ready again once it passes."""
    d = daemon
    script = r"""
mkdir -p /tmp/www
echo ok > /tmp/www/healthz
echo hi > /tmp/www/index.html
(sleep 2; mv /tmp/www/healthz /tmp/www/off; sleep 4; mv /tmp/www/off /tmp/www/healthz) &
exec httpd -f -p "$PORT" -h /tmp/www
"""
    doc = manifest("flip", images["busybox"], script,
                   readinessProbe={"httpGet": {"path": "/healthz"}, "periodSeconds": 1,
                                   "failureThreshold": 1})
    d.cli("apply", "-f", "-", "--wait", input=doc)
    seen = []
    deadline = time.time() + 15
    while time.time() < deadline:
        state = d.json("instances", "flip")["items"][0]["state"]
        if not seen or seen[-1] != state:
            seen.append(state)
        if seen[-3:] == ["Ready", "NotReady", "Ready"]:
            break
        time.sleep(0.1)
    assert seen[-3:] == ["Ready", "NotReady", "Ready"], seen
