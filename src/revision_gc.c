/*
 * revision_gc.c — the selection rule of revision_gc.h.
 */
#include "revision_gc.h"

#include "common.h"

#include <stdlib.h>

void sl_revision_gc_defaults(sl_revision_gc_t *cfg)
{
    *cfg = (sl_revision_gc_t){
        .retain_since_create_s = 48 * 3600,
        .retain_since_active_s = 15 * 3600,
        .min_non_active = 20,
        .max_non_active = 1000,
        .interval_ns = 5ull * 60 * 1000000000ull,
    };
}

bool sl_revision_gc_disabled(const sl_revision_gc_t *cfg)
{
    return cfg->max_non_active == SL_GC_DISABLED && cfg->retain_since_create_s == SL_GC_DISABLED &&
           cfg->retain_since_active_s == SL_GC_DISABLED;
}

static bool stale(const sl_gc_rev_t *r, const sl_revision_gc_t *cfg, int64_t now_s)
{
    if (cfg->retain_since_create_s == SL_GC_DISABLED &&
        cfg->retain_since_active_s == SL_GC_DISABLED)
        return false;
    if (cfg->retain_since_create_s != SL_GC_DISABLED &&
        now_s - r->created_s < cfg->retain_since_create_s)
        return false;
    if (cfg->retain_since_active_s != SL_GC_DISABLED &&
        now_s - r->last_active_s < cfg->retain_since_active_s)
        return false;
    return true;
}

/* Oldest last-active first; by creation, then as given, among equals, so
 * a pass is deterministic. */
static int cmp_last_active(const void *a, const void *b)
{
    const sl_gc_rev_t *x = *(sl_gc_rev_t *const *)a, *y = *(sl_gc_rev_t *const *)b;
    if (x->last_active_s != y->last_active_s)
        return x->last_active_s < y->last_active_s ? -1 : 1;
    if (x->created_s != y->created_s)
        return x->created_s < y->created_s ? -1 : 1;
    return x < y ? -1 : x > y; /* then as given */
}

size_t sl_revision_gc_select(sl_gc_rev_t *revs, size_t n, const sl_revision_gc_t *cfg,
                             int64_t now_s)
{
    for (size_t i = 0; i < n; i++)
        revs[i].remove = false;
    if (sl_revision_gc_disabled(cfg) || (int64_t)n <= cfg->min_non_active)
        return 0;
    sl_gc_rev_t **cand = xcalloc(n ? n : 1, sizeof(*cand));
    size_t nc = 0;
    for (size_t i = 0; i < n; i++)
        if (!revs[i].active)
            cand[nc++] = &revs[i];
    size_t removed = 0;
    if ((int64_t)nc > cfg->min_non_active) {
        qsort(cand, nc, sizeof(*cand), cmp_last_active);
        /* Stale ones go, oldest first, while more than the minimum remain. */
        size_t left = nc;
        sl_gc_rev_t **kept = xcalloc(nc, sizeof(*kept));
        size_t nk = 0;
        for (size_t i = 0; i < nc; i++) {
            if ((int64_t)left > cfg->min_non_active && stale(cand[i], cfg, now_s)) {
                cand[i]->remove = true;
                removed++;
                left--;
            } else {
                kept[nk++] = cand[i];
            }
        }
        /* Past the maximum, the least recently active of the rest go
         * (unless the minimum was reached: then the pass is over). */
        if ((int64_t)left > cfg->min_non_active && cfg->max_non_active != SL_GC_DISABLED &&
            (int64_t)nk > cfg->max_non_active) {
            size_t extra = nk - (size_t)cfg->max_non_active;
            for (size_t i = 0; i < extra; i++) {
                kept[i]->remove = true;
                removed++;
            }
        }
        free(kept);
    }
    free(cand);
    return removed;
}
