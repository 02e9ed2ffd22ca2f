/*
 * controller_traffic.c — a service's traffic: spec.traffic parsed into
 * targets, the hosts that reach them (NAME.DOMAIN for the weighted split,
 * TAG-NAME.DOMAIN for each tag), the per-request weighted choice, and which
 * revisions stay alive (latest created, latest ready, and every revision a
 * target names; the rest are retired and stop).
 */
#include "controller_int.h"

#include <math.h>
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
        CTL_BUCKET_REMOVE(&c->buckets[ctl_hash_host(rt->host, strlen(rt->host))], rt);
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
    CTL_BUCKET_PUSH(&c->buckets[ctl_hash_host(host, strlen(host))], rt);
}

static int latest_percent(const svc_rt_t *s);
static uint64_t rollout_ns(const svc_rt_t *s);
static size_t rollout_drop_empty(svc_rt_t *s);

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
    /* A rollout ends at once when the latest revision loses its traffic
     * or the service its rollout duration; a changed part is taken from
     * the oldest revisions or given to the newest (Knative's
     * adjustPercentage). */
    int total = latest_percent(s);
    if (s->n_ro && (total < 2 || !rollout_ns(s)))
        ctl_rollout_clear(s);
    if (s->n_ro && total > s->ro_total) {
        s->ro[s->n_ro - 1].pct += total - s->ro_total;
    } else if (s->n_ro && total < s->ro_total) {
        int cut = s->ro_total - total;
        for (size_t i = 0; cut > 0 && i + 1 < s->n_ro; i++) {
            int take = s->ro[i].pct < cut ? s->ro[i].pct : cut;
            s->ro[i].pct -= take;
            cut -= take;
        }
        s->ro[s->n_ro - 1].pct -= cut;
        if (rollout_drop_empty(s) < 2)
            ctl_rollout_clear(s);
    }
    if (s->n_ro)
        s->ro_total = total;
    add_route(s, -1, xstrdup(s->host));
    for (size_t i = 0; i < s->n_traffic; i++) {
        if (!s->traffic[i].tag)
            continue;
        sl_autofree char *tagged = xasprintf("%s-%s", s->traffic[i].tag, s->name);
        add_route(s, (int)i, ctl_host_for(s->ctl, s->ns, tagged));
    }
    return 0;
}

int ctl_hosts_free(sl_controller_t *c, const json_t *svc, const char *ns, const char *name,
                   sl_error_t *err)
{
    json_t *list = sl_json_path(svc, "spec.traffic");
    size_t n = json_array_size(list);
    for (size_t i = 0; i <= n; i++) { /* each tag's host, then the service's */
        const char *tag =
            i < n ? json_string_value(json_object_get(json_array_get(list, i), "tag")) : NULL;
        if (i < n && !tag)
            continue;
        sl_autofree char *label = tag ? xasprintf("%s-%s", tag, name) : xstrdup(name);
        sl_autofree char *host = ctl_host_for(c, ns, label);
        route_t *rt = ctl_route_find(c, host, strlen(host));
        if (rt && (strcmp(rt->svc->name, name) || strcmp(rt->svc->ns, ns)))
            return sl_error_set(err, EEXIST, "%s%s%s: host %s is already served by service %s/%s",
                                tag ? "spec.traffic tag \"" : "metadata.name", tag ? tag : "",
                                tag ? "\"" : "", host, rt->svc->ns, rt->svc->name);
    }
    return 0;
}

rev_rt_t *ctl_rev_find(sl_controller_t *c, const char *ns, const char *name)
{
    if (!ns || !name)
        return NULL;
    for (rev_rt_t *r = c->rev_buckets[ctl_hash_name(ns, name)]; r; r = r->hnext)
        if (!r->retired && !strcmp(r->name, name) && !strcmp(r->cfg->namespace_, ns))
            return r;
    return NULL;
}

rev_rt_t *ctl_route_default(svc_rt_t *s)
{
    return s->ready ? s->ready : s->latest;
}

/* One of the rollout's revisions, by their shares. */
static rev_rt_t *rollout_pick(svc_rt_t *s)
{
    int roll = rand() % s->ro_total;
    for (size_t i = 0; i < s->n_ro; i++) {
        roll -= s->ro[i].pct;
        if (roll < 0)
            return s->ro[i].rev;
    }
    return s->ro[s->n_ro - 1].rev;
}

rev_rt_t *ctl_target_rev(svc_rt_t *s, const traffic_target_t *t)
{
    /* A tag-only latest target (0 %) is not rolled out, as in Knative: its
     * tag reaches the newest revision at once. */
    if (!t->revision)
        return s->n_ro > 1 && t->percent > 0 ? rollout_pick(s) : ctl_route_default(s);
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
    if (r == s->latest || r == s->ready || ctl_rollout_has(s, r))
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
        sl_error_t err = {0};
        rev_rt_t *r = ctl_rev_load(s, name, &err);
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

/* The status entries of target t: one, or during a rollout one per
 * revision in it with t's percent split by their shares (t's own when it
 * is the only latest target; with several, the largest remainders get the
 * points left over, so the entries add up to t's). */
static void target_status(svc_rt_t *s, const traffic_target_t *t, size_t i, json_t *out)
{
    bool rolling = !t->revision && s->n_ro > 1 && t->percent > 0;
    size_t n = rolling ? s->n_ro : 1;
    int *share = xcalloc(n, sizeof(*share));
    bool *bumped = xcalloc(n, sizeof(*bumped));
    int left = t->percent;
    for (size_t k = 0; k < n; k++) {
        share[k] = rolling ? t->percent * s->ro[k].pct / s->ro_total : t->percent;
        left -= share[k];
    }
    for (; left > 0; left--) {
        size_t best = 0;
        int best_rem = -1;
        for (size_t k = 0; k < n; k++) {
            int rem = t->percent * s->ro[k].pct % s->ro_total;
            if (!bumped[k] && rem > best_rem) {
                best = k;
                best_rem = rem;
            }
        }
        share[best]++;
        bumped[best] = true;
    }
    for (size_t k = 0; k < n; k++) {
        rev_rt_t *r = t->revision ? NULL : rolling ? s->ro[k].rev : s->ready;
        const char *name = t->revision ? t->revision : r ? r->name : NULL;
        json_t *e = json_object();
        if (name)
            json_object_set_new(e, "revisionName", json_string(name));
        json_object_set_new(e, "latestRevision", json_boolean(!t->revision));
        json_object_set_new(e, "percent", json_integer(share[k]));
        if (t->tag) {
            json_object_set_new(e, "tag", json_string(t->tag));
            for (size_t j = 0; j < s->n_routes; j++) {
                if (s->routes[j].target == (int)i) {
                    char *url = ctl_url_for(s->ctl, s->routes[j].host);
                    json_object_set_new(e, "url", json_string(url));
                    free(url);
                }
            }
        }
        json_array_append_new(out, e);
    }
    free(share);
    free(bumped);
}

json_t *ctl_traffic_status(svc_rt_t *s)
{
    json_t *out = json_array();
    for (size_t i = 0; i < s->n_traffic; i++)
        target_status(s, &s->traffic[i], i, out);
    return out;
}

/* ---- gradual rollout ---------------------------------------------------- */

bool ctl_rollout_has(const svc_rt_t *s, const rev_rt_t *r)
{
    for (size_t i = 0; i < s->n_ro; i++)
        if (s->ro[i].rev == r)
            return true;
    return false;
}

/* Revisions left with no share leave the rollout; returns how many stay. */
static size_t rollout_drop_empty(svc_rt_t *s)
{
    size_t w = 0;
    for (size_t i = 0; i < s->n_ro; i++)
        if (s->ro[i].pct > 0)
            s->ro[w++] = s->ro[i];
    return s->n_ro = w;
}

void ctl_rollout_clear(svc_rt_t *s)
{
    free(s->ro);
    s->ro = NULL;
    s->n_ro = 0;
    s->ro_total = 0;
}

void ctl_rollout_forget(svc_rt_t *s, const rev_rt_t *r)
{
    size_t w = 0;
    for (size_t i = 0; i < s->n_ro; i++)
        if (s->ro[i].rev != r)
            s->ro[w++] = s->ro[i];
    if (w == s->n_ro)
        return;
    s->n_ro = w;
    if (w < 2) {
        ctl_rollout_clear(s);
        return;
    }
    /* what it had goes to the newest */
    int sum = 0;
    for (size_t i = 0; i < w; i++)
        sum += s->ro[i].pct;
    s->ro[w - 1].pct += s->ro_total - sum;
}

/* The latest revision's part of the service's traffic (Knative's
 * configuration target percent). */
static int latest_percent(const svc_rt_t *s)
{
    int p = 0;
    for (size_t i = 0; i < s->n_traffic; i++)
        if (!s->traffic[i].revision)
            p += s->traffic[i].percent;
    return p;
}

static uint64_t rollout_ns(const svc_rt_t *s)
{
    uint64_t ns = 0;
    sl_error_t err = {0};
    if (sl_rollout_duration(sl_json_path(s->obj, "metadata.annotations"), &ns, &err) < 0)
        return 0; /* validated at apply; a stored object from before loads */
    return ns;
}

/* Knative's rollout (route/traffic/rollout.go): the new revision gets 1 %
 * at once, taken from the newest revision that has any; after the first
 * step's time the rest moves in equal steps, at least 1 % each, spread over
 * what is left of the duration. Knative times the first step by how long
 * its ingress took to take the 1 % (at least 1 s); the router takes it at
 * once, so it is 1 s here. */
void ctl_rollout_begin(svc_rt_t *s, rev_rt_t *to, uint64_t now)
{
    uint64_t d = rollout_ns(s);
    int p = latest_percent(s);
    if (!d || p < 2 || !s->ready || s->ready == to) {
        ctl_rollout_clear(s);
        return;
    }
    if (s->n_ro == 0) {
        s->ro = xcalloc(2, sizeof(*s->ro));
        s->ro[0] = (struct ctl_rollout){s->ready, p};
        s->n_ro = 1;
        s->ro_total = p;
    } else {
        s->ro = xrealloc(s->ro, (s->n_ro + 1) * sizeof(*s->ro));
    }
    for (size_t i = s->n_ro; i-- > 0;) {
        if (s->ro[i].pct > 0) {
            s->ro[i].pct--;
            break;
        }
    }
    rollout_drop_empty(s);
    s->ro[s->n_ro++] = (struct ctl_rollout){to, 1};
    const double first = 1.0;
    double secs = (double)d / 1e9 - first;
    if (secs < 1)
        secs = 1;
    double steps = secs / first;
    if (steps > p - 1)
        steps = p - 1;
    s->ro_step = (int)lround((p - 1) / steps);
    if (s->ro_step < 1)
        s->ro_step = 1;
    s->ro_step_ns = (uint64_t)(secs / steps * 1e9);
    s->ro_next_ns = now + (uint64_t)(first * 1e9) + s->ro_step_ns;
    sl_info(MOD, "service %s/%s: rolling %s out over %.0f s, %d %% every %.2f s", s->ns, s->name,
            to->name, (double)d / 1e9, s->ro_step, (double)s->ro_step_ns / 1e9);
}

/* One step (Knative's stepRevisions): the newest gains ro_step, taken
 * from the one before it, then the ones before that. */
static void rollout_step(svc_rt_t *s)
{
    size_t newest = s->n_ro - 1;
    int remaining = s->ro_step;
    size_t keep = newest;
    while (remaining > 0 && keep > 0) {
        struct ctl_rollout *o = &s->ro[keep - 1];
        if (o->pct > remaining) {
            o->pct -= remaining;
            remaining = 0;
            break;
        }
        remaining -= o->pct;
        keep--;
    }
    s->ro[keep] = s->ro[newest];
    s->ro[keep].pct += s->ro_step - remaining;
    s->n_ro = keep + 1;
}

json_t *ctl_rollout_status(const svc_rt_t *s)
{
    if (s->n_ro < 2)
        return NULL;
    json_t *revs = json_array();
    for (size_t i = 0; i < s->n_ro; i++)
        json_array_append_new(revs, json_pack("{s:s,s:i}", "revisionName", s->ro[i].rev->name,
                                              "percent", s->ro[i].pct));
    uint64_t now = sl_now_ns();
    int64_t left_ms = s->ro_next_ns > now ? (int64_t)((s->ro_next_ns - now) / 1000000u) : 0;
    return json_pack("{s:i,s:o,s:i,s:I,s:I}", "percent", s->ro_total, "revisions", revs,
                     "stepPercent", s->ro_step, "stepMillis",
                     (json_int_t)(s->ro_step_ns / 1000000u), "nextStepUnixMillis",
                     (json_int_t)(sl_wall_ns() / 1000000 + left_ms));
}

/* At load: the rollout the stored status describes, if it still holds
 * together (its newest revision is the latest ready one, and the shares
 * add up), goes on where it was; revisions it names are loaded. */
void ctl_rollout_restore(svc_rt_t *s, const json_t *st)
{
    json_t *revs = json_object_get(st, "revisions");
    size_t n = json_array_size(revs);
    int total = (int)json_integer_value(json_object_get(st, "percent"));
    int step = (int)json_integer_value(json_object_get(st, "stepPercent"));
    json_int_t step_ms = json_integer_value(json_object_get(st, "stepMillis"));
    json_int_t next_ms = json_integer_value(json_object_get(st, "nextStepUnixMillis"));
    if (n < 2 || !s->ready || total != latest_percent(s) || step < 1 || step_ms < 1 ||
        !rollout_ns(s))
        return;
    const char *newest =
        json_string_value(json_object_get(json_array_get(revs, n - 1), "revisionName"));
    if (!newest || strcmp(newest, s->ready->name))
        return;
    struct ctl_rollout *ro = xcalloc(n, sizeof(*ro));
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(revs, i);
        const char *name = json_string_value(json_object_get(e, "revisionName"));
        rev_rt_t *r = i == n - 1 ? s->ready : name ? ctl_rev_find(s->ctl, s->ns, name) : NULL;
        sl_error_t err = {0};
        if (!r && name)
            r = ctl_rev_load(s, name, &err);
        int pct = (int)json_integer_value(json_object_get(e, "percent"));
        if (!r || pct < 1) {
            free(ro);
            return;
        }
        ro[i] = (struct ctl_rollout){r, pct};
        sum += pct;
    }
    if (sum != total) {
        free(ro);
        return;
    }
    s->ro = ro;
    s->n_ro = n;
    s->ro_total = total;
    s->ro_step = step;
    s->ro_step_ns = (uint64_t)step_ms * 1000000u;
    int64_t left = next_ms - sl_wall_ns() / 1000000;
    s->ro_next_ns = sl_now_ns() + (left > 0 ? (uint64_t)left * 1000000u : 0);
    sl_info(MOD, "service %s/%s: rollout of %s resumed at %d %% of %d", s->ns, s->name,
            s->ready->name, ro[n - 1].pct, total);
}

void ctl_rollout_tick(sl_controller_t *c, uint64_t now)
{
    for (svc_rt_t *s = c->svcs; s; s = s->next) {
        if (s->n_ro < 2 || now < s->ro_next_ns)
            continue;
        rollout_step(s);
        s->ro_next_ns = now + s->ro_step_ns;
        if (s->n_ro < 2) {
            sl_info(MOD, "service %s/%s: rollout of %s done", s->ns, s->name, s->ro[0].rev->name);
            ctl_rollout_clear(s);
            ctl_svc_changed(s);
            ctl_svc_reconcile(s);
        } else {
            ctl_svc_changed(s);
        }
    }
}
