/*
 * controller_int.h — the controller's run-time structures, shared by
 * controller.c (instances, revisions, router ops) and controller_api.c
 * (applying, reading and deleting objects for the API). Not a public API.
 */
#ifndef SL_CONTROLLER_INT_H
#define SL_CONTROLLER_INT_H

#include "controller.h"
#include "image.h"
#include "service.h"

#define HOST_BUCKETS 1024

typedef struct svc_rt svc_rt_t;
typedef struct rev_rt rev_rt_t;
typedef struct inst_rt inst_rt_t;

typedef enum { REV_PENDING, REV_READY, REV_FAILED } rev_state_t;

struct inst_rt {
    rev_rt_t *rev;
    sl_instance_t *inst;
    sl_upstream_pool_t *pool;
    int inflight;
    bool ready;
    inst_rt_t *prev, *next;
};

struct rev_rt {
    sl_controller_t *ctl;
    svc_rt_t *svc; /* NULL once retired from its service */
    char *name;
    json_t *obj;   /* stored Revision */
    sl_revision_cfg_t *cfg;
    sl_image_t *image;
    inst_rt_t *instances;
    int n_instances, n_ready, n_starting;
    sl_waiter_t *wq_head, *wq_tail;
    size_t n_waiting;
    rev_state_t state;
    char *reason;
    int failures;
    bool ever_ready;
    bool retired;
    bool backoff_due;
    uv_timer_t *retry;
    rev_rt_t *all_prev, *all_next; /* controller's list of live revisions */
};

struct svc_rt {
    sl_controller_t *ctl;
    char *ns, *name, *host, *url;
    json_t *obj; /* stored Service (with status) */
    rev_rt_t *latest;
    rev_rt_t *ready;
    bool busy; /* an apply is in progress */
    svc_rt_t *hnext;
    svc_rt_t *prev, *next;
};

struct sl_controller {
    uv_loop_t *loop;
    sl_store_t *store;
    sl_supervisor_t *sup;
    sl_router_t *router;
    char *state_dir, *domain;
    int url_port;
    size_t queue_max;
    int max_scale;
    svc_rt_t *buckets[HOST_BUCKETS];
    svc_rt_t *svcs;
    rev_rt_t *revs;
    bool shutting_down;
    void (*shutdown_done)(void *);
    void *shutdown_data;
};


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

#endif
