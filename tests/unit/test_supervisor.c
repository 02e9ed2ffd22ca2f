/*
 * test_supervisor.c — the supervisor against real runtimes (crun, runc),
 * no mocks. A busybox rootfs built in a temp dir stands in for an image.
 * Needs root, overlayfs, cgroups; prints cold-start timings (never asserted).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "netns.h"
#include "supervisor.h"
#include "supervisor_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>

static char g_tmp[256];
static char g_rootfs[300];
static char g_state[300];

/* ---- fixtures --------------------------------------------------------- */

static void write_text(const char *path, const char *text)
{
    sl_error_t err = {0};
    assert_int_equal(sl_write_file_atomic(path, text, strlen(text), 0644, &err), 0);
}

static int copy_file(const char *from, const char *to)
{
    char *data = NULL;
    size_t len = 0;
    sl_error_t err = {0};
    if (sl_read_file(from, 64u << 20, &data, &len, &err) < 0)
        return -1;
    int rc = sl_write_file_atomic(to, data, len, 0755, &err);
    free(data);
    return rc;
}

static void build_rootfs(void)
{
    static const char *applets[] = {"sh",    "httpd", "env",      "id",   "sleep", "cat",
                                    "echo",  "ls",    "hostname", "true", "grep",  "stat",
                                    "touch", "rm",    "test",     "nc",   "printf"};
    char p[512];
    const char *dirs[] = {"bin", "etc", "www", "tmp", "home", "home/nonroot"};
    for (size_t i = 0; i < SL_ARRAY_LEN(dirs); i++) {
        snprintf(p, sizeof(p), "%s/%s", g_rootfs, dirs[i]);
        assert_int_equal(mkdir(p, 0755), 0);
    }
    snprintf(p, sizeof(p), "%s/bin/busybox", g_rootfs);
    assert_int_equal(copy_file("/bin/busybox", p), 0);
    for (size_t i = 0; i < SL_ARRAY_LEN(applets); i++) {
        snprintf(p, sizeof(p), "%s/bin/%s", g_rootfs, applets[i]);
        assert_int_equal(symlink("busybox", p), 0);
    }
    snprintf(p, sizeof(p), "%s/etc/passwd", g_rootfs);
    write_text(p, "root:x:0:0:root:/root:/bin/sh\n"
                  "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n");
    snprintf(p, sizeof(p), "%s/etc/group", g_rootfs);
    write_text(p, "root:x:0:\nnonroot:x:65532:\n");
    snprintf(p, sizeof(p), "%s/www/index.html", g_rootfs);
    write_text(p, "hello from sluice\n");
}

static int group_setup(void **state)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_supervisor needs root\n");
        return -1;
    }
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/sluice-sup-XXXXXX");
    if (!mkdtemp(g_tmp))
        return -1;
    snprintf(g_rootfs, sizeof(g_rootfs), "%s/rootfs", g_tmp);
    snprintf(g_state, sizeof(g_state), "%s/state", g_tmp);
    if (mkdir(g_rootfs, 0755) < 0)
        return -1;
    build_rootfs();
    return 0;
}

static void on_teardown_done(void *data)
{
    *(int *)data = 1;
}

static int group_teardown(void **state)
{
    /* A failed test may have left instances behind: a fresh supervisor
     * removes them (containers, mounts, cgroups) before the dir goes. */
    uv_loop_t loop;
    sl_supervisor_t *sup = NULL;
    sl_error_t err = {0};
    uv_loop_init(&loop);
    if (sl_supervisor_new(&loop, g_state, "crun", &sup, &err) == 0) {
        int done = 0;
        sl_supervisor_shutdown(sup, true, on_teardown_done, &done);
        uv_run(&loop, UV_RUN_DEFAULT);
        sl_supervisor_free(sup);
    }
    uv_loop_close(&loop);
    sl_rm_rf(g_tmp, &err);
    return 0;
}

/* An image whose only layer is the busybox rootfs. */
typedef struct img {
    sl_image_t img;
    char *layers[1];
    char *entry[8];
} img_t;

static void img_init(img_t *m, const char *user, char *const *entry)
{
    memset(m, 0, sizeof(*m));
    m->layers[0] = g_rootfs;
    m->img.layers = m->layers;
    m->img.n_layers = 1;
    m->img.ref = "dir:test";
    m->img.user = (char *)user;
    size_t n = 0;
    while (entry && entry[n] && n < 7) {
        m->entry[n] = entry[n];
        n++;
    }
    m->img.entrypoint = m->entry;
    m->img.n_entrypoint = n;
}

static char *const HTTPD[] = {"/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www", NULL};

/* ---- driving the loop ------------------------------------------------- */

/* Set while a failed test's leftovers are torn down: its instances' rec_t
 * lived on a stack that is gone, so their callbacks must not touch it. */
static bool g_abandoned;

typedef struct rec {
    sl_instance_t *inst;
    int n_ready, n_stopping, n_exited;
    char id[128];
    char reason[4096];
    char log_path[512];
    int pid;
    uint64_t started_ns, ready_ns, exited_ns;
    int n_unready, n_ready_again; /* readiness_cb(false) / (true) */
} rec_t;

static void rec_cb(sl_instance_t *inst, sl_inst_state_t st, void *data)
{
    rec_t *r = data;
    if (g_abandoned)
        return;
    assert_ptr_equal(sl_instance_data(inst), r);
    switch (st) {
    case SL_INST_READY:
        r->n_ready++;
        r->pid = sl_instance_pid(inst);
        r->ready_ns = sl_instance_ready_ns(inst);
        break;
    case SL_INST_STOPPING:
        r->n_stopping++;
        break;
    case SL_INST_EXITED:
        r->n_exited++;
        r->exited_ns = sl_now_ns();
        assert_non_null(sl_instance_exit_reason(inst));
        snprintf(r->reason, sizeof(r->reason), "%s", sl_instance_exit_reason(inst));
        assert_int_equal(sl_instance_state(inst), SL_INST_EXITED);
        /* still open: the router may hold the number until now */
        if (sl_instance_pid(inst) > 0)
            assert_true(fcntl(sl_instance_netns_fd(inst), F_GETFD) >= 0);
        r->inst = NULL;
        break;
    default:
        break;
    }
}

static void rec_readiness_cb(sl_instance_t *inst, bool ready, void *data)
{
    rec_t *r = data;
    if (g_abandoned)
        return;
    assert_ptr_equal(sl_instance_data(inst), r);
    assert_int_equal(sl_instance_serving(inst), ready);
    if (ready)
        r->n_ready_again++;
    else
        r->n_unready++;
}

static void wake(uv_timer_t *t) {}

static char g_heap_handle; /* marks handles whose close callback frees them */

static void free_heap_handle(uv_handle_t *h)
{
    free(h);
}

static void run_until(uv_loop_t *loop, const int *counter, int timeout_ms)
{
    /* On the heap: a failed assertion in a callback jumps out of here and a
     * stack timer would be left on the loop. */
    uv_timer_t *t = xmalloc(sizeof(*t));
    uv_timer_init(loop, t);
    t->data = &g_heap_handle;
    uv_timer_start(t, wake, 5, 5);
    uint64_t deadline = sl_now_ms() + (uint64_t)timeout_ms;
    while (*counter == 0 && sl_now_ms() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)t, free_heap_handle);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* Heap-allocated and remembered in g_env, so that when an assertion fails
 * mid-test env_teardown can still shut the supervisor down and close the
 * loop; a loop left open breaks every later test (libuv's signal state). */
typedef struct env {
    uv_loop_t loop;
    sl_supervisor_t *sup;
    int done;
} env_t;

static env_t *g_env;

static void on_done(void *data)
{
    (*(int *)data)++;
}

static env_t *env_open(const char *runtime)
{
    env_t *e = xcalloc(1, sizeof(*e));
    assert_int_equal(uv_loop_init(&e->loop), 0);
    g_env = e;
    sl_error_t err = {0};
    int rc = sl_supervisor_new(&e->loop, g_state, runtime, &e->sup, &err);
    if (rc < 0)
        fail_msg("sl_supervisor_new: %s", err.msg);
    /* Sandboxed host ids start at SL_SANDBOX_HOST_ID_BASE here whatever this
     * machine's /etc/subuid gives out: the tests name them (the one that
     * checks subordinate ids are avoided brings its own file). */
    free(e->sup->foreign);
    e->sup->foreign = NULL;
    e->sup->n_foreign = 0;
    return e;
}

/* After the supervisor's shutdown is done: free it, close the loop. */
static void env_finish(env_t *e)
{
    sl_supervisor_free(e->sup);
    e->sup = NULL;
    uv_run(&e->loop, UV_RUN_NOWAIT);
    int rc = uv_loop_close(&e->loop);
    if (rc != 0) /* which handles, for the failure below */
        uv_print_all_handles(&e->loop, stderr);
    g_env = NULL;
    free(e);
    assert_int_equal(rc, 0);
}

static void close_any(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, h->data == &g_heap_handle ? free_heap_handle : NULL);
}

/* Per-test teardown: only has work when the test failed with an env open. */
static int env_teardown(void **state)
{
    env_t *e = g_env;
    if (!e)
        return 0;
    g_env = NULL;
    g_abandoned = true;
    if (e->sup) { /* a shutdown the test began keeps its on_done(&e->done) */
        sl_supervisor_shutdown(e->sup, true, on_done, &e->done);
        run_until(&e->loop, &e->done, 15000);
        if (e->done)
            sl_supervisor_free(e->sup);
    }
    uv_walk(&e->loop, close_any, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&e->loop);
    g_abandoned = false;
    if (rc != 0)
        fprintf(stderr, "env_teardown: loop still busy: %s\n", uv_strerror(rc));
    free(e); /* the supervisor leaks when it could not finish (logged) */
    return 0;
}

/* Zombie children of this process: orphaned runtime helpers must be reaped. */
static int count_zombies(void)
{
    glob_t g;
    int n = 0;
    if (glob("/proc/self/task/*/children", 0, NULL, &g) != 0)
        return 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        char *kids = NULL;
        sl_error_t err = {0};
        if (sl_read_file(g.gl_pathv[i], 1 << 16, &kids, NULL, &err) < 0)
            continue;
        char *save = NULL;
        for (char *t = strtok_r(kids, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
            char path[64], *stat = NULL;
            snprintf(path, sizeof(path), "/proc/%s/stat", t);
            if (sl_read_file(path, 4096, &stat, NULL, &err) == 0) {
                char *close = strrchr(stat, ')');
                if (close && close[1] == ' ' && close[2] == 'Z') {
                    fprintf(stderr, "zombie: %s\n", stat);
                    n++;
                }
                free(stat);
            }
        }
        free(kids);
    }
    globfree(&g);
    return n;
}

static void env_close(env_t *e)
{
    sl_supervisor_shutdown(e->sup, true, on_done, &e->done);
    run_until(&e->loop, &e->done, 15000);
    assert_int_equal(e->done, 1);
    env_finish(e);
    assert_int_equal(count_zombies(), 0);
}

static sl_instance_spec_t base_spec(const sl_image_t *img)
{
    sl_instance_spec_t s = {
        .namespace_ = "default",
        .service = "hello",
        .configuration = "hello",
        .revision = "hello-00001",
        .image = img,
        .port = 8080,
        .grace_ms = 300,
        .startup_timeout_ms = 20000,
    };
    return s;
}

static sl_instance_t *start(env_t *e, const sl_instance_spec_t *s, rec_t *r)
{
    memset(r, 0, sizeof(*r));
    sl_error_t err = {0};
    r->started_ns = sl_now_ns();
    r->inst = sl_supervisor_start(e->sup, s, rec_cb, r, &err);
    if (!r->inst)
        fail_msg("sl_supervisor_start: %s", err.msg);
    assert_int_equal(sl_instance_state(r->inst), SL_INST_STARTING);
    snprintf(r->id, sizeof(r->id), "%s", sl_instance_id(r->inst));
    snprintf(r->log_path, sizeof(r->log_path), "%s", sl_instance_log_path(r->inst));
    return r->inst;
}

/* start, then wait (up to 20 s) until it is READY. */
static void start_ready(env_t *e, const sl_instance_spec_t *s, rec_t *r)
{
    start(e, s, r);
    run_until(&e->loop, &r->n_ready, 20000);
    if (r->n_ready != 1)
        fail_msg("instance not ready: %s", r->reason);
}

/* Start s, READY only once `sh -c script` passes in the container (an exec
 * readiness probe, run by the runtime). */
static void start_ready_when(env_t *e, sl_instance_spec_t s, const char *script, rec_t *r)
{
    char *const cmd[] = {"/bin/sh", "-c", (char *)script};
    sl_probe_t ready = {.kind = SL_PROBE_EXEC, .exec_cmd = cmd, .n_exec = 3, .timeout_ms = 5000};
    s.readiness = &ready;
    start_ready(e, &s, r);
}

/* Wait (up to timeout_ms) until it has exited. */
static void wait_exited(env_t *e, rec_t *r, int timeout_ms)
{
    run_until(&e->loop, &r->n_exited, timeout_ms);
    assert_int_equal(r->n_exited, 1);
}

/* ---- checks ----------------------------------------------------------- */

static bool mounted_below(const char *dir)
{
    char *info = NULL;
    sl_error_t err = {0};
    assert_int_equal(sl_read_file("/proc/self/mountinfo", 16u << 20, &info, NULL, &err), 0);
    bool found = strstr(info, dir) != NULL;
    free(info);
    return found;
}

static int count_cgroups(const char *id)
{
    char pat[256];
    snprintf(pat, sizeof(pat), "/sys/fs/cgroup/*/sluice/%s", id);
    glob_t g;
    int n = 0;
    if (glob(pat, 0, NULL, &g) == 0)
        n = (int)g.gl_pathc;
    globfree(&g);
    return n;
}

static void assert_cleaned(const char *id)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/instances/%s", g_state, id);
    struct stat st;
    assert_int_equal(stat(dir, &st), -1);
    assert_false(mounted_below(dir));
    assert_int_equal(count_cgroups(id), 0);
    snprintf(dir, sizeof(dir), "%s/runtime/crun/%s", g_state, id);
    assert_int_equal(stat(dir, &st), -1);
    snprintf(dir, sizeof(dir), "%s/runtime/runc/%s", g_state, id);
    assert_int_equal(stat(dir, &st), -1);
}

static char *read_log(const rec_t *r)
{
    char *text = NULL;
    sl_error_t err = {0};
    if (sl_read_file(r->log_path, 1u << 20, &text, NULL, &err) < 0)
        return xstrdup("");
    return text;
}

/* Poll the log until it contains needle (the app writes asynchronously). */
static bool log_contains(env_t *e, const rec_t *r, const char *needle, int timeout_ms)
{
    uint64_t deadline = sl_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        char *text = read_log(r);
        bool ok = strstr(text, needle) != NULL;
        free(text);
        if (ok || sl_now_ms() > deadline)
            return ok;
        int never = 0;
        run_until(&e->loop, &never, 10);
    }
}

/* GET path through the instance's network namespace; returns the response. */
static char *http_get(sl_instance_t *inst, const char *path)
{
    sl_error_t err = {0};
    int host = sl_netns_open_current(&err);
    assert_true(host >= 0);
    int fd = sl_netns_socket(sl_instance_netns_fd(inst), host, AF_INET, SOCK_STREAM | SOCK_CLOEXEC,
                             &err);
    close(host);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)sl_instance_port(inst))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t cap = 65536, len = 0;
    char *buf = xmalloc(cap + 1);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len)) > 0 && len < cap)
        len += (size_t)r;
    buf[len] = '\0';
    close(fd);
    return buf;
}

static double ms_between(uint64_t a, uint64_t b)
{
    return (double)(b - a) / 1e6;
}

/* ---- tests ------------------------------------------------------------ */

static void lifecycle(const char *runtime)
{
    env_t *e = env_open(runtime);
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    s.runtime = runtime;
    rec_t r;
    start(e, &s, &r);
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/instances/%s", g_state, r.id);
    assert_int_equal(strncmp(r.id, "hello-00001-", 12), 0);
    assert_int_equal(strlen(r.id), strlen("hello-00001-") + 5);
    run_until(&e->loop, &r.n_ready, 20000);
    if (r.n_ready != 1)
        fail_msg("not ready: %s", r.reason);
    assert_true(mounted_below(dir));
    printf("  %s: start -> READY %.1f ms\n", runtime, ms_between(r.started_ns, r.ready_ns));
    assert_true(r.pid > 1);
    assert_int_equal(sl_instance_state(r.inst), SL_INST_READY);
    assert_true(count_cgroups(r.id) > 0);

    char *resp = http_get(r.inst, "/index.html");
    assert_non_null(strstr(resp, " 200 "));
    assert_non_null(strstr(resp, "hello from sluice"));
    free(resp);

    uint64_t t0 = sl_now_ns();
    sl_instance_stop(r.inst);
    assert_int_equal(r.n_stopping, 1);
    sl_instance_stop(r.inst); /* idempotent */
    wait_exited(e, &r, 15000);
    printf("  %s: stop -> EXITED %.1f ms (%s)\n", runtime, ms_between(t0, r.exited_ns), r.reason);
    /* httpd as pid 1 has no SIGTERM handler, so the kernel drops SIGTERM. */
    assert_non_null(strstr(r.reason, "killed by signal 9"));
    assert_cleaned(r.id);
    struct stat st;
    assert_int_equal(stat(r.log_path, &st), 0); /* logs are kept */
    assert_true(kill(r.pid, 0) < 0);
    env_close(e);
}

static void test_lifecycle_crun(void **state)
{
    lifecycle("crun");
}

static void test_lifecycle_runc(void **state)
{
    lifecycle("runc");
}

static void test_env_contract(void **state)
{
    env_t *e = env_open("crun");
    char *const script[] = {"/bin/sh", "-c",
                            "env; echo host=$(hostname); echo cwd=$(pwd); ls /dev; "
                            "grep CapEff /proc/self/status; stat -c tmp=%a /tmp; "
                            "touch /proc/sys/kernel/domainname 2>/dev/null || echo procsys-ro; "
                            "touch /sys/x 2>/dev/null || echo sys-ro; "
                            "echo hi > /rootfs-write && echo rootfs-rw; "
                            "exec httpd -f -p $PORT -h /www",
                            NULL};
    img_t m;
    img_init(&m, NULL, script);
    char *img_env[] = {"PATH=/bin", "FROM_IMAGE=1", "OVERRIDE=image"};
    m.img.env = img_env;
    m.img.n_env = 3;
    m.img.workdir = "/www";
    char *user_env[] = {"OVERRIDE=user", "PORT=1", "K_SERVICE=nope", "EMPTY="};
    sl_instance_spec_t s = base_spec(&m.img);
    s.port = 9090;
    s.env = user_env;
    s.n_env = 4;
    s.service = "svc";
    s.configuration = "svc-config";
    s.revision = "svc-00007";
    rec_t r;
    start_ready(e, &s, &r);
    assert_true(log_contains(e, &r, "rootfs-rw", 2000));
    char *log = read_log(&r);
    const char *want[] = {"PORT=9090\n",
                          "K_SERVICE=svc\n",
                          "K_CONFIGURATION=svc-config\n",
                          "K_REVISION=svc-00007\n",
                          "FROM_IMAGE=1\n",
                          "OVERRIDE=user\n",
                          "PATH=/bin\n",
                          "EMPTY=\n",
                          "cwd=/www\n"};
    for (size_t i = 0; i < SL_ARRAY_LEN(want); i++)
        if (!strstr(log, want[i]))
            fail_msg("log lacks '%s':\n%s", want[i], log);
    assert_null(strstr(log, "PORT=1\n"));
    assert_null(strstr(log, "K_SERVICE=nope"));
    char host[160];
    snprintf(host, sizeof(host), "host=%s\n", r.id);
    assert_non_null(strstr(log, host));
    /* devices the runtime provides; no console with terminal=false */
    assert_non_null(strstr(log, "null"));
    assert_non_null(strstr(log, "urandom"));
    assert_non_null(strstr(log, "stdout"));
    assert_null(strstr(log, "console"));
    assert_non_null(strstr(log, "CapEff:\t00000000a80425fb")); /* Docker's default set */
    assert_non_null(strstr(log, "tmp=1777"));
    assert_non_null(strstr(log, "procsys-ro"));
    assert_non_null(strstr(log, "sys-ro"));
    free(log);
    assert_true(strstr(r.log_path, "/logs/default/svc/svc-00007-") != NULL);
    char lower_file[400];
    snprintf(lower_file, sizeof(lower_file), "%s/rootfs-write", g_rootfs);
    struct stat st;
    assert_int_equal(stat(lower_file, &st), -1); /* writes stay in the upper layer */
    sl_instance_stop(r.inst);
    wait_exited(e, &r, 15000);
    assert_cleaned(r.id);
    env_close(e);
}

/* Layers are bottom first; the top one wins. */
static void test_layers(void **state)
{
    char top[400], p[500];
    snprintf(top, sizeof(top), "%s/top-layer", g_tmp);
    snprintf(p, sizeof(p), "%s/www", top);
    sl_error_t err = {0};
    assert_int_equal(sl_mkdir_p(p, 0755, &err), 0);
    snprintf(p, sizeof(p), "%s/www/index.html", top);
    write_text(p, "from the top layer\n");
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    char *layers[] = {g_rootfs, top};
    m.img.layers = layers;
    m.img.n_layers = 2;
    sl_instance_spec_t s = base_spec(&m.img);
    rec_t r;
    start_ready(e, &s, &r);
    char *resp = http_get(r.inst, "/index.html");
    assert_non_null(strstr(resp, "from the top layer"));
    free(resp);
    sl_instance_stop(r.inst);
    run_until(&e->loop, &r.n_exited, 15000);
    assert_cleaned(r.id);
    env_close(e);
    sl_rm_rf(top, &err);
}

static void test_user_nonroot(void **state)
{
    env_t *e = env_open("crun");
    char *const script[] = {"/bin/sh", "-c",
                            "echo uid=$(id -u) gid=$(id -g); "
                            "trap 'echo bye; exit 0' TERM; httpd -p 8080 -h /www; "
                            "while :; do sleep 0.02; done",
                            NULL};
    img_t m;
    img_init(&m, "nonroot", script);
    sl_instance_spec_t s = base_spec(&m.img);
    rec_t r;
    start_ready(e, &s, &r);
    assert_true(log_contains(e, &r, "uid=65532 gid=65532", 2000));
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", r.pid);
    char *status = NULL;
    sl_error_t err = {0};
    assert_int_equal(sl_read_file(path, 1 << 16, &status, NULL, &err), 0);
    assert_non_null(strstr(status, "Uid:\t65532\t65532\t65532\t65532"));
    assert_non_null(strstr(status, "NoNewPrivs:\t1"));
    free(status);
    /* This one handles SIGTERM and exits 0 well within its grace. */
    sl_instance_stop(r.inst);
    wait_exited(e, &r, 15000);
    assert_non_null(strstr(r.reason, "exited with status 0"));
    assert_non_null(strstr(r.reason, "bye"));
    assert_cleaned(r.id);
    env_close(e);
}

/* A start that fails while the instance is prepared off the loop: either
 * at once (NULL, err) or as STOPPING + EXITED with the reason, never READY,
 * and nothing left behind. */
static void expect_start_fails(env_t *e, const sl_instance_spec_t *s, const char *needle)
{
    sl_error_t err = {0};
    rec_t r = {0};
    r.inst = sl_supervisor_start(e->sup, s, rec_cb, &r, &err);
    if (!r.inst) {
        assert_non_null(strstr(err.msg, needle));
        return;
    }
    snprintf(r.id, sizeof(r.id), "%s", sl_instance_id(r.inst));
    wait_exited(e, &r, 15000);
    assert_int_equal(r.n_ready, 0);
    assert_int_equal(r.n_stopping, 1);
    printf("  %s\n", r.reason);
    if (!strstr(r.reason, needle))
        fail_msg("exit reason '%s' lacks '%s'", r.reason, needle);
    assert_cleaned(r.id);
}

static void test_unknown_user(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, "ghost", HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    expect_start_fails(e, &s, "'ghost'");
    /* nothing left behind */
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/instances", g_state);
    assert_false(mounted_below(dir));
    env_close(e);
}

static void test_no_command(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, NULL);
    sl_instance_spec_t s = base_spec(&m.img);
    sl_error_t err = {0};
    rec_t r = {0};
    assert_null(sl_supervisor_start(e->sup, &s, rec_cb, &r, &err));
    assert_non_null(strstr(err.msg, "no command"));
    s.port = 0;
    assert_null(sl_supervisor_start(e->sup, &s, rec_cb, &r, &err));
    assert_non_null(strstr(err.msg, "port"));
    env_close(e);
}

/* The race behind "exited (status unavailable: No child processes)": the
 * container exits while it is still the child of the runtime's detached
 * helper, so its pidfd turns readable before sluice (the subreaper) can reap
 * it. The exit must stay pending until the helper exits, then be collected
 * with its real status; nothing else may reap it meanwhile. */
static void test_reap_after_helper(void **state)
{
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
    int pids[2], gate[2];
    assert_int_equal(pipe2(pids, O_CLOEXEC), 0);
    assert_int_equal(pipe2(gate, O_CLOEXEC), 0);
    pid_t helper = fork();
    assert_true(helper >= 0);
    if (helper == 0) { /* the runtime's helper: parent of the "container" */
        close(pids[0]);
        close(gate[1]);
        pid_t c = fork();
        if (c == 0)
            _exit(3);
        char b;
        if (write(pids[1], &c, sizeof(c)) != sizeof(c) || read(gate[0], &b, 1) < 0)
            _exit(1);
        _exit(0); /* c, a zombie by now, goes to the subreaper */
    }
    close(pids[1]);
    close(gate[0]);
    pid_t c = 0;
    assert_int_equal(read(pids[0], &c, sizeof(c)), sizeof(c));
    close(pids[0]);
    int pidfd = (int)syscall(SYS_pidfd_open, c, 0);
    assert_true(pidfd >= 0);
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1); /* it has exited ... */
    sv_exit_t ex = {-1, -1};
    assert_int_equal(sv_wait_exit(pidfd, c, &ex), SV_EXIT_PENDING); /* ... not ours yet */
    close(gate[1]);                                                 /* the helper exits */
    int status = 0;
    assert_int_equal(waitpid(helper, &status, 0), helper);
    assert_int_equal(sv_wait_exit(pidfd, c, &ex), SV_EXIT_DONE);
    assert_int_equal(ex.code, 3);
    assert_int_equal(ex.sig, 0);
    assert_int_equal(sv_wait_exit(pidfd, c, &ex), -ECHILD); /* reaped exactly once */
    close(pidfd);
}

static void test_exit_status(void **state)
{
    env_t *e = env_open("crun");
    char *const script[] = {"/bin/sh", "-c", "echo first line; echo about to fail >&2; exit 3",
                            NULL};
    img_t m;
    img_init(&m, NULL, script);
    sl_instance_spec_t s = base_spec(&m.img);
    rec_t r;
    start(e, &s, &r);
    wait_exited(e, &r, 15000);
    assert_int_equal(r.n_ready, 0);
    assert_int_equal(r.n_stopping, 1);
    printf("  reason: %s\n", r.reason);
    assert_non_null(strstr(r.reason, "exited with status 3"));
    assert_non_null(strstr(r.reason, "about to fail"));
    assert_non_null(strstr(r.reason, "first line"));
    assert_cleaned(r.id);
    env_close(e);
}

static void bad_command(const char *runtime)
{
    env_t *e = env_open(runtime);
    char *const cmd[] = {"/nonexistent/app", "--serve", NULL};
    img_t m;
    img_init(&m, NULL, cmd);
    sl_instance_spec_t s = base_spec(&m.img);
    s.runtime = runtime;
    rec_t r;
    start(e, &s, &r);
    wait_exited(e, &r, 15000);
    printf("  %s reason: %s\n", runtime, r.reason);
    assert_non_null(strstr(r.reason, "the container's command is not in the image"));
    assert_non_null(strstr(r.reason, "/nonexistent/app"));
    assert_cleaned(r.id);
    env_close(e);
}

static void test_bad_command_crun(void **state)
{
    bad_command("crun");
}

static void test_bad_command_runc(void **state)
{
    bad_command("runc");
}

/* Descriptors above 2 this process lets a child inherit (a harness's, say:
 * make's jobserver); sluice's own are all close-on-exec. */
static int count_inheritable_fds(void)
{
    glob_t g;
    int n = 0;
    if (glob("/proc/self/fd/*", 0, NULL, &g) != 0)
        return 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        int64_t fd;
        if (sl_parse_int64(strrchr(g.gl_pathv[i], '/') + 1, 0, INT32_MAX, &fd) < 0)
            continue;
        int flags = fcntl((int)fd, F_GETFD);
        if (fd > 2 && flags >= 0 && !(flags & FD_CLOEXEC))
            n++;
    }
    globfree(&g);
    return n;
}

/* An fd the stand-in runtime below may hold, from its `ls -l` line. */
static bool fd_expected(int fd, const char *target, size_t len, const char *log, const char *script)
{
    if (fd == 0)
        return strncmp(target, "/dev/null", len) == 0;
    if (fd == 1 || fd == 2)
        return strlen(log) == len && strncmp(target, log, len) == 0;
    return strncmp(target, "/proc/", 6) == 0 ||
           (strlen(script) == len && strncmp(target, script, len) == 0);
}

/*
 * What the runtime process gets: a stand-in runtime on PATH records its
 * session, signal mask and ignored signals, and (as `ls -l`, exec'd in its
 * place) its fds into the instance log, then writes no pid file, so the
 * start fails and the log lines land in the exit reason. It must run in a
 * session of its own, with nothing blocked or ignored although the loop
 * thread blocks SIGUSR2 and ignores SIGPIPE, and with no fd from sluice but
 * stdin (/dev/null), stdout and stderr (the log).
 */
static void test_runtime_process(void **state)
{
    char bin[400], path[512], script[512];
    snprintf(bin, sizeof(bin), "%s/fakebin", g_tmp);
    mkdir(bin, 0755);
    snprintf(script, sizeof(script), "%s/fakert", bin);
    write_text(script, "#!/bin/sh\n"
                       "[ \"$7\" = run ] || exit 0\n"
                       "echo \"cmd $7 sid $(cut -d' ' -f6 /proc/$$/stat) pid $$\"\n"
                       /* builtins only: a child would read the shell's mask
                        * while it is in vfork, with every signal blocked */
                       "while read -r k v; do case $k in SigBlk:|SigIgn:) "
                       "printf '%s\\t%s\\n' $k $v;; esac; done < /proc/$$/status\n"
                       "exec ls -l /proc/self/fd\n");
    assert_int_equal(chmod(script, 0755), 0);
    char *old_path = xstrdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    snprintf(path, sizeof(path), "%s:%s", bin, old_path);
    setenv("PATH", path, 1);
    sigset_t usr2, old_mask;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, &old_mask);
    void (*old_pipe)(int) = signal(SIGPIPE, SIG_IGN);
    int inheritable = count_inheritable_fds();

    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    s.runtime = "fakert";
    rec_t r;
    start(e, &s, &r);
    run_until(&e->loop, &r.n_exited, 15000);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    signal(SIGPIPE, old_pipe);
    setenv("PATH", old_path, 1);
    free(old_path);
    assert_int_equal(r.n_exited, 1);
    printf("  reason: %s\n", r.reason);
    assert_non_null(strstr(r.reason, "runtime failed: no pid in"));
    int sid = 0, pid = -1;
    const char *cmd = strstr(r.reason, "cmd run sid ");
    assert_non_null(cmd);
    assert_int_equal(sscanf(cmd, "cmd run sid %d pid %d", &sid, &pid), 2);
    assert_int_equal(sid, pid);
    assert_non_null(strstr(r.reason, "SigBlk:\t0000000000000000"));
    assert_non_null(strstr(r.reason, "SigIgn:\t0000000000000000"));
    /* ls's own (reading the dir) and the shell's script aside, only what
     * this process lets any child inherit may be there beyond 0..2. */
    int fds = 0, extra = 0;
    for (const char *c = strstr(r.reason, " -> "); c; c = strstr(c + 4, " -> ")) {
        const char *fd = c, *target = c + 4;
        while (fd > r.reason && fd[-1] != ' ')
            fd--;
        fds++;
        extra += !fd_expected((int)strtol(fd, NULL, 10), target, strcspn(target, " |"), r.log_path,
                              script);
    }
    assert_true(fds >= 4);
    assert_int_equal(extra, inheritable);
    assert_cleaned(r.id);
    env_close(e);
}

static void test_sigterm_ignored(void **state)
{
    env_t *e = env_open("crun");
    char *const script[] = {"/bin/sh", "-c",
                            "trap 'echo got TERM, ignoring' TERM; httpd -p 8080 -h /www; "
                            "while :; do sleep 0.02; done",
                            NULL};
    img_t m;
    img_init(&m, NULL, script);
    sl_instance_spec_t s = base_spec(&m.img);
    s.grace_ms = 400;
    rec_t r;
    start_ready(e, &s, &r);
    uint64_t t0 = sl_now_ns();
    sl_instance_stop(r.inst);
    wait_exited(e, &r, 15000);
    double took = ms_between(t0, r.exited_ns);
    printf("  SIGTERM ignored: EXITED after %.1f ms (%s)\n", took, r.reason);
    assert_true(took >= 400);
    assert_non_null(strstr(r.reason, "killed by signal 9"));
    assert_non_null(strstr(r.reason, "got TERM, ignoring"));
    assert_cleaned(r.id);
    env_close(e);
}

static void test_startup_timeout(void **state)
{
    env_t *e = env_open("crun");
    char *const script[] = {"/bin/busybox", "sleep", "100", NULL};
    img_t m;
    img_init(&m, NULL, script);
    sl_instance_spec_t s = base_spec(&m.img);
    s.startup_timeout_ms = 1500; /* room for probe attempts on a loaded machine */
    s.grace_ms = 5000;
    rec_t r;
    start(e, &s, &r);
    wait_exited(e, &r, 15000);
    assert_int_equal(r.n_ready, 0);
    printf("  %s\n", r.reason);
    assert_non_null(strstr(r.reason, "not ready within 1.5s"));
    /* the usual cause named, with what the probe saw */
    char want[96];
    snprintf(want, sizeof(want), "did not listen on port %d, the PORT environment variable",
             s.port);
    assert_non_null(strstr(r.reason, want));
    assert_non_null(strstr(r.reason, "Connection refused"));
    /* it never served: killed at once, not after the 5 s grace */
    assert_true(ms_between(r.started_ns, r.exited_ns) < 4000);
    assert_cleaned(r.id);
    env_close(e);
}

/* A container the memory cgroup kills says so, as Cloud Run's "Memory
 * limit exceeded", not only "killed by signal 9". */
static void test_out_of_memory_is_named(void **state)
{
    env_t *e = env_open("crun");
    char *const script[] = {"/bin/busybox", "awk", "BEGIN { s = \"x\"; while (1) s = s s }", NULL};
    img_t m;
    img_init(&m, NULL, script);
    sl_instance_spec_t s = base_spec(&m.img);
    s.memory_limit = 32 << 20;
    s.startup_timeout_ms = 10000;
    rec_t r;
    start(e, &s, &r);
    wait_exited(e, &r, 15000);
    printf("  %s\n", r.reason);
    assert_int_equal(r.n_ready, 0);
    assert_non_null(strstr(r.reason, "killed by signal 9: out of memory"));
    assert_non_null(strstr(r.reason, "memory limit of 32 MiB was exceeded"));
    assert_cleaned(r.id);
    env_close(e);
}

static long read_long(const char *path)
{
    char *text = NULL;
    sl_error_t err = {0};
    if (sl_read_file(path, 4096, &text, NULL, &err) < 0)
        return -1;
    long v = strtol(text, NULL, 10);
    free(text);
    return v;
}

static void test_limits(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    s.memory_limit = 64 << 20;
    s.cpu_millis = 500;
    s.pids_limit = 77;
    rec_t r;
    start_ready(e, &s, &r);
    char p[256];
    snprintf(p, sizeof(p), "/sys/fs/cgroup/memory/sluice/%s/memory.limit_in_bytes", r.id);
    assert_int_equal(read_long(p), 64 << 20);
    snprintf(p, sizeof(p), "/sys/fs/cgroup/cpu/sluice/%s/cpu.cfs_quota_us", r.id);
    assert_int_equal(read_long(p), 50000);
    snprintf(p, sizeof(p), "/sys/fs/cgroup/cpu/sluice/%s/cpu.cfs_period_us", r.id);
    assert_int_equal(read_long(p), 100000);
    snprintf(p, sizeof(p), "/sys/fs/cgroup/pids/sluice/%s/pids.max", r.id);
    assert_int_equal(read_long(p), 77);
    /* the container's pid is in that cgroup */
    snprintf(p, sizeof(p), "/sys/fs/cgroup/memory/sluice/%s/cgroup.procs", r.id);
    assert_int_equal(read_long(p), r.pid);
    sl_instance_stop(r.inst);
    run_until(&e->loop, &r.n_exited, 15000);
    assert_cleaned(r.id);
    env_close(e);
}

/* ---- runtime classes -------------------------------------------------- */

static char *read_text(const char *path)
{
    char *text = NULL;
    sl_error_t err = {0};
    if (sl_read_file(path, 1 << 20, &text, NULL, &err) < 0)
        return xstrdup("");
    return text;
}

/* Probes run inside the app before it execs httpd; their results land in
 * the instance log. */
static char *const PROBE_SCRIPT[] = {
    "/bin/sh", "-c",
    "echo uid=$(id -u) gid=$(id -g); "
    "/bin/busybox unshare -r -n /bin/true 2>/dev/null; echo unshare=$?; "
    "/bin/busybox mount -t tmpfs none /tmp 2>/dev/null; echo mount=$?; "
    "/bin/busybox chroot / /bin/true 2>/dev/null; echo chroot=$?; "
    "(echo x > /rootw) 2>/dev/null; echo rootw=$?; "
    "echo y > /tmp/y; echo tmpw=$?; "
    "echo kallsyms=$(/bin/busybox wc -c < /proc/kallsyms); "
    "echo secret=$(cat /srv/secret 2>/dev/null); "
    "echo owner=$(stat -c %u:%g /srv/secret); "
    "echo probes-done; exec /bin/busybox httpd -f -p 8080 -h /www",
    NULL};

/* A file only its owner (65532) may read: readable inside the sandbox only
 * when the root's ownership is mapped into the user namespace. */
static void make_secret(void)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/srv", g_rootfs);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/srv/secret", g_rootfs);
    write_text(p, "s3cret\n");
    assert_int_equal(chmod(p, 0600), 0);
    assert_int_equal(chown(p, 65532, 65532), 0);
}

static void stop_and_clean(env_t *e, rec_t *r)
{
    sl_instance_stop(r->inst);
    wait_exited(e, r, 15000);
    assert_cleaned(r->id);
}

/* The first host id of a process's user namespace (uid_map "0 HOST N"). */
static unsigned uid_map_host(int pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/uid_map", pid);
    char *map = read_text(path);
    unsigned inside = 1, host = 0, n = 0;
    assert_int_equal(sscanf(map, "%u %u %u", &inside, &host, &n), 3);
    free(map);
    assert_int_equal(inside, 0);
    assert_int_equal(n, 65536);
    return host;
}

/* Start the probe image under the built-in runtime class `cls`, wait until
 * Ready and the script printed "probes-done", and return its log. */
static char *start_probed(env_t *e, img_t *m, const char *cls, rec_t *r)
{
    sl_instance_spec_t s = base_spec(&m->img);
    const sl_runtime_class_t *rc = sl_runtimeclass_builtin(cls);
    assert_non_null(rc);
    s.profile = &rc->profile;
    start_ready(e, &s, r);
    assert_true(log_contains(e, r, "probes-done", 3000));
    char *log = read_log(r);
    printf("  %s probes: %s", cls, log);
    return log;
}

static void test_sandboxed(void **state)
{
    make_secret();
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, "nonroot", PROBE_SCRIPT);
    rec_t r;
    char *log = start_probed(e, &m, "sandboxed", &r);
    assert_true(sl_instance_userns(r.inst));
    assert_non_null(strstr(log, "uid=65532 gid=65532"));
    assert_null(strstr(log, "unshare=0"));
    assert_null(strstr(log, "mount=0"));
    assert_null(strstr(log, "chroot=0"));
    assert_null(strstr(log, "rootw=0"));
    assert_non_null(strstr(log, "tmpw=0"));
    assert_non_null(strstr(log, "kallsyms=0"));
    assert_non_null(strstr(log, "secret=s3cret"));
    assert_non_null(strstr(log, "owner=65532:65532"));
    free(log);

    /* it serves through its netns */
    char *resp = http_get(r.inst, "/index.html");
    assert_non_null(strstr(resp, "hello from sluice"));
    free(resp);

    /* seen from the host: no capabilities, unprivileged host uid, a user
     * namespace that is not the identity, seccomp filtering, pids limit */
    char path[256];
    snprintf(path, sizeof(path), "/proc/%d/status", r.pid);
    char *st = read_text(path);
    assert_non_null(strstr(st, "CapEff:\t0000000000000000"));
    assert_non_null(strstr(st, "CapBnd:\t0000000000000000"));
    assert_non_null(strstr(st, "Uid:\t165532\t165532\t165532\t165532"));
    assert_non_null(strstr(st, "NoNewPrivs:\t1"));
    assert_non_null(strstr(st, "Seccomp:\t2"));
    free(st);
    assert_int_equal(uid_map_host(r.pid), 100000);
    snprintf(path, sizeof(path), "/sys/fs/cgroup/pids/sluice/%s/pids.max", r.id);
    assert_int_equal(read_long(path), SL_SANDBOX_PIDS_LIMIT);

    /* A second sandboxed instance has host ids of its own (its layers
     * idmapped through them: the secret still reads as its owner's); a
     * range is free again once its instance has gone. */
    rec_t r2, r3;
    log = start_probed(e, &m, "sandboxed", &r2);
    assert_non_null(strstr(log, "secret=s3cret"));
    free(log);
    assert_int_equal(uid_map_host(r2.pid), 100000 + 65536);
    snprintf(path, sizeof(path), "/proc/%d/status", r2.pid);
    st = read_text(path);
    assert_non_null(strstr(st, "Uid:\t231068\t"));
    free(st);
    stop_and_clean(e, &r);
    log = start_probed(e, &m, "sandboxed", &r3);
    assert_non_null(strstr(log, "secret=s3cret"));
    free(log);
    assert_int_equal(uid_map_host(r3.pid), 100000);
    stop_and_clean(e, &r2);
    stop_and_clean(e, &r3);
    env_close(e);
}

/* The same probes under the default class: chroot is allowed there (root,
 * CAP_SYS_CHROOT, Docker's profile), the namespace calls are not. */
static void test_default_class(void **state)
{
    make_secret();
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, PROBE_SCRIPT);
    rec_t r;
    char *log = start_probed(e, &m, "default", &r);
    assert_false(sl_instance_userns(r.inst));
    assert_non_null(strstr(log, "uid=0 gid=0"));
    assert_null(strstr(log, "unshare=0"));
    assert_null(strstr(log, "mount=0"));
    assert_non_null(strstr(log, "chroot=0"));
    assert_non_null(strstr(log, "rootw=0"));
    assert_non_null(strstr(log, "owner=65532:65532"));
    free(log);
    char path[256];
    snprintf(path, sizeof(path), "/proc/%d/status", r.pid);
    char *st = read_text(path);
    assert_null(strstr(st, "CapEff:\t0000000000000000"));
    assert_non_null(strstr(st, "Seccomp:\t2"));
    free(st);
    char *resp = http_get(r.inst, "/index.html");
    assert_non_null(strstr(resp, "hello from sluice"));
    free(resp);
    printf("  allowed syscalls: default %zu, sandboxed %zu\n",
           sl_seccomp_profile_count(SL_SECCOMP_DEFAULT),
           sl_seccomp_profile_count(SL_SECCOMP_SANDBOXED));
    stop_and_clean(e, &r);
    env_close(e);
}

/* Pod overhead: 128Mi + 64Mi overhead = 192Mi; 500m + 100m = 600m. */
static void test_overhead(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    s.memory_limit = 128 << 20;
    s.cpu_millis = 500;
    sl_runtime_profile_t prof;
    assert_true(sl_runtime_profile_for_handler("crun", &prof));
    prof.overhead_memory = 64 << 20;
    prof.overhead_cpu_millis = 100;
    s.profile = &prof;
    rec_t r;
    start(e, &s, &r);
    assert_int_equal(sl_instance_memory_limit(r.inst), 192 << 20);
    assert_int_equal(sl_instance_cpu_millis(r.inst), 600);
    run_until(&e->loop, &r.n_ready, 20000);
    assert_int_equal(r.n_ready, 1);
    char p[256];
    snprintf(p, sizeof(p), "/sys/fs/cgroup/memory/sluice/%s/memory.limit_in_bytes", r.id);
    assert_int_equal(read_long(p), 192 << 20);
    snprintf(p, sizeof(p), "/sys/fs/cgroup/cpu/sluice/%s/cpu.cfs_quota_us", r.id);
    assert_int_equal(read_long(p), 60000);
    stop_and_clean(e, &r);
    env_close(e);
}

/* A sandboxed instance cannot mount a sysfs of its own (its user namespace
 * does not own the network namespace it joins): the host's /sys is bound
 * read-only all the way down, without the host's network devices. */
/* An httpd instance of the sandboxed class, running as `user`. */
static sl_instance_spec_t sandboxed_httpd(img_t *m, const char *user)
{
    img_init(m, user, HTTPD);
    sl_instance_spec_t s = base_spec(&m->img);
    s.profile = &sl_runtimeclass_builtin("sandboxed")->profile;
    return s;
}

static void test_sandboxed_sys_read_only(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    sl_instance_spec_t s = sandboxed_httpd(&m, "nonroot");
    rec_t r;
    start_ready_when(e, s,
                     "grep -qE '^([^ ]+ ){4}/sys ro,' /proc/self/mountinfo && "
                     "! grep -E '^([^ ]+ ){4}/sys(/[^ ]*)? rw' /proc/self/mountinfo && "
                     "[ -z \"$(ls /sys/class/net)\" ] && ! touch /sys/fs/x",
                     &r);
    stop_and_clean(e, &r);
    env_close(e);
}

/* Host ids a subordinate id file gives to a user (rootless containers'
 * ids) are never a sandboxed instance's: the first range goes past them. */
static void test_sandboxed_ids_avoid_subuid(void **state)
{
    env_t *e = env_open("crun");
    sl_autofree char *file = xasprintf("%s/subuid", g_tmp);
    const char *text = "# rootless podman users\nalice:100000:65536\nbob:165536:1\nbad line\n";
    sl_error_t err = {0};
    assert_int_equal(sl_write_file_atomic(file, text, strlen(text), 0644, &err), 0);
    sv_id_ranges_avoid(e->sup, file);
    img_t m;
    sl_instance_spec_t s = sandboxed_httpd(&m, NULL);
    rec_t r;
    start_ready(e, &s, &r);
    assert_int_equal(uid_map_host(r.pid), 100000 + 2 * 65536);
    stop_and_clean(e, &r);
    env_close(e);
}

/* An image USER outside the sandbox's 65536 ids is refused before it runs. */
static void test_sandboxed_user_range(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    sl_instance_spec_t s = sandboxed_httpd(&m, "70000");
    expect_start_fails(e, &s, "outside the sandbox's user namespace");
    env_close(e);
}

/* Run a debug container against pid with stdout captured into *out. */
static int debug_capture(int pid, bool privileged, char *const *argv, char **out, sl_error_t *err)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/debug-out.txt", g_tmp);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    fflush(stdout);
    int saved = dup(1);
    dup2(fd, 1);
    close(fd);
    sl_debug_spec_t d = {
        .state_dir = g_state, .target_pid = pid, .argv = argv, .privileged = privileged};
    int code = -1;
    int rc = sl_debug_run(&d, &code, err);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    *out = read_text(path);
    return rc < 0 ? rc : code;
}

static void test_debug_container(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    rec_t r;
    start_ready(e, &s, &r);
    char *const argv[] = {"sh", "-c",
                          "ps; echo port=$PORT; wget -qO- 127.0.0.1:$PORT/index.html; "
                          "echo host=$(hostname); ls /proc/1/root/www; exit 7",
                          NULL};
    char *out = NULL;
    sl_error_t err = {0};
    int code = debug_capture(r.pid, false, argv, &out, &err);
    printf("  debug output: %s", out);
    if (code < 0)
        fail_msg("debug: %s", err.msg);
    assert_int_equal(code, 7);
    assert_non_null(strstr(out, "httpd"));             /* sees the app's processes */
    assert_non_null(strstr(out, "port=8080"));         /* its contract env */
    assert_non_null(strstr(out, "hello from sluice")); /* its loopback */
    char host[160];
    snprintf(host, sizeof(host), "host=%.63s", r.id); /* its uts namespace */
    assert_non_null(strstr(out, host));
    assert_non_null(strstr(out, "index.html")); /* its filesystem via /proc/1/root */
    free(out);
    /* the app is untouched and the bundle is gone */
    assert_int_equal(sl_instance_state(r.inst), SL_INST_READY);
    assert_int_equal(sl_instance_pid(r.inst), r.pid);
    char *resp = http_get(r.inst, "/index.html");
    assert_non_null(strstr(resp, "hello from sluice"));
    free(resp);
    char p[512];
    snprintf(p, sizeof(p), "%s/debug", g_state);
    glob_t g;
    snprintf(p, sizeof(p), "%s/debug/debug-*", g_state);
    assert_int_equal(glob(p, 0, NULL, &g), GLOB_NOMATCH);
    globfree(&g);
    stop_and_clean(e, &r);
    env_close(e);
}

/* A sandboxed instance refuses a debug container unless privileged. */
static void test_debug_sandboxed(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    sl_instance_spec_t s = sandboxed_httpd(&m, "nonroot");
    rec_t r;
    start_ready(e, &s, &r);
    char *const argv[] = {"sh", "-c", "wget -qO- 127.0.0.1:$PORT/index.html", NULL};
    char *out = NULL;
    sl_error_t err = {0};
    assert_true(debug_capture(r.pid, false, argv, &out, &err) < 0);
    assert_non_null(strstr(err.msg, "--privileged-debug"));
    free(out);
    int code = debug_capture(r.pid, true, argv, &out, &err);
    if (code < 0)
        fail_msg("privileged debug: %s", err.msg);
    assert_int_equal(code, 0);
    assert_non_null(strstr(out, "hello from sluice"));
    free(out);
    stop_and_clean(e, &r);
    env_close(e);
}

static void test_shutdown_many(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    s.grace_ms = 10000; /* fast shutdown must not wait for this */
    rec_t r[3];
    for (int i = 0; i < 3; i++)
        start(e, &s, &r[i]);
    for (int i = 0; i < 3; i++) {
        run_until(&e->loop, &r[i].n_ready, 20000);
        assert_int_equal(r[i].n_ready, 1);
        printf("  instance %d: start -> READY %.1f ms\n", i,
               ms_between(r[i].started_ns, r[i].ready_ns));
    }
    uint64_t t0 = sl_now_ns();
    sl_supervisor_shutdown(e->sup, true, on_done, &e->done);
    sl_error_t err = {0};
    rec_t late;
    assert_null(sl_supervisor_start(e->sup, &s, rec_cb, &late, &err));
    run_until(&e->loop, &e->done, 15000);
    assert_int_equal(e->done, 1);
    printf("  fast shutdown of 3: %.1f ms\n", ms_between(t0, sl_now_ns()));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].n_exited, 1);
        assert_cleaned(r[i].id);
    }
    env_finish(e);
}

static int count_fds(void)
{
    glob_t g;
    int n = 0;
    if (glob("/proc/self/fd/*", 0, NULL, &g) == 0)
        n = (int)g.gl_pathc;
    globfree(&g);
    return n;
}

static void noop_signal(uv_signal_t *h, int sig) {}

static void test_cold_start_timing(void **state)
{
    /* libuv keeps a process-wide pipe once any signal handle existed */
    uv_loop_t warm;
    uv_signal_t sig;
    uv_loop_init(&warm);
    uv_signal_init(&warm, &sig);
    uv_signal_start(&sig, noop_signal, SIGCHLD);
    uv_close((uv_handle_t *)&sig, NULL);
    uv_run(&warm, UV_RUN_DEFAULT);
    uv_loop_close(&warm);
    int fds_before = count_fds();
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    double t[8];
    for (int i = 0; i < 8; i++) {
        rec_t r;
        start(e, &s, &r);
        run_until(&e->loop, &r.n_ready, 20000);
        assert_int_equal(r.n_ready, 1);
        t[i] = ms_between(r.started_ns, r.ready_ns);
        sl_instance_stop(r.inst);
        run_until(&e->loop, &r.n_exited, 15000);
        assert_int_equal(r.n_exited, 1);
    }
    double min = t[0], sum = 0;
    for (int i = 0; i < 8; i++) {
        min = t[i] < min ? t[i] : min;
        sum += t[i];
    }
    printf("  cold start (busybox httpd, crun, 8 runs): min %.1f ms, mean %.1f ms\n", min, sum / 8);
    env_close(e);
    assert_int_equal(count_fds(), fds_before); /* nothing leaks */
}

/* A supervisor that dies without cleaning up leaves a running container,
 * mounts and cgroups; the next one removes them. */
static void test_leftovers_cleaned(void **state)
{
    /* The dead supervisor's container comes to us, as it would to a
     * supervisor run as a service manager's child: a subreaper already
     * (set here too, for when this test runs alone). */
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(pfd[0]);
        uv_loop_t loop;
        uv_loop_init(&loop);
        sl_supervisor_t *sup = NULL;
        sl_error_t err = {0};
        if (sl_supervisor_new(&loop, g_state, "crun", &sup, &err) < 0)
            _exit(2);
        img_t m;
        img_init(&m, NULL, HTTPD);
        sl_instance_spec_t s = base_spec(&m.img);
        rec_t r = {0};
        r.inst = sl_supervisor_start(sup, &s, rec_cb, &r, &err);
        if (!r.inst)
            _exit(3);
        uint64_t deadline = sl_now_ms() + 20000;
        while (!r.n_ready && sl_now_ms() < deadline)
            uv_run(&loop, UV_RUN_ONCE);
        char line[256];
        int n = snprintf(line, sizeof(line), "%d %s\n", r.pid, sl_instance_id(r.inst));
        if (write(pfd[1], line, (size_t)n) != n)
            _exit(4);
        _exit(r.n_ready ? 0 : 5); /* "crash": no cleanup */
    }
    close(pfd[1]);
    char line[256] = {0};
    ssize_t n = read(pfd[0], line, sizeof(line) - 1);
    close(pfd[0]);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(n > 0);
    int pid = 0;
    char id[128] = {0};
    assert_int_equal(sscanf(line, "%d %127s", &pid, id), 2);
    assert_int_equal(kill(pid, 0), 0); /* the container outlived its supervisor */
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/instances/%s", g_state, id);
    assert_true(mounted_below(dir));
    assert_true(count_cgroups(id) > 0);

    env_t *e = env_open("crun");
    assert_false(mounted_below(dir));
    assert_cleaned(id);
    /* the orphaned container was re-parented to us (subreaper) and killed */
    assert_int_equal(waitpid(pid, &status, 0), pid);
    env_close(e);
}

/* ---- probes ----------------------------------------------------------- */

static char *http_status_line(sl_instance_t *inst, const char *path)
{
    char *resp = http_get(inst, path);
    resp[strcspn(resp, "\r\n")] = '\0';
    return resp;
}

/* httpGet readiness: httpd answers at once, /healthz only after 300 ms, so
 * READY must wait for the file (a TCP probe would pass within ~40 ms); then
 * removing it makes the instance unready, re-creating it ready again. */
static void test_readiness_http(void **state)
{
    env_t *e = env_open("crun");
    char *const script[] = {"/bin/sh", "-c",
                            "(sleep 0.3; echo ok > /www/healthz; sleep 0.8; rm /www/healthz; "
                            "sleep 0.8; echo ok > /www/healthz) & "
                            "exec /bin/busybox httpd -f -p 8080 -h /www",
                            NULL};
    img_t m;
    img_init(&m, NULL, script);
    sl_instance_spec_t s = base_spec(&m.img);
    sl_probe_t ready = {.kind = SL_PROBE_HTTP,
                        .path = "/healthz",
                        .period_ms = 50,
                        .timeout_ms = 500,
                        .failure_threshold = 2};
    s.readiness = &ready;
    s.readiness_cb = rec_readiness_cb;
    rec_t r;
    start_ready(e, &s, &r);
    double ms = ms_between(r.started_ns, r.ready_ns);
    printf("  httpGet readiness: READY after %.1f ms\n", ms);
    assert_true(ms >= 300);
    assert_true(sl_instance_serving(r.inst));
    char *line = http_status_line(r.inst, "/healthz");
    printf("  GET /healthz at READY: %s\n", line);
    assert_non_null(strstr(line, " 200"));
    free(line);
    run_until(&e->loop, &r.n_unready, 5000);
    assert_int_equal(r.n_unready, 1);
    assert_false(sl_instance_serving(r.inst));
    assert_int_equal(sl_instance_state(r.inst), SL_INST_READY); /* still running */
    run_until(&e->loop, &r.n_ready_again, 5000);
    assert_int_equal(r.n_ready_again, 1);
    assert_true(sl_instance_serving(r.inst));
    assert_int_equal(r.n_exited, 0);
    assert_int_equal(r.n_ready, 1); /* readiness flips do not repeat READY */
    stop_and_clean(e, &r);
    env_close(e);
}

/* What an httpGet probe sends: the app (nc) logs the request it got. */
static void test_probe_http_request(void **state)
{
    env_t *e = env_open("crun");
    char *const script[] = {"/bin/sh", "-c",
                            "while :; do printf 'HTTP/1.1 204 No Content\\r\\n\\r\\n' | "
                            "nc -l -p 8080; done",
                            NULL};
    img_t m;
    img_init(&m, NULL, script);
    sl_instance_spec_t s = base_spec(&m.img);
    sl_probe_t ready = {.kind = SL_PROBE_HTTP, .path = "/probe-check?x=1"};
    s.readiness = &ready;
    rec_t r;
    start_ready(e, &s, &r);
    assert_true(log_contains(e, &r, "GET /probe-check?x=1 HTTP/1.1\r\n", 2000));
    assert_true(log_contains(e, &r, "Host: 127.0.0.1:8080\r\n", 2000));
    assert_true(log_contains(e, &r, "User-Agent: sluice-probe\r\n", 2000));
    stop_and_clean(e, &r);
    env_close(e);
}

/* A liveness probe that starts failing stops the instance (to be replaced)
 * with the probe's reason. */
static void test_liveness_http(void **state)
{
    env_t *e = env_open("crun");
    char *const script[] = {"/bin/sh", "-c",
                            "echo ok > /www/healthz; (sleep 0.6; rm /www/healthz) & "
                            "exec /bin/busybox httpd -f -p 8080 -h /www",
                            NULL};
    img_t m;
    img_init(&m, NULL, script);
    sl_instance_spec_t s = base_spec(&m.img);
    sl_probe_t live = {.kind = SL_PROBE_HTTP,
                       .path = "/healthz",
                       .period_ms = 100,
                       .timeout_ms = 500,
                       .failure_threshold = 2};
    s.liveness = &live;
    rec_t r;
    start_ready(e, &s, &r);
    wait_exited(e, &r, 10000);
    assert_int_equal(r.n_stopping, 1);
    printf("  reason: %s (%.0f ms after READY)\n", r.reason, ms_between(r.ready_ns, r.exited_ns));
    assert_non_null(strstr(r.reason, "liveness probe failed: "));
    assert_non_null(strstr(r.reason, "status 404"));
    assert_true(ms_between(r.ready_ns, r.exited_ns) >= 400); /* passed while the file was there */
    assert_cleaned(r.id);
    env_close(e);
}

/* exec readiness: a command run in the container by the runtime, once
 * /dev/shm/ready exists (a fresh tmpfs, 1777 with either runtime); it passes only if it runs as the
 * app does (the image's user, the app's capabilities, no_new_privs), never as the runtime's default
 * root. */
static void exec_readiness(const char *runtime, bool sandboxed)
{
    env_t *e = env_open(runtime);
    char *const script[] = {"/bin/sh", "-c",
                            "(sleep 0.3; touch /dev/shm/ready) & "
                            "exec /bin/busybox httpd -f -p 8080 -h /www",
                            NULL};
    img_t m;
    img_init(&m, "nonroot", script);
    sl_instance_spec_t s = base_spec(&m.img);
    s.runtime = runtime;
    if (sandboxed)
        s.profile = &sl_runtimeclass_builtin("sandboxed")->profile;
    rec_t r;
    start_ready_when(e, s,
                     "test -f /dev/shm/ready && [ \"$(id -u)\" = \"$(stat -c %u /proc/1)\" ] && "
                     "[ \"$(grep CapEff /proc/self/status)\" = \"$(grep CapEff /proc/1/status)\" ] "
                     "&& grep -q 'NoNewPrivs:.1' /proc/self/status",
                     &r);
    double ms = ms_between(r.started_ns, r.ready_ns);
    printf("  %s%s exec readiness: READY after %.1f ms\n", runtime, sandboxed ? " sandboxed" : "",
           ms);
    assert_true(ms >= 300);
    stop_and_clean(e, &r);
    env_close(e);
}

static void test_readiness_exec_crun(void **state)
{
    exec_readiness("crun", false);
    exec_readiness("crun", true);
}

static void test_readiness_exec_runc(void **state)
{
    exec_readiness("runc", false);
}

/* Whether some process has both a and b among its arguments. */
static bool process_with_args(const char *a, const char *b)
{
    DIR *d = opendir("/proc");
    assert_non_null(d);
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        char path[288], buf[4096];
        snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        bool has_a = false, has_b = false;
        for (char *arg = buf; arg < buf + n; arg += strlen(arg) + 1) {
            has_a = has_a || strcmp(arg, a) == 0;
            has_b = has_b || strcmp(arg, b) == 0;
        }
        found = has_a && has_b;
    }
    closedir(d);
    return found;
}

/* An exec liveness probe that hangs times out: each attempt's `crun exec`
 * is killed and reaped (none is left behind), and after failure_threshold
 * of them the instance is stopped with the probe's reason. */
static void test_liveness_exec_timeout(void **state)
{
    env_t *e = env_open("crun");
    char *const script[] = {"/bin/sh", "-c", "exec /bin/busybox httpd -f -p 8080 -h /www", NULL};
    img_t m;
    img_init(&m, NULL, script);
    sl_instance_spec_t s = base_spec(&m.img);
    char *const cmd[] = {"/bin/sleep", "4242"};
    sl_probe_t live = {.kind = SL_PROBE_EXEC,
                       .exec_cmd = cmd,
                       .n_exec = 2,
                       .period_ms = 100,
                       .timeout_ms = 300,
                       .failure_threshold = 2};
    s.liveness = &live;
    rec_t r;
    start_ready(e, &s, &r);
    wait_exited(e, &r, 10000);
    printf("  reason: %s (%.0f ms after READY)\n", r.reason, ms_between(r.ready_ns, r.exited_ns));
    assert_non_null(strstr(r.reason, "liveness probe failed: exec probe timed out after 300 ms"));
    assert_true(ms_between(r.ready_ns, r.exited_ns) >= 600); /* two timeouts */
    assert_cleaned(r.id);
    assert_false(process_with_args("/bin/sleep", "4242"));
    assert_false(process_with_args("exec", r.id));
    env_close(e);
}

/* An explicit tcpSocket readiness probe on another port: READY only once
 * something listens there, though PORT answers at once. */
static void test_readiness_tcp_port(void **state)
{
    env_t *e = env_open("crun");
    char *const script[] = {"/bin/sh", "-c",
                            "/bin/busybox httpd -p 8080 -h /www; sleep 0.3; "
                            "exec /bin/busybox httpd -f -p 9090 -h /www",
                            NULL};
    img_t m;
    img_init(&m, NULL, script);
    sl_instance_spec_t s = base_spec(&m.img);
    sl_probe_t ready = {.kind = SL_PROBE_TCP, .port = 9090};
    s.readiness = &ready;
    rec_t r;
    start_ready(e, &s, &r);
    assert_true(ms_between(r.started_ns, r.ready_ns) >= 300);
    stop_and_clean(e, &r);
    env_close(e);
}

static void expect_spec_error(env_t *e, sl_instance_spec_t *s, const char *needle)
{
    sl_error_t err = {0};
    rec_t r = {0};
    assert_null(sl_supervisor_start(e->sup, s, rec_cb, &r, &err));
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, needle));
}

static void test_probe_spec_errors(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    sl_probe_t bad_path = {.kind = SL_PROBE_HTTP, .path = "healthz"};
    s.readiness = &bad_path;
    expect_spec_error(e, &s, "readinessProbe.httpGet.path");
    sl_probe_t no_cmd = {.kind = SL_PROBE_EXEC};
    s.readiness = &no_cmd;
    expect_spec_error(e, &s, "readinessProbe.exec.command");
    s.readiness = NULL;
    sl_probe_t live = {.kind = SL_PROBE_TCP, .success_threshold = 2};
    s.liveness = &live;
    expect_spec_error(e, &s, "livenessProbe.successThreshold must be 1");
    sl_probe_t neg = {.kind = SL_PROBE_TCP, .period_ms = -1};
    s.liveness = &neg;
    expect_spec_error(e, &s, "livenessProbe");
    env_close(e);
}

/* ---- preparation off the loop ----------------------------------------- */

/* Pool threads held busy so that an instance's preparation stays queued. */
typedef struct pool_block {
    uv_sem_t started, release;
    uv_work_t w[4]; /* libuv's default pool size (UV_THREADPOOL_SIZE unset) */
    int done;
} pool_block_t;

static void block_work(uv_work_t *w)
{
    pool_block_t *b = w->data;
    uv_sem_post(&b->started);
    uv_sem_wait(&b->release);
}

static void block_done(uv_work_t *w, int status)
{
    pool_block_t *b = w->data;
    b->done++;
}

static void pool_block(uv_loop_t *loop, pool_block_t *b)
{
    memset(b, 0, sizeof(*b));
    assert_int_equal(uv_sem_init(&b->started, 0), 0);
    assert_int_equal(uv_sem_init(&b->release, 0), 0);
    for (size_t i = 0; i < SL_ARRAY_LEN(b->w); i++) {
        b->w[i].data = b;
        assert_int_equal(uv_queue_work(loop, &b->w[i], block_work, block_done), 0);
    }
    for (size_t i = 0; i < SL_ARRAY_LEN(b->w); i++)
        uv_sem_wait(&b->started);
}

static void pool_unblock(pool_block_t *b)
{
    for (size_t i = 0; i < SL_ARRAY_LEN(b->w); i++)
        uv_sem_post(&b->release);
}

/* A stop while the preparation is still queued: it never runs, nothing is
 * made, STOPPING then EXITED with the reason. */
static void test_stop_while_queued(void **state)
{
    if (getenv("UV_THREADPOOL_SIZE"))
        skip();
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    pool_block_t *b = xmalloc(sizeof(*b));
    pool_block(&e->loop, b);
    rec_t r;
    start(e, &s, &r);
    sl_instance_stop(r.inst);
    assert_int_equal(r.n_stopping, 1);
    pool_unblock(b);
    wait_exited(e, &r, 15000);
    assert_int_equal(r.n_ready, 0);
    assert_non_null(strstr(r.reason, "stopped before it started"));
    assert_cleaned(r.id);
    /* run_until returns once done is non-zero: wait for all four blockers
     * in real time, or a pool thread still waking up is counted as lost. */
    uint64_t deadline = sl_now_ms() + 10000;
    while (b->done < 4 && sl_now_ms() < deadline) {
        usleep(1000);
        uv_run(&e->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(b->done, 4);
    uv_sem_destroy(&b->started);
    uv_sem_destroy(&b->release);
    free(b);
    env_close(e);
}

/* A stop after the bundle was made but before the loop spawned the
 * runtime: no container runs, the mounts and the dir go. */
static void test_stop_after_prepared(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    rec_t r;
    start(e, &s, &r);
    usleep(300 * 1000); /* the pool thread prepares; the loop does not run */
    sl_instance_stop(r.inst);
    wait_exited(e, &r, 15000);
    assert_int_equal(r.n_ready, 0);
    assert_int_equal(r.pid, 0);
    assert_non_null(strstr(r.reason, "stopped before it started"));
    assert_cleaned(r.id);
    env_close(e);
}

/* Shutdown with instances at every stage of preparation: all EXITED and
 * cleaned, then done. */
static void test_shutdown_while_preparing(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    rec_t r[6];
    for (int i = 0; i < 6; i++)
        start(e, &s, &r[i]);
    uv_run(&e->loop, UV_RUN_NOWAIT);
    sl_supervisor_shutdown(e->sup, true, on_done, &e->done);
    run_until(&e->loop, &e->done, 15000);
    assert_int_equal(e->done, 1);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(r[i].n_exited, 1);
        assert_cleaned(r[i].id);
    }
    env_finish(e);
    assert_int_equal(count_zombies(), 0);
}

/* The cold-start breakdown: every milestone set, in order, ending at
 * READY; pool-thread ones still 0 right after the start returns. */
static void test_startup_breakdown(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    rec_t r;
    start(e, &s, &r);
    sl_instance_startup_t t;
    sl_instance_startup(r.inst, &t);
    assert_true(t.started_ns >= r.started_ns);
    assert_int_equal(t.rootfs_ns, 0);
    assert_int_equal(t.spawned_ns, 0);
    assert_int_equal(t.ready_ns, 0);
    run_until(&e->loop, &r.n_ready, 20000);
    assert_int_equal(r.n_ready, 1);
    sl_instance_startup(r.inst, &t);
    uint64_t seq[] = {t.started_ns, t.prep_begin_ns, t.rootfs_ns,  t.netns_ns,
                      t.bundle_ns,  t.spawned_ns,    t.runtime_ns, t.ready_ns};
    for (size_t i = 0; i < SL_ARRAY_LEN(seq); i++) {
        assert_true(seq[i] > 0);
        if (i > 0)
            assert_true(seq[i] >= seq[i - 1]);
    }
    assert_int_equal(t.started_ns, sl_instance_started_ns(r.inst));
    assert_int_equal(t.ready_ns, sl_instance_ready_ns(r.inst));
    printf("  ready in %.1f ms: queue %.2f, rootfs %.2f, netns %.2f, config %.2f, spawn %.2f, "
           "runtime %.1f, app %.1f ms\n",
           ms_between(t.started_ns, t.ready_ns), ms_between(t.started_ns, t.prep_begin_ns),
           ms_between(t.prep_begin_ns, t.rootfs_ns), ms_between(t.rootfs_ns, t.netns_ns),
           ms_between(t.netns_ns, t.bundle_ns), ms_between(t.bundle_ns, t.spawned_ns),
           ms_between(t.spawned_ns, t.runtime_ns), ms_between(t.runtime_ns, t.ready_ns));
    sl_instance_stop(r.inst);
    wait_exited(e, &r, 15000);
    env_close(e);
}

/* ---- loop stall: what starting instances costs every other loop user -- */

typedef struct stall {
    env_t *e;
    const sl_instance_spec_t *spec;
    rec_t r[10];
    int n_started, n_ready;
    uint64_t last_tick_ns, max_late_ns, first_call_ns, max_call_ns, max_call_cpu_ns, sum_late_ns,
        n_ticks;
    uv_timer_t tick, starter;
} stall_t;

static void stall_tick(uv_timer_t *t)
{
    stall_t *st = t->data;
    uint64_t now = sl_now_ns();
    if (st->last_tick_ns) {
        uint64_t gap = now - st->last_tick_ns;
        uint64_t late = gap > 1000000u ? gap - 1000000u : 0;
        st->max_late_ns = late > st->max_late_ns ? late : st->max_late_ns;
        st->sum_late_ns += late;
        st->n_ticks++;
    }
    st->last_tick_ns = now;
    int ready = 0;
    for (int i = 0; i < st->n_started; i++)
        ready += st->r[i].n_ready;
    st->n_ready = ready == (int)SL_ARRAY_LEN(st->r) ? 1 : 0;
}

/* One start every 10 ms from a loop callback, as the controller does. */
static void stall_start_one(uv_timer_t *t)
{
    stall_t *st = t->data;
    if (st->n_started == (int)SL_ARRAY_LEN(st->r)) {
        uv_timer_stop(t);
        return;
    }
    struct timespec c0, c1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    uint64_t t0 = sl_now_ns();
    start(st->e, st->spec, &st->r[st->n_started++]);
    uint64_t d = sl_now_ns() - t0;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    uint64_t cpu = (uint64_t)(c1.tv_sec - c0.tv_sec) * 1000000000u + (uint64_t)c1.tv_nsec -
                   (uint64_t)c0.tv_nsec;
    if (st->n_started > 1 && cpu > st->max_call_cpu_ns)
        st->max_call_cpu_ns = cpu;
    if (st->n_started == 1)
        st->first_call_ns = d; /* may include starting libuv's thread pool */
    else if (d > st->max_call_ns)
        st->max_call_ns = d;
}

/* A 1 ms timer keeps ticking while 10 instances start; its lateness is how
 * long the loop (and so the router) was held up. Printed, never asserted. */
static void test_loop_stall(void **state)
{
    env_t *e = env_open("crun");
    img_t m;
    img_init(&m, NULL, HTTPD);
    sl_instance_spec_t s = base_spec(&m.img);
    stall_t *st = xcalloc(1, sizeof(*st));
    st->e = e;
    st->spec = &s;
    uv_timer_init(&e->loop, &st->tick);
    uv_timer_init(&e->loop, &st->starter);
    st->tick.data = st->starter.data = st;
    uv_timer_start(&st->tick, stall_tick, 1, 1);
    uv_timer_start(&st->starter, stall_start_one, 10, 10);
    run_until(&e->loop, &st->n_ready, 30000);
    assert_int_equal(st->n_ready, 1);
    printf("  loop stall starting 10 instances: tick lateness max %.2f ms, mean %.3f ms; "
           "sl_supervisor_start call: first %.2f ms, longest of the rest %.2f ms (cpu %.2f ms)\n",
           (double)st->max_late_ns / 1e6,
           st->n_ticks ? (double)st->sum_late_ns / (double)st->n_ticks / 1e6 : 0.0,
           (double)st->first_call_ns / 1e6, (double)st->max_call_ns / 1e6,
           (double)st->max_call_cpu_ns / 1e6);
    uv_close((uv_handle_t *)&st->tick, NULL);
    uv_close((uv_handle_t *)&st->starter, NULL);
    for (size_t i = 0; i < SL_ARRAY_LEN(st->r); i++)
        sl_instance_stop(st->r[i].inst);
    for (size_t i = 0; i < SL_ARRAY_LEN(st->r); i++) {
        run_until(&e->loop, &st->r[i].n_exited, 15000);
        assert_int_equal(st->r[i].n_exited, 1);
    }
    env_close(e);
    free(st);
}

/* ---- instance logs ---------------------------------------------------- */

/* A log of `lines` numbered 103-byte lines at dir/name; returns its path. */
static char *write_log(const char *dir, const char *name, int lines)
{
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    for (int i = 0; i < lines; i++)
        fprintf(f, "line %08d %088d\n", i, 0);
    fclose(f);
    return path;
}

/* The log's data: from its first byte that is not in a punched-out hole. */
static char *read_data(const char *path, size_t *len)
{
    sl_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    off_t from = sl_data_from(fd, 0);
    *len = (size_t)(st.st_size - from);
    char *text = xmalloc(*len + 1);
    assert_int_equal(pread(fd, text, *len, from), (ssize_t)*len);
    text[*len] = '\0';
    return text;
}

/* What trimming keeps: the newest lines, ending with the last one, at
 * most `keep` bytes (a copy starts at a line, the others at a block). */
static void check_trimmed(const char *path, int lines, int64_t keep, sv_trim_how_t how)
{
    size_t len = 0;
    sl_autofree char *text = read_data(path, &len);
    assert_true(len > 0 && (int64_t)len <= keep);
    assert_int_equal(memchr(text, '\0', len), NULL); /* no hole read */
    char last[32];
    snprintf(last, sizeof(last), "line %08d ", lines - 1);
    const char *tail = text + len - 103;
    assert_memory_equal(tail, last, strlen(last));
    assert_null(strstr(text, "line 00000000 "));
    if (how == SV_TRIM_COPY)
        assert_memory_equal(text, "line ", 5);
}

static void trim_in(const char *dir, sv_trim_how_t expect)
{
    const int lines = 200000; /* 20.6 MB */
    const int64_t keep = 10 << 20;
    sl_autofree char *path = write_log(dir, "rev-00001-abcde.log", lines);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    int64_t size = st.st_size;
    sv_log_trim_t r;
    sl_error_t err = {0};
    if (expect == SV_TRIM_COPY) {
        sl_autoclose int fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC);
        assert_int_equal(sv_log_trim_copy(fd, path, keep, &r, &err), 0);
    } else {
        assert_int_equal(sv_log_trim(path, keep, keep, &r, &err), 0);
    }
    assert_int_equal(r.how, expect);
    assert_true(r.dropped >= size - keep);
    assert_int_equal(stat(path, &st), 0);
    /* Collapsed or copied: shorter. Punched: as long, the blocks freed. */
    assert_int_equal(st.st_size, expect == SV_TRIM_PUNCH ? size : size - r.dropped);
    assert_true((int64_t)st.st_blocks * 512 <= size - r.dropped + 65536);
    check_trimmed(path, lines, keep, expect);
    /* Under the cap: nothing to do, holes not counted. */
    assert_int_equal(sv_log_trim(path, keep, keep, &r, &err), 0);
    assert_int_equal(r.dropped, 0);
    assert_int_equal(r.how, SV_TRIM_NONE);
    unlink(path);
}

/* A container appending lines while its log is trimmed, again and again:
 * after the first (cut) line, every line it wrote since is there, in
 * order, through its last. */
static void trim_while_writing(const char *dir)
{
    sl_autofree char *path = xasprintf("%s/rev-00001-write.log", dir);
    sl_autoclose int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char line[128];
        for (int i = 0; i < 400000; i++) {
            int n = snprintf(line, sizeof(line), "line %08d %088d\n", i, 0);
            if (write(fd, line, (size_t)n) != n)
                _exit(1);
        }
        _exit(0);
    }
    int trims = 0;
    for (int status; waitpid(pid, &status, WNOHANG) == 0;) {
        sv_log_trim_t r;
        sl_error_t err = {0};
        assert_int_equal(sv_log_trim(path, 1 << 20, 512 << 10, &r, &err), 0);
        trims += r.dropped > 0;
        usleep(2000);
    }
    printf("  %d trims while writing 41 MB\n", trims);
    assert_true(trims > 0);
    size_t len = 0;
    sl_autofree char *text = read_data(path, &len);
    char *p = memchr(text, '\n', len);
    assert_non_null(p);
    int next = -1, n = 0;
    for (p++; p < text + len; p += 103, n++) {
        int i = -1;
        assert_int_equal(sscanf(p, "line %08d ", &i), 1);
        assert_true(next < 0 || i == next);
        assert_int_equal(p[102], '\n');
        next = i + 1;
    }
    assert_int_equal(next, 400000);
    assert_true(n > 0 && p == text + len);
    unlink(path);
}

/* The filesystem under /tmp (ext4 here) collapses the range; tmpfs
 * punches it out; the copy, for filesystems that can do neither, is tried
 * on tmpfs too. */
static void test_log_trim(void **state)
{
    struct statfs fs;
    if (statfs(g_tmp, &fs) == 0 && (fs.f_type == 0xEF53 || fs.f_type == 0x58465342)) {
        trim_in(g_tmp, SV_TRIM_COLLAPSE); /* ext4, xfs */
        trim_while_writing(g_tmp);
    }
    char shm[] = "/dev/shm/sluice-trim-XXXXXX";
    assert_non_null(mkdtemp(shm));
    trim_in(shm, SV_TRIM_PUNCH);
    trim_in(shm, SV_TRIM_COPY);
    trim_while_writing(shm);
    rmdir(shm);
}

static void set_mtime(const char *path, int64_t ns)
{
    struct timespec ts[2] = {{ns / 1000000000, ns % 1000000000},
                             {ns / 1000000000, ns % 1000000000}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static bool exists(const char *dir, const char *name)
{
    sl_autofree char *p = xasprintf("%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

/* Exited instances' logs: gone after the retention, at most N per
 * revision (the newest), and never a live one's or a just-made one's. */
static void test_log_sweep(void **state)
{
    sl_autofree char *root = xasprintf("%s/sweep-logs", g_tmp);
    sl_autofree char *dir = xasprintf("%s/default/svc", root);
    sl_error_t err = {0};
    assert_int_equal(sl_mkdir_p(dir, 0700, &err), 0);
    const int64_t s = 1000000000, now = 1700000000 * s;
    struct {
        const char *name;
        int64_t age_s;
        bool kept;
    } logs[] = {
        {"svc-00001-aaaaa.log", 7200, false}, /* past the retention */
        {"svc-00002-live1.log", 7200, true},  /* live */
        {"svc-00002-bbbbb.log", 10, true},    /* newest two of rev 2 */
        {"svc-00002-ccccc.log", 20, true},    {"svc-00002-ddddd.log", 30, false}, /* third newest */
        {"svc-00003-eeeee.log", 40, true}, /* its revision's only one */
        {"svc-00003-fffff.log", -5, true}, /* made after the snapshot */
    };
    for (size_t i = 0; i < SL_ARRAY_LEN(logs); i++) {
        sl_autofree char *p = write_log(dir, logs[i].name, 1);
        set_mtime(p, now - logs[i].age_s * s);
    }
    /* A deleted service's last log, and a namespace with only such a one. */
    sl_autofree char *gone = xasprintf("%s/default/gone", root);
    sl_autofree char *other = xasprintf("%s/other/old", root);
    assert_int_equal(sl_mkdir_p(gone, 0700, &err), 0);
    assert_int_equal(sl_mkdir_p(other, 0700, &err), 0);
    sl_autofree char *p1 = write_log(gone, "gone-00001-aaaaa.log", 1);
    sl_autofree char *p2 = write_log(other, "old-00001-aaaaa.log", 1);
    set_mtime(p1, now - 7200 * s);
    set_mtime(p2, now - 7200 * s);
    char *live[] = {"svc-00002-live1"};
    sl_log_limits_t lim = {.max_bytes = 0, .retention_ns = 3600 * s, .per_revision = 2};
    assert_int_equal(sv_log_sweep(root, live, 1, &lim, now, now), 4);
    for (size_t i = 0; i < SL_ARRAY_LEN(logs); i++)
        if (exists(dir, logs[i].name) != logs[i].kept)
            fail_msg("%s: expected %s", logs[i].name, logs[i].kept ? "kept" : "deleted");
    /* Folders left empty are gone; the others stay. */
    sl_autofree char *ns = xasprintf("%s/default", root);
    assert_false(exists(ns, "gone"));
    assert_false(exists(root, "other"));
    assert_true(exists(ns, "svc"));
    /* No limits: nothing goes. */
    sl_log_limits_t none = {0};
    assert_int_equal(sv_log_sweep(root, NULL, 0, &none, now + 3600 * s, now + 3600 * s), 0);
    sl_rm_rf(root, &err);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    sl_log_set_level(getenv("TEST_DEBUG") ? SL_LOG_DEBUG : SL_LOG_WARN);
    if (getenv("TEST_FILTER")) /* e.g. TEST_FILTER='test_limits' */
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    // clang-format off
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_lifecycle_crun, env_teardown),
        cmocka_unit_test_teardown(test_lifecycle_runc, env_teardown),
        cmocka_unit_test_teardown(test_env_contract, env_teardown),
        cmocka_unit_test_teardown(test_layers, env_teardown),
        cmocka_unit_test_teardown(test_user_nonroot, env_teardown),
        cmocka_unit_test_teardown(test_unknown_user, env_teardown),
        cmocka_unit_test_teardown(test_no_command, env_teardown),
        cmocka_unit_test_teardown(test_reap_after_helper, env_teardown),
        cmocka_unit_test_teardown(test_exit_status, env_teardown),
        cmocka_unit_test_teardown(test_bad_command_crun, env_teardown),
        cmocka_unit_test_teardown(test_bad_command_runc, env_teardown),
        cmocka_unit_test_teardown(test_runtime_process, env_teardown),
        cmocka_unit_test_teardown(test_sigterm_ignored, env_teardown),
        cmocka_unit_test_teardown(test_startup_timeout, env_teardown),
        cmocka_unit_test_teardown(test_out_of_memory_is_named, env_teardown),
        cmocka_unit_test_teardown(test_limits, env_teardown),
        cmocka_unit_test_teardown(test_sandboxed, env_teardown),
        cmocka_unit_test_teardown(test_default_class, env_teardown),
        cmocka_unit_test_teardown(test_overhead, env_teardown),
        cmocka_unit_test_teardown(test_sandboxed_user_range, env_teardown),
        cmocka_unit_test_teardown(test_debug_container, env_teardown),
        cmocka_unit_test_teardown(test_debug_sandboxed, env_teardown),
        cmocka_unit_test_teardown(test_readiness_http, env_teardown),
        cmocka_unit_test_teardown(test_probe_http_request, env_teardown),
        cmocka_unit_test_teardown(test_liveness_http, env_teardown),
        cmocka_unit_test_teardown(test_readiness_exec_crun, env_teardown),
        cmocka_unit_test_teardown(test_readiness_exec_runc, env_teardown),
        cmocka_unit_test_teardown(test_liveness_exec_timeout, env_teardown),
        cmocka_unit_test_teardown(test_readiness_tcp_port, env_teardown),
        cmocka_unit_test_teardown(test_probe_spec_errors, env_teardown),
        cmocka_unit_test_teardown(test_shutdown_many, env_teardown),
        cmocka_unit_test_teardown(test_cold_start_timing, env_teardown),
        cmocka_unit_test_teardown(test_sandboxed_sys_read_only, env_teardown),
        cmocka_unit_test_teardown(test_sandboxed_ids_avoid_subuid, env_teardown),
        cmocka_unit_test_teardown(test_leftovers_cleaned, env_teardown),
        cmocka_unit_test_teardown(test_loop_stall, env_teardown),
        cmocka_unit_test_teardown(test_stop_while_queued, env_teardown),
        cmocka_unit_test_teardown(test_stop_after_prepared, env_teardown),
        cmocka_unit_test_teardown(test_shutdown_while_preparing, env_teardown),
        cmocka_unit_test_teardown(test_startup_breakdown, env_teardown),
        cmocka_unit_test(test_log_trim),
        cmocka_unit_test(test_log_sweep),
    };
    // clang-format on
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
