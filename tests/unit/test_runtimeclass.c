/*
 * test_runtimeclass.c — RuntimeClass validation, the built-in classes and
 * handler availability, the seccomp profiles (JSON shape, counts, what
 * they admit) and node capacity arithmetic. No runtime needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "capacity.h"
#include "runtimeclass.h"
#include "seccomp_profiles.h"
#include "service.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j)
        fail_msg("bad test JSON: %s", je.text);
    return j;
}

/* Validation of `text` fails with a message containing `want`. */
static void rejects(const char *text, const char *want)
{
    json_t *j = parse(text);
    sl_error_t err = {0};
    assert_true(sl_runtimeclass_validate(j, &err) < 0);
    if (!strstr(err.msg, want))
        fail_msg("message '%s' lacks '%s'", err.msg, want);
    json_decref(j);
}

#define HDR "\"apiVersion\":\"node.k8s.io/v1\",\"kind\":\"RuntimeClass\""

static void test_valid_class(void **state)
{
    json_t *j = parse("{" HDR ",\"metadata\":{\"name\":\"gvisor\",\"uid\":\"x\"},"
                      "\"handler\":\"runsc\",\"overhead\":{\"podFixed\":{\"cpu\":\"100m\","
                      "\"memory\":\"64Mi\"}},\"scheduling\":{\"nodeSelector\":{\"sandbox\":"
                      "\"yes\"},\"tolerations\":[{\"key\":\"k\",\"operator\":\"Equal\","
                      "\"value\":\"v\",\"effect\":\"NoSchedule\"}]},\"status\":{}}");
    sl_runtime_class_t *rc = NULL;
    sl_error_t err = {0};
    if (sl_runtimeclass_from_json(j, &rc, &err) < 0)
        fail_msg("%s", err.msg);
    assert_string_equal(rc->name, "gvisor");
    assert_string_equal(rc->handler, "runsc");
    assert_int_equal(rc->overhead_cpu_millis, 100);
    assert_int_equal(rc->overhead_memory, 64 << 20);
    assert_int_equal(rc->profile.overhead_memory, 64 << 20);
    assert_string_equal(rc->profile.runtime, "runsc");
    assert_int_equal(rc->profile.seccomp, SL_SECCOMP_DEFAULT);
    json_t *out = sl_runtimeclass_to_json(rc);
    assert_string_equal(sl_json_str(out, "overhead.podFixed.memory"), "64Mi");
    assert_string_equal(sl_json_str(out, "overhead.podFixed.cpu"), "100m");
    assert_non_null(json_object_get(out, "scheduling"));
    json_decref(out);
    /* runsc is not installed here: unavailable, with the reason */
    char *reason = NULL;
    if (!sl_runtimeclass_available(rc, &reason)) {
        assert_non_null(strstr(reason, "runsc"));
        assert_non_null(strstr(reason, "not found on PATH"));
        json_t *st = sl_runtimeclass_status_json(rc);
        assert_false(json_is_true(json_object_get(st, "available")));
        assert_non_null(json_object_get(st, "reason"));
        json_decref(st);
    }
    free(reason);
    sl_runtimeclass_free(rc);
    json_decref(j);
}

static void test_invalid_classes(void **state)
{
    rejects("{" HDR ",\"metadata\":{\"name\":\"x\"},\"handler\":\"Bad_Handler\"}",
            "handler: must be a DNS-1123 label");
    rejects("{" HDR ",\"metadata\":{\"name\":\"x\"}}", "handler: required");
    rejects("{\"apiVersion\":\"node.k8s.io/v1beta1\",\"kind\":\"RuntimeClass\","
            "\"metadata\":{\"name\":\"x\"},\"handler\":\"crun\"}",
            "apiVersion: must be node.k8s.io/v1");
    rejects("{\"apiVersion\":\"node.k8s.io/v1\",\"kind\":\"Service\","
            "\"metadata\":{\"name\":\"x\"},\"handler\":\"crun\"}",
            "kind: must be RuntimeClass");
    rejects("{" HDR ",\"metadata\":{\"name\":\"X y\"},\"handler\":\"crun\"}",
            "metadata.name: must be a DNS-1123 subdomain");
    rejects("{" HDR ",\"metadata\":{},\"handler\":\"crun\"}", "metadata.name: required");
    rejects("{" HDR
            ",\"metadata\":{\"name\":\"x\",\"namespace\":\"default\"},\"handler\":\"crun\"}",
            "metadata.namespace: RuntimeClass is cluster-scoped");
    rejects("{" HDR ",\"metadata\":{\"name\":\"x\"},\"handler\":\"crun\",\"spec\":{}}",
            "spec: unknown field");
    rejects("{" HDR ",\"metadata\":{\"name\":\"x\"},\"handler\":\"crun\","
            "\"overhead\":{\"podFixed\":{\"memory\":\"lots\"}}}",
            "overhead.podFixed.memory: must be a quantity");
    rejects("{" HDR ",\"metadata\":{\"name\":\"x\"},\"handler\":\"crun\","
            "\"overhead\":{\"podFixed\":{\"cpu\":\"-1\"}}}",
            "overhead.podFixed.cpu");
    rejects("{" HDR ",\"metadata\":{\"name\":\"x\"},\"handler\":\"crun\","
            "\"overhead\":{\"podFixed\":{\"nvidia.com/gpu\":\"1\"}}}",
            "overhead.podFixed.nvidia.com/gpu: unknown field");
    rejects("{" HDR ",\"metadata\":{\"name\":\"x\"},\"handler\":\"crun\","
            "\"overhead\":{\"perPod\":{}}}",
            "overhead.perPod: unknown field");
    rejects("{" HDR ",\"metadata\":{\"name\":\"x\"},\"handler\":\"crun\","
            "\"scheduling\":{\"nodeSelector\":{\"a\":1}}}",
            "scheduling.nodeSelector.a: must be a string");
    rejects("{" HDR ",\"metadata\":{\"name\":\"x\"},\"handler\":\"crun\","
            "\"scheduling\":{\"tolerations\":[{\"key\":\"k\",\"operator\":\"Maybe\"}]}}",
            "scheduling.tolerations[0].operator: must be Exists or Equal");
    rejects("{" HDR ",\"metadata\":{\"name\":\"x\"},\"handler\":\"crun\","
            "\"scheduling\":{\"tolerations\":[{\"key\":\"k\",\"effect\":\"Never\"}]}}",
            "scheduling.tolerations[0].effect");
    rejects("{" HDR ",\"metadata\":{\"name\":\"x\"},\"handler\":\"crun\","
            "\"scheduling\":{\"tolerations\":[{\"operator\":\"Equal\",\"value\":\"v\"}]}}",
            "must be Exists when key is empty");
    rejects("[]", "RuntimeClass: must be an object");
}

static void test_builtins(void **state)
{
    const sl_runtime_class_t *const *all = NULL;
    assert_int_equal(sl_runtimeclass_builtins(&all), 3);
    const sl_runtime_class_t *def = sl_runtimeclass_builtin("default");
    const sl_runtime_class_t *sbx = sl_runtimeclass_builtin("sandboxed");
    const sl_runtime_class_t *runc = sl_runtimeclass_builtin("runc");
    assert_non_null(def);
    assert_non_null(sbx);
    assert_non_null(runc);
    assert_null(sl_runtimeclass_builtin("gvisor"));
    assert_string_equal(def->handler, "crun");
    assert_string_equal(def->profile.runtime, "crun");
    assert_int_equal(def->profile.seccomp, SL_SECCOMP_DEFAULT);
    assert_false(def->profile.userns);
    assert_false(def->profile.no_capabilities);
    assert_string_equal(sbx->profile.runtime, "crun");
    assert_int_equal(sbx->profile.seccomp, SL_SECCOMP_SANDBOXED);
    assert_true(sbx->profile.userns && sbx->profile.readonly_rootfs &&
                sbx->profile.no_capabilities);
    assert_int_equal(sbx->profile.pids_limit, SL_SANDBOX_PIDS_LIMIT);
    assert_string_equal(runc->profile.runtime, "runc");
    /* crun and runc are installed on this machine */
    char *reason = NULL;
    assert_true(sl_runtimeclass_available(def, &reason));
    assert_null(reason);
    assert_true(sl_runtimeclass_available(runc, NULL));
    /* the built-in objects validate as ordinary manifests */
    for (size_t i = 0; i < 3; i++) {
        json_t *j = sl_runtimeclass_builtin_json(all[i]->name);
        sl_error_t err = {0};
        if (sl_runtimeclass_validate(j, &err) < 0)
            fail_msg("%s: %s", all[i]->name, err.msg);
        json_decref(j);
    }
    sl_runtimeclass_free((sl_runtime_class_t *)def); /* a no-op for built-ins */
    /* a handler of our own: runc with the sandbox */
    sl_runtime_profile_t p;
    assert_true(sl_runtime_profile_for_handler("runc-sandboxed", &p));
    assert_string_equal(p.runtime, "runc");
    assert_true(p.userns);
    /* ...which runc cannot run under a 0700 state directory: unavailable,
     * saying why, rather than failing every start */
    json_t *j = json_loads("{\"apiVersion\":\"node.k8s.io/v1\",\"kind\":\"RuntimeClass\","
                           "\"metadata\":{\"name\":\"rs\"},\"handler\":\"runc-sandboxed\"}",
                           0, NULL);
    sl_runtime_class_t *rs = NULL;
    sl_error_t e = {0};
    assert_int_equal(sl_runtimeclass_from_json(j, &rs, &e), 0);
    char *why = NULL;
    assert_false(sl_runtimeclass_available(rs, &why));
    assert_non_null(strstr(why, "use crun-sandboxed"));
    free(why);
    sl_runtimeclass_free(rs);
    json_decref(j);
    assert_false(sl_runtime_profile_for_handler("Not A Label", &p));
}

static void test_seccomp_profiles(void **state)
{
    size_t ndef = sl_seccomp_profile_count(SL_SECCOMP_DEFAULT);
    size_t nsbx = sl_seccomp_profile_count(SL_SECCOMP_SANDBOXED);
    printf("  allowed syscalls: default %zu, sandboxed %zu\n", ndef, nsbx);
    assert_true(ndef > 250);
    assert_true(nsbx > 100);
    assert_true(nsbx * 10 < ndef * 7); /* well below: under 70% */
    assert_int_equal(sl_seccomp_profile_count(SL_SECCOMP_NONE), 0);
    assert_null(sl_seccomp_profile_json(SL_SECCOMP_NONE));
    /* what HTTP servers need */
    static const char *const need[] = {
        "accept4",   "bind",         "listen",          "epoll_pwait", "futex",   "clone",
        "socket",    "mmap",         "getrandom",       "sendmsg",     "recvmsg", "setsockopt",
        "prlimit64", "rt_sigaction", "clock_nanosleep", "exit_group",  "uname"};
    for (size_t i = 0; i < SL_ARRAY_LEN(need); i++)
        if (!sl_seccomp_profile_allows(SL_SECCOMP_SANDBOXED, need[i]))
            fail_msg("sandboxed profile lacks %s", need[i]);
    /* and what it must not admit */
    static const char *const never[] = {"mount",
                                        "umount2",
                                        "pivot_root",
                                        "unshare",
                                        "setns",
                                        "ptrace",
                                        "bpf",
                                        "kexec_load",
                                        "kexec_file_load",
                                        "init_module",
                                        "finit_module",
                                        "delete_module",
                                        "keyctl",
                                        "add_key",
                                        "request_key",
                                        "perf_event_open",
                                        "userfaultfd",
                                        "io_uring_setup",
                                        "io_uring_enter",
                                        "open_by_handle_at",
                                        "name_to_handle_at",
                                        "process_vm_readv",
                                        "process_vm_writev",
                                        "swapon",
                                        "swapoff",
                                        "reboot",
                                        "acct",
                                        "quotactl",
                                        "lookup_dcookie",
                                        "iopl",
                                        "ioperm",
                                        "clone3",
                                        "chroot",
                                        "chown"};
    for (size_t i = 0; i < SL_ARRAY_LEN(never); i++)
        if (sl_seccomp_profile_allows(SL_SECCOMP_SANDBOXED, never[i]))
            fail_msg("sandboxed profile admits %s", never[i]);
    assert_false(sl_seccomp_profile_allows(SL_SECCOMP_DEFAULT, "mount"));
    assert_false(sl_seccomp_profile_allows(SL_SECCOMP_DEFAULT, "unshare"));
    assert_false(sl_seccomp_profile_allows(SL_SECCOMP_DEFAULT, "io_uring_setup"));
    assert_true(sl_seccomp_profile_allows(SL_SECCOMP_DEFAULT, "chroot"));
    /* OCI shape: survives a text round trip, default action and errno */
    json_t *j = sl_seccomp_profile_json(SL_SECCOMP_SANDBOXED);
    char *text = json_dumps(j, 0);
    json_t *back = parse(text);
    free(text);
    assert_string_equal(sl_json_str(back, "defaultAction"), "SCMP_ACT_ERRNO");
    assert_int_equal(json_integer_value(json_object_get(back, "defaultErrnoRet")), 38);
    assert_true(json_array_size(json_object_get(back, "architectures")) >= 1);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(back, "syscalls"), i, r)
    {
        assert_true(json_array_size(json_object_get(r, "names")) > 0);
        assert_non_null(sl_json_str(r, "action"));
    }
    json_decref(back);
    json_decref(j);
    sl_seccomp_profile_t p;
    assert_int_equal(sl_seccomp_profile_from_name("sandboxed", &p), 0);
    assert_int_equal(p, SL_SECCOMP_SANDBOXED);
    assert_int_equal(sl_seccomp_profile_from_name("strict", &p), -1);
}

static void test_capacity(void **state)
{
    sl_capacity_t cap;
    sl_error_t err = {0};
    assert_int_equal(sl_capacity_init(&cap, 2000, 1LL << 30, &err), 0);
    int64_t fc, fm;
    sl_capacity_footprint(100, 128 << 20, 100, 64 << 20, &fc, &fm);
    assert_int_equal(fc, 200);
    assert_int_equal(fm, 192 << 20);
    assert_int_equal(sl_capacity_max_fit(&cap, fc, fm), 5); /* 1Gi / 192Mi */
    for (int k = 0; k < 5; k++)
        assert_int_equal(sl_capacity_reserve(&cap, fc, fm, &err), 0);
    assert_int_equal(cap.n_reserved, 5);
    assert_false(sl_capacity_fits(&cap, fc, fm));
    assert_int_equal(sl_capacity_max_fit(&cap, fc, fm), 0);
    assert_true(sl_capacity_reserve(&cap, fc, fm, &err) < 0);
    assert_string_equal(err.msg, "needs cpu 200m memory 192Mi, free cpu 1 memory 64Mi");
    sl_capacity_release(&cap, fc, fm);
    assert_int_equal(sl_capacity_max_fit(&cap, fc, fm), 1);
    assert_int_equal(cap.used_memory, 4 * (192 << 20));
    /* cpu as the binding constraint */
    sl_capacity_t c2;
    assert_int_equal(sl_capacity_init(&c2, 1000, 8LL << 30, &err), 0);
    assert_int_equal(sl_capacity_reserve(&c2, 1100, 300 << 20, &err), -ENOSPC);
    assert_string_equal(err.msg, "needs cpu 1100m memory 300Mi, free cpu 1 memory 8Gi");
    /* releasing more than held clamps at zero */
    sl_capacity_release(&c2, 5000, 1LL << 40);
    assert_int_equal(c2.used_cpu_millis, 0);
    /* zero footprint always fits */
    assert_int_equal(sl_capacity_max_fit(&c2, 0, 0), INT64_MAX);
    /* machine defaults minus the reserve */
    int64_t mc, mm;
    assert_int_equal(sl_capacity_machine(&mc, &mm, &err), 0);
    assert_int_equal(sl_capacity_init(&cap, 0, 0, &err), 0);
    assert_int_equal(cap.alloc_cpu_millis, mc - SL_CAPACITY_RESERVE_CPU_MILLIS);
    assert_int_equal(cap.alloc_memory, mm - SL_CAPACITY_RESERVE_MEMORY);
    assert_true(sl_capacity_init(&cap, -1, 0, &err) < 0);
    char b[32];
    assert_string_equal(sl_format_cpu(2500, b, sizeof(b)), "2500m");
    assert_string_equal(sl_format_cpu(3000, b, sizeof(b)), "3");
    assert_string_equal(sl_format_memory(1LL << 30, b, sizeof(b)), "1Gi");
    assert_string_equal(sl_format_memory(1000, b, sizeof(b)), "1000");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_class), cmocka_unit_test(test_invalid_classes),
        cmocka_unit_test(test_builtins),    cmocka_unit_test(test_seccomp_profiles),
        cmocka_unit_test(test_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
