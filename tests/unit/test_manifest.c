/*
 * test_manifest.c — YAML/JSON manifests to JSON and back, through the public
 * API: Knative Service documents, multi-document streams, core-schema
 * typing, every rejection with its position, and YAML output that reads
 * back to the same value.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>

#include "manifest.h"

static const char knative_service[] = "apiVersion: serving.knative.dev/v1\n"
                                      "kind: Service\n"
                                      "metadata:\n"
                                      "  name: hello\n"
                                      "  namespace: default\n"
                                      "spec:\n"
                                      "  template:\n"
                                      "    metadata:\n"
                                      "      annotations:\n"
                                      "        autoscaling.knative.dev/min-scale: \"1\"\n"
                                      "        autoscaling.knative.dev/max-scale: '5'\n"
                                      "    spec:\n"
                                      "      containerConcurrency: 80\n"
                                      "      timeoutSeconds: 300\n"
                                      "      containers:\n"
                                      "        - image: oci:examples/hello/build/oci:latest\n"
                                      "          ports:\n"
                                      "            - containerPort: 8080\n"
                                      "          env:\n"
                                      "            - name: GREETING\n"
                                      "              value: Hello, world # a comment\n"
                                      "            - name: DEBUG\n"
                                      "              value: \"true\"\n";

/* Parse text; fail the test with the error message if it is rejected. */
static json_t *parse_ok(const char *text, size_t max_docs)
{
    sl_error_t err = {0};
    json_t *docs = NULL;
    if (sl_manifest_parse(text, strlen(text), max_docs, &docs, &err) != 0)
        fail_msg("parse failed: %s\n--- input ---\n%s", err.msg, text);
    assert_true(json_is_array(docs));
    return docs;
}

/* Parse text expecting a rejection whose message is exactly want. */
static void parse_fails(const char *text, size_t max_docs, const char *want)
{
    sl_error_t err = {0};
    json_t *docs = NULL;
    int rc = sl_manifest_parse(text, strlen(text), max_docs, &docs, &err);
    if (rc == 0) {
        char *dump = json_dumps(docs, JSON_COMPACT);
        fail_msg("accepted (%s), wanted error: %s\n--- input ---\n%s", dump, want, text);
    }
    assert_int_equal(rc, -EINVAL);
    assert_int_equal(err.code, EINVAL);
    assert_null(docs);
    assert_string_equal(err.msg, want);
}

static json_t *path_get(json_t *v, const char *path)
{
    char *copy = xstrdup(path);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ".", &save); tok && v; tok = strtok_r(NULL, ".", &save)) {
        int64_t idx;
        if (json_is_array(v) && sl_parse_int64(tok, 0, INT32_MAX, &idx) == 0)
            v = json_array_get(v, (size_t)idx);
        else
            v = json_object_get(v, tok);
    }
    free(copy);
    return v;
}

static void assert_path_str(json_t *doc, const char *path, const char *want)
{
    json_t *v = path_get(doc, path);
    if (!json_is_string(v))
        fail_msg("%s: not a string", path);
    assert_string_equal(json_string_value(v), want);
}

static void assert_path_int(json_t *doc, const char *path, json_int_t want)
{
    json_t *v = path_get(doc, path);
    if (!json_is_integer(v))
        fail_msg("%s: not an integer", path);
    assert_int_equal(json_integer_value(v), want);
}

static void test_knative_service(void **state)
{
    json_t *docs = parse_ok(knative_service, 10);
    assert_int_equal(json_array_size(docs), 1);
    json_t *svc = json_array_get(docs, 0);
    assert_path_str(svc, "apiVersion", "serving.knative.dev/v1");
    assert_path_str(svc, "kind", "Service");
    assert_path_str(svc, "metadata.name", "hello");
    assert_path_str(svc, "metadata.namespace", "default");
    json_t *ann = path_get(svc, "spec.template.metadata.annotations");
    assert_int_equal(json_object_size(ann), 2);
    assert_string_equal(
        json_string_value(json_object_get(ann, "autoscaling.knative.dev/min-scale")), "1");
    assert_string_equal(
        json_string_value(json_object_get(ann, "autoscaling.knative.dev/max-scale")), "5");
    assert_path_int(svc, "spec.template.spec.containerConcurrency", 80);
    assert_path_int(svc, "spec.template.spec.timeoutSeconds", 300);
    assert_path_str(svc, "spec.template.spec.containers.0.image",
                    "oci:examples/hello/build/oci:latest");
    assert_path_int(svc, "spec.template.spec.containers.0.ports.0.containerPort", 8080);
    assert_path_str(svc, "spec.template.spec.containers.0.env.0.name", "GREETING");
    assert_path_str(svc, "spec.template.spec.containers.0.env.0.value", "Hello, world");
    assert_path_str(svc, "spec.template.spec.containers.0.env.1.value", "true");
    /* Key order is the document's. */
    const char *first = json_object_iter_key(json_object_iter(svc));
    assert_string_equal(first, "apiVersion");
    json_decref(docs);
}

static void test_example_manifest(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    sl_error_t err = {0};
    if (sl_read_file("examples/hello/service.yaml", 1 << 20, &buf, &len, &err) < 0)
        skip(); /* run from somewhere other than the repository root */
    json_t *docs = NULL;
    if (sl_manifest_parse(buf, len, 10, &docs, &err) < 0)
        fail_msg("examples/hello/service.yaml: %s", err.msg);
    json_t *svc = json_array_get(docs, 0);
    assert_path_str(svc, "kind", "Service");
    assert_path_str(svc, "metadata.name", "hello");
    assert_path_int(svc, "spec.template.spec.containerConcurrency", 80);
    assert_path_int(svc, "spec.template.spec.containers.0.ports.0.containerPort", 8080);
    assert_path_str(svc, "spec.template.spec.containers.0.env.0.name", "GREETING");
    json_decref(docs);
    free(buf);
}

static void test_multi_document(void **state)
{
    const char *text = "# leading comment\n"
                       "---\n"
                       "kind: RuntimeClass\n"
                       "---\n"
                       "---\n"
                       "# only a comment\n"
                       "---\n"
                       "kind: Service\n"
                       "...\n"
                       "---\n"
                       "- 1\n"
                       "- two\n"
                       "--- ~\n"
                       "---\n";
    json_t *docs = parse_ok(text, 10);
    json_t *want =
        json_loads("[{\"kind\":\"RuntimeClass\"},{\"kind\":\"Service\"},[1,\"two\"]]", 0, NULL);
    assert_true(json_equal(docs, want));
    json_decref(want);
    json_decref(docs);

    /* Nothing at all is zero documents, not an error. */
    docs = parse_ok("", 10);
    assert_int_equal(json_array_size(docs), 0);
    json_decref(docs);
    docs = parse_ok("---\n# nothing\n...\n", 10);
    assert_int_equal(json_array_size(docs), 0);
    json_decref(docs);
    sl_error_t err = {0};
    assert_int_equal(sl_manifest_parse(NULL, 0, 1, &docs, &err), 0);
    assert_int_equal(json_array_size(docs), 0);
    json_decref(docs);
}

static void test_max_docs(void **state)
{
    const char *three = "a: 1\n---\nb: 2\n---\n---\nc: 3\n";
    json_t *docs = parse_ok(three, 3);
    assert_int_equal(json_array_size(docs), 3);
    json_decref(docs);
    /* Empty documents do not count towards the bound. */
    parse_fails(three, 2, "line 5, column 1: more than 2 documents");
    docs = parse_ok(three, 0); /* 0: no bound */
    assert_int_equal(json_array_size(docs), 3);
    json_decref(docs);
    parse_fails("a: 1\n---\nb: 2\n", 1, "line 2, column 1: more than 1 documents");
}

static void test_json_input(void **state)
{
    const char *text = "{\n"
                       "  \"apiVersion\": \"serving.knative.dev/v1\",\n"
                       "  \"kind\": \"Service\",\n"
                       "  \"metadata\": {\"name\": \"hello\", \"annotations\": "
                       "{\"autoscaling.knative.dev/min-scale\": \"1\"}},\n"
                       "  \"spec\": {\"template\": {\"spec\": {\"containerConcurrency\": 80,\n"
                       "    \"containers\": [{\"image\": \"oci:x\", \"ports\": "
                       "[{\"containerPort\": 8080}]}]}}},\n"
                       "  \"note\": \"smile \\ud83d\\ude00 caf\\u00e9 a\\/b\",\n"
                       "  \"ratio\": 0.5, \"none\": null, \"on\": true\n"
                       "}\n";
    json_t *docs = parse_ok(text, 1);
    assert_int_equal(json_array_size(docs), 1);
    json_t *svc = json_array_get(docs, 0);
    json_t *ann = path_get(svc, "metadata.annotations");
    assert_string_equal(
        json_string_value(json_object_get(ann, "autoscaling.knative.dev/min-scale")), "1");
    assert_path_int(svc, "spec.template.spec.containerConcurrency", 80);
    assert_path_int(svc, "spec.template.spec.containers.0.ports.0.containerPort", 8080);
    assert_path_str(svc, "note", "smile \xf0\x9f\x98\x80 caf\xc3\xa9 a/b");
    assert_true(json_is_real(json_object_get(svc, "ratio")));
    assert_true(json_is_null(json_object_get(svc, "none")));
    assert_true(json_is_true(json_object_get(svc, "on")));
    json_decref(docs);

    /* Flow-style YAML that is not strict JSON still reads. */
    docs = parse_ok("{a: 1, b: [x, 'y']}", 1);
    json_t *want = json_loads("[{\"a\":1,\"b\":[\"x\",\"y\"]}]", 0, NULL);
    assert_true(json_equal(docs, want));
    json_decref(want);
    json_decref(docs);

    parse_fails("{\n  \"a\": 1,\n  \"a\": 2\n}\n", 1, "line 3, column 3: duplicate key 'a'");
    parse_fails("{\"a\": [1, 2}\n", 1,
                "line 1, column 12: did not find expected ',' or ']' (while parsing a flow "
                "sequence at line 1, column 7)");
}

static char *nested(const char *open, const char *close, int depth, const char *inner)
{
    size_t ol = strlen(open), cl = strlen(close), il = strlen(inner);
    char *s = xmalloc((size_t)depth * (ol + cl) + il + 1);
    char *p = s;
    for (int i = 0; i < depth; i++, p += ol)
        memcpy(p, open, ol);
    memcpy(p, inner, il);
    p += il;
    for (int i = 0; i < depth; i++, p += cl)
        memcpy(p, close, cl);
    *p = '\0';
    return s;
}

static void test_depth(void **state)
{
    char *ok = nested("[", "]", 64, "1");
    json_t *docs = parse_ok(ok, 1);
    json_decref(docs);
    free(ok);

    char *deep = nested("[", "]", 65, "1");
    parse_fails(deep, 1, "line 1, column 65: nesting deeper than 64 levels");
    free(deep);
    /* The same through the YAML reader (flow YAML, not JSON). */
    deep = nested("- ", "", 65, "x");
    parse_fails(deep, 1, "line 1, column 129: nesting deeper than 64 levels");
    free(deep);
    /* Brackets inside YAML quoted strings are not nesting. */
    char *brackets = nested("[", "]", 1,
                            "'\"', '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                            "[[[[[[[[[[[[[[[['");
    docs = parse_ok(brackets, 1);
    json_decref(docs);
    free(brackets);
    /* A million levels: rejected early, without exhausting the stack. */
    deep = nested("{\"a\":", "}", 1000000, "1");
    parse_fails(deep, 1, "line 1, column 321: nesting deeper than 64 levels");
    free(deep);
}

static void test_errors(void **state)
{
    parse_fails("base: &b {x: 1}\nother: *b\n", 5,
                "line 1, column 7: anchors are not supported (&b)");
    parse_fails("a: *nothing\n", 5, "line 1, column 4: aliases are not supported (*nothing)");
    parse_fails("metadata:\n  name: a\n  labels: {}\n  name: b\n", 5,
                "line 4, column 3: duplicate key 'name'");
    parse_fails("spec:\n  template:\n    a: 1\n   b: 2\n", 5,
                "line 4, column 4: did not find expected key (while parsing a block mapping at "
                "line 2, column 3)");
    parse_fails("a: b: c\n", 5, "line 1, column 5: mapping values are not allowed in this context");
    parse_fails("a: \"unterminated\n", 5,
                "line 2, column 1: found unexpected end of stream (while scanning a quoted scalar "
                "at line 1, column 4)");
    parse_fails("a:\n\t- x\n", 5,
                "line 2, column 1: found character that cannot start any token (while scanning "
                "for the next token at line 2, column 1)");
    parse_fails("image: !custom x\n", 5, "line 1, column 8: unsupported tag '!custom'");
    parse_fails("spec: !!set {a}\n", 5,
                "line 1, column 7: unsupported tag "
                "'tag:yaml.org,2002:set' on a mapping");
    parse_fails("spec: !!map [a]\n", 5,
                "line 1, column 7: unsupported tag "
                "'tag:yaml.org,2002:map' on a sequence");
    parse_fails("%TAG !! tag:example.com,2000:\n---\na: !!str x\n", 5,
                "line 3, column 4: unsupported tag 'tag:example.com,2000:str'");
    parse_fails("n: !!int twelve\n", 5, "line 1, column 4: 'twelve' is not a valid !!int");
    parse_fails("n: !!null 0\n", 5, "line 1, column 4: '0' is not a valid !!null");
    parse_fails("? [a, b]\n: 1\n", 5,
                "line 1, column 3: mapping keys must be strings, found a sequence");
    parse_fails("{a: 1}: x\n", 5,
                "line 1, column 1: mapping keys must be strings, found a mapping");
    parse_fails("80: http\n", 5, "line 1, column 1: mapping key 80 is not a string (quote it)");
    parse_fails("true: x\n", 5, "line 1, column 1: mapping key true is not a string (quote it)");
    parse_fails("~: x\n", 5, "line 1, column 1: mapping key null is not a string (quote it)");
    parse_fails("x: .inf\n", 5,
                "line 1, column 4: '.inf' has no JSON representation (quote it to make it a "
                "string)");
    parse_fails("x: .NaN\n", 5,
                "line 1, column 4: '.NaN' has no JSON representation (quote it to make it a "
                "string)");
    parse_fails("x: !!float -.INF\n", 5,
                "line 1, column 4: '-.INF' has no JSON representation (quote it to make it a "
                "string)");
    parse_fails("x: 9223372036854775808\n", 5,
                "line 1, column 4: integer '9223372036854775808' is out of range");
    parse_fails("x: 0x1ffffffffffffffff\n", 5,
                "line 1, column 4: integer '0x1ffffffffffffffff' is out of range");
    parse_fails("x: 1e400\n", 5, "line 1, column 4: number '1e400' is out of range");
    parse_fails("x: \"a\\0b\"\n", 5, "line 1, column 4: strings may not contain NUL characters");
    parse_fails("{\"x\": \"a\\u0000b\"}", 5,
                "line 1, column 7: strings may not contain NUL characters");
    parse_fails("a: 1\nb: \xff\n", 5, "line 2, column 4: invalid leading UTF-8 octet (byte 0xff)");
}

typedef struct typing_case {
    const char *yaml;
    const char *json;
} typing_case_t;

static void test_scalar_typing(void **state)
{
    static const typing_case_t cases[] = {
        {"", "null"},
        {"~", "null"},
        {"null", "null"},
        {"Null", "null"},
        {"NULL", "null"},
        {"nULL", "\"nULL\""},
        {"true", "true"},
        {"True", "true"},
        {"TRUE", "true"},
        {"false", "false"},
        {"False", "false"},
        {"FALSE", "false"},
        {"tRUE", "\"tRUE\""},
        {"yes", "\"yes\""},
        {"no", "\"no\""},
        {"on", "\"on\""},
        {"off", "\"off\""},
        {"y", "\"y\""},
        {"0", "0"},
        {"-17", "-17"},
        {"+17", "17"},
        {"007", "7"},
        {"0o17", "15"},
        {"0x1F", "31"},
        {"0xff", "255"},
        {"0O17", "\"0O17\""},
        {"0X1F", "\"0X1F\""},
        {"-0x1", "\"-0x1\""},
        {"0b101", "\"0b101\""},
        {"1_000", "\"1_000\""},
        {"1.5", "1.5"},
        {"-.5", "-0.5"},
        {"+1.", "1.0"},
        {"1e3", "1000.0"},
        {"6.02E+23", "6.02e23"},
        {"1.5e-3", "0.0015"},
        {"1.2.3", "\"1.2.3\""},
        {"1e", "\"1e\""},
        {".", "\".\""},
        {"10:30", "\"10:30\""},
        {"-.NaN", "\"-.NaN\""},
        {".infinity", "\".infinity\""},
        {"\"1\"", "\"1\""},
        {"'true'", "\"true\""},
        {"\"\"", "\"\""},
        {"''", "\"\""},
        {"\"null\"", "\"null\""},
        {"!!str 12", "\"12\""},
        {"!!str", "\"\""},
        {"!!int \"12\"", "12"},
        {"!!int 0x10", "16"},
        {"!!float 3", "3.0"},
        {"!!float \"2.5\"", "2.5"},
        {"!!bool 'false'", "false"},
        {"!!null ''", "null"},
        {"! 12", "\"12\""},
        {"!!seq []", "[]"},
        {"!!map {}", "{}"},
        {"[]", "[]"},
        {"{}", "{}"},
        {"a b  c", "\"a b  c\""},
        {"héllo", "\"h\\u00e9llo\""},
        {"\"\\t\\u00e9\\U0001F600\"", "\"\\t\\u00e9\\ud83d\\ude00\""},
        {"|\n  a\n  b\n", "\"a\\nb\\n\""},
        {">-\n  a\n  b\n", "\"a b\""},
    };
    for (size_t i = 0; i < SL_ARRAY_LEN(cases); i++) {
        char *text = xasprintf("v: %s\n", cases[i].yaml);
        json_t *docs = parse_ok(text, 1);
        json_t *got = json_object_get(json_array_get(docs, 0), "v");
        json_error_t jerr;
        json_t *want = json_loads(cases[i].json, JSON_DECODE_ANY, &jerr);
        assert_non_null(want);
        if (!json_equal(got, want)) {
            char *g = json_dumps(got, JSON_ENCODE_ANY);
            fail_msg("'%s': got %s, want %s", cases[i].yaml, g ? g : "(nothing)", cases[i].json);
        }
        json_decref(want);
        json_decref(docs);
        free(text);
    }
}

/* Render v, parse it back and require the same value. Returns the YAML. */
static char *round_trip(json_t *v)
{
    char *yaml = sl_manifest_to_yaml(v);
    assert_non_null(yaml);
    json_t *docs = parse_ok(yaml, 1);
    if (json_array_size(docs) != 1 || !json_equal(json_array_get(docs, 0), v)) {
        char *want = json_dumps(v, JSON_ENCODE_ANY);
        char *got = json_dumps(docs, JSON_ENCODE_ANY);
        fail_msg("round trip: want %s, got %s\n--- yaml ---\n%s", want, got, yaml);
    }
    json_decref(docs);
    return yaml;
}

static void test_to_yaml_format(void **state)
{
    json_t *v =
        json_pack("{s:s, s:{s:s, s:{s:s}}, s:{s:[{s:s, s:[{s:i}]}], s:i}, s:{}, s:[]}", "kind",
                  "Service", "metadata", "name", "hello", "annotations",
                  "autoscaling.knative.dev/min-scale", "1", "spec", "containers", "image", "oci:x",
                  "ports", "containerPort", 8080, "containerConcurrency", 80, "labels", "args");
    char *yaml = round_trip(v);
    assert_string_equal(yaml, "kind: Service\n"
                              "metadata:\n"
                              "  name: hello\n"
                              "  annotations:\n"
                              "    autoscaling.knative.dev/min-scale: \"1\"\n"
                              "spec:\n"
                              "  containers:\n"
                              "  - image: oci:x\n"
                              "    ports:\n"
                              "    - containerPort: 8080\n"
                              "  containerConcurrency: 80\n"
                              "labels: {}\n"
                              "args: []\n");
    free(yaml);
    json_decref(v);
}

static void test_to_yaml_strings(void **state)
{
    static const char *const tricky[] = {
        "yes",
        "no",
        "on",
        "Off",
        "y",
        "1",
        "-1",
        "0x1F",
        "0o7",
        "1.5",
        "1e3",
        "1_000",
        "10:30",
        "1.2.3",
        "",
        " x",
        "x ",
        "a: b",
        "a:",
        "a:b",
        "#c",
        "a #c",
        "a#c",
        "-",
        "- x",
        "-x",
        "?",
        "? x",
        "[a]",
        "{a}",
        "!tag",
        "*ref",
        "&anchor",
        "|",
        ">",
        "'q'",
        "\"q\"",
        "%x",
        "@x",
        "`x",
        "null",
        "Null",
        "~",
        "true",
        "False",
        ".inf",
        ".nan",
        "---",
        "...",
        "--- x",
        "line1\nline2",
        "trailing\n",
        "\n",
        "tab\there",
        "cr\rlf",
        "\x01\x1f\x7f",
        "<<",
        "=",
        "héllo wörld",
        "日本語",
        "emoji \xf0\x9f\x98\x80",
        "nbsp\xc2\xa0x",
        "nel\xc2\x85x",
        "ls\xe2\x80\xa8x",
        "bom\xef\xbb\xbfx",
        "\xef\xbb\xbf",
        "back\\slash",
        "quote\"mark",
        "it's",
        "a, b",
        "a]b",
        "oci:examples/hello/build/oci:latest",
        "256Mi",
        "http://x.example:8080/p?q=1#frag",
        "0",
        "+",
        ".",
        "..",
        "0b101",
    };
    for (size_t i = 0; i < SL_ARRAY_LEN(tricky); i++) {
        json_t *v = json_pack("{s:s, s:[s], s:s}", "value", tricky[i], "list", tricky[i], tricky[i],
                              "as key");
        free(round_trip(v));
        json_t *s = json_string(tricky[i]);
        free(round_trip(s));
        json_decref(s);
        json_decref(v);
    }
    /* Long keys (libyaml writes "? key") and long values (never wrapped). */
    char long_key[301], long_val[3001];
    memset(long_key, 'k', sizeof(long_key) - 1);
    long_key[sizeof(long_key) - 1] = '\0';
    for (size_t i = 0; i < sizeof(long_val) - 1; i++)
        long_val[i] = i % 7 == 6 ? ' ' : 'w';
    long_val[sizeof(long_val) - 1] = '\0';
    json_t *lv = json_pack("{s:s, s:s}", long_key, "v", "long", long_val);
    char *ly = round_trip(lv);
    assert_non_null(strstr(ly, "\nlong: w"));
    assert_int_equal(strchr(strstr(ly, "\nlong: w") + 1, '\n') - strstr(ly, "\nlong: w"),
                     (long)strlen("\nlong: ") + 3000);
    free(ly);
    json_decref(lv);

    /* Strings that need no quotes get none; multi-line ones are escaped. */
    json_t *v = json_pack("{s:s, s:s, s:s, s:s}", "image", "oci:x:latest", "greeting",
                          "Hello, world", "yes", "yes", "text", "a\nb");
    char *yaml = round_trip(v);
    assert_string_equal(yaml, "image: oci:x:latest\n"
                              "greeting: Hello, world\n"
                              "\"yes\": \"yes\"\n"
                              "text: \"a\\nb\"\n");
    free(yaml);
    json_decref(v);
}

/* What YAML 1.1 readers (PyYAML's safe_load, kubectl) would resolve to a
 * timestamp, number, bool or null is written quoted; look-alikes are not. */
static void test_to_yaml_yaml11_types(void **state)
{
    static const char *const quoted[] = {
        "2026-11-27T16:41:54Z",
        "2026-11-27t16:41:54Z",
        "2026-11-27T16:41:54.123456Z",
        "2026-11-27T16:41:54+01:00",
        "2026-11-27T16:41:54-5",
        "2001-12-14 21:59:43.10 -5",
        "2001-12-14 21:59:43.10 Z",
        "2001-12-14 21:59:43",
        "2001-1-4T1:59:43",
        "2026-11-27",
        "1e3",
        "0x1F",
        "-0x1F",
        "+0x1f",
        "0b1010",
        "-0b1_0",
        "0755",
        "-0755",
        "0o17",
        "1:20",
        "-1:20",
        "190:20:30.15",
        "1_000",
        "-1_000",
        "+1_000.5",
        "-1.5_0",
        ".5",
        "yes",
        "on",
        "Y",
        "~",
        "null",
        "NULL",
        "",
        "true",
        "FALSE",
        ".inf",
        "-.Inf",
        ".NaN",
        "<<",
        "=",
    };
    static const char *const plain[] = {
        "2026-11-27T16:41",      /* no seconds */
        "2026-11-27Tx",          /* not a time */
        "2026-11-2x",            /* not a date */
        "20261-11-27T16:41:54Z", /* five-digit year */
        "2026-11-27T16:41:54Zx", /* trailing junk */
        "v1.2.3",
        "hello-00001",
        "abc",
        "x1e3",
        "0xg",
        "+",
        "sha256:0123abcd",
        "oci:/x:latest",
    };
    for (size_t i = 0; i < SL_ARRAY_LEN(quoted); i++) {
        json_t *v = json_pack("{s:s}", "v", quoted[i]);
        char *yaml = round_trip(v);
        char *want = xasprintf("v: \"%s\"\n", quoted[i]);
        if (strcmp(yaml, want))
            fail_msg("'%s' must be quoted, got: %s", quoted[i], yaml);
        free(want);
        free(yaml);
        json_decref(v);
    }
    for (size_t i = 0; i < SL_ARRAY_LEN(plain); i++) {
        json_t *v = json_pack("{s:s}", "v", plain[i]);
        char *yaml = round_trip(v);
        char *want = xasprintf("v: %s\n", plain[i]);
        if (strcmp(yaml, want))
            fail_msg("'%s' needs no quotes, got: %s", plain[i], yaml);
        free(want);
        free(yaml);
        json_decref(v);
    }
}

static void test_to_yaml_values(void **state)
{
    json_t *v = json_pack("{s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:b, s:b, s:n, s:[[[]]], s:{s:{}}}",
                          "one", 1.0, "neg", -0.5, "third", 1.0 / 3.0, "big", 1e300, "tiny", 5e-324,
                          "max", (json_int_t)INT64_MAX, "min", (json_int_t)INT64_MIN, "t", 1, "f",
                          0, "nil", "nest", "obj", "inner");
    char *yaml = round_trip(v);
    assert_non_null(strstr(yaml, "one: 1.0\n"));
    assert_non_null(strstr(yaml, "neg: -0.5\n"));
    assert_non_null(strstr(yaml, "nil: null\n"));
    assert_non_null(strstr(yaml, "max: 9223372036854775807\n"));
    free(yaml);
    json_decref(v);

    json_t *scalars[] = {json_null(),        json_true(),  json_integer(42), json_real(2.5),
                         json_string("top"), json_array(), json_object()};
    for (size_t i = 0; i < SL_ARRAY_LEN(scalars); i++) {
        if (json_is_null(scalars[i])) {
            /* A null document reads back as no document at all. */
            yaml = sl_manifest_to_yaml(scalars[i]);
            json_t *docs = parse_ok(yaml, 1);
            assert_int_equal(json_array_size(docs), 0);
            json_decref(docs);
        } else {
            yaml = round_trip(scalars[i]);
        }
        free(yaml);
        json_decref(scalars[i]);
    }
}

static void test_service_round_trip(void **state)
{
    json_t *docs = parse_ok(knative_service, 1);
    json_t *svc = json_array_get(docs, 0);
    char *yaml = round_trip(svc);
    assert_non_null(strstr(yaml, "\n        autoscaling.knative.dev/min-scale: \"1\"\n"));
    assert_non_null(strstr(yaml, "\n      containerConcurrency: 80\n"));
    assert_non_null(strstr(yaml, "\n          value: \"true\"\n"));
    free(yaml);
    json_decref(docs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_knative_service),
        cmocka_unit_test(test_example_manifest),
        cmocka_unit_test(test_multi_document),
        cmocka_unit_test(test_max_docs),
        cmocka_unit_test(test_json_input),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_scalar_typing),
        cmocka_unit_test(test_to_yaml_format),
        cmocka_unit_test(test_to_yaml_strings),
        cmocka_unit_test(test_to_yaml_values),
        cmocka_unit_test(test_to_yaml_yaml11_types),
        cmocka_unit_test(test_service_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
