/*
 * store_sqlite.c — the embedded object store: one SQLite file in WAL mode.
 *
 * Why SQLite: one machine needs durable, transactional, concurrently
 * readable state with no extra daemon; WAL lets the CLI or a second
 * connection read while the daemon writes. What it owns: the database
 * connection, its cached prepared statements and the schema (versioned by
 * PRAGMA user_version, migrated forward on open).
 *
 * Layout: objects(kind, namespace, name) → JSON body + the revision of its
 * last write; meta('revision') holds the global counter, bumped by every put
 * and del inside the same transaction as the write, so resourceVersions are
 * unique and increase across processes. A write outside an explicit
 * transaction is its own BEGIN IMMEDIATE … COMMIT; inside one it runs under a
 * savepoint, so a failed write leaves the transaction as it was.
 *
 * A store handle is one connection and is not thread-safe; open one per
 * thread (or process) instead. The daemon's handle also keeps a second
 * connection that only checkpoints, on libuv's thread pool
 * (sl_store_sqlite_offload_checkpoints).
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>

#define SCHEMA_VERSION  1
#define BUSY_TIMEOUT_MS 5000
#define LABEL_MAX       512

enum {
    ST_GET,
    ST_PUT,
    ST_DEL,
    ST_LIST_ALL,
    ST_LIST_NS,
    ST_BUMP,
    ST_REVISION,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST__COUNT
};

static const char *const stmt_sql[ST__COUNT] = {
    [ST_GET] = "SELECT body FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
    [ST_PUT] = "INSERT INTO objects(kind, namespace, name, body, revision) VALUES (?1, ?2, ?3, "
               "?4, ?5) ON CONFLICT(kind, namespace, name) DO UPDATE SET body = excluded.body, "
               "revision = excluded.revision",
    [ST_DEL] = "DELETE FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
    [ST_LIST_ALL] = "SELECT body FROM objects WHERE kind = ?1 ORDER BY namespace, name",
    [ST_LIST_NS] = "SELECT body FROM objects WHERE kind = ?1 AND namespace = ?2 ORDER BY name",
    [ST_BUMP] = "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
    [ST_REVISION] = "SELECT value FROM meta WHERE key = 'revision'",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT sl_write",
    [ST_RELEASE] = "RELEASE sl_write",
    [ST_ROLLBACK_TO] = "ROLLBACK TO sl_write",
};

/* Schema migrations: migrations[i] takes user_version i to i + 1. */
static const char *const migrations[SCHEMA_VERSION] = {
    "CREATE TABLE objects ("
    "  kind TEXT NOT NULL,"
    "  namespace TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  body TEXT NOT NULL,"
    "  revision INTEGER NOT NULL,"
    "  PRIMARY KEY (kind, namespace, name)"
    ") WITHOUT ROWID;"
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT INTO meta(key, value) VALUES ('revision', 0);",
};

/* Checkpoints on libuv's thread pool (sl_store_sqlite_offload_checkpoints).
 * Its own connection, used by one work item at a time; outlives the store
 * when the store closes while a checkpoint runs. */
typedef struct ckpt {
    sqlite3 *db;
    uv_loop_t *loop;
    uv_work_t work;
    bool running;
    bool orphaned; /* the store closed meanwhile: free on completion */
    bool warned;   /* the inline fallback was logged */
    int rc;
    char path[];
} ckpt_t;

typedef struct sqlite_store {
    sl_store_t base;
    sqlite3 *db;
    sqlite3_stmt *stmt[ST__COUNT];
    bool in_txn;
    bool txn_aborted; /* SQLite rolled the explicit transaction back on an error */
    ckpt_t *ckpt;
} sqlite_store_t;

static int sqlite_to_errno(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return EBUSY;
    case SQLITE_NOMEM:
        return ENOMEM;
    case SQLITE_FULL:
        return ENOSPC;
    case SQLITE_READONLY:
        return EROFS;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return EACCES;
    case SQLITE_CANTOPEN:
        return ENOENT;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
        return EINVAL;
    case SQLITE_TOOBIG:
        return EFBIG;
    default:
        return EIO;
    }
}

/* Set err to "CONTEXT: sqlite message" and return the negative errno. */
static int db_error(sqlite3 *db, int rc, sl_error_t *err, const char *ctx)
{
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    const char *file = db ? sqlite3_db_filename(db, "main") : NULL;
    if ((rc & 0xff) == SQLITE_FULL)
        return sl_error_set(err, ENOSPC, "%s: %s: no space left on the device holding %s", ctx, msg,
                            file && *file ? file : "the store");
    return sl_error_set(err, sqlite_to_errno(rc), "%s: %s", ctx, msg);
}

/* "services default/hello", or "runtimeclasses sandboxed" when cluster-scoped. */
static const char *obj_label(char *buf, size_t size, const char *kind, const char *ns,
                             const char *name)
{
    if (ns && *ns)
        snprintf(buf, size, "%s %s/%s", kind, ns, name);
    else
        snprintf(buf, size, "%s %s", kind, name);
    return buf;
}

static sqlite3_stmt *stmt_bind_key(sqlite_store_t *st, int which, const char *kind, const char *ns,
                                   const char *name)
{
    sqlite3_stmt *s = st->stmt[which];
    sqlite3_bind_text(s, 1, kind, -1, SQLITE_STATIC);
    if (ns)
        sqlite3_bind_text(s, 2, ns, -1, SQLITE_STATIC);
    if (name)
        sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
    return s;
}

static void stmt_done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* Run a statement that returns no rows we need. */
static int stmt_exec(sqlite_store_t *st, int which, sl_error_t *err, const char *ctx)
{
    sqlite3_stmt *s = st->stmt[which];
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        ;
    int ret = rc == SQLITE_DONE ? 0 : db_error(st->db, rc, err, ctx);
    stmt_done(s);
    return ret;
}

/* Run a statement that yields one integer in column 0 (draining the rest). */
static int stmt_int64(sqlite_store_t *st, int which, int64_t *out, sl_error_t *err, const char *ctx)
{
    sqlite3_stmt *s = st->stmt[which];
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
            ;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_CORRUPT;
    }
    int ret = rc == SQLITE_DONE ? 0 : db_error(st->db, rc, err, ctx);
    stmt_done(s);
    return ret;
}

static int valid_key(const char *kind, const char *name, sl_error_t *err)
{
    if (!kind || !*kind)
        return sl_error_set(err, EINVAL, "store: empty kind");
    if (!name || !*name)
        return sl_error_set(err, EINVAL, "store: %s with empty name", kind);
    return 0;
}

/* Start a write: its own transaction, or a savepoint inside the caller's. */
static int write_begin(sqlite_store_t *st, const char *label, sl_error_t *err)
{
    if (st->in_txn && st->txn_aborted)
        return sl_error_set(err, EIO, "%s: transaction already failed; roll it back", label);
    return stmt_exec(st, st->in_txn ? ST_SAVEPOINT : ST_BEGIN, err, label);
}

/* Finish a write started by write_begin: keep it when ok, undo it otherwise. */
static int write_end(sqlite_store_t *st, bool ok, const char *label, sl_error_t *err)
{
    if (st->in_txn) {
        if (sqlite3_get_autocommit(st->db)) {
            st->txn_aborted = true; /* SQLite already rolled everything back */
            return ok ? sl_error_set(err, EIO, "%s: transaction was rolled back", label) : 0;
        }
        if (ok)
            return stmt_exec(st, ST_RELEASE, err, label);
        stmt_exec(st, ST_ROLLBACK_TO, NULL, label);
        stmt_exec(st, ST_RELEASE, NULL, label);
        return 0;
    }
    int ret = ok ? stmt_exec(st, ST_COMMIT, err, label) : 0;
    if ((!ok || ret < 0) && !sqlite3_get_autocommit(st->db))
        stmt_exec(st, ST_ROLLBACK, NULL, label);
    return ret;
}

static int sqlite_get(sl_store_t *s, const char *kind, const char *ns, const char *name,
                      json_t **out, sl_error_t *err)
{
    sqlite_store_t *st = (sqlite_store_t *)s;
    char label[LABEL_MAX];
    int ret = valid_key(kind, name, err);
    if (ret < 0)
        return ret;
    ns = ns ? ns : "";
    obj_label(label, sizeof(label), kind, ns, name);
    sqlite3_stmt *q = stmt_bind_key(st, ST_GET, kind, ns, name);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_DONE) {
        ret = sl_error_set(err, ENOENT, "%s not found", label);
    } else if (rc != SQLITE_ROW) {
        ret = db_error(st->db, rc, err, label);
    } else {
        json_error_t jerr;
        const char *body = (const char *)sqlite3_column_text(q, 0);
        size_t n = (size_t)sqlite3_column_bytes(q, 0);
        *out = body ? json_loadb(body, n, JSON_ALLOW_NUL, &jerr) : NULL;
        if (!*out)
            ret = sl_error_set(err, EIO, "%s: stored body is not valid JSON", label);
    }
    stmt_done(q);
    return ret;
}

static int set_resource_version(json_t *obj, int64_t rev, const char *label, sl_error_t *err)
{
    json_t *meta = json_object_get(obj, "metadata");
    if (!meta) {
        meta = json_object();
        json_object_set_new(obj, "metadata", meta);
    } else if (!json_is_object(meta)) {
        return sl_error_set(err, EINVAL, "%s: metadata must be an object", label);
    }
    char buf[32];
    snprintf(buf, sizeof(buf), "%lld", (long long)rev);
    json_object_set_new(meta, "resourceVersion", json_string(buf));
    return 0;
}

/* The body of a put, run between write_begin and write_end. */
static int put_locked(sqlite_store_t *st, const char *kind, const char *ns, const char *name,
                      json_t *obj, const char *label, sl_error_t *err)
{
    int64_t rev = 0;
    int ret = stmt_int64(st, ST_BUMP, &rev, err, label);
    if (ret < 0)
        return ret;
    ret = set_resource_version(obj, rev, label, err);
    if (ret < 0)
        return ret;
    sl_autofree char *body = json_dumps(obj, JSON_COMPACT);
    if (!body)
        return sl_error_set(err, EINVAL, "%s: cannot serialise object", label);
    sqlite3_stmt *q = stmt_bind_key(st, ST_PUT, kind, ns, name);
    sqlite3_bind_text(q, 4, body, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 5, rev);
    return stmt_exec(st, ST_PUT, err, label);
}

static int sqlite_put(sl_store_t *s, const char *kind, const char *ns, const char *name,
                      json_t *obj, sl_error_t *err)
{
    sqlite_store_t *st = (sqlite_store_t *)s;
    char label[LABEL_MAX];
    int ret = valid_key(kind, name, err);
    if (ret < 0)
        return ret;
    ns = ns ? ns : "";
    obj_label(label, sizeof(label), kind, ns, name);
    if (!json_is_object(obj))
        return sl_error_set(err, EINVAL, "%s: object must be a JSON object", label);
    /* Keep the caller's resourceVersion so a failed write leaves obj as it was. */
    json_t *meta = json_object_get(obj, "metadata");
    json_t *old_rv =
        json_incref(json_is_object(meta) ? json_object_get(meta, "resourceVersion") : NULL);
    bool had_meta = meta != NULL;
    ret = write_begin(st, label, err);
    if (ret == 0) {
        ret = put_locked(st, kind, ns, name, obj, label, err);
        int end = write_end(st, ret == 0, label, err);
        ret = ret < 0 ? ret : end;
    }
    if (ret < 0) {
        meta = json_object_get(obj, "metadata");
        if (!had_meta)
            json_object_del(obj, "metadata");
        else if (json_is_object(meta) && old_rv)
            json_object_set(meta, "resourceVersion", old_rv);
        else if (json_is_object(meta))
            json_object_del(meta, "resourceVersion");
    }
    json_decref(old_rv);
    return ret;
}

static int del_locked(sqlite_store_t *st, const char *kind, const char *ns, const char *name,
                      const char *label, sl_error_t *err)
{
    stmt_bind_key(st, ST_DEL, kind, ns, name);
    int ret = stmt_exec(st, ST_DEL, err, label);
    if (ret < 0)
        return ret;
    if (sqlite3_changes(st->db) == 0)
        return sl_error_set(err, ENOENT, "%s not found", label);
    int64_t rev = 0;
    return stmt_int64(st, ST_BUMP, &rev, err, label);
}

static int sqlite_del(sl_store_t *s, const char *kind, const char *ns, const char *name,
                      sl_error_t *err)
{
    sqlite_store_t *st = (sqlite_store_t *)s;
    char label[LABEL_MAX];
    int ret = valid_key(kind, name, err);
    if (ret < 0)
        return ret;
    ns = ns ? ns : "";
    obj_label(label, sizeof(label), kind, ns, name);
    ret = write_begin(st, label, err);
    if (ret < 0)
        return ret;
    ret = del_locked(st, kind, ns, name, label, err);
    int end = write_end(st, ret == 0, label, err);
    return ret < 0 ? ret : end;
}

/* The rows of kind (in ns, or all), each parsed or, with text, as its JSON
 * text in a string. */
static int list_rows(sl_store_t *s, const char *kind, const char *ns, bool text, json_t **out,
                     sl_error_t *err)
{
    sqlite_store_t *st = (sqlite_store_t *)s;
    if (!kind || !*kind)
        return sl_error_set(err, EINVAL, "store: empty kind");
    char label[LABEL_MAX];
    if (ns)
        snprintf(label, sizeof(label), "%s in namespace '%s'", kind, ns);
    else
        snprintf(label, sizeof(label), "%s", kind);
    sqlite3_stmt *q = stmt_bind_key(st, ns ? ST_LIST_NS : ST_LIST_ALL, kind, ns, NULL);
    json_t *arr = json_array();
    int rc, ret = 0;
    while (ret == 0 && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        json_error_t jerr;
        const char *body = (const char *)sqlite3_column_text(q, 0);
        size_t n = (size_t)sqlite3_column_bytes(q, 0);
        json_t *obj = !body  ? NULL
                      : text ? json_stringn_nocheck(body, n)
                             : json_loadb(body, n, JSON_ALLOW_NUL, &jerr);
        if (!obj)
            ret = sl_error_set(err, EIO, "listing %s: a stored body is not valid JSON", label);
        else
            json_array_append_new(arr, obj);
    }
    if (ret == 0 && rc != SQLITE_DONE)
        ret = db_error(st->db, rc, err, label);
    stmt_done(q);
    if (ret < 0) {
        json_decref(arr);
        return ret;
    }
    *out = arr;
    return 0;
}

static int sqlite_list(sl_store_t *s, const char *kind, const char *ns, json_t **out,
                       sl_error_t *err)
{
    return list_rows(s, kind, ns, false, out, err);
}

static int sqlite_list_text(sl_store_t *s, const char *kind, const char *ns, json_t **out,
                            sl_error_t *err)
{
    return list_rows(s, kind, ns, true, out, err);
}

static int sqlite_txn_begin(sl_store_t *s, sl_error_t *err)
{
    sqlite_store_t *st = (sqlite_store_t *)s;
    if (st->in_txn)
        return sl_error_set(err, EBUSY,
                            "store: a transaction is already open (transactions do not nest)");
    int ret = stmt_exec(st, ST_BEGIN, err, "store: begin transaction");
    if (ret == 0) {
        st->in_txn = true;
        st->txn_aborted = false;
    }
    return ret;
}

static int sqlite_txn_commit(sl_store_t *s, sl_error_t *err)
{
    sqlite_store_t *st = (sqlite_store_t *)s;
    if (!st->in_txn)
        return sl_error_set(err, EINVAL, "store: commit without an open transaction");
    st->in_txn = false;
    if (st->txn_aborted || sqlite3_get_autocommit(st->db))
        return sl_error_set(err, EIO, "store: transaction was rolled back after an earlier error");
    int ret = stmt_exec(st, ST_COMMIT, err, "store: commit");
    if (ret < 0 && !sqlite3_get_autocommit(st->db))
        stmt_exec(st, ST_ROLLBACK, NULL, "store: rollback");
    return ret;
}

static void sqlite_txn_rollback(sl_store_t *s)
{
    sqlite_store_t *st = (sqlite_store_t *)s;
    if (!st->in_txn)
        return;
    st->in_txn = false;
    if (!sqlite3_get_autocommit(st->db))
        stmt_exec(st, ST_ROLLBACK, NULL, "store: rollback");
}

static int sqlite_revision(sl_store_t *s, int64_t *out, sl_error_t *err)
{
    return stmt_int64((sqlite_store_t *)s, ST_REVISION, out, err, "store: revision");
}

static void ckpt_free(ckpt_t *k)
{
    sqlite3_close(k->db); /* the last connection: checkpoints and removes the WAL */
    free(k);
}

static void sqlite_close(sl_store_t *s)
{
    sqlite_store_t *st = (sqlite_store_t *)s;
    sqlite_txn_rollback(s);
    for (size_t i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    sqlite3_close(st->db);
    if (st->ckpt && st->ckpt->running)
        st->ckpt->orphaned = true;
    else if (st->ckpt)
        ckpt_free(st->ckpt);
    free(st);
}

static const sl_store_ops_t sqlite_ops = {
    .get = sqlite_get,
    .put = sqlite_put,
    .del = sqlite_del,
    .list = sqlite_list,
    .list_text = sqlite_list_text,
    .txn_begin = sqlite_txn_begin,
    .txn_commit = sqlite_txn_commit,
    .txn_rollback = sqlite_txn_rollback,
    .close = sqlite_close,
    .revision = sqlite_revision,
};

static int exec_sql(sqlite3 *db, const char *sql, const char *path, sl_error_t *err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        return 0;
    int ret = sl_error_set(err, sqlite_to_errno(rc), "store %s: %s", path,
                           msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return ret;
}

static int read_pragma_cb(void *arg, int ncol, char **vals, char **names)
{
    char *buf = arg;
    snprintf(buf, 32, "%s", ncol > 0 && vals[0] ? vals[0] : "");
    return 0;
}

static int configure(sqlite3 *db, const char *path, sl_error_t *err)
{
    char mode[32] = "";
    char *msg = NULL;
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    int rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", read_pragma_cb, mode, &msg);
    if (rc != SQLITE_OK) {
        int ret = sl_error_set(err, sqlite_to_errno(rc), "store %s: enabling WAL: %s", path,
                               msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return ret;
    }
    if (strcmp(mode, "wal") != 0)
        return sl_error_set(err, ENOTSUP, "store %s: journal mode is '%s', WAL unavailable", path,
                            mode);
    /* journal_size_limit: a WAL that a burst of writes grew is cut back to
     * 16 MiB when it starts over, not kept at its largest. */
    return exec_sql(db,
                    "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; "
                    "PRAGMA journal_size_limit = 16777216",
                    path, err);
}

static int user_version(sqlite3 *db, int *out, const char *path, sl_error_t *err)
{
    char buf[32] = "";
    char *msg = NULL;
    int rc = sqlite3_exec(db, "PRAGMA user_version", read_pragma_cb, buf, &msg);
    if (rc != SQLITE_OK) {
        int ret = sl_error_set(err, sqlite_to_errno(rc), "store %s: reading schema version: %s",
                               path, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return ret;
    }
    int64_t v = 0;
    if (sl_parse_int64(buf, 0, INT32_MAX, &v) < 0)
        return sl_error_set(err, EIO, "store %s: bad schema version '%s'", path, buf);
    *out = (int)v;
    return 0;
}

/* Bring the schema to SCHEMA_VERSION in one transaction; concurrent openers
 * serialise on BEGIN IMMEDIATE and re-read the version inside it. */
static int migrate(sqlite3 *db, const char *path, sl_error_t *err)
{
    int ret = exec_sql(db, "BEGIN IMMEDIATE", path, err);
    if (ret < 0)
        return ret;
    int v = 0;
    ret = user_version(db, &v, path, err);
    if (ret == 0 && v > SCHEMA_VERSION)
        ret = sl_error_set(err, ENOTSUP,
                           "store %s: schema version %d is newer than this sluice supports (%d)",
                           path, v, SCHEMA_VERSION);
    for (; ret == 0 && v < SCHEMA_VERSION; v++) {
        char bump[64];
        ret = exec_sql(db, migrations[v], path, err);
        snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", v + 1);
        if (ret == 0)
            ret = exec_sql(db, bump, path, err);
        if (ret < 0)
            sl_error_wrap(err, "migrating schema %d to %d", v, v + 1);
    }
    if (ret == 0)
        ret = exec_sql(db, "COMMIT", path, err);
    if (ret < 0 && !sqlite3_get_autocommit(db))
        exec_sql(db, "ROLLBACK", path, NULL);
    return ret;
}

static int prepare_all(sqlite_store_t *st, const char *path, sl_error_t *err)
{
    for (size_t i = 0; i < ST__COUNT; i++) {
        int rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &st->stmt[i], NULL);
        if (rc != SQLITE_OK)
            return sl_error_set(err, sqlite_to_errno(rc), "store %s: preparing '%s': %s", path,
                                stmt_sql[i], sqlite3_errmsg(st->db));
    }
    return 0;
}

/* Create the file ourselves so it is born 0600 (SQLite would use 0644), and
 * the -wal/-shm files SQLite derives from it inherit that mode. */
static int precreate(const char *path, sl_error_t *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return sl_error_errno(err, errno, "store %s: create", path);
    close(fd);
    return 0;
}

/* ---- checkpoints off the loop -------------------------------------------- */

static void ckpt_work(uv_work_t *w)
{
    ckpt_t *k = w->data;
    /* PASSIVE: copies what no reader still needs, waits for nobody; the
     * writer keeps appending to the WAL meanwhile. */
    k->rc = sqlite3_wal_checkpoint_v2(k->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
}

/* A checkpoint's result: BUSY (another checkpoint holds the lock) and
 * LOCKED (a statement of the connection is open) are tried again later. */
static void ckpt_report(const ckpt_t *k, int rc)
{
    if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
        sl_warn("store", "checkpointing %s: %s", k->path, sqlite3_errstr(rc));
}

static void ckpt_done(uv_work_t *w, int status)
{
    ckpt_t *k = w->data;
    k->running = false;
    if (k->orphaned) {
        ckpt_free(k);
        return;
    }
    if (status == 0)
        ckpt_report(k, k->rc);
}

/* After every commit of the loop's connection, with the WAL's length in
 * frames: past the threshold, start a checkpoint unless one is running. A
 * passive checkpoint copies the frames that existed when it began, and the
 * WAL starts over only when a write finds all of them copied; should commits
 * keep landing during every checkpoint, the WAL would grow without end, so
 * far past the threshold the commit checkpoints inline as SQLite would. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int frames)
{
    sqlite_store_t *st = arg;
    ckpt_t *k = st->ckpt;
    if (frames >= 8 * SL_STORE_CHECKPOINT_PAGES) {
        if (!k->warned)
            sl_warn("store", "%s: the write-ahead log reached %d frames; checkpointing inline",
                    k->path, frames);
        k->warned = true;
        ckpt_report(k, sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL));
        return SQLITE_OK;
    }
    if (frames < SL_STORE_CHECKPOINT_PAGES || k->running)
        return SQLITE_OK;
    k->running = true;
    if (uv_queue_work(k->loop, &k->work, ckpt_work, ckpt_done) < 0)
        k->running = false; /* tried again at the next commit */
    return SQLITE_OK;
}

int sl_store_sqlite_offload_checkpoints(sl_store_t *s, uv_loop_t *loop, sl_error_t *err)
{
    sqlite_store_t *st = (sqlite_store_t *)s;
    if (s->ops != &sqlite_ops)
        return sl_error_set(err, EINVAL, "store: not a SQLite store");
    if (st->ckpt)
        return 0;
    if (!sqlite3_threadsafe())
        return sl_error_set(err, ENOTSUP,
                            "store: this SQLite library is built without thread support");
    const char *path = sqlite3_db_filename(st->db, "main");
    size_t n = strlen(path) + 1;
    ckpt_t *k = xcalloc(1, sizeof(*k) + n);
    memcpy(k->path, path, n);
    k->loop = loop;
    k->work.data = k;
    /* configure() also makes the connection see the file's WAL mode: a
     * connection that never read the file would checkpoint nothing. */
    int rc = sqlite3_open_v2(path, &k->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    int ret = rc == SQLITE_OK
                  ? configure(k->db, path, err)
                  : db_error(k->db, rc, err, "store: opening the checkpoint connection");
    if (ret < 0) {
        ckpt_free(k);
        return ret;
    }
    st->ckpt = k;
    /* Replaces SQLite's own auto-checkpoint (also a WAL hook), which
     * would run the checkpoint, and its fsyncs, inside the commit. */
    sqlite3_wal_hook(st->db, on_wal_commit, st);
    return 0;
}

int sl_store_open_sqlite(const char *path, sl_store_t **out, sl_error_t *err)
{
    if (!path || !*path)
        return sl_error_set(err, EINVAL, "store: empty database path");
    int ret = precreate(path, err);
    if (ret < 0)
        return ret;
    sqlite_store_t *st = xcalloc(1, sizeof(*st));
    st->base.ops = &sqlite_ops;
    /* SQLite's unix VFS opens every file with O_CLOEXEC. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &st->db, flags, NULL);
    if (rc != SQLITE_OK) {
        ret = sl_error_set(err, sqlite_to_errno(rc), "store %s: open: %s", path,
                           st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(st->db, 1);
    ret = configure(st->db, path, err);
    if (ret == 0)
        ret = migrate(st->db, path, err);
    if (ret == 0)
        ret = prepare_all(st, path, err);
    if (ret < 0)
        goto fail;
    *out = &st->base;
    return 0;
fail:
    sqlite_close(&st->base);
    return ret;
}
