/*
 * cmd_usage.c — `sluice usage [NAME] [--since T] [--model M] [-n NS] [-o json|yaml]`:
 * metered usage and its cost under each billing model, side by side, and
 * what Cloud Run's concurrency-aware billing saves against the others.
 *
 * --since takes RFC 3339 (2024-05-01T12:00:00Z, offsets and fractions
 * allowed), a relative duration back from now (90s, 30m, 1h, 2d, 1h30m) or
 * epoch seconds; the API receives epoch seconds. --model narrows the table;
 * -o json|yaml prints the API's report (meter.h, prices.h) unchanged.
 */
#include "cli.h"
#include "meter.h"
#include "service.h"

#include <getopt.h>
#include <stdio.h>
#include <time.h>

/* Declared here until the command table (cli.h) lists it. */
int sl_cmd_usage(int argc, char **argv);

static const char usage_text[] =
    "Usage: sluice usage [NAME] [--since T] [--model cloudrun|instance|lambda|fargate|all]\n"
    "                    [-n NS] [-o json|yaml]\n\n"
    "Metered usage and its cost under each billing model: Cloud Run request-based\n"
    "(busy time, concurrent requests counted once, 100 ms rounding), Cloud Run\n"
    "instance-based (whole lifetime), Lambda (every request, 1 ms rounding) and\n"
    "Fargate (lifetime, 60 s minimum).\n\n"
    "  --since T   RFC 3339 time, a duration back from now (30m, 1h, 2d) or epoch\n"
    "              seconds; default: all recorded usage\n"
    "  --model M   show only one model (default all)\n";

/* "1h30m", "45s", "2d" → seconds. */
static int parse_duration(const char *s, int64_t *out)
{
    int64_t total = 0;
    if (!*s)
        return -1;
    while (*s) {
        int64_t n = 0;
        const char *start = s;
        while (*s >= '0' && *s <= '9') {
            if (n > INT64_MAX / 10 - 10)
                return -1;
            n = n * 10 + (*s++ - '0');
        }
        if (s == start)
            return -1;
        int64_t unit;
        switch (*s++) {
        case 's':
            unit = 1;
            break;
        case 'm':
            unit = 60;
            break;
        case 'h':
            unit = 3600;
            break;
        case 'd':
            unit = 86400;
            break;
        case 'w':
            unit = 7 * 86400;
            break;
        default:
            return -1;
        }
        if (n > (INT64_MAX - total) / unit)
            return -1;
        total += n * unit;
    }
    *out = total;
    return 0;
}

static int parse_since(const char *s, int64_t *out)
{
    int64_t v, d;
    if (sl_parse_int64(s, 0, INT64_MAX, &v) == 0) {
        *out = v;
        return 0;
    }
    if (sl_parse_rfc3339(s, out) == 0)
        return 0;
    if (parse_duration(s, &d) == 0) {
        int64_t now = (int64_t)time(NULL);
        *out = d >= now ? 0 : now - d;
        return 0;
    }
    return -1;
}

typedef struct usage_args {
    sl_cli_opts_t o;
    const char *name;
    int64_t since;
    int model; /* -1 = all */
} usage_args_t;

static int parse_args(int argc, char **argv, usage_args_t *a)
{
    static const struct option longopts[] = {
        {"state-dir", required_argument, NULL, 'S'},
        {"namespace", required_argument, NULL, 'n'},
        {"output", required_argument, NULL, 'o'},
        {"since", required_argument, NULL, 's'},
        {"model", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof(*a));
    sl_cli_opts_init(&a->o);
    a->model = -1;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "hn:o:", longopts, NULL)) != -1) {
        if (opt == 'h') {
            printf("%s", usage_text);
            return -1;
        } else if (opt == 's') {
            if (parse_since(optarg, &a->since) < 0)
                return sl_cli_usage("--since: expected an RFC 3339 time (2024-05-01T12:00:00Z), "
                                    "a duration (30m, 1h, 2d) or epoch seconds, got '%s'",
                                    optarg);
        } else if (opt == 'm') {
            a->model = strcmp(optarg, "all") ? sl_billing_model_parse(optarg) : -1;
            if (a->model < 0 && strcmp(optarg, "all"))
                return sl_cli_usage("--model: expected cloudrun, instance, lambda, fargate or "
                                    "all, got '%s'",
                                    optarg);
        } else {
            int r = sl_cli_common_opt(&a->o, opt, optarg);
            if (r < 0)
                return 2;
            if (r == 0) {
                fprintf(stderr, "%s", usage_text);
                return 2;
            }
        }
    }
    if (argc - optind > 1)
        return sl_cli_usage("unexpected argument '%s'", argv[optind + 1]);
    if (argc - optind == 1)
        a->name = argv[optind];
    return 0;
}

static double model_num(const json_t *report, const char *model, const char *key)
{
    json_t *mo =
        json_object_get(json_object_get(json_object_get(report, "totals"), "models"), model);
    return json_number_value(json_object_get(mo, key));
}

static void print_table(const json_t *report, int only)
{
    static const char *h[] = {"MODEL",        "REQUESTS",    "BILLABLE-SECONDS",
                              "VCPU-SECONDS", "GIB-SECONDS", "COST"};
    const char *cur = json_string_value(json_object_get(report, "currency"));
    json_t *totals = json_object_get(report, "totals");
    long long requests = (long long)json_integer_value(json_object_get(totals, "requests"));
    sl_table_t *t = sl_table_new(6, h);
    for (int k = 0; k < SL_MODEL_COUNT; k++) {
        if (only >= 0 && k != only)
            continue;
        const char *m = sl_billing_model_name(k);
        char req[32], sec[32], vcpu[32], gib[32], cost[48];
        snprintf(req, sizeof(req), "%lld", requests);
        snprintf(sec, sizeof(sec), "%.3f", model_num(report, m, "seconds"));
        snprintf(vcpu, sizeof(vcpu), "%.3f", model_num(report, m, "vcpuSeconds"));
        snprintf(gib, sizeof(gib), "%.3f", model_num(report, m, "gibSeconds"));
        snprintf(cost, sizeof(cost), "%.6f %s", model_num(report, m, "cost"), cur ? cur : "");
        const char *row[] = {m, req, sec, vcpu, gib, cost};
        sl_table_add(t, row);
    }
    sl_table_print(t);
}

static void print_savings(const json_t *report, int only)
{
    json_t *sav = json_object_get(json_object_get(report, "totals"), "savings");
    const char *cur = json_string_value(json_object_get(report, "currency"));
    if (!json_is_object(sav) || (only >= 0 && only == SL_MODEL_CLOUDRUN))
        return;
    printf("\nCloud Run request-based billing (busy time, concurrent requests counted once):\n");
    for (int k = SL_MODEL_INSTANCE; k < SL_MODEL_COUNT; k++) {
        if (only >= 0 && k != only)
            continue;
        json_t *s = json_object_get(sav, sl_billing_model_name(k));
        if (!json_is_object(s))
            continue;
        double secs = json_number_value(json_object_get(s, "seconds"));
        double cost = json_number_value(json_object_get(s, "cost"));
        json_t *pct = json_object_get(s, "percent");
        char pcts[32] = "n/a";
        if (json_is_number(pct))
            snprintf(pcts, sizeof(pcts), "%.1f%%", json_number_value(pct));
        printf("  vs %-9s %s %.3f billable s, %.6f %s (%s)\n", sl_billing_model_name(k),
               cost >= 0 ? "saves" : "costs more by", secs >= 0 ? secs : -secs,
               cost >= 0 ? cost : -cost, cur ? cur : "", pcts);
    }
}

int sl_cmd_usage(int argc, char **argv)
{
    usage_args_t a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    sl_autofree char *path =
        a.name ? xasprintf("/apis/sluice.dev/v1/namespaces/%s/usage?service=%s&since=%lld", a.o.ns,
                           a.name, (long long)a.since)
               : xasprintf("/apis/sluice.dev/v1/namespaces/%s/usage?since=%lld", a.o.ns,
                           (long long)a.since);
    long status = 0;
    json_t *report = NULL;
    if (sl_cli_call(&a.o, "GET", path, NULL, &status, &report) != 0)
        return 1;
    if (status != 200) {
        rc = sl_cli_fail(status, report);
        json_decref(report);
        return rc;
    }
    if (a.o.output != SL_OUT_TABLE) {
        sl_cli_print(report, a.o.output);
    } else {
        print_table(report, a.model);
        print_savings(report, a.model);
    }
    json_decref(report);
    return 0;
}
