/*
 * image.c — image references, the content-addressed layer store, image
 * config parsing and the sl_image_t record.
 *
 * Turns `oci:DIR[:TAG]`, `docker-archive:FILE[:NAME]` or `dir:ROOTFS` into
 * an sl_image_t whose layers are overlayfs lower directories below
 * STATE/layers/sha256/<DiffID hex>/. The transport readers live in
 * image_oci.c, the unpacking pipeline in image_layer.c. Owns the store's
 * directory layout and its atomicity rules (see image.h).
 */
#include "image_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>

#define DEFAULT_MAX_LAYER_BYTES (4ULL << 30)
#define DEFAULT_MAX_ENTRIES     1000000ULL
#define DEFAULT_MAX_JSON        (4u << 20)
#define DEFAULT_MAX_DIR_PATHS   (64u << 20)

/* A positive integer from the environment, or dflt when unset or invalid
 * (an invalid value is reported, never silently half-used). */
static uint64_t env_limit(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    int64_t n;
    if (!v || !*v)
        return dflt;
    if (sl_parse_int64(v, 1, INT64_MAX, &n) < 0) {
        sl_warn("image", "%s=%s: not a positive integer, using %llu", name, v,
                (unsigned long long)dflt);
        return dflt;
    }
    return (uint64_t)n;
}

void sl_image__limits(const sl_image_limits_t *in, sl_image_limits_t *out)
{
    sl_image_limits_t l = in ? *in : (sl_image_limits_t){0};
    if (!l.max_layer_bytes)
        l.max_layer_bytes = env_limit("SLUICE_IMAGE_MAX_LAYER_BYTES", DEFAULT_MAX_LAYER_BYTES);
    if (!l.max_entries)
        l.max_entries = env_limit("SLUICE_IMAGE_MAX_ENTRIES", DEFAULT_MAX_ENTRIES);
    if (!l.max_dir_path_bytes)
        l.max_dir_path_bytes = DEFAULT_MAX_DIR_PATHS;
    if (!l.max_json) {
        uint64_t j = env_limit("SLUICE_IMAGE_MAX_JSON", DEFAULT_MAX_JSON);
        l.max_json = j > INT32_MAX ? INT32_MAX : (size_t)j;
    }
    *out = l;
}

bool sl_image__is_hex64(const char *s, size_t len)
{
    if (len != SL_SHA256_HEX_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

const char *sl_image__digest_hex(const char *digest)
{
    if (!digest || strncmp(digest, "sha256:", 7) != 0)
        return NULL;
    return sl_image__is_hex64(digest + 7, strlen(digest + 7)) ? digest + 7 : NULL;
}

json_t *sl_image__json_parse(const char *buf, size_t len, const char *what, sl_error_t *err)
{
    json_error_t je;
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        sl_error_set(err, EINVAL, "%s: invalid JSON at line %d column %d: %s", what, je.line,
                     je.column, je.text);
    return j;
}

/* ---- the layer store --------------------------------------------------- */

char *sl_image__layer_path(const sl_import_t *im, const char *diff_hex)
{
    return xasprintf("%s/%s", im->layers_dir, diff_hex);
}

bool sl_image__layer_present(const sl_import_t *im, const char *diff_hex)
{
    sl_autofree char *p = sl_image__layer_path(im, diff_hex);
    for (size_t i = 0; i < im->n_pending; i++)
        if (strcmp(im->pending[i].final, p) == 0)
            return true; /* unpacked earlier in this import */
    struct stat st;
    return lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Remove tmp/<pid>.* entries whose process is gone (all of them if
 * `all`). Unparsable names are left alone. */
static void clean_tmp(const char *tmp_dir, bool all)
{
    DIR *d = opendir(tmp_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char *dot = strchr(de->d_name, '.');
        if (!dot)
            continue;
        sl_autofree char *pid_s = xstrndup(de->d_name, (size_t)(dot - de->d_name));
        int64_t pid;
        if (sl_parse_int64(pid_s, 1, INT32_MAX, &pid) < 0)
            continue;
        if (!all && (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
            continue;
        /* An import holds its directory locked until it is renamed into
         * the store or removed: one still locked is in use, by a process
         * that is alive whatever its pid says here (`sluice debug --image`
         * imports from a process of its own, maybe in another pid
         * namespace). */
        sl_autoclose int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0)
            continue;
        sl_autofree char *p = xasprintf("%s/%s", tmp_dir, de->d_name);
        sl_error_t e;
        if (sl_rm_rf(p, &e) < 0)
            sl_warn("image", "cleaning %s: %s", p, e.msg);
    }
    closedir(d);
}

/* A fresh directory below tmp_dir for a layer being unpacked, locked (see
 * clean_tmp): its fd, and *out its path; -errno on failure. One removed by
 * a cleaner between its creation and the lock is made again. */
static int tmp_layer_dir(const sl_import_t *im, char **out)
{
    for (int i = 0; i < 3; i++) {
        char *tmp = xasprintf("%s/%d.XXXXXX", im->tmp_dir, (int)getpid());
        if (!mkdtemp(tmp)) {
            int e = errno;
            free(tmp);
            return -e;
        }
        int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct stat st;
        if (fd >= 0 && flock(fd, LOCK_EX) == 0 && fstat(fd, &st) == 0 && st.st_nlink > 0) {
            *out = tmp;
            return fd;
        }
        int e = errno;
        if (fd >= 0)
            close(fd);
        free(tmp);
        if (fd < 0)
            return -e;
    }
    return -EAGAIN;
}

static int store_open(sl_import_t *im, const char *state_dir, sl_error_t *err)
{
    sl_autofree char *layers = xasprintf("%s/layers", state_dir);
    sl_autofree char *sha = xasprintf("%s/sha256", layers);
    sl_autofree char *tmp = xasprintf("%s/tmp", layers);
    if (sl_mkdir_p(sha, 0755, err) < 0 || sl_mkdir_p(tmp, 0700, err) < 0)
        return sl_error_wrap(err, "layer store");
    char abs[PATH_MAX];
    if (!realpath(layers, abs))
        return sl_error_errno(err, errno, "layer store %s", layers);
    im->layers_dir = xasprintf("%s/sha256", abs);
    im->tmp_dir = xasprintf("%s/tmp", abs);
    return 0;
}

int sl_image_store_init(const char *state_dir, sl_error_t *err)
{
    sl_import_t im = {0};
    int rc = store_open(&im, state_dir, err);
    if (rc == 0)
        clean_tmp(im.tmp_dir, true);
    free(im.layers_dir);
    free(im.tmp_dir);
    return rc;
}

static int check_layer(const char *name, const sl_layer_info_t *info, const char *want_blob,
                       uint64_t want_size, const char *want_diff, sl_error_t *err)
{
    if (want_size != UINT64_MAX && info->blob_size != want_size)
        return sl_error_set(
            err, EBADMSG, "layer %s: size mismatch: manifest says %llu bytes, blob has %llu", name,
            (unsigned long long)want_size, (unsigned long long)info->blob_size);
    if (want_blob && strcmp(want_blob, info->blob_digest) != 0)
        return sl_error_set(err, EBADMSG, "layer %s: digest mismatch: expected %s, got %s", name,
                            want_blob, info->blob_digest);
    if (want_diff && strcmp(want_diff, info->diff_id) != 0)
        return sl_error_set(err, EBADMSG,
                            "layer %s: DiffID mismatch: config rootfs.diff_ids says %s, "
                            "uncompressed content is %s",
                            name, want_diff, info->diff_id);
    return 0;
}

/* A stream that failed is reported as a digest or size mismatch when it is
 * one (a corrupt blob), else as what broke. */
static int stream_failed(const char *name, const sl_layer_info_t *info, const char *want_blob,
                         uint64_t want_blob_size, sl_error_t *err)
{
    if (!info->blob_digest[0] || check_layer(name, info, want_blob, want_blob_size, NULL, err) == 0)
        return sl_error_wrap(err, "layer %s", name);
    return -1;
}

int sl_image__layer_verify(sl_import_t *im, const char *name, const sl_layer_src_t *src,
                           const char *want_blob, uint64_t want_blob_size, const char *want_diff,
                           sl_error_t *err)
{
    sl_layer_info_t info;
    if (sl_image__layer_stream(src, -1, &im->lim, &info, err) < 0)
        return stream_failed(name, &info, want_blob, want_blob_size, err);
    return check_layer(name, &info, want_blob, want_blob_size, want_diff, err);
}

int sl_image__layer_add(sl_import_t *im, const char *name, const sl_layer_src_t *src,
                        const char *want_blob, uint64_t want_blob_size, const char *want_diff,
                        sl_layer_info_t *info, sl_error_t *err)
{
    sl_autofree char *tmp = NULL;
    int fd = tmp_layer_dir(im, &tmp);
    if (fd < 0)
        return sl_error_errno(err, -fd, "layer %s: a directory in %s", name, im->tmp_dir);
    int rc = 0;
    if (fchmod(fd, 0755) < 0)
        rc = sl_error_errno(err, errno, "layer %s: chmod %s", name, tmp);
    if (rc == 0 && sl_image__layer_stream(src, fd, &im->lim, info, err) < 0)
        rc = stream_failed(name, info, want_blob, want_blob_size, err);
    if (rc == 0)
        rc = check_layer(name, info, want_blob, want_blob_size, want_diff, err);
    /* Contents must be durable before the directory claims completeness. */
    if (rc == 0 && syncfs(fd) < 0)
        rc = sl_error_errno(err, errno, "layer %s: syncfs", name);
    /* fd, and with it the lock, is held until the directory is in the
     * store or gone (layers_commit). */
    if (rc == 0) {
        im->pending = xrealloc(im->pending, (im->n_pending + 1) * sizeof(*im->pending));
        im->pending[im->n_pending++] = (struct sl_pending_layer){
            xstrdup(name), tmp, sl_image__layer_path(im, info->diff_id + 7), fd};
        tmp = NULL;
        return 0;
    }
    sl_error_t e2;
    if (sl_rm_rf(tmp, &e2) < 0)
        sl_warn("image", "removing %s: %s", tmp, e2.msg);
    close(fd);
    return rc;
}

/* The import's unpacked layers go into the store, when keep (the whole
 * image checked out), else away; either way their temporary directories
 * are gone after. A layer another import stored meanwhile is used. */
static int layers_commit(sl_import_t *im, bool keep, sl_error_t *err)
{
    int rc = 0;
    for (size_t i = 0; i < im->n_pending; i++) {
        struct sl_pending_layer *p = &im->pending[i];
        bool moved = false;
        if (keep && rc == 0) {
            if (renameat2(AT_FDCWD, p->tmp, AT_FDCWD, p->final, RENAME_NOREPLACE) == 0)
                moved = true;
            else if (errno == EEXIST || errno == ENOTEMPTY)
                sl_debug("image", "layer %s: %s appeared meanwhile, using it", p->name, p->final);
            else
                rc = sl_error_errno(err, errno, "layer %s: rename into %s", p->name, p->final);
        }
        sl_error_t e2;
        if (!moved && sl_rm_rf(p->tmp, &e2) < 0)
            sl_warn("image", "removing %s: %s", p->tmp, e2.msg);
        close(p->fd);
        free(p->name);
        free(p->tmp);
        free(p->final);
    }
    free(im->pending);
    im->pending = NULL;
    im->n_pending = 0;
    return rc;
}

void sl_image__push_layer(sl_import_t *im, const char *diff_hex, uint64_t size)
{
    sl_image_t *img = im->img;
    char *path = sl_image__layer_path(im, diff_hex);
    /* A layer listed twice: keeping the topmost copy is equivalent, and
     * overlayfs dislikes the same lower dir twice. */
    for (size_t i = 0; i < img->n_layers; i++) {
        if (strcmp(img->layers[i], path) == 0) {
            free(img->layers[i]);
            memmove(&img->layers[i], &img->layers[i + 1], (img->n_layers - i - 1) * sizeof(char *));
            img->n_layers--;
            size = 0;
            break;
        }
    }
    img->layers = xrealloc(img->layers, (img->n_layers + 1) * sizeof(char *));
    img->layers[img->n_layers++] = path;
    img->size += size;
}

/* ---- image config ------------------------------------------------------ */

static int str_array(const json_t *obj, const char *key, char ***out, size_t *n, sl_error_t *err)
{
    const json_t *a = json_object_get(obj, key);
    if (!a || json_is_null(a))
        return 0;
    if (!json_is_array(a))
        return sl_error_set(err, EINVAL, "config.config.%s: expected an array of strings", key);
    size_t cnt = json_array_size(a);
    char **v = xcalloc(cnt + 1, sizeof(char *));
    for (size_t i = 0; i < cnt; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s) {
            for (size_t k = 0; k < i; k++)
                free(v[k]);
            free(v);
            return sl_error_set(err, EINVAL, "config.config.%s[%zu]: expected a string", key, i);
        }
        v[i] = xstrdup(s);
    }
    *out = v;
    *n = cnt;
    return 0;
}

static int opt_string(const json_t *obj, const char *key, char **out, sl_error_t *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return sl_error_set(err, EINVAL, "config.config.%s: expected a string", key);
    if (json_string_length(v) > 0)
        *out = xstrdup(json_string_value(v));
    return 0;
}

/* "8080/tcp" or "8080" → 8080; other protocols → 0. */
static int parse_port_key(const char *key, int *port, sl_error_t *err)
{
    const char *slash = strchr(key, '/');
    sl_autofree char *num = xstrndup(key, slash ? (size_t)(slash - key) : strlen(key));
    int64_t v;
    if (sl_parse_int64(num, 1, 65535, &v) < 0)
        return sl_error_set(err, EINVAL, "config.config.ExposedPorts: bad port '%s'", key);
    *port = (!slash || strcmp(slash + 1, "tcp") == 0) ? (int)v : 0;
    return 0;
}

static int apply_runtime(sl_image_t *img, const json_t *c, sl_error_t *err)
{
    if (!c || json_is_null(c))
        return 0;
    if (!json_is_object(c))
        return sl_error_set(err, EINVAL, "config.config: expected an object");
    if (str_array(c, "Entrypoint", &img->entrypoint, &img->n_entrypoint, err) < 0 ||
        str_array(c, "Cmd", &img->cmd, &img->n_cmd, err) < 0 ||
        str_array(c, "Env", &img->env, &img->n_env, err) < 0 ||
        opt_string(c, "WorkingDir", &img->workdir, err) < 0 ||
        opt_string(c, "User", &img->user, err) < 0)
        return -1;
    const json_t *ports = json_object_get(c, "ExposedPorts");
    if (!ports || json_is_null(ports))
        return 0;
    if (!json_is_object(ports))
        return sl_error_set(err, EINVAL, "config.config.ExposedPorts: expected an object");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)ports, key, v)
    {
        int port = 0;
        if (parse_port_key(key, &port, err) < 0)
            return -1;
        if (port && !img->exposed_port)
            img->exposed_port = port;
    }
    return 0;
}

static int check_platform(const json_t *cfg, sl_error_t *err)
{
    const char *os = json_string_value(json_object_get(cfg, "os"));
    const char *arch = json_string_value(json_object_get(cfg, "architecture"));
    if (os && *os && strcmp(os, "linux") != 0)
        return sl_error_set(err, ENOEXEC, "config.os: image is for '%s', not linux", os);
    if (arch && *arch && strcmp(SL_HOST_ARCH, "unknown") != 0 && strcmp(arch, SL_HOST_ARCH) != 0)
        return sl_error_set(err, ENOEXEC,
                            "config.architecture: image is for '%s', this host runs '%s'", arch,
                            SL_HOST_ARCH);
    return 0;
}

int sl_image__apply_config(sl_import_t *im, const json_t *cfg, const json_t **diff_ids,
                           sl_error_t *err)
{
    if (!json_is_object(cfg))
        return sl_error_set(err, EINVAL, "config: expected a JSON object");
    if (check_platform(cfg, err) < 0 ||
        apply_runtime(im->img, json_object_get(cfg, "config"), err) < 0)
        return -1;
    const json_t *rootfs = json_object_get(cfg, "rootfs");
    if (!json_is_object(rootfs))
        return sl_error_set(err, EINVAL, "config.rootfs: missing or not an object");
    const char *type = json_string_value(json_object_get(rootfs, "type"));
    if (type && strcmp(type, "layers") != 0)
        return sl_error_set(err, EINVAL, "config.rootfs.type: expected 'layers', got '%s'", type);
    const json_t *ids = json_object_get(rootfs, "diff_ids");
    if (!json_is_array(ids))
        return sl_error_set(err, EINVAL, "config.rootfs.diff_ids: missing or not an array");
    if (json_array_size(ids) > SL_IMAGE_MAX_LAYERS)
        return sl_error_set(err, EFBIG,
                            "config.rootfs.diff_ids: %zu layers; an image may have "
                            "at most %d",
                            json_array_size(ids), SL_IMAGE_MAX_LAYERS);
    for (size_t i = 0; i < json_array_size(ids); i++) {
        const char *s = json_string_value(json_array_get(ids, i));
        if (!sl_image__digest_hex(s))
            return sl_error_set(err, EINVAL,
                                "config.rootfs.diff_ids[%zu]: expected 'sha256:<64 hex>', got "
                                "'%.100s'",
                                i, s ? s : "(not a string)");
    }
    *diff_ids = ids;
    return 0;
}

/* ---- references and import --------------------------------------------- */

typedef enum { REF_OCI, REF_DOCKER, REF_DIR } ref_kind_t;

static const struct {
    const char *prefix;
    ref_kind_t kind;
} transports[] = {{"oci:", REF_OCI}, {"docker-archive:", REF_DOCKER}, {"dir:", REF_DIR}};

/* Splits TRANSPORT:PATH[:REST] at the first colon after the transport, as
 * skopeo does. *rest is NULL when absent or empty. */
static int parse_ref(const char *ref, ref_kind_t *kind, char **path, char **rest, sl_error_t *err)
{
    for (size_t i = 0; i < SL_ARRAY_LEN(transports); i++) {
        size_t pl = strlen(transports[i].prefix);
        if (strncmp(ref, transports[i].prefix, pl) != 0)
            continue;
        const char *p = ref + pl;
        const char *colon = transports[i].kind == REF_DIR ? NULL : strchr(p, ':');
        *kind = transports[i].kind;
        *path = xstrndup(p, colon ? (size_t)(colon - p) : strlen(p));
        *rest = colon && colon[1] ? xstrdup(colon + 1) : NULL;
        if (!**path) {
            free(*path);
            free(*rest);
            *path = *rest = NULL;
            return sl_error_set(err, EINVAL, "%s: empty path", ref);
        }
        return 0;
    }
    return sl_error_set(err, EINVAL,
                        "unsupported image reference '%s' (expected oci:DIR[:TAG], "
                        "docker-archive:FILE[:NAME:TAG] or dir:ROOTFS)",
                        ref);
}

/* A plain root filesystem used as it is, as the one lower layer; never one
 * holding the daemon's state (its API token, store and every instance's
 * files would be readable in the container): "/", "/var", ... */
static int import_dir(sl_import_t *im, const char *abs, const char *state_dir, sl_error_t *err)
{
    struct stat st;
    if (stat(abs, &st) < 0)
        return sl_error_errno(err, errno, "%s", abs);
    if (!S_ISDIR(st.st_mode))
        return sl_error_set(err, ENOTDIR, "%s: not a directory", abs);
    char state[PATH_MAX];
    if (!realpath(state_dir, state)) { /* not made yet: where it will be */
        if (errno != ENOENT || state_dir[0] != '/' || strlen(state_dir) >= sizeof(state))
            return sl_error_errno(err, errno, "state directory %s", state_dir);
        snprintf(state, sizeof(state), "%s", state_dir);
    }
    if (sl_path_holds(abs, state))
        return sl_error_set(err, EACCES,
                            "%s holds the daemon's state directory %s: not usable as a root "
                            "filesystem",
                            abs, state);
    char id[SL_DIGEST_STR_LEN];
    sl_image__sha256_buf(abs, strlen(abs), id);
    im->img->id = xstrdup(id);
    im->img->layers = xcalloc(1, sizeof(char *));
    im->img->layers[0] = xstrdup(abs);
    im->img->n_layers = 1;
    im->img->size = sl_image__du(abs);
    return 0;
}

/* What every import checks first: ref parses, its path exists (abs gets
 * its real path) and the image root, when set, admits it. *path and *rest
 * are set (caller frees) only on success. */
static int resolve_ref(const char *ref, const char *root, ref_kind_t *kind, char **path,
                       char **rest, char abs[PATH_MAX], sl_error_t *err)
{
    if (parse_ref(ref, kind, path, rest, err) < 0)
        return -1;
    int rc = 0;
    if (!realpath(*path, abs))
        rc = sl_error_errno(err, errno, "%s: cannot access %s", ref, *path);
    else if (root && *kind == REF_DIR)
        rc = sl_error_set(err, EACCES,
                          "%s: dir: images are not accepted here; this daemon takes oci: and "
                          "docker-archive: images below %s (serve --image-root)",
                          ref, root);
    else if (root && !sl_path_holds(root, abs))
        rc = sl_error_set(err, EACCES, "%s: %s is outside the image root %s (serve --image-root)",
                          ref, abs, root);
    if (rc < 0) {
        free(*path);
        free(*rest);
        *path = *rest = NULL;
    }
    return rc;
}

int sl_image_check_ref(const char *ref, const sl_image_limits_t *lim, sl_error_t *err)
{
    if (!ref)
        return sl_error_set(err, EINVAL, "sl_image_check_ref: missing argument");
    ref_kind_t kind = REF_DIR;
    sl_autofree char *path = NULL;
    sl_autofree char *rest = NULL;
    char abs[PATH_MAX];
    return resolve_ref(ref, lim ? lim->root : NULL, &kind, &path, &rest, abs, err);
}

int sl_image_import(const char *state_dir, const char *ref, const sl_image_limits_t *lim,
                    sl_image_t **out, sl_error_t *err)
{
    if (out)
        *out = NULL;
    if (!state_dir || !ref || !out)
        return sl_error_set(err, EINVAL, "sl_image_import: missing argument");
    ref_kind_t kind = REF_DIR;
    sl_autofree char *path = NULL;
    sl_autofree char *rest = NULL;
    char abs[PATH_MAX];
    sl_import_t im = {.ref = ref};
    sl_image__limits(lim, &im.lim);
    if (resolve_ref(ref, im.lim.root, &kind, &path, &rest, abs, err) < 0)
        return -1;
    im.img = xcalloc(1, sizeof(sl_image_t));
    const char *tp = kind == REF_OCI ? "oci" : kind == REF_DOCKER ? "docker-archive" : "dir";
    im.img->ref = xasprintf("%s:%s%s%s", tp, abs, rest ? ":" : "", rest ? rest : "");
    int rc;
    if (kind == REF_DIR) {
        rc = import_dir(&im, abs, state_dir, err);
    } else {
        rc = store_open(&im, state_dir, err);
        if (rc == 0) {
            clean_tmp(im.tmp_dir, false);
            rc = kind == REF_OCI ? sl_image__import_oci(&im, abs, rest, err)
                                 : sl_image__import_docker(&im, abs, rest, err);
            if (layers_commit(&im, rc == 0, err) < 0)
                rc = -1;
        }
    }
    free(im.layers_dir);
    free(im.tmp_dir);
    for (size_t i = 0; i < im.n_checked; i++)
        free(im.checked[i]);
    if (rc < 0) {
        sl_image_free(im.img);
        return sl_error_wrap(err, "%s", ref);
    }
    *out = im.img;
    return 0;
}

/* ---- record: JSON, free ------------------------------------------------ */

static json_t *strv_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *opt_json(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *sl_image_to_json(const sl_image_t *img)
{
    if (!img)
        return NULL;
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:i, s:I}", "id", opt_json(img->id),
                     "ref", opt_json(img->ref), "layers", strv_json(img->layers, img->n_layers),
                     "entrypoint", strv_json(img->entrypoint, img->n_entrypoint), "cmd",
                     strv_json(img->cmd, img->n_cmd), "env", strv_json(img->env, img->n_env),
                     "workdir", opt_json(img->workdir), "user", opt_json(img->user), "exposed_port",
                     img->exposed_port, "size", (json_int_t)img->size);
}

static int json_strv(const json_t *j, const char *key, char ***out, size_t *n, sl_error_t *err)
{
    const json_t *a = json_object_get(j, key);
    *out = NULL;
    *n = 0;
    if (!a || json_is_null(a))
        return 0;
    if (!json_is_array(a))
        return sl_error_set(err, EINVAL, "image.%s: expected an array of strings", key);
    char **v = xcalloc(json_array_size(a) + 1, sizeof(char *));
    *out = v;
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s)
            return sl_error_set(err, EINVAL, "image.%s[%zu]: expected a string", key, i);
        v[i] = xstrdup(s);
        *n = i + 1;
    }
    return 0;
}

static int json_optstr(const json_t *j, const char *key, bool required, char **out, sl_error_t *err)
{
    const json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v))
        return required ? sl_error_set(err, EINVAL, "image.%s: missing", key) : 0;
    if (!json_is_string(v))
        return sl_error_set(err, EINVAL, "image.%s: expected a string", key);
    *out = xstrdup(json_string_value(v));
    return 0;
}

sl_image_t *sl_image_from_json(const json_t *j, sl_error_t *err)
{
    if (!json_is_object(j)) {
        sl_error_set(err, EINVAL, "image: expected a JSON object");
        return NULL;
    }
    sl_image_t *img = xcalloc(1, sizeof(*img));
    const json_t *port = json_object_get(j, "exposed_port");
    const json_t *size = json_object_get(j, "size");
    int rc = 0;
    if (json_optstr(j, "id", true, &img->id, err) < 0 ||
        json_optstr(j, "ref", true, &img->ref, err) < 0 ||
        json_strv(j, "layers", &img->layers, &img->n_layers, err) < 0 ||
        json_strv(j, "entrypoint", &img->entrypoint, &img->n_entrypoint, err) < 0 ||
        json_strv(j, "cmd", &img->cmd, &img->n_cmd, err) < 0 ||
        json_strv(j, "env", &img->env, &img->n_env, err) < 0 ||
        json_optstr(j, "workdir", false, &img->workdir, err) < 0 ||
        json_optstr(j, "user", false, &img->user, err) < 0)
        rc = -1;
    else if (port && !json_is_null(port) &&
             (!json_is_integer(port) || json_integer_value(port) < 0 ||
              json_integer_value(port) > 65535))
        rc = sl_error_set(err, EINVAL, "image.exposed_port: expected an integer 0..65535");
    else if (size && !json_is_null(size) &&
             (!json_is_integer(size) || json_integer_value(size) < 0))
        rc = sl_error_set(err, EINVAL, "image.size: expected a non-negative integer");
    else if (img->n_layers == 0)
        rc = sl_error_set(err, EINVAL, "image.layers: expected at least one layer");
    if (rc < 0) {
        sl_image_free(img);
        return NULL;
    }
    img->exposed_port = port ? (int)json_integer_value(port) : 0;
    img->size = size ? (uint64_t)json_integer_value(size) : 0;
    return img;
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

void sl_image_free(sl_image_t *img)
{
    if (!img)
        return;
    free(img->id);
    free(img->ref);
    strv_free(img->layers, img->n_layers);
    strv_free(img->entrypoint, img->n_entrypoint);
    strv_free(img->cmd, img->n_cmd);
    strv_free(img->env, img->n_env);
    free(img->workdir);
    free(img->user);
    free(img);
}

/* ---- gc ---------------------------------------------------------------- */

static bool kept(const char *hex, const char *const *keep, size_t n_keep)
{
    for (size_t i = 0; i < n_keep; i++) {
        const char *k = keep[i];
        if (!k)
            continue;
        const char *slash = strrchr(k, '/');
        if (slash)
            k = slash + 1;
        if (strncmp(k, "sha256:", 7) == 0)
            k += 7;
        if (strcmp(k, hex) == 0)
            return true;
    }
    return false;
}

int sl_image_gc(const char *state_dir, const char *const *keep, size_t n_keep, sl_error_t *err)
{
    sl_import_t im = {0};
    if (store_open(&im, state_dir, err) < 0)
        return -1;
    clean_tmp(im.tmp_dir, false);
    int rc = 0;
    DIR *d = opendir(im.layers_dir);
    if (!d)
        rc = sl_error_errno(err, errno, "gc: open %s", im.layers_dir);
    struct dirent *de;
    while (rc == 0 && d && (de = readdir(d))) {
        if (!sl_image__is_hex64(de->d_name, strlen(de->d_name)) || kept(de->d_name, keep, n_keep))
            continue;
        /* Move out of the store first so no half-removed layer is ever
         * visible under its name. */
        sl_autofree char *from = xasprintf("%s/%s", im.layers_dir, de->d_name);
        sl_autofree char *to = xasprintf("%s/%d.gc-%s", im.tmp_dir, (int)getpid(), de->d_name);
        if (rename(from, to) < 0)
            rc = sl_error_errno(err, errno, "gc: rename %s", from);
        else if (sl_rm_rf(to, err) < 0)
            rc = sl_error_wrap(err, "gc");
        else
            sl_info("image", "gc: removed layer %s", de->d_name);
    }
    if (d)
        closedir(d);
    free(im.layers_dir);
    free(im.tmp_dir);
    return rc;
}
