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
#include <errno.h>
#include <jansson.h>
#include <uv.h>

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
    /* Optional (may be NULL): as list, but each element is a string, the
     * stored object's JSON text, not yet parsed. */
    int (*list_text)(sl_store_t *s, const char *kind, const char *ns, json_t **out,
                     sl_error_t *err);
    /* Optional (may be NULL): the current global revision. */
    int (*revision)(sl_store_t *s, int64_t *out, sl_error_t *err);
} sl_store_ops_t;

struct sl_store {
    const sl_store_ops_t *ops;
};

/* Open (creating if needed, mode 0600) the SQLite store at path; WAL, foreign keys, busy
 * timeout. Use a handle from one thread at a time (the checkpoint connection
 * of sl_store_sqlite_offload_checkpoints is the handle's own affair). */
int sl_store_open_sqlite(const char *path, sl_store_t **out, sl_error_t *err);

/* Take the WAL checkpoints of a SQLite store off the thread that writes
 * (the daemon's loop): commits no longer checkpoint inline, with the fsyncs
 * that takes; once the WAL holds SL_STORE_CHECKPOINT_PAGES frames (SQLite's
 * own auto-checkpoint threshold), a passive checkpoint runs on libuv's thread
 * pool over a second connection of the store's own. Call once, on the loop's
 * thread. After sl_store_close, run the loop until it has no more work: a
 * checkpoint still running then finishes and frees its connection. */
#define SL_STORE_CHECKPOINT_PAGES 1000
int sl_store_sqlite_offload_checkpoints(sl_store_t *s, uv_loop_t *loop, sl_error_t *err);

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
/* del: -ENOENT when missing. A delete takes a revision, like a put. */
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
/* list_text: as list, but an element may be a string holding the stored
 * object's JSON text, for a caller that parses only what it needs (a backend
 * without list_text gives parsed objects). */
static inline int sl_store_list_text(sl_store_t *s, const char *kind, const char *ns, json_t **out,
                                     sl_error_t *err)
{
    return s->ops->list_text ? s->ops->list_text(s, kind, ns, out, err)
                             : s->ops->list(s, kind, ns, out, err);
}
/* Transactions: writes between begin and commit are atomic and invisible to
 * other connections until commit. Nested begin fails (EBUSY). A failed commit
 * rolls the transaction back; rollback without an open transaction is a no-op.
 * A put/del that fails inside a transaction is undone on its own and leaves
 * the rest of the transaction intact. */
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
/* The global revision: the resourceVersion of the latest write (0 when none).
 * -ENOTSUP when the backend does not provide it. */
static inline int sl_store_revision(sl_store_t *s, int64_t *out, sl_error_t *err)
{
    if (!s->ops->revision)
        return sl_error_set(err, ENOTSUP, "store: revision not supported");
    return s->ops->revision(s, out, err);
}
static inline void sl_store_close(sl_store_t *s)
{
    if (s)
        s->ops->close(s);
}

#endif
