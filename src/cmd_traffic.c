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

/* What `sluice traffic` asks for. */
typedef struct traffic_change {
    char **revs; /* REV=PCT */
    int nrevs;
    const char *latest_pct; /* --latest */
    char *tags[64], *untags[64];
    int ntags, nuntags;
} traffic_change_t;

/* Read the service at path, change its traffic as asked, write it back
 * (carrying the resourceVersion read). Returns 0 with the write's status and
 * answer, or the exit code after saying why. */
static int set_traffic(const sl_cli_opts_t *o, const char *path, const traffic_change_t *ch,
                       long *st, json_t **resp)
{
    json_t *svc = NULL;
    if (sl_cli_call(o, "GET", path, NULL, st, &svc) != 0)
        return 1;
    if (*st != 200) {
        int rc = sl_cli_fail(*st, svc);
        json_decref(svc);
        return rc;
    }
    json_t *spec = json_object_get(svc, "spec");
    json_t *traffic = json_incref(json_object_get(spec, "traffic"));
    if (!traffic)
        traffic = json_array();
    int rc = 0;
    if (ch->nrevs || ch->latest_pct) {
        json_t *split = NULL;
        rc = build_split(traffic, ch->revs, ch->nrevs, ch->latest_pct, &split);
        json_decref(traffic);
        traffic = split;
    }
    for (int i = 0; rc == 0 && i < ch->nuntags; i++)
        remove_tag(traffic, ch->untags[i]);
    for (int i = 0; rc == 0 && i < ch->ntags; i++)
        rc = apply_tag(traffic, ch->tags[i]);
    if (rc == 0) {
        json_object_set_new(spec, "traffic", traffic);
        traffic = NULL;
        json_object_del(svc, "status");
        if (sl_cli_call(o, "PUT", path, svc, st, resp) != 0)
            rc = 1;
    }
    json_decref(traffic);
    json_decref(svc);
    return rc;
}

static void print_traffic(const sl_cli_opts_t *o, const json_t *resp)
{
    if (o->output != SL_OUT_TABLE) {
        sl_cli_print(json_object_get(resp, "status"), o->output);
        return;
    }
    json_t *t;
    size_t i;
    json_array_foreach(sl_json_path(resp, "status.traffic"), i, t)
    {
        const char *rev = sl_json_str(t, "revisionName");
        const char *tag = sl_json_str(t, "tag");
        printf("%3lld%%  %s%s%s%s\n", (long long)json_integer_value(json_object_get(t, "percent")),
               rev ? rev : "(latest, none ready)",
               json_is_true(json_object_get(t, "latestRevision")) ? " (latest)" : "",
               tag ? "  tag " : "", tag ? tag : "");
        if (sl_json_str(t, "url"))
            printf("      %s\n", sl_json_str(t, "url"));
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
    traffic_change_t ch = {0};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "hn:o:", longopts, NULL)) != -1) {
        if (opt == 'h') {
            traffic_usage(stdout);
            return 0;
        } else if (opt == O_LATEST) {
            ch.latest_pct = optarg;
        } else if (opt == O_TAG || opt == O_UNTAG) {
            if ((opt == O_TAG ? ch.ntags : ch.nuntags) >= 64)
                return sl_cli_usage("traffic: at most 64 --tag/--untag options");
            if (opt == O_TAG)
                ch.tags[ch.ntags++] = optarg;
            else
                ch.untags[ch.nuntags++] = optarg;
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
    ch.revs = argv + optind + 1;
    ch.nrevs = argc - optind - 1;
    if (!ch.nrevs && !ch.latest_pct && !ch.ntags && !ch.nuntags)
        return sl_cli_usage("traffic: nothing to change: give REV=PCT, --latest, --tag or --untag");
    sl_autofree char *path =
        xasprintf("/apis/serving.knative.dev/v1/namespaces/%s/services/%s", o.ns, name);
    /* Read, change, write; again from the read when the service changed
     * in between (a status write by the daemon counts). */
    int rc = 1;
    sl_cli_retry_t rt = {0};
    while (sl_cli_retry_round(&rt)) {
        json_t *resp = NULL;
        long st;
        rc = set_traffic(&o, path, &ch, &st, &resp);
        if (rc == 0 && sl_cli_conflict(st, resp) && !sl_cli_retry_last(&rt)) {
            rt.conflict = resp;
            continue;
        }
        if (rc == 0 && st != 200 && st != 201)
            rc = sl_cli_fail(st, resp);
        else if (rc == 0)
            print_traffic(&o, resp);
        json_decref(resp);
        break;
    }
    return rc;
}
