/*
 * supervisor_int.h — internal to supervisor*.c. Two parts: the pieces of
 * the supervisor that do not need its state (host housekeeping at startup,
 * reaping orphaned runtime processes, finding binaries, reading the tail of
 * logs: supervisor_host.c), and the supervisor's and its instances' state,
 * shared by supervisor.c (the lifecycle) and supervisor_probe.c (readiness
 * and liveness probes).
 */
#ifndef SL_SUPERVISOR_INT_H
#define SL_SUPERVISOR_INT_H

#include "common.h"
#include "supervisor.h"
#include <sys/types.h>
#include <uv.h>

/* Absolute path of an executable `name` on PATH (or name itself when it
 * contains a '/' and is executable); NULL when not found. Caller frees. */
char *sv_find_in_path(const char *name);

/* RLIMIT_NOFILE for containers: 1048576 when sluice may raise hard limits
 * (CAP_SYS_RESOURCE, capped by fs.nr_open), else its own hard limit. */
uint64_t sv_nofile_limit(void);

/* Runtime names are path components and argv[0]s: [a-z0-9_.-]{1,32}. */
bool sv_valid_runtime_name(const char *s);

/*
 * Remove what an earlier run under state_dir left behind: containers in
 * every runtime root (`RT --root R delete -f ID`), mounts below instances/,
 * instance dirs, and the cgroups of those instances. Blocking.
 */
int sv_cleanup_leftovers(const char *state_dir, sl_error_t *err);

/* The file setting cgroup /sluice/<id>'s CPU bandwidth, open for writing:
 * cgroup v1's cpu.cfs_quota_us, else v2's cpu.max (*v2 set); -errno when
 * neither opens. */
int sv_cpu_quota_open(const char *id, bool *v2);
/* Write a quota (µs per SL_CPU_PERIOD_US; -1 none) to it: one small write. */
int sv_cpu_quota_write(int fd, bool v2, int64_t quota_us);
/* Remove the cgroup /sluice/<id> from every mounted hierarchy. Best effort;
 * kills what still runs inside first. Blocking (short). */
void sv_remove_cgroups(const char *id);
/* How many processes the kernel's OOM killer killed in instance id's
 * memory cgroup; -1 when it cannot be read. */
long sv_oom_kills(const char *id);

/*
 * Reap zombie children nobody waits for: orphaned runtime helpers (comm
 * starting with one of `runtimes`; crun's detaching helper exits after its
 * parent, so as child subreaper sluice inherits it) and container processes
 * other than a container's init reparented to sluice (see maybe_reap);
 * never one of `keep`, the runtime invocations and containers sluice waits
 * for itself. A child the loop spawns must be in `keep`; pool threads'
 * short-lived helpers (the user namespace holder of sl_rootfs_userns_open)
 * are neither runtime-named nor in a container, so they are left alone.
 */
void sv_reap_orphans(const char *const *runtimes, size_t n_runtimes, const pid_t *keep,
                     size_t n_keep);

/* How a watched process ended, from sv_wait_exit. */
typedef struct sv_exit {
    int code; /* exit status when sig == 0 */
    int sig;  /* killing signal, 0 when it exited */
} sv_exit_t;

enum { SV_EXIT_DONE = 1, SV_EXIT_PENDING = 0 };

/*
 * Collect the exit of a process that sluice watches through pidfd (or, when
 * pidfd < 0, by pid), without blocking. SV_EXIT_DONE: reaped, *out filled.
 * SV_EXIT_PENDING: not reapable yet: still running, or exited while still
 * the child of the runtime's helper, which has not exited yet (sluice, the
 * subreaper, inherits the zombie when it does). < 0 (-ECHILD): gone, reaped
 * by someone else. Never waits on any other pid, so it cannot steal an exit
 * status from libuv or a runtime helper.
 */
int sv_wait_exit(int pidfd, pid_t pid, sv_exit_t *out);

/* "exited with status 1", "killed by signal 9", or, for an sv_wait_exit
 * error rc, why the status is not known. Caller frees. */
char *sv_exit_text(int rc, const sv_exit_t *ex);

/* The last `max_lines` non-empty lines of a file, joined by " | ", each cut
 * to 240 bytes; lines that occur inside `skip_in` (say, the runtime's
 * error already quoted) are left out. NULL when there are none. Caller
 * frees. */
char *sv_log_tail(const char *path, int max_lines, const char *skip_in);

/* The error messages an OCI runtime wrote to its --log-format=json file,
 * joined by "; "; NULL when there are none. Caller frees. */
char *sv_runtime_errors(const char *path);

/* ---- the supervisor's state (supervisor.c, supervisor_probe.c) ------- */

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

/*
 * A process the supervisor waits for itself, through a pidfd polled on the
 * loop: a runtime invocation it spawned (`RT run -d`, `RT delete -f`) or a
 * container's init, which it inherits as the child subreaper. The poll
 * handle's data is the instance, and it counts in inst->handles while open;
 * the pidfd is closed when the handle has closed.
 */
typedef struct sv_proc {
    uv_poll_t poll;
    int pidfd;    /* -1 until watched */
    pid_t pid;    /* 0 until known; kept after the exit */
    bool running; /* known and not yet reaped */
    bool watched; /* poll initialised (and counted in inst->handles) */
} sv_proc_t;

struct sl_supervisor {
    uv_loop_t *loop;
    char *state_dir, *inst_root, *logs_root, *rt_root;
    char *default_runtime;
    int host_netns; /* the loop thread's own network namespace */
    /* Sandboxed instances' host id ranges (SL_SANDBOX_ID_RANGES): a range
     * is held from an instance's start to its end (loop thread); its user
     * namespace, for idmapped roots, is made by the first pool thread that
     * needs it and kept for the range's next holders. The lock covers the
     * array, which grows. */
    struct sv_id_range *id_ranges;
    size_t n_id_ranges;
    uv_mutex_t id_lock;
    struct sv_id_span *foreign; /* host ids given to users (subuid, subgid) */
    size_t n_foreign;
    int devnull;
    int64_t nofile; /* containers' RLIMIT_NOFILE */
    uv_signal_t sigchld;
    sl_instance_t *instances;
    size_t n_instances;
    bool shutting_down, closing;
    void (*done)(void *);
    void *done_data;
    int closes_pending;  /* shutting down: handles and work still to finish */
    uv_work_t warm_work; /* compiling the seccomp programs */
    bool warming;
    /* instance logs (supervisor_logs.c) */
    sl_log_limits_t log_limits;
    uv_timer_t log_timer;
    uv_work_t log_work;
    struct sv_log_job *log_job; /* the pass in flight, or NULL */
};

typedef struct sv_probe sv_probe_t;
typedef struct sv_exec sv_exec_t;

struct sl_instance {
    sl_supervisor_t *sup;
    sl_instance_t *prev, *next;
    sl_instance_cb cb;
    void *data;
    char *id, *runtime, *runtime_bin, *rt_root;
    char *dir, *log_path, *pid_path, *rtlog_path;
    int port, grace_ms, startup_timeout_ms;
    int64_t memory_limit, cpu_millis; /* applied: requests + class overhead */
    bool userns;
    int id_range; /* sandboxed: index of its host id range; else -1 */
    sl_inst_state_t state;
    int netns_fd;
    uint64_t started_ns, ready_ns;
    /* start-up milestones (sl_instance_startup); the pool thread's are
     * copied in when its work is done */
    uint64_t prep_begin_ns, rootfs_ns, netns_ns, bundle_ns, spawned_ns, runtime_ns;
    uint64_t reap_since_ns; /* first saw it exited but not reapable yet */
    char *reason;           /* the first cause of the exit */
    char *exit_reason;      /* reason + log tail, set when cleaned */
    bool runtime_failed;
    sv_proc_t ctr;                /* the container's init */
    sv_proc_t run_proc, del_proc; /* `RT run -d`, `RT delete -f` */
    sv_proc_t slirp;              /* egress: its slirp4netns */
    int slirp_exit_fd;            /* closing it ends that slirp4netns; -1 none */
    uv_timer_t deadline_timer, reap_timer;
    sv_probe_t *readiness, *liveness, *startup; /* readiness always set; the others optional */
    sv_exec_t *execs; /* exec probes' runtime invocations not yet closed */
    sl_instance_readiness_cb readiness_cb;
    bool unready;                       /* READY, but its readiness probe fails */
    uv_work_t fs_work;                  /* unmount + remove the bundle */
    uv_work_t prep_work;                /* build the bundle */
    struct prep *prep;                  /* owned by prep_work while it runs */
    bool preparing;                     /* prep_work queued or running */
    bool refreshing;                    /* a refresh of its volumes is queued or running */
    char *log_end;                      /* its last log line, written by the cleanup */
    bool cleanup_deferred;              /* the cleanup waits for that refresh */
    struct sl_oci_volume *refresh_next; /* the refresh to run after it (or after prep) */
    size_t n_refresh_next;
    int handles; /* initialised handles (and queued work) not yet closed */
    bool stop_requested, cleaning, cleanup_queued, cleaned, silent;
    bool delete_failed;
    bool reap_pending; /* exited, waiting to inherit the zombie */
    /* Request-based CPU (sl_instance_set_cpu_idle): held to SL_CPU_IDLE_QUOTA_US
     * while idle, READY and no probe runs. */
    bool cpu_idle, cpu_throttled, cpu_v2;
    int cpu_holds; /* probe attempts in flight */
    int cpu_fd;    /* its quota file once opened; -1 not yet, -2 unavailable */
};

/* Re-apply the instance's CPU bandwidth after its state, idleness or holds
 * changed (supervisor.c). */
void sv_cpu_apply(sl_instance_t *inst);
/* A probe attempt begins (+1) or ends (-1): the app answers it at full CPU. */
void sv_cpu_hold(sl_instance_t *inst, int delta);

/* ---- the lifecycle, for the probes (supervisor.c) --------------------- */

/* The first cause of the exit wins; later calls are ignored. */
void sv_set_reason(sl_instance_t *inst, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Close one of the instance's handles (counted in inst->handles); the
 * instance is finalized once the last one has closed. */
void sv_close_handle(sl_instance_t *inst, void *handle);

/* A handle of the instance closed (inst->handles already decremented):
 * finalize it when it was the last and the cleanup is done. */
void sv_maybe_finalize(sl_instance_t *inst);

/* The readiness probe passed during start-up: stop the start-up deadline,
 * log the cold start's phases, report READY. */
void sv_became_ready(sl_instance_t *inst);

/* Graceful stop: SIGTERM, then SIGKILL after grace_ms. */
void sv_stop(sl_instance_t *inst, int grace_ms);

/* ---- probes (supervisor_probe.c) -------------------------------------- */

/* Kubernetes' rules for a probe's fields; `field` names it for the user
 * ("readinessProbe"); `once` for liveness and startup probes (their
 * successThreshold is 1). NULL or kind NONE is valid. */
int sv_probe_validate(const sl_probe_t *p, const char *field, bool once, sl_error_t *err);

/* How long a startup probe may go without passing before the instance
 * fails: initial delay + failure threshold x period, with the defaults. */
uint64_t sv_startup_budget_ms(const sl_probe_t *p);

/* A probe of inst from cfg (copied; NULL or NONE = the built-in TCP
 * readiness, start-up only); `what` is a static "readiness"|"liveness".
 * Its timer is initialised and counted in inst->handles; it is closed by
 * sv_probes_close and freed by sv_probe_free once the instance goes. */
sv_probe_t *sv_probe_new(sl_instance_t *inst, const sl_probe_t *cfg, const char *what);
void sv_probe_free(sv_probe_t *p);

/* The container runs: begin start-up polling of the startup probe if there
 * is one, else of the readiness probe (after its initial delay). Liveness
 * begins once READY. */
void sv_probes_start(sl_instance_t *inst);

/* Abandon the attempts in flight (a running exec is killed); no more are
 * scheduled while the instance is stopping. */
void sv_probes_stop(sl_instance_t *inst);

/* sv_probes_stop, and close the probes' timers (the instance's cleanup). */
void sv_probes_close(sl_instance_t *inst);
/* Why the probes had not passed when the start-up timeout came. */
void sv_probe_timeout_reason(const sl_instance_t *inst, char *buf, size_t len);

/* ---- exec probes' runtime invocations (supervisor.c) ------------------ */

/* rc: SV_EXIT_DONE with *ex, or -errno when its exit status was lost. */
typedef void (*sv_exec_cb)(void *data, int rc, const sv_exit_t *ex);

/* Host ids the sandboxed instances' ranges keep clear of: those listed in
 * a subordinate id file (/etc/subuid format, "name:start:count" lines),
 * given to users for their own containers. A missing file lists none.
 * Loop thread, before any sandboxed instance starts. */
void sv_id_ranges_avoid(sl_supervisor_t *sup, const char *path);

/* Where the bundle keeps the process of an exec probe ("readiness",
 * "liveness"): the container's own process with the probe's command,
 * written with config.json. Caller frees. */
char *sv_exec_process_path(const sl_instance_t *inst, const char *what);

/*
 * `RT --root R exec --process FILE <id>` with stdio on /dev/null: the
 * command runs as the container's process does (user, capabilities,
 * noNewPrivileges), never as the runtime's default root. Spawned like the
 * runtime's other invocations (posix_spawn, not a fork of the loop) and
 * watched through a pidfd; it counts in inst->handles until closed. cb runs
 * once it has exited, unless it was abandoned. Returns -errno.
 */
int sv_exec_start(sl_instance_t *inst, const char *process, sv_exec_cb cb, void *data,
                  sv_exec_t **out);

/* Kill it; cb will not run. It is reaped and freed when it exits. */
void sv_exec_abandon(sv_exec_t *x);

/* ---- instance logs (supervisor_logs.c) -------------------------------- */

/* What sv_log_trim did. */
typedef enum { SV_TRIM_NONE, SV_TRIM_COLLAPSE, SV_TRIM_PUNCH, SV_TRIM_COPY } sv_trim_how_t;
typedef struct sv_log_trim {
    int64_t dropped; /* bytes of the log dropped from the front */
    sv_trim_how_t how;
} sv_log_trim_t;

/*
 * When the log at path holds more than `max` bytes, drop its oldest so
 * that about `keep` remain. The container writes with O_APPEND while this
 * runs; no byte it writes may be lost, and none is where the filesystem
 * can do one of:
 *  - FALLOC_FL_COLLAPSE_RANGE of a block-aligned prefix (ext4, xfs): the
 *    file gets shorter, atomically for the writer; nothing is copied.
 *  - FALLOC_FL_PUNCH_HOLE of it (tmpfs, btrfs, ...): the blocks are freed
 *    and the size stays, so the file starts with a hole that readers skip
 *    (sl_data_from) and that later trims count as gone.
 * Otherwise sv_log_trim_copy. Blocking: thread pool only.
 */
int sv_log_trim(const char *path, int64_t max, int64_t keep, sv_log_trim_t *out, sl_error_t *err);

/*
 * The last resort of sv_log_trim, for filesystems that can do neither:
 * copy the newest lines (from the first line start in the last `keep`
 * bytes) to an unnamed temp file, truncate the log, append them back a
 * line at a time, so the writer never splits a line (its lines may land
 * among the copied ones). What it writes between the copy's end and the
 * truncation is lost. fd is the log, open O_RDWR | O_APPEND.
 */
int sv_log_trim_copy(int fd, const char *path, int64_t keep, sv_log_trim_t *out, sl_error_t *err);

/*
 * Delete exited instances' logs under logs_root/<ns>/<service>/: those
 * last modified more than limits->retention_ns before now_ns (CLOCK_REALTIME)
 * and, per revision, all but the newest limits->per_revision. Never touches
 * the logs of `live` ids (sorted with strcmp) nor any log modified at or
 * after since_ns (an instance started after `live` was taken). Returns the
 * number deleted. Blocking: thread pool only.
 */
size_t sv_log_sweep(const char *logs_root, char *const *live, size_t n_live,
                    const sl_log_limits_t *limits, int64_t now_ns, int64_t since_ns);

/* Defaults and the periodic check (an unreferenced timer). */
void sv_logs_init(sl_supervisor_t *sup);

/* Shutting down: stop the checks. Returns how many completions (each
 * calling sv_close_done) to wait for. */
int sv_logs_close(sl_supervisor_t *sup);

/* One of the supervisor's last handles or work requests finished. */
void sv_close_done(sl_supervisor_t *sup);

/* The instance exited: its log's retention starts now (mtime). */
/* The line an instance's log ends with, "[sluice] instance ID failed|stopped:
 * WHY" (sv_log_tail leaves such lines out). */
#define SV_LOG_END_PREFIX "[sluice] instance "
char *sv_logs_end_line(const sl_instance_t *inst);
void sv_logs_write_end(const sl_instance_t *inst, const char *line);

#endif
