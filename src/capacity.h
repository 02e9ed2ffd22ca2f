/*
 * capacity.h — the node's allocatable cpu and memory and what instances
 * have reserved of it.
 *
 * An instance's footprint is its requests (sluice: its cpu/memory limits)
 * plus its runtime class's overhead.podFixed, as Kubernetes counts pod
 * overhead. Placement reserves the footprint before an instance starts and
 * releases it once the instance has exited; an instance that does not fit
 * is refused with the numbers. Not thread-safe: use from the loop thread.
 */
#ifndef SL_CAPACITY_H
#define SL_CAPACITY_H

#include "common.h"

/* Kept back from the machine when no capacity is given, for sluice itself,
 * the runtime and the host (like kube-reserved + system-reserved). */
#define SL_CAPACITY_RESERVE_CPU_MILLIS 100
#define SL_CAPACITY_RESERVE_MEMORY     (512LL << 20)

typedef struct sl_capacity {
    int64_t alloc_cpu_millis; /* allocatable */
    int64_t alloc_memory;     /* bytes */
    int64_t used_cpu_millis;
    int64_t used_memory;
    size_t n_reserved; /* reservations held */
} sl_capacity_t;

/* The machine's cpus (millis, from sysconf online cpus) and memory
 * (MemTotal from /proc/meminfo). */
int sl_capacity_machine(int64_t *cpu_millis, int64_t *memory, sl_error_t *err);

/* Allocatable = cpu_millis / memory when > 0, else the machine's minus the
 * reserve above (never below zero). */
int sl_capacity_init(sl_capacity_t *cap, int64_t cpu_millis, int64_t memory, sl_error_t *err);

/* An instance's footprint: requests + overhead. A request of 0 (no limit)
 * counts as 0. */
void sl_capacity_footprint(int64_t cpu_millis, int64_t memory, int64_t overhead_cpu_millis,
                           int64_t overhead_memory, int64_t *fp_cpu, int64_t *fp_memory);

/* Does (cpu, memory) fit in what is free? */
bool sl_capacity_fits(const sl_capacity_t *cap, int64_t cpu_millis, int64_t memory);

/* Reserve (cpu, memory) or fail with ENOSPC and a message carrying the
 * numbers: "needs cpu 1100m memory 300Mi, free cpu 200m memory 1Gi". */
int sl_capacity_reserve(sl_capacity_t *cap, int64_t cpu_millis, int64_t memory, sl_error_t *err);

/* Give back a reservation (clamped at zero). */
void sl_capacity_release(sl_capacity_t *cap, int64_t cpu_millis, int64_t memory);

/* How many more instances of this footprint fit now (for capping the
 * autoscaler's desired scale); INT64_MAX when the footprint is zero. */
int64_t sl_capacity_max_fit(const sl_capacity_t *cap, int64_t cpu_millis, int64_t memory);

/* "1100m" / "2" and "300Mi" / "1Gi" / "123456" into buf. Returns buf. */
char *sl_format_cpu(int64_t millis, char *buf, size_t len);
char *sl_format_memory(int64_t bytes, char *buf, size_t len);

#endif
