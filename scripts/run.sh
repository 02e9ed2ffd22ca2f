#!/bin/sh
# `make run`: start `sluice serve` (embedded SQLite state), deploy the sample
# service, print its URL, and keep serving in the foreground until Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
BIN=$PWD/build/sluice
STATE=${SLUICE_STATE_DIR:-/var/lib/sluice}
LISTEN=${SLUICE_LISTEN:-127.0.0.1:8080}
export SLUICE_STATE_DIR=$STATE

sh examples/hello/build-image.sh build/hello-image >/dev/null

"$BIN" serve --listen "$LISTEN" --state-dir "$STATE" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 0' INT TERM

i=0
until [ -S "$STATE/sluice.sock" ] && "$BIN" services >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 $pid 2>/dev/null; then
        echo "run: sluice serve did not come up" >&2
        exit 1
    fi
    sleep 0.1
done

url=$("$BIN" deploy hello --image oci:build/hello-image/oci:latest --env GREETING=hello)
echo
echo "The sample service is up:  curl $url/"
echo "Try: $BIN services | $BIN describe hello | $BIN logs hello -f"
echo "Serving in the foreground; Ctrl-C stops sluice."
wait $pid
