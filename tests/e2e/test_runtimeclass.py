"""Runtime classes, the sandboxed profile, overhead and node capacity, and
`sluice debug`."""
import json
import os
import subprocess
import time

import pytest

from conftest import BIN

RUNSC_CLASS = """
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: gvisor
handler: runsc
overhead:
  podFixed:
    cpu: 250m
    memory: 120Mi
"""

HEAVY_CLASS = """
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: heavy
handler: crun
overhead:
  podFixed:
    cpu: 100m
    memory: 64Mi
"""


def status_of(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)


def test_builtin_classes_listed(daemon):
    items = {c["metadata"]["name"]: c for c in daemon.json("runtimeclasses")["items"]}
    assert {"default", "sandboxed", "runc"} <= set(items)
    assert items["sandboxed"]["status"]["available"] is True
    assert items["sandboxed"]["status"]["syscalls"] < items["default"]["status"]["syscalls"]


def test_sandboxed_instance(daemon, images):
    d = daemon
    d.cli("deploy", "sb", "--image", images["hello"], "--runtime-class", "sandboxed")
    code, who = d.curl("sb", "/whoami")
    assert code == 200 and who.strip() == "uid=65532 gid=65532"
    inst = d.json("instances", "sb")["items"][0]
    st = status_of(inst["pid"])
    assert st["CapEff"].strip() == "0000000000000000"
    assert st["NoNewPrivs"].strip() == "1"
    assert st["Seccomp"].strip() == "2"
    with open("/proc/%d/uid_map" % inst["pid"]) as f:
        assert f.read().split() != ["0", "0", "4294967295"]  # not the host's identity map
    assert int(st["Uid"].split()[0]) >= 100000  # an unprivileged host uid
    assert inst["runtimeClass"] == "sandboxed"


PROBE_SCRIPT = r"""
mkdir -p /tmp/www/cgi-bin
cat > /tmp/www/cgi-bin/probe <<'EOS'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
try() { if "$@" >/dev/null 2>&1; then echo "$name=allowed"; else echo "$name=denied"; fi; }
name=unshare try unshare -n true
name=mount try mount -t tmpfs none /tmp/www
name=write_root try touch /probe-file
name=write_tmp try touch /tmp/probe-file
name=chroot try chroot / true
kallsyms=$(head -c 64 /proc/kallsyms 2>/dev/null | wc -c)
echo "kallsyms_bytes=$kallsyms"
echo "capeff=$(grep CapEff /proc/self/status | cut -f2)"
echo "uid=$(id -u)"
EOS
chmod 755 /tmp/www/cgi-bin/probe
exec httpd -f -p "$PORT" -h /tmp/www
"""


def probe_under(d, images, name, rtc):
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"template": {"spec": {"runtimeClassName": rtc, "containers": [
               {"image": images["busybox"], "command": ["/bin/sh", "-c", PROBE_SCRIPT]}]}}}}
    d.cli("apply", "-f", "-", "--wait", input=json.dumps(doc))
    code, body = d.curl(name, "/cgi-bin/probe")
    assert code == 200, body
    return dict(l.split("=", 1) for l in body.splitlines() if "=" in l)


def test_sandbox_shrinks_what_the_app_can_do(daemon, images):
    d = daemon
    sb = probe_under(d, images, "sb", "sandboxed")
    df = probe_under(d, images, "df", "default")
    print("sandboxed:", sb)
    print("default:  ", df)
    for k in ("unshare", "mount", "write_root", "chroot"):
        assert sb[k] == "denied", k
    assert sb["write_tmp"] == "allowed"
    assert sb["kallsyms_bytes"] == "0"               # masked /proc path
    assert sb["capeff"] == "0000000000000000"        # no capabilities to raise
    # the same app under the default class serves too
    assert df["write_tmp"] == "allowed"
    items = {c["metadata"]["name"]: c for c in d.json("runtimeclasses")["items"]}
    print("allowed syscalls: default %d, sandboxed %d" % (
        items["default"]["status"]["syscalls"], items["sandboxed"]["status"]["syscalls"]))
    # the sandboxed process's host uid is not 0
    inst = d.json("instances", "sb")["items"][0]
    assert int(status_of(inst["pid"])["Uid"].split()[0]) != 0


def test_unavailable_class_is_reported(daemon, images):
    d = daemon
    r = d.cli("apply", "-f", "-", input=RUNSC_CLASS)
    assert "runtimeclass.node.k8s.io/gvisor created" in r.stderr, r.stderr
    r = d.cli("apply", "-f", "-", input=RUNSC_CLASS)
    assert "runtimeclass.node.k8s.io/gvisor configured" in r.stderr, r.stderr
    items = {c["metadata"]["name"]: c for c in d.json("runtimeclasses")["items"]}
    assert items["gvisor"]["status"]["available"] is False
    assert "runsc" in items["gvisor"]["status"]["reason"]
    r = d.cli("deploy", "gv", "--image", images["hello"], "--runtime-class", "gvisor", check=False)
    assert r.returncode != 0 and "unavailable" in r.stderr and "runsc" in r.stderr
    r = d.cli("deploy", "gv", "--image", images["hello"], "--runtime-class", "nope", check=False)
    assert r.returncode != 0 and "does not exist" in r.stderr
    bad = RUNSC_CLASS.replace("handler: runsc", "handler: Not_A_Label")
    r = d.cli("apply", "-f", "-", input=bad, check=False)
    assert r.returncode != 0 and "handler" in r.stderr


def test_fourth_instance_does_not_fit(make_daemon, images):
    # room for exactly three 192Mi footprints (128Mi + 64Mi overhead)
    d = make_daemon("--capacity-cpu", "2", "--capacity-memory", "600Mi")
    d.cli("apply", "-f", "-", input=HEAVY_CLASS)
    d.cli("deploy", "three", "--image", images["hello"], "--runtime-class", "heavy",
          "--memory", "128Mi", "--cpu", "100m", "--min", "3")
    deadline = time.time() + 20
    while time.time() < deadline and len(d.json("instances", "three")["items"]) < 3:
        time.sleep(0.1)
    assert len(d.json("instances", "three")["items"]) == 3
    r = d.cli("deploy", "four", "--image", images["hello"], "--runtime-class", "heavy",
              "--memory", "128Mi", "--cpu", "100m", "--wait-timeout", "20", check=False)
    assert r.returncode != 0 and "Unschedulable" in r.stderr and "192Mi" in r.stderr, r.stderr
    assert d.json("instances", "four")["items"] == []
    code, _ = d.curl("three", "/")
    assert code == 200


def test_overhead_in_cgroup_and_capacity(make_daemon, images):
    d = make_daemon("--capacity-cpu", "1", "--capacity-memory", "1Gi")
    d.cli("apply", "-f", "-", input=HEAVY_CLASS)
    d.cli("deploy", "h", "--image", images["hello"], "--runtime-class", "heavy",
          "--memory", "128Mi", "--cpu", "250m")
    inst = d.json("instances", "h")["items"][0]
    assert inst["footprint"] == {"cpu": "350m", "memory": "192Mi"}
    cg = "/sys/fs/cgroup/memory/sluice/%s/memory.limit_in_bytes" % inst["name"]
    with open(cg) as f:
        assert int(f.read()) == 192 << 20
    # Does not fit: 2Gi on a 1Gi node.
    r = d.cli("deploy", "big", "--image", images["hello"], "--memory", "2Gi",
              "--wait-timeout", "20", check=False)
    assert r.returncode != 0 and "Unschedulable" in r.stderr and "2Gi" in r.stderr
    rev = d.json("revisions", "big")["items"][0]
    cond = {c["type"]: c for c in rev["status"]["conditions"]}
    assert cond["ResourcesAvailable"]["status"] == "False"
    # the other service is unaffected
    code, _ = d.curl("h", "/")
    assert code == 200


def test_debug_container_joins_instance(daemon, images):
    d = daemon
    d.cli("deploy", "hello", "--image", images["hello"])
    pid = d.json("instances", "hello")["items"][0]["pid"]
    d.curl("hello", "/")
    before = dict(p.split("=") for p in d.curl("hello", "/stats")[1].split())
    r = d.cli("debug", "hello", "--", "ps", check=False, input="")
    assert r.returncode == 0 and "/hello" in r.stdout, r.stderr
    r = d.cli("debug", "hello", "--", "sh", "-c",
              "ps; wget -qO- 127.0.0.1:$PORT/; exit 7", check=False, input="")
    assert r.returncode == 7, r.stderr
    assert "/hello" in r.stdout            # sees the app's processes
    assert "Hello from sluice!" in r.stdout  # reaches its loopback
    # the app is untouched: same process, its request counter carried on
    assert d.json("instances", "hello")["items"][0]["pid"] == pid
    after = dict(p.split("=") for p in d.curl("hello", "/stats")[1].split())
    assert int(after["requests"]) == int(before["requests"]) + 2  # the debug wget + this
    code, _ = d.curl("hello", "/")
    assert code == 200
    # the throwaway bundle is gone (only the debug runtime's own root stays)
    dbg = os.path.join(d.state_dir, "debug")
    left = [e for e in os.listdir(dbg) if e != ".runtime"] if os.path.isdir(dbg) else []
    assert left == []
    runtime_root = os.path.join(dbg, ".runtime")
    if os.path.isdir(runtime_root):
        assert os.listdir(runtime_root) == []



def cgroup_limits(path):
    """(memory limit, cpu quota, cpu period) of cgroup PATH (e.g.
    /sluice/ID) on the host, v1 hierarchies or v2."""
    def read(*files):
        for f in files:
            try:
                with open("/sys/fs/cgroup/" + f.format(path)) as fh:
                    return fh.read().split()
            except OSError:
                pass
        raise AssertionError("no %s for %s" % (files, path))
    try:
        mem = read("memory{}/memory.limit_in_bytes")[0]
        quota, period = read("cpu{}/cpu.cfs_quota_us")[0], read("cpu{}/cpu.cfs_period_us")[0]
    except AssertionError:
        mem = read("{}/memory.max".lstrip("/"))[0]
        quota, period = read("{}/cpu.max".lstrip("/"))
    return mem, quota, period


def test_debug_container_gets_instance_limits(daemon, images):
    """A debug container runs in a cgroup of its own with its instance's
    memory and CPU limits: it may use as much as the instance may, not all
    the host has. (--no-cpu-throttling: an idle instance is held to 1 % of
    a core, which is not its limit; its debug container gets the limit.)"""
    d = daemon
    d.cli("deploy", "lim", "--image", images["hello"], "--memory", "96Mi", "--cpu", "500m",
          "--no-cpu-throttling")
    item = d.json("instances", "lim")["items"][0]
    assert item["limits"] == {"cpu": "500m", "memory": "96Mi"}, item
    env = dict(os.environ, SLUICE_STATE_DIR=d.state_dir)
    p = subprocess.Popen([BIN, "debug", "lim", "--", "sh", "-c",
                          "grep memory: /proc/self/cgroup; sleep 4"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        assert ":memory:/sluice/debug-" in line, line
        own = line.strip().split(":", 2)[2]
        assert cgroup_limits(own) == cgroup_limits("/sluice/" + item["name"])
        assert cgroup_limits(own)[0] == str(96 << 20)
        # the instance's cgroup is not the debug container's
        assert item["name"] not in own
    finally:
        assert p.wait(60) == 0
    # an instance without limits: none for its debug container either
    d.cli("deploy", "free", "--image", images["hello"])
    assert d.json("instances", "free")["items"][0]["limits"] == {}


def test_builtin_classes_apply_back_unchanged(daemon):
    """`runtimeclasses -o yaml` applies back (the built-in classes as they
    are); changing a built-in one is refused, and nothing changes."""
    d = daemon
    listed = d.cli("runtimeclasses", "-o", "json").stdout
    r = d.cli("apply", "-f", "-", input=listed, check=False)
    assert r.returncode == 0, r.stderr
    doc = json.loads(listed)
    doc["items"] = [i for i in doc["items"] if i["metadata"]["name"] == "sandboxed"]
    doc["items"][0]["handler"] = "crun"
    r = d.cli("apply", "-f", "-", input=json.dumps(doc), check=False)
    assert r.returncode != 0 and "built in and cannot be replaced" in r.stderr, r.stderr
    assert d.cli("runtimeclasses", "-o", "json").stdout == listed
