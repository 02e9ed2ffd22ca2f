/*
 * test_meter.c — usage metering through its public API: the interval
 * arithmetic behind each billing model (union of busy intervals, 100 ms
 * rounding per busy period, 1 ms per request, lifetime with a 60 s minimum),
 * minute attribution, in-flight requests at flush, clock edge cases, and the
 * round trip through the real SQLite store.
 *
 * Time in these tests: monotonic 0 is wall-clock 1700000040 s, the start of
 * a minute, so minute boundaries fall at multiples of 60 s of monotonic time.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>

#include "meter.h"
#include "prices.h"
#include "store.h"

#define EPOCH0 1700000040LL
#define OFFSET (EPOCH0 * 1000000000LL)
#define MS(x)  ((uint64_t)llround((x)*1000000.0))
#define MIB    (1024LL * 1024)

typedef struct fx {
    char dir[64];
    char *path;
    sl_store_t *s;
    sl_meter_t *m;
} fx_t;

static int setup(void **state)
{
    fx_t *f = xcalloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/sl-meter-test-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    f->path = xasprintf("%s/state.db", f->dir);
    sl_error_t err = {0};
    if (sl_store_open_sqlite(f->path, &f->s, &err) < 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return -1;
    }
    f->m = sl_meter_new(OFFSET);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    sl_meter_free(f->m);
    sl_store_close(f->s);
    sl_rm_rf(f->dir, NULL);
    free(f->path);
    free(f);
    return 0;
}

/* Totals over everything (store + live) since wall time `since`. */
static sl_usage_totals_t query(fx_t *f, sl_meter_t *m, const char *service, int64_t since,
                               uint64_t now)
{
    json_t *rep = NULL;
    sl_error_t err = {0};
    int rc = sl_meter_query(m, f->s, "default", service, since, now, &rep, &err);
    if (rc != 0)
        fail_msg("query: %s", err.msg);
    sl_usage_totals_t t;
    sl_usage_totals_from_json(json_object_get(rep, "totals"), &t);
    json_decref(rep);
    return t;
}

static void flush(fx_t *f, uint64_t now)
{
    sl_error_t err = {0};
    if (sl_meter_flush(f->m, f->s, now, &err) != 0)
        fail_msg("flush: %s", err.msg);
}

#define assert_near(a, b) assert_true(fabs((double)(a) - (double)(b)) < 1e-9)

static void req(sl_meter_t *m, sl_meter_instance_t *i, double b, double e)
{
    uint64_t t = sl_meter_request_begin(m, i, MS(b));
    sl_meter_request_end(m, i, t, MS(e));
}

/*
 * The worked example, one instance with 1 vCPU and 512 MiB (0.5 GiB):
 *
 *   0       start          busy [0, 250)            start-up
 *   250     ready
 *   A 1000–1600, B 1200–1400 (nested in A), C 1500–1950 (overlaps A),
 *   D 1950–2010 (touches C)                 busy [1000, 2010) one period
 *   E 3000–3040.5 (disjoint)                busy [3000, 3040.5)
 *   5000    stopping                        busy [5000, 5300) shutdown
 *   5300    exited
 *
 * Requests are interleaved as the router would see them (begin/end in time
 * order), not one after another.
 *
 * cloudrun: busy periods 250, 1010, 40.5, 300 ms (raw 1600.5 ms)
 *           rounded up to 100 ms each: 300 + 1100 + 100 + 300 = 1800 ms
 *           → 1.8 s, 1.8 vCPU-s, 0.9 GiB-s
 * instance: lifetime 5300 ms (already a multiple of 100 ms)
 *           → 5.3 s, 5.3 vCPU-s, 2.65 GiB-s
 * lambda:   A 600 + B 200 + C 450 + D 60 + E 41 (40.5 rounded up to 1 ms)
 *           = 1351 ms → 1.351 s, 1.351 vCPU-s, 0.6755 GiB-s
 * fargate:  lifetime 5.3 s → 6 s (per second) → 60 s minimum
 *           → 60 s, 60 vCPU-s, 30 GiB-s
 * requests 5, instances started 1.
 *
 * Costs at the default prices (prices.c):
 *   cloudrun 1.8 × 0.000024 + 0.9 × 0.0000025 + 5e-6 × 0.40 = 0.00004745
 *   instance 5.3 × 0.000018 + 2.65 × 0.000002                = 0.0001007
 *   lambda   0.6755 × 0.0000166667 + 5e-6 × 0.20             = 0.00001225835585
 *   fargate  60/3600 × 0.04048 + 30/3600 × 0.004445          = 0.000711708333…
 */
static void worked_example(sl_meter_t *m)
{
    sl_meter_instance_t *i =
        sl_meter_instance_start(m, "default", "hello", "hello-00001", "i1", 1000, 512 * MIB, 0);
    sl_meter_instance_ready(m, i, MS(250));
    uint64_t a = sl_meter_request_begin(m, i, MS(1000));
    uint64_t b = sl_meter_request_begin(m, i, MS(1200));
    sl_meter_request_end(m, i, b, MS(1400));
    uint64_t c = sl_meter_request_begin(m, i, MS(1500));
    sl_meter_request_end(m, i, a, MS(1600));
    sl_meter_request_end(m, i, c, MS(1950));
    uint64_t d = sl_meter_request_begin(m, i, MS(1950));
    sl_meter_request_end(m, i, d, MS(2010));
    req(m, i, 3000, 3040.5);
    sl_meter_instance_stopping(m, i, MS(5000));
    sl_meter_instance_exited(m, i, MS(5300));
    sl_meter_instance_release(m, i);
}

static void test_worked_example(void **state)
{
    fx_t *f = *state;
    worked_example(f->m);
    sl_usage_totals_t t = query(f, f->m, "hello", 0, MS(6000));
    assert_int_equal(t.requests, 5);
    assert_int_equal(t.instances_started, 1);
    assert_near(t.busy_seconds, 1.6005);
    assert_near(t.model[SL_MODEL_CLOUDRUN].seconds, 1.8);
    assert_near(t.model[SL_MODEL_CLOUDRUN].vcpu_seconds, 1.8);
    assert_near(t.model[SL_MODEL_CLOUDRUN].gib_seconds, 0.9);
    assert_near(t.model[SL_MODEL_INSTANCE].seconds, 5.3);
    assert_near(t.model[SL_MODEL_INSTANCE].gib_seconds, 2.65);
    assert_near(t.model[SL_MODEL_LAMBDA].seconds, 1.351);
    assert_near(t.model[SL_MODEL_LAMBDA].gib_seconds, 0.6755);
    assert_near(t.model[SL_MODEL_FARGATE].seconds, 60);
    assert_near(t.model[SL_MODEL_FARGATE].vcpu_seconds, 60);
    assert_near(t.model[SL_MODEL_FARGATE].gib_seconds, 30);

    sl_prices_t p;
    sl_prices_default(&p);
    assert_near(sl_prices_cost(&p, &t, SL_MODEL_CLOUDRUN), 0.00004745);
    assert_near(sl_prices_cost(&p, &t, SL_MODEL_INSTANCE), 0.0001007);
    assert_near(sl_prices_cost(&p, &t, SL_MODEL_LAMBDA), 0.6755 * 0.0000166667 + 0.000001);
    assert_near(sl_prices_cost(&p, &t, SL_MODEL_FARGATE),
                60.0 / 3600 * 0.04048 + 30.0 / 3600 * 0.004445);
}

/* Overlapping, nested, touching and disjoint requests, no start-up noise:
 * each case on its own instance, busy time checked against the union. */
static void test_interval_union(void **state)
{
    fx_t *f = *state;
    struct {
        const char *rev;
        double iv[3][2];
        int n;
        double busy_ms, billed_ms, lambda_ms;
    } cases[] = {
        {"overlap", {{1000, 1500}, {1200, 1800}}, 2, 800, 800, 1100},
        {"nested", {{1000, 2000}, {1200, 1300}}, 2, 1000, 1000, 1100},
        {"touching", {{1000, 1150}, {1150, 1230}}, 2, 230, 300, 230},
        {"disjoint", {{1000, 1150}, {1300, 1330}}, 2, 180, 300, 180},
        {"three-way", {{1000, 1100}, {1050, 1120}, {1110, 1401}}, 3, 401, 500, 461},
    };
    for (size_t c = 0; c < SL_ARRAY_LEN(cases); c++) {
        sl_meter_instance_t *i =
            sl_meter_instance_start(f->m, "default", "u", cases[c].rev, "i", 1000, 0, MS(0));
        sl_meter_instance_ready(f->m, i, MS(100)); /* start-up: 100 ms exactly */
        /* Replay begin/end events in time order. */
        uint64_t began[3] = {0};
        double ev[6];
        int kind[6], who[6], n = 0;
        for (int k = 0; k < cases[c].n; k++) {
            ev[n] = cases[c].iv[k][0], kind[n] = 0, who[n++] = k;
            ev[n] = cases[c].iv[k][1], kind[n] = 1, who[n++] = k;
        }
        for (int x = 0; x < n; x++) /* insertion sort; ends before begins at ties */
            for (int y = x;
                 y > 0 && (ev[y] < ev[y - 1] || (ev[y] == ev[y - 1] && kind[y] > kind[y - 1]));
                 y--) {
                double te = ev[y];
                ev[y] = ev[y - 1], ev[y - 1] = te;
                int tk = kind[y];
                kind[y] = kind[y - 1], kind[y - 1] = tk;
                int tw = who[y];
                who[y] = who[y - 1], who[y - 1] = tw;
            }
        for (int x = 0; x < n; x++) {
            if (kind[x] == 0)
                began[who[x]] = sl_meter_request_begin(f->m, i, MS(ev[x]));
            else
                sl_meter_request_end(f->m, i, began[who[x]], MS(ev[x]));
        }
        sl_meter_instance_release(f->m, i); /* exits at its last event: no shutdown time */
        json_t *rep = NULL;
        sl_error_t err = {0};
        assert_int_equal(sl_meter_query(f->m, NULL, "default", "u", 0, MS(5000), &rep, &err), 0);
        json_t *row = NULL, *r;
        size_t k;
        json_array_foreach(json_object_get(rep, "revisions"), k, r)
        {
            if (!strcmp(json_string_value(json_object_get(r, "revision")), cases[c].rev))
                row = r;
        }
        assert_non_null(row);
        sl_usage_totals_t t;
        sl_usage_totals_from_json(row, &t);
        json_decref(rep);
        if (fabs(t.busy_seconds - (100 + cases[c].busy_ms) / 1000.0) > 1e-9 ||
            fabs(t.model[SL_MODEL_CLOUDRUN].seconds - (100 + cases[c].billed_ms) / 1000.0) > 1e-9 ||
            fabs(t.model[SL_MODEL_LAMBDA].seconds - cases[c].lambda_ms / 1000.0) > 1e-9)
            fail_msg("%s: busy %.4f billed %.4f lambda %.4f", cases[c].rev, t.busy_seconds,
                     t.model[SL_MODEL_CLOUDRUN].seconds, t.model[SL_MODEL_LAMBDA].seconds);
    }
}

/* Ten concurrent 1 s requests bill about 1 s under Cloud Run and 10 s under
 * Lambda; the same ten one after another bill 10 s under both. */
static void test_concurrency_saves(void **state)
{
    fx_t *f = *state;
    sl_meter_instance_t *a =
        sl_meter_instance_start(f->m, "default", "conc", "conc-1", "a", 1000, 0, MS(0));
    sl_meter_instance_ready(f->m, a, MS(100));
    uint64_t b[10];
    for (int k = 0; k < 10; k++)
        b[k] = sl_meter_request_begin(f->m, a, MS(1000 + k));
    for (int k = 0; k < 10; k++)
        sl_meter_request_end(f->m, a, b[k], MS(2000 + k));
    sl_meter_instance_release(f->m, a);
    sl_usage_totals_t t = query(f, f->m, "conc", 0, MS(9000));
    assert_near(t.model[SL_MODEL_CLOUDRUN].seconds, 0.1 + 1.1); /* 1009 ms → 1.1 s */
    assert_near(t.model[SL_MODEL_LAMBDA].seconds, 10.0);

    sl_meter_instance_t *s =
        sl_meter_instance_start(f->m, "default", "serial", "serial-1", "s", 1000, 0, MS(0));
    sl_meter_instance_ready(f->m, s, MS(100));
    for (int k = 0; k < 10; k++)
        req(f->m, s, 1000 + k * 1500, 2000 + k * 1500);
    sl_meter_instance_release(f->m, s);
    t = query(f, f->m, "serial", 0, MS(90000));
    assert_near(t.model[SL_MODEL_CLOUDRUN].seconds, 0.1 + 10.0);
    assert_near(t.model[SL_MODEL_LAMBDA].seconds, 10.0);
}

/* A busy period spanning a minute boundary is split at the boundary; its
 * rounding remainder goes to the minute in which it closes. */
static void test_minute_boundary(void **state)
{
    fx_t *f = *state;
    sl_meter_instance_t *i =
        sl_meter_instance_start(f->m, "default", "mb", "mb-1", "i", 2000, 0, MS(59900));
    sl_meter_instance_ready(f->m, i, MS(59950));
    req(f->m, i, 59950, 60130); /* busy [59.9 s, 60.13 s): 230 ms → 300 ms */
    flush(f, MS(61000));
    /* Minute 0 holds the raw 100 ms; minute 1 holds 130 ms + the 70 ms remainder. */
    sl_usage_totals_t all = query(f, NULL, "mb", 0, 0);
    sl_usage_totals_t m1 = query(f, NULL, "mb", EPOCH0 + 60, 0);
    sl_usage_totals_t m1b = query(f, NULL, "mb", EPOCH0 + 30, 0); /* minute 0 still overlaps */
    assert_near(all.model[SL_MODEL_CLOUDRUN].seconds, 0.3);
    assert_near(all.model[SL_MODEL_CLOUDRUN].vcpu_seconds, 0.6);
    assert_near(m1.model[SL_MODEL_CLOUDRUN].seconds, 0.2);
    assert_near(m1b.model[SL_MODEL_CLOUDRUN].seconds, 0.3);
    assert_near(all.model[SL_MODEL_LAMBDA].seconds, 0.18);
    assert_near(m1.model[SL_MODEL_LAMBDA].seconds, 0.13);
    assert_int_equal(m1.requests, 0); /* counted when it began, in minute 0 */
    assert_int_equal(all.requests, 1);

    /* The stored objects, one per minute, named service.revision.minute. */
    json_t *obj = NULL;
    sl_error_t err = {0};
    assert_int_equal(sl_store_get(f->s, SL_METER_KIND, "default", "mb.mb-1.1700000040", &obj, &err),
                     0);
    assert_int_equal(json_integer_value(json_object_get(obj, "minute")), EPOCH0);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(obj, "models"), "cloudrun"), "ns")),
                     100000000);
    json_decref(obj);
    assert_int_equal(sl_store_get(f->s, SL_METER_KIND, "default", "mb.mb-1.1700000100", &obj, &err),
                     0);
    json_decref(obj);
    sl_meter_instance_release(f->m, i);
}

/* A request in flight at flush counts up to now without closing; the rest
 * and the rounding arrive when it ends. Live state shows in queries. */
static void test_in_flight_at_flush(void **state)
{
    fx_t *f = *state;
    sl_meter_instance_t *i =
        sl_meter_instance_start(f->m, "default", "fl", "fl-1", "i", 1000, 0, MS(0));
    sl_meter_instance_ready(f->m, i, MS(100));
    uint64_t b = sl_meter_request_begin(f->m, i, MS(1000));
    flush(f, MS(3000));
    assert_int_equal(sl_meter_instance_in_flight(i), 1);
    sl_usage_totals_t stored = query(f, NULL, "fl", 0, 0);
    assert_near(stored.model[SL_MODEL_CLOUDRUN].seconds, 0.1 + 2.0);
    assert_near(stored.model[SL_MODEL_LAMBDA].seconds, 2.0);
    assert_near(stored.model[SL_MODEL_INSTANCE].seconds, 3.0);
    /* Live view at 3.04 s: store + unflushed, open periods up to now. (A
     * query, like a flush, is a point on the instance's clock: later events
     * are never earlier than it.) */
    sl_usage_totals_t live = query(f, f->m, "fl", 0, MS(3040));
    assert_near(live.model[SL_MODEL_CLOUDRUN].seconds, 2.14);
    assert_near(live.model[SL_MODEL_LAMBDA].seconds, 2.04);
    sl_meter_request_end(f->m, i, b, MS(3050));
    sl_meter_instance_stopping(f->m, i, MS(3500));
    sl_meter_instance_exited(f->m, i, MS(4000));
    flush(f, MS(4500));
    sl_usage_totals_t t = query(f, f->m, "fl", 0, MS(5000));
    /* busy: 100 + 2050→2100 + 500 = 2700 ms; lambda 2050 ms; lifetime 4 s */
    assert_near(t.model[SL_MODEL_CLOUDRUN].seconds, 2.7);
    assert_near(t.model[SL_MODEL_LAMBDA].seconds, 2.05);
    assert_near(t.model[SL_MODEL_INSTANCE].seconds, 4.0);
    assert_near(t.model[SL_MODEL_FARGATE].seconds, 60.0);
    sl_meter_instance_release(f->m, i);
    sl_meter_stats_t st;
    flush(f, MS(6000));
    sl_meter_stats(f->m, &st);
    assert_int_equal(st.live_instances, 0);
    assert_int_equal(st.pending_minutes, 0);
}

/* Clock edge cases: end before begin, zero-length requests, events out of
 * order, unmatched ends, exit with requests in flight. */
static void test_clock_edges(void **state)
{
    fx_t *f = *state;
    sl_meter_instance_t *i =
        sl_meter_instance_start(f->m, "default", "ck", "ck-1", "i", 1000, 0, MS(1000));
    sl_meter_instance_ready(f->m, i, MS(900)); /* before start: treated as at 1000 */
    /* zero-length start-up still bills one 100 ms unit */
    uint64_t b = sl_meter_request_begin(f->m, i, MS(2000));
    sl_meter_request_end(f->m, i, b, MS(1500)); /* end before begin: 0 long */
    req(f->m, i, 3000, 3000);                   /* zero-length request */
    sl_meter_request_end(f->m, i, 0, MS(3100)); /* nothing in flight */
    sl_meter_stats_t st;
    sl_meter_stats(f->m, &st);
    assert_int_equal(st.unmatched_ends, 1);
    sl_usage_totals_t t = query(f, f->m, "ck", 0, MS(3200));
    assert_int_equal(t.requests, 2);
    assert_near(t.busy_seconds, 0);
    assert_near(t.model[SL_MODEL_CLOUDRUN].seconds, 0.3); /* three zero-length periods */
    assert_near(t.model[SL_MODEL_LAMBDA].seconds, 0.002); /* 1 ms minimum each */

    /* Exit with two requests in flight: counted up to the exit. */
    uint64_t r1 = sl_meter_request_begin(f->m, i, MS(4000));
    uint64_t r2 = sl_meter_request_begin(f->m, i, MS(4200));
    sl_meter_instance_exited(f->m, i, MS(4500.4));
    assert_int_equal(sl_meter_instance_in_flight(i), 2);
    sl_usage_totals_t mid = query(f, f->m, "ck", 0, MS(9000));
    /* busy [4000, 4500.4) → 600 ms; lambda raw 500.4 + 300.4 */
    assert_near(mid.model[SL_MODEL_CLOUDRUN].seconds, 0.9);
    assert_near(mid.model[SL_MODEL_LAMBDA].seconds, 0.002 + 0.8008);
    sl_meter_request_end(f->m, i, r1, MS(9000)); /* late end: only its rounding, to 501 ms */
    sl_meter_request_end(f->m, i, r2, MS(9100)); /* 300.4 → 301 ms */
    uint64_t r3 = sl_meter_request_begin(f->m, i, MS(9200)); /* after exit: ignored */
    sl_meter_request_end(f->m, i, r3, MS(9300));
    t = query(f, f->m, "ck", 0, MS(9500));
    assert_int_equal(t.requests, 4);
    assert_near(t.model[SL_MODEL_LAMBDA].seconds, 0.002 + 0.802);
    assert_near(t.model[SL_MODEL_CLOUDRUN].seconds, 0.9);
    assert_near(t.model[SL_MODEL_INSTANCE].seconds, 3.6); /* 3500.4 ms → 3.6 s */
    sl_meter_stats(f->m, &st);
    assert_int_equal(st.unmatched_ends, 2);
    sl_meter_instance_release(f->m, i);
}

/* Flushed usage survives closing the store; flushes into the same minute
 * add up; a second namespace and service stay apart. */
static void test_persistence_round_trip(void **state)
{
    fx_t *f = *state;
    worked_example(f->m);
    flush(f, MS(5500));
    sl_meter_instance_t *o =
        sl_meter_instance_start(f->m, "other", "hello", "hello-00001", "o", 1000, 0, MS(0));
    sl_meter_instance_t *w =
        sl_meter_instance_start(f->m, "default", "world", "world-00001", "w", 1000, 0, MS(0));
    sl_meter_instance_ready(f->m, o, MS(1000));
    sl_meter_instance_ready(f->m, w, MS(1000));
    sl_meter_instance_t *j =
        sl_meter_instance_start(f->m, "default", "hello", "hello-00002", "j", 1000, 0, MS(6000));
    sl_meter_instance_ready(f->m, j, MS(6050)); /* 50 ms → 100 ms */
    sl_meter_instance_stopping(f->m, j, MS(6200));
    sl_meter_instance_exited(f->m, j, MS(6200)); /* 0 ms of shutdown → 100 ms */
    flush(f, MS(7000));
    sl_meter_free(f->m);
    sl_store_close(f->s);
    f->m = sl_meter_new(OFFSET);
    sl_error_t err = {0};
    assert_int_equal(sl_store_open_sqlite(f->path, &f->s, &err), 0);

    json_t *rep = NULL;
    assert_int_equal(sl_meter_query(NULL, f->s, "default", "hello", 0, 0, &rep, &err), 0);
    assert_string_equal(json_string_value(json_object_get(rep, "kind")), "UsageReport");
    assert_string_equal(json_string_value(json_object_get(rep, "service")), "hello");
    assert_int_equal(json_array_size(json_object_get(rep, "revisions")), 2);
    sl_usage_totals_t t;
    sl_usage_totals_from_json(json_object_get(rep, "totals"), &t);
    assert_int_equal(t.requests, 5);
    assert_int_equal(t.instances_started, 2);
    assert_near(t.model[SL_MODEL_CLOUDRUN].seconds, 1.8 + 0.2);
    assert_near(t.model[SL_MODEL_LAMBDA].seconds, 1.351);
    assert_near(t.model[SL_MODEL_FARGATE].seconds, 120);

    /* Costs and savings added the way the API does. */
    sl_prices_t p;
    sl_prices_default(&p);
    sl_prices_annotate(&p, rep);
    json_t *cr =
        json_object_get(json_object_get(json_object_get(rep, "totals"), "models"), "cloudrun");
    assert_true(json_number_value(json_object_get(cr, "cost")) > 0);
    json_t *sav = json_object_get(json_object_get(rep, "totals"), "savings");
    assert_near(json_number_value(json_object_get(json_object_get(sav, "fargate"), "seconds")),
                120 - 2.0);
    assert_string_equal(json_string_value(json_object_get(rep, "currency")), "USD");
    json_decref(rep);

    /* All services of the namespace; the other namespace stays apart. */
    sl_usage_totals_t all = query(f, NULL, NULL, 0, 0);
    assert_int_equal(all.instances_started, 3);
    assert_near(all.model[SL_MODEL_CLOUDRUN].seconds, 2.0 + 1.0); /* world: start-up 1 s */
    assert_int_equal(sl_meter_query(NULL, f->s, "other", NULL, 0, 0, &rep, &err), 0);
    sl_usage_totals_from_json(json_object_get(rep, "totals"), &t);
    assert_near(t.model[SL_MODEL_CLOUDRUN].seconds, 1.0);
    assert_near(t.model[SL_MODEL_INSTANCE].seconds, 7.0); /* alive 0..7 s at the flush */
    json_decref(rep);
    /* Handles o and w were freed with the meter. */
}

/* A failed flush keeps the counters for the next one. */
static void test_flush_failure_keeps_usage(void **state)
{
    fx_t *f = *state;
    sl_meter_instance_t *i =
        sl_meter_instance_start(f->m, "default", "ff", "ff-1", "i", 1000, 0, MS(0));
    sl_meter_instance_ready(f->m, i, MS(200));
    sl_error_t err = {0};
    assert_int_equal(sl_store_txn_begin(f->s, &err), 0); /* makes the flush's begin fail */
    assert_true(sl_meter_flush(f->m, f->s, MS(1000), &err) < 0);
    assert_non_null(strstr(err.msg, "usage flush"));
    sl_store_txn_rollback(f->s);
    flush(f, MS(1000));
    sl_usage_totals_t t = query(f, NULL, "ff", 0, 0);
    assert_near(t.model[SL_MODEL_CLOUDRUN].seconds, 0.2);
    assert_near(t.model[SL_MODEL_INSTANCE].seconds, 1.0);
    sl_meter_instance_release(f->m, i);
}

static void test_model_names(void **state)
{
    (void)state;
    for (int k = 0; k < SL_MODEL_COUNT; k++)
        assert_int_equal(sl_billing_model_parse(sl_billing_model_name(k)), k);
    assert_int_equal(sl_billing_model_parse("aci"), -1);
    assert_int_equal(sl_billing_model_parse(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_worked_example, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interval_union, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency_saves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_minute_boundary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_flight_at_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clock_edges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistence_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_failure_keeps_usage, setup, teardown),
        cmocka_unit_test(test_model_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
