/*
 * prices.c — the default list prices, the operator's price file, and costing
 * a usage report under each billing model.
 *
 * Sources (read 2026-11-27; USD, list prices, no discounts):
 *
 *  Cloud Run, tier-1 regions — https://cloud.google.com/run/pricing
 *    request-based billing ("CPU only allocated during request processing"):
 *      $0.00002400 / vCPU-second, $0.00000250 / GiB-second, $0.40 / million
 *      requests; free tier per month 180,000 vCPU-s, 360,000 GiB-s, 2 M requests.
 *    instance-based billing ("CPU always allocated"):
 *      $0.00001800 / vCPU-second, $0.00000200 / GiB-second, no request fee;
 *      free tier per month 240,000 vCPU-s, 450,000 GiB-s.
 *    Usage "rounded up to the nearest 100 millisecond"; request-based
 *    instances are billed while starting, processing requests and shutting
 *    down — https://cloud.google.com/run/docs/configuring/billing-settings
 *
 *  AWS Lambda, x86, us-east-1 — https://aws.amazon.com/lambda/pricing/ and
 *    https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html
 *      $0.0000166667 / GB-second, $0.20 / million requests; duration rounded
 *      up to the nearest 1 ms (since 2020-12-01,
 *      https://aws.amazon.com/blogs/aws/new-for-aws-lambda-1ms-billing-granularity-adds-cost-savings/);
 *      free tier per month 400,000 GB-s, 1 M requests.
 *
 *  AWS Fargate, Linux/x86, us-east-1 — https://aws.amazon.com/fargate/pricing/
 *      $0.04048 / vCPU-hour, $0.004445 / GB-hour; billed per second with a
 *      one-minute minimum; no free tier.
 *
 *  Azure Container Instances —
 * https://azure.microsoft.com/en-us/pricing/details/container-instances/ bills a container group's
 * vCPU and memory per second of its lifetime, i.e. the "instance" usage numbers; its current
 * per-second list prices could not be confirmed from a primary source when this table was written,
 * so no ACI row is built in. An operator can cost ACI by putting ACI's prices into the "instance"
 * section of a price file.
 */
#include "prices.h"
#include "service.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>

#define PRICES_FILE_MAX (1u << 20)
#define PRICE_MAX       1e9

void sl_prices_default(sl_prices_t *p)
{
    memset(p, 0, sizeof(*p));
    memcpy(p->currency, "USD", 4);
    p->cloudrun.vcpu_second = 0.000024;
    p->cloudrun.gib_second = 0.0000025;
    p->cloudrun.per_million_requests = 0.40;
    p->cloudrun.free_vcpu_seconds = 180000;
    p->cloudrun.free_gib_seconds = 360000;
    p->cloudrun.free_requests = 2000000;
    p->instance.vcpu_second = 0.000018;
    p->instance.gib_second = 0.000002;
    p->instance.free_vcpu_seconds = 240000;
    p->instance.free_gib_seconds = 450000;
    p->lambda.gb_second = 0.0000166667;
    p->lambda.per_million_requests = 0.20;
    p->lambda.free_gb_seconds = 400000;
    p->lambda.free_requests = 1000000;
    p->fargate.vcpu_hour = 0.04048;
    p->fargate.gb_hour = 0.004445;
}

/* One numeric field: section, optional "freeTier" sub-object, key. */
typedef struct field {
    const char *section;
    bool free_tier;
    const char *key;
    size_t off;
} field_t;

#define F(sec, ft, key, member)                                                                    \
    {                                                                                              \
        sec, ft, key, offsetof(sl_prices_t, member)                                                \
    }
static const field_t fields[] = {
    F("cloudrun", false, "vcpuSecond", cloudrun.vcpu_second),
    F("cloudrun", false, "gibSecond", cloudrun.gib_second),
    F("cloudrun", false, "perMillionRequests", cloudrun.per_million_requests),
    F("cloudrun", true, "vcpuSeconds", cloudrun.free_vcpu_seconds),
    F("cloudrun", true, "gibSeconds", cloudrun.free_gib_seconds),
    F("cloudrun", true, "requests", cloudrun.free_requests),
    F("instance", false, "vcpuSecond", instance.vcpu_second),
    F("instance", false, "gibSecond", instance.gib_second),
    F("instance", true, "vcpuSeconds", instance.free_vcpu_seconds),
    F("instance", true, "gibSeconds", instance.free_gib_seconds),
    F("lambda", false, "gbSecond", lambda.gb_second),
    F("lambda", false, "perMillionRequests", lambda.per_million_requests),
    F("lambda", true, "gbSeconds", lambda.free_gb_seconds),
    F("lambda", true, "requests", lambda.free_requests),
    F("fargate", false, "vcpuHour", fargate.vcpu_hour),
    F("fargate", false, "gbHour", fargate.gb_hour),
};
#undef F

static const char *const sections[] = {"cloudrun", "instance", "lambda", "fargate"};

static double *field_ptr(sl_prices_t *p, const field_t *f)
{
    return (double *)((char *)p + f->off);
}

static const field_t *find_field(const char *section, bool free_tier, const char *key)
{
    for (size_t i = 0; i < SL_ARRAY_LEN(fields); i++)
        if (!strcmp(fields[i].section, section) && fields[i].free_tier == free_tier &&
            !strcmp(fields[i].key, key))
            return &fields[i];
    return NULL;
}

static bool has_free_tier(const char *section)
{
    for (size_t i = 0; i < SL_ARRAY_LEN(fields); i++)
        if (!strcmp(fields[i].section, section) && fields[i].free_tier)
            return true;
    return false;
}

static int set_number(const char *label, const char *path, const json_t *v, double *dst,
                      sl_error_t *err)
{
    if (!json_is_number(v))
        return sl_error_set(err, EINVAL, "%s: %s: must be a number, got %s", label, path,
                            sl_json_type_name(v));
    double d = json_number_value(v);
    if (!isfinite(d) || d < 0 || d > PRICE_MAX)
        return sl_error_set(err, EINVAL, "%s: %s: must be between 0 and %g, got %g", label, path,
                            PRICE_MAX, d);
    *dst = d;
    return 0;
}

static int load_object(const char *label, const char *section, bool free_tier, const json_t *obj,
                       sl_prices_t *p, sl_error_t *err)
{
    const char *prefix = free_tier ? ".freeTier" : "";
    if (!json_is_object(obj))
        return sl_error_set(err, EINVAL, "%s: %s%s: must be an object, got %s", label, section,
                            prefix, sl_json_type_name(obj));
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        char path[160];
        snprintf(path, sizeof(path), "%s%s.%s", section, prefix, key);
        if (!free_tier && !strcmp(key, "freeTier") && has_free_tier(section)) {
            int rc = load_object(label, section, true, v, p, err);
            if (rc < 0)
                return rc;
            continue;
        }
        const field_t *f = find_field(section, free_tier, key);
        if (!f)
            return sl_error_set(err, EINVAL, "%s: %s: unknown field", label, path);
        int rc = set_number(label, path, v, field_ptr(p, f), err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int load_currency(const char *label, const json_t *v, sl_prices_t *p, sl_error_t *err)
{
    const char *s = json_string_value(v);
    bool ok = s && strlen(s) == 3;
    for (int i = 0; ok && i < 3; i++)
        ok = s[i] >= 'A' && s[i] <= 'Z';
    if (!ok)
        return sl_error_set(
            err, EINVAL, "%s: currency: must be a three-letter ISO 4217 code like \"USD\"", label);
    memcpy(p->currency, s, 4);
    return 0;
}

int sl_prices_from_json(const json_t *j, const char *label, sl_prices_t *p, sl_error_t *err)
{
    sl_prices_t tmp;
    sl_prices_default(&tmp);
    sl_prices_default(p);
    if (!json_is_object(j))
        return sl_error_set(err, EINVAL, "%s: must be a JSON object, got %s", label,
                            sl_json_type_name(j));
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)j, key, v)
    {
        int rc = -EINVAL;
        if (!strcmp(key, "currency")) {
            rc = load_currency(label, v, &tmp, err);
        } else {
            bool known = false;
            for (size_t i = 0; i < SL_ARRAY_LEN(sections) && !known; i++)
                known = !strcmp(key, sections[i]);
            if (!known)
                return sl_error_set(err, EINVAL, "%s: %s: unknown field", label, key);
            rc = load_object(label, key, false, v, &tmp, err);
        }
        if (rc < 0)
            return rc;
    }
    *p = tmp;
    return 0;
}

int sl_prices_load(const char *path, sl_prices_t *p, sl_error_t *err)
{
    sl_prices_default(p);
    sl_autofree char *data = NULL;
    size_t len = 0;
    int rc = sl_read_file(path, PRICES_FILE_MAX, &data, &len, err);
    if (rc < 0)
        return sl_error_wrap(err, "price file %s", path);
    json_error_t jerr;
    json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        return sl_error_set(err, EINVAL, "%s: line %d column %d: %s", path, jerr.line, jerr.column,
                            jerr.text);
    rc = sl_prices_from_json(j, path, p, err);
    json_decref(j);
    return rc;
}

json_t *sl_prices_to_json(const sl_prices_t *p)
{
    json_t *out = json_pack("{s:s}", "currency", p->currency);
    for (size_t i = 0; i < SL_ARRAY_LEN(fields); i++) {
        const field_t *f = &fields[i];
        json_t *sec = json_object_get(out, f->section);
        if (!sec) {
            sec = json_object();
            json_object_set_new(out, f->section, sec);
        }
        if (f->free_tier) {
            json_t *ft = json_object_get(sec, "freeTier");
            if (!ft) {
                ft = json_object();
                json_object_set_new(sec, "freeTier", ft);
            }
            sec = ft;
        }
        json_object_set_new(sec, f->key, json_real(*field_ptr((sl_prices_t *)p, f)));
    }
    return out;
}

double sl_prices_cost(const sl_prices_t *p, const sl_usage_totals_t *t, sl_billing_model_t model)
{
    const sl_model_usage_t *u = &t->model[model < SL_MODEL_COUNT ? model : 0];
    double requests_m = (double)t->requests / 1e6;
    switch (model) {
    case SL_MODEL_CLOUDRUN:
        return u->vcpu_seconds * p->cloudrun.vcpu_second + u->gib_seconds * p->cloudrun.gib_second +
               requests_m * p->cloudrun.per_million_requests;
    case SL_MODEL_INSTANCE:
        return u->vcpu_seconds * p->instance.vcpu_second + u->gib_seconds * p->instance.gib_second;
    case SL_MODEL_LAMBDA:
        /* Lambda prices memory only (CPU scales with it); its "GB" is 1024 MB. */
        return u->gib_seconds * p->lambda.gb_second + requests_m * p->lambda.per_million_requests;
    case SL_MODEL_FARGATE:
        return u->vcpu_seconds / 3600.0 * p->fargate.vcpu_hour +
               u->gib_seconds / 3600.0 * p->fargate.gb_hour;
    default:
        return 0;
    }
}

/* Add models.*.cost to one USAGE object; returns its totals in *t. */
static void annotate_usage(const sl_prices_t *p, json_t *usage, sl_usage_totals_t *t)
{
    sl_usage_totals_from_json(usage, t);
    json_t *models = json_object_get(usage, "models");
    for (int k = 0; k < SL_MODEL_COUNT; k++) {
        json_t *mo = json_object_get(models, sl_billing_model_name(k));
        if (json_is_object(mo))
            json_object_set_new(mo, "cost", json_real(sl_prices_cost(p, t, k)));
    }
}

static json_t *savings_json(const sl_prices_t *p, const sl_usage_totals_t *t)
{
    json_t *out = json_object();
    double cr_cost = sl_prices_cost(p, t, SL_MODEL_CLOUDRUN);
    double cr_sec = t->model[SL_MODEL_CLOUDRUN].seconds;
    for (int k = SL_MODEL_INSTANCE; k < SL_MODEL_COUNT; k++) {
        double other = sl_prices_cost(p, t, k);
        json_t *pct = other > 0 ? json_real((other - cr_cost) / other * 100.0) : json_null();
        json_object_set_new(out, sl_billing_model_name(k),
                            json_pack("{s:f, s:f, s:o}", "seconds", t->model[k].seconds - cr_sec,
                                      "cost", other - cr_cost, "percent", pct));
    }
    return out;
}

void sl_prices_annotate(const sl_prices_t *p, json_t *report)
{
    if (!json_is_object(report))
        return;
    json_object_set_new(report, "currency", json_string(p->currency));
    json_object_set_new(report, "prices", sl_prices_to_json(p));
    sl_usage_totals_t t;
    json_t *totals = json_object_get(report, "totals");
    if (json_is_object(totals)) {
        annotate_usage(p, totals, &t);
        json_object_set_new(totals, "savings", savings_json(p, &t));
    }
    size_t i;
    json_t *rev;
    json_array_foreach(json_object_get(report, "revisions"), i, rev)
    {
        if (json_is_object(rev))
            annotate_usage(p, rev, &t);
    }
}
