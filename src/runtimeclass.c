/*
 * runtimeclass.c — RuntimeClass validation, the built-in classes, handler
 * availability and the runtime profile of a class. See runtimeclass.h.
 */
#include "runtimeclass.h"
#include "service.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#define NAME_MAX_LEN      253
#define LABEL_KEY_MAX     317 /* prefix (253) + "/" + name (63) */
#define LABEL_VALUE_MAX   63
#define MAX_TOLERATIONS   64
#define MAX_NODE_SELECTOR 64

/* ---- handlers --------------------------------------------------------- */

typedef struct handler_def {
    const char *handler, *runtime;
    bool sandboxed;
} handler_def_t;

static const handler_def_t handlers[] = {
    {"crun", "crun", false},
    {"runc", "runc", false},
    {"crun-sandboxed", "crun", true},
    {"runc-sandboxed", "runc", true},
};

bool sl_runtime_profile_for_handler(const char *handler, sl_runtime_profile_t *out)
{
    if (!handler || !sl_is_dns1123_label(handler))
        return false;
    memset(out, 0, sizeof(*out));
    out->runtime = handler; /* an unknown handler is its own binary */
    out->seccomp = SL_SECCOMP_DEFAULT;
    for (size_t i = 0; i < SL_ARRAY_LEN(handlers); i++) {
        if (strcmp(handlers[i].handler, handler) != 0)
            continue;
        out->runtime = handlers[i].runtime;
        if (handlers[i].sandboxed) {
            out->seccomp = SL_SECCOMP_SANDBOXED;
            out->userns = out->readonly_rootfs = out->no_capabilities = true;
            out->pids_limit = SL_SANDBOX_PIDS_LIMIT;
        }
    }
    return true;
}

/* ---- built-ins -------------------------------------------------------- */

static sl_runtime_class_t builtin_classes[3];
static const sl_runtime_class_t *builtin_ptrs[3];

static void builtins_init(void)
{
    static bool done;
    if (done)
        return;
    static const char *const names[] = {"default", "sandboxed", "runc"};
    static const char *const hs[] = {"crun", "crun-sandboxed", "runc"};
    for (size_t i = 0; i < SL_ARRAY_LEN(names); i++) {
        sl_runtime_class_t *c = &builtin_classes[i];
        c->name = (char *)names[i];
        c->handler = (char *)hs[i];
        c->builtin = true;
        sl_runtime_profile_for_handler(hs[i], &c->profile);
        builtin_ptrs[i] = c;
    }
    done = true;
}

size_t sl_runtimeclass_builtins(const sl_runtime_class_t *const **out)
{
    builtins_init();
    *out = builtin_ptrs;
    return SL_ARRAY_LEN(builtin_ptrs);
}

const sl_runtime_class_t *sl_runtimeclass_builtin(const char *name)
{
    builtins_init();
    for (size_t i = 0; name && i < SL_ARRAY_LEN(builtin_ptrs); i++)
        if (strcmp(builtin_ptrs[i]->name, name) == 0)
            return builtin_ptrs[i];
    return NULL;
}

json_t *sl_runtimeclass_builtin_json(const char *name)
{
    const sl_runtime_class_t *c = sl_runtimeclass_builtin(name);
    if (!c)
        return NULL;
    json_t *j = sl_runtimeclass_to_json(c);
    json_object_set_new(json_object_get(j, "metadata"), "annotations",
                        json_pack("{s:s}", "sluice.dev/builtin", "true"));
    return j;
}

/* ---- validation ------------------------------------------------------- */

static int check_only_keys(const json_t *obj, const char *path, const char *const *allowed,
                           sl_error_t *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(allowed[i], k) == 0;
        if (!ok)
            return sl_error_set(err, EINVAL, "%s%s%s: unknown field", path, *path ? "." : "", k);
    }
    return 0;
}

static int check_string_map(const json_t *m, const char *path, size_t max_entries, sl_error_t *err)
{
    if (!json_is_object(m))
        return sl_error_set(err, EINVAL, "%s: must be an object of strings", path);
    if (json_object_size(m) > max_entries)
        return sl_error_set(err, EINVAL, "%s: at most %zu entries", path, max_entries);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)m, k, v)
    {
        if (!*k || strlen(k) > LABEL_KEY_MAX)
            return sl_error_set(err, EINVAL, "%s: key '%s' must be 1..%d characters", path, k,
                                LABEL_KEY_MAX);
        if (!json_is_string(v))
            return sl_error_set(err, EINVAL, "%s.%s: must be a string", path, k);
    }
    return 0;
}

static int check_metadata(json_t *md, sl_error_t *err)
{
    if (!json_is_object(md))
        return sl_error_set(err, EINVAL, "metadata: must be an object");
    static const char *const server_set[] = {
        "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"};
    for (size_t i = 0; i < SL_ARRAY_LEN(server_set); i++)
        json_object_del(md, server_set[i]);
    static const char *const allowed[] = {"name", "labels", "annotations", "namespace", NULL};
    if (check_only_keys(md, "metadata", allowed, err) < 0)
        return -err->code;
    if (json_object_get(md, "namespace"))
        return sl_error_set(err, EINVAL,
                            "metadata.namespace: RuntimeClass is cluster-scoped; remove it");
    const char *name = json_string_value(json_object_get(md, "name"));
    if (!name)
        return sl_error_set(err, EINVAL, "metadata.name: required");
    if (strlen(name) > NAME_MAX_LEN || !sl_is_valid_domain(name))
        return sl_error_set(err, EINVAL,
                            "metadata.name: must be a DNS-1123 subdomain (lowercase letters, "
                            "digits, '-' and '.'), got '%s'",
                            name);
    json_t *v;
    if ((v = json_object_get(md, "labels")) && check_string_map(v, "metadata.labels", 256, err) < 0)
        return -err->code;
    if ((v = json_object_get(md, "annotations")) &&
        check_string_map(v, "metadata.annotations", 256, err) < 0)
        return -err->code;
    return 0;
}

static int check_overhead(const json_t *o, int64_t *cpu, int64_t *mem, sl_error_t *err)
{
    *cpu = *mem = 0;
    if (!json_is_object(o))
        return sl_error_set(err, EINVAL, "overhead: must be an object with podFixed");
    static const char *const allowed[] = {"podFixed", NULL};
    if (check_only_keys(o, "overhead", allowed, err) < 0)
        return -err->code;
    const json_t *pf = json_object_get(o, "podFixed");
    if (!pf)
        return 0;
    if (!json_is_object(pf))
        return sl_error_set(err, EINVAL, "overhead.podFixed: must be an object {cpu, memory}");
    static const char *const res[] = {"cpu", "memory", NULL};
    if (check_only_keys(pf, "overhead.podFixed", res, err) < 0)
        return sl_error_wrap(err, "only cpu and memory are supported");
    json_t *v;
    if ((v = json_object_get(pf, "cpu")) && sl_json_quantity(v, true, cpu) < 0)
        return sl_error_set(err, EINVAL,
                            "overhead.podFixed.cpu: must be a quantity like \"100m\" or \"0.5\"");
    if ((v = json_object_get(pf, "memory")) && sl_json_quantity(v, false, mem) < 0)
        return sl_error_set(err, EINVAL,
                            "overhead.podFixed.memory: must be a quantity like \"64Mi\"");
    return 0;
}

static int check_toleration(const json_t *t, size_t i, sl_error_t *err)
{
    char path[64];
    snprintf(path, sizeof(path), "scheduling.tolerations[%zu]", i);
    if (!json_is_object(t))
        return sl_error_set(err, EINVAL, "%s: must be an object", path);
    static const char *const allowed[] = {"key",    "operator",          "value",
                                          "effect", "tolerationSeconds", NULL};
    if (check_only_keys(t, path, allowed, err) < 0)
        return -err->code;
    static const char *const fields[] = {"key", "operator", "value", "effect"};
    for (size_t f = 0; f < SL_ARRAY_LEN(fields); f++) {
        json_t *v = json_object_get(t, fields[f]);
        if (v && !json_is_string(v))
            return sl_error_set(err, EINVAL, "%s.%s: must be a string", path, fields[f]);
    }
    const char *op = json_string_value(json_object_get(t, "operator"));
    const char *eff = json_string_value(json_object_get(t, "effect"));
    const char *key = json_string_value(json_object_get(t, "key"));
    const char *val = json_string_value(json_object_get(t, "value"));
    if (op && strcmp(op, "Exists") != 0 && strcmp(op, "Equal") != 0)
        return sl_error_set(err, EINVAL, "%s.operator: must be Exists or Equal, got '%s'", path,
                            op);
    if (op && strcmp(op, "Exists") == 0 && val && *val)
        return sl_error_set(err, EINVAL, "%s.value: must be empty when operator is Exists", path);
    if ((!key || !*key) && !(op && strcmp(op, "Exists") == 0))
        return sl_error_set(err, EINVAL, "%s.operator: must be Exists when key is empty", path);
    if (key && strlen(key) > LABEL_KEY_MAX)
        return sl_error_set(err, EINVAL, "%s.key: at most %d characters", path, LABEL_KEY_MAX);
    if (val && strlen(val) > LABEL_VALUE_MAX)
        return sl_error_set(err, EINVAL, "%s.value: at most %d characters", path, LABEL_VALUE_MAX);
    if (eff && *eff && strcmp(eff, "NoSchedule") != 0 && strcmp(eff, "PreferNoSchedule") != 0 &&
        strcmp(eff, "NoExecute") != 0)
        return sl_error_set(err, EINVAL,
                            "%s.effect: must be NoSchedule, PreferNoSchedule or NoExecute, got "
                            "'%s'",
                            path, eff);
    json_t *ts = json_object_get(t, "tolerationSeconds");
    if (ts && !json_is_integer(ts))
        return sl_error_set(err, EINVAL, "%s.tolerationSeconds: must be an integer", path);
    if (ts && !(eff && strcmp(eff, "NoExecute") == 0))
        return sl_error_set(err, EINVAL, "%s.tolerationSeconds: only allowed with effect NoExecute",
                            path);
    return 0;
}

static int check_scheduling(const json_t *s, sl_error_t *err)
{
    if (!json_is_object(s))
        return sl_error_set(err, EINVAL, "scheduling: must be an object");
    static const char *const allowed[] = {"nodeSelector", "tolerations", NULL};
    if (check_only_keys(s, "scheduling", allowed, err) < 0)
        return -err->code;
    json_t *ns = json_object_get(s, "nodeSelector");
    if (ns && check_string_map(ns, "scheduling.nodeSelector", MAX_NODE_SELECTOR, err) < 0)
        return -err->code;
    const char *k;
    json_t *v;
    json_object_foreach(ns, k, v)
    {
        if (strlen(json_string_value(v)) > LABEL_VALUE_MAX)
            return sl_error_set(err, EINVAL, "scheduling.nodeSelector.%s: at most %d characters", k,
                                LABEL_VALUE_MAX);
    }
    json_t *tol = json_object_get(s, "tolerations");
    if (!tol)
        return 0;
    if (!json_is_array(tol))
        return sl_error_set(err, EINVAL, "scheduling.tolerations: must be a list");
    if (json_array_size(tol) > MAX_TOLERATIONS)
        return sl_error_set(err, EINVAL, "scheduling.tolerations: at most %d entries",
                            MAX_TOLERATIONS);
    size_t i;
    json_array_foreach(tol, i, v)
    {
        if (check_toleration(v, i, err) < 0)
            return -err->code;
    }
    return 0;
}

int sl_runtimeclass_validate(json_t *obj, sl_error_t *err)
{
    if (!json_is_object(obj))
        return sl_error_set(err, EINVAL, "RuntimeClass: must be an object");
    json_object_del(obj, "status");
    static const char *const allowed[] = {"apiVersion", "kind",       "metadata", "handler",
                                          "overhead",   "scheduling", NULL};
    if (check_only_keys(obj, "", allowed, err) < 0)
        return -err->code;
    const char *av = json_string_value(json_object_get(obj, "apiVersion"));
    if (!av || strcmp(av, SL_RUNTIMECLASS_API_VERSION) != 0)
        return sl_error_set(err, EINVAL, "apiVersion: must be %s, got '%s'",
                            SL_RUNTIMECLASS_API_VERSION, av ? av : "");
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    if (!kind || strcmp(kind, SL_RUNTIMECLASS_KIND) != 0)
        return sl_error_set(err, EINVAL, "kind: must be RuntimeClass, got '%s'", kind ? kind : "");
    if (check_metadata(json_object_get(obj, "metadata"), err) < 0)
        return -err->code;
    json_t *h = json_object_get(obj, "handler");
    if (!h)
        return sl_error_set(err, EINVAL, "handler: required");
    if (!json_is_string(h) || !sl_is_dns1123_label(json_string_value(h)))
        return sl_error_set(err, EINVAL,
                            "handler: must be a DNS-1123 label (lowercase letters, digits and "
                            "'-', at most 63), got %s",
                            json_is_string(h) ? json_string_value(h) : "a non-string");
    int64_t cpu, mem;
    json_t *v;
    if ((v = json_object_get(obj, "overhead")) && check_overhead(v, &cpu, &mem, err) < 0)
        return -err->code;
    if ((v = json_object_get(obj, "scheduling")) && check_scheduling(v, err) < 0)
        return -err->code;
    return 0;
}

/* ---- objects ---------------------------------------------------------- */

int sl_runtimeclass_from_json(const json_t *obj, sl_runtime_class_t **out, sl_error_t *err)
{
    *out = NULL;
    json_t *copy = json_deep_copy(obj);
    if (!copy)
        return sl_error_set(err, EINVAL, "RuntimeClass: must be an object");
    if (sl_runtimeclass_validate(copy, err) < 0) {
        json_decref(copy);
        return -err->code;
    }
    sl_runtime_class_t *rc = xcalloc(1, sizeof(*rc));
    rc->name = xstrdup(sl_json_str(copy, "metadata.name"));
    rc->handler = xstrdup(json_string_value(json_object_get(copy, "handler")));
    json_t *o = json_object_get(copy, "overhead");
    if (o)
        check_overhead(o, &rc->overhead_cpu_millis, &rc->overhead_memory, err);
    json_t *s = json_object_get(copy, "scheduling");
    rc->scheduling = s ? json_incref(s) : NULL;
    /* an unknown handler's runtime points at rc->handler: lives as long */
    sl_runtime_profile_for_handler(rc->handler, &rc->profile);
    rc->profile.overhead_cpu_millis = rc->overhead_cpu_millis;
    rc->profile.overhead_memory = rc->overhead_memory;
    json_decref(copy);
    *out = rc;
    return 0;
}

static json_t *format_cpu(int64_t m)
{
    return m % 1000 == 0 ? json_sprintf("%lld", (long long)(m / 1000))
                         : json_sprintf("%lldm", (long long)m);
}

static json_t *format_memory(int64_t b)
{
    static const struct {
        const char *sfx;
        int64_t mul;
    } u[] = {{"Gi", 1LL << 30}, {"Mi", 1LL << 20}, {"Ki", 1LL << 10}};
    for (size_t i = 0; i < SL_ARRAY_LEN(u); i++)
        if (b >= u[i].mul && b % u[i].mul == 0)
            return json_sprintf("%lld%s", (long long)(b / u[i].mul), u[i].sfx);
    return json_sprintf("%lld", (long long)b);
}

json_t *sl_runtimeclass_to_json(const sl_runtime_class_t *rc)
{
    json_t *j =
        json_pack("{s:s,s:s,s:{s:s},s:s}", "apiVersion", SL_RUNTIMECLASS_API_VERSION, "kind",
                  SL_RUNTIMECLASS_KIND, "metadata", "name", rc->name, "handler", rc->handler);
    if (rc->overhead_cpu_millis > 0 || rc->overhead_memory > 0) {
        json_t *pf = json_object();
        if (rc->overhead_cpu_millis > 0)
            json_object_set_new(pf, "cpu", format_cpu(rc->overhead_cpu_millis));
        if (rc->overhead_memory > 0)
            json_object_set_new(pf, "memory", format_memory(rc->overhead_memory));
        json_object_set_new(j, "overhead", json_pack("{s:o}", "podFixed", pf));
    }
    if (rc->scheduling)
        json_object_set_new(j, "scheduling", json_deep_copy(rc->scheduling));
    return j;
}

void sl_runtimeclass_free(sl_runtime_class_t *rc)
{
    if (!rc || rc->builtin)
        return;
    free(rc->name);
    free(rc->handler);
    json_decref(rc->scheduling);
    free(rc);
}

/* ---- availability ----------------------------------------------------- */

static bool on_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    sl_autofree char *copy = xstrdup(path);
    char *save = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        sl_autofree char *full = xasprintf("%s/%s", *dir ? dir : ".", name);
        struct stat st;
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0)
            return true;
    }
    return false;
}

bool sl_runtimeclass_available(const sl_runtime_class_t *rc, char **reason)
{
    if (reason)
        *reason = NULL;
    const char *bin = rc->profile.runtime ? rc->profile.runtime : rc->handler;
    if (!on_path(bin)) {
        if (reason)
            *reason =
                xasprintf("handler %s: runtime binary '%s' not found on PATH", rc->handler, bin);
        return false;
    }
    /* runc mounts the root from inside the user namespace, as the
     * sandbox's mapped root, which cannot search the 0700 state directory
     * on the way to the bundle; crun mounts it before. */
    if (rc->profile.userns && !strcmp(bin, "runc")) {
        if (reason)
            *reason = xasprintf("handler %s: runc mounts the root inside the user namespace, "
                                "where the state directory (0700) cannot be searched; use "
                                "crun-sandboxed",
                                rc->handler);
        return false;
    }
    return true;
}

json_t *sl_runtimeclass_status_json(const sl_runtime_class_t *rc)
{
    sl_autofree char *reason = NULL;
    bool ok = sl_runtimeclass_available(rc, &reason);
    json_t *st = json_pack("{s:b,s:s,s:I}", "available", ok, "seccompProfile",
                           sl_seccomp_profile_name(rc->profile.seccomp), "syscalls",
                           (json_int_t)sl_seccomp_profile_count(rc->profile.seccomp));
    if (reason)
        json_object_set_new(st, "reason", json_string(reason));
    return st;
}
