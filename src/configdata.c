/*
 * configdata.c — Secret and ConfigMap validation and their data (see
 * configdata.h).
 */
#include "configdata.h"
#include "service.h"
#include "validate.h"

#include <errno.h>
#include <stdio.h>

const char *sl_data_kind_name(sl_data_kind_t kind)
{
    return kind == SL_DATA_SECRET ? "Secret" : "ConfigMap";
}

const char *sl_data_resource(sl_data_kind_t kind)
{
    return kind == SL_DATA_SECRET ? "secrets" : "configmaps";
}

const char *sl_data_singular(sl_data_kind_t kind)
{
    return kind == SL_DATA_SECRET ? "secret" : "configmap";
}

bool sl_data_is_key(const char *k)
{
    size_t n = k ? strlen(k) : 0;
    if (n == 0 || n > 253 || !strcmp(k, ".") || !strncmp(k, "..", 2))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._", k[i]))
            return false;
    return true;
}

static int check_key(const char *k, const char *path, sl_error_t *err)
{
    if (sl_data_is_key(k))
        return 0;
    return sl_error_set(err, EINVAL,
                        "%s: invalid key \"%.80s\" (at most 253 letters, digits, '-', '_' or '.', "
                        "not \".\" and not starting with \"..\")",
                        path, k);
}

/* A map of keys to strings; base64: each value is base64 text, whose
 * decoded size is added to *total. */
static int check_data_map(json_t *v, const char *path, bool base64, size_t *total, sl_error_t *err)
{
    if (!json_is_object(v))
        return sl_error_set(err, EINVAL, "%s: must be a map of keys to strings", path);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x)
    {
        if (check_key(k, path, err) < 0)
            return -1;
        if (!json_is_string(x))
            return sl_error_set(err, EINVAL, "%s.%s: must be a string", path, k);
        size_t len = json_string_length(x);
        if (base64) {
            char *raw = sl_base64_decode(json_string_value(x), len, &len);
            if (!raw)
                return sl_error_set(err, EINVAL,
                                    "%s.%s: must be base64 (the standard alphabet, padded); put "
                                    "plain text under stringData instead",
                                    path, k);
            free(raw);
        }
        *total += len;
    }
    return 0;
}

static int check_name(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || !sl_is_valid_domain(s))
        return sl_error_set(err, EINVAL,
                            "%s: must be a DNS-1123 subdomain (lower-case letters, digits, '-' "
                            "and '.', at most 253 characters)",
                            path);
    return 0;
}

static const sl_field_t metadata_fields[] = {
    {"name", check_name},        {"namespace", sl_check_namespace},
    {"labels", sl_check_labels}, {"annotations", sl_check_string_map},
    SL_SERVER_SET_METADATA,
};

static int check_metadata(json_t *v, const char *path, sl_error_t *err)
{
    return sl_check_fields(v, path, metadata_fields, SL_ARRAY_LEN(metadata_fields), err);
}

static int check_type(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) > 253)
        return sl_error_set(err, EINVAL, "%s: must be a secret type, such as Opaque", path);
    return 0;
}

static const sl_field_t secret_fields[] = {
    {"apiVersion", sl_check_string},
    {"kind", sl_check_string},
    {"metadata", check_metadata},
    {"data", NULL},
    {"stringData", NULL},
    {"type", check_type},
    {"immutable", sl_check_bool},
    {"status", NULL},
};

static const sl_field_t configmap_fields[] = {
    {"apiVersion", sl_check_string},
    {"kind", sl_check_string},
    {"metadata", check_metadata},
    {"data", NULL},
    {"binaryData", NULL},
    {"immutable", sl_check_bool},
    {"status", NULL},
};

/* The keys a Secret of a built-in type must have (the API server's). */
static int check_secret_type(const json_t *obj, sl_error_t *err)
{
    static const struct {
        const char *type;
        const char *keys[2]; /* all of them; with `any`, one of them */
        bool any;
    } rules[] = {
        {"kubernetes.io/tls", {"tls.crt", "tls.key"}, false},
        {"kubernetes.io/basic-auth", {"username", "password"}, true},
        {"kubernetes.io/ssh-auth", {"ssh-privatekey", NULL}, false},
        {"kubernetes.io/dockerconfigjson", {".dockerconfigjson", NULL}, false},
        {"kubernetes.io/dockercfg", {".dockercfg", NULL}, false},
    };
    const char *type = sl_json_str(obj, "type");
    json_t *data = json_object_get(obj, "data");
    if (!strcmp(type, "kubernetes.io/service-account-token"))
        return sl_error_set(err, ENOTSUP,
                            "type: %s is not supported: sluice has no service accounts", type);
    for (size_t i = 0; i < SL_ARRAY_LEN(rules); i++) {
        if (strcmp(type, rules[i].type))
            continue;
        size_t have = 0, want = rules[i].keys[1] ? 2 : 1;
        for (size_t k = 0; k < want; k++)
            have += json_object_get(data, rules[i].keys[k]) != NULL;
        if (rules[i].any ? have == 0 : have < want)
            return sl_error_set(err, EINVAL, "data: a %s secret must have %s%s%s%s", type,
                                rules[i].any ? "one of " : "", rules[i].keys[0],
                                want == 2 ? (rules[i].any ? " or " : " and ") : "",
                                want == 2 ? rules[i].keys[1] : "");
        /* a docker config is JSON */
        const json_t *v = json_object_get(data, rules[i].keys[0]);
        if (rules[i].keys[0][0] == '.') {
            size_t len = 0;
            sl_autofree char *raw =
                sl_base64_decode(json_string_value(v), json_string_length(v), &len);
            json_t *j = raw ? json_loadb(raw, len, 0, NULL) : NULL;
            bool ok = json_is_object(j);
            json_decref(j);
            if (!ok)
                return sl_error_set(err, EINVAL, "data.%s: must be a JSON object",
                                    rules[i].keys[0]);
        }
    }
    return 0;
}

/* Re-encode base64 values in the one form (no line breaks), so that equal
 * bytes are equal text. Values were checked. */
static void canonical_base64(json_t *map)
{
    const char *k;
    json_t *x;
    json_object_foreach(map, k, x)
    {
        size_t len = 0;
        char *raw = sl_base64_decode(json_string_value(x), json_string_length(x), &len);
        char *b = sl_base64_encode(raw, len);
        json_string_set(x, b);
        free(b);
        free(raw);
    }
}

/* Merge stringData into data as base64, as the API server does. */
static void merge_string_data(json_t *obj)
{
    json_t *sd = json_object_get(obj, "stringData");
    if (!sd)
        return;
    json_t *data = json_object_get(obj, "data");
    if (!data) {
        data = json_object();
        json_object_set_new(obj, "data", data);
    }
    const char *k;
    json_t *x;
    json_object_foreach(sd, k, x)
    {
        char *b = sl_base64_encode(json_string_value(x), json_string_length(x));
        json_object_set_new(data, k, json_string(b));
        free(b);
    }
    json_object_del(obj, "stringData");
}

int sl_data_validate(sl_data_kind_t kind, json_t *obj, const char *ns_default, sl_error_t *err)
{
    bool secret = kind == SL_DATA_SECRET;
    const char *name = sl_data_kind_name(kind);
    if (!json_is_object(obj))
        return sl_error_set(err, EINVAL, "a %s must be an object", name);
    const char *av = sl_json_str(obj, "apiVersion"), *k = sl_json_str(obj, "kind");
    if (!av || strcmp(av, "v1"))
        return sl_error_set(err, EINVAL, "apiVersion: must be v1");
    if (!k || strcmp(k, name))
        return sl_error_set(err, EINVAL, "kind: must be %s", name);
    int rc = secret
                 ? sl_check_fields(obj, "", secret_fields, SL_ARRAY_LEN(secret_fields), err)
                 : sl_check_fields(obj, "", configmap_fields, SL_ARRAY_LEN(configmap_fields), err);
    if (rc < 0)
        return rc;
    if (!sl_json_str(obj, "metadata.name"))
        return sl_error_set(err, EINVAL, "metadata.name: is required");
    /* YAML's `data:` left empty is null: no data */
    const char *maps[] = {"data", "stringData", "binaryData"};
    for (size_t i = 0; i < SL_ARRAY_LEN(maps); i++)
        if (json_is_null(json_object_get(obj, maps[i])))
            json_object_del(obj, maps[i]);
    size_t total = 0;
    json_t *data = json_object_get(obj, "data");
    json_t *more = json_object_get(obj, secret ? "stringData" : "binaryData");
    const char *more_field = secret ? "stringData" : "binaryData";
    /* A Secret's data and a ConfigMap's binaryData are base64. */
    if (data && check_data_map(data, "data", secret, &total, err) < 0)
        return -1;
    if (more && check_data_map(more, more_field, !secret, &total, err) < 0)
        return -1;
    const char *key;
    json_t *x;
    json_object_foreach(more, key, x)
    {
        if (!json_object_get(data, key))
            continue;
        if (!secret)
            return sl_error_set(err, EINVAL,
                                "data.%s: the key is in binaryData too; a key may be in one", key);
        /* stringData replaces data's value: count it once */
        size_t len = 0;
        const json_t *dv = json_object_get(data, key);
        free(sl_base64_decode(json_string_value(dv), json_string_length(dv), &len));
        total -= len;
    }
    if (total > SL_DATA_MAX_BYTES)
        return sl_error_set(err, EINVAL, "data: %zu bytes in all, more than the %d KiB a %s holds",
                            total, SL_DATA_MAX_BYTES / 1024, name);
    json_object_del(obj, "status");
    json_t *md = json_object_get(obj, "metadata");
    if (!json_object_get(md, "namespace"))
        json_object_set_new(md, "namespace", json_string(ns_default));
    canonical_base64(json_object_get(obj, secret ? "data" : "binaryData"));
    if (secret) {
        merge_string_data(obj);
        if (!json_object_get(obj, "type"))
            json_object_set_new(obj, "type", json_string("Opaque"));
        if (check_secret_type(obj, err) < 0)
            return -1;
    }
    return 0;
}

/* Two data maps are the same; a missing one is empty. */
static bool same(const json_t *a, const json_t *b)
{
    if (!a || !b)
        return json_object_size(a ? a : b) == 0;
    return json_equal(a, b) == 1;
}

int sl_data_check_update(sl_data_kind_t kind, const json_t *old, const json_t *obj, sl_error_t *err)
{
    if (kind == SL_DATA_SECRET &&
        strcmp(sl_json_str(old, "type") ? sl_json_str(old, "type") : "Opaque",
               sl_json_str(obj, "type") ? sl_json_str(obj, "type") : "Opaque"))
        return sl_error_set(err, EINVAL, "type: field is immutable (it is %s)",
                            sl_json_str(old, "type"));
    if (!json_is_true(json_object_get(old, "immutable")))
        return 0;
    if (!json_is_true(json_object_get(obj, "immutable")))
        return sl_error_set(err, EINVAL,
                            "immutable: field is immutable when `immutable` is set; delete and "
                            "recreate the %s to change it",
                            sl_data_singular(kind));
    const char *fields[] = {"data", kind == SL_DATA_CONFIGMAP ? "binaryData" : NULL};
    for (size_t i = 0; i < SL_ARRAY_LEN(fields); i++) {
        if (fields[i] && !same(json_object_get(old, fields[i]), json_object_get(obj, fields[i])))
            return sl_error_set(err, EINVAL,
                                "%s: field is immutable when `immutable` is set; delete and "
                                "recreate the %s to change it",
                                fields[i], sl_data_singular(kind));
    }
    return 0;
}

json_t *sl_data_values(sl_data_kind_t kind, const json_t *obj)
{
    json_t *out = json_object();
    bool secret = kind == SL_DATA_SECRET;
    const char *maps[] = {"data", secret ? NULL : "binaryData"};
    for (size_t m = 0; m < SL_ARRAY_LEN(maps); m++) {
        if (!maps[m])
            continue;
        bool base64 = secret || m == 1;
        const char *k;
        json_t *x;
        json_object_foreach(json_object_get(obj, maps[m]), k, x)
        {
            const char *s = json_string_value(x);
            size_t len = json_string_length(x);
            if (!s)
                continue;
            if (!base64) {
                json_object_set_new(out, k, json_stringn_nocheck(s, len));
                continue;
            }
            char *raw = sl_base64_decode(s, len, &len);
            if (raw)
                json_object_set_new(out, k, json_stringn_nocheck(raw, len));
            free(raw);
        }
    }
    return out;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char *sl_data_keys(sl_data_kind_t kind, const json_t *obj, size_t *n_keys)
{
    /* the maps' keys, no value decoded (stored form: no key in both) */
    const json_t *maps[] = {json_object_get(obj, "data"),
                            kind == SL_DATA_CONFIGMAP ? json_object_get(obj, "binaryData") : NULL};
    size_t n = json_object_size(maps[0]) + json_object_size(maps[1]), i = 0, len = 1;
    const char **keys = xcalloc(n + 1, sizeof(char *));
    for (size_t m = 0; m < SL_ARRAY_LEN(maps); m++) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)maps[m], k, x)
        {
            keys[i++] = k;
            len += strlen(k) + 1;
        }
    }
    qsort(keys, n, sizeof(char *), cmp_str);
    char *out = xmalloc(len);
    size_t o = 0;
    for (i = 0; i < n; i++) {
        size_t kl = strlen(keys[i]);
        if (i)
            out[o++] = ',';
        memcpy(out + o, keys[i], kl);
        o += kl;
    }
    out[o] = '\0';
    free(keys);
    if (n_keys)
        *n_keys = n;
    return out;
}
