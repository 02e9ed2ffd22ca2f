"""Revisions, traffic splitting and tags, as Knative and Cloud Run users
roll out changes."""
import http.client
import json
import time

import pytest

from conftest import service_manifest


def revision_counts(d, host, n):
    """Sends n requests over one keep-alive connection; counts revisions."""
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    counts = {}
    for _ in range(n):
        conn.request("GET", "/", headers={"Host": host})
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 200, body
        rev = body.strip().split("revision=")[1]
        counts[rev] = counts.get(rev, 0) + 1
    conn.close()
    return counts


def test_stage_with_no_traffic_and_tag_then_split(daemon, images):
    d = daemon
    d.cli("deploy", "web", "--image", images["hello"], "--env", "V=1")
    r = d.cli("deploy", "web", "--env", "V=2", "--no-traffic", "--tag", "green")
    assert revision_counts(d, "web.localhost", 50) == {"web-00001": 50}
    assert revision_counts(d, "green-web.localhost", 20) == {"web-00002": 20}
    svc = d.json("describe", "web")
    tagged = [t for t in svc["status"]["traffic"] if t.get("tag") == "green"]
    assert tagged and tagged[0]["url"] == "http://green-web.localhost:%d" % d.port
    assert tagged[0]["revisionName"] == "web-00002"

    d.cli("traffic", "web", "web-00001=50", "web-00002=50")
    counts = revision_counts(d, "web.localhost", 1000)
    print("50/50 split over 1000 requests:", counts)
    assert abs(counts.get("web-00001", 0) - 500) <= 60
    assert abs(counts.get("web-00002", 0) - 500) <= 60
    # the tag still routes only to its revision
    assert revision_counts(d, "green-web.localhost", 20) == {"web-00002": 20}

    d.cli("traffic", "web", "web-00001=10", "web-00002=90")
    counts = revision_counts(d, "web.localhost", 1000)
    print("10/90 split over 1000 requests:", counts)
    assert abs(counts.get("web-00001", 0) - 100) <= 40

    # as Cloud Run's deploy --tag: the tag stays on the revision it was
    # deployed with; a later deploy does not move it
    d.cli("deploy", "web", "--env", "V=3")
    assert revision_counts(d, "green-web.localhost", 10) == {"web-00002": 10}
    d.cli("deploy", "web", "--env", "V=4", "--tag", "blue")
    d.cli("deploy", "web", "--env", "V=5")
    assert revision_counts(d, "blue-web.localhost", 10) == {"web-00004": 10}


def test_revision_delete_refused_while_it_carries_traffic(daemon, images):
    d = daemon
    d.cli("deploy", "web", "--image", images["hello"], "--env", "V=1")
    d.cli("deploy", "web", "--env", "V=2")
    d.cli("traffic", "web", "web-00001=100")
    r = d.cli("revisions", "delete", "web-00001", check=False)
    assert r.returncode != 0 and "receives traffic" in r.stderr
    d.cli("traffic", "web", "--latest=100")
    assert revision_counts(d, "web.localhost", 10) == {"web-00002": 10}
    d.cli("revisions", "delete", "web-00001")
    names = [x["metadata"]["name"] for x in d.json("revisions", "web")["items"]]
    assert names == ["web-00002"]
    r = d.cli("revisions", "delete", "web-00002", check=False)
    assert r.returncode != 0 and "latest" in r.stderr


def test_invalid_traffic_is_rejected_and_changes_nothing(daemon, images):
    d = daemon
    d.cli("deploy", "web", "--image", images["hello"])
    before = d.json("describe", "web")["spec"]
    for args, needle in [
        (["web-00001=60"], "add up to 100"),
        (["web-00009=100"], "does not exist"),
        (["web-00001=abc"], "PCT"),
    ]:
        r = d.cli("traffic", "web", *args, check=False)
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)
    assert d.json("describe", "web")["spec"] == before
    assert revision_counts(d, "web.localhost", 5) == {"web-00001": 5}


def test_a_host_belongs_to_one_service(daemon, images):
    """A tag's host TAG-NAME may be another service's host: whichever set
    its routes last would take it. Both ways round it is refused (409),
    and the host keeps routing where it did."""
    d = daemon
    d.cli("deploy", "b-a", "--image", images["hello"], "--env", "V=1")
    d.cli("deploy", "a", "--image", images["hello"], "--env", "V=1")
    r = d.cli("deploy", "a", "--env", "V=2", "--tag", "b", check=False)
    assert r.returncode != 0 and "host b-a.localhost is already served by service default/b-a" \
        in r.stderr, r.stderr
    assert revision_counts(d, "b-a.localhost", 5) == {"b-a-00001": 5}
    assert len(d.json("revisions")["items"]) == 2  # nothing was created for "a"
    d.cli("deploy", "c", "--image", images["hello"], "--env", "V=1", "--tag", "d")
    r = d.cli("deploy", "d-c", "--image", images["hello"], check=False)
    assert r.returncode != 0 and "host d-c.localhost is already served by service default/c" \
        in r.stderr, r.stderr
    assert revision_counts(d, "d-c.localhost", 5) == {"c-00001": 5}


MANIFEST = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: kn
spec:
  template:
    metadata:
      name: kn-blue
    spec:
      containers:
        - image: {image}
          env:
            - name: COLOR
              value: blue
  traffic:
    - revisionName: kn-blue
      percent: 100
      tag: blue
"""


def test_knative_manifest_with_named_revision_and_tag(daemon, images):
    d = daemon
    d.cli("apply", "-f", "-", "--wait", input=MANIFEST.format(image=images["hello"]))
    assert revision_counts(d, "kn.localhost", 5) == {"kn-blue": 5}
    assert revision_counts(d, "blue-kn.localhost", 5) == {"kn-blue": 5}
    # same name, different template → refused
    changed = MANIFEST.format(image=images["hello"]).replace("value: blue", "value: red")
    r = d.cli("apply", "-f", "-", input=changed, check=False)
    assert r.returncode != 0 and "kn-blue" in r.stderr


def test_failing_new_revision_keeps_old_one_serving(daemon, images):
    d = daemon
    d.cli("deploy", "web", "--image", images["busybox"])
    code, _ = d.curl("web", "/")
    assert code == 200
    bad = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
           "metadata": {"name": "web"},
           "spec": {"template": {"spec": {"containers": [
               {"image": images["busybox"], "command": ["/bin/sh", "-c", "echo boom; exit 1"]}]}}}}
    r = d.cli("apply", "-f", "-", "--wait", input=json.dumps(bad), check=False)
    assert r.returncode != 0 and "boom" in r.stderr
    assert "Revision web-00001 keeps serving the traffic it had." in r.stderr, r.stderr
    for _ in range(5):
        code, _ = d.curl("web", "/")
        assert code == 200
    svc = d.json("describe", "web")
    assert svc["status"]["latestReadyRevisionName"] == "web-00001"
    assert svc["status"]["latestCreatedRevisionName"] == "web-00002"
    ready = [c for c in svc["status"]["conditions"] if c["type"] == "ConfigurationsReady"][0]
    assert ready["status"] == "False" and "boom" in ready["message"]


def rollout_service(images, duration):
    """Service "web" (hello, V=1) with serving.knative.dev/rollout-duration."""
    return service_manifest("web", images["hello"], env=[{"name": "V", "value": "1"}],
                            metadata={"annotations": {
                                "serving.knative.dev/rollout-duration": duration}})


def conditions(svc):
    return {c["type"]: c for c in svc["status"]["conditions"]}


def test_gradual_rollout(daemon, images):
    """serving.knative.dev/rollout-duration: the new revision takes 1 % at
    once, then the rest in equal steps over the duration, while the service
    says RolloutInProgress; then the old revision is retired."""
    d = daemon
    d.cli("apply", "-f", "-", "--wait", input=rollout_service(images, "10s"))
    assert conditions(d.json("describe", "web"))["Ready"]["status"] == "True"

    d.cli("deploy", "web", "--env", "V=2")
    t0 = time.time()
    svc = d.json("describe", "web")
    ready = conditions(svc)["Ready"]
    assert ready["status"] == "Unknown" and ready["reason"] == "RolloutInProgress", ready
    split = {t["revisionName"]: t["percent"] for t in svc["status"]["traffic"]}
    assert sum(split.values()) == 100 and set(split) == {"web-00001", "web-00002"}, split
    assert split["web-00002"] <= 12, split  # 1 %, or one 11 % step later
    early = revision_counts(d, "web.localhost", 50)
    assert early.get("web-00001", 0) >= 35, early

    time.sleep(max(0, t0 + 5.5 - time.time()))
    middle = revision_counts(d, "web.localhost", 100)
    print("5.5 s into a 10 s rollout:", middle)
    assert middle.get("web-00001", 0) >= 10 and middle.get("web-00002", 0) >= 10, middle

    deadline = t0 + 30
    while conditions(svc)["Ready"]["status"] != "True" and time.time() < deadline:
        time.sleep(0.2)
        svc = d.json("describe", "web")
    took = time.time() - t0
    assert conditions(svc)["Ready"]["status"] == "True", svc["status"]
    assert 8 <= took <= 15, took
    assert [(t["revisionName"], t["percent"]) for t in svc["status"]["traffic"]] == \
        [("web-00002", 100)]
    assert revision_counts(d, "web.localhost", 30) == {"web-00002": 30}
    # the old revision no longer serves, and can be deleted
    d.cli("revisions", "delete", "web-00001")


def test_rollout_duration_is_validated(daemon, images):
    d = daemon
    for value, why in (("1.5s", "not at second precision"), ("-10s", "must be a duration"),
                       ("soon", "must be a duration")):
        r = d.cli("apply", "-f", "-", input=rollout_service(images, value), check=False)
        assert r.returncode != 0, value
        assert "metadata.annotations.serving.knative.dev/rollout-duration" in r.stderr, r.stderr
        assert why in r.stderr, r.stderr
    both = json.loads(rollout_service(images, "5s"))
    both["metadata"]["annotations"]["serving.knative.dev/rolloutDuration"] = "5s"
    r = d.cli("apply", "-f", "-", input=json.dumps(both), check=False)
    assert r.returncode != 0 and "not both" in r.stderr, r.stderr
    assert d.json("services")["items"] == []


def test_gradual_rollout_of_part_of_the_traffic(daemon, images):
    """With half the traffic pinned, the rollout moves only the latest
    revision's half, in percent of all traffic: 1 % at first, as Knative."""
    d = daemon
    d.cli("apply", "-f", "-", "--wait", input=rollout_service(images, "4s"))
    d.cli("traffic", "web", "web-00001=50", "--latest=50")
    d.cli("deploy", "web", "--env", "V=2")
    t0 = time.time()
    svc = d.json("describe", "web")
    entries = [(t["revisionName"], t["percent"], t["latestRevision"])
               for t in svc["status"]["traffic"]]
    assert sum(p for _, p, _ in entries) == 100, entries
    assert ("web-00001", 50, False) in entries, entries
    assert ("web-00002", 1, True) in entries or time.time() - t0 > 1.5, entries
    deadline = t0 + 20
    while conditions(svc)["Ready"]["status"] != "True" and time.time() < deadline:
        time.sleep(0.2)
        svc = d.json("describe", "web")
    entries = sorted((t["revisionName"], t["percent"], t["latestRevision"])
                     for t in svc["status"]["traffic"])
    assert entries == [("web-00001", 50, False), ("web-00002", 50, True)], entries
    counts = revision_counts(d, "web.localhost", 400)
    assert abs(counts.get("web-00002", 0) - 200) <= 50, counts


def test_gradual_rollout_survives_a_restart(daemon, images):
    """The rollout's state is in status.rollout: a daemon restart resumes it
    where it was instead of sending all the traffic to the new revision."""
    d = daemon
    d.cli("apply", "-f", "-", "--wait", input=rollout_service(images, "20s"))
    d.cli("deploy", "web", "--env", "V=2")
    time.sleep(3)
    before = d.json("describe", "web")["status"]["rollout"]
    assert [r["revisionName"] for r in before["revisions"]] == ["web-00001", "web-00002"]
    assert d.stop() == 0
    d.start()
    svc = d.json("describe", "web")
    deadline = time.time() + 15  # the instances start again
    while conditions(svc)["ConfigurationsReady"]["status"] != "True" and time.time() < deadline:
        time.sleep(0.1)
        svc = d.json("describe", "web")
    ready = conditions(svc)["Ready"]
    assert ready["status"] == "Unknown" and ready["reason"] == "RolloutInProgress", ready
    split = {t["revisionName"]: t["percent"] for t in svc["status"]["traffic"]}
    assert 1 <= split["web-00002"] <= 60 and sum(split.values()) == 100, split
    counts = revision_counts(d, "web.localhost", 100)
    assert counts.get("web-00001", 0) >= 20, counts
    deadline = time.time() + 40
    while conditions(svc)["Ready"]["status"] != "True" and time.time() < deadline:
        time.sleep(0.3)
        svc = d.json("describe", "web")
    assert [(t["revisionName"], t["percent"]) for t in svc["status"]["traffic"]] == \
        [("web-00002", 100)], svc["status"]
    assert "rollout" not in svc["status"]


def affinity_service(image, affinity):
    """Two instances that answer with their own name (an instance's hostname
    is its id)."""
    ann = {"autoscaling.knative.dev/min-scale": "2"}
    if affinity is not None:
        ann["run.googleapis.com/sessionAffinity"] = affinity
    return service_manifest(
        "sticky", image, 'mkdir -p /tmp/w; hostname > /tmp/w/id; exec httpd -f -p "$PORT" -h /tmp/w',
        template_metadata={"annotations": ann})


def ask(port, cookie=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Host": "sticky.localhost"}
    if cookie:
        headers["Cookie"] = cookie
    conn.request("GET", "/id", headers=headers)
    r = conn.getresponse()
    body = r.read().decode().strip()
    conn.close()
    return body, r.getheader("Set-Cookie")


def test_session_affinity(daemon, images):
    """run.googleapis.com/sessionAffinity: a client's requests stay on one
    instance through a cookie, as on Cloud Run; without it, or with a cookie
    naming an instance that is gone, requests spread and a new cookie comes."""
    d = daemon
    d.cli("apply", "-f", "-", "--wait", input=affinity_service(images["busybox"], "true"))
    deadline = time.time() + 30
    while time.time() < deadline and len(d.json("instances", "sticky")["items"]) < 2:
        time.sleep(0.2)
    ids = {i["name"] for i in d.json("instances", "sticky")["items"]}
    assert len(ids) == 2
    first, set_cookie = ask(d.port)
    assert first in ids and set_cookie, set_cookie
    assert set_cookie == "sluice-affinity=%s; Path=/; Max-Age=2592000; HttpOnly" % first
    cookie = set_cookie.split(";")[0]
    for _ in range(30):
        body, again = ask(d.port, "theme=dark; " + cookie)
        assert body == first and again is None  # no new cookie while it holds
    # a cookie for an instance that is not there: served anyway, and re-pinned
    body, renewed = ask(d.port, "sluice-affinity=sticky-00001-gone0")
    assert body in ids and renewed.startswith("sluice-affinity=%s;" % body)
    # without the cookie the router balances as usual
    seen = {ask(d.port)[0] for _ in range(40)}
    assert seen == ids
    # without the annotation no cookie is set
    d.cli("apply", "-f", "-", "--wait", input=affinity_service(images["busybox"], None))
    assert ask(d.port)[1] is None
    r = d.cli("apply", "-f", "-", input=affinity_service(images["busybox"], "yes"), check=False)
    assert r.returncode != 0 and 'sessionAffinity: must be "true" or "false"' in r.stderr
