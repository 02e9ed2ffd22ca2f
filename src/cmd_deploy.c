/*
 * cmd_deploy.c — `sluice deploy` (Cloud Run style: flags in, URL out) and
 * `sluice apply -f` (Knative manifests in). Deploy updates only what its
 * flags name, like `gcloud run deploy`, then waits until the new revision
 * is Ready or has failed, and prints why when it fails. Apply reads every
 * -f file, checks every object (here, then by the daemon's dry run) and
 * applies them in order only when all pass, as one change as far as it can
 * be checked before anything is stored.
 */
#include "cli.h"
#include "manifest.h"
#include "service.h"

#include <getopt.h>
#include <stdio.h>
#include <time.h>

#define MANIFEST_MAX (16u << 20)

static void deploy_usage(FILE *f)
{
    fprintf(
        f,
        "Usage: sluice deploy NAME --image REF [OPTIONS]\n\n"
        "Create or update a service and wait until its new revision is Ready.\n"
        "Prints the service URL on stdout.\n\n"
        "  --image REF          oci:DIR[:TAG], docker-archive:FILE or dir:ROOTFS\n"
        "  --port N             port the container listens on (default 8080)\n"
        "  --[no-]use-http2     the container speaks HTTP/2 without TLS (h2c), as gRPC\n"
        "                       servers do: its port is named \"h2c\" (default: HTTP/1.1)\n"
        "  --env K=V            environment variable (repeatable)\n"
        "  --secret VAR=NAME:KEY   a variable from key KEY of Secret NAME (repeatable)\n"
        "  --secret /PATH=NAME     Secret NAME's keys as files under PATH, read-only\n"
        "  --configmap VAR=NAME:KEY, --configmap /PATH=NAME   the same from a ConfigMap\n"
        "  --egress on|off      outbound connections for its instances\n"
        "                       (sluice.dev/egress; default: serve --egress)\n"
        "  --[no-]cpu-throttling CPU only while requests are in flight (the default), or\n"
        "                       all the time (run.googleapis.com/cpu-throttling)\n"
        "  --concurrency N      requests per instance at once (0 = unlimited; default 80)\n"
        "  --min N, --max N     autoscaling bounds (autoscaling.knative.dev/min-scale, max-scale)\n"
        "  --target N           concurrency (or requests per second, with --metric rps)\n"
        "                       per instance the autoscaler aims at\n"
        "                       (autoscaling.knative.dev/target)\n"
        "  --metric M           what the autoscaler scales on: concurrency (default) or rps\n"
        "                       (autoscaling.knative.dev/metric)\n"
        "  --memory Q           memory limit, e.g. 256Mi\n"
        "  --cpu Q              cpu limit, e.g. 1 or 500m\n"
        "  --timeout S          request timeout in seconds (1..3600, default 300)\n"
        "  --runtime-class NAME runtime class\n"
        "  --no-traffic         keep traffic on the revision serving now\n"
        "  --tag T              serve the new revision at http://T-NAME.DOMAIN:PORT\n"
        "                       (the tag stays on it; a later deploy does not move it)\n"
        "  --no-wait            return once the change is stored\n"
        "  --wait-timeout S     give up waiting after S seconds (default 300)\n"
        "  -n NS, --state-dir DIR, -o json|yaml\n");
}

static json_t *container_of(json_t *svc)
{
    return json_array_get(sl_json_path(svc, "spec.template.spec.containers"), 0);
}

/* The container's first port (what sluice serves), made when missing. */
static json_t *port0(json_t *c)
{
    json_t *ports = json_object_get(c, "ports");
    if (!json_is_array(ports)) {
        ports = json_array();
        json_object_set_new(c, "ports", ports);
    }
    if (!json_is_object(json_array_get(ports, 0))) {
        json_array_clear(ports);
        json_array_append_new(ports, json_object());
    }
    return json_array_get(ports, 0);
}

static json_t *new_service(const char *name, const char *ns)
{
    return json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:{s:{},s:{s:[{}]}}}}", "apiVersion", SL_API_VERSION,
                     "kind", "Service", "metadata", "name", name, "namespace", ns, "spec",
                     "template", "metadata", "spec", "containers");
}

/* Put entry (a new reference) in the container's env, in place of the
 * variable of its name if there is one. */
static void put_env(json_t *c, json_t *entry)
{
    json_t *env = json_object_get(c, "env");
    if (!json_is_array(env)) {
        env = json_array();
        json_object_set_new(c, "env", env);
    }
    const char *key = sl_json_str(entry, "name");
    size_t i;
    json_t *e;
    json_array_foreach(env, i, e)
    {
        if (!strcmp(sl_json_str(e, "name") ? sl_json_str(e, "name") : "", key)) {
            json_array_set_new(env, i, entry);
            return;
        }
    }
    json_array_append_new(env, entry);
}

static int set_env(json_t *c, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv)
        return sl_cli_usage("--env: expected KEY=VALUE, got '%s'", kv);
    sl_autofree char *key = xstrndup(kv, (size_t)(eq - kv));
    put_env(c, json_pack("{s:s,s:s}", "name", key, "value", eq + 1));
    return 0;
}

/* A volume name for a mount of object `name`, unique in vols. */
static char *volume_name(const json_t *vols, sl_data_kind_t kind, const char *name)
{
    char base[48];
    snprintf(base, sizeof(base), "%s-%s", sl_data_singular(kind), name);
    for (char *p = base; *p; p++)
        if (*p == '.')
            *p = '-';
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '-')
        base[--n] = '\0';
    for (int k = 1;; k++) {
        char *v = k == 1 ? xstrdup(base) : xasprintf("%s-%d", base, k);
        bool taken = false;
        size_t i;
        json_t *e;
        json_array_foreach(vols, i, e)
        {
            taken |= !strcmp(sl_json_str(e, "name") ? sl_json_str(e, "name") : "", v);
        }
        if (!taken)
            return v;
        free(v);
    }
}

/*
 * --secret / --configmap, as gcloud run deploy --set-secrets: VAR=NAME:KEY
 * sets a variable from a key; /PATH=NAME mounts every key as a file under
 * PATH (read-only), in place of what was mounted there.
 */
static int set_ref(json_t *svc, sl_data_kind_t kind, const char *arg)
{
    const char *flag = kind == SL_DATA_SECRET ? "--secret" : "--configmap";
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1])
        return sl_cli_usage("%s: expected VAR=NAME:KEY or /PATH=NAME, got '%s'", flag, arg);
    json_t *c = container_of(svc);
    sl_autofree char *lhs = xstrndup(arg, (size_t)(eq - arg));
    const char *rhs = eq + 1;
    if (lhs[0] != '/') {
        const char *colon = strchr(rhs, ':');
        if (!colon || colon == rhs || !colon[1])
            return sl_cli_usage("%s: expected VAR=NAME:KEY, got '%s'", flag, arg);
        sl_autofree char *obj = xstrndup(rhs, (size_t)(colon - rhs));
        put_env(c, json_pack("{s:s,s:{s:{s:s,s:s}}}", "name", lhs, "valueFrom",
                             kind == SL_DATA_SECRET ? "secretKeyRef" : "configMapKeyRef", "name",
                             obj, "key", colon + 1));
        return 0;
    }
    if (strchr(rhs, ':'))
        return sl_cli_usage("%s: a mount takes every key: expected /PATH=NAME, got '%s'", flag,
                            arg);
    json_t *pod = sl_json_path(svc, "spec.template.spec");
    json_t *vols = json_object_get(pod, "volumes");
    if (!json_is_array(vols)) {
        vols = json_array();
        json_object_set_new(pod, "volumes", vols);
    }
    json_t *mounts = json_object_get(c, "volumeMounts");
    if (!json_is_array(mounts)) {
        mounts = json_array();
        json_object_set_new(c, "volumeMounts", mounts);
    }
    json_t *source = kind == SL_DATA_SECRET ? json_pack("{s:s}", "secretName", rhs)
                                            : json_pack("{s:s}", "name", rhs);
    const char *key = kind == SL_DATA_SECRET ? "secret" : "configMap";
    size_t i;
    json_t *m;
    json_array_foreach(mounts, i, m)
    {
        if (strcmp(sl_json_str(m, "mountPath") ? sl_json_str(m, "mountPath") : "", lhs))
            continue;
        /* mounted there already: that volume now shows this object */
        const char *vname = sl_json_str(m, "name");
        size_t k;
        json_t *v;
        json_array_foreach(vols, k, v)
        {
            if (vname && !strcmp(sl_json_str(v, "name") ? sl_json_str(v, "name") : "", vname))
                json_array_set_new(vols, k, json_pack("{s:s,s:o}", "name", vname, key, source));
        }
        json_object_set_new(m, "readOnly", json_true());
        return 0;
    }
    sl_autofree char *vname = volume_name(vols, kind, rhs);
    json_array_append_new(vols, json_pack("{s:s,s:o}", "name", vname, key, source));
    json_array_append_new(
        mounts, json_pack("{s:s,s:s,s:b}", "name", vname, "mountPath", lhs, "readOnly", 1));
    return 0;
}

static int set_int(json_t *obj, const char *key, const char *flag, const char *arg, int64_t lo,
                   int64_t hi)
{
    int64_t v;
    if (sl_parse_int64(arg, lo, hi, &v) < 0)
        return sl_cli_usage("%s: must be an integer %lld..%lld, got '%s'", flag, (long long)lo,
                            (long long)hi, arg);
    json_object_set_new(obj, key, json_integer(v));
    return 0;
}

static void set_annotation(json_t *svc, const char *key, const char *val)
{
    json_t *md = sl_json_ensure_obj(sl_json_path(svc, "spec.template"), "metadata");
    json_object_set_new(sl_json_ensure_obj(md, "annotations"), key, json_string(val));
}

static void set_resource(json_t *c, const char *which, const char *val)
{
    json_t *res = sl_json_ensure_obj(c, "resources");
    json_object_set_new(sl_json_ensure_obj(res, "limits"), which, json_string(val));
}

static const char *condition_status(const json_t *obj, const char *type, const char **msg)
{
    size_t i;
    json_t *c;
    json_array_foreach(sl_json_path(obj, "status.conditions"), i, c)
    {
        const char *t = sl_json_str(c, "type");
        if (t && !strcmp(t, type)) {
            if (msg)
                *msg = sl_json_str(c, "message");
            return sl_json_str(c, "status");
        }
    }
    return "Unknown";
}

/* Poll the service until revision `rev` is ready or the configuration
 * failed. Returns 0 when ready. */
static int wait_ready(const sl_cli_opts_t *o, const char *path, const char *rev, int timeout_s,
                      json_t **final)
{
    uint64_t deadline = sl_now_ms() + (uint64_t)timeout_s * 1000u;
    unsigned delay_us = 5000;
    for (;;) {
        long st;
        json_t *svc = NULL;
        if (sl_cli_call(o, "GET", path, NULL, &st, &svc) != 0)
            return 1;
        if (st != 200) {
            int rc = sl_cli_fail(st, svc);
            json_decref(svc);
            return rc;
        }
        const char *ready = sl_json_str(svc, "status.latestReadyRevisionName");
        const char *msg = NULL;
        const char *cfg = condition_status(svc, "ConfigurationsReady", &msg);
        if (ready && !strcmp(ready, rev)) {
            *final = svc;
            return 0;
        }
        if (!strcmp(cfg, "False")) {
            sl_cli_error("%s", msg ? msg : "revision failed");
            /* as gcloud does: what serves meanwhile */
            if (ready && strcmp(ready, rev))
                fprintf(stderr, "Revision %s keeps serving the traffic it had.\n", ready);
            json_decref(svc);
            return 1;
        }
        json_decref(svc);
        if (sl_now_ms() > deadline)
            return sl_cli_error("revision %s not ready after %d s; see `sluice describe` and "
                                "`sluice logs`",
                                rev, timeout_s);
        usleep(delay_us);
        if (delay_us < 100000)
            delay_us *= 2;
    }
}

/* The daemon's error for a request, after "where: " when where is set. */
static int fail_in(const char *where, long status, const json_t *body)
{
    const char *msg = json_string_value(json_object_get(body, "message"));
    if (!where)
        return sl_cli_fail(status, body);
    if (msg)
        return sl_cli_error("%s: %s", where, msg);
    return sl_cli_error("%s: the daemon answered HTTP %ld", where, status);
}

/* The traffic entry tagged `tag` that follows the latest revision now
 * names `rev` instead, so the tag stays on it (Cloud Run's deploy --tag).
 * Returns whether there was one. */
static bool pin_tag(json_t *svc, const char *tag, const char *rev)
{
    json_t *traffic = sl_json_path(svc, "spec.traffic");
    for (size_t i = 0; i < json_array_size(traffic); i++) {
        json_t *t = json_array_get(traffic, i);
        const char *have = json_string_value(json_object_get(t, "tag"));
        if (have && !strcmp(have, tag) && json_is_true(json_object_get(t, "latestRevision"))) {
            json_object_del(t, "latestRevision");
            json_object_set_new(t, "revisionName", json_string(rev));
            return true;
        }
    }
    return false;
}

/* What put_service does besides the write. */
typedef struct put_opts {
    bool create;       /* POST to the collection: refused if it exists meanwhile */
    bool wait;         /* until the new revision is Ready */
    int wait_timeout;  /* seconds */
    const char *where; /* errors name it */
    const char *tag;   /* pin this tag to the new revision (deploy --tag) */
    bool *created;     /* set: the write created the service */
    /* Set to the answer of a write refused as a conflict (or, for a PUT, a
     * service gone meanwhile), which is then left unsaid: read it again. */
    json_t **conflict;
} put_opts_t;

/* Pin `tag` to `rev` in the service `cur` (the first write's answer, so
 * the second write carries its resourceVersion), reading the service again
 * after a conflict. Returns the exit code. */
static int pin_tag_to(const sl_cli_opts_t *o, const char *path, const json_t *cur, const char *tag,
                      const char *rev)
{
    json_t *svc = json_deep_copy(cur), *resp = NULL;
    long st = 200;
    int rc = 0;
    for (int attempt = 1; attempt <= SL_CLI_WRITE_ATTEMPTS; attempt++) {
        if (!pin_tag(svc, tag, rev))
            break; /* no tag following the latest revision (any more) */
        json_decref(resp);
        resp = NULL;
        if (sl_cli_call(o, "PUT", path, svc, &st, &resp) != 0 || st == 200 || st == 201 ||
            !sl_cli_conflict(st, resp) || attempt == SL_CLI_WRITE_ATTEMPTS)
            break;
        json_decref(svc);
        svc = NULL;
        sl_cli_retry_pause(attempt + 1, resp);
        if (sl_cli_call(o, "GET", path, NULL, &st, &svc) != 0 || st != 200)
            break;
    }
    if (st != 200 && st != 201) {
        const char *msg = json_string_value(json_object_get(resp ? resp : svc, "message"));
        sl_cli_error("revision %s is deployed, but tag %s still follows the latest revision "
                     "(%s); pin it with `sluice traffic %s --tag %s=%s`",
                     rev, tag, msg ? msg : "the daemon did not answer",
                     sl_json_str(cur, "metadata.name"), rev, tag);
        rc = 1;
    }
    json_decref(resp);
    json_decref(svc);
    return rc;
}

/* Write the service (PUT, or POST with create), wait for its revision if
 * asked, print it or its URL. With a tag, a second write pins that tag to
 * the revision the first one created. Returns the exit code. */
static int put_service(const sl_cli_opts_t *o, json_t *svc, const put_opts_t *p)
{
    const char *name = sl_json_str(svc, "metadata.name");
    const char *ns = sl_json_str(svc, "metadata.namespace");
    sl_autofree char *coll =
        xasprintf("/apis/serving.knative.dev/v1/namespaces/%s/services", ns ? ns : o->ns);
    sl_autofree char *path = xasprintf("%s/%s", coll, name);
    long st;
    json_t *resp = NULL;
    if (sl_cli_call(o, p->create ? "POST" : "PUT", p->create ? coll : path, svc, &st, &resp) != 0)
        return 1;
    if (st != 200 && st != 201) {
        if (p->conflict && (sl_cli_conflict(st, resp) || (st == 404 && !p->create))) {
            *p->conflict = resp;
            return 1;
        }
        int rc = fail_in(p->where, st, resp);
        json_decref(resp);
        return rc;
    }
    if (p->created)
        *p->created = st == 201;
    const char *rev = sl_json_str(resp, "status.latestCreatedRevisionName");
    json_t *final = NULL;
    int rc = 0;
    if (p->tag && rev && pin_tag_to(o, path, resp, p->tag, rev) != 0) {
        json_decref(resp);
        return 1;
    }
    if (p->wait && rev) {
        fprintf(stderr, "Deploying %s: waiting for revision %s to be ready...\n", name, rev);
        rc = wait_ready(o, path, rev, p->wait_timeout, &final);
    }
    json_t *shown = final ? final : resp;
    if (rc == 0) {
        if (o->output != SL_OUT_TABLE)
            sl_cli_print(shown, o->output);
        else {
            if (p->wait)
                fprintf(stderr, "Service %s revision %s is ready.\n", name, rev);
            printf("%s\n", sl_json_str(shown, "status.url"));
        }
    }
    json_decref(final);
    json_decref(resp);
    return rc;
}

/* Cloud Run's way to stage a revision: --no-traffic pins the split to the
 * revision serving now; --tag T gives the new revision the URL
 * T-NAME.DOMAIN (put_service then pins the tag to it, so a later deploy
 * does not move it). */
static int stage_traffic(json_t *svc, bool no_traffic, const char *tag)
{
    json_t *spec = json_object_get(svc, "spec");
    json_t *traffic = json_object_get(spec, "traffic");
    if (!json_is_array(traffic)) {
        traffic = json_pack("[{s:b,s:i}]", "latestRevision", 1, "percent", 100);
        json_object_set_new(spec, "traffic", traffic);
    }
    const char *ready = sl_json_str(svc, "status.latestReadyRevisionName");
    size_t i;
    json_t *t;
    for (i = 0; i < json_array_size(traffic);) {
        t = json_array_get(traffic, i);
        const char *have = json_string_value(json_object_get(t, "tag"));
        if (tag && have && !strcmp(have, tag) &&
            !json_integer_value(json_object_get(t, "percent"))) {
            json_array_remove(traffic, i);
            continue;
        }
        if (tag && have && !strcmp(have, tag))
            json_object_del(t, "tag");
        if (no_traffic && json_is_true(json_object_get(t, "latestRevision")) &&
            json_integer_value(json_object_get(t, "percent")) > 0) {
            if (!ready)
                return sl_cli_error("deploy --no-traffic: the service has no ready revision to "
                                    "keep serving");
            json_object_del(t, "latestRevision");
            json_object_set_new(t, "revisionName", json_string(ready));
        }
        i++;
    }
    if (tag)
        json_array_append_new(
            traffic, json_pack("{s:b,s:i,s:s}", "latestRevision", 1, "percent", 0, "tag", tag));
    return 0;
}

enum deploy_opt {
    O_IMAGE = 1000,
    O_PORT,
    O_HTTP2,
    O_NO_HTTP2,
    O_ENV,
    O_SECRET,
    O_CONFIGMAP,
    O_EGRESS,
    O_CPU_THROTTLING,
    O_NO_CPU_THROTTLING,
    O_CONC,
    O_MIN,
    O_MAX,
    O_MEM,
    O_CPU,
    O_TIMEOUT,
    O_RTC,
    O_NOWAIT,
    O_WAITTO,
    O_TAG,
    O_NOTRAFFIC,
    O_TARGET,
    O_METRIC
};
static const struct option deploy_longopts[] = {
    {"image", required_argument, NULL, O_IMAGE},
    {"port", required_argument, NULL, O_PORT},
    {"use-http2", no_argument, NULL, O_HTTP2},
    {"no-use-http2", no_argument, NULL, O_NO_HTTP2},
    {"env", required_argument, NULL, O_ENV},
    {"secret", required_argument, NULL, O_SECRET},
    {"configmap", required_argument, NULL, O_CONFIGMAP},
    {"egress", required_argument, NULL, O_EGRESS},
    {"cpu-throttling", no_argument, NULL, O_CPU_THROTTLING},
    {"no-cpu-throttling", no_argument, NULL, O_NO_CPU_THROTTLING},
    {"concurrency", required_argument, NULL, O_CONC},
    {"min", required_argument, NULL, O_MIN},
    {"max", required_argument, NULL, O_MAX},
    {"target", required_argument, NULL, O_TARGET},
    {"metric", required_argument, NULL, O_METRIC},
    {"memory", required_argument, NULL, O_MEM},
    {"cpu", required_argument, NULL, O_CPU},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"runtime-class", required_argument, NULL, O_RTC},
    {"tag", required_argument, NULL, O_TAG},
    {"no-traffic", no_argument, NULL, O_NOTRAFFIC},
    {"no-wait", no_argument, NULL, O_NOWAIT},
    {"wait-timeout", required_argument, NULL, O_WAITTO},
    {"state-dir", required_argument, NULL, 'S'},
    {"namespace", required_argument, NULL, 'n'},
    {"output", required_argument, NULL, 'o'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int edit_service(int argc, char **argv, json_t *svc, bool exists, put_opts_t *p);

int sl_cmd_deploy(int argc, char **argv)
{
    sl_cli_opts_t o;
    sl_cli_opts_init(&o);
    /* First pass: the common options and NAME, so the current service can
     * be fetched before its flags are applied. */
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "hn:o:", deploy_longopts, NULL)) != -1) {
        if (opt == 'h') {
            deploy_usage(stdout);
            return 0;
        }
        if (opt == '?' || opt == ':') {
            deploy_usage(stderr);
            return sl_cli_usage("deploy: unknown or incomplete option '%s'", argv[optind - 1]);
        }
        if (sl_cli_common_opt(&o, opt, optarg) < 0)
            return 2;
    }
    if (optind + 1 != argc)
        return sl_cli_usage("deploy: expected exactly one NAME (see `sluice deploy --help`)");
    const char *name = argv[optind];
    if (!sl_is_dns1035(name))
        return sl_cli_usage("deploy: NAME '%s' must be a DNS-1035 label (lower-case letters, "
                            "digits and '-', starting with a letter, at most 63 characters)",
                            name);
    sl_autofree char *path =
        xasprintf("/apis/serving.knative.dev/v1/namespaces/%s/services/%s", o.ns, name);
    /* Read, change, write; again from the read when the service changed
     * in between (a status write by the daemon counts). */
    int rc = 1;
    sl_cli_retry_t rt = {0};
    while (sl_cli_retry_round(&rt)) {
        long st;
        json_t *svc = NULL;
        if (sl_cli_call(&o, "GET", path, NULL, &st, &svc) != 0)
            return 1;
        if (st != 200 && st != 404) {
            rc = sl_cli_fail(st, svc);
            json_decref(svc);
            return rc;
        }
        bool exists = st == 200;
        put_opts_t p = {.create = !exists, .wait = true};
        if (!exists) {
            json_decref(svc);
            svc = new_service(name, o.ns);
        }
        rc = edit_service(argc, argv, svc, exists, &p);
        if (!sl_cli_retry_last(&rt))
            p.conflict = &rt.conflict;
        if (rc == 0)
            rc = put_service(&o, svc, &p);
        json_decref(svc);
        if (!rt.conflict)
            break;
    }
    return rc;
}

/* Apply deploy's flags to svc: the stored service (exists) or a new one.
 * Fills in what the write does besides. Returns 0 or the exit code. */
static int edit_service(int argc, char **argv, json_t *svc, bool exists, put_opts_t *p)
{
    if (exists) {
        const char *ready = sl_json_str(svc, "status.latestReadyRevisionName");
        json_t *keep = ready ? json_pack("{s:s}", "latestReadyRevisionName", ready) : json_object();
        json_object_set_new(svc, "status", keep);
        json_object_del(json_object_get(sl_json_path(svc, "spec.template"), "metadata"), "name");
    }
    json_t *c = container_of(svc);
    json_t *pod = sl_json_path(svc, "spec.template.spec");
    bool have_image = exists, no_traffic = false;
    const char *tag = NULL;
    int64_t wait_timeout = 300;
    int rc = 0, opt;
    optind = 1;
    opterr = 0;
    while (rc == 0 && (opt = getopt_long(argc, argv, "hn:o:", deploy_longopts, NULL)) != -1) {
        switch (opt) {
        case O_IMAGE: {
            char *ref = sl_cli_abs_image_ref(optarg);
            json_object_set_new(c, "image", json_string(ref));
            free(ref);
            have_image = true;
            break;
        }
        case O_PORT:
            rc = set_int(port0(c), "containerPort", "--port", optarg, 1, 65535);
            break;
        case O_HTTP2:
            json_object_set_new(port0(c), "name", json_string("h2c"));
            break;
        case O_NO_HTTP2:
            if (json_is_array(json_object_get(c, "ports")))
                json_object_del(port0(c), "name");
            break;
        case O_ENV:
            rc = set_env(c, optarg);
            break;
        case O_EGRESS:
            if (strcmp(optarg, "on") && strcmp(optarg, "off"))
                rc = sl_cli_usage("--egress: expected on or off, got '%s'", optarg);
            else
                set_annotation(svc, SL_EGRESS_KEY, strcmp(optarg, "on") ? "false" : "true");
            break;
        case O_CPU_THROTTLING:
        case O_NO_CPU_THROTTLING:
            set_annotation(svc, SL_CPU_THROTTLING_KEY, opt == O_CPU_THROTTLING ? "true" : "false");
            break;
        case O_SECRET:
        case O_CONFIGMAP:
            rc = set_ref(svc, opt == O_SECRET ? SL_DATA_SECRET : SL_DATA_CONFIGMAP, optarg);
            break;
        case O_CONC:
            rc = set_int(pod, "containerConcurrency", "--concurrency", optarg, 0, 1000);
            break;
        case O_TIMEOUT:
            rc = set_int(pod, "timeoutSeconds", "--timeout", optarg, 1, SL_MAX_TIMEOUT_S);
            break;
        case O_MIN:
        case O_MAX: {
            int64_t v;
            if (sl_parse_int64(optarg, 0, 1000000, &v) < 0) {
                rc = sl_cli_usage("%s: must be a non-negative integer, got '%s'",
                                  opt == O_MIN ? "--min" : "--max", optarg);
                break;
            }
            set_annotation(svc,
                           opt == O_MIN ? "autoscaling.knative.dev/min-scale"
                                        : "autoscaling.knative.dev/max-scale",
                           optarg);
            break;
        }
        case O_TARGET: {
            double v;
            /* the bounds of autoscaling.knative.dev/target */
            rc = sl_cli_number("--target", optarg, 0.01, 1e9, &v);
            if (rc == 0)
                set_annotation(svc, "autoscaling.knative.dev/target", optarg);
            break;
        }
        case O_METRIC:
            if (strcmp(optarg, "concurrency") && strcmp(optarg, "rps"))
                rc = sl_cli_usage("--metric: expected concurrency or rps, got '%s'", optarg);
            else
                set_annotation(svc, "autoscaling.knative.dev/metric", optarg);
            break;
        case O_MEM: {
            int64_t v;
            if (sl_parse_memory(optarg, &v) < 0)
                rc = sl_cli_usage("--memory: expected a quantity like 256Mi, got '%s'", optarg);
            else
                set_resource(c, "memory", optarg);
            break;
        }
        case O_CPU: {
            int64_t v;
            if (sl_parse_cpu(optarg, &v) < 0)
                rc = sl_cli_usage("--cpu: expected a quantity like 1 or 500m, got '%s'", optarg);
            else
                set_resource(c, "cpu", optarg);
            break;
        }
        case O_RTC:
            json_object_set_new(pod, "runtimeClassName", json_string(optarg));
            break;
        case O_TAG:
            if (!sl_is_dns1123_label(optarg))
                rc = sl_cli_usage("--tag: '%s' must be a DNS-1123 label", optarg);
            tag = optarg;
            break;
        case O_NOTRAFFIC:
            no_traffic = true;
            break;
        case O_NOWAIT:
            p->wait = false;
            break;
        case O_WAITTO:
            if (sl_parse_int64(optarg, 1, 86400, &wait_timeout) < 0)
                rc = sl_cli_usage("--wait-timeout: must be 1..86400 seconds");
            break;
        default:
            break;
        }
    }
    if (rc == 0 && !have_image)
        rc = sl_cli_usage("deploy: --image is required for a new service");
    if (rc == 0 && no_traffic && !exists)
        rc = sl_cli_usage("deploy: --no-traffic needs an existing service (a new one has no "
                          "revision to keep serving)");
    if (rc == 0 && (no_traffic || tag))
        rc = stage_traffic(svc, no_traffic, tag);
    p->tag = tag;
    p->wait_timeout = (int)wait_timeout;
    return rc;
}

static void apply_usage(FILE *f)
{
    fprintf(f, "Usage: sluice apply -f FILE|- [-f FILE]... [--wait] [-n NS] [--state-dir DIR]\n"
               "                    [-o json|yaml]\n\n"
               "Create or update services, Secrets, ConfigMaps and runtime classes from\n"
               "Knative serving.knative.dev/v1 Service, v1 Secret and ConfigMap and\n"
               "node.k8s.io/v1 RuntimeClass manifests: YAML or JSON, several documents\n"
               "separated by ---, List documents (such as the output of `sluice services -o\n"
               "yaml`), several files. Secrets, ConfigMaps and runtime classes are applied\n"
               "first, then the services, each in the order given.\n"
               "Every object is checked first, by the daemon too (a dry run), and nothing is\n"
               "applied unless all pass. Objects without metadata.namespace go to -n NS (default\n"
               "\"default\"); one in another namespace than an explicit -n is refused.\n"
               "Image paths in oci:, docker-archive: and dir: references are taken\n"
               "relative to the current directory. An object replaces what is stored\n"
               "whatever its version: a manifest's metadata.resourceVersion and metadata.uid\n"
               "are left out.\n");
}

static int read_input(const char *file, char **out, size_t *len)
{
    sl_error_t err = {0};
    if (strcmp(file, "-") != 0) {
        if (sl_read_file(file, MANIFEST_MAX, out, len, &err) < 0)
            return sl_cli_error("%s", err.msg);
        return 0;
    }
    size_t cap = 65536, n = 0;
    char *buf = xmalloc(cap + 1);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += r;
        if (n == cap) {
            if (cap >= MANIFEST_MAX) {
                free(buf);
                return sl_cli_error("stdin: manifest larger than %u MiB", MANIFEST_MAX >> 20);
            }
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

#define APPLY_MAX_OBJECTS 1000

static const char SUPPORTED_KINDS[] =
    "sluice applies Service (serving.knative.dev/v1), Secret and ConfigMap (v1) and "
    "RuntimeClass (node.k8s.io/v1) objects, alone or in a List";

/* One object to apply, and where it came from for messages. */
typedef struct apply_obj {
    json_t *obj;
    char *where; /* "[FILE: ]document N[ (KIND[ NAME])]" */
} apply_obj_t;

typedef struct apply_set {
    apply_obj_t *v;
    size_t n;
} apply_set_t;

static void apply_set_free(apply_set_t *set)
{
    for (size_t i = 0; i < set->n; i++) {
        json_decref(set->v[i].obj);
        free(set->v[i].where);
    }
    free(set->v);
}

static bool is_kind(const json_t *obj, const char *kind)
{
    const char *k = sl_json_str(obj, "kind");
    return k && !strcmp(k, kind);
}

/* Whether obj is a v1 Secret or ConfigMap, and which. */
static bool data_kind(const json_t *obj, sl_data_kind_t *kind)
{
    const char *av = sl_json_str(obj, "apiVersion");
    bool secret = is_kind(obj, "Secret"), cm = is_kind(obj, "ConfigMap");
    if (kind)
        *kind = secret ? SL_DATA_SECRET : SL_DATA_CONFIGMAP;
    return (secret || cm) && (!av || !strcmp(av, "v1"));
}

/* As in kubectl, a kind ending in "List" (List, ServiceList,
 * RuntimeClassList) stands for its items. */
static bool is_list(const json_t *obj)
{
    const char *k = sl_json_str(obj, "kind");
    size_t n = k ? strlen(k) : 0;
    return n >= 4 && !strcmp(k + n - 4, "List");
}

static char *where_of(const char *file, size_t num, const json_t *obj)
{
    const char *kind = sl_json_str(obj, "kind");
    const char *name = sl_json_str(obj, "metadata.name");
    sl_autofree char *what = kind && name ? xasprintf(" (%.100s %.100s)", kind, name)
                             : kind       ? xasprintf(" (%.100s)", kind)
                                          : xstrdup("");
    return xasprintf("%s%sdocument %zu%s", file ? file : "", file ? ": " : "", num, what);
}

/* Add doc, or the items of a List, numbering them on from *num. */
static int add_objects(apply_set_t *set, const char *file, json_t *doc, size_t *num)
{
    if (is_list(doc)) {
        json_t *items = json_object_get(doc, "items");
        if (!json_is_array(items)) {
            sl_autofree char *where = where_of(file, *num + 1, doc);
            return sl_cli_error("%s: items: must be a list of objects", where);
        }
        size_t i;
        json_t *item;
        json_array_foreach(items, i, item)
        {
            if (add_objects(set, file, item, num) != 0)
                return 1;
        }
        return 0;
    }
    if (set->n >= APPLY_MAX_OBJECTS)
        return sl_cli_error("more than %d objects to apply", APPLY_MAX_OBJECTS);
    set->v = xrealloc(set->v, (set->n + 1) * sizeof(*set->v));
    set->v[set->n].obj = json_incref(doc);
    set->v[set->n].where = where_of(file, ++*num, doc);
    set->n++;
    return 0;
}

/* Read and parse one -f argument into set; name_file: messages name it. */
static int load_file(apply_set_t *set, const char *file, bool name_file)
{
    sl_autofree char *text = NULL;
    size_t len = 0;
    if (read_input(file, &text, &len) != 0)
        return 1;
    const char *shown = strcmp(file, "-") ? file : "stdin";
    json_t *docs = NULL;
    sl_error_t err = {0};
    if (sl_manifest_parse(text, len, APPLY_MAX_OBJECTS, &docs, &err) < 0)
        return sl_cli_error("%s: %s", shown, err.msg);
    int rc = 0;
    size_t i, num = 0;
    json_t *doc;
    json_array_foreach(docs, i, doc)
    {
        rc = add_objects(set, name_file ? shown : NULL, doc, &num);
        if (rc != 0)
            break;
    }
    json_decref(docs);
    return rc;
}

/* Names go into API paths: anything but [A-Za-z0-9._-] (and "." or "..")
 * could change the path. The daemon says what a valid name is. */
static bool path_safe(const char *s)
{
    if (!*s || !strcmp(s, ".") || !strcmp(s, ".."))
        return false;
    for (; *s; s++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *s))
            return false;
    return true;
}

/* The checks needing no daemon; fills in a Service's namespace (-n) and
 * makes its image path absolute. */
static int check_local(const sl_cli_opts_t *o, apply_obj_t *a)
{
    json_t *obj = a->obj;
    if (!json_is_object(obj))
        return sl_cli_error("%s: must be an object (a mapping), got %s", a->where,
                            sl_json_type_name(obj));
    const char *kind = sl_json_str(obj, "kind");
    if (!kind)
        return sl_cli_error("%s: kind: is required; %s", a->where, SUPPORTED_KINDS);
    if (strcmp(kind, "Service") && strcmp(kind, "RuntimeClass") && !data_kind(obj, NULL))
        return sl_cli_error("%s: kind: %.100s is not supported; %s", a->where, kind,
                            SUPPORTED_KINDS);
    const char *name = sl_json_str(obj, "metadata.name");
    if (!name)
        return sl_cli_error("%s: metadata.name: is required", a->where);
    if (!path_safe(name))
        return sl_cli_error("%s: metadata.name: \"%.100s\" is not a valid name", a->where, name);
    json_t *md = json_object_get(obj, "metadata");
    /* apply makes each object what its manifest says, whatever version is
     * stored: a resourceVersion or uid read back with -o yaml would make the
     * write conditional, and fail a restore into another daemon. */
    json_object_del(md, "resourceVersion");
    json_object_del(md, "uid");
    if (!strcmp(kind, "RuntimeClass"))
        return 0;
    const char *ns = sl_json_str(obj, "metadata.namespace");
    if (ns && !path_safe(ns))
        return sl_cli_error("%s: metadata.namespace: \"%.100s\" is not a valid namespace", a->where,
                            ns);
    if (ns && o->ns_given && strcmp(ns, o->ns))
        return sl_cli_error("%s: the namespace from the provided object \"%s\" does not match "
                            "the namespace \"%s\". You must pass '--namespace=%s' to perform "
                            "this operation.",
                            a->where, ns, o->ns, ns);
    if (!json_object_get(md, "namespace"))
        json_object_set_new(md, "namespace", json_string(o->ns));
    if (strcmp(kind, "Service"))
        return 0;
    json_t *c = container_of(obj);
    const char *img = sl_json_str(c, "image");
    if (img) {
        char *ref = sl_cli_abs_image_ref(img);
        json_object_set_new(c, "image", json_string(ref));
        free(ref);
    }
    return 0;
}

static bool same_str(const char *a, const char *b)
{
    return a && b && !strcmp(a, b);
}

static bool same_service(const json_t *e, const char *ns, const char *name)
{
    return is_kind(e, "Service") && same_str(sl_json_str(e, "metadata.name"), name) &&
           same_str(sl_json_str(e, "metadata.namespace"), ns);
}

/* Whether an object before i of the same service names its template
 * (its revision) rev. */
static bool made_before(const apply_set_t *set, size_t i, const char *ns, const char *name,
                        const char *rev)
{
    for (size_t k = 0; k < i; k++)
        if (same_service(set->v[k].obj, ns, name) &&
            same_str(sl_json_str(set->v[k].obj, "spec.template.metadata.name"), rev))
            return true;
    return false;
}

/*
 * What the daemon dry-runs for Service i. It knows what is stored, not the
 * objects before i in this apply, so references to those stay out of the
 * dry run and are checked when applied: a runtimeClassName that an earlier
 * RuntimeClass defines, and traffic to a revision an earlier object of the
 * same service names (such an object is validated here in full too). NULL
 * after an error message.
 */
static json_t *dry_run_service(const apply_set_t *set, size_t i)
{
    const apply_obj_t *a = &set->v[i];
    const char *name = sl_json_str(a->obj, "metadata.name");
    const char *ns = sl_json_str(a->obj, "metadata.namespace");
    const char *rcn = sl_json_str(a->obj, "spec.template.spec.runtimeClassName");
    bool class_before = false, svc_before = false;
    for (size_t k = 0; k < i; k++) {
        const json_t *e = set->v[k].obj;
        if (is_kind(e, "RuntimeClass") && same_str(sl_json_str(e, "metadata.name"), rcn))
            class_before = true;
        if (same_service(e, ns, name))
            svc_before = true;
    }
    json_t *copy = json_deep_copy(a->obj);
    if (svc_before) {
        sl_error_t err = {0};
        json_t *full = json_deep_copy(a->obj);
        int rc = sl_service_validate(full, ns ? ns : "default", &err);
        json_decref(full);
        if (rc < 0) {
            json_decref(copy);
            sl_cli_error("%s: %s", a->where, err.msg);
            return NULL;
        }
        size_t k;
        json_t *t;
        json_array_foreach(sl_json_path(copy, "spec.traffic"), k, t)
        {
            const char *rev = sl_json_str(t, "revisionName");
            if (!made_before(set, i, ns, name, rev))
                continue;
            json_object_del(t, "revisionName");
            json_object_set_new(t, "latestRevision", json_true());
        }
    }
    if (class_before)
        json_object_del(sl_json_path(copy, "spec.template.spec"), "runtimeClassName");
    return copy;
}

static char *object_path(const json_t *obj, const char *query)
{
    const char *name = sl_json_str(obj, "metadata.name");
    sl_data_kind_t kind;
    if (is_kind(obj, "RuntimeClass"))
        return xasprintf("/apis/node.k8s.io/v1/runtimeclasses/%s%s", name, query);
    if (data_kind(obj, &kind))
        return xasprintf("/api/v1/namespaces/%s/%s/%s%s", sl_json_str(obj, "metadata.namespace"),
                         sl_data_resource(kind), name, query);
    return xasprintf("/apis/serving.knative.dev/v1/namespaces/%s/services/%s%s",
                     sl_json_str(obj, "metadata.namespace"), name, query);
}

/* The daemon's dry run of object i: 0, 1 after an error message, or -1
 * when the daemon cannot be reached. */
static int dry_run(const sl_cli_opts_t *o, const apply_set_t *set, size_t i)
{
    const apply_obj_t *a = &set->v[i];
    json_t *body = is_kind(a->obj, "Service") ? dry_run_service(set, i) : json_incref(a->obj);
    if (!body)
        return 1;
    sl_autofree char *path = object_path(a->obj, "?dryRun=All");
    long st;
    json_t *resp = NULL;
    int rc = sl_cli_call(o, "PUT", path, body, &st, &resp) != 0 ? -1
             : st == 200 || st == 201                           ? 0
                                                                : fail_in(a->where, st, resp);
    json_decref(resp);
    json_decref(body);
    return rc;
}

static const char *what_applied(const json_t *doc)
{
    sl_data_kind_t kind;
    if (data_kind(doc, &kind))
        return sl_data_singular(kind);
    return "runtimeclass.node.k8s.io";
}

/* PUT a RuntimeClass, Secret or ConfigMap; say "KIND/NAME created" as kubectl does. */
static int put_object(const sl_cli_opts_t *o, json_t *doc, const char *where)
{
    sl_autofree char *path = object_path(doc, "");
    long st;
    json_t *resp = NULL;
    if (sl_cli_call(o, "PUT", path, doc, &st, &resp) != 0)
        return 1;
    int rc = st == 200 || st == 201 ? 0 : fail_in(where, st, resp);
    if (rc == 0 && o->output != SL_OUT_TABLE)
        sl_cli_print(resp, o->output);
    else if (rc == 0)
        fprintf(stderr, "%s/%s %s\n", what_applied(doc), sl_json_str(doc, "metadata.name"),
                st == 201 ? "created" : "configured");
    json_decref(resp);
    return rc;
}

static int apply_one(const sl_cli_opts_t *o, const apply_obj_t *a, bool wait)
{
    if (!is_kind(a->obj, "Service"))
        return put_object(o, a->obj, a->where);
    bool created = false;
    put_opts_t p = {.wait = wait, .wait_timeout = 300, .where = a->where, .created = &created};
    int rc = put_service(o, a->obj, &p);
    if (rc == 0 && o->output == SL_OUT_TABLE)
        fprintf(stderr, "service.serving.knative.dev/%s %s\n", sl_json_str(a->obj, "metadata.name"),
                created ? "created" : "configured");
    return rc;
}

/* Check every object (all errors are reported), then apply them in order. */
static int apply_set(const sl_cli_opts_t *o, apply_set_t *set, bool wait)
{
    int failed = 0;
    for (size_t i = 0; i < set->n; i++) {
        if (check_local(o, &set->v[i]) != 0) {
            failed++;
            continue;
        }
        int rc = dry_run(o, set, i);
        if (rc < 0)
            return 1;
        failed += rc != 0;
    }
    if (failed) {
        fprintf(stderr, "sluice: nothing was applied (%d of %zu object%s failed the checks)\n",
                failed, set->n, set->n == 1 ? "" : "s");
        return 1;
    }
    /* What services refer to (runtime classes, Secrets, ConfigMaps) goes
     * first, as Helm orders an install; then the services, in order. */
    size_t done = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < set->n; i++) {
            if (is_kind(set->v[i].obj, "Service") != (pass == 1))
                continue;
            int rc = apply_one(o, &set->v[i], wait);
            if (rc != 0) {
                if (done > 0)
                    fprintf(stderr, "sluice: %zu other object%s %s applied\n", done,
                            done == 1 ? "" : "s", done == 1 ? "was" : "were");
                return rc;
            }
            done++;
        }
    }
    return 0;
}

int sl_cmd_apply(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"filename", required_argument, NULL, 'f'},
        {"wait", no_argument, NULL, 'w'},
        {"state-dir", required_argument, NULL, 'S'},
        {"namespace", required_argument, NULL, 'n'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    sl_cli_opts_t o;
    sl_cli_opts_init(&o);
    sl_autofree const char **files = xcalloc((size_t)argc + 1, sizeof(char *));
    size_t nfiles = 0;
    bool wait = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "hf:n:o:", longopts, NULL)) != -1) {
        if (opt == 'h') {
            apply_usage(stdout);
            return 0;
        } else if (opt == 'f') {
            files[nfiles++] = optarg;
        } else if (opt == 'w') {
            wait = true;
        } else {
            int r = sl_cli_common_opt(&o, opt, optarg);
            if (r < 0)
                return 2;
            if (r == 0) {
                apply_usage(stderr);
                return 2;
            }
        }
    }
    if (!nfiles || optind != argc)
        return sl_cli_usage("apply: expected -f FILE or -f - (see `sluice apply --help`)");
    apply_set_t set = {0};
    int rc = 0;
    for (size_t f = 0; rc == 0 && f < nfiles; f++)
        rc = load_file(&set, files[f], nfiles > 1);
    if (rc == 0 && set.n == 0)
        rc = sl_cli_error("no objects passed to apply");
    if (rc == 0)
        rc = apply_set(&o, &set, wait);
    apply_set_free(&set);
    return rc;
}
