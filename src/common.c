/*
 * common.c — errors, allocation, logging, clocks and file helpers shared by
 * every module. Nothing here touches the event loop.
 */
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

__attribute__((format(printf, 3, 0))) static void error_vset(sl_error_t *err, int code,
                                                             const char *fmt, va_list ap)
{
    if (!err)
        return;
    err->code = code > 0 ? code : EINVAL;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

int sl_error_set(sl_error_t *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_vset(err, code, fmt, ap);
    va_end(ap);
    return -(code > 0 ? code : EINVAL);
}

int sl_error_errno(sl_error_t *err, int errno_val, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_vset(err, errno_val, fmt, ap);
    va_end(ap);
    if (err) {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", strerror(errno_val));
    }
    return -(errno_val > 0 ? errno_val : EIO);
}

int sl_error_wrap(sl_error_t *err, const char *fmt, ...)
{
    if (!err)
        return -EINVAL;
    char prefix[SL_ERRMSG_MAX];
    char old[SL_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    size_t n = strnlen(prefix, sizeof(err->msg) - 3);
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    n += 2;
    size_t rest = strnlen(old, sizeof(err->msg) - n - 1);
    memcpy(err->msg + n, old, rest);
    err->msg[n + rest] = '\0';
    if (err->code <= 0)
        err->code = EINVAL;
    return -err->code;
}

void sl_error_clear(sl_error_t *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

static void oom(size_t n)
{
    fprintf(stderr, "FATAL: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

void sl_buf_put(sl_buf_t *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 4096;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

char *xstrdup(const char *s)
{
    return s ? xstrndup(s, strlen(s)) : NULL;
}

char *xmemdup(const void *p, size_t n)
{
    char *d = xmalloc(n + 1);
    memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

char *xstrndup(const char *s, size_t n)
{
    if (!s)
        return NULL;
    n = strnlen(s, n);
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *out = NULL;
    va_start(ap, fmt);
    int r = vasprintf(&out, fmt, ap);
    va_end(ap);
    if (r < 0)
        oom(0);
    return out;
}

void sl_freep(void *p)
{
    free(*(void **)p);
}

void sl_closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
        *fd = -1;
    }
}

bool sl_str_caseeq(sl_str_t a, sl_str_t b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++) {
        unsigned char x = (unsigned char)a.p[i], y = (unsigned char)b.p[i];
        if (x >= 'A' && x <= 'Z')
            x += 32;
        if (y >= 'A' && y <= 'Z')
            y += 32;
        if (x != y)
            return false;
    }
    return true;
}

static sl_log_level_t log_level = SL_LOG_INFO;

void sl_log_set_level(sl_log_level_t lvl)
{
    log_level = lvl;
}

void sl_log(sl_log_level_t lvl, const char *module, const char *fmt, ...)
{
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (lvl < log_level)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, names[lvl], module);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* One line per record: fold embedded newlines. */
    size_t len = strlen(line);
    for (size_t i = 0; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

uint64_t sl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void sl_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    uint64_t x = sl_now_ns() ^ (uint64_t)sl_wall_ns() ^ ((uint64_t)getpid() << 32);
    for (; got < n; got++) {
        x ^= x << 13; /* xorshift64 */
        x ^= x >> 7;
        x ^= x << 17;
        p[got] = (unsigned char)x;
    }
}

void sl_random_alnum(char *out, size_t n)
{
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    size_t k = 0;
    while (k < n) {
        unsigned char b[16];
        sl_random_bytes(b, sizeof(b));
        for (size_t i = 0; i < sizeof(b) && k < n; i++)
            if (b[i] < 252) /* 252 = 7 * 36: no bias */
                out[k++] = alnum[b[i] % 36];
    }
    out[n] = '\0';
}

int64_t sl_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int sl_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s)
        return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int sl_write_file_atomic(const char *path, const void *data, size_t len, int mode, sl_error_t *err)
{
    sl_autofree char *tmp = xasprintf("%s.tmp", path);
    sl_autoclose int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return sl_error_errno(err, errno, "open %s", tmp);
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            unlink(tmp);
            return sl_error_errno(err, e, "write %s", tmp);
        }
        p += w;
        len -= (size_t)w;
    }
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return sl_error_errno(err, e, "rename %s", path);
    }
    return 0;
}

int sl_read_file(const char *path, size_t max, char **out, size_t *outlen, sl_error_t *err)
{
    sl_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sl_error_errno(err, errno, "open %s", path);
    return sl_read_fd(fd, path, max, out, outlen, err);
}

int sl_read_fd(int fd, const char *path, size_t max, char **out, size_t *outlen, sl_error_t *err)
{
    size_t cap = 4096, len = 0;
    sl_autofree char *buf = xmalloc(cap + 1);
    for (;;) {
        if (len == cap) {
            if (cap >= max)
                return sl_error_set(err, EFBIG, "%s: larger than %zu bytes", path, max);
            cap = cap * 2 > max ? max : cap * 2;
            buf = xrealloc(buf, cap + 1);
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return sl_error_errno(err, errno, "read %s", path);
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    if (outlen)
        *outlen = len;
    *out = sl_steal(&buf);
    return 0;
}

static int open_under(const char *root, const char *path, int flags)
{
    if (!root) {
        int fd = open(path, flags | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
    }
    size_t n = strlen(root);
    while (n > 0 && root[n - 1] == '/')
        n--; /* "/" and "/srv/" alike */
    if (strncmp(path, root, n) != 0 || path[n] != '/')
        return -EXDEV;
    const char *rel = path + n;
    while (*rel == '/')
        rel++;
    sl_autoclose int dfd = open(n ? root : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
                           .resolve =
                               RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    int fd = (int)syscall(SYS_openat2, dfd, *rel ? rel : ".", &how, sizeof(how));
    return fd < 0 ? -errno : fd;
}

int sl_open_file_under(const char *root, const char *path, struct stat *st)
{
    int fd = open_under(root, path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return fd;
    struct stat own;
    st = st ? st : &own;
    int e = fstat(fd, st) < 0       ? errno
            : !S_ISREG(st->st_mode) ? EINVAL
            : fcntl(fd, F_SETFL, 0) ? errno
                                    : 0;
    if (e) {
        close(fd);
        return -e;
    }
    return fd;
}

bool sl_path_holds(const char *dir, const char *path)
{
    size_t n = strlen(dir);
    if (n == 1 && dir[0] == '/')
        return true;
    return strncmp(dir, path, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

off_t sl_data_from(int fd, off_t off)
{
    off_t d = lseek(fd, off, SEEK_DATA);
    return d > off ? d : off;
}

int64_t sl_nr_open(void)
{
    sl_autofree char *text = NULL;
    int64_t v;
    if (sl_read_file("/proc/sys/fs/nr_open", 64, &text, NULL, NULL) < 0)
        return -1;
    text[strcspn(text, "\n")] = '\0';
    return sl_parse_int64(text, 1, INT64_MAX, &v) == 0 ? v : -1;
}

int sl_mkdir_p(const char *path, int mode, sl_error_t *err)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf))
        return sl_error_set(err, ENAMETOOLONG, "bad path '%s'", path);
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return sl_error_errno(err, errno, "mkdir %s", buf);
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return sl_error_errno(err, errno, "mkdir %s", buf);
    return 0;
}

static int rm_rf_at(int parent, const char *name, dev_t dev, sl_error_t *err)
{
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : sl_error_errno(err, errno, "stat %s", name);
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(parent, name, 0) < 0 && errno != ENOENT)
            return sl_error_errno(err, errno, "unlink %s", name);
        return 0;
    }
    if (st.st_dev != dev)
        return sl_error_set(err, EBUSY, "%s is a mount point; not removing", name);
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return sl_error_errno(err, errno, "open %s", name);
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return sl_error_errno(err, errno, "opendir %s", name);
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        rc = rm_rf_at(dirfd(d), de->d_name, dev, err);
    }
    closedir(d);
    if (rc == 0 && unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return sl_error_errno(err, errno, "rmdir %s", name);
    return rc;
}

int sl_rm_rf(const char *path, sl_error_t *err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : sl_error_errno(err, errno, "stat %s", path);
    return rm_rf_at(AT_FDCWD, path, st.st_dev, err);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *sl_base64_encode(const void *data, size_t len)
{
    const unsigned char *in = data;
    char *out = xmalloc(4 * ((len + 2) / 3) + 1), *o = out;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = i + 1 < len ? B64[(v >> 6) & 63] : '=';
        *o++ = i + 2 < len ? B64[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static int b64_value(char ch)
{
    const char *p = ch ? strchr(B64, ch) : NULL;
    return p ? (int)(p - B64) : -1;
}

char *sl_base64_decode(const char *text, size_t n, size_t *len)
{
    sl_autofree char *s = xmalloc(n + 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (text[i] != '\r' && text[i] != '\n')
            s[m++] = text[i];
    n = m;
    if (n % 4)
        return NULL;
    char *out = xmalloc(n / 4 * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        bool last = i + 4 == n;
        int pad = last && s[i + 3] == '=' ? (s[i + 2] == '=' ? 2 : 1) : 0;
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            int d = k < 4 - pad ? b64_value(s[i + (size_t)k]) : 0;
            if (d < 0) {
                free(out);
                return NULL;
            }
            v = v << 6 | (uint32_t)d;
        }
        out[o++] = (char)(v >> 16);
        if (pad < 2)
            out[o++] = (char)(v >> 8);
        if (pad < 1)
            out[o++] = (char)v;
    }
    out[o] = '\0';
    *len = o;
    return out;
}
