/*
 * fuzz_manifest.c — libFuzzer driver for the manifest reader and writer.
 *
 * Parses the input; when it is accepted, every document is rendered back to
 * YAML and must parse again to exactly the same JSON value. Rendered output
 * that fails to parse, or reads back differently, is a crash.
 */
#include <errno.h>
#include <stdio.h>

#include "manifest.h"

#define MAX_DOCS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_round_trip(const json_t *doc)
{
    sl_error_t err = {0};
    json_t *again = NULL;
    char *yaml = sl_manifest_to_yaml(doc);
    if (sl_manifest_parse(yaml, strlen(yaml), 1, &again, &err) < 0) {
        fprintf(stderr, "rendered YAML does not parse: %s\n---\n%s\n", err.msg, yaml);
        abort();
    }
    if (json_array_size(again) != 1 || !json_equal(json_array_get(again, 0), doc)) {
        char *want = json_dumps(doc, JSON_ENCODE_ANY);
        char *got = json_dumps(again, JSON_ENCODE_ANY);
        fprintf(stderr, "round trip changed the value\nwant %s\ngot  %s\n---\n%s\n", want, got,
                yaml);
        abort();
    }
    json_decref(again);
    free(yaml);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_error_t err = {0};
    json_t *docs = NULL;
    if (sl_manifest_parse((const char *)data, size, MAX_DOCS, &docs, &err) < 0) {
        if (strncmp(err.msg, "line ", 5) != 0 && err.code != ENOMEM) {
            fprintf(stderr, "error without a position: %s\n", err.msg);
            abort();
        }
        return 0;
    }
    if (json_array_size(docs) > MAX_DOCS)
        abort();
    size_t i;
    json_t *doc;
    json_array_foreach(docs, i, doc)
    {
        if (json_is_null(doc))
            abort(); /* empty documents are skipped */
        check_round_trip(doc);
    }
    json_decref(docs);
    return 0;
}
