/*
 * test_revision_gc.c — the revision collector's selection rule (Knative's
 * config-gc "v2"): active revisions are never candidates, stale ones go
 * oldest-active first while more than the minimum remain, the rest are cut
 * to the maximum, and each bound can be disabled.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "revision_gc.h"

#define H   3600
#define NOW (1000 * H)

/* revs[i]: created `created_h` hours ago, last routed `idle_h` hours ago. */
static sl_gc_rev_t rev(int created_h, int idle_h, bool active)
{
    return (sl_gc_rev_t){NOW - created_h * H, NOW - idle_h * H, active, false};
}

static sl_revision_gc_t cfg(int64_t create_h, int64_t active_h, int64_t min, int64_t max)
{
    sl_revision_gc_t c;
    sl_revision_gc_defaults(&c);
    c.retain_since_create_s = create_h == SL_GC_DISABLED ? SL_GC_DISABLED : create_h * H;
    c.retain_since_active_s = active_h == SL_GC_DISABLED ? SL_GC_DISABLED : active_h * H;
    c.min_non_active = min;
    c.max_non_active = max;
    return c;
}

static void test_defaults_are_knatives(void **state)
{
    (void)state;
    sl_revision_gc_t c;
    sl_revision_gc_defaults(&c);
    assert_int_equal(c.retain_since_create_s, 48 * H);
    assert_int_equal(c.retain_since_active_s, 15 * H);
    assert_int_equal(c.min_non_active, 20);
    assert_int_equal(c.max_non_active, 1000);
    assert_false(sl_revision_gc_disabled(&c));
}

/* Stale = created > 48h ago and idle > 15h; the active never go. */
static void test_stale_ones_go(void **state)
{
    (void)state;
    sl_revision_gc_t c = cfg(48, 15, 0, 1000);
    sl_gc_rev_t r[] = {
        rev(100, 90, false), /* stale */
        rev(100, 10, false), /* routed 10h ago */
        rev(20, 20, false),  /* created 20h ago */
        rev(100, 90, true),  /* active: latest, traffic or no-gc */
        rev(60, 16, false),  /* stale */
    };
    assert_int_equal(sl_revision_gc_select(r, 5, &c, NOW), 2);
    assert_true(r[0].remove);
    assert_false(r[1].remove);
    assert_false(r[2].remove);
    assert_false(r[3].remove);
    assert_true(r[4].remove);
}

/* The minimum keeps the most recently active of the stale ones. */
static void test_min_keeps_the_newest(void **state)
{
    (void)state;
    sl_revision_gc_t c = cfg(48, 15, 2, 1000);
    sl_gc_rev_t r[] = {rev(200, 50, false), rev(200, 100, false), rev(200, 70, false),
                       rev(200, 60, false), rev(1, 1, true)};
    assert_int_equal(sl_revision_gc_select(r, 5, &c, NOW), 2);
    assert_true(r[1].remove);  /* idle 100h */
    assert_true(r[2].remove);  /* idle 70h */
    assert_false(r[3].remove); /* idle 60h: one of the two kept */
    assert_false(r[0].remove); /* idle 50h */
    /* As many revisions in all as the minimum: nothing is looked at. */
    sl_revision_gc_t c5 = cfg(48, 15, 5, 1000);
    assert_int_equal(sl_revision_gc_select(r, 5, &c5, NOW), 0);
}

/* Past the maximum, the least recently active go even if not stale. */
static void test_max_cuts_the_oldest(void **state)
{
    (void)state;
    sl_revision_gc_t c = cfg(48, 15, 0, 2);
    sl_gc_rev_t r[] = {rev(5, 3, false), rev(5, 4, false), rev(5, 1, false), rev(5, 2, false),
                       rev(5, 5, true)};
    assert_int_equal(sl_revision_gc_select(r, 5, &c, NOW), 2);
    assert_true(r[0].remove);  /* idle 3h */
    assert_true(r[1].remove);  /* idle 4h */
    assert_false(r[2].remove); /* idle 1h */
    assert_false(r[3].remove); /* idle 2h */
    assert_false(r[4].remove); /* active */
}

/* Each bound can be disabled; all three disabled deletes nothing. */
static void test_disabled_bounds(void **state)
{
    (void)state;
    sl_gc_rev_t r[] = {rev(500, 400, false), rev(500, 300, false), rev(1, 1, false)};
    sl_revision_gc_t no_time = cfg(SL_GC_DISABLED, SL_GC_DISABLED, 0, 1);
    assert_int_equal(sl_revision_gc_select(r, 3, &no_time, NOW), 2); /* by count only */
    assert_true(r[0].remove && r[1].remove && !r[2].remove);
    sl_revision_gc_t create_only = cfg(48, SL_GC_DISABLED, 0, SL_GC_DISABLED);
    assert_int_equal(sl_revision_gc_select(r, 3, &create_only, NOW), 2);
    assert_false(r[2].remove); /* created 1h ago */
    sl_revision_gc_t none = cfg(SL_GC_DISABLED, SL_GC_DISABLED, 0, SL_GC_DISABLED);
    assert_true(sl_revision_gc_disabled(&none));
    assert_int_equal(sl_revision_gc_select(r, 3, &none, NOW), 0);
    assert_false(r[0].remove || r[1].remove || r[2].remove);
    assert_int_equal(sl_revision_gc_select(NULL, 0, &no_time, NOW), 0);
}

/* Once stale deletions reach the minimum the pass is over, as in Knative:
 * a maximum below the minimum (the CLI refuses one) cuts nothing more. */
static void test_min_ends_the_pass(void **state)
{
    (void)state;
    sl_revision_gc_t c = cfg(48, 15, 3, 1);
    sl_gc_rev_t r[] = {rev(100, 90, false), rev(100, 80, false), rev(100, 70, false),
                       rev(100, 60, false)};
    assert_int_equal(sl_revision_gc_select(r, 4, &c, NOW), 1);
    assert_true(r[0].remove);
    assert_false(r[1].remove || r[2].remove || r[3].remove);
    /* Ties in last-active and creation time are broken by position. */
    sl_revision_gc_t one = cfg(SL_GC_DISABLED, SL_GC_DISABLED, 0, 1);
    sl_gc_rev_t t[] = {rev(5, 5, false), rev(5, 5, false), rev(5, 5, false)};
    assert_int_equal(sl_revision_gc_select(t, 3, &one, NOW), 2);
    assert_true(t[0].remove && t[1].remove && !t[2].remove);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_knatives), cmocka_unit_test(test_stale_ones_go),
        cmocka_unit_test(test_min_keeps_the_newest),  cmocka_unit_test(test_max_cuts_the_oldest),
        cmocka_unit_test(test_disabled_bounds),       cmocka_unit_test(test_min_ends_the_pass),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
