/*
 * test_seccomp_bpf.c — the built-in profiles compiled to BPF behave like
 * the profiles: a child installs the program and checks that allowed calls
 * pass, denied ones fail with the profile's errno, argument conditions hold.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "seccomp_bpf.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <openssl/evp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* One syscall, its arguments and what the filter should make of it. */
typedef struct probe {
    long nr;
    long a0, a1, a2;
    int want_errno; /* 0 = allowed (the call's own result does not matter) */
} probe_t;

/* Allowed calls may fail on their own (bad fd, no privilege), but never
 * with the errno the filter would have returned for them. */
static int run_probe(const probe_t *p, int filter_errno)
{
    errno = 0;
    long rc = syscall(p->nr, p->a0, p->a1, p->a2, 0, 0, 0);
    if (p->want_errno)
        return rc == -1 && errno == p->want_errno;
    return rc >= 0 || (errno != filter_errno && errno != ENOSYS && errno != EPERM);
}

/* exit_group itself: the sanitizers' _exit interceptor runs a leak check,
 * which needs calls the filter may deny. */
static void child_exit(int code)
{
    for (;;)
        syscall(SYS_exit_group, code);
}

/* In a child: install the program, run the probes; exit 0 or 1 + the index
 * of the first probe that misbehaved. Only raw syscalls after install. */
static int check_in_child(const uint8_t *bpf, size_t len, const probe_t *probes, size_t n,
                          int filter_errno)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sock_fprog prog = {.len = (unsigned short)(len / 8),
                                  .filter = (struct sock_filter *)(uintptr_t)bpf};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
            syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
            child_exit(100);
        for (size_t i = 0; i < n; i++)
            if (!run_probe(&probes[i], filter_errno))
                child_exit(1 + (int)i);
        child_exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void compile(sl_seccomp_profile_t p, uint8_t **bpf, size_t *len)
{
    json_t *j = sl_seccomp_profile_json(p);
    sl_error_t err = {0};
    assert_int_equal(sl_seccomp_bpf_compile(j, bpf, len, &err), 0);
    json_decref(j);
    assert_true(*len > 0 && *len % 8 == 0);
}

#define CLONE_NEWNET_ 0x40000000L

static void test_default_profile(void **state)
{
    (void)state;
    uint8_t *bpf;
    size_t len;
    compile(SL_SECCOMP_DEFAULT, &bpf, &len);
    const probe_t probes[] = {
        {SYS_getpid, 0, 0, 0, 0},
        {SYS_close, -1, 0, 0, 0},
        {SYS_socket, AF_PACKET, SOCK_RAW, 0, 0},       /* socket: any family */
        {SYS_socket, AF_VSOCK, SOCK_STREAM, 0, EPERM}, /* but vsock */
        {SYS_mount, 0, 0, 0, EPERM},                   /* not listed: default EPERM */
        {SYS_unshare, CLONE_NEWNET_, 0, 0, EPERM},
        {SYS_clone3, 0, 0, 0, ENOSYS},           /* rule with errnoRet */
        {SYS_clone, CLONE_NEWNET_, 0, 0, EPERM}, /* masked condition fails */
        {SYS_setns, -1, 0, 0, EPERM},
    };
    assert_int_equal(check_in_child(bpf, len, probes, SL_ARRAY_LEN(probes), EPERM), 0);
    free(bpf);
}

static void test_sandboxed_profile(void **state)
{
    (void)state;
    uint8_t *bpf;
    size_t len;
    compile(SL_SECCOMP_SANDBOXED, &bpf, &len);
    const probe_t probes[] = {
        {SYS_getpid, 0, 0, 0, 0},
        {SYS_close, -1, 0, 0, 0},
        {SYS_socket, AF_INET, SOCK_STREAM, 0, 0},
        {SYS_socket, AF_NETLINK, SOCK_RAW, 0, 0},      /* NETLINK_ROUTE */
        {SYS_socket, AF_NETLINK, SOCK_RAW, 9, ENOSYS}, /* NETLINK_AUDIT: no */
        {SYS_socket, AF_PACKET, SOCK_RAW, 0, ENOSYS},
        {SYS_mount, 0, 0, 0, EPERM}, /* named: EPERM */
        {SYS_unshare, CLONE_NEWNET_, 0, 0, EPERM},
        {SYS_chown, 0, 0, 0, EPERM},
        {SYS_io_uring_setup, 0, 0, 0, ENOSYS},
        {SYS_setpriority, 0, 0, 0, ENOSYS}, /* not listed: default ENOSYS */
        {SYS_clone, CLONE_NEWNET_, 0, 0, ENOSYS},
    };
    assert_int_equal(check_in_child(bpf, len, probes, SL_ARRAY_LEN(probes), ENOSYS), 0);
    free(bpf);
}

/* The cached base64 decodes to what a fresh compilation gives. */
static void test_cached_base64(void **state)
{
    (void)state;
    assert_null(sl_seccomp_bpf_base64(SL_SECCOMP_NONE));
    for (int p = SL_SECCOMP_DEFAULT; p <= SL_SECCOMP_SANDBOXED; p++) {
        uint8_t *bpf;
        size_t len;
        compile((sl_seccomp_profile_t)p, &bpf, &len);
        const char *b64 = sl_seccomp_bpf_base64((sl_seccomp_profile_t)p);
        assert_non_null(b64);
        assert_ptr_equal(b64, sl_seccomp_bpf_base64((sl_seccomp_profile_t)p));
        assert_int_equal(strlen(b64), 4 * ((len + 2) / 3));
        uint8_t *dec = xmalloc(strlen(b64));
        int n = EVP_DecodeBlock(dec, (const unsigned char *)b64, (int)strlen(b64));
        assert_true(n >= (int)len);
        assert_memory_equal(dec, bpf, len);
        free(dec);
        free(bpf);
    }
}

/* Unknown names are skipped (as crun does); bad actions fail. */
static void test_unknown_names_and_errors(void **state)
{
    (void)state;
    sl_error_t err = {0};
    uint8_t *bpf = NULL;
    size_t len = 0;
    json_t *ok = json_loads("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":38,"
                            "\"syscalls\":[{\"names\":[\"no_such_call\",\"getpid\",\"exit_group\"],"
                            "\"action\":\"SCMP_ACT_ALLOW\"}]}",
                            0, NULL);
    assert_int_equal(sl_seccomp_bpf_compile(ok, &bpf, &len, &err), 0);
    const probe_t probes[] = {{SYS_getpid, 0, 0, 0, 0}, {SYS_getppid, 0, 0, 0, ENOSYS}};
    assert_int_equal(check_in_child(bpf, len, probes, SL_ARRAY_LEN(probes), ENOSYS), 0);
    free(bpf);
    json_decref(ok);
    json_t *bad = json_loads("{\"defaultAction\":\"SCMP_ACT_NOTIFY\"}", 0, NULL);
    assert_true(sl_seccomp_bpf_compile(bad, &bpf, &len, &err) < 0);
    assert_non_null(strstr(err.msg, "SCMP_ACT_NOTIFY"));
    json_decref(bad);
    bad = json_loads("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"defaultErrnoRet\":1}", 0, NULL);
    assert_true(sl_seccomp_bpf_compile(bad, &bpf, &len, &err) < 0);
    json_decref(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_profile),
        cmocka_unit_test(test_sandboxed_profile),
        cmocka_unit_test(test_cached_base64),
        cmocka_unit_test(test_unknown_names_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
