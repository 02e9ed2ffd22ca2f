/*
 * validate.c — field tables and the checks every Kubernetes-shaped kind
 * shares (see validate.h).
 */
#include "validate.h"
#include "service.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>

int sl_check_fields(json_t *obj, const char *path, const sl_field_t *fields, size_t n,
                    sl_error_t *err)
{
    if (!json_is_object(obj))
        return sl_error_set(err, EINVAL, "%s: must be an object", path);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        size_t i;
        for (i = 0; i < n; i++)
            if (strcmp(fields[i].key, key) == 0)
                break;
        if (i == n)
            return sl_error_set(err, EINVAL, "%s%s%s: unknown field", path, *path ? "." : "", key);
        if (fields[i].check) {
            sl_autofree char *sub = xasprintf("%s%s%s", path, *path ? "." : "", key);
            int rc = fields[i].check(v, sub, err);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

int sl_check_string(json_t *v, const char *path, sl_error_t *err)
{
    return json_is_string(v) ? 0 : sl_error_set(err, EINVAL, "%s: must be a string", path);
}

int sl_check_bool(json_t *v, const char *path, sl_error_t *err)
{
    return json_is_boolean(v) ? 0 : sl_error_set(err, EINVAL, "%s: must be true or false", path);
}

/* Kubernetes' name part of a label or annotation key, and a label value:
 * [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?, at most 63 characters. */
bool sl_is_qualified_part(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.", s[i]))
            return false;
    return true;
}

/* A key: [DNS-subdomain prefix "/"] name. */
bool sl_is_qualified_key(const char *k)
{
    const char *slash = strchr(k, '/');
    if (!slash)
        return sl_is_qualified_part(k, strlen(k));
    size_t pl = (size_t)(slash - k);
    if (pl == 0 || pl > 253)
        return false;
    sl_autofree char *prefix = xstrndup(k, pl);
    return sl_is_valid_domain(prefix) && sl_is_qualified_part(slash + 1, strlen(slash + 1));
}

int sl_check_keyed_map(json_t *v, const char *path, bool labels, sl_error_t *err)
{
    if (!json_is_object(v))
        return sl_error_set(err, EINVAL, "%s: must be a map of strings", path);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x)
    {
        if (!json_is_string(x))
            return sl_error_set(err, EINVAL, "%s.%s: must be a string", path, k);
        if (!sl_is_qualified_key(k))
            return sl_error_set(err, EINVAL,
                                "%s: invalid key \"%s\" (an optional DNS prefix and '/', then "
                                "at most 63 letters, digits, '-', '_' or '.', starting and "
                                "ending with a letter or digit)",
                                path, k);
        const char *val = json_string_value(x);
        if (labels && *val && !sl_is_qualified_part(val, strlen(val)))
            return sl_error_set(err, EINVAL,
                                "%s.%s: invalid label value \"%.80s\" (at most 63 letters, "
                                "digits, '-', '_' or '.', starting and ending with a letter or "
                                "digit)",
                                path, k, val);
    }
    return 0;
}

int sl_check_string_map(json_t *v, const char *path, sl_error_t *err)
{
    return sl_check_keyed_map(v, path, false, err);
}

int sl_check_labels(json_t *v, const char *path, sl_error_t *err)
{
    return sl_check_keyed_map(v, path, true, err);
}

int sl_check_namespace(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || !sl_is_dns1123_label(s))
        return sl_error_set(err, EINVAL, "%s: must be a DNS-1123 label (at most 63 characters)",
                            path);
    return 0;
}

int sl_check_unsupported(json_t *v, const char *path, sl_error_t *err)
{
    return sl_error_set(err, ENOTSUP, "%s: not supported", path);
}

int sl_check_update_preconditions(const json_t *md, const json_t *cur, const char *resource,
                                  const char *name, sl_error_t *err)
{
    const json_t *v = json_object_get(md, "resourceVersion");
    int64_t n = 0;
    if (v && !json_is_null(v)) {
        const char *want = json_string_value(v);
        if (!want || (*want && sl_parse_int64(want, 0, INT64_MAX, &n) < 0)) {
            sl_error_set(err, EINVAL,
                         "metadata.resourceVersion: %s%.40s%s is not a resource version this "
                         "server gave (leave it out to replace the object whatever its version)",
                         want ? "\"" : "", want ? want : "a non-string value", want ? "\"" : "");
            return 400;
        }
    }
    const json_t *u = json_object_get(md, "uid");
    const char *uid = json_string_value(u);
    if (u && !json_is_null(u) && !uid) {
        sl_error_set(err, EINVAL, "metadata.uid: must be a string");
        return 400;
    }
    /* A uid names the object the write was meant for, as in Kubernetes: one
     * deleted and made again since is another object. With nothing stored
     * the write creates, and the new object gets its own uid. */
    if (uid && *uid && cur) {
        const char *have = sl_json_str(cur, "metadata.uid");
        if (!have || strcmp(uid, have)) {
            sl_error_set(err, ESTALE,
                         "Precondition failed: UID in precondition: %.80s, UID in object meta: %s",
                         uid, have ? have : "");
            return 409;
        }
    }
    if (n == 0)
        return 0;
    if (!cur) {
        sl_error_set(err, ENOENT, "%s \"%s\" not found", resource, name);
        return 404;
    }
    const char *have = sl_json_str(cur, "metadata.resourceVersion");
    int64_t h = -1;
    if (!have || sl_parse_int64(have, 0, INT64_MAX, &h) < 0 || h != n) {
        sl_error_set(err, ESTALE,
                     "Operation cannot be fulfilled on %s \"%s\": the object has been modified; "
                     "please apply your changes to the latest version and try again",
                     resource, name);
        return 409;
    }
    return 0;
}

const char *sl_precondition_reason(int code)
{
    return code == 409 ? "Conflict" : code == 404 ? "NotFound" : "BadRequest";
}

int sl_check_delete_preconditions(const json_t *pre, const json_t *cur, sl_error_t *err)
{
    if (!pre || json_is_null(pre))
        return 0;
    if (!json_is_object(pre)) {
        sl_error_set(err, EINVAL, "preconditions: must be an object");
        return 400;
    }
    static const struct {
        const char *key, *name;
    } fields[] = {{"uid", "UID"}, {"resourceVersion", "ResourceVersion"}};
    for (size_t i = 0; i < SL_ARRAY_LEN(fields); i++) {
        json_t *v = json_object_get(pre, fields[i].key);
        if (!v || json_is_null(v))
            continue;
        const char *want = json_string_value(v);
        if (!want) {
            sl_error_set(err, EINVAL, "preconditions.%s: must be a string", fields[i].key);
            return 400;
        }
        json_t *md = json_object_get(cur, "metadata");
        const char *have = json_string_value(json_object_get(md, fields[i].key));
        if (!have || strcmp(want, have)) {
            sl_error_set(err, ESTALE,
                         "Precondition failed: %s in precondition: %.80s, %s in object meta: %s",
                         fields[i].name, want, fields[i].name, have ? have : "");
            return 409;
        }
    }
    return 0;
}
