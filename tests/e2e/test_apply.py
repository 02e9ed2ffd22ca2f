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


def names(d, path):
    code, body = api(d, "GET", path)
    assert code == 200, body
    return sorted("%s/%s" % (o["metadata"].get("namespace", ""), o["metadata"]["name"])
                  for o in body["items"])


def stored(d):
    """What the daemon holds in every namespace: services, revisions,
    instances, runtime classes, Secrets and ConfigMaps."""
    return (names(d, "/apis/serving.knative.dev/v1/services"),
            names(d, "/apis/serving.knative.dev/v1/revisions"),
            len(d.json("instances")["items"]),
            names(d, "/apis/node.k8s.io/v1/runtimeclasses"),
            names(d, "/api/v1/secrets"), names(d, "/api/v1/configmaps"))


def apply(d, *args, input=None):
    return d.cli("apply", *args, input=input, check=False)


def docs(*objs):
    return "".join("---\n" + json.dumps(o) + "\n" for o in objs)


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
    assert code == 201 and obj["metadata"]["name"] == "slim" and obj["handler"] == "crun", obj
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
    # A bare ?dryRun is not a real write either.
    code, st = api(d, "PUT", SVC + "alpha?dryRun", service("alpha", images["hello"]))
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


def test_dry_run_delete_is_refused_not_done(daemon, images):
    """A delete asked to be a dry run (kubectl delete --dry-run=server) is
    refused; nothing is deleted."""
    d = daemon
    d.cli("deploy", "alpha", "--image", images["hello"])
    before = stored(d)
    for path in (SVC + "alpha?dryRun=All", SVC + "alpha?dryRun",
                 "/apis/serving.knative.dev/v1/namespaces/default/revisions/alpha-00001"
                 "?dryRun=All", RTC + "sandboxed?dryRun=All"):
        code, st = api(d, "DELETE", path)
        assert code == 400 and "nothing was deleted" in st["message"], (path, st)
    # Nor is an image import a dry run: refused, nothing imported.
    images_before = api(d, "GET", "/apis/sluice.dev/v1/images")[1]["items"]
    code, st = api(d, "POST", "/apis/sluice.dev/v1/images?dryRun=All", {"ref": images["busybox"]})
    assert code == 400 and "nothing was imported" in st["message"], st
    assert api(d, "GET", "/apis/sluice.dev/v1/images")[1]["items"] == images_before
    assert stored(d) == before


def test_traffic_to_a_revision_made_earlier_in_the_apply(daemon, images):
    """Traffic may name a revision an earlier document of the same service
    creates; a name nothing creates still fails the apply before anything
    is stored."""
    d = daemon
    first = service("a", images["hello"])
    first["spec"]["template"]["metadata"] = {"name": "a-v2"}
    second = service("a", images["hello"])
    second["spec"]["template"]["metadata"] = {"name": "a-v2"}
    second["spec"]["traffic"] = [{"revisionName": "a-v2", "percent": 50},
                                 {"revisionName": "a-v9", "percent": 50}]
    before = stored(d)
    r = apply(d, "-f", "-", input=docs(first, second))
    assert r.returncode != 0 and "a-v9" in r.stderr and "document 2" in r.stderr, r.stderr
    assert stored(d) == before
    second["spec"]["traffic"] = [{"revisionName": "a-v2", "percent": 100}]
    r = apply(d, "-f", "-", input=docs(first, second))
    assert r.returncode == 0, r.stderr


def test_a_bad_document_applies_nothing(daemon, images):
    """A manifest is checked whole before anything is stored; each error
    names its document, by number, kind and name."""
    d = daemon
    before = stored(d)
    bad = service("beta", images["hello"])
    bad["spec"]["template"]["spec"]["containerConcurrency"] = 5000
    three = [service("alpha", images["hello"]), bad, service("gamma", images["hello"])]
    r = apply(d, "-f", "-", input=docs(*three))
    assert r.returncode == 1
    assert "document 2 (Service beta): spec.template.spec.containerConcurrency: must be " \
        "0..1000, got 5000" in r.stderr, r.stderr
    assert "nothing was applied" in r.stderr
    assert stored(d) == before

    # What only the daemon can check (the image's file): the same, and every
    # failing document is named.
    three[1] = service("beta", "oci:/nonexistent/beta")
    three[2] = service("Gamma", images["hello"])
    r = apply(d, "-f", "-", input=docs(*three))
    assert r.returncode == 1
    assert "document 2 (Service beta): spec.template.spec.containers[0].image: " \
        "oci:/nonexistent/beta: cannot access /nonexistent/beta" in r.stderr, r.stderr
    assert "document 3 (Service Gamma): metadata.name" in r.stderr, r.stderr
    assert stored(d) == before

    three[1] = service("beta", images["hello"])
    three[2] = service("gamma", images["hello"])
    r = apply(d, "-f", "-", input=docs(*three))
    assert r.returncode == 0, r.stderr
    assert names(d, "/apis/serving.knative.dev/v1/services") == \
        ["default/alpha", "default/beta", "default/gamma"]


def test_unsupported_kind_applies_nothing(daemon, images):
    d = daemon
    before = stored(d)
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
          "data": {"k": "v"}}
    r = apply(d, "-f", "-", input=docs(cm, service("alpha", images["hello"]), dep))
    assert r.returncode == 1
    assert "document 3 (Deployment web): kind: Deployment is not supported; sluice applies " \
        "Service (serving.knative.dev/v1), Secret and ConfigMap (v1) and RuntimeClass " \
        "(node.k8s.io/v1)" in r.stderr, r.stderr
    assert d.json("configmaps")["items"] == []
    r = apply(d, "-f", "-", input=docs({"metadata": {"name": "x"}}))
    assert r.returncode == 1 and "document 1: kind: is required" in r.stderr, r.stderr
    r = apply(d, "-f", "-", input=docs(service("alpha", images["hello"]), ["a", "list"]))
    assert r.returncode == 1
    assert "document 2: must be an object (a mapping), got a list" in r.stderr, r.stderr
    assert stored(d) == before


def test_runtime_classes_are_checked_first_too(daemon, images):
    d = daemon
    before = stored(d)
    bad = dict(RUNTIME_CLASS, metadata={"name": "worse"}, handler="Not_A_Label")
    r = apply(d, "-f", "-", input=docs(RUNTIME_CLASS, bad))
    assert r.returncode == 1
    assert "document 2 (RuntimeClass worse): handler: must be a DNS-1123 label" in r.stderr, \
        r.stderr
    assert stored(d) == before
    # A service may use a class defined before it in the same apply.
    svc = service("alpha", images["hello"])
    svc["spec"]["template"]["spec"]["runtimeClassName"] = "slim"
    r = apply(d, "-f", "-", "--wait", input=docs(RUNTIME_CLASS, svc))
    assert r.returncode == 0, r.stderr
    assert "/slim" not in before[3] and "/slim" in names(d, RTC[:-1])
    assert d.json("describe", "alpha")["status"]["latestReadyRevisionName"] == "alpha-00001"


def test_list_documents(daemon, images):
    """kind: List and ServiceList stand for their items, each counted as a
    document; `sluice services -o yaml` applies back unchanged."""
    d = daemon
    before = stored(d)
    lst = {"apiVersion": "v1", "kind": "List",
           "items": [service("alpha", images["hello"]), service("beta", "oci:/nonexistent/b")]}
    r = apply(d, "-f", "-", input=docs(lst, service("gamma", images["hello"])))
    assert r.returncode == 1
    assert "document 2 (Service beta): spec.template.spec.containers[0].image" in r.stderr, \
        r.stderr
    assert "metadata.name: is required" not in r.stderr
    assert stored(d) == before
    r = apply(d, "-f", "-", input=docs(dict(lst, items=lst["items"][:1]),
                                       service("Gamma", images["hello"])))
    assert r.returncode == 1 and "document 2 (Service Gamma)" in r.stderr, r.stderr
    assert stored(d) == before
    r = apply(d, "-f", "-", input=docs(dict(lst, items="nope")))
    assert r.returncode == 1 and "document 1 (List): items: must be a list" in r.stderr, r.stderr

    lst["items"][1] = service("beta", images["hello"])
    r = apply(d, "-f", "-", "--wait", input=docs(lst, service("gamma", images["hello"])))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count(" created") == 3, r.stderr  # kubectl's words: new ones are created
    listed = stored(d)
    assert listed[0] == ["default/alpha", "default/beta", "default/gamma"]
    out = d.cli("services", "-o", "yaml").stdout
    assert "kind: ServiceList" in out
    r = apply(d, "-f", "-", input=out)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("configured") == 3
    assert stored(d) == listed  # the same templates: no new revisions


def test_several_files_apply_in_order_as_one(daemon, images, tmp_path):
    d = daemon
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(docs(service("alpha", images["hello"])))
    b.write_text(docs(service("beta", images["hello"]), service("gamma", "oci:/nonexistent/g")))
    before = stored(d)
    r = apply(d, "-f", str(a), "-f", str(b))
    assert r.returncode == 1
    assert "%s: document 2 (Service gamma): spec.template.spec.containers[0].image" % b \
        in r.stderr, r.stderr
    assert stored(d) == before
    b.write_text(docs(service("beta", images["hello"])))
    r = apply(d, "-f", str(a), "--filename", str(b))
    assert r.returncode == 0, r.stderr
    assert names(d, "/apis/serving.knative.dev/v1/services") == ["default/alpha", "default/beta"]

    # The same service twice: the second may name the revision the first
    # creates (Knative's hello.yaml then hello-v2.yaml).
    v2 = service("alpha", images["hello"])
    v2["spec"]["template"]["metadata"] = {"name": "alpha-v2"}
    v2["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "V", "value": "2"}]
    v2["spec"]["traffic"] = [{"revisionName": "alpha-v1", "percent": 50},
                             {"latestRevision": True, "percent": 50}]
    v1 = service("alpha", images["hello"])
    v1["spec"]["template"]["metadata"] = {"name": "alpha-v1"}
    a.write_text(docs(v1))
    b.write_text(docs(v2))
    r = apply(d, "-f", str(a), "-f", str(b), "--wait")
    assert r.returncode == 0, r.stderr
    svc = d.json("describe", "alpha")
    assert sorted((t["revisionName"], t["percent"]) for t in svc["status"]["traffic"]) == \
        [("alpha-v1", 50), ("alpha-v2", 50)]
    # ... and what is wrong in it is still caught before anything is applied.
    v2["spec"]["traffic"][0]["percent"] = 60
    b.write_text(docs(v2))
    before = stored(d)
    r = apply(d, "-f", str(a), "-f", str(b))
    assert r.returncode == 1 and "%s: document 1 (Service alpha): spec.traffic: percents " \
        "must add up to 100, got 110" % b in r.stderr, r.stderr
    assert stored(d) == before


@pytest.mark.parametrize("text", ["", "\n", "---\n", "# nothing\n---\n---\n",
                                  '{"apiVersion": "v1", "kind": "List", "items": []}'])
def test_no_objects_is_an_error(daemon, text):
    r = apply(daemon, "-f", "-", input=text)
    assert r.returncode == 1 and "no objects passed to apply" in r.stderr, r.stderr


def test_namespace_flag_must_match_the_manifest(daemon, images):
    """As kubectl: an explicit -n that differs from metadata.namespace is
    refused; without -n the manifest's namespace is used."""
    d = daemon
    before = stored(d)
    text = docs(service("alpha", images["hello"], namespace="team-a"),
                service("beta", images["hello"]))
    r = apply(d, "-n", "other", "-f", "-", input=text)
    assert r.returncode == 1
    assert ('document 1 (Service alpha): the namespace from the provided object "team-a" does '
            'not match the namespace "other". You must pass \'--namespace=team-a\' to perform '
            'this operation.') in r.stderr, r.stderr
    assert stored(d) == before
    r = apply(d, "--namespace", "team-a", "-f", "-", input=text)
    assert r.returncode == 0, r.stderr
    assert names(d, "/apis/serving.knative.dev/v1/services") == ["team-a/alpha", "team-a/beta"]
    r = apply(d, "-f", "-", input=docs(service("alpha", images["hello"], namespace="team-a"),
                                       service("gamma", images["hello"])))
    assert r.returncode == 0, r.stderr
    assert names(d, "/apis/serving.knative.dev/v1/services") == \
        ["default/gamma", "team-a/alpha", "team-a/beta"]


def test_long_lists_are_whole_and_in_order(daemon, images):
    """A list is rendered a slice per turn of the daemon's loop: it still
    holds every object once, in order, with live status; a client that goes
    away before its list is done costs nothing but the work."""
    import socket
    d = daemon
    n = 120
    objs = [service("s%03d" % i, images["hello"]) for i in range(n)]
    objs.append(service("other", images["hello"], namespace="team"))
    r = apply(d, "-f", "-", input=docs(*objs))
    assert r.returncode == 0, r.stderr
    code, body = api(d, "GET", "/apis/serving.knative.dev/v1/namespaces/default/services")
    assert code == 200 and body["kind"] == "ServiceList", body
    assert [o["metadata"]["name"] for o in body["items"]] == ["s%03d" % i for i in range(n)]
    assert all(o["status"].get("conditions") for o in body["items"]), body["items"][0]
    assert names(d, "/apis/serving.knative.dev/v1/services")[:1] == ["default/s000"]
    assert "team/other" in names(d, "/apis/serving.knative.dev/v1/services")
    code, body = api(d, "GET", "/apis/serving.knative.dev/v1/namespaces/default/revisions")
    assert code == 200 and body["kind"] == "RevisionList", body
    assert [o["metadata"]["name"] for o in body["items"]] == \
        ["s%03d-00001" % i for i in range(n)]
    assert all("trafficPercent" in o["status"] for o in body["items"]), body["items"][0]
    code, body = api(d, "GET", "/apis/serving.knative.dev/v1/namespaces/default/revisions"
                     "?labelSelector=serving.knative.dev/service=s077")
    assert [o["metadata"]["name"] for o in body["items"]] == ["s077-00001"]
    assert body["items"][0]["status"]["trafficPercent"] == 100, body
    code, body = api(d, "GET", "/apis/serving.knative.dev/v1/namespaces/nobody/services")
    assert code == 200 and body["items"] == [], body
    # Clients that ask and leave at once, some in the middle of their answer.
    sock = os.path.join(d.state_dir, "sluice.sock")
    for i in range(20):
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        s.sendall(b"GET /apis/serving.knative.dev/v1/revisions HTTP/1.1\r\nHost: x\r\n\r\n")
        if i % 2:
            s.recv(1000)
        s.close()
    d.cli("delete", "s000")
    code, body = api(d, "GET", "/apis/serving.knative.dev/v1/namespaces/default/services")
    assert code == 200 and len(body["items"]) == n - 1, body
