/*
 * metrics.c — Prometheus registry and text exposition (format 0.0.4).
 *
 * Families keep their series in creation order in a fixed-capacity array
 * (the cap); each series is one allocation made when its label set is first
 * seen, so handles are stable and updates never allocate. Rendering builds
 * the text in a growing buffer and is the only place that formats numbers.
 */
#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

struct sl_metric {
    sl_metric_family_t *fam;
    char **values;
    double value;      /* counter / gauge */
    double sum;        /* histogram */
    uint64_t count;    /* histogram */
    uint64_t *buckets; /* histogram: per-bound counts (non-cumulative), nbounds + 1 */
    unsigned holders;  /* handles given out by sl_metrics_series, each removed once */
};

struct sl_metric_family {
    sl_metric_family_t *next;
    sl_metric_type_t type;
    char *name, *help;
    size_t nlabels;
    char **labels;
    double bounds[SL_METRICS_MAX_BUCKETS];
    size_t nbounds;
    sl_metric_t **series;
    size_t nseries;
    sl_metrics_t *reg;
};

struct sl_metrics {
    sl_metric_family_t *first, **tail;
    size_t max_series;
    uint64_t dropped;
};

sl_metrics_t *sl_metrics_new(size_t max_series)
{
    sl_metrics_t *r = xcalloc(1, sizeof(*r));
    r->tail = &r->first;
    r->max_series = max_series ? max_series : 1;
    return r;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static void series_free(sl_metric_t *m)
{
    free_strv(m->values, m->fam->nlabels);
    free(m->buckets);
    free(m);
}

void sl_metrics_free(sl_metrics_t *reg)
{
    if (!reg)
        return;
    sl_metric_family_t *f = reg->first;
    while (f) {
        sl_metric_family_t *next = f->next;
        for (size_t i = 0; i < f->nseries; i++)
            series_free(f->series[i]);
        free(f->series);
        free_strv(f->labels, f->nlabels);
        free(f->name);
        free(f->help);
        free(f);
        f = next;
    }
    free(reg);
}

/* ---- validation ---- */

static bool valid_name(const char *s, bool colons)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colons && c == ':');
        if (!alpha && !(p != s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static sl_metric_family_t *find_family(const sl_metrics_t *reg, const char *name)
{
    for (sl_metric_family_t *f = reg->first; f; f = f->next)
        if (!strcmp(f->name, name))
            return f;
    return NULL;
}

static int check_labels(sl_metric_type_t type, const char *name, size_t nlabels,
                        const char *const *labels, sl_error_t *err)
{
    if (nlabels > SL_METRICS_MAX_LABELS)
        return sl_error_set(err, EINVAL, "metric %s: at most %d labels, got %zu", name,
                            SL_METRICS_MAX_LABELS, nlabels);
    for (size_t i = 0; i < nlabels; i++) {
        const char *l = labels ? labels[i] : NULL;
        if (!valid_name(l, false))
            return sl_error_set(err, EINVAL, "metric %s: invalid label name '%s'", name,
                                l ? l : "(null)");
        if (!strncmp(l, "__", 2))
            return sl_error_set(err, EINVAL, "metric %s: label name '%s' is reserved", name, l);
        if (type == SL_METRIC_HISTOGRAM && !strcmp(l, "le"))
            return sl_error_set(err, EINVAL, "metric %s: histogram label 'le' is reserved", name);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(labels[j], l))
                return sl_error_set(err, EINVAL, "metric %s: duplicate label '%s'", name, l);
    }
    return 0;
}

static int check_bounds(sl_metric_type_t type, const char *name, const double *bounds,
                        size_t nbounds, sl_error_t *err)
{
    if (type != SL_METRIC_HISTOGRAM)
        return nbounds ? sl_error_set(err, EINVAL, "metric %s: only histograms have buckets", name)
                       : 0;
    if (nbounds < 1 || nbounds > SL_METRICS_MAX_BUCKETS || !bounds)
        return sl_error_set(err, EINVAL, "metric %s: histogram needs 1..%d bucket bounds, got %zu",
                            name, SL_METRICS_MAX_BUCKETS, nbounds);
    for (size_t i = 0; i < nbounds; i++) {
        if (!isfinite(bounds[i]))
            return sl_error_set(err, EINVAL, "metric %s: bucket bounds must be finite", name);
        if (i && !(bounds[i] > bounds[i - 1]))
            return sl_error_set(err, EINVAL, "metric %s: bucket bounds must increase", name);
    }
    return 0;
}

sl_metric_family_t *sl_metrics_family(sl_metrics_t *reg, sl_metric_type_t type, const char *name,
                                      const char *help, size_t nlabels, const char *const *labels,
                                      const double *bounds, size_t nbounds, sl_error_t *err)
{
    if (!valid_name(name, true)) {
        sl_error_set(err, EINVAL, "invalid metric name '%s'", name ? name : "(null)");
        return NULL;
    }
    if (find_family(reg, name) || !strcmp(name, SL_METRIC_DROPPED_SERIES_TOTAL)) {
        sl_error_set(err, EEXIST, "metric %s: already registered", name);
        return NULL;
    }
    if ((unsigned)type > SL_METRIC_HISTOGRAM) {
        sl_error_set(err, EINVAL, "metric %s: unknown type", name);
        return NULL;
    }
    if (check_labels(type, name, nlabels, labels, err) < 0 ||
        check_bounds(type, name, bounds, nbounds, err) < 0)
        return NULL;
    sl_metric_family_t *f = xcalloc(1, sizeof(*f));
    f->type = type;
    f->name = xstrdup(name);
    f->help = xstrdup(help ? help : "");
    f->nlabels = nlabels;
    f->labels = xcalloc(nlabels ? nlabels : 1, sizeof(char *));
    for (size_t i = 0; i < nlabels; i++)
        f->labels[i] = xstrdup(labels[i]);
    if (nbounds)
        memcpy(f->bounds, bounds, nbounds * sizeof(double));
    f->nbounds = nbounds;
    f->series = xcalloc(reg->max_series, sizeof(*f->series));
    f->reg = reg;
    *reg->tail = f;
    reg->tail = &f->next;
    return f;
}

sl_metric_t *sl_metrics_series(sl_metric_family_t *f, const char *const *values)
{
    if (!f)
        return NULL;
    for (size_t i = 0; i < f->nseries; i++) {
        size_t k = 0;
        while (k < f->nlabels && !strcmp(f->series[i]->values[k], values[k] ? values[k] : ""))
            k++;
        if (k == f->nlabels) {
            f->series[i]->holders++;
            return f->series[i];
        }
    }
    if (f->nseries >= f->reg->max_series) {
        f->reg->dropped++;
        return NULL;
    }
    sl_metric_t *m = xcalloc(1, sizeof(*m));
    m->fam = f;
    m->holders = 1;
    m->values = xcalloc(f->nlabels ? f->nlabels : 1, sizeof(char *));
    for (size_t k = 0; k < f->nlabels; k++)
        m->values[k] = xstrdup(values[k] ? values[k] : "");
    if (f->type == SL_METRIC_HISTOGRAM)
        m->buckets = xcalloc(f->nbounds + 1, sizeof(uint64_t));
    f->series[f->nseries++] = m;
    return m;
}

void sl_metric_remove(sl_metric_t *m)
{
    if (!m || --m->holders > 0)
        return; /* another holder of the same labels still uses it */
    sl_metric_family_t *f = m->fam;
    for (size_t i = 0; i < f->nseries; i++) {
        if (f->series[i] != m)
            continue;
        /* Keep the order of the rest: the exposition lists series as made. */
        memmove(&f->series[i], &f->series[i + 1], (f->nseries - i - 1) * sizeof(*f->series));
        f->nseries--;
        break;
    }
    series_free(m);
}

/* ---- updates ---- */

void sl_metric_add(sl_metric_t *m, double v)
{
    if (!m || isnan(v) || m->fam->type == SL_METRIC_HISTOGRAM)
        return;
    if (m->fam->type == SL_METRIC_COUNTER && v < 0)
        return;
    m->value += v;
}

void sl_metric_inc(sl_metric_t *m)
{
    sl_metric_add(m, 1);
}

void sl_metric_set(sl_metric_t *m, double v)
{
    if (!m || isnan(v) || m->fam->type == SL_METRIC_HISTOGRAM)
        return;
    if (m->fam->type == SL_METRIC_COUNTER && v < m->value)
        return;
    m->value = v;
}

void sl_metric_observe(sl_metric_t *m, double v)
{
    if (!m || isnan(v) || m->fam->type != SL_METRIC_HISTOGRAM)
        return;
    size_t i = 0;
    while (i < m->fam->nbounds && v > m->fam->bounds[i])
        i++;
    m->buckets[i]++;
    m->count++;
    m->sum += v;
}

double sl_metric_value(const sl_metric_t *m)
{
    if (!m)
        return 0;
    return m->fam->type == SL_METRIC_HISTOGRAM ? (double)m->count : m->value;
}

uint64_t sl_metrics_dropped(const sl_metrics_t *reg)
{
    return reg->dropped;
}

/* ---- rendering ---- */

static void buf_puts(sl_buf_t *b, const char *s)
{
    sl_buf_put(b, s, strlen(s));
}

/* Escape \ and newline (HELP), plus " when quoted (label values). */
static void buf_escaped(sl_buf_t *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_puts(b, "\\\\");
        else if (*s == '\n')
            buf_puts(b, "\\n");
        else if (quote && *s == '"')
            buf_puts(b, "\\\"");
        else
            sl_buf_put(b, s, 1);
    }
}

/* Shortest text that reads back as v; Prometheus spellings for infinities. */
static void fmt_double(double v, char *out, size_t n)
{
    if (isnan(v)) {
        snprintf(out, n, "NaN");
    } else if (isinf(v)) {
        snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(out, n, "%.0f", v == 0 ? 0.0 : v); /* integers plainly; no "-0" */
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(out, n, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                return;
        }
    }
}

static void buf_double(sl_buf_t *b, double v)
{
    char tmp[64];
    fmt_double(v, tmp, sizeof(tmp));
    buf_puts(b, tmp);
}

static void buf_u64(sl_buf_t *b, uint64_t v)
{
    char tmp[32];
    snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);
    buf_puts(b, tmp);
}

/* name{labels[,le="x"]} */
static void render_head(sl_buf_t *b, const sl_metric_t *m, const char *suffix, const char *le)
{
    const sl_metric_family_t *f = m->fam;
    buf_puts(b, f->name);
    buf_puts(b, suffix);
    if (!f->nlabels && !le)
        return;
    buf_puts(b, "{");
    for (size_t k = 0; k < f->nlabels; k++) {
        if (k)
            buf_puts(b, ",");
        buf_puts(b, f->labels[k]);
        buf_puts(b, "=\"");
        buf_escaped(b, m->values[k], true);
        buf_puts(b, "\"");
    }
    if (le) {
        buf_puts(b, f->nlabels ? ",le=\"" : "le=\"");
        buf_puts(b, le);
        buf_puts(b, "\"");
    }
    buf_puts(b, "}");
}

static void render_histogram(sl_buf_t *b, const sl_metric_t *m)
{
    const sl_metric_family_t *f = m->fam;
    uint64_t cum = 0;
    char le[64];
    for (size_t i = 0; i <= f->nbounds; i++) {
        cum += m->buckets[i];
        if (i < f->nbounds)
            fmt_double(f->bounds[i], le, sizeof(le));
        else
            snprintf(le, sizeof(le), "+Inf");
        render_head(b, m, "_bucket", le);
        buf_puts(b, " ");
        buf_u64(b, cum);
        buf_puts(b, "\n");
    }
    render_head(b, m, "_sum", NULL);
    buf_puts(b, " ");
    buf_double(b, m->sum);
    buf_puts(b, "\n");
    render_head(b, m, "_count", NULL);
    buf_puts(b, " ");
    buf_u64(b, m->count);
    buf_puts(b, "\n");
}

static void render_meta(sl_buf_t *b, const char *name, const char *help, const char *type)
{
    buf_puts(b, "# HELP ");
    buf_puts(b, name);
    buf_puts(b, " ");
    buf_escaped(b, help, false);
    buf_puts(b, "\n# TYPE ");
    buf_puts(b, name);
    buf_puts(b, " ");
    buf_puts(b, type);
    buf_puts(b, "\n");
}

static void render_family(sl_buf_t *b, const sl_metric_family_t *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    render_meta(b, f->name, f->help, types[f->type]);
    for (size_t i = 0; i < f->nseries; i++) {
        const sl_metric_t *m = f->series[i];
        if (f->type == SL_METRIC_HISTOGRAM) {
            render_histogram(b, m);
            continue;
        }
        render_head(b, m, "", NULL);
        buf_puts(b, " ");
        buf_double(b, m->value);
        buf_puts(b, "\n");
    }
}

int sl_metrics_render(const sl_metrics_t *reg, char **out, size_t *len)
{
    sl_buf_t b = {0};
    sl_buf_put(&b, "", 0); /* "" when there is nothing to render */
    for (const sl_metric_family_t *f = reg->first; f; f = f->next)
        render_family(&b, f);
    render_meta(&b, SL_METRIC_DROPPED_SERIES_TOTAL,
                "Label sets refused because their metric was at its series cap.", "counter");
    buf_puts(&b, SL_METRIC_DROPPED_SERIES_TOTAL " ");
    buf_u64(&b, reg->dropped);
    buf_puts(&b, "\n");
    *out = b.p;
    *len = b.len;
    return 0;
}
