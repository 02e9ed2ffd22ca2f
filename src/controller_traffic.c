/*
 * controller_traffic.c — a service's traffic: spec.traffic parsed into
 * targets, the hosts that reach them (NAME.DOMAIN for the weighted split,
 * TAG-NAME.DOMAIN for each tag), the per-request weighted choice, and which
 * revisions stay alive (latest created, latest ready, and every revision a
 * target names; the rest are retired and stop).
 */
#include "controller_int.h"

#include <stdio.h>

static const char *MOD = "traffic";

route_t *ctl_route_find(sl_controller_t *c, const char *host, size_t len)
{
    for (route_t *r = c->buckets[ctl_hash_host(host, len)]; r; r = r->hnext)
        if (strlen(r->host) == len && !memcmp(r->host, host, len))
            return r;
    return NULL;
}

void ctl_svc_clear_routes(svc_rt_t *s)
{
    sl_controller_t *c = s->ctl;
    for (size_t i = 0; i < s->n_routes; i++) {
        route_t *rt = &s->routes[i];
        for (route_t **pp = &c->buckets[ctl_hash_host(rt->host, strlen(rt->host))]; *pp;
             pp = &(*pp)->hnext) {
            if (*pp == rt) {
                *pp = rt->hnext;
                break;
            }
        }
        free(rt->host);
    }
    free(s->routes);
    s->routes = NULL;
    s->n_routes = 0;
    for (size_t i = 0; i < s->n_traffic; i++) {
        free(s->traffic[i].revision);
        free(s->traffic[i].tag);
    }
    free(s->traffic);
    s->traffic = NULL;
    s->n_traffic = 0;
}

static void add_route(svc_rt_t *s, int target, char *host)
{
    sl_controller_t *c = s->ctl;
    route_t *rt = &s->routes[s->n_routes++];
    rt->svc = s;
    rt->target = target;
    rt->host = host;
    uint32_t h = ctl_hash_host(host, strlen(host));
    rt->hnext = c->buckets[h];
    c->buckets[h] = rt;
}

int ctl_svc_set_traffic(svc_rt_t *s, sl_error_t *err)
{
    ctl_svc_clear_routes(s);
    json_t *list = sl_json_path(s->obj, "spec.traffic");
    size_t n = json_array_size(list);
    s->traffic = xcalloc(n ? n : 1, sizeof(*s->traffic));
    s->routes = xcalloc(n + 1, sizeof(*s->routes));
    if (n == 0) {
        s->traffic[0].percent = 100;
        s->n_traffic = 1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(list, i);
        traffic_target_t *tt = &s->traffic[s->n_traffic++];
        if (!json_is_true(json_object_get(t, "latestRevision")))
            tt->revision = xstrdup(json_string_value(json_object_get(t, "revisionName")));
        tt->percent = (int)json_integer_value(json_object_get(t, "percent"));
        tt->tag = xstrdup(json_string_value(json_object_get(t, "tag")));
    }
    add_route(s, -1, xstrdup(s->host));
    for (size_t i = 0; i < s->n_traffic; i++) {
        if (!s->traffic[i].tag)
            continue;
        sl_autofree char *tagged = xasprintf("%s-%s", s->traffic[i].tag, s->name);
        add_route(s, (int)i, ctl_host_for(s->ctl, s->ns, tagged));
    }
    return 0;
}

rev_rt_t *ctl_rev_find(sl_controller_t *c, const char *ns, const char *name)
{
    for (rev_rt_t *r = c->revs; r; r = r->all_next)
        if (!r->retired && !strcmp(r->name, name) && !strcmp(r->cfg->namespace_, ns))
            return r;
    return NULL;
}

rev_rt_t *ctl_route_default(svc_rt_t *s)
{
    return s->ready ? s->ready : s->latest;
}

rev_rt_t *ctl_target_rev(svc_rt_t *s, const traffic_target_t *t)
{
    if (!t->revision)
        return ctl_route_default(s);
    return ctl_rev_find(s->ctl, s->ns, t->revision);
}

rev_rt_t *ctl_route_pick(route_t *rt)
{
    svc_rt_t *s = rt->svc;
    if (rt->target >= 0)
        return ctl_target_rev(s, &s->traffic[rt->target]);
    int roll = rand() % 100;
    for (size_t i = 0; i < s->n_traffic; i++) {
        roll -= s->traffic[i].percent;
        if (roll < 0)
            return ctl_target_rev(s, &s->traffic[i]);
    }
    return ctl_route_default(s);
}

static bool wanted(svc_rt_t *s, const rev_rt_t *r)
{
    if (r == s->latest || r == s->ready)
        return true;
    for (size_t i = 0; i < s->n_traffic; i++)
        if (s->traffic[i].revision && !strcmp(s->traffic[i].revision, r->name))
            return true;
    return false;
}

void ctl_svc_reconcile(svc_rt_t *s)
{
    sl_controller_t *c = s->ctl;
    for (size_t i = 0; i < s->n_traffic; i++) {
        const char *name = s->traffic[i].revision;
        if (!name || ctl_rev_find(c, s->ns, name))
            continue;
        json_t *obj = NULL;
        sl_error_t err = {0};
        rev_rt_t *r = NULL;
        if (sl_store_get(c->store, "revisions", s->ns, name, &obj, &err) == 0)
            r = ctl_rev_new(c, s, obj, &err);
        json_decref(obj);
        if (!r) {
            sl_err(MOD, "service %s/%s: traffic names revision %s: %s", s->ns, s->name, name,
                   err.msg);
        } else {
            ctl_gc_routing_changed(r, true);
            ctl_rev_ensure(r);
        }
    }
    rev_rt_t *r = c->revs;
    while (r) {
        rev_rt_t *next = r->all_next;
        if (r->svc == s && !r->retired && !wanted(s, r)) {
            sl_info(MOD, "service %s/%s: revision %s no longer receives traffic", s->ns, s->name,
                    r->name);
            r->retired = true;
            ctl_gc_routing_changed(r, false);
            ctl_rev_ensure(r);
            ctl_rev_maybe_free(r);
        }
        r = next;
    }
}

json_t *ctl_traffic_status(svc_rt_t *s)
{
    json_t *out = json_array();
    for (size_t i = 0; i < s->n_traffic; i++) {
        const traffic_target_t *t = &s->traffic[i];
        rev_rt_t *r = t->revision ? NULL : s->ready;
        const char *name = t->revision ? t->revision : r ? r->name : NULL;
        json_t *e = json_object();
        if (name)
            json_object_set_new(e, "revisionName", json_string(name));
        json_object_set_new(e, "latestRevision", json_boolean(!t->revision));
        json_object_set_new(e, "percent", json_integer(t->percent));
        if (t->tag) {
            json_object_set_new(e, "tag", json_string(t->tag));
            for (size_t k = 0; k < s->n_routes; k++) {
                if (s->routes[k].target == (int)i) {
                    char *url = ctl_url_for(s->ctl, s->routes[k].host);
                    json_object_set_new(e, "url", json_string(url));
                    free(url);
                }
            }
        }
        json_array_append_new(out, e);
    }
    return out;
}
