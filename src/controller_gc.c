/*
 * controller_gc.c — revision garbage collection (the rule is in
 * revision_gc.c) on a timer, and the routing state a revision records when
 * it stops being routed, as Knative's labeler does.
 *
 * A pass lists each namespace's revisions once and, for every service not
 * in the middle of an apply, deletes what the rule selects through
 * sl_controller_delete_revision, which also refuses the latest revisions,
 * traffic targets and revisions of a service being applied. The idle time of a revision counts from
 * its serving.knative.dev/routingStateModified annotation, written when it left every traffic
 * target; a revision that never had one (stored before this existed) is stamped at its first pass
 * and counts from then.
 */
#include "controller_int.h"

#include <time.h>

static const char *MOD = "gc";

#define ANN_NO_GC        "serving.knative.dev/no-gc"
#define LABEL_ROUTING    "serving.knative.dev/routingState"
#define ANN_ROUTING_TIME "serving.knative.dev/routingStateModified"

/* An RFC 3339 timestamp → Unix seconds; -1 when absent or not one. */
static int64_t parse_time(const char *s)
{
    int64_t t;
    return s && sl_parse_rfc3339(s, &t) == 0 ? t : -1;
}

static void set_routing(json_t *obj, const char *state)
{
    json_t *md = sl_json_ensure_obj(obj, "metadata");
    json_object_set_new(sl_json_ensure_obj(md, "labels"), LABEL_ROUTING, json_string(state));
    json_object_set_new(sl_json_ensure_obj(md, "annotations"), ANN_ROUTING_TIME,
                        json_string(sl_rfc3339_now()));
}

static void persist_rev(sl_controller_t *c, const char *ns, const char *name, json_t *obj)
{
    sl_error_t err = {0};
    if (sl_store_put(c->store, "revisions", ns, name, obj, &err) < 0)
        sl_err(MOD, "revision %s/%s: recording its routing state: %s", ns, name, err.msg);
}

void ctl_gc_routing_changed(rev_rt_t *r, bool routed)
{
    const char *state = routed ? "active" : "reserve";
    json_t *labels = sl_json_path(r->obj, "metadata.labels");
    const char *was = json_string_value(json_object_get(labels, LABEL_ROUTING));
    if (was && !strcmp(was, state))
        return;
    set_routing(r->obj, state);
    persist_rev(r->ctl, r->cfg->namespace_, r->name, r->obj);
}

/* Needed by the service: its latest created or ready revision (running,
 * as its status says, or as it said when loaded: a ready revision that
 * failed to load is still the one to roll back to), one a traffic target
 * names, or one a gradual rollout still sends traffic to. */
static bool needed(const svc_rt_t *s, const char *name)
{
    if ((s->latest && !strcmp(s->latest->name, name)) ||
        (s->ready && !strcmp(s->ready->name, name)))
        return true;
    const char *st[] = {sl_json_str(s->obj, "status.latestCreatedRevisionName"),
                        sl_json_str(s->obj, "status.latestReadyRevisionName"),
                        s->ready ? NULL : s->loaded_ready};
    for (size_t i = 0; i < SL_ARRAY_LEN(st); i++)
        if (st[i] && !strcmp(st[i], name))
            return true;
    for (size_t i = 0; i < s->n_traffic; i++)
        if (s->traffic[i].revision && !strcmp(s->traffic[i].revision, name))
            return true;
    for (size_t i = 0; i < s->n_ro; i++)
        if (!strcmp(s->ro[i].rev->name, name))
            return true;
    return false;
}

static void collect_service(sl_controller_t *c, svc_rt_t *s, json_t *list, int64_t now)
{
    size_t n = 0, i;
    json_t *obj;
    json_t **objs = xcalloc(json_array_size(list) + 1, sizeof(*objs));
    sl_gc_rev_t *revs = xcalloc(json_array_size(list) + 1, sizeof(*revs));
    json_array_foreach(list, i, obj)
    {
        json_t *md = json_object_get(obj, "metadata");
        json_t *labels = json_object_get(md, "labels");
        const char *svc = json_string_value(json_object_get(labels, SL_LABEL_SERVICE));
        const char *name = json_string_value(json_object_get(md, "name"));
        if (!svc || strcmp(svc, s->name) != 0 || !name)
            continue;
        json_t *ann = json_object_get(md, "annotations");
        const char *no_gc = json_string_value(json_object_get(ann, ANN_NO_GC));
        int64_t created = parse_time(json_string_value(json_object_get(md, "creationTimestamp")));
        int64_t moved = parse_time(json_string_value(json_object_get(ann, ANN_ROUTING_TIME)));
        const char *state = json_string_value(json_object_get(labels, LABEL_ROUTING));
        bool active = needed(s, name) || (no_gc && !strcasecmp(no_gc, "true")) || created < 0;
        /* Never stamped, or stamped active by a copy that did not see it
         * leave: idle from now. */
        if (!active && (moved < 0 || !state || strcmp(state, "reserve") != 0)) {
            set_routing(obj, "reserve");
            persist_rev(c, s->ns, name, obj);
            moved = now;
        }
        objs[n] = obj;
        revs[n++] = (sl_gc_rev_t){created, moved >= 0 ? moved : created, active, false};
    }
    if (sl_revision_gc_select(revs, n, &c->gc, now) > 0) {
        for (size_t k = 0; k < n; k++) {
            if (!revs[k].remove)
                continue;
            const char *name = sl_json_str(objs[k], "metadata.name");
            json_t *body = NULL;
            int code = sl_controller_delete_revision(c, s->ns, name, &body);
            if (code == 200)
                sl_info(MOD, "service %s/%s: revision %s deleted (not routed for %llds)", s->ns,
                        s->name, name, (long long)(now - revs[k].last_active_s));
            else
                sl_warn(MOD, "service %s/%s: revision %s kept: %s", s->ns, s->name, name,
                        sl_json_str(body, "message") ? sl_json_str(body, "message") : "refused");
            json_decref(body);
        }
    }
    free(revs);
    free(objs);
}

void ctl_gc_pass(sl_controller_t *c)
{
    int64_t now = (int64_t)time(NULL);
    for (svc_rt_t *s = c->svcs; s; s = s->next)
        s->gc_seen = false;
    for (svc_rt_t *s = c->svcs; s; s = s->next) {
        if (s->gc_seen)
            continue;
        json_t *list = NULL;
        sl_error_t err = {0};
        if (sl_store_list(c->store, "revisions", s->ns, &list, &err) < 0) {
            sl_warn(MOD, "listing revisions of namespace %s: %s", s->ns, err.msg);
            continue;
        }
        /* Every service of this namespace, from the one list. */
        for (svc_rt_t *t = s; t; t = t->next) {
            if (t->gc_seen || strcmp(t->ns, s->ns) != 0)
                continue;
            t->gc_seen = true;
            if (!ctl_apply_pending(t->ns, t->name))
                collect_service(c, t, list, now);
        }
        json_decref(list);
    }
}

static void gc_tick(uv_timer_t *t)
{
    ctl_gc_pass(t->data);
}

void ctl_gc_start(sl_controller_t *c)
{
    if (sl_revision_gc_disabled(&c->gc))
        return;
    c->gc_timer = ctl_timer_new(c->loop, c);
    uint64_t ms = c->gc.interval_ns / 1000000u;
    uv_timer_start(c->gc_timer, gc_tick, ms ? ms : 1, ms ? ms : 1);
    uv_unref((uv_handle_t *)c->gc_timer);
}

void ctl_gc_stop(sl_controller_t *c)
{
    ctl_timer_close(&c->gc_timer);
}
