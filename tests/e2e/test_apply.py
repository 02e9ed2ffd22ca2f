"""`sluice apply` and the API's dry run: a manifest is applied whole or not
at all (for what can be checked before anything is stored), every error
names the document, and kubectl's conventions hold (several -f, List
documents, namespaces)."""
import json
import os
import subprocess

import pytest


def api(d, method, path, body=None):
    """One request to the daemon's API socket: (status code, JSON body)."""
    sock = os.path.join(d.state_dir, "sluice.sock")
    args = ["curl", "-sS", "--unix-socket", sock, "-X", method, "-w", "\n%{http_code}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    r = subprocess.run(args + ["http://x" + path], capture_output=True, text=True, check=True)
    text, _, code = r.stdout.rpartition("\n")
    return int(code), json.loads(text) if text else None


def service(name, image, **meta):
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": dict(name=name, **meta),
            "spec": {"template": {"spec": {"containers": [{"image": image}]}}}}


RUNTIME_CLASS = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                 "metadata": {"name": "slim"}, "handler": "crun"}

SVC = "/apis/serving.knative.dev/v1/namespaces/default/services/"
RTC = "/apis/node.k8s.io/v1/runtimeclasses/"


def stored(d):
    """What the daemon holds: services, revisions, instances, runtime classes."""
    return ([s["metadata"]["name"] for s in d.json("services")["items"]],
            [r["metadata"]["name"] for r in d.json("revisions")["items"]],
            len(d.json("instances")["items"]),
            sorted(c["metadata"]["name"] for c in d.json("runtimeclasses")["items"]))


def test_dry_run_validates_and_stores_nothing(daemon, images):
    d = daemon
    before = stored(d)
    code, obj = api(d, "PUT", SVC + "alpha?dryRun=All", service("alpha", images["hello"]))
    assert code == 201, obj
    assert obj["metadata"]["name"] == "alpha" and obj["metadata"]["generation"] == 1
    assert obj["spec"]["template"]["spec"]["containerConcurrency"] == 80  # defaults filled
    code, obj = api(d, "POST", "/apis/serving.knative.dev/v1/namespaces/default/services"
                    "?dryRun=All", service("alpha", images["hello"]))
    assert code == 201, obj
    code, obj = api(d, "PUT", RTC + "slim?dryRun=All", RUNTIME_CLASS)
    assert code == 200 and obj["metadata"]["name"] == "slim" and obj["handler"] == "crun", obj
    assert stored(d) == before

    # The errors of a real apply, the image's file included (not imported).
    code, st = api(d, "PUT", SVC + "alpha?dryRun=All", service("alpha", "oci:/nonexistent/x"))
    assert code == 400 and "/nonexistent/x" in st["message"], st
    assert "spec.template.spec.containers[0].image" in st["message"], st
    bad = service("alpha", images["hello"])
    bad["spec"]["template"]["spec"]["containerConcurrency"] = 5000
    code, st = api(d, "PUT", SVC + "alpha?dryRun=All", bad)
    assert code == 400 and "containerConcurrency: must be 0..1000" in st["message"], st
    code, st = api(d, "PUT", RTC + "slim?dryRun=All", dict(RUNTIME_CLASS, handler="Bad_Handler"))
    assert code == 400 and "handler" in st["message"], st
    code, st = api(d, "PUT", SVC + "alpha?dryRun=Yes", service("alpha", images["hello"]))
    assert code == 400 and "dryRun" in st["message"], st
    assert stored(d) == before


def test_dry_run_of_an_update(daemon, images):
    d = daemon
    d.cli("deploy", "alpha", "--image", images["hello"])
    before = stored(d)
    svc = d.json("describe", "alpha")
    gen = svc["metadata"]["generation"]
    changed = service("alpha", images["hello"])
    changed["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "V", "value": "2"}]
    code, obj = api(d, "PUT", SVC + "alpha?dryRun=All", changed)
    assert code == 200, obj
    assert obj["metadata"]["generation"] == gen + 1
    assert obj["metadata"]["uid"] == svc["metadata"]["uid"]
    assert stored(d) == before
    assert d.json("describe", "alpha")["metadata"]["generation"] == gen
    code, body = d.curl("alpha", "/env")
    assert code == 200 and "V=2" not in body.splitlines()
