/*
 * rootfs.h — an instance's root filesystem and the image's USER.
 *
 * An instance dir holds `upper/` (a size-limited tmpfs with `diff/` and
 * `work/`) and `rootfs/` (overlayfs: the image layers read-only below, the
 * tmpfs diff on top). Writes land in memory and vanish with the instance;
 * the shared layers are never modified. User names are resolved against the
 * image's own /etc/passwd and /etc/group, read from the topmost layer that
 * has them, with every path resolved inside the layer (symlinks cannot point
 * out of it).
 */
#ifndef SL_ROOTFS_H
#define SL_ROOTFS_H

#include "common.h"
#include "oci_spec.h"

/* Mount INST_DIR/upper (tmpfs of scratch_bytes) and INST_DIR/rootfs
 * (overlay). layers are bottom first, as in sl_image_t. On failure nothing
 * stays mounted. */
int sl_rootfs_mount(const char *inst_dir, char *const *layers, size_t n_layers,
                    int64_t scratch_bytes, sl_error_t *err);

/* A user namespace whose container ids [0, size) map to host
 * [host_uid, +size) and [host_gid, +size), held by the returned O_CLOEXEC
 * fd (no process stays in it), for idmapped mounts. Forks a short-lived
 * helper. Returns the fd or < 0 with err set. */
int sl_rootfs_userns_open(uint32_t host_uid, uint32_t host_gid, uint32_t size, sl_error_t *err);

/*
 * A read-only root for a container in a user namespace: every layer is
 * cloned as an idmapped, read-only mount (through userns_fd, so files the
 * image owns as uid N appear to the container as N, not as nobody) under
 * INST_DIR/lower/<i>, topped by a skeleton layer (INST_DIR/skel: the
 * /proc, /dev, /sys, /tmp mount points a read-only root cannot create, the
 * directories `mountpoints` and the empty files `file_mountpoints`), and
 * a read-only overlay of them is mounted on INST_DIR/rootfs. Nothing is
 * copied or chowned; the layers stay untouched. On failure nothing stays
 * mounted.
 */
int sl_rootfs_mount_idmapped(const char *inst_dir, char *const *layers, size_t n_layers,
                             int userns_fd, char *const *mountpoints, char *const *file_mountpoints,
                             sl_error_t *err);

/* Unmount (lazily) every mount at or below dir, newest first. Returns the
 * number of mounts removed or < 0 with err set. */
int sl_rootfs_umount_under(const char *dir, sl_error_t *err);

/*
 * Resolve a Docker USER ("", "name", "uid", "name:group", "uid:gid", …)
 * against the layers (bottom first; the topmost etc/passwd wins). Unknown
 * names are errors naming the user; a numeric uid without a passwd entry
 * gets gid 0. Supplementary groups come from etc/group membership.
 */
int sl_rootfs_resolve_user(char *const *layers, size_t n_layers, const char *user,
                           sl_oci_user_t *out, sl_error_t *err);

#endif
