/*
 * cmd_get.c — the read side of the CLI: services, describe, revisions,
 * instances, images, logs, and delete. Listings print a table by default
 * and the API's objects with -o json|yaml.
 */
#include "cli.h"
#include "configdata.h"
#include "service.h"

#include <getopt.h>
#include <stdio.h>

typedef struct get_args {
    sl_cli_opts_t o;
    const char *name; /* optional positional */
    const char *extra;
    bool follow;
} get_args_t;

/* Parse common options plus an optional positional NAME. Returns -1 after
 * printing help (exit 0), > 0 for usage errors, 0 to continue. */
static int parse_get(int argc, char **argv, const char *usage, int max_pos, bool allow_follow,
                     get_args_t *a)
{
    static const struct option longopts[] = {
        {"state-dir", required_argument, NULL, 'S'},
        {"namespace", required_argument, NULL, 'n'},
        {"output", required_argument, NULL, 'o'},
        {"follow", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof(*a));
    sl_cli_opts_init(&a->o);
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, allow_follow ? "hfn:o:" : "hn:o:", longopts, NULL)) !=
           -1) {
        if (opt == 'h') {
            printf("%s", usage);
            return -1;
        }
        if (opt == 'f' && allow_follow) {
            a->follow = true;
            continue;
        }
        int r = sl_cli_common_opt(&a->o, opt, optarg);
        if (r < 0)
            return 2;
        if (r == 0) {
            fprintf(stderr, "%s", usage);
            return 2;
        }
    }
    int npos = argc - optind;
    if (npos > max_pos)
        return sl_cli_usage("unexpected argument '%s'", argv[optind + max_pos]);
    if (npos >= 1)
        a->name = argv[optind];
    if (npos >= 2)
        a->extra = argv[optind + 1];
    return 0;
}

static const char *cond(const json_t *obj, const char *type, const char **reason)
{
    size_t i;
    json_t *c;
    json_array_foreach(sl_json_path(obj, "status.conditions"), i, c)
    {
        const char *t = sl_json_str(c, "type");
        if (t && !strcmp(t, type)) {
            if (reason)
                *reason = sl_json_str(c, "reason");
            return sl_json_str(c, "status");
        }
    }
    return "Unknown";
}

static int fetch(const sl_cli_opts_t *o, const char *path, json_t **out)
{
    long st;
    if (sl_cli_call(o, "GET", path, NULL, &st, out) != 0)
        return 1;
    if (st != 200) {
        int rc = sl_cli_fail(st, *out);
        json_decref(*out);
        *out = NULL;
        return rc;
    }
    return 0;
}

/* GET a list and print it: the API's objects with -o json|yaml, else the
 * command's table. */
static int show_list(const sl_cli_opts_t *o, const char *path, void (*table)(json_t *list))
{
    json_t *list = NULL;
    int rc = fetch(o, path, &list);
    if (rc)
        return rc;
    if (o->output != SL_OUT_TABLE)
        sl_cli_print(list, o->output);
    else
        table(list);
    json_decref(list);
    return 0;
}

/* API_PREFIX/namespaces/NS/KIND, filtered to one service when NAME is set. */
static char *ns_list_path(const char *api_prefix, const char *kind, const get_args_t *a)
{
    if (a->name)
        return xasprintf("%s/namespaces/%s/%s?service=%s", api_prefix, a->o.ns, kind, a->name);
    return xasprintf("%s/namespaces/%s/%s", api_prefix, a->o.ns, kind);
}

/* DELETE one object and say so; the daemon's message on failure. */
static int delete_object(const sl_cli_opts_t *o, const char *path, const char *what,
                         const char *name)
{
    long st;
    json_t *resp = NULL;
    if (sl_cli_call(o, "DELETE", path, NULL, &st, &resp) != 0)
        return 1;
    int rc = st == 200 ? 0 : sl_cli_fail(st, resp);
    if (rc == 0)
        printf("%s %s deleted\n", what, name);
    json_decref(resp);
    return rc;
}

static void print_services(json_t *list)
{
    static const char *h[] = {"NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON"};
    sl_table_t *t = sl_table_new(6, h);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(list, "items"), i, s)
    {
        const char *reason = NULL;
        const char *ready = cond(s, "Ready", &reason);
        const char *row[] = {sl_json_str(s, "metadata.name"),
                             sl_json_str(s, "status.url"),
                             sl_json_str(s, "status.latestCreatedRevisionName"),
                             sl_json_str(s, "status.latestReadyRevisionName"),
                             ready,
                             reason};
        sl_table_add(t, row);
    }
    sl_table_print(t);
}

int sl_cmd_services(int argc, char **argv)
{
    get_args_t a;
    int rc =
        parse_get(argc, argv, "Usage: sluice services [-n NS] [-o json|yaml]\n\nList services.\n",
                  0, false, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    sl_autofree char *path = ns_list_path("/apis/serving.knative.dev/v1", "services", &a);
    return show_list(&a.o, path, print_services);
}

static void print_instances(json_t *list)
{
    static const char *h[] = {"NAME",     "REVISION", "STATE", "PID",
                              "INFLIGHT", "CPU",      "AGE",   "STARTUP"};
    sl_table_t *t = sl_table_new(8, h);
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(list, "items"), i, it)
    {
        char pid[32], inflight[32], age[32], startup[32];
        snprintf(pid, sizeof(pid), "%lld",
                 (long long)json_integer_value(json_object_get(it, "pid")));
        snprintf(inflight, sizeof(inflight), "%lld",
                 (long long)json_integer_value(json_object_get(it, "inFlight")));
        snprintf(age, sizeof(age), "%.0fs", json_number_value(json_object_get(it, "ageSeconds")));
        snprintf(startup, sizeof(startup), "%.1fms",
                 json_number_value(json_object_get(it, "startupMs")));
        const char *row[] = {sl_json_str(it, "name"), sl_json_str(it, "revision"),
                             sl_json_str(it, "state"), pid, inflight,
                             /* held to idle CPU between requests, or its own */
                             json_is_true(json_object_get(it, "cpuIdle")) ? "idle" : "full", age,
                             startup};
        sl_table_add(t, row);
    }
    sl_table_print(t);
}

int sl_cmd_instances(int argc, char **argv)
{
    get_args_t a;
    int rc = parse_get(argc, argv,
                       "Usage: sluice instances [NAME] [-n NS] [-o json|yaml]\n\n"
                       "List running instances, of one service or all.\n",
                       1, false, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    sl_autofree char *path = ns_list_path("/apis/sluice.dev/v1", "instances", &a);
    return show_list(&a.o, path, print_instances);
}

static void print_revisions(json_t *list)
{
    static const char *h[] = {"NAME",   "SERVICE", "IMAGE", "CREATED", "TRAFFIC", "TAGS",
                              "ACTUAL", "DESIRED", "MODE",  "READY",   "REASON"};
    sl_table_t *t = sl_table_new(11, h);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(list, "items"), i, r)
    {
        char pct[16], inst[16], desired[16];
        snprintf(desired, sizeof(desired), "%lld",
                 (long long)json_integer_value(sl_json_path(r, "status.desiredReplicas")));
        const char *mode = sl_json_str(r, "status.autoscaler.mode");
        char tags[256] = "";
        size_t ti;
        json_t *tg;
        json_array_foreach(sl_json_path(r, "status.tags"), ti, tg)
        {
            size_t l = strlen(tags);
            snprintf(tags + l, sizeof(tags) - l, "%s%s", l ? "," : "", json_string_value(tg));
        }
        snprintf(pct, sizeof(pct), "%lld%%",
                 (long long)json_integer_value(sl_json_path(r, "status.trafficPercent")));
        snprintf(inst, sizeof(inst), "%lld",
                 (long long)json_integer_value(sl_json_path(r, "status.actualReplicas")));
        json_t *labels = sl_json_path(r, "metadata.labels");
        const char *reason = NULL;
        const char *ready = cond(r, "Ready", &reason);
        const char *row[] = {
            sl_json_str(r, "metadata.name"),
            json_string_value(json_object_get(labels, SL_LABEL_SERVICE)),
            sl_json_str(json_array_get(sl_json_path(r, "spec.containers"), 0), "image"),
            sl_json_str(r, "metadata.creationTimestamp"),
            pct,
            tags,
            inst,
            desired,
            mode ? mode : "-",
            ready,
            reason};
        sl_table_add(t, row);
    }
    sl_table_print(t);
}

int sl_cmd_revisions(int argc, char **argv)
{
    get_args_t a;
    int rc = parse_get(argc, argv,
                       "Usage: sluice revisions [NAME] [-n NS] [-o json|yaml]\n"
                       "       sluice revisions delete REV [-n NS]\n\n"
                       "List revisions, of one service or all; delete one that carries no "
                       "traffic.\n",
                       2, false, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (a.name && !strcmp(a.name, "delete")) {
        if (!a.extra)
            return sl_cli_usage("revisions delete: REV is required");
        sl_autofree char *dpath =
            xasprintf("/apis/serving.knative.dev/v1/namespaces/%s/revisions/%s", a.o.ns, a.extra);
        return delete_object(&a.o, dpath, "revision", a.extra);
    }
    if (a.extra)
        return sl_cli_usage("revisions: unexpected argument '%s'", a.extra);
    sl_autofree char *path = ns_list_path("/apis/serving.knative.dev/v1", "revisions", &a);
    return show_list(&a.o, path, print_revisions);
}

int sl_cmd_describe(int argc, char **argv)
{
    get_args_t a;
    int rc = parse_get(argc, argv,
                       "Usage: sluice describe NAME [-n NS] [-o json|yaml]\n\n"
                       "Show a service (as YAML unless -o json), its revisions and instances.\n",
                       1, false, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (!a.name)
        return sl_cli_usage("describe: NAME is required");
    sl_autofree char *path =
        xasprintf("/apis/serving.knative.dev/v1/namespaces/%s/services/%s", a.o.ns, a.name);
    json_t *svc = NULL;
    if ((rc = fetch(&a.o, path, &svc)))
        return rc;
    if (a.o.output == SL_OUT_JSON) {
        sl_cli_print(svc, SL_OUT_JSON);
        json_decref(svc);
        return 0;
    }
    sl_cli_print(svc, SL_OUT_YAML);
    json_decref(svc);
    if (a.o.output == SL_OUT_YAML)
        return 0;
    sl_autofree char *rpath = ns_list_path("/apis/serving.knative.dev/v1", "revisions", &a);
    sl_autofree char *ipath = ns_list_path("/apis/sluice.dev/v1", "instances", &a);
    json_t *list = NULL;
    if (fetch(&a.o, rpath, &list) == 0) {
        printf("\nRevisions:\n");
        print_revisions(list);
        json_decref(list);
    }
    if (fetch(&a.o, ipath, &list) == 0) {
        printf("\nInstances:\n");
        print_instances(list);
        json_decref(list);
    }
    return 0;
}

int sl_cmd_delete(int argc, char **argv)
{
    get_args_t a;
    int rc = parse_get(argc, argv,
                       "Usage: sluice delete NAME [-n NS]\n\n"
                       "Delete a service: stop its instances and remove its revisions.\n",
                       1, false, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (!a.name)
        return sl_cli_usage("delete: NAME is required");
    sl_autofree char *path =
        xasprintf("/apis/serving.knative.dev/v1/namespaces/%s/services/%s", a.o.ns, a.name);
    return delete_object(&a.o, path, "service", a.name);
}

static void print_images(json_t *list)
{
    static const char *h[] = {"ID", "REF", "LAYERS", "SIZE"};
    sl_table_t *t = sl_table_new(4, h);
    size_t i;
    json_t *im;
    json_array_foreach(json_object_get(list, "items"), i, im)
    {
        char layers[16], size[32], id[20];
        snprintf(layers, sizeof(layers), "%zu", json_array_size(json_object_get(im, "layers")));
        snprintf(size, sizeof(size), "%.1fMB",
                 (double)json_integer_value(json_object_get(im, "size")) / 1e6);
        const char *full = sl_json_str(im, "id");
        snprintf(id, sizeof(id), "%.19s", full ? full : "");
        const char *row[] = {id, sl_json_str(im, "ref"), layers, size};
        sl_table_add(t, row);
    }
    sl_table_print(t);
}

int sl_cmd_images(int argc, char **argv)
{
    get_args_t a;
    int rc = parse_get(argc, argv,
                       "Usage: sluice images [-o json|yaml]\n"
                       "       sluice images import REF\n\n"
                       "List imported images, or import one (oci:DIR[:TAG], docker-archive:FILE, "
                       "dir:ROOTFS).\n",
                       2, false, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    json_t *out = NULL;
    if (a.name && !strcmp(a.name, "import")) {
        if (!a.extra)
            return sl_cli_usage("images import: REF is required");
        sl_autofree char *ref = sl_cli_abs_image_ref(a.extra);
        json_t *body = json_pack("{s:s}", "ref", ref);
        long st;
        rc = sl_cli_call(&a.o, "POST", "/apis/sluice.dev/v1/images", body, &st, &out);
        json_decref(body);
        if (rc)
            return rc;
        if (st != 200) {
            rc = sl_cli_fail(st, out);
            json_decref(out);
            return rc;
        }
        if (a.o.output != SL_OUT_TABLE)
            sl_cli_print(out, a.o.output);
        else
            printf("%s\n", sl_json_str(out, "id"));
        json_decref(out);
        return 0;
    }
    if (a.name)
        return sl_cli_usage("images: unknown subcommand '%s'", a.name);
    return show_list(&a.o, "/apis/sluice.dev/v1/images", print_images);
}

int sl_cmd_logs(int argc, char **argv)
{
    get_args_t a;
    int rc = parse_get(argc, argv,
                       "Usage: sluice logs NAME [-f] [-n NS]\n\n"
                       "Print the service's instance logs, each line prefixed with its instance;\n"
                       "-f keeps following new output.\n",
                       1, true, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (!a.name)
        return sl_cli_usage("logs: NAME is required");
    sl_autofree char *path = xasprintf("/apis/sluice.dev/v1/namespaces/%s/services/%s/logs%s",
                                       a.o.ns, a.name, a.follow ? "?follow=1" : "");
    if (!a.follow) {
        /* A plain GET gives a clear error for an unknown service. */
        sl_autofree char *spath =
            xasprintf("/apis/serving.knative.dev/v1/namespaces/%s/services/%s", a.o.ns, a.name);
        json_t *svc = NULL;
        if ((rc = fetch(&a.o, spath, &svc)))
            return rc;
        json_decref(svc);
    }
    return sl_cli_stream(&a.o, path);
}

static void print_runtimeclasses(json_t *list)
{
    static const char *h[] = {"NAME",    "HANDLER",  "AVAILABLE", "OVERHEAD-CPU", "OVERHEAD-MEMORY",
                              "SECCOMP", "SYSCALLS", "REASON"};
    sl_table_t *t = sl_table_new(8, h);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(list, "items"), i, c)
    {
        char sys[16];
        snprintf(sys, sizeof(sys), "%lld",
                 (long long)json_integer_value(sl_json_path(c, "status.syscalls")));
        const char *row[] = {sl_json_str(c, "metadata.name"),
                             sl_json_str(c, "handler"),
                             json_is_true(sl_json_path(c, "status.available")) ? "yes" : "no",
                             sl_json_str(c, "overhead.podFixed.cpu"),
                             sl_json_str(c, "overhead.podFixed.memory"),
                             sl_json_str(c, "status.seccompProfile"),
                             sys,
                             sl_json_str(c, "status.reason")};
        sl_table_add(t, row);
    }
    sl_table_print(t);
}

int sl_cmd_runtimeclasses(int argc, char **argv)
{
    get_args_t a;
    int rc = parse_get(argc, argv,
                       "Usage: sluice runtimeclasses [-o json|yaml]\n\n"
                       "List runtime classes (built in and applied), whether each is available\n"
                       "on this host and why not, its overhead and its seccomp profile.\n",
                       0, false, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    return show_list(&a.o, "/apis/node.k8s.io/v1/runtimeclasses", print_runtimeclasses);
}

static void print_data(json_t *list, sl_data_kind_t kind)
{
    bool secret = kind == SL_DATA_SECRET;
    static const char *hs[] = {"NAME", "TYPE", "KEYS", "CREATED"};
    static const char *hc[] = {"NAME", "KEYS", "CREATED"};
    sl_table_t *t = secret ? sl_table_new(4, hs) : sl_table_new(3, hc);
    size_t i;
    json_t *obj;
    json_array_foreach(json_object_get(list, "items"), i, obj)
    {
        sl_autofree char *keys = sl_data_keys(kind, obj, NULL);
        const char *name = sl_json_str(obj, "metadata.name");
        const char *created = sl_json_str(obj, "metadata.creationTimestamp");
        const char *rs[] = {name, sl_json_str(obj, "type"), keys, created};
        const char *rc[] = {name, keys, created};
        sl_table_add(t, secret ? rs : rc);
    }
    sl_table_print(t);
}

static void print_secrets(json_t *list)
{
    print_data(list, SL_DATA_SECRET);
}

static void print_configmaps(json_t *list)
{
    print_data(list, SL_DATA_CONFIGMAP);
}

/* One --from-literal K=V or --from-file [K=]PATH into obj's data (base64
 * for a Secret; a ConfigMap's text in data, other bytes in binaryData). */
static int add_entry(json_t *obj, sl_data_kind_t kind, const char *arg, bool file)
{
    const char *eq = strchr(arg, '=');
    const char *path = file && eq ? eq + 1 : arg;
    sl_autofree char *key = NULL;
    if (!file && !eq)
        return sl_cli_usage("--from-literal: expected KEY=VALUE, got '%s'", arg);
    if (eq)
        key = xstrndup(arg, (size_t)(eq - arg));
    else
        key = xstrdup(strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
    if (!sl_data_is_key(key))
        return sl_cli_usage("%s: \"%s\" is not a valid key (letters, digits, '-', '_' or '.')",
                            file ? "--from-file" : "--from-literal", key);
    sl_autofree char *bytes = NULL;
    size_t len = 0;
    if (file) {
        sl_error_t err = {0};
        if (sl_read_file(path, SL_DATA_MAX_BYTES, &bytes, &len, &err) < 0)
            return sl_cli_error("--from-file: %s", err.msg);
    } else {
        bytes = xstrdup(eq + 1);
        len = strlen(bytes);
    }
    /* text: UTF-8 without NUL, which the API's JSON does not carry */
    json_t *text =
        kind == SL_DATA_CONFIGMAP && !memchr(bytes, '\0', len) ? json_stringn(bytes, len) : NULL;
    const char *field = text || kind == SL_DATA_SECRET ? "data" : "binaryData";
    if (json_object_get(sl_json_ensure_obj(obj, "data"), key) ||
        json_object_get(sl_json_ensure_obj(obj, "binaryData"), key)) {
        json_decref(text);
        return sl_cli_usage("cannot add key \"%s\": another key by that name already exists", key);
    }
    if (text) {
        json_object_set_new(json_object_get(obj, field), key, text);
    } else {
        sl_autofree char *b64 = sl_base64_encode(bytes, len);
        json_object_set_new(json_object_get(obj, field), key, json_string(b64));
    }
    return 0;
}

/* `sluice secrets create NAME` / `sluice configmaps create NAME`, as
 * kubectl create secret generic / create configmap do. */
static int data_create(int argc, char **argv, sl_data_kind_t kind)
{
    enum { O_LITERAL = 1000, O_FILE, O_TYPE };
    static const struct option longopts[] = {
        {"from-literal", required_argument, NULL, O_LITERAL},
        {"from-file", required_argument, NULL, O_FILE},
        {"type", required_argument, NULL, O_TYPE},
        {"state-dir", required_argument, NULL, 'S'},
        {"namespace", required_argument, NULL, 'n'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *res = sl_data_resource(kind), *one = sl_data_singular(kind);
    sl_cli_opts_t o;
    sl_cli_opts_init(&o);
    json_t *obj = json_pack("{s:s,s:s,s:{},s:{}}", "apiVersion", "v1", "kind",
                            sl_data_kind_name(kind), "data", "binaryData");
    const char *type = NULL;
    int opt, rc = 0;
    optind = 1;
    while (rc == 0 && (opt = getopt_long(argc, argv, "hn:o:", longopts, NULL)) != -1) {
        if (opt == 'h') {
            printf("Usage: sluice %s create NAME [--from-literal KEY=VALUE]... "
                   "[--from-file [KEY=]PATH]...%s [-n NS]\n\n"
                   "Create a %s from values and files (the key of a file is its name unless\n"
                   "given). Change it later with `sluice apply -f`.\n",
                   res, kind == SL_DATA_SECRET ? " [--type TYPE]" : "", sl_data_kind_name(kind));
            json_decref(obj);
            return 0;
        } else if (opt == O_LITERAL || opt == O_FILE) {
            rc = add_entry(obj, kind, optarg, opt == O_FILE);
        } else if (opt == O_TYPE && kind == SL_DATA_SECRET) {
            type = optarg;
        } else {
            int r = sl_cli_common_opt(&o, opt, optarg);
            rc = r < 0 ? 2 : r == 0 ? sl_cli_usage("see `sluice %s create --help`", res) : 0;
        }
    }
    if (rc == 0 && optind + 1 != argc)
        rc = sl_cli_usage("%s create: expected one NAME", res);
    if (rc) {
        json_decref(obj);
        return rc;
    }
    const char *name = argv[optind];
    json_object_set_new(obj, "metadata", json_pack("{s:s,s:s}", "name", name, "namespace", o.ns));
    if (type)
        json_object_set_new(obj, "type", json_string(type));
    if (kind == SL_DATA_SECRET || !json_object_size(json_object_get(obj, "binaryData")))
        json_object_del(obj, "binaryData");
    /* POST creates: an existing one is left alone (apply changes it) */
    sl_autofree char *path = xasprintf("/api/v1/namespaces/%s/%s", o.ns, res);
    long st;
    json_t *resp = NULL;
    rc = sl_cli_call(&o, "POST", path, obj, &st, &resp);
    if (rc == 0 && st == 409)
        rc = sl_cli_error("%s \"%s\" already exists; change it with `sluice apply -f`", one, name);
    if (rc == 0 && st != 200 && st != 201)
        rc = sl_cli_fail(st, resp);
    else if (rc == 0)
        printf("%s/%s created\n", one, name);
    json_decref(resp);
    json_decref(obj);
    return rc;
}

/* `sluice secrets` and `sluice configmaps`: list, or delete one. */
static int data_cmd(int argc, char **argv, sl_data_kind_t kind)
{
    const char *res = sl_data_resource(kind), *one = sl_data_singular(kind);
    if (argc > 1 && !strcmp(argv[1], "create"))
        return data_create(argc - 1, argv + 1, kind);
    sl_autofree char *usage =
        xasprintf("Usage: sluice %s [-n NS] [-o json|yaml]\n"
                  "       sluice %s create NAME [--from-literal K=V]... [--from-file [K=]PATH]...\n"
                  "       sluice %s delete NAME [-n NS]\n\n"
                  "List the namespace's %ss (names, keys and when each was made; -o shows\n"
                  "the objects, values included), create one, or delete one. Update them with\n"
                  "`sluice apply -f` from v1 %s manifests.\n",
                  res, res, res, sl_data_kind_name(kind), sl_data_kind_name(kind));
    get_args_t a;
    int rc = parse_get(argc, argv, usage, 2, false, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (a.name && !strcmp(a.name, "delete")) {
        if (!a.extra)
            return sl_cli_usage("%s delete: NAME is required", res);
        sl_autofree char *dpath = xasprintf("/api/v1/namespaces/%s/%s/%s", a.o.ns, res, a.extra);
        return delete_object(&a.o, dpath, one, a.extra);
    }
    if (a.name)
        return sl_cli_usage("%s: unknown subcommand '%s'", res, a.name);
    sl_autofree char *path = xasprintf("/api/v1/namespaces/%s/%s", a.o.ns, res);
    return show_list(&a.o, path, kind == SL_DATA_SECRET ? print_secrets : print_configmaps);
}

int sl_cmd_secrets(int argc, char **argv)
{
    return data_cmd(argc, argv, SL_DATA_SECRET);
}

int sl_cmd_configmaps(int argc, char **argv)
{
    return data_cmd(argc, argv, SL_DATA_CONFIGMAP);
}
