"""Optimistic concurrency as the Kubernetes API has it: a replace (PUT) that
carries metadata.resourceVersion lands only on that version of the object,
and the CLI's read-modify-write commands redo their change when the object
moved under them, so no concurrent change is lost."""
import concurrent.futures
import copy

from test_apply import RTC, SVC, api, service

CM = "/api/v1/namespaces/default/configmaps/"


def rv(obj):
    return obj["metadata"]["resourceVersion"]


def revisions(d, name):
    code, body = api(d, "GET", "/apis/serving.knative.dev/v1/namespaces/default/revisions"
                     "?labelSelector=serving.knative.dev/service=" + name)
    assert code == 200, body
    return sorted(r["metadata"]["name"] for r in body["items"])


def test_a_replace_at_a_stale_version_is_a_conflict(daemon, images):
    d = daemon
    d.cli("deploy", "alpha", "--image", images["hello"])
    code, cur = api(d, "GET", SVC + "alpha")
    assert code == 200 and int(rv(cur)) > 0, cur

    changed = copy.deepcopy(cur)
    changed["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "V", "value": "2"}]
    code, new = api(d, "PUT", SVC + "alpha", changed)
    assert code == 200, new
    assert int(rv(new)) > int(rv(cur))
    assert new["metadata"]["generation"] == cur["metadata"]["generation"] + 1
    before = revisions(d, "alpha")

    # A write based on what was read before that change is refused, dry run
    # or not, and changes nothing.
    stale = copy.deepcopy(cur)
    stale["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "V", "value": "3"}]
    for path in (SVC + "alpha?dryRun=All", SVC + "alpha"):
        code, st = api(d, "PUT", path, stale)
        assert code == 409 and st["reason"] == "Conflict", st
        assert st["message"] == (
            'Operation cannot be fulfilled on services.serving.knative.dev "alpha": the object '
            "has been modified; please apply your changes to the latest version and try again")
    code, now = api(d, "GET", SVC + "alpha")
    assert now["spec"] == new["spec"]
    assert now["metadata"]["generation"] == new["metadata"]["generation"]
    assert revisions(d, "alpha") == before

    # At the current version it lands. The daemon's own status writes move
    # the version too (the new revision becoming ready), so a client reads
    # again after a conflict, as client-go's RetryOnConflict does.
    for _ in range(10):
        stale["metadata"]["resourceVersion"] = rv(now)
        code, obj = api(d, "PUT", SVC + "alpha", stale)
        if code != 409:
            break
        code, now = api(d, "GET", SVC + "alpha")
    assert code == 200, obj
    assert obj["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "V", "value": "3"}]
    # Without a version it replaces whatever is there.
    del changed["metadata"]["resourceVersion"]
    code, obj = api(d, "PUT", SVC + "alpha", changed)
    assert code == 200, obj
    assert obj["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "V", "value": "2"}]
    code, body = d.curl("alpha", "/env")
    assert code == 200 and "V=2" in body.splitlines()


def test_a_resource_version_the_server_did_not_give_is_refused(daemon, images):
    d = daemon
    d.cli("deploy", "alpha", "--image", images["hello"])
    code, cur = api(d, "GET", SVC + "alpha")
    for bad in ("abc", "-1", "1e3", 12):
        obj = copy.deepcopy(cur)
        obj["metadata"]["resourceVersion"] = bad
        code, st = api(d, "PUT", SVC + "alpha", obj)
        assert code == 400 and st["reason"] == "BadRequest", (bad, st)
        assert "metadata.resourceVersion" in st["message"], st
    code, now = api(d, "GET", SVC + "alpha")
    assert now["spec"] == cur["spec"]
    assert now["metadata"]["generation"] == cur["metadata"]["generation"]


def test_a_version_of_an_object_that_does_not_exist(daemon, images):
    """A replace at a version of a service that is not there finds nothing
    to replace (404) and creates nothing; a create ignores the version, as a
    manifest read back from the API carries one."""
    d = daemon
    obj = service("beta", images["hello"], resourceVersion="42")
    code, st = api(d, "PUT", SVC + "beta", obj)
    assert code == 404 and st["reason"] == "NotFound", st
    assert st["message"] == 'services.serving.knative.dev "beta" not found'
    code, _ = api(d, "GET", SVC + "beta")
    assert code == 404
    code, made = api(d, "POST", "/apis/serving.knative.dev/v1/namespaces/default/services", obj)
    assert code == 201, made
    assert rv(made) != "42"


def test_configmaps_and_secrets_take_the_same_precondition(daemon):
    d = daemon
    for kind, path in (("configmaps", CM), ("secrets", "/api/v1/namespaces/default/secrets/")):
        obj = {"apiVersion": "v1", "kind": "ConfigMap" if kind == "configmaps" else "Secret",
               "metadata": {"name": "cfg"}, "stringData" if kind == "secrets" else "data":
               {"k": "one"}}
        code, made = api(d, "PUT", path + "cfg", obj)
        assert code == 201, made
        two = copy.deepcopy(made)
        two.setdefault("data", {})["k"] = "dHdv" if kind == "secrets" else "two"
        code, now = api(d, "PUT", path + "cfg", two)
        assert code == 200 and int(rv(now)) > int(rv(made)), now
        stale = copy.deepcopy(made)
        stale["data"]["k"] = "dGhyZWU=" if kind == "secrets" else "three"
        code, st = api(d, "PUT", path + "cfg", stale)
        assert code == 409 and st["reason"] == "Conflict", st
        assert '%s "cfg": the object has been modified' % kind in st["message"], st
        code, got = api(d, "GET", path + "cfg")
        assert got["data"] == now["data"] and rv(got) == rv(now)
        code, st = api(d, "PUT", path + "nope", dict(stale, metadata={"name": "nope",
                                                                     "resourceVersion": "7"}))
        assert code == 404, st
        code, st = api(d, "PUT", path + "cfg", dict(stale, metadata={"name": "cfg",
                                                                    "resourceVersion": "x"}))
        assert code == 400 and "metadata.resourceVersion" in st["message"], st


def test_a_replace_for_another_uid_is_a_conflict(daemon, images):
    """A PUT whose metadata.uid is not the stored object's was meant for
    an object since deleted and made again: 409, as in Kubernetes, dry run
    or not, for every kind that is replaced by PUT. With nothing stored it
    creates, and the new object has its own uid."""
    d = daemon
    d.cli("deploy", "alpha", "--image", images["hello"])
    code, svc = api(d, "GET", SVC + "alpha")
    uid = svc["metadata"]["uid"]
    cases = [(SVC, svc)]
    for path, obj in ((CM, {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}}),
                      ("/api/v1/namespaces/default/secrets/",
                       {"apiVersion": "v1", "kind": "Secret", "stringData": {"k": "v"}}),
                      (RTC, {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                             "handler": "crun"})):
        code, made = api(d, "PUT", path + "alpha", dict(obj, metadata={"name": "alpha"}))
        assert code == 201, made
        cases.append((path, made))
    for path, cur in cases:
        have = cur["metadata"]["uid"]
        other = copy.deepcopy(cur)
        other["metadata"]["uid"] = "0f0e0d0c-aaaa-bbbb-cccc-000000000000"
        other["metadata"].pop("resourceVersion")
        other["metadata"].setdefault("labels", {})["changed"] = "yes"
        for q in ("?dryRun=All", ""):
            code, st = api(d, "PUT", path + "alpha" + q, other)
            assert code == 409 and st["reason"] == "Conflict", (path, st)
            assert st["message"] == ("Precondition failed: UID in precondition: %s, UID in "
                                     "object meta: %s" % (other["metadata"]["uid"], have)), st
        code, now = api(d, "GET", path + "alpha")
        assert "changed" not in now["metadata"].get("labels", {}), (path, now)
        other["metadata"]["uid"] = 7
        code, st = api(d, "PUT", path + "alpha", other)
        assert code == 400 and "metadata.uid: must be a string" in st["message"], (path, st)
        # its own uid: the replace lands, and the uid stays
        other["metadata"]["uid"] = have
        code, now = api(d, "PUT", path + "alpha", other)
        assert code == 200, (path, now)
        assert now["metadata"]["uid"] == have and now["metadata"]["labels"]["changed"] == "yes"
        # nothing stored: a create, with a uid of its own
        fresh = copy.deepcopy(other)
        fresh["metadata"]["name"] = "beta"
        code, made = api(d, "PUT", path + "beta", fresh)
        assert code == 201, (path, made)
        assert made["metadata"]["uid"] != have, (path, made)


def test_concurrent_traffic_commands_lose_no_change(daemon, images):
    """Four `sluice traffic --tag` at once, each reading the service,
    adding its tag and writing it back: every tag is there at the end (a
    write from a stale read is refused and the command redoes its change)."""
    d = daemon
    d.cli("deploy", "alpha", "--image", images["hello"])
    tags = ["t%d" % i for i in range(4)]

    def tag(t):
        return d.cli("traffic", "alpha", "--tag", "alpha-00001=%s" % t, check=False)

    for round_ in range(3):
        with concurrent.futures.ThreadPoolExecutor(len(tags)) as ex:
            results = list(ex.map(tag, ["%s%d" % (t, round_) for t in tags]))
        for r in results:
            assert r.returncode == 0, r.stderr
        have = {t.get("tag") for t in d.json("describe", "alpha")["spec"]["traffic"]}
        assert {"%s%d" % (t, round_) for t in tags} <= have, have


def test_apply_of_an_exported_service_ignores_its_version(daemon, images, tmp_path):
    """`sluice apply` makes the object what the manifest says: a manifest
    read back with -o yaml applies after the service has changed, and into a
    daemon that has never seen it."""
    d = daemon
    d.cli("deploy", "alpha", "--image", images["hello"])
    exported = d.cli("services", "-o", "json").stdout
    assert '"resourceVersion"' in exported
    d.cli("deploy", "alpha", "--env", "V=2")
    f = tmp_path / "svc.json"
    f.write_text(exported)
    r = d.cli("apply", "-f", str(f), check=False)
    assert r.returncode == 0, r.stderr
    assert d.json("describe", "alpha")["spec"]["template"]["spec"]["containers"][0].get("env") \
        in (None, [])
    d.cli("delete", "alpha")
    r = d.cli("apply", "-f", str(f), check=False)
    assert r.returncode == 0, r.stderr
    assert d.json("describe", "alpha")["metadata"]["generation"] == 1
    # made again since the export, with a uid of its own: apply leaves the
    # exported uid out, as it does the version
    d.cli("delete", "alpha")
    d.cli("deploy", "alpha", "--image", images["hello"], "--env", "V=3")
    assert d.json("describe", "alpha")["metadata"]["uid"] not in exported
    r = d.cli("apply", "-f", str(f), check=False)
    assert r.returncode == 0, r.stderr
    assert d.json("describe", "alpha")["spec"]["template"]["spec"]["containers"][0].get("env") \
        in (None, [])


def test_delete_preconditions(daemon, images):
    """A DELETE's DeleteOptions.preconditions (uid, resourceVersion) must
    hold, as in Kubernetes; kubectl's plain DeleteOptions body is taken."""
    d = daemon
    d.cli("deploy", "alpha", "--image", images["hello"])
    code, svc = api(d, "GET", SVC + "alpha")
    uid = svc["metadata"]["uid"]
    code, st = api(d, "DELETE", SVC + "alpha", {"preconditions": {"uid": "nope"}})
    assert code == 409 and st["reason"] == "Conflict", st
    assert st["message"] == ("Precondition failed: UID in precondition: nope, UID in object "
                             "meta: %s" % uid)
    code, st = api(d, "DELETE", SVC + "alpha", {"preconditions": {"uid": uid,
                                                                  "resourceVersion": "1"}})
    assert code == 409 and "ResourceVersion in precondition: 1" in st["message"], st
    for bad in ([], {"preconditions": {"uid": 5}}, {"preconditions": "x"},
                {"dryRun": ["All"]}):  # kubectl delete --dry-run=server puts it there
        code, st = api(d, "DELETE", SVC + "alpha", bad)
        assert code == 400, (bad, st)
    # Kinds that take no preconditions refuse them rather than ignore them.
    code, st = api(d, "DELETE", "/apis/serving.knative.dev/v1/namespaces/default/revisions/"
                   "alpha-00001", {"preconditions": {"uid": "x"}})
    assert code == 400 and "preconditions" in st["message"], st
    code, _ = api(d, "GET", SVC + "alpha")
    assert code == 200  # still there
    for _ in range(10):
        code, svc = api(d, "GET", SVC + "alpha")
        code, st = api(d, "DELETE", SVC + "alpha", {
            "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
            "preconditions": {"uid": uid, "resourceVersion": rv(svc)}})
        if code != 409:  # a status write landed in between
            break
    assert code == 200, st
    code, _ = api(d, "GET", SVC + "alpha")
    assert code == 404

    code, cm = api(d, "PUT", CM + "cfg", {"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": "cfg"}, "data": {"k": "v"}})
    assert code == 201, cm
    code, st = api(d, "DELETE", CM + "cfg", {"preconditions": {"resourceVersion": "1"}})
    assert code == 409 and st["reason"] == "Conflict", st
    code, st = api(d, "DELETE", CM + "cfg", {"preconditions": {"resourceVersion": rv(cm)}})
    assert code == 200, st
    code, st = api(d, "DELETE", CM + "cfg", {"preconditions": {"resourceVersion": rv(cm)}})
    assert code == 404, st


def big_image(images, tmp_path, mib=400):
    """The hello image with one more (uncompressed) layer of mib MiB: an
    import that takes a while."""
    import hashlib
    import io
    import json
    import os
    import shutil
    import tarfile
    src = images["hello"][len("oci:"):].rsplit(":", 1)[0]
    dst = str(tmp_path / "big")
    shutil.copytree(src, dst)
    blobs = os.path.join(dst, "blobs", "sha256")

    def put(data):
        h = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, h), "wb") as f:
            f.write(data)
        return "sha256:" + h, len(data)

    def get(digest):
        with open(os.path.join(blobs, digest.split(":")[1]), "rb") as f:
            return json.load(f)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("ballast")
        info.size = mib << 20
        t.addfile(info, io.BytesIO(bytes(info.size)))
    layer, layer_size = put(buf.getvalue())
    index = json.load(open(os.path.join(dst, "index.json")))
    mdesc = index["manifests"][0]
    manifest = get(mdesc["digest"])
    config = get(manifest["config"]["digest"])
    config["rootfs"]["diff_ids"].append(layer)
    cdig, csize = put(json.dumps(config).encode())
    manifest["config"].update(digest=cdig, size=csize)
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                               "digest": layer, "size": layer_size})
    mdig, msize = put(json.dumps(manifest).encode())
    mdesc.update(digest=mdig, size=msize)
    with open(os.path.join(dst, "index.json"), "w") as f:
        json.dump(index, f)
    return "oci:%s:latest" % dst


def test_a_revision_name_taken_during_an_import_is_not_written_over(daemon, images, tmp_path):
    """Service a may name its revision a-b-00001 (its names need only start
    with "a-"), and that name is free when its apply is checked. While a's
    image is imported, service a-b is created and takes a-b-00001 as its
    first revision: a's commit then finds the name taken and is refused
    (409), where it used to write over a-b's revision."""
    import time
    d = daemon
    big = big_image(images, tmp_path)
    doc = service("a", big)
    doc["spec"]["template"]["metadata"] = {"name": "a-b-00001"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(api, d, "PUT", SVC + "a", doc)
        time.sleep(0.3)  # a's import is under way
        fast = d.cli("deploy", "a-b", "--image", images["hello"], check=False)
        code, body = slow.result()
    # Whichever came second was refused; the name belongs to one service.
    assert (fast.returncode == 0) != (code in (200, 201)), (code, body, fast.stderr)
    owners = [svc for svc in ("a", "a-b") if "a-b-00001" in revisions(d, svc)]
    assert owners == (["a-b"] if fast.returncode == 0 else ["a"]), (owners, code, body, fast.stderr)
    if fast.returncode == 0:  # the race this test is for
        assert code == 409 and "was created meanwhile" in body["message"], (code, body)
        assert d.curl("a-b", "/")[0] == 200


def test_runtime_class_replace_and_delete_take_preconditions(daemon):
    """A stored RuntimeClass carries uid, creationTimestamp and a
    resourceVersion; a replace or delete at a stale version is a conflict
    and changes nothing, and its handler cannot change (Kubernetes: the
    field is immutable)."""
    d = daemon
    cls = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
           "metadata": {"name": "slim", "labels": {"team": "a"}, "uid": "chosen-by-client"},
           "handler": "crun"}
    code, made = api(d, "PUT", RTC + "slim", cls)
    assert code == 201, made
    md = made["metadata"]
    assert md["labels"] == {"team": "a"} and int(rv(made)) > 0, made
    assert md["uid"] != "chosen-by-client" and md["creationTimestamp"], made
    code, cur = api(d, "GET", RTC + "slim")
    assert code == 200 and cur == made, cur

    changed = copy.deepcopy(cur)
    changed["overhead"] = {"podFixed": {"cpu": "100m"}}
    code, new = api(d, "PUT", RTC + "slim", changed)
    assert code == 200, new
    assert int(rv(new)) > int(rv(cur)) and new["overhead"]["podFixed"]["cpu"] == "100m", new
    for k in ("uid", "creationTimestamp", "labels"):
        assert new["metadata"][k] == md[k], (k, new)

    stale = copy.deepcopy(cur)
    stale["overhead"] = {"podFixed": {"cpu": "200m"}}
    for path in (RTC + "slim?dryRun=All", RTC + "slim"):
        code, st = api(d, "PUT", path, stale)
        assert code == 409 and st["reason"] == "Conflict", st
        assert 'on runtimeclasses.node.k8s.io "slim": the object has been modified' \
            in st["message"], st
    swapped = copy.deepcopy(new)
    swapped["handler"] = "runc"
    code, st = api(d, "PUT", RTC + "slim", swapped)
    assert code == 422 and st["reason"] == "Invalid", st
    assert "handler" in st["message"] and "field is immutable" in st["message"], st
    bad = dict(copy.deepcopy(new), metadata={"name": "slim", "resourceVersion": "abc"})
    code, st = api(d, "PUT", RTC + "slim", bad)
    assert code == 400 and "metadata.resourceVersion" in st["message"], st
    code, st = api(d, "PUT", RTC + "other",
                   dict(cls, metadata={"name": "other", "resourceVersion": rv(new)}))
    assert code == 404 and st["reason"] == "NotFound", st
    assert api(d, "GET", RTC + "slim")[1] == new
    assert api(d, "GET", RTC + "other")[0] == 404

    for pre in ({"resourceVersion": rv(cur)}, {"uid": "not-its-uid"}):
        code, st = api(d, "DELETE", RTC + "slim", {"preconditions": pre})
        assert code == 409 and "Precondition failed" in st["message"], st
    assert api(d, "GET", RTC + "slim")[1] == new
    code, st = api(d, "DELETE", RTC + "slim",
                   {"preconditions": {"uid": md["uid"], "resourceVersion": rv(new)}})
    assert code == 200, st
    assert api(d, "GET", RTC + "slim")[0] == 404
    code, st = api(d, "DELETE", RTC + "slim", {"preconditions": {"uid": md["uid"]}})
    assert code == 404, st
