"""Knative's documented manifests apply unchanged (only the image is local),
blue/green traffic moves lose nothing, and every traffic constraint is
enforced with a message naming it."""
import os
import subprocess
import threading
import time

import pytest

from conftest import ROOT
from test_traffic import revision_counts

EX = os.path.join(ROOT, "examples", "knative")


@pytest.fixture(scope="module", autouse=True)
def local_image():
    subprocess.run(["sh", os.path.join(ROOT, "examples/hello/build-image.sh"),
                    os.path.join(ROOT, "build/hello-image")], check=True,
                   stdout=subprocess.DEVNULL)


def apply(d, name, check=True):
    return d.cli("apply", "-f", os.path.join(EX, name), "--wait", check=check)


def test_hello_split_and_tags(daemon):
    d = daemon
    apply(d, "hello.yaml")
    assert revision_counts(d, "hello.localhost", 5) == {"hello-00001": 5}
    apply(d, "hello-v2.yaml")
    counts = revision_counts(d, "hello.localhost", 1000)
    print("hello-v2.yaml 50/50 over 1000:", counts)
    assert abs(counts["hello-00001"] - 500) <= 50
    assert abs(counts["hello-knative"] - 500) <= 50
    apply(d, "tags.yaml")
    assert revision_counts(d, "hello.localhost", 20) == {"hello-00001": 20}
    assert revision_counts(d, "candidate-hello.localhost", 5) == {"hello-knative": 5}
    assert revision_counts(d, "latest-hello.localhost", 5) == {"hello-knative": 5}
    assert revision_counts(d, "current-hello.localhost", 5) == {"hello-00001": 5}
    # only traffic changed: no new revision
    names = sorted(r["metadata"]["name"] for r in d.json("revisions", "hello")["items"])
    assert names == ["hello-00001", "hello-knative"]


def test_blue_green_moves_lose_nothing(daemon):
    d = daemon
    apply(d, "hello.yaml")
    apply(d, "hello-v2.yaml")
    d.cli("traffic", "hello", "hello-00001=100", "--tag", "hello-00001=blue",
          "--tag", "hello-knative=green")
    assert revision_counts(d, "blue-hello.localhost", 10) == {"hello-00001": 10}
    assert revision_counts(d, "green-hello.localhost", 10) == {"hello-knative": 10}
    stop = threading.Event()
    seen = {"ok": 0, "bad": []}

    def prober():
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
        while not stop.is_set():
            try:
                conn.request("GET", "/", headers={"Host": "hello.localhost"})
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    seen["ok"] += 1
                else:
                    seen["bad"].append(r.status)
            except Exception as e:  # a lost request
                seen["bad"].append(repr(e))
                conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)

    t = threading.Thread(target=prober)
    t.start()
    try:
        for split in (("hello-00001=0", "hello-knative=100"),
                      ("hello-00001=100", "hello-knative=0"),
                      ("hello-00001=0", "hello-knative=100")):
            d.cli("traffic", "hello", *split)
            time.sleep(0.7)
    finally:
        stop.set()
        t.join()
    print("prober: %d ok, lost %s" % (seen["ok"], seen["bad"]))
    assert seen["bad"] == []
    assert seen["ok"] > 50
    assert revision_counts(d, "hello.localhost", 20) == {"hello-knative": 20}


def test_autoscale_sample_annotations(daemon):
    d = daemon
    apply(d, "autoscale.yaml")
    code, body = d.curl("autoscale-go", "/")
    assert code == 200
    rev = d.json("revisions", "autoscale-go")["items"][0]
    ann = rev["metadata"]["annotations"]
    assert ann["autoscaling.knative.dev/target"] == "10"
    assert len(d.json("instances", "autoscale-go")["items"]) >= 1


BASE = """apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - image: oci:build/hello-image/oci:latest
  traffic:
%s"""


@pytest.mark.parametrize("traffic,needle", [
    ("    - latestRevision: true\n      revisionName: hello-00001\n      percent: 100\n",
     "may not be set when latestRevision is true"),
    ("    - latestRevision: true\n      percent: 90\n", "add up to 100, got 90"),
    ("    - latestRevision: true\n      percent: 150\n", "percent: must be 0..100"),
    ("    - revisionName: hello-00009\n      percent: 100\n", "does not exist"),
    ("    - latestRevision: true\n      percent: 100\n      tag: Not_OK\n", "DNS-1035"),
    ("    - latestRevision: true\n      percent: 100\n      tag: 2024-canary\n", "DNS-1035"),
    ("    - latestRevision: true\n      percent: 100\n      url: http://x.example\n",
     "is set by the server"),
    ("    - latestRevision: true\n      percent: 50\n      tag: a\n"
     "    - revisionName: hello-00001\n      percent: 50\n      tag: a\n", "used twice"),
    ("    - latestRevision: true\n      percent: 100\n      tag: %s\n" % ("t" * 60),
     "longer than 63"),
    ("    - latestRevision: false\n      percent: 100\n", "needs a revisionName"),
])
def test_bad_traffic_is_refused_and_changes_nothing(daemon, traffic, needle):
    d = daemon
    apply(d, "hello.yaml")
    before = d.json("describe", "hello")
    r = d.cli("apply", "-f", "-", input=BASE % traffic, check=False)
    assert r.returncode != 0 and needle in r.stderr, r.stderr
    after = d.json("describe", "hello")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert revision_counts(d, "hello.localhost", 3) == {"hello-00001": 3}


def test_secrets_and_configmaps_example(daemon):
    """A Service with its Secret and ConfigMap in one file applies as is."""
    d = daemon
    r = apply(d, "secrets.yaml")
    assert "secret/api-credentials created" in r.stderr, r.stderr
    code, body = d.curl("configured", "/")
    assert code == 200 and "Hello from sluice" in body, body
    # what the app sees, from a debug container in its namespaces
    r = d.cli("debug", "configured", "--", "sh", "-c",
              "tr '\\0' '\\n' < /proc/1/environ; cat /proc/1/root/var/secrets/api/token")
    lines = r.stdout.splitlines()
    assert "TARGET=Secrets" in lines and "API_TOKEN=change-me" in lines, r.stdout
    assert "GREETING_style=plain" in lines and "change-me" in lines, r.stdout
