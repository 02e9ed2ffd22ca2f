"""Crash and restart: `kill -9` of the daemon under load loses no stored
state, leaves no instance behind once it is back, and the service serves
again promptly; `kill -9` of an instance under load costs at most the
requests it held."""
import http.client
import os
import signal
import threading
import time

from conftest import Daemon, cgroups_named, mounts_under

CONCURRENCY = 4


class Load:
    """CONCURRENCY keep-alive clients hammering one service on loopback."""

    def __init__(self, port, host):
        self.port, self.host = port, host
        self.ok = 0
        self.errors = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(CONCURRENCY)]

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/", headers={"Host": self.host})
                r = conn.getresponse()
                body = r.read()
                if r.status == 200 and b"revision=" in body:
                    self.ok += 1
                else:
                    self.errors.append((time.time(), r.status, body[:100]))
            except (OSError, http.client.HTTPException) as e:
                self.errors.append((time.time(), "exc", repr(e)))
                if conn:
                    conn.close()
                conn = None
                time.sleep(0.02)
        if conn:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        for t in self.threads:
            t.join()


def strip(listing):
    """Objects minus what a restart legitimately rewrites (status, and the
    resourceVersion its status write bumps)."""
    out = []
    for o in listing["items"]:
        o = {k: v for k, v in o.items() if k != "status"}
        o["metadata"] = {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}
        out.append(o)
    return sorted(out, key=lambda o: o["metadata"]["name"])


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def paths_named(root, names):
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        found += [os.path.join(dirpath, d) for d in dirnames if d in names]
    return found


def serve_time(d, t0, limit=10.0):
    while time.time() - t0 < limit:
        code, body = d.curl("hello", "/", check=False)
        if code == 200 and "revision=hello-00001" in body:
            return time.time() - t0
        time.sleep(0.02)
    raise AssertionError("not serving %.0fs after restart: %s" % (limit, d.daemon_log()[-3000:]))


def test_daemon_kill9_under_load_then_restart(tmp_path, images):
    state = str(tmp_path / "state")
    d = Daemon(state, __import__("conftest").free_port())
    d.start()
    try:
        d.cli("deploy", "hello", "--image", images["hello"], "--concurrency", "8")
        assert d.curl("hello", "/")[0] == 200
        services, revisions = d.json("services"), d.json("revisions")
        images_before = d.json("images")
        with Load(d.port, "hello.localhost") as load:
            time.sleep(2)
            old = d.json("instances", "hello")["items"]
            assert old, "no instance running under load"
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            time.sleep(0.5)
        assert load.ok > 0
        assert d.stop() == -signal.SIGKILL
        old_ids = [i["name"] for i in old]
        old_pids = [i["pid"] for i in old if i.get("pid")]

        t_spawn = time.time()
        d2 = Daemon(state, d.port)
        d2.start()
        t_up = time.time()
        took = serve_time(d2, t_up)
        print("\nrestart: daemon answering its API %.3fs after exec; hello served "
              "%.3fs after that (%.3fs from exec); %d requests ok before the kill"
              % (t_up - t_spawn, took, time.time() - t_spawn, load.ok))

        # Nothing stored was lost.
        assert strip(d2.json("services")) == strip(services)
        assert strip(d2.json("revisions")) == strip(revisions)
        assert d2.json("images") == images_before

        # The old instances are gone: processes, mounts, cgroups, runtime state.
        deadline = time.time() + 10
        while time.time() < deadline and any(alive(p) for p in old_pids):
            time.sleep(0.1)
        assert [p for p in old_pids if alive(p)] == []
        assert [m for m in mounts_under(state) if any(i in m for i in old_ids)] == []
        assert cgroups_named(old_ids) == []
        assert paths_named(state, set(old_ids)) == []
        new_ids = [i["name"] for i in d2.json("instances", "hello")["items"]]
        assert not set(new_ids) & set(old_ids)

        assert d2.stop() == 0, d2.daemon_log()
        assert mounts_under(state) == []
    finally:
        for x in ("d", "d2"):
            obj = locals().get(x)
            if obj is not None and obj.proc is not None and obj.proc.poll() is None:
                obj.proc.kill()
                obj.proc.wait()


def test_instance_kill9_under_load_is_replaced(daemon, images):
    daemon.cli("deploy", "hello", "--image", images["hello"], "--concurrency", "8")
    assert daemon.curl("hello", "/")[0] == 200
    with Load(daemon.port, "hello.localhost") as load:
        time.sleep(1.5)
        before = daemon.json("instances", "hello")["items"]
        assert len(before) >= 1
        victim = before[0]
        ok_at_kill = load.ok
        os.kill(victim["pid"], signal.SIGKILL)
        t_kill = time.time()
        # keep the load on until a replacement has served a while
        deadline = time.time() + 20
        while time.time() < deadline:
            items = daemon.json("instances", "hello")["items"]
            if any(i["name"] != victim["name"] and i["state"] == "Ready" for i in items) and \
                    load.ok > ok_at_kill + 50:
                break
            time.sleep(0.2)
        time.sleep(1)
    failed = [e for e in load.errors if e[0] >= t_kill - 1]
    print("\ninstance kill: %d ok, %d failed around the kill: %s"
          % (load.ok, len(failed), failed[:4]))
    items = daemon.json("instances", "hello")["items"]
    assert any(i["name"] != victim["name"] for i in items), items
    assert load.ok > ok_at_kill + 50, "service did not recover"
    # At most the requests the instance held (one per client) fail...
    refused = [e for e in failed if b"connect: connection refused" in e[2]]
    held = [e for e in failed if e not in refused]
    assert len(held) <= CONCURRENCY, held
    # ...plus, today, the few requests routed to the dead instance in the
    # moment before the supervisor notices it died: a refused connect sent
    # nothing, so these could be re-routed (known gap, see the issue note).
    assert len(refused) <= 4 * CONCURRENCY, refused
    assert load.errors == failed, load.errors[:4]
    code, body = daemon.curl("hello", "/")
    assert code == 200
