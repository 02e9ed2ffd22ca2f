/*
 * fuzz_prices.c — libFuzzer driver for the operator's price-file reader.
 *
 * Parses the input as JSON and loads it as a price table. An accepted table
 * must hold only finite, non-negative prices and survive a round trip
 * through sl_prices_to_json unchanged; a rejected one must leave the
 * defaults and an error message.
 */
#include <math.h>
#include <stdio.h>

#include "prices.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_sane(const sl_prices_t *p)
{
    const double *d = (const double *)&p->cloudrun;
    size_t n = (sizeof(*p) - offsetof(sl_prices_t, cloudrun)) / sizeof(double);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(d[i]) || d[i] < 0)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        return 0;
    sl_prices_t p, d, again;
    sl_error_t err = {0};
    sl_prices_default(&d);
    if (sl_prices_from_json(j, "fuzz", &p, &err) < 0) {
        if (!err.msg[0] || memcmp(&p, &d, sizeof(p)))
            abort();
    } else {
        check_sane(&p);
        json_t *out = sl_prices_to_json(&p);
        if (sl_prices_from_json(out, "again", &again, &err) < 0 || memcmp(&p, &again, sizeof(p))) {
            fprintf(stderr, "round trip changed the table: %s\n", err.msg);
            abort();
        }
        json_decref(out);
    }
    json_decref(j);
    return 0;
}
