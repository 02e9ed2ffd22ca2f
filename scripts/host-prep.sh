#!/bin/sh
# Prepares cgroups for crun. On hybrid hosts (v1 controllers with a v2
# hierarchy mounted at /sys/fs/cgroup/unified that claims `hugetlb`), crun 1.8
# refuses to run until hugetlb is given its own v1 hierarchy.
set -eu
[ "$(id -u)" = 0 ] || exit 0
CG=/sys/fs/cgroup
if [ -f "$CG/unified/cgroup.controllers" ] && [ ! -d "$CG/hugetlb" ] || \
   { [ -d "$CG/hugetlb" ] && ! mountpoint -q "$CG/hugetlb"; }; then
    if [ -f "$CG/memory/memory.limit_in_bytes" ]; then
        echo "host-prep: mounting the hugetlb controller on $CG/hugetlb (crun needs it on hybrid cgroups)"
        mount -o remount,rw "$CG" 2>/dev/null || true
        mkdir -p "$CG/hugetlb"
        mount -t cgroup -o hugetlb cgroup "$CG/hugetlb" || {
            echo "host-prep: could not mount hugetlb; crun may refuse to start containers (use --runtime runc)" >&2
        }
    fi
fi
exit 0
