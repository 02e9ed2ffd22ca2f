/*
 * capacity.c — node allocatable resources and reservations. See capacity.h.
 */
#include "capacity.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

int sl_capacity_machine(int64_t *cpu_millis, int64_t *memory, sl_error_t *err)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return sl_error_errno(err, errno, "sysconf(_SC_NPROCESSORS_ONLN)");
    *cpu_millis = (int64_t)n * 1000;
    sl_autofree char *info = NULL;
    if (sl_read_file("/proc/meminfo", 1 << 16, &info, NULL, err) < 0)
        return -err->code;
    const char *p = strstr(info, "MemTotal:");
    long long kb = 0;
    if (!p || sscanf(p, "MemTotal: %lld kB", &kb) != 1 || kb <= 0)
        return sl_error_set(err, EINVAL, "/proc/meminfo: no MemTotal");
    *memory = (int64_t)kb * 1024;
    return 0;
}

int sl_capacity_init(sl_capacity_t *cap, int64_t cpu_millis, int64_t memory, sl_error_t *err)
{
    memset(cap, 0, sizeof(*cap));
    if (cpu_millis < 0 || memory < 0)
        return sl_error_set(err, EINVAL, "capacity: negative cpu or memory");
    if (cpu_millis == 0 || memory == 0) {
        int64_t mc, mm;
        if (sl_capacity_machine(&mc, &mm, err) < 0)
            return -err->code;
        if (cpu_millis == 0)
            cpu_millis =
                mc > SL_CAPACITY_RESERVE_CPU_MILLIS ? mc - SL_CAPACITY_RESERVE_CPU_MILLIS : 0;
        if (memory == 0)
            memory = mm > SL_CAPACITY_RESERVE_MEMORY ? mm - SL_CAPACITY_RESERVE_MEMORY : 0;
    }
    cap->alloc_cpu_millis = cpu_millis;
    cap->alloc_memory = memory;
    return 0;
}

void sl_capacity_footprint(int64_t cpu_millis, int64_t memory, int64_t overhead_cpu_millis,
                           int64_t overhead_memory, int64_t *fp_cpu, int64_t *fp_memory)
{
    *fp_cpu =
        (cpu_millis > 0 ? cpu_millis : 0) + (overhead_cpu_millis > 0 ? overhead_cpu_millis : 0);
    *fp_memory = (memory > 0 ? memory : 0) + (overhead_memory > 0 ? overhead_memory : 0);
}

static int64_t free_of(int64_t alloc, int64_t used)
{
    return alloc > used ? alloc - used : 0;
}

bool sl_capacity_fits(const sl_capacity_t *cap, int64_t cpu_millis, int64_t memory)
{
    return cpu_millis <= free_of(cap->alloc_cpu_millis, cap->used_cpu_millis) &&
           memory <= free_of(cap->alloc_memory, cap->used_memory);
}

int sl_capacity_reserve(sl_capacity_t *cap, int64_t cpu_millis, int64_t memory, sl_error_t *err)
{
    if (cpu_millis < 0 || memory < 0)
        return sl_error_set(err, EINVAL, "capacity: negative reservation");
    if (!sl_capacity_fits(cap, cpu_millis, memory)) {
        char c1[32], m1[32], c2[32], m2[32];
        return sl_error_set(
            err, ENOSPC, "needs cpu %s memory %s, free cpu %s memory %s",
            sl_format_cpu(cpu_millis, c1, sizeof(c1)), sl_format_memory(memory, m1, sizeof(m1)),
            sl_format_cpu(free_of(cap->alloc_cpu_millis, cap->used_cpu_millis), c2, sizeof(c2)),
            sl_format_memory(free_of(cap->alloc_memory, cap->used_memory), m2, sizeof(m2)));
    }
    cap->used_cpu_millis += cpu_millis;
    cap->used_memory += memory;
    cap->n_reserved++;
    return 0;
}

void sl_capacity_release(sl_capacity_t *cap, int64_t cpu_millis, int64_t memory)
{
    cap->used_cpu_millis =
        cap->used_cpu_millis > cpu_millis ? cap->used_cpu_millis - cpu_millis : 0;
    cap->used_memory = cap->used_memory > memory ? cap->used_memory - memory : 0;
    if (cap->n_reserved > 0)
        cap->n_reserved--;
}

int64_t sl_capacity_max_fit(const sl_capacity_t *cap, int64_t cpu_millis, int64_t memory)
{
    int64_t n = INT64_MAX;
    if (cpu_millis > 0)
        n = free_of(cap->alloc_cpu_millis, cap->used_cpu_millis) / cpu_millis;
    if (memory > 0) {
        int64_t m = free_of(cap->alloc_memory, cap->used_memory) / memory;
        n = m < n ? m : n;
    }
    return n;
}

char *sl_format_cpu(int64_t millis, char *buf, size_t len)
{
    if (millis % 1000 == 0)
        snprintf(buf, len, "%" PRId64, millis / 1000);
    else
        snprintf(buf, len, "%" PRId64 "m", millis);
    return buf;
}

char *sl_format_memory(int64_t bytes, char *buf, size_t len)
{
    static const struct {
        const char *sfx;
        int64_t mul;
    } u[] = {{"Ti", 1LL << 40}, {"Gi", 1LL << 30}, {"Mi", 1LL << 20}, {"Ki", 1LL << 10}};
    for (size_t i = 0; i < SL_ARRAY_LEN(u); i++) {
        if (bytes >= u[i].mul && bytes % u[i].mul == 0) {
            snprintf(buf, len, "%" PRId64 "%s", bytes / u[i].mul, u[i].sfx);
            return buf;
        }
    }
    snprintf(buf, len, "%" PRId64, bytes); /* exact: it may be parsed back */
    return buf;
}
