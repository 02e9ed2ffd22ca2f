/*
 * revision_gc.h — which of a service's revisions to delete, the way
 * Knative's revision garbage collector (config-gc, "v2") decides.
 *
 * A revision is active while the service needs it (its latest created or
 * ready revision, or one a traffic target names) or while it carries
 * serving.knative.dev/no-gc: "true"; only the others are candidates. Among
 * them, oldest last-active first, a stale one (created more than
 * retain_since_create ago and last active more than retain_since_active
 * ago) is deleted while more than min_non_active would remain; of those
 * left, all but the max_non_active most recently active are deleted too.
 */
#ifndef SL_REVISION_GC_H
#define SL_REVISION_GC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_GC_DISABLED (-1)

typedef struct sl_revision_gc {
    int64_t retain_since_create_s; /* SL_GC_DISABLED: no age check */
    int64_t retain_since_active_s; /* SL_GC_DISABLED: no idle check */
    int64_t min_non_active;        /* kept whatever their age */
    int64_t max_non_active;        /* SL_GC_DISABLED: no count bound */
    uint64_t interval_ns;          /* how often the collector runs */
} sl_revision_gc_t;

/* Knative's defaults: 48h, 15h, 20, 1000; a pass every 5 minutes. */
void sl_revision_gc_defaults(sl_revision_gc_t *cfg);

/* Whether nothing can ever be deleted (every bound disabled). */
bool sl_revision_gc_disabled(const sl_revision_gc_t *cfg);

typedef struct sl_gc_rev {
    int64_t created_s;     /* creationTimestamp, Unix seconds */
    int64_t last_active_s; /* when it stopped being routed; created_s if unknown */
    bool active;           /* needed by the service, or marked no-gc */
    bool remove;           /* out: delete it */
} sl_gc_rev_t;

/* Mark in revs[].remove the revisions of one service to delete; returns
 * how many. */
size_t sl_revision_gc_select(sl_gc_rev_t *revs, size_t n, const sl_revision_gc_t *cfg,
                             int64_t now_s);

#endif
