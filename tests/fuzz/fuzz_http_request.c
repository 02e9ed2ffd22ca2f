/*
 * fuzz_http_request.c — libFuzzer driver for sl_http_parse_request.
 *
 * Input: byte 0 picks the limits, bytes 1-2 a split point, the rest is the
 * request. Checks that a prefix gives SL_AGAIN or the whole input's answer,
 * that the resumable variant (split, and byte by byte) agrees with a fresh
 * parse, that every result slice lies inside the head and obeys the grammar,
 * and that the request re-serialised canonically parses to the same meaning.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

typedef struct {
    int rc, status;
    const char *why;
} result_t;

static sl_http_msg_t m1, m2;

static result_t parse(const char *b, size_t n, sl_http_msg_t *m, const sl_http_limits_t *lim,
                      bool resume)
{
    result_t r = {0, 0, NULL};
    r.rc = resume ? sl_http_parse_request_resume(b, n, m, lim, &r.status, &r.why)
                  : sl_http_parse_request(b, n, m, lim, &r.status, &r.why);
    return r;
}

static bool same(result_t a, result_t b)
{
    if (a.rc != b.rc)
        return false;
    return a.rc != SL_ERROR || (a.status == b.status && a.why == b.why);
}

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "invariant failed: %s\n", what);
        abort();
    }
}

static bool inside(sl_str_t s, const char *b, size_t n)
{
    return s.p == NULL || (s.p >= b && s.p + s.len <= b + n);
}

static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/*
 * Independent model of the framing fields: every Transfer-Encoding element
 * over all lines, and every Content-Length element, trimmed of OWS.
 */
typedef struct {
    size_t te_elems, te_chunked, cl_elems, hosts;
    bool cl_bad;
    uint64_t cl;
} framing_t;

static bool ieq(const char *a, size_t n, const char *lit)
{
    if (n != strlen(lit))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((a[i] | 0x20) != lit[i])
            return false;
    return true;
}

static void model_framing(const sl_http_msg_t *m, framing_t *f)
{
    memset(f, 0, sizeof(*f));
    for (size_t k = 0; k < m->n_headers; k++) {
        const sl_http_header_t *h = &m->headers[k];
        bool te = ieq(h->name.p, h->name.len, "transfer-encoding");
        bool cl = ieq(h->name.p, h->name.len, "content-length");
        f->hosts += ieq(h->name.p, h->name.len, "host");
        if (!te && !cl)
            continue;
        size_t i = 0;
        while (i <= h->value.len) {
            size_t j = i;
            while (j < h->value.len && h->value.p[j] != ',')
                j++;
            size_t a = i, e = j;
            while (a < e && (h->value.p[a] == ' ' || h->value.p[a] == '\t'))
                a++;
            while (e > a && (h->value.p[e - 1] == ' ' || h->value.p[e - 1] == '\t'))
                e--;
            if (te) {
                f->te_elems++;
                f->te_chunked += ieq(h->value.p + a, e - a, "chunked");
            } else {
                uint64_t v = 0;
                f->cl_bad |= a == e;
                for (size_t q = a; q < e; q++) {
                    f->cl_bad |=
                        h->value.p[q] < '0' || h->value.p[q] > '9' || v > 922337203685477580ull;
                    v = v * 10 + (uint64_t)(h->value.p[q] - '0');
                }
                f->cl_bad |= f->cl_elems && v != f->cl;
                f->cl = v;
                f->cl_elems++;
            }
            i = j + 1;
        }
    }
}

static void check_msg(const sl_http_msg_t *m, const char *b, size_t head)
{
    check(m->head_len == head, "head_len");
    check(m->minor_version == 0 || m->minor_version == 1, "version");
    check(inside(m->method, b, head) && inside(m->target, b, head), "request line slices");
    check(m->method.len > 0 && m->target.len > 0, "request line non-empty");
    for (size_t i = 0; i < m->method.len; i++)
        check(is_tchar((unsigned char)m->method.p[i]), "method token");
    for (size_t i = 0; i < m->target.len; i++)
        check((unsigned char)m->target.p[i] > 0x20 && m->target.p[i] != 0x7f, "target chars");
    check(m->n_headers <= SL_HTTP_MAX_HEADERS, "n_headers");
    for (size_t k = 0; k < m->n_headers; k++) {
        const sl_http_header_t *h = &m->headers[k];
        check(inside(h->name, b, head) && inside(h->value, b, head), "header slices");
        check(h->name.len > 0, "empty name");
        for (size_t i = 0; i < h->name.len; i++)
            check(is_tchar((unsigned char)h->name.p[i]), "name token");
        for (size_t i = 0; i < h->value.len; i++) {
            unsigned char c = (unsigned char)h->value.p[i];
            check(c == '\t' || (c >= 0x20 && c != 0x7f), "value chars");
        }
        if (h->value.len) {
            check(h->value.p[0] != ' ' && h->value.p[0] != '\t', "leading OWS");
            char last = h->value.p[h->value.len - 1];
            check(last != ' ' && last != '\t', "trailing OWS");
        }
    }
    bool has_cl = sl_http_header_get(m, SL_STR("content-length")).p != NULL;
    bool has_te = sl_http_header_get(m, SL_STR("transfer-encoding")).p != NULL;
    check(!(has_cl && has_te), "CL and TE accepted together");
    check(m->body != SL_BODY_UNTIL_CLOSE, "request until close");
    check(m->body != SL_BODY_CHUNKED || (has_te && m->minor_version == 1), "chunked without TE");
    check(m->body != SL_BODY_LENGTH || (has_cl && m->content_length > 0), "length without CL");
    check(!has_te || m->body == SL_BODY_CHUNKED, "TE not chunked");
    if (m->minor_version == 1)
        check(m->host.p != NULL, "HTTP/1.1 without host");
    framing_t f;
    model_framing(m, &f);
    check(f.hosts <= 1, "several Host fields accepted");
    if (f.te_elems)
        check(f.te_elems == 1 && f.te_chunked == 1 && m->body == SL_BODY_CHUNKED, "TE model");
    if (f.cl_elems)
        check(!f.cl_bad && m->content_length == f.cl, "CL model");
    check(inside(m->host, b, head), "host slice");
    check(m->path.p == NULL || m->path.len > 0, "empty path");
}

/* Accepted heads respect every limit (0 = default; lines capped at max_head). */
static void check_limits(const sl_http_msg_t *m, const char *b, const sl_http_limits_t *lim)
{
    const sl_http_limits_t *d = &sl_http_default_limits;
    size_t head = lim && lim->max_head ? lim->max_head : d->max_head;
    size_t rl = lim && lim->max_request_line ? lim->max_request_line : d->max_request_line;
    size_t hl = lim && lim->max_header_line ? lim->max_header_line : d->max_header_line;
    size_t nh = lim && lim->max_headers ? lim->max_headers : d->max_headers;
    rl = rl < head ? rl : head;
    hl = hl < head ? hl : head;
    check(m->head_len <= head, "max_head");
    check(m->n_headers <= nh, "max_headers");
    const char *cr = memchr(m->target.p, '\r', (size_t)(b + m->head_len - m->target.p));
    check(cr && (size_t)(cr - m->method.p) <= rl, "max_request_line");
    for (size_t k = 0; k < m->n_headers; k++) {
        const sl_http_header_t *h = &m->headers[k];
        const char *v = h->value.p + h->value.len;
        cr = memchr(v, '\r', (size_t)(b + m->head_len - v));
        check(cr && (size_t)(cr - h->name.p) <= hl, "max_header_line");
    }
}

/* Canonical re-serialisation: must parse to the same meaning. */
static void check_canonical(const sl_http_msg_t *m)
{
    static char out[1 << 18];
    size_t n = 0;
#define PUT(p, l)                                                                                  \
    do {                                                                                           \
        memcpy(out + n, (p), (l));                                                                 \
        n += (l);                                                                                  \
    } while (0)
    PUT(m->method.p, m->method.len);
    PUT(" ", 1);
    PUT(m->target.p, m->target.len);
    PUT(m->minor_version ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n", 11);
    for (size_t k = 0; k < m->n_headers; k++) {
        PUT(m->headers[k].name.p, m->headers[k].name.len);
        PUT(": ", 2);
        PUT(m->headers[k].value.p, m->headers[k].value.len);
        PUT("\r\n", 2);
    }
    PUT("\r\n", 2);
#undef PUT
    const sl_http_limits_t big = {1 << 17, 1 << 17, 1 << 18, SL_HTTP_MAX_HEADERS};
    result_t r = parse(out, n, &m2, &big, false);
    check(r.rc == (int)n, "canonical form rejected");
    check(m2.body == m->body && m2.content_length == m->content_length, "canonical framing");
    check(m2.keep_alive == m->keep_alive && m2.upgrade == m->upgrade &&
              m2.expect_continue == m->expect_continue,
          "canonical connection");
    check(m2.n_headers == m->n_headers, "canonical header count");
    check(m2.host.len == m->host.len &&
              (!m->host.len || !memcmp(m2.host.p, m->host.p, m->host.len)),
          "canonical host");
    check(m2.path.len == m->path.len &&
              (!m->path.len || !memcmp(m2.path.p, m->path.p, m->path.len)),
          "canonical path");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    static const sl_http_limits_t lims[] = {
        {0, 0, 0, 0},
        {32, 24, 160, 4},
        {64, 64, 64, 100},
        {16, 300, 512, 2},
    };
    const sl_http_limits_t *lim = (data[0] & 4) ? NULL : &lims[data[0] & 3];
    size_t n = size - 3;
    size_t split = ((size_t)data[1] << 8 | data[2]) % (n + 1);
    char *b = malloc(n ? n : 1); /* exact size: ASan sees any over-read */
    memcpy(b, data + 3, n);

    result_t full = parse(b, n, &m1, lim, false);
    check(full.rc == SL_AGAIN || full.rc == SL_ERROR || (full.rc > 0 && (size_t)full.rc <= n),
          "return code");
    if (full.rc == SL_ERROR) {
        check(full.why != NULL, "error without why");
        check(full.status == 400 || full.status == 414 || full.status == 431 ||
                  full.status == 501 || full.status == 505,
              "error status");
    }
    if (full.rc > 0) {
        check_msg(&m1, b, (size_t)full.rc);
        check_limits(&m1, b, lim);
        check_canonical(&m1);
    }

    /* a prefix is incomplete or already has the whole input's answer */
    result_t pre = parse(b, split, &m2, lim, false);
    check(pre.rc == SL_AGAIN || same(pre, full), "prefix disagrees");
    if (full.rc == SL_AGAIN)
        check(pre.rc == SL_AGAIN, "prefix decided before the whole");

    /* resumed after the split point: same as fresh */
    sl_http_msg_reset(&m2);
    pre = parse(b, split, &m2, lim, true);
    result_t res = pre.rc == SL_AGAIN ? parse(b, n, &m2, lim, true) : pre;
    check(same(res, full), "resume disagrees");
    if (res.rc > 0) {
        check_msg(&m2, b, (size_t)res.rc);
        check(m2.n_headers == m1.n_headers && m2.body == m1.body &&
                  m2.keep_alive == m1.keep_alive && sl_str_eq(m2.host, m1.host),
              "resume fields");
    }

    /* byte by byte, resumed (small inputs only: it is quadratic per line) */
    if (n <= 2048) {
        sl_http_msg_reset(&m2);
        res.rc = SL_AGAIN;
        for (size_t k = 0; k <= n && res.rc == SL_AGAIN; k++)
            res = parse(b, k, &m2, lim, true);
        check(same(res, full), "byte-by-byte resume disagrees");
    }
    free(b);
    return 0;
}
