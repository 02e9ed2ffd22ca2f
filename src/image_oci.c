/*
 * image_oci.c — the two archive transports: OCI image layouts
 * (`oci:DIR[:TAG]`: oci-layout, index.json, blobs/sha256/...) and docker
 * save archives (`docker-archive:FILE[:NAME]`: manifest.json with
 * Config/RepoTags/Layers). Both end in the same place: a verified image
 * config applied to the sl_image_t and every layer in the store.
 *
 * OCI: every blob (index, manifest, config, layer) is checked against its
 * descriptor's size and sha256 digest. Docker archives carry no descriptors:
 * the config is checked against its file name when that is a sha256, and
 * every layer against the config's rootfs.diff_ids.
 */
#include "image_int.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#define MAX_INDEX_DEPTH     4
#define REF_NAME_ANN        "org.opencontainers.image.ref.name"
#define CONTAINERD_NAME_ANN "io.containerd.image.name"

static const char *const index_types[] = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"};
static const char *const manifest_types[] = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json"};
static const char *const config_types[] = {"application/vnd.oci.image.config.v1+json",
                                           "application/vnd.docker.container.image.v1+json"};
static const char *const layer_types[] = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar"};

static bool in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}
#define IN(s, list) in_list((s), (list), SL_ARRAY_LEN(list))

/* ---- descriptors and blobs --------------------------------------------- */

typedef struct desc {
    const char *media; /* may be NULL */
    const char *digest;
    const char *hex;
    uint64_t size;
    const json_t *j;
} desc_t;

static int parse_desc(const json_t *j, const char *where, desc_t *d, sl_error_t *err)
{
    if (!json_is_object(j))
        return sl_error_set(err, EINVAL, "%s: expected a descriptor object", where);
    d->j = j;
    d->media = json_string_value(json_object_get(j, "mediaType"));
    d->digest = json_string_value(json_object_get(j, "digest"));
    if (!d->digest)
        return sl_error_set(err, EINVAL, "%s.digest: missing or not a string", where);
    d->hex = sl_image__digest_hex(d->digest);
    if (!d->hex) {
        const char *colon = strchr(d->digest, ':');
        if (colon && strncmp(d->digest, "sha256:", 7) != 0)
            return sl_error_set(err, ENOTSUP, "%s.digest: unsupported algorithm in '%.100s'", where,
                                d->digest);
        return sl_error_set(err, EINVAL, "%s.digest: invalid digest '%.100s'", where, d->digest);
    }
    const json_t *sz = json_object_get(j, "size");
    if (!json_is_integer(sz) || json_integer_value(sz) < 0)
        return sl_error_set(err, EINVAL, "%s.size: missing or not a non-negative integer", where);
    d->size = (uint64_t)json_integer_value(sz);
    return 0;
}

static char *blob_path(const char *dir, const desc_t *d)
{
    return xasprintf("%s/blobs/sha256/%s", dir, d->hex);
}

/* Open a blob and check its size against the descriptor. */
static int open_blob(const sl_import_t *im, const char *dir, const desc_t *d, const char *what,
                     sl_error_t *err)
{
    sl_autofree char *p = blob_path(dir, d);
    struct stat st;
    int fd = sl_open_file_under(im->lim.root, p, &st);
    if (fd == -ELOOP)
        return sl_error_set(err, ELOOP,
                            "%s %s: blob %s: a symlink on the way (not followed "
                            "below the image root)",
                            what, d->digest, p);
    if (fd == -EINVAL)
        return sl_error_set(err, EINVAL, "%s %s: %s is not a regular file", what, d->digest, p);
    if (fd < 0)
        return sl_error_errno(err, -fd, "%s %s: blob %s missing", what, d->digest, p);
    if ((uint64_t)st.st_size != d->size) {
        close(fd);
        return sl_error_set(err, EBADMSG,
                            "%s %s: size mismatch: descriptor says %llu bytes, blob has %llu", what,
                            d->digest, (unsigned long long)d->size, (unsigned long long)st.st_size);
    }
    return fd;
}

/* Read and verify a JSON blob; *out is the parsed document, *raw the bytes. */
static int read_json_blob(sl_import_t *im, const char *dir, const desc_t *d, const char *what,
                          json_t **out, sl_error_t *err)
{
    if (d->size > im->lim.max_json)
        return sl_error_set(err, EFBIG, "%s %s: %llu bytes exceeds the %zu-byte limit (max_json)",
                            what, d->digest, (unsigned long long)d->size, im->lim.max_json);
    sl_autoclose int fd = open_blob(im, dir, d, what, err);
    if (fd < 0)
        return -1;
    sl_autofree char *p = blob_path(dir, d);
    sl_autofree char *buf = NULL;
    size_t len = 0;
    if (sl_read_fd(fd, p, im->lim.max_json, &buf, &len, err) < 0)
        return sl_error_wrap(err, "%s %s", what, d->digest);
    char got[SL_DIGEST_STR_LEN];
    sl_image__sha256_buf(buf, len, got);
    if (strcmp(got, d->digest) != 0)
        return sl_error_set(err, EBADMSG, "%s %s: digest mismatch: expected %s, got %s", what,
                            d->digest, d->digest, got);
    sl_autofree char *w = xasprintf("%s %s", what, d->digest);
    *out = sl_image__json_parse(buf, len, w, err);
    return *out ? 0 : -1;
}

static ssize_t fd_read(void *ctx, void *buf, size_t len, sl_error_t *err)
{
    int fd = *(int *)ctx;
    for (;;) {
        ssize_t n = read(fd, buf, len);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return sl_error_errno(err, errno, "read");
    }
}

/* ---- OCI layout -------------------------------------------------------- */

static int read_json_file(sl_import_t *im, const char *dir, const char *name, json_t **out,
                          sl_error_t *err)
{
    sl_autofree char *p = xasprintf("%s/%s", dir, name);
    sl_autofree char *buf = NULL;
    size_t len;
    sl_autoclose int fd = sl_open_file_under(im->lim.root, p, NULL);
    if (fd == -EINVAL)
        sl_error_set(err, EINVAL, "%s is not a regular file", p);
    else if (fd < 0)
        sl_error_errno(err, -fd, "open %s", p);
    if (fd < 0 || sl_read_fd(fd, p, im->lim.max_json, &buf, &len, err) < 0) {
        if (err->code == EFBIG) /* a layout, but an oversized one */
            return sl_error_set(err, EFBIG, "%s: larger than the %zu-byte limit (max_json)", p,
                                im->lim.max_json);
        return sl_error_wrap(err, "not an OCI image layout");
    }
    *out = sl_image__json_parse(buf, len, name, err);
    return *out ? 0 : -1;
}

static void append_name(char *buf, size_t sz, const char *s)
{
    size_t n = strlen(buf);
    if (n + 4 < sz)
        snprintf(buf + n, sz - n, "%s%s", n ? ", " : "", s);
}

static const char *desc_ref_name(const json_t *d)
{
    const json_t *ann = json_object_get(d, "annotations");
    return json_string_value(json_object_get(ann, REF_NAME_ANN));
}

static bool platform_matches(const json_t *d)
{
    const json_t *pl = json_object_get(d, "platform");
    const char *os = json_string_value(json_object_get(pl, "os"));
    const char *arch = json_string_value(json_object_get(pl, "architecture"));
    return os && arch && !strcmp(os, "linux") && !strcmp(arch, SL_HOST_ARCH);
}

static int pick_platform(const json_t *list, const char *where, const json_t **out, sl_error_t *err)
{
    char avail[512] = "";
    size_t i;
    const json_t *d;
    json_array_foreach(list, i, d)
    {
        if (platform_matches(d)) {
            *out = d;
            return 0;
        }
        const json_t *pl = json_object_get(d, "platform");
        const char *os = json_string_value(json_object_get(pl, "os"));
        const char *arch = json_string_value(json_object_get(pl, "architecture"));
        char one[128];
        snprintf(one, sizeof(one), "%s/%s", os ? os : "?", arch ? arch : "?");
        append_name(avail, sizeof(avail), one);
    }
    return sl_error_set(err, ENOENT, "%s: no linux/%s manifest (available: %s)", where,
                        SL_HOST_ARCH, avail[0] ? avail : "none");
}

/* Choose the top-level descriptor from index.json by tag. */
static int select_top(const json_t *index, const char *tag, const json_t **out, sl_error_t *err)
{
    const json_t *ms = json_object_get(index, "manifests");
    if (!json_is_array(ms))
        return sl_error_set(err, EINVAL, "index.json: 'manifests' missing or not an array");
    size_t n = json_array_size(ms);
    if (n == 0)
        return sl_error_set(err, ENOENT, "index.json lists no manifests");
    char tags[512] = "";
    json_t *matches = json_array();
    size_t i;
    const json_t *d;
    json_array_foreach(ms, i, d)
    {
        const char *name = desc_ref_name(d);
        if (name)
            append_name(tags, sizeof(tags), name);
        const char *cname = json_string_value(
            json_object_get(json_object_get(d, "annotations"), CONTAINERD_NAME_ANN));
        if (!tag || (name && !strcmp(name, tag)) || (cname && !strcmp(cname, tag)))
            json_array_append(matches, (json_t *)d);
    }
    int rc = 0;
    size_t m = json_array_size(matches);
    if (m == 0)
        rc = sl_error_set(err, ENOENT, "no manifest tagged '%s' in index.json (tags: %s)", tag,
                          tags[0] ? tags : "none");
    else if (m == 1)
        *out = json_array_get(matches, 0);
    else if (pick_platform(matches, "index.json", out, err) < 0)
        rc = tag ? sl_error_wrap(err, "several manifests tagged '%s'", tag)
                 : sl_error_set(err, EINVAL,
                                "index.json lists %zu manifests; name one with oci:DIR:TAG "
                                "(tags: %s)",
                                n, tags[0] ? tags : "none");
    json_decref(matches); /* *out points into `index`, which outlives this */
    return rc;
}

/* Follow nested indexes from `top` to an image manifest; *digest receives
 * the manifest's digest. */
static int resolve_manifest(sl_import_t *im, const char *dir, const json_t *top, json_t **manifest,
                            char digest[SL_DIGEST_STR_LEN], sl_error_t *err)
{
    json_t *held = NULL; /* the index document `cur` points into */
    const json_t *cur = top;
    int rc = -1;
    for (int depth = 0;; depth++) {
        if (depth == MAX_INDEX_DEPTH) {
            rc = sl_error_set(err, ELOOP, "image indexes nested deeper than %d", MAX_INDEX_DEPTH);
            break;
        }
        desc_t d;
        json_t *doc = NULL;
        if (parse_desc(cur, "manifest descriptor", &d, err) < 0)
            break;
        if (d.media && !IN(d.media, index_types) && !IN(d.media, manifest_types)) {
            rc = sl_error_set(err, ENOTSUP, "manifest %s: unsupported media type '%s'", d.digest,
                              d.media);
            break;
        }
        if (read_json_blob(im, dir, &d, "manifest", &doc, err) < 0)
            break;
        const char *media = d.media;
        if (!media)
            media = json_string_value(json_object_get(doc, "mediaType"));
        bool is_index =
            media ? IN(media, index_types) : json_is_array(json_object_get(doc, "manifests"));
        if (!is_index) {
            if (media && !IN(media, manifest_types)) {
                rc = sl_error_set(err, ENOTSUP, "manifest %s: unsupported media type '%s'",
                                  d.digest, media);
                json_decref(doc);
                break;
            }
            snprintf(digest, SL_DIGEST_STR_LEN, "%s", d.digest);
            *manifest = doc;
            rc = 0;
            break;
        }
        sl_autofree char *where = xasprintf("image index %s", d.digest);
        const json_t *list = json_object_get(doc, "manifests");
        const json_t *next = NULL;
        if (!json_is_array(list)) {
            rc = sl_error_set(err, EINVAL, "%s: 'manifests' missing or not an array", where);
            json_decref(doc);
            break;
        }
        if (pick_platform(list, where, &next, err) < 0) {
            json_decref(doc);
            break;
        }
        json_decref(held);
        held = doc;
        cur = next;
    }
    json_decref(held);
    return rc;
}

static int oci_layer(sl_import_t *im, const char *dir, const desc_t *d, const char *diff,
                     sl_error_t *err)
{
    const char *diff_hex = sl_image__digest_hex(diff);
    if (d->media && !IN(d->media, layer_types))
        return sl_error_set(err, ENOTSUP, "layer %s: unsupported media type '%s'", d->digest,
                            d->media);
    if (d->media && strstr(d->media, "zstd") && !sl_image__have_zstd())
        return sl_error_set(err, ENOTSUP,
                            "layer %s: media type '%s' needs zstd, which this libarchive lacks",
                            d->digest, d->media);
    sl_autofree char *pair = xasprintf("%s %s", d->digest, diff);
    for (size_t i = 0; i < im->n_checked; i++) {
        if (!strcmp(im->checked[i], pair)) { /* listed again: checked already */
            sl_image__push_layer(im, diff_hex, 0);
            return 0;
        }
    }
    if (im->n_checked < SL_IMAGE_MAX_LAYERS)
        im->checked[im->n_checked++] = xstrdup(pair); /* freed with the import */
    sl_autoclose int fd = open_blob(im, dir, d, "layer", err);
    if (fd < 0)
        return -1;
    sl_layer_src_t src = {fd_read, &fd};
    if (sl_image__layer_present(im, diff_hex)) {
        /* Reused only if this blob is the layer: the blob is the one the
         * manifest names, and its content is the DiffID the config names
         * (else any image could claim a stored layer, another's files,
         * by naming its DiffID). Hashed as it streams, not unpacked. */
        if (sl_image__layer_verify(im, d->digest, &src, d->digest, d->size, diff, err) < 0)
            return -1;
        sl_autofree char *path = sl_image__layer_path(im, diff_hex);
        sl_image__push_layer(im, diff_hex, sl_image__du(path));
        return 0;
    }
    sl_layer_info_t info;
    if (sl_image__layer_add(im, d->digest, &src, d->digest, d->size, diff, &info, err) < 0)
        return -1;
    sl_image__push_layer(im, diff_hex, info.bytes);
    return 0;
}

static int oci_config(sl_import_t *im, const char *dir, const json_t *manifest, const char *mdigest,
                      json_t **cfg, desc_t *cd, sl_error_t *err)
{
    sl_autofree char *where = xasprintf("manifest %s: config", mdigest);
    if (parse_desc(json_object_get(manifest, "config"), where, cd, err) < 0)
        return -1;
    if (cd->media && !IN(cd->media, config_types))
        return sl_error_set(err, ENOTSUP,
                            "manifest %s: config media type '%s' is not a container image config",
                            mdigest, cd->media);
    return read_json_blob(im, dir, cd, "config", cfg, err);
}

static int oci_manifest(sl_import_t *im, const char *dir, const json_t *manifest,
                        const char *mdigest, sl_error_t *err)
{
    json_t *cfg = NULL;
    desc_t cd;
    if (oci_config(im, dir, manifest, mdigest, &cfg, &cd, err) < 0)
        return -1;
    int rc = 0;
    const json_t *ids = NULL;
    const json_t *layers = json_object_get(manifest, "layers");
    if (sl_image__apply_config(im, cfg, &ids, err) < 0)
        rc = sl_error_wrap(err, "config %s", cd.digest);
    else if (!json_is_array(layers))
        rc = sl_error_set(err, EINVAL, "manifest %s: 'layers' missing or not an array", mdigest);
    else if (json_array_size(layers) != json_array_size(ids))
        rc = sl_error_set(err, EINVAL,
                          "manifest %s lists %zu layers but config rootfs.diff_ids has %zu",
                          mdigest, json_array_size(layers), json_array_size(ids));
    else if (json_array_size(layers) == 0)
        rc = sl_error_set(err, EINVAL, "manifest %s: image has no layers", mdigest);
    if (rc == 0)
        im->img->id = xstrdup(cd.digest);
    for (size_t i = 0; rc == 0 && i < json_array_size(layers); i++) {
        desc_t ld;
        sl_autofree char *where = xasprintf("manifest %s: layers[%zu]", mdigest, i);
        if (parse_desc(json_array_get(layers, i), where, &ld, err) < 0)
            rc = -1;
        else
            rc = oci_layer(im, dir, &ld, json_string_value(json_array_get(ids, i)), err);
    }
    json_decref(cfg);
    return rc;
}

int sl_image__import_oci(sl_import_t *im, const char *dir, const char *tag, sl_error_t *err)
{
    json_t *layout = NULL, *index = NULL, *manifest = NULL;
    const json_t *top = NULL;
    char mdigest[SL_DIGEST_STR_LEN];
    int rc = -1;
    if (read_json_file(im, dir, "oci-layout", &layout, err) < 0)
        goto out;
    const char *ver = json_string_value(json_object_get(layout, "imageLayoutVersion"));
    if (!ver || strcmp(ver, "1.0.0") != 0) {
        rc = sl_error_set(err, ENOTSUP,
                          "oci-layout: unsupported imageLayoutVersion '%s' (expected 1.0.0)",
                          ver ? ver : "(missing)");
        goto out;
    }
    if (read_json_file(im, dir, "index.json", &index, err) < 0 ||
        select_top(index, tag, &top, err) < 0 ||
        resolve_manifest(im, dir, top, &manifest, mdigest, err) < 0)
        goto out;
    rc = oci_manifest(im, dir, manifest, mdigest, err);
out:
    json_decref(layout);
    json_decref(index);
    json_decref(manifest);
    return rc < 0 ? -1 : 0;
}

/* ---- docker-archive ---------------------------------------------------- */

typedef struct alias {
    char *name, *target;
} alias_t;

typedef struct dscan {
    sl_import_t *im;
    const char *file;
    /* pass 1 */
    char *manifest;
    size_t manifest_len;
    alias_t *aliases;
    size_t n_aliases;
    /* pass 2 */
    const char *want; /* member to read */
    char *data;
    size_t data_len;
    /* pass 3 */
    char **layer_names; /* resolved member names, per layer */
    const json_t *diff_ids;
    size_t n_layers;
    bool *done;
    uint64_t *sizes;
} dscan_t;

typedef int (*member_fn)(dscan_t *s, struct archive *a, struct archive_entry *e, const char *name,
                         sl_error_t *err);

/* Normalise a member path, resolving "." and ".." lexically; NULL if it
 * climbs above the archive root. */
static char *member_norm(const char *base_dir, const char *path)
{
    sl_autofree char *joined = base_dir && *base_dir && path[0] != '/'
                                   ? xasprintf("%s/%s", base_dir, path)
                                   : xstrdup(path);
    size_t n = strlen(joined);
    char *out = xmalloc(n + 1);
    size_t o = 0;
    const char *p = joined;
    while (*p) {
        while (*p == '/')
            p++;
        const char *st = p;
        while (*p && *p != '/')
            p++;
        size_t len = (size_t)(p - st);
        if (len == 0 || (len == 1 && st[0] == '.'))
            continue;
        if (len == 2 && st[0] == '.' && st[1] == '.') {
            if (o == 0) {
                free(out);
                return NULL;
            }
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
            continue;
        }
        if (o)
            out[o++] = '/';
        memcpy(out + o, st, len);
        o += len;
    }
    out[o] = '\0';
    return out;
}

static const char *resolve_alias(const dscan_t *s, const char *name)
{
    for (int hop = 0; hop < 8; hop++) {
        size_t i;
        for (i = 0; i < s->n_aliases; i++)
            if (strcmp(s->aliases[i].name, name) == 0)
                break;
        if (i == s->n_aliases)
            return name;
        name = s->aliases[i].target;
    }
    return name;
}

static int read_member(struct archive *a, struct archive_entry *e, const char *name, size_t max,
                       char **out, size_t *outlen, sl_error_t *err)
{
    if (archive_entry_size(e) < 0 || (uint64_t)archive_entry_size(e) > max)
        return sl_error_set(err, EFBIG, "'%s': %lld bytes exceeds the %zu-byte limit (max_json)",
                            name, (long long)archive_entry_size(e), max);
    size_t len = (size_t)archive_entry_size(e), got = 0;
    char *buf = xmalloc(len + 1);
    while (got < len) {
        la_ssize_t n = archive_read_data(a, buf + got, len - got);
        if (n <= 0) {
            free(buf);
            return sl_error_set(err, EIO, "'%s': truncated or corrupt: %s", name,
                                n < 0 ? archive_error_string(a) : "unexpected end");
        }
        got += (size_t)n;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
}

/* How many times its own size a docker archive may expand to (plus 64 MiB). */
#define DOCKER_EXPAND_MAX 1024

static int docker_scan(dscan_t *s, member_fn fn, sl_error_t *err)
{
    struct archive *a = archive_read_new();
    if (!a)
        return sl_error_set(err, ENOMEM, "libarchive: out of memory");
    sl_image__enable_filters(a);
    archive_read_support_format_tar(a);
    int rc = 0;
    struct stat st;
    sl_autoclose int fd = sl_open_file_under(s->im->lim.root, s->file, &st);
    if (fd == -EINVAL)
        rc = sl_error_set(err, EINVAL, "archive %s is not a regular file", s->file);
    else if (fd < 0)
        rc = sl_error_errno(err, -fd, "cannot open archive %s", s->file);
    else if (archive_read_open_fd(a, fd, 64 * 1024) != ARCHIVE_OK)
        rc = sl_error_set(err, EIO, "cannot read archive: %s", archive_error_string(a));
    /* Every member is decompressed, read or skipped, on each pass: their
     * sizes together are bounded by the archive's own size. Docker's
     * archives are plain tar or gzip (a few times their size at most); a
     * small .tar.bz2 of zeros can expand a million times. */
    uint64_t expand_max = (fd >= 0 ? (uint64_t)st.st_size : 0) * DOCKER_EXPAND_MAX + (64u << 20),
             total = 0;
    uint64_t n = 0;
    struct archive_entry *e;
    while (rc == 0) {
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN) {
            rc =
                sl_error_set(err, EIO, "corrupt or truncated archive: %s", archive_error_string(a));
            break;
        }
        if (++n > s->im->lim.max_entries) {
            rc = sl_error_set(err, EFBIG, "archive has more than %llu members (max_entries)",
                              (unsigned long long)s->im->lim.max_entries);
            break;
        }
        const char *raw = archive_entry_pathname(e);
        /* No member may be larger than a layer: each is read or skipped
         * through the archive's compression, and a small .tar.bz2 can hold
         * terabytes of zeros. */
        la_int64_t size = archive_entry_size(e);
        uint64_t most = s->im->lim.max_layer_bytes + (1u << 20);
        if (size > 0 && (uint64_t)size > most) {
            rc = sl_error_set(err, EFBIG,
                              "member '%s' is %lld bytes, more than a layer may be (%llu)",
                              raw ? raw : "?", (long long)size, (unsigned long long)most);
            break;
        }
        total += size > 0 ? (uint64_t)size : 0;
        if (total > expand_max) {
            rc = sl_error_set(err, EFBIG,
                              "members expand to more than %llu bytes, %d times the archive's "
                              "size: a compression bomb",
                              (unsigned long long)expand_max, DOCKER_EXPAND_MAX);
            break;
        }
        sl_autofree char *name = raw ? member_norm(NULL, raw) : NULL;
        if (!name)
            continue;
        rc = fn(s, a, e, name, err);
    }
    archive_read_free(a);
    return rc < 0 ? -1 : 0;
}

static int pass_index(dscan_t *s, struct archive *a, struct archive_entry *e, const char *name,
                      sl_error_t *err)
{
    if (strcmp(name, "manifest.json") == 0 && archive_entry_filetype(e) == AE_IFREG) {
        free(s->manifest);
        s->manifest = NULL;
        return read_member(a, e, name, s->im->lim.max_json, &s->manifest, &s->manifest_len, err);
    }
    const char *target = NULL;
    char *norm = NULL;
    if ((target = archive_entry_hardlink(e)))
        norm = member_norm(NULL, target);
    else if (archive_entry_filetype(e) == AE_IFLNK && (target = archive_entry_symlink(e))) {
        sl_autofree char *dir = xstrdup(name);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        else
            dir[0] = '\0';
        norm = member_norm(dir, target);
    }
    if (norm) {
        s->aliases = xrealloc(s->aliases, (s->n_aliases + 1) * sizeof(alias_t));
        s->aliases[s->n_aliases++] = (alias_t){xstrdup(name), norm};
    }
    return 0;
}

static int pass_read(dscan_t *s, struct archive *a, struct archive_entry *e, const char *name,
                     sl_error_t *err)
{
    if (s->data || strcmp(name, s->want) != 0 || archive_entry_filetype(e) != AE_IFREG)
        return 0;
    return read_member(a, e, name, s->im->lim.max_json, &s->data, &s->data_len, err);
}

static ssize_t ar_read(void *ctx, void *buf, size_t len, sl_error_t *err)
{
    struct archive *a = ctx;
    la_ssize_t n = archive_read_data(a, buf, len);
    if (n < 0)
        return sl_error_set(err, EIO, "reading archive: %s", archive_error_string(a));
    return n;
}

/* One layer member: unpack it (or, if the store has it, only hash it). */
static int docker_layer(dscan_t *s, struct archive *a, size_t i, const char *name, sl_error_t *err)
{
    sl_import_t *im = s->im;
    const char *diff = json_string_value(json_array_get(s->diff_ids, i));
    const char *hex = sl_image__digest_hex(diff);
    sl_autofree char *label = xasprintf("%s ('%s')", diff, name);
    char want_blob[SL_DIGEST_STR_LEN] = "";
    if (strncmp(name, "blobs/sha256/", 13) == 0 && sl_image__is_hex64(name + 13, strlen(name + 13)))
        snprintf(want_blob, sizeof(want_blob), "sha256:%s", name + 13);
    sl_layer_src_t src = {ar_read, a};
    sl_layer_info_t info;
    if (!sl_image__layer_present(im, hex))
        return sl_image__layer_add(im, label, &src, want_blob[0] ? want_blob : NULL, UINT64_MAX,
                                   diff, &info, err) < 0
                   ? -1
                   : (s->sizes[i] = info.bytes, 0);
    if (sl_image__layer_verify(im, label, &src, want_blob[0] ? want_blob : NULL, UINT64_MAX, diff,
                               err) < 0)
        return -1;
    sl_autofree char *path = sl_image__layer_path(im, hex);
    s->sizes[i] = sl_image__du(path);
    return 0;
}

static int pass_layers(dscan_t *s, struct archive *a, struct archive_entry *e, const char *name,
                       sl_error_t *err)
{
    size_t first = SIZE_MAX;
    for (size_t i = 0; i < s->n_layers; i++) {
        if (s->done[i] || strcmp(s->layer_names[i], name) != 0)
            continue;
        if (first == SIZE_MAX) {
            if (archive_entry_filetype(e) != AE_IFREG)
                return sl_error_set(err, EINVAL, "layer '%s' is not a regular file", name);
            if (docker_layer(s, a, i, name, err) < 0)
                return -1;
            first = i;
        } else if (!json_equal(json_array_get(s->diff_ids, i),
                               json_array_get(s->diff_ids, first))) {
            return sl_error_set(err, EBADMSG,
                                "layer '%s' is listed twice with different rootfs.diff_ids", name);
        } else {
            s->sizes[i] = 0;
        }
        s->done[i] = true;
    }
    return 0;
}

/* "busybox" == "docker.io/library/busybox:latest" and so on. */
static char *docker_norm_ref(const char *r)
{
    if (strncmp(r, "docker.io/", 10) == 0)
        r += 10;
    if (strncmp(r, "library/", 8) == 0)
        r += 8;
    const char *last = strrchr(r, '/');
    last = last ? last + 1 : r;
    if (!strchr(last, ':') && !strchr(r, '@'))
        return xasprintf("%s:latest", r);
    return xstrdup(r);
}

static int docker_select(const json_t *m, const char *want, const json_t **out, sl_error_t *err)
{
    if (!json_is_array(m) || json_array_size(m) == 0)
        return sl_error_set(err, EINVAL, "manifest.json: expected a non-empty array");
    size_t n = json_array_size(m);
    char tags[512] = "";
    size_t i;
    const json_t *ent;
    if (want && want[0] == '@') {
        int64_t idx;
        if (sl_parse_int64(want + 1, 0, (int64_t)n - 1, &idx) < 0)
            return sl_error_set(err, ENOENT, "manifest.json: no image at index '%s' (%zu images)",
                                want + 1, n);
        *out = json_array_get(m, (size_t)idx);
        return 0;
    }
    sl_autofree char *nwant = want ? docker_norm_ref(want) : NULL;
    json_array_foreach(m, i, ent)
    {
        const json_t *rt = json_object_get(ent, "RepoTags");
        size_t k;
        const json_t *t;
        json_array_foreach(rt, k, t)
        {
            const char *tag = json_string_value(t);
            if (!tag)
                continue;
            append_name(tags, sizeof(tags), tag);
            sl_autofree char *nt = docker_norm_ref(tag);
            if (want && (strcmp(tag, want) == 0 || strcmp(nt, nwant) == 0)) {
                *out = ent;
                return 0;
            }
        }
    }
    if (want)
        return sl_error_set(err, ENOENT, "manifest.json: no image named '%s' (names: %s)", want,
                            tags[0] ? tags : "none");
    if (n > 1)
        return sl_error_set(err, EINVAL,
                            "manifest.json holds %zu images; name one with "
                            "docker-archive:FILE:NAME:TAG or :@INDEX (names: %s)",
                            n, tags[0] ? tags : "none");
    *out = json_array_get(m, 0);
    return 0;
}

/* The sha256 a member name promises: "<hex>.json", "<hex>" or
 * "blobs/sha256/<hex>"; false if the name is not sha256-like. */
static bool name_digest(const char *name, char out[SL_DIGEST_STR_LEN])
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    size_t len = strlen(base);
    if (len > 5 && strcmp(base + len - 5, ".json") == 0)
        len -= 5;
    if (!sl_image__is_hex64(base, len))
        return false;
    snprintf(out, SL_DIGEST_STR_LEN, "sha256:%.*s", (int)len, base);
    return true;
}

static int docker_config(dscan_t *s, const char *cfgname, json_t **cfg, sl_error_t *err)
{
    s->want = resolve_alias(s, cfgname);
    if (docker_scan(s, pass_read, err) < 0)
        return -1;
    if (!s->data)
        return sl_error_set(err, ENOENT, "config '%s' listed in manifest.json is missing", cfgname);
    char got[SL_DIGEST_STR_LEN], want[SL_DIGEST_STR_LEN];
    sl_image__sha256_buf(s->data, s->data_len, got);
    if (name_digest(cfgname, want) && strcmp(want, got) != 0)
        return sl_error_set(err, EBADMSG,
                            "config '%s': digest mismatch: file name says %s, content is %s",
                            cfgname, want, got);
    s->im->img->id = xstrdup(got);
    sl_autofree char *what = xasprintf("config '%s'", cfgname);
    *cfg = sl_image__json_parse(s->data, s->data_len, what, err);
    return *cfg ? 0 : -1;
}

static int docker_layers(dscan_t *s, const json_t *layers, sl_error_t *err)
{
    size_t n = json_array_size(layers);
    s->n_layers = n;
    s->layer_names = xcalloc(n + 1, sizeof(char *));
    s->done = xcalloc(n + 1, sizeof(bool));
    s->sizes = xcalloc(n + 1, sizeof(uint64_t));
    for (size_t i = 0; i < n; i++) {
        const char *l = json_string_value(json_array_get(layers, i));
        sl_autofree char *norm = l ? member_norm(NULL, l) : NULL;
        if (!norm)
            return sl_error_set(err, EINVAL, "manifest.json: Layers[%zu]: bad path", i);
        s->layer_names[i] = xstrdup(resolve_alias(s, norm));
    }
    if (docker_scan(s, pass_layers, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!s->done[i])
            return sl_error_set(err, ENOENT, "layer '%s' listed in manifest.json is missing",
                                json_string_value(json_array_get(layers, i)));
        sl_image__push_layer(
            s->im, sl_image__digest_hex(json_string_value(json_array_get(s->diff_ids, i))),
            s->sizes[i]);
    }
    return 0;
}

static int docker_import(dscan_t *s, const char *want, sl_error_t *err)
{
    if (docker_scan(s, pass_index, err) < 0)
        return -1;
    if (!s->manifest)
        return sl_error_set(err, ENOENT, "manifest.json missing: not a docker-archive");
    json_t *m = sl_image__json_parse(s->manifest, s->manifest_len, "manifest.json", err);
    if (!m)
        return -1;
    json_t *cfg = NULL;
    const json_t *ent = NULL, *ids = NULL;
    int rc = docker_select(m, want, &ent, err);
    const char *cfgname = json_string_value(json_object_get(ent, "Config"));
    const json_t *layers = json_object_get(ent, "Layers");
    if (rc == 0 && (!cfgname || !json_is_array(layers)))
        rc = sl_error_set(err, EINVAL, "manifest.json: entry needs 'Config' and 'Layers'");
    if (rc == 0)
        rc = docker_config(s, cfgname, &cfg, err);
    if (rc == 0 && sl_image__apply_config(s->im, cfg, &ids, err) < 0)
        rc = sl_error_wrap(err, "config '%s'", cfgname);
    if (rc == 0 && json_array_size(ids) != json_array_size(layers))
        rc = sl_error_set(err, EINVAL,
                          "manifest.json lists %zu layers but config rootfs.diff_ids has %zu",
                          json_array_size(layers), json_array_size(ids));
    if (rc == 0 && json_array_size(layers) == 0)
        rc = sl_error_set(err, EINVAL, "image has no layers");
    if (rc == 0) {
        s->diff_ids = ids;
        rc = docker_layers(s, layers, err);
    }
    json_decref(cfg);
    json_decref(m);
    return rc;
}

int sl_image__import_docker(sl_import_t *im, const char *file, const char *name, sl_error_t *err)
{
    dscan_t s = {.im = im, .file = file};
    int rc = docker_import(&s, name, err);
    free(s.manifest);
    free(s.data);
    for (size_t i = 0; i < s.n_aliases; i++) {
        free(s.aliases[i].name);
        free(s.aliases[i].target);
    }
    free(s.aliases);
    for (size_t i = 0; i < s.n_layers; i++)
        free(s.layer_names[i]);
    free(s.layer_names);
    free(s.done);
    free(s.sizes);
    return rc < 0 ? -1 : 0;
}
