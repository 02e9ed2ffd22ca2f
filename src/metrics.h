/*
 * metrics.h — a small Prometheus registry rendered in the text exposition
 * format 0.0.4 (Content-Type: SL_METRICS_CONTENT_TYPE).
 *
 * A family (counter, gauge or histogram) has a validated name, HELP text and
 * a fixed list of label names. A series is one set of label values; the
 * caller looks it up once (sl_metrics_series) and keeps the handle, so the
 * update path (inc/add/set/observe) is a few arithmetic operations with no
 * lookup and no allocation. Cardinality is bounded: each family holds at
 * most the registry's series cap; a new label set past the cap is refused
 * (NULL handle — every update function accepts NULL and does nothing) and
 * counted in sluice_metrics_dropped_series_total, which every rendering
 * ends with.
 *
 * Names follow Prometheus' data model: metric names [a-zA-Z_:][a-zA-Z0-9_:]*,
 * label names [a-zA-Z_][a-zA-Z0-9_]* not starting with "__"; histograms may
 * not use the label "le". HELP text escapes \ and newline; label values
 * escape \, " and newline.
 *
 * Threading: one thread (the loop's). Handles live as long as the registry.
 */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include "common.h"

#define SL_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define SL_METRICS_MAX_LABELS   8
#define SL_METRICS_MAX_BUCKETS  32

/*
 * The metrics the daemon exports (for the integrator). Label values come from
 * bounded sets only: service and revision names that exist, code_class in
 * {"1xx","2xx","3xx","4xx","5xx"}, state in {"starting","ready","stopping",
 * "failed"} — never per-request values. Seconds are base units.
 *
 *   sluice_requests_total{service,revision,code_class}        counter
 *       requests answered by the router (including 502/503/504 it made).
 *   sluice_request_duration_seconds{service,revision}          histogram
 *       request start to last response byte; SL_METRICS_LATENCY_BUCKETS.
 *   sluice_requests_in_flight{service,revision}                gauge
 *   sluice_queue_length{service,revision}                      gauge
 *       requests held by the activator waiting for capacity.
 *   sluice_instances{service,revision,state}                   gauge
 *   sluice_desired_instances{service,revision}                 gauge
 *   sluice_actual_instances{service,revision}                  gauge
 *   sluice_cpu_idle_instances{service,revision}                gauge
 *       ready instances held to idle CPU between requests.
 *   sluice_cold_starts_total{service,revision}                 counter
 *   sluice_cold_start_duration_seconds{service,revision}       histogram
 *       instance start to ready; SL_METRICS_COLD_START_BUCKETS.
 *   sluice_billable_instance_seconds_total{service,revision}   counter
 *       Cloud Run request-based billable seconds (meter.h), mirrored from
 *       the meter with sl_metric_set (never decreases).
 *   sluice_router_busy_poll_seconds_total                      counter
 *       time the router's loop spent with busy polling on (serve
 *       --busy-poll); 0 when it is off.
 */
#define SL_METRIC_REQUESTS_TOTAL          "sluice_requests_total"
#define SL_METRIC_REQUEST_DURATION        "sluice_request_duration_seconds"
#define SL_METRIC_REQUESTS_IN_FLIGHT      "sluice_requests_in_flight"
#define SL_METRIC_QUEUE_LENGTH            "sluice_queue_length"
#define SL_METRIC_INSTANCES               "sluice_instances"
#define SL_METRIC_DESIRED_INSTANCES       "sluice_desired_instances"
#define SL_METRIC_ACTUAL_INSTANCES        "sluice_actual_instances"
#define SL_METRIC_CPU_IDLE_INSTANCES      "sluice_cpu_idle_instances"
#define SL_METRIC_COLD_STARTS_TOTAL       "sluice_cold_starts_total"
#define SL_METRIC_COLD_START_DURATION     "sluice_cold_start_duration_seconds"
#define SL_METRIC_BILLABLE_SECONDS_TOTAL  "sluice_billable_instance_seconds_total"
#define SL_METRIC_DROPPED_SERIES_TOTAL    "sluice_metrics_dropped_series_total"
#define SL_METRIC_BUSY_POLL_SECONDS_TOTAL "sluice_router_busy_poll_seconds_total"
/* The daemon process, with the Prometheus client libraries' names. */
#define SL_METRIC_PROCESS_CPU_SECONDS "process_cpu_seconds_total"
#define SL_METRIC_PROCESS_RESIDENT    "process_resident_memory_bytes"
#define SL_METRIC_PROCESS_OPEN_FDS    "process_open_fds"
#define SL_METRIC_PROCESS_MAX_FDS     "process_max_fds"
#define SL_METRIC_HEAP_IN_USE         "sluice_heap_in_use_bytes"

/* Upper bounds (seconds); +Inf is implicit. */
#define SL_METRICS_LATENCY_BUCKETS                                                                 \
    {                                                                                              \
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300        \
    }
#define SL_METRICS_COLD_START_BUCKETS                                                              \
    {                                                                                              \
        0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60                                                  \
    }

/* Default per-family series cap for the daemon. */
#define SL_METRICS_DEFAULT_SERIES_CAP 1000

typedef enum { SL_METRIC_COUNTER, SL_METRIC_GAUGE, SL_METRIC_HISTOGRAM } sl_metric_type_t;

typedef struct sl_metrics sl_metrics_t;
typedef struct sl_metric_family sl_metric_family_t;
typedef struct sl_metric sl_metric_t; /* one series: the update handle */

/* New registry; max_series caps the series of each family (≥ 1). */
sl_metrics_t *sl_metrics_new(size_t max_series);
void sl_metrics_free(sl_metrics_t *reg);

/*
 * Register a family. labels: nlabels (≤ SL_METRICS_MAX_LABELS) label names,
 * copied. Histograms take nbounds (1..SL_METRICS_MAX_BUCKETS) finite,
 * strictly increasing upper bounds; others pass NULL, 0. Returns NULL with
 * err set for an invalid or duplicate name, label or bound list. The family
 * is owned by the registry.
 */
sl_metric_family_t *sl_metrics_family(sl_metrics_t *reg, sl_metric_type_t type, const char *name,
                                      const char *help, size_t nlabels, const char *const *labels,
                                      const double *bounds, size_t nbounds, sl_error_t *err);
/* The series with these label values (nlabels strings, copied; NULL when the
 * family has no labels), created on first use; every call gives a handle
 * that sl_metric_remove gives back (the series goes with its last holder).
 * NULL when the family is at its series cap (counted as dropped). Not for
 * the hot path: keep the handle. */
sl_metric_t *sl_metrics_series(sl_metric_family_t *fam, const char *const *values);

/* Give a handle back (NULL is ignored); with the last one the series
 * leaves the exposition and frees its place under the cap. The handle is
 * invalid after. A later
 * sl_metrics_series with the same values starts it again from zero (a
 * counter reset to Prometheus). */
void sl_metric_remove(sl_metric_t *m);

/* Counters: add a non-negative amount (negative or NaN is ignored). */
void sl_metric_inc(sl_metric_t *m);
void sl_metric_add(sl_metric_t *m, double v);
/* Gauges: set / add (may be negative). On a counter, set mirrors an exact
 * external total and is ignored if it would decrease the counter. */
void sl_metric_set(sl_metric_t *m, double v);
/* Histograms: record one observation (NaN is ignored). */
void sl_metric_observe(sl_metric_t *m, double v);
/* Current value (counter/gauge) or observation count (histogram). */
double sl_metric_value(const sl_metric_t *m);

/* Label sets refused so far because a family was at its cap. */
uint64_t sl_metrics_dropped(const sl_metrics_t *reg);

/* Render the whole registry; *buf is malloc'd and NUL-terminated, *len
 * excludes the NUL. Returns 0. */
int sl_metrics_render(const sl_metrics_t *reg, char **buf, size_t *len);

#endif
