/*
 * service.h — the Knative Service object model: validation of
 * `serving.knative.dev/v1` Service manifests, revisions cut from their
 * templates, and the resolved per-revision settings the runtime uses.
 *
 * Validation is strict, like Knative's admission webhook: unknown fields and
 * bad values are rejected with the field path and the cause
 * ("spec.template.spec.containerConcurrency: must be 0..1000, got 5000").
 */
#ifndef SL_SERVICE_H
#define SL_SERVICE_H

#include "common.h"
#include "configdata.h"
#include "oci_spec.h"
#include <jansson.h>

#define SL_API_GROUP           "serving.knative.dev"
#define SL_API_VERSION         "serving.knative.dev/v1"
#define SL_LABEL_SERVICE       "serving.knative.dev/service"
#define SL_LABEL_CONFIGURATION "serving.knative.dev/configuration"
#define SL_LABEL_REVISION      "serving.knative.dev/revision"
#define SL_DEFAULT_NAMESPACE   "default"
#define SL_DEFAULT_PORT        8080
#define SL_DEFAULT_CONCURRENCY 80
#define SL_DEFAULT_TIMEOUT_S   300
#define SL_MAX_TIMEOUT_S       3600

/* A readinessProbe / livenessProbe (Kubernetes' fields), times in ms;
 * kind 0 = none, 1 = tcpSocket, 2 = httpGet, 3 = exec, 4 = grpc (as
 * sl_probe_kind_t); path is httpGet's path or grpc's service. */
typedef struct sl_probe_cfg {
    int kind;
    int port;
    char *path;
    char *headers; /* httpGet.httpHeaders as "Name: value\r\n" lines; NULL = none */
    char **exec;
    size_t n_exec;
    int initial_delay_ms, period_ms, timeout_ms, success_threshold, failure_threshold;
} sl_probe_cfg_t;

/* What a revision needs at run time, resolved from its template. */
typedef struct sl_revision_cfg {
    char *namespace_;
    char *service;
    char *name;
    char *image_ref;
    char *image_id; /* "sha256:…" of the imported image */
    int port;
    bool h2c;   /* ports[0].name "h2c": the instance speaks HTTP/2 without TLS */
    char **env; /* "K=V" */
    size_t n_env;
    char **command;
    size_t n_command;
    char **args;
    size_t n_args;
    int64_t memory_limit; /* bytes, 0 = none */
    int64_t cpu_millis;   /* 0 = none */
    /* resources.requests (what capacity reserves, and the CPU weight); as
     * in Kubernetes a request left out is the limit; 0 = none */
    int64_t memory_request, cpu_request_millis;
    int64_t ephemeral_storage; /* limits.ephemeral-storage: the writable layer and /tmp */
    int concurrency;           /* 0 = unlimited */
    int timeout_s;
    /* Knative's responseStartTimeoutSeconds (the response head within it,
     * never later than timeout_s) and idleTimeoutSeconds (the instance
     * silent no longer than it, head or body); 0 = none */
    int response_start_s, idle_timeout_s;
    char *runtime_class; /* may be NULL */
    char *working_dir;   /* NULL = the image's */
    /* securityContext: -1 = the image's USER decides */
    int64_t run_as_user, run_as_group;
    bool run_as_non_root, readonly_rootfs;
    char **caps; /* NULL = the class's default set; else exactly these (NULL-terminated) */
    sl_oci_volume_t *volumes; /* volumes as mounted, in volumeMounts' order */
    size_t n_volumes;
    /* autoscaling.knative.dev annotations; < 0 (or 0 for the doubles and
     * durations) = not set, use the daemon's default */
    int min_scale, max_scale, initial_scale, activation_scale;
    bool metric_rps;               /* autoscaling.knative.dev/metric: rps */
    bool session_affinity;         /* run.googleapis.com/sessionAffinity: "true" */
    bool cpu_always;               /* run.googleapis.com/cpu-throttling: "false" */
    int egress;                    /* sluice.dev/egress: 1 "true", 0 "false", -1 the daemon's */
    uint64_t progress_deadline_ns; /* serving.knative.dev/progress-deadline; 0 = 600 s */
    double target, target_utilization_pct, panic_window_pct, panic_threshold_pct;
    uint64_t window_ns, retention_ns, scale_down_delay_ns;
    sl_probe_cfg_t readiness, liveness, startup;
    /* env, envFrom or a volume reads Secrets or ConfigMaps: each instance
     * start resolves them (sl_revision_resolve) from the revision's spec,
     * kept here; env, command, args and the probes' exec commands above
     * then leave out what they read. */
    bool has_refs;
    json_t *spec;
} sl_revision_cfg_t;

#define SL_AS_PREFIX "autoscaling.knative.dev/"
/* Cloud Run's session affinity, a revision template annotation. */
#define SL_SESSION_AFFINITY_KEY "run.googleapis.com/sessionAffinity"
/* Cloud Run's CPU allocation: "true" (the default) holds an instance to
 * idle CPU between requests, "false" gives it its CPU all the time. */
#define SL_CPU_THROTTLING_KEY "run.googleapis.com/cpu-throttling"
/* Outbound networking for the revision's instances (serve --egress sets
 * the default), a revision template annotation. */
#define SL_EGRESS_KEY "sluice.dev/egress"
/* Knative's progress deadline: a revision not Ready by then stops trying. */
#define SL_PROGRESS_DEADLINE_KEY "serving.knative.dev/progress-deadline"
#define SL_PROGRESS_DEADLINE_NS  (600 * 1000000000ull)

/* Go-style duration ("60s", "1m30s", "500ms", "1h") to nanoseconds. */
int sl_parse_duration(const char *s, uint64_t *ns);

/* Knative's gradual rollout, from a Service's metadata.annotations: the
 * time over which traffic for the latest revision moves to a new one. */
#define SL_ROLLOUT_KEY       "serving.knative.dev/rollout-duration"
#define SL_ROLLOUT_KEY_ALIAS "serving.knative.dev/rolloutDuration"
/* *ns = 0 when neither key is set; -1 with err when the value is invalid. */
int sl_rollout_duration(const json_t *annotations, uint64_t *ns, sl_error_t *err);

/* Validate the autoscaling.knative.dev annotations of a template; path
 * names the annotations object in messages. */
int sl_validate_autoscaling(const json_t *annotations, const char *path, sl_error_t *err);

/* DNS-1035 label: [a-z]([-a-z0-9]*[a-z0-9])?, at most 63. */
bool sl_is_dns1035(const char *s);
/* DNS-1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63. */
bool sl_is_dns1123_label(const char *s);

/* A DNS name of dot-separated DNS-1123 labels, at most 253 characters. */
bool sl_is_valid_domain(const char *s);

/* Kubernetes quantities. memory: "256Mi", "1G", "1048576" → bytes;
 * cpu: "1", "0.5", "250m" → millicores. Return 0 or -1. */
int sl_parse_memory(const char *s, int64_t *bytes);
int sl_parse_cpu(const char *s, int64_t *millis);
/* A quantity given as a string ("64Mi", "100m") or a JSON number (YAML
 * `cpu: 1`, `memory: 268435456`), every digit of an integer kept: cpu →
 * millicores, memory → bytes. Returns 0, or -1 when v is neither or the
 * quantity is negative. */
int sl_json_quantity(const json_t *v, bool cpu, int64_t *out);

/*
 * Validate a Service manifest in place and fill defaults (namespace from
 * ns_default when absent, containerConcurrency, timeoutSeconds, ports).
 * Removes status and server-set metadata. Returns 0 or < 0 with err naming
 * the field.
 */
int sl_service_validate(json_t *svc, const char *ns_default, sl_error_t *err);

/* Canonical text of spec.template (sorted keys, compact) — equal texts mean
 * no new revision. Caller frees. */
char *sl_service_template_key(const json_t *svc);

/*
 * Build a Revision object for the service's current template with the
 * given name and generation. New reference.
 */
json_t *sl_revision_build(const json_t *svc, const char *rev_name, long generation);

/* Resolve a Revision object to runtime settings. Caller frees with
 * sl_revision_cfg_free. */
int sl_revision_cfg_from_json(const json_t *rev, sl_revision_cfg_t **out, sl_error_t *err);
void sl_revision_cfg_free(sl_revision_cfg_t *cfg);

/* A Secret's or ConfigMap's values (sl_data_values) in *vals, a new
 * reference: 0; -ENOENT when there is no such object in the revision's
 * namespace; another -errno, with err set, when it could not be read. */
typedef int (*sl_data_lookup_fn)(void *ctx, sl_data_kind_t kind, const char *name, json_t **vals,
                                 sl_error_t *err);

/* An instance's process and volumes, with what they read from Secrets and
 * ConfigMaps. exec: the readiness, liveness and startup probes' commands. */
typedef struct sl_revision_process {
    char **env; /* "K=V", NULL-terminated */
    size_t n_env;
    char **command, **args;
    size_t n_command, n_args;
    char **exec[3];
    size_t n_exec[3];
    sl_oci_volume_t *volumes; /* cfg's, secret and configMap volumes with their files */
    size_t n_volumes;
} sl_revision_process_t;

/* Resolve a revision with has_refs as Kubernetes does when it starts a
 * container: a missing Secret, ConfigMap or key fails (naming the field,
 * never a value) unless the reference is optional. out is filled even on
 * failure: free it with sl_revision_process_free. */
int sl_revision_resolve(const sl_revision_cfg_t *cfg, sl_data_lookup_fn lookup, void *ctx,
                        sl_revision_process_t *out, sl_error_t *err);
void sl_revision_process_free(sl_revision_process_t *p);
/* Whether the revision reads the named Secret or ConfigMap (volumes_only:
 * through a volume). */
bool sl_revision_reads(const sl_revision_cfg_t *cfg, sl_data_kind_t kind, const char *name,
                       bool volumes_only);

/* Small jansson helpers used across the control plane. */
const char *sl_json_str(const json_t *obj, const char *path); /* dotted path, NULL if absent */
json_t *sl_json_path(const json_t *obj, const char *path);    /* borrowed */
json_t *sl_json_ensure_obj(json_t *obj, const char *key);     /* borrowed, created if absent */
/* What a JSON value is, for messages: "an object", "a list", "a string"... */
const char *sl_json_type_name(const json_t *v);
/* RFC 3339 UTC timestamp of now; static buffer per thread. */
const char *sl_rfc3339_now(void);
/* RFC 3339 (YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)) → Unix seconds; -1 if not. */
int sl_parse_rfc3339(const char *s, int64_t *out);

#endif
