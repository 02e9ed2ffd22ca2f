"""Secrets and ConfigMaps (core v1), and what a container reads from them:
env valueFrom, envFrom, and secret and configMap volumes, as Kubernetes
and Knative give them."""
import base64
import json
import time

import pytest

from conftest import service_manifest
from test_apply import api


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
          "data": {"user": b64("app")}, "stringData": {"password": "hunter2-s3cret"}}
CONFIG = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
          "data": {"level": "debug", "app.conf": "listen=all\n"},
          "binaryData": {"blob": b64(b"\x00\x01\xff")}}
ENVS = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "envs"},
        "data": {"mode": "fast", "app.conf": "x", "bad-name": "kept", "1bad": "skipped"}}

# The app reports its environment, its volumes' files (mode, owner, bytes)
# and their mount options. ($$$$ is the shell's $$: Kubernetes' expansion
# makes $$ of $$$$.) The files are root's, as in Kubernetes: the modes let
# the image's non-root user read them.
REPORT = r"""
mkdir -p /tmp/www
{ tr '\0' '\n' < /proc/$$$$/environ | sort
  for f in /etc/db/creds/pw /etc/cfg/level /etc/cfg/app.conf /etc/cfg/blob; do
    echo "file $f $(stat -L -c '%a %u' $f) $(od -An -tx1 $f | tr -d ' \n')"
  done
  echo "cat $(cat /etc/db/creds/pw)"
  ls /etc/db /etc/cfg | tr '\n' ' '; echo
  awk '$5 == "/etc/db" || $5 == "/etc/cfg" { print "mount", $5, $6 }' /proc/self/mountinfo
  touch /etc/cfg/x 2>&1 | grep -o 'Read-only file system'
} > /tmp/www/report 2>&1
exec httpd -f -p "$PORT" -h /tmp/www
"""


def reading_service(image, runtime_class=None, annotation=None):
    doc = json.loads(service_manifest(
        "app", image, REPORT,
        env=[{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db",
                                                                    "key": "password"}}},
             {"name": "LOG_LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg",
                                                                     "key": "level"}}},
             {"name": "GREETING", "value": "level=$(LOG_LEVEL) user=$(user)"},
             {"name": "MODE", "value": "$(mode)-$(DB_user)"},
             {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {
                 "name": "nowhere", "key": "x", "optional": True}}}],
        envFrom=[{"configMapRef": {"name": "envs"}},
                 {"secretRef": {"name": "db"}, "prefix": "DB_"}],
        volumeMounts=[{"name": "creds", "mountPath": "/etc/db", "readOnly": True},
                      {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True}]))
    spec = doc["spec"]["template"]["spec"]
    spec["volumes"] = [
        {"name": "creds", "secret": {"secretName": "db",
                                     "items": [{"key": "password", "path": "creds/pw",
                                                "mode": 0o604}]}},
        {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 0o444}}]
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    if annotation:
        doc["spec"]["template"]["metadata"] = {"annotations": {"example.com/v": annotation}}
    return doc


def manifests(*docs):
    return "\n---\n".join(json.dumps(d) for d in docs)


@pytest.mark.parametrize("variant", ["default", "sandboxed"])
def test_secrets_and_configmaps_reach_the_container(daemon, images, variant):
    d = daemon
    svc = reading_service(images["busybox"], "sandboxed" if variant == "sandboxed" else None)
    # The Service comes first in the file: apply puts what it reads first.
    r = d.cli("apply", "-f", "-", "--wait", input=manifests(svc, SECRET, CONFIG, ENVS))
    lines = [l for l in r.stderr.splitlines() if "/" in l and l.endswith("created")]
    assert lines == ["secret/db created", "configmap/cfg created", "configmap/envs created",
                     "service.serving.knative.dev/app created"], r.stderr
    code, text = d.curl("app", "/report")
    assert code == 200, text
    env = dict(l.split("=", 1) for l in text.splitlines() if "=" in l and " " not in l.split("=")[0])
    assert "DB_PASSWORD" in env, text
    assert env["DB_PASSWORD"] == "hunter2-s3cret" and env["PORT"] == "8080"
    assert env["LOG_LEVEL"] == "debug"
    # a value expands references to envFrom's and valueFrom's variables
    assert env["GREETING"] == "level=debug user=$(user)"
    assert "OPTIONAL" not in env
    # envFrom: every key that makes a variable name ('.' and '-' too, as
    # Kubernetes allows), prefixed when asked
    assert env["MODE"] == "fast-app"
    assert env["mode"] == "fast" and env["app.conf"] == "x" and env["bad-name"] == "kept"
    assert "1bad" not in text
    assert env["DB_user"] == "app" and env["DB_password"] == "hunter2-s3cret"
    files = {l.split()[1]: l.split()[2:] for l in text.splitlines() if l.startswith("file ")}
    owner = "0"  # the container's root, in its own user namespace too
    assert files["/etc/db/creds/pw"] == ["604", owner, b"hunter2-s3cret".hex()], text
    assert files["/etc/cfg/level"] == ["444", owner, b"debug".hex()], text
    assert files["/etc/cfg/app.conf"] == ["444", owner, b"listen=all\n".hex()], text
    assert files["/etc/cfg/blob"] == ["444", owner, "0001ff"], text
    mounts = [l.split() for l in text.splitlines() if l.startswith("mount ")]
    assert sorted(m[1] for m in mounts) == ["/etc/cfg", "/etc/db"], text
    assert all(m[2].startswith("ro,") for m in mounts), text
    assert "Read-only file system" in text
    # the secret's value is in no status, listing or log
    for out in (d.cli("describe", "app").stdout, d.cli("secrets").stdout,
                d.cli("logs", "app").stdout, d.daemon_log()):
        assert "hunter2" not in out
    listing = d.cli("secrets").stdout
    assert "db" in listing and "Opaque" in listing and "password,user" in listing, listing
    assert "app.conf,blob,level" in d.cli("configmaps").stdout
    # values are stored as the API server stores them: stringData into data
    stored = d.json("secrets")["items"][0]
    assert stored["data"] == {"user": b64("app"), "password": b64("hunter2-s3cret")}
    assert "stringData" not in stored
    # A changed value reaches the instances started after the change.
    changed = dict(SECRET, stringData={"password": "rotated"})
    r = d.cli("apply", "-f", "-", input=manifests(changed))
    assert "secret/db configured" in r.stderr
    svc2 = reading_service(images["busybox"], "sandboxed" if variant == "sandboxed" else None,
                           annotation="2")
    d.cli("apply", "-f", "-", "--wait", input=manifests(svc2))
    code, text = d.curl("app", "/report")
    assert code == 200 and "DB_PASSWORD=rotated" in text and "cat rotated" in text, text


def test_missing_secret_fails_the_start_until_it_is_created(daemon, images):
    d = daemon
    doc = json.loads(service_manifest(
        "late", images["busybox"], 'echo "$TOKEN" > /tmp/t; exec httpd -f -p "$PORT" -h /tmp',
        env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "v"}}}]))
    r = d.cli("apply", "-f", "-", "--wait", input=json.dumps(doc), check=False, timeout=60)
    assert r.returncode != 0
    assert 'env[0] (TOKEN): secret "tok" not found' in r.stderr, r.stderr
    rev = d.json("revisions", "late")["items"][0]
    ready = [c for c in rev["status"]["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "False" and 'secret "tok" not found' in ready["message"], ready
    code, body = d.curl("late", "/t")
    assert code == 502 and 'secret "tok" not found' in body, body
    # A Secret without the key: the message names the key.
    d.cli("apply", "-f", "-", input=manifests(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tok"},
         "stringData": {"other": "x"}}))
    deadline = time.time() + 20
    while time.time() < deadline:
        rev = d.json("revisions", "late")["items"][0]
        msg = [c for c in rev["status"]["conditions"] if c["type"] == "Ready"][0].get("message", "")
        if 'key "v" not found in secret "tok"' in msg:
            break
        time.sleep(0.3)
    assert 'key "v" not found in secret "tok"' in msg, msg
    # Once it is right the revision starts at once, without waiting out its back-off.
    t0 = time.time()
    d.cli("apply", "-f", "-", input=manifests(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tok"},
         "stringData": {"v": "sesame"}}))
    while time.time() - t0 < 20:
        code, body = d.curl("late", "/t", check=False)
        if code == 200:
            break
        time.sleep(0.2)
    assert code == 200 and body.strip() == "sesame", body


@pytest.mark.parametrize("doc,needle", [
    ({"kind": "Secret", "data": {"k": "not base64!"}}, "data.k: must be base64"),
    ({"kind": "Secret", "data": {"bad/key": b64("x")}}, 'invalid key "bad/key"'),
    ({"kind": "Secret", "data": {"..k": b64("x")}}, 'invalid key "..k"'),
    ({"kind": "Secret", "stringData": {"k": 1}}, "stringData.k: must be a string"),
    ({"kind": "Secret", "stringData": {"k": "x" * (1024 * 1024 + 1)}}, "more than the 1024 KiB"),
    ({"kind": "Secret", "type": "kubernetes.io/tls", "stringData": {"tls.crt": "c"}},
     "must have tls.crt and tls.key"),
    ({"kind": "Secret", "metadata": {"name": "Bad_Name"}}, "DNS-1123 subdomain"),
    ({"kind": "Secret", "spec": {}}, "spec: unknown field"),
    ({"kind": "ConfigMap", "data": {"k": "v"}, "binaryData": {"k": b64("v")}},
     "in binaryData too"),
    ({"kind": "ConfigMap", "binaryData": {"k": "%%%"}}, "binaryData.k: must be base64"),
    ({"kind": "ConfigMap", "data": {"k": ["v"]}}, "data.k: must be a string"),
    ({"kind": "Secret", "type": "kubernetes.io/service-account-token"}, "no service accounts"),
    ({"kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
      "stringData": {".dockerconfigjson": "{not json"}}, "must be a JSON object"),
])
def test_invalid_secrets_and_configmaps_are_refused(daemon, doc, needle):
    d = daemon
    obj = {"apiVersion": "v1", "metadata": {"name": "x"}}
    obj.update(doc)
    r = d.cli("apply", "-f", "-", input=json.dumps(obj), check=False)
    assert r.returncode != 0 and needle in r.stderr, r.stderr
    assert d.json("secrets")["items"] == [] and d.json("configmaps")["items"] == []


def test_immutable_and_type_are_kept(daemon):
    d = daemon
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "fixed"},
           "stringData": {"k": "one"}, "immutable": True}
    d.cli("apply", "-f", "-", input=json.dumps(obj))
    for change, needle in [({"stringData": {"k": "two"}}, "data: field is immutable"),
                           ({"immutable": False}, "immutable: field is immutable"),
                           ({"type": "example.com/other"}, "type: field is immutable")]:
        r = d.cli("apply", "-f", "-", input=json.dumps(dict(obj, **change)), check=False)
        assert r.returncode != 0 and needle in r.stderr, r.stderr
    assert d.json("secrets")["items"][0]["data"] == {"k": b64("one")}
    # the same content again is no change
    d.cli("apply", "-f", "-", input=json.dumps(obj))
    r = d.cli("secrets", "delete", "fixed")
    assert "secret fixed deleted" in r.stdout
    assert d.json("secrets")["items"] == []
    r = d.cli("secrets", "delete", "fixed", check=False)
    assert r.returncode != 0 and 'secret "fixed" not found' in r.stderr


def with_spec(image, **kw):
    doc = json.loads(service_manifest("bad", image, None, **kw.pop("container", {})))
    doc["spec"]["template"]["spec"].update(kw)
    return json.dumps(doc)


@pytest.mark.parametrize("kw,needle", [
    ({"container": {"env": [{"name": "A", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.name"}}}]}}, "fieldRef: not supported"),
    ({"container": {"env": [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {
        "name": "s", "key": "k"}}}]}}, "give value or valueFrom, not both"),
    ({"container": {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}},
     "name and key are required"),
    ({"container": {"env": [{"name": "A", "valueFrom": {}}]}},
     "one of secretKeyRef and configMapKeyRef is required"),
    ({"container": {"envFrom": [{"secretRef": {"name": "s"}, "configMapRef": {"name": "c"}}]}},
     "give one of secretRef and configMapRef, not both"),
    ({"container": {"envFrom": [{"secretRef": {"name": "s"}, "prefix": "1X"}]}},
     "prefix: must be a valid environment variable name"),
    ({"container": {"volumeMounts": [{"name": "s", "mountPath": "/s"}]},
      "volumes": [{"name": "s", "secret": {"secretName": "x"}}]}, "readOnly: must be true"),
    ({"container": {"volumeMounts": [{"name": "s", "mountPath": "/s", "readOnly": True}]},
      "volumes": [{"name": "s", "secret": {"secretName": "x", "items": [
          {"key": "k", "path": "a/../up"}]}}]}, "must not contain '..'"),
    ({"container": {"volumeMounts": [{"name": "s", "mountPath": "/s", "readOnly": True}]},
      "volumes": [{"name": "s", "secret": {"secretName": "x", "items": [
          {"key": "k", "path": "/abs"}]}}]}, "must be a relative path"),
    ({"container": {"volumeMounts": [{"name": "s", "mountPath": "/s", "readOnly": True}]},
      "volumes": [{"name": "s", "secret": {"secretName": "x", "items": [
          {"key": "k", "path": "..data"}]}}]}, "must not start with '..'"),
    ({"container": {"volumeMounts": [{"name": "s", "mountPath": "/s", "readOnly": True}]},
      "volumes": [{"name": "s", "configMap": {"name": "x", "defaultMode": 4096}}]},
     "defaultMode: must be a file mode"),
    ({"container": {"volumeMounts": [{"name": "s", "mountPath": "/s", "readOnly": True}]},
      "volumes": [{"name": "s", "configMap": {"name": "x"}, "emptyDir": {}}]},
     "give only one of emptyDir, secret and configMap"),
    ({"container": {"volumeMounts": [{"name": "s", "mountPath": "/s", "readOnly": True}]},
      "volumes": [{"name": "s", "secret": {}}]}, "secretName: is required"),
])
def test_invalid_references_are_refused(daemon, images, kw, needle):
    d = daemon
    r = d.cli("apply", "-f", "-", input=with_spec(images["busybox"], **kw), check=False)
    assert r.returncode != 0 and needle in r.stderr, r.stderr
    assert d.json("services")["items"] == []


def test_a_value_that_cannot_be_an_environment_variable(daemon, images):
    """A key holding a NUL byte is refused by name (never by value) when the
    instance starts; the revision says so."""
    d = daemon
    d.cli("apply", "-f", "-", input=manifests(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bin"},
         "binaryData": {"blob": b64(b"\x00secret")}}))
    doc = json.loads(service_manifest(
        "nul", images["busybox"], 'exec httpd -f -p "$PORT" -h /tmp',
        envFrom=[{"configMapRef": {"name": "bin"}}]))
    r = d.cli("apply", "-f", "-", "--wait", input=json.dumps(doc), check=False, timeout=60)
    assert r.returncode != 0
    assert 'key "blob" of configmap "bin" holds a NUL byte' in r.stderr, r.stderr


def test_create_from_literals_and_files(daemon, tmp_path):
    """`secrets create` and `configmaps create`, as kubectl's create secret
    generic and create configmap: literals and files, a file's key its name."""
    d = daemon
    (tmp_path / "tls.key").write_bytes(b"\x00\x01key")
    (tmp_path / "app.conf").write_text("port=8080\n")
    r = d.cli("secrets", "create", "web", "--from-literal", "user=admin",
              "--from-file", str(tmp_path / "tls.key"), "--from-file",
              "conf=%s" % (tmp_path / "app.conf"))
    assert r.stdout.strip() == "secret/web created"
    s = d.json("secrets")["items"][0]
    assert s["type"] == "Opaque"
    assert s["data"] == {"user": b64("admin"), "tls.key": b64(b"\x00\x01key"),
                         "conf": b64("port=8080\n")}
    d.cli("configmaps", "create", "web", "--from-file", str(tmp_path / "app.conf"),
          "--from-file", str(tmp_path / "tls.key"), "--from-literal", "mode=fast")
    c = d.json("configmaps")["items"][0]
    # text in data, other bytes in binaryData
    assert c["data"] == {"app.conf": "port=8080\n", "mode": "fast"}
    assert c["binaryData"] == {"tls.key": b64(b"\x00\x01key")}
    for args, needle in [
            (["web", "--from-literal", "a=1"], 'secret "web" already exists'),
            (["x", "--from-literal", "a=1", "--from-literal", "a=2"],
             'cannot add key "a": another key by that name already exists'),
            (["x", "--from-literal", "a/b=1"], '"a/b" is not a valid key'),
            (["x", "--from-literal", "novalue"], "expected KEY=VALUE"),
            (["x", "--from-file", str(tmp_path / "nope")], "nope"),
            (["x", "--type", "kubernetes.io/tls", "--from-literal", "a=1"],
             "must have tls.crt and tls.key")]:
        r = d.cli("secrets", "create", *args, check=False)
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)
    assert [o["metadata"]["name"] for o in d.json("secrets")["items"]] == ["web"]
    assert d.json("secrets")["items"][0]["data"]["user"] == b64("admin")


def test_the_core_api(daemon):
    """/api/v1 as Kubernetes' core API answers: POST creates (201, 409 when
    it exists), PUT creates (201) or replaces (200) at the version it names,
    if any, server-set metadata is the server's, and what is missing is 404."""
    d = daemon
    col = "/api/v1/namespaces/default/secrets"
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "k", "generation": 7, "selfLink": "/x", "resourceVersion": "999"},
        "stringData": {"a": "1"}, "data": None}
    code, body = api(d, "POST", col + "?dryRun=All", obj)
    assert code == 201 and d.json("secrets")["items"] == [], body
    code, body = api(d, "POST", col, obj)
    assert code == 201, body
    assert "generation" not in body["metadata"] and "selfLink" not in body["metadata"]
    assert body["metadata"]["resourceVersion"] != "999" and body["metadata"]["uid"]
    code, body = api(d, "POST", col, obj)
    assert code == 409 and body["reason"] == "AlreadyExists", body
    code, body = api(d, "PUT", col + "/k", dict(obj, stringData={"a": "2"}))
    assert code == 409 and body["reason"] == "Conflict", body  # not at version 999
    md = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    code, body = api(d, "PUT", col + "/k", dict(obj, metadata=md, stringData={"a": "2"}))
    assert code == 200 and body["data"] == {"a": b64("2")}, body
    code, body = api(d, "GET", col + "/nope")
    assert code == 404 and 'secret "nope" not found' in body["message"], body
    code, body = api(d, "GET", "/api/v1/secrets")
    assert code == 200 and [o["metadata"]["name"] for o in body["items"]] == ["k"]
    code, body = api(d, "POST", "/api/v1/secrets", obj)
    assert code == 404, body


def test_mounted_values_follow_changes(daemon, images):
    """A running instance's configMap and secret volumes follow the objects,
    as the kubelet refreshes them: one rename swaps all the files; a key
    that goes takes its file along. Its environment stays as it started."""
    d = daemon
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "live"},
          "data": {"level": "debug", "extra": "1"}}
    doc = json.loads(service_manifest(
        "live", images["busybox"], 'exec httpd -f -p "$PORT" -h /etc/live',
        env=[{"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "live",
                                                                 "key": "level"}}}],
        volumeMounts=[{"name": "v", "mountPath": "/etc/live", "readOnly": True}]))
    doc["spec"]["template"]["metadata"] = {
        "annotations": {"autoscaling.knative.dev/min-scale": "1"}}
    doc["spec"]["template"]["spec"]["volumes"] = [{"name": "v", "configMap": {"name": "live"}}]
    d.cli("apply", "-f", "-", "--wait", input=manifests(cm, doc))
    assert d.curl("live", "/level") == (200, "debug")
    assert d.curl("live", "/extra") == (200, "1")
    before = [i["name"] for i in d.json("instances", "live")["items"]]
    d.cli("apply", "-f", "-", input=manifests(dict(cm, data={"level": "info", "new": "2"})))
    deadline = time.time() + 15
    while time.time() < deadline and d.curl("live", "/level")[1] != "info":
        time.sleep(0.2)
    assert d.curl("live", "/level") == (200, "info")
    assert d.curl("live", "/new") == (200, "2")
    assert d.curl("live", "/extra")[0] == 404
    after = [i["name"] for i in d.json("instances", "live")["items"]]
    assert after == before  # the same instance
    assert "volumes refreshed" in d.daemon_log()


def test_deploy_flags(daemon, images):
    """deploy --secret and --configmap, as gcloud run deploy --set-secrets:
    VAR=NAME:KEY for a variable, /PATH=NAME for a read-only mount; a later
    --env of the same name takes the variable back to a plain value."""
    d = daemon
    d.cli("secrets", "create", "db", "--from-literal", "pw=open-sesame")
    d.cli("configmaps", "create", "cfg", "--from-literal", "level=warn")
    script = ('mkdir -p /tmp/www; { echo "PW=$PW"; cat /etc/cfg/level; echo; ls /etc/cfg; }'
              ' > /tmp/www/r; exec httpd -f -p "$PORT" -h /tmp/www')
    d.cli("apply", "-f", "-", "--wait", input=service_manifest("flags", images["busybox"], script))
    d.cli("deploy", "flags", "--env", "PW=plain", "--secret", "PW=db:pw",
          "--configmap", "/etc/cfg=cfg")
    code, text = d.curl("flags", "/r")
    assert code == 200 and text.splitlines() == ["PW=open-sesame", "warn", "level"], text
    spec = d.json("services")["items"][0]["spec"]["template"]["spec"]
    assert spec["volumes"] == [{"name": "configmap-cfg", "configMap": {"name": "cfg"}}]
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "configmap-cfg", "mountPath": "/etc/cfg", "readOnly": True}]
    # an update keeps what it does not name; --env replaces the reference
    d.cli("deploy", "flags", "--env", "PW=plain")
    code, text = d.curl("flags", "/r")
    assert code == 200 and text.splitlines()[:2] == ["PW=plain", "warn"], text
    for arg, needle in [("PW", "expected VAR=NAME:KEY or /PATH=NAME"),
                        ("PW=db", "expected VAR=NAME:KEY"),
                        ("/x=db:pw", "a mount takes every key")]:
        r = d.cli("deploy", "flags", "--secret", arg, check=False)
        assert r.returncode == 2 and needle in r.stderr, r.stderr
