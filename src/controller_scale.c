/*
 * controller_scale.c — the autoscaling pass. Every tick each serving
 * revision asks its autoscaler how many instances it wants, then starts
 * instances or drains the least-loaded ones (a draining instance takes no
 * new requests and is stopped — SIGTERM, grace, SIGKILL — once its last
 * request finished, so scaling in drops nothing). Requests that waited past
 * the queue deadline while the revision is at max scale get 429.
 */
#include "controller_int.h"

#include <stdio.h>

static const char *MOD = "autoscaler";

int ctl_max_scale(const rev_rt_t *r)
{
    return r->as.cfg.max_scale > 0 ? r->as.cfg.max_scale : r->ctl->max_scale;
}

/* Drain `n` instances: starting ones that are not needed first, then the
 * ready ones with the fewest requests in flight. */
static void drain(rev_rt_t *r, int n)
{
    while (n > 0) {
        inst_rt_t *victim = NULL;
        for (inst_rt_t *i = r->instances; i; i = i->next) {
            if (i->draining || i->stopped)
                continue;
            if (!victim || (!i->ready && victim->ready) ||
                (i->ready == victim->ready && i->inflight < victim->inflight))
                victim = i;
        }
        if (!victim)
            return;
        victim->draining = true;
        r->n_draining++;
        if (victim->inflight == 0)
            ctl_stop_instance(victim);
        n--;
    }
}

/* Take back draining instances before starting new ones. */
int ctl_undrain(rev_rt_t *r, int n)
{
    int got = 0;
    for (inst_rt_t *i = r->instances; i && got < n; i = i->next) {
        if (i->draining && !i->stopped) {
            i->draining = false;
            r->n_draining--;
            got++;
        }
    }
    return got;
}

static void expire_queue(rev_rt_t *r, uint64_t now)
{
    sl_controller_t *c = r->ctl;
    if (r->n_instances < ctl_max_scale(r))
        return;
    while (r->wq_head && now - r->wq_head->enqueued_ns > c->queue_deadline_ns) {
        sl_waiter_t *w = r->wq_head;
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "revision %s is at its maximum scale (%d instances) and no instance freed up "
                 "within %.0f s; retry later",
                 r->name, ctl_max_scale(r), (double)c->queue_deadline_ns / 1e9);
        ctl_fail_waiters_one(r, w, 429, msg);
    }
}

static void scale_revision(rev_rt_t *r, uint64_t now)
{
    if (r->retired || !r->image || r->blocked)
        return;
    int active = r->n_instances - r->n_draining;
    int ready = r->n_ready;
    for (inst_rt_t *i = r->instances; i; i = i->next)
        if (i->ready && i->draining)
            ready--;
    int desired = sl_as_decide(&r->as, ready, now);
    if (!r->ever_ready && desired < r->initial_scale)
        desired = r->initial_scale;
    /* A revision that keeps failing is retried by its backoff, not here. */
    if (r->state == REV_FAILED && r->n_ready == 0 && desired > active)
        desired = active;
    if (desired > ctl_max_scale(r))
        desired = ctl_max_scale(r);
    /* The node's free capacity caps what can be added. */
    if (desired > active) {
        int room = ctl_capacity_headroom(r);
        if (desired > active + room)
            desired = active + room;
    }
    if (desired > active) {
        int need = desired - active - ctl_undrain(r, desired - active);
        if (need > 0)
            sl_debug(MOD, "%s: scaling up %d → %d (%s, observed %.2f/%.2f)", r->name, active,
                     desired, r->as.panic ? "panic" : "stable", r->as.observed_stable,
                     r->as.observed_panic);
        while (need-- > 0)
            if (ctl_start_instance(r) < 0)
                break;
        ctl_dispatch(r);
    } else if (desired < active && r->n_starting == 0) {
        if (desired != r->last_logged_desired)
            sl_debug(MOD, "%s: scaling down %d → %d", r->name, active, desired);
        drain(r, active - desired);
    }
    r->last_logged_desired = desired;
    expire_queue(r, now);
}

static void tick(uv_timer_t *t)
{
    sl_controller_t *c = t->data;
    uint64_t now = sl_now_ns();
    rev_rt_t *r = c->revs;
    while (r) {
        rev_rt_t *next = r->all_next;
        ctl_crash_loop_check(r, now);
        ctl_cpu_idle_check(r, now);
        scale_revision(r, now);
        r = next;
    }
    ctl_rollout_tick(c, now);
}

void ctl_scale_start(sl_controller_t *c)
{
    c->tick = ctl_timer_new(c->loop, c);
    uint64_t ms = c->as_defaults.tick_ns / 1000000u;
    uv_timer_start(c->tick, tick, ms ? ms : 100, ms ? ms : 100);
}

void ctl_scale_stop(sl_controller_t *c)
{
    ctl_timer_close(&c->tick);
}
