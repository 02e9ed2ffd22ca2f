#!/bin/sh
# h2c-image.sh OUTDIR — an HTTP/2-only (h2c) test image: OUTDIR/oci:latest.
#
# nghttpd (nghttp2's server, with the shared libraries it links) serving
# /www over HTTP/2 without TLS on $PORT: it speaks no HTTP/1.1, like a gRPC
# server. POST and PUT bodies are echoed back (--echo-upload), and every
# response ends with the trailer "grpc-status: 0" after its body. busybox
# provides the shell, which stays PID 1 to pass SIGTERM on (nghttpd as PID 1
# would ignore it). /www/grpc.health.v1.Health/Check answers the gRPC health
# check (SERVING; /www-down's says NOT_SERVING). /usr/bin/h2stream (h2stream.c
# beside this script) is a second server for a container's command: its
# responses have no content-length, several DATA frames and trailers.
# USER 65532. Skipped when its inputs did not change.
set -eu

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
epoch=${SOURCE_DATE_EPOCH:-0}
srv=$(command -v nghttpd || true)
[ -n "$srv" ] || { echo "h2c-image: nghttpd not found (apt-get install nghttp2-server)" >&2; exit 1; }
bb=$(command -v busybox || true)
[ -n "$bb" ] || { echo "h2c-image: busybox not found (apt-get install busybox-static)" >&2; exit 1; }

if command -v flock >/dev/null && [ -z "${SLUICE_IMAGE_LOCKED:-}" ]; then
    SLUICE_IMAGE_LOCKED=1 exec flock "$out/.lock" "$0" "$@"
fi

libs=$(ldd "$srv" | awk '/=> \//{print $3} /^\t\/lib/{print $1}')
stamp=$(cat "$srv" $libs "$bb" "$0" "$here/h2stream.c" "$repo/scripts/mkimage.sh" |
    sha256sum | cut -d' ' -f1)
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] && [ -f "$out/oci/index.json" ]; then
    echo "h2c-image: $out is up to date"
    exit 0
fi
rm -f "$out/.stamp"

work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
root=$work/root
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/www" "$root/usr/bin"
${CC:-cc} -std=gnu11 -O2 -o "$work/h2stream" "$here/h2stream.c" -lnghttp2
install -m 0755 "$work/h2stream" "$root/usr/bin/h2stream"
install -m 0755 "$bb" "$root/bin/busybox"
for app in sh cat echo sleep; do
    ln -s busybox "$root/bin/$app"
done
install -m 0755 "$srv" "$root/usr/bin/nghttpd"
for l in $libs $(ldd "$work/h2stream" | awk '/=> \//{print $3} /^\t\/lib/{print $1}'); do
    mkdir -p "$root$(dirname "$l")"
    cp -L "$l" "$root$l"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
echo "hello over h2c" >"$root/www/index.html"
# grpc.health.v1.Health/Check answered with a HealthCheckResponse (a
# length-prefixed message, status = field 1): SERVING under /www,
# NOT_SERVING under /www-down (serve that with -d /www-down)
mkdir -p "$root/www/grpc.health.v1.Health" "$root/www-down/grpc.health.v1.Health"
printf '\000\000\000\000\002\010\001' >"$root/www/grpc.health.v1.Health/Check"
printf '\000\000\000\000\002\010\002' >"$root/www-down/grpc.health.v1.Health/Check"
head -c 1048576 /dev/zero | tr '\0' 'x' >"$root/www/big"
chmod 1777 "$root/tmp"
[ "$(id -u)" = 0 ] && chown -R 0:0 "$root"
find "$root" -exec touch -h -d "@$epoch" {} +

"$repo/scripts/mkimage.sh" --rootfs "$root" --out "$out/oci" --tag latest --user 65532 \
    --port 8080 --workdir / --env PATH=/bin:/usr/bin \
    --cmd /bin/sh --cmd -c \
    --cmd 'nghttpd --no-tls -d /www --echo-upload --trailer "grpc-status: 0" "${PORT:-8080}" & pid=$!; trap "kill \$pid; wait \$pid; exit 0" TERM; wait $pid' \
    --epoch "$epoch"
echo "$stamp" >"$out/.stamp"
