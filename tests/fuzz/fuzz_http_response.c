/*
 * fuzz_http_response.c — libFuzzer driver for sl_http_parse_response.
 *
 * Input: byte 0 picks the request method and limits, bytes 1-2 a split
 * point, the rest is the response. Checks prefix consistency, the resumable
 * variant against a fresh parse, slice bounds, line limits (a line ends at
 * CRLF or, in a response, a bare LF) and the framing rules.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

typedef struct {
    int rc;
    const char *why;
} result_t;

static sl_http_msg_t m1, m2;

static result_t parse(const char *b, size_t n, sl_http_msg_t *m, sl_str_t method,
                      const sl_http_limits_t *lim, bool resume)
{
    result_t r = {0, NULL};
    r.rc = resume ? sl_http_parse_response_resume(b, n, m, method, lim, &r.why)
                  : sl_http_parse_response(b, n, m, method, lim, &r.why);
    return r;
}

static bool same(result_t a, result_t b)
{
    return a.rc == b.rc && (a.rc != SL_ERROR || a.why == b.why);
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

static void check_msg(const sl_http_msg_t *m, sl_str_t method, const char *b, size_t head)
{
    check(m->head_len == head, "head_len");
    check(m->status >= 100 && m->status <= 599, "status range");
    check(m->minor_version == 0 || m->minor_version == 1, "version");
    check(inside(m->reason, b, head), "reason slice");
    for (size_t k = 0; k < m->n_headers; k++) {
        const sl_http_header_t *h = &m->headers[k];
        check(inside(h->name, b, head) && inside(h->value, b, head), "header slices");
        check(h->name.len > 0, "empty name");
        for (size_t i = 0; i < h->value.len; i++) {
            unsigned char c = (unsigned char)h->value.p[i];
            check(c == '\t' || (c >= 0x20 && c != 0x7f), "value chars");
        }
    }
    bool has_cl = sl_http_header_get(m, SL_STR("content-length")).p != NULL;
    bool has_te = sl_http_header_get(m, SL_STR("transfer-encoding")).p != NULL;
    check(!(has_cl && has_te), "CL and TE accepted together");
    bool no_body = m->status < 200 || m->status == 204 || m->status == 304 ||
                   sl_str_eq(method, SL_STR("HEAD")) ||
                   (m->status / 100 == 2 && sl_str_eq(method, SL_STR("CONNECT")));
    if (no_body)
        check(m->body == SL_BODY_NONE, "body on a bodiless response");
    if (m->body == SL_BODY_UNTIL_CLOSE)
        check(!m->keep_alive && !has_cl && !has_te, "until close");
    if (m->body == SL_BODY_CHUNKED)
        check(has_te && m->minor_version == 1, "chunked without TE");
    if (m->body == SL_BODY_LENGTH)
        check(has_cl && m->content_length > 0, "length without CL");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    static const sl_str_t methods[] = {SL_STR("GET"), SL_STR("HEAD"), SL_STR("CONNECT"),
                                       SL_STR("POST")};
    static const sl_http_limits_t lims[] = {{0, 0, 0, 0}, {40, 24, 200, 4}};
    sl_str_t method = methods[data[0] & 3];
    const sl_http_limits_t *lim = (data[0] & 4) ? &lims[1] : NULL;
    size_t n = size - 3;
    size_t split = ((size_t)data[1] << 8 | data[2]) % (n + 1);
    char *b = malloc(n ? n : 1);
    memcpy(b, data + 3, n);

    result_t full = parse(b, n, &m1, method, lim, false);
    check(full.rc == SL_AGAIN || full.rc == SL_ERROR || (full.rc > 0 && (size_t)full.rc <= n),
          "return code");
    if (full.rc == SL_ERROR)
        check(full.why != NULL, "error without why");
    if (full.rc > 0) {
        check_msg(&m1, method, b, (size_t)full.rc);
        if (lim) {
            check(m1.head_len <= lim->max_head && m1.n_headers <= lim->max_headers, "limits");
            for (size_t k = 0; k < m1.n_headers; k++) {
                /* the line ends at its CR, or at a bare LF (responses) */
                const char *v = m1.headers[k].value.p + m1.headers[k].value.len;
                const char *end = b + m1.head_len, *eol = v;
                while (eol < end && *eol != '\r' && *eol != '\n')
                    eol++;
                check(eol < end && (size_t)(eol - m1.headers[k].name.p) <= lim->max_header_line,
                      "max_header_line");
            }
        }
    }

    result_t pre = parse(b, split, &m2, method, lim, false);
    check(pre.rc == SL_AGAIN || same(pre, full), "prefix disagrees");
    if (full.rc == SL_AGAIN)
        check(pre.rc == SL_AGAIN, "prefix decided before the whole");

    sl_http_msg_reset(&m2);
    pre = parse(b, split, &m2, method, lim, true);
    result_t res = pre.rc == SL_AGAIN ? parse(b, n, &m2, method, lim, true) : pre;
    check(same(res, full), "resume disagrees");
    if (res.rc > 0) {
        check_msg(&m2, method, b, (size_t)res.rc);
        check(m2.status == m1.status && m2.body == m1.body && m2.keep_alive == m1.keep_alive &&
                  m2.content_length == m1.content_length && m2.n_headers == m1.n_headers,
              "resume fields");
    }
    free(b);
    return 0;
}
