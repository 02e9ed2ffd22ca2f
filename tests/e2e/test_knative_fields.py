"""Knative Service fields beyond the basics: what Knative accepts works
(exported manifests re-apply, traffic defaults, startup probes, probe
headers, resource requests), and what Knative refuses, or what would be
ignored here, is refused with the field named and nothing stored."""
import json
import os
import time

import pytest

from conftest import service_manifest
from test_traffic import revision_counts

HTTPD = r"""
mkdir -p /tmp/www
echo hello > /tmp/www/index.html
exec httpd -f -vv -p "$PORT" -h /tmp/www
"""


def service(name, image, script=HTTPD, **fields):
    return service_manifest(name, image, script, **fields)


def cgroup_file(d, name, controller, leaf):
    inst = d.json("instances", name)["items"][0]["name"]
    for path in ("/sys/fs/cgroup/%s/sluice/%s/%s" % (controller, inst, leaf),
                 "/sys/fs/cgroup/sluice/%s/%s" % (inst, leaf)):
        if os.path.exists(path):
            with open(path) as f:
                return f.read().strip()
    return None


def test_exported_manifest_reapplies(daemon, images):
    """What Knative writes back (probe port 0, traffic with percent only,
    latestRevision filled in) applies unchanged."""
    d = daemon
    doc = service("exp", images["hello"], None,
                  readinessProbe={"successThreshold": 1, "tcpSocket": {"port": 0}},
                  traffic=[{"percent": 100}])
    d.cli("apply", "-f", "-", "--wait", input=doc)
    assert d.curl("exp", "/")[0] == 200
    svc = d.json("describe", "exp")
    assert svc["spec"]["traffic"] == [{"latestRevision": True, "percent": 100}]
    # tagged, still no revisionName: the latest
    doc = service("exp", images["hello"], None, traffic=[{"tag": "current", "percent": 100}])
    d.cli("apply", "-f", "-", "--wait", input=doc)
    assert revision_counts(d, "current-exp.localhost", 3) == {"exp-00002": 3}
    # the service as sluice prints it applies again
    text = d.cli("describe", "exp", "-o", "json").stdout
    d.cli("apply", "-f", "-", "--wait", input=text)
    assert d.json("describe", "exp")["metadata"]["generation"] == svc["metadata"]["generation"] + 1


def test_variable_references_expand(daemon, images):
    """$(VAR) in env values (earlier variables), command and args (all of
    them and the contract's PORT, K_*); $$ is a $; unknown names stay."""
    d = daemon
    env = [{"name": "BASE", "value": "hello"},
           {"name": "DERIVED", "value": "$(BASE)-world"},
           {"name": "ESCAPED", "value": "$$(BASE)"},
           {"name": "UNKNOWN", "value": "$(NOPE) $(LATER) $(FOO$$) $($(BASE))"},
           {"name": "LATER", "value": "x"}]
    script = r"""
mkdir -p /tmp/www
echo "derived=$DERIVED escaped=$ESCAPED unknown=$UNKNOWN arg1=$1 arg2=$2" > /tmp/www/env
exec httpd -f -p "$PORT" -h /tmp/www
"""
    d.cli("apply", "-f", "-", "--wait", input=service(
        "vars", images["busybox"], script, env=env,
        args=["sh", "$(PORT)", "$(K_REVISION)/$(DERIVED)"],
        readinessProbe={"exec": {"command": ["/bin/test", "$(BASE)", "=", "hello"]}}))
    code, body = d.curl("vars", "/env")
    assert code == 200, body
    assert ("derived=hello-world escaped=$(BASE) unknown=$(NOPE) $(LATER) $(FOO$$) $($(BASE)) "
            "arg1=8080 arg2=vars-00001/hello-world") in body, body


def test_variable_references_are_bounded(daemon, images):
    """Values that refer to earlier ones can double at each step: past the
    bounds the apply is refused, nothing stored (it used to crash the
    daemon, at apply and at every restart)."""
    d = daemon
    env = [{"name": "V0", "value": "x" * 16}]
    for i in range(1, 41):
        env.append({"name": "V%d" % i, "value": "$(V%d)$(V%d)" % (i - 1, i - 1)})
    r = d.cli("apply", "-f", "-", input=service("bomb", images["busybox"], env=env), check=False)
    assert r.returncode != 0 and "expand to more than" in r.stderr and "(V13)" in r.stderr, r.stderr
    assert d.json("services")["items"] == []
    d.cli("deploy", "alive", "--image", images["hello"])
    assert d.curl("alive", "/")[0] == 200


def test_startup_probe_gates_then_readiness(daemon, images):
    """A startup probe holds the instance back until it passes; one that
    never passes within its budget fails the instance with the reason."""
    d = daemon
    slow = r"""
mkdir -p /tmp/www
echo hello > /tmp/www/index.html
(sleep 2; echo ok > /tmp/www/started) &
exec httpd -f -p "$PORT" -h /tmp/www
"""
    t0 = time.time()
    d.cli("apply", "-f", "-", "--wait", input=service(
        "gate", images["busybox"], slow,
        startupProbe={"httpGet": {"path": "/started"}, "periodSeconds": 1,
                      "failureThreshold": 10}))
    assert time.time() - t0 >= 2
    assert d.curl("gate", "/")[0] == 200
    r = d.cli("apply", "-f", "-", "--wait", input=service(
        "never", images["busybox"],
        startupProbe={"httpGet": {"path": "/missing"}, "periodSeconds": 1,
                      "failureThreshold": 2}), check=False, timeout=60)
    assert r.returncode != 0
    deadline = time.time() + 20
    while time.time() < deadline and "startup probe failed" not in d.daemon_log():
        time.sleep(0.2)
    assert "startup probe failed: HTTP probe of /missing failed with status 404" in \
        d.daemon_log()


def test_probe_http_headers_are_sent(daemon, images):
    """httpGet.httpHeaders reach the app (a Host among them replaces the
    probe's own)."""
    d = daemon
    script = r"""
mkdir -p /tmp/www/cgi-bin
printf '#!/bin/sh\necho "host=$HTTP_HOST x=$HTTP_X_PROBE ua=$HTTP_USER_AGENT" >> /tmp/www/seen\n'\
'echo Content-Type: text/plain\necho\necho ok\n' > /tmp/www/cgi-bin/h
chmod +x /tmp/www/cgi-bin/h
exec httpd -f -p "$PORT" -h /tmp/www
"""
    probe = {"httpGet": {"path": "/cgi-bin/h", "httpHeaders": [
        {"name": "X-Probe", "value": "yes"}, {"name": "Host", "value": "probe.example"}]}}
    d.cli("apply", "-f", "-", "--wait",
          input=service("hdr", images["busybox"], script, readinessProbe=probe))
    code, body = d.curl("hdr", "/seen")
    assert code == 200 and "host=probe.example x=yes ua=sluice-probe" in body, body


def test_requests_reserve_capacity_and_weigh_cpu(daemon, images):
    d = daemon
    res = {"requests": {"cpu": "250m", "memory": "64Mi"},
           "limits": {"cpu": "1", "memory": "128Mi", "ephemeral-storage": "32Mi"}}
    d.cli("apply", "-f", "-", "--wait", input=service("req", images["busybox"], resources=res))
    item = d.json("instances", "req")["items"][0]
    assert item["footprint"] == {"cpu": "250m", "memory": "64Mi"}, item
    shares = cgroup_file(d, "req", "cpu", "cpu.shares")
    if shares is not None:
        assert int(shares) == 256
        # no request at all weighs least, as Kubernetes' BestEffort
        d.cli("deploy", "free", "--image", images["hello"])
        assert int(cgroup_file(d, "free", "cpu", "cpu.shares")) == 2
    # the writable layer and /tmp: 32Mi
    code, _ = d.curl("req", "/")
    assert code == 200


@pytest.mark.parametrize("kw,needle", [
    ({"metadata": {"labels": {"networking.knative.dev/visibility": "cluster-local"}}},
     "visibility: \"cluster-local\" is not supported"),
    ({"metadata": {"annotations": {"run.googleapis.com/ingress": "internal"}}},
     "ingress: \"internal\" is not supported"),
    ({"metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "2"}}},
     "must be put under spec.template.metadata.annotations"),
    ({"template_metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "1",
                                            "autoscaling.knative.dev/minScale": "2"}}},
     "not both"),
    ({"template_metadata": {"annotations": {
        "autoscaling.knative.dev/target-burst-capacity": "200"}}}, "not supported"),
    ({"metadata": {"labels": {"bad key": "x"}}}, "invalid key \"bad key\""),
    ({"metadata": {"labels": {"app": "has space"}}}, "invalid label value"),
    ({"ports": [{"containerPort": 8080, "name": "http"}]}, "must be \"http1\", \"h2c\" or empty"),
    ({"livenessProbe": {"periodSeconds": 1}}, "livenessProbe: give one of"),
    ({"startupProbe": {"tcpSocket": {}, "successThreshold": 2}}, "successThreshold: must be 1"),
    ({"readinessProbe": {"tcpSocket": {"host": "10.0.0.1"}}}, "probes reach the instance"),
    ({"readinessProbe": {"grpc": {"port": 8080, "service": 7}}}, "grpc.service: must be a string"),
    ({"readinessProbe": {"grpc": {"port": 8080, "tls": True}}}, "grpc.tls"),
    ({"livenessProbe": {"grpc": {}, "exec": {"command": ["true"]}}}, "give one of"),
    ({"readinessProbe": {"httpGet": {"httpHeaders": [{"name": "Bad Name", "value": "x"}]}}},
     "must be an HTTP field name"),
    ({"readinessProbe": {"httpGet": {"httpHeaders": [{"name": "X-A"}]}}}, "value: is required"),
    ({"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "128Mi"}}},
     "requests.memory: must be less than or equal"),
    ({"resources": {"limits": {"ephemeral-storage": "banana"}}}, "ephemeral-storage"),
    ({"envFrom": [{"configMapRef": {"name": "x"}, "prefix": ""}, {"prefix": "A"}]},
     "envFrom[1]: one of secretRef and configMapRef is required"),
    ({"volumeMounts": [{"name": "v", "mountPath": "/v"}]}, "\"v\" has no matching volume"),
])
def test_unsupported_or_invalid_is_refused(daemon, images, kw, needle):
    d = daemon
    r = d.cli("apply", "-f", "-", input=service("bad", images["busybox"], **kw), check=False)
    assert r.returncode != 0 and needle in r.stderr, r.stderr
    assert d.json("services")["items"] == []


VOLUMES = r"""
mkdir -p /tmp/www
{ awk '$5 == "/cache" || $5 == "/seed" { print $5, $6, $9, $10 }' /proc/self/mountinfo
  echo kept > /cache/f && cat /cache/f
  dd if=/dev/zero of=/cache/big bs=1024 count=9000 2>&1 | grep -o 'No space left on device'
  touch /seed/f 2>&1 | grep -o 'Read-only file system'
} > /tmp/www/report 2>&1
exec httpd -f -p "$PORT" -h /tmp/www
"""


def with_volumes(name, image, script, volumes, **container):
    doc = json.loads(service_manifest(name, image, script, **container))
    doc["spec"]["template"]["spec"]["volumes"] = volumes
    return json.dumps(doc)


@pytest.mark.parametrize("variant", ["default", "readonly-root", "sandboxed"])
def test_empty_dir_volumes(daemon, images, variant):
    """emptyDir volumes (Knative's and Cloud Run's in-memory volumes): a
    tmpfs of sizeLimit at mountPath, read-only if the mount says so,
    writable by the container's user, its writes counted against it."""
    d = daemon
    doc = with_volumes("vol", images["busybox"], VOLUMES,
                       [{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
                        {"name": "seed", "emptyDir": {}}],
                       volumeMounts=[{"name": "cache", "mountPath": "/cache"},
                                     {"name": "seed", "mountPath": "/seed", "readOnly": True}],
                       **({"securityContext": {"readOnlyRootFilesystem": True}}
                          if variant == "readonly-root" else {}))
    if variant == "sandboxed":  # a read-only root the daemon mounts itself
        doc = json.loads(doc)
        doc["spec"]["template"]["spec"]["runtimeClassName"] = "sandboxed"
        doc = json.dumps(doc)
    d.cli("apply", "-f", "-", "--wait", input=doc)
    code, text = d.curl("vol", "/report")
    assert code == 200, text
    lines = text.splitlines()
    cache = [l for l in lines if l.startswith("/cache ")]
    seed = [l for l in lines if l.startswith("/seed ")]
    # mount point, mount options, source, superblock options
    assert cache and cache[0].split()[2] == "tmpfs" and "size=8192k" in cache[0], text
    assert cache[0].split()[1].startswith("rw,"), text
    assert seed and seed[0].split()[2] == "tmpfs" and seed[0].split()[1].startswith("ro,"), text
    assert "kept" in lines, text
    assert "No space left on device" in text, text
    assert "Read-only file system" in text, text
    rev = d.json("revisions", "vol")["items"][0]
    assert rev["spec"]["volumes"][0]["name"] == "cache"


@pytest.mark.parametrize("volumes,mounts,needle", [
    ([{"name": "s", "hostPath": {"path": "/etc"}}], [{"name": "s", "mountPath": "/s"}],
     "volumes[0].hostPath: not supported: emptyDir, secret and configMap volumes are"),
    ([{"name": "a", "emptyDir": {}}], [], "volume with name \"a\" not mounted"),
    ([{"name": "a", "emptyDir": {}}], [{"name": "a", "mountPath": "/tmp"}],
     "\"/tmp\" is a reserved path"),
    ([{"name": "a", "emptyDir": {}}], [{"name": "a", "mountPath": "data"}],
     "mountPath: must be an absolute path"),
    ([{"name": "a", "emptyDir": {}}], [{"name": "a", "mountPath": "/proc/x"}], "under /proc"),
    ([{"name": "a", "emptyDir": {}}], [{"name": "a", "mountPath": "/a/../etc"}],
     "must not contain . or .. components"),
    ([{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}],
     [{"name": "a", "mountPath": "/d"}, {"name": "b", "mountPath": "/d/"}], "must be unique"),
    ([{"name": "a", "emptyDir": {}}], [{"name": "a", "mountPath": "/d", "subPath": "x"}],
     "subPath: not supported"),
    ([{"name": "a", "emptyDir": {"medium": "HugePages"}}], [{"name": "a", "mountPath": "/d"}],
     "medium: must be"),
    ([{"name": "a", "emptyDir": {"sizeLimit": "lots"}}], [{"name": "a", "mountPath": "/d"}],
     "sizeLimit: must be a quantity"),
    ([{"name": "A_b", "emptyDir": {}}], [{"name": "A_b", "mountPath": "/d"}],
     "name: must be a DNS-1123 label"),
    ([{"name": "a", "emptyDir": {}}], [{"name": "a", "mountPath": "/d"},
                                       {"name": "a", "mountPath": "/e"}], "mounted twice"),
])
def test_invalid_volumes_are_refused(daemon, images, volumes, mounts, needle):
    d = daemon
    doc = with_volumes("bad", images["busybox"], None, volumes, volumeMounts=mounts)
    r = d.cli("apply", "-f", "-", input=doc, check=False)
    assert r.returncode != 0 and needle in r.stderr, r.stderr
    assert d.json("services")["items"] == []
