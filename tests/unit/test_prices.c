/*
 * test_prices.c — the price table through its public API: sane defaults,
 * the JSON round trip, operator files (partial, invalid, unknown fields,
 * bad types) with errors naming the field, and costs under each model.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>

#include "prices.h"

#define assert_near(a, b) assert_true(fabs((double)(a) - (double)(b)) < 1e-12)

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/sl-prices-test-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    sl_rm_rf(dir, NULL);
    return 0;
}

/* Write text to a file in the test dir; returns its path (caller frees). */
static char *write_file(const char *name, const char *text)
{
    char *path = xasprintf("%s/%s", dir, name);
    sl_error_t err = {0};
    if (sl_write_file_atomic(path, text, strlen(text), 0600, &err) < 0)
        fail_msg("write %s: %s", path, err.msg);
    return path;
}

static void test_defaults_sane(void **state)
{
    (void)state;
    sl_prices_t p;
    sl_prices_default(&p);
    assert_string_equal(p.currency, "USD");
    /* Public list prices (prices.c cites them). */
    assert_near(p.cloudrun.vcpu_second, 0.000024);
    assert_near(p.cloudrun.gib_second, 0.0000025);
    assert_near(p.cloudrun.per_million_requests, 0.40);
    assert_near(p.instance.vcpu_second, 0.000018);
    assert_near(p.instance.gib_second, 0.000002);
    assert_near(p.lambda.gb_second, 0.0000166667);
    assert_near(p.lambda.per_million_requests, 0.20);
    assert_near(p.fargate.vcpu_hour, 0.04048);
    assert_near(p.fargate.gb_hour, 0.004445);
    /* Relationships that hold for the public prices: instance-based is the
     * cheaper rate per second, CPU dominates memory, Fargate's hourly rate is
     * in the same range as Cloud Run's per-second rate × 3600. */
    assert_true(p.instance.vcpu_second < p.cloudrun.vcpu_second);
    assert_true(p.cloudrun.gib_second < p.cloudrun.vcpu_second);
    assert_true(p.fargate.vcpu_hour > 0.01 && p.fargate.vcpu_hour < 0.2);
    assert_true(p.cloudrun.vcpu_second * 3600 > 0.01 && p.cloudrun.vcpu_second * 3600 < 0.2);
    assert_near(p.cloudrun.free_requests, 2000000);
}

static void test_json_round_trip(void **state)
{
    (void)state;
    sl_prices_t p, q;
    sl_prices_default(&p);
    p.fargate.gb_hour = 0.005;
    memcpy(p.currency, "EUR", 4);
    json_t *j = sl_prices_to_json(&p);
    assert_near(json_number_value(json_object_get(json_object_get(j, "cloudrun"), "vcpuSecond")),
                0.000024);
    assert_non_null(json_object_get(json_object_get(j, "lambda"), "freeTier"));
    assert_null(json_object_get(json_object_get(j, "fargate"), "freeTier"));
    sl_error_t err = {0};
    assert_int_equal(sl_prices_from_json(j, "x", &q, &err), 0);
    assert_memory_equal(&p, &q, sizeof(p));
    /* And through a file. */
    char *text = json_dumps(j, JSON_INDENT(2));
    char *path = write_file("full.json", text);
    assert_int_equal(sl_prices_load(path, &q, &err), 0);
    assert_memory_equal(&p, &q, sizeof(p));
    free(path);
    free(text);
    json_decref(j);
}

static void test_load_partial(void **state)
{
    (void)state;
    char *path = write_file("partial.json", "{\"lambda\": {\"gbSecond\": 0.0000133334},\n"
                                            " \"cloudrun\": {\"freeTier\": {\"requests\": 0}}}");
    sl_prices_t p, d;
    sl_prices_default(&d);
    sl_error_t err = {0};
    assert_int_equal(sl_prices_load(path, &p, &err), 0);
    assert_near(p.lambda.gb_second, 0.0000133334);
    assert_near(p.cloudrun.free_requests, 0);
    assert_near(p.cloudrun.vcpu_second, d.cloudrun.vcpu_second); /* untouched */
    assert_near(p.lambda.per_million_requests, d.lambda.per_million_requests);
    free(path);
}

static void expect_error(const char *name, const char *text, const char *needle)
{
    char *path = write_file(name, text);
    sl_prices_t p, d;
    sl_prices_default(&d);
    sl_error_t err = {0};
    int rc = sl_prices_load(path, &p, &err);
    if (rc >= 0)
        fail_msg("%s: accepted", text);
    if (!strstr(err.msg, needle))
        fail_msg("%s: error '%s' does not mention '%s'", text, err.msg, needle);
    assert_memory_equal(&p, &d, sizeof(p)); /* defaults on error */
    free(path);
}

static void test_load_invalid(void **state)
{
    (void)state;
    expect_error("neg.json", "{\"cloudrun\": {\"vcpuSecond\": -1}}", "cloudrun.vcpuSecond");
    expect_error("str.json", "{\"fargate\": {\"vcpuHour\": \"0.04\"}}",
                 "fargate.vcpuHour: must be a number, got a string");
    expect_error("unk.json", "{\"cloudrun\": {\"vcpuSeconds\": 1}}",
                 "cloudrun.vcpuSeconds: unknown field");
    expect_error("unk2.json", "{\"gcp\": {}}", "gcp: unknown field");
    expect_error("ft.json", "{\"lambda\": {\"freeTier\": {\"gbSecond\": 1}}}",
                 "lambda.freeTier.gbSecond: unknown field");
    expect_error("ft2.json", "{\"fargate\": {\"freeTier\": {}}}", "fargate.freeTier: unknown");
    expect_error("ft3.json", "{\"instance\": {\"freeTier\": 3}}",
                 "instance.freeTier: must be an object");
    expect_error("sec.json", "{\"lambda\": []}", "lambda: must be an object, got a list");
    expect_error("cur.json", "{\"currency\": \"usd\"}", "currency");
    expect_error("cur2.json", "{\"currency\": 1}", "currency");
    expect_error("top.json", "[1]", "must be a JSON object");
    expect_error("syntax.json", "{\"cloudrun\": ", "syntax.json: line");
    expect_error("dup.json", "{\"currency\": \"USD\", \"currency\": \"EUR\"}", "duplicate");
    expect_error("huge.json", "{\"lambda\": {\"gbSecond\": 1e300}}", "lambda.gbSecond");
    /* The first error wins and names the file. */
    expect_error("file.json", "{\"fargate\": {\"gbHour\": null}}", "file.json: fargate.gbHour");

    sl_prices_t p;
    sl_error_t err = {0};
    char *missing = xasprintf("%s/missing.json", dir);
    assert_true(sl_prices_load(missing, &p, &err) < 0);
    assert_non_null(strstr(err.msg, "missing.json"));
    free(missing);
}

static void test_costs(void **state)
{
    (void)state;
    sl_prices_t p;
    sl_prices_default(&p);
    sl_usage_totals_t t = {0};
    t.requests = 2000000;
    t.model[SL_MODEL_CLOUDRUN] = (sl_model_usage_t){100, 200, 50};
    t.model[SL_MODEL_INSTANCE] = (sl_model_usage_t){1000, 2000, 500};
    t.model[SL_MODEL_LAMBDA] = (sl_model_usage_t){400, 800, 200};
    t.model[SL_MODEL_FARGATE] = (sl_model_usage_t){3600, 7200, 1800};
    /* 200 × 0.000024 + 50 × 0.0000025 + 2 × 0.40 */
    assert_near(sl_prices_cost(&p, &t, SL_MODEL_CLOUDRUN), 0.0048 + 0.000125 + 0.8);
    /* 2000 × 0.000018 + 500 × 0.000002, no request fee */
    assert_near(sl_prices_cost(&p, &t, SL_MODEL_INSTANCE), 0.036 + 0.001);
    /* memory only: 200 × 0.0000166667 + 2 × 0.20 */
    assert_near(sl_prices_cost(&p, &t, SL_MODEL_LAMBDA), 0.00333334 + 0.4);
    /* 2 vCPU-hours × 0.04048 + 0.5 GB-hours × 0.004445 */
    assert_near(sl_prices_cost(&p, &t, SL_MODEL_FARGATE), 0.08096 + 0.0022225);
}

static void test_annotate(void **state)
{
    (void)state;
    json_t *rep =
        json_pack("{s:{s:I, s:I, s:f, s:{s:{s:f, s:f, s:f}, s:{s:f, s:f, s:f}, s:{s:f, s:f, s:f}, "
                  "s:{s:f, s:f, s:f}}}, s:[]}",
                  "totals", "requests", (json_int_t)10, "instancesStarted", (json_int_t)1,
                  "busySeconds", 1.0, "models", "cloudrun", "seconds", 1.1, "vcpuSeconds", 1.1,
                  "gibSeconds", 0.55, "instance", "seconds", 5.0, "vcpuSeconds", 5.0, "gibSeconds",
                  2.5, "lambda", "seconds", 10.0, "vcpuSeconds", 10.0, "gibSeconds", 5.0, "fargate",
                  "seconds", 0.0, "vcpuSeconds", 0.0, "gibSeconds", 0.0, "revisions");
    sl_prices_t p;
    sl_prices_default(&p);
    sl_prices_annotate(&p, rep);
    json_t *tot = json_object_get(rep, "totals");
    json_t *sav = json_object_get(tot, "savings");
    json_t *lam = json_object_get(sav, "lambda");
    assert_near(json_number_value(json_object_get(lam, "seconds")), 10.0 - 1.1);
    double cr = 1.1 * 0.000024 + 0.55 * 0.0000025 + 10e-6 * 0.40;
    double la = 5.0 * 0.0000166667 + 10e-6 * 0.20;
    assert_near(json_number_value(json_object_get(lam, "cost")), la - cr);
    assert_near(json_number_value(json_object_get(lam, "percent")), (la - cr) / la * 100);
    assert_true(json_is_null(json_object_get(json_object_get(sav, "fargate"), "percent")));
    assert_near(json_number_value(json_object_get(
                    json_object_get(json_object_get(tot, "models"), "cloudrun"), "cost")),
                cr);
    assert_non_null(json_object_get(rep, "prices"));
    json_decref(rep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_sane), cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_load_partial),  cmocka_unit_test(test_load_invalid),
        cmocka_unit_test(test_costs),         cmocka_unit_test(test_annotate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
