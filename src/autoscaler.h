/*
 * autoscaler.h — Knative KPA decisions for one revision.
 *
 * The router knows every request in flight and every request queued, so
 * the controller feeds the exact concurrency here whenever it changes; the
 * autoscaler integrates it over time into buckets (no scraping, no lag) and
 * on each tick answers how many instances the revision wants:
 *
 *   desired = ceil(observed concurrency / (target × utilisation))
 *
 * or, with Knative's "rps" metric, the same over requests per second: the
 * controller reports each arrival, counted into a second ring of buckets.
 *
 * averaged over the stable window (default 60 s) and the panic window (10 %
 * of it). Panic starts when the panic-window demand reaches the panic
 * threshold (200 %) of current capacity; while panicking the revision never
 * scales down, and panic ends after a stable window without the threshold
 * being crossed. Scale-up and scale-down rates bound each step, min/max
 * scale clamp the result, and the revision goes to zero only when the
 * stable window saw no demand at all and it has been idle for the
 * scale-to-zero grace period (or the retention period, if longer).
 * Pure logic over a monotonic nanosecond clock; no I/O.
 */
#ifndef SL_AUTOSCALER_H
#define SL_AUTOSCALER_H

#include "common.h"

typedef struct sl_as_config {
    bool rps;                        /* metric: requests per second, not concurrency */
    double target;                   /* concurrency (or rps) per instance the scaler aims at */
    int container_concurrency;       /* hard limit per instance, 0 = none (rps floor) */
    double utilization;              /* 0..1: fraction of target to use (default 0.7) */
    uint64_t stable_window_ns;       /* default 60 s */
    double panic_window_pct;         /* default 10 */
    double panic_threshold_pct;      /* default 200 */
    double max_scale_up_rate;        /* default 1000 */
    double max_scale_down_rate;      /* default 2 */
    int min_scale;                   /* default 0 */
    int max_scale;                   /* 0 = unbounded */
    int activation_scale;            /* instances to start from zero (default 1) */
    uint64_t scale_to_zero_grace_ns; /* default 30 s */
    uint64_t retention_ns;           /* scale-to-zero-pod-retention-period (default 0) */
    uint64_t scale_down_delay_ns;    /* a lower scale applies only after this long (default 0) */
    uint64_t tick_ns;                /* decision interval; also the bucket size floor */
} sl_as_config_t;

#define SL_AS_MAX_BUCKETS 1200
/* Knative's requests-per-second-target-default. */
#define SL_AS_RPS_TARGET_DEFAULT 200.0
/* Knative's tick-interval: max-scale-down-rate applies per this period. */
#define SL_AS_DOWN_PERIOD_NS 2000000000ull

typedef struct sl_autoscaler {
    sl_as_config_t cfg;
    uint64_t bucket_ns;
    double *buckets;  /* ring of concurrency×ns per bucket, one window long */
    double *arrivals; /* rps metric: requests that arrived per bucket, same ring */
    size_t n_buckets;
    size_t head;         /* bucket being filled */
    uint64_t head_start; /* when the head bucket began */
    uint64_t created_ns;
    double current; /* concurrency now */
    uint64_t last_change_ns;
    uint64_t last_active_ns;  /* last time concurrency was > 0 */
    uint64_t last_arrival_ns; /* last arrival counted (rps metric) */
    bool panic;
    uint64_t panic_since_ns;
    uint64_t last_over_threshold_ns;
    int max_panic;
    /* scale-down-delay: the decisions of the last delay that no later one
     * reached, oldest (the highest) first: their maximum is the front. */
    struct sl_as_peak {
        uint64_t at_ns;
        int desired;
    } * peaks;
    size_t n_peaks, cap_peaks;
    uint64_t last_down_ns; /* last decision below the ready count (max-scale-down-rate) */
    /* last decision, for status and metrics */
    double observed_stable, observed_panic;
    int desired;
} sl_autoscaler_t;

/* Knative's defaults (tick 100 ms). */
void sl_as_config_defaults(sl_as_config_t *cfg);
/* Allocates the bucket ring; sl_as_free releases it. */
void sl_as_init(sl_autoscaler_t *as, const sl_as_config_t *cfg, uint64_t now_ns);
void sl_as_free(sl_autoscaler_t *as);
/* Concurrency (in flight + queued) changed to `value` at `now_ns`. */
void sl_as_record(sl_autoscaler_t *as, double value, uint64_t now_ns);
/* A request arrived (counted only with the rps metric). */
void sl_as_arrival(sl_autoscaler_t *as, uint64_t now_ns);
/* Decide the desired instance count given how many are ready (or
 * starting) now. Updates mode and observed values. */
int sl_as_decide(sl_autoscaler_t *as, int ready, uint64_t now_ns);

#endif
