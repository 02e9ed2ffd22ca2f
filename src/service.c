/*
 * service.c — Knative Service validation, revision templates and
 * resolved revision settings. Pure functions over jansson values; no I/O.
 */
#include "service.h"
#include "validate.h"
#include "configdata.h"
#include "oci_spec.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

bool sl_is_dns1035(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 63 || !islower((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(islower(c) || isdigit(c) || c == '-'))
            return false;
    }
    return s[n - 1] != '-';
}

bool sl_is_dns1123_label(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(islower(c) || isdigit(c) || c == '-'))
            return false;
    }
    return true;
}

bool sl_is_valid_domain(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 253)
        return false;
    char label[64];
    const char *p = s;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        if (l == 0 || l > 63)
            return false;
        memcpy(label, p, l);
        label[l] = '\0';
        if (!sl_is_dns1123_label(label))
            return false;
        p += l + (dot ? 1 : 0);
        if (dot && !*p)
            return false;
    }
    return true;
}

/* Parse "<decimal>[suffix]" into a value scaled by the suffix table, at
 * most 2^53 (8 PiB of memory, 9e12 CPUs in millis): sums of a few such
 * values (a footprint with its overhead) and the CPU quota (millis x 100)
 * stay within int64_t. */
static int parse_quantity(const char *s, int64_t unit_scale, int64_t *out)
{
    static const struct {
        const char *sfx;
        double mul;
    } sfx[] = {
        {"Ki", 1024.0}, {"Mi", 1048576.0}, {"Gi", 1073741824.0}, {"Ti", 1099511627776.0},
        {"k", 1e3},     {"M", 1e6},        {"G", 1e9},           {"T", 1e12},
        {"m", 1e-3},    {"", 1.0},
    };
    if (!s || !*s)
        return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0 || !isfinite(v) || !isdigit((unsigned char)s[0]))
        return -1;
    for (size_t i = 0; i < SL_ARRAY_LEN(sfx); i++) {
        if (strcmp(end, sfx[i].sfx) == 0) {
            double r = v * sfx[i].mul * (double)unit_scale;
            if (r > 9007199254740992.0)
                return -1;
            *out = (int64_t)ceil(r - 1e-9);
            return 0;
        }
    }
    return -1;
}

int sl_parse_memory(const char *s, int64_t *bytes)
{
    return parse_quantity(s, 1, bytes);
}

int sl_parse_cpu(const char *s, int64_t *millis)
{
    return parse_quantity(s, 1000, millis);
}

json_t *sl_json_path(const json_t *obj, const char *path)
{
    char key[256];
    const json_t *cur = obj;
    while (cur && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof(key))
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        cur = json_is_object(cur) ? json_object_get(cur, key) : NULL;
        path += n + (dot ? 1 : 0);
    }
    return (json_t *)cur;
}

const char *sl_json_str(const json_t *obj, const char *path)
{
    return json_string_value(sl_json_path(obj, path));
}

const char *sl_json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "a list";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

json_t *sl_json_ensure_obj(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_object(v)) {
        v = json_object();
        json_object_set_new(obj, key, v);
    }
    return v;
}

const char *sl_rfc3339_now(void)
{
    static __thread char buf[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

int sl_parse_rfc3339(const char *s, int64_t *out)
{
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p) {
        p = strptime(s, "%Y-%m-%dt%H:%M:%S", &tm);
        if (!p)
            return -1;
    }
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    int64_t offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        int hh, mm, used = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &used) != 2 || used != 5 || hh > 23 || mm > 59)
            return -1;
        offset = sign * (hh * 3600 + mm * 60);
        p += 1 + used;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = (int64_t)t - offset;
    return 0;
}

/* ---- validation ------------------------------------------------------ */

static int check_string_array(json_t *v, const char *path, sl_error_t *err)
{
    if (!json_is_array(v))
        return sl_error_set(err, EINVAL, "%s: must be a list of strings", path);
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
    {
        if (!json_is_string(x))
            return sl_error_set(err, EINVAL, "%s[%zu]: must be a string", path, i);
    }
    return 0;
}

static int check_name(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s)
        return sl_error_set(err, EINVAL, "%s: must be a string", path);
    if (!sl_is_dns1035(s))
        return sl_error_set(err, EINVAL,
                            "%s: '%s' is not a DNS-1035 label (lower-case letters, digits and "
                            "'-', starting with a letter, at most 63 characters)",
                            path, s);
    return 0;
}

/* A private service would be published here: every service is served on
 * the router's listener, so what asks for less is refused. */
static int check_service_labels(json_t *v, const char *path, sl_error_t *err)
{
    if (sl_check_labels(v, path, err) < 0)
        return -1;
    const char *vis = json_string_value(json_object_get(v, "networking.knative.dev/visibility"));
    if (vis && strcmp(vis, "external") != 0)
        return sl_error_set(err, ENOTSUP,
                            "%s.networking.knative.dev/visibility: \"%s\" is not supported: "
                            "every service is served on the router's listener (bind --listen "
                            "to loopback to keep them all private)",
                            path, vis);
    return 0;
}

static int check_service_annotations(json_t *v, const char *path, sl_error_t *err)
{
    if (sl_check_string_map(v, path, err) < 0)
        return -1;
    const char *ingress = json_string_value(json_object_get(v, "run.googleapis.com/ingress"));
    if (ingress && strcmp(ingress, "all") != 0)
        return sl_error_set(err, ENOTSUP,
                            "%s.run.googleapis.com/ingress: \"%s\" is not supported: every "
                            "service is served on the router's listener",
                            path, ingress);
    if (json_object_get(v, SL_ROLLOUT_KEY) && json_object_get(v, SL_ROLLOUT_KEY_ALIAS))
        return sl_error_set(err, EINVAL, "%s: give one of %s and %s, not both", path,
                            SL_ROLLOUT_KEY, SL_ROLLOUT_KEY_ALIAS);
    uint64_t rollout;
    if (sl_rollout_duration(v, &rollout, err) < 0) {
        sl_autofree char *why = xstrdup(err->msg);
        return sl_error_set(err, EINVAL, "%s.%s", path, why);
    }
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x)
    {
        if (!strncmp(k, SL_AS_PREFIX, strlen(SL_AS_PREFIX)))
            return sl_error_set(err, EINVAL,
                                "%s.%s: autoscaling annotations must be put under "
                                "spec.template.metadata.annotations to work",
                                path, k);
    }
    return 0;
}

static const sl_field_t metadata_fields[] = {
    {"name", check_name},
    {"namespace", sl_check_namespace},
    {"labels", check_service_labels},
    {"annotations", check_service_annotations},
    {"generateName", sl_check_string},
    SL_SERVER_SET_METADATA,
};

static int check_metadata(json_t *v, const char *path, sl_error_t *err)
{
    return sl_check_fields(v, path, metadata_fields, SL_ARRAY_LEN(metadata_fields), err);
}

int sl_rollout_duration(const json_t *annotations, uint64_t *ns, sl_error_t *err)
{
    *ns = 0;
    const char *key = SL_ROLLOUT_KEY;
    json_t *v = json_object_get(annotations, key);
    if (!v) {
        key = SL_ROLLOUT_KEY_ALIAS;
        v = json_object_get(annotations, key);
    }
    if (!v)
        return 0;
    const char *str = json_string_value(v);
    /* Knative's ValidateRolloutDurationAnnotation: a duration, at second
     * precision, not negative (sl_parse_duration takes no sign). */
    if (!str || sl_parse_duration(str, ns) < 0)
        return sl_error_set(err, EINVAL,
                            "%s: must be a duration like \"380s\" or \"5m\", got \"%s\"", key,
                            str ? str : "(not a string)");
    if (*ns % 1000000000ull)
        return sl_error_set(err, EINVAL, "%s: %s is not at second precision", key, str);
    return 0;
}

int sl_parse_duration(const char *s, uint64_t *ns)
{
    static const struct {
        const char *unit;
        double mul;
    } units[] = {{"ns", 1},  {"us", 1e3}, {"µs", 1e3},  {"ms", 1e6},
                 {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
    if (!s || !*s)
        return -1;
    if (!strcmp(s, "0")) {
        *ns = 0;
        return 0;
    }
    double total = 0;
    const char *p = s;
    while (*p) {
        char *end = NULL;
        if (!isdigit((unsigned char)*p) && *p != '.')
            return -1;
        double v = strtod(p, &end);
        if (end == p || v < 0)
            return -1;
        p = end;
        size_t best = 0, best_len = 0;
        for (size_t i = 0; i < SL_ARRAY_LEN(units); i++) {
            size_t l = strlen(units[i].unit);
            if (!strncmp(p, units[i].unit, l) && l > best_len) {
                best = i;
                best_len = l;
            }
        }
        if (!best_len)
            return -1;
        total += v * units[best].mul;
        p += best_len;
    }
    if (total > 1e18)
        return -1;
    *ns = (uint64_t)total;
    return 0;
}

/* One annotation's value as a number in [lo, hi] (integers when integral). */
static int annotation_number(const json_t *ann, const char *key, const char *path, double lo,
                             double hi, bool integral, double *out, sl_error_t *err)
{
    const char *v = json_string_value(json_object_get(ann, key));
    if (!v)
        return 1;
    char *end = NULL;
    errno = 0;
    double d = strtod(v, &end);
    bool bad = !*v || errno || !end || *end || !isfinite(d) || d < lo || d > hi ||
               (integral && d != floor(d));
    if (bad)
        return sl_error_set(err, EINVAL, "%s.%s: must be %s in %g..%g, got \"%s\"", path, key,
                            integral ? "an integer" : "a number", lo, hi, v);
    *out = d;
    return 0;
}

static int annotation_duration(const json_t *ann, const char *key, const char *path, uint64_t lo,
                               uint64_t hi, uint64_t *out, sl_error_t *err)
{
    const char *v = json_string_value(json_object_get(ann, key));
    if (!v)
        return 1;
    uint64_t ns;
    if (sl_parse_duration(v, &ns) < 0 || ns < lo || ns > hi)
        return sl_error_set(
            err, EINVAL, "%s.%s: must be a duration like \"60s\" between %gs and %gs, got \"%s\"",
            path, key, (double)lo / 1e9, (double)hi / 1e9, v);
    *out = ns;
    return 0;
}

typedef struct as_values {
    double min, max, initial, activation, target, util, panic_pct, panic_threshold;
    uint64_t window, retention, scale_down_delay;
    bool has_min, has_max, rps;
} as_values_t;

/* strict: what is refused at apply only (a revision stored before a rule
 * was added must still load). */
static int read_autoscaling(const json_t *ann, const char *path, bool strict, as_values_t *v,
                            sl_error_t *err)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)ann, key, val)
    {
        if (strncmp(key, SL_AS_PREFIX, strlen(SL_AS_PREFIX)))
            continue;
        const char *k = key + strlen(SL_AS_PREFIX);
        static const char *known[] = {"min-scale",
                                      "max-scale",
                                      "initial-scale",
                                      "target",
                                      "target-utilization-percentage",
                                      "window",
                                      "panic-window-percentage",
                                      "panic-threshold-percentage",
                                      "scale-to-zero-pod-retention-period",
                                      "activation-scale",
                                      "class",
                                      "metric",
                                      "minScale",
                                      "maxScale",
                                      "initialScale",
                                      "scale-down-delay"};
        bool ok = false;
        for (size_t i = 0; i < SL_ARRAY_LEN(known) && !ok; i++)
            ok = !strcmp(k, known[i]);
        if (!strcmp(k, "target-burst-capacity") || !strcmp(k, "targetBurstCapacity"))
            return sl_error_set(err, ENOTSUP,
                                "%s.%s: not supported: the router queues every request itself "
                                "(there is no separate activator to put in the path)",
                                path, key);
        if (!ok)
            return sl_error_set(err, EINVAL, "%s.%s: unknown autoscaling annotation", path, key);
        if (!json_is_string(val))
            return sl_error_set(err, EINVAL, "%s.%s: must be a string", path, key);
    }
    const char *cls = json_string_value(json_object_get(ann, SL_AS_PREFIX "class"));
    if (cls && strcmp(cls, "kpa.autoscaling.knative.dev"))
        return sl_error_set(err, EINVAL,
                            "%s." SL_AS_PREFIX "class: only \"kpa.autoscaling.knative.dev\" is "
                            "supported, got \"%s\"",
                            path, cls);
    const char *metric = json_string_value(json_object_get(ann, SL_AS_PREFIX "metric"));
    if (metric && strcmp(metric, "concurrency") && strcmp(metric, "rps"))
        return sl_error_set(err, EINVAL,
                            "%s." SL_AS_PREFIX "metric: Knative's KPA takes \"concurrency\" or "
                            "\"rps\", got \"%s\"",
                            path, metric);
    v->rps = metric && !strcmp(metric, "rps");
    static const struct {
        const char *key, *alias;
        double lo, hi;
        bool integral;
        size_t off;
    } nums[] = {
        {SL_AS_PREFIX "min-scale", SL_AS_PREFIX "minScale", 0, 1e9, true,
         offsetof(as_values_t, min)},
        {SL_AS_PREFIX "max-scale", SL_AS_PREFIX "maxScale", 0, 1e9, true,
         offsetof(as_values_t, max)},
        {SL_AS_PREFIX "initial-scale", SL_AS_PREFIX "initialScale", 0, 1e9, true,
         offsetof(as_values_t, initial)},
        {SL_AS_PREFIX "activation-scale", NULL, 1, 1e9, true, offsetof(as_values_t, activation)},
        {SL_AS_PREFIX "target", NULL, 0.01, 1e9, false, offsetof(as_values_t, target)},
        {SL_AS_PREFIX "target-utilization-percentage", NULL, 1, 100, false,
         offsetof(as_values_t, util)},
        {SL_AS_PREFIX "panic-window-percentage", NULL, 1, 100, false,
         offsetof(as_values_t, panic_pct)},
        {SL_AS_PREFIX "panic-threshold-percentage", NULL, 110, 1000, false,
         offsetof(as_values_t, panic_threshold)},
    };
    int r;
    for (size_t i = 0; i < SL_ARRAY_LEN(nums); i++) {
        double *field = (double *)((char *)v + nums[i].off);
        if (strict && nums[i].alias && json_object_get(ann, nums[i].key) &&
            json_object_get(ann, nums[i].alias))
            return sl_error_set(err, EINVAL, "%s: give one of %s and %s, not both", path,
                                nums[i].key, nums[i].alias);
        r = annotation_number(ann, nums[i].key, path, nums[i].lo, nums[i].hi, nums[i].integral,
                              field, err);
        if (r == 1 && nums[i].alias)
            r = annotation_number(ann, nums[i].alias, path, nums[i].lo, nums[i].hi,
                                  nums[i].integral, field, err);
        if (r < 0)
            return r;
        if (r == 0 && i == 0)
            v->has_min = true;
        if (r == 0 && i == 1)
            v->has_max = true;
        /* Knative refuses it unless the cluster allows it
         * (allow-zero-initial-scale, off by default). */
        if (strict && r == 0 && i == 2 && *field == 0)
            return sl_error_set(err, EINVAL,
                                "%s." SL_AS_PREFIX "initial-scale: 0 is not allowed (a revision "
                                "is Ready once it runs); leave it out: with min-scale 0 the "
                                "revision scales to zero once idle",
                                path);
    }
    r = annotation_duration(ann, SL_AS_PREFIX "window", path, 6000000000ull, 3600000000000ull,
                            &v->window, err);
    if (r < 0)
        return r;
    r = annotation_duration(ann, SL_AS_PREFIX "scale-to-zero-pod-retention-period", path, 0,
                            3600000000000ull, &v->retention, err);
    if (r < 0)
        return r;
    r = annotation_duration(ann, SL_AS_PREFIX "scale-down-delay", path, 0, 3600000000000ull,
                            &v->scale_down_delay, err);
    if (r < 0)
        return r;
    if (v->has_min && v->has_max && v->max > 0 && v->min > v->max)
        return sl_error_set(err, EINVAL,
                            "%s." SL_AS_PREFIX "min-scale: %g is greater than " SL_AS_PREFIX
                            "max-scale %g",
                            path, v->min, v->max);
    return 0;
}

int sl_validate_autoscaling(const json_t *annotations, const char *path, sl_error_t *err)
{
    as_values_t v = {0};
    return annotations ? read_autoscaling(annotations, path, true, &v, err) : 0;
}

/* Knative's: a positive duration at second precision. */
static int progress_deadline(const json_t *annotations, uint64_t *ns)
{
    const char *s = json_string_value(json_object_get(annotations, SL_PROGRESS_DEADLINE_KEY));
    *ns = 0;
    if (!s)
        return 0;
    if (sl_parse_duration(s, ns) < 0 || *ns == 0 || *ns % 1000000000ull)
        return -1;
    return 0;
}

static int check_template_annotations(json_t *v, const char *path, sl_error_t *err)
{
    int rc = sl_check_string_map(v, path, err);
    uint64_t ns;
    if (rc == 0 && progress_deadline(v, &ns) < 0)
        return sl_error_set(err, EINVAL,
                            "%s." SL_PROGRESS_DEADLINE_KEY ": must be a positive duration in "
                            "whole seconds like \"600s\", got \"%s\"",
                            path,
                            json_string_value(json_object_get(v, SL_PROGRESS_DEADLINE_KEY))
                                ? json_string_value(json_object_get(v, SL_PROGRESS_DEADLINE_KEY))
                                : "(not a string)");
    const char *const booleans[] = {SL_SESSION_AFFINITY_KEY, SL_EGRESS_KEY, SL_CPU_THROTTLING_KEY};
    for (size_t i = 0; rc == 0 && i < SL_ARRAY_LEN(booleans); i++) {
        const char *b = json_string_value(json_object_get(v, booleans[i]));
        if (b && strcmp(b, "true") && strcmp(b, "false"))
            return sl_error_set(err, EINVAL, "%s.%s: must be \"true\" or \"false\", got \"%s\"",
                                path, booleans[i], b);
    }
    return rc < 0 ? rc : sl_validate_autoscaling(v, path, err);
}

static const sl_field_t template_metadata_fields[] = {
    {"name", check_name},
    {"labels", sl_check_labels},
    {"annotations", check_template_annotations},
    {"creationTimestamp", NULL},
};

static int check_template_metadata(json_t *v, const char *path, sl_error_t *err)
{
    return sl_check_fields(v, path, template_metadata_fields,
                           SL_ARRAY_LEN(template_metadata_fields), err);
}

static int check_int_range(json_t *v, const char *path, long long lo, long long hi, sl_error_t *err)
{
    if (!json_is_integer(v))
        return sl_error_set(err, EINVAL, "%s: must be an integer", path);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return sl_error_set(err, EINVAL, "%s: must be %lld..%lld, got %lld", path, lo, hi, x);
    return 0;
}

static int check_port_number(json_t *v, const char *path, sl_error_t *err)
{
    return check_int_range(v, path, 1, 65535, err);
}

/* Knative reads the port's name as the protocol the container speaks:
 * none or "http1" is HTTP/1.1, "h2c" HTTP/2 without TLS (what gRPC servers
 * expect), which the router speaks to such an instance. */
static int check_port_name(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (json_is_null(v) || (s && !*s))
        return 0; /* Knative: no name is HTTP/1.1 */
    if (!s || (strcmp(s, "http1") && strcmp(s, "h2c")))
        return sl_error_set(err, EINVAL, "%s: must be \"http1\", \"h2c\" or empty, got %s%s%s",
                            path, s ? "\"" : "", s ? s : "a non-string", s ? "\"" : "");
    return 0;
}

static int check_protocol(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || strcmp(s, "TCP"))
        return sl_error_set(err, EINVAL, "%s: must be \"TCP\"", path);
    return 0;
}

static const sl_field_t port_fields[] = {
    {"containerPort", check_port_number},
    {"name", check_port_name},
    {"protocol", check_protocol},
};

static int check_ports(json_t *v, const char *path, sl_error_t *err)
{
    if (!json_is_array(v) || json_array_size(v) > 1)
        return sl_error_set(err, EINVAL, "%s: must be a list with at most one port", path);
    json_t *p = json_array_get(v, 0);
    if (!p)
        return 0;
    sl_autofree char *sub = xasprintf("%s[0]", path);
    return sl_check_fields(p, sub, port_fields, SL_ARRAY_LEN(port_fields), err);
}

static bool is_env_name(const char *s)
{
    if (!s || !*s || isdigit((unsigned char)s[0]))
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-' || *s == '.'))
            return false;
    return true;
}

/* What the runtime contract sets (Knative's reserved variables). */
static bool is_reserved_env(const char *name)
{
    return !strcmp(name, "PORT") || !strcmp(name, "K_SERVICE") ||
           !strcmp(name, "K_CONFIGURATION") || !strcmp(name, "K_REVISION");
}

static int check_data_name(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || !sl_is_valid_domain(s))
        return sl_error_set(err, EINVAL, "%s: must be the name of a Secret or ConfigMap", path);
    return 0;
}

static int check_data_key(json_t *v, const char *path, sl_error_t *err)
{
    if (!sl_data_is_key(json_string_value(v)))
        return sl_error_set(
            err, EINVAL, "%s: must be a key (letters, digits, '-', '_' or '.', at most 253)", path);
    return 0;
}

static const sl_field_t key_selector_fields[] = {
    {"name", check_data_name},
    {"key", check_data_key},
    {"optional", sl_check_bool},
};

static int check_key_selector(json_t *v, const char *path, sl_error_t *err)
{
    if (sl_check_fields(v, path, key_selector_fields, SL_ARRAY_LEN(key_selector_fields), err) < 0)
        return -1;
    if (!json_object_get(v, "name") || !json_object_get(v, "key"))
        return sl_error_set(err, EINVAL, "%s: name and key are required", path);
    return 0;
}

static int check_field_ref(json_t *v, const char *path, sl_error_t *err)
{
    return sl_error_set(err, ENOTSUP,
                        "%s: not supported (Knative turns it off by default too); use "
                        "secretKeyRef or configMapKeyRef",
                        path);
}

static const sl_field_t value_from_fields[] = {
    {"secretKeyRef", check_key_selector},
    {"configMapKeyRef", check_key_selector},
    {"fieldRef", check_field_ref},
    {"resourceFieldRef", check_field_ref},
};

/* Exactly one of the two keys of obj is set. */
static int one_of(const json_t *obj, const char *a, const char *b, const char *path,
                  sl_error_t *err)
{
    bool has_a = json_object_get(obj, a) != NULL, has_b = json_object_get(obj, b) != NULL;
    if (has_a && has_b)
        return sl_error_set(err, EINVAL, "%s: give one of %s and %s, not both", path, a, b);
    if (!has_a && !has_b)
        return sl_error_set(err, EINVAL, "%s: one of %s and %s is required", path, a, b);
    return 0;
}

static int check_value_from(json_t *v, const char *path, sl_error_t *err)
{
    if (sl_check_fields(v, path, value_from_fields, SL_ARRAY_LEN(value_from_fields), err) < 0)
        return -1;
    return one_of(v, "secretKeyRef", "configMapKeyRef", path, err);
}

static const sl_field_t env_fields[] = {
    {"name", NULL},
    {"value", sl_check_string},
    {"valueFrom", check_value_from},
};

static int check_env(json_t *v, const char *path, sl_error_t *err)
{
    if (!json_is_array(v))
        return sl_error_set(err, EINVAL, "%s: must be a list of {name, value}", path);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        const char *name = sl_json_str(e, "name");
        sl_autofree char *sub = xasprintf("%s[%zu]", path, i);
        if (!json_is_object(e) || !is_env_name(name))
            return sl_error_set(err, EINVAL, "%s.name: must be a valid environment variable name",
                                sub);
        if (sl_check_fields(e, sub, env_fields, SL_ARRAY_LEN(env_fields), err) < 0)
            return -1;
        json_t *val = json_object_get(e, "value");
        if (json_object_get(e, "valueFrom") && json_string_length(val) > 0)
            return sl_error_set(err, EINVAL, "%s: give value or valueFrom, not both", sub);
        if (is_reserved_env(name))
            return sl_error_set(err, EINVAL, "%s.name: %s is reserved and set by sluice", sub,
                                name);
    }
    return 0;
}

static const sl_field_t env_source_fields[] = {
    {"name", check_data_name},
    {"optional", sl_check_bool},
};

static int check_env_source(json_t *v, const char *path, sl_error_t *err)
{
    if (sl_check_fields(v, path, env_source_fields, SL_ARRAY_LEN(env_source_fields), err) < 0)
        return -1;
    if (!json_object_get(v, "name"))
        return sl_error_set(err, EINVAL, "%s.name: is required", path);
    return 0;
}

static int check_env_prefix(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || (*s && !is_env_name(s)))
        return sl_error_set(err, EINVAL, "%s: must be a valid environment variable name", path);
    return 0;
}

static const sl_field_t env_from_fields[] = {
    {"prefix", check_env_prefix},
    {"secretRef", check_env_source},
    {"configMapRef", check_env_source},
};

static int check_env_from(json_t *v, const char *path, sl_error_t *err)
{
    if (!json_is_array(v))
        return sl_error_set(err, EINVAL, "%s: must be a list", path);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        sl_autofree char *sub = xasprintf("%s[%zu]", path, i);
        if (sl_check_fields(e, sub, env_from_fields, SL_ARRAY_LEN(env_from_fields), err) < 0 ||
            one_of(e, "secretRef", "configMapRef", sub, err) < 0)
            return -1;
    }
    return 0;
}

int sl_json_quantity(const json_t *v, bool cpu, int64_t *out)
{
    char buf[64];
    const char *s = json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        s = buf;
    } else if (json_is_real(v)) {
        snprintf(buf, sizeof(buf), "%.6f", json_real_value(v));
        s = buf;
    }
    if (!s)
        return -1;
    int rc = cpu ? sl_parse_cpu(s, out) : sl_parse_memory(s, out);
    return rc < 0 || *out < 0 ? -1 : 0;
}

static int64_t quantity(const json_t *res, const char *which, const char *key, bool cpu)
{
    json_t *v = sl_json_path(res, which);
    v = json_object_get(v, key);
    int64_t q = 0;
    if (v && sl_json_quantity(v, cpu, &q) < 0)
        q = 0;
    return q;
}

static int check_quantity_map(json_t *v, const char *path, sl_error_t *err)
{
    if (!json_is_object(v))
        return sl_error_set(err, EINVAL, "%s: must be an object", path);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x)
    {
        int64_t q;
        if (!strcmp(k, "memory")) {
            if (sl_json_quantity(x, false, &q) < 0 || q < 4 * 1024 * 1024)
                return sl_error_set(err, EINVAL,
                                    "%s.memory: must be a quantity of at least 4Mi like \"256Mi\"",
                                    path);
        } else if (!strcmp(k, "cpu")) {
            if (sl_json_quantity(x, true, &q) < 0 || q < 1)
                return sl_error_set(err, EINVAL,
                                    "%s.cpu: must be a quantity like \"1\" or \"500m\"", path);
        } else if (!strcmp(k, "ephemeral-storage")) {
            if (sl_json_quantity(x, false, &q) < 0 || q < 4 * 1024 * 1024)
                return sl_error_set(
                    err, EINVAL,
                    "%s.ephemeral-storage: must be a quantity of at least 4Mi like \"1Gi\"", path);
        } else {
            return sl_error_set(err, EINVAL, "%s.%s: unknown resource", path, k);
        }
    }
    return 0;
}

static const sl_field_t resources_fields[] = {
    {"limits", check_quantity_map},
    {"requests", check_quantity_map},
};

/* As Kubernetes: a request may not exceed its limit. */
static int check_resources(json_t *v, const char *path, sl_error_t *err)
{
    if (sl_check_fields(v, path, resources_fields, SL_ARRAY_LEN(resources_fields), err) < 0)
        return -1;
    static const char *const kinds[] = {"cpu", "memory", "ephemeral-storage"};
    for (size_t i = 0; i < SL_ARRAY_LEN(kinds); i++) {
        bool cpu = i == 0;
        int64_t req = quantity(v, "requests", kinds[i], cpu);
        int64_t lim = quantity(v, "limits", kinds[i], cpu);
        if (req && lim && req > lim)
            return sl_error_set(err, EINVAL,
                                "%s.requests.%s: must be less than or equal to the %s limit", path,
                                kinds[i], kinds[i]);
    }
    return 0;
}

static int check_image(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || !*s)
        return sl_error_set(err, EINVAL, "%s: must be a non-empty image reference", path);
    if (strncmp(s, "oci:", 4) && strncmp(s, "docker-archive:", 15) && strncmp(s, "dir:", 4))
        return sl_error_set(err, EINVAL,
                            "%s: unsupported image reference '%s' (use oci:DIR[:TAG], "
                            "docker-archive:FILE or dir:ROOTFS)",
                            path, s);
    return 0;
}

static int check_probe_port(json_t *v, const char *path, sl_error_t *err)
{
    if (json_is_string(v))
        return 0; /* a named port: resolved to the container's port */
    if (json_is_integer(v) && json_integer_value(v) == 0)
        return 0; /* what Knative writes back: the container's port */
    return check_port_number(v, path, err);
}

/* Probes reach the instance on its own loopback. */
static int check_probe_host(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s)
        return sl_error_set(err, EINVAL, "%s: must be a string", path);
    if (*s && strcmp(s, "localhost") && strcmp(s, "127.0.0.1"))
        return sl_error_set(err, ENOTSUP,
                            "%s: \"%s\": probes reach the instance on its loopback; to send a "
                            "Host header, use httpHeaders",
                            path, s);
    return 0;
}

static bool is_token(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
            return false;
    return true;
}

static int check_http_headers(json_t *v, const char *path, sl_error_t *err)
{
    if (!json_is_array(v))
        return sl_error_set(err, EINVAL, "%s: must be a list of {name, value}", path);
    static const sl_field_t fields[] = {{"name", sl_check_string}, {"value", sl_check_string}};
    size_t i;
    json_t *h;
    json_array_foreach(v, i, h)
    {
        sl_autofree char *sub = xasprintf("%s[%zu]", path, i);
        if (sl_check_fields(h, sub, fields, SL_ARRAY_LEN(fields), err) < 0)
            return -1;
        if (!is_token(sl_json_str(h, "name")))
            return sl_error_set(err, EINVAL, "%s.name: must be an HTTP field name", sub);
        const char *val = sl_json_str(h, "value");
        if (!val)
            return sl_error_set(err, EINVAL, "%s.value: is required", sub);
        for (const char *c = val; *c; c++)
            if ((unsigned char)*c < 0x20 && *c != '\t')
                return sl_error_set(err, EINVAL, "%s.value: control characters are not allowed",
                                    sub);
    }
    return 0;
}

static const sl_field_t http_get_fields[] = {
    {"path", sl_check_string}, {"port", check_probe_port}, {"httpHeaders", check_http_headers},
    {"scheme", NULL},          {"host", check_probe_host},
};

static int check_http_get(json_t *v, const char *path, sl_error_t *err)
{
    int rc = sl_check_fields(v, path, http_get_fields, SL_ARRAY_LEN(http_get_fields), err);
    const char *p = sl_json_str(v, "path");
    if (rc == 0 && p && p[0] != '/')
        return sl_error_set(err, EINVAL, "%s.path: must start with '/'", path);
    const char *scheme = sl_json_str(v, "scheme");
    if (rc == 0 && scheme && strcmp(scheme, "HTTP"))
        return sl_error_set(err, EINVAL, "%s.scheme: only HTTP is supported", path);
    return rc;
}

static const sl_field_t tcp_fields[] = {{"port", check_probe_port}, {"host", check_probe_host}};

static int check_tcp(json_t *v, const char *path, sl_error_t *err)
{
    return sl_check_fields(v, path, tcp_fields, SL_ARRAY_LEN(tcp_fields), err);
}

/* Kubernetes' GRPCAction: the gRPC Health Checking Protocol. */
static int check_grpc_service(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s)
        return sl_error_set(err, EINVAL, "%s: must be a string", path);
    if (strlen(s) > 1024)
        return sl_error_set(err, EINVAL, "%s: longer than 1024 bytes", path);
    return 0;
}

static const sl_field_t grpc_fields[] = {{"port", check_probe_port},
                                         {"service", check_grpc_service}};

static int check_grpc(json_t *v, const char *path, sl_error_t *err)
{
    return sl_check_fields(v, path, grpc_fields, SL_ARRAY_LEN(grpc_fields), err);
}

static const sl_field_t exec_fields[] = {{"command", check_string_array}};

static int check_exec(json_t *v, const char *path, sl_error_t *err)
{
    int rc = sl_check_fields(v, path, exec_fields, SL_ARRAY_LEN(exec_fields), err);
    if (rc == 0 && json_array_size(json_object_get(v, "command")) == 0)
        return sl_error_set(err, EINVAL, "%s.command: must not be empty", path);
    return rc;
}

static int check_seconds(json_t *v, const char *path, sl_error_t *err)
{
    return check_int_range(v, path, 0, 3600, err);
}

static int check_threshold(json_t *v, const char *path, sl_error_t *err)
{
    return check_int_range(v, path, 1, 100, err);
}

static const sl_field_t probe_fields[] = {
    {"httpGet", check_http_get},
    {"tcpSocket", check_tcp},
    {"exec", check_exec},
    {"initialDelaySeconds", check_seconds},
    {"periodSeconds", check_seconds},
    {"timeoutSeconds", check_seconds},
    {"successThreshold", check_threshold},
    {"failureThreshold", check_threshold},
    {"grpc", check_grpc},
};

/* A readiness probe without a handler is a TCP one (Knative's default);
 * liveness and startup probes need one, and pass once (successThreshold 1). */
static int check_probe_as(json_t *v, const char *path, bool readiness, sl_error_t *err)
{
    int rc = sl_check_fields(v, path, probe_fields, SL_ARRAY_LEN(probe_fields), err);
    if (rc < 0)
        return rc;
    int handlers = !!json_object_get(v, "httpGet") + !!json_object_get(v, "tcpSocket") +
                   !!json_object_get(v, "exec") + !!json_object_get(v, "grpc");
    if (handlers > 1 || (handlers == 0 && !readiness))
        return sl_error_set(err, EINVAL, "%s: give one of httpGet, tcpSocket, exec or grpc", path);
    json_t *st = json_object_get(v, "successThreshold");
    if (!readiness && st && json_integer_value(st) != 1)
        return sl_error_set(err, EINVAL, "%s.successThreshold: must be 1", path);
    return 0;
}

static int check_readiness_probe(json_t *v, const char *path, sl_error_t *err)
{
    return check_probe_as(v, path, true, err);
}

static int check_probe(json_t *v, const char *path, sl_error_t *err)
{
    return check_probe_as(v, path, false, err);
}

static int check_uid(json_t *v, const char *path, sl_error_t *err)
{
    return check_int_range(v, path, 0, 2147483647, err);
}

static int check_cap_list(json_t *v, const char *path, bool adding, sl_error_t *err)
{
    if (check_string_array(v, path, err) < 0)
        return -1;
    size_t i;
    json_t *c;
    json_array_foreach(v, i, c)
    {
        const char *name = json_string_value(c);
        /* Dropping one an instance never has is allowed (and does nothing). */
        if (!adding && (strcasecmp(name, "ALL") == 0 || sl_oci_cap_known(name)))
            continue;
        if (sl_oci_cap_name(name))
            continue;
        char set[512] = "";
        for (size_t k = 0; sl_oci_default_caps[k]; k++) /* named as Kubernetes does */
            snprintf(set + strlen(set), sizeof(set) - strlen(set), "%s%s", k ? ", " : "",
                     sl_oci_default_caps[k] + 4);
        return sl_error_set(
            err, EINVAL, "%s[%zu]: \"%s\" is %s; an instance has at most the default set (%s)",
            path, i, name, adding ? "not a capability that may be added" : "not a capability", set);
    }
    return 0;
}

static int check_cap_add(json_t *v, const char *path, sl_error_t *err)
{
    return check_cap_list(v, path, true, err);
}

static int check_cap_drop(json_t *v, const char *path, sl_error_t *err)
{
    return check_cap_list(v, path, false, err);
}

static const sl_field_t capabilities_fields[] = {{"add", check_cap_add}, {"drop", check_cap_drop}};

static int check_capabilities(json_t *v, const char *path, sl_error_t *err)
{
    return sl_check_fields(v, path, capabilities_fields, SL_ARRAY_LEN(capabilities_fields), err);
}

/* What Knative accepts is enforced; the rest is refused, not ignored. */
static int check_escalation(json_t *v, const char *path, sl_error_t *err)
{
    if (sl_check_bool(v, path, err) < 0)
        return -1;
    if (json_is_true(v))
        return sl_error_set(err, ENOTSUP,
                            "%s: true is not supported: instances always run with "
                            "no_new_privs (setuid binaries do not raise privileges)",
                            path);
    return 0;
}

static int check_privileged(json_t *v, const char *path, sl_error_t *err)
{
    if (sl_check_bool(v, path, err) < 0)
        return -1;
    if (json_is_true(v))
        return sl_error_set(err, ENOTSUP, "%s: privileged containers are not supported", path);
    return 0;
}

static int check_seccomp_profile(json_t *v, const char *path, sl_error_t *err)
{
    static const sl_field_t fields[] = {{"type", sl_check_string},
                                        {"localhostProfile", sl_check_string}};
    if (sl_check_fields(v, path, fields, SL_ARRAY_LEN(fields), err) < 0)
        return -1;
    const char *type = sl_json_str(v, "type");
    if (!type || strcmp(type, "RuntimeDefault"))
        return sl_error_set(err, ENOTSUP,
                            "%s.type: only RuntimeDefault is supported (the runtime class "
                            "decides the filter), got %s",
                            path, type ? type : "nothing");
    return 0;
}

static const sl_field_t security_fields[] = {
    {"runAsUser", check_uid},
    {"runAsGroup", check_uid},
    {"runAsNonRoot", sl_check_bool},
    {"readOnlyRootFilesystem", sl_check_bool},
    {"allowPrivilegeEscalation", check_escalation},
    {"privileged", check_privileged},
    {"capabilities", check_capabilities},
    {"seccompProfile", check_seccomp_profile},
    {"procMount", sl_check_unsupported},
    {"seLinuxOptions", sl_check_unsupported},
    {"windowsOptions", sl_check_unsupported},
    {"appArmorProfile", sl_check_unsupported},
};

static int check_security_context(json_t *v, const char *path, sl_error_t *err)
{
    if (sl_check_fields(v, path, security_fields, SL_ARRAY_LEN(security_fields), err) < 0)
        return -1;
    json_t *uid = json_object_get(v, "runAsUser");
    if (json_is_true(json_object_get(v, "runAsNonRoot")) && uid && json_integer_value(uid) == 0)
        return sl_error_set(err, EINVAL, "%s.runAsUser: 0 (root) contradicts runAsNonRoot: true",
                            path);
    return 0;
}

static int check_working_dir(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || s[0] != '/')
        return sl_error_set(err, EINVAL, "%s: must be an absolute path", path);
    return 0;
}

/* ---- volumes: emptyDir only --------------------------------------------- */

/* The first of list[0..below) whose field `key` is the string `value`;
 * NULL if none. */
static json_t *element_with(const json_t *list, const char *key, const char *value, size_t below)
{
    for (size_t i = 0; value && i < json_array_size(list) && i < below; i++) {
        json_t *e = json_array_get(list, i);
        const char *v = json_string_value(json_object_get(e, key));
        if (v && !strcmp(v, value))
            return e;
    }
    return NULL;
}

/* A path's length without trailing slashes ("/d/" and "/d" are one). */
static size_t path_len(const char *s)
{
    size_t n = strlen(s);
    while (n > 1 && s[n - 1] == '/')
        n--;
    return n;
}

/* Knative's reserved mount paths, and what the runtime mounts itself. */
static const char *const reserved_mount_paths[] = {"/",    "/dev", "/dev/log",
                                                   "/tmp", "/var", "/var/log"};
static const char *const runtime_mount_roots[] = {"/proc", "/sys", "/dev"};

static int check_mount_path(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || s[0] != '/')
        return sl_error_set(err, EINVAL, "%s: must be an absolute path", path);
    for (const char *c = s; *c; c++) {
        if (c[0] == '/' && c[1] == '.' &&
            (c[2] == '/' || !c[2] || (c[2] == '.' && (c[3] == '/' || !c[3]))))
            return sl_error_set(err, EINVAL, "%s: \"%s\" must not contain . or .. components", path,
                                s);
        if (c[0] == '/' && c[1] == '/')
            return sl_error_set(err, EINVAL, "%s: \"%s\" must not contain empty components", path,
                                s);
    }
    size_t n = path_len(s);
    for (size_t i = 0; i < SL_ARRAY_LEN(reserved_mount_paths); i++)
        if (strlen(reserved_mount_paths[i]) == n && !strncmp(s, reserved_mount_paths[i], n))
            return sl_error_set(err, EINVAL, "%s: \"%.*s\" is a reserved path", path, (int)n, s);
    for (size_t i = 0; i < SL_ARRAY_LEN(runtime_mount_roots); i++)
        if (sl_path_holds(runtime_mount_roots[i], s))
            return sl_error_set(err, EINVAL, "%s: \"%s\" is under %s, which the runtime mounts",
                                path, s, runtime_mount_roots[i]);
    return 0;
}

static const sl_field_t volume_mount_fields[] = {
    {"name", sl_check_string},
    {"mountPath", check_mount_path},
    {"readOnly", sl_check_bool},
    {"subPath", sl_check_unsupported},
    {"subPathExpr", sl_check_unsupported},
    {"mountPropagation", sl_check_unsupported},
    {"recursiveReadOnly", sl_check_unsupported},
};

static int check_volume_mounts(json_t *v, const char *path, sl_error_t *err)
{
    if (!json_is_array(v))
        return sl_error_set(err, EINVAL, "%s: must be a list", path);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *m = json_array_get(v, i);
        sl_autofree char *sub = xasprintf("%s[%zu]", path, i);
        if (sl_check_fields(m, sub, volume_mount_fields, SL_ARRAY_LEN(volume_mount_fields), err) <
            0)
            return -1;
        if (!json_object_get(m, "name") || !json_object_get(m, "mountPath"))
            return sl_error_set(err, EINVAL, "%s: name and mountPath are required", sub);
        const char *mp = json_string_value(json_object_get(m, "mountPath"));
        size_t a = path_len(mp);
        for (size_t k = 0; k < i; k++) {
            const char *other =
                json_string_value(json_object_get(json_array_get(v, k), "mountPath"));
            if (path_len(other) == a && !strncmp(mp, other, a))
                return sl_error_set(err, EINVAL, "%s.mountPath: \"%s\" must be unique", sub, mp);
        }
    }
    return 0;
}

static int check_medium(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || (*s && strcmp(s, "Memory")))
        return sl_error_set(err, EINVAL, "%s: must be \"\" or \"Memory\" (both are tmpfs)", path);
    return 0;
}

static int check_size_limit(json_t *v, const char *path, sl_error_t *err)
{
    int64_t q;
    if (sl_json_quantity(v, false, &q) < 0 || q < 1)
        return sl_error_set(err, EINVAL, "%s: must be a quantity like \"64Mi\"", path);
    return 0;
}

static const sl_field_t empty_dir_fields[] = {
    {"medium", check_medium},
    {"sizeLimit", check_size_limit},
};

static int check_empty_dir(json_t *v, const char *path, sl_error_t *err)
{
    return sl_check_fields(v, path, empty_dir_fields, SL_ARRAY_LEN(empty_dir_fields), err);
}

static int check_volume_source(json_t *v, const char *path, sl_error_t *err)
{
    return sl_error_set(err, ENOTSUP,
                        "%s: not supported: emptyDir, secret and configMap volumes are", path);
}

static int check_file_mode(json_t *v, const char *path, sl_error_t *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 0777)
        return sl_error_set(err, EINVAL, "%s: must be a file mode from 0 to 0777 (511)", path);
    return 0;
}

/* Kubernetes' KeyToPath path: relative, no ".." component, not starting
 * with "..". */
static int check_item_path(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || !*s || s[0] == '/')
        return sl_error_set(err, EINVAL, "%s: must be a relative path", path);
    if (!strncmp(s, "..", 2))
        return sl_error_set(err, EINVAL, "%s: \"%s\" must not start with '..'", path, s);
    for (const char *c = s; *c; c++) {
        bool start = c == s || c[-1] == '/';
        if (start && c[0] == '.' && c[1] == '.' && (c[2] == '/' || !c[2]))
            return sl_error_set(err, EINVAL, "%s: \"%s\" must not contain '..'", path, s);
        if (start && (c[0] == '/' || (c[0] == '.' && (c[1] == '/' || !c[1]))))
            return sl_error_set(err, EINVAL, "%s: \"%s\" must not have empty or '.' components",
                                path, s);
    }
    if (s[strlen(s) - 1] == '/')
        return sl_error_set(err, EINVAL, "%s: \"%s\" must name a file", path, s);
    return 0;
}

static const sl_field_t item_fields[] = {
    {"key", check_data_key},
    {"path", check_item_path},
    {"mode", check_file_mode},
};

static int check_items(json_t *v, const char *path, sl_error_t *err)
{
    if (!json_is_array(v))
        return sl_error_set(err, EINVAL, "%s: must be a list of {key, path}", path);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *it = json_array_get(v, i);
        sl_autofree char *sub = xasprintf("%s[%zu]", path, i);
        if (sl_check_fields(it, sub, item_fields, SL_ARRAY_LEN(item_fields), err) < 0)
            return -1;
        if (!json_object_get(it, "key") || !json_object_get(it, "path"))
            return sl_error_set(err, EINVAL, "%s: key and path are required", sub);
        const char *p = json_string_value(json_object_get(it, "path"));
        if (element_with(v, "path", p, i))
            return sl_error_set(err, EINVAL, "%s.path: \"%s\" must be unique", sub, p);
    }
    return 0;
}

static const sl_field_t secret_volume_fields[] = {
    {"secretName", check_data_name},
    {"items", check_items},
    {"defaultMode", check_file_mode},
    {"optional", sl_check_bool},
};

static const sl_field_t configmap_volume_fields[] = {
    {"name", check_data_name},
    {"items", check_items},
    {"defaultMode", check_file_mode},
    {"optional", sl_check_bool},
};

static int check_secret_volume(json_t *v, const char *path, sl_error_t *err)
{
    if (sl_check_fields(v, path, secret_volume_fields, SL_ARRAY_LEN(secret_volume_fields), err) < 0)
        return -1;
    if (!json_object_get(v, "secretName"))
        return sl_error_set(err, EINVAL, "%s.secretName: is required", path);
    return 0;
}

static int check_configmap_volume(json_t *v, const char *path, sl_error_t *err)
{
    if (sl_check_fields(v, path, configmap_volume_fields, SL_ARRAY_LEN(configmap_volume_fields),
                        err) < 0)
        return -1;
    if (!json_object_get(v, "name"))
        return sl_error_set(err, EINVAL, "%s.name: is required", path);
    return 0;
}

static int check_label_name(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || !sl_is_dns1123_label(s))
        return sl_error_set(err, EINVAL, "%s: must be a DNS-1123 label", path);
    return 0;
}

static const sl_field_t volume_fields[] = {
    {"name", check_label_name},         {"emptyDir", check_empty_dir},
    {"secret", check_secret_volume},    {"configMap", check_configmap_volume},
    {"projected", check_volume_source}, {"persistentVolumeClaim", check_volume_source},
    {"hostPath", check_volume_source},  {"csi", check_volume_source},
    {"nfs", check_volume_source},       {"downwardAPI", check_volume_source},
    {"ephemeral", check_volume_source}, {"image", check_volume_source},
};

static int check_volumes(json_t *v, const char *path, sl_error_t *err)
{
    if (!json_is_array(v))
        return sl_error_set(err, EINVAL, "%s: must be a list", path);
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *vol = json_array_get(v, i);
        sl_autofree char *sub = xasprintf("%s[%zu]", path, i);
        if (sl_check_fields(vol, sub, volume_fields, SL_ARRAY_LEN(volume_fields), err) < 0)
            return -1;
        const char *name = json_string_value(json_object_get(vol, "name"));
        if (!name)
            return sl_error_set(err, EINVAL, "%s.name: is required", sub);
        size_t kinds = (json_object_get(vol, "emptyDir") != NULL) +
                       (json_object_get(vol, "secret") != NULL) +
                       (json_object_get(vol, "configMap") != NULL);
        if (kinds != 1)
            return sl_error_set(err, EINVAL, "%s: give %s of emptyDir, secret and configMap", sub,
                                kinds ? "only one" : "one");
        if (element_with(v, "name", name, i))
            return sl_error_set(err, EINVAL, "%s.name: \"%s\" must be unique", sub, name);
    }
    return 0;
}

/* The volumes and the container's mounts name each other, as Knative
 * checks: a mount names a volume, and every volume is mounted. */
static int check_volumes_mounted(json_t *pod, const char *path, sl_error_t *err)
{
    json_t *vols = json_object_get(pod, "volumes");
    json_t *mounts =
        json_object_get(json_array_get(json_object_get(pod, "containers"), 0), "volumeMounts");
    for (size_t i = 0; i < json_array_size(mounts); i++) {
        const char *name = json_string_value(json_object_get(json_array_get(mounts, i), "name"));
        if (!element_with(vols, "name", name, SIZE_MAX))
            return sl_error_set(err, EINVAL,
                                "%s.containers[0].volumeMounts[%zu].name: \"%s\" has no matching "
                                "volume",
                                path, i, name);
        bool empty_dir = json_object_get(element_with(vols, "name", name, SIZE_MAX), "emptyDir");
        if (empty_dir && element_with(mounts, "name", name, i))
            return sl_error_set(err, ENOTSUP,
                                "%s.containers[0].volumeMounts[%zu].name: \"%s\" is mounted "
                                "twice: not supported for an emptyDir (each mount is a tmpfs "
                                "of its own)",
                                path, i, name);
        /* Knative's rule: what the container cannot change is mounted so. */
        if (!empty_dir && !json_is_true(json_object_get(json_array_get(mounts, i), "readOnly")))
            return sl_error_set(err, EINVAL,
                                "%s.containers[0].volumeMounts[%zu].readOnly: must be true for "
                                "a secret or configMap volume",
                                path, i);
    }
    for (size_t k = 0; k < json_array_size(vols); k++) {
        const char *name = json_string_value(json_object_get(json_array_get(vols, k), "name"));
        if (!element_with(mounts, "name", name, SIZE_MAX))
            return sl_error_set(err, EINVAL, "%s.volumes[%zu]: volume with name \"%s\" not mounted",
                                path, k, name);
    }
    return 0;
}

static const sl_field_t container_fields[] = {
    {"name", sl_check_string},
    {"image", check_image},
    {"ports", check_ports},
    {"env", check_env},
    {"command", check_string_array},
    {"args", check_string_array},
    {"workingDir", check_working_dir},
    {"resources", check_resources},
    {"readinessProbe", check_readiness_probe},
    {"livenessProbe", check_probe},
    {"startupProbe", check_probe},
    {"imagePullPolicy", sl_check_string},
    {"securityContext", check_security_context},
    {"terminationMessagePolicy", sl_check_string},
    {"envFrom", check_env_from},
    {"volumeMounts", check_volume_mounts},
    {"lifecycle", sl_check_unsupported},
};

static int check_containers(json_t *v, const char *path, sl_error_t *err)
{
    if (!json_is_array(v) || json_array_size(v) != 1)
        return sl_error_set(err, EINVAL, "%s: must list exactly one container", path);
    sl_autofree char *sub = xasprintf("%s[0]", path);
    json_t *c = json_array_get(v, 0);
    int rc = sl_check_fields(c, sub, container_fields, SL_ARRAY_LEN(container_fields), err);
    if (rc < 0)
        return rc;
    if (!json_object_get(c, "image"))
        return sl_error_set(err, EINVAL, "%s.image: is required", sub);
    return 0;
}

static int check_concurrency(json_t *v, const char *path, sl_error_t *err)
{
    return check_int_range(v, path, 0, 1000, err);
}

static int check_timeout(json_t *v, const char *path, sl_error_t *err)
{
    return check_int_range(v, path, 1, SL_MAX_TIMEOUT_S, err);
}

/* responseStartTimeoutSeconds and idleTimeoutSeconds: 0 is "none", as in
 * Knative; the response start's upper bound (timeoutSeconds) is checked with
 * the whole pod spec. */
static int check_timeout_or_zero(json_t *v, const char *path, sl_error_t *err)
{
    return check_int_range(v, path, 0, SL_MAX_TIMEOUT_S, err);
}

static int check_runtime_class(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || !sl_is_dns1123_label(s))
        return sl_error_set(err, EINVAL, "%s: must be a runtime class name", path);
    return 0;
}

static const sl_field_t pod_fields[] = {
    {"containers", check_containers},
    {"containerConcurrency", check_concurrency},
    {"timeoutSeconds", check_timeout},
    {"responseStartTimeoutSeconds", check_timeout_or_zero},
    {"idleTimeoutSeconds", check_timeout_or_zero},
    {"runtimeClassName", check_runtime_class},
    {"serviceAccountName", sl_check_string},
    {"enableServiceLinks", NULL},
    {"volumes", check_volumes},
    {"imagePullSecrets", sl_check_unsupported},
    {"initContainers", sl_check_unsupported},
    {"securityContext", sl_check_unsupported},
    {"nodeSelector", sl_check_unsupported},
    {"affinity", sl_check_unsupported},
    {"tolerations", sl_check_unsupported},
    {"priorityClassName", sl_check_unsupported},
    {"dnsPolicy", sl_check_unsupported},
    {"dnsConfig", sl_check_unsupported},
    {"hostAliases", sl_check_unsupported},
};

static int check_pod_spec(json_t *v, const char *path, sl_error_t *err)
{
    int rc = sl_check_fields(v, path, pod_fields, SL_ARRAY_LEN(pod_fields), err);
    if (rc == 0 && !json_object_get(v, "containers"))
        return sl_error_set(err, EINVAL, "%s.containers: is required", path);
    if (rc == 0)
        rc = check_volumes_mounted(v, path, err);
    json_t *rst = json_object_get(v, "responseStartTimeoutSeconds");
    json_t *to = json_object_get(v, "timeoutSeconds");
    json_int_t limit = to ? json_integer_value(to) : SL_DEFAULT_TIMEOUT_S;
    if (rc == 0 && rst && json_integer_value(rst) > limit)
        return sl_error_set(err, EINVAL,
                            "%s.responseStartTimeoutSeconds: %lld is more than timeoutSeconds "
                            "(%lld): must be 0..%lld",
                            path, (long long)json_integer_value(rst), (long long)limit,
                            (long long)limit);
    return rc;
}

static const sl_field_t template_fields[] = {
    {"metadata", check_template_metadata},
    {"spec", check_pod_spec},
};

static int check_template(json_t *v, const char *path, sl_error_t *err)
{
    int rc = sl_check_fields(v, path, template_fields, SL_ARRAY_LEN(template_fields), err);
    if (rc == 0 && !json_object_get(v, "spec"))
        return sl_error_set(err, EINVAL, "%s.spec: is required", path);
    return rc;
}

static int check_percent(json_t *v, const char *path, sl_error_t *err)
{
    return check_int_range(v, path, 0, 100, err);
}

static int check_tag(json_t *v, const char *path, sl_error_t *err)
{
    const char *s = json_string_value(v);
    if (!s || !sl_is_dns1035(s))
        return sl_error_set(err, EINVAL,
                            "%s: must be a DNS-1035 label (lower-case letters, digits and '-', "
                            "starting with a letter), got %s%s%s",
                            path, s ? "\"" : "", s ? s : "a non-string", s ? "\"" : "");
    return 0;
}

static int check_traffic_url(json_t *v, const char *path, sl_error_t *err)
{
    return sl_error_set(err, EINVAL, "%s: is set by the server (status.traffic), not input", path);
}

static const sl_field_t traffic_fields[] = {
    {"revisionName", check_name}, {"latestRevision", sl_check_bool}, {"percent", check_percent},
    {"tag", check_tag},           {"url", check_traffic_url},
};

/* Knative's rules: each entry names a revision or latestRevision: true (not
 * both; without either it is the latest, as Knative defaults it), percents
 * are integers summing to 100, tags are unique. */
static int check_traffic(json_t *v, const char *path, sl_error_t *err)
{
    if (!json_is_array(v))
        return sl_error_set(err, EINVAL, "%s: must be a list", path);
    size_t i;
    json_t *t;
    long sum = 0;
    json_array_foreach(v, i, t)
    {
        sl_autofree char *sub = xasprintf("%s[%zu]", path, i);
        int rc = sl_check_fields(t, sub, traffic_fields, SL_ARRAY_LEN(traffic_fields), err);
        if (rc < 0)
            return rc;
        json_t *lr = json_object_get(t, "latestRevision");
        const char *rev = json_string_value(json_object_get(t, "revisionName"));
        bool latest = lr ? json_is_true(lr) : !rev;
        if (latest && rev)
            return sl_error_set(err, EINVAL,
                                "%s.revisionName: may not be set when latestRevision is true", sub);
        if (!latest && !rev)
            return sl_error_set(err, EINVAL, "%s: latestRevision: false needs a revisionName", sub);
        sum += (long)json_integer_value(json_object_get(t, "percent"));
        const char *tag = json_string_value(json_object_get(t, "tag"));
        for (size_t j = 0; tag && j < i; j++) {
            const char *other = json_string_value(json_object_get(json_array_get(v, j), "tag"));
            if (other && !strcmp(other, tag))
                return sl_error_set(err, EINVAL, "%s.tag: \"%s\" is used twice", sub, tag);
        }
    }
    if (json_array_size(v) > 0 && sum != 100)
        return sl_error_set(err, EINVAL, "%s: percents must add up to 100, got %ld", path, sum);
    return 0;
}

static const sl_field_t spec_fields[] = {
    {"template", check_template},
    {"traffic", check_traffic},
};

static int check_spec(json_t *v, const char *path, sl_error_t *err)
{
    int rc = sl_check_fields(v, path, spec_fields, SL_ARRAY_LEN(spec_fields), err);
    if (rc == 0 && !json_object_get(v, "template"))
        return sl_error_set(err, EINVAL, "%s.template: is required", path);
    return rc;
}

static const sl_field_t service_fields[] = {
    {"apiVersion", NULL}, {"kind", NULL},   {"metadata", check_metadata},
    {"spec", check_spec}, {"status", NULL},
};

static void fill_defaults(json_t *svc, const char *ns_default)
{
    json_t *md = json_object_get(svc, "metadata");
    if (!json_object_get(md, "namespace"))
        json_object_set_new(md, "namespace", json_string(ns_default));
    static const char *server_set[] = {
        "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"};
    for (size_t i = 0; i < SL_ARRAY_LEN(server_set); i++)
        json_object_del(md, server_set[i]);
    json_object_del(svc, "status");
    json_t *tmpl = sl_json_path(svc, "spec.template");
    json_t *tmd = sl_json_ensure_obj(tmpl, "metadata");
    json_object_del(tmd, "creationTimestamp");
    json_t *pod = json_object_get(tmpl, "spec");
    if (!json_object_get(pod, "containerConcurrency"))
        json_object_set_new(pod, "containerConcurrency", json_integer(SL_DEFAULT_CONCURRENCY));
    if (!json_object_get(pod, "timeoutSeconds"))
        json_object_set_new(pod, "timeoutSeconds", json_integer(SL_DEFAULT_TIMEOUT_S));
    json_t *c = json_array_get(json_object_get(pod, "containers"), 0);
    if (!json_object_get(c, "ports")) {
        json_t *p = json_pack("[{s:i}]", "containerPort", SL_DEFAULT_PORT);
        json_object_set_new(c, "ports", p);
    }
    json_t *traffic = json_object_get(json_object_get(svc, "spec"), "traffic");
    size_t i;
    json_t *t;
    json_array_foreach(traffic, i, t)
    {
        if (!json_object_get(t, "latestRevision"))
            json_object_set_new(t, "latestRevision",
                                json_boolean(!json_object_get(t, "revisionName")));
    }
    if (!traffic || json_array_size(traffic) == 0)
        json_object_set_new(json_object_get(svc, "spec"), "traffic",
                            json_pack("[{s:b,s:i}]", "latestRevision", 1, "percent", 100));
}

int sl_service_validate(json_t *svc, const char *ns_default, sl_error_t *err)
{
    if (!json_is_object(svc))
        return sl_error_set(err, EINVAL, "a Service must be a JSON/YAML object");
    const char *av = sl_json_str(svc, "apiVersion");
    const char *kind = sl_json_str(svc, "kind");
    if (!av || strcmp(av, SL_API_VERSION))
        return sl_error_set(err, EINVAL, "apiVersion: must be \"%s\", got %s%s%s", SL_API_VERSION,
                            av ? "\"" : "", av ? av : "nothing", av ? "\"" : "");
    if (!kind || strcmp(kind, "Service"))
        return sl_error_set(err, EINVAL, "kind: must be \"Service\", got %s",
                            kind ? kind : "nothing");
    int rc = sl_check_fields(svc, "", service_fields, SL_ARRAY_LEN(service_fields), err);
    if (rc < 0)
        return rc;
    if (!json_is_object(json_object_get(svc, "metadata")) || !sl_json_str(svc, "metadata.name"))
        return sl_error_set(err, EINVAL, "metadata.name: is required");
    if (!json_object_get(svc, "spec"))
        return sl_error_set(err, EINVAL, "spec: is required");
    const char *tname = sl_json_str(svc, "spec.template.metadata.name");
    const char *name = sl_json_str(svc, "metadata.name");
    if (tname && (strncmp(tname, name, strlen(name)) || tname[strlen(name)] != '-'))
        return sl_error_set(err, EINVAL,
                            "spec.template.metadata.name: must start with the service name "
                            "followed by '-' (\"%s-…\"), got \"%s\"",
                            name, tname);
    size_t i;
    json_t *t;
    json_array_foreach(sl_json_path(svc, "spec.traffic"), i, t)
    {
        const char *tag = json_string_value(json_object_get(t, "tag"));
        if (tag && strlen(tag) + 1 + strlen(name) > 63)
            return sl_error_set(err, EINVAL,
                                "spec.traffic[%zu].tag: \"%s-%s\" would be longer than 63 "
                                "characters",
                                i, tag, name);
    }
    fill_defaults(svc, ns_default);
    /* What only resolving the template shows (variable references that
     * expand past their bounds) fails the apply, not the revision later. */
    sl_autofree char *rev_name = tname ? xstrdup(tname) : xasprintf("%s-00001", name);
    json_t *rev = sl_revision_build(svc, rev_name, 1);
    sl_revision_cfg_t *cfg = NULL;
    int rc2 = sl_revision_cfg_from_json(rev, &cfg, err);
    json_decref(rev);
    sl_revision_cfg_free(cfg);
    if (rc2 < 0)
        return sl_error_wrap(err, "spec.template.spec.containers[0]");
    return 0;
}

char *sl_service_template_key(const json_t *svc)
{
    json_t *tmpl = sl_json_path(svc, "spec.template");
    return tmpl ? json_dumps(tmpl, JSON_SORT_KEYS | JSON_COMPACT) : xstrdup("");
}

json_t *sl_revision_build(const json_t *svc, const char *rev_name, long generation)
{
    const char *name = sl_json_str(svc, "metadata.name");
    const char *ns = sl_json_str(svc, "metadata.namespace");
    json_t *tmpl = sl_json_path(svc, "spec.template");
    json_t *tmd = json_object_get(tmpl, "metadata");
    json_t *labels = json_object_get(tmd, "labels");
    labels = labels ? json_deep_copy(labels) : json_object();
    json_object_set_new(labels, SL_LABEL_SERVICE, json_string(name));
    json_object_set_new(labels, SL_LABEL_CONFIGURATION, json_string(name));
    json_object_set_new(labels, "serving.knative.dev/configurationGeneration",
                        json_sprintf("%ld", generation));
    json_t *ann = json_object_get(tmd, "annotations");
    json_t *rev =
        json_pack("{s:s,s:s,s:{s:s,s:s,s:o,s:o,s:s},s:O}", "apiVersion", SL_API_VERSION, "kind",
                  "Revision", "metadata", "name", rev_name, "namespace", ns, "labels", labels,
                  "annotations", ann ? json_deep_copy(ann) : json_object(), "creationTimestamp",
                  sl_rfc3339_now(), "spec", json_object_get(tmpl, "spec"));
    json_t *spec = json_deep_copy(json_object_get(rev, "spec"));
    json_object_set_new(rev, "spec", spec);
    return rev;
}

static char **str_array(const json_t *arr, size_t *n)
{
    *n = json_array_size(arr);
    char **out = xcalloc(*n + 1, sizeof(char *));
    for (size_t i = 0; i < *n; i++)
        out[i] = xstrdup(json_string_value(json_array_get(arr, i)));
    return out;
}

static void str_array_free(char **a, size_t n)
{
    for (size_t i = 0; a && i < n; i++)
        free(a[i]);
    free(a);
}

static int seconds_ms(const json_t *probe, const char *key)
{
    json_t *v = json_object_get(probe, key);
    return v ? (int)json_integer_value(v) * 1000 : 0;
}

/* A validated probe object → runtime settings; numeric ports only (a named
 * port means the container's port). */
static void probe_from_json(const json_t *p, int port, sl_probe_cfg_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!p)
        return;
    json_t *h = json_object_get(p, "httpGet"), *t = json_object_get(p, "tcpSocket"),
           *e = json_object_get(p, "exec"), *g = json_object_get(p, "grpc");
    json_t *pp = h   ? json_object_get(h, "port")
                 : t ? json_object_get(t, "port")
                 : g ? json_object_get(g, "port")
                     : NULL;
    out->port = json_is_integer(pp) ? (int)json_integer_value(pp) : port;
    if (h) {
        out->kind = 2;
        const char *path = sl_json_str(h, "path");
        out->path = xstrdup(path ? path : "/");
        size_t i;
        json_t *hh;
        json_array_foreach(json_object_get(h, "httpHeaders"), i, hh)
        {
            char *lines = xasprintf("%s%s: %s\r\n", out->headers ? out->headers : "",
                                    sl_json_str(hh, "name"), sl_json_str(hh, "value"));
            free(out->headers);
            out->headers = lines;
        }
    } else if (e) {
        out->kind = 3;
        out->exec = str_array(json_object_get(e, "command"), &out->n_exec);
    } else if (g) {
        out->kind = 4;
        const char *svc = sl_json_str(g, "service");
        out->path = xstrdup(svc ? svc : ""); /* the service asked about */
    } else {
        out->kind = 1;
    }
    out->initial_delay_ms = seconds_ms(p, "initialDelaySeconds");
    out->period_ms = seconds_ms(p, "periodSeconds");
    out->timeout_ms = seconds_ms(p, "timeoutSeconds");
    out->success_threshold = (int)json_integer_value(json_object_get(p, "successThreshold"));
    out->failure_threshold = (int)json_integer_value(json_object_get(p, "failureThreshold"));
}

/* The value of NAME among "K=V" strings (the last one wins); NULL if none. */
static const char *env_lookup(char *const *env, size_t n, const char *name, size_t len)
{
    for (size_t i = n; i-- > 0;)
        if (strncmp(env[i], name, len) == 0 && env[i][len] == '=')
            return env[i] + len + 1;
    return NULL;
}

/* What a container's variable references may expand to: a string at most
 * what execve takes (MAX_ARG_STRLEN), all of them together 1 MiB. Values
 * referring to earlier ones double at each step, so the bound is needed. */
#define EXPAND_ONE_MAX   (128u * 1024)
#define EXPAND_TOTAL_MAX (1024u * 1024)

/*
 * Kubernetes' variable references (expansion.go): $(NAME) becomes NAME's
 * value from env, $$ becomes $, and anything else — an unknown name, an
 * unclosed "$(" — stays as written. NULL when the result would pass
 * EXPAND_ONE_MAX or what is left of *budget (which it spends). Caller frees.
 */
static char *k8s_expand(const char *s, char *const *env, size_t n_env, size_t *budget)
{
    size_t cap = strlen(s) + 1, len = 0;
    char *out = xmalloc(cap);
    for (const char *p = s; *p;) {
        const char *val = p;
        size_t take = 1, vlen = 1;
        if (p[0] == '$' && p[1] == '$') {
            val = "$";
            take = 2;
        } else if (p[0] == '$' && p[1] == '(') {
            const char *end = strchr(p + 2, ')');
            const char *v = end ? env_lookup(env, n_env, p + 2, (size_t)(end - p - 2)) : NULL;
            if (end)
                take = vlen = (size_t)(end - p) + 1; /* unknown: as written, whole */
            if (v) {
                val = v;
                vlen = strlen(v);
            }
        }
        if (len + vlen >= EXPAND_ONE_MAX || len + vlen >= *budget) {
            free(out);
            return NULL;
        }
        if (len + vlen + 1 > cap) {
            cap = (len + vlen + 1) * 2;
            out = xrealloc(out, cap);
        }
        memcpy(out + len, val, vlen);
        len += vlen;
        p += take;
    }
    out[len] = '\0';
    *budget -= len;
    return out;
}

/* Expand v[0..n) in place; -1 with err naming field[i] when too large. */
static int expand_all(char **v, size_t n, char *const *env, size_t n_env, size_t *budget,
                      const char *field, sl_error_t *err)
{
    for (size_t i = 0; i < n; i++) {
        char *x = k8s_expand(v[i], env, n_env, budget);
        if (!x)
            return sl_error_set(err, E2BIG,
                                "%s[%zu]: its variable references expand to more than %u KiB "
                                "(%u KiB for all of a container's together)",
                                field, i, EXPAND_ONE_MAX / 1024, EXPAND_TOTAL_MAX / 1024);
        free(v[i]);
        v[i] = x;
    }
    return 0;
}

/* What a container reads from Secrets and ConfigMaps. */
static bool has_refs(const json_t *spec)
{
    json_t *c = json_array_get(json_object_get(spec, "containers"), 0);
    if (json_array_size(json_object_get(c, "envFrom")))
        return true;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(c, "env"), i, e)
    {
        if (json_object_get(e, "valueFrom"))
            return true;
    }
    json_array_foreach(json_object_get(spec, "volumes"), i, e)
    {
        if (!json_object_get(e, "emptyDir"))
            return true;
    }
    return false;
}

/* A value an environment variable can hold: no NUL, at most what execve
 * takes for one string. */
static int env_value_ok(const json_t *v, const char *what, const char *key, sl_data_kind_t kind,
                        const char *obj, sl_error_t *err)
{
    size_t len = json_string_length(v);
    if (memchr(json_string_value(v), '\0', len))
        return sl_error_set(err, EINVAL,
                            "%s: key \"%s\" of %s \"%s\" holds a NUL byte, which an environment "
                            "variable cannot; mount it as a volume instead",
                            what, key, sl_data_singular(kind), obj);
    json_t *text = json_stringn(json_string_value(v), len);
    json_decref(text);
    if (!text)
        return sl_error_set(err, EINVAL,
                            "%s: key \"%s\" of %s \"%s\" is not UTF-8 text, which an "
                            "environment variable must be here; mount it as a volume instead",
                            what, key, sl_data_singular(kind), obj);
    if (len >= EXPAND_ONE_MAX)
        return sl_error_set(err, E2BIG,
                            "%s: key \"%s\" of %s \"%s\" is %zu bytes, more than the %u KiB an "
                            "environment variable may hold; mount it as a volume instead",
                            what, key, sl_data_singular(kind), obj, len, EXPAND_ONE_MAX / 1024);
    return 0;
}

/* lookup's answer: 1 and *vals when the object exists, 0 when it does not,
 * -1 (err set) when it could not be read. */
static int find_values(sl_data_lookup_fn lookup, void *ctx, sl_data_kind_t kind, const char *name,
                       json_t **vals, sl_error_t *err)
{
    *vals = NULL;
    int rc = lookup(ctx, kind, name, vals, err);
    return rc == 0 ? 1 : rc == -ENOENT ? 0 : -1;
}

/* envFrom, in order: every key of each source whose prefixed name is a
 * valid variable name (Kubernetes skips the others). */
static int env_from_sources(const json_t *c, sl_data_lookup_fn lookup, void *ctx, sl_strv_t *env,
                            sl_error_t *err)
{
    size_t i;
    json_t *src;
    json_array_foreach(json_object_get(c, "envFrom"), i, src)
    {
        json_t *ref = json_object_get(src, "secretRef");
        sl_data_kind_t kind = ref ? SL_DATA_SECRET : SL_DATA_CONFIGMAP;
        if (!ref)
            ref = json_object_get(src, "configMapRef");
        const char *name = sl_json_str(ref, "name");
        const char *prefix = sl_json_str(src, "prefix");
        json_t *vals = NULL;
        int found = find_values(lookup, ctx, kind, name, &vals, err);
        if (found < 0)
            return sl_error_wrap(err, "envFrom[%zu]", i);
        if (!found) {
            if (json_is_true(json_object_get(ref, "optional")))
                continue;
            return sl_error_set(err, ENOENT, "envFrom[%zu]: %s \"%s\" not found", i,
                                sl_data_singular(kind), name);
        }
        const char *k;
        json_t *v;
        int rc = 0;
        json_object_foreach(vals, k, v)
        {
            sl_autofree char *var = xasprintf("%s%s", prefix ? prefix : "", k);
            /* the contract's variables are the runtime's, whatever a source says */
            if (!is_env_name(var) || is_reserved_env(var))
                continue;
            sl_autofree char *what = xasprintf("envFrom[%zu] (%s)", i, var);
            if ((rc = env_value_ok(v, what, k, kind, name, err)) < 0)
                break;
            sl_strv_push(env, xasprintf("%s=%s", var, json_string_value(v)));
        }
        json_decref(vals);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* env[i]'s valueFrom: its value (new string), or NULL with *absent set when
 * an optional reference finds nothing. */
static char *env_value_from(const json_t *vf, const char *what, sl_data_lookup_fn lookup, void *ctx,
                            bool *absent, sl_error_t *err)
{
    json_t *ref = json_object_get(vf, "secretKeyRef");
    sl_data_kind_t kind = ref ? SL_DATA_SECRET : SL_DATA_CONFIGMAP;
    if (!ref)
        ref = json_object_get(vf, "configMapKeyRef");
    const char *name = sl_json_str(ref, "name"), *key = sl_json_str(ref, "key");
    bool optional = json_is_true(json_object_get(ref, "optional"));
    *absent = false;
    json_t *vals = NULL;
    if (find_values(lookup, ctx, kind, name, &vals, err) < 0) {
        sl_error_wrap(err, "%s", what);
        return NULL;
    }
    json_t *v = json_object_get(vals, key);
    char *out = NULL;
    if (!vals && !optional)
        sl_error_set(err, ENOENT, "%s: %s \"%s\" not found", what, sl_data_singular(kind), name);
    else if (vals && !v && !optional)
        sl_error_set(err, ENOENT, "%s: key \"%s\" not found in %s \"%s\"", what, key,
                     sl_data_singular(kind), name);
    else if (!v)
        *absent = true;
    else if (env_value_ok(v, what, key, kind, name, err) == 0)
        out = xstrdup(json_string_value(v));
    json_decref(vals);
    return out;
}

static const char *const PROBE_KEYS[] = {"readinessProbe", "livenessProbe", "startupProbe"};

/*
 * The container's environment, command, args and exec probe commands, as
 * Kubernetes makes them: envFrom's variables, then env's in order (a later
 * one replaces an earlier), a value's $(NAME) references expanded against
 * the variables before it; then command, args and probe commands against
 * all of them and the runtime contract's, as Knative puts those in the
 * container's env. Without lookup, what reads Secrets and ConfigMaps is
 * left out (it is resolved when an instance starts).
 */
static int build_process(const json_t *c, const sl_revision_cfg_t *cfg, sl_data_lookup_fn lookup,
                         void *ctx, sl_revision_process_t *out, sl_error_t *err)
{
    sl_strv_t env = {0};
    size_t budget = EXPAND_TOTAL_MAX;
    int rc = lookup ? env_from_sources(c, lookup, ctx, &env, err) : 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(c, "env"), i, e)
    {
        if (rc < 0)
            break;
        const char *name = sl_json_str(e, "name");
        json_t *vf = json_object_get(e, "valueFrom");
        sl_autofree char *what = xasprintf("env[%zu] (%s)", i, name);
        char *x = NULL;
        if (vf) {
            bool absent = false;
            if (!lookup)
                continue;
            x = env_value_from(vf, what, lookup, ctx, &absent, err);
            if (!x && !absent)
                rc = -1;
            if (!x)
                continue;
        } else {
            const char *v = sl_json_str(e, "value");
            x = k8s_expand(v ? v : "", env.v, env.n, &budget);
            if (!x) {
                rc = sl_error_set(err, E2BIG,
                                  "%s: its variable references expand to more than the %u KiB a "
                                  "value may have (%u KiB for all together)",
                                  what, EXPAND_ONE_MAX / 1024, EXPAND_TOTAL_MAX / 1024);
                break;
            }
        }
        sl_strv_push(&env, xasprintf("%s=%s", name, x));
        free(x);
    }
    out->env = env.v ? env.v : xcalloc(1, sizeof(char *));
    out->n_env = env.n;
    out->command = str_array(json_object_get(c, "command"), &out->n_command);
    out->args = str_array(json_object_get(c, "args"), &out->n_args);
    for (size_t k = 0; k < SL_ARRAY_LEN(PROBE_KEYS); k++)
        out->exec[k] = str_array(sl_json_path(json_object_get(c, PROBE_KEYS[k]), "exec.command"),
                                 &out->n_exec[k]);
    if (rc < 0)
        return -1;
    char *contract[SL_OCI_CONTRACT_VARS];
    sl_oci_contract_env(&(sl_oci_contract_t){cfg->port, cfg->service, cfg->service, cfg->name},
                        contract);
    size_t n_all = out->n_env + SL_ARRAY_LEN(contract);
    char **all = xcalloc(n_all, sizeof(char *));
    memcpy(all, out->env, out->n_env * sizeof(char *));
    memcpy(all + out->n_env, contract, sizeof(contract));
    rc = expand_all(out->command, out->n_command, all, n_all, &budget, "command", err);
    if (rc == 0)
        rc = expand_all(out->args, out->n_args, all, n_all, &budget, "args", err);
    for (size_t k = 0; rc == 0 && k < SL_ARRAY_LEN(PROBE_KEYS); k++)
        rc = expand_all(out->exec[k], out->n_exec[k], all, n_all, &budget, "exec probe command",
                        err);
    free(all);
    for (size_t k = 0; k < SL_ARRAY_LEN(contract); k++)
        free(contract[k]);
    return rc;
}

/* A secret or configMap volume's files: its items, or every key. */
static int volume_files(const json_t *vol, sl_data_lookup_fn lookup, void *ctx,
                        sl_oci_volume_t *out, sl_error_t *err)
{
    json_t *src = json_object_get(vol, "secret");
    sl_data_kind_t kind = src ? SL_DATA_SECRET : SL_DATA_CONFIGMAP;
    if (!src)
        src = json_object_get(vol, "configMap");
    const char *name = sl_json_str(src, kind == SL_DATA_SECRET ? "secretName" : "name");
    const char *vname = sl_json_str(vol, "name");
    bool optional = json_is_true(json_object_get(src, "optional"));
    json_t *mode = json_object_get(src, "defaultMode");
    unsigned dmode = mode ? (unsigned)json_integer_value(mode) : 0644;
    out->has_files = true;
    json_t *vals = NULL;
    int found = find_values(lookup, ctx, kind, name, &vals, err);
    if (found < 0)
        return sl_error_wrap(err, "volume \"%s\"", vname);
    if (!found)
        return optional ? 0
                        : sl_error_set(err, ENOENT, "volume \"%s\": %s \"%s\" not found", vname,
                                       sl_data_singular(kind), name);
    json_t *items = json_object_get(src, "items");
    if (!json_array_size(items))
        items = NULL; /* none listed: every key, as the kubelet does */
    size_t n = items ? json_array_size(items) : json_object_size(vals);
    out->files = n ? xcalloc(n, sizeof(*out->files)) : NULL;
    int rc = 0;
    const char *k;
    json_t *v;
    if (!items) {
        json_object_foreach(vals, k, v)
        {
            out->files[out->n_files++] =
                (sl_oci_file_t){xstrdup(k), xmemdup(json_string_value(v), json_string_length(v)),
                                json_string_length(v), dmode};
        }
    }
    for (size_t i = 0; items && i < n && rc == 0; i++) {
        json_t *it = json_array_get(items, i);
        k = sl_json_str(it, "key");
        v = json_object_get(vals, k);
        if (!v) {
            if (!optional)
                rc = sl_error_set(err, ENOENT, "volume \"%s\": key \"%s\" not found in %s \"%s\"",
                                  vname, k, sl_data_singular(kind), name);
            continue;
        }
        json_t *m = json_object_get(it, "mode");
        out->files[out->n_files++] = (sl_oci_file_t){
            xstrdup(sl_json_str(it, "path")), xmemdup(json_string_value(v), json_string_length(v)),
            json_string_length(v), m ? (unsigned)json_integer_value(m) : dmode};
    }
    json_decref(vals);
    return rc;
}

int sl_revision_resolve(const sl_revision_cfg_t *cfg, sl_data_lookup_fn lookup, void *ctx,
                        sl_revision_process_t *out, sl_error_t *err)
{
    memset(out, 0, sizeof(*out));
    json_t *spec = cfg->spec;
    json_t *c = json_array_get(json_object_get(spec, "containers"), 0);
    if (build_process(c, cfg, lookup, ctx, out, err) < 0)
        return -1;
    json_t *mounts = json_object_get(c, "volumeMounts");
    json_t *vols = json_object_get(spec, "volumes");
    out->volumes = sl_oci_volumes_dup(cfg->volumes, cfg->n_volumes);
    out->n_volumes = cfg->n_volumes;
    for (size_t i = 0; i < cfg->n_volumes; i++) {
        const char *name = json_string_value(json_object_get(json_array_get(mounts, i), "name"));
        json_t *vol = element_with(vols, "name", name, SIZE_MAX);
        if (!json_object_get(vol, "emptyDir") &&
            volume_files(vol, lookup, ctx, &out->volumes[i], err) < 0)
            return -1;
    }
    return 0;
}

void sl_revision_process_free(sl_revision_process_t *p)
{
    str_array_free(p->env, p->n_env);
    str_array_free(p->command, p->n_command);
    str_array_free(p->args, p->n_args);
    for (size_t k = 0; k < SL_ARRAY_LEN(p->exec); k++)
        str_array_free(p->exec[k], p->n_exec[k]);
    sl_oci_volumes_free(p->volumes, p->n_volumes);
    memset(p, 0, sizeof(*p));
}

bool sl_revision_reads(const sl_revision_cfg_t *cfg, sl_data_kind_t kind, const char *name,
                       bool volumes_only)
{
    if (!cfg->has_refs)
        return false;
    const char *ref_key = kind == SL_DATA_SECRET ? "secretKeyRef" : "configMapKeyRef";
    const char *src_key = kind == SL_DATA_SECRET ? "secretRef" : "configMapRef";
    json_t *c = volumes_only ? NULL : json_array_get(json_object_get(cfg->spec, "containers"), 0);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(c, "env"), i, e)
    {
        const char *n =
            sl_json_str(json_object_get(json_object_get(e, "valueFrom"), ref_key), "name");
        if (n && !strcmp(n, name))
            return true;
    }
    json_array_foreach(json_object_get(c, "envFrom"), i, e)
    {
        const char *n = sl_json_str(json_object_get(e, src_key), "name");
        if (n && !strcmp(n, name))
            return true;
    }
    json_array_foreach(json_object_get(cfg->spec, "volumes"), i, e)
    {
        const char *n = kind == SL_DATA_SECRET ? sl_json_str(e, "secret.secretName")
                                               : sl_json_str(e, "configMap.name");
        if (n && !strcmp(n, name))
            return true;
    }
    return false;
}

static void probe_free(sl_probe_cfg_t *p)
{
    free(p->path);
    free(p->headers);
    str_array_free(p->exec, p->n_exec);
}

int sl_revision_cfg_from_json(const json_t *rev, sl_revision_cfg_t **out, sl_error_t *err)
{
    json_t *spec = json_object_get(rev, "spec");
    json_t *c = json_array_get(json_object_get(spec, "containers"), 0);
    if (!c)
        return sl_error_set(err, EINVAL, "revision %s has no container",
                            sl_json_str(rev, "metadata.name"));
    sl_revision_cfg_t *cfg = xcalloc(1, sizeof(*cfg));
    cfg->namespace_ = xstrdup(sl_json_str(rev, "metadata.namespace"));
    cfg->name = xstrdup(sl_json_str(rev, "metadata.name"));
    /* Label keys contain dots, so they are looked up directly, not by path. */
    json_t *labels = sl_json_path(rev, "metadata.labels");
    cfg->service = xstrdup(json_string_value(json_object_get(labels, SL_LABEL_SERVICE)));
    cfg->image_ref = xstrdup(json_string_value(json_object_get(c, "image")));
    cfg->image_id = xstrdup(sl_json_str(rev, "status.imageDigest"));
    json_t *port0 = json_array_get(json_object_get(c, "ports"), 0);
    json_t *port = sl_json_path(port0, "containerPort");
    cfg->port = port ? (int)json_integer_value(port) : SL_DEFAULT_PORT;
    const char *pname = json_string_value(json_object_get(port0, "name"));
    cfg->h2c = pname && !strcmp(pname, "h2c");
    /* Exec probes' commands are expanded too (Kubernetes' prober does). */
    probe_from_json(json_object_get(c, "readinessProbe"), cfg->port, &cfg->readiness);
    probe_from_json(json_object_get(c, "livenessProbe"), cfg->port, &cfg->liveness);
    probe_from_json(json_object_get(c, "startupProbe"), cfg->port, &cfg->startup);
    sl_revision_process_t proc = {0};
    if (build_process(c, cfg, NULL, NULL, &proc, err) < 0) {
        sl_revision_process_free(&proc);
        sl_revision_cfg_free(cfg);
        return -1;
    }
    cfg->env = sl_steal_ptr(&proc.env);
    cfg->n_env = proc.n_env;
    cfg->command = sl_steal_ptr(&proc.command);
    cfg->n_command = proc.n_command;
    cfg->args = sl_steal_ptr(&proc.args);
    cfg->n_args = proc.n_args;
    sl_probe_cfg_t *probes[] = {&cfg->readiness, &cfg->liveness, &cfg->startup};
    for (size_t k = 0; k < SL_ARRAY_LEN(probes); k++) {
        str_array_free(probes[k]->exec, probes[k]->n_exec);
        probes[k]->exec = sl_steal_ptr(&proc.exec[k]);
        probes[k]->n_exec = proc.n_exec[k];
    }
    sl_revision_process_free(&proc);
    cfg->has_refs = has_refs(spec);
    if (cfg->has_refs)
        cfg->spec = json_deep_copy(spec);
    json_t *res = json_object_get(c, "resources");
    cfg->memory_limit = quantity(res, "limits", "memory", false);
    cfg->cpu_millis = quantity(res, "limits", "cpu", true);
    cfg->memory_request = quantity(res, "requests", "memory", false);
    cfg->cpu_request_millis = quantity(res, "requests", "cpu", true);
    if (!cfg->memory_request)
        cfg->memory_request = cfg->memory_limit;
    if (!cfg->cpu_request_millis)
        cfg->cpu_request_millis = cfg->cpu_millis;
    cfg->ephemeral_storage = quantity(res, "limits", "ephemeral-storage", false);
    json_t *cc = json_object_get(spec, "containerConcurrency");
    cfg->concurrency = cc ? (int)json_integer_value(cc) : SL_DEFAULT_CONCURRENCY;
    json_t *to = json_object_get(spec, "timeoutSeconds");
    cfg->timeout_s = to ? (int)json_integer_value(to) : SL_DEFAULT_TIMEOUT_S;
    cfg->response_start_s =
        (int)json_integer_value(json_object_get(spec, "responseStartTimeoutSeconds"));
    cfg->idle_timeout_s = (int)json_integer_value(json_object_get(spec, "idleTimeoutSeconds"));
    cfg->runtime_class = xstrdup(json_string_value(json_object_get(spec, "runtimeClassName")));
    cfg->working_dir = xstrdup(json_string_value(json_object_get(c, "workingDir")));
    json_t *sc = json_object_get(c, "securityContext");
    json_t *uid = json_object_get(sc, "runAsUser"), *gid = json_object_get(sc, "runAsGroup");
    cfg->run_as_user = uid ? (int64_t)json_integer_value(uid) : -1;
    cfg->run_as_group = gid ? (int64_t)json_integer_value(gid) : -1;
    cfg->run_as_non_root = json_is_true(json_object_get(sc, "runAsNonRoot"));
    cfg->readonly_rootfs = json_is_true(json_object_get(sc, "readOnlyRootFilesystem"));
    json_t *caps = json_object_get(sc, "capabilities");
    if (caps) {
        size_t n_drop, n_add;
        char **drop = str_array(json_object_get(caps, "drop"), &n_drop);
        char **add = str_array(json_object_get(caps, "add"), &n_add);
        cfg->caps = sl_oci_caps_apply(drop, n_drop, add, n_add);
        str_array_free(drop, n_drop);
        str_array_free(add, n_add);
    }
    json_t *mounts = json_object_get(c, "volumeMounts");
    json_t *vols = json_object_get(spec, "volumes");
    cfg->n_volumes = json_array_size(mounts);
    cfg->volumes = cfg->n_volumes ? xcalloc(cfg->n_volumes, sizeof(*cfg->volumes)) : NULL;
    for (size_t i = 0; i < cfg->n_volumes; i++) {
        json_t *m = json_array_get(mounts, i);
        const char *name = json_string_value(json_object_get(m, "name"));
        cfg->volumes[i].path = xstrdup(json_string_value(json_object_get(m, "mountPath")));
        cfg->volumes[i].readonly = json_is_true(json_object_get(m, "readOnly"));
        cfg->volumes[i].size =
            quantity(element_with(vols, "name", name, SIZE_MAX), "emptyDir", "sizeLimit", false);
    }
    as_values_t v = {.min = -1, .max = -1, .initial = -1, .activation = -1};
    json_t *ann = sl_json_path(rev, "metadata.annotations");
    if (ann && read_autoscaling(ann, "metadata.annotations", false, &v, err) < 0) {
        sl_revision_cfg_free(cfg);
        return -1;
    }
    cfg->min_scale = (int)v.min;
    cfg->max_scale = (int)v.max;
    cfg->initial_scale = (int)v.initial;
    cfg->activation_scale = (int)v.activation;
    cfg->metric_rps = v.rps;
    const char *aff = json_string_value(json_object_get(ann, SL_SESSION_AFFINITY_KEY));
    cfg->session_affinity = aff && !strcmp(aff, "true");
    const char *thr = json_string_value(json_object_get(ann, SL_CPU_THROTTLING_KEY));
    cfg->cpu_always = thr && !strcmp(thr, "false");
    const char *egress = json_string_value(json_object_get(ann, SL_EGRESS_KEY));
    cfg->egress = egress ? !strcmp(egress, "true") : -1;
    if (ann)
        progress_deadline(ann, &cfg->progress_deadline_ns);
    cfg->target = v.target;
    cfg->target_utilization_pct = v.util;
    cfg->panic_window_pct = v.panic_pct;
    cfg->panic_threshold_pct = v.panic_threshold;
    cfg->window_ns = v.window;
    cfg->retention_ns = v.retention;
    cfg->scale_down_delay_ns = v.scale_down_delay;
    *out = cfg;
    return 0;
}

void sl_revision_cfg_free(sl_revision_cfg_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->namespace_);
    free(cfg->service);
    free(cfg->name);
    free(cfg->image_ref);
    free(cfg->image_id);
    str_array_free(cfg->env, cfg->n_env);
    str_array_free(cfg->command, cfg->n_command);
    str_array_free(cfg->args, cfg->n_args);
    free(cfg->runtime_class);
    free(cfg->working_dir);
    sl_strv_free(cfg->caps);
    sl_oci_volumes_free(cfg->volumes, cfg->n_volumes);
    json_decref(cfg->spec);
    probe_free(&cfg->readiness);
    probe_free(&cfg->liveness);
    probe_free(&cfg->startup);
    free(cfg);
}
