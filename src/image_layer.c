/*
 * image_layer.c — the layer pipeline: one untrusted blob in, one overlayfs
 * lower directory out.
 *
 *   source ─▶ sha256 (digest as stored) ─▶ libarchive decompression (raw
 *   format: gzip, zstd, xz, bzip2 or none, native libraries only) ─▶ sha256
 *   (DiffID) ─▶ libarchive tar reader ─▶ entries written beneath a dirfd
 *
 * Every path is resolved one component at a time with openat(O_NOFOLLOW)
 * from the layer root, and every write is an *at() call that never follows
 * its last component, so no entry can reach outside the root whatever
 * symlinks the layer holds. Rules (also documented in image.h):
 *   - a leading "/" is stripped, "." and empty components are dropped, any
 *     ".." component rejects the layer;
 *   - a parent that is a symlink rejects the layer (no following, ever);
 *   - hardlink targets obey the same rules and must already exist in this
 *     layer as a non-directory;
 *   - missing parents are created 0755 root:root (as Docker's overlay2 does);
 *   - char/block devices other than 0:0 and sockets are skipped with one
 *     warning per layer; 0:0 char devices are taken as overlay whiteouts;
 *   - `.wh.NAME` becomes a 0:0 char device NAME unless this layer itself
 *     has NAME (OCI: a whiteout only hides lower layers), in which case a
 *     directory NAME is marked opaque; `.wh..wh..opq` marks its directory
 *     opaque (trusted.overlay.opaque=y); other `.wh..wh.*` (aufs) are ignored;
 *   - only user.* and security.capability xattrs are applied (a layer must
 *     not smuggle in trusted.overlay.*);
 *   - ownership, permission bits (setuid too) and mtimes are preserved;
 *     directory times are applied after the last entry.
 */
#include "image_int.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#define BUF_SZ        (128 * 1024)
#define MAX_DEPTH     (PATH_MAX / 2)
#define PARENT_LEVELS 64 /* directories of the last entry's path held open */
#define OPAQUE_XATTR  "trusted.overlay.opaque"
#define WH_PREFIX     ".wh."
#define WH_OPAQUE     ".wh..wh..opq"
#define DIR_BYTES     4096 /* what a directory the layer makes costs the disk */

/* ---- sha256 ---------------------------------------------------------- */

typedef struct hasher {
    EVP_MD_CTX *md;
    uint64_t n;
} hasher_t;

static void hasher_init(hasher_t *h)
{
    h->md = EVP_MD_CTX_new();
    if (!h->md || EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1) {
        fprintf(stderr, "FATAL: EVP sha256 unavailable\n");
        abort();
    }
    h->n = 0;
}

static void hasher_update(hasher_t *h, const void *p, size_t n)
{
    EVP_DigestUpdate(h->md, p, n);
    h->n += n;
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static void hasher_final(hasher_t *h, char out[SL_DIGEST_STR_LEN])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(h->md, md, &len);
    memcpy(out, "sha256:", 7);
    hex_encode(md, len, out + 7);
}

static void hasher_free(hasher_t *h)
{
    EVP_MD_CTX_free(h->md);
    h->md = NULL;
}

void sl_image__sha256_buf(const void *buf, size_t len, char out[SL_DIGEST_STR_LEN])
{
    hasher_t h;
    hasher_init(&h);
    hasher_update(&h, buf, len);
    hasher_final(&h, out);
    hasher_free(&h);
}

/* ---- decompression filters ------------------------------------------- */

/* libarchive falls back to running external programs (ARCHIVE_WARN) when a
 * library is missing; untrusted input must never reach one, so only filters
 * with native support are enabled. Probed once. */
static pthread_once_t filters_once = PTHREAD_ONCE_INIT;
static bool have_filter[4];
static int (*const filter_fns[4])(struct archive *) = {
    archive_read_support_filter_gzip, archive_read_support_filter_zstd,
    archive_read_support_filter_xz, archive_read_support_filter_bzip2};

static void probe_filters(void)
{
    for (size_t i = 0; i < SL_ARRAY_LEN(filter_fns); i++) {
        struct archive *a = archive_read_new();
        have_filter[i] = a && filter_fns[i](a) == ARCHIVE_OK;
        archive_read_free(a);
    }
}

bool sl_image__have_zstd(void)
{
    pthread_once(&filters_once, probe_filters);
    return have_filter[1];
}

/* ---- the pipeline ---------------------------------------------------- */

typedef struct pipeline {
    const sl_layer_src_t *src;
    hasher_t blob, diff;
    uint64_t diff_cap;
    struct archive *outer, *inner;
    unsigned char *inbuf, *midbuf;
    bool outer_eof;
    sl_error_t src_err;
} pipeline_t;

static la_ssize_t outer_read(struct archive *a, void *ud, const void **buf)
{
    pipeline_t *p = ud;
    ssize_t n = p->src->read(p->src->ctx, p->inbuf, BUF_SZ, &p->src_err);
    if (n < 0) {
        archive_set_error(a, EIO, "%s", p->src_err.msg);
        return -1;
    }
    hasher_update(&p->blob, p->inbuf, (size_t)n);
    *buf = p->inbuf;
    return n;
}

/* Next chunk of the decompressed stream: > 0 bytes, 0 at end, < 0 error
 * with msg filled. */
static la_ssize_t mid_read(pipeline_t *p, char *msg, size_t msgsz)
{
    if (p->outer_eof)
        return 0;
    la_ssize_t n = archive_read_data(p->outer, p->midbuf, BUF_SZ);
    if (n < 0) {
        const char *s = archive_error_string(p->outer);
        snprintf(msg, msgsz, "corrupt or truncated stream: %s", s ? s : "read error");
        return -1;
    }
    if (n == 0) {
        p->outer_eof = true;
        return 0;
    }
    hasher_update(&p->diff, p->midbuf, (size_t)n);
    if (p->diff.n > p->diff_cap) {
        snprintf(msg, msgsz, "uncompressed stream exceeds %llu bytes (limit from max_layer_bytes)",
                 (unsigned long long)p->diff_cap);
        return -1;
    }
    return n;
}

static la_ssize_t inner_read(struct archive *a, void *ud, const void **buf)
{
    pipeline_t *p = ud;
    char msg[SL_ERRMSG_MAX];
    la_ssize_t n = mid_read(p, msg, sizeof(msg));
    if (n < 0) {
        archive_set_error(a, EIO, "%s", msg);
        return -1;
    }
    *buf = p->midbuf;
    return n;
}

static int pipeline_open(pipeline_t *p, bool want_tar, sl_error_t *err)
{
    p->outer = archive_read_new();
    if (!p->outer)
        return sl_error_set(err, ENOMEM, "libarchive: out of memory");
    sl_image__enable_filters(p->outer);
    archive_read_support_format_raw(p->outer);
    if (archive_read_open(p->outer, p, NULL, outer_read, NULL) != ARCHIVE_OK)
        return sl_error_set(err, EIO, "cannot read layer stream: %s",
                            archive_error_string(p->outer));
    struct archive_entry *e;
    int r = archive_read_next_header(p->outer, &e);
    if (r == ARCHIVE_EOF)
        p->outer_eof = true;
    else if (r != ARCHIVE_OK)
        return sl_error_set(err, EIO, "cannot read layer stream: %s",
                            archive_error_string(p->outer));
    if (!want_tar)
        return 0;
    p->inner = archive_read_new();
    if (!p->inner)
        return sl_error_set(err, ENOMEM, "libarchive: out of memory");
    archive_read_support_format_tar(p->inner);
    archive_read_support_format_empty(p->inner);
    if (archive_read_open(p->inner, p, NULL, inner_read, NULL) != ARCHIVE_OK)
        return sl_error_set(err, EIO, "not a tar archive: %s", archive_error_string(p->inner));
    return 0;
}

/* Hash whatever the readers did not consume: tar padding after the
 * end-of-archive blocks, bytes after the compressed stream. */
static int pipeline_drain(pipeline_t *p, sl_error_t *err)
{
    char msg[SL_ERRMSG_MAX];
    la_ssize_t n;
    while ((n = mid_read(p, msg, sizeof(msg))) > 0)
        ;
    if (n < 0)
        return sl_error_set(err, EIO, "%s", msg);
    ssize_t r;
    while ((r = p->src->read(p->src->ctx, p->inbuf, BUF_SZ, &p->src_err)) > 0)
        hasher_update(&p->blob, p->inbuf, (size_t)r);
    if (r < 0)
        return sl_error_set(err, EIO, "%s", p->src_err.msg);
    return 0;
}

static void pipeline_close(pipeline_t *p)
{
    if (p->inner)
        archive_read_free(p->inner);
    if (p->outer)
        archive_read_free(p->outer);
    hasher_free(&p->blob);
    hasher_free(&p->diff);
    free(p->inbuf);
    free(p->midbuf);
}

/* ---- unpacking ------------------------------------------------------- */

typedef struct dirtime {
    char *path;
    struct timespec ts[2];
} dirtime_t;

typedef struct unpack {
    const pipeline_t *p;
    int rootfd;
    const sl_image_limits_t *lim;
    uint64_t bytes, entries;
    uint64_t made_dirs; /* directories made, named or as parents */
    dirtime_t *dirs;
    size_t n_dirs, cap_dirs;
    size_t dir_bytes;      /* the deferred directories' paths, bytes */
    uint64_t dirs_untimed; /* directories past max_dir_path_bytes */
    uint64_t skipped;
    char first_skipped[256];
    char path[PATH_MAX]; /* current entry, canonical, for messages */
    unsigned char *buf;
    /* The directories down to the one the last entry went into, open:
     * tar lists a directory's entries together, and the next entry walks
     * only from where its path leaves this one. They stay valid: an entry
     * removes (clear_slot) only a name in its own directory, which is the
     * deepest held then, so never a held one. */
    int level_fd[PARENT_LEVELS];     /* level i: the directory of components 0..i */
    size_t level_end[PARENT_LEVELS]; /* where component i ends in parent */
    size_t levels;                   /* held */
    char parent[PATH_MAX];
} unpack_t;

static bool is_whiteout(const struct stat *st)
{
    return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

/* Canonical relative form of a tar path: no leading "/", no "." or empty
 * components. Returns -1 on a ".." component, -2 if too long. */
static int canon_path(const char *in, char *out, size_t outsz)
{
    size_t o = 0;
    const char *p = in;
    while (*p) {
        while (*p == '/')
            p++;
        const char *s = p;
        while (*p && *p != '/')
            p++;
        size_t n = (size_t)(p - s);
        if (n == 0 || (n == 1 && s[0] == '.'))
            continue;
        if (n == 2 && s[0] == '.' && s[1] == '.')
            return -1;
        if (n > NAME_MAX || o + n + 2 > outsz)
            return -2;
        if (o)
            out[o++] = '/';
        memcpy(out + o, s, n);
        o += n;
    }
    out[o] = '\0';
    return 0;
}

/* What the layer has unpacked to so far, against max_layer_bytes: its
 * files' bytes and a block for each directory it made. */
static uint64_t unpacked_bytes(const unpack_t *u)
{
    return u->bytes + u->made_dirs * DIR_BYTES;
}

/*
 * A directory about to be made at path rel. It costs the disk a block, so
 * it counts against max_layer_bytes; one made as the parent of an entry
 * (not named in the tar) also counts as an entry, else a single entry with
 * a path of 2,000 components would make 2,000 directories that neither
 * limit sees (a few KB of gzip could fill the disk with them).
 */
static int charge_dir(unpack_t *u, const char *rel, bool implicit, sl_error_t *err)
{
    if (implicit && ++u->entries > u->lim->max_entries)
        return sl_error_set(err, EFBIG,
                            "layer has more than %llu entries (max_entries), counting the parent "
                            "directories it makes, at '%s'",
                            (unsigned long long)u->lim->max_entries, rel);
    if (DIR_BYTES > u->lim->max_layer_bytes - unpacked_bytes(u))
        return sl_error_set(err, EFBIG,
                            "layer unpacks to more than %llu bytes (max_layer_bytes; a directory "
                            "counts %d) at '%s'",
                            (unsigned long long)u->lim->max_layer_bytes, DIR_BYTES, rel);
    u->made_dirs++;
    return 0;
}

static int open_dir_nofollow(int dirfd, const char *name)
{
    return openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

static int set_opaque(int dfd, const char *what, sl_error_t *err)
{
    if (fsetxattr(dfd, OPAQUE_XATTR, "y", 1, 0) < 0)
        return sl_error_errno(err, errno, "'%s': setting %s", what, OPAQUE_XATTR);
    return 0;
}

/*
 * One step of a walk down canonical path `rel`: open `comp` (the component
 * ending at rel + end) below directory fd, without following a symlink.
 * With `create`, a missing directory is made (0755) and a whiteout device
 * becomes an opaque directory (the layer itself re-creates what it whited
 * out). Returns the new dirfd, or < 0 with err set; fd stays open.
 */
static int walk_step(unpack_t *u, int fd, const char *comp, const char *rel, size_t end,
                     bool create, sl_error_t *err)
{
    struct stat st;
    bool fresh = false, opaque = false;
    if (fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno != ENOENT || !create)
            return sl_error_errno(err, errno, "'%s': parent '%.*s'", rel, (int)end, rel);
        fresh = true;
    } else if (S_ISLNK(st.st_mode)) {
        return sl_error_set(err, ELOOP, "entry '%s' resolves through the symlink '%.*s' (refused)",
                            rel, (int)end, rel);
    } else if (create && is_whiteout(&st)) {
        if (unlinkat(fd, comp, 0) < 0)
            return sl_error_errno(err, errno, "'%s': removing whiteout", rel);
        fresh = opaque = true;
    } else if (!S_ISDIR(st.st_mode)) {
        return sl_error_set(err, ENOTDIR, "entry '%s': parent '%.*s' is not a directory", rel,
                            (int)end, rel);
    }
    if (fresh && charge_dir(u, rel, true, err) < 0)
        return -1;
    if (fresh && mkdirat(fd, comp, 0755) < 0)
        return sl_error_errno(err, errno, "'%s': mkdir parent '%s'", rel, comp);
    int nfd = open_dir_nofollow(fd, comp);
    if (nfd < 0)
        return sl_error_errno(err, errno, "'%s': open parent '%s'", rel, comp);
    if (opaque && set_opaque(nfd, rel, err) < 0) {
        close(nfd);
        return -1;
    }
    return nfd;
}

/* The directory at relative path `path` below dirfd, resolved in the
 * kernel in one call, refusing any symlink and any escape; < 0 where it
 * cannot (a component missing, not a directory or a symlink; or a kernel
 * before 5.6), for the walk to deal with. */
static int open_beneath(int dirfd, const char *path)
{
    struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
                                      RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

static void levels_drop(unpack_t *u, size_t keep)
{
    while (u->levels > keep)
        close(u->level_fd[--u->levels]);
}

/*
 * Open the directory holding the last component of canonical path `rel`
 * (*name points into rel): walking from the deepest held directory that
 * rel's directory shares, or from the root, never through a symlink (see
 * walk_step for `create`). With `hold` (the entry's own directory), the
 * directories walked become the held ones; without (a hardlink's target),
 * the walk starts at the root and holds nothing. Returns a dirfd the
 * caller closes, or < 0 with err set.
 */
static int open_parent(unpack_t *u, const char *rel, bool create, bool hold, const char **name,
                       sl_error_t *err)
{
    const char *slash = strrchr(rel, '/');
    *name = slash ? slash + 1 : rel;
    size_t len = slash ? (size_t)(slash - rel) : 0;
    size_t k = 0, start = 0; /* levels shared; where rel's next component starts */
    while (hold && k < u->levels) {
        size_t end = u->level_end[k];
        if (end > len || (end < len && rel[end] != '/') ||
            memcmp(rel + start, u->parent + start, end - start) != 0)
            break;
        start = end + 1;
        k++;
    }
    if (hold)
        levels_drop(u, k);
    int fd = k ? u->level_fd[k - 1] : u->rootfd; /* held: not closed here */
    bool held = true;
    char comp[NAME_MAX + 1];
    bool tried = false;
    while (start < len) {
        if (!tried && (!hold || u->levels == PARENT_LEVELS)) {
            /* Nothing more to hold: the rest in one call if it is all
             * there (a deep path would cost a walk per entry). */
            tried = true;
            char rest[PATH_MAX];
            memcpy(rest, rel + start, len - start);
            rest[len - start] = '\0';
            int nfd = open_beneath(fd, rest);
            if (nfd >= 0) {
                if (!held)
                    close(fd);
                return nfd;
            }
        }
        const char *e = memchr(rel + start, '/', len - start);
        size_t end = e ? (size_t)(e - rel) : len;
        memcpy(comp, rel + start, end - start);
        comp[end - start] = '\0';
        int nfd = walk_step(u, fd, comp, rel, end, create, err);
        if (!held)
            close(fd);
        if (nfd < 0)
            return -1;
        fd = nfd;
        held = hold && u->levels < PARENT_LEVELS;
        if (held) {
            memcpy(u->parent + start, rel + start, end - start);
            u->level_fd[u->levels] = fd;
            u->level_end[u->levels++] = end;
        }
        start = end + 1;
    }
    if (!held)
        return fd;
    int out = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (out < 0)
        return sl_error_errno(err, errno, "'%s': dup", rel);
    return out;
}

static int rmtree_at(int pfd, const char *name, int depth)
{
    struct stat st;
    if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(pfd, name, 0) < 0 ? -errno : 0;
    if (depth > MAX_DEPTH)
        return -ELOOP;
    int fd = open_dir_nofollow(pfd, name);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            rc = rmtree_at(dirfd(d), de->d_name, depth + 1);
    closedir(d);
    if (rc == 0 && unlinkat(pfd, name, AT_REMOVEDIR) < 0)
        rc = -errno;
    return rc;
}

/*
 * Make room for a new entry `name` in pfd. An existing directory is kept
 * when the new entry is a directory, otherwise removed with its subtree
 * (later tar entries win). *was_whiteout reports that a whiteout of this
 * layer stood there, so a new directory must hide the lower ones.
 */
static int clear_slot(unpack_t *u, int pfd, const char *name, bool want_dir, bool *exists_dir,
                      bool *was_whiteout, sl_error_t *err)
{
    struct stat st;
    *exists_dir = *was_whiteout = false;
    if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return 0;
        return sl_error_errno(err, errno, "'%s'", u->path);
    }
    if (is_whiteout(&st))
        *was_whiteout = true;
    if (S_ISDIR(st.st_mode) && want_dir) {
        *exists_dir = true;
        return 0;
    }
    int rc = rmtree_at(pfd, name, 0);
    if (rc < 0)
        return sl_error_errno(err, -rc, "'%s': replacing existing entry", u->path);
    return 0;
}

static int check_ids(unpack_t *u, struct archive_entry *e, uid_t *uid, gid_t *gid, sl_error_t *err)
{
    la_int64_t a = archive_entry_uid(e), b = archive_entry_gid(e);
    if (a < 0 || a >= (la_int64_t)UINT32_MAX || b < 0 || b >= (la_int64_t)UINT32_MAX)
        return sl_error_set(err, ERANGE, "entry '%s': bad owner %lld:%lld", u->path, (long long)a,
                            (long long)b);
    *uid = (uid_t)a;
    *gid = (gid_t)b;
    return 0;
}

static void entry_times(struct archive_entry *e, struct timespec ts[2])
{
    if (archive_entry_mtime_is_set(e)) {
        ts[1].tv_sec = archive_entry_mtime(e);
        ts[1].tv_nsec = archive_entry_mtime_nsec(e);
    } else {
        ts[1].tv_sec = 0;
        ts[1].tv_nsec = UTIME_OMIT;
    }
    if (archive_entry_atime_is_set(e)) {
        ts[0].tv_sec = archive_entry_atime(e);
        ts[0].tv_nsec = archive_entry_atime_nsec(e);
    } else {
        ts[0] = ts[1];
    }
    for (int i = 0; i < 2; i++)
        if (ts[i].tv_nsec != UTIME_OMIT && (ts[i].tv_nsec < 0 || ts[i].tv_nsec > 999999999))
            ts[i].tv_nsec = 0;
}

/* Only harmless xattrs: user.* and file capabilities. */
static void apply_xattrs(unpack_t *u, int fd, struct archive_entry *e)
{
    const char *name;
    const void *val;
    size_t sz;
    archive_entry_xattr_reset(e);
    while (archive_entry_xattr_next(e, &name, &val, &sz) == ARCHIVE_OK) {
        if (strncmp(name, "user.", 5) != 0 && strcmp(name, "security.capability") != 0)
            continue;
        if (fsetxattr(fd, name, val, sz, 0) < 0)
            sl_debug("image", "'%s': xattr %s: %s", u->path, name, strerror(errno));
    }
}

/* Owner, mode, xattrs, times on an open fd (chown first: it clears setuid
 * bits and capabilities). Directory times are deferred (times == NULL). */
static int apply_meta_fd(unpack_t *u, int fd, struct archive_entry *e, bool times, sl_error_t *err)
{
    uid_t uid;
    gid_t gid;
    if (check_ids(u, e, &uid, &gid, err) < 0)
        return -1;
    if (fchown(fd, uid, gid) < 0)
        return sl_error_errno(err, errno, "'%s': chown", u->path);
    if (fchmod(fd, archive_entry_perm(e) & 07777) < 0)
        return sl_error_errno(err, errno, "'%s': chmod", u->path);
    apply_xattrs(u, fd, e);
    struct timespec ts[2];
    entry_times(e, ts);
    if (times && futimens(fd, ts) < 0)
        return sl_error_errno(err, errno, "'%s': set times", u->path);
    return 0;
}

/* Owner and times on a non-openable entry (symlink, fifo). */
static int apply_meta_at(unpack_t *u, int pfd, const char *name, struct archive_entry *e,
                         bool chmod_too, sl_error_t *err)
{
    uid_t uid;
    gid_t gid;
    if (check_ids(u, e, &uid, &gid, err) < 0)
        return -1;
    if (fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
        return sl_error_errno(err, errno, "'%s': chown", u->path);
    /* Only used for entries this unpack just created as non-symlinks. */
    if (chmod_too && fchmodat(pfd, name, archive_entry_perm(e) & 07777, 0) < 0)
        return sl_error_errno(err, errno, "'%s': chmod", u->path);
    struct timespec ts[2];
    entry_times(e, ts);
    if (utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return sl_error_errno(err, errno, "'%s': set times", u->path);
    return 0;
}

/* A directory's times are set after its entries are written, so each one's
 * path is kept until the end of the layer. Those paths are bounded
 * (max_dir_path_bytes): a layer that lists long directory paths again and
 * again (tar allows it) would otherwise make the daemon hold gigabytes. Past
 * the bound a directory keeps the time it was unpacked at, and the unpack
 * warns once. */

static void defer_dirtime(unpack_t *u, struct archive_entry *e)
{
    dirtime_t *last = u->n_dirs ? &u->dirs[u->n_dirs - 1] : NULL;
    if (last && strcmp(last->path, u->path) == 0) { /* the same directory again: it wins */
        entry_times(e, last->ts);
        return;
    }
    size_t len = strlen(u->path) + 1;
    if (u->dir_bytes + len > u->lim->max_dir_path_bytes) {
        u->dirs_untimed++;
        return;
    }
    u->dir_bytes += len;
    if (u->n_dirs == u->cap_dirs) {
        u->cap_dirs = u->cap_dirs ? u->cap_dirs * 2 : 64;
        u->dirs = xrealloc(u->dirs, u->cap_dirs * sizeof(*u->dirs));
    }
    dirtime_t *d = &u->dirs[u->n_dirs++];
    d->path = xmemdup(u->path, len);
    entry_times(e, d->ts);
}

static void apply_dirtimes(unpack_t *u)
{
    sl_error_t ign;
    for (size_t i = 0; i < u->n_dirs; i++) {
        dirtime_t *d = &u->dirs[i];
        if (d->path[0] == '\0') {
            futimens(u->rootfd, d->ts);
        } else {
            const char *name;
            int pfd = open_parent(u, d->path, false, true, &name, &ign);
            if (pfd >= 0) {
                utimensat(pfd, name, d->ts, AT_SYMLINK_NOFOLLOW);
                close(pfd);
            }
        }
        free(d->path);
    }
    free(u->dirs);
    u->dirs = NULL;
    u->n_dirs = u->cap_dirs = 0;
    u->dir_bytes = 0;
}

static int do_dir(unpack_t *u, int pfd, const char *name, struct archive_entry *e, sl_error_t *err)
{
    bool exists, was_wh;
    if (clear_slot(u, pfd, name, true, &exists, &was_wh, err) < 0)
        return -1;
    if (!exists && charge_dir(u, u->path, false, err) < 0)
        return -1;
    if (!exists && mkdirat(pfd, name, 0700) < 0)
        return sl_error_errno(err, errno, "'%s': mkdir", u->path);
    sl_autoclose int fd = open_dir_nofollow(pfd, name);
    if (fd < 0)
        return sl_error_errno(err, errno, "'%s': open directory", u->path);
    if (apply_meta_fd(u, fd, e, false, err) < 0)
        return -1;
    if (was_wh && set_opaque(fd, u->path, err) < 0)
        return -1;
    defer_dirtime(u, e);
    return 0;
}

static int do_file(unpack_t *u, struct archive *a, int pfd, const char *name,
                   struct archive_entry *e, sl_error_t *err)
{
    bool exists, was_wh;
    uint64_t max = u->lim->max_layer_bytes;
    if (archive_entry_size_is_set(e) && (uint64_t)archive_entry_size(e) > max - unpacked_bytes(u))
        return sl_error_set(err, EFBIG,
                            "entry '%s' (%lld bytes) exceeds the unpacked layer limit of %llu "
                            "bytes (max_layer_bytes)",
                            u->path, (long long)archive_entry_size(e), (unsigned long long)max);
    if (clear_slot(u, pfd, name, false, &exists, &was_wh, err) < 0)
        return -1;
    sl_autoclose int fd =
        openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return sl_error_errno(err, errno, "'%s': create", u->path);
    const void *blk;
    size_t sz;
    la_int64_t off;
    int r;
    uint64_t got = 0;
    while ((r = archive_read_data_block(a, &blk, &sz, &off)) == ARCHIVE_OK) {
        got += sz;
        if (sz > max - unpacked_bytes(u))
            return sl_error_set(err, EFBIG,
                                "layer unpacks to more than %llu bytes (max_layer_bytes) at "
                                "entry '%s'",
                                (unsigned long long)max, u->path);
        u->bytes += sz;
        const char *p = blk;
        while (sz > 0) {
            ssize_t w = pwrite(fd, p, sz, off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return sl_error_errno(err, errno, "'%s': write", u->path);
            }
            p += w;
            off += w;
            sz -= (size_t)w;
        }
    }
    /* umoci < 0.4.8 `insert` writes tars that stop right after the last
     * file's data (no padding, no end-of-archive blocks; umoci#436). The
     * entry is complete, so accept it as the end of the archive. */
    bool cut = r != ARCHIVE_EOF && u->p->outer_eof && archive_entry_size_is_set(e) &&
               got == (uint64_t)archive_entry_size(e);
    if (r != ARCHIVE_EOF && !cut)
        return sl_error_set(err, EIO, "entry '%s': corrupt or truncated data: %s", u->path,
                            archive_error_string(a));
    if (archive_entry_size_is_set(e) && ftruncate(fd, archive_entry_size(e)) < 0)
        return sl_error_errno(err, errno, "'%s': truncate", u->path);
    if (apply_meta_fd(u, fd, e, true, err) < 0)
        return -1;
    return cut ? 1 : 0;
}

static int do_symlink(unpack_t *u, int pfd, const char *name, struct archive_entry *e,
                      sl_error_t *err)
{
    const char *target = archive_entry_symlink(e);
    if (!target || !*target)
        return sl_error_set(err, EINVAL, "entry '%s': symlink without a target", u->path);
    bool exists, was_wh;
    if (clear_slot(u, pfd, name, false, &exists, &was_wh, err) < 0)
        return -1;
    if (symlinkat(target, pfd, name) < 0)
        return sl_error_errno(err, errno, "'%s': symlink", u->path);
    return apply_meta_at(u, pfd, name, e, false, err);
}

static int do_hardlink(unpack_t *u, int pfd, const char *name, const char *target, sl_error_t *err)
{
    char tpath[PATH_MAX];
    int c = canon_path(target, tpath, sizeof(tpath));
    if (c == -1)
        return sl_error_set(err, EXDEV, "entry '%s': hardlink target '%s' escapes the layer root",
                            u->path, target);
    if (c < 0 || !tpath[0])
        return sl_error_set(err, EINVAL, "entry '%s': bad hardlink target '%s'", u->path, target);
    const char *tname;
    sl_error_t terr;
    sl_autoclose int tpfd = open_parent(u, tpath, false, false, &tname, &terr);
    if (tpfd < 0)
        return sl_error_set(err, terr.code, "entry '%s': hardlink target: %s", u->path, terr.msg);
    struct stat tst, st;
    if (fstatat(tpfd, tname, &tst, AT_SYMLINK_NOFOLLOW) < 0)
        return sl_error_errno(err, errno, "entry '%s': hardlink target '%s'", u->path, tpath);
    if (S_ISDIR(tst.st_mode) || is_whiteout(&tst))
        return sl_error_set(err, EPERM, "entry '%s': hardlink target '%s' is a %s", u->path, tpath,
                            S_ISDIR(tst.st_mode) ? "directory" : "whiteout");
    if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_ino == tst.st_ino &&
        st.st_dev == tst.st_dev)
        return 0;
    bool exists, was_wh;
    if (clear_slot(u, pfd, name, false, &exists, &was_wh, err) < 0)
        return -1;
    if (linkat(tpfd, tname, pfd, name, 0) < 0)
        return sl_error_errno(err, errno, "'%s': link to '%s'", u->path, tpath);
    return 0;
}

static int make_whiteout(unpack_t *u, int pfd, const char *name, sl_error_t *err)
{
    struct stat st;
    if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        /* This layer has NAME itself: it already hides the lower one; a
         * directory must also stop lower contents showing through. */
        if (S_ISDIR(st.st_mode)) {
            sl_autoclose int fd = open_dir_nofollow(pfd, name);
            if (fd < 0)
                return sl_error_errno(err, errno, "'%s': open", u->path);
            return set_opaque(fd, u->path, err);
        }
        return 0;
    }
    if (errno != ENOENT)
        return sl_error_errno(err, errno, "'%s'", u->path);
    if (mknodat(pfd, name, S_IFCHR | 0, makedev(0, 0)) < 0)
        return sl_error_errno(err, errno, "'%s': creating overlay whiteout", u->path);
    return 0;
}

static void note_skipped(unpack_t *u)
{
    if (u->skipped++ == 0)
        snprintf(u->first_skipped, sizeof(u->first_skipped), "%.200s", u->path);
}

/* `.wh.*` entries. Returns 1 if handled, 0 if not a whiteout, < 0 error. */
static int do_whiteout_name(unpack_t *u, int pfd, const char *name, sl_error_t *err)
{
    if (strncmp(name, WH_PREFIX, strlen(WH_PREFIX)) != 0)
        return 0;
    if (strcmp(name, WH_OPAQUE) == 0)
        return set_opaque(pfd, u->path, err) < 0 ? -1 : 1;
    if (strncmp(name, WH_PREFIX WH_PREFIX, 2 * strlen(WH_PREFIX)) == 0)
        return 1; /* aufs metadata (.wh..wh.plnk, .wh..wh.aufs) */
    const char *victim = name + strlen(WH_PREFIX);
    if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
        return sl_error_set(err, EINVAL, "entry '%s': bad whiteout name", u->path);
    return make_whiteout(u, pfd, victim, err) < 0 ? -1 : 1;
}

static const char *entry_name(struct archive_entry *e);

static int do_root(unpack_t *u, struct archive_entry *e, sl_error_t *err)
{
    if (archive_entry_hardlink(e) || archive_entry_filetype(e) != AE_IFDIR)
        return sl_error_set(err, EINVAL, "entry '%s' would replace the layer root", entry_name(e));
    if (apply_meta_fd(u, u->rootfd, e, false, err) < 0)
        return -1;
    defer_dirtime(u, e);
    return 0;
}

static const char *entry_name(struct archive_entry *e)
{
    const char *p = archive_entry_pathname(e);
    return p ? p : archive_entry_pathname_utf8(e);
}

static int do_entry(unpack_t *u, struct archive *a, struct archive_entry *e, sl_error_t *err)
{
    const char *raw = entry_name(e);
    if (!raw)
        return sl_error_set(err, EINVAL, "entry #%llu has no usable path name",
                            (unsigned long long)u->entries);
    int c = canon_path(raw, u->path, sizeof(u->path));
    if (c == -1)
        return sl_error_set(err, EXDEV, "entry '%s' escapes the layer root ('..' component)", raw);
    if (c < 0)
        return sl_error_set(err, ENAMETOOLONG, "entry '%.200s...': name too long", raw);
    if (!u->path[0])
        return do_root(u, e, err);
    const char *name;
    sl_autoclose int pfd = open_parent(u, u->path, true, true, &name, err);
    if (pfd < 0)
        return -1;
    int w = do_whiteout_name(u, pfd, name, err);
    if (w != 0)
        return w < 0 ? -1 : 0;
    const char *hl = archive_entry_hardlink(e);
    if (hl)
        return do_hardlink(u, pfd, name, hl, err);
    switch (archive_entry_filetype(e)) {
    case AE_IFDIR:
        return do_dir(u, pfd, name, e, err);
    case AE_IFREG:
        return do_file(u, a, pfd, name, e, err);
    case AE_IFLNK:
        return do_symlink(u, pfd, name, e, err);
    case AE_IFIFO: {
        bool exists, was_wh;
        if (clear_slot(u, pfd, name, false, &exists, &was_wh, err) < 0)
            return -1;
        if (mknodat(pfd, name, S_IFIFO | 0600, 0) < 0)
            return sl_error_errno(err, errno, "'%s': mkfifo", u->path);
        return apply_meta_at(u, pfd, name, e, true, err);
    }
    case AE_IFCHR:
        if (archive_entry_rdevmajor(e) == 0 && archive_entry_rdevminor(e) == 0)
            return make_whiteout(u, pfd, name, err);
        note_skipped(u);
        return 0;
    default: /* block devices, sockets, unknown */
        note_skipped(u);
        return 0;
    }
}

static int unpack_all(pipeline_t *p, unpack_t *u, sl_error_t *err)
{
    struct archive_entry *e;
    for (;;) {
        int r = archive_read_next_header(p->inner, &e);
        if (r == ARCHIVE_EOF)
            return 0;
        if (r < ARCHIVE_WARN)
            return sl_error_set(err, EIO, "corrupt or truncated tar after %llu entries: %s",
                                (unsigned long long)u->entries, archive_error_string(p->inner));
        if (++u->entries > u->lim->max_entries)
            return sl_error_set(err, EFBIG, "layer has more than %llu entries (max_entries)",
                                (unsigned long long)u->lim->max_entries);
        int rc = do_entry(u, p->inner, e, err);
        if (rc < 0)
            return -1;
        if (rc > 0) {
            sl_debug("image", "tar ends after '%s' without end-of-archive blocks", u->path);
            return 0;
        }
    }
}

int sl_image__layer_stream(const sl_layer_src_t *src, int destfd, const sl_image_limits_t *lim,
                           sl_layer_info_t *info, sl_error_t *err)
{
    sl_image_limits_t L;
    sl_image__limits(lim, &L);
    pipeline_t p = {.src = src};
    hasher_init(&p.blob);
    hasher_init(&p.diff);
    /* Tar headers and padding cost up to ~1.5 KiB per entry on top of the
     * file data; anything beyond twice the data limit is a bomb. */
    p.diff_cap = L.max_layer_bytes > UINT64_MAX / 2 ? UINT64_MAX : L.max_layer_bytes * 2;
    if (p.diff_cap < (64u << 20))
        p.diff_cap = 64u << 20;
    p.inbuf = xmalloc(BUF_SZ);
    p.midbuf = xmalloc(BUF_SZ);
    unpack_t u = {.p = &p, .rootfd = destfd, .lim = &L};
    int rc = pipeline_open(&p, destfd >= 0, err);
    if (rc == 0 && destfd >= 0) {
        rc = unpack_all(&p, &u, err);
        apply_dirtimes(&u);
    }
    levels_drop(&u, 0);
    if (rc == 0)
        rc = pipeline_drain(&p, err);
    memset(info, 0, sizeof(*info));
    if (rc < 0) {
        /* Still hash the blob to the end: a corrupt blob is better reported
         * as a digest mismatch than as whatever broke while unpacking. */
        ssize_t r;
        sl_error_t ign;
        while ((r = src->read(src->ctx, p.inbuf, BUF_SZ, &ign)) > 0)
            hasher_update(&p.blob, p.inbuf, (size_t)r);
        if (r == 0) {
            info->blob_size = p.blob.n;
            hasher_final(&p.blob, info->blob_digest);
        }
    } else {
        info->blob_size = p.blob.n;
        info->diff_size = p.diff.n;
        hasher_final(&p.blob, info->blob_digest);
        hasher_final(&p.diff, info->diff_id);
        info->bytes = u.bytes;
        info->entries = u.entries;
        if (u.skipped)
            sl_warn("image",
                    "skipped %llu device/socket entries (first: '%s'): layers may not "
                    "create devices",
                    (unsigned long long)u.skipped, u.first_skipped);
        if (u.dirs_untimed)
            sl_warn("image",
                    "%llu directories keep their unpack time: the layer's directory paths "
                    "pass %zu bytes (max_dir_path_bytes)",
                    (unsigned long long)u.dirs_untimed, u.lim->max_dir_path_bytes);
    }
    pipeline_close(&p);
    return rc < 0 ? -1 : 0;
}

void sl_image__enable_filters(struct archive *a)
{
    pthread_once(&filters_once, probe_filters);
    for (size_t i = 0; i < SL_ARRAY_LEN(filter_fns); i++)
        if (have_filter[i])
            filter_fns[i](a);
}

/* ---- in-memory entry point (tests, fuzzing) ---------------------------- */

typedef struct membuf {
    const unsigned char *p;
    size_t len, off;
} membuf_t;

static ssize_t mem_read(void *ctx, void *buf, size_t len, sl_error_t *err)
{
    membuf_t *m = ctx;
    size_t n = m->len - m->off < len ? m->len - m->off : len;
    if (n)
        memcpy(buf, m->p + m->off, n);
    m->off += n;
    return (ssize_t)n;
}

int sl_image_unpack_layer(const void *buf, size_t len, const char *dest,
                          const sl_image_limits_t *lim, sl_error_t *err)
{
    sl_autoclose int fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return sl_error_errno(err, errno, "open %s", dest);
    membuf_t m = {.p = buf, .len = len};
    sl_layer_src_t src = {mem_read, &m};
    sl_layer_info_t info;
    return sl_image__layer_stream(&src, fd, lim, &info, err);
}

/* ---- misc -------------------------------------------------------------- */

static uint64_t du_at(int fd, int depth)
{
    if (depth > MAX_DEPTH) {
        close(fd);
        return 0;
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return 0;
    }
    uint64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISREG(st.st_mode))
            total += (uint64_t)st.st_size;
        else if (S_ISDIR(st.st_mode)) {
            int sub = open_dir_nofollow(dirfd(d), de->d_name);
            if (sub >= 0)
                total += du_at(sub, depth + 1);
        }
    }
    closedir(d);
    return total;
}

uint64_t sl_image__du(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? 0 : du_at(fd, 0);
}
