"""The serverless data path under real load (hey): per-instance concurrency
limits, the activator queue, KPA autoscaling, scale to zero, timeouts and
failure handling."""
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import hey, instance_netns_curl, service_manifest, wait_for

FAST = ("--stable-window", "2s", "--scale-to-zero-grace", "1s", "--autoscale-tick", "50ms")


def url(d, name, path):
    return "http://127.0.0.1:%d%s" % (d.port, path)


def instances(d, name):
    return d.json("instances", name)["items"]


def test_concurrency_one_is_never_exceeded(make_daemon, images):
    d = make_daemon(*FAST)
    d.cli("deploy", "one", "--image", images["hello"], "--concurrency", "1", "--max", "4")
    codes, errors, out = hey(url(d, "one", "/sleep?ms=20"), "-host", d.host("one"),
                             "-z", "20s", "-c", "8")
    assert errors == [], out
    assert set(codes) == {200}, out
    seen = 0
    for inst in instances(d, "one"):
        stats = instance_netns_curl(inst["pid"], "/stats")
        kv = dict(p.split("=") for p in stats.split())
        assert int(kv["sleeping_max"]) <= 1, (inst["name"], stats)
        seen += int(kv["requests"])
    assert seen > 0


def test_scale_from_zero_and_back(make_daemon, images):
    d = make_daemon(*FAST)
    d.cli("deploy", "idle", "--image", images["hello"])
    assert wait_for(lambda: instances(d, "idle") == [], 20), "did not scale to zero"
    t0 = time.time()
    code, body = d.curl("idle", "/")
    cold = time.time() - t0
    print("cold start to first response: %.1f ms" % (cold * 1000))
    assert code == 200 and "revision=idle-00001" in body
    assert len(instances(d, "idle")) == 1
    assert wait_for(lambda: instances(d, "idle") == [], 20), "did not scale to zero again"
    rev = d.json("revisions", "idle")["items"][0]
    assert rev["status"]["actualReplicas"] == 0


def test_load_step_scales_out_and_back(make_daemon, images):
    d = make_daemon(*FAST)
    d.cli("deploy", "step", "--image", images["hello"], "--concurrency", "10", "--max", "8",
          "--min", "1")
    result = {}

    def load():
        result["hey"] = hey(url(d, "step", "/sleep?ms=100"), "-host", d.host("step"),
                            "-z", "6s", "-c", "50")

    t = threading.Thread(target=load)
    start = time.time()
    t.start()
    counts = []
    reached = None
    while t.is_alive():
        n = len([i for i in instances(d, "step") if i["state"] in ("Ready", "Starting")])
        counts.append(n)
        if reached is None and n >= 5:
            reached = time.time() - start
        time.sleep(0.1)
    t.join()
    codes, errors, out = result["hey"]
    print("instances over time:", counts, "reached 5 after", reached)
    assert errors == [], out
    assert set(codes) == {200}, out
    assert reached is not None and reached <= 2.0, counts
    assert max(counts) <= 8
    assert wait_for(lambda: len(instances(d, "step")) == 1, 30), instances(d, "step")


def test_timeout_seconds(make_daemon, images):
    d = make_daemon(*FAST)
    d.cli("deploy", "slow", "--image", images["hello"], "--timeout", "2")
    code, _ = d.curl("slow", "/sleep?ms=1000")
    assert code == 200
    t0 = time.time()
    code, body = d.curl("slow", "/sleep?ms=3000")
    assert code == 504, body
    assert time.time() - t0 < 2.9


STREAM = r"""
mkdir -p /tmp/www/cgi-bin
cat > /tmp/www/cgi-bin/stream <<'EOS'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
for i in 1 2 3 4; do echo "tick $i"; sleep 1; done
EOS
chmod 755 /tmp/www/cgi-bin/stream
exec httpd -f -p "$PORT" -h /tmp/www
"""


def test_streaming_response_outlives_timeout(make_daemon, images):
    import json
    d = make_daemon(*FAST)
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
           "metadata": {"name": "stream"},
           "spec": {"template": {"spec": {"timeoutSeconds": 2, "containers": [
               {"image": images["busybox"], "command": ["/bin/sh", "-c", STREAM]}]}}}}
    d.cli("apply", "-f", "-", "--wait", input=json.dumps(doc))
    code, body = d.curl("stream", "/cgi-bin/stream")
    assert code == 200, body
    assert "tick 4" in body


PACED = r"""
mkdir -p /tmp/www/cgi-bin
cd /tmp/www/cgi-bin
# ticks GAP seconds apart, after a first one at once
cat > paced <<'EOS'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
echo "tick 1"
for i in 2 3; do sleep "${QUERY_STRING:-1}"; echo "tick $i"; done
EOS
# silent before its head
cat > late <<'EOS'
#!/bin/sh
sleep "${QUERY_STRING:-3}"
printf 'Content-Type: text/plain\r\n\r\nlate\n'
EOS
chmod 755 paced late
exec httpd -f -p "$PORT" -h /tmp/www
"""


def paced_service(d, images, name, **spec):
    import json
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"template": {
               "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "1"}},
               "spec": dict(spec, containers=[
                   {"image": images["busybox"], "command": ["/bin/sh", "-c", PACED]}])}}}
    d.cli("apply", "-f", "-", "--wait", input=json.dumps(doc))


def test_response_start_timeout(make_daemon, images):
    """responseStartTimeoutSeconds bounds the time to the response head (504
    after it); a response that has started streams on past it."""
    d = make_daemon(*FAST)
    paced_service(d, images, "rst", timeoutSeconds=10, responseStartTimeoutSeconds=1)
    t0 = time.time()
    code, body = d.curl("rst", "/cgi-bin/late?2")
    assert code == 504 and "responseStartTimeoutSeconds" in body, body
    assert 0.9 < time.time() - t0 < 1.9
    code, body = d.curl("rst", "/cgi-bin/paced?1")
    assert code == 200 and "tick 3" in body, body


def test_idle_timeout(make_daemon, images):
    """idleTimeoutSeconds bounds the instance's silence: before the head it
    is a 504, after it the response is cut; a response whose pauses are
    shorter streams whole, however long it takes in all."""
    d = make_daemon(*FAST)
    paced_service(d, images, "idle", timeoutSeconds=10, idleTimeoutSeconds=2)
    code, body = d.curl("idle", "/cgi-bin/paced?1")
    assert code == 200 and body.split() == ["tick", "1", "tick", "2", "tick", "3"], body
    t0 = time.time()
    code, body = d.curl("idle", "/cgi-bin/late?4")
    assert code == 504 and "idleTimeoutSeconds" in body, body
    assert 1.9 < time.time() - t0 < 3.5
    t0 = time.time()
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "-H", "Host: " + d.host("idle"),
                        "http://127.0.0.1:%d/cgi-bin/paced?4" % d.port],
                       capture_output=True, text=True)
    assert r.returncode != 0, r.stdout  # an incomplete response, not a whole one
    assert "tick 1" in r.stdout and "tick 2" not in r.stdout, r.stdout
    assert time.time() - t0 < 3.9
    assert "response cut: the instance sent nothing for 2000 ms" in d.daemon_log()
    # The instance is fine and serves the next request.
    code, body = d.curl("idle", "/cgi-bin/late?0")
    assert code == 200 and body.strip() == "late", body


def test_killed_instance_loses_only_its_requests(make_daemon, images):
    d = make_daemon(*FAST)
    d.cli("deploy", "crash", "--image", images["hello"], "--concurrency", "5", "--min", "2")
    assert wait_for(lambda: len([i for i in instances(d, "crash") if i["state"] == "Ready"]) >= 2, 20)
    result = {}

    def load():
        result["hey"] = hey(url(d, "crash", "/sleep?ms=50"), "-host", d.host("crash"),
                            "-z", "5s", "-c", "6")

    t = threading.Thread(target=load)
    t.start()
    time.sleep(1.5)
    victim = instances(d, "crash")[0]
    os.kill(victim["pid"], signal.SIGKILL)
    t.join()
    codes, errors, out = result["hey"]
    failed = sum(n for c, n in codes.items() if c != 200) + len(errors)
    print("status codes:", codes, "errors:", errors)
    # Only the requests the killed instance held may fail (at most its
    # concurrency limit).
    assert failed <= 5, out
    assert codes.get(200, 0) > 100
    code, _ = d.curl("crash", "/")
    assert code == 200


def test_scale_down_during_load_drops_nothing(make_daemon, images):
    d = make_daemon(*FAST)
    d.cli("deploy", "down", "--image", images["hello"], "--concurrency", "4", "--max", "10")
    high = {}

    def run(key, c, secs):
        high[key] = hey(url(d, "down", "/sleep?ms=50"), "-host", d.host("down"),
                        "-z", "%ds" % secs, "-c", str(c))

    t1 = threading.Thread(target=run, args=("high", 30, 4))
    t2 = threading.Thread(target=run, args=("low", 2, 10))
    t1.start()
    t2.start()
    t1.join()
    peak = len(instances(d, "down"))
    t2.join()
    after = len(instances(d, "down"))
    for key in ("high", "low"):
        codes, errors, out = high[key]
        assert errors == [], out
        assert set(codes) == {200}, out
    print("instances at peak %d, after the low phase %d" % (peak, after))
    assert peak >= 3
    assert after < peak


def test_queue_full_and_max_scale(make_daemon, images):
    d = make_daemon(*FAST, "--queue-deadline", "500ms")
    d.cli("deploy", "cap", "--image", images["hello"], "--concurrency", "1", "--max", "1",
          "--min", "1")
    codes, errors, out = hey(url(d, "cap", "/sleep?ms=400"), "-host", d.host("cap"),
                             "-n", "12", "-c", "12")
    print(codes)
    assert codes.get(200, 0) >= 1
    assert codes.get(429, 0) >= 1, out


def test_invalid_autoscaling_input(daemon, images):
    r = daemon.cli("deploy", "bad", "--image", images["hello"], "--min", "5", "--max", "2",
                   check=False)
    assert r.returncode != 0
    assert "autoscaling.knative.dev/min-scale" in r.stderr
    r = daemon.cli("deploy", "bad", "--image", images["hello"], "--min", "x", check=False)
    assert r.returncode != 0 and "--min" in r.stderr
    r = daemon.cli("deploy", "bad", "--image", images["hello"], "--metric", "cpu", check=False)
    assert r.returncode != 0 and "--metric: expected concurrency or rps, got 'cpu'" in r.stderr
    assert daemon.json("services")["items"] == []
    daemon.cli("deploy", "good", "--image", images["hello"], "--metric", "rps", "--target", "5")
    rev = daemon.json("revisions", "good")["items"][0]
    ann = rev["metadata"]["annotations"]
    assert ann["autoscaling.knative.dev/metric"] == "rps", ann
    assert rev["status"]["autoscaler"]["metric"] == "rps"


def concurrent_gets(d, name, path, n):
    """n requests at once on their own connections; their status codes."""
    codes = [None] * n

    def one(k):
        codes[k] = d.curl(name, path, check=False)[0]

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    return threads, codes


def test_queued_requests_survive_a_deploy(daemon, images):
    """Requests waiting for capacity when a new revision takes the traffic
    go to it instead of failing (Knative keeps serving an unreachable
    revision's buffered requests; Cloud Run fails none on a deploy)."""
    d = daemon
    d.cli("deploy", "q", "--image", images["hello"], "--concurrency", "1", "--max", "2")
    threads, codes = concurrent_gets(d, "q", "/sleep?ms=1500", 8)
    assert wait_for(lambda: d.json("revisions", "q")["items"][0]["status"]["autoscaler"]
                    ["queued"] >= 4, 10)
    d.cli("deploy", "q", "--env", "V=2")
    for t in threads:
        t.join(60)
    assert codes == [200] * 8, codes


def desired(d, name):
    revs = d.json("revisions", name)["items"]
    return max(r["status"].get("desiredReplicas", 0) for r in revs)


@pytest.mark.parametrize("flags,clients,want", [
    # an annotated target above containerConcurrency is capped by it: 30 / (10 x 0.7)
    (("--concurrency", "10", "--target", "50"), 30, 5),
    # containerConcurrency is the target, not the daemon's default of 100: 100 / (200 x 0.7)
    (("--concurrency", "200"), 100, 1),
])
def test_target_follows_container_concurrency(make_daemon, images, flags, clients, want):
    """Knative's ResolveMetricTarget: the target is containerConcurrency when
    set, and an annotated target is never above it."""
    d = make_daemon("--stable-window", "6s")
    d.cli("deploy", "t", "--image", images["hello"], *flags)
    threads, codes = concurrent_gets(d, "t", "/sleep?ms=4000", clients)
    seen = wait_for(lambda: desired(d, "t") >= want, 3.5) and desired(d, "t")
    for t in threads:
        t.join(60)
    assert seen == want, (seen, want)
    assert set(codes) == {200}


def test_scale_beyond_the_daemon_limit_is_refused(make_daemon, images):
    d = make_daemon("--max-scale", "10")
    for flag in ("--min", "--max"):
        r = d.cli("deploy", "big", "--image", images["hello"], flag, "20", check=False)
        assert r.returncode != 0 and "more than this daemon's limit of 10" in r.stderr, r.stderr
    assert d.json("services")["items"] == []
    d.cli("deploy", "ok", "--image", images["hello"], "--max", "10")


@pytest.mark.parametrize("metric,want", [("rps", (5, 6, 7)), ("concurrency", (1,))])
def test_rps_metric_scales_on_request_rate(make_daemon, images, metric, want):
    """Knative's `metric: rps`: the target is requests per second per
    instance. 40 short requests a second at a target of 10 (× 0.7) want 6
    instances (5 or 7 if the window catches a second less or more of it);
    scaled on concurrency, the same load (well under one request in flight)
    wants 1."""
    d = make_daemon("--scale-to-zero-grace", "1s")
    ann = {"autoscaling.knative.dev/metric": metric, "autoscaling.knative.dev/target": "10",
           "autoscaling.knative.dev/window": "6s"}
    d.cli("apply", "-f", "-", input=service_manifest("r", images["hello"],
                                                     template_metadata={"annotations": ann}))
    codes, errors, out = hey(url(d, "r", "/"), "-host", d.host("r"), "-z", "7s", "-c", "4",
                             "-q", "10")
    assert set(codes) == {200} and not errors, out
    st = d.json("revisions", "r")["items"][0]["status"]
    assert st["autoscaler"]["metric"] == metric
    assert st["desiredReplicas"] in want, st
    if metric == "rps":
        assert 25 <= st["autoscaler"]["observedStableRPS"] <= 45, st
    else:
        assert st["autoscaler"]["observedStableConcurrency"] < 1, st
