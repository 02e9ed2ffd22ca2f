"""Bad input gets a clear error naming the cause and changes nothing:
stored state stays as it was and running services keep serving."""
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile

import pytest

from conftest import refused_requests, send_refused


@pytest.fixture
def served(daemon, images):
    daemon.cli("deploy", "hello", "--image", images["hello"])
    before = daemon.json("services")
    yield daemon
    # Nothing stored changed, the service still answers.
    after = daemon.json("services")
    strip = lambda l: [{k: v for k, v in s.items() if k != "status"} for s in l["items"]]
    assert strip(after) == strip(before)
    code, body = daemon.curl("hello", "/")
    assert code == 200 and "hello-00001" in body


def apply(d, text):
    return d.cli("apply", "-f", "-", input=text, check=False)


def svc(name="x", image="oci:/nonexistent", **spec_extra):
    pod = {"containers": [{"image": image}]}
    pod.update(spec_extra)
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": name}, "spec": {"template": {"spec": pod}}}


def test_malformed_yaml(served):
    r = apply(served, "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: [oops\n")
    assert r.returncode != 0 and "line" in r.stderr


def test_malformed_json_api_body(served):
    sock = os.path.join(served.state_dir, "sluice.sock")
    r = subprocess.run(["curl", "-sS", "--unix-socket", sock, "-X", "PUT", "-d", "{not json",
                        "http://x/apis/serving.knative.dev/v1/namespaces/default/services/x"],
                       capture_output=True, text=True)
    st = json.loads(r.stdout)
    assert st["code"] == 400 and "invalid JSON" in st["message"]


@pytest.mark.parametrize("path,body,needle", [
    ("serving.knative.dev/v1/namespaces/default/services/hello", {"metadata": {"name": 5}},
     "metadata.name: must be a string"),
    ("serving.knative.dev/v1/namespaces/default/services/hello", {"metadata": "junk"},
     "metadata: must be an object"),
    ("serving.knative.dev/v1/namespaces/default/services/hello", [1, 2],
     "request body: must be a JSON object"),
    ("v1/namespaces/default/configmaps/cm1", {"metadata": {"name": 5}, "data": {}},
     "metadata.name: must be a string"),
    ("v1/namespaces/default/configmaps/cm1", {"metadata": {"namespace": ["default"]}},
     "metadata.namespace: must be a string"),
])
def test_metadata_of_the_wrong_type(served, path, body, needle):
    """A name of the wrong type is refused, not replaced by the URL's."""
    sock = os.path.join(served.state_dir, "sluice.sock")
    prefix = "http://x/api/" if path.startswith("v1/") else "http://x/apis/"
    r = subprocess.run(["curl", "-sS", "--unix-socket", sock, "-X", "PUT", "-d", json.dumps(body),
                        prefix + path], capture_output=True, text=True)
    st = json.loads(r.stdout)
    assert st["code"] == 400 and needle in st["message"], st
    if "configmaps" in path:
        r = subprocess.run(["curl", "-sS", "--unix-socket", sock, prefix + path],
                           capture_output=True, text=True)
        assert json.loads(r.stdout)["code"] == 404  # nothing was stored


def test_unsupported_field_is_422_invalid(served):
    """An object that parses and validates in shape but asks for what sluice
    does not do (a privileged container) is 422 Invalid, as Kubernetes
    answers."""
    sock = os.path.join(served.state_dir, "sluice.sock")
    doc = svc()
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    r = subprocess.run(["curl", "-sS", "--unix-socket", sock, "-X", "PUT", "-d", json.dumps(doc),
                        "http://x/apis/serving.knative.dev/v1/namespaces/default/services/x"],
                       capture_output=True, text=True)
    st = json.loads(r.stdout)
    assert st["code"] == 422 and st["reason"] == "Invalid" and "privileged" in st["message"], st


@pytest.mark.parametrize("ns", ["..", "Evil.NS_x", "a%22b", "-lead", "x" * 64])
def test_bad_namespace_in_path(served, ns):
    """A namespace in the URL is a DNS-1123 label or the request is refused
    (it would name directories and cgroups): nothing is stored under it."""
    sock = os.path.join(served.state_dir, "sluice.sock")
    url = "http://x/apis/serving.knative.dev/v1/namespaces/%s/services/x" % ns
    r = subprocess.run(["curl", "-sS", "--path-as-is", "--unix-socket", sock, "-X", "PUT",
                        "-d", json.dumps(svc()), url], capture_output=True, text=True)
    st = json.loads(r.stdout)
    assert st["code"] == 400 and "namespace" in st["message"] and "DNS-1123" in st["message"]
    r = subprocess.run(["curl", "-sS", "--path-as-is", "--unix-socket", sock,
                        "http://x/apis/sluice.dev/v1/namespaces/%s/instances" % ns],
                       capture_output=True, text=True)
    assert json.loads(r.stdout)["code"] == 400
    r = subprocess.run(["curl", "-sS", "--unix-socket", sock,
                        "http://x/apis/serving.knative.dev/v1/services"],
                       capture_output=True, text=True)
    assert [s["metadata"]["namespace"] for s in json.loads(r.stdout)["items"]] == ["default"]


def test_refused_api_requests_on_the_socket(served):
    """Over the API socket too, a request refused before its body (over
    4 MiB, chunked, unparsable) is answered, and the rest of what the client
    sends is read and dropped until it closes; the daemon goes on serving
    (the fixture checks)."""
    sock = os.path.join(served.state_dir, "sluice.sock")
    head = ("PUT /apis/serving.knative.dev/v1/namespaces/default/services/x HTTP/1.1\r\n"
            "Host: x\r\n")
    for req, status in refused_requests(head):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(sock)
            out = send_refused(s, req)
        assert out.startswith(b"HTTP/1.1" + status), out[:200]


def test_oversize_api_body(served):
    sock = os.path.join(served.state_dir, "sluice.sock")
    big = "x" * (5 << 20)
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket",
                        sock, "-X", "PUT", "--data-binary", "@-",
                        "http://x/apis/serving.knative.dev/v1/namespaces/default/services/x"],
                       input=big, capture_output=True, text=True)
    assert r.stdout == "413"


@pytest.mark.parametrize("doc,needle", [
    (svc(name="Bad_Name"), "metadata.name"),
    (svc(name="a" * 64), "metadata.name"),
    (dict(svc(), spec={"template": {"spec": {"containers": [{"image": "oci:/x", "bogus": 1}]}}}),
     "spec.template.spec.containers[0].bogus: unknown field"),
    (svc(containerConcurrency=5000), "containerConcurrency: must be 0..1000, got 5000"),
    (svc(timeoutSeconds=0), "timeoutSeconds"),
    (svc(timeoutSeconds=30, responseStartTimeoutSeconds=60),
     "responseStartTimeoutSeconds: 60 is more than timeoutSeconds (30)"),
    (svc(idleTimeoutSeconds=-1), "idleTimeoutSeconds: must be 0..3600"),
    (dict(svc(), apiVersion="v1"), "apiVersion"),
    (dict(svc(), kind="Deployment"), "kind"),
    (svc(image="docker://nginx"), "unsupported image reference"),
    (dict(svc(), spec={"template": {"spec": {"containers": [
        {"image": "oci:/x", "ports": [{"name": "h2", "containerPort": 8080}]}]}}}),
     'ports[0].name: must be "http1", "h2c" or empty, got "h2"'),
])
def test_invalid_fields(served, doc, needle):
    r = apply(served, json.dumps(doc))
    assert r.returncode != 0
    assert needle in r.stderr, r.stderr


def test_invalid_deploy_flags(served, images):
    for args, needle in [
        (["deploy", "Bad", "--image", images["hello"]], "DNS-1035"),
        (["deploy", "y", "--image", images["hello"], "--concurrency", "5000"], "--concurrency"),
        (["deploy", "y", "--image", images["hello"], "--memory", "lots"], "--memory"),
        (["deploy", "y", "--image", images["hello"], "--env", "NOEQUALS"], "--env"),
        (["deploy", "y"], "--image is required"),
    ]:
        r = served.cli(*args, check=False)
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)


def test_missing_image(served):
    r = served.cli("deploy", "y", "--image", "oci:/does/not/exist:latest", check=False)
    assert r.returncode != 0 and "/does/not/exist" in r.stderr


def test_updating_with_a_bad_image_keeps_old_revision(served):
    r = served.cli("deploy", "hello", "--image", "oci:/does/not/exist", check=False)
    assert r.returncode != 0
    assert [x["metadata"]["name"] for x in served.json("revisions", "hello")["items"]] == \
        ["hello-00001"]


def copy_layout(images, tmp_path):
    src = os.path.join(images["busybox_dir"], "oci")
    dst = tmp_path / "oci"
    shutil.copytree(src, dst)
    return dst


def largest_blob(layout):
    blobs = layout / "blobs" / "sha256"
    return max(blobs.iterdir(), key=lambda p: p.stat().st_size)


def test_corrupt_image_digest_mismatch(served, images, tmp_path):
    layout = copy_layout(images, tmp_path)
    blob = largest_blob(layout)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = served.cli("deploy", "y", "--image", "oci:%s:latest" % layout, check=False)
    assert r.returncode != 0 and "digest" in r.stderr.lower(), r.stderr


def test_truncated_layer(served, images, tmp_path):
    layout = copy_layout(images, tmp_path)
    blob = largest_blob(layout)
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    r = served.cli("deploy", "y", "--image", "oci:%s:latest" % layout, check=False)
    assert r.returncode != 0


def make_layout(tmp_path, layer_bytes):
    """A one-layer OCI image layout around raw layer tar bytes."""
    root = tmp_path / "evil"
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data):
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return "sha256:" + d, len(data)

    ldig, lsize = put(layer_bytes)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Entrypoint": ["/bin/true"]},
                         "rootfs": {"type": "layers", "diff_ids": [ldig]}}).encode()
    cdig, csize = put(config)
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cdig, "size": csize},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                       "digest": ldig, "size": lsize}]}).encode()
    mdig, msize = put(manifest)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": mdig, "size": msize,
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    return root


@pytest.mark.parametrize("entry", ["../escape", "a/../../escape"])
def test_tar_slip_layer_rejected(served, tmp_path, entry):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"pwned\n"
        ti = tarfile.TarInfo(entry)
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    layout = make_layout(tmp_path, buf.getvalue())
    r = served.cli("deploy", "y", "--image", "oci:%s:latest" % layout, check=False)
    assert r.returncode != 0 and "escape" in r.stderr.lower(), r.stderr
    assert not (tmp_path / "escape").exists()


def test_symlink_slip_layer_rejected(served, tmp_path):
    buf = io.BytesIO()
    outside = tmp_path / "outside"
    outside.mkdir()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ln = tarfile.TarInfo("link")
        ln.type = tarfile.SYMTYPE
        ln.linkname = str(outside)
        tf.addfile(ln)
        data = b"pwned\n"
        ti = tarfile.TarInfo("link/file")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    layout = make_layout(tmp_path, buf.getvalue())
    r = served.cli("deploy", "y", "--image", "oci:%s:latest" % layout, check=False)
    assert r.returncode != 0
    assert not (outside / "file").exists()


def test_bad_http_request_to_router(served):
    import socket
    s = socket.create_connection(("127.0.0.1", served.port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: hello.localhost\r\nContent-Length: 3\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    resp = s.recv(4096).decode(errors="replace")
    s.close()
    assert resp.startswith("HTTP/1.1 400")
