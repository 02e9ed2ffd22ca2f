/*
 * controller_data.c — Secret and ConfigMap objects (core v1) for the
 * controller: the API's list, get, put and delete, and what an instance
 * reads from them when it starts.
 *
 * As in Kubernetes, a revision names Secrets and ConfigMaps and each
 * container start reads them as they are then: a changed value reaches the
 * instances started after the change, and a revision that failed to start
 * because one was missing tries again at once when it is created.
 */
#include "controller_int.h"
#include "validate.h"

#include <errno.h>
#include <stdio.h>

static const char *MOD = "controller";

/* One start's reads: each object is read and decoded once, however many
 * references name it. */
typedef struct lookup_ctx {
    sl_controller_t *c;
    const char *ns;
    json_t *seen[2]; /* by kind: name -> values, or null when there is none */
} lookup_ctx_t;

static int lookup(void *data, sl_data_kind_t kind, const char *name, json_t **vals, sl_error_t *err)
{
    lookup_ctx_t *l = data;
    json_t *known = json_object_get(l->seen[kind], name);
    if (known) {
        *vals = json_is_null(known) ? NULL : json_incref(known);
        return *vals ? 0 : -ENOENT;
    }
    json_t *obj = NULL;
    int rc = sl_store_get(l->c->store, sl_data_resource(kind), l->ns, name, &obj, err);
    if (rc < 0 && rc != -ENOENT)
        return rc;
    *vals = obj ? sl_data_values(kind, obj) : NULL;
    json_decref(obj);
    json_object_set_new(l->seen[kind], name, *vals ? json_incref(*vals) : json_null());
    return *vals ? 0 : -ENOENT;
}

int ctl_resolve(rev_rt_t *r, sl_revision_process_t *out, sl_error_t *err)
{
    lookup_ctx_t l = {r->ctl, r->cfg->namespace_, {json_object(), json_object()}};
    int rc = sl_revision_resolve(r->cfg, lookup, &l, out, err);
    json_decref(l.seen[0]);
    json_decref(l.seen[1]);
    return rc;
}

/* ---- API -------------------------------------------------------------- */

static int fail(json_t **body, int code, const char *reason, const char *msg)
{
    *body = sl_status_json(code, reason, msg);
    return code;
}

static int not_found(sl_data_kind_t kind, const char *ns, const char *name, json_t **body)
{
    sl_autofree char *msg =
        xasprintf("%s \"%s\" not found in namespace %s", sl_data_singular(kind), name, ns);
    return fail(body, 404, "NotFound", msg);
}

int sl_controller_list_data(sl_controller_t *c, sl_data_kind_t kind, const char *ns, json_t **body)
{
    json_t *items = NULL;
    sl_error_t err = {0};
    if (sl_store_list(c->store, sl_data_resource(kind), ns, &items, &err) < 0)
        return fail(body, 500, "InternalError", err.msg);
    sl_autofree char *list_kind = xasprintf("%sList", sl_data_kind_name(kind));
    *body = json_pack("{s:s,s:s,s:{},s:o}", "apiVersion", "v1", "kind", list_kind, "metadata",
                      "items", items);
    return 200;
}

int sl_controller_get_data(sl_controller_t *c, sl_data_kind_t kind, const char *ns,
                           const char *name, json_t **body)
{
    sl_error_t err = {0};
    int rc = sl_store_get(c->store, sl_data_resource(kind), ns, name, body, &err);
    if (rc == -ENOENT)
        return not_found(kind, ns, name, body);
    if (rc < 0)
        return fail(body, 500, "InternalError", err.msg);
    return 200;
}

/* A changed object reaches the revisions that read it. One that failed
 * to start for want of it tries again now (one past its progress deadline
 * gets a new one, from now). The running instances of one that mounts it
 * get their volumes rewritten, as the kubelet refreshes them; their
 * environment stays as it was when they started. */
static void data_changed(sl_controller_t *c, sl_data_kind_t kind, const char *ns, const char *name)
{
    for (rev_rt_t *r = c->revs; r; r = r->all_next) {
        if (r->retired || strcmp(r->cfg->namespace_, ns) ||
            !sl_revision_reads(r->cfg, kind, name, false))
            continue;
        if (r->state == REV_FAILED && (!r->blocked || r->deadline_exceeded)) {
            if (r->deadline_exceeded) {
                r->deadline_exceeded = r->blocked = false;
                r->created_ns = sl_now_ns();
            }
            if (r->retry)
                uv_timer_stop(r->retry);
            r->backoff_due = true;
            ctl_rev_ensure(r);
        }
        if (!r->instances || !sl_revision_reads(r->cfg, kind, name, true))
            continue;
        sl_revision_process_t proc = {0};
        sl_error_t err = {0};
        if (ctl_resolve(r, &proc, &err) < 0)
            sl_warn(MOD, "revision %s keeps its volumes as they were: %s", r->name, err.msg);
        for (inst_rt_t *i = r->instances; i && !err.code; i = i->next)
            if (i->inst && !i->dying)
                sl_instance_refresh_volumes(i->inst, proc.volumes, proc.n_volumes);
        sl_revision_process_free(&proc);
    }
}

int sl_controller_put_data(sl_controller_t *c, sl_data_kind_t kind, const char *ns,
                           const char *name, json_t *obj, bool create, bool dry_run, json_t **body)
{
    sl_error_t err = {0};
    const char *oname = sl_json_str(obj, "metadata.name");
    const char *ons = sl_json_str(obj, "metadata.namespace");
    if (oname && strcmp(oname, name))
        return fail(body, 400, "BadRequest", "metadata.name: does not match the URL");
    if (ons && strcmp(ons, ns))
        return fail(body, 400, "BadRequest", "metadata.namespace: does not match the URL");
    if (!oname)
        json_object_set_new(sl_json_ensure_obj(obj, "metadata"), "name", json_string(name));
    if (sl_data_validate(kind, obj, ns, &err) < 0) {
        sl_autofree char *msg =
            xasprintf("%s \"%s\" is invalid: %s", sl_data_kind_name(kind), name, err.msg);
        return fail(body, 422, "Invalid", msg);
    }
    json_t *old = NULL;
    int rc = sl_store_get(c->store, sl_data_resource(kind), ns, name, &old, &err);
    if (rc < 0 && rc != -ENOENT)
        return fail(body, 500, "InternalError", err.msg);
    bool existed = rc == 0;
    if (existed && create) {
        json_decref(old);
        sl_autofree char *msg = xasprintf("%s \"%s\" already exists", sl_data_singular(kind), name);
        return fail(body, 409, "AlreadyExists", msg);
    }
    int pre = create ? 0
                     : sl_check_update_preconditions(json_object_get(obj, "metadata"), old,
                                                     sl_data_resource(kind), name, &err);
    if (pre) {
        json_decref(old);
        return fail(body, pre, sl_precondition_reason(pre), err.msg);
    }
    if (existed && sl_data_check_update(kind, old, obj, &err) < 0) {
        json_decref(old);
        sl_autofree char *msg =
            xasprintf("%s \"%s\" is invalid: %s", sl_data_kind_name(kind), name, err.msg);
        return fail(body, 422, "Invalid", msg);
    }
    ctl_stamp_written(obj, old);
    json_decref(old);
    if (!dry_run && sl_store_put(c->store, sl_data_resource(kind), ns, name, obj, &err) < 0)
        return fail(body, 500, "InternalError", err.msg);
    *body = json_incref(obj);
    if (dry_run)
        return existed ? 200 : 201;
    sl_info(MOD, "%s %s/%s %s", sl_data_singular(kind), ns, name, existed ? "updated" : "created");
    data_changed(c, kind, ns, name);
    /* As Kubernetes answers a PUT: 201 when it created the object. */
    return existed ? 200 : 201;
}

int sl_controller_delete_data(sl_controller_t *c, sl_data_kind_t kind, const char *ns,
                              const char *name, const json_t *pre, json_t **body)
{
    sl_error_t err = {0};
    if (pre) {
        json_t *cur = NULL;
        int rc = sl_store_get(c->store, sl_data_resource(kind), ns, name, &cur, &err);
        if (rc == -ENOENT)
            return not_found(kind, ns, name, body);
        if (rc < 0)
            return fail(body, 500, "InternalError", err.msg);
        int pst = sl_check_delete_preconditions(pre, cur, &err);
        json_decref(cur);
        if (pst)
            return fail(body, pst, sl_precondition_reason(pst), err.msg);
    }
    int rc = sl_store_del(c->store, sl_data_resource(kind), ns, name, &err);
    if (rc == -ENOENT)
        return not_found(kind, ns, name, body);
    if (rc < 0)
        return fail(body, 500, "InternalError", err.msg);
    sl_autofree char *msg = xasprintf("%s %s deleted", sl_data_singular(kind), name);
    *body = sl_status_json(200, "Deleted", msg);
    return 200;
}
