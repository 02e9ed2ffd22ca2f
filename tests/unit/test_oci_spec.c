/*
 * test_oci_spec.c — process composition (args, env), the generated OCI
 * config, and USER resolution against image layers (rootfs.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "oci_spec.h"
#include "rootfs.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sys/sysmacros.h>

static void assert_strv(char **v, const char *const *want)
{
    size_t n = 0;
    for (; want[n]; n++) {
        assert_non_null(v[n]);
        assert_string_equal(v[n], want[n]);
    }
    assert_null(v[n]);
}

static sl_image_t image_with(char **entry, size_t n_entry, char **cmd, size_t n_cmd)
{
    sl_image_t img = {0};
    img.entrypoint = entry;
    img.n_entrypoint = n_entry;
    img.cmd = cmd;
    img.n_cmd = n_cmd;
    return img;
}

static void test_args_rules(void **state)
{
    char *entry[] = {"/app"};
    char *cmd[] = {"--default"};
    char *ucmd[] = {"/other"};
    char *uargs[] = {"--flag", "x"};
    sl_image_t img = image_with(entry, 1, cmd, 1);
    char **out = NULL;
    sl_error_t err = {0};

    assert_int_equal(sl_oci_compose_args(&img, NULL, 0, NULL, 0, &out, &err), 0);
    assert_strv(out, (const char *[]){"/app", "--default", NULL});
    sl_strv_free(out);

    /* args replace Cmd, keep Entrypoint */
    assert_int_equal(sl_oci_compose_args(&img, NULL, 0, uargs, 2, &out, &err), 0);
    assert_strv(out, (const char *[]){"/app", "--flag", "x", NULL});
    sl_strv_free(out);

    /* command replaces Entrypoint and drops Cmd (Kubernetes rules) */
    assert_int_equal(sl_oci_compose_args(&img, ucmd, 1, NULL, 0, &out, &err), 0);
    assert_strv(out, (const char *[]){"/other", NULL});
    sl_strv_free(out);

    assert_int_equal(sl_oci_compose_args(&img, ucmd, 1, uargs, 2, &out, &err), 0);
    assert_strv(out, (const char *[]){"/other", "--flag", "x", NULL});
    sl_strv_free(out);

    /* Cmd alone */
    sl_image_t only_cmd = image_with(NULL, 0, cmd, 1);
    assert_int_equal(sl_oci_compose_args(&only_cmd, NULL, 0, NULL, 0, &out, &err), 0);
    assert_strv(out, (const char *[]){"--default", NULL});
    sl_strv_free(out);

    sl_image_t empty = image_with(NULL, 0, NULL, 0);
    out = NULL;
    assert_true(sl_oci_compose_args(&empty, NULL, 0, NULL, 0, &out, &err) < 0);
    assert_null(out);
    assert_non_null(strstr(err.msg, "no command"));
}

static void test_env_order(void **state)
{
    char *img_env[] = {"A=1", "PATH=/img/bin", "B=2", "bogus"};
    char *user_env[] = {"B=user", "PORT=1", "C=3", "K_REVISION=x"};
    sl_oci_contract_t c = {8080, "svc", "cfg", "svc-00001"};
    char **out = NULL;
    sl_error_t err = {0};
    assert_int_equal(sl_oci_compose_env(img_env, 4, user_env, 4, &c, &out, &err), 0);
    assert_strv(out, (const char *[]){"PATH=/img/bin", "A=1", "B=user", "PORT=8080", "C=3",
                                      "K_REVISION=svc-00001", "K_SERVICE=svc",
                                      "K_CONFIGURATION=cfg", NULL});
    sl_strv_free(out);

    /* default PATH when the image has none */
    assert_int_equal(sl_oci_compose_env(NULL, 0, NULL, 0, &c, &out, &err), 0);
    assert_string_equal(out[0], SL_OCI_DEFAULT_PATH);
    sl_strv_free(out);

    char *bad[] = {"OK=1", "=nokey"};
    out = NULL;
    assert_true(sl_oci_compose_env(NULL, 0, bad, 2, &c, &out, &err) < 0);
    assert_null(out);
    assert_non_null(strstr(err.msg, "env[1] '=nokey'"));
}

static bool array_has(json_t *a, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i,
                       v) if (json_is_string(v) && !strcmp(json_string_value(v), s)) return true;
    return false;
}

static json_t *find_mount(json_t *spec, const char *dst)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(spec, "mounts"), i, m)
    {
        if (!strcmp(json_string_value(json_object_get(m, "destination")), dst))
            return m;
    }
    return NULL;
}

static void test_spec_fields(void **state)
{
    char *args[] = {"/app", "-v", NULL};
    char *env[] = {"PATH=/bin", "PORT=8080", NULL};
    uint32_t gids[] = {10, 20};
    sl_oci_user_t user = {65532, 65532, gids, 2};
    sl_oci_params_t p = {
        .args = args,
        .env = env,
        .cwd = "/srv",
        .user = &user,
        .hostname = "hello-00001-abcde",
        .netns_path = "/proc/1/fd/7",
        .cgroups_path = "/sluice/hello-00001-abcde",
        .memory_limit = 128 << 20,
        .cpu_millis = 250,
        .pids_limit = 99,
        .nofile = 4096,
        .annotations = {{"k", "v"}},
    };
    json_t *spec = sl_oci_spec_build(&p);
    assert_non_null(spec);
    json_t *proc = json_object_get(spec, "process");
    assert_true(json_is_false(json_object_get(proc, "terminal")));
    assert_true(json_is_true(json_object_get(proc, "noNewPrivileges")));
    assert_string_equal(json_string_value(json_object_get(proc, "cwd")), "/srv");
    assert_int_equal(json_array_size(json_object_get(proc, "args")), 2);
    json_t *u = json_object_get(proc, "user");
    assert_int_equal(json_integer_value(json_object_get(u, "uid")), 65532);
    assert_int_equal(json_array_size(json_object_get(u, "additionalGids")), 2);
    json_t *caps = json_object_get(proc, "capabilities");
    const char *sets[] = {"bounding", "effective", "permitted"};
    for (int i = 0; i < 3; i++) {
        json_t *a = json_object_get(caps, sets[i]);
        assert_int_equal(json_array_size(a), 14);
        assert_true(array_has(a, "CAP_NET_BIND_SERVICE"));
        assert_false(array_has(a, "CAP_SYS_ADMIN"));
    }
    assert_int_equal(json_array_size(json_object_get(caps, "ambient")), 0);
    json_t *rl = json_array_get(json_object_get(proc, "rlimits"), 0);
    assert_string_equal(json_string_value(json_object_get(rl, "type")), "RLIMIT_NOFILE");
    assert_int_equal(json_integer_value(json_object_get(rl, "hard")), 4096);

    assert_string_equal(json_string_value(json_object_get(spec, "hostname")), "hello-00001-abcde");
    json_t *root = json_object_get(spec, "root");
    assert_string_equal(json_string_value(json_object_get(root, "path")), "rootfs");
    assert_true(json_is_false(json_object_get(root, "readonly")));

    json_t *tmp = find_mount(spec, "/tmp");
    assert_non_null(tmp);
    assert_true(array_has(json_object_get(tmp, "options"), "mode=1777"));
    assert_non_null(find_mount(spec, "/dev/pts"));
    assert_non_null(find_mount(spec, "/dev/shm"));
    assert_non_null(find_mount(spec, "/dev/mqueue"));
    assert_true(array_has(json_object_get(find_mount(spec, "/sys"), "options"), "ro"));
    assert_null(find_mount(spec, "/dev/console"));

    json_t *lx = json_object_get(spec, "linux");
    assert_string_equal(json_string_value(json_object_get(lx, "cgroupsPath")),
                        "/sluice/hello-00001-abcde");
    assert_true(array_has(json_object_get(lx, "readonlyPaths"), "/proc/sys"));
    assert_true(array_has(json_object_get(lx, "maskedPaths"), "/proc/kcore"));
    size_t i;
    json_t *ns;
    int seen = 0;
    json_array_foreach(json_object_get(lx, "namespaces"), i, ns)
    {
        const char *type = json_string_value(json_object_get(ns, "type"));
        seen++;
        assert_false(!strcmp(type, "user") || !strcmp(type, "cgroup"));
        if (!strcmp(type, "network"))
            assert_string_equal(json_string_value(json_object_get(ns, "path")), "/proc/1/fd/7");
    }
    assert_int_equal(seen, 5);
    json_t *res = json_object_get(lx, "resources");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(res, "memory"), "limit")),
                     128 << 20);
    json_t *cpu = json_object_get(res, "cpu");
    assert_int_equal(json_integer_value(json_object_get(cpu, "quota")), 25000);
    assert_int_equal(json_integer_value(json_object_get(cpu, "period")), 100000);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(res, "pids"), "limit")),
                     99);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(spec, "annotations"), "k")), "v");
    json_decref(spec);

    /* unlimited: no memory/cpu sections, default pids */
    sl_oci_params_t q = {.args = args, .env = env};
    spec = sl_oci_spec_build(&q);
    res = json_object_get(json_object_get(spec, "linux"), "resources");
    assert_null(json_object_get(res, "memory"));
    assert_null(json_object_get(res, "cpu"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(res, "pids"), "limit")),
                     1024);
    assert_string_equal(json_string_value(json_object_get(json_object_get(spec, "process"), "cwd")),
                        "/");
    json_decref(spec);
}

/* ---- USER resolution -------------------------------------------------- */

static char g_dir[128];
static char g_lower[200], g_upper[200];

static void put(const char *layer, const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", layer, rel);
    sl_error_t err = {0};
    assert_int_equal(sl_write_file_atomic(p, text, strlen(text), 0644, &err), 0);
}

static int user_setup(void **state)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/sluice-user-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_lower, sizeof(g_lower), "%s/lower", g_dir);
    snprintf(g_upper, sizeof(g_upper), "%s/upper", g_dir);
    char p[300];
    sl_error_t err = {0};
    snprintf(p, sizeof(p), "%s/etc", g_lower);
    sl_mkdir_p(p, 0755, &err);
    snprintf(p, sizeof(p), "%s/etc", g_upper);
    sl_mkdir_p(p, 0755, &err);
    put(g_lower, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\nold:x:500:500::/:/bin/sh\n");
    put(g_upper, "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\n"
        "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
        "app:x:1000:1001::/app:/bin/sh\n"
        "broken line\n");
    put(g_upper, "etc/group",
        "root:x:0:\nnonroot:x:65532:\nstaff:x:50:app,other\nweb:x:33:app\napp:x:1001:\n");
    return 0;
}

static int user_teardown(void **state)
{
    sl_error_t err = {0};
    sl_rm_rf(g_dir, &err);
    return 0;
}

/* spec resolves, over the two layers given, to uid, gid and n_gids. */
static void resolve_in(char **layers, const char *spec, uint32_t uid, uint32_t gid, size_t n_gids)
{
    sl_oci_user_t u;
    sl_error_t err = {0};
    if (sl_rootfs_resolve_user(layers, 2, spec, &u, &err) < 0)
        fail_msg("resolve '%s': %s", spec, err.msg);
    assert_int_equal(u.uid, uid);
    assert_int_equal(u.gid, gid);
    assert_int_equal(u.n_gids, n_gids);
    sl_oci_user_clear(&u);
}

static void resolve_ok(const char *spec, uint32_t uid, uint32_t gid, size_t n_gids)
{
    char *layers[] = {g_lower, g_upper};
    resolve_in(layers, spec, uid, gid, n_gids);
}

/* securityContext.capabilities: the default set minus drop ("ALL" too), plus
 * add (names with or without CAP_, any case); config.json carries exactly that. */
static void test_caps_apply(void **state)
{
    char *drop_all[] = {"ALL"}, *add_bind[] = {"net_bind_service"};
    char **caps = sl_oci_caps_apply(drop_all, 1, add_bind, 1);
    assert_string_equal(caps[0], "CAP_NET_BIND_SERVICE");
    assert_null(caps[1]);
    sl_oci_params_t p = {.caps = (const char *const *)caps};
    json_t *spec = sl_oci_spec_build(&p);
    json_t *bnd = json_object_get(json_object_get(json_object_get(spec, "process"), "capabilities"),
                                  "bounding");
    assert_int_equal(json_array_size(bnd), 1);
    assert_string_equal(json_string_value(json_array_get(bnd, 0)), "CAP_NET_BIND_SERVICE");
    json_decref(spec);
    sl_strv_free(caps);

    char *drop[] = {"CHOWN", "CAP_KILL"};
    caps = sl_oci_caps_apply(drop, 2, NULL, 0);
    size_t n = 0;
    for (; caps[n]; n++) {
        assert_string_not_equal(caps[n], "CAP_CHOWN");
        assert_string_not_equal(caps[n], "CAP_KILL");
    }
    size_t all = 0;
    while (sl_oci_default_caps[all])
        all++;
    assert_int_equal(n, all - 2);
    sl_strv_free(caps);

    assert_string_equal(sl_oci_cap_name("Cap_Setuid"), "CAP_SETUID");
    assert_null(sl_oci_cap_name("SYS_ADMIN"));
    assert_null(sl_oci_cap_name("ALL"));
}

static void test_user_forms(void **state)
{
    resolve_ok(NULL, 0, 0, 0);
    resolve_ok("", 0, 0, 0);
    resolve_ok("nonroot", 65532, 65532, 0);
    resolve_ok("65532", 65532, 65532, 0);
    resolve_ok("app", 1000, 1001, 2); /* staff, web */
    resolve_ok("app:staff", 1000, 50, 1);
    resolve_ok("1000:33", 1000, 33, 1);
    resolve_ok("4242", 4242, 0, 0); /* unknown uid: gid 0 */
    resolve_ok("4242:4243", 4242, 4243, 0);

    char *layers[] = {g_lower, g_upper};
    sl_oci_user_t u;
    sl_error_t err = {0};
    assert_true(sl_rootfs_resolve_user(layers, 2, "old", &u, &err) < 0); /* upper wins */
    assert_non_null(strstr(err.msg, "user 'old' not found"));
    assert_true(sl_rootfs_resolve_user(layers, 2, "app:nogroup", &u, &err) < 0);
    assert_non_null(strstr(err.msg, "group 'nogroup'"));
    char *lower_only[] = {g_lower};
    resolve_ok("0", 0, 0, 0);
    assert_int_equal(sl_rootfs_resolve_user(lower_only, 1, "old", &u, &err), 0);
    assert_int_equal(u.uid, 500);
    sl_oci_user_clear(&u);
}

/* A symlinked /etc/passwd resolves inside the layer, never on the host. */
static void test_user_symlink_stays_inside(void **state)
{
    char layer[256], p[300];
    snprintf(layer, sizeof(layer), "%s/evil", g_dir);
    snprintf(p, sizeof(p), "%s/etc", layer);
    sl_error_t err = {0};
    assert_int_equal(sl_mkdir_p(p, 0755, &err), 0);
    snprintf(p, sizeof(p), "%s/etc/passwd", layer);
    /* Outside the layer, that absolute path is a passwd naming "root". */
    char outside[256];
    snprintf(outside, sizeof(outside), "%s/outside-passwd", g_dir);
    put(g_dir, "outside-passwd", "root:x:0:0:root:/root:/bin/sh\n");
    assert_int_equal(symlink(outside, p), 0);
    char *layers[] = {layer};
    sl_oci_user_t u;
    assert_true(sl_rootfs_resolve_user(layers, 1, "root", &u, &err) < 0);
    assert_non_null(strstr(err.msg, "has none"));
    /* A whiteout (0:0 char device) deletes a lower layer's file. */
    char wh[256];
    snprintf(wh, sizeof(wh), "%s/wh", g_dir);
    snprintf(p, sizeof(p), "%s/etc", wh);
    assert_int_equal(sl_mkdir_p(p, 0755, &err), 0);
    snprintf(p, sizeof(p), "%s/etc/passwd", wh);
    assert_int_equal(mknod(p, S_IFCHR | 0600, makedev(0, 0)), 0);
    char *with_wh[] = {g_upper, wh};
    assert_true(sl_rootfs_resolve_user(with_wh, 2, "nonroot", &u, &err) < 0);

    /* So does a whiteout of /etc itself (the path is not a directory in
     * that layer: hidden, not an error), and an opaque /etc without the
     * file: the lower layer's passwd is what the container cannot see. */
    char up[256];
    snprintf(up, sizeof(up), "%s/etc-gone", g_dir);
    assert_int_equal(sl_mkdir_p(up, 0755, &err), 0);
    snprintf(p, sizeof(p), "%s/etc", up);
    assert_int_equal(mknod(p, S_IFCHR | 0600, makedev(0, 0)), 0);
    char *etc_gone[] = {g_upper, up};
    assert_true(sl_rootfs_resolve_user(etc_gone, 2, "nonroot", &u, &err) < 0);
    assert_non_null(strstr(err.msg, "user 'nonroot' not found"));
    assert_int_equal(sl_rootfs_resolve_user(etc_gone, 2, "0", &u, &err), 0);
    sl_oci_user_clear(&u);
    snprintf(up, sizeof(up), "%s/etc-opaque", g_dir);
    snprintf(p, sizeof(p), "%s/etc", up);
    assert_int_equal(sl_mkdir_p(p, 0755, &err), 0);
    assert_int_equal(setxattr(p, "trusted.overlay.opaque", "y", 1, 0), 0);
    char *opaque[] = {g_upper, up};
    assert_true(sl_rootfs_resolve_user(opaque, 2, "nonroot", &u, &err) < 0);
    char *transparent[] = {g_upper, g_lower}; /* lower on top: its passwd, no nonroot */
    assert_true(sl_rootfs_resolve_user(transparent, 2, "nonroot", &u, &err) < 0);
    snprintf(up, sizeof(up), "%s/etc-plain", g_dir);
    snprintf(p, sizeof(p), "%s/etc", up);
    assert_int_equal(sl_mkdir_p(p, 0755, &err), 0);
    char *plain[] = {g_upper, up}; /* an /etc without passwd, not opaque */
    resolve_in(plain, "nonroot", 65532, 65532, 0);
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_args_rules),
        cmocka_unit_test(test_env_order),
        cmocka_unit_test(test_spec_fields),
    };
    const struct CMUnitTest users[] = {
        cmocka_unit_test(test_caps_apply),
        cmocka_unit_test(test_user_forms),
        cmocka_unit_test(test_user_symlink_stays_inside),
    };
    int rc = cmocka_run_group_tests(pure, NULL, NULL);
    rc |= cmocka_run_group_tests(users, user_setup, user_teardown);
    return rc;
}
