/*
 * supervisor.c — instances of revisions, run through an OCI runtime.
 *
 * An instance's life: prepare (process args/env on the loop; then on the
 * thread pool: instance dir, user, overlay rootfs, network namespace,
 * config.json) → `RT run -d` via posix_spawn →
 * pid from the pid file, watched through a pidfd → readiness probe (TCP
 * connect to 127.0.0.1:PORT inside the namespace by default; httpGet or
 * exec) polled every few ms → READY → readiness and liveness probes every
 * period (a failing liveness probe stops it) → stop (SIGTERM, grace,
 * SIGKILL) or a crash → `RT delete -f` → unmount, remove the bundle, close
 * the namespace → EXITED, then freed. One deadline timer serves each phase
 * in turn (startup timeout, stop grace, delete timeout); each probe has a
 * timer pacing its attempts (supervisor_probe.c). The instance is freed
 * only after all of its libuv handles have closed, right after the EXITED
 * callback returns.
 *
 * sluice is the child subreaper, so each container's init process becomes
 * its child once the runtime's detached helper exits; it reaps them (and
 * that helper) itself. A container can exit while still the helper's child:
 * its pidfd is readable but it is not ours to wait for yet, so the exit is
 * collected (waitid on the pidfd, never waitpid(-1)) once SIGCHLD says the
 * zombie was handed over.
 *
 * The runtime itself (`RT run -d`, `RT delete -f`) is started with
 * posix_spawn, not uv_spawn: libuv forks, and copying the daemon's page
 * tables held up the loop (and the router on it) for milliseconds at every
 * start and stop. glibc's posix_spawn clones with CLONE_VM|CLONE_VFORK, so
 * the loop waits only until the child has exec'd. Its exit is watched
 * through a pidfd like a container's, and reaped with waitid on that pidfd;
 * so are exec probes' `RT exec` (sv_exec_start). Nothing is spawned through
 * libuv.
 */
#include "supervisor.h"
#include "netns.h"
#include "oci_spec.h"
#include "rootfs.h"
#include "seccomp_bpf.h"
#include "seccomp_profiles.h"
#include "supervisor_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/mount.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#define MOD                "supervisor"
#define DEFAULT_GRACE_MS   10000
#define DEFAULT_STARTUP_MS 120000
/* After a startup probe passes, the readiness probe has this long at most. */
#define STARTUP_AFTER_PROBE_MS 10000
#define DEFAULT_PIDS           1024
#define FAST_GRACE_MS          500
#define DELETE_TIMEOUT_MS      10000
#define SCRATCH_DEFAULT        (512LL << 20) /* writable layer and /tmp without a memory limit */
#define LOG_TAIL_LINES         10
#define REAP_RETRY_MS          5
#define REAP_WAIT_MAX_NS       (10000 * 1000000ull)
#define NAME_MAX_LEN           200

extern char **environ;

static void begin_cleanup(sl_instance_t *inst);
static void finish_cleanup(sl_instance_t *inst);
static void check_shutdown(sl_supervisor_t *sup);

/* ---- small helpers ---------------------------------------------------- */

void sv_set_reason(sl_instance_t *inst, const char *fmt, ...)
{
    if (inst->reason)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&inst->reason, fmt, ap) < 0)
        inst->reason = NULL;
    va_end(ap);
}

static void notify(sl_instance_t *inst, sl_inst_state_t state)
{
    inst->state = state;
    if (state != SL_INST_READY)
        sv_cpu_apply(inst); /* a stopping instance has its CPU for its grace period */
    if ((state == SL_INST_EXITED || (state == SL_INST_STOPPING && !inst->cpu_throttled)) &&
        inst->cpu_fd >= 0) {
        sl_closep(&inst->cpu_fd);
        inst->cpu_fd = -2;
    }
    if (!inst->silent && inst->cb)
        inst->cb(inst, state, inst->data);
}

/* ---- request-based CPU ------------------------------------------------ */

void sv_cpu_apply(sl_instance_t *inst)
{
    bool hold = inst->cpu_idle && inst->cpu_holds == 0 && inst->state == SL_INST_READY;
    if (hold == inst->cpu_throttled || inst->cpu_fd == -2)
        return;
    if (inst->cpu_fd < 0) {
        int fd = sv_cpu_quota_open(inst->id, &inst->cpu_v2);
        if (fd < 0) {
            sl_warn(MOD, "instance %s: its CPU is not held while idle: cgroup %s: %s", inst->id,
                    inst->id, strerror(-fd));
            inst->cpu_fd = -2;
            return;
        }
        inst->cpu_fd = fd;
    }
    int64_t quota = hold ? SL_CPU_IDLE_QUOTA_US : sl_oci_cpu_quota(inst->cpu_millis);
    int rc = sv_cpu_quota_write(inst->cpu_fd, inst->cpu_v2, quota);
    if (rc < 0 && !hold) /* giving it back matters most: once more */
        rc = sv_cpu_quota_write(inst->cpu_fd, inst->cpu_v2, quota);
    if (rc < 0) {
        sl_warn(MOD, "instance %s: setting its CPU quota: %s", inst->id, strerror(-rc));
        if (!inst->cpu_throttled) {
            sl_closep(&inst->cpu_fd);
            inst->cpu_fd = -2;
        }
        return;
    }
    inst->cpu_throttled = hold;
}

void sv_cpu_hold(sl_instance_t *inst, int delta)
{
    inst->cpu_holds += delta;
    sv_cpu_apply(inst);
}

void sl_instance_set_cpu_idle(sl_instance_t *inst, bool idle)
{
    inst->cpu_idle = idle;
    sv_cpu_apply(inst);
}

bool sl_instance_cpu_held(const sl_instance_t *inst)
{
    return inst->cpu_throttled;
}

static void finalize(sl_instance_t *inst);

/* The instance goes once it is cleaned up and its last handle closed. */
void sv_maybe_finalize(sl_instance_t *inst)
{
    if (inst->cleaned && inst->handles == 0)
        finalize(inst);
}

static void on_handle_closed(uv_handle_t *h)
{
    sl_instance_t *inst = h->data;
    inst->handles--;
    sv_maybe_finalize(inst);
}

void sv_close_handle(sl_instance_t *inst, void *handle)
{
    uv_handle_t *h = handle;
    if (!uv_is_closing(h))
        uv_close(h, on_handle_closed);
}

static bool valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > NAME_MAX_LEN || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

/* ---- processes the supervisor waits for (sv_proc_t) ------------------ */

static void on_proc_closed(uv_handle_t *h)
{
    sv_proc_t *p = container_of(h, sv_proc_t, poll);
    sl_closep(&p->pidfd);
    on_handle_closed(h);
}

/* Watch p->pid through a pidfd: cb runs (level-triggered) once it has
 * exited, until proc_done. Errors are -errno (-ESRCH: already reaped). */
static int proc_watch(sl_instance_t *inst, sv_proc_t *p, uv_poll_cb cb)
{
    int fd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    if (fd < 0)
        return -errno;
    int rc = uv_poll_init(inst->sup->loop, &p->poll, fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    p->pidfd = fd;
    p->poll.data = inst;
    p->watched = true;
    inst->handles++;
    uv_poll_start(&p->poll, UV_READABLE, cb);
    return 0;
}

/* Reaped (or given up on): close the watch; the pidfd goes with it. */
static void proc_done(sl_instance_t *inst, sv_proc_t *p)
{
    p->running = false;
    if (p->watched && !uv_is_closing((uv_handle_t *)&p->poll))
        uv_close((uv_handle_t *)&p->poll, on_proc_closed);
}

/* Its pidfd turned readable: reap it without blocking. SV_EXIT_PENDING:
 * not reapable (yet), still watched; else done, with sv_wait_exit's
 * result. */
static int proc_collect(sl_instance_t *inst, sv_proc_t *p, sv_exit_t *ex)
{
    int rc = sv_wait_exit(p->pidfd, p->pid, ex);
    if (rc != SV_EXIT_PENDING)
        proc_done(inst, p);
    return rc;
}

/* Through the pidfd, so a reused pid is never hit; one already reaped
 * (ESRCH) is not an error. */
static int proc_signal(const sv_proc_t *p, int sig)
{
    if (!p->running)
        return 0;
    int r = p->pidfd >= 0 ? (int)syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0)
                          : kill(p->pid, sig);
    return r < 0 && errno != ESRCH ? -errno : 0;
}

/* CPU time of the calling thread: with wall time, tells a hold that
 * works from one that waits. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* posix_spawn dup2s in order, so a source among the targets 0..last could
 * be overwritten before it is used: give it a number above them (*tmp,
 * closed after). -errno when it cannot. */
static int above_targets(int fd, int last, int *tmp)
{
    if (fd > last)
        return fd;
    *tmp = fcntl(fd, F_DUPFD_CLOEXEC, last + 1);
    return *tmp >= 0 ? *tmp : -errno;
}

/* A child's signals: none blocked, every one at its default. Every signal:
 * sigfillset leaves out glibc's internal two (32, 33), which posix_spawn
 * would then leave ignored, through exec, for the child and so for a
 * container. */
static void spawn_attr_init(posix_spawnattr_t *at, short flags)
{
    sigset_t none, all;
    sigemptyset(&none);
    memset(&all, 0xff, sizeof(all));
    posix_spawnattr_init(at);
    posix_spawnattr_setsigmask(at, &none);
    posix_spawnattr_setsigdefault(at, &all);
    posix_spawnattr_setflags(at, (short)(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | flags));
}

enum {
    SPAWN_DETACH = 1, /* a session of its own */
    SPAWN_NO_LOG = 2, /* no --log: its errors are not the instance's runtime errors */
};

/*
 * Start `RT --root R [--log L --log-format json] ARGS...` (args NULL-ended,
 * args[0] the command) with stdin on /dev/null and stdout/stderr on out_fd
 * (borrowed), signals unblocked and at their defaults (sluice ignores
 * SIGPIPE), in a session of its own with SPAWN_DETACH; then watch it
 * through p, cb running once it has exited. glibc's posix_spawn clones
 * with CLONE_VM|CLONE_VFORK: unlike fork (and so uv_spawn) it copies no
 * page tables, and the loop waits only until the child has exec'd. Every
 * fd sluice opens is O_CLOEXEC, so the runtime gets these three alone.
 * Returns -errno.
 */
static int spawn_runtime(sl_instance_t *inst, sv_proc_t *p, const char *const *args, int out_fd,
                         int flags, uv_poll_cb cb)
{
    size_t n_args = 0;
    while (args[n_args])
        n_args++;
    sl_autofree const char **argv = xcalloc(n_args + 8, sizeof(char *));
    size_t n = 0;
    argv[n++] = inst->runtime_bin;
    argv[n++] = "--root";
    argv[n++] = inst->rt_root;
    if (!(flags & SPAWN_NO_LOG)) {
        argv[n++] = "--log";
        argv[n++] = inst->rtlog_path;
        argv[n++] = "--log-format";
        argv[n++] = "json";
    }
    for (size_t i = 0; i < n_args; i++)
        argv[n++] = args[i];
    uint64_t t0 = sl_now_ns(), c0 = thread_cpu_ns();
    int tmp_in = -1, tmp_out = -1;
    /* where a move fails, the fd as it is (at worst overwritten) */
    int in_fd = above_targets(inst->sup->devnull, 2, &tmp_in);
    in_fd = in_fd < 0 ? inst->sup->devnull : in_fd;
    int moved = above_targets(out_fd, 2, &tmp_out);
    out_fd = moved < 0 ? out_fd : moved;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 2);
    posix_spawnattr_t at;
    spawn_attr_init(&at, flags & SPAWN_DETACH ? POSIX_SPAWN_SETSID : 0);
    pid_t pid;
    int rc = -posix_spawn(&pid, argv[0], &fa, &at, (char *const *)argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    sl_closep(&tmp_in);
    sl_closep(&tmp_out);
    if (rc < 0)
        return rc;
    p->pid = pid;
    p->running = true;
    if ((rc = proc_watch(inst, p, cb)) < 0) {
        /* Unwatched it would go unnoticed: stop it now (it exits at once). */
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        p->running = false;
        return rc;
    }
    sl_debug(MOD, "instance %s: %s %s spawned, loop held %.3f ms (cpu %.3f ms)", inst->id,
             inst->runtime, args[0], (double)(sl_now_ns() - t0) / 1e6,
             (double)(thread_cpu_ns() - c0) / 1e6);
    return 0;
}

static int signal_pid(sl_instance_t *inst, int sig)
{
    return proc_signal(&inst->ctr, sig);
}

/* ---- exec probes' `RT exec` -------------------------------------------- */

struct sv_exec {
    sv_proc_t proc;  /* proc.poll.data = inst */
    sv_exec_t *next; /* inst->execs */
    sv_exec_cb cb;   /* NULL once abandoned */
    void *data;
};

static void on_exec_closed(uv_handle_t *h)
{
    sl_instance_t *inst = h->data;
    sv_exec_t *x = container_of(h, sv_exec_t, proc.poll);
    for (sv_exec_t **pp = &inst->execs; *pp; pp = &(*pp)->next)
        if (*pp == x) {
            *pp = x->next;
            break;
        }
    on_proc_closed(h); /* the pidfd and the handle count; may finalize inst */
    free(x);
}

static void on_exec_exit(uv_poll_t *h, int status, int events)
{
    sv_exec_t *x = container_of(h, sv_exec_t, proc.poll);
    sv_exit_t ex = {0};
    int rc = sv_wait_exit(x->proc.pidfd, x->proc.pid, &ex);
    if (rc == SV_EXIT_PENDING)
        return;
    x->proc.running = false;
    uv_close((uv_handle_t *)h, on_exec_closed);
    sv_exec_cb cb = x->cb;
    x->cb = NULL;
    if (cb)
        cb(x->data, rc, &ex);
}

char *sv_exec_process_path(const sl_instance_t *inst, const char *what)
{
    return xasprintf("%s/exec-%s.json", inst->dir, what);
}

int sv_exec_start(sl_instance_t *inst, const char *process, sv_exec_cb cb, void *data,
                  sv_exec_t **out)
{
    const char *args[] = {"exec", "--process", process, inst->id, NULL};
    sv_exec_t *x = xcalloc(1, sizeof(*x));
    x->proc.pidfd = -1;
    int rc = spawn_runtime(inst, &x->proc, args, inst->sup->devnull, SPAWN_NO_LOG, on_exec_exit);
    if (rc < 0) {
        free(x); /* not watched: nothing else holds it */
        return rc;
    }
    x->cb = cb;
    x->data = data;
    x->next = inst->execs;
    inst->execs = x;
    *out = x;
    return 0;
}

void sv_exec_abandon(sv_exec_t *x)
{
    x->cb = NULL;
    proc_signal(&x->proc, SIGKILL);
}

/* ---- accessors -------------------------------------------------------- */

const char *sl_instance_id(const sl_instance_t *inst)
{
    return inst->id;
}
sl_inst_state_t sl_instance_state(const sl_instance_t *inst)
{
    return inst->state;
}
int sl_instance_netns_fd(const sl_instance_t *inst)
{
    return inst->netns_fd;
}
int sl_instance_port(const sl_instance_t *inst)
{
    return inst->port;
}
int sl_instance_pid(const sl_instance_t *inst)
{
    return inst->ctr.pid;
}
const char *sl_instance_log_path(const sl_instance_t *inst)
{
    return inst->log_path;
}
uint64_t sl_instance_started_ns(const sl_instance_t *inst)
{
    return inst->started_ns;
}
uint64_t sl_instance_ready_ns(const sl_instance_t *inst)
{
    return inst->ready_ns;
}
bool sl_instance_serving(const sl_instance_t *inst)
{
    return inst->state == SL_INST_READY && !inst->unready;
}
const char *sl_instance_exit_reason(const sl_instance_t *inst)
{
    return inst->exit_reason;
}
void *sl_instance_data(const sl_instance_t *inst)
{
    return inst->data;
}
const char *sl_instance_runtime(const sl_instance_t *inst)
{
    return inst->runtime;
}
const char *sl_instance_runtime_root(const sl_instance_t *inst)
{
    return inst->rt_root;
}
int64_t sl_instance_memory_limit(const sl_instance_t *inst)
{
    return inst->memory_limit;
}
int64_t sl_instance_cpu_millis(const sl_instance_t *inst)
{
    return inst->cpu_millis;
}
bool sl_instance_userns(const sl_instance_t *inst)
{
    return inst->userns;
}
void sl_instance_startup(const sl_instance_t *inst, sl_instance_startup_t *out)
{
    *out = (sl_instance_startup_t){
        .started_ns = inst->started_ns,
        .prep_begin_ns = inst->prep_begin_ns,
        .rootfs_ns = inst->rootfs_ns,
        .netns_ns = inst->netns_ns,
        .bundle_ns = inst->bundle_ns,
        .spawned_ns = inst->spawned_ns,
        .runtime_ns = inst->runtime_ns,
        .ready_ns = inst->ready_ns,
    };
}

/* ---- sandboxed instances' host id ranges ------------------------------ */

struct sv_id_range {
    bool held;
    int userns_fd; /* -1 until a pool thread needs it */
};

struct sv_id_span {
    uint64_t lo, hi; /* [lo, hi) */
};

static uint32_t id_range_host(int k)
{
    return SL_SANDBOX_HOST_ID_BASE + (uint32_t)k * SL_SANDBOX_ID_RANGE;
}

void sv_id_ranges_avoid(sl_supervisor_t *sup, const char *path)
{
    sl_autofree char *text = NULL;
    if (sl_read_file(path, 1u << 20, &text, NULL, NULL) < 0)
        return;
    char *save = NULL;
    for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char *start = strchr(l, ':'), *count = start ? strchr(start + 1, ':') : NULL;
        if (!count)
            continue;
        *count++ = '\0';
        int64_t s, n;
        if (sl_parse_int64(start + 1, 0, UINT32_MAX, &s) < 0 ||
            sl_parse_int64(count, 1, UINT32_MAX, &n) < 0)
            continue;
        sup->foreign = xrealloc(sup->foreign, (sup->n_foreign + 1) * sizeof(*sup->foreign));
        sup->foreign[sup->n_foreign++] = (struct sv_id_span){(uint64_t)s, (uint64_t)(s + n)};
    }
}

static bool id_range_foreign(const sl_supervisor_t *sup, size_t k)
{
    uint64_t lo = id_range_host((int)k), hi = lo + SL_SANDBOX_ID_RANGE;
    for (size_t i = 0; i < sup->n_foreign; i++)
        if (sup->foreign[i].lo < hi && lo < sup->foreign[i].hi)
            return true;
    return false;
}

/* Loop thread: the lowest range nobody holds, so the ranges in use stay
 * few and their user namespaces get reused. */
static int id_range_take(sl_instance_t *inst, sl_error_t *err)
{
    sl_supervisor_t *sup = inst->sup;
    if (!inst->userns)
        return 0;
    uv_mutex_lock(&sup->id_lock);
    size_t k = 0;
    for (;;) {
        while (k < sup->n_id_ranges && (sup->id_ranges[k].held || id_range_foreign(sup, k)))
            k++;
        if (k < sup->n_id_ranges || k == SL_SANDBOX_ID_RANGES)
            break;
        size_t n = k ? k * 2 : 8;
        n = n < SL_SANDBOX_ID_RANGES ? n : SL_SANDBOX_ID_RANGES;
        sup->id_ranges = xrealloc(sup->id_ranges, n * sizeof(*sup->id_ranges));
        for (size_t i = k; i < n; i++)
            sup->id_ranges[i] = (struct sv_id_range){.userns_fd = -1};
        sup->n_id_ranges = n;
    }
    if (k < sup->n_id_ranges) {
        sup->id_ranges[k].held = true;
        inst->id_range = (int)k;
    }
    uv_mutex_unlock(&sup->id_lock);
    if (inst->id_range < 0)
        return sl_error_set(err, EAGAIN, "all %u host id ranges for sandboxed instances are in use",
                            SL_SANDBOX_ID_RANGES);
    return 0;
}

static void id_range_put(sl_instance_t *inst)
{
    sl_supervisor_t *sup = inst->sup;
    if (inst->id_range < 0)
        return;
    uv_mutex_lock(&sup->id_lock);
    sup->id_ranges[inst->id_range].held = false;
    uv_mutex_unlock(&sup->id_lock);
    inst->id_range = -1;
}

/* Pool thread: the user namespace mapping the instance's range, for its
 * idmapped layers. Only the range's holder makes it, so it is made once;
 * the helper process is forked outside the lock. */
static int id_range_userns(sl_instance_t *inst, sl_error_t *err)
{
    sl_supervisor_t *sup = inst->sup;
    uv_mutex_lock(&sup->id_lock);
    int fd = sup->id_ranges[inst->id_range].userns_fd;
    uv_mutex_unlock(&sup->id_lock);
    if (fd >= 0)
        return fd;
    uint32_t host = id_range_host(inst->id_range);
    fd = sl_rootfs_userns_open(host, host, SL_SANDBOX_ID_RANGE, err);
    if (fd < 0)
        return fd;
    uv_mutex_lock(&sup->id_lock);
    sup->id_ranges[inst->id_range].userns_fd = fd;
    uv_mutex_unlock(&sup->id_lock);
    return fd;
}

static void id_ranges_free(sl_supervisor_t *sup)
{
    for (size_t k = 0; k < sup->n_id_ranges; k++)
        sl_closep(&sup->id_ranges[k].userns_fd);
    free(sup->id_ranges);
    free(sup->foreign);
    uv_mutex_destroy(&sup->id_lock);
}

/* ---- teardown --------------------------------------------------------- */

static void instance_free(sl_instance_t *inst)
{
    sl_closep(&inst->ctr.pidfd);
    sl_closep(&inst->run_proc.pidfd);
    sl_closep(&inst->del_proc.pidfd);
    sl_closep(&inst->slirp.pidfd);
    sl_closep(&inst->slirp_exit_fd);
    sl_closep(&inst->netns_fd);
    sl_closep(&inst->cpu_fd);
    sv_probe_free(inst->readiness);
    sv_probe_free(inst->liveness);
    sv_probe_free(inst->startup);
    free(inst->log_end);
    sl_oci_volumes_free(inst->refresh_next, inst->n_refresh_next);
    free(inst->id);
    free(inst->runtime);
    free(inst->runtime_bin);
    free(inst->rt_root);
    free(inst->dir);
    free(inst->log_path);
    free(inst->pid_path);
    free(inst->rtlog_path);
    free(inst->reason);
    free(inst->exit_reason);
    id_range_put(inst);
    free(inst);
}

static void list_remove(sl_instance_t *inst)
{
    sl_supervisor_t *sup = inst->sup;
    if (inst->prev)
        inst->prev->next = inst->next;
    else if (sup->instances == inst)
        sup->instances = inst->next;
    if (inst->next)
        inst->next->prev = inst->prev;
    inst->prev = inst->next = NULL;
    sup->n_instances--;
}

static void build_exit_reason(sl_instance_t *inst)
{
    const char *why = inst->reason ? inst->reason : "exited";
    sl_autofree char *tail =
        sv_log_tail(inst->log_path, LOG_TAIL_LINES, inst->runtime_failed ? why : NULL);
    inst->exit_reason = tail ? xasprintf("%s; last log lines: %s", why, tail) : xstrdup(why);
}

/* Last step once the bundle is gone and every handle has closed. */
static void finalize(sl_instance_t *inst)
{
    sl_supervisor_t *sup = inst->sup;
    list_remove(inst);
    id_range_put(inst); /* its processes are gone: a replacement may take it */
    if (!inst->silent)
        sl_debug(MOD, "instance %s exited: %s", inst->id, inst->exit_reason);
    notify(inst, SL_INST_EXITED);
    instance_free(inst);
    check_shutdown(sup);
}

/* Thread pool: unmounting takes the kernel milliseconds (RCU grace
 * periods), too long to hold up the loop. Reads only dir, id and
 * delete_failed, which nothing changes meanwhile. */
static void fs_cleanup_work(uv_work_t *w)
{
    sl_instance_t *inst = w->data;
    sl_error_t err = {0};
    if (sl_rootfs_umount_under(inst->dir, &err) < 0)
        sl_warn(MOD, "instance %s: %s", inst->id, err.msg);
    if (sl_rm_rf(inst->dir, &err) < 0)
        sl_warn(MOD, "instance %s: %s", inst->id, err.msg);
    if (inst->delete_failed)
        sv_remove_cgroups(inst->id);
    sv_logs_write_end(inst, inst->log_end);
}

static void fs_cleanup_done(uv_work_t *w, int status)
{
    sl_instance_t *inst = w->data;
    inst->handles--;
    inst->cleaned = true;
    /* Its exit fd closed when the cleanup began; the container is gone:
     * a slirp4netns still there is ended, so the instance can go. */
    proc_signal(&inst->slirp, SIGKILL);
    /* The namespace fd stays open until after EXITED: users (the router's
     * pools) hold its number until then, and a reused number would point
     * them into another instance's namespace. */
    build_exit_reason(inst);
    sv_probes_close(inst);
    sv_close_handle(inst, &inst->deadline_timer);
    sv_close_handle(inst, &inst->reap_timer);
    proc_done(inst, &inst->ctr); /* closed when reaped; not if never watched */
    sv_maybe_finalize(inst);
}

/* Unmount and remove the bundle (off the loop), then close the handles;
 * finalize once they are all closed. */
static void finish_cleanup(sl_instance_t *inst)
{
    if (inst->cleanup_queued)
        return;
    sl_oci_volumes_free(sl_steal_ptr(&inst->refresh_next), inst->n_refresh_next);
    if (inst->refreshing) {
        inst->cleanup_deferred = true; /* refresh_done comes back here */
        return;
    }
    inst->cleanup_queued = true;
    sl_closep(&inst->slirp_exit_fd); /* its slirp4netns ends, and is reaped */
    inst->log_end = sv_logs_end_line(inst);
    inst->fs_work.data = inst;
    inst->handles++; /* the work request counts as one until it is done */
    if (uv_queue_work(inst->sup->loop, &inst->fs_work, fs_cleanup_work, fs_cleanup_done) < 0) {
        fs_cleanup_work(&inst->fs_work);
        fs_cleanup_done(&inst->fs_work, 0);
    }
}

static void on_delete_timeout(uv_timer_t *t)
{
    sl_instance_t *inst = t->data;
    sl_warn(MOD, "instance %s: '%s delete' hangs; killing it", inst->id, inst->runtime);
    proc_signal(&inst->del_proc, SIGKILL);
}

/* A runtime invocation's pidfd turned readable: SV_EXIT_PENDING (not yet),
 * SV_EXIT_DONE (it succeeded) or -1, it failed and *why (caller frees) says
 * how: the runtime's own errors, else its exit. */
static int runtime_exit(sl_instance_t *inst, sv_proc_t *p, char **why)
{
    sv_exit_t ex = {0};
    int rc = proc_collect(inst, p, &ex);
    if (rc == SV_EXIT_PENDING || (rc == SV_EXIT_DONE && ex.code == 0 && ex.sig == 0))
        return rc;
    if (!(*why = sv_runtime_errors(inst->rtlog_path))) {
        sl_autofree char *how = sv_exit_text(rc, &ex);
        *why = xasprintf("%s %s", inst->runtime, how);
    }
    return -1;
}

static void on_delete_exit(uv_poll_t *h, int status, int events)
{
    sl_instance_t *inst = h->data;
    sl_autofree char *why = NULL;
    int rc = runtime_exit(inst, &inst->del_proc, &why);
    if (rc == SV_EXIT_PENDING)
        return;
    uv_timer_stop(&inst->deadline_timer);
    if (rc < 0) {
        sl_warn(MOD, "instance %s: %s delete failed: %s", inst->id, inst->runtime, why);
        inst->delete_failed = true;
    }
    finish_cleanup(inst);
}

/* The container is gone (or never ran): `RT delete -f`, then the rest. */
static void begin_cleanup(sl_instance_t *inst)
{
    if (inst->cleaning)
        return;
    inst->cleaning = true;
    sv_probes_stop(inst);
    uv_timer_stop(&inst->deadline_timer);
    if (inst->state == SL_INST_STARTING || inst->state == SL_INST_READY)
        notify(inst, SL_INST_STOPPING);
    const char *args[] = {"delete", "-f", inst->id, NULL};
    int rc = spawn_runtime(inst, &inst->del_proc, args, inst->sup->devnull, 0, on_delete_exit);
    if (rc < 0) {
        sl_warn(MOD, "instance %s: spawning %s delete: %s", inst->id, inst->runtime, strerror(-rc));
        inst->delete_failed = true;
        finish_cleanup(inst);
        return;
    }
    uv_timer_start(&inst->deadline_timer, on_delete_timeout, DELETE_TIMEOUT_MS, 0);
}

/* ---- the container process -------------------------------------------- */

static void on_reap_retry(uv_timer_t *t);

/* The container's pid has exited, been reaped elsewhere, or may not be
 * reapable yet. Only this instance's pid is ever waited for (through its
 * pidfd): a waitpid(-1) here or in the orphan reaper could take the status. */
static void reap(sl_instance_t *inst)
{
    if (!inst->ctr.running)
        return;
    sv_exit_t ex = {0};
    int rc = proc_collect(inst, &inst->ctr, &ex);
    if (rc == SV_EXIT_PENDING) {
        /* The pidfd said it exited, but the zombie is still the runtime
         * helper's child: the helper exits just after `RT run -d` returns,
         * and then the zombie is ours (SIGCHLD). Stop the level-triggered
         * poll and retry from SIGCHLD or the timer. */
        uint64_t now = sl_now_ns();
        if (inst->ctr.watched)
            uv_poll_stop(&inst->ctr.poll);
        sv_probes_stop(inst);
        if (!inst->reap_since_ns)
            inst->reap_since_ns = now;
        if (now - inst->reap_since_ns < REAP_WAIT_MAX_NS) {
            inst->reap_pending = true;
            uv_timer_start(&inst->reap_timer, on_reap_retry, REAP_RETRY_MS, 0);
            return;
        }
        rc = -ETIMEDOUT;
        proc_done(inst, &inst->ctr);
    }
    inst->reap_pending = false;
    uv_timer_stop(&inst->reap_timer);
    sl_autofree char *how = sv_exit_text(rc, &ex);
    /* the OOM killer's SIGKILL; the count covers the instance's life, so
     * an exit of another kind is not blamed on it */
    long ooms = ex.sig == SIGKILL ? sv_oom_kills(inst->id) : 0;
    if (ooms > 0 && inst->memory_limit > 0)
        /* as Cloud Run names it: the limit, and what to change */
        sv_set_reason(inst,
                      "%s: out of memory (the memory limit of %lld MiB was exceeded; raise "
                      "resources.limits.memory)",
                      how, (long long)(inst->memory_limit >> 20));
    else if (ooms > 0)
        sv_set_reason(inst, "%s: out of memory", how);
    else
        sv_set_reason(inst, "%s", how);
    begin_cleanup(inst);
}

static void on_reap_retry(uv_timer_t *t)
{
    reap(t->data);
}

static void on_pid_event(uv_poll_t *h, int status, int events)
{
    reap(h->data);
}

static double ms_since(uint64_t from_ns, uint64_t to_ns)
{
    return from_ns && to_ns > from_ns ? (double)(to_ns - from_ns) / 1e6 : 0.0;
}

void sv_became_ready(sl_instance_t *inst)
{
    inst->ready_ns = sl_now_ns();
    uv_timer_stop(&inst->deadline_timer);
    sl_debug(MOD, "instance %s: ready at %.2f ms", inst->id,
             (double)(inst->ready_ns - inst->started_ns) / 1e6);
    sl_info(MOD,
            "instance %s ready in %.1f ms (rootfs %.1f ms, bundle %.1f ms, runtime %.1f ms, "
            "app %.1f ms)",
            inst->id, ms_since(inst->started_ns, inst->ready_ns),
            ms_since(inst->started_ns, inst->rootfs_ns), ms_since(inst->rootfs_ns, inst->bundle_ns),
            ms_since(inst->bundle_ns, inst->runtime_ns),
            ms_since(inst->runtime_ns, inst->ready_ns));
    notify(inst, SL_INST_READY);
}

/* ---- stopping --------------------------------------------------------- */

static void on_grace_over(uv_timer_t *t)
{
    sl_instance_t *inst = t->data;
    if (inst->ctr.running) {
        sl_info(MOD, "instance %s: still running after the grace period; SIGKILL", inst->id);
        signal_pid(inst, SIGKILL);
    }
    proc_signal(&inst->run_proc, SIGKILL);
}

void sv_stop(sl_instance_t *inst, int grace_ms)
{
    inst->stop_requested = true;
    /* Still queued: drop it (prep_done then cleans up); running: prep_done
     * sees stop_requested and does not spawn the runtime. */
    if (inst->preparing)
        uv_cancel((uv_req_t *)&inst->prep_work);
    sv_probes_stop(inst);
    uv_timer_start(&inst->deadline_timer, on_grace_over, (uint64_t)grace_ms, 0);
    if (inst->state != SL_INST_STOPPING)
        notify(inst, SL_INST_STOPPING);
    if (inst->ctr.running && !inst->cleaning) {
        int rc = signal_pid(inst, SIGTERM);
        if (rc < 0)
            sl_warn(MOD, "instance %s: SIGTERM: %s", inst->id, strerror(-rc));
    }
}

void sl_instance_stop(sl_instance_t *inst)
{
    if (!inst || inst->cleaning || inst->stop_requested)
        return;
    sv_stop(inst, inst->grace_ms);
}

static void on_startup_timeout(uv_timer_t *t)
{
    sl_instance_t *inst = t->data;
    int ms = inst->startup_timeout_ms;
    char why[400];
    sv_probe_timeout_reason(inst, why, sizeof(why));
    if (ms % 1000 == 0)
        sv_set_reason(inst, "not ready within %ds: %s", ms / 1000, why);
    else
        sv_set_reason(inst, "not ready within %.1fs: %s", ms / 1000.0, why);
    /* It never served: nothing to drain, no grace to wait for. */
    sv_stop(inst, 0);
}

/* ---- running the runtime ---------------------------------------------- */

static int read_pid(sl_instance_t *inst)
{
    sl_autofree char *text = NULL;
    if (sl_read_file(inst->pid_path, 64, &text, NULL, NULL) < 0)
        return -1;
    text[strcspn(text, " \n")] = '\0';
    int64_t pid;
    if (sl_parse_int64(text, 2, INT32_MAX, &pid) < 0)
        return -1;
    inst->ctr.pid = (pid_t)pid;
    return 0;
}

static void watch_pid(sl_instance_t *inst)
{
    inst->ctr.running = true; /* if gone, its zombie (ours) is still waitable */
    int rc = proc_watch(inst, &inst->ctr, on_pid_event);
    if (rc < 0) {
        if (rc != -ESRCH) {
            sv_set_reason(inst, "cannot watch pid %d: %s", (int)inst->ctr.pid, strerror(-rc));
            kill(inst->ctr.pid, SIGKILL);
        }
        reap(inst);
        return;
    }
    if (inst->stop_requested) {
        signal_pid(inst, SIGTERM);
    } else {
        sv_probes_start(inst);
    }
}

static void on_run_exit(uv_poll_t *h, int status, int events)
{
    sl_instance_t *inst = h->data;
    sl_autofree char *why = NULL;
    int rc = runtime_exit(inst, &inst->run_proc, &why);
    if (rc == SV_EXIT_PENDING)
        return;
    if (rc < 0) {
        inst->runtime_failed = true;
        /* crun: "executable file `X` not found in $PATH"; runc: "exec: \"X\":
         * stat X: no such file or directory": the app's command, not the
         * runtime, is what is wrong */
        if (strstr(why, "not found in $PATH") ||
            (strstr(why, "exec: ") && strstr(why, "no such file or directory")))
            sv_set_reason(inst,
                          "the container's command is not in the image (check command and "
                          "args, or the image's ENTRYPOINT and CMD): %s",
                          why);
        else
            sv_set_reason(inst, "runtime failed: %s", why);
        begin_cleanup(inst);
        return;
    }
    inst->runtime_ns = sl_now_ns();
    sl_debug(MOD, "instance %s: %s run done at %.2f ms", inst->id, inst->runtime,
             (double)(inst->runtime_ns - inst->started_ns) / 1e6);
    if (read_pid(inst) < 0) {
        inst->runtime_failed = true;
        sv_set_reason(inst, "runtime failed: no pid in %s", inst->pid_path);
        begin_cleanup(inst);
        return;
    }
    watch_pid(inst);
}

/* `RT run -d`, its output appended to the instance log (log_fd, borrowed). */
static int spawn_run(sl_instance_t *inst, int log_fd, sl_error_t *err)
{
    const char *args[] = {"run",      "-d",      "--pid-file", inst->pid_path,
                          "--bundle", inst->dir, inst->id,     NULL};
    /* Detached: its own session, so a terminal's ^C reaches sluice alone. */
    int rc = spawn_runtime(inst, &inst->run_proc, args, log_fd, SPAWN_DETACH, on_run_exit);
    if (rc < 0)
        return sl_error_set(err, -rc, "spawning %s: %s", inst->runtime_bin, strerror(-rc));
    return 0;
}

/* ---- validating a spec ------------------------------------------------ */

static int validate_spec(const sl_instance_spec_t *s, sl_error_t *err)
{
    if (!s || !s->image)
        return sl_error_set(err, EINVAL, "instance spec: no image");
    if (!valid_name(s->namespace_))
        return sl_error_set(err, EINVAL, "instance spec: bad namespace '%s'",
                            s->namespace_ ? s->namespace_ : "");
    if (!valid_name(s->service))
        return sl_error_set(err, EINVAL, "instance spec: bad service name '%s'",
                            s->service ? s->service : "");
    if (!valid_name(s->revision))
        return sl_error_set(err, EINVAL, "instance spec: bad revision name '%s'",
                            s->revision ? s->revision : "");
    if (s->port < 1 || s->port > 65535)
        return sl_error_set(err, EINVAL, "instance spec: port must be 1..65535, got %d", s->port);
    if (s->image->n_layers == 0)
        return sl_error_set(err, EINVAL, "image %s has no layers",
                            s->image->ref ? s->image->ref : "(unnamed)");
    if (s->memory_limit < 0 || s->cpu_millis < 0 || s->pids_limit < 0 || s->grace_ms < 0 ||
        s->cpu_request_millis < 0 || s->scratch_bytes < 0 || s->startup_timeout_ms < 0)
        return sl_error_set(err, EINVAL, "instance spec: negative limit");
    if (s->profile && (s->profile->overhead_memory < 0 || s->profile->overhead_cpu_millis < 0 ||
                       s->profile->pids_limit < 0))
        return sl_error_set(err, EINVAL, "instance spec: negative runtime class overhead");
    if (sv_probe_validate(s->readiness, "readinessProbe", false, err) < 0 ||
        sv_probe_validate(s->liveness, "livenessProbe", true, err) < 0 ||
        sv_probe_validate(s->startup, "startupProbe", true, err) < 0)
        return -err->code;
    return 0;
}

/* ---- preparing an instance (thread pool) ------------------------------ */

/*
 * Everything that touches the filesystem or the kernel before `RT run`
 * (instance and log dirs, the image's USER from its passwd files, tmpfs +
 * overlay or idmapped mounts, the network namespace, config.json) runs on a
 * pool thread: it takes milliseconds, and on the loop it would stall the
 * router for every service. A prep holds owned copies of the spec's
 * borrowed parts and what the work made; the loop leaves it alone while the
 * work runs, and the instance fields the work reads (id, dir, paths, runtime
 * root, limits, userns) never change after sl_supervisor_start. unshare and
 * setns act on the calling thread only, so making the namespace there and
 * switching back is as safe as on the loop thread.
 */
/* The probes, by the name their exec process files and messages use. */
static const char *const PROBE_WHAT[] = {"readiness", "liveness", "startup"};

typedef struct prep {
    char **layers; /* NULL-terminated */
    size_t n_layers;
    char *user, *cwd, *log_dir;
    char **args, **env;
    char *namespace_, *service, *revision;
    bool has_profile, readonly_rootfs, no_capabilities, run_as_non_root;
    char **caps; /* NULL = the default set */
    sl_oci_volume_t *volumes;
    size_t n_volumes;
    sl_seccomp_profile_t seccomp;
    int64_t scratch, pids, cpu_shares;
    char **exec_args[3]; /* the exec probes' commands, as PROBE_WHAT */
    bool egress;
    /* made by the work */
    int rc;
    sl_error_t err;
    int netns_fd, log_fd;
    pid_t slirp_pid;   /* egress: the slirp4netns serving the namespace */
    int slirp_exit_fd; /* closing it ends that slirp4netns */
    uint64_t begin_ns, rootfs_ns, netns_ns, bundle_ns;
} prep_t;

static void prep_free(prep_t *p)
{
    if (!p)
        return;
    sl_strv_free(p->layers);
    sl_strv_free(p->args);
    sl_strv_free(p->env);
    for (size_t k = 0; k < SL_ARRAY_LEN(p->exec_args); k++)
        sl_strv_free(p->exec_args[k]);
    sl_strv_free(p->caps);
    sl_oci_volumes_free(p->volumes, p->n_volumes);
    free(p->user);
    free(p->cwd);
    free(p->log_dir);
    free(p->namespace_);
    free(p->service);
    free(p->revision);
    sl_closep(&p->netns_fd);
    sl_closep(&p->log_fd);
    sl_closep(&p->slirp_exit_fd); /* a slirp4netns not handed over ends (defensive: */
    if (p->slirp_pid > 0)         /* prep_done hands over every one that started) */
        while (waitpid(p->slirp_pid, NULL, 0) < 0 && errno == EINTR)
            ;
    free(p);
}

/* pids.max: the spec's (or the default), capped by the class. */
static int64_t pids_limit(const sl_instance_spec_t *s)
{
    int64_t pids = s->pids_limit > 0 ? s->pids_limit : DEFAULT_PIDS;
    if (s->profile && s->profile->pids_limit > 0 && s->profile->pids_limit < pids)
        pids = s->profile->pids_limit;
    return pids;
}

static char *image_cwd(const sl_image_t *img)
{
    if (img->workdir && img->workdir[0] == '/')
        return xstrdup(img->workdir);
    return img->workdir && img->workdir[0] ? xasprintf("/%s", img->workdir) : xstrdup("/");
}

/* On the loop: the pure parts (args, env) fail a bad spec at once; the
 * rest is copied for the pool thread. */
static prep_t *prep_new(sl_instance_t *inst, const sl_instance_spec_t *s, sl_error_t *err)
{
    const sl_image_t *img = s->image;
    sl_oci_contract_t c = {s->port, s->service, s->configuration ? s->configuration : s->service,
                           s->revision};
    prep_t *p = xcalloc(1, sizeof(*p));
    p->netns_fd = p->log_fd = p->slirp_exit_fd = -1;
    p->egress = s->egress;
    if (sl_oci_compose_args(img, s->command, s->n_command, s->args, s->n_args, &p->args, err) < 0 ||
        sl_oci_compose_env(img->env, img->n_env, s->env, s->n_env, &c, &p->env, err) < 0) {
        prep_free(p);
        return NULL;
    }
    p->layers = sl_strv_dup(img->layers, img->n_layers);
    p->n_layers = img->n_layers;
    p->user = xstrdup(s->user ? s->user : img->user ? img->user : "");
    p->cwd = s->working_dir ? xstrdup(s->working_dir) : image_cwd(img);
    p->run_as_non_root = s->run_as_non_root;
    p->readonly_rootfs = s->readonly_rootfs;
    if (s->caps)
        p->caps = sl_strv_dup((char *const *)s->caps, sl_strv_len((char *const *)s->caps));
    p->volumes = sl_oci_volumes_dup(s->volumes, s->n_volumes);
    p->n_volumes = s->n_volumes;
    p->log_dir = xasprintf("%s/%s/%s", inst->sup->logs_root, s->namespace_, s->service);
    p->namespace_ = xstrdup(s->namespace_);
    p->service = xstrdup(s->service);
    p->revision = xstrdup(s->revision);
    p->has_profile = s->profile != NULL;
    if (s->profile) {
        p->seccomp = s->profile->seccomp;
        p->readonly_rootfs |= s->profile->readonly_rootfs;
        p->no_capabilities = s->profile->no_capabilities;
    }
    p->scratch = s->scratch_bytes > 0  ? s->scratch_bytes
                 : s->memory_limit > 0 ? s->memory_limit
                                       : SCRATCH_DEFAULT;
    /* Kubernetes' MilliCPUToShares: 1024 a cpu, and no request weighs
     * least (2, the kernel's floor), below any instance that asked. */
    p->cpu_shares = s->cpu_request_millis * 1024 / 1000;
    if (p->cpu_shares < 2)
        p->cpu_shares = 2;
    p->pids = pids_limit(s);
    const sl_probe_t *probes[] = {s->readiness, s->liveness, s->startup}; /* as PROBE_WHAT */
    for (size_t k = 0; k < SL_ARRAY_LEN(probes); k++) {
        if (!probes[k] || probes[k]->kind != SL_PROBE_EXEC)
            continue;
        p->exec_args[k] = sl_strv_dup(probes[k]->exec_cmd, probes[k]->n_exec);
    }
    return p;
}

/* The instance dir, the runtime root, the log dir and the log file. */
static int prep_dirs(sl_instance_t *inst, prep_t *p, sl_error_t *err)
{
    if (mkdir(inst->dir, 0700) < 0)
        return sl_error_errno(err, errno, "mkdir %s", inst->dir);
    /* In a user namespace the runtime reaches rootfs/ as an unprivileged
     * uid: let it through, without listing. */
    if (inst->userns && chmod(inst->dir, 0711) < 0)
        return sl_error_errno(err, errno, "chmod %s", inst->dir);
    if (sl_mkdir_p(inst->rt_root, 0700, err) < 0)
        return -err->code;
    /* The log sweep (another pool thread) removes the service's and the
     * namespace's folders once empty, and may do so between these steps:
     * start over when one finds its parent gone. */
    for (int tries = 0; p->log_fd < 0 && tries < 5; tries++) {
        if (sl_mkdir_p(p->log_dir, 0700, err) < 0) {
            if (err->code == ENOENT)
                continue;
            return -err->code;
        }
        p->log_fd =
            open(inst->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
        if (p->log_fd < 0 && errno != ENOENT)
            break;
    }
    if (p->log_fd < 0)
        return sl_error_errno(err, errno, "open %s", inst->log_path);
    return 0;
}

/* The image's USER, within the sandbox's ids when it has a user namespace. */
static int prep_user(const sl_instance_t *inst, const prep_t *p, sl_oci_user_t *user,
                     sl_error_t *err)
{
    if (sl_rootfs_resolve_user(p->layers, p->n_layers, p->user, user, err) < 0)
        return -err->code;
    if (p->run_as_non_root && user->uid == 0)
        return sl_error_set(err, EPERM,
                            "runAsNonRoot: the container would run as root (user \"%s\" is "
                            "uid 0); set securityContext.runAsUser or use an image whose USER "
                            "is not root",
                            *p->user ? p->user : "(image default)");
    if (!inst->userns)
        return 0;
    if (user->uid >= SL_SANDBOX_ID_RANGE || user->gid >= SL_SANDBOX_ID_RANGE)
        return sl_error_set(err, EINVAL,
                            "image USER %u:%u is outside the sandbox's user namespace (ids "
                            "0..%u)",
                            user->uid, user->gid, SL_SANDBOX_ID_RANGE - 1);
    for (size_t i = 0; i < user->n_gids; i++)
        if (user->gids[i] >= SL_SANDBOX_ID_RANGE)
            return sl_error_set(err, EINVAL,
                                "image USER's group %u is outside the sandbox's user namespace",
                                user->gids[i]);
    return 0;
}

static int prep_rootfs(sl_instance_t *inst, prep_t *p, sl_error_t *err)
{
    if (!inst->userns)
        return sl_rootfs_mount(inst->dir, p->layers, p->n_layers, p->scratch, err);
    int userns_fd = id_range_userns(inst, err);
    if (userns_fd < 0)
        return sl_error_wrap(err, "user namespace");
    /* The root is read-only: the volumes' mount points are made in it. */
    char **mountpoints = xcalloc(p->n_volumes + 1, sizeof(char *));
    for (size_t i = 0; i < p->n_volumes; i++)
        mountpoints[i] = p->volumes[i].path;
    char *files[] = {p->egress ? (char *)"/etc/resolv.conf" : NULL, NULL};
    int rc = sl_rootfs_mount_idmapped(inst->dir, p->layers, p->n_layers, userns_fd, mountpoints,
                                      files, err);
    free(mountpoints);
    return rc;
}

/* One file of a secret or configMap volume under dir (a fresh tmpfs of
 * ours), its parents made as needed; owned by the container's root. */
static int write_volume_file(const char *dir, const sl_oci_file_t *f, uid_t owner, sl_error_t *err)
{
    sl_autofree char *path = xasprintf("%s/%s", dir, f->path);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    if (sl_mkdir_p(path, 0755, err) < 0)
        return -err->code;
    *slash = '/';
    sl_autoclose int fd =
        open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)f->mode);
    if (fd < 0)
        return sl_error_errno(err, errno, "create %s", path);
    for (size_t off = 0; off < f->len;) {
        ssize_t w = write(fd, f->data + off, f->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return sl_error_errno(err, errno, "write %s", path);
        off += (size_t)w;
    }
    if (fchmod(fd, (mode_t)f->mode) < 0 || (owner && fchown(fd, owner, owner) < 0))
        return sl_error_errno(err, errno, "set the mode of %s", path);
    return 0;
}

/* ---- egress: slirp4netns ------------------------------------------------ */

/* slirp4netns's network: the instance is 10.0.2.100, its gateway 10.0.2.2
 * and its DNS forwarder 10.0.2.3. */
#define SLIRP_DNS         "10.0.2.3"
#define SLIRP_READY_MS    5000
#define SLIRP_RESOLV_CONF "nameserver " SLIRP_DNS "\n"

/*
 * What the instance may reach through it, as nftables rules in its own
 * namespace (its container has no CAP_NET_ADMIN to change them): the DNS
 * forwarder on port 53 only (it forwards to the host's resolver, which may
 * be on the host's loopback), nothing else of slirp4netns's network (the
 * gateway is the host's loopback), and no link-local address (a cloud's
 * metadata endpoint would hand out the host's credentials); refused at
 * once rather than left to time out.
 */
static const char EGRESS_RULES[] = "table inet sluice {\n"
                                   "  chain egress {\n"
                                   "    type filter hook output priority 0; policy accept;\n"
                                   "    oifname \"lo\" accept\n"
                                   "    ip daddr " SLIRP_DNS " udp dport 53 accept\n"
                                   "    ip daddr " SLIRP_DNS " tcp dport 53 accept\n"
                                   "    ip daddr 10.0.2.0/24 reject\n"
                                   "    ip daddr 169.254.0.0/16 reject\n"
                                   "  }\n"
                                   "}\n";

/* Spawn argv (PATH searched) with stdin on /dev/null, stdout and stderr on
 * out_fd, `keep` (2 fds, -1 for none) as fds 3 and 4, signals unblocked and
 * at their defaults. Every source is moved above fd 4 before the dup2s, so
 * none is overwritten before it is used. -errno on failure. */
static int spawn_helper(const sl_instance_t *inst, const char *const *argv, int out_fd,
                        const int keep[2], pid_t *pid)
{
    int tmp[3] = {-1, -1, -1}; /* keep[0], keep[1] and out_fd, moved */
    int src[2] = {-1, -1}, rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++)
        if (keep[k] >= 0 && (src[k] = above_targets(keep[k], 4, &tmp[k])) < 0)
            rc = src[k];
    int out = rc < 0 ? -1 : above_targets(out_fd, 4, &tmp[2]);
    if (rc == 0 && out < 0)
        rc = out;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, inst->sup->devnull, 0);
    posix_spawn_file_actions_adddup2(&fa, out, 1);
    posix_spawn_file_actions_adddup2(&fa, out, 2);
    for (int k = 0; k < 2; k++)
        if (src[k] >= 0)
            posix_spawn_file_actions_adddup2(&fa, src[k], 3 + k);
    posix_spawnattr_t at;
    spawn_attr_init(&at, 0);
    if (rc == 0)
        rc = -posix_spawnp(pid, argv[0], &fa, &at, (char *const *)argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    for (int k = 0; k < 3; k++)
        sl_closep(&tmp[k]);
    return rc;
}

/* A helper's failure ("WHAT: last lines it wrote to log"). */
static int helper_failed(sl_error_t *err, const char *log, const char *what)
{
    sl_autofree char *tail = sv_log_tail(log, 3, NULL);
    return sl_error_set(err, EIO, "%s%s%s", what, tail ? ": " : "", tail ? tail : "");
}

/* Wait (pool thread) for slirp4netns's byte on its ready pipe, through
 * signals, until the deadline; false when it exited or did not answer. */
static bool slirp_ready(int fd)
{
    uint64_t deadline = sl_now_ms() + SLIRP_READY_MS;
    for (;;) {
        uint64_t now = sl_now_ms();
        if (now >= deadline)
            return false;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, (int)(deadline - now));
        if (n < 0 && errno == EINTR)
            continue;
        char c = 0;
        return n == 1 && read(fd, &c, 1) == 1 && c == '1';
    }
}

/* Pool thread: the egress rules, by `nft -f` run inside the instance's
 * namespace (the thread enters it to spawn, and comes back). */
static int egress_rules(sl_instance_t *inst, prep_t *p, const char *log, int log_fd,
                        sl_error_t *err)
{
    sl_autofree char *rules = xasprintf("%s/egress.nft", inst->dir);
    if (sl_write_file_atomic(rules, EGRESS_RULES, sizeof(EGRESS_RULES) - 1, 0600, err) < 0)
        return -err->code;
    const char *argv[] = {"nft", "-f", rules, NULL};
    const int keep[2] = {-1, -1};
    pid_t pid = 0;
    if (setns(p->netns_fd, CLONE_NEWNET) < 0)
        return sl_error_errno(err, errno, "enter the instance's network namespace");
    int rc = spawn_helper(inst, argv, log_fd, keep, &pid);
    if (setns(inst->sup->host_netns, CLONE_NEWNET) < 0)
        sl_err(MOD, "a pool thread could not return to the host's network namespace: %s",
               strerror(errno)); /* its next sockets would be made in the instance's */
    if (rc < 0)
        return sl_error_errno(err, -rc, "spawn nft");
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return helper_failed(err, log, "nft failed to set the egress rules");
    return 0;
}

/*
 * Pool thread: outbound networking for the instance's namespace, through a
 * slirp4netns of its own (user-mode NAT, the way rootless Podman and
 * Docker give one): a tap device with a default route, connections made
 * from the host as the daemon's, the host's loopback out of reach, and a
 * DNS forwarder the container's /etc/resolv.conf names; EGRESS_RULES
 * bound what the instance reaches through it. slirp4netns runs in a mount
 * namespace of its own made private first (its sandbox's unmounts must not
 * reach the host's shared mounts, such as /run/netns), sandboxed (a root of
 * /etc and /run only, no capability but CAP_NET_BIND_SERVICE) under its
 * seccomp filter, and exits when sluice closes its exit fd (or exits).
 * Waits for it to say the device is up. Its output goes to
 * INST_DIR/slirp4netns.log, quoted when it fails.
 */
static int prep_egress(sl_instance_t *inst, prep_t *p, sl_error_t *err)
{
    sl_autofree char *resolv = xasprintf("%s/resolv.conf", inst->dir);
    if (sl_write_file_atomic(resolv, SLIRP_RESOLV_CONF, strlen(SLIRP_RESOLV_CONF), 0644, err) < 0)
        return -err->code;
    sl_autofree char *log = xasprintf("%s/slirp4netns.log", inst->dir);
    sl_autoclose int log_fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log_fd < 0)
        return sl_error_errno(err, errno, "open %s", log);
    int ready[2] = {-1, -1}, ex[2] = {-1, -1};
    if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(ex, O_CLOEXEC) < 0) {
        int e = errno;
        sl_closep(&ready[0]);
        sl_closep(&ready[1]);
        return sl_error_errno(err, e, "pipe");
    }
    sl_autofree char *netns = xasprintf("/proc/%d/fd/%d", (int)getpid(), p->netns_fd);
    const char *argv[] = {"unshare",
                          "--mount",
                          "--propagation",
                          "private",
                          "--",
                          "slirp4netns",
                          "--configure",
                          "--mtu=65520",
                          "--disable-host-loopback",
                          "--enable-sandbox",
                          "--enable-seccomp",
                          "--ready-fd=3",
                          "--exit-fd=4",
                          "--netns-type=path",
                          netns,
                          "tap0",
                          NULL};
    const int keep[2] = {ready[1], ex[0]};
    pid_t pid = 0;
    int rc = spawn_helper(inst, argv, log_fd, keep, &pid);
    sl_closep(&ready[1]);
    sl_closep(&ex[0]);
    if (rc < 0) {
        sl_closep(&ready[0]);
        sl_closep(&ex[1]);
        return sl_error_errno(err, -rc, "spawn unshare (util-linux) for slirp4netns");
    }
    p->slirp_pid = pid; /* handed to the instance, which reaps it */
    p->slirp_exit_fd = ex[1];
    /* the rules meanwhile: they need the namespace only */
    rc = egress_rules(inst, p, log, log_fd, err);
    bool ok = rc == 0 && slirp_ready(ready[0]);
    sl_closep(&ready[0]);
    if (rc < 0) {
        kill(pid, SIGKILL);
        return rc;
    }
    if (!ok) {
        kill(pid, SIGKILL);
        struct stat st;
        if (stat("/usr/bin/slirp4netns", &st) < 0 && stat("/bin/slirp4netns", &st) < 0 &&
            stat("/usr/local/bin/slirp4netns", &st) < 0)
            return sl_error_set(err, ENOENT,
                                "outbound networking needs slirp4netns, which is not installed "
                                "(apt-get install slirp4netns)");
        return helper_failed(err, log, "slirp4netns did not set up the network");
    }
    return 0;
}

/* Loop: the instance's slirp4netns exited (it is reaped here). Before the
 * instance's end that is the loss of its outbound network. */
static void on_slirp_exit(uv_poll_t *h, int status, int events)
{
    sl_instance_t *inst = h->data;
    sv_exit_t ex;
    if (proc_collect(inst, &inst->slirp, &ex) == SV_EXIT_PENDING)
        return;
    if (inst->cleaning || inst->cleanup_queued || inst->state >= SL_INST_STOPPING ||
        inst->stop_requested)
        return;
    /* An instance without the network its revision asked for is broken:
     * it stops, and its revision replaces it. */
    sl_warn(MOD, "instance %s lost its outbound network: slirp4netns exited; stopping it",
            inst->id);
    sv_set_reason(inst, "its outbound network ended (slirp4netns exited)");
    sv_stop(inst, inst->grace_ms);
}

/* Pages of tmpfs a volume's files take, with their directories. */
static uint64_t volume_pages(const sl_oci_volume_t *v)
{
    long ps = sysconf(_SC_PAGESIZE);
    uint64_t page = ps > 0 ? (uint64_t)ps : 4096, pages = 4;
    for (size_t k = 0; k < v->n_files; k++)
        pages += 2 + (v->files[k].len + page - 1) / page;
    return pages;
}

/* The name a path's first component has in the volume's top level. */
static size_t first_component(const char *path)
{
    return strcspn(path, "/");
}

/*
 * A secret or configMap volume's files under dir, laid out as the
 * kubelet's atomic writer does: the files in a new "..TIMESTAMP"
 * directory, "..data" a symlink to it, and each top-level name a symlink
 * through "..data". A refresh writes a new directory and swaps "..data" in
 * one rename, so a reader sees all the old files or all the new ones; then
 * the top-level links follow and the old directory goes.
 */
static void remove_payload(const char *dir, const char *name)
{
    sl_autofree char *path = xasprintf("%s/%s", dir, name);
    sl_error_t err = {0};
    if (sl_rm_rf(path, &err) < 0)
        sl_warn(MOD, "volume: %s", err.msg);
}

/* The top-level links: one for each first component of a path, none for
 * what is gone. Best effort once ..data points at the new files. */
static void link_top_level(int dfd, const char *dir, const sl_oci_volume_t *v)
{
    for (size_t k = 0; k < v->n_files; k++) {
        size_t n = first_component(v->files[k].path);
        sl_autofree char *top = xstrndup(v->files[k].path, n);
        sl_autofree char *target = xasprintf("..data/%s", top);
        char cur[PATH_MAX];
        ssize_t cl = readlinkat(dfd, top, cur, sizeof(cur) - 1);
        if (cl > 0 && (size_t)cl == strlen(target) && !memcmp(cur, target, (size_t)cl))
            continue;
        unlinkat(dfd, top, 0);
        if (symlinkat(target, dfd, top) < 0)
            sl_warn(MOD, "volume: link %s/%s: %s", dir, top, strerror(errno));
    }
    int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        sl_closep(&fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_type != DT_LNK || !strncmp(de->d_name, "..", 2))
            continue;
        bool kept = false;
        for (size_t k = 0; k < v->n_files && !kept; k++) {
            size_t n = first_component(v->files[k].path);
            kept = strlen(de->d_name) == n && !strncmp(de->d_name, v->files[k].path, n);
        }
        if (!kept)
            unlinkat(dfd, de->d_name, 0);
    }
    closedir(d);
}

/*
 * A secret or configMap volume's files under dir, laid out as the
 * kubelet's atomic writer does: the files in a new "..TIMESTAMP"
 * directory, "..data" a symlink to it, and each top-level name a symlink
 * through "..data". A refresh writes a new directory and swaps "..data" in
 * one rename, so a reader sees all the old files or all the new ones; then
 * the top-level links follow and the old directory goes. A failure before
 * the swap leaves the old files as they were.
 */
static int write_volume(const char *dir, const sl_oci_volume_t *v, uid_t owner, sl_error_t *err)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char name[64];
    snprintf(name, sizeof(name), "..%04d_%02d_%02d_%02d_%02d_%02d.%09ld", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec);
    sl_autofree char *payload = xasprintf("%s/%s", dir, name);
    if (mkdir(payload, 0755) < 0)
        return sl_error_errno(err, errno, "mkdir %s", payload);
    int rc = owner && chown(payload, owner, owner) < 0
                 ? sl_error_errno(err, errno, "chown %s", payload)
                 : 0;
    for (size_t k = 0; rc == 0 && k < v->n_files; k++)
        rc = write_volume_file(payload, &v->files[k], owner, err);
    sl_autoclose int dfd = rc < 0 ? -1 : open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rc == 0 && dfd < 0)
        rc = sl_error_errno(err, errno, "open %s", dir);
    char old[64] = "";
    if (rc == 0) {
        ssize_t ol = readlinkat(dfd, "..data", old, sizeof(old) - 1);
        old[ol > 0 ? ol : 0] = '\0';
        unlinkat(dfd, "..data_tmp", 0);
        if (symlinkat(name, dfd, "..data_tmp") < 0 ||
            renameat(dfd, "..data_tmp", dfd, "..data") < 0)
            rc = sl_error_errno(err, errno, "swap %s/..data", dir);
    }
    if (rc < 0) {
        remove_payload(dir, name);
        return rc;
    }
    link_top_level(dfd, dir, v);
    if (*old && strcmp(old, name))
        remove_payload(dir, old);
    return 0;
}

/*
 * Secret and configMap volumes: their files go to a tmpfs of the
 * instance's own (volumes/, never on disk, sized to what they hold), one
 * directory a volume, which the bundle binds read-only. In a user
 * namespace they belong to the container's root.
 */
static int prep_volumes(sl_instance_t *inst, prep_t *p, sl_error_t *err)
{
    uint64_t pages = 16;
    size_t n = 0;
    for (size_t i = 0; i < p->n_volumes; i++) {
        n += p->volumes[i].has_files;
        pages += p->volumes[i].has_files ? volume_pages(&p->volumes[i]) : 0;
    }
    if (n == 0)
        return 0;
    sl_autofree char *root = xasprintf("%s/volumes", inst->dir);
    if (mkdir(root, 0755) < 0)
        return sl_error_errno(err, errno, "mkdir %s", root);
    sl_autofree char *opts = xasprintf("size=%llu,mode=0755", (unsigned long long)pages * 4096);
    if (mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
        return sl_error_errno(err, errno, "mount tmpfs on %s", root);
    uid_t owner = inst->userns ? id_range_host(inst->id_range) : 0;
    for (size_t i = 0; i < p->n_volumes; i++) {
        sl_oci_volume_t *v = &p->volumes[i];
        if (!v->has_files)
            continue;
        v->source = xasprintf("%s/%zu", root, i);
        if (mkdir(v->source, 0755) < 0 || (owner && chown(v->source, owner, owner) < 0))
            return sl_error_errno(err, errno, "mkdir %s", v->source);
        if (write_volume(v->source, v, owner, err) < 0)
            return sl_error_wrap(err, "volume at %s", v->path);
    }
    return 0;
}

/* ---- refreshing secret and configMap volumes (thread pool) ------------ */

typedef struct vol_refresh {
    uv_work_t work;
    sl_instance_t *inst;
    sl_oci_volume_t *vols;
    size_t n;
    sl_error_t err;
    int rc;
} vol_refresh_t;

/* Pool thread: rewrite each volume with files; grow the tmpfs first when
 * the new files and the old ones would not both fit. */
static void refresh_work(uv_work_t *w)
{
    vol_refresh_t *r = w->data;
    sl_instance_t *inst = r->inst;
    sl_autofree char *root = xasprintf("%s/volumes", inst->dir);
    uid_t owner = inst->userns ? id_range_host(inst->id_range) : 0;
    for (size_t i = 0; i < r->n && r->rc == 0; i++) {
        const sl_oci_volume_t *v = &r->vols[i];
        if (!v->has_files)
            continue;
        struct statvfs sv;
        uint64_t want = volume_pages(v);
        if (statvfs(root, &sv) == 0 && sv.f_bfree < want + 4) {
            sl_autofree char *opts =
                xasprintf("size=%llu", (unsigned long long)(sv.f_blocks + want + 16) * sv.f_frsize);
            if (mount(NULL, root, NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, opts) < 0) {
                r->rc = sl_error_errno(&r->err, errno, "grow the tmpfs on %s", root);
                break;
            }
        }
        sl_autofree char *dir = xasprintf("%s/%zu", root, i);
        if ((r->rc = write_volume(dir, v, owner, &r->err)) < 0)
            sl_error_wrap(&r->err, "volume at %s", v->path);
    }
}

static void finish_cleanup(sl_instance_t *inst);
static void start_refresh(sl_instance_t *inst, sl_oci_volume_t *vols, size_t n);

static void refresh_done(uv_work_t *w, int status)
{
    vol_refresh_t *r = w->data;
    sl_instance_t *inst = r->inst;
    inst->refreshing = false;
    inst->handles--;
    if (status == 0 && r->rc < 0)
        sl_warn(MOD, "instance %s keeps its volumes as they were: %s", inst->id, r->err.msg);
    else if (status == 0)
        sl_info(MOD, "instance %s: volumes refreshed", inst->id);
    sl_oci_volumes_free(r->vols, r->n);
    free(r);
    if (inst->cleanup_deferred) {
        finish_cleanup(inst);
    } else if (inst->refresh_next) {
        sl_oci_volume_t *v = sl_steal_ptr(&inst->refresh_next);
        start_refresh(inst, v, inst->n_refresh_next);
    }
}

static void start_refresh(sl_instance_t *inst, sl_oci_volume_t *vols, size_t n)
{
    vol_refresh_t *r = xcalloc(1, sizeof(*r));
    *r = (vol_refresh_t){.inst = inst, .vols = vols, .n = n};
    r->work.data = r;
    inst->refreshing = true;
    inst->handles++; /* the work request counts as one until it is done */
    if (uv_queue_work(inst->sup->loop, &r->work, refresh_work, refresh_done) < 0) {
        refresh_work(&r->work);
        refresh_done(&r->work, 0);
    }
}

void sl_instance_refresh_volumes(sl_instance_t *inst, const sl_oci_volume_t *vols, size_t n)
{
    if (inst->cleaning || inst->cleanup_queued || inst->cleanup_deferred ||
        inst->state >= SL_INST_STOPPING)
        return;
    sl_oci_volume_t *copy = sl_oci_volumes_dup(vols, n);
    if (inst->preparing || inst->refreshing) {
        /* after what runs now; only the latest counts */
        sl_oci_volumes_free(inst->refresh_next, inst->n_refresh_next);
        inst->refresh_next = copy;
        inst->n_refresh_next = n;
        return;
    }
    start_refresh(inst, copy, n);
}

/* /sys is the host's, bound read-only (oci_spec.c): the host's network
 * devices are not the instance's business. */
static const char *const SANDBOX_MASKED[] = {
    "/proc/kallsyms", "/proc/modules",  "/proc/interrupts",         "/proc/vmallocinfo",
    "/sys/kernel",    "/sys/class/net", "/sys/devices/virtual/net", NULL};

/* crun takes the profile precompiled (run.oci.seccomp_bpf_data) and then
 * ignores linux.seccomp, so the JSON is left out; runc, or a profile that
 * failed to compile, gets the JSON. */
static const char *seccomp_bpf_for(const sl_instance_t *inst, const prep_t *p)
{
    if (!p->has_profile || strcmp(inst->runtime, "crun") != 0)
        return NULL;
    return sl_seccomp_bpf_base64(p->seccomp);
}

static int write_bundle(sl_instance_t *inst, prep_t *p, const sl_oci_user_t *user, sl_error_t *err)
{
    uint32_t host = inst->userns ? id_range_host(inst->id_range) : 0;
    sl_oci_idmap_t idmap = {host, host, SL_SANDBOX_ID_RANGE};
    const char *bpf = seccomp_bpf_for(inst, p);
    json_t *seccomp = p->has_profile && !bpf ? sl_seccomp_profile_json(p->seccomp) : NULL;
    /* Our fd's magic link: works with crun and runc, and nothing to clean. */
    sl_autofree char *netns = xasprintf("/proc/%d/fd/%d", (int)getpid(), p->netns_fd);
    sl_autofree char *cgroup = xasprintf("/sluice/%s", inst->id);
    sl_autofree char *hostname = xstrndup(inst->id, strnlen(inst->id, 63)); /* HOST_NAME_MAX */
    sl_oci_params_t o = {
        .args = p->args,
        .env = p->env,
        .cwd = p->cwd,
        .user = user,
        .hostname = hostname,
        .rootfs = "rootfs",
        .netns_path = netns,
        .cgroups_path = cgroup,
        .memory_limit = inst->memory_limit,
        .cpu_millis = inst->cpu_millis,
        .cpu_shares = p->cpu_shares,
        .pids_limit = p->pids,
        .tmp_size = p->scratch,
        .volumes = p->volumes,
        .n_volumes = p->n_volumes,
        .nofile = inst->sup->nofile,
        .annotations = {{"dev.sluice.namespace", p->namespace_},
                        {"dev.sluice.service", p->service},
                        {"dev.sluice.revision", p->revision},
                        {bpf ? SL_SECCOMP_BPF_ANNOTATION : NULL, bpf}},
        .seccomp = seccomp,
        .readonly_rootfs = p->readonly_rootfs,
        .no_capabilities = p->no_capabilities,
        .caps = (const char *const *)p->caps,
        .idmap = inst->userns ? &idmap : NULL,
        .extra_masked = inst->userns ? SANDBOX_MASKED : NULL,
    };
    sl_autofree char *resolv = p->egress ? xasprintf("%s/resolv.conf", inst->dir) : NULL;
    o.resolv_conf = resolv;
    int rc = sl_oci_spec_write(inst->dir, &o, err);
    /* The exec probes' processes: the container's, with their commands. */
    for (size_t k = 0; rc == 0 && k < SL_ARRAY_LEN(p->exec_args); k++) {
        if (!p->exec_args[k])
            continue;
        sl_autofree char *path = sv_exec_process_path(inst, PROBE_WHAT[k]);
        rc = sl_oci_process_write(path, &o, p->exec_args[k], err);
    }
    json_decref(seccomp);
    return rc;
}

/* Pool thread. Whatever it made before failing stays for the cleanup. */
static int prep_run(sl_instance_t *inst, prep_t *p, sl_error_t *err)
{
    sl_oci_user_t user = {0};
    int rc = prep_dirs(inst, p, err);
    if (rc == 0)
        rc = prep_user(inst, p, &user, err);
    if (rc == 0 && (rc = prep_rootfs(inst, p, err)) < 0)
        sl_error_wrap(err, "instance %s rootfs", inst->id);
    p->rootfs_ns = sl_now_ns();
    if (rc == 0 && (rc = p->netns_fd = sl_netns_create(err)) < 0)
        sl_error_wrap(err, "instance %s network namespace", inst->id);
    if (rc >= 0 && p->egress && (rc = prep_egress(inst, p, err)) < 0)
        sl_error_wrap(err, "instance %s egress", inst->id);
    p->netns_ns = sl_now_ns();
    if (rc >= 0 && (rc = prep_volumes(inst, p, err)) < 0)
        sl_error_wrap(err, "instance %s", inst->id);
    if (rc >= 0 && (rc = write_bundle(inst, p, &user, err)) < 0)
        sl_error_wrap(err, "instance %s", inst->id);
    p->bundle_ns = sl_now_ns();
    sl_oci_user_clear(&user);
    return rc < 0 ? rc : 0;
}

static void prep_work(uv_work_t *w)
{
    sl_instance_t *inst = w->data;
    prep_t *p = inst->prep;
    p->begin_ns = sl_now_ns();
    p->rc = prep_run(inst, p, &p->err);
}

/* Preparation failed or was stopped: no container was created, so no
 * `RT delete`; unmount and remove what was made, then EXITED. */
static void abort_start(sl_instance_t *inst)
{
    inst->cleaning = true;
    sv_probes_stop(inst);
    uv_timer_stop(&inst->deadline_timer);
    if (inst->state == SL_INST_STARTING)
        notify(inst, SL_INST_STOPPING);
    finish_cleanup(inst);
}

/* Loop: the bundle is ready (or not); spawn `RT run -d` unless a stop or
 * shutdown came meanwhile. */
static void prep_done(uv_work_t *w, int status)
{
    sl_instance_t *inst = w->data;
    prep_t *p = inst->prep;
    inst->prep = NULL;
    inst->preparing = false;
    inst->handles--;
    if (status != UV_ECANCELED) {
        inst->netns_fd = p->netns_fd;
        p->netns_fd = -1;
        if (p->slirp_pid > 0) {
            inst->slirp.pid = p->slirp_pid;
            inst->slirp.running = true;
            inst->slirp_exit_fd = sl_steal_fd(&p->slirp_exit_fd);
            p->slirp_pid = 0;
            if (proc_watch(inst, &inst->slirp, on_slirp_exit) < 0) {
                /* unwatched it could not be reaped: end it now, and the start */
                sl_closep(&inst->slirp_exit_fd);
                kill(inst->slirp.pid, SIGKILL);
                while (waitpid(inst->slirp.pid, NULL, 0) < 0 && errno == EINTR)
                    ;
                inst->slirp.running = false;
                if (p->rc == 0) {
                    p->rc = -EIO;
                    sl_error_set(&p->err, EIO, "instance %s egress: cannot watch slirp4netns",
                                 inst->id);
                }
            }
        }
        inst->prep_begin_ns = p->begin_ns;
        inst->rootfs_ns = p->rootfs_ns;
        inst->netns_ns = p->netns_ns;
        inst->bundle_ns = p->bundle_ns;
    }
    sl_error_t err = {0};
    if (status == UV_ECANCELED || (p->rc == 0 && inst->stop_requested))
        sv_set_reason(inst, "stopped before it started");
    else if (p->rc < 0)
        sv_set_reason(inst, "%s", p->err.msg);
    else if (spawn_run(inst, p->log_fd, &err) < 0)
        sv_set_reason(inst, "runtime failed: %s", err.msg);
    prep_free(p);
    if (!inst->run_proc.running) {
        abort_start(inst);
        return;
    }
    inst->spawned_ns = sl_now_ns();
    sl_debug(MOD, "instance %s: prepared and %s spawned in %.2f ms", inst->id, inst->runtime,
             (double)(inst->spawned_ns - inst->started_ns) / 1e6);
    if (inst->refresh_next) { /* values changed while it was prepared */
        sl_oci_volume_t *v = sl_steal_ptr(&inst->refresh_next);
        start_refresh(inst, v, inst->n_refresh_next);
    }
}

static bool id_in_use(const sl_supervisor_t *sup, const char *id)
{
    for (const sl_instance_t *i = sup->instances; i; i = i->next)
        if (strcmp(i->id, id) == 0)
            return true;
    return false;
}

/* <revision>-<5 random>, unique among this supervisor's instances: each
 * one's dir lives until it is finalized, and leftovers of an earlier run
 * went at startup, so the pool thread's mkdir will not collide. */
static void assign_id(sl_instance_t *inst, const char *revision)
{
    char sfx[6];
    do {
        free(inst->id);
        sl_random_alnum(sfx, 5);
        inst->id = xasprintf("%s-%s", revision, sfx);
    } while (id_in_use(inst->sup, inst->id));
}

static sl_instance_t *instance_alloc(sl_supervisor_t *sup, const sl_instance_spec_t *s,
                                     sl_instance_cb cb, void *data)
{
    sl_instance_t *inst = xcalloc(1, sizeof(*inst));
    inst->sup = sup;
    inst->cb = cb;
    inst->data = data;
    inst->netns_fd = inst->ctr.pidfd = inst->run_proc.pidfd = inst->del_proc.pidfd = -1;
    inst->slirp.pidfd = inst->slirp_exit_fd = inst->cpu_fd = -1;
    inst->state = SL_INST_STARTING;
    inst->started_ns = sl_now_ns();
    inst->port = s->port;
    inst->grace_ms = s->grace_ms > 0 ? s->grace_ms : DEFAULT_GRACE_MS;
    inst->startup_timeout_ms =
        s->startup_timeout_ms > 0 ? s->startup_timeout_ms : DEFAULT_STARTUP_MS;
    if (s->startup && s->startup->kind != SL_PROBE_NONE) {
        uint64_t need = sv_startup_budget_ms(s->startup) + STARTUP_AFTER_PROBE_MS;
        if (need > (uint64_t)inst->startup_timeout_ms)
            inst->startup_timeout_ms = need > INT32_MAX ? INT32_MAX : (int)need;
    }
    /* The overhead rides on top of a limit; an unlimited instance stays so. */
    const sl_runtime_profile_t *prof = s->profile;
    inst->memory_limit = s->memory_limit;
    inst->cpu_millis = s->cpu_millis;
    if (prof && inst->memory_limit > 0)
        inst->memory_limit += prof->overhead_memory;
    if (prof && inst->cpu_millis > 0)
        inst->cpu_millis += prof->overhead_cpu_millis;
    inst->userns = prof && prof->userns;
    inst->id_range = -1;
    return inst;
}

/* The runtime's binary (PATH lookups only; its root dir is made by the
 * preparation). */
static int pick_runtime(sl_instance_t *inst, const char *runtime, sl_error_t *err)
{
    if (!sv_valid_runtime_name(runtime))
        return sl_error_set(err, EINVAL, "bad runtime name '%s'", runtime ? runtime : "");
    inst->runtime_bin = sv_find_in_path(runtime);
    if (!inst->runtime_bin)
        return sl_error_set(err, ENOENT, "runtime '%s' not found on PATH", runtime);
    inst->runtime = xstrdup(runtime);
    inst->rt_root = xasprintf("%s/%s", inst->sup->rt_root, runtime);
    return 0;
}

/* Id and paths; nothing on disk yet. */
static void name_instance(sl_instance_t *inst, const sl_instance_spec_t *s)
{
    sl_supervisor_t *sup = inst->sup;
    assign_id(inst, s->revision);
    inst->dir = xasprintf("%s/%s", sup->inst_root, inst->id);
    inst->pid_path = xasprintf("%s/pid", inst->dir);
    inst->rtlog_path = xasprintf("%s/runtime.log", inst->dir);
    inst->log_path =
        xasprintf("%s/%s/%s/%s.log", sup->logs_root, s->namespace_, s->service, inst->id);
}

sl_instance_t *sl_supervisor_start(sl_supervisor_t *sup, const sl_instance_spec_t *spec,
                                   sl_instance_cb cb, void *data, sl_error_t *err)
{
    if (sup->shutting_down) {
        sl_error_set(err, ESHUTDOWN, "supervisor is shutting down");
        return NULL;
    }
    if (validate_spec(spec, err) < 0)
        return NULL;
    sl_instance_t *inst = instance_alloc(sup, spec, cb, data);
    const char *rt = spec->runtime                             ? spec->runtime
                     : spec->profile && spec->profile->runtime ? spec->profile->runtime
                                                               : sup->default_runtime;
    if (pick_runtime(inst, rt, err) < 0 || id_range_take(inst, err) < 0 ||
        !(inst->prep = prep_new(inst, spec, err))) {
        instance_free(inst);
        return NULL;
    }
    name_instance(inst, spec);
    inst->prep_work.data = inst;
    if (uv_queue_work(sup->loop, &inst->prep_work, prep_work, prep_done) < 0) {
        sl_error_set(err, EAGAIN, "instance %s: cannot queue its preparation", inst->id);
        prep_free(inst->prep);
        instance_free(inst);
        return NULL;
    }
    inst->preparing = true;
    inst->handles++; /* the work request counts as one until it is done */
    inst->next = sup->instances;
    if (sup->instances)
        sup->instances->prev = inst;
    sup->instances = inst;
    sup->n_instances++;
    uv_timer_init(sup->loop, &inst->deadline_timer);
    uv_timer_init(sup->loop, &inst->reap_timer);
    inst->deadline_timer.data = inst->reap_timer.data = inst;
    inst->handles += 2;
    inst->readiness = sv_probe_new(inst, spec->readiness, PROBE_WHAT[0]);
    if (spec->liveness && spec->liveness->kind != SL_PROBE_NONE)
        inst->liveness = sv_probe_new(inst, spec->liveness, PROBE_WHAT[1]);
    if (spec->startup && spec->startup->kind != SL_PROBE_NONE)
        inst->startup = sv_probe_new(inst, spec->startup, PROBE_WHAT[2]);
    inst->readiness_cb = spec->readiness_cb;
    /* The start-up timeout covers the preparation too. */
    uv_timer_start(&inst->deadline_timer, on_startup_timeout, (uint64_t)inst->startup_timeout_ms,
                   0);
    return inst;
}

/* ---- the supervisor --------------------------------------------------- */

static void on_sigchld(uv_signal_t *h, int signum)
{
    sl_supervisor_t *sup = h->data;
    const char *names[16];
    size_t n = 0;
    size_t max_keep = 1;
    for (sl_instance_t *i = sup->instances; i; i = i->next) {
        max_keep += 4;
        for (const sv_exec_t *x = i->execs; x; x = x->next)
            max_keep++;
    }
    sl_autofree pid_t *keep = xcalloc(max_keep, sizeof(pid_t));
    size_t nk = 0;
    names[n++] = sup->default_runtime;
    /* A zombie the runtime's helper left us may be an instance's: collect. */
    for (sl_instance_t *i = sup->instances, *next; i; i = next) {
        next = i->next;
        if (i->reap_pending)
            reap(i);
    }
    /* What we wait for ourselves is never the orphan reaper's: runtime
     * invocations (runtime-named, so it would take them, exec probes' too)
     * and containers. */
    for (sl_instance_t *i = sup->instances; i; i = i->next) {
        const sv_proc_t *mine[] = {&i->ctr, &i->run_proc, &i->del_proc, &i->slirp};
        for (size_t k = 0; k < SL_ARRAY_LEN(mine); k++)
            if (mine[k]->running)
                keep[nk++] = mine[k]->pid;
        for (const sv_exec_t *x = i->execs; x; x = x->next)
            if (x->proc.running)
                keep[nk++] = x->proc.pid;
        bool seen = false;
        for (size_t k = 0; k < n; k++)
            seen = seen || strcmp(names[k], i->runtime) == 0;
        if (!seen && n < SL_ARRAY_LEN(names))
            names[n++] = i->runtime;
    }
    sv_reap_orphans(names, n, keep, nk);
}

static void supervisor_free_fields(sl_supervisor_t *sup)
{
    sl_closep(&sup->host_netns);
    sl_closep(&sup->devnull);
    id_ranges_free(sup);
    free(sup->state_dir);
    free(sup->inst_root);
    free(sup->logs_root);
    free(sup->rt_root);
    free(sup->default_runtime);
    free(sup);
}

static int make_dirs(sl_supervisor_t *sup, const char *state_dir, sl_error_t *err)
{
    if (sl_mkdir_p(state_dir, 0700, err) < 0)
        return -err->code;
    char real[PATH_MAX];
    if (!realpath(state_dir, real))
        return sl_error_errno(err, errno, "realpath %s", state_dir);
    sup->state_dir = xstrdup(real);
    sup->inst_root = xasprintf("%s/instances", real);
    sup->logs_root = xasprintf("%s/logs", real);
    sup->rt_root = xasprintf("%s/runtime", real);
    if (sl_mkdir_p(sup->inst_root, 0700, err) < 0 || sl_mkdir_p(sup->logs_root, 0700, err) < 0 ||
        sl_mkdir_p(sup->rt_root, 0700, err) < 0)
        return -err->code;
    return 0;
}

/* The seccomp programs are compiled once per process (a cache); doing it
 * on the thread pool at start-up keeps that ~8 ms off the first instances.
 * A shutdown waits for it like any other work of the supervisor's. */
static void seccomp_warm_work(uv_work_t *w)
{
    SL_UNUSED(w);
    sl_seccomp_bpf_base64(SL_SECCOMP_DEFAULT);
    sl_seccomp_bpf_base64(SL_SECCOMP_SANDBOXED);
}

static void seccomp_warm_done(uv_work_t *w, int status)
{
    SL_UNUSED(status);
    sl_supervisor_t *sup = w->data;
    sup->warming = false;
    if (sup->closing)
        sv_close_done(sup);
}

static void seccomp_warm(sl_supervisor_t *sup)
{
    sup->warm_work.data = sup;
    sup->warming =
        uv_queue_work(sup->loop, &sup->warm_work, seccomp_warm_work, seccomp_warm_done) == 0;
}

int sl_supervisor_new(uv_loop_t *loop, const char *state_dir, const char *default_runtime,
                      sl_supervisor_t **out, sl_error_t *err)
{
    *out = NULL;
    if (!loop || !state_dir || !*state_dir)
        return sl_error_set(err, EINVAL, "supervisor: no loop or state dir");
    if (!sv_valid_runtime_name(default_runtime))
        return sl_error_set(err, EINVAL, "bad runtime name '%s'",
                            default_runtime ? default_runtime : "");
    sl_autofree char *bin = sv_find_in_path(default_runtime);
    if (!bin)
        return sl_error_set(err, ENOENT, "runtime '%s' not found on PATH", default_runtime);
    sl_supervisor_t *sup = xcalloc(1, sizeof(*sup));
    sup->loop = loop;
    sup->host_netns = sup->devnull = -1;
    if (uv_mutex_init(&sup->id_lock) < 0)
        abort();
    sup->default_runtime = xstrdup(default_runtime);
    sup->nofile = (int64_t)sv_nofile_limit();
    int rc = make_dirs(sup, state_dir, err);
    if (rc == 0 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        rc = sl_error_errno(err, errno, "prctl(PR_SET_CHILD_SUBREAPER)");
    if (rc == 0)
        rc = sv_cleanup_leftovers(sup->state_dir, err);
    if (rc == 0 && (sup->host_netns = sl_netns_open_current(err)) < 0)
        rc = sup->host_netns;
    if (rc == 0 && (sup->devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
        rc = sl_error_errno(err, errno, "open /dev/null");
    if (rc < 0) {
        supervisor_free_fields(sup);
        return rc;
    }
    uv_signal_init(loop, &sup->sigchld);
    sup->sigchld.data = sup;
    uv_signal_start(&sup->sigchld, on_sigchld, SIGCHLD);
    sv_logs_init(sup);
    sv_id_ranges_avoid(sup, "/etc/subuid");
    sv_id_ranges_avoid(sup, "/etc/subgid");
    sl_autofree char *crun = sv_find_in_path("crun");
    if (crun)
        seccomp_warm(sup);
    *out = sup;
    return 0;
}

void sv_close_done(sl_supervisor_t *sup)
{
    if (--sup->closes_pending == 0 && sup->done)
        sup->done(sup->done_data);
}

static void on_sigchld_closed(uv_handle_t *h)
{
    sv_close_done(h->data);
}

static void check_shutdown(sl_supervisor_t *sup)
{
    if (!sup->shutting_down || sup->closing || sup->n_instances > 0)
        return;
    sup->closing = true;
    /* What exited since the last SIGCHLD was handled is taken now: the
     * handle is closed, and a later signal may never be read. */
    on_sigchld(&sup->sigchld, SIGCHLD);
    sup->closes_pending = 1 + sv_logs_close(sup) + (sup->warming ? 1 : 0);
    uv_close((uv_handle_t *)&sup->sigchld, on_sigchld_closed);
}

void sl_supervisor_shutdown(sl_supervisor_t *sup, bool fast, void (*done)(void *), void *data)
{
    if (sup->shutting_down)
        return;
    sup->shutting_down = true;
    sup->done = done;
    sup->done_data = data;
    for (sl_instance_t *i = sup->instances; i; i = i->next) {
        if (i->cleaning)
            continue;
        int grace = fast && i->grace_ms > FAST_GRACE_MS ? FAST_GRACE_MS : i->grace_ms;
        if (!i->stop_requested)
            sv_stop(i, grace);
        else if (fast) /* already stopping: shorten its grace */
            uv_timer_start(&i->deadline_timer, on_grace_over, (uint64_t)grace, 0);
    }
    check_shutdown(sup);
}

void sl_supervisor_free(sl_supervisor_t *sup)
{
    if (!sup)
        return;
    if (!sup->closing || sup->n_instances > 0) {
        sl_err(MOD, "sl_supervisor_free before shutdown finished; leaking it");
        return;
    }
    supervisor_free_fields(sup);
}
