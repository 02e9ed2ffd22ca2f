/*
 * image.h — OCI image import and the content-addressed layer store.
 *
 * References use skopeo's transport names: `oci:DIR[:TAG]` (OCI image
 * layout), `docker-archive:FILE` (docker save / skopeo output) and
 * `dir:ROOTFS` (a plain root filesystem directory, used in place).
 *
 * Layout under STATE_DIR:
 *   layers/sha256/<hex>/          unpacked layer (diff) directory, complete
 *                                 only once it was renamed into place;
 *                                 <hex> is the layer's DiffID (sha256 of the
 *                                 uncompressed tar), so one layer shipped
 *                                 gzip'd, zstd'd or plain is stored once
 *   layers/tmp/<pid>.<random>/    in-progress unpacking; removed on failure,
 *                                 and by later imports / gc once <pid> is gone
 * An image's finished layers are moved into place together, once every
 * one of them has checked out (a failed import adds none), each with
 * rename-if-absent: when two imports unpack the same layer at once, the
 * first rename wins and the other discards its copy. Layers present, or
 * unpacked earlier in the same import, are reused (their blob is still
 * hashed and checked).
 *
 * Layers are sha256-verified against their manifest digest while streaming
 * through libarchive, then unpacked as overlayfs lower dirs: OCI whiteouts
 * (`.wh.NAME`, `.wh..wh..opq`) become overlay whiteouts (0:0 char devices)
 * and opaque-dir xattrs (trusted.overlay.opaque=y). Entries that would land
 * outside the layer root (`..`, absolute paths, through symlinks, hardlinks
 * to outside) are rejected. Blocking: call from the thread pool.
 *
 * Unpack rules in detail: a leading "/" is stripped (as tar does) and the
 * entry lands inside the root; any ".." component, a parent that is a
 * symlink, or a hardlink whose target is outside, through a symlink, missing
 * or a directory rejects the whole layer. Symlink targets are kept verbatim
 * (they are resolved inside the container). Missing parent directories are
 * created 0755 root:root. Char/block devices and sockets are skipped with a
 * warning (0:0 char devices count as overlay whiteouts); FIFOs are kept.
 * A whiteout hides lower layers only: if this layer itself has NAME, a
 * directory NAME is made opaque instead. Only user.* and
 * security.capability xattrs from the tar are applied. Owners, permission
 * bits (incl. setuid) and mtimes are preserved.
 */
#ifndef SL_IMAGE_H
#define SL_IMAGE_H

#include "common.h"
#include <jansson.h>

typedef struct sl_image {
    char *id;      /* "sha256:<hex>" of the image config (dir: sha256 of the abs path) */
    char *ref;     /* the reference as imported (paths made absolute) */
    char **layers; /* lower dirs, bottom first: absolute paths to unpacked layers */
    size_t n_layers;
    char **entrypoint;
    size_t n_entrypoint; /* from config.config.Entrypoint */
    char **cmd;
    size_t n_cmd; /* from config.config.Cmd */
    char **env;
    size_t n_env;     /* "K=V" from config.config.Env */
    char *workdir;    /* may be NULL */
    char *user;       /* as in the config ("65532", "nonroot", "1000:1000"), may be NULL */
    int exposed_port; /* first ExposedPorts tcp port, 0 if none */
    uint64_t size;    /* total unpacked bytes (approximate) */
} sl_image_t;

/* Limits for untrusted layers (decompression bombs, huge configs). A zero
 * field takes its default, which the environment of the importing process
 * may lower or raise: SLUICE_IMAGE_MAX_LAYER_BYTES, SLUICE_IMAGE_MAX_ENTRIES,
 * SLUICE_IMAGE_MAX_JSON (positive integers, bytes / entries). */
/* Layers an image may have: Docker's and most runtimes' limit (127) with
 * room. A manifest listing thousands (each checked by streaming its blob)
 * would keep an import thread busy for hours. */
#define SL_IMAGE_MAX_LAYERS 128

typedef struct sl_image_limits {
    uint64_t max_layer_bytes; /* unpacked bytes per layer (default 4 GiB) */
    uint64_t max_entries;     /* entries per layer (default 1,000,000) */
    size_t max_json;          /* manifest/config/index size (default 4 MiB) */
    /* Directory paths held per layer until its directories' times are set
     * (default 64 MiB); past it a directory keeps its unpack time. */
    size_t max_dir_path_bytes;
    /* A real path, or NULL: when set, only oci: and docker-archive: images
     * below it, every file read through no symlink (sl_open_file_under); dir:
     * images, live host directories, are refused (serve --image-root). */
    const char *root;
} sl_image_limits_t;

/*
 * Import `ref` into the layer store below state_dir, verifying every digest.
 * Layers already in the store are reused. On success *out is a new image the
 * caller frees with sl_image_free. Errors name the reference and the cause
 * ("oci:/x: layer sha256:ab..: digest mismatch", "…: entry '../etc/passwd'
 * escapes the layer root"). `lim` may be NULL for defaults.
 */
int sl_image_import(const char *state_dir, const char *ref, const sl_image_limits_t *lim,
                    sl_image_t **out, sl_error_t *err);

/* Only the first, cheap checks of sl_image_import (the reference parses,
 * its file or directory exists, lim->root admits it): a few stat calls, no
 * reading. For dry runs. */
int sl_image_check_ref(const char *ref, const sl_image_limits_t *lim, sl_error_t *err);

/* JSON round trip for the store. from_json returns NULL with err set. */
json_t *sl_image_to_json(const sl_image_t *img);
sl_image_t *sl_image_from_json(const json_t *j, sl_error_t *err);

void sl_image_free(sl_image_t *img);

/* Remove layer directories no image in `keep` (digest hex list) refers to.
 * Entries may also be "sha256:<hex>" or a layer directory path. Also removes
 * unpack leftovers of dead processes. Do not run concurrently with imports. */
int sl_image_gc(const char *state_dir, const char *const *keep, size_t n_keep, sl_error_t *err);

/* Create the store directories and remove every leftover in layers/tmp.
 * Optional; call once at daemon start, before any import. */
int sl_image_store_init(const char *state_dir, sl_error_t *err);

/*
 * Unpack one layer tarball (uncompressed, gzip, zstd, xz or bzip2) held in
 * memory into the existing directory `dest` with the rules above, without
 * digest checks. For tests and fuzzing.
 */
int sl_image_unpack_layer(const void *buf, size_t len, const char *dest,
                          const sl_image_limits_t *lim, sl_error_t *err);

#endif
