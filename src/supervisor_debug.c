/*
 * supervisor_debug.c — ephemeral debug containers (kubectl debug --target).
 *
 * A throwaway bundle under STATE/debug/<id>/ whose container joins a running
 * instance's pid, network, ipc and uts namespaces by path
 * (/proc/<pid>/ns/…) and gets its own mount namespace with a toolbox root:
 * busybox-static with its applets, or the layers of an image (overlay with a
 * tmpfs upper, so the image is never written). It runs `RT run` in the
 * foreground on the caller's terminal or stdio, then deletes everything.
 * The instance is not touched: nothing of its own changes, and when its pid
 * namespace ends the kernel ends the debug container with it.
 *
 * Its runtime root is STATE/debug/.runtime, apart from the supervisor's, so
 * a daemon restart's leftover cleanup does not kill a live debug session.
 */
#include "oci_spec.h"
#include "rootfs.h"
#include "seccomp_profiles.h"
#include "supervisor.h"
#include "supervisor_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define MOD              "debug"
#define TOOLBOX_BIN      "/bin/busybox"
#define APPLETS_MAX      (64u << 10)
#define DEBUG_SCRATCH    (256LL << 20)
#define CONTRACT_ENV_MAX (1u << 20)

extern char **environ;

/* Run argv with stdout captured (at most max bytes). Returns exit status or
 * < 0. */
static int capture(char *const *argv, char **out, size_t max)
{
    *out = NULL;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (rc != 0) {
        close(pfd[0]);
        return -rc;
    }
    size_t len = 0, cap = 4096;
    char *buf = xmalloc(cap + 1);
    ssize_t n;
    while ((n = read(pfd[0], buf + len, cap - len)) > 0 || (n < 0 && errno == EINTR)) {
        if (n < 0)
            continue;
        len += (size_t)n;
        if (len == cap && cap < max) {
            cap = cap * 2 < max ? cap * 2 : max;
            buf = xrealloc(buf, cap + 1);
        } else if (len == cap) {
            break;
        }
    }
    buf[len] = '\0';
    close(pfd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* BUNDLE/rootfs: busybox and a symlink per applet, plus the mount points. */
static int make_toolbox(const char *rootfs, sl_error_t *err)
{
    static const char *const dirs[] = {"",     "/bin", "/proc", "/dev",
                                       "/sys", "/tmp", "/etc",  "/root"};
    for (size_t i = 0; i < SL_ARRAY_LEN(dirs); i++) {
        sl_autofree char *d = xasprintf("%s%s", rootfs, dirs[i]);
        if (mkdir(d, 0755) < 0 && errno != EEXIST)
            return sl_error_errno(err, errno, "mkdir %s", d);
    }
    sl_autofree char *data = NULL;
    size_t len = 0;
    if (sl_read_file(TOOLBOX_BIN, 64u << 20, &data, &len, err) < 0)
        return sl_error_wrap(err, "the debug toolbox needs busybox-static");
    sl_autofree char *bb = xasprintf("%s/bin/busybox", rootfs);
    if (sl_write_file_atomic(bb, data, len, 0755, err) < 0)
        return -err->code;
    sl_autofree char *list = NULL;
    char *const argv[] = {TOOLBOX_BIN, "--list", NULL};
    if (capture(argv, &list, APPLETS_MAX) != 0 || !list)
        return sl_error_set(err, EIO, "%s --list failed", TOOLBOX_BIN);
    char *save = NULL;
    for (char *a = strtok_r(list, "\n", &save); a; a = strtok_r(NULL, "\n", &save)) {
        if (!*a || strchr(a, '/') || strcmp(a, "busybox") == 0)
            continue;
        sl_autofree char *link = xasprintf("%s/bin/%s", rootfs, a);
        if (symlink("busybox", link) < 0 && errno != EEXIST)
            return sl_error_errno(err, errno, "symlink %s", link);
    }
    sl_autofree char *passwd = xasprintf("%s/etc/passwd", rootfs);
    static const char pw[] = "root:x:0:0:root:/root:/bin/sh\n";
    return sl_write_file_atomic(passwd, pw, sizeof(pw) - 1, 0644, err);
}

/* Is pid in the initial user namespace (identity uid map)? */
static int target_userns(int pid, bool *own_userns, sl_error_t *err)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/uid_map", pid);
    sl_autofree char *map = NULL;
    if (sl_read_file(path, 4096, &map, NULL, err) < 0)
        return sl_error_wrap(err, "instance process %d", pid);
    unsigned long a = 1, b = 1, c = 0;
    *own_userns =
        !(sscanf(map, "%lu %lu %lu", &a, &b, &c) == 3 && a == 0 && b == 0 && c == 4294967295ul);
    return 0;
}

/* PATH plus the app's contract vars (PORT, K_*) from its environment, so
 * `wget 127.0.0.1:$PORT` works inside; TERM when on a terminal. */
static char **debug_env(int pid, bool terminal)
{
    size_t n = 0, cap = 8;
    char **env = xcalloc(cap, sizeof(char *));
    env[n++] = xstrdup(SL_OCI_DEFAULT_PATH);
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/environ", pid);
    sl_autofree char *data = NULL;
    size_t len = 0;
    if (sl_read_file(path, CONTRACT_ENV_MAX, &data, &len, NULL) == 0) {
        for (size_t off = 0; off < len; off += strlen(data + off) + 1) {
            const char *kv = data + off;
            if ((strncmp(kv, "PORT=", 5) == 0 || strncmp(kv, "K_", 2) == 0) && n + 3 < cap)
                env[n++] = xstrdup(kv);
        }
    }
    const char *term = getenv("TERM");
    if (terminal)
        env[n++] = xasprintf("TERM=%s", term && *term ? term : "xterm");
    env[n] = NULL;
    return env;
}

static void debug_id(int pid, char *out, size_t len)
{
    char sfx[6];
    sl_random_alnum(sfx, 5);
    snprintf(out, len, "debug-%d-%s", pid, sfx);
}

static int write_config(const sl_debug_spec_t *s, const char *bundle, const char *id,
                        sl_error_t *err)
{
    char ns[4][64];
    static const char *const kinds[] = {"pid", "net", "ipc", "uts"};
    for (size_t i = 0; i < 4; i++)
        snprintf(ns[i], sizeof(ns[i]), "/proc/%d/ns/%s", s->target_pid, kinds[i]);
    static const char *const argv_sh[] = {"sh", NULL};
    char **env = debug_env(s->target_pid, s->terminal);
    sl_autofree char *cgroup = xasprintf("/sluice/%s", id);
    static const char *const extra_caps[] = {"CAP_SYS_PTRACE", NULL};
    json_t *seccomp = sl_seccomp_profile_json(SL_SECCOMP_DEFAULT);
    sl_oci_user_t root = {0};
    sl_oci_params_t p = {
        .args = s->argv && s->argv[0] ? s->argv : (char *const *)argv_sh,
        .env = env,
        .cwd = "/",
        .user = &root,
        .rootfs = "rootfs",
        .netns_path = ns[1],
        .pid_ns_path = ns[0],
        .ipc_ns_path = ns[2],
        .uts_ns_path = ns[3],
        .cgroups_path = cgroup,
        .memory_limit = s->memory_limit,
        .cpu_millis = s->cpu_millis,
        .tmp_size = 64 << 20,
        .nofile = (int64_t)sv_nofile_limit(),
        .terminal = s->terminal,
        .seccomp = seccomp,
        .extra_caps = extra_caps,
        .annotations = {{"dev.sluice.debug-target", NULL}},
    };
    char target[32];
    snprintf(target, sizeof(target), "%d", s->target_pid);
    p.annotations[0][1] = target;
    int rc = sl_oci_spec_write(bundle, &p, err);
    json_decref(seccomp);
    sl_strv_free(env);
    return rc;
}

/* `RT run` in the foreground on our stdio; returns its exit status. */
static int run_foreground(const char *rt_bin, const char *rt_root, const char *bundle,
                          const char *id, int *exit_code, sl_error_t *err)
{
    char *const argv[] = {(char *)rt_bin, "--root",       (char *)rt_root, "run",
                          "--bundle",     (char *)bundle, (char *)id,      NULL};
    struct sigaction ign = {.sa_handler = SIG_IGN}, old_int, old_quit;
    /* ^C belongs to the debug shell (its pty) or is forwarded by the
     * runtime; this process waits it out. */
    sigaction(SIGINT, &ign, &old_int);
    sigaction(SIGQUIT, &ign, &old_quit);
    pid_t pid;
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t def;
    sigemptyset(&def);
    sigaddset(&def, SIGINT);
    sigaddset(&def, SIGQUIT);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawn(&pid, rt_bin, NULL, &at, argv, environ);
    posix_spawnattr_destroy(&at);
    if (rc != 0) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGQUIT, &old_quit, NULL);
        return sl_error_set(err, rc, "spawning %s: %s", rt_bin, strerror(rc));
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGQUIT, &old_quit, NULL);
    *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return 0;
}

static void cleanup(const char *rt_bin, const char *rt_root, const char *bundle, const char *id)
{
    char *const argv[] = {(char *)rt_bin, "--root", (char *)rt_root, "delete", "-f",
                          (char *)id,     NULL};
    sl_autofree char *out = NULL;
    capture(argv, &out, 4096);
    sv_remove_cgroups(id);
    sl_error_t err = {0};
    sl_rootfs_umount_under(bundle, &err);
    if (sl_rm_rf(bundle, &err) < 0)
        sl_warn(MOD, "%s", err.msg);
}

static int prepare_root(const sl_debug_spec_t *s, const char *bundle, sl_error_t *err)
{
    sl_autofree char *rootfs = xasprintf("%s/rootfs", bundle);
    if (s->n_layers == 0)
        return make_toolbox(rootfs, err);
    /* an overlay with a tmpfs upper: the image's layers stay as they are */
    return sl_rootfs_mount(bundle, s->layers, s->n_layers, DEBUG_SCRATCH, err);
}

int sl_debug_run(const sl_debug_spec_t *s, int *exit_code, sl_error_t *err)
{
    *exit_code = -1;
    if (!s->state_dir || s->target_pid <= 1)
        return sl_error_set(err, EINVAL, "debug: no state dir or target pid");
    const char *runtime = s->runtime ? s->runtime : "crun";
    if (!sv_valid_runtime_name(runtime))
        return sl_error_set(err, EINVAL, "bad runtime name '%s'", runtime);
    sl_autofree char *rt_bin = sv_find_in_path(runtime);
    if (!rt_bin)
        return sl_error_set(err, ENOENT, "runtime '%s' not found on PATH", runtime);
    bool own_userns = false;
    if (target_userns(s->target_pid, &own_userns, err) < 0)
        return -err->code;
    if (own_userns && !s->privileged)
        return sl_error_set(err, EPERM,
                            "the instance runs in the sandbox (its own user namespace): a debug "
                            "container with host root and CAP_SYS_PTRACE beside it would undo "
                            "the sandbox; pass --privileged-debug to do it anyway");
    char id[64];
    debug_id(s->target_pid, id, sizeof(id));
    sl_autofree char *debug_root = xasprintf("%s/debug", s->state_dir);
    sl_autofree char *rt_root = xasprintf("%s/.runtime", debug_root);
    sl_autofree char *bundle = xasprintf("%s/%s", debug_root, id);
    if (sl_mkdir_p(rt_root, 0700, err) < 0 || sl_mkdir_p(bundle, 0700, err) < 0)
        return -err->code;
    int rc = prepare_root(s, bundle, err);
    if (rc == 0)
        rc = write_config(s, bundle, id, err);
    if (rc == 0)
        rc = run_foreground(rt_bin, rt_root, bundle, id, exit_code, err);
    cleanup(rt_bin, rt_root, bundle, id);
    return rc;
}
