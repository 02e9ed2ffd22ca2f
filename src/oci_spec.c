/*
 * oci_spec.c — compose an instance's process (args, env, user) and build
 * the OCI runtime config.json. The defaults follow `crun spec` and Docker:
 * Docker's default capability set, crun's masked and read-only /proc and
 * /sys paths, a private /dev with the standard devices (the runtime creates
 * them and the /dev/fd, /dev/std* links), /tmp on tmpfs, no console.
 */
#include "oci_spec.h"

#include <errno.h>
#include <stdio.h>
#include <strings.h>

void sl_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

size_t sl_strv_len(char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

char **sl_strv_dup(char *const *v, size_t n)
{
    char **out = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        out[i] = xstrdup(v[i]);
    return out;
}

void sl_oci_user_clear(sl_oci_user_t *u)
{
    free(u->gids);
    memset(u, 0, sizeof(*u));
}

void sl_strv_push(sl_strv_t *s, char *owned)
{
    if (s->n + 2 > s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = xrealloc(s->v, s->cap * sizeof(char *));
    }
    s->v[s->n++] = owned;
    s->v[s->n] = NULL;
}

static char **strv_steal(sl_strv_t *s)
{
    if (!s->v)
        s->v = xcalloc(1, sizeof(char *));
    char **v = s->v;
    memset(s, 0, sizeof(*s));
    return v;
}

static void strv_append(sl_strv_t *s, char *const *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sl_strv_push(s, xstrdup(items[i]));
}

int sl_oci_compose_args(const sl_image_t *img, char *const *command, size_t n_command,
                        char *const *args, size_t n_args, char ***out, sl_error_t *err)
{
    sl_strv_t s = {0};
    if (n_command > 0) {
        strv_append(&s, command, n_command);
        strv_append(&s, args, n_args);
    } else {
        if (img)
            strv_append(&s, img->entrypoint, img->n_entrypoint);
        if (n_args > 0)
            strv_append(&s, args, n_args);
        else if (img)
            strv_append(&s, img->cmd, img->n_cmd);
    }
    if (s.n == 0 || s.v[0][0] == '\0') {
        sl_strv_free(strv_steal(&s));
        return sl_error_set(err, EINVAL,
                            "no command to run: the image has no Entrypoint or Cmd and the "
                            "service sets no command or args");
    }
    *out = strv_steal(&s);
    return 0;
}

/* Set "K=V" in s, replacing an entry with the same key in place. */
static void env_set(sl_strv_t *s, char *owned)
{
    size_t klen = (size_t)(strchr(owned, '=') - owned);
    for (size_t i = 0; i < s->n; i++) {
        if (strncmp(s->v[i], owned, klen) == 0 && s->v[i][klen] == '=') {
            free(s->v[i]);
            s->v[i] = owned;
            return;
        }
    }
    sl_strv_push(s, owned);
}

static bool env_valid(const char *kv)
{
    const char *eq = strchr(kv, '=');
    return eq && eq != kv;
}

void sl_oci_contract_env(const sl_oci_contract_t *c, char *out[SL_OCI_CONTRACT_VARS])
{
    out[0] = xasprintf("PORT=%d", c->port);
    out[1] = xasprintf("K_SERVICE=%s", c->service ? c->service : "");
    out[2] = xasprintf("K_CONFIGURATION=%s", c->configuration ? c->configuration : "");
    out[3] = xasprintf("K_REVISION=%s", c->revision ? c->revision : "");
}

int sl_oci_compose_env(char *const *image_env, size_t n_image_env, char *const *user_env,
                       size_t n_user_env, const sl_oci_contract_t *c, char ***out, sl_error_t *err)
{
    sl_strv_t s = {0};
    env_set(&s, xstrdup(SL_OCI_DEFAULT_PATH));
    for (size_t i = 0; i < n_image_env; i++)
        if (env_valid(image_env[i]))
            env_set(&s, xstrdup(image_env[i]));
    for (size_t i = 0; i < n_user_env; i++) {
        if (!env_valid(user_env[i])) {
            sl_strv_free(strv_steal(&s));
            return sl_error_set(err, EINVAL, "env[%zu] '%s': expected NAME=VALUE", i, user_env[i]);
        }
        env_set(&s, xstrdup(user_env[i]));
    }
    char *contract[SL_OCI_CONTRACT_VARS];
    sl_oci_contract_env(c, contract);
    for (size_t i = 0; i < SL_OCI_CONTRACT_VARS; i++)
        env_set(&s, contract[i]);
    *out = strv_steal(&s);
    return 0;
}

static json_t *json_strv(const char *const *v)
{
    json_t *a = json_array();
    for (size_t i = 0; v && v[i]; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

#define STRV(...) json_strv((const char *const[]){__VA_ARGS__, NULL})

const char *const sl_oci_default_caps[] = {"CAP_CHOWN",
                                           "CAP_DAC_OVERRIDE",
                                           "CAP_FSETID",
                                           "CAP_FOWNER",
                                           "CAP_MKNOD",
                                           "CAP_NET_RAW",
                                           "CAP_SETGID",
                                           "CAP_SETUID",
                                           "CAP_SETFCAP",
                                           "CAP_SETPCAP",
                                           "CAP_NET_BIND_SERVICE",
                                           "CAP_SYS_CHROOT",
                                           "CAP_KILL",
                                           "CAP_AUDIT_WRITE",
                                           NULL};

/* A capability's name without "CAP_" (as Kubernetes writes them). */
static const char *cap_bare(const char *name)
{
    return strncasecmp(name, "CAP_", 4) == 0 ? name + 4 : name;
}

const char *sl_oci_cap_name(const char *name)
{
    if (!name)
        return NULL;
    const char *bare = cap_bare(name);
    for (size_t i = 0; sl_oci_default_caps[i]; i++)
        if (strcasecmp(sl_oci_default_caps[i] + 4, bare) == 0)
            return sl_oci_default_caps[i];
    return NULL;
}

bool sl_oci_cap_known(const char *name)
{
    static const char *const all[] = {"CHOWN",
                                      "DAC_OVERRIDE",
                                      "DAC_READ_SEARCH",
                                      "FOWNER",
                                      "FSETID",
                                      "KILL",
                                      "SETGID",
                                      "SETUID",
                                      "SETPCAP",
                                      "LINUX_IMMUTABLE",
                                      "NET_BIND_SERVICE",
                                      "NET_BROADCAST",
                                      "NET_ADMIN",
                                      "NET_RAW",
                                      "IPC_LOCK",
                                      "IPC_OWNER",
                                      "SYS_MODULE",
                                      "SYS_RAWIO",
                                      "SYS_CHROOT",
                                      "SYS_PTRACE",
                                      "SYS_PACCT",
                                      "SYS_ADMIN",
                                      "SYS_BOOT",
                                      "SYS_NICE",
                                      "SYS_RESOURCE",
                                      "SYS_TIME",
                                      "SYS_TTY_CONFIG",
                                      "MKNOD",
                                      "LEASE",
                                      "AUDIT_WRITE",
                                      "AUDIT_CONTROL",
                                      "SETFCAP",
                                      "MAC_OVERRIDE",
                                      "MAC_ADMIN",
                                      "SYSLOG",
                                      "WAKE_ALARM",
                                      "BLOCK_SUSPEND",
                                      "AUDIT_READ",
                                      "PERFMON",
                                      "BPF",
                                      "CHECKPOINT_RESTORE"};
    if (!name)
        return false;
    const char *bare = cap_bare(name);
    for (size_t i = 0; i < SL_ARRAY_LEN(all); i++)
        if (strcasecmp(all[i], bare) == 0)
            return true;
    return false;
}

/* Whether names v[0..n) list cap (a default-set entry); "ALL" does when
 * all_counts. */
static bool cap_listed(char *const *v, size_t n, const char *cap, bool all_counts)
{
    for (size_t i = 0; i < n; i++)
        if ((all_counts && strcasecmp(v[i], "ALL") == 0) || sl_oci_cap_name(v[i]) == cap)
            return true;
    return false;
}

char **sl_oci_caps_apply(char *const *drop, size_t n_drop, char *const *add, size_t n_add)
{
    size_t n = 0;
    char **out = xcalloc(SL_ARRAY_LEN(sl_oci_default_caps), sizeof(char *));
    for (size_t i = 0; sl_oci_default_caps[i]; i++) {
        const char *cap = sl_oci_default_caps[i];
        if (cap_listed(add, n_add, cap, false) || !cap_listed(drop, n_drop, cap, true))
            out[n++] = xstrdup(cap);
    }
    return out;
}

/* The default capability set (or p->caps), plus extra; or none at all. */
static json_t *capabilities(const sl_oci_params_t *p)
{
    if (p->no_capabilities)
        return json_pack("{s:[],s:[],s:[],s:[],s:[]}", "bounding", "effective", "permitted",
                         "inheritable", "ambient");
    const char *const *caps = p->caps ? p->caps : sl_oci_default_caps;
    json_t *set[3];
    for (size_t i = 0; i < 3; i++) {
        set[i] = json_strv(caps);
        for (size_t k = 0; p->extra_caps && p->extra_caps[k]; k++)
            json_array_append_new(set[i], json_string(p->extra_caps[k]));
    }
    return json_pack("{s:o,s:o,s:o,s:[],s:[]}", "bounding", set[0], "effective", set[1],
                     "permitted", set[2], "inheritable", "ambient");
}

static json_t *process(const sl_oci_params_t *p)
{
    json_t *gids = json_array();
    for (size_t i = 0; p->user && i < p->user->n_gids; i++)
        json_array_append_new(gids, json_integer(p->user->gids[i]));
    json_t *user =
        json_pack("{s:I,s:I,s:o}", "uid", (json_int_t)(p->user ? p->user->uid : 0), "gid",
                  (json_int_t)(p->user ? p->user->gid : 0), "additionalGids", gids);
    json_int_t nofile = p->nofile > 0 ? p->nofile : 1048576;
    json_t *rl =
        json_pack("[{s:s,s:I,s:I}]", "type", "RLIMIT_NOFILE", "hard", nofile, "soft", nofile);
    return json_pack("{s:b,s:o,s:o,s:o,s:s,s:o,s:o,s:b}", "terminal", p->terminal, "user", user,
                     "args", json_strv((const char *const *)p->args), "env",
                     json_strv((const char *const *)p->env), "cwd",
                     p->cwd && *p->cwd ? p->cwd : "/", "capabilities", capabilities(p), "rlimits",
                     rl, "noNewPrivileges", 1);
}

static json_t *mount(const char *dst, const char *type, const char *src, json_t *opts)
{
    return json_pack("{s:s,s:s,s:s,s:o}", "destination", dst, "type", type, "source", src,
                     "options", opts);
}

static json_t *mounts(const sl_oci_params_t *p)
{
    int64_t tmp = p->tmp_size > 0 ? p->tmp_size : 64 << 20;
    char tmpsize[48];
    snprintf(tmpsize, sizeof(tmpsize), "size=%lld", (long long)tmp);
    json_t *m = json_array();
    json_array_append_new(m, mount("/proc", "proc", "proc", STRV("nosuid", "noexec", "nodev")));
    json_array_append_new(m, mount("/dev", "tmpfs", "tmpfs",
                                   STRV("nosuid", "strictatime", "mode=755", "size=65536k")));
    json_array_append_new(
        m, mount("/dev/pts", "devpts", "devpts",
                 STRV("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")));
    json_array_append_new(m, mount("/dev/shm", "tmpfs", "shm",
                                   STRV("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")));
    json_array_append_new(
        m, mount("/dev/mqueue", "mqueue", "mqueue", STRV("nosuid", "noexec", "nodev")));
    if (p->idmap && p->netns_path)
        /* In a user namespace that does not own the joined network
         * namespace no sysfs can be mounted, and the runtime would bind
         * the host's /sys, writable: bind it read-only, to the bottom
         * (rro); the sandboxed class masks its network listings. */
        json_array_append_new(
            m, mount("/sys", "bind", "/sys", STRV("rbind", "rro", "nosuid", "noexec", "nodev")));
    else
        json_array_append_new(
            m, mount("/sys", "sysfs", "sysfs", STRV("nosuid", "noexec", "nodev", "ro")));
    json_array_append_new(
        m, mount("/tmp", "tmpfs", "tmpfs", STRV("nosuid", "nodev", "mode=1777", tmpsize)));
    if (p->resolv_conf)
        json_array_append_new(m, mount("/etc/resolv.conf", "bind", p->resolv_conf,
                                       STRV("bind", "ro", "nosuid", "nodev", "noexec")));
    for (size_t i = 0; i < p->n_volumes; i++) {
        const sl_oci_volume_t *v = &p->volumes[i];
        if (v->has_files) {
            json_array_append_new(
                m, mount(v->path, "bind", v->source, STRV("rbind", "ro", "nosuid", "nodev")));
            continue;
        }
        char size[48];
        snprintf(size, sizeof(size), "size=%lld", (long long)(v->size > 0 ? v->size : tmp));
        json_t *opts = STRV("nosuid", "nodev", "mode=1777", size);
        if (v->readonly)
            json_array_append_new(opts, json_string("ro"));
        json_array_append_new(m, mount(v->path, "tmpfs", "tmpfs", opts));
    }
    return m;
}

sl_oci_volume_t *sl_oci_volumes_dup(const sl_oci_volume_t *v, size_t n)
{
    if (!n)
        return NULL;
    sl_oci_volume_t *out = xcalloc(n, sizeof(*out));
    for (size_t i = 0; i < n; i++) {
        out[i] = v[i];
        out[i].path = xstrdup(v[i].path);
        out[i].source = xstrdup(v[i].source);
        out[i].files = v[i].n_files ? xcalloc(v[i].n_files, sizeof(sl_oci_file_t)) : NULL;
        for (size_t k = 0; k < v[i].n_files; k++) {
            const sl_oci_file_t *f = &v[i].files[k];
            out[i].files[k] =
                (sl_oci_file_t){xstrdup(f->path), xmemdup(f->data, f->len), f->len, f->mode};
        }
    }
    return out;
}

void sl_oci_volumes_free(sl_oci_volume_t *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].path);
        free(v[i].source);
        for (size_t k = 0; k < v[i].n_files; k++) {
            free(v[i].files[k].path);
            /* secret bytes: cleared before they go back to the allocator */
            explicit_bzero(v[i].files[k].data, v[i].files[k].len);
            free(v[i].files[k].data);
        }
        free(v[i].files);
    }
    free(v);
}

static json_t *ns(const char *type, const char *path)
{
    json_t *n = json_pack("{s:s}", "type", type);
    if (path)
        json_object_set_new(n, "path", json_string(path));
    return n;
}

static json_t *namespaces(const sl_oci_params_t *p)
{
    json_t *a = json_pack("[o,{s:s},o,o,o]", ns("pid", p->pid_ns_path), "type", "mount",
                          ns("ipc", p->ipc_ns_path), ns("uts", p->uts_ns_path),
                          ns("network", p->netns_path));
    if (p->idmap)
        json_array_append_new(a, ns("user", NULL));
    return a;
}

static json_t *idmapping(uint32_t host, uint32_t size)
{
    return json_pack("[{s:I,s:I,s:I}]", "containerID", (json_int_t)0, "hostID", (json_int_t)host,
                     "size", (json_int_t)size);
}

static json_t *resources(const sl_oci_params_t *p)
{
    if (p->no_cgroup_limits)
        return json_pack("{s:[{s:b,s:s}]}", "devices", "allow", 0, "access", "rwm");
    json_t *r = json_pack("{s:[{s:b,s:s}],s:{s:I}}", "devices", "allow", 0, "access", "rwm", "pids",
                          "limit", (json_int_t)(p->pids_limit > 0 ? p->pids_limit : 1024));
    if (p->memory_limit > 0)
        json_object_set_new(r, "memory", json_pack("{s:I}", "limit", (json_int_t)p->memory_limit));
    json_t *cpu = json_object();
    if (p->cpu_millis > 0) {
        json_object_set_new(cpu, "quota", json_integer(sl_oci_cpu_quota(p->cpu_millis)));
        json_object_set_new(cpu, "period", json_integer(SL_CPU_PERIOD_US));
    }
    if (p->cpu_shares > 0)
        json_object_set_new(cpu, "shares",
                            json_integer(p->cpu_shares > 262144 ? 262144 : p->cpu_shares));
    if (json_object_size(cpu))
        json_object_set_new(r, "cpu", cpu);
    else
        json_decref(cpu);
    return r;
}

static json_t *linux_section(const sl_oci_params_t *p)
{
    json_t *masked =
        STRV("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
             "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
             "/sys/firmware", "/sys/devices/virtual/powercap");
    for (size_t i = 0; p->extra_masked && p->extra_masked[i]; i++)
        json_array_append_new(masked, json_string(p->extra_masked[i]));
    json_t *ro = STRV("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger");
    json_t *l = json_pack("{s:o,s:o,s:o,s:o}", "namespaces", namespaces(p), "resources",
                          resources(p), "maskedPaths", masked, "readonlyPaths", ro);
    if (p->cgroups_path)
        json_object_set_new(l, "cgroupsPath", json_string(p->cgroups_path));
    if (p->idmap) {
        json_object_set_new(l, "uidMappings", idmapping(p->idmap->host_uid, p->idmap->size));
        json_object_set_new(l, "gidMappings", idmapping(p->idmap->host_gid, p->idmap->size));
    }
    if (p->seccomp)
        json_object_set_new(l, "seccomp", json_deep_copy(p->seccomp));
    return l;
}

json_t *sl_oci_spec_build(const sl_oci_params_t *p)
{
    json_t *ann = json_object();
    for (size_t i = 0; i < SL_ARRAY_LEN(p->annotations) && p->annotations[i][0]; i++)
        json_object_set_new(ann, p->annotations[i][0],
                            json_string(p->annotations[i][1] ? p->annotations[i][1] : ""));
    json_t *spec =
        json_pack("{s:s,s:o,s:{s:s,s:b},s:o,s:o,s:o}", "ociVersion", "1.0.2", "process", process(p),
                  "root", "path", p->rootfs ? p->rootfs : "rootfs", "readonly", p->readonly_rootfs,
                  "mounts", mounts(p), "linux", linux_section(p), "annotations", ann);
    /* A joined UTS namespace keeps its hostname; runtimes refuse to set one. */
    if (spec && !p->uts_ns_path)
        json_object_set_new(spec, "hostname", json_string(p->hostname ? p->hostname : "sluice"));
    return spec;
}

static int write_json(const char *path, json_t *doc, sl_error_t *err)
{
    if (!doc)
        return sl_error_set(err, EINVAL, "building %s failed", path);
    sl_autofree char *text = json_dumps(doc, JSON_INDENT(1));
    json_decref(doc);
    if (!text)
        return sl_error_set(err, ENOMEM, "serialising %s failed", path);
    return sl_write_file_atomic(path, text, strlen(text), 0600, err);
}

int sl_oci_spec_write(const char *bundle_dir, const sl_oci_params_t *p, sl_error_t *err)
{
    sl_autofree char *path = xasprintf("%s/config.json", bundle_dir);
    return write_json(path, sl_oci_spec_build(p), err);
}

int sl_oci_process_write(const char *path, const sl_oci_params_t *p, char *const *args,
                         sl_error_t *err)
{
    sl_oci_params_t q = *p;
    q.args = args;
    q.terminal = false;
    return write_json(path, process(&q), err);
}

int64_t sl_oci_cpu_quota(int64_t millis)
{
    if (millis <= 0)
        return -1;
    /* millis/1000 of the period; the kernel's floor is 1 ms */
    int64_t quota = millis * (SL_CPU_PERIOD_US / 1000);
    return quota < SL_CPU_QUOTA_MIN_US ? SL_CPU_QUOTA_MIN_US : quota;
}
