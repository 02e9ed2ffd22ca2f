/*
 * rootfs.c — overlay root filesystems for instances, mount cleanup, and
 * USER resolution against the image's passwd/group files. See rootfs.h.
 */
#include "rootfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#define MOUNT_DATA_MAX 4095 /* mount(2) copies one page of options */
#define ETC_FILE_MAX   (4u << 20)

/* A growing string for mount options. */
typedef struct buf {
    char *p;
    size_t len, cap;
} buf_t;

static void buf_putc(buf_t *b, char c)
{
    if (b->len + 2 > b->cap) {
        b->cap = b->cap ? b->cap * 2 : 256;
        b->p = xrealloc(b->p, b->cap);
    }
    b->p[b->len++] = c;
    b->p[b->len] = '\0';
}

static void buf_puts(buf_t *b, const char *s, bool escape)
{
    for (; *s; s++) {
        if (escape && (*s == ',' || *s == ':' || *s == '\\'))
            buf_putc(b, '\\');
        buf_putc(b, *s);
    }
}

static char *overlay_options(char *const *layers, size_t n, const char *upper, const char *work)
{
    buf_t b = {0};
    buf_puts(&b, "lowerdir=", false);
    for (size_t i = n; i-- > 0;) { /* overlay wants the topmost lower first */
        buf_puts(&b, layers[i], true);
        if (i > 0)
            buf_putc(&b, ':');
    }
    if (upper) {
        buf_puts(&b, ",upperdir=", false);
        buf_puts(&b, upper, true);
        buf_puts(&b, ",workdir=", false);
        buf_puts(&b, work, true);
    }
    buf_puts(&b, ",index=off", false);
    return b.p;
}

/* Options too long for mount(2): the new mount API takes lower dirs one at
 * a time ("lowerdir+", Linux 6.8). */
static int overlay_mount_fsconfig(const char *target, char *const *layers, size_t n,
                                  const char *upper, const char *work, sl_error_t *err)
{
    sl_autoclose int fs = fsopen("overlay", FSOPEN_CLOEXEC);
    if (fs < 0)
        return sl_error_errno(err, errno, "fsopen overlay");
    for (size_t i = n; i-- > 0;)
        if (fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir+", layers[i], 0) < 0)
            return sl_error_errno(err, errno, "overlay: %zu layers are too many for this kernel",
                                  n);
    if (fsconfig(fs, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_STRING, "workdir", work, 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_STRING, "index", "off", 0) < 0 ||
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return sl_error_errno(err, errno, "overlay: configure");
    sl_autoclose int mnt = fsmount(fs, FSMOUNT_CLOEXEC, 0);
    if (mnt < 0)
        return sl_error_errno(err, errno, "fsmount overlay");
    if (move_mount(mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return sl_error_errno(err, errno, "move_mount overlay to %s", target);
    return 0;
}

static int mkdir_one(const char *path, sl_error_t *err)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return sl_error_errno(err, errno, "mkdir %s", path);
    return 0;
}

int sl_rootfs_mount(const char *inst_dir, char *const *layers, size_t n_layers,
                    int64_t scratch_bytes, sl_error_t *err)
{
    if (n_layers == 0)
        return sl_error_set(err, EINVAL, "image has no layers");
    sl_autofree char *upper = xasprintf("%s/upper", inst_dir);
    sl_autofree char *rootfs = xasprintf("%s/rootfs", inst_dir);
    sl_autofree char *diff = xasprintf("%s/upper/diff", inst_dir);
    sl_autofree char *work = xasprintf("%s/upper/work", inst_dir);
    if (mkdir_one(upper, err) < 0 || mkdir_one(rootfs, err) < 0)
        return -err->code;
    sl_autofree char *tmpfs_opts = xasprintf("size=%lld,mode=0755", (long long)scratch_bytes);
    if (mount("tmpfs", upper, "tmpfs", 0, tmpfs_opts) < 0)
        return sl_error_errno(err, errno, "mount tmpfs on %s", upper);
    int rc = 0;
    if (mkdir_one(diff, err) < 0 || mkdir_one(work, err) < 0) {
        rc = -err->code;
    } else {
        sl_autofree char *opts = overlay_options(layers, n_layers, diff, work);
        if (strlen(opts) <= MOUNT_DATA_MAX) {
            if (mount("overlay", rootfs, "overlay", 0, opts) < 0)
                rc = sl_error_errno(err, errno, "mount overlay on %s (lower %s)", rootfs,
                                    layers[n_layers - 1]);
        } else {
            rc = overlay_mount_fsconfig(rootfs, layers, n_layers, diff, work, err);
        }
    }
    if (rc < 0)
        umount2(upper, MNT_DETACH);
    return rc;
}

/* ---- user-namespace rootfs: idmapped layers ---------------------------- */

static int write_str(const char *path, const char *s)
{
    sl_autoclose int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, s, strlen(s));
    return n == (ssize_t)strlen(s) ? 0 : (n < 0 ? -errno : -EIO);
}

int sl_rootfs_userns_open(uint32_t host_uid, uint32_t host_gid, uint32_t size, sl_error_t *err)
{
    int ready[2], hold[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        return sl_error_errno(err, errno, "pipe");
    if (pipe2(hold, O_CLOEXEC) < 0) {
        int e = errno;
        close(ready[0]);
        close(ready[1]);
        return sl_error_errno(err, e, "pipe");
    }
    pid_t pid = fork();
    if (pid == 0) { /* single-threaded child: only raw syscalls from here */
        char c = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1)
            _exit(1);
        close(hold[1]);
        while (read(hold[0], &c, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(ready[1]);
    close(hold[0]);
    int rc = 0;
    char c = 'n';
    if (pid < 0)
        rc = sl_error_errno(err, errno, "fork");
    else if (read(ready[0], &c, 1) != 1 || c != 'y')
        rc = sl_error_set(err, EPERM, "unshare(CLONE_NEWUSER) failed in the helper");
    if (rc == 0) {
        char path[64], map[64];
        snprintf(map, sizeof(map), "0 %u %u\n", host_uid, size);
        snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
        int e = write_str(path, map);
        snprintf(map, sizeof(map), "0 %u %u\n", host_gid, size);
        snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
        if (e == 0)
            e = write_str(path, map);
        snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
        if (e < 0)
            rc = sl_error_errno(err, -e, "writing the id map of the user namespace");
        else if ((rc = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            rc = sl_error_errno(err, errno, "open %s", path);
    }
    close(ready[0]);
    close(hold[1]); /* the helper exits */
    if (pid > 0)
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    return rc;
}

/* A detached clone of `src`, idmapped through userns_fd and read-only,
 * moved onto `target`. */
static int idmapped_clone(const char *src, const char *target, int userns_fd, sl_error_t *err)
{
    sl_autoclose int t = (int)syscall(SYS_open_tree, AT_FDCWD, src,
                                      OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (t < 0)
        return sl_error_errno(err, errno, "open_tree %s", src);
    struct mount_attr a = {.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV,
                           .userns_fd = (uint64_t)userns_fd};
    if (syscall(SYS_mount_setattr, t, "", AT_EMPTY_PATH, &a, sizeof(a)) < 0)
        return sl_error_errno(err, errno,
                              "idmapping %s (does its filesystem support idmapped "
                              "mounts?)",
                              src);
    if (move_mount(t, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return sl_error_errno(err, errno, "move_mount %s to %s", src, target);
    return 0;
}

/* The mount points the runtime needs, as a layer of its own on top: a
 * read-only root cannot have them created, and images often lack them. */
/* The top layer of a read-only root: the directories the runtime mounts
 * on, which it cannot create there. mountpoints are absolute paths without
 * . or .. components (validated at apply). */
static int make_skeleton(const char *dir, char *const *mountpoints, char *const *file_mountpoints,
                         sl_error_t *err)
{
    static const char *const dirs[] = {"", "/proc", "/dev", "/sys", "/tmp"};
    for (size_t i = 0; i < SL_ARRAY_LEN(dirs); i++) {
        sl_autofree char *p = xasprintf("%s%s", dir, dirs[i]);
        if (mkdir_one(p, err) < 0)
            return -err->code;
    }
    for (size_t i = 0; mountpoints && mountpoints[i]; i++) {
        if (mountpoints[i][0] != '/' || strstr(mountpoints[i], "/.."))
            return sl_error_set(err, EINVAL, "mount point %s is not a clean absolute path",
                                mountpoints[i]);
        sl_autofree char *p = xasprintf("%s%s", dir, mountpoints[i]);
        if (sl_mkdir_p(p, 0755, err) < 0)
            return -err->code;
    }
    for (size_t i = 0; file_mountpoints && file_mountpoints[i]; i++) {
        const char *f = file_mountpoints[i];
        if (f[0] != '/' || strstr(f, "/.."))
            return sl_error_set(err, EINVAL, "mount point %s is not a clean absolute path", f);
        sl_autofree char *p = xasprintf("%s%s", dir, f);
        *strrchr(p, '/') = '\0';
        if (sl_mkdir_p(p, 0755, err) < 0)
            return -err->code;
        p[strlen(p)] = '/';
        sl_autoclose int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
            return sl_error_errno(err, errno, "create %s", p);
    }
    return 0;
}

static int mount_idmapped_layers(const char *inst_dir, char *const *layers, size_t n, int userns_fd,
                                 char *const *mountpoints, char *const *file_mountpoints,
                                 sl_error_t *err)
{
    sl_autofree char *rootfs = xasprintf("%s/rootfs", inst_dir);
    sl_autofree char *lower = xasprintf("%s/lower", inst_dir);
    sl_autofree char *skel = xasprintf("%s/skel", inst_dir);
    if (mkdir_one(rootfs, err) < 0 || mkdir_one(lower, err) < 0 ||
        make_skeleton(skel, mountpoints, file_mountpoints, err) < 0)
        return -err->code;
    char **mapped = xcalloc(n + 2, sizeof(char *));
    int rc = 0;
    for (size_t i = 0; i <= n && rc == 0; i++) { /* layers bottom first, then the skeleton */
        mapped[i] = xasprintf("%s/%zu", lower, i);
        const char *src = i < n ? layers[i] : skel;
        rc = mkdir_one(mapped[i], err) < 0 ? -err->code
                                           : idmapped_clone(src, mapped[i], userns_fd, err);
    }
    if (rc == 0) {
        sl_autofree char *opts = overlay_options(mapped, n + 1, NULL, NULL);
        if (strlen(opts) > MOUNT_DATA_MAX)
            rc = sl_error_set(err, E2BIG, "overlay: %zu layers are too many for a read-only root",
                              n);
        else if (mount("overlay", rootfs, "overlay", MS_RDONLY, opts) < 0)
            rc = sl_error_errno(err, errno, "mount read-only overlay on %s", rootfs);
    }
    sl_strv_free(mapped);
    return rc;
}

int sl_rootfs_mount_idmapped(const char *inst_dir, char *const *layers, size_t n_layers,
                             int userns_fd, char *const *mountpoints, char *const *file_mountpoints,
                             sl_error_t *err)
{
    if (n_layers == 0)
        return sl_error_set(err, EINVAL, "image has no layers");
    int rc = mount_idmapped_layers(inst_dir, layers, n_layers, userns_fd, mountpoints,
                                   file_mountpoints, err);
    if (rc < 0) {
        sl_error_t e2 = {0};
        sl_rootfs_umount_under(inst_dir, &e2);
    }
    return rc;
}

/* Undo mountinfo's octal escapes (\040 for space etc.) in place. */
static void unescape_mountinfo(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

int sl_rootfs_umount_under(const char *dir, sl_error_t *err)
{
    sl_autofree char *info = NULL;
    if (sl_read_file("/proc/self/mountinfo", 64u << 20, &info, NULL, err) < 0)
        return -err->code;
    size_t dlen = strlen(dir);
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    char **points = NULL;
    size_t n = 0;
    char *save = NULL;
    for (char *line = strtok_r(info, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        /* id parent major:minor root mount-point ... */
        char *f = line;
        for (int i = 0; i < 4 && f; i++) {
            f = strchr(f, ' ');
            if (f)
                f++;
        }
        if (!f)
            continue;
        char *end = strchr(f, ' ');
        if (end)
            *end = '\0';
        unescape_mountinfo(f);
        if (strncmp(f, dir, dlen) == 0 && (f[dlen] == '\0' || f[dlen] == '/')) {
            points = xrealloc(points, (n + 1) * sizeof(char *));
            points[n++] = xstrdup(f);
        }
    }
    int count = 0;
    for (size_t i = n; i-- > 0;) {
        if (umount2(points[i], MNT_DETACH) == 0)
            count++;
        free(points[i]);
    }
    free(points);
    return count;
}

/* Whether a directory on the way to PATH is opaque in this layer
 * (trusted.overlay.opaque): what lower layers have below it is hidden. */
static bool parent_opaque(int root, const char *path)
{
    char dir[PATH_MAX];
    for (const char *slash = strchr(path, '/'); slash; slash = strchr(slash + 1, '/')) {
        size_t len = (size_t)(slash - path);
        if (len >= sizeof(dir))
            return false;
        memcpy(dir, path, len);
        dir[len] = '\0';
        struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                               .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
        sl_autoclose int fd = (int)syscall(SYS_openat2, root, dir, &how, sizeof(how));
        if (fd < 0)
            return false;
        char proc[64], v[2];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        if (getxattr(proc, "trusted.overlay.opaque", v, sizeof(v)) == 1 && v[0] == 'y')
            return true;
    }
    return false;
}

/* Read PATH from the topmost layer that has it, resolved inside the layer,
 * as the container's overlay shows it. *out = NULL when no layer has it:
 * none has the file, or a layer above the first that has it deleted it
 * (a whiteout of the file or of a directory on the way, a file in place
 * of such a directory, or an opaque directory on the way). */
static int read_layer_file(char *const *layers, size_t n, const char *path, char **out,
                           sl_error_t *err)
{
    *out = NULL;
    for (size_t i = n; i-- > 0;) {
        sl_autoclose int root = open(layers[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0)
            return sl_error_errno(err, errno, "open layer %s", layers[i]);
        struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY,
                               .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
        sl_autoclose int fd = (int)syscall(SYS_openat2, root, path, &how, sizeof(how));
        if (fd < 0 && errno == ENOENT) {
            if (parent_opaque(root, path))
                return 0;
            continue;
        }
        if (fd < 0 && (errno == ENXIO || errno == ENODEV || errno == ENOTDIR))
            return 0; /* a whiteout, or a non-directory on the way: deleted here */
        if (fd < 0)
            return sl_error_errno(err, errno, "open %s in layer %s", path, layers[i]);
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
            return 0;
        sl_autofree char *proc = xasprintf("/proc/self/fd/%d", fd);
        return sl_read_file(proc, ETC_FILE_MAX, out, NULL, err);
    }
    return 0;
}

static bool parse_id(const char *s, uint32_t *out)
{
    int64_t v;
    if (sl_parse_int64(s, 0, 4294967294LL, &v) < 0)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* Split a passwd/group line into up to max ':'-separated fields in place. */
static size_t split_fields(char *line, char **f, size_t max)
{
    size_t n = 0;
    f[n++] = line;
    for (char *p = line; *p && n < max; p++)
        if (*p == ':') {
            *p = '\0';
            f[n++] = p + 1;
        }
    return n;
}

/* Find a passwd entry by name (name != NULL) or by uid. */
static bool passwd_lookup(const char *text, const char *name, uint32_t uid, char **out_name,
                          uint32_t *out_uid, uint32_t *out_gid)
{
    if (!text)
        return false;
    sl_autofree char *copy = xstrdup(text);
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[7];
        uint32_t u, g;
        if (split_fields(line, f, 7) < 4 || !parse_id(f[2], &u) || !parse_id(f[3], &g))
            continue;
        if (name ? strcmp(f[0], name) == 0 : u == uid) {
            *out_name = xstrdup(f[0]);
            *out_uid = u;
            *out_gid = g;
            return true;
        }
    }
    return false;
}

static bool group_lookup(const char *text, const char *name, uint32_t *gid)
{
    if (!text)
        return false;
    sl_autofree char *copy = xstrdup(text);
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[4];
        uint32_t g;
        if (split_fields(line, f, 4) >= 3 && strcmp(f[0], name) == 0 && parse_id(f[2], &g)) {
            *gid = g;
            return true;
        }
    }
    return false;
}

static void add_gid(sl_oci_user_t *u, uint32_t g)
{
    if (g == u->gid)
        return;
    for (size_t i = 0; i < u->n_gids; i++)
        if (u->gids[i] == g)
            return;
    u->gids = xrealloc(u->gids, (u->n_gids + 1) * sizeof(uint32_t));
    u->gids[u->n_gids++] = g;
}

/* Groups that list `name` as a member. */
static void supplementary_groups(const char *text, const char *name, sl_oci_user_t *u)
{
    if (!text || !name)
        return;
    sl_autofree char *copy = xstrdup(text);
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[4];
        uint32_t g;
        if (split_fields(line, f, 4) < 4 || !parse_id(f[2], &g))
            continue;
        char *msave = NULL;
        for (char *m = strtok_r(f[3], ",", &msave); m; m = strtok_r(NULL, ",", &msave))
            if (strcmp(m, name) == 0)
                add_gid(u, g);
    }
}

int sl_rootfs_resolve_user(char *const *layers, size_t n_layers, const char *user,
                           sl_oci_user_t *out, sl_error_t *err)
{
    memset(out, 0, sizeof(*out));
    sl_autofree char *spec = xstrdup(user && *user ? user : "0");
    char *group = strchr(spec, ':');
    if (group)
        *group++ = '\0';
    sl_autofree char *passwd = NULL;
    sl_autofree char *groups = NULL;
    if (read_layer_file(layers, n_layers, "etc/passwd", &passwd, err) < 0 ||
        read_layer_file(layers, n_layers, "etc/group", &groups, err) < 0)
        return sl_error_wrap(err, "resolving user '%s'", user);

    sl_autofree char *name = NULL;
    uint32_t uid = 0, gid = 0;
    if (parse_id(spec, &uid)) {
        if (!passwd_lookup(passwd, NULL, uid, &name, &uid, &gid))
            gid = 0;
    } else if (!*spec || !passwd_lookup(passwd, spec, 0, &name, &uid, &gid)) {
        return sl_error_set(err, ENOENT, "user '%s' not found in the image's /etc/passwd%s", spec,
                            passwd ? "" : " (the image has none)");
    }
    if (group && !parse_id(group, &gid) && !group_lookup(groups, group, &gid))
        return sl_error_set(err, ENOENT, "group '%s' not found in the image's /etc/group%s", group,
                            groups ? "" : " (the image has none)");
    out->uid = uid;
    out->gid = gid;
    supplementary_groups(groups, name, out);
    return 0;
}
