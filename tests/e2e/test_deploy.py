"""Deploy a real image, get a URL, and the Knative/Cloud Run container
contract holds inside the instance."""
import calendar
import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import cgroups_named, mounts_under, service_manifest


def test_deploy_prints_url_and_serves(daemon, images):
    r = daemon.cli("deploy", "hello", "--image", images["hello"], "--env", "GREETING=hi")
    url = r.stdout.strip()
    assert url == "http://hello.localhost:%d" % daemon.port
    code, body = daemon.curl("hello", "/")
    assert code == 200
    assert body.strip() == "Hello from sluice! revision=hello-00001"
    # keep-alive: several requests over one curl connection
    r = subprocess.run(["curl", "-sS", url + "/", url + "/", url + "/"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.count("Hello from sluice!") == 3


def test_contract_env_user_and_port(daemon, images):
    daemon.cli("deploy", "hello", "--image", images["hello"], "--env", "GREETING=hi")
    code, env = daemon.curl("hello", "/env")
    assert code == 200
    lines = set(env.splitlines())
    assert "PORT=8080" in lines
    assert "K_SERVICE=hello" in lines
    assert "K_CONFIGURATION=hello" in lines
    assert "K_REVISION=hello-00001" in lines
    assert "GREETING=hi" in lines
    code, who = daemon.curl("hello", "/whoami")
    assert who.strip() == "uid=65532 gid=65532"


def test_port_flag_and_unknown_host(daemon, images):
    daemon.cli("deploy", "web", "--image", images["hello"], "--port", "9090")
    code, env = daemon.curl("web", "/env")
    assert code == 200 and "PORT=9090" in env.splitlines()
    code, body = daemon.curl("nosuch", "/")
    assert code == 404
    assert "nosuch.localhost" in body


CHECK_SCRIPT = r"""
set -u
cat > /tmp/stdin.txt
mkdir -p /tmp/www/cgi-bin
cat > /tmp/www/cgi-bin/check <<'EOS'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
echo "id=$(id -u):$(id -g)"
echo "stdin_bytes=$(wc -c < /tmp/stdin.txt)"
echo "tmp_mode=$(stat -c %a /tmp)"
touch /tmp/probe && echo tmp_writable=yes || echo tmp_writable=no
for d in null zero full random urandom tty ptmx console fd stdin stdout stderr; do
  if [ -e /dev/$d ] || [ -L /dev/$d ]; then echo "dev_$d=yes"; else echo "dev_$d=no"; fi
done
if echo 1 > /proc/sys/kernel/hostname 2>/dev/null; then echo procsys=rw; else echo procsys=ro; fi
echo "hostname=$(hostname)"
echo "pid1=$(cat /proc/1/comm)"
echo "netifs=$(ls /sys/class/net | tr '\n' ' ')"
echo "K_REVISION=$K_REVISION"
EOS
chmod 755 /tmp/www/cgi-bin/check
echo "busybox httpd starting on $PORT"
exec httpd -f -v -p "$PORT" -h /tmp/www
"""


def busybox_manifest(image, name="bb", script=CHECK_SCRIPT, user=None):
    c = {"image": image, "command": ["/bin/sh", "-c", script]}
    doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
           "metadata": {"name": name},
           "spec": {"template": {"spec": {"containers": [c]}}}}
    return json.dumps(doc)


def test_contract_files_devices_and_stdin(daemon, images):
    daemon.cli("apply", "-f", "-", "--wait", input=busybox_manifest(images["busybox"]))
    code, body = daemon.curl("bb", "/cgi-bin/check")
    assert code == 200, body
    kv = dict(l.split("=", 1) for l in body.splitlines() if "=" in l)
    assert kv["stdin_bytes"] == "0"          # stdin is at EOF
    assert kv["tmp_mode"] == "1777"
    assert kv["tmp_writable"] == "yes"
    for d in ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "fd",
              "stdin", "stdout", "stderr"):
        assert kv["dev_" + d] == "yes", d
    assert kv["dev_console"] == "no"
    assert kv["procsys"] == "ro"
    assert kv["netifs"].split() == ["lo"]  # loopback only
    assert kv["K_REVISION"] == "bb-00001"
    assert kv["id"] == "65532:65532"         # the image's USER
    assert kv["hostname"].startswith("bb-00001-")


def test_logs_show_app_output(daemon, images):
    daemon.cli("deploy", "hello", "--image", images["hello"])
    daemon.curl("hello", "/")
    deadline = time.time() + 10
    while time.time() < deadline:
        out = daemon.cli("logs", "hello").stdout
        if "listening on" in out and "GET /" in out:
            break
        time.sleep(0.1)
    assert "listening on" in out
    assert "GET /" in out


def test_logs_follow_streams_new_lines(daemon, images):
    daemon.cli("deploy", "hello", "--image", images["hello"])
    env = dict(os.environ, SLUICE_STATE_DIR=daemon.state_dir)
    p = subprocess.Popen([os.environ.get("SLUICE_BIN", "build/sluice"), "logs", "hello", "-f"],
                         stdout=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(0.5)
        daemon.curl("hello", "/follow-marker")
        deadline = time.time() + 10
        seen = ""
        os.set_blocking(p.stdout.fileno(), False)
        while time.time() < deadline and "/follow-marker" not in seen:
            try:
                chunk = p.stdout.read()
            except (BlockingIOError, TypeError):
                chunk = None
            if chunk:
                seen += chunk
            time.sleep(0.1)
        assert "/follow-marker" in seen
    finally:
        p.terminate()
        p.wait()


def test_delete_stops_instance_and_cleans_up(daemon, images):
    daemon.cli("deploy", "hello", "--image", images["hello"])
    insts = daemon.json("instances", "hello")["items"]
    assert len(insts) == 1 and insts[0]["state"] == "Ready"
    iid, pid = insts[0]["name"], insts[0]["pid"]
    assert os.path.exists("/proc/%d" % pid)
    assert mounts_under(daemon.state_dir)
    assert cgroups_named([iid])
    daemon.cli("delete", "hello")
    deadline = time.time() + 20
    while time.time() < deadline and (mounts_under(daemon.state_dir) or cgroups_named([iid])):
        time.sleep(0.1)
    assert mounts_under(daemon.state_dir) == []
    assert cgroups_named([iid]) == []
    assert not os.path.exists("/proc/%d" % pid) or \
        open("/proc/%d/stat" % pid).read().split()[2] == "Z"
    assert daemon.json("services")["items"] == []
    code, _ = daemon.curl("hello", "/")
    assert code == 404
    r = daemon.cli("describe", "hello", check=False)
    assert r.returncode != 0 and "not found" in r.stderr


def test_restart_keeps_services(daemon, images):
    daemon.cli("deploy", "hello", "--image", images["hello"], "--env", "GREETING=kept")
    assert daemon.stop() == 0
    assert mounts_under(daemon.state_dir) == []
    daemon.start()
    svc = daemon.json("describe", "hello")
    assert svc["status"]["latestReadyRevisionName"] == "hello-00001"
    deadline = time.time() + 20
    code = 0
    while time.time() < deadline:
        code, body = daemon.curl("hello", "/env")
        if code == 200:
            break
        time.sleep(0.05)
    assert code == 200 and "GREETING=kept" in body.splitlines()


def test_update_creates_new_revision(daemon, images):
    daemon.cli("deploy", "hello", "--image", images["hello"], "--env", "V=1")
    daemon.cli("deploy", "hello", "--env", "V=2")
    code, body = daemon.curl("hello", "/env")
    assert "V=2" in body.splitlines() and "K_REVISION=hello-00002" in body.splitlines()
    revs = [r["metadata"]["name"] for r in daemon.json("revisions", "hello")["items"]]
    assert revs == ["hello-00001", "hello-00002"]
    # deploying the same thing again makes no new revision
    daemon.cli("deploy", "hello", "--env", "V=2")
    assert len(daemon.json("revisions", "hello")["items"]) == 2


def test_docker_archive_image(daemon, images):
    daemon.cli("deploy", "arch", "--image", images["hello_archive"])
    code, body = daemon.curl("arch", "/")
    assert code == 200 and "revision=arch-00001" in body


def test_runc_runtime(tmp_path, images):
    from conftest import Daemon, free_port
    d = Daemon(str(tmp_path / "state"), free_port(), runtime="runc")
    d.start()
    try:
        d.cli("deploy", "hello", "--image", images["hello"])
        code, body = d.curl("hello", "/whoami")
        assert code == 200 and body.strip() == "uid=65532 gid=65532"
    finally:
        assert d.stop() == 0


def test_crashed_instance_is_replaced(daemon, images):
    daemon.cli("deploy", "hello", "--image", images["hello"])
    inst = daemon.json("instances", "hello")["items"][0]
    os.kill(inst["pid"], signal.SIGKILL)
    deadline = time.time() + 20
    new = None
    while time.time() < deadline:
        items = daemon.json("instances", "hello")["items"]
        ready = [i for i in items if i["state"] == "Ready" and i["name"] != inst["name"]]
        if ready:
            new = ready[0]
            break
        time.sleep(0.05)
    assert new, "no replacement instance"
    code, _ = daemon.curl("hello", "/")
    assert code == 200


def test_container_that_exits_fails_deploy_with_its_logs(daemon, images):
    script = "echo 'fatal: missing DATABASE_URL' >&2; exit 3"
    doc = busybox_manifest(images["busybox"], name="broken", script=script)
    r = daemon.cli("apply", "-f", "-", "--wait", input=doc, check=False)
    assert r.returncode != 0
    assert "status 3" in r.stderr
    assert "missing DATABASE_URL" in r.stderr
    svc = daemon.json("describe", "broken")
    ready = [c for c in svc["status"]["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "False"
    assert "missing DATABASE_URL" in ready["message"]


def test_revision_gc_keeps_the_needed_and_the_newest(make_daemon, images):
    """Knative's config-gc by count alone (time bounds disabled, at most 2
    non-active kept): of five revisions, the latest and the one marked
    serving.knative.dev/no-gc stay whatever their number, the two most
    recently routed of the rest stay, the oldest goes."""
    d = make_daemon("--revision-gc-interval", "1s", "--revision-gc-min-non-active", "0",
                    "--revision-gc-max-non-active", "2",
                    "--revision-gc-retain-since-create", "disabled",
                    "--revision-gc-retain-since-active", "disabled")

    def apply(v, annotations=None):
        tmeta = {"annotations": annotations} if annotations else {}
        doc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
               "metadata": {"name": "gc"},
               "spec": {"template": {"metadata": tmeta, "spec": {"containers": [
                   {"image": images["hello"], "env": [{"name": "V", "value": str(v)}]}]}}}}
        d.cli("apply", "-f", "-", "--wait", input=json.dumps(doc))
        time.sleep(1.1)  # routing times are kept to the second

    apply(1, {"serving.knative.dev/no-gc": "true"})
    for v in range(2, 6):
        apply(v)

    def names():
        return sorted(r["metadata"]["name"] for r in d.json("revisions", "gc")["items"])

    want = ["gc-00001", "gc-00003", "gc-00004", "gc-00005"]
    deadline = time.time() + 15
    while names() != want and time.time() < deadline:
        time.sleep(0.2)
    assert names() == want
    time.sleep(2.5)  # further passes delete nothing more
    assert names() == want
    reserve = d.json("revisions", "gc")["items"]
    states = {r["metadata"]["name"]: r["metadata"]["labels"].get("serving.knative.dev/routingState")
              for r in reserve}
    assert states["gc-00003"] == "reserve" and states["gc-00004"] == "reserve"
    code, body = d.curl("gc", "/env")
    assert code == 200 and "V=5" in body.splitlines()


def test_revision_gc_counts_idle_time_of_unstamped_revisions_from_now(make_daemon, images):
    """Revisions stored without a routing state (as by a daemon before the
    collector) are stamped reserve at the first pass and their idle time
    counts from then: created long ago but never seen leaving the traffic,
    they are kept for --revision-gc-retain-since-active, not deleted at once."""
    d = make_daemon()
    for v in (1, 2, 3):
        d.cli("deploy", "old", "--image", images["hello"], "--env", "V=%d" % v)
    assert d.stop() == 0
    db = sqlite3.connect(os.path.join(d.state_dir, "sluice.db"))
    for name in ("old-00001", "old-00002"):
        (body,) = db.execute("SELECT body FROM objects WHERE kind='revisions' AND name=?",
                             (name,)).fetchone()
        rev = json.loads(body)
        rev["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
        rev["metadata"].get("labels", {}).pop("serving.knative.dev/routingState", None)
        rev["metadata"].get("annotations", {}).pop("serving.knative.dev/routingStateModified",
                                                   None)
        db.execute("UPDATE objects SET body=? WHERE kind='revisions' AND name=?",
                   (json.dumps(rev), name))
    db.commit()
    db.close()
    t0 = time.time()
    d.extra = ["--revision-gc-interval", "1s", "--revision-gc-retain-since-create", "1h",
               "--revision-gc-retain-since-active", "1h", "--revision-gc-min-non-active", "0",
               "--revision-gc-max-non-active", "disabled"]
    d.start()

    def revs():
        return {r["metadata"]["name"]: r["metadata"] for r in d.json("revisions", "old")["items"]}

    deadline = time.time() + 15
    while time.time() < deadline and any(
            "serving.knative.dev/routingState" not in revs()[n].get("labels", {})
            for n in ("old-00001", "old-00002")):
        time.sleep(0.2)
    time.sleep(2.5)  # passes after the stamping delete nothing
    got = revs()
    assert sorted(got) == ["old-00001", "old-00002", "old-00003"]
    for n in ("old-00001", "old-00002"):
        assert got[n]["labels"]["serving.knative.dev/routingState"] == "reserve"
        stamped = calendar.timegm(time.strptime(
            got[n]["annotations"]["serving.knative.dev/routingStateModified"],
            "%Y-%m-%dT%H:%M:%SZ"))
        assert stamped >= int(t0) - 1


def test_yaml_output_keeps_strings_for_yaml11_readers(daemon, images):
    """`-o yaml` quotes what a YAML 1.1 reader (PyYAML, kubectl) would turn
    into another type: timestamps read back as strings, not datetimes."""
    yaml = pytest.importorskip("yaml")
    daemon.cli("deploy", "hello", "--image", images["hello"])

    def not_strings(v, path="", out=None):
        out = [] if out is None else out
        if isinstance(v, dict):
            for k, x in v.items():
                not_strings(x, "%s.%s" % (path, k), out)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                not_strings(x, "%s[%d]" % (path, i), out)
        elif not isinstance(v, (str, int, float, bool, type(None))):
            out.append((path, v))
        return out

    svc = yaml.safe_load(daemon.cli("describe", "hello", "-o", "yaml").stdout)
    assert isinstance(svc["metadata"]["creationTimestamp"], str)
    stamps = [c["lastTransitionTime"] for c in svc["status"]["conditions"]]
    assert stamps and all(isinstance(t, str) and t.endswith("Z") for t in stamps), stamps
    assert not_strings(svc) == []
    for listing in ("services", "revisions"):
        items = yaml.safe_load(daemon.cli(listing, "-o", "yaml").stdout)["items"]
        assert items and not_strings(items) == [], listing


def test_condition_times_are_transition_times(daemon, images):
    """lastTransitionTime is when a condition's status last changed: reads do
    not move it; a change of status (a new revision deploying) does."""
    d = daemon
    d.cli("deploy", "hello", "--image", images["hello"])

    def times(*args):
        obj = d.json(*args)
        return {c["type"]: (c["status"], c["lastTransitionTime"])
                for c in obj["status"]["conditions"]}

    def rev_times():
        return {r["metadata"]["name"]: {c["type"]: c["lastTransitionTime"]
                                        for c in r["status"]["conditions"]}
                for r in d.json("revisions", "hello")["items"]}

    svc1, revs1 = times("describe", "hello"), rev_times()
    assert svc1["Ready"][0] == "True"
    time.sleep(1.2)  # RFC 3339 times have whole seconds
    assert times("describe", "hello") == svc1
    assert d.json("services")["items"][0]["status"]["conditions"] == \
        d.json("describe", "hello")["status"]["conditions"]
    assert rev_times() == revs1
    # Kept in the stored objects across a daemon restart while the status
    # stays.
    assert d.stop() == 0
    d.start()
    deadline = time.time() + 20
    while time.time() < deadline and times("describe", "hello")["Ready"][0] != "True":
        time.sleep(0.05)
    after = times("describe", "hello")
    assert after["RoutesReady"] == svc1["RoutesReady"]
    assert after["Ready"][0] == "True"
    assert rev_times()["hello-00001"]["ResourcesAvailable"] == \
        revs1["hello-00001"]["ResourcesAvailable"]
    # A new revision: Ready goes Unknown and back to True, a later time.
    d.cli("deploy", "hello", "--env", "V=2")
    svc2 = times("describe", "hello")
    assert svc2["Ready"][0] == "True" and svc2["Ready"][1] > svc1["Ready"][1]


def test_failed_revision_answers_at_once_without_app_output(daemon, images):
    """A revision that failed to start answers 502 at once while it retries
    (Cloud Run does not hold requests for it), and the body names the cause
    but not the app's output, which may hold anything; describe has it."""
    d = daemon
    doc = service_manifest("broken", images["busybox"],
                           "echo 'FATAL: DATABASE_URL=postgres://u:s3cret@db' >&2; exit 1")
    r = d.cli("apply", "-f", "-", "--wait", input=doc, check=False)
    assert r.returncode != 0 and "exited with status 1" in r.stderr, r.stderr
    assert "s3cret" in r.stderr  # the owner sees the log line
    for _ in range(3):
        t0 = time.time()
        code, body = d.curl("broken", "/", check=False)
        took = time.time() - t0
        assert code == 502, (code, body)
        assert took < 2, took
        assert "failed to start: exited with status 1" in body, body
        assert "s3cret" not in body and "last log lines" not in body, body
        time.sleep(0.5)
    st = d.json("revisions", "broken")["items"][0]["status"]
    ready = [c for c in st["conditions"] if c["type"] == "Ready"][0]
    assert "s3cret" in ready["message"], ready


def test_crash_loop_backs_off_and_says_so(daemon, images):
    """An app that dies soon after it became ready is restarted with a
    growing wait (1 s doubling), not dozens of times a second, and its
    revision says CrashLoopBackOff with the exit, and counts restarts."""
    d = daemon
    doc = service_manifest("loop", images["busybox"],
                           "mkdir -p /tmp/www; echo hi > /tmp/www/index.html; "
                           "httpd -p \"$PORT\" -h /tmp/www; sleep 0.5; exit 2",
                           template_metadata={"annotations": {
                               "autoscaling.knative.dev/min-scale": "1"}})
    d.cli("apply", "-f", "-", "--wait", input=doc)
    time.sleep(8)
    st = d.json("revisions", "loop")["items"][0]["status"]
    print("restarts in 8 s:", st["containerRestarts"])
    assert 2 <= st["containerRestarts"] <= 10, st
    health = [c for c in st["conditions"] if c["type"] == "ContainerHealthy"][0]
    assert health["status"] == "False" and health["reason"] == "CrashLoopBackOff", health
    assert "exited with status 2" in health["message"], health


def test_progress_deadline_stops_a_revision_that_never_starts(daemon, images):
    """serving.knative.dev/progress-deadline (Knative's, default 600 s): a
    revision not Ready by then stops trying, says so, and answers 502."""
    d = daemon
    doc = service_manifest("never", images["busybox"], "echo no; exit 1", template_metadata={
        "annotations": {"serving.knative.dev/progress-deadline": "3s"}})
    d.cli("apply", "-f", "-", input=doc)
    deadline = time.time() + 20
    ready = {}
    while time.time() < deadline:
        st = d.json("revisions", "never")["items"][0]["status"]
        ready = [c for c in st["conditions"] if c["type"] == "Ready"][0]
        if ready.get("reason") == "ProgressDeadlineExceeded":
            break
        time.sleep(0.2)
    assert ready.get("reason") == "ProgressDeadlineExceeded", ready
    assert "progress deadline of 3s" in ready["message"], ready
    time.sleep(1)
    assert d.json("instances", "never")["items"] == []
    restarts_then = d.daemon_log().count("instance never-00001")
    time.sleep(3)
    assert d.json("instances", "never")["items"] == []
    assert d.daemon_log().count("instance never-00001") == restarts_then  # no more attempts
    code, body = d.curl("never", "/", check=False)
    assert code == 502 and "progress deadline" in body, body
    # a restart does not start the count again
    assert d.stop() == 0
    d.start()
    time.sleep(2)
    assert d.json("instances", "never")["items"] == []
    st = d.json("revisions", "never")["items"][0]["status"]
    ready = [c for c in st["conditions"] if c["type"] == "Ready"][0]
    assert ready.get("reason") == "ProgressDeadlineExceeded", ready
    for bad in ("1.5s", "0s", "soon"):
        doc = service_manifest("bad", images["busybox"], "true", template_metadata={
            "annotations": {"serving.knative.dev/progress-deadline": bad}})
        r = d.cli("apply", "-f", "-", input=doc, check=False)
        assert r.returncode != 0 and "progress-deadline: must be a positive duration" in r.stderr
