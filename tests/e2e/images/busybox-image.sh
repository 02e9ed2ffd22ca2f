#!/bin/sh
# busybox-image.sh OUTDIR — a small multi-layer test image: OUTDIR/oci:latest.
#
# Layers (bottom first), so that import's whiteout handling is exercised
# end to end:
#   1. base: /bin/busybox (static) + applet symlinks, /etc/passwd and
#      /etc/group with root and nonroot (65532), /tmp (1777), /www/index.html,
#      /etc/removed (deleted again by layer 3), /etc/base
#   2. extra: /etc/layer2, /www/extra.html
#   3. whiteout of /etc/removed
# In a container: /etc/base, /etc/layer2 exist, /etc/removed does not.
#
# Config: USER 65532, ExposedPorts 8080/tcp, PATH=/bin, and a default command
# serving /www with busybox httpd on $PORT (default 8080). Deterministic
# (fixed timestamps) and skipped when inputs did not change.
set -eu

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
epoch=${SOURCE_DATE_EPOCH:-0}
bb=$(command -v busybox || true)
[ -n "$bb" ] || { echo "busybox-image: busybox not found (apt-get install busybox-static)" >&2; exit 1; }
case "$(file -L "$bb" 2>/dev/null)" in
*"dynamically linked"*) echo "busybox-image: $bb is not static (apt-get install busybox-static)" >&2; exit 1 ;;
esac

if command -v flock >/dev/null && [ -z "${SLUICE_IMAGE_LOCKED:-}" ]; then
    SLUICE_IMAGE_LOCKED=1 exec flock "$out/.lock" "$0" "$@"
fi

stamp=$(cat "$bb" "$0" "$repo/scripts/mkimage.sh" | sha256sum | cut -d' ' -f1)
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] && [ -f "$out/oci/index.json" ]; then
    echo "busybox-image: $out is up to date"
    exit 0
fi
rm -f "$out/.stamp"

work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
base=$work/base extra=$work/extra
mkdir -p "$base/bin" "$base/etc" "$base/tmp" "$base/www" "$base/home/nonroot" \
    "$extra/etc" "$extra/www"
install -m 0755 "$bb" "$base/bin/busybox"
for app in sh ash env id cat echo sleep ls httpd wget nc ps mkdir rm touch true false \
    grep head tail printenv kill pwd whoami hostname uname date mount stat test \
    readlink wc sed awk sort seq xargs find chmod cp mv ln df du free top timeout; do
    ln -s busybox "$base/bin/$app"
done
cat >"$base/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nonroot:x:65532:65532:nonroot:/home/nonroot:/bin/sh
EOF
cat >"$base/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
echo "from the base layer" >"$base/etc/base"
echo "this file is removed by a whiteout in layer 3" >"$base/etc/removed"
echo "hello from busybox httpd" >"$base/www/index.html"
echo "layer 2" >"$extra/etc/layer2"
echo "extra page from layer 2" >"$extra/www/extra.html"
chmod 1777 "$base/tmp"
chmod 0755 "$base" "$extra" "$base/etc" "$extra/etc" "$base/www" "$extra/www"
if [ "$(id -u)" = 0 ]; then
    chown -R 0:0 "$base" "$extra"
    chown 65532:65532 "$base/home/nonroot"
fi
find "$base" "$extra" -exec touch -h -d "@$epoch" {} +

"$repo/scripts/mkimage.sh" --rootfs "$base" --rootfs "$extra" --whiteout /etc/removed \
    --out "$out/oci" --tag latest --user 65532 --port 8080 --workdir / --env PATH=/bin \
    --cmd /bin/sh --cmd -c --cmd 'exec httpd -f -v -p "${PORT:-8080}" -h /www' \
    --epoch "$epoch"
echo "$stamp" >"$out/.stamp"
