/*
 * seccomp_bpf.c — OCI linux.seccomp JSON to a raw BPF program with
 * libseccomp, following crun's libcrun_generate_seccomp step by step so the
 * program is the one crun would have built from the same JSON, and a
 * per-process cache of the built-in profiles' programs in base64.
 */
#include "seccomp_bpf.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#define MOD "seccomp"

/* A generated program is a few KiB; anything near this is a bug. */
#define BPF_MAX (1u << 20)

static int parse_action(const char *name, int errno_ret, uint32_t *out)
{
    static const struct {
        const char *name;
        uint32_t action;
    } plain[] = {
        {"SCMP_ACT_ALLOW", SCMP_ACT_ALLOW},
        {"SCMP_ACT_KILL", SCMP_ACT_KILL},
        {"SCMP_ACT_KILL_THREAD", SCMP_ACT_KILL_THREAD},
        {"SCMP_ACT_KILL_PROCESS", SCMP_ACT_KILL_PROCESS},
        {"SCMP_ACT_TRAP", SCMP_ACT_TRAP},
        {"SCMP_ACT_LOG", SCMP_ACT_LOG},
    };
    if (!name)
        return -1;
    for (size_t i = 0; i < SL_ARRAY_LEN(plain); i++) {
        if (strcmp(name, plain[i].name) == 0) {
            *out = plain[i].action;
            return 0;
        }
    }
    if (strcmp(name, "SCMP_ACT_ERRNO") == 0) {
        *out = SCMP_ACT_ERRNO((uint32_t)errno_ret);
        return 0;
    }
    if (strcmp(name, "SCMP_ACT_TRACE") == 0) {
        *out = SCMP_ACT_TRACE((uint32_t)errno_ret);
        return 0;
    }
    return -1; /* SCMP_ACT_NOTIFY needs a listener: not for a raw program */
}

static bool action_takes_errno(const char *name)
{
    return name && (strcmp(name, "SCMP_ACT_ERRNO") == 0 || strcmp(name, "SCMP_ACT_TRACE") == 0);
}

/* crun: errnoRet only with ERRNO/TRACE, EPERM when absent. */
static int rule_action(const json_t *obj, const char *action_key, const char *errno_key,
                       uint32_t *out, sl_error_t *err)
{
    const char *name = json_string_value(json_object_get(obj, action_key));
    json_t *e = json_object_get(obj, errno_key);
    int errno_ret = EPERM;
    if (e) {
        if (!action_takes_errno(name) || !json_is_integer(e))
            return sl_error_set(err, EINVAL, "%s: not allowed with action %s", errno_key,
                                name ? name : "(none)");
        errno_ret = (int)json_integer_value(e);
    }
    if (parse_action(name, errno_ret, out) < 0)
        return sl_error_set(err, EINVAL, "%s: unsupported action '%s'", action_key,
                            name ? name : "");
    return 0;
}

static int parse_op(const char *op, enum scmp_compare *out)
{
    static const struct {
        const char *name;
        enum scmp_compare op;
    } ops[] = {
        {"SCMP_CMP_NE", SCMP_CMP_NE},
        {"SCMP_CMP_LT", SCMP_CMP_LT},
        {"SCMP_CMP_LE", SCMP_CMP_LE},
        {"SCMP_CMP_EQ", SCMP_CMP_EQ},
        {"SCMP_CMP_GE", SCMP_CMP_GE},
        {"SCMP_CMP_GT", SCMP_CMP_GT},
        {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
    };
    for (size_t i = 0; op && i < SL_ARRAY_LEN(ops); i++) {
        if (strcmp(op, ops[i].name) == 0) {
            *out = ops[i].op;
            return 0;
        }
    }
    return -1;
}

static int add_arches(scmp_filter_ctx ctx, const json_t *arches, sl_error_t *err)
{
    size_t i;
    json_t *a;
    json_array_foreach(arches, i, a)
    {
        const char *name = json_string_value(a);
        if (!name)
            return sl_error_set(err, EINVAL, "architectures[%zu]: not a string", i);
        if (strncmp(name, "SCMP_ARCH_", 10) == 0)
            name += 10;
        char lower[32];
        size_t n = 0;
        for (; name[n] && n < sizeof(lower) - 1; n++)
            lower[n] = (char)tolower((unsigned char)name[n]);
        lower[n] = '\0';
        uint32_t token = seccomp_arch_resolve_name(lower);
        if (token == 0)
            return sl_error_set(err, EINVAL, "architectures[%zu]: unknown '%s'", i, name);
        int rc = seccomp_arch_add(ctx, token);
        if (rc < 0 && rc != -EEXIST)
            return sl_error_set(err, -rc, "adding architecture %s: %s", name, strerror(-rc));
    }
    return 0;
}

/* Up to 6 conditions; *n_out = how many. *repeated: an argument index
 * appears twice, which crun turns into one rule per condition. */
static int parse_args(const json_t *args, struct scmp_arg_cmp *cmp, unsigned *n_out, bool *repeated,
                      sl_error_t *err)
{
    unsigned count[6] = {0}, n = 0;
    size_t i;
    json_t *a;
    *repeated = false;
    json_array_foreach(args, i, a)
    {
        if (n == 6)
            break;
        json_int_t index = json_integer_value(json_object_get(a, "index"));
        enum scmp_compare op;
        if (index < 0 || index >= 6)
            return sl_error_set(err, EINVAL, "args[%zu].index: must be 0..5", i);
        if (parse_op(json_string_value(json_object_get(a, "op")), &op) < 0)
            return sl_error_set(err, EINVAL, "args[%zu].op: unsupported", i);
        *repeated = *repeated || ++count[index] > 1;
        cmp[n++] = (struct scmp_arg_cmp){
            .arg = (unsigned)index,
            .op = op,
            .datum_a = (scmp_datum_t)json_integer_value(json_object_get(a, "value")),
            .datum_b = (scmp_datum_t)json_integer_value(json_object_get(a, "valueTwo")),
        };
    }
    *n_out = n;
    return 0;
}

static int add_one(scmp_filter_ctx ctx, uint32_t action, int nr, const json_t *args,
                   const char *name, sl_error_t *err)
{
    struct scmp_arg_cmp cmp[6];
    unsigned n = 0;
    bool repeated = false;
    int rc = 0;
    if (args && parse_args(args, cmp, &n, &repeated, err) < 0)
        return sl_error_wrap(err, "syscall %s", name);
    if (!args)
        rc = seccomp_rule_add(ctx, action, nr, 0);
    else if (!repeated)
        rc = seccomp_rule_add_array(ctx, action, nr, n, cmp);
    else
        for (unsigned k = 0; k < n && rc >= 0; k++)
            rc = seccomp_rule_add_array(ctx, action, nr, 1, &cmp[k]);
    if (rc < 0)
        return sl_error_set(err, -rc, "adding rule for %s: %s", name, strerror(-rc));
    return 0;
}

static int add_rules(scmp_filter_ctx ctx, uint32_t default_action, const json_t *rules,
                     sl_error_t *err)
{
    size_t i, j;
    json_t *r, *n;
    json_array_foreach(rules, i, r)
    {
        uint32_t action;
        if (rule_action(r, "action", "errnoRet", &action, err) < 0)
            return sl_error_wrap(err, "syscalls[%zu]", i);
        if (action == default_action)
            continue; /* as crun: the default already says so */
        const json_t *args = json_object_get(r, "args");
        json_array_foreach(json_object_get(r, "names"), j, n)
        {
            const char *name = json_string_value(n);
            int nr = name ? seccomp_syscall_resolve_name(name) : __NR_SCMP_ERROR;
            if (nr == __NR_SCMP_ERROR)
                continue; /* crun skips unknown names (with a warning) */
            if (add_one(ctx, action, nr, args, name, err) < 0)
                return -err->code;
        }
    }
    return 0;
}

static int export_bpf(scmp_filter_ctx ctx, uint8_t **out, size_t *len, sl_error_t *err)
{
    sl_autoclose int fd = memfd_create("sluice-seccomp", MFD_CLOEXEC);
    if (fd < 0)
        return sl_error_errno(err, errno, "memfd_create");
    int rc = seccomp_export_bpf(ctx, fd);
    if (rc < 0)
        return sl_error_set(err, -rc, "seccomp_export_bpf: %s", strerror(-rc));
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0 || size > BPF_MAX || size % 8 != 0)
        return sl_error_set(err, EIO, "seccomp_export_bpf: unexpected size %lld", (long long)size);
    uint8_t *buf = xmalloc((size_t)size);
    ssize_t got = pread(fd, buf, (size_t)size, 0);
    if (got != (ssize_t)size) {
        free(buf);
        return sl_error_set(err, EIO, "reading the exported filter: short read");
    }
    *out = buf;
    *len = (size_t)size;
    return 0;
}

int sl_seccomp_bpf_compile(const json_t *profile, uint8_t **out, size_t *len, sl_error_t *err)
{
    uint32_t default_action;
    if (!json_is_object(profile))
        return sl_error_set(err, EINVAL, "seccomp profile: not an object");
    if (rule_action(profile, "defaultAction", "defaultErrnoRet", &default_action, err) < 0)
        return -err->code;
    scmp_filter_ctx ctx = seccomp_init(default_action);
    if (!ctx)
        return sl_error_set(err, EINVAL, "seccomp_init failed");
    int rc = add_arches(ctx, json_object_get(profile, "architectures"), err);
    if (rc == 0)
        rc = add_rules(ctx, default_action, json_object_get(profile, "syscalls"), err);
    if (rc == 0)
        rc = export_bpf(ctx, out, len, err);
    seccomp_release(ctx);
    return rc < 0 ? rc : 0;
}

static char *compile_profile(sl_seccomp_profile_t p, sl_error_t *err)
{
    json_t *j = sl_seccomp_profile_json(p);
    uint8_t *bpf = NULL;
    size_t len = 0;
    char *b64 = NULL;
    if (sl_seccomp_bpf_compile(j, &bpf, &len, err) == 0)
        b64 = sl_base64_encode(bpf, len);
    free(bpf);
    json_decref(j);
    return b64;
}

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    bool tried;
    char *b64;
} cache[SL_SECCOMP_SANDBOXED + 1];

const char *sl_seccomp_bpf_base64(sl_seccomp_profile_t p)
{
    if (p <= SL_SECCOMP_NONE || p > SL_SECCOMP_SANDBOXED)
        return NULL;
    pthread_mutex_lock(&cache_lock);
    if (!cache[p].tried) {
        sl_error_t err = {0};
        cache[p].tried = true;
        cache[p].b64 = compile_profile(p, &err);
        if (!cache[p].b64)
            sl_warn(MOD, "compiling the %s profile to BPF: %s; crun gets the JSON profile",
                    sl_seccomp_profile_name(p), err.msg);
    }
    const char *b64 = cache[p].b64;
    pthread_mutex_unlock(&cache_lock);
    return b64;
}
