/*
 * prices.h — the price table the usage report costs its numbers with.
 *
 * Defaults are public list prices (see prices.c for each source and the
 * date it was read); an operator replaces any of them with a JSON file
 * (`sluice serve --prices FILE`) of the same shape sl_prices_to_json prints:
 *
 *   {
 *     "currency": "USD",
 *     "cloudrun": {"vcpuSecond": 0.000024, "gibSecond": 0.0000025,
 *                  "perMillionRequests": 0.40,
 *                  "freeTier": {"vcpuSeconds": 180000, "gibSeconds": 360000,
 *                               "requests": 2000000}},
 *     "instance": {"vcpuSecond": 0.000018, "gibSecond": 0.000002,
 *                  "freeTier": {"vcpuSeconds": 240000, "gibSeconds": 450000}},
 *     "lambda":   {"gbSecond": 0.0000166667, "perMillionRequests": 0.20,
 *                  "freeTier": {"gbSeconds": 400000, "requests": 1000000}},
 *     "fargate":  {"vcpuHour": 0.04048, "gbHour": 0.004445}
 *   }
 *
 * Every field is optional in a file (missing ones keep the default); an
 * unknown field, a negative or non-numeric price, or a malformed currency is
 * an error naming the field. Costs are list costs before any free tier: a
 * usage window is not a billing month, so the free tiers are carried for
 * reference (and reported), not subtracted.
 */
#ifndef SL_PRICES_H
#define SL_PRICES_H

#include "common.h"
#include "meter.h"

#include <jansson.h>

typedef struct sl_prices {
    char currency[8]; /* ISO 4217, e.g. "USD"; NUL-padded */
    struct {
        double vcpu_second, gib_second, per_million_requests;
        double free_vcpu_seconds, free_gib_seconds, free_requests;
    } cloudrun; /* Cloud Run request-based, tier 1 */
    struct {
        double vcpu_second, gib_second;
        double free_vcpu_seconds, free_gib_seconds;
    } instance; /* Cloud Run instance-based, tier 1 */
    struct {
        double gb_second, per_million_requests;
        double free_gb_seconds, free_requests;
    } lambda; /* AWS Lambda x86, us-east-1 */
    struct {
        double vcpu_hour, gb_hour;
    } fargate; /* AWS Fargate Linux/x86, us-east-1 */
} sl_prices_t;

/* The built-in list prices. */
void sl_prices_default(sl_prices_t *p);
/* Defaults overlaid with the JSON file at path (at most 1 MiB). On error p
 * holds the defaults and err names the file and field. */
int sl_prices_load(const char *path, sl_prices_t *p, sl_error_t *err);
/* Same, from a JSON value; label prefixes error messages. */
int sl_prices_from_json(const json_t *j, const char *label, sl_prices_t *p, sl_error_t *err);
/* New reference, the shape above. */
json_t *sl_prices_to_json(const sl_prices_t *p);

/* List cost of the usage under one model (currency units). */
double sl_prices_cost(const sl_prices_t *p, const sl_usage_totals_t *t, sl_billing_model_t model);

/* Add costs to a report built by sl_meter_query, in place: "currency",
 * "prices", models.*.cost in totals and in every revision, and
 * totals.savings (see meter.h). */
void sl_prices_annotate(const sl_prices_t *p, json_t *report);

#endif
