/*
 * controller.h — reconciles stored Services into running revisions.
 *
 * Owns the in-memory view of every service (host → service → revisions →
 * instances), applies changes from the API (validating, importing images on
 * the thread pool, cutting immutable revisions, storing them in one
 * transaction), starts and stops instances through the supervisor, and
 * answers the router's questions: which service a host names, which
 * instance may take a request now, and who waits for capacity.
 */
#ifndef SL_CONTROLLER_H
#define SL_CONTROLLER_H

#include "common.h"
#include "autoscaler.h"
#include "configdata.h"
#include "prices.h"
#include "router.h"
#include "store.h"
#include "supervisor.h"
#include "revision_gc.h"

#include <jansson.h>
#include <uv.h>

typedef struct sl_controller sl_controller_t;

typedef struct sl_controller_config {
    const char *state_dir;
    const char *domain;                /* "localhost" */
    int url_port;                      /* router port shown in URLs (80 → omitted) */
    size_t queue_max;                  /* waiting requests per revision before 503 (default 1000) */
    int max_scale_default;             /* instances per revision at most (default 100) */
    const sl_as_config_t *autoscaling; /* daemon-wide defaults; NULL = Knative's */
    uint64_t queue_deadline_ms;        /* queued this long at max scale → 429 (default 10000) */
    int64_t capacity_cpu_millis;       /* node allocatable; 0 = the machine's minus a reserve */
    int64_t capacity_memory;
    const sl_prices_t *prices;           /* NULL = list prices (prices.c) */
    const sl_revision_gc_t *revision_gc; /* NULL = Knative's defaults */
    const char *image_root;              /* a real path: images only from below it */
    bool egress;                         /* outbound networking unless a revision says no */
} sl_controller_config_t;

int sl_controller_new(uv_loop_t *loop, sl_store_t *store, sl_supervisor_t *sup,
                      const sl_controller_config_t *cfg, sl_controller_t **out, sl_error_t *err);
/* The router the controller creates upstream pools on; set before load. */
void sl_controller_set_router(sl_controller_t *c, sl_router_t *r);
/* The router closed (and freed every pool): drop pool pointers so nothing
 * touches them again. New instances get no pool. */
void sl_controller_forget_router(sl_controller_t *c);
/* Load every stored service and start what it needs. */
int sl_controller_load(sl_controller_t *c, sl_error_t *err);

/* Router ops; ctx is the controller. */
extern const sl_router_ops_t sl_controller_router_ops;

/* Result of an asynchronous API operation: HTTP status and a body (a
 * Knative object or a Status), ownership passes to the callback. */
typedef void (*sl_controller_cb)(int http_status, json_t *body, void *data);

/* sl_controller_apply flags. CREATE: refuse an existing service (POST).
 * DRY_RUN: validate and answer as the apply would (200 or 201 and the
 * object, or the error), storing, importing and starting nothing; the image
 * reference is only checked to exist (Kubernetes' ?dryRun=All). */
enum { SL_APPLY_CREATE = 1u << 0, SL_APPLY_DRY_RUN = 1u << 1 };

/* Create or create-or-replace a Service from a manifest; takes svc. */
void sl_controller_apply(sl_controller_t *c, json_t *svc, const char *ns_default, unsigned flags,
                         sl_controller_cb cb, void *data);
/* Import an image reference into the store. */
void sl_controller_import_image(sl_controller_t *c, const char *ref, sl_controller_cb cb,
                                void *data);

/* An answer rendered as JSON text (owned by the callback, len bytes). */
typedef void (*sl_controller_text_cb)(int http_status, char *text, size_t len, void *data);

/* The ServiceList and RevisionList answers (ns NULL: every namespace;
 * service NULL: every service's revisions). They are rendered a slice per
 * turn of the loop, so cb runs later, once the whole list is (it runs at
 * once, with a Status, if the store cannot be read). The controller must
 * stay up until cb has run. */
void sl_controller_list_services(sl_controller_t *c, const char *ns, sl_controller_text_cb cb,
                                 void *data);
void sl_controller_list_revisions(sl_controller_t *c, const char *ns, const char *service,
                                  sl_controller_text_cb cb, void *data);

/* Synchronous reads and deletes; return HTTP status, *body set. */
int sl_controller_get_service(sl_controller_t *c, const char *ns, const char *name, json_t **body);
int sl_controller_list_instances(sl_controller_t *c, const char *ns, const char *service,
                                 json_t **body);
int sl_controller_list_images(sl_controller_t *c, json_t **body);
/* pre: the DELETE's DeleteOptions.preconditions, or NULL (see
 * sl_check_delete_preconditions). */
int sl_controller_delete_service(sl_controller_t *c, const char *ns, const char *name,
                                 const json_t *pre, json_t **body);
/* Refused (409) while the revision is latest, latest ready, or named by
 * the service's traffic. */
int sl_controller_delete_revision(sl_controller_t *c, const char *ns, const char *name,
                                  json_t **body);

/* RuntimeClass objects (node.k8s.io/v1): built-ins plus stored ones. */
int sl_controller_list_runtimeclasses(sl_controller_t *c, json_t **body);
int sl_controller_get_runtimeclass(sl_controller_t *c, const char *name, json_t **body);
/* obj gets the server's metadata. dry_run: check and answer, store nothing.
 * A metadata.resourceVersion must be the stored one (else 409); the
 * handler of a stored class cannot change (422). DELETE takes
 * DeleteOptions' preconditions (uid, resourceVersion; may be NULL). */
int sl_controller_put_runtimeclass(sl_controller_t *c, const char *name, json_t *obj, bool dry_run,
                                   json_t **body);
int sl_controller_delete_runtimeclass(sl_controller_t *c, const char *name, const json_t *pre,
                                      json_t **body);

/* Secret and ConfigMap objects (core v1), namespaced; ns NULL lists all.
 * put validates and stores obj (its stored form in *body): 201 when it
 * made it, 200 when it replaced one, 409 with create when one exists;
 * dry_run: store nothing. A revision that failed to start for want of one
 * retries when it is put. */
int sl_controller_list_data(sl_controller_t *c, sl_data_kind_t kind, const char *ns, json_t **body);
int sl_controller_get_data(sl_controller_t *c, sl_data_kind_t kind, const char *ns,
                           const char *name, json_t **body);
int sl_controller_put_data(sl_controller_t *c, sl_data_kind_t kind, const char *ns,
                           const char *name, json_t *obj, bool create, bool dry_run, json_t **body);
int sl_controller_delete_data(sl_controller_t *c, sl_data_kind_t kind, const char *ns,
                              const char *name, const json_t *pre, json_t **body);

/* Prometheus text of the daemon's metrics; *text malloc'd. */
int sl_controller_metrics(sl_controller_t *c, char **text, size_t *len);
/* Usage report with costs (meter.h, prices.h) since a wall-clock time. */
int sl_controller_usage(sl_controller_t *c, const char *ns, const char *service, int64_t since_wall,
                        json_t **body);

/* A Kubernetes-style Status object for errors. New reference. */
json_t *sl_status_json(int code, const char *reason, const char *message);

/* Stop every instance, fail waiters; done runs when all have exited. */
void sl_controller_shutdown(sl_controller_t *c, void (*done)(void *), void *data);
void sl_controller_free(sl_controller_t *c);

#endif
