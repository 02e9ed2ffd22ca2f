/*
 * meter.h — exact usage metering, the way Cloud Run bills, side by side with
 * per-request (Lambda) and per-lifetime (Cloud Run instance-based, Fargate)
 * models.
 *
 * The daemon reports each instance's life (start, ready, stopping, exited)
 * and each request's begin and end, all on the monotonic clock in
 * nanoseconds. The meter keeps, per instance, a handful of cursors and
 * attributes time as it passes to per-revision, per-wall-clock-minute
 * accumulators; a periodic sl_meter_flush adds those into "usage" objects in
 * the store, so storage grows with time (one object per revision per minute
 * with traffic), never with requests. Begin and end are O(1) and do not
 * allocate (a new minute for a revision may grow a small array the meter
 * keeps and reuses: once per minute per revision, not per request).
 *
 * What each model bills, per instance:
 *
 *   cloudrun  request-based billing: the union of the instance's busy
 *             intervals — start-up (start→ready), any time with ≥ 1 request
 *             in flight, shutdown (stopping→exited) — so concurrent requests
 *             count once, and intervals that touch (one ends at the instant
 *             the next begins) form one period. Each busy period is rounded
 *             UP to 100 ms (a period that opened bills at least 100 ms).
 *   instance  instance-based billing: the whole lifetime start→exited,
 *             rounded up to 100 ms at exit.
 *   lambda    every request on its own: each request's duration rounded up
 *             to 1 ms (at least 1 ms), summed; overlapping requests each pay.
 *   fargate   the whole lifetime rounded up to the second, with a 60 s
 *             minimum per instance (applied at exit).
 *
 * Seconds of each model times the instance's cpu (millicores / 1000) and
 * memory (bytes / 2^30) give vCPU-seconds and GiB-seconds.
 *
 * Attribution to minutes. Raw time is attributed to the wall-clock minute it
 * actually falls in: a busy period (or lifetime, or request) that spans a
 * minute boundary is split at the boundary. Rounding is applied once to the
 * whole period when it closes, and the rounding remainder (rounded minus
 * raw) is attributed to the minute in which the period closes — the minute
 * the bill for that period becomes known. Consequently a flush or query
 * while a period is still open counts its raw time up to "now" and no
 * rounding yet; the remainder appears when the period closes. The Fargate
 * 60 s minimum top-up is likewise attributed to the exit minute.
 *
 * Wall-clock minutes: wall = monotonic + offset, the offset fixed when the
 * meter is created (sl_meter_wall_offset_now()), so minute attribution is
 * immune to wall-clock steps while the daemon runs.
 *
 * Clock edge cases: an event whose time is earlier than the instance's
 * previous event — or than a flush or query, which attribute time up to
 * their "now" — is treated as happening at that earlier point's time (the
 * meter never counts negative time or counts a moment twice); a request whose end precedes its
 * begin lasts 0 (and bills the 1 ms minimum under lambda); an end with no
 * request in flight is ignored (and counted in sl_meter_stats). Requests
 * still in flight when the instance exits are counted up to the exit; a
 * later end for them only adds their 1 ms rounding.
 *
 * Threading: one thread (the loop's), like the rest of the daemon.
 */
#ifndef SL_METER_H
#define SL_METER_H

#include "common.h"
#include "store.h"

#include <jansson.h>

/* Store kind for the per-minute usage objects. */
#define SL_METER_KIND "usage"

/* Billing granularities (nanoseconds). */
#define SL_METER_CLOUDRUN_UNIT_NS   100000000LL   /* 100 ms */
#define SL_METER_LAMBDA_UNIT_NS     1000000LL     /* 1 ms */
#define SL_METER_FARGATE_UNIT_NS    1000000000LL  /* 1 s */
#define SL_METER_FARGATE_MINIMUM_NS 60000000000LL /* 60 s */

typedef enum {
    SL_MODEL_CLOUDRUN = 0, /* Cloud Run request-based */
    SL_MODEL_INSTANCE,     /* Cloud Run instance-based */
    SL_MODEL_LAMBDA,       /* AWS Lambda, per request */
    SL_MODEL_FARGATE,      /* AWS Fargate, per lifetime with 60 s minimum */
    SL_MODEL_COUNT
} sl_billing_model_t;

/* "cloudrun", "instance", "lambda", "fargate". */
const char *sl_billing_model_name(sl_billing_model_t m);
/* Returns the model for a name, or -1. */
int sl_billing_model_parse(const char *name);

typedef struct sl_model_usage {
    double seconds;      /* billable instance-seconds under this model */
    double vcpu_seconds; /* seconds × vCPU */
    double gib_seconds;  /* seconds × GiB */
} sl_model_usage_t;

typedef struct sl_usage_totals {
    int64_t requests;          /* requests begun */
    int64_t instances_started; /* instances started (cold starts) */
    double busy_seconds;       /* raw union of busy intervals, unrounded */
    sl_model_usage_t model[SL_MODEL_COUNT];
} sl_usage_totals_t;

typedef struct sl_meter sl_meter_t;
typedef struct sl_meter_instance sl_meter_instance_t;

/* realtime − monotonic, in ns, read now: pass it to sl_meter_new. */
int64_t sl_meter_wall_offset_now(void);

/* New meter; wall_offset_ns maps the monotonic clock to wall-clock ns since
 * the epoch (wall = mono + offset). Free with sl_meter_free. */
sl_meter_t *sl_meter_new(int64_t wall_offset_ns);
/* Frees the meter and every instance handle still held (without flushing:
 * call sl_meter_flush first at shutdown). */
void sl_meter_free(sl_meter_t *m);

/*
 * An instance was started (placement begins): it is busy from now until
 * ready. Copies the strings. Returns a handle owned by the meter, valid
 * until sl_meter_instance_release. cpu_millis / memory_bytes of 0 meter
 * seconds but no vCPU- / GiB-seconds.
 */
sl_meter_instance_t *sl_meter_instance_start(sl_meter_t *m, const char *ns, const char *service,
                                             const char *revision, const char *instance_id,
                                             int64_t cpu_millis, int64_t memory_bytes,
                                             uint64_t now);
/* The instance passed its readiness probe: start-up busy time ends (unless
 * requests are already in flight). */
void sl_meter_instance_ready(sl_meter_t *m, sl_meter_instance_t *inst, uint64_t now);
/* A request was handed to the instance. Returns the request's begin time as
 * the meter saw it: keep it (8 bytes in the request) and pass it to
 * sl_meter_request_end. O(1), no allocation. */
uint64_t sl_meter_request_begin(sl_meter_t *m, sl_meter_instance_t *inst, uint64_t now);
/* The request finished (response sent, or failed). began is what
 * sl_meter_request_begin returned. O(1), no allocation. */
void sl_meter_request_end(sl_meter_t *m, sl_meter_instance_t *inst, uint64_t began, uint64_t now);
/* Shutdown began (SIGTERM sent): busy until exited. */
void sl_meter_instance_stopping(sl_meter_t *m, sl_meter_instance_t *inst, uint64_t now);
/* The instance's process is gone: closes its lifetime and busy period.
 * The handle stays valid (request ends may still arrive) until released. */
void sl_meter_instance_exited(sl_meter_t *m, sl_meter_instance_t *inst, uint64_t now);
/* The daemon drops the handle (when it frees its own instance record). An
 * instance not yet exited is treated as exited at its last event. Its usage
 * is kept until the next flush. */
void sl_meter_instance_release(sl_meter_t *m, sl_meter_instance_t *inst);

/* Requests in flight on the instance as the meter sees them. */
int64_t sl_meter_instance_in_flight(const sl_meter_instance_t *inst);

/*
 * Attribute everything up to now (monotonic ns; open periods and in-flight
 * requests count up to now without closing) and add the accumulated
 * per-minute counters into the store's usage objects in one transaction.
 * On failure nothing is lost: the counters stay in memory for the next
 * flush. Call from a timer every few seconds and once at shutdown.
 */
int sl_meter_flush(sl_meter_t *m, sl_store_t *s, uint64_t now, sl_error_t *err);

typedef struct sl_meter_stats {
    uint64_t live_instances;  /* handles not yet released */
    uint64_t pending_minutes; /* per-revision minute accumulators awaiting flush */
    uint64_t unmatched_ends;  /* request ends with nothing in flight */
} sl_meter_stats_t;
void sl_meter_stats(const sl_meter_t *m, sl_meter_stats_t *out);

/*
 * Usage report: the store's usage objects of namespace ns (NULL = all) and
 * service (NULL = all) whose minute ends after since_wall (epoch seconds),
 * plus, when m is not NULL, the meter's not-yet-flushed counters with open
 * periods counted up to now (monotonic ns). *out is a new reference:
 *
 *   {
 *     "apiVersion": "sluice.dev/v1", "kind": "UsageReport",
 *     "namespace": "default",            // null when all namespaces
 *     "service": "hello",                // null when all services
 *     "since": 1700000000,               // epoch seconds, as asked
 *     "until": 1700003600,               // epoch seconds, now
 *     "totals": USAGE,
 *     "revisions": [ {"namespace": "default", "service": "hello",
 *                     "revision": "hello-00001", ...USAGE fields}, ... ]
 *   }
 *   USAGE = {
 *     "requests": 10, "instancesStarted": 1, "busySeconds": 1.234,
 *     "models": {
 *       "cloudrun": {"seconds": 1.3, "vcpuSeconds": 1.3, "gibSeconds": 0.325},
 *       "instance": {...}, "lambda": {...}, "fargate": {...}
 *     }
 *   }
 *
 * The API adds costs with sl_prices_annotate (prices.h): "currency",
 * "prices", a "cost" in every models.* entry, and in "totals" a "savings"
 * object {"lambda"|"instance"|"fargate": {"seconds", "cost", "percent"}}:
 * what the Cloud Run model saves against each other model (positive =
 * Cloud Run is cheaper; percent of the other model's cost, null when 0).
 */
int sl_meter_query(sl_meter_t *m, sl_store_t *s, const char *ns, const char *service,
                   int64_t since_wall, uint64_t now, json_t **out, sl_error_t *err);

/* Read a USAGE object (report totals or a revision entry) into t; missing
 * fields read as 0. */
void sl_usage_totals_from_json(const json_t *usage, sl_usage_totals_t *t);

#endif
