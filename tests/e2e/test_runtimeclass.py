"""Runtime classes, the sandboxed profile, overhead and node capacity, and
`sluice debug`."""
import json
import os
import subprocess

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


def test_unavailable_class_is_reported(daemon, images):
    d = daemon
    d.cli("apply", "-f", "-", input=RUNSC_CLASS)
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
    r = d.cli("debug", "hello", "--", "sh", "-c",
              "ps; wget -qO- 127.0.0.1:$PORT/; exit 7", check=False, input="")
    assert r.returncode == 7, r.stderr
    assert "/hello" in r.stdout            # sees the app's processes
    assert "Hello from sluice!" in r.stdout  # reaches its loopback
    # the app is untouched
    assert d.json("instances", "hello")["items"][0]["pid"] == pid
    code, _ = d.curl("hello", "/")
    assert code == 200
    # the throwaway bundle is gone (only the debug runtime's own root stays)
    dbg = os.path.join(d.state_dir, "debug")
    left = [e for e in os.listdir(dbg) if e != ".runtime"] if os.path.isdir(dbg) else []
    assert left == []
    runtime_root = os.path.join(dbg, ".runtime")
    if os.path.isdir(runtime_root):
        assert os.listdir(runtime_root) == []
