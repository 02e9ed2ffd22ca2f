/*
 * controller_obs.c — what the controller reports: usage metering (each
 * instance's busy intervals, lifetime and requests, per meter.h) and the
 * Prometheus metrics of the router, activator and autoscaler. Counters are
 * bumped on events through handles kept per revision (no lookups or
 * allocation per request); gauges are read from live state when /metrics
 * is scraped. The meter is flushed to the store every few seconds and at
 * shutdown.
 */
#include "controller_int.h"

#include <dirent.h>
#include <malloc.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#define FLUSH_MS 5000

static const char *MOD = "metering";

static const char *CODE_CLASSES[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
static const char *STATES[] = {"starting", "ready", "draining", "failed"};

typedef struct families {
    sl_metric_family_t *requests, *duration, *in_flight, *queue, *instances, *desired, *actual,
        *cpu_idle, *cold, *cold_duration, *billable;
} families_t;

struct ctl_obs {
    sl_metrics_t *reg;
    families_t f;
    sl_meter_t *meter;
    sl_prices_t prices;
    uv_timer_t *flush;
    sl_metric_t *busy_poll;  /* the router's busy-polling time, seconds */
    sl_metric_t *process[5]; /* cpu, resident, open fds, max fds, heap (process_gauges) */
};

struct ctl_rev_metrics {
    sl_metric_t *requests[5], *duration, *in_flight, *queue, *instances[4], *desired, *actual,
        *cpu_idle, *cold, *cold_duration, *billable;
};

static void flush_tick(uv_timer_t *t)
{
    sl_controller_t *c = t->data;
    ctl_obs_flush(c);
}

int ctl_obs_init(sl_controller_t *c, const sl_prices_t *prices, sl_error_t *err)
{
    ctl_obs_t *o = xcalloc(1, sizeof(*o));
    o->reg = sl_metrics_new(SL_METRICS_DEFAULT_SERIES_CAP);
    /* A revision is named by its namespace too: two namespaces may each
     * have a service (and revisions) of the same name. */
    const char *sr[] = {"namespace", "service", "revision", "code_class"};
    const char *srs[] = {"namespace", "service", "revision", "state"};
    double lat[] = SL_METRICS_LATENCY_BUCKETS, cold[] = SL_METRICS_COLD_START_BUCKETS;
    families_t *f = &o->f;
    f->requests = sl_metrics_family(o->reg, SL_METRIC_COUNTER, SL_METRIC_REQUESTS_TOTAL,
                                    "Requests answered, by service, revision and status class.", 4,
                                    sr, NULL, 0, err);
    f->duration = sl_metrics_family(o->reg, SL_METRIC_HISTOGRAM, SL_METRIC_REQUEST_DURATION,
                                    "Time an instance spent on a request.", 3, sr, lat,
                                    SL_ARRAY_LEN(lat), err);
    f->in_flight = sl_metrics_family(o->reg, SL_METRIC_GAUGE, SL_METRIC_REQUESTS_IN_FLIGHT,
                                     "Requests being served by instances.", 3, sr, NULL, 0, err);
    f->queue =
        sl_metrics_family(o->reg, SL_METRIC_GAUGE, SL_METRIC_QUEUE_LENGTH,
                          "Requests waiting in the activator for capacity.", 3, sr, NULL, 0, err);
    f->instances = sl_metrics_family(o->reg, SL_METRIC_GAUGE, SL_METRIC_INSTANCES,
                                     "Instances by state.", 4, srs, NULL, 0, err);
    f->desired = sl_metrics_family(o->reg, SL_METRIC_GAUGE, SL_METRIC_DESIRED_INSTANCES,
                                   "Instances the autoscaler wants.", 3, sr, NULL, 0, err);
    f->actual = sl_metrics_family(o->reg, SL_METRIC_GAUGE, SL_METRIC_ACTUAL_INSTANCES,
                                  "Instances ready to serve.", 3, sr, NULL, 0, err);
    f->cpu_idle = sl_metrics_family(o->reg, SL_METRIC_GAUGE, SL_METRIC_CPU_IDLE_INSTANCES,
                                    "Ready instances held to idle CPU between requests.", 3, sr,
                                    NULL, 0, err);
    f->cold = sl_metrics_family(o->reg, SL_METRIC_COUNTER, SL_METRIC_COLD_STARTS_TOTAL,
                                "Instances started.", 3, sr, NULL, 0, err);
    f->cold_duration =
        sl_metrics_family(o->reg, SL_METRIC_HISTOGRAM, SL_METRIC_COLD_START_DURATION,
                          "Instance start to ready.", 3, sr, cold, SL_ARRAY_LEN(cold), err);
    f->billable = sl_metrics_family(o->reg, SL_METRIC_COUNTER, SL_METRIC_BILLABLE_SECONDS_TOTAL,
                                    "Billable instance-seconds as Cloud Run request-based billing "
                                    "counts them (overlapping requests once, 100 ms rounding).",
                                    3, sr, NULL, 0, err);
    sl_metric_family_t *busy =
        sl_metrics_family(o->reg, SL_METRIC_COUNTER, SL_METRIC_BUSY_POLL_SECONDS_TOTAL,
                          "Time the router's loop spent with busy polling on: polling "
                          "without sleeping, and serving what the polls found "
                          "(serve --busy-poll).",
                          0, NULL, NULL, 0, err);
    o->busy_poll = busy ? sl_metrics_series(busy, NULL) : NULL;
    static const struct {
        sl_metric_type_t type;
        const char *name, *help;
    } proc[SL_ARRAY_LEN(o->process)] = {
        {SL_METRIC_COUNTER, SL_METRIC_PROCESS_CPU_SECONDS, "User and system CPU time, seconds."},
        {SL_METRIC_GAUGE, SL_METRIC_PROCESS_RESIDENT, "Resident memory, bytes."},
        {SL_METRIC_GAUGE, SL_METRIC_PROCESS_OPEN_FDS, "Open file descriptors."},
        {SL_METRIC_GAUGE, SL_METRIC_PROCESS_MAX_FDS, "The limit on open file descriptors."},
        {SL_METRIC_GAUGE, SL_METRIC_HEAP_IN_USE,
         "Heap bytes glibc's malloc counts in use: live allocations plus the chunks its "
         "per-thread caches hold (0 under another allocator)."},
    };
    bool proc_ok = true;
    for (size_t i = 0; i < SL_ARRAY_LEN(proc); i++) {
        sl_metric_family_t *pf = sl_metrics_family(o->reg, proc[i].type, proc[i].name, proc[i].help,
                                                   0, NULL, NULL, 0, err);
        o->process[i] = pf ? sl_metrics_series(pf, NULL) : NULL;
        proc_ok = proc_ok && o->process[i];
    }
    if (!f->requests || !f->duration || !f->in_flight || !f->queue || !f->instances ||
        !f->desired || !f->actual || !f->cpu_idle || !f->cold || !f->cold_duration ||
        !f->billable || !o->busy_poll || !proc_ok) {
        sl_metrics_free(o->reg);
        free(o);
        return -1;
    }
    o->meter = sl_meter_new(sl_meter_wall_offset_now());
    if (prices)
        o->prices = *prices;
    else
        sl_prices_default(&o->prices);
    o->flush = ctl_timer_new(c->loop, c);
    uv_timer_start(o->flush, flush_tick, FLUSH_MS, FLUSH_MS);
    c->obs = o;
    return 0;
}

void ctl_obs_flush(sl_controller_t *c)
{
    sl_error_t err = {0};
    if (c->obs && sl_meter_flush(c->obs->meter, c->store, sl_now_ns(), &err) < 0)
        sl_warn(MOD, "flushing usage: %s", err.msg);
}

void ctl_obs_stop(sl_controller_t *c)
{
    if (c->obs)
        ctl_timer_close(&c->obs->flush);
}

void ctl_obs_free(sl_controller_t *c)
{
    ctl_obs_t *o = c->obs;
    if (!o)
        return;
    ctl_obs_flush(c);
    sl_meter_free(o->meter);
    sl_metrics_free(o->reg);
    free(o);
    c->obs = NULL;
}

void ctl_obs_rev_init(rev_rt_t *r)
{
    ctl_obs_t *o = r->ctl->obs;
    if (!o)
        return;
    ctl_rev_metrics_t *m = xcalloc(1, sizeof(*m));
    const char *svc = r->cfg->service ? r->cfg->service : "";
    const char *sr[] = {r->cfg->namespace_, svc, r->name, NULL};
    for (size_t i = 0; i < 5; i++) {
        sr[3] = CODE_CLASSES[i];
        m->requests[i] = sl_metrics_series(o->f.requests, sr);
    }
    for (size_t i = 0; i < 4; i++) {
        sr[3] = STATES[i];
        m->instances[i] = sl_metrics_series(o->f.instances, sr);
    }
    m->duration = sl_metrics_series(o->f.duration, sr);
    m->in_flight = sl_metrics_series(o->f.in_flight, sr);
    m->queue = sl_metrics_series(o->f.queue, sr);
    m->desired = sl_metrics_series(o->f.desired, sr);
    m->actual = sl_metrics_series(o->f.actual, sr);
    m->cpu_idle = sl_metrics_series(o->f.cpu_idle, sr);
    m->cold = sl_metrics_series(o->f.cold, sr);
    m->cold_duration = sl_metrics_series(o->f.cold_duration, sr);
    m->billable = sl_metrics_series(o->f.billable, sr);
    r->metrics = m;
}

/* The revision no longer runs (deleted, or out of every traffic target):
 * its series go, so that neither memory nor the per-family series cap
 * grows with every revision a service ever had. Should it serve again, its
 * counters restart from zero and its billable total from the meter's. */
void ctl_obs_rev_free(rev_rt_t *r)
{
    ctl_rev_metrics_t *m = r->metrics;
    if (!m)
        return;
    for (size_t i = 0; i < SL_ARRAY_LEN(m->requests); i++)
        sl_metric_remove(m->requests[i]);
    for (size_t i = 0; i < SL_ARRAY_LEN(m->instances); i++)
        sl_metric_remove(m->instances[i]);
    sl_metric_t *one[] = {m->duration, m->in_flight, m->queue,         m->desired, m->actual,
                          m->cpu_idle, m->cold,      m->cold_duration, m->billable};
    for (size_t i = 0; i < SL_ARRAY_LEN(one); i++)
        sl_metric_remove(one[i]);
    free(m);
    r->metrics = NULL;
}

void ctl_obs_answered(rev_rt_t *r, int status)
{
    if (!r->metrics)
        return;
    int cls = status >= 100 && status < 600 ? status / 100 - 1 : 4;
    sl_metric_inc(r->metrics->requests[cls]);
}

/* ---- instance and request events ------------------------------------- */

void ctl_obs_instance_start(inst_rt_t *i)
{
    ctl_obs_t *o = i->rev->ctl->obs;
    if (!o)
        return;
    rev_rt_t *r = i->rev;
    /* Billed at the configured size, or Cloud Run's defaults (1 vCPU,
     * 512 MiB) when none is set, plus the runtime class's overhead. */
    int64_t cpu = (r->cfg->cpu_millis ? r->cfg->cpu_millis : 1000) + r->profile.overhead_cpu_millis;
    int64_t mem =
        (r->cfg->memory_limit ? r->cfg->memory_limit : 512LL << 20) + r->profile.overhead_memory;
    i->meter = sl_meter_instance_start(o->meter, r->cfg->namespace_, r->cfg->service, r->name,
                                       sl_instance_id(i->inst), cpu, mem, sl_now_ns());
    if (r->metrics)
        sl_metric_inc(r->metrics->cold);
}

void ctl_obs_instance_ready(inst_rt_t *i)
{
    ctl_obs_t *o = i->rev->ctl->obs;
    if (!o || !i->meter)
        return;
    sl_meter_instance_ready(o->meter, i->meter, sl_now_ns());
    uint64_t d = sl_instance_ready_ns(i->inst) - sl_instance_started_ns(i->inst);
    if (i->rev->metrics)
        sl_metric_observe(i->rev->metrics->cold_duration, (double)d / 1e9);
}

void ctl_obs_instance_stopping(inst_rt_t *i)
{
    ctl_obs_t *o = i->rev->ctl->obs;
    if (o && i->meter)
        sl_meter_instance_stopping(o->meter, i->meter, sl_now_ns());
}

void ctl_obs_instance_exited(inst_rt_t *i)
{
    ctl_obs_t *o = i->rev->ctl->obs;
    if (o && i->meter)
        sl_meter_instance_exited(o->meter, i->meter, sl_now_ns());
}

void ctl_obs_instance_free(inst_rt_t *i)
{
    ctl_obs_t *o = i->rev->ctl->obs;
    if (o && i->meter)
        sl_meter_instance_release(o->meter, i->meter);
    i->meter = NULL;
}

uint64_t ctl_obs_request_begin(inst_rt_t *i, uint64_t now)
{
    ctl_obs_t *o = i->rev->ctl->obs;
    return o && i->meter ? sl_meter_request_begin(o->meter, i->meter, now) : now;
}

void ctl_obs_request_end(inst_rt_t *i, uint64_t token, int status, bool failed, uint64_t now)
{
    ctl_obs_t *o = i->rev->ctl->obs;
    if (o && i->meter)
        sl_meter_request_end(o->meter, i->meter, token, now);
    rev_rt_t *r = i->rev;
    if (!r->metrics)
        return;
    ctl_obs_answered(r, failed && status == 0 ? 502 : status ? status : 504);
    sl_metric_observe(r->metrics->duration, (double)(now - token) / 1e9);
}

/* ---- reads ------------------------------------------------------------ */

static void refresh_gauges(sl_controller_t *c)
{
    for (rev_rt_t *r = c->revs; r; r = r->all_next) {
        ctl_rev_metrics_t *m = r->metrics;
        if (!m)
            continue;
        sl_metric_set(m->in_flight, r->inflight);
        sl_metric_set(m->queue, (double)r->n_waiting);
        sl_metric_set(m->desired, r->as.desired);
        sl_metric_set(m->actual, r->n_ready);
        int ready = 0, draining = 0, held = 0;
        for (inst_rt_t *i = r->instances; i; i = i->next) {
            if (i->draining || i->stopped)
                draining++;
            else if (i->ready)
                ready++;
            held += i->ready && !i->draining && !i->stopped && sl_instance_cpu_held(i->inst);
        }
        sl_metric_set(m->cpu_idle, held);
        sl_metric_set(m->instances[0], r->n_starting);
        sl_metric_set(m->instances[1], ready);
        sl_metric_set(m->instances[2], draining);
        sl_metric_set(m->instances[3], r->state == REV_FAILED ? 1 : 0);
    }
}

/* The daemon's own figures, read at each scrape. */
static void process_gauges(ctl_obs_t *o)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        sl_metric_set(o->process[0], (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                                         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    sl_autofree char *statm = NULL;
    long pages = 0;
    if (sl_read_file("/proc/self/statm", 256, &statm, NULL, NULL) == 0 &&
        sscanf(statm, "%*s %ld", &pages) == 1)
        sl_metric_set(o->process[1], (double)pages * (double)sysconf(_SC_PAGESIZE));
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        for (struct dirent *de; (de = readdir(d));)
            n += de->d_name[0] != '.';
        closedir(d);
        sl_metric_set(o->process[2], (double)(n - 1)); /* not the one reading it */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        sl_metric_set(o->process[3], (double)rl.rlim_cur);
    struct mallinfo2 mi = mallinfo2();
    sl_metric_set(o->process[4], (double)(mi.uordblks + mi.hblkhd));
}

int sl_controller_metrics(sl_controller_t *c, char **text, size_t *len)
{
    if (!c->obs)
        return -1;
    refresh_gauges(c);
    /* Billable seconds come from the meter's persisted and live totals. */
    json_t *report = NULL;
    sl_error_t err = {0};
    if (sl_meter_query(c->obs->meter, c->store, NULL, NULL, 0, sl_now_ns(), &report, &err) == 0) {
        size_t k;
        json_t *e;
        json_array_foreach(json_object_get(report, "revisions"), k, e)
        {
            rev_rt_t *r =
                ctl_rev_find(c, sl_json_str(e, "namespace") ? sl_json_str(e, "namespace") : "",
                             sl_json_str(e, "revision") ? sl_json_str(e, "revision") : "");
            sl_usage_totals_t t;
            sl_usage_totals_from_json(e, &t);
            if (r && r->metrics)
                sl_metric_set(r->metrics->billable, t.model[SL_MODEL_CLOUDRUN].seconds);
        }
    }
    json_decref(report);
    if (c->router) {
        sl_router_stats_t st;
        sl_router_stats(c->router, &st);
        sl_metric_set(c->obs->busy_poll, (double)st.busy_poll_ns / 1e9);
    }
    process_gauges(c->obs);
    return sl_metrics_render(c->obs->reg, text, len);
}

int sl_controller_usage(sl_controller_t *c, const char *ns, const char *service, int64_t since_wall,
                        json_t **body)
{
    sl_error_t err = {0};
    json_t *report = NULL;
    if (!c->obs || sl_meter_query(c->obs->meter, c->store, ns, service, since_wall, sl_now_ns(),
                                  &report, &err) < 0) {
        *body = sl_status_json(500, "InternalError", err.msg[0] ? err.msg : "metering is off");
        return 500;
    }
    sl_prices_annotate(&c->obs->prices, report);
    *body = report;
    return 200;
}
