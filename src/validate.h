/*
 * validate.h — the pieces strict validation of Kubernetes-shaped objects is
 * built from: a table of the fields an object may have, each with its
 * check, and checks shared by every kind (strings, booleans, label and
 * annotation maps, namespaces). A check returns 0, or sets err to
 * "PATH: cause" and returns -code.
 */
#ifndef SL_VALIDATE_H
#define SL_VALIDATE_H

#include "common.h"
#include <jansson.h>

typedef int (*sl_check_fn)(json_t *v, const char *path, sl_error_t *err);
typedef struct sl_field {
    const char *key;
    sl_check_fn check; /* NULL: accepted as is */
} sl_field_t;

/* The metadata fields the server sets: accepted in a manifest (one read
 * back from the API, say) and replaced. */
#define SL_SERVER_SET_METADATA                                                                     \
    {"uid", NULL}, {"resourceVersion", NULL}, {"generation", NULL}, {"creationTimestamp", NULL},   \
        {"managedFields", NULL},                                                                   \
    {                                                                                              \
        "selfLink", NULL                                                                           \
    }

/* obj is an object whose every key is one of fields, each passing its check
 * (at "PATH.KEY"); an unknown key is an error. */
int sl_check_fields(json_t *obj, const char *path, const sl_field_t *fields, size_t n,
                    sl_error_t *err);
int sl_check_string(json_t *v, const char *path, sl_error_t *err);
int sl_check_bool(json_t *v, const char *path, sl_error_t *err);
/* Kubernetes' name part of a label or annotation key, and a label value:
 * [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?, at most 63 characters. */
bool sl_is_qualified_part(const char *s, size_t n);
/* A key: [DNS-subdomain prefix "/"] name. */
bool sl_is_qualified_key(const char *k);
/* A map of qualified keys to strings; labels: the values are label values. */
int sl_check_keyed_map(json_t *v, const char *path, bool labels, sl_error_t *err);
int sl_check_string_map(json_t *v, const char *path, sl_error_t *err);
int sl_check_labels(json_t *v, const char *path, sl_error_t *err);
/* A namespace: a DNS-1123 label. */
int sl_check_namespace(json_t *v, const char *path, sl_error_t *err);
/* A field sluice knows and refuses: "PATH: not supported". */
int sl_check_unsupported(json_t *v, const char *path, sl_error_t *err);

/* Kubernetes' preconditions on a replace (PUT), read from the new object's
 * metadata md. With metadata.resourceVersion set, the object replaces the
 * stored one only at that version; unset (null or "0") it replaces whatever
 * is there. With metadata.uid set, the stored object must be the one of that
 * uid (not one deleted and made again since); with nothing stored it
 * creates. cur is the stored object, NULL when there is none; resource names
 * the kind in messages as the API server does ("services.serving.knative.dev",
 * "secrets"). Returns 0 when the write may go on, else the HTTP status with
 * err set: 400 (a malformed field, or a version this server did not give),
 * 404 (no object to be at that version), 409 (another object, or the object
 * has changed since). Call it before the object's server-set metadata is
 * stripped. */
int sl_check_update_preconditions(const json_t *md, const json_t *cur, const char *resource,
                                  const char *name, sl_error_t *err);
/* The Status reason of one of those codes: "BadRequest", "NotFound", "Conflict". */
const char *sl_precondition_reason(int code);
/* A DELETE's DeleteOptions.preconditions ({"uid": S, "resourceVersion": S},
 * each optional; pre NULL: none) against the stored object cur. 0 when they
 * hold, else 409 (400 for a malformed one) with err worded as the API
 * server words it. */
int sl_check_delete_preconditions(const json_t *pre, const json_t *cur, sl_error_t *err);

#endif
