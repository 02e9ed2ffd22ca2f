"""A container's securityContext is enforced as Kubernetes enforces it, or
refused: runAsUser/runAsGroup, runAsNonRoot, readOnlyRootFilesystem,
capabilities; and workingDir. Nothing is accepted and then ignored."""
import os
import shutil

import pytest

from conftest import service_manifest

REPORT = r"""
mkdir -p /tmp/www
{ id; pwd; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status
  awk '$5 == "/" { split($6, o, ","); print "root=" o[1] }' /proc/self/mountinfo
} > /tmp/www/report
exec httpd -f -p "$PORT" -h /tmp/www
"""


def service(name, image, **container):
    return service_manifest(name, image, REPORT, **container)


def report(d, name):
    code, body = d.curl(name, "/report")
    assert code == 200, body
    return body


def cap_eff(text):
    return int([l for l in text.splitlines() if l.startswith("CapEff:")][0].split()[1], 16)


CAP_NET_BIND_SERVICE = 1 << 10
CAP_CHOWN = 1 << 0


def test_security_context_is_enforced(daemon, images):
    d = daemon
    # the image's USER (65532), its WorkingDir, the default capabilities
    d.cli("apply", "-f", "-", "--wait", input=service("plain", images["busybox"]))
    base = report(d, "plain")
    assert "uid=65532" in base and "root=rw" in base, base
    assert base.splitlines()[1] == "/"

    sc = {"runAsUser": 1000, "runAsGroup": 3000, "runAsNonRoot": True,
          "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
          "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
          "seccompProfile": {"type": "RuntimeDefault"}}
    d.cli("apply", "-f", "-", "--wait",
          input=service("locked", images["busybox"], securityContext=sc, workingDir="/etc"))
    text = report(d, "locked")
    assert "uid=1000 gid=3000" in text, text
    assert text.splitlines()[1] == "/etc", text
    assert "root=ro" in text, text
    assert "NoNewPrivs:\t1" in text, text
    # as uid 1000 the effective set is empty; the bounding set says what it may hold
    pid = d.json("instances", "locked")["items"][0]["pid"]
    with open("/proc/%d/status" % pid) as f:
        status = f.read()
    bnd = int([l for l in status.splitlines() if l.startswith("CapBnd:")][0].split()[1], 16)
    assert bnd == CAP_NET_BIND_SERVICE, hex(bnd)

    # runAsGroup alone keeps the image's user
    d.cli("apply", "-f", "-", "--wait",
          input=service("grp", images["busybox"], securityContext={"runAsGroup": 4000}))
    assert "uid=65532(nonroot) gid=4000" in report(d, "grp")

    # root with capabilities dropped: CHOWN gone, the rest there
    sc = {"runAsUser": 0, "capabilities": {"drop": ["CHOWN", "CAP_KILL", "SYS_ADMIN"]}}
    d.cli("apply", "-f", "-", "--wait",
          input=service("rootish", images["busybox"], securityContext=sc))
    text = report(d, "rootish")
    eff = cap_eff(text)
    assert eff & CAP_CHOWN == 0 and eff & CAP_NET_BIND_SERVICE, hex(eff)


def test_run_as_non_root_refuses_a_root_image(daemon, images, tmp_path):
    """runAsNonRoot with a container that would run as root: refused at
    apply when runAsUser says 0, else the instance fails to start with the
    reason (as Kubernetes fails the container); nothing runs as root."""
    d = daemon
    sc = {"runAsNonRoot": True, "runAsUser": 0}
    r = d.cli("apply", "-f", "-", input=service("x", images["busybox"], securityContext=sc),
              check=False)
    assert r.returncode != 0 and "contradicts runAsNonRoot" in r.stderr, r.stderr
    assert d.json("services")["items"] == []
    # an image without a USER runs as root: a bare root filesystem
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("busybox"), root / "bin" / "busybox")
    os.symlink("busybox", root / "bin" / "sh")
    r = d.cli("apply", "-f", "-", "--wait",
              input=service("asroot", "dir:%s" % root, securityContext={"runAsNonRoot": True}),
              check=False)
    assert r.returncode != 0 and "runAsNonRoot" in r.stderr, r.stderr
    assert all(i["state"] != "Ready" for i in d.json("instances", "asroot")["items"])
    # with a user given, the same image runs
    sc = {"runAsNonRoot": True, "runAsUser": 1234}
    d.cli("apply", "-f", "-", "--wait",
          input=service("asroot", "dir:%s" % root, securityContext=sc))
    assert "uid=1234" in report(d, "asroot")


@pytest.mark.parametrize("sc,needle", [
    ({"privileged": True}, "privileged containers are not supported"),
    ({"allowPrivilegeEscalation": True}, "no_new_privs"),
    ({"capabilities": {"add": ["SYS_ADMIN"]}}, "not a capability that may be added"),
    ({"capabilities": {"add": ["ALL"]}}, "not a capability that may be added"),
    ({"capabilities": {"drop": ["NOPE"]}}, "not a capability"),
    ({"seccompProfile": {"type": "Unconfined"}}, "only RuntimeDefault"),
    ({"seLinuxOptions": {"level": "s0"}}, "not supported"),
    ({"runAsUser": -1}, "must be 0..2147483647"),
    ({"readOnlyRootFilesystem": "yes"}, "must be true or false"),
    ({"fsGroup": 1}, "unknown field"),
])
def test_unsupported_security_context_is_refused(daemon, images, sc, needle):
    d = daemon
    r = d.cli("apply", "-f", "-", input=service("bad", images["busybox"], securityContext=sc),
              check=False)
    assert r.returncode != 0 and needle in r.stderr and "securityContext" in r.stderr, r.stderr
    assert d.json("services")["items"] == []
    r = d.cli("apply", "-f", "-", input=service("bad", images["busybox"], workingDir="etc"),
              check=False)
    assert r.returncode != 0 and "workingDir: must be an absolute path" in r.stderr, r.stderr
