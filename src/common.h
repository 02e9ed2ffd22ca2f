/*
 * common.h — the small vocabulary every sluice module shares.
 *
 * Errors for the control plane (sl_error_t: errno-style code + message that
 * callers extend with context), data-path result codes (SL_OK / SL_AGAIN /
 * SL_ERROR), aborting allocators, cleanup attributes for owned locals,
 * {ptr,len} string slices and one-line levelled logging to stderr.
 */
#ifndef SL_COMMON_H
#define SL_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Data-path result codes: no allocation, no message. */
enum { SL_OK = 0, SL_AGAIN = -11, SL_ERROR = -1 };

#define SL_ERRMSG_MAX 1024

/* Control-plane error: errno-style code (>0) and a human message. */
typedef struct sl_error {
    int code;
    char msg[SL_ERRMSG_MAX];
} sl_error_t;

/* Set err (may be NULL) and return -code (< 0) so callers can
 * `return sl_error_set(err, EINVAL, "...")`. */
int sl_error_set(sl_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like sl_error_set, appending ": strerror(errno_val)". */
int sl_error_errno(sl_error_t *err, int errno_val, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix the existing message with context: "context: old message".
 * Returns -err->code. */
int sl_error_wrap(sl_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sl_error_clear(sl_error_t *err);

/* Allocators that abort on OOM. xstrndup/xstrdup(NULL) return NULL. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* A copy of n bytes plus a NUL. */
char *xmemdup(const void *p, size_t n);

/* Text built by appending: p holds len bytes and a NUL once anything was put
 * (p stays NULL until then). Start from {0}; free(p) when done. */
typedef struct sl_buf {
    char *p;
    size_t len, cap;
} sl_buf_t;
void sl_buf_put(sl_buf_t *b, const void *s, size_t n);
/* Formatted allocation; aborts on OOM. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Cleanup attributes for owned locals (crun's cleanup_free / cleanup_close). */
void sl_freep(void *p);
void sl_closep(int *fd);
#define sl_autofree  __attribute__((cleanup(sl_freep)))
#define sl_autoclose __attribute__((cleanup(sl_closep)))

/* Hand ownership on: returns *pp and sets *pp to NULL. */
static inline void *sl_steal_ptr(void *pp)
{
    void **p = (void **)pp;
    void *v = *p;
    *p = NULL;
    return v;
}
#define sl_steal(pp) sl_steal_ptr(pp)
static inline int sl_steal_fd(int *fd)
{
    int v = *fd;
    *fd = -1;
    return v;
}

/* A string slice that does not own its bytes and is not NUL-terminated. */
typedef struct sl_str {
    const char *p;
    size_t len;
} sl_str_t;
#define SL_STR(lit) ((sl_str_t){(lit), sizeof(lit) - 1})
#define SL_STR_NULL ((sl_str_t){NULL, 0})
static inline sl_str_t sl_str_from(const char *s)
{
    return (sl_str_t){s, s ? strlen(s) : 0};
}
static inline bool sl_str_eq(sl_str_t a, sl_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}
/* ASCII case-insensitive equality (header names, tokens). */
bool sl_str_caseeq(sl_str_t a, sl_str_t b);

/* Logging: one line per call, "LEVEL module: message" to stderr with a
 * timestamp. Level threshold set once by sl_log_init. */
typedef enum { SL_LOG_DEBUG, SL_LOG_INFO, SL_LOG_WARN, SL_LOG_ERROR } sl_log_level_t;
void sl_log_set_level(sl_log_level_t lvl);
void sl_log(sl_log_level_t lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define sl_debug(mod, ...) sl_log(SL_LOG_DEBUG, mod, __VA_ARGS__)
#define sl_info(mod, ...)  sl_log(SL_LOG_INFO, mod, __VA_ARGS__)
#define sl_warn(mod, ...)  sl_log(SL_LOG_WARN, mod, __VA_ARGS__)
#define sl_err(mod, ...)   sl_log(SL_LOG_ERROR, mod, __VA_ARGS__)

/* Monotonic clock in nanoseconds / milliseconds. */
uint64_t sl_now_ns(void);
/* Wall clock (CLOCK_REALTIME) in nanoseconds since the epoch. */
int64_t sl_wall_ns(void);
/* n bytes from the kernel's CSPRNG (getrandom); should it fail, bytes
 * mixed from the clocks and the pid: unpredictable enough for names, not
 * for secrets. */
void sl_random_bytes(void *buf, size_t n);
/* n random characters of [a-z0-9] (each as likely), then a NUL: out holds
 * n + 1. For names (instance ids) that must not repeat a predictable
 * sequence. */
void sl_random_alnum(char *out, size_t n);
static inline uint64_t sl_now_ms(void)
{
    return sl_now_ns() / 1000000u;
}

/* Parse a decimal integer in [min,max]; whole string must be consumed.
 * Returns 0 or -1. Replaces atoi. */
int sl_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out);

/* File helpers. sl_write_file_atomic writes PATH.tmp then renames. */
int sl_write_file_atomic(const char *path, const void *data, size_t len, int mode, sl_error_t *err);
/* Reads a whole file (at most max bytes, else EFBIG). *out is NUL-terminated. */
int sl_read_file(const char *path, size_t max, char **out, size_t *len, sl_error_t *err);
/* The same from an open fd (read to its end); `path` names it in errors. */
int sl_read_fd(int fd, const char *path, size_t max, char **out, size_t *len, sl_error_t *err);
/*
 * Opens the regular file `path` for reading; with `root` (a real path) only
 * where absolute `path` lies below root and no component after root is a
 * symlink, resolved by the kernel in one call (openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS), so a path swapped for a symlink meanwhile cannot
 * lead outside. The open itself does not block (O_NONBLOCK, then cleared):
 * a FIFO or device put where a file was expected is refused, not waited on.
 * Returns the fd or -errno (-EXDEV: not below root; -ELOOP: a symlink on
 * the way; -EINVAL: not a regular file), and the file's stat in *st unless
 * st is NULL.
 */
struct stat;
int sl_open_file_under(const char *root, const char *path, struct stat *st);
/* Whether directory dir is path or one above it (both real paths). */
bool sl_path_holds(const char *dir, const char *path);
/* The first offset at or after off that holds data: a file whose start
 * was punched out (a trimmed log) reads as zeros there. off itself when
 * it holds data, is at or past the end, or the filesystem cannot say. */
off_t sl_data_from(int fd, off_t off);
/* fs.nr_open, the kernel's bound on a process's open files; -1 when it
 * cannot be read. */
int64_t sl_nr_open(void);
/* mkdir -p with mode. */
int sl_mkdir_p(const char *path, int mode, sl_error_t *err);
/* rm -rf that does not cross mount points; missing path is not an error. */
int sl_rm_rf(const char *path, sl_error_t *err);

/* Standard base64 with padding (RFC 4648 §4), as Kubernetes' data fields.
 * encode: NUL-terminated, caller frees. decode: as Go's StdEncoding (the
 * alphabet, full quads, padding only at the end; line breaks skipped, the
 * bits padding leaves over ignored); NULL when s is not such text, else
 * *len bytes plus a NUL. */
char *sl_base64_encode(const void *data, size_t len);
char *sl_base64_decode(const char *s, size_t n, size_t *len);

#define SL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SL_UNUSED(x)    ((void)(x))

#endif
