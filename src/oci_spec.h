/*
 * oci_spec.h — the OCI runtime bundle's config.json for an instance.
 *
 * Pure functions: compose process.args (Kubernetes command/args rules over
 * the image's Entrypoint/Cmd), process.env (image env, user env, then the
 * Knative contract vars), and build the config (namespaces, mounts, masked
 * paths, capabilities, rlimits, cgroup limits) as a jansson object. Nothing
 * here touches the filesystem except sl_oci_spec_write.
 */
#ifndef SL_OCI_SPEC_H
#define SL_OCI_SPEC_H

#include "common.h"
#include "image.h"
#include <jansson.h>

#define SL_OCI_DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* A NULL-terminated, owned vector of owned strings. */
void sl_strv_free(char **v);
/* A growable NULL-terminated vector of owned strings ({0} is empty; v
 * stays NULL until the first push). */
typedef struct sl_strv {
    char **v;
    size_t n, cap;
} sl_strv_t;
void sl_strv_push(sl_strv_t *s, char *owned);
size_t sl_strv_len(char *const *v);
/* Copies of the first n strings of v, NULL-terminated; free with sl_strv_free. */
char **sl_strv_dup(char *const *v, size_t n);

/* process.user */
typedef struct sl_oci_user {
    uint32_t uid, gid;
    uint32_t *gids; /* additionalGids, owned */
    size_t n_gids;
} sl_oci_user_t;
void sl_oci_user_clear(sl_oci_user_t *u);

/*
 * Kubernetes rules: command given → command + args (image Cmd ignored);
 * else image Entrypoint + (args if given, else image Cmd). *out is a
 * NULL-terminated vector. Fails (EINVAL) when the result is empty.
 */
int sl_oci_compose_args(const sl_image_t *img, char *const *command, size_t n_command,
                        char *const *args, size_t n_args, char ***out, sl_error_t *err);

/* The contract values that override everything else. */
typedef struct sl_oci_contract {
    int port;
    const char *service, *configuration, *revision;
} sl_oci_contract_t;

/* The runtime contract's variables, "K=V": PORT, K_SERVICE,
 * K_CONFIGURATION, K_REVISION; each freed by the caller. */
#define SL_OCI_CONTRACT_VARS 4
void sl_oci_contract_env(const sl_oci_contract_t *c, char *out[SL_OCI_CONTRACT_VARS]);

/*
 * Environment: default PATH (unless the image sets one), image Env, user env
 * (each "K=V", K non-empty), then PORT, K_SERVICE, K_CONFIGURATION,
 * K_REVISION. A later key replaces an earlier one in place.
 */
int sl_oci_compose_env(char *const *image_env, size_t n_image_env, char *const *user_env,
                       size_t n_user_env, const sl_oci_contract_t *c, char ***out, sl_error_t *err);

/* A user namespace: container ids [0, size) map to host [host_uid, +size)
 * (uid) and [host_gid, +size) (gid). */
typedef struct sl_oci_idmap {
    uint32_t host_uid, host_gid, size;
} sl_oci_idmap_t;

/* A file of a secret or configMap volume. */
typedef struct sl_oci_file {
    char *path; /* relative to the volume */
    char *data;
    size_t len;
    unsigned mode;
} sl_oci_file_t;

/* A volume at the absolute `path` in the container. An emptyDir: a tmpfs
 * of `size` bytes (0 = the size of /tmp). With has_files (a secret or
 * configMap volume): the files, which the supervisor writes to a
 * directory of its own, `source`, bound there read-only. */
typedef struct sl_oci_volume {
    char *path;
    int64_t size;
    bool readonly;
    bool has_files;
    sl_oci_file_t *files;
    size_t n_files;
    char *source;
} sl_oci_volume_t;

sl_oci_volume_t *sl_oci_volumes_dup(const sl_oci_volume_t *v, size_t n);
void sl_oci_volumes_free(sl_oci_volume_t *v, size_t n);

typedef struct sl_oci_params {
    char *const *args; /* NULL-terminated */
    char *const *env;  /* NULL-terminated */
    const char *cwd;   /* NULL = "/" */
    const sl_oci_user_t *user;
    const char *hostname;
    const char *rootfs;     /* bundle-relative or absolute */
    const char *netns_path; /* joined network namespace; NULL = new one */
    const char *cgroups_path;
    int64_t memory_limit;           /* bytes, 0 = unlimited */
    int64_t cpu_millis;             /* 0 = unlimited */
    int64_t cpu_shares;             /* relative weight (2..262144); 0 = the runtime's default */
    int64_t pids_limit;             /* 0 = 1024 */
    int64_t tmp_size;               /* /tmp tmpfs bytes, 0 = 64 MiB */
    const sl_oci_volume_t *volumes; /* emptyDir tmpfs mounts, after /tmp */
    const char *resolv_conf;        /* host file bound read-only on /etc/resolv.conf; NULL none */
    size_t n_volumes;
    int64_t nofile;                /* RLIMIT_NOFILE soft = hard, 0 = 1048576 */
    const char *annotations[8][2]; /* key/value pairs, NULL-terminated */
    /* Security profile (all zero = the defaults above: Docker's
     * capabilities, no seccomp filter, writable root, no user namespace). */
    const json_t *seccomp;           /* linux.seccomp, borrowed; NULL = no filter */
    bool readonly_rootfs;            /* root.readonly (/tmp stays a writable tmpfs) */
    bool no_capabilities;            /* empty capability sets */
    const char *const *caps;         /* instead of the default set, NULL-terminated */
    const char *const *extra_caps;   /* added to the (default) set, NULL-terminated */
    const sl_oci_idmap_t *idmap;     /* new user namespace with these mappings */
    const char *const *extra_masked; /* more maskedPaths, NULL-terminated */
    /* Join existing namespaces by path instead of new ones (debug). */
    const char *pid_ns_path, *ipc_ns_path, *uts_ns_path;
    bool terminal;         /* process.terminal (the runtime's own pty) */
    bool no_cgroup_limits; /* leave linux.resources out except devices */
} sl_oci_params_t;

/* Docker's default capability set ("CAP_CHOWN", ...), NULL-terminated: what
 * an instance of the default class has unless its securityContext drops
 * some, and the most it can add. */
extern const char *const sl_oci_default_caps[];

/*
 * The set a container gets from Kubernetes' capabilities.drop / .add, each
 * a list of names with or without "CAP_" ("ALL" drops every one): the
 * default set minus drop, plus add. NULL-terminated; caller frees with
 * sl_strv_free. Names must have been checked (sl_oci_cap_name).
 */
char **sl_oci_caps_apply(char *const *drop, size_t n_drop, char *const *add, size_t n_add);

/* "NET_BIND_SERVICE" or "CAP_NET_BIND_SERVICE" → the default set's entry
 * ("CAP_NET_BIND_SERVICE"); NULL when it is not in the default set. */
const char *sl_oci_cap_name(const char *name);
/* Whether name (with or without "CAP_", any case) is a Linux capability. */
bool sl_oci_cap_known(const char *name);

/* Build the config. Returns a new reference. */
json_t *sl_oci_spec_build(const sl_oci_params_t *p);

/* Build and write BUNDLE/config.json atomically (mode 0600). */
int sl_oci_spec_write(const char *bundle_dir, const sl_oci_params_t *p, sl_error_t *err);

/* Write config.json's process object (user, capabilities,
 * noNewPrivileges, rlimits, env, cwd) with `args` instead of p->args to
 * path (mode 0600): for `RT exec --process`, so that a command run in the
 * container later has what its own process has, no more. */
int sl_oci_process_write(const char *path, const sl_oci_params_t *p, char *const *args,
                         sl_error_t *err);

/* CFS bandwidth: a CPU limit of `millis` is sl_oci_cpu_quota(millis) µs of
 * CPU time per SL_CPU_PERIOD_US (-1, no quota, for 0); the kernel's floor
 * for a quota is SL_CPU_QUOTA_MIN_US. */
#define SL_CPU_PERIOD_US    100000
#define SL_CPU_QUOTA_MIN_US 1000
int64_t sl_oci_cpu_quota(int64_t millis);

#endif
