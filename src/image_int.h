/*
 * image_int.h — internals shared by image.c (API, references, config, layer
 * store), image_oci.c (OCI layout and docker-archive readers) and
 * image_layer.c (the layer pipeline: hashing, decompression, safe unpack).
 * Not part of the module's public contract.
 */
#ifndef SL_IMAGE_INT_H
#define SL_IMAGE_INT_H

#include "image.h"

#include <sys/types.h>

/* The GOARCH-style name of this machine, as image configs and platform
 * descriptors spell it. */
#if defined(__x86_64__)
#define SL_HOST_ARCH "amd64"
#elif defined(__aarch64__)
#define SL_HOST_ARCH "arm64"
#elif defined(__i386__)
#define SL_HOST_ARCH "386"
#else
#define SL_HOST_ARCH "unknown"
#endif

#define SL_SHA256_HEX_LEN 64
/* "sha256:" + 64 hex + NUL */
#define SL_DIGEST_STR_LEN (7 + SL_SHA256_HEX_LEN + 1)

/* A pull-style byte source for one layer blob. read() returns the number of
 * bytes read, 0 at end of stream, or < 0 with err set. */
typedef struct sl_layer_src {
    ssize_t (*read)(void *ctx, void *buf, size_t len, sl_error_t *err);
    void *ctx;
} sl_layer_src_t;

/* What streaming a layer measured. */
typedef struct sl_layer_info {
    char blob_digest[SL_DIGEST_STR_LEN]; /* sha256 of the bytes as stored */
    uint64_t blob_size;
    char diff_id[SL_DIGEST_STR_LEN]; /* sha256 of the uncompressed tar */
    uint64_t diff_size;
    uint64_t bytes;   /* regular-file bytes written */
    uint64_t entries; /* tar entries seen */
} sl_layer_info_t;

/*
 * Read src to its end, hashing it as stored and after decompression. When
 * destfd >= 0 also unpack the tar beneath that directory (see image.h for
 * the rules); when destfd < 0 only hash. Errors describe the cause (the
 * caller adds the layer's name); on error destfd's tree is partial and only
 * info->blob_digest/blob_size are set (empty if the source failed too).
 */
int sl_image__layer_stream(const sl_layer_src_t *src, int destfd, const sl_image_limits_t *lim,
                           sl_layer_info_t *info, sl_error_t *err);

/* Enable the decompression filters libarchive implements natively (never
 * the external-program fallbacks) on a read archive. */
struct archive;
void sl_image__enable_filters(struct archive *a);

/* True if libarchive can decompress zstd natively. */
bool sl_image__have_zstd(void);

/* Limits with every 0 field replaced by its default. */
void sl_image__limits(const sl_image_limits_t *in, sl_image_limits_t *out);

/* sha256 helpers; out receives "sha256:<hex>". */
void sl_image__sha256_buf(const void *buf, size_t len, char out[SL_DIGEST_STR_LEN]);
/* Validates "sha256:<64 lowercase hex>"; returns the hex part or NULL. */
const char *sl_image__digest_hex(const char *digest);
/* True if s is exactly 64 lowercase hex characters. */
bool sl_image__is_hex64(const char *s, size_t len);

/* Approximate bytes below a directory (regular files, no symlink following). */
uint64_t sl_image__du(const char *path);

/* One import in progress. */
typedef struct sl_import {
    const char *ref; /* as given, for messages */
    sl_image_limits_t lim;
    char *layers_dir; /* absolute STATE/layers/sha256 */
    char *tmp_dir;    /* absolute STATE/layers/tmp */
    sl_image_t *img;  /* being filled */
    /* "BLOB-DIGEST DIFFID" of each layer checked in this import: a layer
     * the manifest lists again is not streamed again. */
    char *checked[SL_IMAGE_MAX_LAYERS];
    size_t n_checked;
    /* Layers unpacked and checked, in tmp_dir until the whole image has
     * checked out (each held by its directory's lock, fd). */
    struct sl_pending_layer {
        char *name, *tmp, *final;
        int fd;
    } * pending;
    size_t n_pending;
} sl_import_t;

/* Path of the store directory for a DiffID hex; caller frees. */
char *sl_image__layer_path(const sl_import_t *im, const char *diff_hex);
/* True if the layer with this DiffID hex is complete in the store, or
 * unpacked and checked earlier in this import. */
bool sl_image__layer_present(const sl_import_t *im, const char *diff_hex);

/*
 * Unpack src into a fresh temporary directory and verify what was measured
 * against the expectations that are non-NULL (blob digest, blob size when
 * != UINT64_MAX, DiffID). It moves into the store as
 * layers/sha256/<diffid-hex> (unless another import got there first) with
 * the image's other layers once all of them have checked out, so a failed
 * import leaves the store as it was. `name` names the layer in messages.
 */
int sl_image__layer_add(sl_import_t *im, const char *name, const sl_layer_src_t *src,
                        const char *want_blob, uint64_t want_blob_size, const char *want_diff,
                        sl_layer_info_t *info, sl_error_t *err);

/* What sl_image__layer_add checks, for a layer the store has: stream src
 * without unpacking it and compare what was measured. */
int sl_image__layer_verify(sl_import_t *im, const char *name, const sl_layer_src_t *src,
                           const char *want_blob, uint64_t want_blob_size, const char *want_diff,
                           sl_error_t *err);

/* Append a store layer (by DiffID hex) to im->img->layers, topmost last. */
void sl_image__push_layer(sl_import_t *im, const char *diff_hex, uint64_t size);

/*
 * Fill img's runtime fields from an image config document and return its
 * rootfs.diff_ids array (borrowed from cfg) after validating each entry.
 */
int sl_image__apply_config(sl_import_t *im, const json_t *cfg, const json_t **diff_ids,
                           sl_error_t *err);

/* Parse a JSON document with the module's flags; error names `what`. */
json_t *sl_image__json_parse(const char *buf, size_t len, const char *what, sl_error_t *err);

/* Transport readers (image_oci.c). tag/name may be NULL. */
int sl_image__import_oci(sl_import_t *im, const char *dir, const char *tag, sl_error_t *err);
int sl_image__import_docker(sl_import_t *im, const char *file, const char *name, sl_error_t *err);

#endif
