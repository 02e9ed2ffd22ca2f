/* Unit tests for the KPA decisions in autoscaler.c, on a synthetic clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "autoscaler.h"

#define S  1000000000ull
#define MS 1000000ull

static sl_as_config_t cfg_for(double target)
{
    sl_as_config_t c;
    sl_as_config_defaults(&c);
    c.target = target;
    c.utilization = 1.0;
    c.stable_window_ns = 10 * S;
    c.scale_to_zero_grace_ns = 2 * S;
    return c;
}

/* A fresh autoscaler with c on the test clock; returns its "now". */
static uint64_t begin(sl_autoscaler_t *as, const sl_as_config_t *c)
{
    uint64_t now = 1000 * S;
    sl_as_init(as, c, now);
    return now;
}

/* Run ticks of 100 ms from *now for `dur`, with concurrency held at v, and
 * the ready count following the decision (instances appear at once). */
static int run(sl_autoscaler_t *as, uint64_t *now, uint64_t dur, double v, int *ready)
{
    sl_as_record(as, v, *now);
    int d = 0;
    for (uint64_t t = 0; t < dur; t += 100 * MS) {
        *now += 100 * MS;
        d = sl_as_decide(as, *ready, *now);
        *ready = d;
    }
    return d;
}

/* Like run, with the rps metric's input: `rate` requests per second arrive
 * evenly, each in flight for 1 ms. */
static int run_rps(sl_autoscaler_t *as, uint64_t *now, uint64_t dur, double rate, int *ready)
{
    uint64_t gap = rate > 0 ? (uint64_t)((double)S / rate) : dur + 1;
    uint64_t next = *now + gap;
    int d = 0;
    for (uint64_t t = 0; t < dur; t += 100 * MS) {
        uint64_t tick = *now + 100 * MS;
        for (; next < tick; next += gap) {
            sl_as_arrival(as, next);
            sl_as_record(as, 1, next);
            sl_as_record(as, 0, next + 1 * MS);
        }
        *now = tick;
        d = sl_as_decide(as, *ready, *now);
        *ready = d;
    }
    return d;
}

static void test_rps_scales_to_request_rate(void **state)
{
    sl_as_config_t c = cfg_for(10);
    c.rps = true;
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 1;
    /* 50 requests per second at a target of 10 per second → 5 instances,
     * although a millisecond each keeps only 0.05 in flight. */
    assert_int_equal(run_rps(&as, &now, 20 * S, 50, &ready), 5);
    assert_float_equal(as.observed_stable, 50, 1);
    sl_as_free(&as);
    /* The same traffic, scaled on concurrency: one instance. */
    c.rps = false;
    now = begin(&as, &c);
    ready = 1;
    assert_int_equal(run_rps(&as, &now, 20 * S, 50, &ready), 1);
    sl_as_free(&as);
}

static void test_rps_step_panics(void **state)
{
    sl_as_config_t c = cfg_for(10);
    c.rps = true;
    c.stable_window_ns = 60 * S;
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 1;
    run_rps(&as, &now, 10 * S, 5, &ready);
    assert_int_equal(ready, 1);
    /* 5 → 200 requests per second: the panic window (6 s) sees it within
     * a second, the stable window (60 s) would take far longer. */
    int d = run_rps(&as, &now, 1 * S, 200, &ready);
    assert_true(as.panic);
    assert_true(d >= 3);
    d = run_rps(&as, &now, 6 * S, 200, &ready);
    assert_int_equal(d, 20);
    sl_as_free(&as);
}

/* With the rps metric the in-flight floor is containerConcurrency's: busy
 * instances stay while no new request arrives, then the revision goes to
 * zero like any other. */
static void test_rps_floor_and_zero(void **state)
{
    sl_as_config_t c = cfg_for(10);
    c.rps = true;
    c.container_concurrency = 2;
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 1;
    run_rps(&as, &now, 10 * S, 10, &ready);
    assert_int_equal(ready, 1);
    /* Ten long requests arrive at once and stay: 10 / 2 instances. */
    for (int k = 0; k < 10; k++)
        sl_as_arrival(&as, now);
    assert_int_equal(run(&as, &now, 2 * S, 10, &ready), 5);
    /* They end; nothing arrives for a window and the grace period. */
    assert_int_equal(run(&as, &now, 13 * S, 0, &ready), 0);
    sl_as_free(&as);
}

/* Arrivals given an earlier time (requests requeued from another revision
 * carry the time they first arrived) count where they are counted: now,
 * after a quiet spell that let the windows read 0 without summing them. */
static void test_requeued_arrivals_after_a_quiet_spell(void **state)
{
    sl_as_config_t c = cfg_for(10);
    c.rps = true;
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 0;
    run_rps(&as, &now, 70 * S, 0, &ready);
    assert_int_equal(ready, 0);
    for (int k = 0; k < 20; k++)
        sl_as_arrival(&as, now - 8 * S);
    now += 100 * MS;
    assert_true(sl_as_decide(&as, 0, now) >= 1);
    assert_true(as.observed_panic > 0 && as.observed_stable > 0);
    sl_as_free(&as);
}

static void test_steady_load_scales_to_demand(void **state)
{
    sl_as_config_t c = cfg_for(10);
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 1;
    /* 35 concurrent requests at target 10 → 4 instances. */
    int d = run(&as, &now, 20 * S, 35, &ready);
    assert_int_equal(d, 4);
    assert_float_equal(as.observed_stable, 35, 0.01);
    sl_as_free(&as);
}

static void test_load_step_panics_within_a_second(void **state)
{
    sl_as_config_t c = cfg_for(10);
    /* aim at half the target, so the panic window (not only the requests in
     * flight right now) decides the step */
    c.utilization = 0.5;
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 1;
    run(&as, &now, 10 * S, 5, &ready);
    assert_int_equal(ready, 1);
    /* Step to 50: panic window (1 s) sees it quickly. */
    int d = run(&as, &now, 1 * S, 50, &ready);
    assert_true(as.panic);
    assert_true(d >= 10);
    /* While panicking, a dip does not scale down. */
    int before = ready;
    d = run(&as, &now, 2 * S, 10, &ready);
    assert_true(d >= before);
    sl_as_free(&as);
}

static void test_scale_to_zero_after_quiet_window_and_grace(void **state)
{
    sl_as_config_t c = cfg_for(10);
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 1;
    run(&as, &now, 3 * S, 3, &ready);
    assert_int_equal(ready, 1);
    /* Idle, but the stable window still remembers load: stays at 1. */
    int d = run(&as, &now, 5 * S, 0, &ready);
    assert_int_equal(d, 1);
    /* After a whole quiet window (+ grace), zero. */
    d = run(&as, &now, 8 * S, 0, &ready);
    assert_int_equal(d, 0);
    sl_as_free(&as);
}

static void test_min_max_and_activation(void **state)
{
    sl_as_config_t c = cfg_for(1);
    c.min_scale = 2;
    c.max_scale = 3;
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 0;
    assert_int_equal(run(&as, &now, 1 * S, 0, &ready), 2);
    assert_int_equal(run(&as, &now, 5 * S, 50, &ready), 3);
    /* From zero, a request asks for activation_scale at once. */
    c.min_scale = 0;
    c.max_scale = 0;
    c.activation_scale = 2;
    sl_as_free(&as);
    sl_as_init(&as, &c, now);
    sl_as_record(&as, 1, now);
    assert_int_equal(sl_as_decide(&as, 0, now + 1), 2);
    /* Idle, the pair still goes to zero: the activation scale holds only
     * while there is demand (the scale-down rate stops it at one). */
    now += 1;
    ready = 2;
    run(&as, &now, 1 * S, 1, &ready);
    assert_int_equal(ready, 2);
    assert_int_equal(run(&as, &now, 20 * S, 0, &ready), 0);
    sl_as_free(&as);
}

static void test_scale_down_rate_limited(void **state)
{
    sl_as_config_t c = cfg_for(10);
    c.panic_threshold_pct = 1000; /* keep out of panic */
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    sl_as_record(&as, 80, now);
    now += 20 * S;
    assert_int_equal(sl_as_decide(&as, 8, now), 8);
    sl_as_record(&as, 1, now);
    now += 20 * S;
    /* demand says 1, but at most halve per step (rate 2) */
    assert_int_equal(sl_as_decide(&as, 8, now), 4);
    sl_as_free(&as);
}

static void test_time_weighting(void **state)
{
    sl_as_config_t c = cfg_for(10);
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    /* 10 for 5 s then 0 for 5 s → average 5 over the 10 s window. */
    sl_as_record(&as, 10, now);
    now += 5 * S;
    sl_as_record(&as, 0, now);
    now += 5 * S;
    sl_as_decide(&as, 1, now);
    assert_float_equal(as.observed_stable, 5.0, 0.05);
    sl_as_free(&as);
}

static int after_drop(uint64_t delay, uint64_t drop_for)
{
    sl_as_config_t c = cfg_for(10);
    c.panic_threshold_pct = 1000;
    c.max_scale_down_rate = 100;
    c.scale_down_delay_ns = delay;
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 1;
    assert_int_equal(run(&as, &now, 15 * S, 40, &ready), 4);
    int d = run(&as, &now, drop_for, 5, &ready);
    sl_as_free(&as);
    return d;
}

static void test_scale_down_delay_holds_the_peak(void **state)
{
    /* Without a delay, a window after the drop the scale is 1 ... */
    assert_int_equal(after_drop(0, 11 * S), 1);
    /* ... with a 5 s delay the higher scale is still held then ... */
    assert_true(after_drop(5 * S, 11 * S) > 1);
    /* ... and released once the lower scale held for the whole delay. */
    assert_int_equal(after_drop(5 * S, 20 * S), 1);
}

static void test_never_below_what_is_in_flight(void **state)
{
    sl_as_config_t c = cfg_for(10);
    c.panic_threshold_pct = 1000; /* no panic: only the floor holds it */
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 1;
    run(&as, &now, 10 * S, 5, &ready);
    /* 100 requests arrive and 10 instances are already up (started by the
     * activator): the stable average is still low, but they stay. */
    ready = 10;
    assert_int_equal(run(&as, &now, 2 * S, 100, &ready), 10);
    sl_as_free(&as);
}

/* After a burst the panic window still remembers it while fewer instances
 * are ready: that is no reason to panic (no demand is left), and during
 * the burst the floor already gives the target's headroom. */
static void test_no_panic_once_the_burst_is_over(void **state)
{
    sl_as_config_t c = cfg_for(10);
    c.utilization = 0.7;
    c.stable_window_ns = 60 * S;
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 1;
    run(&as, &now, 61 * S, 0, &ready);
    ready = 1;
    int during = run(&as, &now, 15 * S, 100, &ready);
    assert_int_equal(during, 15); /* ceil(100 / (10 x 0.7)) */
    sl_as_record(&as, 0, now);
    int most = 0;
    for (int t = 0; t < 300; t++) {
        now += 100 * MS;
        int d = sl_as_decide(&as, ready, now);
        assert_false(as.panic && d > ready);
        most = d > most ? d : most;
        ready = d;
    }
    assert_true(most <= during);
    sl_as_free(&as);
}

/* max-scale-down-rate halves at most once per 2 s (Knative's evaluation
 * period), not at every 100 ms tick. */
static void test_scale_down_once_per_period(void **state)
{
    sl_as_config_t c = cfg_for(10);
    c.panic_threshold_pct = 1000;
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    sl_as_record(&as, 160, now);
    now += 20 * S;
    assert_int_equal(sl_as_decide(&as, 16, now), 16);
    sl_as_record(&as, 1, now);
    now += 20 * S;
    assert_int_equal(sl_as_decide(&as, 16, now), 8);
    now += 1 * S;
    assert_int_equal(sl_as_decide(&as, 8, now), 8);
    now += 1100 * MS;
    assert_int_equal(sl_as_decide(&as, 8, now), 4);
    sl_as_free(&as);
}

/* scale-to-zero-pod-retention-period counts from the decision to go to
 * zero (a quiet stable window), as Knative keeps the last pod. */
static void test_retention_after_the_quiet_window(void **state)
{
    sl_as_config_t c = cfg_for(10);
    c.retention_ns = 5 * S;
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 1;
    run(&as, &now, 3 * S, 3, &ready);
    assert_int_equal(run(&as, &now, 13 * S, 0, &ready), 1); /* window 10 s + 3 s */
    assert_int_equal(run(&as, &now, 3 * S, 0, &ready), 0);  /* past 10 + 5 */
    sl_as_free(&as);
}

/* scale-down-delay keeps the highest decision of the whole delay, so an
 * intermediate peak is held for its own delay (Knative's max.TimeWindow). */
static void test_scale_down_delay_keeps_later_peaks(void **state)
{
    sl_as_config_t c = cfg_for(10);
    c.stable_window_ns = 1 * S;
    c.panic_threshold_pct = 1000;
    c.max_scale_down_rate = 100;
    c.scale_down_delay_ns = 20 * S;
    sl_autoscaler_t as;
    uint64_t now = begin(&as, &c);
    int ready = 1;
    assert_int_equal(run(&as, &now, 5 * S, 90, &ready), 9);
    assert_int_equal(run(&as, &now, 5 * S, 40, &ready), 9);  /* held */
    assert_int_equal(run(&as, &now, 3 * S, 60, &ready), 9);  /* 6 now, 9 still held */
    assert_int_equal(run(&as, &now, 15 * S, 40, &ready), 6); /* 9 gone, 6 held */
    assert_int_equal(run(&as, &now, 10 * S, 40, &ready), 4); /* 6 gone too */
    sl_as_free(&as);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steady_load_scales_to_demand),
        cmocka_unit_test(test_rps_scales_to_request_rate),
        cmocka_unit_test(test_rps_step_panics),
        cmocka_unit_test(test_rps_floor_and_zero),
        cmocka_unit_test(test_requeued_arrivals_after_a_quiet_spell),
        cmocka_unit_test(test_load_step_panics_within_a_second),
        cmocka_unit_test(test_scale_to_zero_after_quiet_window_and_grace),
        cmocka_unit_test(test_min_max_and_activation),
        cmocka_unit_test(test_scale_down_rate_limited),
        cmocka_unit_test(test_time_weighting),
        cmocka_unit_test(test_scale_down_delay_holds_the_peak),
        cmocka_unit_test(test_never_below_what_is_in_flight),
        cmocka_unit_test(test_no_panic_once_the_burst_is_over),
        cmocka_unit_test(test_scale_down_once_per_period),
        cmocka_unit_test(test_retention_after_the_quiet_window),
        cmocka_unit_test(test_scale_down_delay_keeps_later_peaks),
    };
    return cmocka_run_group_tests_name("autoscaler", tests, NULL, NULL);
}
