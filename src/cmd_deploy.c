/*
 * cmd_deploy.c — `sluice deploy` (Cloud Run style: flags in, URL out) and
 * `sluice apply -f` (Knative manifests in). Deploy updates only what its
 * flags name, like `gcloud run deploy`, then waits until the new revision
 * is Ready or has failed, and prints why when it fails.
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
        "  --env K=V            environment variable (repeatable)\n"
        "  --concurrency N      requests per instance at once (0 = unlimited; default 80)\n"
        "  --min N, --max N     autoscaling bounds (autoscaling.knative.dev/min-scale, max-scale)\n"
        "  --target N           concurrency per instance the autoscaler aims at\n"
        "                       (autoscaling.knative.dev/target)\n"
        "  --memory Q           memory limit, e.g. 256Mi\n"
        "  --cpu Q              cpu limit, e.g. 1 or 500m\n"
        "  --timeout S          request timeout in seconds (1..3600, default 300)\n"
        "  --runtime-class NAME runtime class\n"
        "  --no-traffic         keep traffic on the revision serving now\n"
        "  --tag T              serve the new revision at http://T-NAME.DOMAIN:PORT\n"
        "  --no-wait            return once the change is stored\n"
        "  --wait-timeout S     give up waiting after S seconds (default 300)\n"
        "  -n NS, --state-dir DIR, -o json|yaml\n");
}

static json_t *container_of(json_t *svc)
{
    return json_array_get(sl_json_path(svc, "spec.template.spec.containers"), 0);
}

static json_t *new_service(const char *name, const char *ns)
{
    return json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:{s:{},s:{s:[{}]}}}}", "apiVersion", SL_API_VERSION,
                     "kind", "Service", "metadata", "name", name, "namespace", ns, "spec",
                     "template", "metadata", "spec", "containers");
}

static int set_env(json_t *c, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv)
        return sl_cli_usage("--env: expected KEY=VALUE, got '%s'", kv);
    json_t *env = json_object_get(c, "env");
    if (!json_is_array(env)) {
        env = json_array();
        json_object_set_new(c, "env", env);
    }
    sl_autofree char *key = xstrndup(kv, (size_t)(eq - kv));
    size_t i;
    json_t *e;
    json_array_foreach(env, i, e)
    {
        if (!strcmp(sl_json_str(e, "name") ? sl_json_str(e, "name") : "", key)) {
            json_object_set_new(e, "value", json_string(eq + 1));
            return 0;
        }
    }
    json_array_append_new(env, json_pack("{s:s,s:s}", "name", key, "value", eq + 1));
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

static int put_service(const sl_cli_opts_t *o, json_t *svc, bool wait, int wait_timeout)
{
    const char *name = sl_json_str(svc, "metadata.name");
    const char *ns = sl_json_str(svc, "metadata.namespace");
    sl_autofree char *path =
        xasprintf("/apis/serving.knative.dev/v1/namespaces/%s/services/%s", ns ? ns : o->ns, name);
    long st;
    json_t *resp = NULL;
    if (sl_cli_call(o, "PUT", path, svc, &st, &resp) != 0)
        return 1;
    if (st != 200 && st != 201) {
        int rc = sl_cli_fail(st, resp);
        json_decref(resp);
        return rc;
    }
    const char *rev = sl_json_str(resp, "status.latestCreatedRevisionName");
    json_t *final = NULL;
    int rc = 0;
    if (wait && rev) {
        fprintf(stderr, "Deploying %s: waiting for revision %s to be ready...\n", name, rev);
        rc = wait_ready(o, path, rev, wait_timeout, &final);
    }
    json_t *shown = final ? final : resp;
    if (rc == 0) {
        if (o->output != SL_OUT_TABLE)
            sl_cli_print(shown, o->output);
        else {
            if (wait)
                fprintf(stderr, "Service %s revision %s is ready.\n", name, rev);
            printf("%s\n", sl_json_str(shown, "status.url"));
        }
    }
    json_decref(final);
    json_decref(resp);
    return rc;
}

/* Cloud Run's way to stage a revision: --no-traffic pins the split to the
 * revision serving now; --tag T gives the new (latest) revision the URL
 * T-NAME.DOMAIN. */
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

int sl_cmd_deploy(int argc, char **argv)
{
    enum {
        O_IMAGE = 1000,
        O_PORT,
        O_ENV,
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
        O_TARGET
    };
    static const struct option longopts[] = {
        {"image", required_argument, NULL, O_IMAGE},
        {"port", required_argument, NULL, O_PORT},
        {"env", required_argument, NULL, O_ENV},
        {"concurrency", required_argument, NULL, O_CONC},
        {"min", required_argument, NULL, O_MIN},
        {"max", required_argument, NULL, O_MAX},
        {"target", required_argument, NULL, O_TARGET},
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
    sl_cli_opts_t o;
    sl_cli_opts_init(&o);
    /* First pass: the common options and NAME, so the current service can
     * be fetched before its flags are applied. */
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "hn:o:", longopts, NULL)) != -1) {
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
    long st;
    json_t *svc = NULL;
    if (sl_cli_call(&o, "GET", path, NULL, &st, &svc) != 0)
        return 1;
    bool exists = st == 200;
    if (!exists) {
        json_decref(svc);
        svc = new_service(name, o.ns);
    } else {
        const char *ready = sl_json_str(svc, "status.latestReadyRevisionName");
        json_t *keep = ready ? json_pack("{s:s}", "latestReadyRevisionName", ready) : json_object();
        json_object_set_new(svc, "status", keep);
        json_object_del(json_object_get(sl_json_path(svc, "spec.template"), "metadata"), "name");
    }
    json_t *c = container_of(svc);
    json_t *pod = sl_json_path(svc, "spec.template.spec");
    bool wait = true, have_image = exists, no_traffic = false;
    const char *tag = NULL;
    int64_t wait_timeout = 300;
    int rc = 0;
    optind = 1;
    while (rc == 0 && (opt = getopt_long(argc, argv, "hn:o:", longopts, NULL)) != -1) {
        switch (opt) {
        case O_IMAGE: {
            char *ref = sl_cli_abs_image_ref(optarg);
            json_object_set_new(c, "image", json_string(ref));
            free(ref);
            have_image = true;
            break;
        }
        case O_PORT:
            json_object_set_new(c, "ports", json_array());
            json_array_append_new(json_object_get(c, "ports"), json_object());
            rc = set_int(json_array_get(json_object_get(c, "ports"), 0), "containerPort", "--port",
                         optarg, 1, 65535);
            break;
        case O_ENV:
            rc = set_env(c, optarg);
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
            wait = false;
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
    if (rc == 0)
        rc = put_service(&o, svc, wait, (int)wait_timeout);
    json_decref(svc);
    return rc;
}

static void apply_usage(FILE *f)
{
    fprintf(f, "Usage: sluice apply -f FILE|- [--wait] [-n NS] [--state-dir DIR] [-o json|yaml]\n\n"
               "Create or update services from Knative serving.knative.dev/v1 Service\n"
               "manifests (YAML or JSON, several documents separated by ---).\n"
               "Image paths in oci:, docker-archive: and dir: references are taken\n"
               "relative to the current directory.\n");
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

static int put_runtimeclass(const sl_cli_opts_t *o, json_t *doc, const char *name)
{
    sl_autofree char *path = xasprintf("/apis/node.k8s.io/v1/runtimeclasses/%s", name);
    long st;
    json_t *resp = NULL;
    if (sl_cli_call(o, "PUT", path, doc, &st, &resp) != 0)
        return 1;
    int rc = st == 200 ? 0 : sl_cli_fail(st, resp);
    if (rc == 0 && o->output != SL_OUT_TABLE)
        sl_cli_print(resp, o->output);
    else if (rc == 0)
        fprintf(stderr, "runtimeclass.node.k8s.io/%s configured\n", name);
    json_decref(resp);
    return rc;
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
    const char *file = NULL;
    bool wait = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "hf:n:o:", longopts, NULL)) != -1) {
        if (opt == 'h') {
            apply_usage(stdout);
            return 0;
        } else if (opt == 'f') {
            file = optarg;
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
    if (!file || optind != argc)
        return sl_cli_usage("apply: expected -f FILE or -f - (see `sluice apply --help`)");
    sl_autofree char *text = NULL;
    size_t len = 0;
    if (read_input(file, &text, &len) != 0)
        return 1;
    json_t *docs = NULL;
    sl_error_t err = {0};
    if (sl_manifest_parse(text, len, 1000, &docs, &err) < 0)
        return sl_cli_error("%s: %s", strcmp(file, "-") ? file : "stdin", err.msg);
    int rc = 0;
    size_t i;
    json_t *doc;
    json_array_foreach(docs, i, doc)
    {
        const char *kind = sl_json_str(doc, "kind");
        const char *name = sl_json_str(doc, "metadata.name");
        if (!json_is_object(doc) || !name) {
            rc = sl_cli_error("document %zu: metadata.name: is required", i + 1);
            break;
        }
        if (kind && !strcmp(kind, "RuntimeClass")) {
            rc = put_runtimeclass(&o, doc, name);
            if (rc != 0)
                break;
            continue;
        }
        if (!kind || strcmp(kind, "Service")) {
            rc = sl_cli_error("document %zu (%s): kind: must be Service or RuntimeClass, got %s",
                              i + 1, name, kind ? kind : "nothing");
            break;
        }
        json_t *md = json_object_get(doc, "metadata");
        if (!json_object_get(md, "namespace"))
            json_object_set_new(md, "namespace", json_string(o.ns));
        json_t *c = container_of(doc);
        const char *img = sl_json_str(c, "image");
        if (img) {
            char *ref = sl_cli_abs_image_ref(img);
            json_object_set_new(c, "image", json_string(ref));
            free(ref);
        }
        sl_output_t saved = o.output;
        rc = put_service(&o, doc, wait, 300);
        o.output = saved;
        if (rc != 0)
            break;
        if (o.output == SL_OUT_TABLE)
            fprintf(stderr, "service.serving.knative.dev/%s configured\n", name);
    }
    json_decref(docs);
    return rc;
}
