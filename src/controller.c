/*
 * controller.c — services, revisions and instances at run time.
 *
 * The store holds the desired state (Service and Revision objects, images);
 * this module holds what is running: per service the latest created and
 * latest ready revision, per revision its instances and the FIFO of
 * requests waiting for a slot. Instance lifecycle events from the
 * supervisor drive revision readiness, which the service's status and the
 * router follow. Everything runs on the loop thread; image imports run on
 * the thread pool and come back through uv_after_work.
 */
#include "controller_int.h"

#include "image.h"
#include "service.h"

#include <errno.h>
#include <stdio.h>

static const char *MOD = "controller";

/* ---- helpers ---------------------------------------------------------- */

json_t *sl_status_json(int code, const char *reason, const char *message)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:i}", "apiVersion", "v1", "kind", "Status", "status",
                     code < 400 ? "Success" : "Failure", "reason", reason, "message", message,
                     "code", code);
}

/* FNV-1a, continued from h. */
static uint32_t fnv1a(uint32_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

uint32_t ctl_hash_host(const char *p, size_t n)
{
    return fnv1a(2166136261u, p, n) % HOST_BUCKETS;
}

uint32_t ctl_hash_name(const char *ns, const char *name)
{
    uint32_t h = fnv1a(2166136261u, ns, strlen(ns) + 1); /* the NUL separates the two */
    return fnv1a(h, name, strlen(name)) % HOST_BUCKETS;
}

char *ctl_host_for(sl_controller_t *c, const char *ns, const char *name)
{
    if (!strcmp(ns, SL_DEFAULT_NAMESPACE))
        return xasprintf("%s.%s", name, c->domain);
    return xasprintf("%s.%s.%s", name, ns, c->domain);
}

char *ctl_url_for(sl_controller_t *c, const char *host)
{
    if (c->url_port == 80)
        return xasprintf("http://%s", host);
    return xasprintf("http://%s:%d", host, c->url_port);
}

svc_rt_t *ctl_svc_find(sl_controller_t *c, const char *ns, const char *name)
{
    if (!ns || !name)
        return NULL;
    for (svc_rt_t *s = c->svc_buckets[ctl_hash_name(ns, name)]; s; s = s->hnext)
        if (!strcmp(s->name, name) && !strcmp(s->ns, ns))
            return s;
    return NULL;
}

/* The lastTransitionTime of the condition `type` in prev (an object's
 * status.conditions before the rebuild) when its status is unchanged: the
 * time is when the status last changed, not when it was last read. */
static const char *kept_transition(const json_t *prev, const char *type, const char *status)
{
    size_t i;
    json_t *cnd;
    json_array_foreach(prev, i, cnd)
    {
        const char *t = sl_json_str(cnd, "type");
        const char *st = sl_json_str(cnd, "status");
        if (t && !strcmp(t, type))
            return st && !strcmp(st, status) ? sl_json_str(cnd, "lastTransitionTime") : NULL;
    }
    return NULL;
}

static json_t *condition(const json_t *prev, const char *type, const char *status,
                         const char *reason, const char *message)
{
    const char *since = kept_transition(prev, type, status);
    json_t *cnd = json_pack("{s:s,s:s,s:s}", "type", type, "status", status, "lastTransitionTime",
                            since ? since : sl_rfc3339_now());
    if (reason)
        json_object_set_new(cnd, "reason", json_string(reason));
    if (message)
        json_object_set_new(cnd, "message", json_string(message));
    return cnd;
}

/* ---- status ----------------------------------------------------------- */

void ctl_rev_update_status(rev_rt_t *r)
{
    json_t *st = sl_json_ensure_obj(r->obj, "status");
    const char *s = r->state == REV_READY ? "True" : r->state == REV_FAILED ? "False" : "Unknown";
    const char *reason = r->state == REV_FAILED
                             ? (r->unschedulable       ? "Unschedulable"
                                : r->deadline_exceeded ? "ProgressDeadlineExceeded"
                                : r->blocked           ? "RuntimeClassUnavailable"
                                                       : "ContainerFailed")
                         : r->state == REV_PENDING ? "Deploying"
                                                   : NULL;
    json_t *prev = json_incref(json_object_get(st, "conditions"));
    /* A crash loop: the container is not healthy, although instances come
     * up (and serve) between the crashes. */
    bool looping = r->crash_streak >= 2 && r->state == REV_READY;
    sl_autofree char *loop_msg =
        looping ? xasprintf("%d instances in a row exited soon after they became ready; the "
                            "last: %s",
                            r->crash_streak, r->crash_reason ? r->crash_reason : "exited")
                : NULL;
    json_object_set_new(
        st, "conditions",
        json_pack("[o,o,o]", condition(prev, "Ready", s, reason, r->reason),
                  looping
                      ? condition(prev, "ContainerHealthy", "False", "CrashLoopBackOff", loop_msg)
                      : condition(prev, "ContainerHealthy", s, reason, r->reason),
                  r->unschedulable
                      ? condition(prev, "ResourcesAvailable", "False", "Unschedulable", r->reason)
                      : condition(prev, "ResourcesAvailable", "True", NULL, NULL)));
    json_decref(prev);
    json_object_set_new(st, "actualReplicas", json_integer(r->n_ready));
    json_object_set_new(st, "containerRestarts", json_integer(r->restarts));
    json_object_set_new(st, "desiredReplicas", json_integer(r->as.desired));
    json_object_set_new(st, "observedGeneration", json_integer(1));
    json_object_set_new(
        st, "autoscaler",
        json_pack("{s:s,s:s,s:f,s:f,s:i,s:i,s:i}", "mode", r->as.panic ? "panic" : "stable",
                  "metric", r->as.arrivals ? "rps" : "concurrency",
                  r->as.arrivals ? "observedStableRPS" : "observedStableConcurrency",
                  r->as.observed_stable,
                  r->as.arrivals ? "observedPanicRPS" : "observedPanicConcurrency",
                  r->as.observed_panic, "inFlight", r->inflight, "queued", (int)r->n_waiting,
                  "instances", r->n_instances));
}

void ctl_svc_update_status(svc_rt_t *s)
{
    json_t *st = sl_json_ensure_obj(s->obj, "status");
    json_t *gen = sl_json_path(s->obj, "metadata.generation");
    json_object_set_new(st, "observedGeneration", json_integer(json_integer_value(gen)));
    json_object_set_new(st, "url", json_string(s->url));
    json_object_set_new(st, "address", json_pack("{s:s}", "url", s->url));
    if (s->latest)
        json_object_set_new(st, "latestCreatedRevisionName", json_string(s->latest->name));
    if (s->ready)
        json_object_set_new(st, "latestReadyRevisionName", json_string(s->ready->name));
    else
        json_object_del(st, "latestReadyRevisionName");

    const char *cfg_status = "Unknown", *cfg_reason = "Deploying";
    const char *msg = NULL;
    if (s->latest && s->latest->state == REV_READY) {
        cfg_status = "True";
        cfg_reason = NULL;
    } else if (s->latest && s->latest->state == REV_FAILED) {
        cfg_status = "False";
        cfg_reason = "RevisionFailed";
        msg = s->latest->reason;
    }
    sl_autofree char *full =
        msg ? xasprintf("Revision \"%s\" failed: %s", s->latest->name, msg) : NULL;
    const char *route_status = s->ready ? "True" : cfg_status;
    const char *route_reason = s->ready ? NULL : cfg_reason;
    const char *route_msg = NULL;
    const char *ready_status = cfg_status, *ready_reason = cfg_reason, *ready_msg = full;
    if (s->n_ro > 1) {
        /* Knative marks the route's ingress, and so the service, not yet
         * Ready while a gradual rollout moves the traffic. */
        route_status = "Unknown";
        route_reason = "RolloutInProgress";
        route_msg = "A gradual rollout of the latest revision(s) is in progress.";
        if (!strcmp(cfg_status, "True")) {
            ready_status = route_status;
            ready_reason = route_reason;
            ready_msg = route_msg;
        }
    }
    json_object_set_new(st, "traffic", ctl_traffic_status(s));
    json_t *ro = ctl_rollout_status(s);
    if (ro)
        json_object_set_new(st, "rollout", ro);
    else
        json_object_del(st, "rollout");
    json_t *prev = json_incref(json_object_get(st, "conditions"));
    json_object_set_new(
        st, "conditions",
        json_pack("[o,o,o]", condition(prev, "ConfigurationsReady", cfg_status, cfg_reason, full),
                  condition(prev, "Ready", ready_status, ready_reason, ready_msg),
                  condition(prev, "RoutesReady", route_status, route_reason, route_msg)));
    json_decref(prev);
}

static void persist(sl_controller_t *c, const char *kind, const char *ns, const char *name,
                    json_t *obj)
{
    sl_error_t err = {0};
    if (sl_store_put(c->store, kind, ns, name, obj, &err) < 0)
        sl_err(MOD, "persisting %s %s/%s: %s", kind, ns, name, err.msg);
}

void ctl_svc_changed(svc_rt_t *s)
{
    ctl_svc_update_status(s);
    persist(s->ctl, "services", s->ns, s->name, s->obj);
}

static void rev_changed(rev_rt_t *r)
{
    ctl_rev_update_status(r);
    persist(r->ctl, "revisions", r->cfg->namespace_, r->name, r->obj);
}

/* ---- waiters ---------------------------------------------------------- */

static void wq_push(rev_rt_t *r, sl_waiter_t *w)
{
    w->next = NULL;
    w->prev = r->wq_tail;
    if (r->wq_tail)
        r->wq_tail->next = w;
    else
        r->wq_head = w;
    r->wq_tail = w;
    w->owner_data = r;
    r->n_waiting++;
    ctl_rev_load_changed(r, sl_now_ns());
}

static void wq_remove(rev_rt_t *r, sl_waiter_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        r->wq_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        r->wq_tail = w->prev;
    w->prev = w->next = NULL;
    w->owner_data = NULL;
    r->n_waiting--;
    ctl_rev_load_changed(r, sl_now_ns());
}

/* Whether i takes a new request now: ready, in rotation, below its
 * concurrency limit. */
static bool can_take(const inst_rt_t *i, int limit)
{
    return i->ready && !i->draining && !i->dying && !i->unready && i->fail_streak < 3 && i->pool &&
           (limit <= 0 || i->inflight < limit);
}

/* Session affinity: the instance the request's cookie names, if it can
 * take the request (Cloud Run's is best effort too). */
static inst_rt_t *sticky_instance(rev_rt_t *r, sl_str_t id)
{
    for (inst_rt_t *i = r->instances; i; i = i->next) {
        const char *iid = i->inst ? sl_instance_id(i->inst) : NULL;
        if (iid && strlen(iid) == id.len && !memcmp(iid, id.p, id.len))
            return can_take(i, r->cfg->concurrency) ? i : NULL;
    }
    return NULL;
}

inst_rt_t *ctl_pick_instance(rev_rt_t *r)
{
    inst_rt_t *best = NULL;
    int ties = 0;
    int limit = r->cfg->concurrency;
    for (inst_rt_t *i = r->instances; i; i = i->next) {
        if (!can_take(i, limit))
            continue;
        if (!best || i->inflight < best->inflight) {
            best = i;
            ties = 1;
        } else if (i->inflight == best->inflight && (rand() % ++ties) == 0) {
            best = i;
        }
    }
    return best;
}

void ctl_fail_waiters_one(rev_rt_t *r, sl_waiter_t *w, int status, const char *reason)
{
    ctl_obs_answered(r, status);
    wq_remove(r, w);
    w->ready(w, status, NULL, reason);
}

void ctl_fail_waiters(rev_rt_t *r, int status, const char *reason)
{
    while (r->wq_head)
        ctl_fail_waiters_one(r, r->wq_head, status, reason);
}

/* A request goes to i: counted, i given its CPU back if it was held, and
 * the router's pick of it, with its revision's limits on the request. */
static sl_pick_t inst_take(inst_rt_t *i, uint64_t token, const char *set_cookie)
{
    i->inflight++;
    i->rev->inflight++;
    if (i->cpu_idle) {
        i->cpu_idle = false;
        sl_instance_set_cpu_idle(i->inst, false);
    }
    const sl_revision_cfg_t *cfg = i->rev->cfg;
    return (sl_pick_t){.pool = i->pool,
                       .instance = i,
                       .token = token,
                       .set_cookie = set_cookie,
                       .timeout_ms = (uint32_t)cfg->timeout_s * 1000u,
                       .response_start_ms = (uint32_t)cfg->response_start_s * 1000u,
                       .idle_ms = (uint32_t)cfg->idle_timeout_s * 1000u,
                       .h2c = cfg->h2c};
}

/* Cloud Run's request-based CPU: an instance with no request in flight
 * for CPU_IDLE_AFTER_NS (the rest of the 100 ms unit its last request is
 * billed for) is held to idle CPU until the next one (inst_take). */
#define CPU_IDLE_AFTER_NS (100 * 1000000ull)

void ctl_cpu_idle_check(rev_rt_t *r, uint64_t now)
{
    if (!r->instances || r->cfg->cpu_always) /* (most revisions at rest have none) */
        return;
    for (inst_rt_t *i = r->instances; i; i = i->next) {
        uint64_t since = i->idle_ns > i->ready_ns ? i->idle_ns : i->ready_ns;
        if (i->ready && !i->cpu_idle && !i->dying && !i->gone && i->inflight == 0 &&
            now - since >= CPU_IDLE_AFTER_NS) {
            i->cpu_idle = true;
            sl_instance_set_cpu_idle(i->inst, true);
        }
    }
}

void ctl_dispatch(rev_rt_t *r)
{
    while (r->wq_head) {
        inst_rt_t *i = ctl_pick_instance(r);
        if (!i)
            break;
        sl_waiter_t *w = r->wq_head;
        sl_pick_t pick = inst_take(i, ctl_obs_request_begin(i, sl_now_ns()), i->cookie);
        wq_remove(r, w);
        w->ready(w, 0, &pick, NULL);
    }
}

/* ---- instances -------------------------------------------------------- */

static void retry_fire(uv_timer_t *t)
{
    rev_rt_t *r = t->data;
    r->backoff_due = true;
    ctl_rev_ensure(r);
}

static void became_ready(rev_rt_t *r)
{
    bool first = r->state != REV_READY;
    if (r->deadline_exceeded) /* an instance started after all */
        r->deadline_exceeded = r->blocked = false;
    r->state = REV_READY;
    r->ever_ready = true;
    r->failures = 0;
    free(r->reason);
    r->reason = NULL;
    if (first)
        rev_changed(r);
    svc_rt_t *s = r->svc;
    if (s && s->latest == r && s->ready != r) {
        ctl_rollout_begin(s, r, sl_now_ns());
        s->ready = r;
        ctl_svc_changed(s);
        ctl_svc_reconcile(s);
        sl_info(MOD, "service %s/%s: revision %s is ready", s->ns, s->name, r->name);
    } else if (first && s) {
        ctl_svc_changed(s);
    }
}

/* What an HTTP client is told of a failed start: the cause without the
 * app's last log lines, which may hold anything (describe and logs show
 * them to the service's owner). */
static char *client_reason(const rev_rt_t *r, const char *why)
{
    const char *cut = strstr(why, "; last log lines:");
    int n = cut ? (int)(cut - why) : (int)strlen(why);
    return xasprintf("revision %s failed to start: %.*s (see `sluice describe %s`)", r->name, n,
                     why, r->svc ? r->svc->name : r->cfg->service);
}

static void instance_failed_start(rev_rt_t *r, const char *why)
{
    r->failures++;
    /* Knative's progress deadline: a revision that has not become Ready
     * by then stops trying (a redeploy makes a new one). */
    uint64_t deadline =
        r->cfg->progress_deadline_ns ? r->cfg->progress_deadline_ns : SL_PROGRESS_DEADLINE_NS;
    sl_autofree char *late = NULL;
    if (!r->ever_ready && !(r->svc && r->svc->ready == r) &&
        sl_now_ns() - r->created_ns >= deadline) {
        r->deadline_exceeded = r->blocked = true;
        late = xasprintf("not ready within the progress deadline of %llus, no more attempts; the "
                         "last: %s",
                         (unsigned long long)(deadline / 1000000000ull), why);
        why = late;
        sl_warn(MOD, "revision %s: %s", r->name, why);
    }
    free(r->client_reason);
    r->client_reason = client_reason(r, why);
    if (!r->ever_ready || r->state != REV_READY) {
        r->state = REV_FAILED;
        free(r->reason);
        r->reason = xstrdup(why);
        rev_changed(r);
        if (r->svc)
            ctl_svc_changed(r->svc);
    }
    /* Waiting requests fail now unless an instance may still take them;
     * a revision that never started gets no more of them (rev_acquire). */
    if (r->n_ready == 0 && (r->n_starting == 0 || (r->state == REV_FAILED && !r->ever_ready)))
        ctl_fail_waiters(r, 502, r->client_reason);
}

/* A ready instance exited on its own. One that was up for less than
 * CRASH_UPTIME_NS after another did makes a crash loop: the next start
 * waits 1 s, doubling to 60 s (Kubernetes' CrashLoopBackOff, shorter: a
 * serverless revision has requests waiting), and ContainerHealthy says so. */
#define CRASH_UPTIME_NS  (10 * 1000000000ull)
#define CRASH_BACKOFF_NS (60 * 1000000000ull)

static void instance_crashed(rev_rt_t *r, const inst_rt_t *i, const char *why)
{
    uint64_t now = sl_now_ns();
    r->restarts++;
    /* a crash long after the last one starts a new count */
    bool recent = r->crash_last && now - r->crash_last < CRASH_BACKOFF_NS + CRASH_UPTIME_NS;
    r->crash_streak = now - i->ready_ns < CRASH_UPTIME_NS && recent ? r->crash_streak + 1 : 1;
    r->crash_last = now;
    free(r->crash_reason);
    r->crash_reason = xstrdup(why);
    if (r->crash_streak >= 2) {
        int k = r->crash_streak - 2 < 6 ? r->crash_streak - 2 : 6;
        uint64_t wait = 1000000000ull << k;
        r->crash_until = now + (wait < CRASH_BACKOFF_NS ? wait : CRASH_BACKOFF_NS);
        sl_warn(MOD, "revision %s: crash loop (%d in a row): next start in %.0f s", r->name,
                r->crash_streak, (double)(r->crash_until - now) / 1e9);
    }
    rev_changed(r);
}

/* An instance up for CRASH_UPTIME_NS after the last crash ends the loop. */
void ctl_crash_loop_check(rev_rt_t *r, uint64_t now)
{
    if (r->crash_streak == 0 || now - r->crash_last < CRASH_UPTIME_NS)
        return;
    for (inst_rt_t *i = r->instances; i; i = i->next) {
        /* one started after the last crash, not one that was up before */
        if (i->ready && i->ready_ns >= r->crash_last && now - i->ready_ns >= CRASH_UPTIME_NS) {
            r->crash_streak = 0;
            r->crash_until = 0;
            rev_changed(r);
            return;
        }
    }
}

static void instance_cb(sl_instance_t *inst, sl_inst_state_t state, void *data)
{
    inst_rt_t *i = data;
    rev_rt_t *r = i->rev;
    sl_controller_t *c = r->ctl;
    switch (state) {
    case SL_INST_STARTING:
        return;
    case SL_INST_STOPPING:
        if (!i->dying)
            ctl_obs_instance_stopping(i);
        i->dying = true;
        return;
    case SL_INST_READY:
        if (i->ready)
            return;
        i->ready = true;
        i->ready_ns = sl_now_ns();
        r->n_starting--;
        r->n_ready++;
        if (c->router)
            i->pool =
                sl_upstream_pool_new(c->router, sl_instance_netns_fd(inst), sl_instance_port(inst));
        ctl_obs_instance_ready(i);
        became_ready(r);
        ctl_dispatch(r);
        ctl_rev_ensure(r);
        return;
    case SL_INST_EXITED:
        break;
    }
    const char *why = sl_instance_exit_reason(inst);
    bool was_ready = i->ready;
    ctl_obs_instance_exited(i);
    if (was_ready)
        r->n_ready--;
    else
        r->n_starting--;
    if (i->pool)
        sl_upstream_pool_close(i->pool);
    if (i->prev)
        i->prev->next = i->next;
    else
        r->instances = i->next;
    if (i->next)
        i->next->prev = i->prev;
    r->n_instances--;
    if (i->draining)
        r->n_draining--;
    bool stopping = r->retired || c->shutting_down || !r->svc || i->stopped;
    if (!stopping) {
        sl_warn(MOD, "instance %s of %s exited: %s", sl_instance_id(inst), r->name,
                why ? why : "unknown reason");
        if (!was_ready) {
            instance_failed_start(r, why ? why : "exited before it was ready");
        } else {
            instance_crashed(r, i, why ? why : "exited");
            if (r->svc)
                ctl_svc_changed(r->svc);
        }
    }
    i->inst = NULL;
    i->pool = NULL;
    sl_capacity_release(&c->capacity, i->fp_cpu, i->fp_memory);
    i->fp_cpu = i->fp_memory = 0;
    if (i->inflight > 0) {
        /* The router still holds requests on it; they fail and release. */
        i->gone = true;
        r->n_lingering++;
    } else {
        ctl_inst_free(i);
    }
    ctl_rev_ensure(r);
    ctl_rev_maybe_free(r);
}

void ctl_inst_free(inst_rt_t *i)
{
    ctl_obs_instance_free(i);
    free(i->cookie);
    free(i);
}

void ctl_stop_instance(inst_rt_t *i)
{
    if (i->stopped || !i->inst)
        return;
    i->stopped = true;
    if (!i->dying)
        ctl_obs_instance_stopping(i);
    i->dying = true;
    sl_instance_stop(i->inst);
}

static void to_probe(const sl_probe_cfg_t *in, sl_probe_t *out)
{
    *out = (sl_probe_t){
        .kind = (sl_probe_kind_t)in->kind,
        .port = in->port,
        .path = in->path,
        .headers = in->headers,
        .exec_cmd = in->exec,
        .n_exec = in->n_exec,
        .initial_delay_ms = in->initial_delay_ms,
        .period_ms = in->period_ms,
        .timeout_ms = in->timeout_ms,
        .success_threshold = in->success_threshold,
        .failure_threshold = in->failure_threshold,
    };
}

/* A readiness probe failing after READY takes the instance out of rotation
 * until it passes again. */
static void readiness_cb(sl_instance_t *inst, bool ready, void *data)
{
    inst_rt_t *i = data;
    i->unready = !ready;
    sl_info(MOD, "instance %s %s", sl_instance_id(inst),
            ready ? "passes its readiness probe again" : "is failing its readiness probe");
    if (ready)
        ctl_dispatch(i->rev);
}

/* securityContext's runAsUser / runAsGroup as a USER string; NULL when
 * neither is set (the image's USER then). */
static char *ctl_run_as(const sl_revision_cfg_t *cfg, const sl_image_t *img)
{
    if (cfg->run_as_user < 0 && cfg->run_as_group < 0)
        return NULL;
    if (cfg->run_as_group < 0)
        return xasprintf("%lld", (long long)cfg->run_as_user);
    if (cfg->run_as_user >= 0)
        return xasprintf("%lld:%lld", (long long)cfg->run_as_user, (long long)cfg->run_as_group);
    const char *u = img && img->user && *img->user ? img->user : "0";
    size_t ul = strcspn(u, ":");
    return xasprintf("%.*s:%lld", (int)ul, u, (long long)cfg->run_as_group);
}

int ctl_start_instance(rev_rt_t *r)
{
    sl_controller_t *c = r->ctl;
    if (r->crash_until && sl_now_ns() < r->crash_until)
        return -1; /* crash-loop back-off: the tick starts it once it is over */
    sl_revision_cfg_t *cfg = r->cfg;
    sl_probe_t readiness, liveness, startup;
    to_probe(&cfg->readiness, &readiness);
    to_probe(&cfg->liveness, &liveness);
    to_probe(&cfg->startup, &startup);
    /* What the container reads from Secrets and ConfigMaps, as they are now. */
    sl_revision_process_t proc __attribute__((cleanup(sl_revision_process_free))) = {0};
    if (cfg->has_refs) {
        sl_error_t err = {0};
        if (ctl_resolve(r, &proc, &err) < 0) {
            sl_warn(MOD, "starting an instance of %s: %s", r->name, err.msg);
            instance_failed_start(r, err.msg);
            return -1;
        }
        readiness.exec_cmd = proc.exec[0];
        liveness.exec_cmd = proc.exec[1];
        startup.exec_cmd = proc.exec[2];
    }
    sl_instance_spec_t spec = {
        .namespace_ = cfg->namespace_,
        .service = cfg->service,
        .configuration = cfg->service,
        .revision = cfg->name,
        .image = r->image,
        .port = cfg->port,
        .env = cfg->env,
        .n_env = cfg->n_env,
        .command = cfg->command,
        .n_command = cfg->n_command,
        .args = cfg->args,
        .n_args = cfg->n_args,
        .memory_limit = cfg->memory_limit,
        .cpu_millis = cfg->cpu_millis,
        .cpu_request_millis = cfg->cpu_request_millis,
        .scratch_bytes = cfg->ephemeral_storage,
        .volumes = cfg->volumes,
        .n_volumes = cfg->n_volumes,
        .profile = &r->profile,
        .readiness = cfg->readiness.kind ? &readiness : NULL,
        .liveness = cfg->liveness.kind ? &liveness : NULL,
        .startup = cfg->startup.kind ? &startup : NULL,
        .readiness_cb = readiness_cb,
        .working_dir = cfg->working_dir,
        .run_as_non_root = cfg->run_as_non_root,
        .readonly_rootfs = cfg->readonly_rootfs,
        .caps = (const char *const *)cfg->caps,
        .egress = cfg->egress >= 0 ? cfg->egress == 1 : c->egress,
    };
    if (cfg->has_refs) {
        spec.env = proc.env;
        spec.n_env = proc.n_env;
        spec.command = proc.command;
        spec.n_command = proc.n_command;
        spec.args = proc.args;
        spec.n_args = proc.n_args;
        spec.volumes = proc.volumes;
        spec.n_volumes = proc.n_volumes;
    }
    sl_autofree char *user = ctl_run_as(cfg, r->image);
    spec.user = user;
    inst_rt_t *i = xcalloc(1, sizeof(*i));
    i->rev = r;
    sl_error_t err = {0};
    if (ctl_capacity_reserve(r, &i->fp_cpu, &i->fp_memory, &err) < 0) {
        free(i);
        if (!r->unschedulable)
            sl_warn(MOD, "revision %s is unschedulable: %s", r->name, err.msg);
        r->unschedulable = true;
        free(r->reason);
        r->reason = xasprintf("Unschedulable: %s", err.msg);
        if (r->n_ready == 0 && r->n_starting == 0) {
            /* Nothing runs: the revision fails (and retries with backoff). */
            r->state = REV_FAILED;
            r->failures++;
            ctl_fail_waiters(r, 503, r->reason);
            if (r->svc)
                ctl_svc_changed(r->svc);
        }
        rev_changed(r);
        return -1;
    }
    if (r->unschedulable) {
        r->unschedulable = false;
        if (r->state == REV_READY) {
            free(r->reason);
            r->reason = NULL;
        }
    }
    i->inst = sl_supervisor_start(c->sup, &spec, instance_cb, i, &err);
    if (!i->inst) {
        sl_capacity_release(&c->capacity, i->fp_cpu, i->fp_memory);
        free(i);
        sl_err(MOD, "starting an instance of %s: %s", r->name, err.msg);
        instance_failed_start(r, err.msg);
        return -1;
    }
    ctl_obs_instance_start(i);
    /* Cloud Run's session affinity cookie lasts 30 days */
    if (cfg->session_affinity)
        i->cookie = xasprintf("%s=%s; Path=/; Max-Age=2592000; HttpOnly", SL_AFFINITY_COOKIE,
                              sl_instance_id(i->inst));
    i->next = r->instances;
    if (r->instances)
        r->instances->prev = i;
    r->instances = i;
    r->n_instances++;
    r->n_starting++;
    return 0;
}

/* Event-driven part of scaling (the autoscaler tick does the rest): a
 * retired revision stops everything (its queued requests move to the
 * service's current traffic); a revision that has never been ready
 * reaches its initial scale; requests waiting with no capacity and nothing
 * starting get an instance at once (scale from zero without waiting for a
 * tick), first by taking back a draining one. A revision whose instances
 * fail to start retries with exponential backoff (0.5 s doubling to 64 s). */
static void ctl_requeue_waiters(rev_rt_t *r);

void ctl_rev_ensure(rev_rt_t *r)
{
    sl_controller_t *c = r->ctl;
    if (r->retired || c->shutting_down) {
        if (r->retry)
            uv_timer_stop(r->retry);
        for (inst_rt_t *i = r->instances; i; i = i->next)
            ctl_stop_instance(i);
        if (c->shutting_down)
            ctl_fail_waiters(r, 503, "revision is no longer serving");
        else
            ctl_requeue_waiters(r);
        return;
    }
    if (!r->image || r->blocked || (r->retry && uv_is_active((uv_handle_t *)r->retry)))
        return;
    int max = ctl_max_scale(r);
    int active = r->n_instances - r->n_draining;
    int want = active;
    if (!r->ever_ready && want < r->initial_scale)
        want = r->initial_scale;
    if (r->n_waiting > 0 && r->n_starting == 0 && !ctl_pick_instance(r)) {
        if (ctl_undrain(r, 1)) {
            ctl_dispatch(r);
            return;
        }
        int act = r->as.cfg.activation_scale > 0 ? r->as.cfg.activation_scale : 1;
        want = active == 0 ? act : active + 1;
    }
    if (want > max)
        want = max;
    if (active >= want)
        return;
    if (r->state == REV_FAILED && r->failures > 0 && !r->backoff_due) {
        if (!r->retry)
            r->retry = ctl_timer_new(c->loop, r);
        uint64_t backoff = 500u << (r->failures > 8 ? 7 : r->failures - 1);
        uv_timer_start(r->retry, retry_fire, backoff, 0);
        return;
    }
    r->backoff_due = false;
    while (r->n_instances - r->n_draining < want)
        if (ctl_start_instance(r) < 0)
            break;
}

void ctl_rev_load_changed(rev_rt_t *r, uint64_t now)
{
    sl_as_record(&r->as, (double)(r->inflight + (int)r->n_waiting), now);
}

void ctl_as_config_for(const sl_controller_t *c, const sl_revision_cfg_t *cfg, sl_as_config_t *out)
{
    *out = c->as_defaults;
    /* Knative's ResolveMetricTarget: containerConcurrency when it is set
     * (the daemon's default only for unlimited concurrency); an annotated
     * target instead, but never above containerConcurrency. With the rps
     * metric: 200 requests per second, or the annotated target. */
    out->container_concurrency = cfg->concurrency;
    out->rps = cfg->metric_rps;
    if (cfg->metric_rps)
        out->target = cfg->target > 0 ? cfg->target : SL_AS_RPS_TARGET_DEFAULT;
    else if (cfg->concurrency > 0)
        out->target = cfg->concurrency;
    if (cfg->target > 0 && !cfg->metric_rps)
        out->target =
            cfg->concurrency > 0 && cfg->target > cfg->concurrency ? cfg->concurrency : cfg->target;
    if (cfg->target_utilization_pct > 0)
        out->utilization = cfg->target_utilization_pct / 100.0;
    if (cfg->window_ns > 0)
        out->stable_window_ns = cfg->window_ns;
    if (cfg->panic_window_pct > 0)
        out->panic_window_pct = cfg->panic_window_pct;
    if (cfg->panic_threshold_pct > 0)
        out->panic_threshold_pct = cfg->panic_threshold_pct;
    if (cfg->min_scale >= 0)
        out->min_scale = cfg->min_scale;
    if (cfg->max_scale >= 0)
        out->max_scale = cfg->max_scale;
    if (cfg->activation_scale > 0)
        out->activation_scale = cfg->activation_scale;
    if (cfg->retention_ns > 0)
        out->retention_ns = cfg->retention_ns;
    if (cfg->scale_down_delay_ns > 0)
        out->scale_down_delay_ns = cfg->scale_down_delay_ns;
    if (out->max_scale == 0 || out->max_scale > c->max_scale)
        out->max_scale = c->max_scale;
}

static void free_handle_cb(uv_handle_t *h)
{
    free(h);
}

uv_timer_t *ctl_timer_new(uv_loop_t *loop, void *data)
{
    uv_timer_t *t = xcalloc(1, sizeof(*t));
    uv_timer_init(loop, t);
    t->data = data;
    return t;
}

void ctl_timer_close(uv_timer_t **t)
{
    if (*t) {
        uv_close((uv_handle_t *)*t, free_handle_cb);
        *t = NULL;
    }
}

static void rev_free(rev_rt_t *r)
{
    sl_controller_t *c = r->ctl;
    if (r->all_prev)
        r->all_prev->all_next = r->all_next;
    else
        c->revs = r->all_next;
    if (r->all_next)
        r->all_next->all_prev = r->all_prev;
    CTL_BUCKET_REMOVE(&c->rev_buckets[ctl_hash_name(r->cfg->namespace_, r->name)], r);
    ctl_timer_close(&r->retry);
    json_decref(r->obj);
    sl_revision_cfg_free(r->cfg);
    sl_image_free(r->image);
    free(r->reason);
    free(r->client_reason);
    free(r->crash_reason);
    free(r->class_name);
    sl_as_free(&r->as);
    ctl_obs_rev_free(r);
    free(r->name);
    free(r);
}

void ctl_rev_maybe_free(rev_rt_t *r)
{
    sl_controller_t *c = r->ctl;
    if ((r->retired || c->shutting_down) && r->n_instances == 0 && r->n_waiting == 0 &&
        r->n_lingering == 0) {
        if (r->svc) {
            if (r->svc->latest == r)
                r->svc->latest = NULL;
            if (r->svc->ready == r)
                r->svc->ready = NULL;
            ctl_rollout_forget(r->svc, r);
        }
        rev_free(r);
        if (c->shutting_down && !c->revs && c->shutdown_done) {
            void (*done)(void *) = c->shutdown_done;
            c->shutdown_done = NULL;
            done(c->shutdown_data);
        }
    }
}

rev_rt_t *ctl_rev_new(sl_controller_t *c, svc_rt_t *s, json_t *obj, sl_error_t *err)
{
    sl_revision_cfg_t *cfg = NULL;
    if (sl_revision_cfg_from_json(obj, &cfg, err) < 0)
        return NULL;
    json_t *img = NULL;
    sl_image_t *image = NULL;
    const char *id = cfg->image_id ? cfg->image_id : "";
    const char *hex = strncmp(id, "sha256:", 7) == 0 ? id + 7 : id;
    if (sl_store_get(c->store, "images", "", hex, &img, err) < 0 ||
        !(image = sl_image_from_json(img, err))) {
        json_decref(img);
        sl_revision_cfg_free(cfg);
        return NULL;
    }
    json_decref(img);
    rev_rt_t *r = xcalloc(1, sizeof(*r));
    r->ctl = c;
    r->svc = s;
    r->name = xstrdup(cfg->name);
    r->obj = json_incref(obj);
    r->cfg = cfg;
    r->image = image;
    const char *ready = NULL;
    json_t *conds = sl_json_path(obj, "status.conditions");
    size_t k;
    json_t *cnd;
    const char *ready_reason = NULL, *ready_msg = NULL;
    json_array_foreach(conds, k, cnd)
    {
        if (!strcmp(sl_json_str(cnd, "type") ? sl_json_str(cnd, "type") : "", "Ready")) {
            ready = sl_json_str(cnd, "status");
            ready_reason = sl_json_str(cnd, "reason");
            ready_msg = sl_json_str(cnd, "message");
        }
    }
    r->ever_ready = ready && !strcmp(ready, "True");
    r->state = REV_PENDING;
    r->created_ns = sl_now_ns();
    if (ready_reason && !strcmp(ready_reason, "ProgressDeadlineExceeded")) {
        /* it stopped trying before the restart, and still does */
        r->state = REV_FAILED;
        r->deadline_exceeded = r->blocked = true;
        r->failures = 1;
        r->reason = xstrdup(ready_msg ? ready_msg : "not ready within the progress deadline");
        r->client_reason = client_reason(r, r->reason);
    }
    if (ctl_rev_resolve_class(r, err) < 0) {
        /* Kept, but failed: the service reports why. */
        r->state = REV_FAILED;
        free(r->reason);
        free(r->client_reason);
        r->reason = xstrdup(err->msg);
        r->client_reason = client_reason(r, r->reason);
        r->failures = 1;
        r->blocked = true;
    }
    ctl_obs_rev_init(r);
    sl_as_config_t asc;
    ctl_as_config_for(c, cfg, &asc);
    sl_as_init(&r->as, &asc, sl_now_ns());
    r->initial_scale = cfg->initial_scale >= 0 ? cfg->initial_scale : 1;
    if (r->initial_scale < asc.min_scale)
        r->initial_scale = asc.min_scale;
    r->all_next = c->revs;
    if (c->revs)
        c->revs->all_prev = r;
    c->revs = r;
    CTL_BUCKET_PUSH(&c->rev_buckets[ctl_hash_name(cfg->namespace_, r->name)], r);
    return r;
}

/* ---- services --------------------------------------------------------- */

svc_rt_t *ctl_svc_new(sl_controller_t *c, json_t *obj)
{
    svc_rt_t *s = xcalloc(1, sizeof(*s));
    s->ctl = c;
    s->ns = xstrdup(sl_json_str(obj, "metadata.namespace"));
    s->name = xstrdup(sl_json_str(obj, "metadata.name"));
    s->host = ctl_host_for(c, s->ns, s->name);
    s->url = ctl_url_for(c, s->host);
    s->obj = json_incref(obj);
    ctl_svc_set_traffic(s, NULL);
    s->next = c->svcs;
    if (c->svcs)
        c->svcs->prev = s;
    c->svcs = s;
    CTL_BUCKET_PUSH(&c->svc_buckets[ctl_hash_name(s->ns, s->name)], s);
    return s;
}

void ctl_svc_free(svc_rt_t *s)
{
    sl_controller_t *c = s->ctl;
    ctl_svc_clear_routes(s);
    if (s->prev)
        s->prev->next = s->next;
    else
        c->svcs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    CTL_BUCKET_REMOVE(&c->svc_buckets[ctl_hash_name(s->ns, s->name)], s);
    for (rev_rt_t *r = c->revs; r; r = r->all_next)
        if (r->svc == s)
            r->svc = NULL;
    ctl_rollout_clear(s);
    json_decref(s->obj);
    free(s->ns);
    free(s->name);
    free(s->host);
    free(s->url);
    free(s->loaded_ready);
    free(s);
}

void ctl_retire_all(svc_rt_t *s)
{
    sl_controller_t *c = s->ctl;
    rev_rt_t *r = c->revs;
    while (r) {
        rev_rt_t *next = r->all_next;
        if (r->svc == s) {
            r->retired = true;
            r->svc = NULL;
            ctl_rev_ensure(r);
            ctl_rev_maybe_free(r);
        }
        r = next;
    }
}

/* Make `r` the service's latest revision; the ready one keeps serving until
 * r is ready. */
void ctl_svc_set_latest(svc_rt_t *s, rev_rt_t *r)
{
    s->latest = r;
    ctl_svc_reconcile(s);
    ctl_rev_ensure(r);
}

/* ---- router ops ------------------------------------------------------- */

static void *op_resolve(void *ctx, sl_str_t host)
{
    return ctl_route_find(ctx, host.p, host.len);
}

/* A slot on r for w now (SL_OK, pick filled), w queued on r (SL_AGAIN), or
 * an HTTP status with *reason. */
static int rev_acquire(rev_rt_t *r, sl_waiter_t *w, sl_pick_t *pick, const char **reason)
{
    sl_controller_t *c = r->ctl;
    if (!w->retry) /* a request sent again is one arrival */
        sl_as_arrival(&r->as, w->enqueued_ns);
    inst_rt_t *i = NULL;
    bool sticky = false;
    if (!r->wq_head) {
        if (r->cfg->session_affinity && w->affinity.len)
            sticky = (i = sticky_instance(r, w->affinity)) != NULL;
        if (!i)
            i = ctl_pick_instance(r);
    }
    if (i) {
        *pick = inst_take(i, ctl_obs_request_begin(i, w->enqueued_ns), sticky ? NULL : i->cookie);
        ctl_rev_load_changed(r, w->enqueued_ns);
        return SL_OK;
    }
    /* A revision that never started answers at once, as Cloud Run does,
     * while it retries in the background: a request would otherwise wait
     * for a start that is likely to fail the same way. One that has served
     * before queues requests for its retry (a cold start can fail once). */
    if (r->state == REV_FAILED && r->n_ready == 0 && !r->ever_ready) {
        int st = r->unschedulable ? 503 : 502;
        *reason = r->unschedulable   ? r->reason
                  : r->client_reason ? r->client_reason
                                     : "revision failed to start";
        ctl_obs_answered(r, st);
        return st;
    }
    if (r->n_waiting >= c->queue_max) {
        *reason = "request queue is full";
        ctl_obs_answered(r, 503);
        return 503;
    }
    wq_push(r, w);
    ctl_rev_ensure(r);
    return SL_AGAIN;
}

static int op_acquire(void *ctx, void *target, sl_waiter_t *w, sl_pick_t *pick, const char **reason)
{
    sl_controller_t *c = ctx;
    rev_rt_t *r = ctl_route_pick(target);
    if (!r || c->shutting_down) {
        *reason = "service has no revision to serve";
        return 503;
    }
    return rev_acquire(r, w, pick, reason);
}

/* A revision left every traffic target while requests waited for it (a
 * deploy or a traffic move at capacity): they go where the service's
 * traffic goes now, as new requests do, instead of failing. */
static void ctl_requeue_waiters(rev_rt_t *r)
{
    svc_rt_t *s = r->svc;
    while (r->wq_head) {
        sl_waiter_t *w = r->wq_head;
        rev_rt_t *to = s && s->n_routes ? ctl_route_pick(&s->routes[0]) : NULL;
        if (!to || to == r || to->retired) {
            ctl_fail_waiters_one(r, w, 503, "revision is no longer serving");
            continue;
        }
        wq_remove(r, w);
        sl_pick_t pick = {0};
        const char *reason = NULL;
        int st = rev_acquire(to, w, &pick, &reason);
        if (st == SL_OK)
            w->ready(w, 0, &pick, NULL);
        else if (st != SL_AGAIN)
            w->ready(w, st, NULL, reason);
    }
}

static void op_cancel(void *ctx, void *target, sl_waiter_t *w)
{
    rev_rt_t *r = w->owner_data;
    if (r) {
        wq_remove(r, w);
        ctl_rev_maybe_free(r);
    }
}

static void op_release(void *ctx, const sl_pick_t *pick, int status, bool failed)
{
    inst_rt_t *i = pick->instance;
    rev_rt_t *r = i->rev;
    uint64_t now = sl_now_ns();
    if (--i->inflight == 0)
        i->idle_ns = now;
    r->inflight--;
    ctl_rev_load_changed(r, now);
    /* A queued request takes the freed slot before this one's metering
     * ends, so back-to-back requests make one busy period, as they do for
     * an instance that never went idle. */
    if (!i->gone && !failed && r->wq_head)
        ctl_dispatch(r);
    ctl_obs_request_end(i, pick->token, status, failed, now);
    if (i->gone) {
        if (i->inflight == 0) {
            r->n_lingering--;
            ctl_inst_free(i);
            ctl_rev_maybe_free(r);
        }
        return;
    }
    /* Outlier ejection: an instance whose requests keep failing gets no
     * more until it is replaced or recovers. */
    if (failed && ++i->fail_streak == 3) {
        sl_warn(MOD, "instance %s: 3 requests in a row failed; taking it out of rotation",
                sl_instance_id(i->inst));
        ctl_stop_instance(i);
    } else if (!failed) {
        i->fail_streak = 0;
    }
    if (i->draining && i->inflight == 0)
        ctl_stop_instance(i);
    ctl_dispatch(r);
    /* Only a failure can have taken capacity away that waiters now need. */
    if (failed)
        ctl_rev_ensure(r);
}

/* The revision whose timeout a request to the route gets while it waits
 * for an instance (the pick then carries the serving revision's). */
static const sl_revision_cfg_t *route_cfg(const route_t *rt)
{
    svc_rt_t *s = rt->svc;
    rev_rt_t *r =
        rt->target >= 0 ? ctl_target_rev(s, &s->traffic[rt->target]) : ctl_route_default(s);
    return r ? r->cfg : NULL;
}

static uint64_t op_timeout_ms(void *ctx, void *target)
{
    const sl_revision_cfg_t *cfg = route_cfg(target);
    return (uint64_t)(cfg ? cfg->timeout_s : SL_DEFAULT_TIMEOUT_S) * 1000u;
}

const sl_router_ops_t sl_controller_router_ops = {
    .resolve = op_resolve,
    .acquire = op_acquire,
    .cancel = op_cancel,
    .release = op_release,
    .timeout_ms = op_timeout_ms,
};

/* ---- lifecycle -------------------------------------------------------- */

int sl_controller_new(uv_loop_t *loop, sl_store_t *store, sl_supervisor_t *sup,
                      const sl_controller_config_t *cfg, sl_controller_t **out, sl_error_t *err)
{
    sl_controller_t *c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->store = store;
    c->sup = sup;
    c->state_dir = xstrdup(cfg->state_dir);
    c->domain = xstrdup(cfg->domain);
    c->url_port = cfg->url_port;
    c->queue_max = cfg->queue_max ? cfg->queue_max : 1000;
    c->max_scale = cfg->max_scale_default > 0 ? cfg->max_scale_default : 100;
    if (cfg->autoscaling)
        c->as_defaults = *cfg->autoscaling;
    else
        sl_as_config_defaults(&c->as_defaults);
    c->queue_deadline_ns = (cfg->queue_deadline_ms ? cfg->queue_deadline_ms : 10000) * 1000000ull;
    if (cfg->revision_gc)
        c->gc = *cfg->revision_gc;
    else
        sl_revision_gc_defaults(&c->gc);
    if (sl_capacity_init(&c->capacity, cfg->capacity_cpu_millis, cfg->capacity_memory, err) < 0) {
        free(c->state_dir);
        free(c->domain);
        free(c);
        return -1;
    }
    if (ctl_obs_init(c, cfg->prices, err) < 0) {
        free(c->state_dir);
        free(c->domain);
        free(c);
        return -1;
    }
    c->image_root = cfg->image_root ? xstrdup(cfg->image_root) : NULL;
    c->egress = cfg->egress;
    ctl_scale_start(c);
    ctl_gc_start(c);
    *out = c;
    return 0;
}

void sl_controller_set_router(sl_controller_t *c, sl_router_t *r)
{
    c->router = r;
}

void sl_controller_forget_router(sl_controller_t *c)
{
    c->router = NULL;
    for (rev_rt_t *r = c->revs; r; r = r->all_next)
        for (inst_rt_t *i = r->instances; i; i = i->next)
            i->pool = NULL;
}

rev_rt_t *ctl_rev_load(svc_rt_t *s, const char *name, sl_error_t *err)
{
    json_t *obj = NULL;
    if (sl_store_get(s->ctl->store, "revisions", s->ns, name, &obj, err) < 0)
        return NULL;
    rev_rt_t *r = ctl_rev_new(s->ctl, s, obj, err);
    json_decref(obj);
    return r;
}

static void load_service(sl_controller_t *c, json_t *obj)
{
    svc_rt_t *s = ctl_svc_new(c, obj);
    const char *latest = sl_json_str(obj, "status.latestCreatedRevisionName");
    const char *ready = sl_json_str(obj, "status.latestReadyRevisionName");
    s->loaded_ready = ready ? xstrdup(ready) : NULL;
    sl_error_t err = {0};
    const char *names[2] = {ready, latest};
    for (int k = 0; k < 2; k++) {
        if (!names[k] || (k == 1 && ready && !strcmp(ready, latest)))
            continue;
        rev_rt_t *r = ctl_rev_load(s, names[k], &err);
        if (!r) {
            sl_err(MOD, "service %s/%s: revision %s: %s", s->ns, s->name, names[k], err.msg);
            continue;
        }
        if (k == 0)
            s->ready = r;
        if (!latest || !strcmp(names[k], latest))
            s->latest = r;
    }
    json_t *ro = sl_json_path(obj, "status.rollout");
    if (ro)
        ctl_rollout_restore(s, ro);
    ctl_svc_reconcile(s);
    for (size_t i = 0; i + 1 < s->n_ro; i++)
        ctl_rev_ensure(s->ro[i].rev);
    if (s->ready)
        ctl_rev_ensure(s->ready);
    if (s->latest && s->latest != s->ready)
        ctl_rev_ensure(s->latest);
}

int sl_controller_load(sl_controller_t *c, sl_error_t *err)
{
    json_t *list = NULL;
    if (sl_store_list(c->store, "services", NULL, &list, err) < 0)
        return -1;
    size_t i;
    json_t *obj;
    json_array_foreach(list, i, obj) load_service(c, obj);
    sl_info(MOD, "loaded %zu services", json_array_size(list));
    json_decref(list);
    return 0;
}

static void shutdown_check(sl_controller_t *c)
{
    if (!c->revs && c->shutdown_done) {
        void (*done)(void *) = c->shutdown_done;
        c->shutdown_done = NULL;
        done(c->shutdown_data);
    }
}

void sl_controller_shutdown(sl_controller_t *c, void (*done)(void *), void *data)
{
    c->shutting_down = true;
    ctl_scale_stop(c);
    ctl_gc_stop(c);
    ctl_obs_stop(c);
    c->shutdown_done = done;
    c->shutdown_data = data;
    rev_rt_t *r = c->revs;
    while (r) {
        rev_rt_t *next = r->all_next;
        ctl_rev_ensure(r);
        ctl_rev_maybe_free(r);
        r = next;
    }
    shutdown_check(c);
}

void sl_controller_free(sl_controller_t *c)
{
    if (!c)
        return;
    while (c->svcs)
        ctl_svc_free(c->svcs);
    ctl_obs_free(c);
    free(c->state_dir);
    free(c->image_root);
    free(c->domain);
    free(c);
}
