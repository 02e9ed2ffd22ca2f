"""Metering the way Cloud Run bills (overlapping requests count once),
beside per-request and per-lifetime models; Prometheus metrics."""
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

from conftest import free_port, hey, open_file_limits, scrape_metrics, unlabelled_metrics


def usage(d, name):
    return json.loads(d.cli("usage", name, "-o", "json").stdout)


def seconds(report, model):
    return report["totals"]["models"][model]["seconds"]


def burst(d, name, n, ms):
    """n concurrent requests of `ms` each; returns wall time of the burst."""
    t0 = time.time()
    codes, errors, out = hey("http://127.0.0.1:%d/sleep?ms=%d" % (d.port, ms), "-host",
                             d.host(name), "-n", str(n), "-c", str(n))
    assert codes == {200: n}, out
    return time.time() - t0


@pytest.mark.parametrize("concurrency,cloudrun,lam", [(10, 1.0, 10.0), (1, 10.0, 10.0)])
def test_concurrent_requests_bill_once(daemon, images, concurrency, cloudrun, lam):
    d = daemon
    name = "c%d" % concurrency
    d.cli("deploy", name, "--image", images["hello"], "--concurrency", str(concurrency),
          "--max", "1", "--min", "1")
    time.sleep(0.3)
    before = usage(d, name)
    wall = burst(d, name, 10, 1000)
    time.sleep(0.2)
    after = usage(d, name)
    cr = seconds(after, "cloudrun") - seconds(before, "cloudrun")
    lm = seconds(after, "lambda") - seconds(before, "lambda")
    print("concurrency %d: burst took %.3f s; billed cloudrun %.3f s, lambda %.3f s"
          % (concurrency, wall, cr, lm))
    # One busy period of ~1 s (or ~10 s back to back), rounded up to 100 ms:
    # never less than the requests' own time, never more than the burst as
    # the client measured it, rounded up.
    assert cloudrun - 0.05 <= cr <= max(cloudrun, wall) + 0.12, after
    assert lam - 0.05 <= lm <= lam + max(0.2, (wall - cloudrun) * 10), after
    assert after["totals"]["requests"] - before["totals"]["requests"] == 10
    # Costs and savings are reported next to the seconds.
    assert "cost" in after["totals"]["models"]["cloudrun"]
    assert "savings" in after["totals"]


def test_usage_survives_restart(daemon, images):
    d = daemon
    d.cli("deploy", "keep", "--image", images["hello"], "--min", "1")
    burst(d, "keep", 5, 200)
    time.sleep(0.2)
    before = usage(d, "keep")
    assert d.stop() == 0
    d.start()
    after = usage(d, "keep")
    assert after["totals"]["requests"] >= before["totals"]["requests"] == 5
    assert seconds(after, "cloudrun") >= seconds(before, "cloudrun") - 0.001


@pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus is not installed")
def test_prometheus_scrapes_request_count(make_daemon, images, tmp_path):
    mport = free_port()
    d = make_daemon("--metrics-listen", "127.0.0.1:%d" % mport)
    d.cli("deploy", "prom", "--image", images["hello"])
    n = 40
    codes, errors, out = hey("http://127.0.0.1:%d/" % d.port, "-host", d.host("prom"), "-n",
                             str(n), "-c", "4")
    assert codes == {200: n}, out
    pport = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n"
                   "  - job_name: sluice\n    static_configs:\n"
                   "      - targets: ['127.0.0.1:%d']\n" % mport)
    p = subprocess.Popen(["prometheus", "--config.file=%s" % cfg,
                          "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
                          "--web.listen-address=127.0.0.1:%d" % pport],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        q = urllib.parse.quote('sum(sluice_requests_total{service="prom",code_class="2xx"})')
        url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (pport, q)
        value = None
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    res = json.load(r)["data"]["result"]
                if res:
                    value = float(res[0]["value"][1])
                    if value >= n:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        assert value == n
    finally:
        p.terminate()
        p.wait(10)


def test_retired_revision_leaves_metrics(make_daemon, images):
    """A revision out of every traffic target stops, and its series leave
    /metrics (the series cap is per family: a service redeployed hundreds of
    times must not fill it); the serving revision's stay."""
    mport = free_port()
    d = make_daemon("--metrics-listen", "127.0.0.1:%d" % mport)

    d.cli("deploy", "churn", "--image", images["hello"], "--env", "V=1")
    assert d.curl("churn", "/")[0] == 200
    assert 'revision="churn-00001"' in scrape_metrics(mport)
    d.cli("deploy", "churn", "--image", images["hello"], "--env", "V=2")
    assert d.curl("churn", "/")[0] == 200
    deadline = time.time() + 20
    text = scrape_metrics(mport)
    while 'revision="churn-00001"' in text and time.time() < deadline:
        time.sleep(0.2)
        text = scrape_metrics(mport)
    assert 'revision="churn-00001"' not in text
    assert ('sluice_requests_total{namespace="default",service="churn",revision="churn-00002",'
            'code_class="2xx"} 1') in text


def test_same_service_name_in_two_namespaces(make_daemon, images):
    """Series are per namespace: a service named alike in another namespace
    has its own, and deleting one leaves the other's intact (the daemon
    runs under ASan here: a shared series freed twice would abort it)."""
    mport = free_port()
    d = make_daemon("--metrics-listen", "127.0.0.1:%d" % mport)
    for ns in ("team-a", "team-b"):
        d.cli("deploy", "same", "--image", images["hello"], "-n", ns)
    assert d.curl("same", "/", ns="team-a")[0] == 200
    for _ in range(2):
        assert d.curl("same", "/", ns="team-b")[0] == 200
    text = scrape_metrics(mport)
    for ns, n in (("team-a", 1), ("team-b", 2)):
        assert ('sluice_requests_total{namespace="%s",service="same",revision="same-00001",'
                'code_class="2xx"} %d' % (ns, n)) in text, text
    d.cli("delete", "same", "-n", "team-a")
    assert d.curl("same", "/", ns="team-b")[0] == 200
    text = scrape_metrics(mport)
    assert 'namespace="team-a"' not in text
    assert ('sluice_requests_total{namespace="team-b",service="same",revision="same-00001",'
            'code_class="2xx"} 3') in text, text
    assert d.stop() == 0
    assert "AddressSanitizer" not in d.daemon_log()


def test_process_metrics(make_daemon, images):
    """The daemon's own figures under the client libraries' names, and its
    heap in use: what an operator watches for a leak."""
    mport = free_port()
    d = make_daemon("--metrics-listen", "127.0.0.1:%d" % mport)
    d.cli("deploy", "proc", "--image", images["hello"])
    assert d.curl("proc", "/")[0] == 200

    m = unlabelled_metrics(scrape_metrics(mport))
    fds = len(os.listdir("/proc/%d/fd" % d.proc.pid))
    max_fds = open_file_limits(d.proc.pid)[0]
    with open("/proc/%d/status" % d.proc.pid) as f:
        rss = int([l for l in f if l.startswith("VmRSS:")][0].split()[1]) * 1024
    assert m["process_cpu_seconds_total"] > 0
    assert abs(m["process_open_fds"] - fds) <= 3, (m["process_open_fds"], fds)
    assert m["process_max_fds"] == max_fds
    assert 0.5 * rss < m["process_resident_memory_bytes"] < 2 * rss
    with open("/proc/%d/maps" % d.proc.pid) as f:
        asan = "libasan" in f.read()
    if asan:  # the sanitizer's allocator: glibc's malloc has nothing to tell
        assert m["sluice_heap_in_use_bytes"] == 0
    else:
        assert 0 < m["sluice_heap_in_use_bytes"] < m["process_resident_memory_bytes"]
    later = unlabelled_metrics(scrape_metrics(mport))
    assert later["process_cpu_seconds_total"] >= m["process_cpu_seconds_total"]
