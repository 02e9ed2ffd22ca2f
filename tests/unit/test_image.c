/*
 * test_image.c — image import and the layer store, through the public API.
 *
 * Fixtures are built at test time: tar layers with libarchive's writer, OCI
 * layouts and docker-archives by hand (blobs, index.json, manifest.json),
 * so no external tools are needed. Most cases need root (chown, mknod of
 * whiteouts, trusted.* xattrs) and are skipped without it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "image.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

/* ---- fixture helpers ---------------------------------------------------- */

typedef struct ent {
    const char *path;
    char type;        /* f file, d dir, l symlink, h hardlink, c char dev, b block dev, p fifo */
    const char *data; /* file content or link target */
    int mode;
    int uid, gid;
    size_t len; /* file length when data is binary; 0 = strlen */
    unsigned maj, min;
} ent_t;

#define FILE_(p, d)                                                                                \
    {                                                                                              \
        (p), 'f', (d), 0644, 0, 0, 0, 0, 0                                                         \
    }
#define DIR_(p)                                                                                    \
    {                                                                                              \
        (p), 'd', NULL, 0755, 0, 0, 0, 0, 0                                                        \
    }
#define LINK_(p, t)                                                                                \
    {                                                                                              \
        (p), 'l', (t), 0777, 0, 0, 0, 0, 0                                                         \
    }
#define HARD_(p, t)                                                                                \
    {                                                                                              \
        (p), 'h', (t), 0644, 0, 0, 0, 0, 0                                                         \
    }

#define MTIME 1600000000

static char g_tmp[PATH_MAX]; /* per-test scratch dir */

static bool is_root(void)
{
    return geteuid() == 0;
}

static void sha256_hex(const void *p, size_t n, char out[72])
{
    unsigned char md[32];
    unsigned int l = 0;
    EVP_Digest(p, n, md, &l, EVP_sha256(), NULL);
    memcpy(out, "sha256:", 7);
    for (int i = 0; i < 32; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

/* dst = a + b (b starts with "/"); fails the test on overflow. */
static void join(char dst[PATH_MAX], const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    assert_true(la + lb < PATH_MAX);
    memmove(dst, a, la);
    memcpy(dst + la, b, lb + 1);
}

static void *mk_tar(const ent_t *e, size_t n, size_t *len)
{
    size_t cap = 64 * 1024;
    for (size_t i = 0; i < n; i++)
        cap += (e[i].len ? e[i].len : (e[i].data ? strlen(e[i].data) : 0)) + 4096;
    char *buf = malloc(cap);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    archive_write_set_bytes_in_last_block(a, 1);
    assert_int_equal(archive_write_open_memory(a, buf, cap, len), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *x = archive_entry_new();
        archive_entry_set_pathname(x, e[i].path);
        archive_entry_set_perm(x, (mode_t)e[i].mode);
        archive_entry_set_uid(x, e[i].uid);
        archive_entry_set_gid(x, e[i].gid);
        archive_entry_set_mtime(x, MTIME, 0);
        size_t dlen = 0;
        switch (e[i].type) {
        case 'f':
            dlen = e[i].len ? e[i].len : strlen(e[i].data);
            archive_entry_set_filetype(x, AE_IFREG);
            archive_entry_set_size(x, (la_int64_t)dlen);
            break;
        case 'd':
            archive_entry_set_filetype(x, AE_IFDIR);
            break;
        case 'l':
            archive_entry_set_filetype(x, AE_IFLNK);
            archive_entry_set_symlink(x, e[i].data);
            break;
        case 'h':
            archive_entry_set_filetype(x, AE_IFREG);
            archive_entry_set_hardlink(x, e[i].data);
            break;
        case 'c':
        case 'b':
            archive_entry_set_filetype(x, e[i].type == 'c' ? AE_IFCHR : AE_IFBLK);
            archive_entry_set_rdevmajor(x, e[i].maj);
            archive_entry_set_rdevminor(x, e[i].min);
            break;
        case 'p':
            archive_entry_set_filetype(x, AE_IFIFO);
            break;
        }
        assert_true(archive_write_header(a, x) >= ARCHIVE_WARN);
        if (dlen)
            assert_int_equal(archive_write_data(a, e[i].data, dlen), (la_ssize_t)dlen);
        archive_entry_free(x);
    }
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
    return buf;
}

/* Compress with libarchive's raw writer: 'g' gzip, 'z' zstd, 0 copy. */
static void *compress_buf(const void *in, size_t len, char filter, size_t *outlen)
{
    char *out = malloc(len + 65536);
    if (!filter) {
        memcpy(out, in, len);
        *outlen = len;
        return out;
    }
    struct archive *a = archive_write_new();
    archive_write_set_format_raw(a);
    if (filter == 'g')
        archive_write_add_filter_gzip(a);
    else
        archive_write_add_filter_zstd(a);
    archive_write_set_bytes_in_last_block(a, 1);
    assert_int_equal(archive_write_open_memory(a, out, len + 65536, outlen), ARCHIVE_OK);
    struct archive_entry *x = archive_entry_new();
    archive_entry_set_pathname(x, "data");
    archive_entry_set_filetype(x, AE_IFREG);
    archive_entry_set_size(x, (la_int64_t)len);
    assert_int_equal(archive_write_header(a, x), ARCHIVE_OK);
    assert_int_equal(archive_write_data(a, in, len), (la_ssize_t)len);
    archive_entry_free(x);
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
    return out;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static char *path_in(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *path_in(const char *fmt, ...)
{
    char rel[PATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof(rel), fmt, ap);
    va_end(ap);
    return xasprintf("%s/%s", g_tmp, rel);
}

/* ---- OCI layout builder ------------------------------------------------- */

typedef struct layer_spec {
    const ent_t *ents;
    size_t n;
    char filter;
    const char *media; /* NULL: derived from filter */
} layer_spec_t;

static void layout_init(const char *dir)
{
    sl_autofree char *blobs = xasprintf("%s/blobs/sha256", dir);
    assert_int_equal(sl_mkdir_p(blobs, 0755, NULL), 0);
    sl_autofree char *ol = xasprintf("%s/oci-layout", dir);
    const char *v = "{\"imageLayoutVersion\":\"1.0.0\"}";
    write_file(ol, v, strlen(v));
}

static char *blob_file(const char *dir, const char *digest)
{
    return xasprintf("%s/blobs/sha256/%s", dir, digest + 7);
}

static json_t *put_blob(const char *dir, const char *media, const void *data, size_t len)
{
    char d[72];
    sha256_hex(data, len, d);
    sl_autofree char *p = blob_file(dir, d);
    write_file(p, data, len);
    return json_pack("{s:s, s:s, s:I}", "mediaType", media, "digest", d, "size", (json_int_t)len);
}

static json_t *put_json_blob(const char *dir, const char *media, json_t *doc)
{
    char *s = json_dumps(doc, JSON_COMPACT);
    json_t *d = put_blob(dir, media, s, strlen(s));
    free(s);
    json_decref(doc);
    return d;
}

/* Build one image (layers, config, manifest) into the layout; returns the
 * manifest descriptor. runtime (stolen) is config.config. */
static json_t *build_image(const char *dir, const layer_spec_t *ls, size_t n, json_t *runtime)
{
    json_t *layers = json_array(), *diff_ids = json_array();
    for (size_t i = 0; i < n; i++) {
        size_t tlen, blen;
        void *tar = mk_tar(ls[i].ents, ls[i].n, &tlen);
        void *blob = compress_buf(tar, tlen, ls[i].filter, &blen);
        char diff[72];
        sha256_hex(tar, tlen, diff);
        json_array_append_new(diff_ids, json_string(diff));
        const char *media = ls[i].media           ? ls[i].media
                            : ls[i].filter == 'g' ? "application/vnd.oci.image.layer.v1.tar+gzip"
                            : ls[i].filter == 'z' ? "application/vnd.oci.image.layer.v1.tar+zstd"
                                                  : "application/vnd.oci.image.layer.v1.tar";
        json_array_append_new(layers, put_blob(dir, media, blob, blen));
        free(tar);
        free(blob);
    }
    json_t *cfg = json_pack("{s:s, s:s, s:o, s:{s:s, s:o}}", "architecture", "amd64", "os", "linux",
                            "config", runtime ? runtime : json_object(), "rootfs", "type", "layers",
                            "diff_ids", diff_ids);
    json_t *cd = put_json_blob(dir, "application/vnd.oci.image.config.v1+json", cfg);
    json_t *m =
        json_pack("{s:i, s:s, s:o, s:o}", "schemaVersion", 2, "mediaType",
                  "application/vnd.oci.image.manifest.v1+json", "config", cd, "layers", layers);
    return put_json_blob(dir, "application/vnd.oci.image.manifest.v1+json", m);
}

static json_t *tagged(json_t *desc, const char *tag)
{
    json_object_set_new(desc, "annotations",
                        json_pack("{s:s}", "org.opencontainers.image.ref.name", tag));
    return desc;
}

static void write_index(const char *dir, json_t *manifests)
{
    json_t *idx = json_pack("{s:i, s:o}", "schemaVersion", 2, "manifests", manifests);
    sl_autofree char *p = xasprintf("%s/index.json", dir);
    assert_int_equal(json_dump_file(idx, p, JSON_COMPACT), 0);
    json_decref(idx);
}

/* Read a JSON blob of the layout back (to find layer digests). */
static json_t *load_blob(const char *dir, const char *digest)
{
    sl_autofree char *p = blob_file(dir, digest);
    json_t *j = json_load_file(p, 0, NULL);
    assert_non_null(j);
    return j;
}

static const char *layer_digest(const char *dir, const json_t *mdesc, size_t i, json_t **hold)
{
    *hold = load_blob(dir, json_string_value(json_object_get(mdesc, "digest")));
    return json_string_value(
        json_object_get(json_array_get(json_object_get(*hold, "layers"), i), "digest"));
}

/* ---- fixtures ----------------------------------------------------------- */

static const ent_t base_ents[] = {
    DIR_("etc"),
    FILE_("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
    FILE_("etc/keep", "lower\n"),
    DIR_("opt"),
    FILE_("opt/a", "a"),
    FILE_("opt/b", "b"),
    DIR_("bin"),
    {"bin/tool", 'f', "#!tool", 04755, 1000, 1001, 0, 0, 0},
    HARD_("bin/tool2", "bin/tool"),
    LINK_("bin/sh", "/bin/busybox"),
    {"tmp", 'd', NULL, 01777, 0, 0, 0, 0, 0},
};

static const ent_t top_ents[] = {
    FILE_("etc/.wh.keep", ""),
    DIR_("opt"),
    FILE_("opt/.wh..wh..opq", ""),
    FILE_("opt/c", "c"),
};

static int setup(void **state)
{
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/sl-test-image.XXXXXX");
    assert_non_null(mkdtemp(g_tmp));
    return 0;
}

static int teardown(void **state)
{
    sl_rm_rf(g_tmp, NULL);
    return 0;
}

static char *make_two_layer_layout(json_t **mdesc_out)
{
    char *dir = path_in("oci");
    layout_init(dir);
    layer_spec_t ls[] = {{base_ents, SL_ARRAY_LEN(base_ents), 0, NULL},
                         {top_ents, SL_ARRAY_LEN(top_ents), 'g', NULL}};
    json_t *rt = json_pack("{s:[s], s:[s,s], s:[s], s:s, s:s, s:{s:{}}}", "Entrypoint", "/hello",
                           "Cmd", "serve", "--fast", "Env", "PATH=/bin", "WorkingDir", "/srv",
                           "User", "65532", "ExposedPorts", "8080/tcp");
    json_t *m = build_image(dir, ls, 2, rt);
    if (mdesc_out)
        *mdesc_out = json_incref(m);
    write_index(dir, json_pack("[o]", tagged(m, "latest")));
    return dir;
}

static sl_image_t *import_ok(const char *ref)
{
    sl_autofree char *state = path_in("state");
    sl_error_t err = {0};
    sl_image_t *img = NULL;
    int rc = sl_image_import(state, ref, NULL, &img, &err);
    if (rc < 0)
        fail_msg("import %s: %s", ref, err.msg);
    return img;
}

static void import_fails(const char *ref, const sl_image_limits_t *lim, sl_error_t *err)
{
    sl_autofree char *state = path_in("state");
    sl_image_t *img = (sl_image_t *)1;
    memset(err, 0, sizeof(*err));
    assert_true(sl_image_import(state, ref, lim, &img, err) < 0);
    assert_null(img);
    assert_true(err->msg[0] != '\0');
    assert_non_null(strstr(err->msg, ref)); /* every error names the reference */
}

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        if (!strstr((hay), (needle)))                                                              \
            fail_msg("'%s' does not contain '%s'", (hay), (needle));                               \
    } while (0)

static void assert_tmp_empty(void)
{
    sl_autofree char *tmp = path_in("state/layers/tmp");
    DIR *d = opendir(tmp);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            fail_msg("leftover in layers/tmp: %s", de->d_name);
    closedir(d);
}

static size_t count_layers_in_store(void)
{
    sl_autofree char *p = path_in("state/layers/sha256");
    DIR *d = opendir(p);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

/* ---- tests: OCI --------------------------------------------------------- */

static void test_oci_two_layers(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = make_two_layer_layout(NULL);
    sl_autofree char *ref = xasprintf("oci:%s:latest", dir);
    sl_image_t *img = import_ok(ref);
    assert_int_equal(img->n_layers, 2);
    assert_string_equal(img->ref, ref);
    assert_true(strncmp(img->id, "sha256:", 7) == 0);
    const char *lo = img->layers[0], *up = img->layers[1];
    struct stat st;
    char p[PATH_MAX], buf[64];

    /* lower layer: modes, owners, setuid, mtimes, symlink, hardlink */
    join(p, lo, "/bin/tool");
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 04755);
    assert_int_equal(st.st_uid, 1000);
    assert_int_equal(st.st_gid, 1001);
    assert_int_equal(st.st_mtime, MTIME);
    assert_int_equal(st.st_nlink, 2);
    join(p, lo, "/bin/sh");
    ssize_t n = readlink(p, buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, "/bin/busybox");
    join(p, lo, "/tmp");
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 01777);
    join(p, lo, "/etc");
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_mtime, MTIME); /* dir times applied after children */

    /* upper layer: whiteout device, opaque dir, new file */
    join(p, up, "/etc/keep");
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISCHR(st.st_mode));
    assert_int_equal(st.st_rdev, makedev(0, 0));
    join(p, up, "/etc/.wh.keep");
    assert_int_equal(lstat(p, &st), -1);
    join(p, up, "/opt");
    n = getxattr(p, "trusted.overlay.opaque", buf, sizeof(buf));
    assert_int_equal(n, 1);
    assert_int_equal(buf[0], 'y');
    join(p, up, "/opt/c");
    assert_int_equal(lstat(p, &st), 0);
    join(p, up, "/opt/.wh..wh..opq");
    assert_int_equal(lstat(p, &st), -1);

    /* config fields */
    assert_int_equal(img->n_entrypoint, 1);
    assert_string_equal(img->entrypoint[0], "/hello");
    assert_int_equal(img->n_cmd, 2);
    assert_string_equal(img->cmd[1], "--fast");
    assert_int_equal(img->n_env, 1);
    assert_string_equal(img->env[0], "PATH=/bin");
    assert_string_equal(img->workdir, "/srv");
    assert_string_equal(img->user, "65532");
    assert_int_equal(img->exposed_port, 8080);
    assert_true(img->size > 0);

    /* re-import reuses the store */
    sl_image_t *again = import_ok(ref);
    assert_string_equal(again->layers[0], lo);
    assert_string_equal(again->layers[1], up);
    assert_int_equal(count_layers_in_store(), 2);
    assert_tmp_empty();
    sl_image_free(again);
    sl_image_free(img);
}

typedef struct race {
    const char *state, *ref;
    int rc;
    char msg[SL_ERRMSG_MAX];
    sl_image_t *img;
} race_t;

static void *race_import(void *arg)
{
    race_t *r = arg;
    sl_error_t err = {0};
    r->rc = sl_image_import(r->state, r->ref, NULL, &r->img, &err);
    memcpy(r->msg, err.msg, sizeof(r->msg));
    return NULL;
}

static void test_concurrent_import(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = make_two_layer_layout(NULL);
    sl_autofree char *ref = xasprintf("oci:%s", dir);
    sl_autofree char *st = path_in("state");
    race_t r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (race_t){.state = st, .ref = ref};
        pthread_create(&t[i], NULL, race_import, &r[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++) {
        if (r[i].rc != 0)
            fail_msg("import %d: %s", i, r[i].msg);
        assert_string_equal(r[i].img->layers[1], r[0].img->layers[1]);
    }
    for (int i = 0; i < 4; i++)
        sl_image_free(r[i].img);
    assert_int_equal(count_layers_in_store(), 2);
    assert_tmp_empty();
}

static void test_oci_tag_selection(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = path_in("oci");
    layout_init(dir);
    const ent_t e1[] = {FILE_("v", "1")};
    const ent_t e2[] = {FILE_("v", "2")};
    layer_spec_t l1[] = {{e1, 1, 'g', NULL}}, l2[] = {{e2, 1, 0, NULL}};
    json_t *m1 = build_image(dir, l1, 1, json_pack("{s:[s]}", "Cmd", "one"));
    json_t *m2 = build_image(dir, l2, 1, json_pack("{s:[s]}", "Cmd", "two"));
    write_index(dir, json_pack("[o,o]", tagged(m1, "v1"), tagged(m2, "v2")));

    sl_autofree char *r1 = xasprintf("oci:%s:v1", dir);
    sl_autofree char *r2 = xasprintf("oci:%s:v2", dir);
    sl_image_t *a = import_ok(r1), *b = import_ok(r2);
    assert_string_equal(a->cmd[0], "one");
    assert_string_equal(b->cmd[0], "two");
    assert_string_not_equal(a->id, b->id);
    sl_image_free(a);
    sl_image_free(b);

    sl_error_t err;
    sl_autofree char *none = xasprintf("oci:%s", dir);
    import_fails(none, NULL, &err);
    assert_contains(err.msg, "2 manifests");
    assert_contains(err.msg, "v1, v2");
    sl_autofree char *nope = xasprintf("oci:%s:nope", dir);
    import_fails(nope, NULL, &err);
    assert_contains(err.msg, "no manifest tagged 'nope'");
}

static void test_oci_nested_index(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = path_in("oci");
    layout_init(dir);
    const ent_t ea[] = {FILE_("arch", "arm64")};
    const ent_t eb[] = {FILE_("arch", "amd64")};
    layer_spec_t la[] = {{ea, 1, 'g', NULL}}, lb[] = {{eb, 1, 'g', NULL}};
    json_t *ma = build_image(dir, la, 1, NULL);
    json_t *mb = build_image(dir, lb, 1, json_pack("{s:[s]}", "Cmd", "amd"));
    json_object_set_new(ma, "platform",
                        json_pack("{s:s,s:s}", "os", "linux", "architecture", "arm64"));
    json_object_set_new(mb, "platform",
                        json_pack("{s:s,s:s}", "os", "linux", "architecture", "amd64"));
    json_t *idx = json_pack("{s:i, s:s, s:[o,o]}", "schemaVersion", 2, "mediaType",
                            "application/vnd.oci.image.index.v1+json", "manifests", ma, mb);
    json_t *id = put_json_blob(dir, "application/vnd.oci.image.index.v1+json", idx);
    write_index(dir, json_pack("[o]", tagged(id, "multi")));
    sl_autofree char *ref = xasprintf("oci:%s:multi", dir);
    sl_image_t *img = import_ok(ref);
    assert_string_equal(img->cmd[0], "amd");
    sl_image_free(img);
}

static void test_oci_zstd_and_layout_errors(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = path_in("oci");
    layout_init(dir);
    const ent_t e[] = {FILE_("z", "zstd")};
    layer_spec_t l[] = {{e, 1, 'z', NULL}};
    write_index(dir, json_pack("[o]", tagged(build_image(dir, l, 1, NULL), "latest")));
    sl_autofree char *ref = xasprintf("oci:%s", dir);
    sl_image_t *img = import_ok(ref);
    char p[PATH_MAX];
    join(p, img->layers[0], "/z");
    assert_int_equal(access(p, F_OK), 0);
    sl_image_free(img);

    sl_error_t err;
    sl_autofree char *ol = xasprintf("%s/oci-layout", dir);
    write_file(ol, "{\"imageLayoutVersion\":\"2.0.0\"}", 30);
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, "imageLayoutVersion '2.0.0'");
    unlink(ol);
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, "oci-layout");

    sl_autofree char *missing = path_in("nonexistent");
    sl_autofree char *r2 = xasprintf("oci:%s", missing);
    import_fails(r2, NULL, &err);
    assert_contains(err.msg, "No such file");
    import_fails("registry:foo/bar", NULL, &err);
    assert_contains(err.msg, "unsupported image reference");
    import_fails("oci::latest", NULL, &err);
    assert_contains(err.msg, "empty path");

    /* The dry-run check: the same first errors, without importing. */
    assert_int_equal(sl_image_check_ref(ref, NULL, &err), 0);
    assert_true(sl_image_check_ref(r2, NULL, &err) < 0);
    assert_contains(err.msg, "No such file");
    assert_contains(err.msg, r2);
    assert_true(sl_image_check_ref("registry:foo/bar", NULL, &err) < 0);
    assert_contains(err.msg, "unsupported image reference");
    assert_true(sl_image_check_ref("docker-archive:", NULL, &err) < 0);
    assert_contains(err.msg, "empty path");
}

static void test_unsupported_media_type(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = path_in("oci");
    layout_init(dir);
    const ent_t e[] = {FILE_("x", "x")};
    layer_spec_t l[] = {{e, 1, 0, "application/vnd.oci.image.layer.v1.tar+bzip9"}};
    write_index(dir, json_pack("[o]", build_image(dir, l, 1, NULL)));
    sl_autofree char *ref = xasprintf("oci:%s", dir);
    sl_error_t err;
    import_fails(ref, NULL, &err);
    assert_contains(err.msg,
                    "unsupported media type 'application/vnd.oci.image.layer.v1.tar+bzip9'");
}

static void test_digest_mismatch(void **state)
{
    if (!is_root())
        skip();
    json_t *m;
    sl_autofree char *dir = make_two_layer_layout(&m);
    json_t *hold;
    const char *ld = layer_digest(dir, m, 1, &hold);
    sl_autofree char *p = blob_file(dir, ld);
    /* flip one byte in the middle of the gzip'd upper layer */
    int fd = open(p, O_RDWR);
    struct stat st;
    fstat(fd, &st);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, st.st_size / 2), 1);
    c ^= 0x55;
    assert_int_equal(pwrite(fd, &c, 1, st.st_size / 2), 1);
    close(fd);
    sl_autofree char *ref = xasprintf("oci:%s", dir);
    sl_error_t err;
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, "digest mismatch");
    assert_contains(err.msg, ld);
    assert_contains(err.msg, "got sha256:");
    assert_tmp_empty();

    /* the same when the store has the layer (reused, not unpacked) */
    fd = open(p, O_RDWR);
    c ^= 0x55;
    assert_int_equal(pwrite(fd, &c, 1, st.st_size / 2), 1);
    sl_image_free(import_ok(ref));
    c ^= 0x55;
    assert_int_equal(pwrite(fd, &c, 1, st.st_size / 2), 1);
    close(fd);
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, "digest mismatch");
    assert_contains(err.msg, ld);

    /* a corrupt config is caught too */
    json_t *man = load_blob(dir, json_string_value(json_object_get(m, "digest")));
    const char *cd = json_string_value(json_object_get(json_object_get(man, "config"), "digest"));
    sl_autofree char *cp = blob_file(dir, cd);
    fd = open(cp, O_RDWR);
    assert_int_equal(pwrite(fd, " ", 1, 0), 1);
    close(fd);
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, "config");
    assert_contains(err.msg, "digest mismatch");
    json_decref(man);
    json_decref(hold);
    json_decref(m);
}

static void test_truncated_gzip(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = path_in("oci");
    layout_init(dir);
    char big[20000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7919 % 251);
    const ent_t e[] = {{"big", 'f', big, 0644, 0, 0, sizeof(big), 0, 0}};
    size_t tlen, glen;
    void *tar = mk_tar(e, 1, &tlen);
    void *gz = compress_buf(tar, tlen, 'g', &glen);
    char diff[72];
    sha256_hex(tar, tlen, diff);
    /* a consistent descriptor for a blob cut in half */
    json_t *ld = put_blob(dir, "application/vnd.oci.image.layer.v1.tar+gzip", gz, glen / 2);
    const char *ldig = json_string_value(json_object_get(ld, "digest"));
    json_t *cfg =
        json_pack("{s:{}, s:{s:s, s:[s]}}", "config", "rootfs", "type", "layers", "diff_ids", diff);
    json_t *cd = put_json_blob(dir, "application/vnd.oci.image.config.v1+json", cfg);
    char saved[72];
    snprintf(saved, sizeof(saved), "%s", ldig);
    json_t *man = json_pack("{s:i, s:o, s:[o]}", "schemaVersion", 2, "config", cd, "layers", ld);
    write_index(dir, json_pack("[o]", put_json_blob(
                                          dir, "application/vnd.oci.image.manifest.v1+json", man)));
    sl_autofree char *ref = xasprintf("oci:%s", dir);
    sl_error_t err;
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, saved);
    assert_contains(err.msg, "truncated");
    assert_tmp_empty();
    assert_int_equal(count_layers_in_store(), 0);
    free(tar);
    free(gz);
}

/* A blob missing, then a FIFO in its place: refused at once, not waited
 * on (the old code blocked in open() for ever). */
static void test_missing_or_fifo_blob(void **state)
{
    if (!is_root())
        skip();
    alarm(30);
    json_t *m;
    sl_autofree char *dir = make_two_layer_layout(&m);
    json_t *hold;
    const char *ld = layer_digest(dir, m, 0, &hold);
    sl_autofree char *p = blob_file(dir, ld);
    assert_int_equal(unlink(p), 0);
    sl_autofree char *ref = xasprintf("oci:%s", dir);
    sl_error_t err;
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, ld);
    assert_contains(err.msg, "missing");

    assert_int_equal(mkfifo(p, 0644), 0);
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, "is not a regular file");
    assert_contains(err.msg, ld);

    sl_autofree char *index = xasprintf("%s/index.json", dir);
    assert_int_equal(unlink(index), 0);
    assert_int_equal(mkfifo(index, 0644), 0);
    sl_image_limits_t lim = {.root = dir}; /* and through the image root's openat2 */
    import_fails(ref, &lim, &err);
    assert_contains(err.msg, "index.json is not a regular file");

    sl_autofree char *fifo = path_in("archive.tar");
    assert_int_equal(mkfifo(fifo, 0644), 0);
    sl_autofree char *dref = xasprintf("docker-archive:%s", fifo);
    import_fails(dref, NULL, &err);
    assert_contains(err.msg, "is not a regular file");
    alarm(0);
    json_decref(hold);
    json_decref(m);
}

/* The same layer listed n times by one manifest (and its config). */
static char *repeated_layer_layout(size_t n)
{
    sl_autofree char *built = make_two_layer_layout(NULL);
    char *dir = path_in("rep%zu", n);
    assert_int_equal(rename(built, dir), 0);
    sl_autofree char *ip = xasprintf("%s/index.json", dir);
    json_t *idx = json_load_file(ip, 0, NULL);
    assert_non_null(idx);
    const char *md = json_string_value(
        json_object_get(json_array_get(json_object_get(idx, "manifests"), 0), "digest"));
    json_t *m = load_blob(dir, md);
    json_t *cfg =
        load_blob(dir, json_string_value(json_object_get(json_object_get(m, "config"), "digest")));
    json_t *layer = json_array_get(json_object_get(m, "layers"), 0);
    json_t *rootfs = json_object_get(cfg, "rootfs");
    json_t *diff = json_array_get(json_object_get(rootfs, "diff_ids"), 0);
    json_t *layers = json_array(), *ids = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append(layers, layer);
        json_array_append(ids, diff);
    }
    json_object_set_new(rootfs, "diff_ids", ids);
    json_object_set_new(m, "config",
                        put_json_blob(dir, "application/vnd.oci.image.config.v1+json", cfg));
    json_object_set_new(m, "layers", layers);
    json_t *mdesc = put_json_blob(dir, "application/vnd.oci.image.manifest.v1+json", m);
    write_index(dir, json_pack("[o]", tagged(mdesc, "latest")));
    json_decref(idx);
    return dir;
}

/* A layer listed again is taken once; an image of more layers than any
 * runtime stacks is refused before a blob is read. */
static void test_repeated_layers(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = repeated_layer_layout(100);
    sl_autofree char *ref = xasprintf("oci:%s", dir);
    sl_image_t *img = import_ok(ref);
    assert_int_equal(img->n_layers, 1);
    sl_image_free(img);

    sl_autofree char *many = repeated_layer_layout(SL_IMAGE_MAX_LAYERS + 1);
    sl_autofree char *mref = xasprintf("oci:%s", many);
    sl_error_t err;
    import_fails(mref, NULL, &err);
    assert_contains(err.msg, "129 layers; an image may have at most 128");
}

static void test_diffid_mismatch(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = path_in("oci");
    layout_init(dir);
    const ent_t e[] = {FILE_("x", "x")};
    size_t tlen;
    void *tar = mk_tar(e, 1, &tlen);
    json_t *ld = put_blob(dir, "application/vnd.oci.image.layer.v1.tar", tar, tlen);
    const char *wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    json_t *cfg = json_pack("{s:{}, s:{s:s, s:[s]}}", "config", "rootfs", "type", "layers",
                            "diff_ids", wrong);
    json_t *cd = put_json_blob(dir, "application/vnd.oci.image.config.v1+json", cfg);
    json_t *man = json_pack("{s:i, s:o, s:[o]}", "schemaVersion", 2, "config", cd, "layers", ld);
    write_index(dir, json_pack("[o]", put_json_blob(
                                          dir, "application/vnd.oci.image.manifest.v1+json", man)));
    sl_autofree char *ref = xasprintf("oci:%s", dir);
    sl_error_t err;
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, "DiffID mismatch");
    assert_contains(err.msg, wrong);
    free(tar);
}

/* An image whose second layer fails leaves the store as it was: the first
 * layer, which checked out, is not kept without its image. */
static void test_failed_import_stores_nothing(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = path_in("half");
    layout_init(dir);
    static char big[64 * 1024];
    memset(big, 'g', sizeof(big));
    const ent_t good[] = {{"good", 'f', big, 0644, 0, 0, sizeof(big), 0, 0}};
    const ent_t bad[] = {FILE_("../x", "x")};
    layer_spec_t ls[] = {{good, 1, 0, NULL}, {bad, 1, 'g', NULL}};
    write_index(dir, json_pack("[o]", tagged(build_image(dir, ls, 2, NULL), "latest")));
    sl_autofree char *ref = xasprintf("oci:%s:latest", dir);
    size_t before = count_layers_in_store();
    sl_error_t err;
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, "escapes the layer root");
    assert_int_equal(count_layers_in_store(), before);
    assert_tmp_empty();
    /* the same first layer in a good image is stored then */
    sl_autofree char *ok = path_in("whole");
    layout_init(ok);
    layer_spec_t one[] = {{good, 1, 0, NULL}};
    write_index(ok, json_pack("[o]", tagged(build_image(ok, one, 1, NULL), "latest")));
    sl_autofree char *ref2 = xasprintf("oci:%s:latest", ok);
    sl_image_t *img = import_ok(ref2);
    assert_int_equal(count_layers_in_store(), before + 1);
    assert_tmp_empty();
    sl_image_free(img);
}

/* A layer in the store is not anyone's to claim: an image whose config
 * names a stored layer's DiffID gets it only with a blob that is it. */
static void test_stored_layer_not_claimable(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *a = path_in("claim-a");
    layout_init(a);
    const ent_t secret[] = {FILE_("secret.txt", "another tenant's")};
    layer_spec_t la = {secret, 1, 0, NULL};
    write_index(a, json_pack("[o]", tagged(build_image(a, &la, 1, NULL), "latest")));
    sl_autofree char *ra = xasprintf("oci:%s:latest", a);
    sl_image_t *img = import_ok(ra);
    const char *stored = strrchr(img->layers[0], '/') + 1;
    sl_autofree char *diff = xasprintf("sha256:%s", stored);

    sl_autofree char *b = path_in("claim-b");
    layout_init(b);
    const ent_t mine[] = {FILE_("b.txt", "b")};
    size_t tlen;
    void *tar = mk_tar(mine, 1, &tlen);
    json_t *ld = put_blob(b, "application/vnd.oci.image.layer.v1.tar", tar, tlen);
    json_t *cfg =
        json_pack("{s:{}, s:{s:s, s:[s]}}", "config", "rootfs", "type", "layers", "diff_ids", diff);
    json_t *cd = put_json_blob(b, "application/vnd.oci.image.config.v1+json", cfg);
    json_t *man = json_pack("{s:i, s:o, s:[o]}", "schemaVersion", 2, "config", cd, "layers", ld);
    write_index(
        b, json_pack("[o]", put_json_blob(b, "application/vnd.oci.image.manifest.v1+json", man)));
    sl_autofree char *rb = xasprintf("oci:%s", b);
    sl_error_t err;
    import_fails(rb, NULL, &err);
    assert_contains(err.msg, "DiffID mismatch");
    assert_contains(err.msg, diff);
    free(tar);
    sl_image_free(img);
}

static void test_config_errors(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = path_in("oci");
    layout_init(dir);
    const ent_t e[] = {FILE_("x", "x")};
    layer_spec_t l[] = {{e, 1, 0, NULL}};
    write_index(
        dir, json_pack("[o]",
                       build_image(dir, l, 1, json_pack("{s:s}", "Entrypoint", "/not-an-array"))));
    sl_autofree char *ref = xasprintf("oci:%s", dir);
    sl_error_t err;
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, "config.config.Entrypoint");

    write_index(dir,
                json_pack("[o]", build_image(dir, l, 1,
                                             json_pack("{s:{s:{}}}", "ExposedPorts", "http/tcp"))));
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, "ExposedPorts");

    /* udp first, then tcp: the tcp one is the port */
    write_index(dir, json_pack("[o]", build_image(dir, l, 1,
                                                  json_pack("{s:{s:{},s:{}}}", "ExposedPorts",
                                                            "53/udp", "9090"))));
    sl_image_t *img = import_ok(ref);
    assert_int_equal(img->exposed_port, 9090);
    assert_null(img->workdir);
    assert_null(img->user);
    assert_int_equal(img->n_entrypoint, 0);
    sl_image_free(img);
}

/* ---- tests: docker-archive ---------------------------------------------- */

typedef struct member {
    const char *name;
    const void *data;
    size_t len;
    const char *symlink;
} member_t;

static void write_docker(const char *path, const member_t *m, size_t n)
{
    ent_t *e = calloc(n, sizeof(ent_t));
    for (size_t i = 0; i < n; i++) {
        e[i].path = m[i].name;
        e[i].mode = 0444;
        if (m[i].symlink) {
            e[i].type = 'l';
            e[i].data = m[i].symlink;
        } else {
            e[i].type = 'f';
            e[i].data = m[i].data;
            e[i].len = m[i].len;
        }
    }
    size_t len;
    void *tar = mk_tar(e, n, &len);
    write_file(path, tar, len);
    free(tar);
    free(e);
}

/* A member larger than any layer may be is refused before it is read or
 * skipped (through the archive's compression: a small .tar.bz2 may hold
 * terabytes of zeros). */
static void test_docker_member_too_large(void **state)
{
    if (!is_root())
        skip();
    size_t n = 3u << 20;
    char *zeros = calloc(1, n);
    member_t mem[] = {{"padding.bin", zeros, n, NULL}, {"manifest.json", "[]", 2, NULL}};
    sl_autofree char *file = path_in("bomb.tar");
    write_docker(file, mem, SL_ARRAY_LEN(mem));
    sl_autofree char *ref = xasprintf("docker-archive:%s", file);
    sl_image_limits_t lim = {.max_layer_bytes = 1000};
    sl_error_t err;
    import_fails(ref, &lim, &err);
    assert_contains(err.msg, "member 'padding.bin' is 3145728 bytes, more than a layer may be");
    free(zeros);
}

/* What a docker archive's members expand to is bounded by the archive's
 * own size (1024 times, plus 64 MiB): 96 MiB of zeros in a few KiB of
 * zstd is refused, before a layer or the 4 GiB member limit would be. */
static void test_docker_compression_bomb(void **state)
{
    if (!is_root())
        skip();
    size_t n = 96u << 20;
    char *zeros = calloc(1, n);
    member_t mem[] = {{"manifest.json", "[]", 2, NULL}, {"padding.bin", zeros, n, NULL}};
    sl_autofree char *plain = path_in("bomb.tar");
    write_docker(plain, mem, SL_ARRAY_LEN(mem));
    free(zeros);
    sl_autofree char *tar = NULL;
    size_t len, zlen;
    sl_error_t err = {0};
    assert_int_equal(sl_read_file(plain, n + (1u << 20), &tar, &len, &err), 0);
    void *z = compress_buf(tar, len, 'z', &zlen);
    assert_true(zlen < (1u << 20));
    sl_autofree char *file = path_in("bomb.tar.zst");
    write_file(file, z, zlen);
    free(z);
    sl_autofree char *ref = xasprintf("docker-archive:%s", file);
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, "times the archive's size: a compression bomb");
}

static void test_docker_archive(void **state)
{
    if (!is_root())
        skip();
    size_t t1, t2;
    void *tar1 = mk_tar(base_ents, SL_ARRAY_LEN(base_ents), &t1);
    void *tar2 = mk_tar(top_ents, SL_ARRAY_LEN(top_ents), &t2);
    char d1[72], d2[72];
    sha256_hex(tar1, t1, d1);
    sha256_hex(tar2, t2, d2);
    json_t *cfg = json_pack("{s:s, s:s, s:{s:[s], s:s}, s:{s:s, s:[s,s]}}", "architecture", "amd64",
                            "os", "linux", "config", "Cmd", "/hello", "User", "nonroot", "rootfs",
                            "type", "layers", "diff_ids", d1, d2);
    char *cs = json_dumps(cfg, JSON_COMPACT);
    char cd[72];
    sha256_hex(cs, strlen(cs), cd);
    char cname[80], l1[80], l2[80], l2link[100];
    snprintf(cname, sizeof(cname), "%s.json", cd + 7);
    snprintf(l1, sizeof(l1), "%s.tar", d1 + 7);
    snprintf(l2, sizeof(l2), "%s.tar", d2 + 7);
    snprintf(l2link, sizeof(l2link), "abc/layer.tar");
    json_t *man = json_pack("[{s:s, s:[s], s:[s,s]}]", "Config", cname, "RepoTags",
                            "docker.io/library/hello:latest", "Layers", l1, l2link);
    char *ms = json_dumps(man, JSON_COMPACT);
    char rel2[120];
    snprintf(rel2, sizeof(rel2), "../%s", l2);
    member_t mem[] = {{l1, tar1, t1, NULL},
                      {l2, tar2, t2, NULL},
                      {cname, cs, strlen(cs), NULL},
                      {"abc/layer.tar", NULL, 0, rel2},
                      {"manifest.json", ms, strlen(ms), NULL}};
    sl_autofree char *file = path_in("hello.tar");
    write_docker(file, mem, SL_ARRAY_LEN(mem));

    const char *names[] = {"", ":hello", ":hello:latest", ":docker.io/library/hello:latest", ":@0"};
    for (size_t i = 0; i < SL_ARRAY_LEN(names); i++) {
        sl_autofree char *ref = xasprintf("docker-archive:%s%s", file, names[i]);
        sl_image_t *img = import_ok(ref);
        assert_string_equal(img->id, cd);
        assert_int_equal(img->n_layers, 2);
        assert_non_null(strstr(img->layers[0], d1 + 7));
        assert_non_null(strstr(img->layers[1], d2 + 7));
        assert_string_equal(img->cmd[0], "/hello");
        assert_string_equal(img->user, "nonroot");
        char p[PATH_MAX];
        struct stat st;
        join(p, img->layers[1], "/etc/keep");
        assert_int_equal(lstat(p, &st), 0);
        assert_true(S_ISCHR(st.st_mode));
        sl_image_free(img);
    }
    sl_error_t err;
    sl_autofree char *other = xasprintf("docker-archive:%s:other", file);
    import_fails(other, NULL, &err);
    assert_contains(err.msg, "no image named 'other'");

    /* config whose name does not match its content */
    char badcfg[80];
    snprintf(badcfg, sizeof(badcfg), "%064d.json", 0);
    json_array_clear(man);
    json_array_append_new(man, json_pack("{s:s, s:[s,s]}", "Config", badcfg, "Layers", l1, l2));
    free(ms);
    ms = json_dumps(man, JSON_COMPACT);
    member_t bad1[] = {{l1, tar1, t1, NULL},
                       {l2, tar2, t2, NULL},
                       {badcfg, cs, strlen(cs), NULL},
                       {"manifest.json", ms, strlen(ms), NULL}};
    sl_autofree char *f2 = path_in("bad1.tar");
    write_docker(f2, bad1, SL_ARRAY_LEN(bad1));
    sl_autofree char *r2 = xasprintf("docker-archive:%s", f2);
    import_fails(r2, NULL, &err);
    assert_contains(err.msg, "digest mismatch");
    assert_contains(err.msg, cd);

    /* layer content that does not match diff_ids (swap the layers) */
    json_array_clear(man);
    json_array_append_new(man, json_pack("{s:s, s:[s,s]}", "Config", cname, "Layers", l2, l1));
    free(ms);
    ms = json_dumps(man, JSON_COMPACT);
    member_t bad2[] = {{l1, tar1, t1, NULL},
                       {l2, tar2, t2, NULL},
                       {cname, cs, strlen(cs), NULL},
                       {"manifest.json", ms, strlen(ms), NULL}};
    sl_autofree char *f3 = path_in("bad2.tar");
    write_docker(f3, bad2, SL_ARRAY_LEN(bad2));
    sl_autofree char *r3 = xasprintf("docker-archive:%s", f3);
    sl_autofree char *state3 = path_in("state3");
    sl_image_t *img = NULL;
    assert_true(sl_image_import(state3, r3, NULL, &img, &err) < 0);
    assert_contains(err.msg, "DiffID mismatch");

    /* missing layer member */
    json_array_clear(man);
    json_array_append_new(man, json_pack("{s:s, s:[s,s]}", "Config", cname, "Layers", l1, l2));
    free(ms);
    ms = json_dumps(man, JSON_COMPACT);
    member_t bad3[] = {{l1, tar1, t1, NULL},
                       {cname, cs, strlen(cs), NULL},
                       {"manifest.json", ms, strlen(ms), NULL}};
    write_docker(f3, bad3, SL_ARRAY_LEN(bad3));
    assert_true(sl_image_import(state3, r3, NULL, &img, &err) < 0);
    assert_contains(err.msg, "missing");
    assert_contains(err.msg, l2);

    json_decref(man);
    json_decref(cfg);
    free(ms);
    free(cs);
    free(tar1);
    free(tar2);
}

/* ---- tests: dir: -------------------------------------------------------- */

static void test_dir_ref(void **state)
{
    sl_autofree char *root = path_in("rootfs");
    sl_autofree char *f = path_in("rootfs/hello");
    assert_int_equal(sl_mkdir_p(root, 0755, NULL), 0);
    write_file(f, "12345", 5);
    sl_autofree char *ref = xasprintf("dir:%s/../rootfs", root);
    sl_image_t *img = import_ok(ref);
    char abs[PATH_MAX];
    assert_non_null(realpath(root, abs));
    char want[72];
    sha256_hex(abs, strlen(abs), want);
    assert_string_equal(img->id, want);
    assert_int_equal(img->n_layers, 1);
    assert_string_equal(img->layers[0], abs);
    sl_autofree char *wref = xasprintf("dir:%s", abs);
    assert_string_equal(img->ref, wref);
    assert_int_equal(img->n_entrypoint, 0);
    assert_int_equal(img->n_cmd, 0);
    assert_int_equal(img->size, 5);
    sl_image_free(img);
    /* never a directory that holds the daemon's state: "/" or above it */
    sl_autofree char *st = path_in("state");
    assert_int_equal(sl_mkdir_p(st, 0700, NULL), 0);
    sl_autofree char *self = xasprintf("dir:%s", st), *parent = xasprintf("dir:%s/..", st);
    const char *above[] = {"dir:/", self, parent};
    for (size_t i = 0; i < SL_ARRAY_LEN(above); i++) {
        const char *r = above[i];
        sl_error_t err;
        import_fails(r, NULL, &err);
        assert_contains(err.msg, "holds the daemon's state directory");
    }

    sl_error_t err;
    sl_autofree char *fref = xasprintf("dir:%s", f);
    import_fails(fref, NULL, &err);
    assert_contains(err.msg, "not a directory");
}

/* With an image root (serve --image-root), only oci: and docker-archive:
 * images below it are read, through no symlink; dir: images are refused. */
static void test_image_root(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *built = make_two_layer_layout(NULL);
    sl_autofree char *root = path_in("images");
    sl_autofree char *dir = path_in("images/oci");
    assert_int_equal(sl_mkdir_p(root, 0755, NULL), 0);
    assert_int_equal(rename(built, dir), 0);
    sl_image_limits_t lim = {.root = root};
    sl_autofree char *ref = xasprintf("oci:%s", dir);
    sl_autofree char *st = path_in("state");
    sl_error_t err = {0};
    sl_image_t *img = NULL;
    if (sl_image_import(st, ref, &lim, &img, &err) < 0)
        fail_msg("import %s below its root: %s", ref, err.msg);
    sl_image_free(img);

    /* outside, directly or through a symlink below the root */
    sl_autofree char *other = path_in("other");
    assert_int_equal(sl_mkdir_p(other, 0755, NULL), 0);
    sl_image_limits_t narrow = {.root = other};
    import_fails(ref, &narrow, &err);
    assert_contains(err.msg, "is outside the image root");
    sl_autofree char *link = path_in("other/link");
    assert_int_equal(symlink(dir, link), 0);
    sl_autofree char *lref = xasprintf("oci:%s", link);
    import_fails(lref, &narrow, &err);
    assert_contains(err.msg, "is outside the image root");
    assert_int_equal(sl_image_check_ref(ref, &lim, &err), 0);
    assert_true(sl_image_check_ref(lref, &narrow, &err) < 0);
    assert_contains(err.msg, "is outside the image root");

    /* a blob that is a symlink (here to its own bytes, moved out) is not
     * followed; without a root it is */
    sl_autofree char *blobs = path_in("images/oci/blobs/sha256");
    DIR *d = opendir(blobs);
    assert_non_null(d);
    struct dirent *de;
    char victim[PATH_MAX] = "";
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' && !victim[0])
            snprintf(victim, sizeof(victim), "%s/%s", blobs, de->d_name);
    closedir(d);
    sl_autofree char *moved = path_in("moved-blob");
    assert_int_equal(rename(victim, moved), 0);
    assert_int_equal(symlink(moved, victim), 0);
    sl_autofree char *st2 = path_in("state2");
    import_fails(ref, &lim, &err);
    assert_true(strstr(err.msg, "symlink") || strstr(err.msg, "Too many levels"));
    img = NULL;
    if (sl_image_import(st2, ref, NULL, &img, &err) < 0)
        fail_msg("import %s without a root: %s", ref, err.msg);
    sl_image_free(img);

    /* dir: names a live host directory: refused whatever its place */
    sl_autofree char *rootfs = path_in("images/rootfs");
    assert_int_equal(sl_mkdir_p(rootfs, 0755, NULL), 0);
    sl_autofree char *dref = xasprintf("dir:%s", rootfs);
    import_fails(dref, &lim, &err);
    assert_contains(err.msg, "dir: images are not accepted");
    assert_true(sl_image_check_ref(dref, &lim, &err) < 0);
    assert_contains(err.msg, "dir: images are not accepted");
    assert_int_equal(sl_image_check_ref(dref, NULL, &err), 0);
}

/* ---- tests: unpack safety ----------------------------------------------- */

/* Unpack ents into a fresh g_tmp/box/root; the box must hold nothing else
 * afterwards. Returns the rc; err filled. */
static int unpack_ents(const ent_t *e, size_t n, const sl_image_limits_t *lim, sl_error_t *err,
                       char root_out[PATH_MAX])
{
    char box[PATH_MAX];
    join(box, g_tmp, "/box");
    sl_rm_rf(box, NULL);
    join(root_out, box, "/root");
    assert_int_equal(sl_mkdir_p(root_out, 0755, NULL), 0);
    size_t len;
    void *tar = mk_tar(e, n, &len);
    memset(err, 0, sizeof(*err));
    int rc = sl_image_unpack_layer(tar, len, root_out, lim, err);
    free(tar);
    DIR *d = opendir(box);
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, "root"))
            fail_msg("entry escaped the layer root: %s/%s", box, de->d_name);
    closedir(d);
    return rc;
}

static void expect_reject(const ent_t *e, size_t n, const char *needle)
{
    sl_error_t err;
    char root[PATH_MAX];
    int rc = unpack_ents(e, n, NULL, &err, root);
    if (rc == 0)
        fail_msg("layer with '%s' was accepted", e[n - 1].path);
    assert_contains(err.msg, needle);
}

static void test_tar_slip(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *outside = path_in("outside");
    assert_int_equal(sl_mkdir_p(outside, 0755, NULL), 0);
    sl_autofree char *secret = path_in("outside/secret");
    write_file(secret, "s", 1);

    const ent_t dotdot[] = {FILE_("../x", "evil")};
    expect_reject(dotdot, 1, "'../x' escapes the layer root");
    const ent_t mid[] = {DIR_("a"), FILE_("a/../../x", "evil")};
    expect_reject(mid, 2, "escapes the layer root");
    const ent_t dotdot_dir[] = {DIR_("a/b/.."), FILE_("ok", "x")};
    expect_reject(dotdot_dir, 2, "escapes");

    /* symlink to a directory outside, then a file through it */
    const ent_t via_abs[] = {LINK_("l", outside), FILE_("l/pwned", "evil")};
    expect_reject(via_abs, 2, "symlink 'l'");
    const ent_t via_rel[] = {LINK_("l", ".."), FILE_("l/pwned", "evil")};
    expect_reject(via_rel, 2, "symlink");
    const ent_t via_deep[] = {DIR_("d"), LINK_("d/l", "../.."), DIR_("d/l/x")};
    expect_reject(via_deep, 3, "symlink 'd/l'");
    const ent_t wh_via[] = {LINK_("l", outside), FILE_("l/.wh.secret", "")};
    expect_reject(wh_via, 2, "symlink");
    const ent_t opq_via[] = {LINK_("l", outside), FILE_("l/.wh..wh..opq", "")};
    expect_reject(opq_via, 2, "symlink");
    /* a directory entries went into, replaced by a symlink: the next entry
     * there is walked again (not written into the removed directory) */
    const ent_t replaced[] = {DIR_("d"), FILE_("d/x", "x"), LINK_("d", outside),
                              FILE_("d/pwned", "evil")};
    expect_reject(replaced, 4, "symlink 'd'");
    const ent_t replaced_deep[] = {FILE_("a/b/x", "x"), LINK_("a", outside),
                                   FILE_("a/b/pwned", "evil")};
    expect_reject(replaced_deep, 3, "symlink 'a'");

    /* hardlinks to outside / through a symlink / to a missing file */
    const ent_t hl_out[] = {HARD_("h", "../outside/secret")};
    expect_reject(hl_out, 1, "escapes");
    const ent_t hl_sym[] = {LINK_("l", outside), HARD_("h", "l/secret")};
    expect_reject(hl_sym, 2, "symlink");
    const ent_t hl_abs[] = {HARD_("h", secret)};
    expect_reject(hl_abs, 1, "hardlink target");
    const ent_t hl_dir[] = {DIR_("d"), HARD_("h", "d")};
    expect_reject(hl_dir, 2, "directory");

    struct stat st;
    assert_int_equal(stat(secret, &st), 0);
    assert_int_equal(st.st_nlink, 1);
    assert_int_equal(st.st_size, 1);
    DIR *d = opendir(outside);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    assert_int_equal(n, 1);

    /* a leading "/" is stripped: the entry lands inside */
    sl_error_t err;
    char root[PATH_MAX], p[PATH_MAX];
    const ent_t abs[] = {FILE_("/abs/file", "x"), FILE_("./dot/file", "y"), FILE_("//s", "z")};
    assert_int_equal(unpack_ents(abs, 3, NULL, &err, root), 0);
    join(p, root, "/abs/file");
    assert_int_equal(access(p, F_OK), 0);
    join(p, root, "/dot/file");
    assert_int_equal(access(p, F_OK), 0);

    /* symlinks may point anywhere; a later entry replaces, never follows */
    const ent_t repl[] = {LINK_("l", secret), FILE_("l", "new")};
    assert_int_equal(unpack_ents(repl, 2, NULL, &err, root), 0);
    join(p, root, "/l");
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(stat(secret, &st), 0);
    assert_int_equal(st.st_size, 1);

    /* devices are skipped, 0:0 char devices are whiteouts, fifos kept */
    const ent_t dev[] = {{"null", 'c', NULL, 0666, 0, 0, 0, 1, 3},
                         {"sda", 'b', NULL, 0660, 0, 0, 0, 8, 0},
                         {"gone", 'c', NULL, 0, 0, 0, 0, 0, 0},
                         {"fifo", 'p', NULL, 0600, 0, 0, 0, 0, 0}};
    assert_int_equal(unpack_ents(dev, 4, NULL, &err, root), 0);
    join(p, root, "/null");
    assert_int_equal(lstat(p, &st), -1);
    join(p, root, "/sda");
    assert_int_equal(lstat(p, &st), -1);
    join(p, root, "/gone");
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
    join(p, root, "/fifo");
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
}

/* Paths deeper than the directories an unpack holds open (64): the rest is
 * resolved in one call when it is all there, else walked; either way never
 * through a symlink, and a whiteout in the way still becomes an opaque
 * directory. Entries alternate between two deep directories, as in a tar
 * that lists a directory before each of its files. */
static void test_deep_paths(void **state)
{
    if (!is_root())
        skip();
    char deep[400], deeper[410], f1[420], f2[420], wh[420], under[430], sym[420], via[430];
    size_t o = 0;
    for (int i = 0; i < 100; i++) /* 100 levels */
        o += (size_t)snprintf(deep + o, sizeof(deep) - o, i ? "/d" : "d");
    snprintf(deeper, sizeof(deeper), "%s/e", deep);
    snprintf(f1, sizeof(f1), "%s/f1", deeper);
    snprintf(f2, sizeof(f2), "%s/f2", deeper);
    snprintf(wh, sizeof(wh), "%s/.wh.w", deep);
    snprintf(under, sizeof(under), "%s/w/x", deep);
    const ent_t e[] = {DIR_(deep),   DIR_(deeper),   FILE_(f1, "1"), DIR_(deep),
                       DIR_(deeper), FILE_(f2, "2"), FILE_(wh, ""),  FILE_(under, "x")};
    sl_error_t err;
    char root[PATH_MAX], v[4];
    assert_int_equal(unpack_ents(e, SL_ARRAY_LEN(e), NULL, &err, root), 0);
    sl_autofree char *p1 = xasprintf("%s/%s", root, f2);
    assert_int_equal(access(p1, F_OK), 0);
    sl_autofree char *p2 = xasprintf("%s/%s/w", root, deep);
    assert_int_equal(getxattr(p2, "trusted.overlay.opaque", v, sizeof(v)), 1);
    sl_autofree char *p3 = xasprintf("%s/%s", root, under);
    assert_int_equal(access(p3, F_OK), 0);

    sl_autofree char *outside = path_in("box/outside");
    snprintf(sym, sizeof(sym), "%s/l", deep);
    snprintf(via, sizeof(via), "%s/l/pwned", deep);
    const ent_t bad[] = {DIR_(deep), FILE_(f1, "1"), LINK_(sym, outside), FILE_(via, "evil")};
    expect_reject(bad, SL_ARRAY_LEN(bad), "symlink");
}

static void test_whiteout_same_layer(void **state)
{
    if (!is_root())
        skip();
    sl_error_t err;
    char root[PATH_MAX], p[PATH_MAX], v[4];
    struct stat st;
    /* OCI: a whiteout hides lower layers only; this layer's own entries stay */
    const ent_t e[] = {FILE_("f", "mine"), FILE_(".wh.f", ""), DIR_("d"), FILE_("d/x", "x"),
                       FILE_(".wh.d", ""), FILE_(".wh.g", ""), DIR_("g"), FILE_("g/y", "y")};
    assert_int_equal(unpack_ents(e, SL_ARRAY_LEN(e), NULL, &err, root), 0);
    join(p, root, "/f");
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    join(p, root, "/d");
    assert_int_equal(getxattr(p, "trusted.overlay.opaque", v, sizeof(v)), 1);
    join(p, root, "/d/x");
    assert_int_equal(access(p, F_OK), 0);
    /* whiteout first, then the directory re-created: opaque dir */
    join(p, root, "/g");
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(getxattr(p, "trusted.overlay.opaque", v, sizeof(v)), 1);
    /* an implicit parent replacing a whiteout is opaque too */
    const ent_t e2[] = {FILE_(".wh.h", ""), FILE_("h/z", "z")};
    assert_int_equal(unpack_ents(e2, 2, NULL, &err, root), 0);
    join(p, root, "/h");
    assert_int_equal(getxattr(p, "trusted.overlay.opaque", v, sizeof(v)), 1);
    /* trusted.* xattrs can only come from whiteouts, never the tar */
    const ent_t bad[] = {FILE_(".wh.", "")};
    assert_true(unpack_ents(bad, 1, NULL, &err, root) < 0);
    assert_contains(err.msg, "bad whiteout");
}

static void test_limits(void **state)
{
    if (!is_root())
        skip();
    sl_error_t err;
    char root[PATH_MAX];
    ent_t many[10];
    char names[10][16];
    for (int i = 0; i < 10; i++) {
        snprintf(names[i], sizeof(names[i]), "f%d", i);
        many[i] = (ent_t)FILE_(names[i], "x");
    }
    sl_image_limits_t lim = {.max_entries = 5};
    assert_true(unpack_ents(many, 10, &lim, &err, root) < 0);
    assert_contains(err.msg, "max_entries");

    static char big[5000];
    memset(big, 'A', sizeof(big));
    const ent_t large[] = {{"big", 'f', big, 0644, 0, 0, sizeof(big), 0, 0}};
    sl_image_limits_t lim2 = {.max_layer_bytes = 1000};
    assert_true(unpack_ents(large, 1, &lim2, &err, root) < 0);
    assert_contains(err.msg, "max_layer_bytes");
    const ent_t two[] = {{"a", 'f', big, 0644, 0, 0, 600, 0, 0},
                         {"b", 'f', big, 0644, 0, 0, 600, 0, 0}};
    assert_true(unpack_ents(two, 2, &lim2, &err, root) < 0);
    assert_contains(err.msg, "max_layer_bytes");
    assert_int_equal(unpack_ents(two, 2, NULL, &err, root), 0);

    /* defaults come from the environment when set (tests use tiny caps) */
    setenv("SLUICE_IMAGE_MAX_LAYER_BYTES", "1000", 1);
    assert_true(unpack_ents(two, 2, NULL, &err, root) < 0);
    assert_contains(err.msg, "max_layer_bytes");
    sl_image_limits_t explicit_lim = {.max_layer_bytes = 5000}; /* a caller's value wins */
    assert_int_equal(unpack_ents(two, 2, &explicit_lim, &err, root), 0);
    setenv("SLUICE_IMAGE_MAX_LAYER_BYTES", "lots", 1); /* invalid: default */
    assert_int_equal(unpack_ents(two, 2, NULL, &err, root), 0);
    unsetenv("SLUICE_IMAGE_MAX_LAYER_BYTES");
    setenv("SLUICE_IMAGE_MAX_ENTRIES", "1", 1);
    assert_true(unpack_ents(two, 2, NULL, &err, root) < 0);
    assert_contains(err.msg, "max_entries");
    unsetenv("SLUICE_IMAGE_MAX_ENTRIES");

    /* Directories cost a block and parents made for an entry count as
     * entries: one entry 200 components deep makes 199 directories. */
    char deep[420];
    size_t o = 0;
    for (int i = 0; i < 199; i++)
        o += (size_t)snprintf(deep + o, sizeof(deep) - o, "a/");
    snprintf(deep + o, sizeof(deep) - o, "f");
    const ent_t bomb[] = {FILE_(deep, "x")};
    sl_image_limits_t dir_entries = {.max_entries = 100};
    assert_true(unpack_ents(bomb, 1, &dir_entries, &err, root) < 0);
    assert_contains(err.msg, "max_entries");
    assert_contains(err.msg, "parent directories");
    sl_image_limits_t dir_bytes = {.max_layer_bytes = 100 * 4096};
    assert_true(unpack_ents(bomb, 1, &dir_bytes, &err, root) < 0);
    assert_contains(err.msg, "max_layer_bytes");
    const ent_t named[] = {DIR_("d1"), DIR_("d2"), DIR_("d3")};
    sl_image_limits_t three = {.max_layer_bytes = 2 * 4096};
    assert_true(unpack_ents(named, 3, &three, &err, root) < 0);
    assert_contains(err.msg, "a directory counts");
    three.max_layer_bytes = 3 * 4096;
    assert_int_equal(unpack_ents(named, 3, &three, &err, root), 0);
    sl_image_limits_t roomy = {.max_entries = 300, .max_layer_bytes = 300 * 4096};
    assert_int_equal(unpack_ents(bomb, 1, &roomy, &err, root), 0);

    /* Directory times wait for the layer's end; the paths held for them are
     * bounded. Listed again and again ("a", "b", "a", ...), the directories
     * past the bound keep their unpack time and the layer still unpacks. */
    const ent_t dirs[] = {DIR_("a"), FILE_("a/x", "x"), DIR_("b"), FILE_("b/y", "y"),
                          DIR_("a"), DIR_("b"),         DIR_("c")};
    sl_image_limits_t dir_lim = {.max_dir_path_bytes = 4}; /* "a" and "b" */
    assert_int_equal(unpack_ents(dirs, SL_ARRAY_LEN(dirs), &dir_lim, &err, root), 0);
    struct stat st;
    char p[PATH_MAX];
    join(p, root, "/a");
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mtime, MTIME);
    join(p, root, "/b");
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mtime, MTIME);
    join(p, root, "/c");
    assert_int_equal(stat(p, &st), 0);
    assert_true(st.st_mtime > MTIME); /* past the bound: its unpack time */

    /* through import: the error names the layer */
    json_t *m;
    sl_autofree char *dir = make_two_layer_layout(&m);
    json_t *hold;
    const char *ld = layer_digest(dir, m, 0, &hold);
    sl_autofree char *ref = xasprintf("oci:%s", dir);
    sl_image_limits_t lim3 = {.max_entries = 3};
    import_fails(ref, &lim3, &err);
    assert_contains(err.msg, ld);
    assert_contains(err.msg, "max_entries");
    sl_image_limits_t lim4 = {.max_json = 64};
    import_fails(ref, &lim4, &err);
    assert_contains(err.msg, "max_json");
    setenv("SLUICE_IMAGE_MAX_JSON", "64", 1);
    import_fails(ref, NULL, &err);
    assert_contains(err.msg, "max_json");
    unsetenv("SLUICE_IMAGE_MAX_JSON");
    assert_tmp_empty();
    json_decref(hold);
    json_decref(m);
}

static void test_corrupt_tar(void **state)
{
    if (!is_root())
        skip();
    char root[PATH_MAX];
    join(root, g_tmp, "/junk");
    assert_int_equal(sl_mkdir_p(root, 0755, NULL), 0);
    sl_error_t err = {0};
    const char junk[] = "this is not a tar archive at all, not even close............";
    assert_true(sl_image_unpack_layer(junk, sizeof(junk), root, NULL, &err) < 0);
    assert_true(err.msg[0] != '\0');
    /* a tar cut inside a file's data */
    static char big[4096];
    const ent_t e[] = {{"big", 'f', big, 0644, 0, 0, sizeof(big), 0, 0}};
    size_t len;
    void *tar = mk_tar(e, 1, &len);
    assert_true(sl_image_unpack_layer(tar, 1024, root, NULL, &err) < 0);
    assert_contains(err.msg, "big");
    free(tar);

    /* umoci < 0.4.8 stops right after the last file's data: accepted when
     * the entry is complete, refused one byte earlier */
    const ent_t last[] = {DIR_("d"), FILE_("d/f", "twenty-five bytes of data")};
    tar = mk_tar(last, 2, &len);
    size_t cut = 512 + 512 + 25;
    char cutroot[PATH_MAX];
    assert_int_equal(unpack_ents(last, 0, NULL, &err, cutroot), 0); /* fresh box */
    assert_int_equal(sl_image_unpack_layer(tar, cut, cutroot, NULL, &err), 0);
    char p[PATH_MAX];
    join(p, cutroot, "/d/f");
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 25);
    assert_int_equal(unpack_ents(last, 0, NULL, &err, cutroot), 0);
    assert_true(sl_image_unpack_layer(tar, cut - 1, cutroot, NULL, &err) < 0);
    assert_contains(err.msg, "d/f");
    free(tar);
}

/* ---- tests: record, gc -------------------------------------------------- */

static void test_json_roundtrip(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = make_two_layer_layout(NULL);
    sl_autofree char *ref = xasprintf("oci:%s:latest", dir);
    sl_image_t *img = import_ok(ref);
    json_t *j = sl_image_to_json(img);
    sl_error_t err;
    sl_image_t *back = sl_image_from_json(j, &err);
    assert_non_null(back);
    json_t *j2 = sl_image_to_json(back);
    assert_true(json_equal(j, j2));
    assert_string_equal(back->id, img->id);
    assert_string_equal(back->ref, img->ref);
    assert_int_equal(back->n_layers, img->n_layers);
    for (size_t i = 0; i < img->n_layers; i++)
        assert_string_equal(back->layers[i], img->layers[i]);
    assert_int_equal(back->n_entrypoint, 1);
    assert_int_equal(back->n_cmd, 2);
    assert_string_equal(back->cmd[0], "serve");
    assert_int_equal(back->n_env, 1);
    assert_string_equal(back->workdir, "/srv");
    assert_string_equal(back->user, "65532");
    assert_int_equal(back->exposed_port, 8080);
    assert_int_equal(back->size, img->size);
    json_decref(j);
    json_decref(j2);
    sl_image_free(back);
    sl_image_free(img);

    /* nulls round trip as NULL */
    sl_image_t min = {.id = "sha256:x", .ref = "dir:/x", .layers = (char *[]){"/x"}, .n_layers = 1};
    j = sl_image_to_json(&min);
    back = sl_image_from_json(j, &err);
    assert_non_null(back);
    assert_null(back->workdir);
    assert_null(back->user);
    assert_int_equal(back->n_cmd, 0);
    sl_image_free(back);
    json_decref(j);

    /* bad documents name the field */
    json_t *bad = json_pack("{s:s, s:s, s:[s], s:s}", "id", "x", "ref", "y", "layers", "/l", "cmd",
                            "notarray");
    assert_null(sl_image_from_json(bad, &err));
    assert_contains(err.msg, "image.cmd");
    json_decref(bad);
    bad = json_pack("{s:s, s:[s]}", "id", "x", "layers", "/l");
    assert_null(sl_image_from_json(bad, &err));
    assert_contains(err.msg, "image.ref");
    json_decref(bad);
    bad = json_pack("{s:s, s:s, s:[s], s:i}", "id", "x", "ref", "y", "layers", "/l", "exposed_port",
                    70000);
    assert_null(sl_image_from_json(bad, &err));
    assert_contains(err.msg, "exposed_port");
    json_decref(bad);
}

static void test_gc(void **state)
{
    if (!is_root())
        skip();
    sl_autofree char *dir = make_two_layer_layout(NULL);
    sl_autofree char *ref = xasprintf("oci:%s", dir);
    sl_image_t *img = import_ok(ref);
    assert_int_equal(count_layers_in_store(), 2);
    sl_autofree char *st = path_in("state");
    const char *keep[] = {img->layers[1]};
    sl_error_t err;
    assert_int_equal(sl_image_gc(st, keep, 1, &err), 0);
    assert_int_equal(count_layers_in_store(), 1);
    assert_int_equal(access(img->layers[1], F_OK), 0);
    assert_int_equal(access(img->layers[0], F_OK), -1);
    assert_tmp_empty();
    /* re-import restores the removed layer */
    sl_image_t *again = import_ok(ref);
    assert_int_equal(access(again->layers[0], F_OK), 0);
    sl_image_free(again);
    assert_int_equal(sl_image_gc(st, NULL, 0, &err), 0);
    assert_int_equal(count_layers_in_store(), 0);
    sl_image_free(img);

    /* leftovers of dead unpackers are swept by store init */
    sl_autofree char *stale = path_in("state/layers/tmp/999999999.abc");
    assert_int_equal(sl_mkdir_p(stale, 0700, NULL), 0);
    assert_int_equal(sl_image_store_init(st, &err), 0);
    assert_tmp_empty();

    /* but not one an unpacker still holds (locked), whatever its pid
     * says: an import in another process, or another pid namespace */
    sl_autofree char *held = path_in("state/layers/tmp/999999999.held");
    assert_int_equal(sl_mkdir_p(held, 0700, NULL), 0);
    int hfd = open(held, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(hfd >= 0);
    assert_int_equal(flock(hfd, LOCK_EX), 0);
    assert_int_equal(sl_image_store_init(st, &err), 0);
    assert_int_equal(access(held, F_OK), 0);
    close(hfd); /* released: swept next time */
    assert_int_equal(sl_image_store_init(st, &err), 0);
    assert_tmp_empty();
}

int main(void)
{
    sl_log_set_level(SL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_oci_two_layers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_import, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oci_tag_selection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oci_nested_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oci_zstd_and_layout_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsupported_media_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_digest_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_gzip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_or_fifo_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repeated_layers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_diffid_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_import_stores_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stored_layer_not_claimable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_docker_archive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_docker_member_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_docker_compression_bomb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_ref, setup, teardown),
        cmocka_unit_test_setup_teardown(test_image_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tar_slip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whiteout_same_layer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deep_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_tar, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc, setup, teardown),
    };
    return cmocka_run_group_tests_name("image", tests, NULL, NULL);
}
