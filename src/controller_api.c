/*
 * controller_api.c — the controller's side of the API: applying Service
 * manifests (validate, import the image on the thread pool, cut a revision,
 * store everything in one transaction, then start it), dry runs of them,
 * reads, lists and deletes. A failed apply stores nothing and leaves running
 * revisions as they were.
 */
#include "controller_int.h"
#include "validate.h"

#include <errno.h>
#include <stdio.h>

static const char *MOD = "api";

typedef struct apply_req {
    uv_work_t work;
    sl_controller_t *c;
    json_t *svc;
    char *ns, *name, *ref;
    bool create_only;
    sl_image_t *image;
    sl_error_t err;
    int rc;
    sl_controller_cb cb;
    void *data;
    struct apply_req *next;
} apply_req_t;

static apply_req_t *pending;

static int check_traffic_names(sl_controller_t *c, const json_t *svc, const char *new_rev,
                               sl_error_t *err);

static void reply(sl_controller_cb cb, void *data, int code, const char *reason, const char *msg)
{
    cb(code, sl_status_json(code, reason, msg), data);
}

bool ctl_apply_pending(const char *ns, const char *name)
{
    for (apply_req_t *a = pending; a; a = a->next)
        if (a->ns && !strcmp(a->ns, ns) && !strcmp(a->name, name))
            return true;
    return false;
}

static void apply_req_free(apply_req_t *a)
{
    for (apply_req_t **pp = &pending; *pp; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    }
    json_decref(a->svc);
    sl_image_free(a->image);
    free(a->ns);
    free(a->name);
    free(a->ref);
    free(a);
}

static void import_work(uv_work_t *w)
{
    apply_req_t *a = w->data;
    sl_image_limits_t lim = {.root = a->c->image_root};
    a->rc = sl_image_import(a->c->state_dir, a->ref, &lim, &a->image, &a->err);
}

static int store_image(sl_controller_t *c, const sl_image_t *img, sl_error_t *err)
{
    json_t *j = sl_image_to_json(img);
    const char *hex = strncmp(img->id, "sha256:", 7) == 0 ? img->id + 7 : img->id;
    int rc = sl_store_put(c->store, "images", "", hex, j, err);
    json_decref(j);
    return rc;
}

/* The NN of "NAME-000NN", or 0 when rev is not named so. */
static size_t revision_number(const char *rev, const char *name)
{
    size_t nl = strlen(name);
    if (!rev || strncmp(rev, name, nl) != 0 || rev[nl] != '-')
        return 0;
    int64_t v;
    const char *digits = rev + nl + 1;
    if (strlen(digits) < 5 || sl_parse_int64(digits, 1, INT32_MAX, &v) < 0)
        return 0;
    return (size_t)v;
}

/* Pick NAME-000NN: one past the service's latest created revision when
 * that was so named (one lookup per deploy), else one past its revision
 * count (a scan of the namespace's revisions); skipping names that exist. */
static char *next_revision_name(sl_controller_t *c, const char *ns, const char *name,
                                const json_t *old)
{
    sl_error_t err = {0};
    size_t n =
        old ? revision_number(sl_json_str(old, "status.latestCreatedRevisionName"), name) : 0;
    json_t *list = NULL;
    if (n == 0 && sl_store_list(c->store, "revisions", ns, &list, &err) == 0) {
        size_t i;
        json_t *r;
        json_array_foreach(list, i, r)
        {
            json_t *labels = sl_json_path(r, "metadata.labels");
            const char *svc = json_string_value(json_object_get(labels, SL_LABEL_SERVICE));
            if (svc && !strcmp(svc, name))
                n++;
        }
    }
    json_decref(list);
    for (;;) {
        char *rev = xasprintf("%s-%05zu", name, ++n);
        json_t *exists = NULL;
        if (sl_store_get(c->store, "revisions", ns, rev, &exists, &err) < 0)
            return rev;
        json_decref(exists);
        free(rev);
    }
}

static long next_generation(const json_t *old)
{
    json_t *g = old ? sl_json_path(old, "metadata.generation") : NULL;
    return (g ? (long)json_integer_value(g) : 0) + 1;
}

/* metadata.creationTimestamp and uid, old's when given. */
static void stamp_metadata(json_t *obj, const json_t *old)
{
    json_t *md = sl_json_ensure_obj(obj, "metadata");
    const char *created = old ? sl_json_str(old, "metadata.creationTimestamp") : NULL;
    json_object_set_new(md, "creationTimestamp", json_string(created ? created : sl_rfc3339_now()));
    const char *uid = old ? sl_json_str(old, "metadata.uid") : NULL;
    if (uid) {
        json_object_set_new(md, "uid", json_string(uid));
    } else {
        unsigned char b[16];
        sl_random_bytes(b, sizeof(b));
        json_object_set_new(md, "uid",
                            json_sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x"
                                         "%02x%02x%02x",
                                         b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
                                         b[10], b[11], b[12], b[13], b[14], b[15]));
    }
}

void ctl_stamp_written(json_t *obj, const json_t *old)
{
    json_t *md = sl_json_ensure_obj(obj, "metadata");
    static const char *const server_set[] = {"resourceVersion", "generation", "managedFields",
                                             "selfLink"};
    for (size_t i = 0; i < SL_ARRAY_LEN(server_set); i++)
        json_object_del(md, server_set[i]);
    stamp_metadata(obj, old);
}

static void carry_metadata(json_t *svc, const json_t *old, long generation)
{
    json_object_set_new(json_object_get(svc, "metadata"), "generation", json_integer(generation));
    stamp_metadata(svc, old);
    json_t *old_status = old ? json_object_get(old, "status") : NULL;
    if (old_status)
        json_object_set_new(svc, "status", json_deep_copy(old_status));
}

/* Store the new revision, image and service in one transaction. */
static int commit_revision(apply_req_t *a, const json_t *old, json_t **rev_out, sl_error_t *err)
{
    sl_controller_t *c = a->c;
    const char *tname = sl_json_str(a->svc, "spec.template.metadata.name");
    sl_autofree char *rev_name =
        tname ? xstrdup(tname) : next_revision_name(c, a->ns, a->name, old);
    long gen = next_generation(old);
    carry_metadata(a->svc, old, gen);
    json_t *rev = sl_revision_build(a->svc, rev_name, gen);
    json_t *rst = sl_json_ensure_obj(rev, "status");
    json_object_set_new(rst, "imageDigest", json_string(a->image->id));
    json_object_set_new(sl_json_ensure_obj(a->svc, "status"), "latestCreatedRevisionName",
                        json_string(rev_name));
    if (sl_store_txn_begin(c->store, err) < 0) {
        json_decref(rev);
        return -1;
    }
    /* The name was free when the apply was checked; another service's
     * revision may have taken it while the image was imported (a-b's
     * a-b-00001 and a's chosen "a-b-00001"). Checked again here, in the
     * transaction, a revision is never written over. */
    json_t *taken = NULL;
    sl_error_t gerr = {0};
    if (sl_store_get(c->store, "revisions", a->ns, rev_name, &taken, &gerr) == 0) {
        json_decref(taken);
        sl_store_txn_rollback(c->store);
        json_decref(rev);
        return sl_error_set(err, EEXIST,
                            "revision \"%s\" was created meanwhile; choose another "
                            "spec.template.metadata.name",
                            rev_name);
    }
    if (store_image(c, a->image, err) < 0 ||
        sl_store_put(c->store, "revisions", a->ns, rev_name, rev, err) < 0 ||
        sl_store_put(c->store, "services", a->ns, a->name, a->svc, err) < 0 ||
        sl_store_txn_commit(c->store, err) < 0) {
        sl_store_txn_rollback(c->store);
        json_decref(rev);
        return -1;
    }
    *rev_out = rev;
    return 0;
}

static void start_revision(apply_req_t *a, json_t *rev)
{
    sl_controller_t *c = a->c;
    svc_rt_t *s = ctl_svc_find(c, a->ns, a->name);
    if (!s) {
        s = ctl_svc_new(c, a->svc);
    } else {
        json_decref(s->obj);
        s->obj = json_incref(a->svc);
        ctl_svc_set_traffic(s, NULL);
    }
    sl_error_t err = {0};
    rev_rt_t *r = ctl_rev_new(c, s, rev, &err);
    if (!r) {
        sl_err(MOD, "service %s/%s: %s", a->ns, a->name, err.msg);
        return;
    }
    ctl_svc_set_latest(s, r);
    ctl_svc_changed(s);
}

static void apply_after(uv_work_t *w, int status)
{
    apply_req_t *a = w->data;
    sl_controller_t *c = a->c;
    if (a->rc < 0) {
        sl_autofree char *msg = xasprintf("spec.template.spec.containers[0].image: %s", a->err.msg);
        reply(a->cb, a->data, 400, "ImageImportFailed", msg);
        apply_req_free(a);
        return;
    }
    json_t *old = NULL;
    sl_error_t err = {0};
    if (sl_store_get(c->store, "services", a->ns, a->name, &old, &err) < 0)
        old = NULL;
    json_t *rev = NULL;
    if (commit_revision(a, old, &rev, &err) < 0) {
        json_decref(old);
        bool taken = err.code == EEXIST;
        reply(a->cb, a->data, taken ? 409 : 500, taken ? "AlreadyExists" : "InternalError",
              err.msg);
        apply_req_free(a);
        return;
    }
    start_revision(a, rev);
    json_decref(rev);
    svc_rt_t *s = ctl_svc_find(c, a->ns, a->name);
    sl_info(MOD, "service %s/%s: %s revision %s", a->ns, a->name, old ? "updated," : "created,",
            sl_json_str(a->svc, "status.latestCreatedRevisionName"));
    a->cb(old ? 200 : 201, json_deep_copy(s ? s->obj : a->svc), a->data);
    json_decref(old);
    apply_req_free(a);
}

static void import_after(uv_work_t *w, int status)
{
    apply_req_t *a = w->data;
    sl_error_t err = {0};
    if (a->rc < 0) {
        reply(a->cb, a->data, 400, "ImageImportFailed", a->err.msg);
    } else if (store_image(a->c, a->image, &err) < 0) {
        reply(a->cb, a->data, 500, "InternalError", err.msg);
    } else {
        a->cb(200, sl_image_to_json(a->image), a->data);
    }
    apply_req_free(a);
}

/* The generation svc gets replacing old (NULL: none): the next one when
 * the spec changes. */
static long apply_generation(const json_t *old, const json_t *svc)
{
    if (!old)
        return next_generation(NULL);
    sl_autofree char *a = json_dumps(json_object_get(svc, "spec"), JSON_SORT_KEYS | JSON_COMPACT);
    sl_autofree char *b = json_dumps(json_object_get(old, "spec"), JSON_SORT_KEYS | JSON_COMPACT);
    if (strcmp(a, b) != 0)
        return next_generation(old);
    return (long)json_integer_value(sl_json_path(old, "metadata.generation"));
}

/* Same template as what is stored: only service-level fields change. */
static void apply_without_revision(sl_controller_t *c, svc_rt_t *s, json_t *svc,
                                   sl_controller_cb cb, void *data)
{
    carry_metadata(svc, s->obj, apply_generation(s->obj, svc));
    sl_error_t err = {0};
    if (sl_store_put(c->store, "services", s->ns, s->name, svc, &err) < 0) {
        reply(cb, data, 500, "InternalError", err.msg);
        return;
    }
    json_decref(s->obj);
    s->obj = json_incref(svc);
    ctl_svc_set_traffic(s, NULL);
    ctl_svc_reconcile(s);
    ctl_svc_update_status(s);
    cb(200, json_deep_copy(s->obj), data);
}

/* A dry run's answer: the object as the apply would store it (server-set
 * metadata filled in, the current status kept), 201 for a new service.
 * Takes svc. */
static void dry_run_reply(sl_controller_t *c, json_t *svc, sl_controller_cb cb, void *data)
{
    svc_rt_t *s =
        ctl_svc_find(c, sl_json_str(svc, "metadata.namespace"), sl_json_str(svc, "metadata.name"));
    json_t *old = s ? s->obj : NULL;
    carry_metadata(svc, old, apply_generation(old, svc));
    cb(old ? 200 : 201, svc, data);
}

static void check_ref_work(uv_work_t *w)
{
    apply_req_t *a = w->data;
    sl_image_limits_t lim = {.root = a->c->image_root};
    a->rc = sl_image_check_ref(a->ref, &lim, &a->err);
}

static void dry_run_after(uv_work_t *w, int status)
{
    apply_req_t *a = w->data;
    if (a->rc < 0) {
        sl_autofree char *msg = xasprintf("spec.template.spec.containers[0].image: %s", a->err.msg);
        reply(a->cb, a->data, 400, "ImageImportFailed", msg);
    } else {
        dry_run_reply(a->c, a->svc, a->cb, a->data);
        a->svc = NULL;
    }
    apply_req_free(a);
}

/* A request for the thread pool: ref imported or checked, cb told after. */
static apply_req_t *req_new(sl_controller_t *c, json_t *svc, const char *ref, sl_controller_cb cb,
                            void *data)
{
    apply_req_t *a = xcalloc(1, sizeof(*a));
    a->c = c;
    a->svc = svc;
    a->ref = xstrdup(ref);
    a->cb = cb;
    a->data = data;
    a->work.data = a;
    return a;
}

/* A dry run of an apply that would import an image: the reference is
 * checked on the thread pool (it stats files), not imported. Not pending:
 * it holds up no real apply. */
static void queue_dry_run(sl_controller_t *c, json_t *svc, const char *ref, sl_controller_cb cb,
                          void *data)
{
    apply_req_t *a = req_new(c, svc, ref, cb, data);
    uv_queue_work(c->loop, &a->work, check_ref_work, dry_run_after);
}

/* Every revisionName in spec.traffic must be a revision of this service
 * (or the one this change creates). */
static int check_traffic_names(sl_controller_t *c, const json_t *svc, const char *new_rev,
                               sl_error_t *err)
{
    const char *ns = sl_json_str(svc, "metadata.namespace");
    const char *name = sl_json_str(svc, "metadata.name");
    size_t i;
    json_t *t;
    json_array_foreach(sl_json_path(svc, "spec.traffic"), i, t)
    {
        const char *rev = json_string_value(json_object_get(t, "revisionName"));
        if (!rev || (new_rev && !strcmp(rev, new_rev)))
            continue;
        json_t *obj = NULL;
        if (sl_store_get(c->store, "revisions", ns, rev, &obj, NULL) < 0)
            return sl_error_set(err, ENOENT,
                                "spec.traffic[%zu].revisionName: revision \"%s\" does not exist", i,
                                rev);
        json_t *labels = sl_json_path(obj, "metadata.labels");
        const char *owner = json_string_value(json_object_get(labels, SL_LABEL_SERVICE));
        bool mine = owner && !strcmp(owner, name);
        json_decref(obj);
        if (!mine)
            return sl_error_set(err, EINVAL,
                                "spec.traffic[%zu].revisionName: revision \"%s\" belongs to "
                                "another service",
                                i, rev);
    }
    return 0;
}

/* Scales a revision may ask for stay within the daemon's --max-scale (as
 * Knative's max-scale-limit), rather than being cut to it unsaid. */
static int scale_within_limit(const sl_controller_t *c, const json_t *svc, sl_error_t *err)
{
    static const char *const keys[] = {SL_AS_PREFIX "min-scale",     SL_AS_PREFIX "minScale",
                                       SL_AS_PREFIX "max-scale",     SL_AS_PREFIX "maxScale",
                                       SL_AS_PREFIX "initial-scale", SL_AS_PREFIX "initialScale"};
    const json_t *ann = sl_json_path(svc, "spec.template.metadata.annotations");
    for (size_t i = 0; i < SL_ARRAY_LEN(keys); i++) {
        const char *v = json_string_value(json_object_get(ann, keys[i]));
        double d = v ? strtod(v, NULL) : 0;
        if (d > c->max_scale)
            return sl_error_set(err, EINVAL,
                                "spec.template.metadata.annotations.%s: %s is more than this "
                                "daemon's limit of %d instances per revision (serve --max-scale)",
                                keys[i], v, c->max_scale);
    }
    return 0;
}

void sl_controller_apply(sl_controller_t *c, json_t *svc, const char *ns_default, unsigned flags,
                         sl_controller_cb cb, void *data)
{
    bool create_only = flags & SL_APPLY_CREATE, dry_run = flags & SL_APPLY_DRY_RUN;
    sl_error_t err = {0};
    /* validation strips the server-set metadata the preconditions are in */
    json_t *md = json_copy(json_object_get(svc, "metadata"));
    if (sl_service_validate(svc, ns_default, &err) < 0) {
        json_decref(md);
        json_decref(svc);
        /* Kubernetes: a well-formed object the server cannot accept is 422
         * Invalid; a malformed one 400 BadRequest. */
        bool unsupported = err.code == ENOTSUP;
        reply(cb, data, unsupported ? 422 : 400, unsupported ? "Invalid" : "BadRequest", err.msg);
        return;
    }
    if (scale_within_limit(c, svc, &err) < 0) {
        json_decref(md);
        json_decref(svc);
        reply(cb, data, 422, "Invalid", err.msg);
        return;
    }
    const char *ns = sl_json_str(svc, "metadata.namespace");
    const char *name = sl_json_str(svc, "metadata.name");
    svc_rt_t *s = ctl_svc_find(c, ns, name);
    /* A create ignores them, as a manifest read back from the API carries
     * them. No status write can land between this check and the commit
     * that would matter: another change to the service is refused while
     * this one is pending, and the commit keeps the stored status. */
    int pre = create_only ? 0
                          : sl_check_update_preconditions(
                                md, s ? s->obj : NULL, "services.serving.knative.dev", name, &err);
    json_decref(md);
    if (pre) {
        json_decref(svc);
        reply(cb, data, pre, sl_precondition_reason(pre), err.msg);
        return;
    }
    if (s && create_only) {
        sl_autofree char *msg = xasprintf("service %s/%s already exists", ns, name);
        json_decref(svc);
        reply(cb, data, 409, "AlreadyExists", msg);
        return;
    }
    if (ctl_apply_pending(ns, name)) {
        sl_autofree char *msg = xasprintf("service %s/%s: another change is in progress", ns, name);
        json_decref(svc);
        /* Kubernetes' details.retryAfterSeconds: an image import takes a while */
        json_t *st = sl_status_json(409, "Conflict", msg);
        json_object_set_new(
            st, "details",
            json_pack("{s:s,s:s,s:i}", "name", name, "kind", "services", "retryAfterSeconds", 1));
        cb(409, st, data);
        return;
    }
    const char *rcn = sl_json_str(svc, "spec.template.spec.runtimeClassName");
    if (rcn && ctl_check_runtime_class(c, rcn, &err) < 0) {
        json_decref(svc);
        reply(cb, data, 400, "BadRequest", err.msg);
        return;
    }
    if (check_traffic_names(c, svc, sl_json_str(svc, "spec.template.metadata.name"), &err) < 0) {
        json_decref(svc);
        reply(cb, data, 400, "BadRequest", err.msg);
        return;
    }
    if (ctl_hosts_free(c, svc, ns, name, &err) < 0) {
        json_decref(svc);
        reply(cb, data, 409, "Conflict", err.msg);
        return;
    }
    sl_autofree char *key = sl_service_template_key(svc);
    sl_autofree char *old_key = s ? sl_service_template_key(s->obj) : NULL;
    if (s && s->latest && old_key && !strcmp(key, old_key)) {
        if (dry_run) {
            dry_run_reply(c, svc, cb, data);
            return;
        }
        apply_without_revision(c, s, svc, cb, data);
        json_decref(svc);
        return;
    }
    const char *tname = sl_json_str(svc, "spec.template.metadata.name");
    json_t *existing = NULL;
    if (tname && sl_store_get(c->store, "revisions", ns, tname, &existing, &err) == 0) {
        json_decref(existing);
        sl_autofree char *msg = xasprintf(
            "spec.template.metadata.name: revision \"%s\" already exists with a different "
            "template; choose a new name or leave it out",
            tname);
        json_decref(svc);
        reply(cb, data, 409, "AlreadyExists", msg);
        return;
    }
    const char *ref =
        sl_json_str(json_array_get(sl_json_path(svc, "spec.template.spec.containers"), 0), "image");
    if (dry_run) {
        queue_dry_run(c, svc, ref, cb, data);
        return;
    }
    apply_req_t *a = req_new(c, svc, ref, cb, data);
    a->ns = xstrdup(ns);
    a->name = xstrdup(name);
    a->create_only = create_only;
    a->next = pending;
    pending = a;
    uv_queue_work(c->loop, &a->work, import_work, apply_after);
}

void sl_controller_import_image(sl_controller_t *c, const char *ref, sl_controller_cb cb,
                                void *data)
{
    apply_req_t *a = req_new(c, NULL, ref, cb, data);
    a->next = pending;
    pending = a;
    uv_queue_work(c->loop, &a->work, import_work, import_after);
}

/* ---- reads ------------------------------------------------------------ */

static json_t *list_obj(const char *kind, json_t *items)
{
    return json_pack("{s:s,s:s,s:{},s:o}", "apiVersion",
                     strcmp(kind, "ImageList") && strcmp(kind, "InstanceList") ? SL_API_VERSION
                                                                               : "sluice.dev/v1",
                     "kind", kind, "metadata", "items", items);
}

int sl_controller_get_service(sl_controller_t *c, const char *ns, const char *name, json_t **body)
{
    svc_rt_t *s = ctl_svc_find(c, ns, name);
    if (!s) {
        sl_autofree char *msg = xasprintf("service %s/%s not found", ns, name);
        *body = sl_status_json(404, "NotFound", msg);
        return 404;
    }
    ctl_svc_update_status(s);
    *body = json_deep_copy(s->obj);
    return 200;
}

/* A listed service as its GET shows it: the live object (its status as of
 * now), or the stored one when it is not loaded. New reference. */
static json_t *service_item(sl_controller_t *c, json_t *stored)
{
    svc_rt_t *s = ctl_svc_find(c, sl_json_str(stored, "metadata.namespace"),
                               sl_json_str(stored, "metadata.name"));
    if (!s)
        return json_incref(stored);
    ctl_svc_update_status(s);
    return json_incref(s->obj);
}

/* A listed revision, with what its service routes to it; NULL when it is
 * not one of service's (service NULL: any). New reference. */
static json_t *revision_item(sl_controller_t *c, json_t *obj, const char *service)
{
    json_t *labels = sl_json_path(obj, "metadata.labels");
    const char *svc = json_string_value(json_object_get(labels, SL_LABEL_SERVICE));
    if (service && (!svc || strcmp(svc, service)))
        return NULL;
    const char *rns = sl_json_str(obj, "metadata.namespace");
    const char *rname = sl_json_str(obj, "metadata.name");
    rev_rt_t *r = ctl_rev_find(c, rns, rname);
    if (r)
        ctl_rev_update_status(r);
    json_t *item = r ? json_deep_copy(r->obj) : json_incref(obj); /* obj is the job's own */
    json_t *st = sl_json_ensure_obj(item, "status");
    json_object_set_new(st, "actualReplicas", json_integer(r ? r->n_ready : 0));
    if (!r) {
        json_object_set_new(st, "desiredReplicas", json_integer(0));
        json_object_del(st, "autoscaler");
    }
    svc_rt_t *s = svc ? ctl_svc_find(c, rns, svc) : NULL;
    int pct = 0;
    json_t *tags = json_array();
    for (size_t k = 0; s && k < s->n_traffic; k++) {
        rev_rt_t *tr = ctl_target_rev(s, &s->traffic[k]);
        const char *tname =
            s->traffic[k].revision ? s->traffic[k].revision : (tr ? tr->name : NULL);
        if (!tname || strcmp(tname, rname))
            continue;
        pct += s->traffic[k].percent;
        if (s->traffic[k].tag)
            json_array_append_new(tags, json_string(s->traffic[k].tag));
    }
    json_object_set_new(st, "trafficPercent", json_integer(pct));
    json_object_set_new(st, "tags", tags);
    return item;
}

/*
 * A list of services or revisions is rendered a slice at a time, one slice
 * per turn of the loop, so that a long one (a thousand services make ~2 MB
 * of JSON, tens of milliseconds of jansson) does not hold up the requests
 * the loop proxies. The stored objects are read at the start, in one query,
 * as text; each is parsed only if it is not loaded (a loaded one is shown
 * live), and is looked up again in each slice, so the job holds no pointer
 * into the controller between slices. An object deleted meanwhile is still
 * listed as it was stored when the list began.
 */
#define LIST_SLICE_NS 1000000 /* at most ~1 ms of the loop per turn */

typedef struct list_job list_job_t;
struct list_job {
    uv_idle_t idle;
    sl_controller_t *c;
    bool revisions;
    char *service; /* revisions of this service only; NULL: all */
    json_t *rows;  /* the stored objects, as text or parsed */
    size_t next;
    size_t n_items;
    sl_buf_t text; /* the answer so far */
    sl_controller_text_cb cb;
    void *data;
};

static int buf_dump(const char *p, size_t n, void *data)
{
    sl_buf_put(data, p, n);
    return 0;
}

static void list_job_closed(uv_handle_t *h)
{
    list_job_t *j = h->data;
    json_decref(j->rows);
    free(j->service);
    free(j->text.p);
    free(j);
}

/* The job's answer goes to its callback: status and text (taken). */
static void list_finish(list_job_t *j, int status, char *text, size_t len)
{
    uv_idle_stop(&j->idle);
    sl_controller_text_cb cb = j->cb;
    void *data = j->data;
    uv_close((uv_handle_t *)&j->idle, list_job_closed);
    cb(status, text, len, data);
}

/* A Status answer as text. */
static char *status_text(int code, const char *reason, const char *msg, size_t *len)
{
    json_t *st = sl_status_json(code, reason, msg);
    char *text = json_dumps(st, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(st);
    *len = strlen(text);
    return text;
}

static void list_step(uv_idle_t *h)
{
    list_job_t *j = h->data;
    uint64_t until = uv_hrtime() + LIST_SLICE_NS;
    size_t n = json_array_size(j->rows);
    while (j->next < n) {
        json_t *row = json_array_get(j->rows, j->next++);
        json_t *obj =
            !json_is_string(row)
                ? json_incref(row)
                : json_loadb(json_string_value(row), json_string_length(row), JSON_ALLOW_NUL, NULL);
        if (!obj) { /* as sl_store_list says it */
            size_t len;
            char *text =
                status_text(500, "InternalError", "listing: a stored body is not valid JSON", &len);
            list_finish(j, 500, text, len);
            return;
        }
        json_t *item =
            j->revisions ? revision_item(j->c, obj, j->service) : service_item(j->c, obj);
        json_decref(obj);
        if (item) {
            if (j->n_items++)
                sl_buf_put(&j->text, ",\n", 2);
            json_dump_callback(item, buf_dump, &j->text, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            json_decref(item);
        }
        if ((j->next & 15) == 0 && uv_hrtime() >= until)
            return;
    }
    static const char tail[] = "\n  ]\n}\n";
    sl_buf_put(&j->text, tail, sizeof(tail) - 1);
    char *text = j->text.p;
    j->text.p = NULL;
    list_finish(j, 200, text, j->text.len);
}

static void list_start(sl_controller_t *c, bool revisions, const char *ns, const char *service,
                       sl_controller_text_cb cb, void *data)
{
    json_t *rows = NULL;
    sl_error_t err = {0};
    if (sl_store_list_text(c->store, revisions ? "revisions" : "services", ns, &rows, &err) < 0) {
        size_t len;
        char *text = status_text(500, "InternalError", err.msg, &len);
        cb(500, text, len, data);
        return;
    }
    list_job_t *j = xcalloc(1, sizeof(*j));
    j->c = c;
    j->revisions = revisions;
    j->service = service ? xstrdup(service) : NULL;
    j->rows = rows;
    j->cb = cb;
    j->data = data;
    const char *kind = revisions ? "RevisionList" : "ServiceList";
    char head[160];
    int hn = snprintf(head, sizeof(head),
                      "{\n  \"apiVersion\": \"%s\",\n  \"kind\": \"%s\",\n  \"metadata\": {},\n"
                      "  \"items\": [\n",
                      SL_API_VERSION, kind);
    sl_buf_put(&j->text, head, (size_t)hn);
    uv_idle_init(c->loop, &j->idle);
    j->idle.data = j;
    uv_idle_start(&j->idle, list_step);
}

void sl_controller_list_services(sl_controller_t *c, const char *ns, sl_controller_text_cb cb,
                                 void *data)
{
    list_start(c, false, ns, NULL, cb, data);
}

void sl_controller_list_revisions(sl_controller_t *c, const char *ns, const char *service,
                                  sl_controller_text_cb cb, void *data)
{
    list_start(c, true, ns, service, cb, data);
}

static const char *inst_state_name(sl_inst_state_t st)
{
    switch (st) {
    case SL_INST_STARTING:
        return "Starting";
    case SL_INST_READY:
        return "Ready";
    case SL_INST_STOPPING:
        return "Stopping";
    default:
        return "Exited";
    }
}

/* Ready but failing its readiness probe (out of rotation): NotReady. */
static const char *inst_item_state(const inst_rt_t *i)
{
    if (i->draining)
        return "Draining";
    sl_inst_state_t st = sl_instance_state(i->inst);
    return st == SL_INST_READY && i->unready ? "NotReady" : inst_state_name(st);
}

int sl_controller_list_instances(sl_controller_t *c, const char *ns, const char *service,
                                 json_t **body)
{
    json_t *items = json_array();
    for (rev_rt_t *r = c->revs; r; r = r->all_next) {
        if (ns && strcmp(r->cfg->namespace_, ns))
            continue;
        if (service && strcmp(r->cfg->service, service))
            continue;
        for (inst_rt_t *i = r->instances; i; i = i->next) {
            uint64_t started = sl_instance_started_ns(i->inst);
            uint64_t ready = sl_instance_ready_ns(i->inst);
            json_t *item = json_pack(
                "{s:s,s:s,s:s,s:s,s:s,s:i,s:i,s:f,s:f}", "name", sl_instance_id(i->inst),
                "namespace", r->cfg->namespace_, "service", r->cfg->service, "revision", r->name,
                "state", inst_item_state(i), "pid", sl_instance_pid(i->inst), "inFlight",
                i->inflight, "ageSeconds", (double)(sl_now_ns() - started) / 1e9, "startupMs",
                ready ? (double)(ready - started) / 1e6 : 0.0);
            char cpu[32], mem[32];
            json_object_set_new(item, "runtimeClass",
                                json_string(r->class_name ? r->class_name : "default"));
            json_object_set_new(item, "footprint",
                                json_pack("{s:s,s:s}", "cpu",
                                          sl_format_cpu(i->fp_cpu, cpu, sizeof(cpu)), "memory",
                                          sl_format_memory(i->fp_memory, mem, sizeof(mem))));
            /* The cgroup's own limits (what `sluice debug` gives its container). */
            json_t *limits = json_object();
            if (sl_instance_cpu_millis(i->inst) > 0)
                json_object_set_new(
                    limits, "cpu",
                    json_string(sl_format_cpu(sl_instance_cpu_millis(i->inst), cpu, sizeof(cpu))));
            if (sl_instance_memory_limit(i->inst) > 0)
                json_object_set_new(limits, "memory",
                                    json_string(sl_format_memory(sl_instance_memory_limit(i->inst),
                                                                 mem, sizeof(mem))));
            json_object_set_new(item, "limits", limits);
            /* held to idle CPU between requests (run.googleapis.com/cpu-throttling) */
            json_object_set_new(item, "cpuIdle", json_boolean(sl_instance_cpu_held(i->inst)));
            json_array_append_new(items, item);
        }
    }
    *body = list_obj("InstanceList", items);
    return 200;
}

int sl_controller_list_images(sl_controller_t *c, json_t **body)
{
    json_t *list = NULL;
    sl_error_t err = {0};
    if (sl_store_list(c->store, "images", "", &list, &err) < 0) {
        *body = sl_status_json(500, "InternalError", err.msg);
        return 500;
    }
    *body = list_obj("ImageList", list);
    return 200;
}

int sl_controller_delete_service(sl_controller_t *c, const char *ns, const char *name,
                                 const json_t *pre, json_t **body)
{
    svc_rt_t *s = ctl_svc_find(c, ns, name);
    if (!s) {
        sl_autofree char *msg = xasprintf("service %s/%s not found", ns, name);
        *body = sl_status_json(404, "NotFound", msg);
        return 404;
    }
    sl_error_t perr = {0};
    int pst = sl_check_delete_preconditions(pre, s->obj, &perr);
    if (pst) {
        *body = sl_status_json(pst, sl_precondition_reason(pst), perr.msg);
        return pst;
    }
    if (ctl_apply_pending(ns, name)) {
        sl_autofree char *msg = xasprintf("service %s/%s: a change is in progress", ns, name);
        *body = sl_status_json(409, "Conflict", msg);
        return 409;
    }
    sl_error_t err = {0};
    json_t *revs = NULL;
    if (sl_store_list(c->store, "revisions", ns, &revs, &err) < 0 ||
        sl_store_txn_begin(c->store, &err) < 0) {
        json_decref(revs);
        *body = sl_status_json(500, "InternalError", err.msg);
        return 500;
    }
    size_t i;
    json_t *r;
    int rc = 0;
    json_array_foreach(revs, i, r)
    {
        json_t *labels = sl_json_path(r, "metadata.labels");
        const char *svc = json_string_value(json_object_get(labels, SL_LABEL_SERVICE));
        if (rc == 0 && svc && !strcmp(svc, name))
            rc = sl_store_del(c->store, "revisions", ns, sl_json_str(r, "metadata.name"), &err);
    }
    json_decref(revs);
    if (rc < 0 || sl_store_del(c->store, "services", ns, name, &err) < 0 ||
        sl_store_txn_commit(c->store, &err) < 0) {
        sl_store_txn_rollback(c->store);
        *body = sl_status_json(500, "InternalError", err.msg);
        return 500;
    }
    ctl_retire_all(s);
    ctl_svc_free(s);
    sl_info(MOD, "service %s/%s deleted", ns, name);
    sl_autofree char *msg = xasprintf("service %s/%s deleted", ns, name);
    *body = sl_status_json(200, "Deleted", msg);
    return 200;
}

int sl_controller_delete_revision(sl_controller_t *c, const char *ns, const char *name,
                                  json_t **body)
{
    json_t *obj = NULL;
    sl_error_t err = {0};
    if (sl_store_get(c->store, "revisions", ns, name, &obj, &err) < 0) {
        *body = sl_status_json(404, "NotFound", err.msg);
        return 404;
    }
    json_t *labels = sl_json_path(obj, "metadata.labels");
    sl_autofree char *svc_name =
        xstrdup(json_string_value(json_object_get(labels, SL_LABEL_SERVICE)));
    json_decref(obj);
    svc_rt_t *s = svc_name ? ctl_svc_find(c, ns, svc_name) : NULL;
    if (svc_name && ctl_apply_pending(ns, svc_name)) {
        /* Its traffic may be about to name this revision. */
        sl_autofree char *msg = xasprintf("revision %s/%s cannot be deleted now: an apply of "
                                          "service %s is in progress; try again",
                                          ns, name, svc_name);
        *body = sl_status_json(409, "Conflict", msg);
        return 409;
    }
    if (s) {
        const char *why = NULL;
        if (s->latest && !strcmp(s->latest->name, name))
            why = "it is the service's latest revision";
        else if (s->ready && !strcmp(s->ready->name, name))
            why = "it is the service's latest ready revision";
        for (size_t i = 0; !why && i < s->n_ro; i++)
            if (!strcmp(s->ro[i].rev->name, name))
                why = "a gradual rollout is moving its traffic";
        for (size_t i = 0; !why && i < s->n_traffic; i++) {
            const traffic_target_t *t = &s->traffic[i];
            if (t->revision && !strcmp(t->revision, name))
                why = t->percent > 0 ? "it receives traffic" : "it carries a tag";
        }
        if (why) {
            sl_autofree char *msg = xasprintf("revision %s/%s cannot be deleted: %s; move its "
                                              "traffic first (sluice traffic)",
                                              ns, name, why);
            *body = sl_status_json(409, "Conflict", msg);
            return 409;
        }
    }
    if (sl_store_del(c->store, "revisions", ns, name, &err) < 0) {
        *body = sl_status_json(500, "InternalError", err.msg);
        return 500;
    }
    rev_rt_t *r = ctl_rev_find(c, ns, name);
    if (r) {
        r->retired = true;
        ctl_rev_ensure(r);
        ctl_rev_maybe_free(r);
    }
    sl_autofree char *msg = xasprintf("revision %s/%s deleted", ns, name);
    *body = sl_status_json(200, "Deleted", msg);
    return 200;
}
