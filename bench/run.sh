#!/bin/sh
# bench/run.sh [--quick] [--only LIST] [--cold-mode auto|zero|fresh] [--no-perf]
#
# sluice benchmarks (issue 6), run by `make bench` (BENCH_ARGS=--quick for a
# smoke run under two minutes). Needs root, crun, wrk, hey, nginx, nsenter,
# python3; perf is optional (full mode profiles the router with it).
#
# Uses a private copy of build/sluice (so concurrent rebuilds cannot swap the
# binary mid-run), its own state dir /tmp/sluice-bench-<pid> and ports
# 18600 (router) and 18680/18681 (nginx, inside the backend's netns). The daemon is
# always stopped with SIGTERM; the run fails if mounts are left behind.
# The full run's data-path stage also starts a second daemon (port 18601,
# --busy-poll) and, on a VM whose haltpoll cpuidle driver has
# guest_halt_poll_ns set away from the kernel's default, sets it to 200000
# for one sub-stage and puts the old value back (bench/README.md, stage 2).
# Results: bench/out/results-{quick,full}.json; see bench/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench: must run as root (crun, namespaces)" >&2; exit 2; }
for t in wrk hey nginx nsenter crun python3; do
    command -v "$t" >/dev/null || { echo "bench: $t is required" >&2; exit 2; }
done
[ -x "$repo/build/sluice" ] || make -s -C "$repo" build

base=/tmp/sluice-bench-$$
mkdir -p "$base"
cp "$repo/build/sluice" "$base/sluice"
sh "$repo/examples/hello/build-image.sh" "$base/img" >/dev/null
h2c=""
if command -v nghttpd >/dev/null && sh "$repo/tests/e2e/images/h2c-image.sh" "$base/h2c" >/dev/null; then
    h2c="--h2c-oci $base/h2c/oci"
fi
status=0
# shellcheck disable=SC2086
python3 "$here/bench.py" --bin "$base/sluice" --oci "$base/img/oci" $h2c --base "$base" "$@" || status=$?
if grep -q "$base" /proc/self/mountinfo; then
    echo "bench: mounts left under $base:" >&2
    grep "$base" /proc/self/mountinfo >&2
    exit 1
fi
[ "$status" = 0 ] && rm -rf "$base" || echo "bench: state kept in $base (exit $status)" >&2
exit "$status"
