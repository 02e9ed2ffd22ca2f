/*
 * test_metrics.c — the Prometheus registry through its public API: exact
 * text exposition for a small registry, escaping, name validation, the
 * label-set cap, removing series, histogram buckets, and counter/gauge
 * semantics.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>

#include "metrics.h"

static sl_metric_family_t *fam(sl_metrics_t *r, sl_metric_type_t type, const char *name,
                               const char *help, size_t n, const char *const *labels,
                               const double *bounds, size_t nb)
{
    sl_error_t err = {0};
    sl_metric_family_t *f = sl_metrics_family(r, type, name, help, n, labels, bounds, nb, &err);
    if (!f)
        fail_msg("family %s: %s", name, err.msg);
    return f;
}

static char *render(const sl_metrics_t *r)
{
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(sl_metrics_render(r, &buf, &len), 0);
    assert_int_equal(strlen(buf), len);
    return buf;
}

static void test_exact_text(void **state)
{
    (void)state;
    sl_metrics_t *r = sl_metrics_new(10);
    static const char *const req_labels[] = {"service", "revision", "code_class"};
    sl_metric_family_t *reqs = fam(r, SL_METRIC_COUNTER, SL_METRIC_REQUESTS_TOTAL,
                                   "Requests answered.", 3, req_labels, NULL, 0);
    sl_metric_family_t *q =
        fam(r, SL_METRIC_GAUGE, SL_METRIC_QUEUE_LENGTH, "Requests waiting.", 0, NULL, NULL, 0);
    static const char *const lat_labels[] = {"service"};
    static const double b[] = {0.1, 0.5, 1};
    sl_metric_family_t *lat = fam(r, SL_METRIC_HISTOGRAM, SL_METRIC_REQUEST_DURATION,
                                  "Request latency.", 1, lat_labels, b, 3);

    const char *v1[] = {"hello", "hello-00001", "2xx"};
    const char *v2[] = {"hello", "hello-00001", "5xx"};
    sl_metric_t *ok = sl_metrics_series(reqs, v1);
    sl_metric_t *bad = sl_metrics_series(reqs, v2);
    assert_ptr_equal(sl_metrics_series(reqs, v1), ok); /* same label set, same handle */
    for (int i = 0; i < 3; i++)
        sl_metric_inc(ok);
    sl_metric_inc(bad);
    sl_metric_t *ql = sl_metrics_series(q, NULL);
    sl_metric_set(ql, 4);
    sl_metric_add(ql, -1.5);
    const char *hv[] = {"hello"};
    sl_metric_t *h = sl_metrics_series(lat, hv);
    sl_metric_observe(h, 0.05);
    sl_metric_observe(h, 0.1); /* le is inclusive */
    sl_metric_observe(h, 0.7);
    sl_metric_observe(h, 3);

    char *text = render(r);
    const char *want =
        "# HELP sluice_requests_total Requests answered.\n"
        "# TYPE sluice_requests_total counter\n"
        "sluice_requests_total{service=\"hello\",revision=\"hello-00001\",code_class=\"2xx\"} 3\n"
        "sluice_requests_total{service=\"hello\",revision=\"hello-00001\",code_class=\"5xx\"} 1\n"
        "# HELP sluice_queue_length Requests waiting.\n"
        "# TYPE sluice_queue_length gauge\n"
        "sluice_queue_length 2.5\n"
        "# HELP sluice_request_duration_seconds Request latency.\n"
        "# TYPE sluice_request_duration_seconds histogram\n"
        "sluice_request_duration_seconds_bucket{service=\"hello\",le=\"0.1\"} 2\n"
        "sluice_request_duration_seconds_bucket{service=\"hello\",le=\"0.5\"} 2\n"
        "sluice_request_duration_seconds_bucket{service=\"hello\",le=\"1\"} 3\n"
        "sluice_request_duration_seconds_bucket{service=\"hello\",le=\"+Inf\"} 4\n"
        "sluice_request_duration_seconds_sum{service=\"hello\"} 3.85\n"
        "sluice_request_duration_seconds_count{service=\"hello\"} 4\n"
        "# HELP sluice_metrics_dropped_series_total Label sets refused because their metric was "
        "at its series cap.\n"
        "# TYPE sluice_metrics_dropped_series_total counter\n"
        "sluice_metrics_dropped_series_total 0\n";
    assert_string_equal(text, want);
    free(text);
    sl_metrics_free(r);
}

static void test_escaping(void **state)
{
    (void)state;
    sl_metrics_t *r = sl_metrics_new(4);
    static const char *const labels[] = {"path"};
    sl_metric_family_t *f =
        fam(r, SL_METRIC_GAUGE, "x_value", "Line one\nback\\slash \"q\"", 1, labels, NULL, 0);
    const char *v[] = {"a\\b\"c\nd"};
    sl_metric_set(sl_metrics_series(f, v), 1);
    char *text = render(r);
    assert_non_null(strstr(text, "# HELP x_value Line one\\nback\\\\slash \"q\"\n"));
    assert_non_null(strstr(text, "x_value{path=\"a\\\\b\\\"c\\nd\"} 1\n"));
    free(text);
    sl_metrics_free(r);
}

static void test_label_cap(void **state)
{
    (void)state;
    sl_metrics_t *r = sl_metrics_new(2);
    static const char *const labels[] = {"service"};
    sl_metric_family_t *f =
        fam(r, SL_METRIC_COUNTER, "sluice_test_total", "Test.", 1, labels, NULL, 0);
    const char *a[] = {"a"}, *b[] = {"b"}, *c[] = {"c"};
    sl_metric_t *ma = sl_metrics_series(f, a);
    assert_non_null(ma);
    assert_non_null(sl_metrics_series(f, b));
    assert_null(sl_metrics_series(f, c)); /* past the cap */
    assert_null(sl_metrics_series(f, c));
    assert_ptr_equal(sl_metrics_series(f, a), ma); /* existing ones still found */
    assert_int_equal(sl_metrics_dropped(r), 2);
    sl_metric_inc(NULL); /* a refused handle is harmless */
    sl_metric_observe(NULL, 1);
    sl_metric_set(NULL, 1);
    char *text = render(r);
    assert_null(strstr(text, "service=\"c\""));
    assert_non_null(strstr(text, "sluice_metrics_dropped_series_total 2\n"));
    free(text);
    sl_metrics_free(r);
}

/* Two holders of the same label values share one series; it stays until
 * the last gives its handle back (one removal never frees it under the
 * other). */
static void test_series_shared_until_last_holder(void **state)
{
    (void)state;
    sl_metrics_t *r = sl_metrics_new(10);
    static const char *const labels[] = {"revision"};
    sl_metric_family_t *f =
        fam(r, SL_METRIC_COUNTER, "sluice_test_total", "Test.", 1, labels, NULL, 0);
    const char *v[] = {"r1"};
    sl_metric_t *a = sl_metrics_series(f, v), *b = sl_metrics_series(f, v);
    assert_ptr_equal(a, b);
    sl_metric_add(a, 2);
    sl_metric_remove(a);
    sl_metric_inc(b); /* still valid */
    char *text = render(r);
    assert_non_null(strstr(text, "sluice_test_total{revision=\"r1\"} 3\n"));
    free(text);
    sl_metric_remove(b);
    text = render(r);
    assert_null(strstr(text, "revision=\"r1\""));
    free(text);
    sl_metrics_free(r);
}

/* A removed series leaves the text and its place under the cap; made
 * again, it starts from zero. The others keep their order and values. */
static void test_series_removed(void **state)
{
    (void)state;
    sl_metrics_t *r = sl_metrics_new(2);
    static const char *const labels[] = {"revision"};
    sl_metric_family_t *f =
        fam(r, SL_METRIC_COUNTER, "sluice_test_total", "Test.", 1, labels, NULL, 0);
    double b[] = {1, 2};
    sl_metric_family_t *h =
        fam(r, SL_METRIC_HISTOGRAM, "sluice_test_seconds", "Test.", 1, labels, b, SL_ARRAY_LEN(b));
    const char *v1[] = {"r1"}, *v2[] = {"r2"}, *v3[] = {"r3"};
    sl_metric_t *m1 = sl_metrics_series(f, v1), *m2 = sl_metrics_series(f, v2);
    sl_metric_t *h1 = sl_metrics_series(h, v1);
    sl_metric_add(m1, 5);
    sl_metric_add(m2, 7);
    sl_metric_observe(h1, 1.5);
    assert_null(sl_metrics_series(f, v3)); /* at the cap */
    sl_metric_remove(m1);
    sl_metric_remove(h1);
    sl_metric_remove(NULL);
    sl_metric_t *m3 = sl_metrics_series(f, v3);
    assert_non_null(m3);
    sl_metric_inc(m3);
    char *text = render(r);
    assert_null(strstr(text, "revision=\"r1\""));
    const char *p2 = strstr(text, "sluice_test_total{revision=\"r2\"} 7\n");
    const char *p3 = strstr(text, "sluice_test_total{revision=\"r3\"} 1\n");
    assert_non_null(p2);
    assert_non_null(p3);
    assert_true(p2 < p3);
    free(text);
    sl_metric_remove(m2);
    sl_metric_t *again = sl_metrics_series(f, v1);
    assert_non_null(again);
    text = render(r);
    assert_non_null(strstr(text, "sluice_test_total{revision=\"r1\"} 0\n"));
    free(text);
    sl_metrics_free(r);
}

static void test_names_validated(void **state)
{
    (void)state;
    sl_metrics_t *r = sl_metrics_new(4);
    sl_error_t err = {0};
    static const double b[] = {1, 2};
    static const double bad_b[] = {2, 1};
    static const char *const ok_l[] = {"service"};
    static const char *const le_l[] = {"le"};
    static const char *const res_l[] = {"__name"};
    static const char *const bad_l[] = {"9lives"};
    static const char *const dup_l[] = {"a", "a"};
    assert_null(sl_metrics_family(r, SL_METRIC_COUNTER, "1abc", "", 0, NULL, NULL, 0, &err));
    assert_non_null(strstr(err.msg, "invalid metric name"));
    assert_null(sl_metrics_family(r, SL_METRIC_COUNTER, "a-b", "", 0, NULL, NULL, 0, &err));
    assert_null(sl_metrics_family(r, SL_METRIC_COUNTER, "", "", 0, NULL, NULL, 0, &err));
    assert_null(sl_metrics_family(r, SL_METRIC_GAUGE, "g", "", 1, bad_l, NULL, 0, &err));
    assert_non_null(strstr(err.msg, "9lives"));
    assert_null(sl_metrics_family(r, SL_METRIC_GAUGE, "g", "", 1, res_l, NULL, 0, &err));
    assert_null(sl_metrics_family(r, SL_METRIC_GAUGE, "g", "", 2, dup_l, NULL, 0, &err));
    assert_null(sl_metrics_family(r, SL_METRIC_HISTOGRAM, "h", "", 1, le_l, b, 2, &err));
    assert_null(sl_metrics_family(r, SL_METRIC_HISTOGRAM, "h", "", 0, NULL, bad_b, 2, &err));
    assert_non_null(strstr(err.msg, "increase"));
    assert_null(sl_metrics_family(r, SL_METRIC_HISTOGRAM, "h", "", 0, NULL, NULL, 0, &err));
    assert_null(sl_metrics_family(r, SL_METRIC_GAUGE, "g", "", 0, NULL, b, 2, &err));
    /* Colons are allowed in metric names (not in label names). */
    assert_non_null(sl_metrics_family(r, SL_METRIC_GAUGE, "ns:g_1", "", 1, ok_l, NULL, 0, &err));
    assert_null(sl_metrics_family(r, SL_METRIC_GAUGE, "ns:g_1", "", 0, NULL, NULL, 0, &err));
    assert_non_null(strstr(err.msg, "already registered"));
    assert_null(sl_metrics_family(r, SL_METRIC_COUNTER, SL_METRIC_DROPPED_SERIES_TOTAL, "", 0, NULL,
                                  NULL, 0, &err));
    sl_metrics_free(r);
}

static void test_counter_gauge_semantics(void **state)
{
    (void)state;
    sl_metrics_t *r = sl_metrics_new(4);
    sl_metric_t *c =
        sl_metrics_series(fam(r, SL_METRIC_COUNTER, "c_total", "C.", 0, NULL, NULL, 0), NULL);
    sl_metric_t *g = sl_metrics_series(fam(r, SL_METRIC_GAUGE, "g", "G.", 0, NULL, NULL, 0), NULL);
    sl_metric_add(c, 2.5);
    sl_metric_add(c, -1); /* counters never go down */
    sl_metric_add(c, NAN);
    assert_true(sl_metric_value(c) == 2.5);
    sl_metric_set(c, 10); /* mirror an exact external total */
    sl_metric_set(c, 9);
    assert_true(sl_metric_value(c) == 10);
    sl_metric_set(g, 5);
    sl_metric_add(g, -7);
    assert_true(sl_metric_value(g) == -2);
    sl_metric_observe(g, 1); /* not a histogram: ignored */
    assert_true(sl_metric_value(g) == -2);
    sl_metric_set(g, INFINITY);
    char *text = render(r);
    assert_non_null(strstr(text, "c_total 10\n"));
    assert_non_null(strstr(text, "g +Inf\n"));
    free(text);
    sl_metrics_free(r);
}

static void test_histogram_buckets(void **state)
{
    (void)state;
    sl_metrics_t *r = sl_metrics_new(4);
    static const double b[] = SL_METRICS_COLD_START_BUCKETS;
    sl_metric_family_t *f = fam(r, SL_METRIC_HISTOGRAM, SL_METRIC_COLD_START_DURATION, "Cold.", 0,
                                NULL, b, SL_ARRAY_LEN(b));
    sl_metric_t *h = sl_metrics_series(f, NULL);
    sl_metric_observe(h, 0.01); /* ≤ 0.05 */
    sl_metric_observe(h, 0.3);  /* ≤ 0.5 */
    sl_metric_observe(h, 120);  /* +Inf only */
    sl_metric_observe(h, NAN);  /* ignored */
    sl_metric_observe(h, -1);   /* ≤ first bound */
    assert_true(sl_metric_value(h) == 4);
    char *text = render(r);
    assert_non_null(strstr(text, "sluice_cold_start_duration_seconds_bucket{le=\"0.05\"} 2\n"));
    assert_non_null(strstr(text, "sluice_cold_start_duration_seconds_bucket{le=\"0.25\"} 2\n"));
    assert_non_null(strstr(text, "sluice_cold_start_duration_seconds_bucket{le=\"0.5\"} 3\n"));
    assert_non_null(strstr(text, "sluice_cold_start_duration_seconds_bucket{le=\"60\"} 3\n"));
    assert_non_null(strstr(text, "sluice_cold_start_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(text, "sluice_cold_start_duration_seconds_sum 119.31\n"));
    assert_non_null(strstr(text, "sluice_cold_start_duration_seconds_count 4\n"));
    /* Cumulative counts never decrease down the list. */
    unsigned long long prev = 0;
    for (const char *p = text; (p = strstr(p, "_bucket{")); p++) {
        const char *sp = strchr(p, ' ');
        unsigned long long v = strtoull(sp + 1, NULL, 10);
        assert_true(v >= prev);
        prev = v;
    }
    free(text);
    sl_metrics_free(r);
}

static void test_declared_names_valid(void **state)
{
    (void)state;
    /* Every name the daemon will export registers. */
    static const char *const names[] = {
        SL_METRIC_REQUESTS_TOTAL,      SL_METRIC_REQUEST_DURATION,
        SL_METRIC_REQUESTS_IN_FLIGHT,  SL_METRIC_QUEUE_LENGTH,
        SL_METRIC_INSTANCES,           SL_METRIC_DESIRED_INSTANCES,
        SL_METRIC_ACTUAL_INSTANCES,    SL_METRIC_COLD_STARTS_TOTAL,
        SL_METRIC_COLD_START_DURATION, SL_METRIC_BILLABLE_SECONDS_TOTAL,
    };
    static const double lat[] = SL_METRICS_LATENCY_BUCKETS;
    sl_metrics_t *r = sl_metrics_new(SL_METRICS_DEFAULT_SERIES_CAP);
    for (size_t i = 0; i < SL_ARRAY_LEN(names); i++) {
        bool hist = strstr(names[i], "duration") != NULL;
        fam(r, hist ? SL_METRIC_HISTOGRAM : SL_METRIC_GAUGE, names[i], "x", 0, NULL,
            hist ? lat : NULL, hist ? SL_ARRAY_LEN(lat) : 0);
    }
    sl_metrics_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_text),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_label_cap),
        cmocka_unit_test(test_series_removed),
        cmocka_unit_test(test_series_shared_until_last_holder),
        cmocka_unit_test(test_names_validated),
        cmocka_unit_test(test_counter_gauge_semantics),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_declared_names_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
