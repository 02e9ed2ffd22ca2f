"""Cloud Run's CPU allocation: by default an instance has its CPU while
requests are in flight and is held to idle CPU (1 % of a core) between
them; run.googleapis.com/cpu-throttling: "false" (deploy
--no-cpu-throttling) gives it its CPU all the time. Measured on the
instance's own cgroup, with an app that spins in the background."""
import json
import os
import subprocess
import threading
import time

from conftest import wait_for

# A background loop that burns all the CPU it is given, beside an httpd
# whose CGI /cgi-bin/hold answers after its query's seconds.
SPINNER = r"""
(while :; do :; done) &
mkdir -p /tmp/www/cgi-bin
cat > /tmp/www/cgi-bin/hold <<'EOS'
#!/bin/sh
sleep "${QUERY_STRING:-1}"
printf 'Content-Type: text/plain\r\n\r\nheld\n'
EOS
chmod 755 /tmp/www/cgi-bin/hold
echo ok > /tmp/www/index.html
exec httpd -f -p "$PORT" -h /tmp/www
"""


def spinner(d, images, name, throttling=None):
    ann = {"autoscaling.knative.dev/min-scale": "1"}
    if throttling is not None:
        ann["run.googleapis.com/cpu-throttling"] = throttling
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"template": {"metadata": {"annotations": ann}, "spec": {"containers": [
               {"image": images["busybox"], "command": ["/bin/sh", "-c", SPINNER]}]}}}}
    d.cli("apply", "-f", "-", "--wait", input=json.dumps(doc))
    return d.json("instances", name)["items"][0]["name"]


def cpu_ns(inst):
    """CPU time used by the instance's cgroup, in ns (cgroup v1 or v2)."""
    v1 = "/sys/fs/cgroup/cpuacct/sluice/%s/cpuacct.usage" % inst
    if os.path.exists(v1):
        with open(v1) as f:
            return int(f.read())
    with open("/sys/fs/cgroup/sluice/%s/cpu.stat" % inst) as f:
        return 1000 * int(dict(l.split() for l in f)["usage_usec"])


def cpu_share(inst, seconds=1.0):
    """The share of one core the instance used over the next seconds."""
    a, t0 = cpu_ns(inst), time.monotonic()
    time.sleep(seconds)
    return (cpu_ns(inst) - a) / ((time.monotonic() - t0) * 1e9)


def cpu_idle(d, name):
    return d.json("instances", name)["items"][0]["cpuIdle"]


def held_gauge(d, name):
    """sluice_cpu_idle_instances of the service's revision, from /metrics."""
    sock = os.path.join(d.state_dir, "sluice.sock")
    text = subprocess.run(["curl", "-sS", "--unix-socket", sock, "http://x/metrics"],
                          capture_output=True, text=True, check=True).stdout
    for line in text.splitlines():
        if line.startswith("sluice_cpu_idle_instances{") and 'service="%s"' % name in line:
            return float(line.split()[-1])
    return None


def test_idle_instances_are_held_to_idle_cpu(daemon, images):
    d = daemon
    inst = spinner(d, images, "spin")
    assert wait_for(lambda: cpu_idle(d, "spin"), 10)
    assert held_gauge(d, "spin") == 1
    head, row = d.cli("instances", "spin").stdout.splitlines()[:2]
    assert head.split()[5] == "CPU" and row.split()[5] == "idle", (head, row)
    idle = cpu_share(inst)
    assert idle < 0.05, idle  # 1 % of a core, with room for scheduling slack

    # While a request is in flight the instance has its CPU back, background
    # work included.
    result = {}
    t = threading.Thread(target=lambda: result.update(r=d.curl("spin", "/cgi-bin/hold?3")))
    t.start()
    assert wait_for(lambda: not cpu_idle(d, "spin"), 5)
    assert held_gauge(d, "spin") == 0
    busy = cpu_share(inst)
    t.join()
    assert result["r"][0] == 200 and result["r"][1].strip() == "held", result
    assert busy > 0.2, busy

    # And loses it again soon after the last one ends.
    assert wait_for(lambda: cpu_idle(d, "spin"), 5)
    assert cpu_share(inst) < 0.05
    code, body = d.curl("spin", "/")
    assert code == 200 and body.strip() == "ok"


def test_cpu_always_allocated(daemon, images):
    d = daemon
    inst = spinner(d, images, "always", throttling="false")
    time.sleep(0.5)  # past the hold's delay
    assert not cpu_idle(d, "always")
    assert cpu_share(inst) > 0.2

    # deploy's flags set the annotation; the change is a new revision, held.
    d.cli("deploy", "always", "--cpu-throttling")
    svc = d.json("describe", "always")
    ann = svc["spec"]["template"]["metadata"]["annotations"]
    assert ann["run.googleapis.com/cpu-throttling"] == "true"
    assert wait_for(lambda: [i for i in d.json("instances", "always")["items"]
                             if i["revision"] == "always-00002" and i["cpuIdle"]], 15)
    d.cli("deploy", "always", "--no-cpu-throttling")
    ann = d.json("describe", "always")["spec"]["template"]["metadata"]["annotations"]
    assert ann["run.googleapis.com/cpu-throttling"] == "false"


def test_probes_get_full_cpu(daemon, images):
    """A held instance answers its liveness probe at full speed: an exec probe
    that needs some CPU passes, period after period, and the instance is
    never restarted."""
    d = daemon
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "probed"},
           "spec": {"template": {"metadata": {"annotations": {
               "autoscaling.knative.dev/min-scale": "1"}}, "spec": {"containers": [{
                   "image": images["busybox"], "command": ["/bin/sh", "-c", SPINNER],
                   # ~50 ms of CPU: 5 s at a 1 % quota, far past its 1 s timeout
                   "livenessProbe": {"exec": {"command": [
                       "/bin/sh", "-c", "i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done"]},
                       "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 1}}]}}}}
    d.cli("apply", "-f", "-", "--wait", input=json.dumps(doc))
    first = d.json("instances", "probed")["items"][0]["name"]
    assert wait_for(lambda: cpu_idle(d, "probed"), 10)
    time.sleep(4)
    items = d.json("instances", "probed")["items"]
    assert [i["name"] for i in items] == [first], items
    assert "liveness probe failed" not in d.daemon_log()


def test_the_annotation_is_checked(daemon, images):
    d = daemon
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "bad"},
           "spec": {"template": {"metadata": {"annotations": {
               "run.googleapis.com/cpu-throttling": "sometimes"}},
               "spec": {"containers": [{"image": images["hello"]}]}}}}
    r = d.cli("apply", "-f", "-", input=json.dumps(doc), check=False)
    assert r.returncode != 0
    assert 'run.googleapis.com/cpu-throttling: must be "true" or "false", got "sometimes"' \
        in r.stderr, r.stderr
