/*
 * supervisor.h — runs revisions as instances through an OCI runtime.
 *
 * For each instance the supervisor: creates a network namespace with only
 * `lo` (up), mounts the rootfs as overlayfs (image layers lower, a
 * per-instance upper+work on tmpfs), writes the OCI bundle (config.json with
 * pid/mount/ipc/uts namespaces, the pre-made network namespace by path,
 * cgroup limits, the image's USER, the Knative container contract env), runs
 * `crun|runc --root STATE/runtime/<rt> run -d` via posix_spawn with stdin
 * /dev/null and stdout/stderr appended to the instance log, watches the
 * container's pid with a pidfd (sluice is the child subreaper, so it also
 * reaps it), and probes readiness by connecting to 127.0.0.1:PORT inside the
 * namespace every few milliseconds (or with the spec's readiness probe:
 * tcpSocket, httpGet, exec), and, once ready, keeps running the readiness
 * and liveness probes every period. Stop = SIGTERM, grace, SIGKILL, then
 * `runtime delete -f`, unmount, remove the bundle and the netns.
 *
 * The preparation (dirs, the image's USER, mounts, the network namespace,
 * config.json) runs on libuv's thread pool; the loop only spawns the runtime
 * and watches. Each cold start is logged at INFO with its phases.
 *
 * State dir layout: instances/<id>/{config.json,rootfs,upper(tmpfs)},
 * logs/<namespace>/<service>/<id>.log (bounded: sl_log_limits_t),
 * runtime/<crun|runc>/ (runtime root).
 * All callbacks run on the loop thread.
 */
#ifndef SL_SUPERVISOR_H
#define SL_SUPERVISOR_H

#include "common.h"
#include "image.h"
#include "oci_spec.h"
#include "runtimeclass.h"
#include <uv.h>

typedef struct sl_supervisor sl_supervisor_t;
typedef struct sl_instance sl_instance_t;

typedef enum {
    SL_INST_STARTING = 0, /* runtime spawned, port not yet accepting */
    SL_INST_READY,        /* port accepts connections */
    SL_INST_STOPPING,     /* SIGTERM sent, waiting for exit */
    SL_INST_EXITED        /* gone: last callback; inst freed after it returns */
} sl_inst_state_t;

/*
 * A Kubernetes/Knative probe (readinessProbe, livenessProbe). Times are in
 * milliseconds; 0 = Kubernetes' default: initial delay 0, period 10000,
 * timeout 1000, success threshold 1, failure threshold 3.
 *   TCP:  connect to 127.0.0.1:port inside the instance's network namespace.
 *   HTTP: `GET path HTTP/1.1` with Host and `User-Agent: sluice-probe`;
 *         passes on a 2xx or 3xx status.
 *   EXEC: `RT exec <id> exec_cmd...` inside the container; passes on exit 0.
 *   GRPC: the gRPC Health Checking Protocol over HTTP/2 without TLS:
 *         grpc.health.v1.Health/Check for the service in `path` ("" = the
 *         server as a whole); passes on grpc-status 0 and SERVING.
 * Every attempt is abandoned (and fails) after timeout_ms.
 */
typedef enum {
    SL_PROBE_NONE = 0,
    SL_PROBE_TCP,
    SL_PROBE_HTTP,
    SL_PROBE_EXEC,
    SL_PROBE_GRPC
} sl_probe_kind_t;

typedef struct sl_probe {
    sl_probe_kind_t kind;  /* NONE = no probe (liveness) / the default (readiness) */
    int port;              /* TCP/HTTP; 0 = the instance's PORT */
    const char *path;      /* HTTP: absolute path, "/" when NULL; GRPC: the service */
    const char *headers;   /* HTTP: more "Name: value\r\n" lines (checked by the caller); a
                            * Host or User-Agent among them replaces the probe's own */
    char *const *exec_cmd; /* EXEC: argv, exec_cmd[0] an absolute path in the image */
    size_t n_exec;
    int initial_delay_ms;  /* before the first attempt (liveness: from start) */
    int period_ms;         /* between attempts once READY */
    int timeout_ms;        /* per attempt */
    int success_threshold; /* consecutive passes to be ready again (liveness: 1) */
    int failure_threshold; /* consecutive failures to be unready / to restart */
} sl_probe_t;

/* Readiness after the first READY (explicit readiness probes only): false
 * once failure_threshold consecutive attempts failed — send it no new
 * requests; the instance keeps running and keeps the SL_INST_READY state —
 * and true once success_threshold consecutive attempts passed again. */
typedef void (*sl_instance_readiness_cb)(sl_instance_t *inst, bool ready, void *data);

typedef struct sl_instance_spec {
    const char *namespace_;    /* Knative namespace, e.g. "default" */
    const char *service;       /* K_SERVICE */
    const char *configuration; /* K_CONFIGURATION (== service) */
    const char *revision;      /* K_REVISION, e.g. "hello-00001" */
    const sl_image_t *image;   /* borrowed for the call; copied as needed */
    int port;                  /* PORT the app listens on (1..65535) */
    char *const *env;          /* user env "K=V", applied over the image's */
    size_t n_env;
    char *const *command; /* overrides image Entrypoint when n_command > 0 */
    size_t n_command;
    char *const *args; /* overrides image Cmd when n_args > 0 */
    size_t n_args;
    int64_t memory_limit;       /* bytes; 0 = unlimited */
    int64_t cpu_millis;         /* 1000 = one cpu; 0 = unlimited */
    int64_t cpu_request_millis; /* CPU weight: cpu.shares 1024 a cpu; 0 = the least (2) */
    int64_t scratch_bytes;      /* writable layer and /tmp (tmpfs); 0 = memory_limit or 512Mi */
    int64_t pids_limit;         /* 0 = default (1024) */
    int grace_ms;               /* SIGTERM→SIGKILL; 0 = default 10000 */
    int startup_timeout_ms;     /* not ready by then → stop, EXITED; 0 = 120000 */
    const char *runtime;        /* "crun" | "runc"; NULL = the profile's, else supervisor default */
    /* The runtime class's profile (borrowed for the call). NULL = the
     * classic settings: Docker's capabilities, no seccomp filter, writable
     * root, no user namespace. Its overhead is added to memory_limit and
     * cpu_millis when those are set (as Kubernetes sizes the pod cgroup);
     * its pids_limit caps pids_limit. */
    const sl_runtime_profile_t *profile;
    /* Probes, borrowed for the call (copied). readiness NULL or kind NONE:
     * TCP connect to PORT, every few ms during start-up only. Whatever the
     * kind, start-up polls every few ms (backing off), not every period;
     * an explicit readiness probe then runs every period_ms while READY and
     * reports through readiness_cb. liveness NULL or NONE: none; otherwise
     * it runs every period_ms once READY, and failure_threshold consecutive
     * failures stop the instance (SIGTERM, grace, SIGKILL) with the exit
     * reason "liveness probe failed: <why>". */
    const sl_probe_t *readiness;
    const sl_probe_t *liveness;
    /* startup NULL or NONE: none. Otherwise it runs first, polled like the
     * readiness probe at start-up, and only once it passes does the
     * readiness probe begin; the instance fails ("startup probe failed:
     * <why>") when initial_delay + failure_threshold x period pass without a
     * pass (Kubernetes' budget), and its start-up timeout is at least that
     * plus 10 s for the readiness probe. */
    const sl_probe_t *startup;
    sl_instance_readiness_cb readiness_cb; /* NULL: readiness changes only logged */
    /* The container's securityContext (all zero: the image's and the class's). */
    const char *user;               /* "UID[:GID]" or "NAME[:GID]" instead of the image's USER */
    const char *working_dir;        /* absolute, instead of the image's WorkingDir */
    bool run_as_non_root;           /* refuse to run as uid 0 (the instance fails to start) */
    bool readonly_rootfs;           /* besides the class's read-only root */
    const char *const *caps;        /* instead of the default set (a class with none keeps none) */
    const sl_oci_volume_t *volumes; /* emptyDir volumes (copied) */
    /* Outbound networking through a slirp4netns of its own (user-mode NAT:
     * the host's loopback out of reach) and /etc/resolv.conf naming its DNS
     * forwarder; without it the namespace has loopback only. */
    bool egress;
    size_t n_volumes;
} sl_instance_spec_t;

/* Called on every state change. On SL_INST_EXITED this is the last call;
 * the instance is freed right after the callback returns. */
typedef void (*sl_instance_cb)(sl_instance_t *inst, sl_inst_state_t state, void *data);

/*
 * Create the supervisor. Makes the state dirs, becomes child subreaper, and
 * cleans up whatever an earlier run left behind (runtime containers under
 * its root, overlay mounts, network namespaces, bundle dirs).
 * default_runtime: "crun" or "runc" (must be on PATH; checked).
 * Blocking (startup only). Call it on the loop's thread: that thread's
 * network namespace is where probes return to after entering an instance's.
 */
int sl_supervisor_new(uv_loop_t *loop, const char *state_dir, const char *default_runtime,
                      sl_supervisor_t **out, sl_error_t *err);

/*
 * Start an instance asynchronously; returns at once. Returns NULL with err
 * set when it cannot even begin (bad spec: names, port, no command, bad
 * env, unknown runtime); otherwise the instance in SL_INST_STARTING, and cb
 * is called with READY or STOPPING + EXITED later. What fails while the
 * instance is prepared off the loop (unknown USER, mount, namespace,
 * config.json) or run arrives as EXITED with the reason, as does a stop
 * before the runtime ran ("stopped before it started").
 */
sl_instance_t *sl_supervisor_start(sl_supervisor_t *sup, const sl_instance_spec_t *spec,
                                   sl_instance_cb cb, void *data, sl_error_t *err);

/* Begin a graceful stop (idempotent). cb(STOPPING) is called before this
 * returns; EXITED follows later. An instance whose container exits on its
 * own also reports STOPPING (no longer serving) before EXITED. */
void sl_instance_stop(sl_instance_t *inst);

const char *sl_instance_id(const sl_instance_t *inst); /* "<revision>-<5 chars>" */
/* Rewrite a running instance's secret and configMap volumes with these
 * files (vols as its spec's, copied), off the loop: each volume switches
 * from the old files to the new in one rename, as the kubelet's atomic
 * writer does. A refresh asked for while one runs, or while the instance
 * is prepared, follows it; a stopping instance is left alone. */
void sl_instance_refresh_volumes(sl_instance_t *inst, const sl_oci_volume_t *vols, size_t n);
/* Request-based CPU, as Cloud Run allocates it by default: an idle
 * instance (set by its owner when no request has been in flight for a
 * while) is held to SL_CPU_IDLE_QUOTA_US of CPU per period, 1 % of a core,
 * until it is set busy again. Only a READY instance is held, and never
 * while one of its probes runs (the app answers those at full speed) or
 * once it is stopping (it gets its grace period whole). One write to its
 * cgroup per change; where the cgroup cannot be written, a warning and the
 * instance runs unheld. */
#define SL_CPU_IDLE_QUOTA_US SL_CPU_QUOTA_MIN_US
void sl_instance_set_cpu_idle(sl_instance_t *inst, bool idle);
/* Whether it is held now. */
bool sl_instance_cpu_held(const sl_instance_t *inst);
sl_inst_state_t sl_instance_state(const sl_instance_t *inst);
/* The instance's network namespace: -1 until its preparation is done (always
 * set by READY), then valid until EXITED. */
int sl_instance_netns_fd(const sl_instance_t *inst);
int sl_instance_port(const sl_instance_t *inst);
int sl_instance_pid(const sl_instance_t *inst); /* 0 until known */
const char *sl_instance_log_path(const sl_instance_t *inst);
uint64_t sl_instance_started_ns(const sl_instance_t *inst); /* sl_now_ns() at start */
uint64_t sl_instance_ready_ns(const sl_instance_t *inst);   /* 0 until READY */
/* READY and its readiness probe not failing: may get new requests. */
bool sl_instance_serving(const sl_instance_t *inst);
/* Why it exited: "exited with status 1", "killed by signal 9", "not ready
 * within 120s", "liveness probe failed: <why>", "runtime failed: <crun
 * stderr>", followed by
 * "; last log lines: ..." when the log has any. NULL while running. */
const char *sl_instance_exit_reason(const sl_instance_t *inst);
void *sl_instance_data(const sl_instance_t *inst);
/* The OCI runtime running the instance ("crun", "runc") and its --root
 * (STATE/runtime/<rt>), for `RT --root R exec|ps|state <id>`. */
const char *sl_instance_runtime(const sl_instance_t *inst);
const char *sl_instance_runtime_root(const sl_instance_t *inst);
/* The cgroup limits applied (requests + class overhead); 0 = unlimited. */
int64_t sl_instance_memory_limit(const sl_instance_t *inst);
int64_t sl_instance_cpu_millis(const sl_instance_t *inst);
/* True when the instance runs in a user namespace (sandboxed profile). */
bool sl_instance_userns(const sl_instance_t *inst);

/* Where a cold start's time went: sl_now_ns() timestamps, 0 until reached
 * (pool-thread milestones appear once the preparation is done). Placement
 * happens before sl_supervisor_start, so it ends at started_ns. Phases as
 * logged: rootfs = rootfs - started (pool queue, dirs, USER, mounts),
 * bundle = bundle - rootfs (namespace, config.json), runtime = runtime -
 * bundle (`RT run -d`), app = ready - runtime (until the readiness probe
 * passes). */
typedef struct sl_instance_startup {
    uint64_t started_ns;    /* sl_supervisor_start called */
    uint64_t prep_begin_ns; /* a pool thread began preparing */
    uint64_t rootfs_ns;     /* rootfs mounted */
    uint64_t netns_ns;      /* network namespace made */
    uint64_t bundle_ns;     /* config.json written */
    uint64_t spawned_ns;    /* `RT run -d` spawned (loop) */
    uint64_t runtime_ns;    /* it returned: container started, pid known */
    uint64_t ready_ns;      /* READY */
} sl_instance_startup_t;
void sl_instance_startup(const sl_instance_t *inst, sl_instance_startup_t *out);

/* An ephemeral debug container (kubectl debug --target): joins the pid,
 * network, ipc and uts namespaces of a running instance's process. */
typedef struct sl_debug_spec {
    const char *state_dir; /* bundle under STATE/debug/<id>/, removed after */
    int target_pid;        /* the instance's pid (sl_instance_pid) */
    const char *runtime;   /* NULL = "crun" */
    char *const *layers;   /* toolbox image layers, bottom first; none = busybox-static */
    size_t n_layers;
    char *const *argv; /* NULL-terminated; NULL or empty = {"sh"} */
    bool terminal;     /* the runtime's own pty (stdin is a terminal) */
    bool privileged;   /* allow a target in its own user namespace (sandboxed) */
    /* The target's cgroup limits (sl_instance_memory_limit/_cpu_millis), which
     * the debug container gets too, in a cgroup of its own: it may use as much
     * as its instance may, and never the instance's share. 0 = unlimited. */
    int64_t memory_limit;
    int64_t cpu_millis;
} sl_debug_spec_t;

/*
 * Build the bundle, run the container in the foreground on this process's
 * stdio (blocking; SIGINT/SIGQUIT ignored here meanwhile), then delete the
 * container, its cgroup and the bundle. *exit_code is the command's exit
 * status. Fails before running (err set) when the target is gone, the
 * runtime is missing, or the target is sandboxed and privileged is unset.
 */
int sl_debug_run(const sl_debug_spec_t *spec, int *exit_code, sl_error_t *err);

/*
 * Bounds on instance logs (STATE/logs/<namespace>/<service>/<id>.log).
 * A live instance's log that grew past max_bytes loses its oldest bytes
 * (about a quarter of the cap, so trims are rare), checked every few
 * seconds off the loop: a log may overshoot the cap by what the instance
 * writes between two checks. An exited instance's log is kept for
 * retention_ns after the exit, and only the newest per_revision exited
 * logs of each revision are kept; the rest are deleted, whether or not the
 * service still exists.
 */
typedef struct sl_log_limits {
    int64_t max_bytes;     /* per live instance; 0 = unbounded */
    uint64_t retention_ns; /* after the exit; 0 = no time limit */
    int per_revision;      /* exited instances' logs per revision; 0 = no limit */
} sl_log_limits_t;

#define SL_LOG_MAX_DEFAULT          (10LL << 20)
#define SL_LOG_RETENTION_DEFAULT    (24ull * 3600 * 1000000000ull)
#define SL_LOG_PER_REVISION_DEFAULT 5

/* Replace the defaults above (set by sl_supervisor_new); copied. */
void sl_supervisor_set_log_limits(sl_supervisor_t *sup, const sl_log_limits_t *limits);

/* Stop every instance (SIGKILL after a short grace when fast is set), wait
 * for all to exit and clean up, then call done. */
void sl_supervisor_shutdown(sl_supervisor_t *sup, bool fast, void (*done)(void *), void *data);
/* Free the supervisor; only after shutdown's done (it leaks itself, with an
 * error logged, when called earlier). */
void sl_supervisor_free(sl_supervisor_t *sup);

#endif
