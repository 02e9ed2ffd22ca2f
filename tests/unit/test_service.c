/* Unit tests for service.c: names, quantities, Service validation and the
 * revisions cut from templates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "service.h"

#include <stdlib.h>
#include <time.h>

static void test_dns_names(void **state)
{
    assert_true(sl_is_dns1035("hello"));
    assert_true(sl_is_dns1035("a-1"));
    assert_false(sl_is_dns1035("1abc"));
    assert_false(sl_is_dns1035("Hello"));
    assert_false(sl_is_dns1035("a_b"));
    assert_false(sl_is_dns1035("a-"));
    assert_false(sl_is_dns1035(""));
    char long_name[65];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    assert_false(sl_is_dns1035(long_name));
    long_name[63] = '\0';
    assert_true(sl_is_dns1035(long_name));
    assert_true(sl_is_dns1123_label("1abc"));
    assert_true(sl_is_valid_domain("example.com"));
    assert_true(sl_is_valid_domain("localhost"));
    assert_false(sl_is_valid_domain("exa mple.com"));
    assert_false(sl_is_valid_domain("a..b"));
    assert_false(sl_is_valid_domain("a."));
}

static void test_quantities(void **state)
{
    int64_t v;
    assert_int_equal(sl_parse_memory("256Mi", &v), 0);
    assert_int_equal(v, 256 * 1024 * 1024);
    assert_int_equal(sl_parse_memory("1G", &v), 0);
    assert_int_equal(v, 1000000000);
    assert_int_equal(sl_parse_memory("1048576", &v), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(sl_parse_cpu("1", &v), 0);
    assert_int_equal(v, 1000);
    assert_int_equal(sl_parse_cpu("0.5", &v), 0);
    assert_int_equal(v, 500);
    assert_int_equal(sl_parse_cpu("250m", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(sl_parse_memory("lots", &v), -1);
    assert_int_equal(sl_parse_memory("-1Mi", &v), -1);
    assert_int_equal(sl_parse_memory("1Xi", &v), -1);
    assert_int_equal(sl_parse_memory("", &v), -1);
    assert_int_equal(sl_parse_memory("99999999999Ei", &v), -1);
    /* At most 2^53: a footprint (limit + a runtime class's overhead) and
     * the CPU quota (millis x 100) cannot overflow. */
    assert_int_equal(sl_parse_memory("9100000000000000", &v), -1);
    assert_int_equal(sl_parse_memory("8191Ti", &v), 0);
    assert_int_equal(sl_parse_cpu("9000000000000000", &v), -1);
    assert_int_equal(sl_parse_cpu("9000000000000", &v), 0);
    assert_int_equal(v, 9000000000000000);

    /* JSON numbers (YAML `memory: 268435456`) keep every digit: %g kept 6
     * and made 268435456 bytes 268435000. */
    const struct {
        json_t *v;
        bool cpu;
        int rc;
        int64_t want;
    } q[] = {
        {json_integer(268435456), false, 0, 268435456},
        {json_integer(4194305), false, 0, 4194305},
        {json_real(0.5), true, 0, 500},
        {json_integer(2), true, 0, 2000},
        {json_string("64Mi"), false, 0, 64 << 20},
        {json_integer(-1), false, -1, 0},
        {json_true(), false, -1, 0},
    };
    for (size_t i = 0; i < SL_ARRAY_LEN(q); i++) {
        assert_int_equal(sl_json_quantity(q[i].v, q[i].cpu, &v), q[i].rc);
        if (q[i].rc == 0)
            assert_int_equal(v, q[i].want);
        json_decref(q[i].v);
    }
    assert_int_equal(sl_json_quantity(NULL, false, &v), -1);
}

static json_t *load(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    return j;
}

#define SVC_HEAD "{\"apiVersion\":\"serving.knative.dev/v1\",\"kind\":\"Service\","

static void test_validate_defaults(void **state)
{
    json_t *s = load(SVC_HEAD "\"metadata\":{\"name\":\"hello\"},"
                              "\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"image\":"
                              "\"oci:/x\"}]}}},\"status\":{\"url\":\"bogus\"}}");
    sl_error_t err = {0};
    assert_int_equal(sl_service_validate(s, "default", &err), 0);
    assert_string_equal(sl_json_str(s, "metadata.namespace"), "default");
    assert_null(json_object_get(s, "status"));
    json_t *pod = sl_json_path(s, "spec.template.spec");
    assert_int_equal(json_integer_value(json_object_get(pod, "containerConcurrency")), 80);
    assert_int_equal(json_integer_value(json_object_get(pod, "timeoutSeconds")), 300);
    json_t *c = json_array_get(json_object_get(pod, "containers"), 0);
    json_t *port = json_array_get(json_object_get(c, "ports"), 0);
    assert_int_equal(json_integer_value(json_object_get(port, "containerPort")), 8080);
    json_decref(s);
}

static void expect_invalid(const char *text, const char *needle)
{
    json_t *s = load(text);
    sl_error_t err = {0};
    assert_true(sl_service_validate(s, "default", &err) < 0);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' does not mention '%s'", err.msg, needle);
    json_decref(s);
}

static void test_validate_errors(void **state)
{
    expect_invalid("{\"apiVersion\":\"v1\",\"kind\":\"Service\"}", "apiVersion");
    expect_invalid(SVC_HEAD "\"metadata\":{}}", "metadata.name: is required");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"Bad\"},\"spec\":{}}", "metadata.name");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{}}", "spec.template");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"spec\":{"
                            "\"containers\":[]}}}}",
                   "exactly one container");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"spec\":{"
                            "\"containers\":[{\"image\":\"oci:/x\"}],\"containerConcurrency\":"
                            "5000}}}}",
                   "spec.template.spec.containerConcurrency: must be 0..1000, got 5000");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"spec\":{"
                            "\"containers\":[{\"image\":\"oci:/x\",\"wat\":1}]}}}}",
                   "spec.template.spec.containers[0].wat: unknown field");
    /* Knative's response-start and idle timeouts: 0..3600, the first never
     * past timeoutSeconds (its default, 300, when that is left out) */
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"spec\":{"
                            "\"containers\":[{\"image\":\"oci:/x\"}],\"timeoutSeconds\":30,"
                            "\"responseStartTimeoutSeconds\":31}}}}",
                   "spec.template.spec.responseStartTimeoutSeconds: 31 is more than "
                   "timeoutSeconds (30): must be 0..30");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"spec\":{"
                            "\"containers\":[{\"image\":\"oci:/x\"}],"
                            "\"responseStartTimeoutSeconds\":301}}}}",
                   "must be 0..300");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"spec\":{"
                            "\"containers\":[{\"image\":\"oci:/x\"}],"
                            "\"responseStartTimeoutSeconds\":-1}}}}",
                   "spec.template.spec.responseStartTimeoutSeconds: must be 0..3600");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"spec\":{"
                            "\"containers\":[{\"image\":\"oci:/x\"}],"
                            "\"idleTimeoutSeconds\":3601}}}}",
                   "spec.template.spec.idleTimeoutSeconds: must be 0..3600, got 3601");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"spec\":{"
                            "\"containers\":[{\"image\":\"oci:/x\"}],"
                            "\"idleTimeoutSeconds\":\"5\"}}}}",
                   "spec.template.spec.idleTimeoutSeconds");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"spec\":{"
                            "\"containers\":[{\"image\":\"oci:/x\",\"env\":[{\"name\":\"PORT\","
                            "\"value\":\"1\"}]}]}}}}",
                   "reserved");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"spec\":{"
                            "\"containers\":[{\"image\":\"oci:/x\",\"resources\":{\"limits\":{"
                            "\"memory\":\"lots\"}}}]}}}}",
                   "limits.memory");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"spec\":{"
                            "\"containers\":[{\"image\":\"oci:/x\",\"ports\":[{\"containerPort\":"
                            "70000}]}]}}}}",
                   "containerPort: must be 1..65535");
    /* Knative's port names: none, "" or http1 is HTTP/1.1, h2c HTTP/2. */
    const char *ok_names[] = {"\"\"", "null", "\"http1\"", "\"h2c\""};
    for (size_t i = 0; i < SL_ARRAY_LEN(ok_names); i++) {
        char *text = xasprintf(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{"
                                        "\"spec\":{\"containers\":[{\"image\":\"oci:/x\","
                                        "\"ports\":[{\"name\":%s,\"containerPort\":8080}]}]}}}}",
                               ok_names[i]);
        json_t *svc = load(text);
        sl_error_t err = {0};
        if (sl_service_validate(svc, "default", &err) < 0)
            fail_msg("port name %s: %s", ok_names[i], err.msg);
        json_decref(svc);
        free(text);
    }
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"spec\":{"
                            "\"containers\":[{\"image\":\"oci:/x\",\"ports\":[{\"name\":"
                            "\"grpc\"}]}]}}}}",
                   "ports[0].name: must be \"http1\", \"h2c\" or empty, got \"grpc\"");
    expect_invalid(SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"metadata\":{"
                            "\"name\":\"other-1\"},\"spec\":{\"containers\":[{\"image\":\"oci:/"
                            "x\"}]}}}}",
                   "must start with the service name");
}

/* Numeric quantities are compared exactly: 4194304 is 4Mi, the minimum;
 * a limit of 1073741824 bytes is a request of "1Gi"'s equal. */
static void test_numeric_quantities_validate_exactly(void **state)
{
    json_t *s = load(SVC_HEAD "\"metadata\":{\"name\":\"web\"},\"spec\":{\"template\":{"
                              "\"spec\":{\"containers\":[{\"image\":\"oci:/img\","
                              "\"resources\":{\"limits\":{\"memory\":1073741824,\"cpu\":1},"
                              "\"requests\":{\"memory\":\"1Gi\",\"cpu\":\"1\"}}}]}}}}");
    sl_error_t err = {0};
    if (sl_service_validate(s, "default", &err) < 0)
        fail_msg("%s", err.msg);
    json_decref(s);
    s = load(SVC_HEAD "\"metadata\":{\"name\":\"web\"},\"spec\":{\"template\":{"
                      "\"spec\":{\"containers\":[{\"image\":\"oci:/img\","
                      "\"resources\":{\"limits\":{\"memory\":4194304}}}]}}}}");
    if (sl_service_validate(s, "default", &err) < 0)
        fail_msg("%s", err.msg);
    json_decref(s);
}

static void test_revision_and_cfg(void **state)
{
    json_t *s =
        load(SVC_HEAD "\"metadata\":{\"name\":\"web\",\"namespace\":\"prod\","
                      "\"labels\":{\"team\":\"a\"}},\"spec\":{\"template\":{\"metadata\":{"
                      "\"annotations\":{\"autoscaling.knative.dev/max-scale\":\"3\"}},"
                      "\"spec\":{\"containerConcurrency\":10,\"timeoutSeconds\":30,"
                      "\"responseStartTimeoutSeconds\":20,\"idleTimeoutSeconds\":0,"
                      "\"containers\":[{\"image\":\"oci:/img\",\"ports\":[{"
                      "\"containerPort\":9000}],\"env\":[{\"name\":\"A\",\"value\":\"1\"}],"
                      "\"resources\":{\"limits\":{\"memory\":\"128Mi\",\"cpu\":\"500m\"}}}]}}}}");
    sl_error_t err = {0};
    assert_int_equal(sl_service_validate(s, "default", &err), 0);
    json_t *rev = sl_revision_build(s, "web-00001", 1);
    assert_string_equal(sl_json_str(rev, "kind"), "Revision");
    json_t *labels = sl_json_path(rev, "metadata.labels");
    assert_string_equal(json_string_value(json_object_get(labels, SL_LABEL_SERVICE)), "web");
    /* service labels do not leak into revisions */
    assert_null(json_object_get(labels, "team"));
    json_t *ann = sl_json_path(rev, "metadata.annotations");
    assert_string_equal(
        json_string_value(json_object_get(ann, "autoscaling.knative.dev/max-scale")), "3");
    sl_revision_cfg_t *cfg = NULL;
    assert_int_equal(sl_revision_cfg_from_json(rev, &cfg, &err), 0);
    assert_string_equal(cfg->service, "web");
    assert_string_equal(cfg->namespace_, "prod");
    assert_int_equal(cfg->port, 9000);
    assert_int_equal(cfg->concurrency, 10);
    assert_int_equal(cfg->timeout_s, 30);
    assert_int_equal(cfg->response_start_s, 20);
    assert_int_equal(cfg->idle_timeout_s, 0);
    assert_int_equal(cfg->memory_limit, 128 * 1024 * 1024);
    assert_int_equal(cfg->cpu_millis, 500);
    assert_int_equal(cfg->n_env, 1);
    assert_string_equal(cfg->env[0], "A=1");
    sl_revision_cfg_free(cfg);
    /* the template key ignores key order */
    char *k1 = sl_service_template_key(s);
    json_t *copy = json_deep_copy(s);
    char *k2 = sl_service_template_key(copy);
    assert_string_equal(k1, k2);
    free(k1);
    free(k2);
    json_decref(copy);
    json_decref(rev);
    json_decref(s);
}

#define ANN(a)                                                                                     \
    SVC_HEAD "\"metadata\":{\"name\":\"a\"},\"spec\":{\"template\":{\"metadata\":{"                \
             "\"annotations\":{" a "}},\"spec\":{\"containers\":[{\"image\":\"oci:/x\"}]}}}}"

static void test_autoscaling_annotations(void **state)
{
    expect_invalid(ANN("\"autoscaling.knative.dev/min-scale\":\"-1\""),
                   "autoscaling.knative.dev/min-scale: must be an integer");
    expect_invalid(ANN("\"autoscaling.knative.dev/max-scale\":\"lots\""),
                   "autoscaling.knative.dev/max-scale");
    expect_invalid(ANN("\"autoscaling.knative.dev/min-scale\":\"5\","
                       "\"autoscaling.knative.dev/max-scale\":\"2\""),
                   "min-scale: 5 is greater than autoscaling.knative.dev/max-scale 2");
    expect_invalid(ANN("\"autoscaling.knative.dev/window\":\"2s\""), "window");
    expect_invalid(ANN("\"autoscaling.knative.dev/target-utilization-percentage\":\"150\""),
                   "target-utilization-percentage");
    expect_invalid(ANN("\"autoscaling.knative.dev/panic-threshold-percentage\":\"50\""),
                   "panic-threshold-percentage");
    expect_invalid(ANN("\"autoscaling.knative.dev/metric\":\"cpu\""),
                   "metric: Knative's KPA takes \"concurrency\" or \"rps\", got \"cpu\"");
    expect_invalid(ANN("\"autoscaling.knative.dev/bogus\":\"1\""), "unknown autoscaling");
    expect_invalid(ANN("\"autoscaling.knative.dev/initial-scale\":\"0\""),
                   "initial-scale: 0 is not allowed");
    json_t *s = load(ANN("\"autoscaling.knative.dev/min-scale\":\"1\","
                         "\"autoscaling.knative.dev/max-scale\":\"4\","
                         "\"autoscaling.knative.dev/target\":\"7.5\","
                         "\"autoscaling.knative.dev/window\":\"1m30s\","
                         "\"autoscaling.knative.dev/scale-to-zero-pod-retention-period\":\"5s\""));
    sl_error_t err = {0};
    assert_int_equal(sl_service_validate(s, "default", &err), 0);
    json_t *rev = sl_revision_build(s, "a-00001", 1);
    sl_revision_cfg_t *cfg = NULL;
    assert_int_equal(sl_revision_cfg_from_json(rev, &cfg, &err), 0);
    assert_int_equal(cfg->min_scale, 1);
    assert_int_equal(cfg->max_scale, 4);
    assert_int_equal(cfg->initial_scale, -1);
    assert_float_equal(cfg->target, 7.5, 1e-9);
    assert_int_equal(cfg->window_ns, 90000000000ull);
    assert_int_equal(cfg->retention_ns, 5000000000ull);
    assert_false(cfg->metric_rps);
    sl_revision_cfg_free(cfg);
    json_decref(rev);
    json_decref(s);
    s = load(ANN("\"autoscaling.knative.dev/metric\":\"rps\","
                 "\"autoscaling.knative.dev/target\":\"150\""));
    assert_int_equal(sl_service_validate(s, "default", &err), 0);
    rev = sl_revision_build(s, "a-00001", 1);
    assert_int_equal(sl_revision_cfg_from_json(rev, &cfg, &err), 0);
    assert_true(cfg->metric_rps);
    assert_float_equal(cfg->target, 150, 1e-9);
    sl_revision_cfg_free(cfg);
    json_decref(rev);
    json_decref(s);
    uint64_t ns;
    assert_int_equal(sl_parse_duration("500ms", &ns), 0);
    assert_int_equal(ns, 500000000ull);
    assert_int_equal(sl_parse_duration("1h", &ns), 0);
    assert_int_equal(sl_parse_duration("10", &ns), -1);
    assert_int_equal(sl_parse_duration("s", &ns), -1);

    /* Both spellings of one annotation are refused at apply; a revision
     * stored before that rule still loads (the hyphenated key wins). */
    const char *both = ANN("\"autoscaling.knative.dev/min-scale\":\"2\","
                           "\"autoscaling.knative.dev/minScale\":\"3\"");
    expect_invalid(both, "give one of autoscaling.knative.dev/min-scale and "
                         "autoscaling.knative.dev/minScale, not both");
    s = load(both);
    json_object_set_new(sl_json_path(s, "metadata"), "namespace", json_string("default"));
    rev = sl_revision_build(s, "a-00001", 1);
    cfg = NULL;
    assert_int_equal(sl_revision_cfg_from_json(rev, &cfg, &err), 0);
    assert_int_equal(cfg->min_scale, 2);
    sl_revision_cfg_free(cfg);
    json_decref(rev);
    json_decref(s);
}

/* RFC 3339 timestamps, as stored (creationTimestamp) and as typed
 * (`sluice usage --since`). */
static void test_rfc3339(void **state)
{
    (void)state;
    int64_t t = 0;
    assert_int_equal(sl_parse_rfc3339("2026-11-27T10:00:00Z", &t), 0);
    assert_int_equal(t, 1795773600);
    assert_int_equal(sl_parse_rfc3339("2026-11-27T10:00:00.123456Z", &t), 0);
    assert_int_equal(t, 1795773600);
    assert_int_equal(sl_parse_rfc3339("2026-11-27T12:30:00+02:30", &t), 0);
    assert_int_equal(t, 1795773600);
    assert_int_equal(sl_parse_rfc3339("2026-11-27t10:00:00z", &t), 0);
    assert_int_equal(t, 1795773600);
    assert_int_equal(sl_parse_rfc3339(sl_rfc3339_now(), &t), 0);
    assert_true(llabs(t - (int64_t)time(NULL)) <= 1);
    assert_int_equal(sl_parse_rfc3339("2026-11-27T10:00:00", &t), -1); /* no zone */
    assert_int_equal(sl_parse_rfc3339("2026-11-27T10:00:00.Z", &t), -1);
    assert_int_equal(sl_parse_rfc3339("2026-11-27T10:00:00+2:00", &t), -1);
    assert_int_equal(sl_parse_rfc3339("2026-11-27T10:00:00Zx", &t), -1);
    assert_int_equal(sl_parse_rfc3339("yesterday", &t), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dns_names),
        cmocka_unit_test(test_quantities),
        cmocka_unit_test(test_validate_defaults),
        cmocka_unit_test(test_validate_errors),
        cmocka_unit_test(test_numeric_quantities_validate_exactly),
        cmocka_unit_test(test_revision_and_cfg),
        cmocka_unit_test(test_autoscaling_annotations),
        cmocka_unit_test(test_rfc3339),
    };
    return cmocka_run_group_tests_name("service", tests, NULL, NULL);
}
