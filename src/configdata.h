/*
 * configdata.h — Kubernetes' core v1 Secret and ConfigMap objects: what a
 * container's env (valueFrom, envFrom) and its secret and configMap
 * volumes read. Validation follows the API server's (ValidateSecret,
 * ValidateConfigMap): DNS-1123 subdomain names, keys of [-._a-zA-Z0-9],
 * base64 data, at most 1 MiB of data in all. Pure functions over jansson
 * values; no I/O.
 */
#ifndef SL_CONFIGDATA_H
#define SL_CONFIGDATA_H

#include "common.h"
#include <jansson.h>

typedef enum { SL_DATA_SECRET, SL_DATA_CONFIGMAP } sl_data_kind_t;

#define SL_DATA_MAX_BYTES (1024 * 1024) /* Kubernetes' MaxSecretSize */

/* "Secret" / "ConfigMap". */
const char *sl_data_kind_name(sl_data_kind_t kind);
/* The API resource and store kind: "secrets" / "configmaps". */
const char *sl_data_resource(sl_data_kind_t kind);
/* What kubectl prints before the name: "secret" / "configmap". */
const char *sl_data_singular(sl_data_kind_t kind);

/* Kubernetes' IsConfigMapKey: at most 253 of [-._a-zA-Z0-9], not "." or
 * "..", not starting with "..". */
bool sl_data_is_key(const char *k);

/*
 * Validate obj (apiVersion v1, kind as `kind`) and put it in stored form,
 * in place: a Secret's stringData is merged into data (base64; stringData
 * wins) and dropped, its type defaults to Opaque; a missing
 * metadata.namespace becomes ns_default; status is dropped. -1 with err
 * naming the field.
 */
int sl_data_validate(sl_data_kind_t kind, json_t *obj, const char *ns_default, sl_error_t *err);

/* An update of stored object old to obj (both in stored form): refused
 * when old is immutable and obj changes its data or immutability, or when
 * a Secret's type changes, as the API server does. */
int sl_data_check_update(sl_data_kind_t kind, const json_t *old, const json_t *obj,
                         sl_error_t *err);

/* The object's keys and their bytes, decoded: a new object of key ->
 * string (the bytes may hold NUL: json_string_length). Stored form only. */
json_t *sl_data_values(sl_data_kind_t kind, const json_t *obj);

/* The keys, sorted, as "k1,k2" (for listings); caller frees. */
char *sl_data_keys(sl_data_kind_t kind, const json_t *obj, size_t *n_keys);

#endif
