#!/bin/sh
# build-image.sh OUTDIR — the distroless sample image.
#
# Root filesystem: the static /hello server, /etc/passwd and /etc/group with
# root and nonroot (65532), /home/nonroot, /etc/ssl/certs/ca-certificates.crt
# from the host when present, and a world-writable sticky /tmp. USER 65532,
# ENTRYPOINT /hello, ExposedPorts 8080/tcp.
#
# Writes OUTDIR/oci (OCI layout, tag latest) and OUTDIR/hello.tar
# (docker-archive, RepoTags hello:latest). Deterministic (fixed timestamps)
# and skipped when its inputs did not change since the last build.
set -eu

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
epoch=${SOURCE_DATE_EPOCH:-0}
certs=/etc/ssl/certs/ca-certificates.crt

# One build at a time per OUTDIR.
if command -v flock >/dev/null && [ -z "${SLUICE_IMAGE_LOCKED:-}" ]; then
    SLUICE_IMAGE_LOCKED=1 exec flock "$out/.lock" "$0" "$@"
fi

make -s -C "$repo" examples/hello/hello >&2

stamp=$(cat "$repo/examples/hello/hello" "$0" "$repo/scripts/mkimage.sh" \
    "$([ -f "$certs" ] && echo "$certs" || echo /dev/null)" | sha256sum | cut -d' ' -f1)
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] &&
    [ -f "$out/oci/index.json" ] && [ -f "$out/hello.tar" ]; then
    echo "build-image: $out is up to date"
    exit 0
fi
rm -f "$out/.stamp"

rootfs=$(mktemp -d "$out/.rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT INT TERM
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot"
install -m 0755 "$repo/examples/hello/hello" "$rootfs/hello"
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
[ -f "$certs" ] && install -m 0644 "$certs" "$rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/home/nonroot"
chmod 0755 "$rootfs"
if [ "$(id -u)" = 0 ]; then
    chown -R 0:0 "$rootfs"
    chown 65532:65532 "$rootfs/home/nonroot"
fi
find "$rootfs" -exec touch -h -d "@$epoch" {} +

"$repo/scripts/mkimage.sh" --rootfs "$rootfs" --out "$out/oci" --tag latest \
    --user 65532 --entrypoint /hello --workdir / --port 8080 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --docker-archive "$out/hello.tar" --name hello:latest --epoch "$epoch"
echo "$stamp" >"$out/.stamp"
