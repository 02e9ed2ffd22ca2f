/*
 * manifest.h — YAML manifests to JSON and back.
 *
 * `sluice apply -f` reads Knative Service / RuntimeClass manifests as YAML
 * (multi-document, `---` separated) or JSON; listings print `-o yaml`. YAML
 * is turned into jansson values with YAML 1.2 core-schema scalars (null,
 * true/false, ints, floats; quoted scalars stay strings); anchors and
 * aliases are rejected (billion-laughs), as are duplicate keys, non-string
 * keys, tags other than the core ones, and documents deeper than 64 levels.
 * Errors name the line and column.
 */
#ifndef SL_MANIFEST_H
#define SL_MANIFEST_H

#include "common.h"
#include <jansson.h>

/*
 * Parse buf (YAML or JSON; JSON is YAML) into a new JSON array with one
 * element per non-empty document. Empty documents are skipped. max_docs
 * bounds the count. Returns 0 and *out, or < 0 with err ("line 3, column 5:
 * duplicate key 'name'").
 */
int sl_manifest_parse(const char *buf, size_t len, size_t max_docs, json_t **out, sl_error_t *err);

/* Render a JSON value as block-style YAML (strings quoted when they would
 * otherwise read back as another type). Returns a malloc'd string. */
char *sl_manifest_to_yaml(const json_t *v);

#endif
