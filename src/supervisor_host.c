/*
 * supervisor_host.c — the supervisor's dealings with the host that need
 * none of its state: cleaning up after an earlier run at startup, reaping
 * orphaned runtime helpers, finding binaries, and reading log tails for
 * exit reasons. See supervisor_int.h.
 */
#include "supervisor_int.h"
#include "oci_spec.h"
#include "rootfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#define CGROUP_ROOT   "/sys/fs/cgroup"
#define CGROUP_PARENT "sluice"
#define TAIL_BYTES    16384
#define TAIL_LINE_MAX 240

extern char **environ;

char *sv_find_in_path(const char *name)
{
    if (!name || !*name)
        return NULL;
    if (strchr(name, '/'))
        return access(name, X_OK) == 0 ? xstrdup(name) : NULL;
    const char *path = getenv("PATH");
    sl_autofree char *copy = xstrdup(path && *path ? path
                                                   : "/usr/local/sbin:/usr/local/bin:"
                                                     "/usr/sbin:/usr/bin:/sbin:/bin");
    char *save = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        char *full = xasprintf("%s/%s", dir, name);
        struct stat st;
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0)
            return full;
        free(full);
    }
    return NULL;
}

#define NOFILE_WANTED        1048576u
#define CAP_SYS_RESOURCE_BIT 24

static bool have_cap(int bit)
{
    sl_autofree char *status = NULL;
    if (sl_read_file("/proc/self/status", 1u << 16, &status, NULL, NULL) < 0)
        return false;
    const char *eff = strstr(status, "CapEff:");
    if (!eff)
        return false;
    unsigned long long mask = strtoull(eff + 7, NULL, 16);
    return (mask >> bit) & 1;
}

uint64_t sv_nofile_limit(void)
{
    uint64_t want = NOFILE_WANTED;
    int64_t nr_open = sl_nr_open();
    if (nr_open > 0 && (uint64_t)nr_open < want)
        want = (uint64_t)nr_open;
    if (have_cap(CAP_SYS_RESOURCE_BIT))
        return want;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
        want = rl.rlim_max;
    return want;
}

bool sv_valid_runtime_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 32 || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

/* Run argv to completion with stdio on /dev/null. Blocking; startup only. */
static int run_sync(char *const argv[])
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -rc;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -errno;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

typedef void (*dir_fn)(const char *dir, const char *name, void *arg);

/* Call fn for every subdirectory of dir (not . or ..). */
static void each_subdir(const char *dir, dir_fn fn, void *arg)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..")))
            continue;
        sl_autofree char *p = xasprintf("%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            fn(dir, de->d_name, arg);
    }
    closedir(d);
}

typedef struct rt_ctx {
    const char *runtime_bin; /* NULL when the runtime is gone from PATH */
} rt_ctx_t;

static void delete_container(const char *root, const char *id, void *arg)
{
    rt_ctx_t *ctx = arg;
    if (ctx->runtime_bin) {
        char *argv[] = {
            (char *)ctx->runtime_bin, "--root", (char *)root, "delete", "-f", (char *)id, NULL};
        int rc = run_sync(argv);
        sl_info("supervisor", "removed leftover container %s (%s delete -f: %d)", id, root, rc);
    }
    sl_autofree char *p = xasprintf("%s/%s", root, id);
    sl_error_t err = {0};
    if (sl_rm_rf(p, &err) < 0)
        sl_warn("supervisor", "%s", err.msg);
    sv_remove_cgroups(id);
}

static void clean_runtime_root(const char *runtimes_dir, const char *name, void *arg)
{
    rt_ctx_t ctx = {NULL};
    sl_autofree char *bin = sv_valid_runtime_name(name) ? sv_find_in_path(name) : NULL;
    ctx.runtime_bin = bin;
    sl_autofree char *root = xasprintf("%s/%s", runtimes_dir, name);
    each_subdir(root, delete_container, &ctx);
}

static void clean_instance_dir(const char *inst_root, const char *id, void *arg)
{
    sv_remove_cgroups(id);
    sl_autofree char *p = xasprintf("%s/%s", inst_root, id);
    sl_error_t err = {0};
    if (sl_rm_rf(p, &err) < 0)
        sl_warn("supervisor", "removing leftover instance dir: %s", err.msg);
    else
        sl_info("supervisor", "removed leftover instance %s", id);
}

int sv_cleanup_leftovers(const char *state_dir, sl_error_t *err)
{
    sl_autofree char *rt_root = xasprintf("%s/runtime", state_dir);
    sl_autofree char *inst_root = xasprintf("%s/instances", state_dir);
    each_subdir(rt_root, clean_runtime_root, NULL);
    if (sl_rootfs_umount_under(inst_root, err) < 0)
        return -err->code;
    each_subdir(inst_root, clean_instance_dir, NULL);
    return 0;
}

static void kill_cgroup_procs(const char *cg)
{
    sl_autofree char *procs_path = xasprintf("%s/cgroup.procs", cg);
    sl_autofree char *procs = NULL;
    if (sl_read_file(procs_path, 1u << 20, &procs, NULL, NULL) < 0)
        return;
    char *save = NULL;
    for (char *l = strtok_r(procs, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        int64_t pid;
        if (sl_parse_int64(l, 1, INT32_MAX, &pid) == 0)
            kill((pid_t)pid, SIGKILL);
    }
}

static void remove_cgroup_dir(const char *cg)
{
    struct stat st;
    if (stat(cg, &st) < 0)
        return;
    for (int i = 0; i < 200; i++) { /* dying tasks leave the cgroup within ms */
        if (rmdir(cg) == 0 || errno == ENOENT)
            return;
        if (errno != EBUSY)
            break;
        kill_cgroup_procs(cg);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    sl_warn("supervisor", "could not remove cgroup %s: %s", cg, strerror(errno));
}

static void remove_cgroup_in(const char *root, const char *hierarchy, void *arg)
{
    sl_autofree char *cg = xasprintf("%s/%s/" CGROUP_PARENT "/%s", root, hierarchy, (char *)arg);
    remove_cgroup_dir(cg);
}

/* "oom_kill N" from a memory controller file (v1 memory.oom_control, v2
 * memory.events); -1 when there is none to read. */
static long oom_kills_in(const char *path)
{
    char buf[512];
    sl_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (!strncmp(line, "oom_kill ", 9))
            return strtol(line + 9, NULL, 10);
    return -1;
}

/* An instance id that names one cgroup directory under /sluice. */
static bool cgroup_name_ok(const char *id)
{
    return id && *id && !strchr(id, '/') && id[0] != '.';
}

long sv_oom_kills(const char *id)
{
    if (!cgroup_name_ok(id))
        return -1;
    sl_autofree char *v1 =
        xasprintf(CGROUP_ROOT "/memory/" CGROUP_PARENT "/%s/memory.oom_control", id);
    long n = oom_kills_in(v1);
    if (n < 0) {
        sl_autofree char *v2 = xasprintf(CGROUP_ROOT "/" CGROUP_PARENT "/%s/memory.events", id);
        n = oom_kills_in(v2);
    }
    return n;
}

int sv_cpu_quota_open(const char *id, bool *v2)
{
    if (!cgroup_name_ok(id))
        return -EINVAL;
    sl_autofree char *v1 = xasprintf(CGROUP_ROOT "/cpu/" CGROUP_PARENT "/%s/cpu.cfs_quota_us", id);
    int fd = open(v1, O_WRONLY | O_CLOEXEC);
    *v2 = fd < 0;
    if (fd < 0) {
        sl_autofree char *max = xasprintf(CGROUP_ROOT "/" CGROUP_PARENT "/%s/cpu.max", id);
        fd = open(max, O_WRONLY | O_CLOEXEC);
    }
    return fd < 0 ? -errno : fd;
}

int sv_cpu_quota_write(int fd, bool v2, int64_t quota_us)
{
    char buf[64];
    int n = v2 ? (quota_us < 0 ? snprintf(buf, sizeof(buf), "max %d", SL_CPU_PERIOD_US)
                               : snprintf(buf, sizeof(buf), "%lld %d", (long long)quota_us,
                                          SL_CPU_PERIOD_US))
               : snprintf(buf, sizeof(buf), "%lld", (long long)quota_us);
    return pwrite(fd, buf, (size_t)n, 0) == n ? 0 : -errno;
}

void sv_remove_cgroups(const char *id)
{
    if (!cgroup_name_ok(id))
        return;
    each_subdir(CGROUP_ROOT, remove_cgroup_in, (void *)id);
    sl_autofree char *v2 = xasprintf(CGROUP_ROOT "/" CGROUP_PARENT "/%s", id);
    remove_cgroup_dir(v2);
}

static bool pid_in(const pid_t *v, size_t n, pid_t p)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == p)
            return true;
    return false;
}

/* State and comm of pid from /proc/PID/stat; false when gone. */
static bool proc_stat(pid_t pid, char *state, char *comm, size_t comm_len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    sl_autofree char *text = NULL;
    if (sl_read_file(path, 4096, &text, NULL, NULL) < 0)
        return false;
    char *open = strchr(text, '(');
    char *close = strrchr(text, ')');
    if (!open || !close || close < open || close[1] != ' ')
        return false;
    size_t n = (size_t)(close - open - 1);
    if (n >= comm_len)
        n = comm_len - 1;
    memcpy(comm, open + 1, n);
    comm[n] = '\0';
    *state = close[2];
    return true;
}

/* Whether pid is a process of a pid namespace below ours ("NSpid:" lists
 * more than one pid) other than its init (innermost pid 1): a container's
 * process that is neither its main process, which sluice waits for itself
 * (possibly before it knows the pid: the runtime's helper hands it over
 * first), nor one sluice spawned. */
static bool container_orphan(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    sl_autofree char *text = NULL;
    if (sl_read_file(path, 1u << 16, &text, NULL, NULL) < 0)
        return false;
    const char *l = strstr(text, "\nNSpid:");
    if (!l)
        return false;
    l += strlen("\nNSpid:");
    int fields = 0;
    long inner = 0;
    while (*l && *l != '\n') {
        char *end;
        long v = strtol(l, &end, 10);
        if (end == l)
            break;
        fields++;
        inner = v;
        l = end;
    }
    return fields > 1 && inner != 1;
}

/*
 * Reap pid if it is a zombie nobody else waits for: a runtime-named one (a
 * runtime's helper, exited after its child was reparented to us), or a
 * container's process reparented to us when the runtime that started it
 * went (an exec probe's command after its `RT exec` was killed). The
 * latter must go: while any process of a pid namespace is unreaped, its
 * init cannot finish exiting, and the instance would never be seen gone.
 */
static void maybe_reap(pid_t pid, const char *const *runtimes, size_t n_runtimes)
{
    char state = 0, comm[32];
    if (!proc_stat(pid, &state, comm, sizeof(comm)) || state != 'Z')
        return;
    if (container_orphan(pid)) {
        waitpid(pid, NULL, WNOHANG);
        return;
    }
    for (size_t i = 0; i < n_runtimes; i++) {
        size_t len = strlen(runtimes[i]);
        if (len > 15)
            len = 15; /* comm is cut to 15 bytes */
        if (strncmp(comm, runtimes[i], len) == 0) {
            waitpid(pid, NULL, WNOHANG);
            return;
        }
    }
}

void sv_reap_orphans(const char *const *runtimes, size_t n_runtimes, const pid_t *keep,
                     size_t n_keep)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        sl_autofree char *path = xasprintf("/proc/self/task/%s/children", de->d_name);
        sl_autofree char *kids = NULL;
        if (sl_read_file(path, 1u << 20, &kids, NULL, NULL) < 0)
            continue;
        char *save = NULL;
        for (char *t = strtok_r(kids, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
            int64_t pid;
            if (sl_parse_int64(t, 1, INT32_MAX, &pid) < 0 || pid_in(keep, n_keep, (pid_t)pid))
                continue;
            maybe_reap((pid_t)pid, runtimes, n_runtimes);
        }
    }
    closedir(d);
}

int sv_wait_exit(int pidfd, pid_t pid, sv_exit_t *out)
{
    siginfo_t si;
    int r;
    do {
        memset(&si, 0, sizeof(si));
        r = pidfd >= 0 ? waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG)
                       : waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0 && si.si_pid == 0)
        return SV_EXIT_PENDING; /* our child, still running */
    if (r == 0) {
        out->code = si.si_code == CLD_EXITED ? si.si_status : 0;
        out->sig = si.si_code == CLD_EXITED ? 0 : si.si_status;
        return SV_EXIT_DONE;
    }
    if (errno != ECHILD)
        return -errno;
    /* Not our child (yet). While the process (or its zombie) exists, the
     * runtime's helper still parents it; once reaped elsewhere it is gone.
     * Without a pidfd the pid may have been reused: take it as gone. */
    if (pidfd >= 0 && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0)
        return SV_EXIT_PENDING;
    return -ECHILD;
}

char *sv_exit_text(int rc, const sv_exit_t *ex)
{
    if (rc < 0)
        return xasprintf("exited (status unavailable: %s)", strerror(-rc));
    if (ex->sig)
        return xasprintf("killed by signal %d", ex->sig);
    return xasprintf("exited with status %d", ex->code);
}

/* Read at most the last TAIL_BYTES of path. */
static char *read_tail(const char *path, bool *cut)
{
    sl_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return NULL;
    off_t off = sl_data_from(fd, st.st_size > TAIL_BYTES ? st.st_size - TAIL_BYTES : 0);
    *cut = off > 0;
    char *buf = xmalloc(TAIL_BYTES + 1);
    ssize_t n = pread(fd, buf, TAIL_BYTES, off);
    if (n <= 0) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

char *sv_log_tail(const char *path, int max_lines, const char *skip_in)
{
    bool cut = false;
    sl_autofree char *buf = read_tail(path, &cut);
    if (!buf)
        return NULL;
    char *start = buf;
    if (cut) { /* the first line is probably partial */
        char *nl = strchr(buf, '\n');
        start = nl ? nl + 1 : buf + strlen(buf);
    }
    char *lines[64];
    int n = 0;
    if (max_lines > (int)SL_ARRAY_LEN(lines))
        max_lines = (int)SL_ARRAY_LEN(lines);
    char *save = NULL;
    for (char *l = strtok_r(start, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        size_t len = strlen(l);
        while (len > 0 && (l[len - 1] == '\r' || l[len - 1] == ' ' || l[len - 1] == '\t'))
            l[--len] = '\0';
        /* sluice's own end-of-instance lines are not the app's */
        if (len == 0 || (skip_in && strstr(skip_in, l)) || !strncmp(l, SV_LOG_END_PREFIX, 18))
            continue;
        if (len > TAIL_LINE_MAX)
            l[TAIL_LINE_MAX] = '\0';
        if (n == max_lines) {
            memmove(lines, lines + 1, (size_t)(n - 1) * sizeof(char *));
            n--;
        }
        lines[n++] = l;
    }
    if (n == 0)
        return NULL;
    size_t total = 1;
    for (int i = 0; i < n; i++)
        total += strlen(lines[i]) + 3;
    char *out = xmalloc(total);
    size_t pos = 0;
    for (int i = 0; i < n; i++)
        pos += (size_t)snprintf(out + pos, total - pos, "%s%s", i ? " | " : "", lines[i]);
    return out;
}

char *sv_runtime_errors(const char *path)
{
    bool cut = false;
    sl_autofree char *buf = read_tail(path, &cut);
    if (!buf)
        return NULL;
    char *out = NULL;
    char *save = NULL;
    for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_t *j = json_loads(l, 0, NULL);
        const char *level = json_string_value(json_object_get(j, "level"));
        const char *msg = json_string_value(json_object_get(j, "msg"));
        if (level && msg && !strcmp(level, "error") && (!out || !strstr(out, msg))) {
            char *joined = out ? xasprintf("%s; %s", out, msg) : xstrdup(msg);
            free(out);
            out = joined;
        }
        json_decref(j);
    }
    return out;
}
