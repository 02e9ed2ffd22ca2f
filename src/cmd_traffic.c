/*
 * cmd_traffic.c — `sluice traffic NAME REV=PCT... [--latest=PCT]
 * [--tag REV=TAG]... [--untag TAG]...`: rewrites spec.traffic the way
 * `gcloud run services update-traffic` does. Percent entries replace the
 * split (they must add up to 100); tags attach to a revision (or to the
 * latest one with latest=TAG) without moving traffic.
 */
#include "cli.h"
#include "service.h"

#include <getopt.h>
#include <stdio.h>

static void traffic_usage(FILE *f)
{
    fprintf(f, "Usage: sluice traffic NAME [REV=PCT]... [--latest=PCT] [--tag REV=TAG]...\n"
               "                     [--untag TAG]... [-n NS] [-o json|yaml]\n\n"
               "Split a service's traffic across revisions by percent and tag revisions.\n"
               "A tag T serves its revision at http://T-NAME.DOMAIN:PORT. Use REV `latest`\n"
               "in --tag for the latest ready revision.\n");
}

/* Find the entry for a revision (NULL = latestRevision), or NULL. */
static json_t *entry_for(json_t *traffic, const char *rev)
{
    size_t i;
    json_t *t;
    json_array_foreach(traffic, i, t)
    {
        const char *name = json_string_value(json_object_get(t, "revisionName"));
        bool latest = json_is_true(json_object_get(t, "latestRevision"));
        if ((rev == NULL && latest) || (rev && name && !strcmp(name, rev)))
            return t;
    }
    return NULL;
}

static json_t *new_entry(const char *rev, int pct)
{
    return rev ? json_pack("{s:s,s:i}", "revisionName", rev, "percent", pct)
               : json_pack("{s:b,s:i}", "latestRevision", 1, "percent", pct);
}

static int split_kv(const char *arg, char **k, const char **v, const char *what)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1])
        return sl_cli_usage("traffic: expected %s, got '%s'", what, arg);
    *k = xstrndup(arg, (size_t)(eq - arg));
    *v = eq + 1;
    return 0;
}

/* Build the new split from REV=PCT arguments and --latest. */
static int build_split(json_t *old, char **revs, int nrevs, const char *latest_pct, json_t **out)
{
    json_t *split = json_array();
    for (int i = 0; i < nrevs; i++) {
        char *rev = NULL;
        const char *v;
        int64_t pct;
        if (split_kv(revs[i], &rev, &v, "REV=PCT") || sl_parse_int64(v, 0, 100, &pct) < 0) {
            free(rev);
            json_decref(split);
            return sl_cli_usage("traffic: '%s': PCT must be an integer 0..100", revs[i]);
        }
        bool is_latest = !strcmp(rev, "latest") || !strcmp(rev, "LATEST");
        json_array_append_new(split, new_entry(is_latest ? NULL : rev, (int)pct));
        free(rev);
    }
    if (latest_pct) {
        int64_t pct;
        if (sl_parse_int64(latest_pct, 0, 100, &pct) < 0) {
            json_decref(split);
            return sl_cli_usage("--latest: must be an integer 0..100");
        }
        json_array_append_new(split, new_entry(NULL, (int)pct));
    }
    /* Keep the tags the old entries carried. */
    size_t i;
    json_t *t;
    json_array_foreach(old, i, t)
    {
        const char *tag = json_string_value(json_object_get(t, "tag"));
        if (!tag)
            continue;
        const char *rev = json_string_value(json_object_get(t, "revisionName"));
        json_t *e = entry_for(split, rev);
        if (e && !json_object_get(e, "tag"))
            json_object_set_new(e, "tag", json_string(tag));
        else
            json_array_append_new(split,
                                  json_pack("{s:O,s:O,s:i,s:s}", "revisionName",
                                            rev ? json_string(rev) : json_null(), "latestRevision",
                                            json_boolean(rev == NULL), "percent", 0, "tag", tag));
    }
    json_array_foreach(split, i, t)
    {
        if (json_is_null(json_object_get(t, "revisionName")))
            json_object_del(t, "revisionName");
    }
    *out = split;
    return 0;
}

static int apply_tag(json_t *traffic, const char *arg)
{
    char *rev = NULL;
    const char *tag;
    if (split_kv(arg, &rev, &tag, "REV=TAG"))
        return 2;
    bool latest = !strcmp(rev, "latest");
    json_t *e = NULL;
    size_t i;
    json_t *t;
    /* an untagged entry for that revision takes the tag; else a 0 % entry */
    json_array_foreach(traffic, i, t)
    {
        const char *name = json_string_value(json_object_get(t, "revisionName"));
        bool l = json_is_true(json_object_get(t, "latestRevision"));
        if (!json_object_get(t, "tag") &&
            ((latest && l) || (!latest && name && !strcmp(name, rev))))
            e = t;
    }
    if (!e) {
        e = new_entry(latest ? NULL : rev, 0);
        json_array_append_new(traffic, e);
    }
    json_object_set_new(e, "tag", json_string(tag));
    free(rev);
    return 0;
}

static void remove_tag(json_t *traffic, const char *tag)
{
    for (size_t i = 0; i < json_array_size(traffic);) {
        json_t *t = json_array_get(traffic, i);
        const char *have = json_string_value(json_object_get(t, "tag"));
        if (have && !strcmp(have, tag)) {
            if (json_integer_value(json_object_get(t, "percent")) == 0) {
                json_array_remove(traffic, i);
                continue;
            }
            json_object_del(t, "tag");
        }
        i++;
    }
}

int sl_cmd_traffic(int argc, char **argv)
{
    enum { O_LATEST = 1000, O_TAG, O_UNTAG };
    static const struct option longopts[] = {
        {"latest", required_argument, NULL, O_LATEST},
        {"tag", required_argument, NULL, O_TAG},
        {"untag", required_argument, NULL, O_UNTAG},
        {"state-dir", required_argument, NULL, 'S'},
        {"namespace", required_argument, NULL, 'n'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    sl_cli_opts_t o;
    sl_cli_opts_init(&o);
    const char *latest_pct = NULL;
    char *tags[64], *untags[64];
    int ntags = 0, nuntags = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "hn:o:", longopts, NULL)) != -1) {
        if (opt == 'h') {
            traffic_usage(stdout);
            return 0;
        } else if (opt == O_LATEST) {
            latest_pct = optarg;
        } else if (opt == O_TAG || opt == O_UNTAG) {
            if ((opt == O_TAG ? ntags : nuntags) >= 64)
                return sl_cli_usage("traffic: at most 64 --tag/--untag options");
            if (opt == O_TAG)
                tags[ntags++] = optarg;
            else
                untags[nuntags++] = optarg;
        } else {
            int r = sl_cli_common_opt(&o, opt, optarg);
            if (r <= 0) {
                traffic_usage(stderr);
                return 2;
            }
        }
    }
    if (optind >= argc)
        return sl_cli_usage("traffic: NAME is required (see `sluice traffic --help`)");
    const char *name = argv[optind];
    char **revs = argv + optind + 1;
    int nrevs = argc - optind - 1;
    if (!nrevs && !latest_pct && !ntags && !nuntags)
        return sl_cli_usage("traffic: nothing to change: give REV=PCT, --latest, --tag or --untag");
    sl_autofree char *path =
        xasprintf("/apis/serving.knative.dev/v1/namespaces/%s/services/%s", o.ns, name);
    long st;
    json_t *svc = NULL;
    if (sl_cli_call(&o, "GET", path, NULL, &st, &svc) != 0)
        return 1;
    if (st != 200) {
        int rc = sl_cli_fail(st, svc);
        json_decref(svc);
        return rc;
    }
    json_t *spec = json_object_get(svc, "spec");
    json_t *traffic = json_incref(json_object_get(spec, "traffic"));
    if (!traffic)
        traffic = json_array();
    int rc = 0;
    if (nrevs || latest_pct) {
        json_t *split = NULL;
        rc = build_split(traffic, revs, nrevs, latest_pct, &split);
        json_decref(traffic);
        traffic = split;
    }
    for (int i = 0; rc == 0 && i < nuntags; i++)
        remove_tag(traffic, untags[i]);
    for (int i = 0; rc == 0 && i < ntags; i++)
        rc = apply_tag(traffic, tags[i]);
    if (rc == 0) {
        json_object_set_new(spec, "traffic", traffic);
        traffic = NULL;
        json_object_del(svc, "status");
        json_t *resp = NULL;
        if (sl_cli_call(&o, "PUT", path, svc, &st, &resp) != 0) {
            rc = 1;
        } else if (st != 200 && st != 201) {
            rc = sl_cli_fail(st, resp);
        } else if (o.output != SL_OUT_TABLE) {
            sl_cli_print(json_object_get(resp, "status"), o.output);
        } else {
            json_t *t;
            size_t i;
            json_array_foreach(sl_json_path(resp, "status.traffic"), i, t)
            {
                const char *rev = sl_json_str(t, "revisionName");
                const char *tag = sl_json_str(t, "tag");
                printf("%3lld%%  %s%s%s%s\n",
                       (long long)json_integer_value(json_object_get(t, "percent")),
                       rev ? rev : "(latest, none ready)",
                       json_is_true(json_object_get(t, "latestRevision")) ? " (latest)" : "",
                       tag ? "  tag " : "", tag ? tag : "");
                if (sl_json_str(t, "url"))
                    printf("      %s\n", sl_json_str(t, "url"));
            }
        }
        json_decref(resp);
    }
    json_decref(traffic);
    json_decref(svc);
    return rc;
}
