/*
 * supervisor_logs.c — bounds on instance logs.
 *
 * A container writes its stdout/stderr straight into
 * STATE/logs/<namespace>/<service>/<id>.log (O_APPEND); nothing of sluice
 * sits on that path, so nothing here runs per write. Instead a timer takes
 * a snapshot every few seconds (the live instances' ids and log paths, the
 * limits) and hands it to one pass on the thread pool, which stats each
 * live log, trims those past the cap, and deletes the logs of exited
 * instances that are past the retention or beyond the per-revision count.
 * One pass at a time; a slow disk only delays the next one. An exited
 * instance's log gets its mtime set at the exit, so retention counts from
 * then and survives a daemon restart.
 */
#include "supervisor_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#define MOD          "supervisor"
#define LOG_CHECK_MS 2000
#define COPY_BUF     (64u << 10)
#define SWEEP_MAX    4096 /* logs looked at per service dir and pass */

/* ---- trimming one log (thread pool) ----------------------------------- */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The offset of the first line start at or after `from` (within one
 * buffer; otherwise `from` itself: a line longer than that is cut). */
static off_t line_start(int fd, off_t from, char *buf)
{
    if (from == 0)
        return 0;
    ssize_t n = pread(fd, buf, COPY_BUF, from - 1);
    const char *nl = n > 0 ? memchr(buf, '\n', (size_t)n) : NULL;
    return nl ? from - 1 + (nl - buf) + 1 : from;
}

/* Copy fd from *pos to its end (as it grows meanwhile, up to `max` bytes)
 * into tmp. */
static int copy_to_end(int fd, off_t *pos, int tmp, int64_t max, char *buf)
{
    int64_t copied = 0;
    while (copied < max) {
        ssize_t n = pread(fd, buf, COPY_BUF, *pos);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        if (write_all(tmp, buf, (size_t)n) < 0)
            return -1;
        *pos += n;
        copied += n;
    }
    return 0;
}

/* Append tmp's content to fd in chunks that end at a newline, so that a
 * concurrent O_APPEND writer's line lands between two lines. */
static int append_lines(int tmp, int fd, char *buf)
{
    size_t have = 0;
    off_t pos = 0;
    for (;;) {
        ssize_t n = pread(tmp, buf + have, COPY_BUF - have, pos);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        pos += n;
        have += (size_t)n;
        if (n == 0 || have == COPY_BUF) {
            const char *nl = NULL;
            for (size_t i = have; i > 0 && !nl; i--)
                if (buf[i - 1] == '\n')
                    nl = buf + i - 1;
            size_t out = n == 0 || !nl ? have : (size_t)(nl - buf) + 1;
            if (write_all(fd, buf, out) < 0)
                return -1;
            memmove(buf, buf + out, have - out);
            have -= out;
        }
        if (n == 0 && have == 0)
            return 0;
    }
}

int sv_log_trim_copy(int fd, const char *path, int64_t keep, sv_log_trim_t *out, sl_error_t *err)
{
    *out = (sv_log_trim_t){.how = SV_TRIM_COPY};
    sl_autofree char *copy = xstrdup(path);
    const char *dir = dirname(copy);
    sl_autoclose int tmp = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (tmp < 0)
        return sl_error_errno(err, errno, "temporary file in %s", dir);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return sl_error_errno(err, errno, "stat %s", path);
    sl_autofree char *buf = xmalloc(COPY_BUF);
    off_t from = line_start(fd, st.st_size - keep, buf);
    off_t pos = from;
    /* What the writer adds meanwhile is copied too, up to another `keep`. */
    if (copy_to_end(fd, &pos, tmp, 2 * keep, buf) < 0)
        return sl_error_errno(err, errno, "copying the end of %s", path);
    if (ftruncate(fd, 0) < 0)
        return sl_error_errno(err, errno, "truncating %s", path);
    out->dropped = from;
    if (append_lines(tmp, fd, buf) < 0)
        return sl_error_errno(err, errno, "writing back the end of %s", path);
    return 0;
}

/* The filesystem cannot do this fallocate mode (EOPNOTSUPP; EINVAL where
 * it cannot for this file, e.g. ext4 with a journal in data mode). */
static bool refused(int e)
{
    return e == EOPNOTSUPP || e == EINVAL || e == ENOSYS;
}

int sv_log_trim(const char *path, int64_t max, int64_t keep, sv_log_trim_t *out, sl_error_t *err)
{
    *out = (sv_log_trim_t){0};
    if (keep < 0)
        keep = 0;
    if (max < keep)
        max = keep;
    sl_autoclose int fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return sl_error_errno(err, errno, "open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return sl_error_errno(err, errno, "stat %s", path);
    off_t start = sl_data_from(fd, 0); /* past what earlier trims punched out */
    if (st.st_size - start <= max)
        return 0;
    int64_t blk = st.st_blksize > 0 ? st.st_blksize : 4096;
    /* The new start, block-aligned; the range may not reach the end. */
    off_t end = (st.st_size - keep + blk - 1) / blk * blk;
    if (end < st.st_size && end > start) {
        if (fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, end) == 0) {
            *out = (sv_log_trim_t){end - start, SV_TRIM_COLLAPSE};
            return 0;
        }
        if (!refused(errno))
            return sl_error_errno(err, errno, "dropping the start of %s", path);
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, start, end - start) == 0) {
            /* Readers find the data by SEEK_DATA: where the filesystem
             * does not report the hole, the zeros would be read as the
             * log, so the tail is copied after all. */
            if (sl_data_from(fd, 0) >= end) {
                *out = (sv_log_trim_t){end - start, SV_TRIM_PUNCH};
                return 0;
            }
        } else if (!refused(errno)) {
            return sl_error_errno(err, errno, "punching out the start of %s", path);
        }
    }
    return sv_log_trim_copy(fd, path, keep, out, err);
}

/* ---- deleting exited instances' logs (thread pool) -------------------- */

typedef struct log_ent {
    char *name; /* "<revision>-<5 chars>.log" */
    int64_t mtime_ns;
    bool gone;
} log_ent_t;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_live(const char *name, char *const *live, size_t n_live)
{
    sl_autofree char *id = xstrndup(name, strlen(name) - 4);
    return n_live && bsearch(&id, live, n_live, sizeof(char *), cmp_str);
}

/* Newest first; by name among equals, so passes agree. */
static int cmp_newest(const void *a, const void *b)
{
    const log_ent_t *x = a, *y = b;
    if (x->mtime_ns != y->mtime_ns)
        return x->mtime_ns > y->mtime_ns ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* "<revision>-<5 chars>.log": the length of its revision part. */
static size_t revision_len(const char *name)
{
    size_t n = strlen(name) - 4;
    return n > 6 && name[n - 6] == '-' ? n - 6 : n;
}

static size_t delete_ent(int dfd, log_ent_t *e)
{
    if (e->gone)
        return 0;
    e->gone = true;
    return unlinkat(dfd, e->name, 0) == 0;
}

static size_t sweep_dir(int dfd, char *const *live, size_t n_live, const sl_log_limits_t *lim,
                        int64_t now_ns, int64_t since_ns)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return 0;
    }
    log_ent_t *ents = NULL;
    size_t n = 0, removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < SWEEP_MAX) {
        size_t len = strlen(de->d_name);
        struct stat st;
        if (len < 5 || strcmp(de->d_name + len - 4, ".log") != 0 ||
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        if (mt >= since_ns || is_live(de->d_name, live, n_live))
            continue;
        ents = xrealloc(ents, (n + 1) * sizeof(*ents));
        ents[n++] = (log_ent_t){xstrdup(de->d_name), mt, false};
    }
    if (n > 1)
        qsort(ents, n, sizeof(*ents), cmp_newest);
    for (size_t i = 0; i < n; i++) {
        if (lim->retention_ns && now_ns - ents[i].mtime_ns > (int64_t)lim->retention_ns)
            removed += delete_ent(dirfd(d), &ents[i]);
        if (ents[i].gone || lim->per_revision <= 0)
            continue;
        /* Newer ones of the same revision still kept (newest first). */
        int newer = 0;
        size_t rl = revision_len(ents[i].name);
        for (size_t j = 0; j < i; j++)
            newer += !ents[j].gone && revision_len(ents[j].name) == rl &&
                     strncmp(ents[j].name, ents[i].name, rl) == 0;
        if (newer >= lim->per_revision)
            removed += delete_ent(dirfd(d), &ents[i]);
    }
    for (size_t i = 0; i < n; i++)
        free(ents[i].name);
    free(ents);
    closedir(d);
    return removed;
}

/* Calls fn on each subdirectory of dfd (consumed), opened as a dir fd,
 * then removes the subdirectory if it is left empty: a deleted service's
 * folder goes with its last log, a namespace's with its last service's (an
 * instance being prepared makes its folders again, see prep_dirs). */
static size_t each_subdir(int dfd, size_t (*fn)(int, void *), void *arg)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return 0;
    }
    size_t total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0)
            continue;
        total += fn(sub, arg);
        unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR); /* ENOTEMPTY unless empty */
    }
    closedir(d);
    return total;
}

typedef struct sweep_args {
    char *const *live;
    size_t n_live;
    const sl_log_limits_t *lim;
    int64_t now_ns, since_ns;
} sweep_args_t;

static size_t sweep_service(int dfd, void *arg)
{
    sweep_args_t *a = arg;
    return sweep_dir(dfd, a->live, a->n_live, a->lim, a->now_ns, a->since_ns);
}

static size_t sweep_namespace(int dfd, void *arg)
{
    return each_subdir(dfd, sweep_service, arg);
}

size_t sv_log_sweep(const char *logs_root, char *const *live, size_t n_live,
                    const sl_log_limits_t *limits, int64_t now_ns, int64_t since_ns)
{
    if (!limits->retention_ns && limits->per_revision <= 0)
        return 0;
    int dfd = open(logs_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return 0;
    sweep_args_t a = {live, n_live, limits, now_ns, since_ns};
    return each_subdir(dfd, sweep_namespace, &a);
}

/* ---- the periodic pass ------------------------------------------------ */

typedef struct sv_log_job {
    sl_log_limits_t lim;
    char *logs_root;
    char **ids, **paths; /* live instances; ids sorted, paths in any order */
    size_t n;
    int64_t now_ns;
    /* results, for the loop to log */
    size_t removed, n_trimmed;
    int64_t dropped;
    char *first_error;
} sv_log_job_t;

static void job_free(sv_log_job_t *j)
{
    for (size_t i = 0; i < j->n; i++) {
        free(j->ids[i]);
        free(j->paths[i]);
    }
    free(j->ids);
    free(j->paths);
    free(j->logs_root);
    free(j->first_error);
    free(j);
}

/* Thread pool: the loop leaves sup->log_job alone until log_work_done. */
static void log_work(uv_work_t *w)
{
    sl_supervisor_t *sup = w->data;
    sv_log_job_t *j = sup->log_job;
    for (size_t i = 0; j->lim.max_bytes > 0 && i < j->n; i++) {
        struct stat st; /* the size counts punched-out bytes too: a first filter */
        if (stat(j->paths[i], &st) < 0 || st.st_size <= j->lim.max_bytes)
            continue;
        sv_log_trim_t r;
        sl_error_t err = {0};
        /* Down to half the cap: a trim holds the file's lock while the
         * filesystem writes back and drops its cached pages, stalling the
         * app's writes, so a chatty app should meet one rarely. */
        if (sv_log_trim(j->paths[i], j->lim.max_bytes, j->lim.max_bytes / 2, &r, &err) < 0) {
            if (!j->first_error)
                j->first_error = xstrdup(err.msg);
            continue;
        }
        j->n_trimmed += r.dropped > 0;
        j->dropped += r.dropped;
    }
    j->removed = sv_log_sweep(j->logs_root, j->ids, j->n, &j->lim, j->now_ns, j->now_ns);
}

static void log_work_done(uv_work_t *w, int status)
{
    sl_supervisor_t *sup = w->data;
    sv_log_job_t *j = sup->log_job;
    sup->log_job = NULL;
    if (j->first_error)
        sl_warn(MOD, "instance logs: %s", j->first_error);
    if (j->n_trimmed)
        sl_debug(MOD, "instance logs: %zu over %" PRId64 " bytes trimmed, %" PRId64 " dropped",
                 j->n_trimmed, j->lim.max_bytes, j->dropped);
    if (j->removed)
        sl_debug(MOD, "instance logs: %zu of exited instances removed", j->removed);
    job_free(j);
    if (sup->closing)
        sv_close_done(sup);
}

static void on_log_timer(uv_timer_t *t)
{
    sl_supervisor_t *sup = t->data;
    if (sup->log_job || sup->closing)
        return;
    sv_log_job_t *j = xcalloc(1, sizeof(*j));
    j->lim = sup->log_limits;
    j->logs_root = xstrdup(sup->logs_root);
    j->ids = xcalloc(sup->n_instances + 1, sizeof(char *));
    j->paths = xcalloc(sup->n_instances + 1, sizeof(char *));
    for (sl_instance_t *i = sup->instances; i && j->n < sup->n_instances; i = i->next) {
        j->ids[j->n] = xstrdup(i->id);
        j->paths[j->n++] = xstrdup(i->log_path);
    }
    qsort(j->ids, j->n, sizeof(char *), cmp_str);
    /* Taken after the snapshot: a log made later is newer than this. */
    j->now_ns = sl_wall_ns();
    sup->log_job = j;
    sup->log_work.data = sup;
    if (uv_queue_work(sup->loop, &sup->log_work, log_work, log_work_done) < 0) {
        sup->log_job = NULL;
        job_free(j);
    }
}

void sv_logs_init(sl_supervisor_t *sup)
{
    sup->log_limits = (sl_log_limits_t){SL_LOG_MAX_DEFAULT, SL_LOG_RETENTION_DEFAULT,
                                        SL_LOG_PER_REVISION_DEFAULT};
    uv_timer_init(sup->loop, &sup->log_timer);
    sup->log_timer.data = sup;
    uv_timer_start(&sup->log_timer, on_log_timer, LOG_CHECK_MS, LOG_CHECK_MS);
    uv_unref((uv_handle_t *)&sup->log_timer);
}

static void on_log_timer_closed(uv_handle_t *h)
{
    sv_close_done(h->data);
}

int sv_logs_close(sl_supervisor_t *sup)
{
    uv_close((uv_handle_t *)&sup->log_timer, on_log_timer_closed);
    return 1 + (sup->log_job ? 1 : 0);
}

void sl_supervisor_set_log_limits(sl_supervisor_t *sup, const sl_log_limits_t *limits)
{
    sup->log_limits = *limits;
}

/* The instance's end, as its last log line (Cloud Run logs "Container
 * called exit(N)"): `sluice logs` shows why it went, after what it wrote. A
 * stop sluice asked for says so; anything else is a failure. On the loop:
 * the line; sv_logs_write_end writes it, on the cleanup's pool thread. */
char *sv_logs_end_line(const sl_instance_t *inst)
{
    if (!inst->log_path)
        return NULL;
    const char *why = inst->reason ? inst->reason : "exited";
    bool asked = inst->stop_requested && (!strncmp(why, "exited", 6) || !strncmp(why, "killed", 6));
    return xasprintf(SV_LOG_END_PREFIX "%s %s: %s\n", inst->id, asked ? "stopped" : "failed", why);
}

void sv_logs_write_end(const sl_instance_t *inst, const char *line)
{
    if (!line)
        return;
    sl_autoclose int fd = open(inst->log_path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0 && write(fd, line, strlen(line)) < 0)
        sl_debug("supervisor", "instance %s: log end line: %s", inst->id, strerror(errno));
    utimensat(AT_FDCWD, inst->log_path, NULL, 0);
}
