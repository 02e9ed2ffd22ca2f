"""A full disk: the daemon's state dir on a small tmpfs. Importing an image
whose layer does not fit fails that deploy with a clear "no space" error and
leaves nothing behind; writes while the filesystem is full fail cleanly;
the running service keeps serving throughout, the SQLite store stays
consistent, and once space is freed the daemon works as before."""
import os
import sqlite3
import subprocess

import pytest

from conftest import ROOT, Daemon, free_port, mounts_under

TMPFS_MIB = 24
BIG_MIB = 40  # incompressible, so the layer cannot fit whatever the codec

SPACE_WORDS = ("no space left on device", "enospc", "disk is full")


def says_no_space(text):
    t = text.lower()
    return any(w in t for w in SPACE_WORDS)


def strip(listing):
    """Services as stored, minus status and the resourceVersion (a status
    write is legitimate, and moves the version)."""
    def one(o):
        o = {k: v for k, v in o.items() if k != "status"}
        o["metadata"] = {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}
        return o
    return sorted((one(o) for o in listing["items"]), key=lambda o: o["metadata"]["name"])


def build_big_image(tmp_path):
    """An OCI layout whose single layer holds BIG_MIB of random bytes."""
    rootfs = tmp_path / "big-rootfs"
    os.makedirs(rootfs / "data")
    with open(rootfs / "data" / "blob", "wb") as f:
        for _ in range(BIG_MIB):
            f.write(os.urandom(1 << 20))
    out = tmp_path / "big-oci"
    subprocess.run(["sh", os.path.join(ROOT, "scripts/mkimage.sh"), "--rootfs", str(rootfs),
                    "--out", str(out), "--tag", "latest", "--entrypoint", "/hello",
                    "--port", "8080"], check=True, stdout=subprocess.DEVNULL)
    return "oci:%s:latest" % out


def layer_dirs(state):
    return sorted(os.listdir(os.path.join(state, "layers", "sha256")))


def tmp_entries(state):
    return sorted(os.listdir(os.path.join(state, "layers", "tmp")))


def fill(path):
    """Writes zeros to `path` until the filesystem says ENOSPC."""
    chunk = b"\0" * (1 << 16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as e:
                if e.errno != 28:
                    raise
                if len(chunk) == 1:
                    return
                chunk = chunk[:len(chunk) // 16 or 1]
    finally:
        os.close(fd)


def free_kib(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // 1024


@pytest.fixture
def small_state(tmp_path):
    state = tmp_path / "state"
    os.makedirs(state)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=0755" % TMPFS_MIB,
                    "sluice-full-disk", str(state)], check=True)
    try:
        yield str(state)
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def test_full_disk_fails_the_operation_and_corrupts_nothing(tmp_path, small_state, images):
    big = build_big_image(tmp_path)
    d = Daemon(small_state, free_port())
    d.start()
    try:
        d.cli("deploy", "hello", "--image", images["hello"])
        assert d.curl("hello")[:1] == (200,)
        services = strip(d.json("services"))
        revisions = d.json("revisions")["items"]
        images_before = d.json("images")
        layers = layer_dirs(small_state)

        # 1. A layer larger than the free space: the import fails and says why.
        assert free_kib(small_state) < BIG_MIB * 1024
        r = d.cli("deploy", "big", "--image", big, check=False)
        print("\nbig import on a %d MiB tmpfs: rc=%d: %s" % (TMPFS_MIB, r.returncode,
                                                            r.stderr.strip()))
        assert r.returncode != 0
        assert says_no_space(r.stderr), r.stderr
        # Nothing half-written: no layer, no temp dir, no service, no image.
        assert layer_dirs(small_state) == layers
        assert tmp_entries(small_state) == []
        assert strip(d.json("services")) == services
        assert [x["metadata"]["name"] for x in d.json("revisions")["items"]] == \
            [x["metadata"]["name"] for x in revisions]
        assert d.json("images") == images_before
        code, body = d.curl("hello")
        assert code == 200 and "revision=hello-00001" in body

        # 2. The filesystem completely full: a store write (a new revision of
        # hello, whose layers are already present) fails with a clear error
        # or succeeds; either way the store stays coherent and hello serves.
        filler = os.path.join(small_state, "filler")
        fill(filler)
        print("full: %d KiB free" % free_kib(small_state))
        r = d.cli("deploy", "hello", "--env", "V=2", "--wait-timeout", "30", check=False)
        print("deploy hello V=2 on a full disk: rc=%d: %s" % (r.returncode, r.stderr.strip()))
        r2 = d.cli("deploy", "other", "--image", images["hello"], "--wait-timeout", "30",
                   check=False)
        print("deploy other on a full disk: rc=%d: %s" % (r2.returncode, r2.stderr.strip()))
        for res in (r, r2):
            if res.returncode != 0:
                assert says_no_space(res.stderr), res.stderr
        code, body = d.curl("hello")
        assert code == 200 and "revision=hello-" in body, (code, body)
        # A failed write changed nothing, in memory or on disk.
        assert strip(d.json("services")) == services

        # 3. Space back: the daemon works as before.
        os.unlink(filler)
        d.cli("deploy", "after", "--image", images["hello"])
        code, body = d.curl("after")
        assert code == 200 and "revision=after-00001" in body
        code, body = d.curl("hello")
        assert code == 200 and "revision=hello-" in body
        assert layer_dirs(small_state) == layers
        assert tmp_entries(small_state) == []

        services = strip(d.json("services"))
        assert [s["metadata"]["name"] for s in services] == ["after", "hello"]

        # The store on disk is intact and says what the daemon said.
        rc = d.stop()
        assert rc == 0, "daemon exited %d: %s" % (rc, d.daemon_log())
        assert [m for m in mounts_under(small_state) if m != small_state] == []
        db = sqlite3.connect(os.path.join(small_state, "sluice.db"))
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            db.close()
        d.start()
        assert strip(d.json("services")) == services
        code, body = d.curl("hello")
        assert code == 200 and "revision=hello-00001" in body
        rc = d.stop()
        assert rc == 0, "daemon exited %d: %s" % (rc, d.daemon_log())
        assert [m for m in mounts_under(small_state) if m != small_state] == []
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
