/*
 * runtimeclass.h — RuntimeClass objects (node.k8s.io/v1) and the runtime
 * profile each one gives the supervisor.
 *
 * A class names a handler, a fixed per-instance overhead (added to the
 * instance's footprint and to its cgroup limits, as Kubernetes does for the
 * pod cgroup) and scheduling constraints (stored; one node has nothing to
 * select between yet). The handler picks the OCI runtime binary and the
 * security profile:
 *
 *   handler          runtime  profile
 *   crun, runc       same     Docker's capabilities, default seccomp
 *   crun-sandboxed,  crun,    user namespace, sandboxed seccomp allow-list,
 *   runc-sandboxed   runc     no capabilities, read-only root, pids limit
 *   anything else    itself   default profile (runsc, kata-runtime, …);
 *                             unavailable unless the binary is on PATH
 *
 * Built in: `default` (crun), `sandboxed` (crun-sandboxed) and `runc`.
 */
#ifndef SL_RUNTIMECLASS_H
#define SL_RUNTIMECLASS_H

#include "common.h"
#include "seccomp_profiles.h"
#include <jansson.h>

#define SL_RUNTIMECLASS_API_VERSION "node.k8s.io/v1"
#define SL_RUNTIMECLASS_KIND        "RuntimeClass"
#define SL_RUNTIMECLASS_DEFAULT     "default"
#define SL_SANDBOX_PIDS_LIMIT       512
/* Each sandboxed instance has its own 65536 host ids: container ids
 * 0..65535 map to host BASE + k * 65536.., k the lowest range no running
 * instance holds and /etc/subuid and /etc/subgid do not give to a user
 * (k = 0: 100000..165535). The last range ends below 2^32 - 1, which is
 * no id. */
#define SL_SANDBOX_HOST_ID_BASE 100000u
#define SL_SANDBOX_ID_RANGE     65536u
#define SL_SANDBOX_ID_RANGES    65534u

/* What the supervisor applies to an instance of a class. */
typedef struct sl_runtime_profile {
    const char *runtime;          /* OCI runtime binary name; NULL = supervisor default */
    sl_seccomp_profile_t seccomp; /* linux.seccomp */
    bool userns;                  /* own user namespace and host id range */
    bool readonly_rootfs;         /* root.readonly; /tmp stays a writable tmpfs */
    bool no_capabilities;         /* empty capability sets (else Docker's default set) */
    int64_t pids_limit;           /* upper bound for pids.max; 0 = no class bound */
    int64_t overhead_cpu_millis;  /* overhead.podFixed.cpu */
    int64_t overhead_memory;      /* overhead.podFixed.memory, bytes */
} sl_runtime_profile_t;

typedef struct sl_runtime_class {
    char *name;
    char *handler;
    int64_t overhead_cpu_millis; /* 0 when not given */
    int64_t overhead_memory;
    json_t *scheduling; /* as given (validated), or NULL; owned */
    bool builtin;
    sl_runtime_profile_t profile; /* runtime points into a static table */
} sl_runtime_class_t;

/*
 * Validate a RuntimeClass manifest in place, strictly: unknown fields and
 * bad values fail with the field path ("handler: must be a DNS-1123 label",
 * "overhead.podFixed.memory: must be a quantity like \"64Mi\"").
 * Removes status and server-set metadata (uid, resourceVersion,
 * creationTimestamp, generation).
 */
int sl_runtimeclass_validate(json_t *obj, sl_error_t *err);

/* Validate a copy of obj and build the class. Caller frees. */
int sl_runtimeclass_from_json(const json_t *obj, sl_runtime_class_t **out, sl_error_t *err);
/* The object (apiVersion, kind, metadata.name, handler, overhead,
 * scheduling). New reference. */
json_t *sl_runtimeclass_to_json(const sl_runtime_class_t *rc);
void sl_runtimeclass_free(sl_runtime_class_t *rc);

/* Built-in classes by name (NULL when not built in) and all of them;
 * static, never freed. */
const sl_runtime_class_t *sl_runtimeclass_builtin(const char *name);
size_t sl_runtimeclass_builtins(const sl_runtime_class_t *const **out);
/* The built-in objects as JSON, for seeding the store. New reference. */
json_t *sl_runtimeclass_builtin_json(const char *name);

/*
 * Is the class usable here? Its runtime binary must be on PATH (and the
 * user namespace range must be free of other users' ids, which sluice
 * assumes). On false, *reason (when given) is set to a message the caller
 * frees: "handler runsc: runtime binary 'runsc' not found on PATH".
 */
bool sl_runtimeclass_available(const sl_runtime_class_t *rc, char **reason);

/* Availability as a status object: {"available": bool, "reason": "…"}
 * plus "syscalls": the count its seccomp profile admits. New reference. */
json_t *sl_runtimeclass_status_json(const sl_runtime_class_t *rc);

/* The profile for a handler (runtime binary, security settings), without
 * overhead. Returns false for a handler that is not a DNS-1123 label. */
bool sl_runtime_profile_for_handler(const char *handler, sl_runtime_profile_t *out);

#endif
