/*
 * autoscaler.c — Knative KPA semantics over exact, time-weighted
 * concurrency. See autoscaler.h for the model; the comments here explain
 * the arithmetic.
 */
#include "autoscaler.h"

#include <math.h>

#define NS_PER_S 1000000000ull

void sl_as_config_defaults(sl_as_config_t *cfg)
{
    *cfg = (sl_as_config_t){
        .target = 100,
        .utilization = 0.7,
        .stable_window_ns = 60 * NS_PER_S,
        .panic_window_pct = 10,
        .panic_threshold_pct = 200,
        .max_scale_up_rate = 1000,
        .max_scale_down_rate = 2,
        .min_scale = 0,
        .max_scale = 0,
        .activation_scale = 1,
        .scale_to_zero_grace_ns = 30 * NS_PER_S,
        .retention_ns = 0,
        .tick_ns = 100000000ull,
    };
}

void sl_as_init(sl_autoscaler_t *as, const sl_as_config_t *cfg, uint64_t now_ns)
{
    memset(as, 0, sizeof(*as));
    as->cfg = *cfg;
    /* Buckets are a tick long unless the stable window needs more than
     * SL_AS_MAX_BUCKETS of them; the ring holds one window (plus slack). */
    uint64_t b = cfg->tick_ns ? cfg->tick_ns : 100000000ull;
    uint64_t min_b = cfg->stable_window_ns / SL_AS_MAX_BUCKETS + 1;
    as->bucket_ns = b > min_b ? b : min_b;
    uint64_t n = cfg->stable_window_ns / as->bucket_ns + 2;
    as->n_buckets = n > SL_AS_MAX_BUCKETS ? SL_AS_MAX_BUCKETS : (size_t)n;
    as->buckets = xcalloc(as->n_buckets, sizeof(double));
    if (cfg->rps)
        as->arrivals = xcalloc(as->n_buckets, sizeof(double));
    as->created_ns = now_ns;
    as->last_change_ns = now_ns;
    as->last_active_ns = now_ns;
    as->head_start = now_ns - now_ns % as->bucket_ns;
}

void sl_as_free(sl_autoscaler_t *as)
{
    free(as->buckets);
    as->buckets = NULL;
    free(as->arrivals);
    as->arrivals = NULL;
    free(as->peaks);
    as->peaks = NULL;
    as->n_peaks = as->cap_peaks = 0;
}

/* The highest decision of the last `delay` including d (Knative keeps a
 * max.TimeWindow of them): a monotonic queue, each entry outlived by no
 * higher later one, so its length is the number of distinct falling
 * steps within the delay. */
static int delayed_max(sl_autoscaler_t *as, int d, uint64_t now, uint64_t delay)
{
    size_t first = 0;
    while (first < as->n_peaks && now - as->peaks[first].at_ns >= delay)
        first++;
    if (first) {
        memmove(as->peaks, as->peaks + first, (as->n_peaks - first) * sizeof(*as->peaks));
        as->n_peaks -= first;
    }
    while (as->n_peaks && as->peaks[as->n_peaks - 1].desired <= d)
        as->n_peaks--;
    if (as->n_peaks == as->cap_peaks) {
        as->cap_peaks = as->cap_peaks ? as->cap_peaks * 2 : 8;
        as->peaks = xrealloc(as->peaks, as->cap_peaks * sizeof(*as->peaks));
    }
    as->peaks[as->n_peaks++] = (struct sl_as_peak){now, d};
    return as->peaks[0].desired;
}

/* Move the ring forward so the head bucket contains t. Buckets are
 * contiguous in time: the one k places behind the head starts k buckets
 * earlier. */
static void advance(sl_autoscaler_t *as, uint64_t t)
{
    uint64_t gap = (t - as->head_start) / as->bucket_ns;
    if (gap == 0)
        return;
    as->head_start += gap * as->bucket_ns;
    if (gap > as->n_buckets)
        gap = as->n_buckets;
    for (uint64_t i = 0; i < gap; i++) {
        as->head = (as->head + 1) % as->n_buckets;
        as->buckets[as->head] = 0;
        if (as->arrivals)
            as->arrivals[as->head] = 0;
    }
}

/* Integrate the current value from last_change to t, bucket by bucket. */
static void integrate(sl_autoscaler_t *as, uint64_t t)
{
    if (t <= as->last_change_ns)
        return;
    uint64_t from = as->last_change_ns;
    while (from < t) {
        advance(as, from);
        uint64_t end = as->head_start + as->bucket_ns;
        uint64_t to = t < end ? t : end;
        as->buckets[as->head] += as->current * (double)(to - from);
        from = to;
    }
    advance(as, t);
    as->last_change_ns = t;
}

void sl_as_record(sl_autoscaler_t *as, double value, uint64_t now_ns)
{
    integrate(as, now_ns);
    if (as->current > 0 || value > 0)
        as->last_active_ns = now_ns;
    as->current = value;
}

void sl_as_arrival(sl_autoscaler_t *as, uint64_t now_ns)
{
    if (!as->arrivals)
        return;
    integrate(as, now_ns);
    as->arrivals[as->head] += 1;
    /* counted in the head bucket, whatever time it was given (a request
     * queued elsewhere arrives with its own, earlier time) */
    uint64_t at = now_ns > as->last_change_ns ? now_ns : as->last_change_ns;
    if (at > as->last_arrival_ns)
        as->last_arrival_ns = at;
}

/* The sum of `ring` over the last `window` ending at now, per ns: the
 * average concurrency for concurrency×ns buckets, arrivals per ns for
 * arrival counts. A revision younger than the window averages over its
 * lifetime; a bucket cut by the window's left edge counts pro rata. last is
 * when the ring last gained anything (UINT64_MAX: it still does): a ring
 * that gained nothing since a bucket before the window sums to 0 without
 * walking it, as most revisions of a fleet scaled to zero do every tick. */
static double per_ns(const sl_autoscaler_t *as, const double *ring, uint64_t last, uint64_t window,
                     uint64_t now)
{
    uint64_t since = now > window ? now - window : 0;
    if (since < as->created_ns)
        since = as->created_ns;
    if (now <= since)
        return -1;
    if (last != UINT64_MAX && last + as->bucket_ns <= since)
        return 0;
    double area = 0;
    size_t idx = as->head;
    for (size_t k = 0; k < as->n_buckets; k++) {
        if (k * as->bucket_ns > as->head_start)
            break;
        uint64_t bs = as->head_start - k * as->bucket_ns;
        uint64_t be = bs + as->bucket_ns;
        if (be <= since)
            break;
        if (bs >= since)
            area += ring[idx];
        else
            area += ring[idx] * (double)(be - since) / (double)as->bucket_ns;
        idx = (idx + as->n_buckets - 1) % as->n_buckets;
    }
    return area / (double)(now - since);
}

/* The metric over the last `window`: average concurrency, or requests per
 * second. */
static double observe(const sl_autoscaler_t *as, uint64_t window, uint64_t now)
{
    uint64_t last = as->arrivals      ? as->last_arrival_ns
                    : as->current > 0 ? UINT64_MAX
                                      : as->last_active_ns;
    double v = per_ns(as, as->arrivals ? as->arrivals : as->buckets, last, window, now);
    if (v < 0) /* no time has passed: concurrency now, no rate yet */
        return as->arrivals ? 0 : as->current;
    return as->arrivals ? v * (double)NS_PER_S : v;
}

int sl_as_decide(sl_autoscaler_t *as, int ready, uint64_t now_ns)
{
    const sl_as_config_t *c = &as->cfg;
    integrate(as, now_ns);
    uint64_t panic_window = (uint64_t)((double)c->stable_window_ns * c->panic_window_pct / 100.0);
    if (panic_window < as->bucket_ns)
        panic_window = as->bucket_ns;
    as->observed_stable = observe(as, c->stable_window_ns, now_ns);
    as->observed_panic = observe(as, panic_window, now_ns);
    double per_instance = c->target * c->utilization;
    if (per_instance < 0.01)
        per_instance = 0.01;
    int readyc = ready > 1 ? ready : 1;
    double stable_want = ceil(as->observed_stable / per_instance - 1e-9);
    double panic_want = ceil(as->observed_panic / per_instance - 1e-9);
    /* Rate limits relative to what is there now. */
    double up = ceil(c->max_scale_up_rate * readyc);
    double down = floor((double)ready / c->max_scale_down_rate);
    if (stable_want > up)
        stable_want = up;
    if (panic_want > up)
        panic_want = up;
    if (ready > 0 && stable_want < down)
        stable_want = down;
    /* Panic needs the demand still there: right after a burst the panic
     * window's average stays high while fewer instances are ready, and
     * panicking then would bring back instances nobody needs. With the rps
     * metric the demand now is the last second's rate (or the panic
     * window's, if shorter). */
    double demand_now = as->current;
    if (as->arrivals)
        demand_now = observe(as, panic_window < NS_PER_S ? panic_window : NS_PER_S, now_ns);
    double need_now_util = ceil(demand_now / per_instance - 1e-9);
    bool over = panic_want / readyc >= c->panic_threshold_pct / 100.0 && panic_want > 0 &&
                need_now_util > ready;
    if (over)
        as->last_over_threshold_ns = now_ns;
    if (!as->panic && over) {
        as->panic = true;
        as->panic_since_ns = now_ns;
        as->max_panic = ready;
    } else if (as->panic && !over && now_ns - as->last_over_threshold_ns >= c->stable_window_ns) {
        as->panic = false;
        as->max_panic = 0;
    }
    int desired;
    if (as->panic) {
        /* Never scale down while panicking. */
        int p = (int)panic_want;
        if (p < as->max_panic)
            p = as->max_panic;
        if (p < ready)
            p = ready;
        as->max_panic = p;
        desired = p;
    } else {
        desired = (int)stable_want;
    }
    /* Zero only after a quiet stable window and the grace/retention period. */
    if (desired == 0) {
        uint64_t hold = c->scale_to_zero_grace_ns > c->retention_ns ? c->scale_to_zero_grace_ns
                                                                    : c->retention_ns;
        /* A revision younger than one stable window has not been observed
         * long enough to call it idle. */
        bool quiet = as->current == 0 && as->observed_stable == 0 &&
                     now_ns - as->created_ns >= c->stable_window_ns;
        /* The retention period runs from that decision (the stable window
         * after the last request), as Knative keeps the last pod. */
        if (c->retention_ns > 0 && c->stable_window_ns + c->retention_ns > hold)
            hold = c->stable_window_ns + c->retention_ns;
        if (!quiet || now_ns - as->last_active_ns < hold)
            desired = 1;
    }
    if (desired == 0 && as->current > 0)
        desired = 1;
    /* As Knative: any non-zero scale is at least the activation scale, but
     * only while there is demand, so it never holds an idle revision up
     * (the scale-down rate keeps an idle pair at one, not at two). */
    bool demand = as->observed_stable > 0 || as->observed_panic > 0 || as->current > 0;
    if (desired > 0 && desired < c->activation_scale && demand)
        desired = c->activation_scale;
    /* Never below what the requests in flight and queued right now need at
     * the target utilization: averaging must not drain instances that are
     * busy, and a step up gets the headroom the target asks for at once.
     * With the rps metric the target is a rate, so the floor is what
     * containerConcurrency lets the requests in flight use. */
    int need_now = (int)need_now_util;
    if (as->arrivals) {
        int cc = c->container_concurrency;
        need_now = cc > 0 ? (int)ceil(as->current / cc - 1e-9) : as->current > 0;
    }
    if (desired < need_now)
        desired = need_now;
    /* scale-down-delay: a lower decision applies only once the higher one
     * has not been needed for the whole delay. */
    if (c->scale_down_delay_ns > 0)
        desired = delayed_max(as, desired, now_ns, c->scale_down_delay_ns);
    if (desired < c->min_scale)
        desired = c->min_scale;
    if (c->max_scale > 0 && desired > c->max_scale)
        desired = c->max_scale;
    /* max-scale-down-rate is per evaluation: Knative decides every 2 s,
     * this every tick, so a step down waits for the last one's period. */
    if (desired < ready) {
        if (as->last_down_ns && now_ns - as->last_down_ns < SL_AS_DOWN_PERIOD_NS)
            desired = ready;
        else
            as->last_down_ns = now_ns;
    }
    as->desired = desired;
    return desired;
}
