"""Images are untrusted: hand-crafted OCI layouts imported through the real
daemon (`sluice images import`) are rejected with an error naming the
cause; the layer store and the stored objects stay as they were, and the
service already running keeps serving.

The daemon runs with small image limits from the environment
(SLUICE_IMAGE_MAX_LAYER_BYTES, SLUICE_IMAGE_MAX_JSON) so a decompression
bomb or an oversized document is a few hundred KiB on disk, not GiBs."""
import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from conftest import Daemon, free_port, assert_no_leftovers

LAYER_CAP = 8 << 20   # unpacked bytes per layer
JSON_CAP = 64 << 10   # index / manifest / config


@pytest.fixture(scope="module")
def served(tmp_path_factory, images):
    tmp = tmp_path_factory.mktemp("untrusted")
    old = {k: os.environ.get(k) for k in ("SLUICE_IMAGE_MAX_LAYER_BYTES", "SLUICE_IMAGE_MAX_JSON")}
    os.environ["SLUICE_IMAGE_MAX_LAYER_BYTES"] = str(LAYER_CAP)
    os.environ["SLUICE_IMAGE_MAX_JSON"] = str(JSON_CAP)
    try:
        d = Daemon(str(tmp / "state"), free_port())
        d.start()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    d.cli("deploy", "hello", "--image", images["hello"])
    yield d
    rc = d.stop()
    assert rc == 0, "daemon exited %d: %s" % (rc, d.daemon_log())
    assert_no_leftovers(d.state_dir)


def store_listing(state):
    """Every path in the layer store (layers and in-progress dirs)."""
    out = []
    for sub in ("layers/sha256", "layers/tmp"):
        base = os.path.join(state, sub)
        if os.path.isdir(base):
            out += [os.path.join(sub, e) for e in sorted(os.listdir(base))]
    return out


@pytest.fixture
def unchanged(served):
    """Stored state before == after, and hello still serves."""
    before = (store_listing(served.state_dir), served.json("services"), served.json("images"))
    yield served
    strip = lambda l: [{k: v for k, v in s.items() if k != "status"} for s in l["items"]]
    after = (store_listing(served.state_dir), served.json("services"), served.json("images"))
    assert after[0] == before[0], "layer store changed"
    assert strip(after[1]) == strip(before[1])
    assert after[2] == before[2], "image list changed"
    code, body = served.curl("hello", "/")
    assert code == 200 and "hello-00001" in body


def tar_bytes(build):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        build(tf)
    return buf.getvalue()


def add_file(tf, name, data=b"x\n", mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    tf.addfile(ti, io.BytesIO(data))


def add_special(tf, name, kind, target="", major=0, minor=0):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = target
    ti.devmajor, ti.devminor = major, minor
    tf.addfile(ti)


class Layout:
    """A one-image OCI layout built blob by blob, with hooks to lie."""

    def __init__(self, root):
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(self, data, name=None):
        d = hashlib.sha256(data).hexdigest()
        (self.blobs / (name or d)).write_bytes(data)
        return "sha256:" + (name or d), len(data)

    def build(self, layers, media="application/vnd.oci.image.layer.v1.tar",
              config_extra=None, config_lie=False, missing_config=False,
              manifest_lie=False, index_pad=0, manifest_pad=0):
        descs, diff_ids = [], []
        for raw, gz in layers:
            diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
            data = gzip.compress(raw, 1) if gz else raw
            dig, size = self.put(data)
            descs.append({"mediaType": media + ("+gzip" if gz else ""),
                          "digest": dig, "size": size})
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Entrypoint": ["/bin/true"]},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        config.update(config_extra or {})
        cbytes = json.dumps(config).encode()
        if config_lie:   # stored under another content's digest
            cdig, csize = self.put(cbytes, hashlib.sha256(b"other").hexdigest())
        elif missing_config:
            cdig, csize = "sha256:" + hashlib.sha256(cbytes).hexdigest(), len(cbytes)
        else:
            cdig, csize = self.put(cbytes)
        manifest = {"schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": cdig, "size": csize},
                    "layers": descs}
        if manifest_pad:
            manifest["annotations"] = {"pad": "x" * manifest_pad}
        mbytes = json.dumps(manifest).encode()
        if manifest_lie:
            mdig, msize = self.put(mbytes, hashlib.sha256(b"another").hexdigest())
        else:
            mdig, msize = self.put(mbytes)
        index = {"schemaVersion": 2,
                 "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "digest": mdig, "size": msize,
                                "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
        if index_pad:
            index["annotations"] = {"pad": "x" * index_pad}
        (self.root / "index.json").write_text(json.dumps(index))
        return "oci:%s:latest" % self.root


def import_fails(d, ref, *needles):
    r = d.cli("images", "import", ref, check=False)
    assert r.returncode != 0, "import of %s succeeded" % ref
    msg = r.stderr.lower()
    assert any(n.lower() in msg for n in needles), r.stderr
    return r.stderr


# ---- layer contents -------------------------------------------------------

def test_hardlink_outside_rejected(unchanged, tmp_path):
    outside = tmp_path / "secret"
    outside.write_text("secret\n")
    ref = Layout(tmp_path / "l").build([(tar_bytes(lambda tf: (
        add_file(tf, "ok"),
        add_special(tf, "h", tarfile.LNKTYPE, "../../../../../../" + str(outside)))), False)])
    import_fails(unchanged, ref, "escapes the layer root")
    assert os.stat(outside).st_nlink == 1


def test_hardlink_through_symlink_rejected(unchanged, tmp_path):
    ref = Layout(tmp_path / "l").build([(tar_bytes(lambda tf: (
        add_special(tf, "etc", tarfile.SYMTYPE, "/etc"),
        add_special(tf, "h", tarfile.LNKTYPE, "etc/passwd"))), False)])
    import_fails(unchanged, ref, "hardlink target")


def test_symlink_chain_out_rejected(unchanged, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    ref = Layout(tmp_path / "l").build([(tar_bytes(lambda tf: (
        add_special(tf, "a", tarfile.SYMTYPE, "b"),
        add_special(tf, "b", tarfile.SYMTYPE, "c"),
        add_special(tf, "c", tarfile.SYMTYPE, str(outside)),
        add_file(tf, "a/pwned"))), False)])
    import_fails(unchanged, ref, "symlink", "escapes")
    assert list(outside.iterdir()) == []


def test_relative_symlink_chain_out_rejected(unchanged, tmp_path):
    ref = Layout(tmp_path / "l").build([(tar_bytes(lambda tf: (
        add_special(tf, "d1", tarfile.SYMTYPE, "d2"),
        add_special(tf, "d2", tarfile.SYMTYPE, "../../../../../../../tmp"),
        add_file(tf, "d1/sluice-untrusted-pwned"))), False)])
    import_fails(unchanged, ref, "symlink", "escapes")
    assert not os.path.exists("/tmp/sluice-untrusted-pwned")


def test_device_nodes_are_not_created(served, tmp_path):
    # Policy (image.h): char/block devices other than 0:0 whiteouts are
    # skipped with a warning, never created; the rest of the layer lands.
    raw = tar_bytes(lambda tf: (
        add_file(tf, "keep"),
        add_special(tf, "mem", tarfile.CHRTYPE, major=1, minor=1),
        add_special(tf, "sda", tarfile.BLKTYPE, major=8, minor=0)))
    ref = Layout(tmp_path / "l").build([(raw, False)])
    served.cli("images", "import", ref)
    layer = os.path.join(served.state_dir, "layers", "sha256", hashlib.sha256(raw).hexdigest())
    assert os.path.isfile(os.path.join(layer, "keep"))
    assert not os.path.lexists(os.path.join(layer, "mem"))
    assert not os.path.lexists(os.path.join(layer, "sda"))
    assert "skipped 2 device/socket entries" in served.daemon_log()


# ---- decompression bombs ---------------------------------------------------

def test_bomb_one_big_file(unchanged, tmp_path):
    big = b"\0" * (LAYER_CAP * 4)
    raw = tar_bytes(lambda tf: add_file(tf, "zeros", big))
    ref = Layout(tmp_path / "l").build([(raw, True)])
    import_fails(unchanged, ref, "max_layer_bytes")


def test_bomb_many_files(unchanged, tmp_path):
    part = b"\0" * (LAYER_CAP // 4)
    raw = tar_bytes(lambda tf: [add_file(tf, "z%d" % i, part) for i in range(8)])
    ref = Layout(tmp_path / "l").build([(raw, True)])
    import_fails(unchanged, ref, "max_layer_bytes")


def test_bomb_trailing_stream(unchanged, tmp_path):
    # A valid tiny tar followed by a huge run of zeros inside the gzip
    # stream: nothing to unpack, but the stream itself is capped.
    raw = tar_bytes(lambda tf: add_file(tf, "a")) + b"\0" * (80 << 20)
    ref = Layout(tmp_path / "l").build([(raw, True)])
    import_fails(unchanged, ref, "uncompressed stream exceeds")


# ---- documents ---------------------------------------------------------------

def small_layer():
    return [(tar_bytes(lambda tf: add_file(tf, "a")), False)]


def test_manifest_digest_mismatch(unchanged, tmp_path):
    ref = Layout(tmp_path / "l").build(small_layer(), manifest_lie=True)
    import_fails(unchanged, ref, "digest")


def test_config_digest_mismatch(unchanged, tmp_path):
    ref = Layout(tmp_path / "l").build(small_layer(), config_lie=True)
    import_fails(unchanged, ref, "digest")


def test_config_blob_missing(unchanged, tmp_path):
    ref = Layout(tmp_path / "l").build(small_layer(), missing_config=True)
    err = import_fails(unchanged, ref, "no such file", "missing", "not found")
    assert "sha256:" in err


def test_diff_id_mismatch(unchanged, tmp_path):
    ref = Layout(tmp_path / "l").build(
        small_layer(), config_extra={"rootfs": {"type": "layers",
                                                "diff_ids": ["sha256:" + "0" * 64]}})
    import_fails(unchanged, ref, "diffid", "diff_id")


def test_oversized_index(unchanged, tmp_path):
    ref = Layout(tmp_path / "l").build(small_layer(), index_pad=JSON_CAP * 2)
    err = import_fails(unchanged, ref, "max_json")
    assert "index.json" in err and "not an OCI image layout" not in err


def test_oversized_manifest(unchanged, tmp_path):
    ref = Layout(tmp_path / "l").build(small_layer(), manifest_pad=JSON_CAP * 2)
    import_fails(unchanged, ref, "max_json")


def test_oversized_config(unchanged, tmp_path):
    ref = Layout(tmp_path / "l").build(
        small_layer(), config_extra={"comment": "x" * (JSON_CAP * 2)})
    import_fails(unchanged, ref, "max_json")


def test_deploy_with_a_bad_image_keeps_the_service(unchanged, tmp_path):
    ref = Layout(tmp_path / "l").build(small_layer(), config_lie=True)
    r = unchanged.cli("deploy", "hello", "--image", ref, check=False)
    assert r.returncode != 0 and "digest" in r.stderr.lower(), r.stderr
    revs = [x["metadata"]["name"] for x in unchanged.json("revisions", "hello")["items"]]
    assert revs == ["hello-00001"]
