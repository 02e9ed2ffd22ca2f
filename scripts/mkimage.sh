#!/bin/sh
# mkimage.sh — pack root filesystem directories into an OCI image layout
# (and optionally a docker-archive), offline, with umoci and skopeo: the way
# users build images for `sluice deploy --image oci:DIR:TAG`.
#
#   scripts/mkimage.sh --rootfs DIR [--rootfs DIR2 | --whiteout PATH]... \
#       --out OCI_DIR [--tag latest] [--user 65532] [--entrypoint ARG]... \
#       [--cmd ARG]... [--env K=V]... [--workdir /] [--port 8080]... \
#       [--docker-archive FILE [--name NAME]] [--epoch SECONDS]
#
# Each --rootfs becomes one layer holding what DIR adds or changes over the
# layers below, and each --whiteout one layer removing PATH, in the order
# given (bottom first). --entrypoint/--cmd repeat to build the
# argument vector. Timestamps in the config and history come from --epoch
# (default $SOURCE_DATE_EPOCH, else 0), so the same inputs give the same
# digests; file mtimes are taken from the rootfs as is. The layout is built
# beside OCI_DIR and moved into place, so an interrupted run leaves the old
# one intact.
set -eu

die() { echo "mkimage: $*" >&2; exit 1; }
usage() { sed -n '2,20s/^# \{0,1\}//p' "$0" >&2; exit 2; }

out="" tag="latest" user="" workdir="" archive="" name="" epoch="${SOURCE_DATE_EPOCH:-0}"
layers="" # newline-separated "rootfs:DIR" / "whiteout:PATH"
cfg=""    # newline-separated umoci config arguments
nl='
'
add_cfg() { cfg="$cfg$1$nl"; }
need() { [ $# -ge 2 ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
    case "$1" in
    --rootfs) need "$@"; [ -d "$2" ] || die "--rootfs $2: not a directory"
        layers="${layers}rootfs:$(cd "$2" && pwd)$nl"; shift 2 ;;
    --whiteout) need "$@"; layers="${layers}whiteout:$2$nl"; shift 2 ;;
    --out) need "$@"; out=$2; shift 2 ;;
    --tag) need "$@"; tag=$2; shift 2 ;;
    --user) need "$@"; user=$2; shift 2 ;;
    --entrypoint) need "$@"; add_cfg "--config.entrypoint=$2"; shift 2 ;;
    --cmd) need "$@"; add_cfg "--config.cmd=$2"; shift 2 ;;
    --env) need "$@"; case "$2" in *=*) ;; *) die "--env wants K=V, got '$2'" ;; esac
        add_cfg "--config.env=$2"; shift 2 ;;
    --workdir) need "$@"; workdir=$2; shift 2 ;;
    --port) need "$@"; case "$2" in *[!0-9]*|'') die "--port wants a number, got '$2'" ;; esac
        add_cfg "--config.exposedports=$2/tcp"; shift 2 ;;
    --docker-archive) need "$@"; archive=$2; shift 2 ;;
    --name) need "$@"; name=$2; shift 2 ;;
    --epoch) need "$@"; epoch=$2; shift 2 ;;
    -h|--help) usage ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done
[ -n "$out" ] || die "--out is required"
[ -n "$layers" ] || die "at least one --rootfs is required"
command -v umoci >/dev/null || die "umoci not found (apt-get install umoci)"
if [ -n "$archive" ]; then
    command -v skopeo >/dev/null || die "skopeo not found (apt-get install skopeo)"
fi
[ -n "$user" ] && add_cfg "--config.user=$user"
[ -n "$workdir" ] && add_cfg "--config.workingdir=$workdir"
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ) || die "--epoch: bad value '$epoch'"

rootless=""
[ "$(id -u)" = 0 ] || rootless="--rootless"

out_parent=$(dirname "$out")
mkdir -p "$out_parent"
tmp=$(mktemp -d "$out_parent/.mkimage.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
img="$tmp/oci"

# Layers come from unpack/repack of one bundle rather than `umoci insert`:
# insert in umoci < 0.4.8 writes tars without their end-of-archive blocks
# (umoci#436), which GNU tar and other consumers reject.
bundle="$tmp/bundle"
umoci init --layout "$img"
umoci new --image "$img:$tag"
umoci unpack $rootless --image "$img:$tag" "$bundle" >/dev/null
echo "$layers" | while IFS= read -r l; do
    [ -n "$l" ] || continue
    case "$l" in
    rootfs:*)
        cp -a "${l#rootfs:}/." "$bundle/rootfs/"
        what="mkimage.sh --rootfs" ;;
    whiteout:*)
        rel=${l#whiteout:}
        rel=${rel#/}
        case "/$rel/" in */../*|*/./*|//) die "--whiteout ${l#whiteout:}: bad path" ;; esac
        victim="$bundle/rootfs/$rel"
        [ -e "$victim" ] || [ -L "$victim" ] || die "--whiteout /$rel: not in the layers below"
        parent=$(dirname "$victim")
        mtime=$(stat -c %y "$parent")
        rm -rf "$victim"
        touch -h -d "$mtime" "$parent" # only the removal, not the parent, changes
        what="mkimage.sh --whiteout /$rel" ;;
    esac
    umoci repack --refresh-bundle --image "$img:$tag" --history.created "$created" \
        --history.created_by "$what" "$bundle"
done

# The config arguments may contain spaces: pass them one per line.
set -- --image "$img:$tag" --created "$created" --history.created "$created" \
    --history.created_by "mkimage.sh" --os linux \
    --architecture "$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')"
old_ifs=$IFS
IFS=$nl
for a in $cfg; do set -- "$@" "$a"; done
IFS=$old_ifs
umoci config "$@"
umoci gc --layout "$img"

rm -rf "$out.old"
[ -e "$out" ] && mv "$out" "$out.old"
mv "$img" "$out"
rm -rf "$out.old"

if [ -n "$archive" ]; then
    [ -n "$name" ] || name=$(basename "$(cd "$out" && pwd)")
    case "$name" in *:*) ;; *) name="$name:$tag" ;; esac
    rm -f "$archive.tmp"
    skopeo --insecure-policy copy --quiet "oci:$out:$tag" "docker-archive:$archive.tmp:$name"
    mv "$archive.tmp" "$archive"
fi
echo "mkimage: wrote oci:$out:$tag${archive:+ and docker-archive:$archive}"
