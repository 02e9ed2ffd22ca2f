#!/bin/sh
# Installs the Debian packages sluice needs when they are missing
# (idempotent, non-interactive) and prepares the host for crun.
set -eu

PKGS="build-essential pkg-config clang libclang-rt-14-dev clang-format
libuv1-dev libsqlite3-dev libjansson-dev libyaml-dev libarchive-dev
libcurl4-openssl-dev libssl-dev libcmocka-dev libseccomp-dev libnghttp2-dev
crun runc busybox-static umoci skopeo
python3 python3-pytest python3-yaml python3-h2 nghttp2-server nghttp2-client curl wrk hey nginx file prometheus
iproute2 util-linux procps slirp4netns nftables"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps: missing packages:$missing (run as root to install them)" >&2
        exit 1
    fi
    echo "deps: installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# nginx is a benchmark baseline only; do not leave the distro's default
# server holding port 80.
if command -v nginx >/dev/null && pgrep -x nginx >/dev/null 2>&1; then
    nginx -s stop >/dev/null 2>&1 || true
fi

sh "$(dirname "$0")/host-prep.sh"
