/* Unit tests for configdata.c (Secret and ConfigMap objects), base64, and
 * what a revision reads from them when an instance starts
 * (sl_revision_resolve). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "configdata.h"
#include "service.h"
#include "validate.h"

#include <errno.h>

static json_t *load(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j)
        fail_msg("bad test JSON: %s", e.text);
    return j;
}

static void test_base64(void **state)
{
    static const struct {
        const char *raw, *b64;
    } cases[] = {{"", ""},
                 {"f", "Zg=="},
                 {"fo", "Zm8="},
                 {"foo", "Zm9v"},
                 {"foob", "Zm9vYg=="},
                 {"fooba", "Zm9vYmE="},
                 {"\xff\xfe", "//4="}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *e = sl_base64_encode(cases[i].raw, strlen(cases[i].raw));
        assert_string_equal(e, cases[i].b64);
        free(e);
        size_t len = 99;
        char *d = sl_base64_decode(cases[i].b64, strlen(cases[i].b64), &len);
        assert_non_null(d);
        assert_int_equal(len, strlen(cases[i].raw));
        assert_memory_equal(d, cases[i].raw, len);
        free(d);
    }
    size_t len;
    char *d = sl_base64_decode("Zm9v\r\nYg==\n", 11, &len); /* line breaks, as Go skips */
    assert_non_null(d);
    assert_string_equal(d, "foob");
    free(d);
    d = sl_base64_decode("Zh==", 4, &len); /* left-over bits ignored, as Go does */
    assert_non_null(d);
    assert_string_equal(d, "f");
    free(d);
    const char *bad[] = {"Zg", "Zg=", "Z===", "Zm9v!A==", "Zg==Zg==", "Zm 9v", "=Zg="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_null(sl_base64_decode(bad[i], strlen(bad[i]), &len));
}

static void test_keys(void **state)
{
    assert_true(sl_data_is_key("tls.crt"));
    assert_true(sl_data_is_key("A_b-1"));
    assert_true(sl_data_is_key(".dockerconfigjson"));
    assert_false(sl_data_is_key(""));
    assert_false(sl_data_is_key("."));
    assert_false(sl_data_is_key(".."));
    assert_false(sl_data_is_key("..x"));
    assert_false(sl_data_is_key("a/b"));
    assert_false(sl_data_is_key("a b"));
}

static void test_secret_stored_form(void **state)
{
    json_t *s = load("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"db\"},"
                     "\"data\":{\"a\":\"eA==\",\"b\":\"eQ==\"},\"stringData\":{\"b\":\"z\","
                     "\"c\":\"w\"},\"status\":{}}");
    sl_error_t err = {0};
    assert_int_equal(sl_data_validate(SL_DATA_SECRET, s, "prod", &err), 0);
    assert_string_equal(sl_json_str(s, "metadata.namespace"), "prod");
    assert_string_equal(sl_json_str(s, "type"), "Opaque");
    assert_null(json_object_get(s, "stringData"));
    assert_null(json_object_get(s, "status"));
    /* stringData wins over data */
    json_t *vals = sl_data_values(SL_DATA_SECRET, s);
    assert_string_equal(json_string_value(json_object_get(vals, "a")), "x");
    assert_string_equal(json_string_value(json_object_get(vals, "b")), "z");
    assert_string_equal(json_string_value(json_object_get(vals, "c")), "w");
    json_decref(vals);
    size_t n = 0;
    char *keys = sl_data_keys(SL_DATA_SECRET, s, &n);
    assert_string_equal(keys, "a,b,c");
    assert_int_equal(n, 3);
    free(keys);
    /* an update keeps the type; an immutable one keeps its data too */
    json_t *upd = json_deep_copy(s);
    json_object_set_new(upd, "type", json_string("example.com/x"));
    assert_int_equal(sl_data_check_update(SL_DATA_SECRET, s, upd, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "type: field is immutable"));
    json_object_set_new(s, "immutable", json_true());
    json_object_set_new(upd, "type", json_string("Opaque"));
    json_object_set_new(upd, "immutable", json_true());
    assert_int_equal(sl_data_check_update(SL_DATA_SECRET, s, upd, &err), 0);
    json_object_set_new(json_object_get(upd, "data"), "d", json_string("eA=="));
    assert_int_equal(sl_data_check_update(SL_DATA_SECRET, s, upd, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "data: field is immutable"));
    json_decref(upd);
    json_decref(s);
    /* data: null is no data; base64 is kept in one form */
    s = load("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"},"
             "\"data\":null,\"binaryData\":{\"b\":\"Zm9v\\nYg==\"}}");
    assert_int_equal(sl_data_validate(SL_DATA_CONFIGMAP, s, "default", &err), 0);
    assert_null(json_object_get(s, "data"));
    assert_string_equal(sl_json_str(json_object_get(s, "binaryData"), "b"), "Zm9vYg==");
    json_decref(s);
}

static void test_invalid_objects(void **state)
{
    static const struct {
        sl_data_kind_t kind;
        const char *json, *needle;
    } cases[] = {
        {SL_DATA_SECRET, "{\"apiVersion\":\"v2\",\"kind\":\"Secret\"}", "apiVersion: must be v1"},
        {SL_DATA_SECRET, "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\"}", "kind: must be Secret"},
        {SL_DATA_SECRET, "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{}}",
         "metadata.name: is required"},
        {SL_DATA_SECRET,
         "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"a\"},"
         "\"data\":{\"k\":\"x\"}}",
         "data.k: must be base64"},
        {SL_DATA_SECRET,
         "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"a\"},"
         "\"type\":\"kubernetes.io/basic-auth\",\"data\":{}}",
         "must have one of username or password"},
        {SL_DATA_CONFIGMAP,
         "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"a\"},"
         "\"data\":{\"k\":\"v\"},\"binaryData\":{\"k\":\"dg==\"}}",
         "in binaryData too"},
        {SL_DATA_CONFIGMAP,
         "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"a\","
         "\"namespace\":\"Bad\"}}",
         "metadata.namespace"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *o = load(cases[i].json);
        sl_error_t err = {0};
        assert_true(sl_data_validate(cases[i].kind, o, "default", &err) < 0);
        if (!strstr(err.msg, cases[i].needle))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg, cases[i].needle);
        json_decref(o);
    }
}

/* A store of two objects for sl_revision_resolve; "broken" cannot be read. */
static int fake_lookup(void *ctx, sl_data_kind_t kind, const char *name, json_t **vals,
                       sl_error_t *err)
{
    (void)ctx;
    *vals = NULL;
    if (kind == SL_DATA_SECRET && !strcmp(name, "db"))
        *vals = load("{\"user\":\"app\",\"pw\":\"s3cret\"}");
    if (kind == SL_DATA_CONFIGMAP && !strcmp(name, "cfg"))
        *vals = load("{\"level\":\"debug\",\"1bad\":\"x\",\"PORT\":\"1\"}");
    if (!strcmp(name, "broken"))
        return sl_error_set(err, EIO, "disk I/O error");
    return *vals ? 0 : -ENOENT;
}

#define REV_HEAD                                                                                   \
    "{\"apiVersion\":\"serving.knative.dev/v1\",\"kind\":\"Revision\",\"metadata\":{\"name\":"     \
    "\"web-00001\",\"namespace\":\"default\",\"labels\":{\"serving.knative.dev/service\":"         \
    "\"web\"}},\"spec\":"

static sl_revision_cfg_t *cfg_of(const char *spec)
{
    sl_autofree char *text = xasprintf(REV_HEAD "%s}", spec);
    json_t *rev = load(text);
    sl_revision_cfg_t *cfg = NULL;
    sl_error_t err = {0};
    assert_int_equal(sl_revision_cfg_from_json(rev, &cfg, &err), 0);
    json_decref(rev);
    return cfg;
}

static const char *env_of(const sl_revision_process_t *p, const char *name)
{
    size_t n = strlen(name);
    const char *v = NULL;
    for (size_t i = 0; i < p->n_env; i++)
        if (!strncmp(p->env[i], name, n) && p->env[i][n] == '=')
            v = p->env[i] + n + 1;
    return v;
}

static void test_resolve(void **state)
{
    sl_revision_cfg_t *cfg = cfg_of(
        "{\"containers\":[{\"image\":\"oci:/x\",\"args\":[\"--pw=$(PW)\"],"
        "\"envFrom\":[{\"configMapRef\":{\"name\":\"cfg\"}},{\"secretRef\":{\"name\":\"db\"},"
        "\"prefix\":\"DB_\"},{\"secretRef\":{\"name\":\"gone\",\"optional\":true}}],"
        "\"env\":[{\"name\":\"PW\",\"valueFrom\":{\"secretKeyRef\":{\"name\":\"db\",\"key\":\"pw\"}"
        "}},"
        "{\"name\":\"URL\",\"value\":\"pg://$(DB_user):$(PW)@h/$(level)\"},"
        "{\"name\":\"level\",\"value\":\"info\"},"
        "{\"name\":\"OPT\",\"valueFrom\":{\"configMapKeyRef\":{\"name\":\"cfg\",\"key\":\"no\","
        "\"optional\":true}}}],"
        "\"volumeMounts\":[{\"name\":\"s\",\"mountPath\":\"/s\",\"readOnly\":true},"
        "{\"name\":\"t\",\"mountPath\":\"/t\"}]}],"
        "\"volumes\":[{\"name\":\"s\",\"secret\":{\"secretName\":\"db\",\"defaultMode\":256,"
        "\"items\":[{\"key\":\"pw\",\"path\":\"a/pw\",\"mode\":384}]}},"
        "{\"name\":\"t\",\"emptyDir\":{}}]}");
    assert_true(cfg->has_refs);
    /* without the objects, env holds only what needs none */
    assert_int_equal(cfg->n_env, 2);
    sl_revision_process_t p;
    sl_error_t err = {0};
    assert_int_equal(sl_revision_resolve(cfg, fake_lookup, NULL, &p, &err), 0);
    assert_string_equal(env_of(&p, "level"), "info"); /* env replaces envFrom's */
    assert_string_equal(env_of(&p, "DB_pw"), "s3cret");
    assert_string_equal(env_of(&p, "PW"), "s3cret");
    assert_string_equal(env_of(&p, "URL"), "pg://app:s3cret@h/debug");
    assert_null(env_of(&p, "1bad"));
    assert_null(env_of(&p, "PORT")); /* the runtime's, not a source's */
    assert_null(env_of(&p, "OPT"));
    assert_string_equal(p.args[0], "--pw=s3cret");
    assert_int_equal(p.n_volumes, 2);
    assert_true(p.volumes[0].has_files);
    assert_int_equal(p.volumes[0].n_files, 1);
    assert_string_equal(p.volumes[0].files[0].path, "a/pw");
    assert_int_equal(p.volumes[0].files[0].mode, 0600);
    assert_int_equal(p.volumes[0].files[0].len, 6);
    assert_false(p.volumes[1].has_files);
    sl_revision_process_free(&p);
    assert_true(sl_revision_reads(cfg, SL_DATA_SECRET, "db", false));
    assert_true(sl_revision_reads(cfg, SL_DATA_SECRET, "db", true));
    assert_true(sl_revision_reads(cfg, SL_DATA_SECRET, "gone", false));
    assert_false(sl_revision_reads(cfg, SL_DATA_SECRET, "gone", true)); /* env only */
    assert_true(sl_revision_reads(cfg, SL_DATA_CONFIGMAP, "cfg", false));
    assert_false(sl_revision_reads(cfg, SL_DATA_CONFIGMAP, "db", false));
    sl_revision_cfg_free(cfg);
}

static void test_empty_items_project_every_key(void **state)
{
    sl_revision_cfg_t *cfg =
        cfg_of("{\"containers\":[{\"image\":\"oci:/x\",\"volumeMounts\":[{\"name\":\"v\","
               "\"mountPath\":\"/v\",\"readOnly\":true}]}],\"volumes\":[{\"name\":\"v\","
               "\"secret\":{\"secretName\":\"db\",\"items\":[]}}]}");
    sl_revision_process_t p;
    sl_error_t err = {0};
    assert_int_equal(sl_revision_resolve(cfg, fake_lookup, NULL, &p, &err), 0);
    assert_int_equal(p.volumes[0].n_files, 2);
    assert_int_equal(p.volumes[0].files[0].mode, 0644);
    sl_revision_process_free(&p);
    sl_revision_cfg_free(cfg);
}

static void test_resolve_failures(void **state)
{
    static const struct {
        const char *spec, *needle;
    } cases[] = {
        {"{\"containers\":[{\"image\":\"oci:/x\",\"env\":[{\"name\":\"A\",\"valueFrom\":{"
         "\"secretKeyRef\":{\"name\":\"nope\",\"key\":\"k\"}}}]}]}",
         "env[0] (A): secret \"nope\" not found"},
        {"{\"containers\":[{\"image\":\"oci:/x\",\"env\":[{\"name\":\"A\",\"valueFrom\":{"
         "\"secretKeyRef\":{\"name\":\"db\",\"key\":\"k\"}}}]}]}",
         "env[0] (A): key \"k\" not found in secret \"db\""},
        {"{\"containers\":[{\"image\":\"oci:/x\",\"envFrom\":[{\"configMapRef\":{\"name\":"
         "\"db\"}}]}]}",
         "envFrom[0]: configmap \"db\" not found"},
        {"{\"containers\":[{\"image\":\"oci:/x\",\"volumeMounts\":[{\"name\":\"v\","
         "\"mountPath\":\"/v\",\"readOnly\":true}]}],\"volumes\":[{\"name\":\"v\","
         "\"configMap\":{\"name\":\"cfg\",\"items\":[{\"key\":\"zz\",\"path\":\"z\"}]}}]}",
         "volume \"v\": key \"zz\" not found in configmap \"cfg\""},
        /* optional or not, an object that cannot be read fails the start */
        {"{\"containers\":[{\"image\":\"oci:/x\",\"envFrom\":[{\"secretRef\":{\"name\":"
         "\"broken\",\"optional\":true}}]}]}",
         "envFrom[0]: disk I/O error"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sl_revision_cfg_t *cfg = cfg_of(cases[i].spec);
        sl_revision_process_t p;
        sl_error_t err = {0};
        assert_int_equal(sl_revision_resolve(cfg, fake_lookup, NULL, &p, &err), -1);
        if (!strstr(err.msg, cases[i].needle))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg, cases[i].needle);
        assert_null(strstr(err.msg, "s3cret"));
        sl_revision_process_free(&p);
        sl_revision_cfg_free(cfg);
    }
}

/* A replace's preconditions with metadata.resourceVersion v (borrowed; NULL:
 * none) and metadata.uid uid (NULL: none). */
static int check_update(json_t *v, const char *uid, const json_t *cur, sl_error_t *err)
{
    json_t *md = json_object();
    if (v)
        json_object_set(md, "resourceVersion", v);
    if (uid)
        json_object_set_new(md, "uid", json_string(uid));
    int st = sl_check_update_preconditions(md, cur, "configmaps", "cfg", err);
    json_decref(md);
    return st;
}

/* Kubernetes' optimistic concurrency on a replace. */
static void test_resource_version_precondition(void **state)
{
    (void)state;
    json_t *cur = json_pack("{s:{s:s,s:s}}", "metadata", "name", "cfg", "resourceVersion", "17");
    sl_error_t err = {0};
    /* unset, null, "" and "0": unconditional, whatever is stored */
    json_t *unset[] = {NULL, json_null(), json_string(""), json_string("0")};
    for (size_t i = 0; i < SL_ARRAY_LEN(unset); i++) {
        assert_int_equal(check_update(unset[i], NULL, cur, &err), 0);
        assert_int_equal(check_update(unset[i], NULL, NULL, &err), 0);
        json_decref(unset[i]);
    }
    json_t *v = json_string("17");
    assert_int_equal(check_update(v, NULL, cur, &err), 0);
    json_decref(v);
    v = json_string("16");
    assert_int_equal(check_update(v, NULL, cur, &err), 409);
    assert_string_equal(err.msg, "Operation cannot be fulfilled on configmaps \"cfg\": the object "
                                 "has been modified; please apply your changes to the latest "
                                 "version and try again");
    assert_string_equal(sl_precondition_reason(409), "Conflict");
    assert_int_equal(check_update(v, NULL, NULL, &err), 404);
    assert_string_equal(err.msg, "configmaps \"cfg\" not found");
    assert_string_equal(sl_precondition_reason(404), "NotFound");
    json_decref(v);
    /* what no server gave: not a decimal string */
    json_t *bad[] = {json_string("abc"), json_string("-1"),
                     json_string("17 "), json_string("99999999999999999999"),
                     json_integer(17),   json_true()};
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
        assert_int_equal(check_update(bad[i], NULL, cur, &err), 400);
        assert_non_null(strstr(err.msg, "metadata.resourceVersion: "));
        json_decref(bad[i]);
    }
    assert_string_equal(sl_precondition_reason(400), "BadRequest");
    /* a stored object without a version (none stored so far) never matches */
    json_t *none = json_pack("{s:{s:s}}", "metadata", "name", "cfg");
    v = json_string("1");
    assert_int_equal(check_update(v, NULL, none, &err), 409);
    json_decref(v);
    json_decref(none);
    /* metadata.uid: the stored object's or a conflict; with nothing stored,
     * a create; with no version given, whatever version is stored */
    json_object_set_new(json_object_get(cur, "metadata"), "uid", json_string("u-1"));
    assert_int_equal(check_update(NULL, "u-1", cur, &err), 0);
    assert_int_equal(check_update(NULL, "", cur, &err), 0);
    assert_int_equal(check_update(NULL, "u-1", NULL, &err), 0);
    assert_int_equal(check_update(NULL, "u-2", cur, &err), 409);
    assert_string_equal(err.msg, "Precondition failed: UID in precondition: u-2, UID in object "
                                 "meta: u-1");
    v = json_string("17");
    assert_int_equal(check_update(v, "u-1", cur, &err), 0);
    assert_int_equal(check_update(v, "u-2", cur, &err), 409);
    assert_non_null(strstr(err.msg, "UID in precondition"));
    json_decref(v);
    json_t *md = json_pack("{s:i}", "uid", 5);
    assert_int_equal(sl_check_update_preconditions(md, cur, "configmaps", "cfg", &err), 400);
    assert_string_equal(err.msg, "metadata.uid: must be a string");
    json_decref(md);
    /* DeleteOptions.preconditions */
    assert_int_equal(sl_check_delete_preconditions(NULL, cur, &err), 0);
    json_t *pre = json_pack("{s:s,s:s}", "uid", "u-1", "resourceVersion", "17");
    assert_int_equal(sl_check_delete_preconditions(pre, cur, &err), 0);
    json_object_set_new(pre, "resourceVersion", json_string("16"));
    assert_int_equal(sl_check_delete_preconditions(pre, cur, &err), 409);
    assert_string_equal(err.msg, "Precondition failed: ResourceVersion in precondition: 16, "
                                 "ResourceVersion in object meta: 17");
    json_object_set_new(pre, "uid", json_string("u-2"));
    assert_int_equal(sl_check_delete_preconditions(pre, cur, &err), 409);
    assert_string_equal(err.msg,
                        "Precondition failed: UID in precondition: u-2, UID in object meta: u-1");
    json_object_set_new(pre, "uid", json_integer(1));
    assert_int_equal(sl_check_delete_preconditions(pre, cur, &err), 400);
    json_decref(pre);
    pre = json_string("x");
    assert_int_equal(sl_check_delete_preconditions(pre, cur, &err), 400);
    json_decref(pre);
    json_decref(cur);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_secret_stored_form),
        cmocka_unit_test(test_invalid_objects),
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_empty_items_project_every_key),
        cmocka_unit_test(test_resolve_failures),
        cmocka_unit_test(test_resource_version_precondition),
    };
    return cmocka_run_group_tests_name("configdata", tests, NULL, NULL);
}
