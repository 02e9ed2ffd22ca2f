/*
 * test_store.c — the SQLite object store through its public interface:
 * CRUD, ordering, revisions, transactions, persistence, WAL, file modes and
 * a second connection's view.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>

#include "store.h"

typedef struct fixture {
    char dir[64];
    char *path;
    sl_store_t *s;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = xcalloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/sl-store-test-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    f->path = xasprintf("%s/state.db", f->dir);
    sl_error_t err = {0};
    if (sl_store_open_sqlite(f->path, &f->s, &err) < 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    sl_store_close(f->s);
    sl_rm_rf(f->dir, NULL);
    free(f->path);
    free(f);
    return 0;
}

static json_t *svc(const char *ns, const char *name, const char *image)
{
    return json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:s}}", "apiVersion", "serving.knative.dev/v1",
                     "kind", "Service", "metadata", "name", name, "namespace", ns, "spec", "image",
                     image);
}

static void put_svc(sl_store_t *s, const char *ns, const char *name, const char *image)
{
    sl_error_t err = {0};
    json_t *o = svc(ns, name, image);
    int rc = sl_store_put(s, "services", ns, name, o, &err);
    if (rc != 0)
        fail_msg("put %s/%s: %s", ns, name, err.msg);
    json_decref(o);
}

static const char *rv_of(const json_t *o)
{
    return json_string_value(json_object_get(json_object_get(o, "metadata"), "resourceVersion"));
}

static const char *image_of(const json_t *o)
{
    return json_string_value(json_object_get(json_object_get(o, "spec"), "image"));
}

static void test_put_get(void **state)
{
    fixture_t *f = *state;
    sl_error_t err = {0};
    json_t *o = svc("default", "hello", "oci:a");
    assert_int_equal(sl_store_put(f->s, "services", "default", "hello", o, &err), 0);
    assert_string_equal(rv_of(o), "1");
    json_t *got = NULL;
    assert_int_equal(sl_store_get(f->s, "services", "default", "hello", &got, &err), 0);
    assert_true(json_equal(got, o));
    json_decref(got);

    /* Replace: new body, next revision. */
    json_object_set_new(json_object_get(o, "spec"), "image", json_string("oci:b"));
    assert_int_equal(sl_store_put(f->s, "services", "default", "hello", o, &err), 0);
    assert_string_equal(rv_of(o), "2");
    assert_int_equal(sl_store_get(f->s, "services", "default", "hello", &got, &err), 0);
    assert_string_equal(image_of(got), "oci:b");
    assert_string_equal(rv_of(got), "2");
    json_decref(got);
    json_decref(o);

    int64_t rev = 0;
    assert_int_equal(sl_store_revision(f->s, &rev, &err), 0);
    assert_int_equal(rev, 2);
}

static void test_put_creates_metadata(void **state)
{
    fixture_t *f = *state;
    sl_error_t err = {0};
    json_t *o = json_pack("{s:s}", "handler", "crun");
    assert_int_equal(sl_store_put(f->s, "runtimeclasses", "", "default", o, &err), 0);
    assert_string_equal(rv_of(o), "1");
    json_decref(o);
}

static void test_get_missing(void **state)
{
    fixture_t *f = *state;
    sl_error_t err = {0};
    json_t *got = NULL;
    assert_int_equal(sl_store_get(f->s, "services", "default", "nope", &got, &err), -ENOENT);
    assert_int_equal(err.code, ENOENT);
    assert_string_equal(err.msg, "services default/nope not found");
    assert_null(got);
    assert_int_equal(sl_store_get(f->s, "runtimeclasses", "", "sandboxed", &got, &err), -ENOENT);
    assert_string_equal(err.msg, "runtimeclasses sandboxed not found");
    /* Same name, other namespace or kind: still missing. */
    put_svc(f->s, "default", "hello", "oci:a");
    assert_int_equal(sl_store_get(f->s, "services", "prod", "hello", &got, &err), -ENOENT);
    assert_int_equal(sl_store_get(f->s, "revisions", "default", "hello", &got, &err), -ENOENT);
}

static void test_del(void **state)
{
    fixture_t *f = *state;
    sl_error_t err = {0};
    json_t *got = NULL;
    put_svc(f->s, "default", "hello", "oci:a");
    assert_int_equal(sl_store_del(f->s, "services", "default", "hello", &err), 0);
    assert_int_equal(sl_store_get(f->s, "services", "default", "hello", &got, &err), -ENOENT);
    assert_int_equal(sl_store_del(f->s, "services", "default", "hello", &err), -ENOENT);
    assert_string_equal(err.msg, "services default/hello not found");
    /* A delete is a write: it takes a revision; a failed one does not. */
    int64_t rev = 0;
    assert_int_equal(sl_store_revision(f->s, &rev, &err), 0);
    assert_int_equal(rev, 2);
    put_svc(f->s, "default", "hello", "oci:a");
    assert_int_equal(sl_store_get(f->s, "services", "default", "hello", &got, &err), 0);
    assert_string_equal(rv_of(got), "3");
    json_decref(got);
}

static void test_bad_input(void **state)
{
    fixture_t *f = *state;
    sl_error_t err = {0};
    json_t *arr = json_array();
    assert_int_equal(sl_store_put(f->s, "services", "default", "x", arr, &err), -EINVAL);
    assert_string_equal(err.msg, "services default/x: object must be a JSON object");
    json_decref(arr);
    json_t *o = json_pack("{s:i}", "metadata", 3);
    assert_int_equal(sl_store_put(f->s, "services", "default", "x", o, &err), -EINVAL);
    assert_string_equal(err.msg, "services default/x: metadata must be an object");
    assert_int_equal(json_integer_value(json_object_get(o, "metadata")), 3);
    json_decref(o);
    json_t *got = NULL;
    assert_int_equal(sl_store_get(f->s, "services", "default", "", &got, &err), -EINVAL);
    assert_int_equal(sl_store_list(f->s, "", NULL, &got, &err), -EINVAL);
    int64_t rev = -1;
    assert_int_equal(sl_store_revision(f->s, &rev, &err), 0);
    assert_int_equal(rev, 0);
}

static void assert_names(json_t *list, const char *const *want, size_t n)
{
    assert_int_equal(json_array_size(list), n);
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_object_get(json_array_get(list, i), "metadata");
        char *got = xasprintf("%s/%s", json_string_value(json_object_get(m, "namespace")),
                              json_string_value(json_object_get(m, "name")));
        assert_string_equal(got, want[i]);
        free(got);
    }
}

static void test_list(void **state)
{
    fixture_t *f = *state;
    sl_error_t err = {0};
    json_t *list = NULL;
    assert_int_equal(sl_store_list(f->s, "services", NULL, &list, &err), 0);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);

    put_svc(f->s, "prod", "b", "oci:1");
    put_svc(f->s, "default", "zeta", "oci:2");
    put_svc(f->s, "prod", "a", "oci:3");
    put_svc(f->s, "default", "alpha", "oci:4");
    json_t *rev =
        json_pack("{s:{s:s, s:s}}", "metadata", "name", "alpha-00001", "namespace", "default");
    assert_int_equal(sl_store_put(f->s, "revisions", "default", "alpha-00001", rev, &err), 0);
    json_decref(rev);

    static const char *const all[] = {"default/alpha", "default/zeta", "prod/a", "prod/b"};
    assert_int_equal(sl_store_list(f->s, "services", NULL, &list, &err), 0);
    assert_names(list, all, 4);
    json_decref(list);

    static const char *const prod[] = {"prod/a", "prod/b"};
    assert_int_equal(sl_store_list(f->s, "services", "prod", &list, &err), 0);
    assert_names(list, prod, 2);
    json_decref(list);

    assert_int_equal(sl_store_list(f->s, "services", "staging", &list, &err), 0);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);

    static const char *const revs[] = {"default/alpha-00001"};
    assert_int_equal(sl_store_list(f->s, "revisions", NULL, &list, &err), 0);
    assert_names(list, revs, 1);
    json_decref(list);
}

static void test_txn_commit(void **state)
{
    fixture_t *f = *state;
    sl_error_t err = {0};
    json_t *got = NULL;
    assert_int_equal(sl_store_txn_begin(f->s, &err), 0);
    put_svc(f->s, "default", "a", "oci:a");
    put_svc(f->s, "default", "b", "oci:b");
    assert_int_equal(sl_store_del(f->s, "services", "default", "a", &err), 0);
    /* Reads inside the transaction see its own writes. */
    assert_int_equal(sl_store_get(f->s, "services", "default", "b", &got, &err), 0);
    json_decref(got);
    assert_int_equal(sl_store_txn_commit(f->s, &err), 0);

    assert_int_equal(sl_store_get(f->s, "services", "default", "a", &got, &err), -ENOENT);
    assert_int_equal(sl_store_get(f->s, "services", "default", "b", &got, &err), 0);
    assert_string_equal(rv_of(got), "2");
    json_decref(got);
    int64_t rev = 0;
    assert_int_equal(sl_store_revision(f->s, &rev, &err), 0);
    assert_int_equal(rev, 3);
}

static void test_txn_rollback(void **state)
{
    fixture_t *f = *state;
    sl_error_t err = {0};
    json_t *got = NULL;
    put_svc(f->s, "default", "keep", "oci:v1");

    assert_int_equal(sl_store_txn_begin(f->s, &err), 0);
    put_svc(f->s, "default", "new", "oci:a");
    put_svc(f->s, "default", "keep", "oci:v2");
    assert_int_equal(sl_store_del(f->s, "services", "default", "keep", &err), 0);
    sl_store_txn_rollback(f->s);

    assert_int_equal(sl_store_get(f->s, "services", "default", "new", &got, &err), -ENOENT);
    assert_int_equal(sl_store_get(f->s, "services", "default", "keep", &got, &err), 0);
    assert_string_equal(image_of(got), "oci:v1");
    assert_string_equal(rv_of(got), "1");
    json_decref(got);
    int64_t rev = 0;
    assert_int_equal(sl_store_revision(f->s, &rev, &err), 0);
    assert_int_equal(rev, 1);

    /* The store is usable afterwards, and revisions continue from 1. */
    put_svc(f->s, "default", "after", "oci:x");
    assert_int_equal(sl_store_get(f->s, "services", "default", "after", &got, &err), 0);
    assert_string_equal(rv_of(got), "2");
    json_decref(got);
    sl_store_txn_rollback(f->s); /* no transaction: no-op */
}

static void test_txn_errors(void **state)
{
    fixture_t *f = *state;
    sl_error_t err = {0};
    json_t *got = NULL;
    assert_int_equal(sl_store_txn_commit(f->s, &err), -EINVAL);
    assert_int_equal(sl_store_txn_begin(f->s, &err), 0);
    assert_int_equal(sl_store_txn_begin(f->s, &err), -EBUSY);
    assert_non_null(strstr(err.msg, "already open"));
    put_svc(f->s, "default", "a", "oci:a");
    /* A failing write inside the transaction leaves the rest of it intact. */
    json_t *bad = json_pack("{s:s}", "metadata", "oops");
    assert_int_equal(sl_store_put(f->s, "services", "default", "bad", bad, &err), -EINVAL);
    json_decref(bad);
    assert_int_equal(sl_store_del(f->s, "services", "default", "ghost", &err), -ENOENT);
    put_svc(f->s, "default", "b", "oci:b");
    assert_int_equal(sl_store_txn_commit(f->s, &err), 0);
    assert_int_equal(sl_store_get(f->s, "services", "default", "a", &got, &err), 0);
    assert_string_equal(rv_of(got), "1");
    json_decref(got);
    assert_int_equal(sl_store_get(f->s, "services", "default", "b", &got, &err), 0);
    assert_string_equal(rv_of(got), "2");
    json_decref(got);
    assert_int_equal(sl_store_get(f->s, "services", "default", "bad", &got, &err), -ENOENT);
}

static void test_persistence(void **state)
{
    fixture_t *f = *state;
    sl_error_t err = {0};
    json_t *got = NULL;
    put_svc(f->s, "default", "hello", "oci:a");
    put_svc(f->s, "default", "world", "oci:b");
    sl_store_close(f->s);
    f->s = NULL;
    assert_int_equal(sl_store_open_sqlite(f->path, &f->s, &err), 0);
    assert_int_equal(sl_store_get(f->s, "services", "default", "world", &got, &err), 0);
    assert_string_equal(image_of(got), "oci:b");
    assert_string_equal(rv_of(got), "2");
    json_decref(got);
    put_svc(f->s, "default", "third", "oci:c");
    assert_int_equal(sl_store_get(f->s, "services", "default", "third", &got, &err), 0);
    assert_string_equal(rv_of(got), "3");
    json_decref(got);
}

static void test_wal_and_schema(void **state)
{
    fixture_t *f = *state;
    put_svc(f->s, "default", "hello", "oci:a");
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 1);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

static void test_newer_schema_refused(void **state)
{
    fixture_t *f = *state;
    char *path = xasprintf("%s/future.db", f->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    sl_store_t *s = NULL;
    sl_error_t err = {0};
    assert_int_equal(sl_store_open_sqlite(path, &s, &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "schema version 99 is newer"));
    assert_null(s);
    free(path);
}

static void assert_mode_0600(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        fail_msg("stat %s: %s", path, strerror(errno));
    assert_int_equal(st.st_mode & 07777, 0600);
}

static void test_file_modes(void **state)
{
    fixture_t *f = *state;
    put_svc(f->s, "default", "hello", "oci:a");
    char *wal = xasprintf("%s-wal", f->path);
    char *shm = xasprintf("%s-shm", f->path);
    assert_mode_0600(f->path);
    assert_mode_0600(wal);
    assert_mode_0600(shm);
    free(wal);
    free(shm);
}

static void test_fds_cloexec(void **state)
{
    fixture_t *f = *state;
    sl_error_t err = {0};
    sl_store_t *s2 = NULL;
    assert_int_equal(sl_store_open_sqlite(f->path, &s2, &err), 0);
    put_svc(s2, "default", "hello", "oci:a");
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    struct dirent *de;
    int checked = 0;
    while ((de = readdir(d))) {
        int64_t fd = 0;
        if (sl_parse_int64(de->d_name, 3, INT32_MAX, &fd) < 0 || fd == dirfd(d))
            continue;
        char link[64], target[512];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", (int)fd);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strncmp(target, f->dir, strlen(f->dir)) != 0)
            continue;
        int fl = fcntl((int)fd, F_GETFD);
        if (!(fl & FD_CLOEXEC))
            fail_msg("fd %d (%s) lacks FD_CLOEXEC", (int)fd, target);
        checked++;
    }
    closedir(d);
    assert_true(checked >= 2);
    sl_store_close(s2);
}

static void test_second_connection(void **state)
{
    fixture_t *f = *state;
    sl_error_t err = {0};
    sl_store_t *reader = NULL;
    json_t *got = NULL;
    assert_int_equal(sl_store_open_sqlite(f->path, &reader, &err), 0);

    put_svc(f->s, "default", "hello", "oci:a");
    assert_int_equal(sl_store_get(reader, "services", "default", "hello", &got, &err), 0);
    assert_string_equal(image_of(got), "oci:a");
    json_decref(got);

    /* Uncommitted writes stay invisible to the other connection… */
    assert_int_equal(sl_store_txn_begin(f->s, &err), 0);
    put_svc(f->s, "default", "pending", "oci:p");
    assert_int_equal(sl_store_get(reader, "services", "default", "pending", &got, &err), -ENOENT);
    json_t *list = NULL;
    assert_int_equal(sl_store_list(reader, "services", NULL, &list, &err), 0);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
    /* …until commit. */
    assert_int_equal(sl_store_txn_commit(f->s, &err), 0);
    assert_int_equal(sl_store_get(reader, "services", "default", "pending", &got, &err), 0);
    assert_string_equal(rv_of(got), "2");
    json_decref(got);

    /* Writes from the second connection continue the same revision counter. */
    put_svc(reader, "default", "other", "oci:o");
    assert_int_equal(sl_store_get(f->s, "services", "default", "other", &got, &err), 0);
    assert_string_equal(rv_of(got), "3");
    json_decref(got);
    sl_store_close(reader);
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

/* n commits of a ~16 KiB object each (~9 WAL frames), distinct names. */
static void put_big(sl_store_t *s, int from, int n)
{
    char *img = xcalloc(1, 16384);
    memset(img, 'x', 16383);
    for (int i = from; i < from + n; i++) {
        char name[32];
        snprintf(name, sizeof(name), "svc-%d", i);
        put_svc(s, "default", name, img);
    }
    free(img);
}

/* A fresh loop, and f's store checkpointing on its thread pool. */
static void offload_on(fixture_t *f, uv_loop_t *loop)
{
    sl_error_t err = {0};
    assert_int_equal(uv_loop_init(loop), 0);
    assert_int_equal(sl_store_sqlite_offload_checkpoints(f->s, loop, &err), 0);
}

/* Reopen the closed store: it holds n services. */
static void reopen_holds(fixture_t *f, size_t n)
{
    sl_error_t err = {0};
    json_t *all = NULL;
    assert_int_equal(sl_store_open_sqlite(f->path, &f->s, &err), 0);
    assert_int_equal(sl_store_list(f->s, "services", NULL, &all, &err), 0);
    assert_int_equal(json_array_size(all), n);
    json_decref(all);
}

/* With checkpoints offloaded, commits do not checkpoint inline (the WAL grows
 * past SQLite's 1000-frame auto-checkpoint while the loop does not run), the
 * checkpoint runs on the thread pool all the same (the main file fills while
 * the loop is idle), the WAL is bounded if checkpoints fall behind, and the
 * data is intact. */
static void test_checkpoints_off_the_writer(void **state)
{
    fixture_t *f = *state;
    uv_loop_t loop;
    offload_on(f, &loop);
    char *wal = xasprintf("%s-wal", f->path);
    off_t main0 = file_size(f->path);
    put_big(f->s, 0, 800); /* ~7000 WAL frames; the loop is not run */
    assert_true(file_size(wal) > 2000 * 4096);
    /* One checkpoint was queued at 1000 WAL frames (~500 distinct pages:
     * the same pages are rewritten by many commits) and runs on its own. */
    for (int i = 0; i < 500 && file_size(f->path) < main0 + 256 * 4096; i++)
        usleep(10000);
    assert_true(file_size(f->path) >= main0 + 256 * 4096);
    /* Still no loop, so no second checkpoint: at 8000 frames the commit
     * checkpoints inline and the WAL starts over, cut to 16 MiB, then grows
     * by the ~5000 frames that follow (~21 MiB). Without the inline
     * checkpoint it would hold ~13000 frames (54 MB); uncut, ~8000 (33 MB). */
    put_big(f->s, 800, 700);
    assert_true(file_size(wal) < 28 * 1024 * 1024);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* its completion */
    put_big(f->s, 1500, 400);
    uv_run(&loop, UV_RUN_DEFAULT);
    sl_store_close(f->s);
    f->s = NULL;
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(file_size(wal), 0); /* the last connection removed it */
    reopen_holds(f, 1900);
    free(wal);
}

/* Closing the store while a checkpoint runs leaves the checkpoint's
 * connection to its completion, which frees it (ASan: no leak). */
static void test_close_during_checkpoint(void **state)
{
    fixture_t *f = *state;
    uv_loop_t loop;
    sl_error_t err = {0};
    offload_on(f, &loop);
    assert_int_equal(sl_store_sqlite_offload_checkpoints(f->s, &loop, &err), 0); /* once */
    put_big(f->s, 0, 220);
    assert_true(uv_loop_alive(&loop)); /* a checkpoint is queued, not yet reaped */
    sl_store_close(f->s);
    f->s = NULL;
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    reopen_holds(f, 220);
}

static void test_open_errors(void **state)
{
    fixture_t *f = *state;
    sl_store_t *s = NULL;
    sl_error_t err = {0};
    char *path = xasprintf("%s/missing-dir/x.db", f->dir);
    assert_int_equal(sl_store_open_sqlite(path, &s, &err), -ENOENT);
    assert_non_null(strstr(err.msg, path));
    free(path);
    path = xasprintf("%s/garbage.db", f->dir);
    char junk[4096];
    memset(junk, 'x', sizeof(junk));
    assert_int_equal(sl_write_file_atomic(path, junk, sizeof(junk), 0600, &err), 0);
    assert_true(sl_store_open_sqlite(path, &s, &err) < 0);
    assert_non_null(strstr(err.msg, path));
    assert_null(s);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_creates_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_del, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wal_and_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fds_cloexec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoints_off_the_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_during_checkpoint, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
