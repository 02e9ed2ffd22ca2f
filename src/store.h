/*
 * store.h — the persistent object store, behind an interface.
 *
 * Objects are JSON documents keyed by (kind, namespace, name), like
 * Kubernetes/etcd keys (/kind/namespace/name). Every write bumps a global
 * revision counter; the object's metadata.resourceVersion is set to it.
 * Writes inside sl_store_txn_begin/commit are atomic. SQLite in WAL mode
 * (store_sqlite.c) is the embedded implementation; etcd will be another.
 * Cluster-scoped kinds use namespace "".
 */
#ifndef SL_STORE_H
#define SL_STORE_H

#include "common.h"
#include <jansson.h>

typedef struct sl_store sl_store_t;

typedef struct sl_store_ops {
    int (*get)(sl_store_t *s, const char *kind, const char *ns, const char *name, json_t **out,
               sl_error_t *err);
    int (*put)(sl_store_t *s, const char *kind, const char *ns, const char *name, json_t *obj,
               sl_error_t *err);
    int (*del)(sl_store_t *s, const char *kind, const char *ns, const char *name, sl_error_t *err);
    int (*list)(sl_store_t *s, const char *kind, const char *ns, json_t **out, sl_error_t *err);
    int (*txn_begin)(sl_store_t *s, sl_error_t *err);
    int (*txn_commit)(sl_store_t *s, sl_error_t *err);
    void (*txn_rollback)(sl_store_t *s);
    void (*close)(sl_store_t *s);
} sl_store_ops_t;

struct sl_store {
    const sl_store_ops_t *ops;
};

/* Open (creating if needed) the SQLite store at path; WAL, foreign keys, busy timeout. */
int sl_store_open_sqlite(const char *path, sl_store_t **out, sl_error_t *err);

/* get: -ENOENT (with message "KIND NS/NAME not found") when missing; *out new reference. */
static inline int sl_store_get(sl_store_t *s, const char *kind, const char *ns, const char *name,
                               json_t **out, sl_error_t *err)
{
    return s->ops->get(s, kind, ns, name, out, err);
}
/* put: create or replace; sets obj.metadata.resourceVersion (string) in place. */
static inline int sl_store_put(sl_store_t *s, const char *kind, const char *ns, const char *name,
                               json_t *obj, sl_error_t *err)
{
    return s->ops->put(s, kind, ns, name, obj, err);
}
/* del: -ENOENT when missing. */
static inline int sl_store_del(sl_store_t *s, const char *kind, const char *ns, const char *name,
                               sl_error_t *err)
{
    return s->ops->del(s, kind, ns, name, err);
}
/* list: *out is a new JSON array ordered by (namespace, name); ns NULL = all. */
static inline int sl_store_list(sl_store_t *s, const char *kind, const char *ns, json_t **out,
                                sl_error_t *err)
{
    return s->ops->list(s, kind, ns, out, err);
}
static inline int sl_store_txn_begin(sl_store_t *s, sl_error_t *err)
{
    return s->ops->txn_begin(s, err);
}
static inline int sl_store_txn_commit(sl_store_t *s, sl_error_t *err)
{
    return s->ops->txn_commit(s, err);
}
static inline void sl_store_txn_rollback(sl_store_t *s)
{
    s->ops->txn_rollback(s);
}
static inline void sl_store_close(sl_store_t *s)
{
    if (s)
        s->ops->close(s);
}

#endif
