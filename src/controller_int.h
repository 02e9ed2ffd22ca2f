/*
 * controller_int.h — the controller's run-time structures, shared by
 * controller.c (instances, revisions, router ops) and controller_api.c
 * (applying, reading and deleting objects for the API). Not a public API.
 */
#ifndef SL_CONTROLLER_INT_H
#define SL_CONTROLLER_INT_H

#include "controller.h"
#include "image.h"
#include "autoscaler.h"
#include "capacity.h"
#include "meter.h"
#include "metrics.h"
#include "prices.h"
#include "revision_gc.h"
#include "runtimeclass.h"
#include "service.h"

#define HOST_BUCKETS 1024

/* A bucket chain (routes by host, services and revisions by
 * namespace/name) links its nodes through their hnext: put node at the
 * head of the chain at *head, or take it out. */
#define CTL_BUCKET_PUSH(head, node)                                                                \
    do {                                                                                           \
        (node)->hnext = *(head);                                                                   \
        *(head) = (node);                                                                          \
    } while (0)
#define CTL_BUCKET_REMOVE(head, node)                                                              \
    do {                                                                                           \
        for (__typeof__(node) *pp_ = (head); *pp_; pp_ = &(*pp_)->hnext) {                         \
            if (*pp_ == (node)) {                                                                  \
                *pp_ = (node)->hnext;                                                              \
                break;                                                                             \
            }                                                                                      \
        }                                                                                          \
    } while (0)

typedef struct svc_rt svc_rt_t;
typedef struct rev_rt rev_rt_t;
typedef struct inst_rt inst_rt_t;
typedef struct ctl_obs ctl_obs_t;
typedef struct ctl_rev_metrics ctl_rev_metrics_t;

typedef enum { REV_PENDING, REV_READY, REV_FAILED } rev_state_t;

struct inst_rt {
    rev_rt_t *rev;
    sl_instance_t *inst;
    sl_upstream_pool_t *pool;
    int inflight;
    bool ready;
    bool draining;             /* chosen for scale-down: no new requests, stop when idle */
    bool stopped;              /* sluice asked it to stop; its exit is not a failure */
    bool gone;                 /* exited; kept only until the router releases it */
    bool dying;                /* its process exited or is being stopped: no new requests */
    bool unready;              /* failing its readiness probe after it was ready */
    uint64_t ready_ns;         /* when it became ready */
    uint64_t idle_ns;          /* when its last request ended */
    bool cpu_idle;             /* held to idle CPU (sl_instance_set_cpu_idle) */
    int fail_streak;           /* consecutive failed requests; ejected at 3 */
    int64_t fp_cpu, fp_memory; /* capacity reserved for it */
    sl_meter_instance_t *meter;
    char *cookie; /* session affinity's Set-Cookie value naming it; NULL without */
    inst_rt_t *prev, *next;
};

struct rev_rt {
    sl_controller_t *ctl;
    svc_rt_t *svc; /* NULL once retired from its service */
    char *name;
    json_t *obj; /* stored Revision */
    sl_revision_cfg_t *cfg;
    sl_image_t *image;
    inst_rt_t *instances;
    int n_instances, n_ready, n_starting, n_draining;
    int n_lingering; /* exited instances still referenced by requests */
    int inflight;    /* requests in flight on all instances */
    sl_autoscaler_t as;
    int initial_scale;            /* instances to reach before the first Ready */
    sl_runtime_profile_t profile; /* from the runtime class */
    char *class_name;
    bool unschedulable; /* the last start did not fit the node */
    bool blocked;       /* cannot run at all (e.g. its runtime class is gone) */
    int last_logged_desired;
    ctl_rev_metrics_t *metrics;
    sl_waiter_t *wq_head, *wq_tail;
    size_t n_waiting;
    rev_state_t state;
    char *reason;
    char *client_reason; /* what HTTP clients are told of a failed start (no app output) */
    int failures;
    /* Instances that crash soon after they became ready (a crash loop):
     * restarts wait, 1 s doubling to 60 s, as Kubernetes' CrashLoopBackOff. */
    uint64_t created_ns;    /* when this daemon loaded or created it (progress deadline) */
    bool deadline_exceeded; /* never Ready within its progress deadline: stopped trying */
    int restarts;           /* ready instances that exited on their own */
    int crash_streak;       /* of them, in a row, each up for under CRASH_UPTIME */
    uint64_t crash_until;   /* no instance starts before (sl_now_ns) */
    uint64_t crash_last;    /* the last of those exits */
    char *crash_reason;     /* its exit reason */
    bool ever_ready;
    bool retired;
    bool backoff_due;
    uv_timer_t *retry;
    rev_rt_t *all_prev, *all_next; /* controller's list of live revisions */
    rev_rt_t *hnext;               /* its bucket in rev_buckets, by namespace/name */
};

/* One spec.traffic entry. */
typedef struct traffic_target {
    char *revision; /* NULL: latestRevision (the latest ready one) */
    int percent;
    char *tag; /* NULL when untagged */
} traffic_target_t;

/* A host the router resolves: the service's split, or one tag. */
typedef struct route {
    svc_rt_t *svc;
    int target; /* -1: the weighted split; else index of the tagged target */
    char *host;
    struct route *hnext;
} route_t;

struct svc_rt {
    sl_controller_t *ctl;
    char *ns, *name, *host, *url;
    json_t *obj; /* stored Service (with status) */
    rev_rt_t *latest;
    rev_rt_t *ready;
    traffic_target_t *traffic;
    size_t n_traffic;
    route_t *routes; /* [0] the service host, then one per tag */
    size_t n_routes;
    char *loaded_ready; /* status.latestReadyRevisionName when loaded, until ready is set */
    /* A gradual rollout (serving.knative.dev/rollout-duration) of the
     * latest-revision traffic: revisions oldest first, with their percent
     * of the service's traffic (adding up to ro_total, the latest
     * revision's part); the newest is `ready`. Empty when none is under
     * way. */
    struct ctl_rollout {
        rev_rt_t *rev;
        int pct;
    } * ro;
    size_t n_ro;
    int ro_total;
    int ro_step;                     /* share moved to the newest per step */
    uint64_t ro_step_ns, ro_next_ns; /* time between steps, and of the next */
    bool gc_seen;                    /* visited by the revision collector's pass */
    svc_rt_t *prev, *next;
    svc_rt_t *hnext; /* its bucket in svc_buckets, by namespace/name */
};

struct sl_controller {
    uv_loop_t *loop;
    sl_store_t *store;
    sl_supervisor_t *sup;
    sl_router_t *router;
    char *state_dir, *domain;
    char *image_root; /* NULL, or images only from below it (sl_image_limits_t.root) */
    bool egress;      /* serve --egress: revisions' default */
    int url_port;
    size_t queue_max;
    int max_scale;
    sl_as_config_t as_defaults;
    uint64_t queue_deadline_ns;
    uv_timer_t *tick;
    sl_revision_gc_t gc;
    uv_timer_t *gc_timer;
    sl_capacity_t capacity;
    ctl_obs_t *obs;
    route_t *buckets[HOST_BUCKETS];
    /* Services and live revisions by namespace/name: a revision a traffic
     * target names is found on every request it routes. */
    svc_rt_t *svc_buckets[HOST_BUCKETS];
    rev_rt_t *rev_buckets[HOST_BUCKETS];
    svc_rt_t *svcs;
    rev_rt_t *revs;
    bool shutting_down;
    void (*shutdown_done)(void *);
    void *shutdown_data;
};

/* Whether an apply of service ns/name is under way (controller_api.c). */
bool ctl_apply_pending(const char *ns, const char *name);

/* A heap timer on the loop (data set), and its close (it is freed once
 * closed; *t becomes NULL; a NULL *t is left alone). */
uv_timer_t *ctl_timer_new(uv_loop_t *loop, void *data);
void ctl_timer_close(uv_timer_t **t);

/* Revision garbage collection (controller_gc.c). */
void ctl_gc_start(sl_controller_t *c);
void ctl_gc_stop(sl_controller_t *c);
void ctl_gc_pass(sl_controller_t *c);
/* The revision left every traffic target (routed false) or came back:
 * record its routing state and since when, in its stored object. */
void ctl_gc_routing_changed(rev_rt_t *r, bool routed);

svc_rt_t *ctl_svc_find(sl_controller_t *c, const char *ns, const char *name);
svc_rt_t *ctl_svc_new(sl_controller_t *c, json_t *obj);
void ctl_svc_free(svc_rt_t *s);
void ctl_svc_update_status(svc_rt_t *s);
void ctl_svc_changed(svc_rt_t *s);
void ctl_svc_set_latest(svc_rt_t *s, rev_rt_t *r);
void ctl_retire_all(svc_rt_t *s);
rev_rt_t *ctl_rev_new(sl_controller_t *c, svc_rt_t *s, json_t *obj, sl_error_t *err);
void ctl_rev_update_status(rev_rt_t *r);
void ctl_rev_ensure(rev_rt_t *r);
/* Requests in flight plus queued changed: feed the autoscaler. */
/* In-flight + queued changed at monotonic time now (sl_now_ns). */
void ctl_rev_load_changed(rev_rt_t *r, uint64_t now);
inst_rt_t *ctl_pick_instance(rev_rt_t *r);
int ctl_start_instance(rev_rt_t *r);
void ctl_stop_instance(inst_rt_t *i);
void ctl_fail_waiters(rev_rt_t *r, int status, const char *reason);
void ctl_fail_waiters_one(rev_rt_t *r, sl_waiter_t *w, int status, const char *reason);
void ctl_dispatch(rev_rt_t *r);
/* Autoscaler settings for a revision: daemon defaults overridden by its
 * annotations. */
void ctl_as_config_for(const sl_controller_t *c, const sl_revision_cfg_t *cfg, sl_as_config_t *out);
/* controller_traffic.c: spec.traffic → targets and routes; which
 * revisions a service keeps alive. */
int ctl_svc_set_traffic(svc_rt_t *s, sl_error_t *err);
void ctl_svc_clear_routes(svc_rt_t *s);
void ctl_svc_reconcile(svc_rt_t *s);
rev_rt_t *ctl_target_rev(svc_rt_t *s, const traffic_target_t *t);
/* The revision a route serves when no target decides: latest ready, else
 * latest created. */
rev_rt_t *ctl_route_default(svc_rt_t *s);
rev_rt_t *ctl_route_pick(route_t *rt);
/* The hosts svc would serve (NAME's, and TAG-NAME's for each tag) are
 * served by no other service: one host, one service, or it would route to
 * whichever set its routes last. 0, or -1 with err naming the host and the
 * service that has it. */
int ctl_hosts_free(sl_controller_t *c, const json_t *svc, const char *ns, const char *name,
                   sl_error_t *err);
route_t *ctl_route_find(sl_controller_t *c, const char *host, size_t len);
json_t *ctl_traffic_status(svc_rt_t *s);
/* Gradual rollout: `to` became ready and takes the latest-revision traffic
 * from s->ready over the service's rollout duration (nothing happens
 * without one). The tick moves it on; ctl_rollout_has: r still takes part. */
void ctl_rollout_begin(svc_rt_t *s, rev_rt_t *to, uint64_t now);
void ctl_rollout_tick(sl_controller_t *c, uint64_t now);
/* Ends a revision's crash loop once an instance has stayed up (the tick). */
void ctl_crash_loop_check(rev_rt_t *r, uint64_t now);
/* Hold the revision's instances idle for a while to idle CPU (each tick). */
void ctl_cpu_idle_check(rev_rt_t *r, uint64_t now);
bool ctl_rollout_has(const svc_rt_t *s, const rev_rt_t *r);
void ctl_rollout_clear(svc_rt_t *s);
/* r is being freed: it leaves the rollout (which ends if one is left). */
void ctl_rollout_forget(svc_rt_t *s, const rev_rt_t *r);
/* status.rollout while one is under way (NULL otherwise), and at load the
 * rollout a stored status.rollout describes. */
json_t *ctl_rollout_status(const svc_rt_t *s);
void ctl_rollout_restore(svc_rt_t *s, const json_t *rollout);
rev_rt_t *ctl_rev_find(sl_controller_t *c, const char *ns, const char *name);
/* Free an instance record the router no longer holds. */
void ctl_inst_free(inst_rt_t *i);
/* Revision `name` of s from the store, made live (ctl_rev_new); NULL with err. */
rev_rt_t *ctl_rev_load(svc_rt_t *s, const char *name, sl_error_t *err);
char *ctl_host_for(sl_controller_t *c, const char *ns, const char *name);
char *ctl_url_for(sl_controller_t *c, const char *host);
uint32_t ctl_hash_host(const char *p, size_t n);
/* The bucket of a namespaced name: a service's or a revision's. */
uint32_t ctl_hash_name(const char *ns, const char *name);
void ctl_rev_maybe_free(rev_rt_t *r);
/* controller_api.c: an object a client wrote (a Secret, ConfigMap or
 * RuntimeClass): the metadata only the server sets (resourceVersion,
 * generation, managedFields, selfLink) dropped, and creationTimestamp and
 * uid set, old's when given. */
void ctl_stamp_written(json_t *obj, const json_t *old);
/* controller_data.c: what an instance of r reads from Secrets and ConfigMaps. */
int ctl_resolve(rev_rt_t *r, sl_revision_process_t *out, sl_error_t *err);
/* controller_rtc.c: runtime classes and capacity. */
int ctl_runtime_class_get(sl_controller_t *c, const char *name, sl_runtime_class_t **owned,
                          const sl_runtime_class_t **rc, sl_error_t *err);
int ctl_rev_resolve_class(rev_rt_t *r, sl_error_t *err);
int ctl_check_runtime_class(sl_controller_t *c, const char *name, sl_error_t *err);
void ctl_rev_footprint(const rev_rt_t *r, int64_t *cpu, int64_t *mem);
int ctl_capacity_reserve(rev_rt_t *r, int64_t *cpu, int64_t *mem, sl_error_t *err);
int ctl_capacity_headroom(const rev_rt_t *r);
/* controller_obs.c: metering and metrics. */
int ctl_obs_init(sl_controller_t *c, const sl_prices_t *prices, sl_error_t *err);
void ctl_obs_flush(sl_controller_t *c);
void ctl_obs_stop(sl_controller_t *c);
void ctl_obs_free(sl_controller_t *c);
void ctl_obs_rev_init(rev_rt_t *r);
void ctl_obs_rev_free(rev_rt_t *r);
void ctl_obs_answered(rev_rt_t *r, int status);
void ctl_obs_instance_start(inst_rt_t *i);
void ctl_obs_instance_ready(inst_rt_t *i);
void ctl_obs_instance_stopping(inst_rt_t *i);
void ctl_obs_instance_exited(inst_rt_t *i);
void ctl_obs_instance_free(inst_rt_t *i);
/* A request started / ended on i at monotonic time now (one clock read
 * serves the autoscaler and the meter). */
uint64_t ctl_obs_request_begin(inst_rt_t *i, uint64_t now);
void ctl_obs_request_end(inst_rt_t *i, uint64_t token, int status, bool failed, uint64_t now);
/* controller_scale.c: the periodic autoscaling pass. */
void ctl_scale_start(sl_controller_t *c);
/* Instances the revision may have at most (its max-scale, else the daemon's). */
int ctl_max_scale(const rev_rt_t *r);
/* Take up to n draining instances back into rotation; returns how many. */
int ctl_undrain(rev_rt_t *r, int n);
void ctl_scale_stop(sl_controller_t *c);

#endif
