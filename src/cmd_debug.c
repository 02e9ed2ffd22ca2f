/*
 * cmd_debug.c — `sluice debug NAME [--instance ID] [--image REF] [-- CMD...]`:
 * an ephemeral debug container beside a running instance (kubectl debug
 * --target). The daemon names the instance and its pid; this process builds
 * and runs the container itself (sl_debug_run), attached to the terminal,
 * with the instance's memory and CPU limits in a cgroup of its own, and
 * exits with the command's status.
 */
#include "cli.h"
#include "image.h"
#include "service.h"
#include "supervisor.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: sluice debug NAME [--instance ID] [--image REF] [-n NS] [--state-dir DIR]\n"
               "                    [--privileged-debug] [-- CMD...]\n"
               "Start an ephemeral container that joins a running instance's pid, network,\n"
               "ipc and uts namespaces; the app is untouched. Default image: busybox-static;\n"
               "default command: sh (interactive when stdin is a terminal).\n"
               "--privileged-debug is needed for sandboxed instances.\n");
}

typedef struct debug_opts {
    sl_cli_opts_t common;
    const char *name, *instance, *image;
    bool privileged;
    char **cmd;
} debug_opts_t;

static int parse(int argc, char **argv, debug_opts_t *o)
{
    static const struct option longopts[] = {
        {"state-dir", required_argument, NULL, 'S'},
        {"namespace", required_argument, NULL, 'n'},
        {"instance", required_argument, NULL, 'I'},
        {"image", required_argument, NULL, 'i'},
        {"privileged-debug", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    sl_cli_opts_init(&o->common);
    int opt;
    optind = 1;
    /* GNU order: options may follow NAME; "--" ends them, CMD follows */
    while ((opt = getopt_long(argc, argv, "hn:", longopts, NULL)) != -1) {
        int c = sl_cli_common_opt(&o->common, opt, optarg);
        if (c < 0)
            return 2;
        if (c > 0)
            continue;
        switch (opt) {
        case 'I':
            o->instance = optarg;
            break;
        case 'i':
            o->image = optarg;
            break;
        case 'P':
            o->privileged = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc)
        return sl_cli_usage("debug: NAME is required");
    o->name = argv[optind++];
    o->cmd = optind < argc ? argv + optind : NULL;
    return -1; /* go on */
}

/* The instance to debug: --instance, else the first Ready one. */
static const json_t *pick_instance(const json_t *items, const char *want)
{
    size_t i;
    const json_t *it;
    json_array_foreach((json_t *)items, i, it)
    {
        const char *name = json_string_value(json_object_get(it, "name"));
        const char *st = json_string_value(json_object_get(it, "state"));
        if (want ? (name && strcmp(name, want) == 0) : (st && strcmp(st, "Ready") == 0))
            return it;
    }
    return NULL;
}

/* The target's cgroup limits from its instance item; absent = unlimited. */
static void target_limits(const json_t *it, sl_debug_spec_t *d)
{
    const json_t *limits = json_object_get(it, "limits");
    const char *cpu = json_string_value(json_object_get(limits, "cpu"));
    const char *mem = json_string_value(json_object_get(limits, "memory"));
    if (cpu && sl_parse_cpu(cpu, &d->cpu_millis) < 0)
        d->cpu_millis = 0;
    if (mem && sl_parse_memory(mem, &d->memory_limit) < 0)
        d->memory_limit = 0;
}

static int find_target(const debug_opts_t *o, sl_debug_spec_t *d)
{
    sl_autofree char *path =
        xasprintf("/apis/sluice.dev/v1/namespaces/%s/instances?service=%s", o->common.ns, o->name);
    long status = 0;
    json_t *body = NULL;
    if (sl_cli_call(&o->common, "GET", path, NULL, &status, &body) < 0 || status != 200) {
        int rc = status ? sl_cli_fail(status, body) : 1;
        json_decref(body);
        return rc;
    }
    const json_t *it = pick_instance(json_object_get(body, "items"), o->instance);
    int rc = 0;
    if (!it && o->instance)
        rc = sl_cli_error("service %s has no instance %s", o->name, o->instance);
    else if (!it)
        rc = sl_cli_error("service %s has no ready instance to debug (it may be scaled to zero; "
                          "send it a request first)",
                          o->name);
    else if ((d->target_pid = (int)json_integer_value(json_object_get(it, "pid"))) <= 1)
        rc = sl_cli_error("instance %s has no process yet",
                          json_string_value(json_object_get(it, "name")));
    else
        target_limits(it, d);
    json_decref(body);
    return rc;
}

int sl_cmd_debug(int argc, char **argv)
{
    debug_opts_t o = {0};
    int rc = parse(argc, argv, &o);
    if (rc >= 0)
        return rc;
    sl_debug_spec_t d = {
        .state_dir = o.common.state_dir,
        .argv = o.cmd,
        .terminal = isatty(0) && isatty(1),
        .privileged = o.privileged,
    };
    if ((rc = find_target(&o, &d)) != 0)
        return rc;
    sl_image_t *img = NULL;
    sl_error_t err = {0};
    if (o.image) {
        sl_autofree char *ref = sl_cli_abs_image_ref(o.image);
        if (sl_image_import(o.common.state_dir, ref, NULL, &img, &err) < 0)
            return sl_cli_error("--image: %s", err.msg);
    }
    if (img) {
        d.layers = img->layers;
        d.n_layers = img->n_layers;
    }
    int code = 1;
    rc = sl_debug_run(&d, &code, &err);
    sl_image_free(img);
    if (rc < 0)
        return sl_cli_error("debug: %s", err.msg);
    return code;
}
