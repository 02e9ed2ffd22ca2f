/*
 * cmd_misc.c — `sluice version` and `sluice doctor` (host checks: OCI
 * runtimes, cgroup layout, overlayfs, namespaces; the VM's halt polling).
 */
#include "cli.h"
#include "version.h"

#include <stdio.h>
#include <sys/stat.h>
#include <sys/vfs.h>

int sl_cmd_version(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("Usage: sluice version\n\nPrint the version of this binary.\n");
        return 0;
    }
    printf("sluice %s (%s)\n", sl_version, sl_git_rev);
    return 0;
}

static bool on_path(const char *bin)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    sl_autofree char *copy = xstrdup(path);
    char *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        sl_autofree char *p = xasprintf("%s/%s", d, bin);
        if (access(p, X_OK) == 0)
            return true;
    }
    return false;
}

static bool file_has(const char *path, const char *needle)
{
    char *buf = NULL;
    size_t len = 0;
    if (sl_read_file(path, 1 << 20, &buf, &len, NULL) < 0)
        return false;
    bool found = strstr(buf, needle) != NULL;
    free(buf);
    return found;
}

static int check(bool ok, const char *what, const char *fix)
{
    printf("[%s] %s\n", ok ? " ok " : "FAIL", what);
    if (!ok && fix)
        printf("       %s\n", fix);
    return ok ? 0 : 1;
}

/* Read a small sysfs value into buf without its newline; false if absent. */
static bool read_sys(const char *path, char *buf, size_t cap)
{
    char *data = NULL;
    size_t len = 0;
    if (sl_read_file(path, 4096, &data, &len, NULL) < 0)
        return false;
    while (len && (data[len - 1] == '\n' || data[len - 1] == ' '))
        len--;
    snprintf(buf, cap, "%.*s", (int)len, data);
    free(data);
    return true;
}

/* Latency, not correctness: on a KVM guest whose cpuidle driver is haltpoll
 * with polling off, an idle vCPU halts at once, and each hop of a request
 * that wakes one pays a halt exit and a wake-up IPI (bench/RESULTS.md). */
static void halt_poll_info(void)
{
    char driver[64], governor[64], ns[32];
    /* guest_halt_poll_ns belongs to the haltpoll governor, which runs with
     * the haltpoll driver. */
    if (!read_sys("/sys/devices/system/cpu/cpuidle/current_driver", driver, sizeof(driver)) ||
        strcmp(driver, "haltpoll") ||
        (!read_sys("/sys/devices/system/cpu/cpuidle/current_governor", governor,
                   sizeof(governor)) &&
         !read_sys("/sys/devices/system/cpu/cpuidle/current_governor_ro", governor,
                   sizeof(governor))) ||
        strcmp(governor, "haltpoll") ||
        !read_sys("/sys/module/haltpoll/parameters/guest_halt_poll_ns", ns, sizeof(ns)))
        return;
    printf("[info] cpuidle: haltpoll, guest_halt_poll_ns %s\n", ns);
    if (!strcmp(ns, "0"))
        printf("       an idle vCPU halts at once: requests at low concurrency pay VM exits at\n"
               "       every hop. The kernel's default polls first: echo 200000 >\n"
               "       /sys/module/haltpoll/parameters/guest_halt_poll_ns, or run\n"
               "       `sluice serve --busy-poll 50us` (the router alone polls)\n");
}

int sl_cmd_doctor(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("Usage: sluice doctor\n\nCheck that this host can run sluice instances.\n");
        return 0;
    }
    int bad = 0;
    bad += check(geteuid() == 0, "running as root (namespaces, mounts, cgroups)",
                 "run `sluice serve` as root");
    bool crun = on_path("crun"), runc = on_path("runc");
    bad += check(crun || runc, "an OCI runtime is installed (crun or runc)",
                 "apt-get install crun runc");
    printf("       crun: %s, runc: %s\n", crun ? "yes" : "no", runc ? "yes" : "no");
    bad += check(file_has("/proc/filesystems", "overlay"), "overlayfs is available",
                 "modprobe overlay");
    struct stat st;
    bool ns = stat("/proc/self/ns/net", &st) == 0 && stat("/proc/self/ns/pid", &st) == 0;
    bad += check(ns, "network and pid namespaces are available", NULL);
    struct statfs fs;
    bool v2_only = statfs("/sys/fs/cgroup", &fs) == 0 && fs.f_type == 0x63677270;
    bool hybrid = !v2_only && stat("/sys/fs/cgroup/unified/cgroup.controllers", &st) == 0;
    if (v2_only) {
        check(true, "cgroups: unified (v2)", NULL);
    } else if (hybrid) {
        bool hugetlb = stat("/sys/fs/cgroup/hugetlb/cgroup.procs", &st) == 0;
        printf("[info] cgroups: hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)\n");
        bad += check(!crun || hugetlb,
                     "hugetlb has a v1 hierarchy (crun refuses hybrid mode otherwise)",
                     "mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup "
                     "/sys/fs/cgroup/hugetlb   (or run `make deps`, or use --runtime runc)");
    } else {
        check(true, "cgroups: legacy (v1)", NULL);
    }
    bad += check(stat("/sys/fs/cgroup/memory", &st) == 0 || v2_only,
                 "the memory cgroup controller is mounted", NULL);
    if (on_path("slirp4netns"))
        printf("[info] outbound networking (serve --egress, sluice.dev/egress): slirp4netns "
               "is installed\n");
    else
        printf("[info] outbound networking (serve --egress, sluice.dev/egress) needs "
               "slirp4netns: apt-get install slirp4netns\n");
    halt_poll_info();
    printf("%s\n", bad ? "Some checks failed." : "This host can run sluice.");
    return bad ? 1 : 0;
}
