/*
 * meter.c — exact usage metering (see meter.h for the billing rules).
 *
 * Each instance is a small state machine with one cursor, acc_to: every
 * quantity the meter integrates (alive, busy, requests in flight) is
 * constant between two events, so at each event (and at flush) the segment
 * [acc_to, now) is split at wall-clock minute boundaries and added to the
 * instance's revision's per-minute accumulators. Closing a period adds its
 * rounding remainder to the minute in which it closes. The accumulators
 * are deltas since the last flush; a flush adds them into the store.
 */
#include "meter.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <time.h>

#define NS_PER_S  1000000000LL
#define MINUTE_NS (60 * NS_PER_S)
#define GIB       1073741824.0

static const char *const model_names[SL_MODEL_COUNT] = {"cloudrun", "instance", "lambda",
                                                        "fargate"};

typedef struct minute_acc {
    int64_t minute; /* epoch seconds of the minute's start */
    int64_t requests, instances;
    int64_t busy_ns;
    int64_t ns[SL_MODEL_COUNT];
    double vcpu_s[SL_MODEL_COUNT], gib_s[SL_MODEL_COUNT];
} minute_acc_t;

typedef struct rev {
    struct rev *next;
    char *ns, *service, *revision;
    size_t refs; /* live instance handles */
    minute_acc_t *acc;
    size_t nacc, cap;
} rev_t;

typedef enum { ST_STARTING, ST_READY, ST_STOPPING, ST_EXITED } inst_state_t;

struct sl_meter_instance {
    sl_meter_instance_t *prev, *next;
    rev_t *rev;
    char *id;
    double vcpu, gib;
    inst_state_t state;
    int64_t in_flight;
    uint64_t t_start, t_exit;
    uint64_t last;   /* latest event time seen (clamp) */
    uint64_t acc_to; /* time attributed up to */
    bool busy_open;
    uint64_t busy_since;
    /* The busy period that closed last: reopened (its rounding undone) when
     * busy resumes at the very instant it closed, so touching intervals form
     * one period. */
    bool closed_valid;
    uint64_t closed_at, closed_since;
    int64_t closed_rem;
};

struct sl_meter {
    int64_t wall_offset;
    rev_t *revs;
    sl_meter_instance_t *insts;
    uint64_t ninst, unmatched_ends;
};

const char *sl_billing_model_name(sl_billing_model_t m)
{
    return (unsigned)m < SL_MODEL_COUNT ? model_names[m] : "unknown";
}

int sl_billing_model_parse(const char *name)
{
    for (int i = 0; name && i < SL_MODEL_COUNT; i++)
        if (!strcmp(name, model_names[i]))
            return i;
    return -1;
}

int64_t sl_meter_wall_offset_now(void)
{
    struct timespec rt, mono;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    return ((int64_t)rt.tv_sec - (int64_t)mono.tv_sec) * NS_PER_S +
           ((int64_t)rt.tv_nsec - (int64_t)mono.tv_nsec);
}

sl_meter_t *sl_meter_new(int64_t wall_offset_ns)
{
    sl_meter_t *m = xcalloc(1, sizeof(*m));
    m->wall_offset = wall_offset_ns;
    return m;
}

static void rev_free(rev_t *r)
{
    free(r->ns);
    free(r->service);
    free(r->revision);
    free(r->acc);
    free(r);
}

void sl_meter_free(sl_meter_t *m)
{
    if (!m)
        return;
    while (m->insts) {
        sl_meter_instance_t *i = m->insts;
        m->insts = i->next;
        free(i->id);
        free(i);
    }
    while (m->revs) {
        rev_t *r = m->revs;
        m->revs = r->next;
        rev_free(r);
    }
    free(m);
}

/* ---- attribution ---- */

static int64_t minute_of(const sl_meter_t *m, uint64_t t)
{
    int64_t wall = (int64_t)t + m->wall_offset;
    int64_t mi = wall / MINUTE_NS;
    if (wall < 0 && wall % MINUTE_NS)
        mi--;
    return mi * 60;
}

/* Monotonic time at which the minute starting at `minute` ends. */
static uint64_t minute_end_mono(const sl_meter_t *m, int64_t minute)
{
    int64_t end = (minute + 60) * NS_PER_S - m->wall_offset;
    return end < 0 ? 0 : (uint64_t)end;
}

static minute_acc_t *acc_for(rev_t *r, int64_t minute)
{
    for (size_t i = r->nacc; i-- > 0;)
        if (r->acc[i].minute == minute)
            return &r->acc[i];
    if (r->nacc == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4;
        r->acc = xrealloc(r->acc, r->cap * sizeof(*r->acc));
    }
    minute_acc_t *a = &r->acc[r->nacc++];
    memset(a, 0, sizeof(*a));
    a->minute = minute;
    return a;
}

static void add_model(minute_acc_t *a, const sl_meter_instance_t *i, int model, int64_t ns)
{
    a->ns[model] += ns;
    a->vcpu_s[model] += (double)ns / NS_PER_S * i->vcpu;
    a->gib_s[model] += (double)ns / NS_PER_S * i->gib;
}

static bool is_busy(const sl_meter_instance_t *i)
{
    return i->state == ST_STARTING || i->state == ST_STOPPING || i->in_flight > 0;
}

/* Attribute [acc_to, t) at the current state, split at minute boundaries. */
static void advance(sl_meter_t *m, sl_meter_instance_t *i, uint64_t t)
{
    if (i->state == ST_EXITED || t <= i->acc_to)
        return;
    while (i->acc_to < t) {
        int64_t minute = minute_of(m, i->acc_to);
        uint64_t end = minute_end_mono(m, minute);
        if (end > t || end <= i->acc_to)
            end = t;
        int64_t seg = (int64_t)(end - i->acc_to);
        minute_acc_t *a = acc_for(i->rev, minute);
        add_model(a, i, SL_MODEL_INSTANCE, seg);
        add_model(a, i, SL_MODEL_FARGATE, seg);
        if (i->busy_open) {
            a->busy_ns += seg;
            add_model(a, i, SL_MODEL_CLOUDRUN, seg);
        }
        if (i->in_flight > 0)
            add_model(a, i, SL_MODEL_LAMBDA, seg * i->in_flight);
        i->acc_to = end;
    }
}

/* Rounding remainder of a period of raw length d: ceil(d / unit) * unit − d,
 * where a period that happened bills at least one unit. */
static int64_t round_rem(int64_t d, int64_t unit)
{
    if (d <= 0)
        return unit;
    int64_t r = d % unit;
    return r ? unit - r : 0;
}

static uint64_t clamp(sl_meter_instance_t *i, uint64_t now)
{
    if (now < i->last)
        now = i->last;
    i->last = now;
    return now;
}

static void open_busy(sl_meter_t *m, sl_meter_instance_t *i, uint64_t t)
{
    if (i->busy_open)
        return;
    i->busy_open = true;
    i->busy_since = t;
    if (i->closed_valid && i->closed_at == t) {
        add_model(acc_for(i->rev, minute_of(m, t)), i, SL_MODEL_CLOUDRUN, -i->closed_rem);
        i->busy_since = i->closed_since;
    }
    i->closed_valid = false;
}

static void close_busy(sl_meter_t *m, sl_meter_instance_t *i, uint64_t t)
{
    if (!i->busy_open)
        return;
    int64_t rem = round_rem((int64_t)(t - i->busy_since), SL_METER_CLOUDRUN_UNIT_NS);
    add_model(acc_for(i->rev, minute_of(m, t)), i, SL_MODEL_CLOUDRUN, rem);
    i->busy_open = false;
    i->closed_valid = true;
    i->closed_at = t;
    i->closed_since = i->busy_since;
    i->closed_rem = rem;
}

/* ---- instance events ---- */

static rev_t *rev_get(sl_meter_t *m, const char *ns, const char *service, const char *revision)
{
    for (rev_t *r = m->revs; r; r = r->next)
        if (!strcmp(r->ns, ns) && !strcmp(r->service, service) && !strcmp(r->revision, revision))
            return r;
    rev_t *r = xcalloc(1, sizeof(*r));
    r->ns = xstrdup(ns);
    r->service = xstrdup(service);
    r->revision = xstrdup(revision);
    r->next = m->revs;
    m->revs = r;
    return r;
}

sl_meter_instance_t *sl_meter_instance_start(sl_meter_t *m, const char *ns, const char *service,
                                             const char *revision, const char *instance_id,
                                             int64_t cpu_millis, int64_t memory_bytes, uint64_t now)
{
    sl_meter_instance_t *i = xcalloc(1, sizeof(*i));
    i->rev = rev_get(m, ns ? ns : "default", service ? service : "", revision ? revision : "");
    i->rev->refs++;
    i->id = xstrdup(instance_id ? instance_id : "");
    i->vcpu = cpu_millis > 0 ? (double)cpu_millis / 1000.0 : 0;
    i->gib = memory_bytes > 0 ? (double)memory_bytes / GIB : 0;
    i->state = ST_STARTING;
    i->t_start = i->last = i->acc_to = now;
    open_busy(m, i, now);
    acc_for(i->rev, minute_of(m, now))->instances++;
    i->next = m->insts;
    if (m->insts)
        m->insts->prev = i;
    m->insts = i;
    m->ninst++;
    return i;
}

void sl_meter_instance_ready(sl_meter_t *m, sl_meter_instance_t *i, uint64_t now)
{
    if (i->state != ST_STARTING)
        return;
    now = clamp(i, now);
    advance(m, i, now);
    i->state = ST_READY;
    if (!is_busy(i))
        close_busy(m, i, now);
}

uint64_t sl_meter_request_begin(sl_meter_t *m, sl_meter_instance_t *i, uint64_t now)
{
    now = clamp(i, now);
    if (i->state == ST_EXITED)
        return now;
    advance(m, i, now);
    acc_for(i->rev, minute_of(m, now))->requests++;
    i->in_flight++;
    open_busy(m, i, now);
    return now;
}

void sl_meter_request_end(sl_meter_t *m, sl_meter_instance_t *i, uint64_t began, uint64_t now)
{
    now = clamp(i, now);
    if (i->in_flight <= 0) {
        m->unmatched_ends++;
        return;
    }
    uint64_t t = now;
    if (i->state == ST_EXITED)
        t = i->t_exit; /* counted up to the exit already */
    else
        advance(m, i, now);
    int64_t d = began < t ? (int64_t)(t - began) : 0;
    add_model(acc_for(i->rev, minute_of(m, t)), i, SL_MODEL_LAMBDA,
              round_rem(d, SL_METER_LAMBDA_UNIT_NS));
    i->in_flight--;
    if (i->state != ST_EXITED && !is_busy(i))
        close_busy(m, i, now);
}

void sl_meter_instance_stopping(sl_meter_t *m, sl_meter_instance_t *i, uint64_t now)
{
    if (i->state == ST_STOPPING || i->state == ST_EXITED)
        return;
    now = clamp(i, now);
    advance(m, i, now);
    i->state = ST_STOPPING;
    open_busy(m, i, now);
}

void sl_meter_instance_exited(sl_meter_t *m, sl_meter_instance_t *i, uint64_t now)
{
    if (i->state == ST_EXITED)
        return;
    now = clamp(i, now);
    advance(m, i, now);
    close_busy(m, i, now);
    i->state = ST_EXITED;
    i->t_exit = now;
    int64_t life = (int64_t)(now - i->t_start);
    minute_acc_t *a = acc_for(i->rev, minute_of(m, now));
    add_model(a, i, SL_MODEL_INSTANCE, round_rem(life, SL_METER_CLOUDRUN_UNIT_NS));
    int64_t fargate = life + round_rem(life, SL_METER_FARGATE_UNIT_NS);
    if (fargate < SL_METER_FARGATE_MINIMUM_NS)
        fargate = SL_METER_FARGATE_MINIMUM_NS;
    add_model(a, i, SL_MODEL_FARGATE, fargate - life);
}

void sl_meter_instance_release(sl_meter_t *m, sl_meter_instance_t *i)
{
    if (!i)
        return;
    if (i->state != ST_EXITED)
        sl_meter_instance_exited(m, i, i->last);
    if (i->prev)
        i->prev->next = i->next;
    else
        m->insts = i->next;
    if (i->next)
        i->next->prev = i->prev;
    i->rev->refs--;
    m->ninst--;
    free(i->id);
    free(i);
}

int64_t sl_meter_instance_in_flight(const sl_meter_instance_t *i)
{
    return i ? i->in_flight : 0;
}

void sl_meter_stats(const sl_meter_t *m, sl_meter_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->live_instances = m->ninst;
    out->unmatched_ends = m->unmatched_ends;
    for (const rev_t *r = m->revs; r; r = r->next)
        out->pending_minutes += r->nacc;
}

static void advance_all(sl_meter_t *m, uint64_t now)
{
    for (sl_meter_instance_t *i = m->insts; i; i = i->next)
        advance(m, i, clamp(i, now));
}

/* ---- persistence ---- */

static double jnum(const json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

static int64_t jint(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : (int64_t)json_number_value(v);
}

static void set_int(json_t *o, const char *key, int64_t add)
{
    json_object_set_new(o, key, json_integer(jint(o, key) + add));
}

static void set_real(json_t *o, const char *key, double add)
{
    json_object_set_new(o, key, json_real(jnum(o, key) + add));
}

static json_t *child(json_t *o, const char *key)
{
    json_t *c = json_object_get(o, key);
    if (!json_is_object(c)) {
        c = json_object();
        json_object_set_new(o, key, c);
    }
    return c;
}

/* Add an accumulator into a stored usage object (created when obj is new). */
static void acc_into(json_t *obj, const rev_t *r, const minute_acc_t *a, const char *name)
{
    json_object_set_new(obj, "apiVersion", json_string("sluice.dev/v1"));
    json_object_set_new(obj, "kind", json_string("Usage"));
    json_t *meta = child(obj, "metadata");
    json_object_set_new(meta, "name", json_string(name));
    json_object_set_new(meta, "namespace", json_string(r->ns));
    json_object_set_new(obj, "service", json_string(r->service));
    json_object_set_new(obj, "revision", json_string(r->revision));
    json_object_set_new(obj, "minute", json_integer(a->minute));
    set_int(obj, "requests", a->requests);
    set_int(obj, "instancesStarted", a->instances);
    set_int(obj, "busyNs", a->busy_ns);
    json_t *models = child(obj, "models");
    for (int k = 0; k < SL_MODEL_COUNT; k++) {
        json_t *mo = child(models, model_names[k]);
        set_int(mo, "ns", a->ns[k]);
        set_real(mo, "vcpuSeconds", a->vcpu_s[k]);
        set_real(mo, "gibSeconds", a->gib_s[k]);
    }
}

static int flush_acc(sl_store_t *s, const rev_t *r, const minute_acc_t *a, sl_error_t *err)
{
    sl_autofree char *name = xasprintf("%s.%s.%lld", r->service, r->revision, (long long)a->minute);
    json_t *obj = NULL;
    int rc = sl_store_get(s, SL_METER_KIND, r->ns, name, &obj, err);
    if (rc == -ENOENT) {
        sl_error_clear(err);
        obj = json_object();
    } else if (rc < 0) {
        return rc;
    }
    acc_into(obj, r, a, name);
    rc = sl_store_put(s, SL_METER_KIND, r->ns, name, obj, err);
    json_decref(obj);
    return rc;
}

static void drop_idle_revs(sl_meter_t *m)
{
    rev_t **pp = &m->revs;
    while (*pp) {
        rev_t *r = *pp;
        if (r->refs == 0 && r->nacc == 0) {
            *pp = r->next;
            rev_free(r);
        } else {
            pp = &r->next;
        }
    }
}

int sl_meter_flush(sl_meter_t *m, sl_store_t *s, uint64_t now, sl_error_t *err)
{
    advance_all(m, now);
    bool any = false;
    for (rev_t *r = m->revs; r && !any; r = r->next)
        any = r->nacc > 0;
    if (!any) {
        drop_idle_revs(m);
        return 0;
    }
    int rc = sl_store_txn_begin(s, err);
    if (rc < 0)
        return sl_error_wrap(err, "usage flush");
    for (rev_t *r = m->revs; r && rc >= 0; r = r->next)
        for (size_t k = 0; k < r->nacc && rc >= 0; k++)
            rc = flush_acc(s, r, &r->acc[k], err);
    if (rc >= 0)
        rc = sl_store_txn_commit(s, err);
    else
        sl_store_txn_rollback(s);
    if (rc < 0)
        return sl_error_wrap(err, "usage flush");
    for (rev_t *r = m->revs; r; r = r->next)
        r->nacc = 0;
    drop_idle_revs(m);
    return 0;
}

/* ---- query ---- */

typedef struct qrow {
    char *ns, *service, *revision;
    sl_usage_totals_t t;
} qrow_t;

typedef struct query {
    qrow_t *rows;
    size_t n, cap;
    sl_usage_totals_t total;
} query_t;

static sl_usage_totals_t *row_for(query_t *q, const char *ns, const char *service,
                                  const char *revision)
{
    for (size_t i = 0; i < q->n; i++)
        if (!strcmp(q->rows[i].ns, ns) && !strcmp(q->rows[i].service, service) &&
            !strcmp(q->rows[i].revision, revision))
            return &q->rows[i].t;
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 8;
        q->rows = xrealloc(q->rows, q->cap * sizeof(*q->rows));
    }
    qrow_t *r = &q->rows[q->n++];
    memset(r, 0, sizeof(*r));
    r->ns = xstrdup(ns);
    r->service = xstrdup(service);
    r->revision = xstrdup(revision);
    return &r->t;
}

static void totals_add(sl_usage_totals_t *dst, const sl_usage_totals_t *src)
{
    dst->requests += src->requests;
    dst->instances_started += src->instances_started;
    dst->busy_seconds += src->busy_seconds;
    for (int k = 0; k < SL_MODEL_COUNT; k++) {
        dst->model[k].seconds += src->model[k].seconds;
        dst->model[k].vcpu_seconds += src->model[k].vcpu_seconds;
        dst->model[k].gib_seconds += src->model[k].gib_seconds;
    }
}

static void totals_from_stored(const json_t *obj, sl_usage_totals_t *t)
{
    memset(t, 0, sizeof(*t));
    t->requests = jint(obj, "requests");
    t->instances_started = jint(obj, "instancesStarted");
    t->busy_seconds = (double)jint(obj, "busyNs") / NS_PER_S;
    json_t *models = json_object_get(obj, "models");
    for (int k = 0; k < SL_MODEL_COUNT; k++) {
        json_t *mo = json_object_get(models, model_names[k]);
        t->model[k].seconds = (double)jint(mo, "ns") / NS_PER_S;
        t->model[k].vcpu_seconds = jnum(mo, "vcpuSeconds");
        t->model[k].gib_seconds = jnum(mo, "gibSeconds");
    }
}

static void totals_from_acc(const minute_acc_t *a, sl_usage_totals_t *t)
{
    memset(t, 0, sizeof(*t));
    t->requests = a->requests;
    t->instances_started = a->instances;
    t->busy_seconds = (double)a->busy_ns / NS_PER_S;
    for (int k = 0; k < SL_MODEL_COUNT; k++) {
        t->model[k].seconds = (double)a->ns[k] / NS_PER_S;
        t->model[k].vcpu_seconds = a->vcpu_s[k];
        t->model[k].gib_seconds = a->gib_s[k];
    }
}

static void query_add(query_t *q, const char *ns, const char *service, const char *revision,
                      const sl_usage_totals_t *t)
{
    totals_add(row_for(q, ns, service, revision), t);
    totals_add(&q->total, t);
}

static json_t *usage_json(const sl_usage_totals_t *t)
{
    json_t *models = json_object();
    for (int k = 0; k < SL_MODEL_COUNT; k++)
        json_object_set_new(models, model_names[k],
                            json_pack("{s:f, s:f, s:f}", "seconds", t->model[k].seconds,
                                      "vcpuSeconds", t->model[k].vcpu_seconds, "gibSeconds",
                                      t->model[k].gib_seconds));
    return json_pack("{s:I, s:I, s:f, s:o}", "requests", (json_int_t)t->requests,
                     "instancesStarted", (json_int_t)t->instances_started, "busySeconds",
                     t->busy_seconds, "models", models);
}

void sl_usage_totals_from_json(const json_t *usage, sl_usage_totals_t *t)
{
    memset(t, 0, sizeof(*t));
    t->requests = jint(usage, "requests");
    t->instances_started = jint(usage, "instancesStarted");
    t->busy_seconds = jnum(usage, "busySeconds");
    json_t *models = json_object_get(usage, "models");
    for (int k = 0; k < SL_MODEL_COUNT; k++) {
        json_t *mo = json_object_get(models, model_names[k]);
        t->model[k].seconds = jnum(mo, "seconds");
        t->model[k].vcpu_seconds = jnum(mo, "vcpuSeconds");
        t->model[k].gib_seconds = jnum(mo, "gibSeconds");
    }
}

static bool wanted(const char *want, const char *have)
{
    return !want || (have && !strcmp(want, have));
}

static int query_store(query_t *q, sl_store_t *s, const char *ns, const char *service,
                       int64_t since, sl_error_t *err)
{
    json_t *list = NULL;
    int rc = sl_store_list(s, SL_METER_KIND, ns, &list, err);
    if (rc < 0)
        return rc;
    size_t i;
    json_t *obj;
    json_array_foreach(list, i, obj)
    {
        const char *svc = json_string_value(json_object_get(obj, "service"));
        const char *rev = json_string_value(json_object_get(obj, "revision"));
        const char *ons =
            json_string_value(json_object_get(json_object_get(obj, "metadata"), "namespace"));
        if (!svc || !rev || !wanted(service, svc) || jint(obj, "minute") + 60 <= since)
            continue;
        sl_usage_totals_t t;
        totals_from_stored(obj, &t);
        query_add(q, ons ? ons : (ns ? ns : ""), svc, rev, &t);
    }
    json_decref(list);
    return 0;
}

static void query_live(query_t *q, sl_meter_t *m, const char *ns, const char *service,
                       int64_t since, uint64_t now)
{
    advance_all(m, now);
    for (const rev_t *r = m->revs; r; r = r->next) {
        if (!wanted(ns, r->ns) || !wanted(service, r->service))
            continue;
        for (size_t k = 0; k < r->nacc; k++) {
            if (r->acc[k].minute + 60 <= since)
                continue;
            sl_usage_totals_t t;
            totals_from_acc(&r->acc[k], &t);
            query_add(q, r->ns, r->service, r->revision, &t);
        }
    }
}

static json_t *report_json(const query_t *q, const char *ns, const char *service, int64_t since,
                           int64_t until)
{
    json_t *revs = json_array();
    for (size_t i = 0; i < q->n; i++) {
        json_t *u = usage_json(&q->rows[i].t);
        json_object_set_new(u, "namespace", json_string(q->rows[i].ns));
        json_object_set_new(u, "service", json_string(q->rows[i].service));
        json_object_set_new(u, "revision", json_string(q->rows[i].revision));
        json_array_append_new(revs, u);
    }
    return json_pack("{s:s, s:s, s:o, s:o, s:I, s:I, s:o, s:o}", "apiVersion", "sluice.dev/v1",
                     "kind", "UsageReport", "namespace", ns ? json_string(ns) : json_null(),
                     "service", service ? json_string(service) : json_null(), "since",
                     (json_int_t)since, "until", (json_int_t)until, "totals", usage_json(&q->total),
                     "revisions", revs);
}

int sl_meter_query(sl_meter_t *m, sl_store_t *s, const char *ns, const char *service,
                   int64_t since_wall, uint64_t now, json_t **out, sl_error_t *err)
{
    query_t q = {0};
    *out = NULL;
    int rc = s ? query_store(&q, s, ns, service, since_wall, err) : 0;
    if (rc >= 0) {
        int64_t until;
        if (m) {
            query_live(&q, m, ns, service, since_wall, now);
            until = ((int64_t)now + m->wall_offset) / NS_PER_S;
        } else {
            until = (int64_t)time(NULL);
        }
        *out = report_json(&q, ns, service, since_wall, until);
    }
    for (size_t i = 0; i < q.n; i++) {
        free(q.rows[i].ns);
        free(q.rows[i].service);
        free(q.rows[i].revision);
    }
    free(q.rows);
    return rc < 0 ? sl_error_wrap(err, "usage query") : 0;
}
