/*
 * seccomp_profiles.c — the default (Docker-like) and sandboxed seccomp
 * filters as OCI linux.seccomp JSON, and the count of syscalls each admits.
 * See seccomp_profiles.h and docs/sandbox.md.
 */
#include "seccomp_profiles.h"

#include <errno.h>

/* clone(2) flags that create namespaces: NEWNS | NEWCGROUP | NEWUTS |
 * NEWIPC | NEWUSER | NEWPID | NEWNET. clone is admitted only when none of
 * them is set (arg 0 & mask == 0), as in Docker's profile. */
#define CLONE_NS_MASK 0x7E020000ull

#define AF_UNIX_    1
#define AF_INET_    2
#define AF_INET6_   10
#define AF_NETLINK_ 16
#define AF_VSOCK_   40

/* ---- the default profile ---------------------------------------------- */

/* Docker's unconditional allow-list (moby profiles/seccomp/default.json),
 * minus io_uring (removed there too). Includes the 32-bit names Docker
 * lists for the compat architectures. */
static const char *const default_allow[] = {
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset", "chdir",
    "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
    "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
    "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchown", "fchown32", "fchownat", "fcntl",
    "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr",
    "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64",
    "futex", "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid",
    "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit",
    "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area",
    "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit",
    "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
    "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr",
    "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
    "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
    "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2",
    "pause", "pidfd_getfd", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv",
    "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64",
    "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv",
    "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
    "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity",
    "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
    "seccomp", "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
    "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32",
    "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid", "setsockopt",
    "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl",
    "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask",
    "sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64",
    "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee",
    "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
    "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
    "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
    /* Docker admits these on kernels >= 4.8 or for the capabilities the
     * default class keeps (CAP_SYS_CHROOT). */
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "chroot", "arch_prctl", "modify_ldt",
    "personality", NULL};

/* ---- the sandboxed profile -------------------------------------------- */

/* Groups in the order docs/sandbox.md explains them. */
static const char *const sandboxed_allow[] = {
    /* process life and identity */
    "execve", "exit", "exit_group", "wait4", "waitid", "getpid", "getppid", "gettid",
    "set_tid_address", "arch_prctl", "prctl", "rseq", "set_robust_list", "get_robust_list",
    "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid", "getresgid", "setuid",
    "setgid", "setresuid", "setresgid", "setgroups", "setsid", "setpgid", "getpgid", "getpgrp",
    "getsid", "umask", "uname", "sysinfo", "getrusage", "times", "getcpu", "capget",
    /* threads and processes (clone: filtered below) */
    "fork", "vfork", "futex", "futex_waitv", "sched_yield", "sched_getaffinity",
    "sched_setaffinity", "sched_getparam", "sched_getscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "membarrier",
    /* memory */
    "mmap", "munmap", "mprotect", "mremap", "brk", "madvise", "msync", "mincore", "memfd_create",
    /* files and directories (writable only under /tmp; the root is read-only) */
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "open",
    "openat", "close", "close_range", "lseek", "stat", "fstat", "lstat", "newfstatat", "statx",
    "statfs", "fstatfs", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents",
    "getdents64", "getcwd", "chdir", "fchdir", "fcntl", "dup", "dup2", "dup3", "pipe", "pipe2",
    "ioctl", "flock", "fsync", "fdatasync", "ftruncate", "truncate", "rename", "renameat",
    "renameat2", "unlink", "unlinkat", "mkdir", "mkdirat", "rmdir", "symlink", "symlinkat", "link",
    "linkat", "chmod", "fchmod", "fchmodat", "utimensat", "fadvise64", "sendfile", "getxattr",
    "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
    /* readiness: epoll, poll, select, eventfd, timerfd, signalfd */
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    "poll", "ppoll", "select", "pselect6", "eventfd", "eventfd2", "timerfd_create",
    "timerfd_settime", "timerfd_gettime", "signalfd", "signalfd4",
    /* sockets (socket itself: filtered by family below) */
    "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername",
    "setsockopt", "getsockopt", "shutdown", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg",
    "recvmmsg",
    /* signals */
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend", "rt_sigpending",
    "rt_sigtimedwait", "sigaltstack", "kill", "tgkill", "tkill", "pause", "alarm",
    "restart_syscall",
    /* clocks and timers */
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "timer_create", "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",
    "getitimer", "setitimer",
    /* resources and randomness */
    "getrlimit", "setrlimit", "prlimit64", "getrandom", "getpriority", NULL};

/* Named so their failure reads "Operation not permitted", not ENOSYS. */
static const char *const sandboxed_eperm[] = {"mount",
                                              "umount2",
                                              "pivot_root",
                                              "chroot",
                                              "unshare",
                                              "setns",
                                              "ptrace",
                                              "bpf",
                                              "kexec_load",
                                              "kexec_file_load",
                                              "init_module",
                                              "finit_module",
                                              "delete_module",
                                              "keyctl",
                                              "add_key",
                                              "request_key",
                                              "perf_event_open",
                                              "userfaultfd",
                                              "open_by_handle_at",
                                              "name_to_handle_at",
                                              "process_vm_readv",
                                              "process_vm_writev",
                                              "swapon",
                                              "swapoff",
                                              "reboot",
                                              "acct",
                                              "quotactl",
                                              "lookup_dcookie",
                                              "iopl",
                                              "ioperm",
                                              "fsopen",
                                              "fsconfig",
                                              "fsmount",
                                              "fspick",
                                              "move_mount",
                                              "open_tree",
                                              "mount_setattr",
                                              "syslog",
                                              "settimeofday",
                                              "clock_settime",
                                              "adjtimex",
                                              "sethostname",
                                              "setdomainname",
                                              "personality",
                                              "kcmp",
                                              "fanotify_init",
                                              "seccomp",
                                              "chown",
                                              "fchown",
                                              "fchownat",
                                              "lchown",
                                              "mknod",
                                              "mknodat",
                                              NULL};

/* ENOSYS so libc and runtimes fall back: clone3's flags are unreadable to
 * seccomp; io_uring and openat2 have classic equivalents. */
static const char *const sandboxed_enosys[] = {
    "clone3", "io_uring_setup", "io_uring_enter", "io_uring_register", "openat2", NULL};

/* Names that exist only on 32-bit ABIs (not counted as native). */
static bool compat_only(const char *n)
{
    static const char *const names[] = {
        "_llseek",    "_newselect",   "socketcall", "ipc",       "sigreturn",  "sigprocmask",
        "waitpid",    "ugetrlimit",   "mmap2",      "fcntl64",   "fstat64",    "stat64",
        "lstat64",    "fstatat64",    "statfs64",   "fstatfs64", "truncate64", "ftruncate64",
        "sendfile64", "fadvise64_64", "recv",       "send",      NULL};
    size_t len = strlen(n);
    if (len > 2 && strcmp(n + len - 2, "32") == 0)
        return true;
    if (len > 7 && strcmp(n + len - 7, "_time64") == 0)
        return true;
    if (strcmp(n, "clock_gettime64") == 0 || strcmp(n, "futex_time64") == 0 ||
        strcmp(n, "clock_adjtime64") == 0 || strcmp(n, "clock_getres_time64") == 0)
        return true;
    for (size_t i = 0; names[i]; i++)
        if (strcmp(n, names[i]) == 0)
            return true;
    return false;
}

static json_t *names_json(const char *const *v)
{
    json_t *a = json_array();
    for (size_t i = 0; v[i]; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *rule(json_t *names, const char *action, int errno_ret, json_t *args)
{
    json_t *r = json_pack("{s:o,s:s}", "names", names, "action", action);
    if (errno_ret > 0)
        json_object_set_new(r, "errnoRet", json_integer(errno_ret));
    if (args)
        json_object_set_new(r, "args", args);
    return r;
}

static json_t *arg(unsigned index, uint64_t value, uint64_t value2, const char *op)
{
    return json_pack("{s:i,s:I,s:I,s:s}", "index", (int)index, "value", (json_int_t)value,
                     "valueTwo", (json_int_t)value2, "op", op);
}

static json_t *clone_rule(void)
{
    /* x86_64, arm64: flags are argument 0 (s390 swaps 0 and 1). */
    return rule(json_pack("[s]", "clone"), "SCMP_ACT_ALLOW", 0,
                json_pack("[o]", arg(0, CLONE_NS_MASK, 0, "SCMP_CMP_MASKED_EQ")));
}

static json_t *socket_family_rule(int family)
{
    return rule(json_pack("[s]", "socket"), "SCMP_ACT_ALLOW", 0,
                json_pack("[o]", arg(0, (uint64_t)family, 0, "SCMP_CMP_EQ")));
}

static json_t *native_arches(bool with_compat)
{
#if defined(__x86_64__)
    return with_compat ? json_pack("[s,s,s]", "SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
                       : json_pack("[s]", "SCMP_ARCH_X86_64");
#elif defined(__aarch64__)
    return with_compat ? json_pack("[s,s]", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")
                       : json_pack("[s]", "SCMP_ARCH_AARCH64");
#else
    SL_UNUSED(with_compat);
    return json_array(); /* the runtime's native architecture only */
#endif
}

static json_t *default_json(void)
{
    json_t *rules = json_array();
    json_array_append_new(rules, rule(names_json(default_allow), "SCMP_ACT_ALLOW", 0, NULL));
    json_array_append_new(rules, clone_rule());
    /* Any socket family but AF_VSOCK, as moby's profile: vsock is not
     * confined by network namespaces and reaches the hypervisor's host. */
    json_array_append_new(rules, rule(json_pack("[s]", "socket"), "SCMP_ACT_ALLOW", 0,
                                      json_pack("[o]", arg(0, AF_VSOCK_, 0, "SCMP_CMP_NE"))));
    json_array_append_new(rules, rule(json_pack("[s]", "clone3"), "SCMP_ACT_ERRNO", ENOSYS, NULL));
    return json_pack("{s:s,s:i,s:o,s:o}", "defaultAction", "SCMP_ACT_ERRNO", "defaultErrnoRet",
                     EPERM, "architectures", native_arches(true), "syscalls", rules);
}

static json_t *sandboxed_json(void)
{
    json_t *rules = json_array();
    json_array_append_new(rules, rule(names_json(sandboxed_allow), "SCMP_ACT_ALLOW", 0, NULL));
    json_array_append_new(rules, clone_rule());
    json_array_append_new(rules, socket_family_rule(AF_UNIX_));
    json_array_append_new(rules, socket_family_rule(AF_INET_));
    json_array_append_new(rules, socket_family_rule(AF_INET6_));
    /* NETLINK_ROUTE (protocol 0) only: libc's getaddrinfo and Go's net
     * package list interfaces through it; the netns has only lo. */
    json_array_append_new(rules, rule(json_pack("[s]", "socket"), "SCMP_ACT_ALLOW", 0,
                                      json_pack("[o,o]", arg(0, AF_NETLINK_, 0, "SCMP_CMP_EQ"),
                                                arg(2, 0, 0, "SCMP_CMP_EQ"))));
    json_array_append_new(rules, rule(names_json(sandboxed_eperm), "SCMP_ACT_ERRNO", EPERM, NULL));
    json_array_append_new(rules,
                          rule(names_json(sandboxed_enosys), "SCMP_ACT_ERRNO", ENOSYS, NULL));
    return json_pack("{s:s,s:i,s:o,s:o}", "defaultAction", "SCMP_ACT_ERRNO", "defaultErrnoRet",
                     ENOSYS, "architectures", native_arches(false), "syscalls", rules);
}

json_t *sl_seccomp_profile_json(sl_seccomp_profile_t p)
{
    switch (p) {
    case SL_SECCOMP_DEFAULT:
        return default_json();
    case SL_SECCOMP_SANDBOXED:
        return sandboxed_json();
    default:
        return NULL;
    }
}

/* Distinct names admitted by any SCMP_ACT_ALLOW rule of the profile. */
static size_t count_allowed(const json_t *profile, bool native_only)
{
    json_t *seen = json_object();
    size_t i, j;
    json_t *r, *n;
    json_array_foreach(json_object_get(profile, "syscalls"), i, r)
    {
        const char *action = json_string_value(json_object_get(r, "action"));
        if (!action || strcmp(action, "SCMP_ACT_ALLOW") != 0)
            continue;
        json_array_foreach(json_object_get(r, "names"), j, n)
        {
            const char *name = json_string_value(n);
            if (name && !(native_only && compat_only(name)))
                json_object_set_new(seen, name, json_true());
        }
    }
    size_t count = json_object_size(seen);
    json_decref(seen);
    return count;
}

size_t sl_seccomp_profile_count(sl_seccomp_profile_t p)
{
    json_t *j = sl_seccomp_profile_json(p);
    if (!j)
        return 0;
    size_t n = count_allowed(j, true);
    json_decref(j);
    return n;
}

bool sl_seccomp_profile_allows(sl_seccomp_profile_t p, const char *name)
{
    json_t *j = sl_seccomp_profile_json(p);
    bool found = false;
    size_t i, k;
    json_t *r, *n;
    json_array_foreach(json_object_get(j, "syscalls"), i, r)
    {
        const char *action = json_string_value(json_object_get(r, "action"));
        if (!action || strcmp(action, "SCMP_ACT_ALLOW") != 0)
            continue;
        json_array_foreach(json_object_get(r, "names"), k, n)
        {
            found = found || (json_string_value(n) && strcmp(json_string_value(n), name) == 0);
        }
    }
    json_decref(j);
    return found;
}

const char *sl_seccomp_profile_name(sl_seccomp_profile_t p)
{
    switch (p) {
    case SL_SECCOMP_NONE:
        return "none";
    case SL_SECCOMP_DEFAULT:
        return "default";
    case SL_SECCOMP_SANDBOXED:
        return "sandboxed";
    }
    return NULL;
}

int sl_seccomp_profile_from_name(const char *name, sl_seccomp_profile_t *out)
{
    for (int p = SL_SECCOMP_NONE; p <= SL_SECCOMP_SANDBOXED; p++) {
        if (name && strcmp(name, sl_seccomp_profile_name((sl_seccomp_profile_t)p)) == 0) {
            *out = (sl_seccomp_profile_t)p;
            return 0;
        }
    }
    return -1;
}
