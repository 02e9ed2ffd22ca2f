/*
 * cmd_serve.c — `sluice serve`: the daemon. Wires store, supervisor,
 * controller, router and API around one libuv loop, and shuts them down in
 * order on SIGINT/SIGTERM (stop accepting, stop instances, close the store).
 */
#include "api.h"
#include "cli.h"
#include "controller.h"
#include "image.h"
#include "router.h"
#include "service.h"
#include "store.h"
#include "supervisor.h"
#include "version.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

static const char *MOD = "serve";

typedef struct daemon {
    uv_loop_t *loop;
    sl_store_t *store;
    sl_supervisor_t *sup;
    sl_controller_t *ctl;
    sl_router_t *router;
    sl_api_t *api;
    uv_signal_t sigint, sigterm;
    int pending_closes;
    bool stopping;
} daemon_t;

static void serve_usage(FILE *f)
{
    fprintf(
        f,
        "Usage: sluice serve [OPTIONS]\n\n"
        "Run the sluice daemon in the foreground.\n\n"
        "  --listen ADDR:PORT   router address (default 127.0.0.1:8080)\n"
        "  --domain DOMAIN      services are NAME.DOMAIN (default localhost)\n"
        "  --state-dir DIR      state, images, logs and the API socket\n"
        "                       (default $SLUICE_STATE_DIR or /var/lib/sluice)\n"
        "  --runtime crun|runc  OCI runtime (default crun)\n"
        "  --log-level LEVEL    debug, info, warn or error (default info)\n"
        "  --busy-poll D        after the router last read from a socket, poll for D\n"
        "                       (at most %llums, e.g. 50us) without sleeping: lower\n"
        "                       latency on VMs, where a sleeping CPU's wake-up is\n"
        "                       costly, for CPU spent polling (default 0: off)\n"
        "  --sched-slice D      the loop thread asks the scheduler for slices of D\n"
        "                       (100us-100ms, e.g. 500us; Linux 6.12+): its wake-ups\n"
        "                       preempt CPU-bound instances sooner, but a burst\n"
        "                       longer than D is cut more often (default 0: the\n"
        "                       kernel's slice)\n"
        "  --client-header-timeout D  a request head must arrive whole within D of\n"
        "                       its first byte, else 408 (a new connection that sends\n"
        "                       nothing is closed; an HTTP/2 header block left open\n"
        "                       ends the session) (default 30s)\n"
        "  --client-body-timeout D  a request body that makes no progress for D is\n"
        "                       a 408 (default 30s)\n"
        "  --client-idle-timeout D  a keep-alive connection between requests, an\n"
        "                       HTTP/2 session without streams, a WebSocket with no\n"
        "                       traffic either way, or a client that reads nothing it\n"
        "                       is sent, for D, is closed (default 60s)\n"
        "  --egress             instances can open outbound connections (through a\n"
        "                       slirp4netns each) unless their revision says\n"
        "                       sluice.dev/egress: \"false\"; without it, only those\n"
        "                       whose revision says \"true\" can (default: off)\n\n"
        "Instance logs (STATE/logs/NAMESPACE/SERVICE/INSTANCE.log, `sluice logs`):\n"
        "  --instance-log-max SIZE         a running instance's log keeps its newest\n"
        "                                  output when it grows past SIZE (default 10Mi;\n"
        "                                  checked every 2s; 0 = unbounded)\n"
        "  --instance-log-retention D      exited instances' logs are deleted D after\n"
        "                                  the exit (default 24h; 0 = never by age)\n"
        "  --instance-logs-per-revision N  exited instances' logs kept per revision\n"
        "                                  (default 5; 0 = no limit)\n\n"
        "Revision garbage collection (Knative's config-gc; a revision no traffic\n"
        "target, latest revision or serving.knative.dev/no-gc names is non-active):\n"
        "  --revision-gc-retain-since-create D|disabled  never one younger (default 48h)\n"
        "  --revision-gc-retain-since-active D|disabled  nor one routed within D (15h)\n"
        "  --revision-gc-min-non-active N    kept whatever their age (default 20)\n"
        "  --revision-gc-max-non-active N|disabled  at most N kept (default 1000)\n"
        "  --revision-gc-interval D          how often it runs (default 5m)\n\n"
        "Autoscaling defaults (Knative's names; revisions override them with\n"
        "autoscaling.knative.dev annotations):\n"
        "  --stable-window D                 averaging window (default 60s)\n"
        "  --panic-window-percentage P       panic window, %% of stable (default 10)\n"
        "  --panic-threshold-percentage P    panic when demand reaches P%% (default 200)\n"
        "  --target-utilization-percentage P (default 70)\n"
        "  --container-concurrency-target-default N (default 100)\n"
        "  --scale-to-zero-grace D           idle time before the last instance goes (default "
        "30s)\n"
        "  --max-scale-up-rate R, --max-scale-down-rate R (defaults 1000, 2)\n"
        "  --max-scale N                     instances per revision at most (default 100)\n"
        "  --autoscale-tick D                decision interval (default 100ms)\n"
        "  --queue-deadline D                queued this long at max scale → 429 (default 10s)\n"
        "Durations are Go-style: 500ms, 30s, 1m.\n\n"
        "Node capacity (instances reserve requests + runtime class overhead):\n"
        "  --capacity-cpu Q, --capacity-memory Q  allocatable (default: the machine's\n"
        "                                    minus 100m cpu and 512Mi memory)\n\n"
        "  --metrics-listen ADDR:PORT  also serve Prometheus /metrics over TCP\n"
        "  --api-listen ADDR:PORT      also serve the API over TCP; every request needs\n"
        "                              Authorization: Bearer TOKEN\n"
        "  --api-token-file FILE       the token (mode 0600; default STATE/api-token,\n"
        "                              created with a random token when missing)\n"
        "  --image-root DIR            images only from oci: layouts and docker-archive:\n"
        "                              files below DIR, read through no symlink; dir:\n"
        "                              refused (for API users who may not read the host)\n"
        "  --prices FILE        price table for `sluice usage` (JSON; default: public list\n"
        "                       prices, see docs/metering.md)\n",
        SL_BUSY_POLL_MAX_NS / 1000000ull);
}

typedef struct serve_opts {
    const char *metrics_listen;
    const char *api_listen;
    const char *api_token_file;
    char image_root[PATH_MAX]; /* real path; "" = any */
    sl_as_config_t as;
    sl_prices_t prices;
    int64_t capacity_cpu, capacity_memory;
    uint64_t queue_deadline_ms;
    int max_scale;
    sl_log_limits_t logs;
    sl_revision_gc_t gc;
    uint64_t busy_poll_ns;
    uint64_t sched_slice_ns;
    uint64_t client_header_ns, client_body_ns, client_idle_ns;
    bool egress;
} serve_opts_t;

enum {
    O_STABLE = 1000,
    O_PANIC_PCT,
    O_PANIC_THR,
    O_UTIL,
    O_TARGET,
    O_GRACE,
    O_UP,
    O_DOWN,
    O_MAXSCALE,
    O_TICK,
    O_QDEADLINE,
    O_CAP_CPU,
    O_CAP_MEM,
    O_PRICES,
    O_METRICS,
    O_API_LISTEN,
    O_API_TOKEN,
    O_IMAGE_ROOT,
    O_LOG_MAX,
    O_LOG_RETENTION,
    O_LOG_PER_REV,
    O_GC_CREATE,
    O_GC_ACTIVE,
    O_GC_MIN,
    O_GC_MAX,
    O_GC_INTERVAL,
    O_BUSY_POLL,
    O_SCHED_SLICE,
    O_CLIENT_HEADER,
    O_CLIENT_BODY,
    O_CLIENT_IDLE,
    O_EGRESS
};

/* The range the kernel accepts for a fair task's slice (it clamps). */
#define SCHED_SLICE_MIN_NS 100000ull
#define SCHED_SLICE_MAX_NS 100000000ull

static int duration_opt(const char *flag, const char *arg, uint64_t *ns)
{
    if (sl_parse_duration(arg, ns) < 0)
        return sl_cli_usage("%s: expected a duration like 500ms or 30s, got '%s'", flag, arg);
    return 0;
}

/* A client timeout (--client-header-timeout, ...): from 1 ms to 1 h. */
static int client_timeout_opt(const char *flag, const char *arg, uint64_t *ns)
{
    int rc = duration_opt(flag, arg, ns);
    if (rc == 0 && (*ns < 1000000 || *ns > 3600 * 1000000000ull))
        rc = sl_cli_usage("%s: between 1ms and 1h, got '%s'", flag, arg);
    return rc;
}

/* A duration in whole seconds, or "disabled" (SL_GC_DISABLED). */
static int gc_duration_opt(const char *flag, const char *arg, int64_t *out)
{
    uint64_t ns;
    if (!strcmp(arg, "disabled")) {
        *out = SL_GC_DISABLED;
        return 0;
    }
    if (sl_parse_duration(arg, &ns) < 0)
        return sl_cli_usage("%s: expected a duration like 48h or \"disabled\", got '%s'", flag,
                            arg);
    *out = (int64_t)(ns / 1000000000u);
    return 0;
}

/* Revision GC flags; returns 0, a usage exit code, or -1 if not ours. */
static int gc_opt(serve_opts_t *o, int opt, const char *arg)
{
    uint64_t ns;
    int rc;
    switch (opt) {
    case O_GC_CREATE:
        return gc_duration_opt("--revision-gc-retain-since-create", arg,
                               &o->gc.retain_since_create_s);
    case O_GC_ACTIVE:
        return gc_duration_opt("--revision-gc-retain-since-active", arg,
                               &o->gc.retain_since_active_s);
    case O_GC_MIN:
        if (sl_parse_int64(arg, 0, INT32_MAX, &o->gc.min_non_active) < 0)
            return sl_cli_usage("--revision-gc-min-non-active: expected a count, got '%s'", arg);
        return 0;
    case O_GC_MAX:
        if (!strcmp(arg, "disabled")) {
            o->gc.max_non_active = SL_GC_DISABLED;
            return 0;
        }
        if (sl_parse_int64(arg, 0, INT32_MAX, &o->gc.max_non_active) < 0)
            return sl_cli_usage("--revision-gc-max-non-active: expected a count or "
                                "\"disabled\", got '%s'",
                                arg);
        return 0;
    case O_GC_INTERVAL:
        if ((rc = duration_opt("--revision-gc-interval", arg, &ns)))
            return rc;
        if (ns < 1000000000ull)
            return sl_cli_usage("--revision-gc-interval: must be at least 1s");
        o->gc.interval_ns = ns;
        return 0;
    default:
        return -1;
    }
}

/* Autoscaling flags; returns 0, a usage exit code, or -1 if not ours. */
static int autoscale_opt(serve_opts_t *o, int opt, const char *arg)
{
    double v;
    uint64_t ns;
    int rc;
    switch (opt) {
    case O_STABLE:
        if ((rc = duration_opt("--stable-window", arg, &o->as.stable_window_ns)))
            return rc;
        return o->as.stable_window_ns ? 0 : sl_cli_usage("--stable-window: must be > 0");
    case O_PANIC_PCT:
        return sl_cli_number("--panic-window-percentage", arg, 1, 100, &o->as.panic_window_pct);
    case O_PANIC_THR:
        return sl_cli_number("--panic-threshold-percentage", arg, 110, 1000,
                             &o->as.panic_threshold_pct);
    case O_UTIL:
        if ((rc = sl_cli_number("--target-utilization-percentage", arg, 1, 100, &v)))
            return rc;
        o->as.utilization = v / 100.0;
        return 0;
    case O_TARGET:
        return sl_cli_number("--container-concurrency-target-default", arg, 0.01, 1e6,
                             &o->as.target);
    case O_GRACE:
        return duration_opt("--scale-to-zero-grace", arg, &o->as.scale_to_zero_grace_ns);
    case O_UP:
        return sl_cli_number("--max-scale-up-rate", arg, 1.0001, 1e6, &o->as.max_scale_up_rate);
    case O_DOWN:
        return sl_cli_number("--max-scale-down-rate", arg, 1.0001, 1e6, &o->as.max_scale_down_rate);
    case O_MAXSCALE:
        if ((rc = sl_cli_number("--max-scale", arg, 1, 100000, &v)))
            return rc;
        o->max_scale = (int)v;
        return 0;
    case O_TICK:
        if ((rc = duration_opt("--autoscale-tick", arg, &ns)))
            return rc;
        if (ns < 10000000ull || ns > 10000000000ull)
            return sl_cli_usage("--autoscale-tick: must be 10ms..10s");
        o->as.tick_ns = ns;
        return 0;
    case O_CAP_CPU:
        if (sl_parse_cpu(arg, &o->capacity_cpu) < 0 || o->capacity_cpu <= 0)
            return sl_cli_usage("--capacity-cpu: expected a quantity like 2 or 1500m, got '%s'",
                                arg);
        return 0;
    case O_CAP_MEM:
        if (sl_parse_memory(arg, &o->capacity_memory) < 0 || o->capacity_memory <= 0)
            return sl_cli_usage("--capacity-memory: expected a quantity like 8Gi, got '%s'", arg);
        return 0;
    case O_METRICS:
        o->metrics_listen = arg;
        return 0;
    case O_API_LISTEN:
        o->api_listen = arg;
        return 0;
    case O_API_TOKEN:
        o->api_token_file = arg;
        return 0;
    case O_IMAGE_ROOT: {
        struct stat st;
        if (!realpath(arg, o->image_root))
            return sl_cli_usage("--image-root: '%s': %s", arg, strerror(errno));
        if (stat(o->image_root, &st) < 0 || !S_ISDIR(st.st_mode))
            return sl_cli_usage("--image-root: '%s' is not a directory", arg);
        return 0;
    }
    case O_PRICES: {
        sl_error_t err = {0};
        if (sl_prices_load(arg, &o->prices, &err) < 0)
            return sl_cli_usage("--prices: %s", err.msg);
        return 0;
    }
    case O_LOG_MAX:
        if (sl_parse_memory(arg, &o->logs.max_bytes) < 0 ||
            (o->logs.max_bytes > 0 && o->logs.max_bytes < (64 << 10)))
            return sl_cli_usage("--instance-log-max: expected 0 or a size of at least 64Ki like "
                                "10Mi, got '%s'",
                                arg);
        return 0;
    case O_LOG_RETENTION:
        return duration_opt("--instance-log-retention", arg, &o->logs.retention_ns);
    case O_LOG_PER_REV:
        if ((rc = sl_cli_number("--instance-logs-per-revision", arg, 0, 100000, &v)))
            return rc;
        o->logs.per_revision = (int)v;
        return 0;
    case O_QDEADLINE:
        if ((rc = duration_opt("--queue-deadline", arg, &ns)))
            return rc;
        o->queue_deadline_ms = ns / 1000000u ? ns / 1000000u : 1;
        return 0;
    default:
        return -1;
    }
}

static void supervisor_done(void *data)
{
    daemon_t *d = data;
    uv_stop(d->loop);
}

static void controller_done(void *data)
{
    daemon_t *d = data;
    sl_supervisor_shutdown(d->sup, true, supervisor_done, d);
}

/* Front doors first (API, router), then instances, then the supervisor. */
static void front_closed(void *data)
{
    daemon_t *d = data;
    if (--d->pending_closes > 0)
        return;
    if (d->ctl) {
        sl_controller_forget_router(d->ctl);
        sl_controller_shutdown(d->ctl, controller_done, d);
    } else if (d->sup) {
        controller_done(d);
    } else {
        uv_stop(d->loop);
    }
}

/* Close whatever has been set up; the loop stops when all is down. */
static void begin_shutdown(daemon_t *d)
{
    d->stopping = true;
    d->pending_closes = 1 + (d->api ? 1 : 0) + (d->router ? 1 : 0);
    if (d->api)
        sl_api_close(d->api, front_closed, d);
    if (d->router)
        sl_router_close(d->router, front_closed, d);
    front_closed(d);
}

static void on_signal(uv_signal_t *s, int signum)
{
    daemon_t *d = s->data;
    if (d->stopping) {
        sl_warn(MOD, "second signal: exiting now");
        exit(1);
    }
    sl_info(MOD, "signal %d: shutting down", signum);
    uv_signal_stop(&d->sigint);
    uv_signal_stop(&d->sigterm);
    begin_shutdown(d);
}

/* Handles still open after shutdown (module-internal watchers) close here
 * so the loop can be closed cleanly. */
static void close_leftover(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Read the TCP API token, creating a random one at the default path. */
static char *load_token(const char *path, bool create, sl_error_t *err)
{
    struct stat st;
    if (stat(path, &st) < 0 && errno == ENOENT && create) {
        unsigned char raw[24];
        sl_autoclose int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || read(fd, raw, sizeof(raw)) != (ssize_t)sizeof(raw)) {
            sl_error_errno(err, errno, "reading /dev/urandom");
            return NULL;
        }
        char hex[sizeof(raw) * 2 + 2];
        for (size_t i = 0; i < sizeof(raw); i++)
            snprintf(hex + 2 * i, 3, "%02x", raw[i]);
        hex[sizeof(raw) * 2] = '\n';
        if (sl_write_file_atomic(path, hex, sizeof(raw) * 2 + 1, 0600, err) < 0)
            return NULL;
        sl_info(MOD, "created an API token in %s", path);
    }
    if (stat(path, &st) < 0) {
        sl_error_errno(err, errno, "--api-token-file %s", path);
        return NULL;
    }
    if (st.st_mode & 077) {
        sl_error_set(err, EPERM,
                     "--api-token-file %s: readable by others (mode %03o); chmod 600 it", path,
                     (unsigned)(st.st_mode & 0777));
        return NULL;
    }
    char *tok = NULL;
    if (sl_read_file(path, 4096, &tok, NULL, err) < 0)
        return NULL;
    tok[strcspn(tok, "\r\n")] = '\0';
    return tok;
}

static int lock_state_dir(const char *dir, sl_error_t *err)
{
    sl_autofree char *path = xasprintf("%s/sluice.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return sl_error_errno(err, errno, "open %s", path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        close(fd);
        return sl_error_set(err, EBUSY, "another sluice daemon is using %s", dir);
    }
    return fd; /* held until exit */
}

static int parse_port(const char *listen)
{
    const char *colon = strrchr(listen, ':');
    int64_t port = 0;
    if (!colon || sl_parse_int64(colon + 1, 0, 65535, &port) < 0)
        return -1;
    return (int)port;
}

/* sched_setattr(2): glibc has no wrapper. */
struct sched_attr_v1 {
    uint32_t size, sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
    uint32_t sched_util_min, sched_util_max;
};

#define SCHED_FLAG_RESET_ON_FORK_ 0x01

/* --sched-slice. The loop thread is the data path: a request is a burst of
 * it, woken by a socket. On CPUs busy with instances, a wake-up under
 * EEVDF waits for the running task's slice to end (the kernel's default
 * request: 0.7 ms, 0.75 before 6.15, times 1 + log2 of the CPUs, at most 8:
 * 1.4 ms on 2 CPUs, 2.8 ms on 8) unless the woken task asks for a shorter
 * one, which earns it an earlier deadline and wake-up preemption; its
 * weight, and so its share of the CPU, is unchanged. The other side: once
 * the thread has run for its slice it is preempted sooner too, and under
 * load its bursts are long (100us cost an HTTP/2 backend 11 % of its
 * req/s at c=256 in bench/RESULTS.md), hence opt-in. Only this thread
 * gets the slice: with SCHED_RESET_ON_FORK the thread pool, runtimes and
 * instances start with the kernel's defaults (which also drops a negative
 * nice for them). Kernels before 6.12 have no per-task slice: they report a
 * fair task's sched_runtime as 0, and then nothing is changed. */
static void set_sched_slice(uint64_t ns)
{
    if (!ns)
        return;
    struct sched_attr_v1 a = {0};
    if (syscall(SYS_sched_getattr, 0, &a, sizeof a, 0) < 0) {
        sl_warn(MOD, "--sched-slice: sched_getattr: %s", strerror(errno));
        return;
    }
    if (a.sched_runtime == 0) {
        sl_info(MOD, "--sched-slice: this kernel has no per-task slices (Linux 6.12+); "
                     "the loop thread keeps the default");
        return;
    }
    if (a.sched_policy != SCHED_OTHER && a.sched_policy != SCHED_BATCH) {
        sl_info(MOD, "--sched-slice: not set, the daemon runs under scheduling policy %u",
                a.sched_policy);
        return;
    }
    a.size = sizeof a;
    a.sched_flags = SCHED_FLAG_RESET_ON_FORK_;
    a.sched_runtime = ns;
    if (syscall(SYS_sched_setattr, 0, &a, 0) < 0) {
        sl_warn(MOD, "--sched-slice: sched_setattr: %s; the kernel's slice stays", strerror(errno));
        return;
    }
    sl_debug(MOD, "loop thread: scheduler slice %lluus", (unsigned long long)ns / 1000);
}

/* The soft limit on open files is often 1024, for select()'s sake (the
 * loop uses epoll); the router's connections and the unpacking of deep
 * layers need the hard one. Runtimes inherit it; each container gets its
 * own in its spec. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_max == RLIM_INFINITY) { /* beyond fs.nr_open is refused */
        int64_t nr_open = sl_nr_open();
        if (nr_open < 0)
            return;
        rl.rlim_max = (rlim_t)nr_open;
    }
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        sl_debug("serve", "open files: soft limit raised from %llu to %llu",
                 (unsigned long long)was, (unsigned long long)rl.rlim_cur);
}

static int run_daemon(const char *listen, const char *domain, const char *state_dir,
                      const char *runtime, const serve_opts_t *so)
{
    sl_error_t err = {0};
    daemon_t d = {0};
    raise_nofile();
    int port = parse_port(listen);
    if (port < 0)
        return sl_cli_usage("--listen: expected ADDR:PORT, got '%s'", listen);
    if (sl_mkdir_p(state_dir, 0700, &err) < 0)
        return sl_cli_error("state dir: %s", err.msg);
    chmod(state_dir, 0700);
    char state_real[PATH_MAX];
    if (so->image_root[0] && realpath(state_dir, state_real) &&
        sl_path_holds(so->image_root, state_real))
        return sl_cli_usage("--image-root: %s holds the state directory %s; give a directory "
                            "of images only",
                            so->image_root, state_real);
    int lockfd = lock_state_dir(state_dir, &err);
    if (lockfd < 0)
        return sl_cli_error("%s", err.msg);
    set_sched_slice(so->sched_slice_ns); /* before any thread is made */
    d.loop = xcalloc(1, sizeof(uv_loop_t));
    uv_loop_init(d.loop);
    sl_autofree char *db = xasprintf("%s/sluice.db", state_dir);
    sl_autofree char *sock = xasprintf("%s/sluice.sock", state_dir);
    int rc = 1;
    if (strlen(sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        sl_cli_error("--state-dir: '%s' is too long for the API socket path (at most %zu "
                     "characters); choose a shorter state directory",
                     state_dir, sizeof(((struct sockaddr_un *)0)->sun_path) - 13);
        goto out;
    }
    if (sl_image_store_init(state_dir, &err) < 0 || sl_store_open_sqlite(db, &d.store, &err) < 0 ||
        sl_store_sqlite_offload_checkpoints(d.store, d.loop, &err) < 0 ||
        sl_supervisor_new(d.loop, state_dir, runtime, &d.sup, &err) < 0) {
        sl_cli_error("%s", err.msg);
        goto out;
    }
    sl_supervisor_set_log_limits(d.sup, &so->logs);
    sl_controller_config_t ccfg = {.state_dir = state_dir,
                                   .domain = domain,
                                   .url_port = port,
                                   .autoscaling = &so->as,
                                   .max_scale_default = so->max_scale,
                                   .queue_deadline_ms = so->queue_deadline_ms,
                                   .capacity_cpu_millis = so->capacity_cpu,
                                   .capacity_memory = so->capacity_memory,
                                   .prices = &so->prices,
                                   .image_root = so->image_root[0] ? so->image_root : NULL,
                                   .egress = so->egress,
                                   .revision_gc = &so->gc};
    if (sl_controller_new(d.loop, d.store, d.sup, &ccfg, &d.ctl, &err) < 0) {
        sl_cli_error("%s", err.msg);
        d.ctl = NULL;
        begin_shutdown(&d);
        uv_run(d.loop, UV_RUN_DEFAULT);
        goto out;
    }
    sl_router_config_t rcfg = {.listen = listen,
                               .busy_poll_ns = so->busy_poll_ns,
                               .header_timeout_ms = so->client_header_ns / 1000000,
                               .body_timeout_ms = so->client_body_ns / 1000000,
                               .idle_timeout_ms = so->client_idle_ns / 1000000};
    if (sl_router_new(d.loop, &rcfg, &sl_controller_router_ops, d.ctl, &d.router, &err) < 0) {
        sl_cli_error("%s", err.msg);
        d.router = NULL;
    } else {
        sl_controller_set_router(d.ctl, d.router);
        if (sl_api_new(d.loop, sock, state_dir, d.ctl, &d.api, &err) < 0) {
            sl_cli_error("%s", err.msg);
            d.api = NULL;
        }
    }
    bool failed = !d.router || !d.api;
    if (!failed && so->metrics_listen &&
        sl_api_listen_metrics(d.api, so->metrics_listen, &err) < 0) {
        sl_cli_error("%s", err.msg);
        failed = true;
    }
    if (!failed && so->api_listen) {
        sl_autofree char *def = xasprintf("%s/api-token", state_dir);
        sl_autofree char *tok =
            load_token(so->api_token_file ? so->api_token_file : def, !so->api_token_file, &err);
        if (!tok || sl_api_listen_tcp(d.api, so->api_listen, tok, &err) < 0) {
            sl_cli_error("%s", err.msg);
            failed = true;
        }
    }
    if (failed) {
        begin_shutdown(&d);
        uv_run(d.loop, UV_RUN_DEFAULT);
        goto out;
    }
    if (sl_controller_load(d.ctl, &err) < 0)
        sl_err(MOD, "loading services: %s", err.msg);
    uv_signal_init(d.loop, &d.sigint);
    uv_signal_init(d.loop, &d.sigterm);
    d.sigint.data = d.sigterm.data = &d;
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    sl_info(MOD, "sluice %s serving on http://%s (services at http://NAME.%s:%d), state in %s",
            sl_version, listen, domain, port, state_dir);
    uv_run(d.loop, UV_RUN_DEFAULT);
    rc = 0;
    uv_close((uv_handle_t *)&d.sigint, NULL);
    uv_close((uv_handle_t *)&d.sigterm, NULL);
out:
    /* Module-internal watchers still open close here, then the loop. */
    uv_walk(d.loop, close_leftover, NULL);
    uv_run(d.loop, UV_RUN_DEFAULT);
    sl_api_free(d.api);
    sl_controller_free(d.ctl);
    sl_supervisor_free(d.sup);
    sl_store_close(d.store);
    /* The last commits (the controller's usage flush) may have started a
     * checkpoint on the thread pool; it finishes before the loop goes. */
    uv_run(d.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(d.loop) == 0)
        free(d.loop);
    else
        sl_warn(MOD, "event loop still had open handles or requests at exit");
    close(lockfd);
    sl_info(MOD, "stopped");
    return rc;
}

int sl_cmd_serve(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"domain", required_argument, NULL, 'd'},
        {"state-dir", required_argument, NULL, 'S'},
        {"runtime", required_argument, NULL, 'r'},
        {"log-level", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {"stable-window", required_argument, NULL, O_STABLE},
        {"panic-window-percentage", required_argument, NULL, O_PANIC_PCT},
        {"panic-threshold-percentage", required_argument, NULL, O_PANIC_THR},
        {"target-utilization-percentage", required_argument, NULL, O_UTIL},
        {"container-concurrency-target-default", required_argument, NULL, O_TARGET},
        {"scale-to-zero-grace", required_argument, NULL, O_GRACE},
        {"max-scale-up-rate", required_argument, NULL, O_UP},
        {"max-scale-down-rate", required_argument, NULL, O_DOWN},
        {"max-scale", required_argument, NULL, O_MAXSCALE},
        {"autoscale-tick", required_argument, NULL, O_TICK},
        {"queue-deadline", required_argument, NULL, O_QDEADLINE},
        {"capacity-cpu", required_argument, NULL, O_CAP_CPU},
        {"capacity-memory", required_argument, NULL, O_CAP_MEM},
        {"prices", required_argument, NULL, O_PRICES},
        {"metrics-listen", required_argument, NULL, O_METRICS},
        {"api-listen", required_argument, NULL, O_API_LISTEN},
        {"api-token-file", required_argument, NULL, O_API_TOKEN},
        {"image-root", required_argument, NULL, O_IMAGE_ROOT},
        {"instance-log-max", required_argument, NULL, O_LOG_MAX},
        {"instance-log-retention", required_argument, NULL, O_LOG_RETENTION},
        {"instance-logs-per-revision", required_argument, NULL, O_LOG_PER_REV},
        {"revision-gc-retain-since-create", required_argument, NULL, O_GC_CREATE},
        {"revision-gc-retain-since-active", required_argument, NULL, O_GC_ACTIVE},
        {"revision-gc-min-non-active", required_argument, NULL, O_GC_MIN},
        {"revision-gc-max-non-active", required_argument, NULL, O_GC_MAX},
        {"revision-gc-interval", required_argument, NULL, O_GC_INTERVAL},
        {"busy-poll", required_argument, NULL, O_BUSY_POLL},
        {"sched-slice", required_argument, NULL, O_SCHED_SLICE},
        {"client-header-timeout", required_argument, NULL, O_CLIENT_HEADER},
        {"client-body-timeout", required_argument, NULL, O_CLIENT_BODY},
        {"client-idle-timeout", required_argument, NULL, O_CLIENT_IDLE},
        {"egress", no_argument, NULL, O_EGRESS},
        {NULL, 0, NULL, 0},
    };
    const char *listen = "127.0.0.1:8080", *domain = "localhost", *runtime = "crun";
    const char *state_dir = sl_cli_default_state_dir();
    serve_opts_t so = {
        .max_scale = 100,
        .queue_deadline_ms = 10000,
        .logs = {SL_LOG_MAX_DEFAULT, SL_LOG_RETENTION_DEFAULT, SL_LOG_PER_REVISION_DEFAULT}};
    sl_as_config_defaults(&so.as);
    sl_prices_default(&so.prices);
    sl_revision_gc_defaults(&so.gc);
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            listen = optarg;
            break;
        case 'd':
            domain = optarg;
            break;
        case 'S':
            state_dir = optarg;
            break;
        case 'r':
            if (strcmp(optarg, "crun") && strcmp(optarg, "runc"))
                return sl_cli_usage("--runtime: must be crun or runc, got '%s'", optarg);
            runtime = optarg;
            break;
        case 'L':
            if (!strcmp(optarg, "debug"))
                sl_log_set_level(SL_LOG_DEBUG);
            else if (!strcmp(optarg, "info"))
                sl_log_set_level(SL_LOG_INFO);
            else if (!strcmp(optarg, "warn"))
                sl_log_set_level(SL_LOG_WARN);
            else if (!strcmp(optarg, "error"))
                sl_log_set_level(SL_LOG_ERROR);
            else
                return sl_cli_usage("--log-level: must be debug, info, warn or error");
            break;
        case O_BUSY_POLL: {
            int rc = duration_opt("--busy-poll", optarg, &so.busy_poll_ns);
            if (rc)
                return rc;
            if (so.busy_poll_ns > SL_BUSY_POLL_MAX_NS)
                return sl_cli_usage("--busy-poll: at most %llums, got '%s'",
                                    SL_BUSY_POLL_MAX_NS / 1000000ull, optarg);
            break;
        }
        case O_SCHED_SLICE: {
            int rc = duration_opt("--sched-slice", optarg, &so.sched_slice_ns);
            if (rc)
                return rc;
            if (so.sched_slice_ns &&
                (so.sched_slice_ns < SCHED_SLICE_MIN_NS || so.sched_slice_ns > SCHED_SLICE_MAX_NS))
                return sl_cli_usage("--sched-slice: 0 or between 100us and 100ms, got '%s'",
                                    optarg);
            break;
        }
        case O_CLIENT_HEADER: {
            int rc = client_timeout_opt("--client-header-timeout", optarg, &so.client_header_ns);
            if (rc)
                return rc;
            break;
        }
        case O_CLIENT_BODY: {
            int rc = client_timeout_opt("--client-body-timeout", optarg, &so.client_body_ns);
            if (rc)
                return rc;
            break;
        }
        case O_CLIENT_IDLE: {
            int rc = client_timeout_opt("--client-idle-timeout", optarg, &so.client_idle_ns);
            if (rc)
                return rc;
            break;
        }
        case O_EGRESS:
            so.egress = true;
            break;
        case 'h':
            serve_usage(stdout);
            return 0;
        default: {
            int rc = autoscale_opt(&so, opt, optarg);
            if (rc < 0)
                rc = gc_opt(&so, opt, optarg);
            if (rc >= 0) {
                if (rc)
                    return rc;
                break;
            }
            serve_usage(stderr);
            return 2;
        }
        }
    }
    if (optind < argc)
        return sl_cli_usage("serve: unexpected argument '%s'", argv[optind]);
    if (!sl_is_valid_domain(domain))
        return sl_cli_usage("--domain: '%s' is not a valid DNS name", domain);
    if (so.gc.max_non_active != SL_GC_DISABLED && so.gc.max_non_active < so.gc.min_non_active)
        return sl_cli_usage("--revision-gc-max-non-active (%lld) must be at least "
                            "--revision-gc-min-non-active (%lld)",
                            (long long)so.gc.max_non_active, (long long)so.gc.min_non_active);
    return run_daemon(listen, domain, state_dir, runtime, &so);
}
