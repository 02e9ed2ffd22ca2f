/*
 * controller_rtc.c — runtime classes and node capacity for the controller.
 *
 * RuntimeClass objects (node.k8s.io/v1) live in the store beside the
 * built-in ones (default, sandboxed, runc), which cannot be replaced. A
 * revision resolves its runtimeClassName to a profile once, when it is
 * loaded. Every instance reserves its footprint — its resources plus the
 * class's overhead.podFixed — from the node's allocatable capacity before
 * it starts, and gives it back when it exits; an instance that does not fit
 * is not started and the revision says why, with the numbers.
 */
#include "controller_int.h"
#include "validate.h"

#include <errno.h>
#include <stdio.h>

/* An instance reserves its requests (its limits where it gives no
 * requests); one with neither requests nothing (Kubernetes' BestEffort):
 * only its class's overhead counts against capacity. */
#define DEFAULT_REQUEST_CPU_MILLIS 0
#define DEFAULT_REQUEST_MEMORY     0LL

int ctl_runtime_class_get(sl_controller_t *c, const char *name, sl_runtime_class_t **owned,
                          const sl_runtime_class_t **rc, sl_error_t *err)
{
    *owned = NULL;
    *rc = sl_runtimeclass_builtin(name);
    if (*rc)
        return 0;
    json_t *obj = NULL;
    if (sl_store_get(c->store, "runtimeclasses", "", name, &obj, NULL) < 0)
        return sl_error_set(err, ENOENT, "runtime class \"%s\" does not exist", name);
    int rcode = sl_runtimeclass_from_json(obj, owned, err);
    json_decref(obj);
    if (rcode < 0)
        return rcode;
    *rc = *owned;
    return 0;
}

int ctl_rev_resolve_class(rev_rt_t *r, sl_error_t *err)
{
    sl_controller_t *c = r->ctl;
    const char *name = r->cfg->runtime_class ? r->cfg->runtime_class : SL_RUNTIMECLASS_DEFAULT;
    sl_runtime_class_t *owned = NULL;
    const sl_runtime_class_t *rc = NULL;
    if (ctl_runtime_class_get(c, name, &owned, &rc, err) < 0)
        return -1;
    char *why = NULL;
    if (!sl_runtimeclass_available(rc, &why)) {
        sl_error_set(err, ENOTSUP, "runtime class \"%s\" is unavailable: %s", name,
                     why ? why : "handler not installed");
        free(why);
        sl_runtimeclass_free(owned);
        return -1;
    }
    r->profile = rc->profile;
    /* The default class follows `serve --runtime`. */
    if (!r->cfg->runtime_class)
        r->profile.runtime = NULL;
    r->class_name = xstrdup(name);
    sl_runtimeclass_free(owned);
    return 0;
}

void ctl_rev_footprint(const rev_rt_t *r, int64_t *cpu, int64_t *mem)
{
    int64_t want_cpu =
        r->cfg->cpu_request_millis ? r->cfg->cpu_request_millis : DEFAULT_REQUEST_CPU_MILLIS;
    int64_t want_mem = r->cfg->memory_request ? r->cfg->memory_request : DEFAULT_REQUEST_MEMORY;
    sl_capacity_footprint(want_cpu, want_mem, r->profile.overhead_cpu_millis,
                          r->profile.overhead_memory, cpu, mem);
}

int ctl_capacity_reserve(rev_rt_t *r, int64_t *cpu, int64_t *mem, sl_error_t *err)
{
    ctl_rev_footprint(r, cpu, mem);
    return sl_capacity_reserve(&r->ctl->capacity, *cpu, *mem, err);
}

int ctl_capacity_headroom(const rev_rt_t *r)
{
    int64_t cpu, mem;
    ctl_rev_footprint(r, &cpu, &mem);
    int64_t n = sl_capacity_max_fit(&r->ctl->capacity, cpu, mem);
    return n > 100000 ? 100000 : (int)n;
}

/* ---- API: RuntimeClass objects ---------------------------------------- */

static json_t *class_item(const sl_runtime_class_t *rc)
{
    json_t *obj = sl_runtimeclass_to_json(rc);
    json_object_set_new(obj, "status", sl_runtimeclass_status_json(rc));
    if (rc->builtin)
        json_object_set_new(sl_json_ensure_obj(obj, "metadata"), "labels",
                            json_pack("{s:s}", "sluice.dev/builtin", "true"));
    return obj;
}

/* A stored class as the API shows it: normalised, with the metadata the
 * user gave (labels, annotations) and the server's (uid, creationTimestamp,
 * resourceVersion for a PUT's precondition). */
static json_t *stored_item(const sl_runtime_class_t *rc, const json_t *stored)
{
    json_t *obj = class_item(rc);
    json_t *md = json_object_get(obj, "metadata");
    const json_t *smd = json_object_get(stored, "metadata");
    static const char *const keys[] = {"labels", "annotations", "uid", "creationTimestamp",
                                       "resourceVersion"};
    for (size_t i = 0; i < SL_ARRAY_LEN(keys); i++) {
        json_t *v = json_object_get(smd, keys[i]);
        if (v)
            json_object_set(md, keys[i], v);
    }
    return obj;
}

/* The stored class name's object in *obj: 0, or 404 or 500 with *body set. */
static int stored_get(sl_controller_t *c, const char *name, json_t **obj, json_t **body)
{
    sl_error_t err = {0};
    *obj = NULL;
    int st = sl_store_get(c->store, "runtimeclasses", "", name, obj, &err);
    if (st == -ENOENT) {
        sl_autofree char *msg = xasprintf("runtime class \"%s\" does not exist", name);
        *body = sl_status_json(404, "NotFound", msg);
        return 404;
    }
    if (st < 0) {
        json_decref(*obj);
        *obj = NULL;
        *body = sl_status_json(500, "InternalError", err.msg);
        return 500;
    }
    return 0;
}

int sl_controller_list_runtimeclasses(sl_controller_t *c, json_t **body)
{
    json_t *items = json_array();
    const sl_runtime_class_t *const *builtins = NULL;
    size_t n = sl_runtimeclass_builtins(&builtins);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, class_item(builtins[i]));
    json_t *stored = NULL;
    sl_error_t err = {0};
    if (sl_store_list(c->store, "runtimeclasses", "", &stored, &err) == 0) {
        size_t k;
        json_t *obj;
        json_array_foreach(stored, k, obj)
        {
            sl_runtime_class_t *rc = NULL;
            if (sl_runtimeclass_from_json(obj, &rc, &err) == 0) {
                json_array_append_new(items, stored_item(rc, obj));
                sl_runtimeclass_free(rc);
            }
        }
    }
    json_decref(stored);
    *body = json_pack("{s:s,s:s,s:{},s:o}", "apiVersion", SL_RUNTIMECLASS_API_VERSION, "kind",
                      "RuntimeClassList", "metadata", "items", items);
    return 200;
}

int sl_controller_get_runtimeclass(sl_controller_t *c, const char *name, json_t **body)
{
    const sl_runtime_class_t *builtin = sl_runtimeclass_builtin(name);
    if (builtin) {
        *body = class_item(builtin);
        return 200;
    }
    json_t *obj;
    int st = stored_get(c, name, &obj, body);
    if (st)
        return st;
    sl_runtime_class_t *rc = NULL;
    sl_error_t err = {0};
    if (sl_runtimeclass_from_json(obj, &rc, &err) < 0) {
        *body = sl_status_json(500, "InternalError", err.msg);
        st = 500;
    } else {
        *body = stored_item(rc, obj);
        st = 200;
    }
    sl_runtimeclass_free(rc);
    json_decref(obj);
    return st;
}

int sl_controller_put_runtimeclass(sl_controller_t *c, const char *name, json_t *obj, bool dry_run,
                                   json_t **body)
{
    sl_error_t err = {0};
    const char *oname = sl_json_str(obj, "metadata.name");
    if (oname && strcmp(oname, name)) {
        *body = sl_status_json(400, "BadRequest", "metadata.name: does not match the URL");
        return 400;
    }
    sl_runtime_class_t *rc = NULL; /* validated and parsed once */
    if (sl_runtimeclass_from_json(obj, &rc, &err) < 0) {
        *body = sl_status_json(400, "BadRequest", err.msg);
        return 400;
    }
    json_object_del(obj, "status");
    const sl_runtime_class_t *builtin = sl_runtimeclass_builtin(name);
    if (builtin) {
        /* Applying it back as listed (`runtimeclasses -o yaml`) changes
         * nothing and succeeds; anything else would replace it. */
        json_t *a = sl_runtimeclass_to_json(rc), *b = sl_runtimeclass_to_json(builtin);
        int st = 200;
        if (json_equal(a, b)) {
            *body = class_item(builtin);
        } else {
            sl_autofree char *msg =
                xasprintf("runtime class \"%s\" is built in and cannot be replaced", name);
            *body = sl_status_json(409, "Conflict", msg);
            st = 409;
        }
        json_decref(a);
        json_decref(b);
        sl_runtimeclass_free(rc);
        return st;
    }
    json_t *was = NULL;
    int st = sl_store_get(c->store, "runtimeclasses", "", name, &was, &err);
    if (st < 0 && st != -ENOENT) {
        *body = sl_status_json(500, "InternalError", err.msg);
        st = 500;
        goto out;
    }
    st = sl_check_update_preconditions(json_object_get(obj, "metadata"), was,
                                       "runtimeclasses.node.k8s.io", name, &err);
    if (st) {
        *body = sl_status_json(st, sl_precondition_reason(st), err.msg);
        goto out;
    }
    /* As Kubernetes has it: revisions resolved the class when they were
     * loaded, and a handler changed under them would take effect at the
     * daemon's next start. */
    const char *old_handler = was ? sl_json_str(was, "handler") : NULL;
    if (old_handler && strcmp(old_handler, rc->handler)) {
        sl_autofree char *msg = xasprintf(
            "RuntimeClass.node.k8s.io \"%s\" is invalid: handler: Invalid value: \"%s\": field "
            "is immutable (it is \"%s\"; delete the class and create it again)",
            name, rc->handler, old_handler);
        *body = sl_status_json(422, "Invalid", msg);
        st = 422;
        goto out;
    }
    ctl_stamp_written(obj, was);
    if (!dry_run && sl_store_put(c->store, "runtimeclasses", "", name, obj, &err) < 0) {
        *body = sl_status_json(500, "InternalError", err.msg);
        st = 500;
        goto out;
    }
    *body = stored_item(rc, obj);
    /* As Kubernetes answers a PUT: 201 when it created the object. */
    st = was ? 200 : 201;
out:
    json_decref(was);
    sl_runtimeclass_free(rc);
    return st;
}

int sl_controller_delete_runtimeclass(sl_controller_t *c, const char *name, const json_t *pre,
                                      json_t **body)
{
    sl_error_t err = {0};
    if (sl_runtimeclass_builtin(name)) {
        sl_autofree char *msg = xasprintf("runtime class \"%s\" is built in", name);
        *body = sl_status_json(409, "Conflict", msg);
        return 409;
    }
    if (pre) {
        json_t *cur;
        int st = stored_get(c, name, &cur, body);
        if (st)
            return st;
        st = sl_check_delete_preconditions(pre, cur, &err);
        json_decref(cur);
        if (st) {
            *body = sl_status_json(st, sl_precondition_reason(st), err.msg);
            return st;
        }
    }
    for (rev_rt_t *r = c->revs; r; r = r->all_next) {
        if (!r->retired && r->class_name && !strcmp(r->class_name, name)) {
            sl_autofree char *msg =
                xasprintf("runtime class \"%s\" is used by revision %s", name, r->name);
            *body = sl_status_json(409, "Conflict", msg);
            return 409;
        }
    }
    if (sl_store_del(c->store, "runtimeclasses", "", name, &err) < 0) {
        *body = sl_status_json(404, "NotFound", err.msg);
        return 404;
    }
    sl_autofree char *msg = xasprintf("runtime class %s deleted", name);
    *body = sl_status_json(200, "Deleted", msg);
    return 200;
}

int ctl_check_runtime_class(sl_controller_t *c, const char *name, sl_error_t *err)
{
    sl_runtime_class_t *owned = NULL;
    const sl_runtime_class_t *rc = NULL;
    if (ctl_runtime_class_get(c, name, &owned, &rc, err) < 0)
        return sl_error_wrap(err, "spec.template.spec.runtimeClassName");
    char *why = NULL;
    bool ok = sl_runtimeclass_available(rc, &why);
    if (!ok)
        sl_error_set(err, ENOTSUP,
                     "spec.template.spec.runtimeClassName: runtime class \"%s\" is unavailable: %s",
                     name, why ? why : "handler not installed");
    free(why);
    sl_runtimeclass_free(owned);
    return ok ? 0 : -1;
}
