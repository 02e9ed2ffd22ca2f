/*
 * test_http_parse.c — the HTTP/1.1 parser through its public API: valid
 * requests and responses (whole, split at every byte, resumed), the
 * smuggling vectors that must be refused with the right status, limits, and
 * the chunked coding (scan and decode, split anywhere).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "http_parse.h"

/* Literal with its length, so embedded NULs survive. */
#define RAW(s) s, sizeof(s) - 1

static sl_http_msg_t msg; /* large; one shared instance */

static bool str_is(sl_str_t s, const char *want)
{
    if (want == NULL)
        return s.p == NULL;
    return s.p != NULL && s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

#define assert_str(s, want)                                                                        \
    do {                                                                                           \
        if (!str_is((s), (want)))                                                                  \
            fail_msg("%s: got '%.*s', want '%s'", #s, (int)(s).len, (s).p ? (s).p : "(null)",      \
                     (want) ? (want) : "(null)");                                                  \
    } while (0)

/* ---- requests: valid ---------------------------------------------------- */

typedef struct {
    const char *raw;
    size_t len;
    const char *method, *target, *path, *host;
    int minor;
    sl_http_body_t body;
    uint64_t cl;
    bool keep_alive, expect, upgrade;
    size_t n_headers;
} req_case_t;

static const req_case_t valid_requests[] = {
    {RAW("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), "GET", "/", "/", "example.com", 1,
     SL_BODY_NONE, 0, true, false, false, 1},
    {RAW("GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: svc.localhost:8080\r\nUser-Agent: t\r\n"
         "Accept: */*\r\n\r\n"),
     "GET", "/a/b?x=1&y=%20", "/a/b?x=1&y=%20", "svc.localhost:8080", 1, SL_BODY_NONE, 0, true,
     false, false, 3},
    {RAW("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n"), "POST", "/upload",
     "/upload", "h", 1, SL_BODY_LENGTH, 11, true, false, false, 2},
    {RAW("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"), "POST", "/", "/", "h", 1,
     SL_BODY_NONE, 0, true, false, false, 2},
    {RAW("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"), "POST", "/", "/", "h",
     1, SL_BODY_CHUNKED, 0, true, false, false, 2},
    {RAW("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n"), "POST", "/", "/", "h",
     1, SL_BODY_CHUNKED, 0, true, false, false, 2},
    /* OWS after the colon is allowed, leading and trailing, SP or HTAB */
    {RAW("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tchunked\r\n\r\n"), "POST", "/", "/",
     "h", 1, SL_BODY_CHUNKED, 0, true, false, false, 2},
    {RAW("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked \t\r\n\r\n"), "POST", "/", "/",
     "h", 1, SL_BODY_CHUNKED, 0, true, false, false, 2},
    {RAW("GET http://api.example.com:81/v1?q HTTP/1.1\r\nHost: other\r\n\r\n"), "GET",
     "http://api.example.com:81/v1?q", "/v1?q", "api.example.com:81", 1, SL_BODY_NONE, 0, true,
     false, false, 1},
    {RAW("GET HTTPS://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n"), "GET",
     "HTTPS://example.com", "/", "example.com", 1, SL_BODY_NONE, 0, true, false, false, 1},
    {RAW("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), "OPTIONS", "*", "*", "h", 1, SL_BODY_NONE, 0,
     true, false, false, 1},
    {RAW("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"), "CONNECT",
     "example.com:443", NULL, "example.com:443", 1, SL_BODY_NONE, 0, true, false, false, 1},
    {RAW("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), "GET", "/", "/", NULL, 0,
     SL_BODY_NONE, 0, true, false, false, 1},
    {RAW("GET / HTTP/1.0\r\n\r\n"), "GET", "/", "/", NULL, 0, SL_BODY_NONE, 0, false, false, false,
     0},
    {RAW("GET / HTTP/1.0\r\nHost: h\r\nConnection: Keep-Alive, close\r\n\r\n"), "GET", "/", "/",
     "h", 0, SL_BODY_NONE, 0, false, false, false, 2},
    {RAW("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, CLOSE\r\n\r\n"), "GET", "/", "/", "h", 1,
     SL_BODY_NONE, 0, false, false, false, 2},
    {RAW("PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n"), "PUT",
     "/x", "/x", "h", 1, SL_BODY_LENGTH, 5, true, true, false, 3},
    {RAW("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n"
         "Upgrade: websocket\r\n\r\n"),
     "GET", "/ws", "/ws", "h", 1, SL_BODY_NONE, 0, true, false, true, 3},
    /* Connection: upgrade without an Upgrade header is not an upgrade */
    {RAW("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n"), "GET", "/", "/", "h", 1,
     SL_BODY_NONE, 0, true, false, false, 2},
    {RAW("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n"), "POST", "/",
     "/", "h", 1, SL_BODY_LENGTH, 9223372036854775807ull, true, false, false, 2},
    /* leading empty lines before the request line are skipped */
    {RAW("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), "GET", "/", "/", "h", 1, SL_BODY_NONE, 0,
     true, false, false, 1},
    /* empty values, obs-text in values, tchar-rich names, empty Host */
    {RAW("GET / HTTP/1.1\r\nHost:\r\nX-E:\r\nX-U: caf\xc3\xa9\r\n!#$%&'*+-.^_`|~09az: v\r\n\r\n"),
     "GET", "/", "/", "", 1, SL_BODY_NONE, 0, true, false, false, 4},
    {RAW("DELETE /r HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), "DELETE", "/r", "/r", "[::1]:8080", 1,
     SL_BODY_NONE, 0, true, false, false, 1},
};

static void check_req(const req_case_t *c, const sl_http_msg_t *m, int rc)
{
    if (rc != (int)c->len)
        fail_msg("rc %d, want %zu for: %.*s", rc, c->len, (int)c->len, c->raw);
    assert_str(m->method, c->method);
    assert_str(m->target, c->target);
    assert_str(m->path, c->path);
    assert_str(m->host, c->host);
    assert_int_equal(m->minor_version, c->minor);
    assert_int_equal(m->body, c->body);
    if (c->body == SL_BODY_LENGTH)
        assert_true(m->content_length == c->cl);
    assert_int_equal(m->keep_alive, c->keep_alive);
    assert_int_equal(m->expect_continue, c->expect);
    assert_int_equal(m->upgrade, c->upgrade);
    assert_int_equal(m->n_headers, c->n_headers);
    assert_int_equal(m->head_len, c->len);
}

static void test_valid_requests(void **state)
{
    char buf[1024];
    for (size_t k = 0; k < SL_ARRAY_LEN(valid_requests); k++) {
        const req_case_t *c = &valid_requests[k];
        int st = 0;
        const char *why = NULL;
        check_req(c, &msg, sl_http_parse_request(c->raw, c->len, &msg, NULL, &st, &why));

        /* pipelined bytes after the head are not part of it */
        memcpy(buf, c->raw, c->len);
        memcpy(buf + c->len, "GET / HTTP/1.1\r\n", 16);
        check_req(c, &msg, sl_http_parse_request(buf, c->len + 16, &msg, NULL, &st, &why));

        /* every proper prefix needs more bytes */
        for (size_t n = 0; n < c->len; n++) {
            int rc = sl_http_parse_request(c->raw, n, &msg, NULL, &st, &why);
            if (rc != SL_AGAIN)
                fail_msg("case %zu prefix %zu: rc %d (%s)", k, n, rc, rc == SL_ERROR ? why : "");
        }

        /* split at every offset: first part then the whole, fresh and resumed */
        for (size_t n = 0; n <= c->len; n++) {
            sl_http_msg_reset(&msg);
            int rc = sl_http_parse_request_resume(buf, n, &msg, NULL, &st, &why);
            if (n < c->len)
                assert_int_equal(rc, SL_AGAIN);
            check_req(c, &msg, sl_http_parse_request_resume(buf, c->len, &msg, NULL, &st, &why));
        }

        /* byte by byte through the resumable variant */
        sl_http_msg_reset(&msg);
        int rc = SL_AGAIN;
        for (size_t n = 0; n <= c->len && rc == SL_AGAIN; n++)
            rc = sl_http_parse_request_resume(buf, n, &msg, NULL, &st, &why);
        check_req(c, &msg, rc);
    }
}

static void test_header_values(void **state)
{
    static const char r[] = "GET / HTTP/1.1\r\nHost: h\r\nX-A:  \t spaced out \t \r\n"
                            "x-a: second\r\nCookie: a=b; c=d\r\n\r\n";
    int st;
    const char *why;
    assert_int_equal(sl_http_parse_request(r, sizeof(r) - 1, &msg, NULL, &st, &why),
                     (int)sizeof(r) - 1);
    assert_int_equal(msg.n_headers, 4);
    assert_str(msg.headers[1].name, "X-A");
    assert_str(msg.headers[1].value, "spaced out");
    assert_str(sl_http_header_get(&msg, SL_STR("x-A")), "spaced out");
    assert_str(sl_http_header_get(&msg, SL_STR("COOKIE")), "a=b; c=d");
    assert_null(sl_http_header_get(&msg, SL_STR("X-Missing")).p);
    assert_null(sl_http_header_get(&msg, SL_STR("X-")).p);
}

/* ---- requests: rejected ------------------------------------------------- */

typedef struct {
    const char *raw;
    size_t len;
    int status;
} bad_case_t;

#define H "Host: h\r\n"
static const bad_case_t bad_requests[] = {
    /* CL.TE and TE.CL */
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\nContent-Length: 6\r\n\r\n"), 400},
    /* TE.TE obfuscations */
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: xchunked\r\n\r\n"), 501},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding : chunked\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding\t: chunked\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H
         "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"),
     400},
    {RAW("POST / HTTP/1.1\r\n" H
         "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
     400},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, chunked\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, gzip\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\n\r\n"), 501},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip, chunked\r\n\r\n"), 501},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked;q=1\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: \"chunked\"\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: ,chunked\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding:\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\x0b\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\x00\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\rX: y\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.0\r\n" H "Transfer-Encoding: chunked\r\n\r\n"), 400},
    /* obs-fold, including right after the request line */
    {RAW("POST / HTTP/1.1\r\n" H " Transfer-Encoding: chunked\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\n" H "\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\n" H "X-A: a\r\n\tb\r\n\r\n"), 400},
    /* bare LF / bare CR anywhere in the head */
    {RAW("GET / HTTP/1.1\n" H "\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\nHost: h\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\n" H "\n"), 400},
    {RAW("GET / HTTP/1.1\r\n" H "X-A: a\nb\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\n" H "X-A: a\rb\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r" H "\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\n" H "\r\r\n"), 400},
    {RAW("\n\nGET / HTTP/1.1\r\n" H "\r\n"), 400},
    /* NUL and other CTLs in values */
    {RAW("GET / HTTP/1.1\r\n" H "X-A: a\x00b\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\n" H "X-A: a\x01\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\n" H "X-A: a\x7f\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\n" H "X-A: \x1b[31m\r\n\r\n"), 400},
    /* Content-Length */
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: +5\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: -1\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: 5, 6\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 6\r\n\r\n"), 400},
    /* identical values too: forwarded as they came, they would reach the
     * instance as two fields or a list (RFC 9110 §8.6: reject or replace) */
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: 5\r\ncontent-length: 5\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: 7, 7,7\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: 0x10\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: 1 0\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: 5,\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length:\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: 9223372036854775808\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: 99999999999999999999999\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "Content-Length: 5.0\r\n\r\n"), 400},
    /* field names */
    {RAW("GET / HTTP/1.1\r\n" H ": empty\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\n" H "X A: b\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\n" H "X(A): b\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\n" H "X\x80: b\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\n" H "NoColon\r\n\r\n"), 400},
    /* request line and targets: request splitting via CR/LF in the target */
    {RAW("GET /a\r\nX-Injected: 1 HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET /a\nX: 1 HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET /a\rb HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET /a b HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET /a\x00 HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET /\t HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET  / HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET / HTTP/1.1 \r\n" H "\r\n"), 400},
    {RAW("GET /\r\n" H "\r\n"), 400},
    {RAW("GET\r\n" H "\r\n"), 400},
    {RAW(" GET / HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("G(T / HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET a/b HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET * HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET ftp://h/ HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET http:///x HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET http://user@h/ HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("GET http://h?q HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("CONNECT / HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("CONNECT h HTTP/1.1\r\n" H "\r\n"), 400},
    {RAW("CONNECT h:99999 HTTP/1.1\r\n" H "\r\n"), 400},
    /* versions */
    {RAW("GET / HTTP/2.0\r\n" H "\r\n"), 505},
    {RAW("GET / HTTP/1.2\r\n" H "\r\n"), 505},
    {RAW("GET / HTTP/0.9\r\n" H "\r\n"), 505},
    {RAW("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505},
    {RAW("GET / HTTP/1.10\r\n" H "\r\n"), 400},
    {RAW("GET / http/1.1\r\n" H "\r\n"), 400},
    {RAW("GET / HTTP/1\r\n" H "\r\n"), 400},
    {RAW("GET / HTTP/a.b\r\n" H "\r\n"), 400},
    /* Host */
    {RAW("GET / HTTP/1.1\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400},
    {RAW("GET / HTTP/1.1\r\nHost: a:b\r\n\r\n"), 400},
    {RAW("GET http://h/ HTTP/1.1\r\n\r\n"), 400},
    /* Connection options must be tokens */
    {RAW("GET / HTTP/1.1\r\n" H "Connection: close;x\r\n\r\n"), 400},
    /* underscore look-alikes of the framing headers (CGI reads them as real) */
    {RAW("POST / HTTP/1.1\r\n" H "Transfer_Encoding: chunked\r\nContent-Length: 3\r\n\r\n"), 400},
    {RAW("POST / HTTP/1.1\r\n" H "content_length: 3\r\n\r\n"), 400},
    /* too many empty lines before the request line */
    {RAW("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n"), 400},
};

static void test_bad_requests(void **state)
{
    for (size_t k = 0; k < SL_ARRAY_LEN(bad_requests); k++) {
        const bad_case_t *c = &bad_requests[k];
        int st = 0;
        const char *why = NULL;
        int rc = sl_http_parse_request(c->raw, c->len, &msg, NULL, &st, &why);
        if (rc != SL_ERROR || st != c->status)
            fail_msg("case %zu: rc %d status %d (want %d) for: %.*s", k, rc, st, c->status,
                     (int)c->len, c->raw);
        assert_non_null(why);

        /* a prefix is either incomplete or already wrong in the same way */
        for (size_t n = 0; n < c->len; n++) {
            int st2 = 0;
            rc = sl_http_parse_request(c->raw, n, &msg, NULL, &st2, &why);
            if (rc != SL_AGAIN && !(rc == SL_ERROR && st2 == st))
                fail_msg("case %zu prefix %zu: rc %d status %d", k, n, rc, st2);
        }

        /* byte by byte, resumed, ends in the same error */
        sl_http_msg_reset(&msg);
        rc = SL_AGAIN;
        int st3 = 0;
        for (size_t n = 0; n <= c->len && rc == SL_AGAIN; n++)
            rc = sl_http_parse_request_resume(c->raw, n, &msg, NULL, &st3, &why);
        assert_int_equal(rc, SL_ERROR);
        assert_int_equal(st3, st);
    }
}

/* ---- limits ------------------------------------------------------------- */

static int parse_limited(const char *raw, size_t len, const sl_http_limits_t *lim, int *st)
{
    const char *why = NULL;
    *st = 0;
    return sl_http_parse_request(raw, len, &msg, lim, st, &why);
}

static void test_limits(void **state)
{
    static char big[70000];
    int st;
    const sl_http_limits_t lim = {
        .max_request_line = 32, .max_header_line = 16, .max_head = 128, .max_headers = 3};

    /* request line exactly at the limit passes; one more byte is 414 */
    static const char r32[] = "GET /0123456789012345678 HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(strlen("GET /0123456789012345678 HTTP/1.1"), 33);
    static const char r31[] = "GET /012345678901234567 HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(parse_limited(r31, sizeof(r31) - 1, &lim, &st), (int)sizeof(r31) - 1);
    assert_int_equal(parse_limited(r32, sizeof(r32) - 1, &lim, &st), SL_ERROR);
    assert_int_equal(st, 414);
    /* ...detected before the line is complete: 33 bytes, no CRLF yet */
    assert_int_equal(parse_limited(r32, 32, &lim, &st), SL_AGAIN);
    assert_int_equal(parse_limited(r32, 33, &lim, &st), SL_ERROR);
    assert_int_equal(st, 414);

    /* header line: 16 bytes ok, 17 is 431, early too */
    static const char h16[] = "GET / HTTP/1.1\r\nHost: h\r\nX-Ab: 0123456789\r\n\r\n";
    static const char h17[] = "GET / HTTP/1.1\r\nHost: h\r\nX-Ab: 01234567890\r\n\r\n";
    assert_int_equal(parse_limited(h16, sizeof(h16) - 1, &lim, &st), (int)sizeof(h16) - 1);
    assert_int_equal(parse_limited(h17, sizeof(h17) - 1, &lim, &st), SL_ERROR);
    assert_int_equal(st, 431);
    assert_int_equal(parse_limited(h17, 25 + 17, &lim, &st), SL_ERROR);
    assert_int_equal(st, 431);
    assert_int_equal(parse_limited(h17, 25 + 16, &lim, &st), SL_AGAIN);

    /* too many fields: the 4th field line fails as soon as it starts */
    static const char f4[] = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_int_equal(parse_limited(f4, sizeof(f4) - 1, &lim, &st), SL_ERROR);
    assert_int_equal(st, 431);
    assert_int_equal(parse_limited(f4, sizeof(f4) - 3, &lim, &st), SL_ERROR);
    assert_int_equal(st, 431);
    static const char f3[] = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_int_equal(parse_limited(f3, sizeof(f3) - 1, &lim, &st), (int)sizeof(f3) - 1);

    /* whole head: a slowloris sending endless short lines hits max_head */
    const sl_http_limits_t lim2 = {.max_head = 128};
    size_t n = 0;
    n += (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: h\r\n");
    while (n < 200)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "X: y\r\n");
    assert_int_equal(parse_limited(big, 128, &lim2, &st), SL_AGAIN);
    assert_int_equal(parse_limited(big, 129, &lim2, &st), SL_ERROR);
    assert_int_equal(st, 431);
    /* a head of exactly max_head bytes is fine, with more bytes after it */
    n = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: h\r\nX: ");
    while (n < 124)
        big[n++] = 'a';
    memcpy(big + n, "\r\n\r\nGET", 7);
    assert_int_equal(parse_limited(big, 128 + 3, &lim2, &st), 128);
    const sl_http_limits_t lim127 = {.max_head = 127};
    assert_int_equal(parse_limited(big, 128 + 3, &lim127, &st), SL_ERROR);
    assert_int_equal(st, 431);

    /* defaults: 8 KiB request line → 414, 8 KiB header line → 431, 100 fields */
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /", 5);
    assert_int_equal(parse_limited(big, 9000, NULL, &st), SL_ERROR);
    assert_int_equal(st, 414);
    n = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: h\r\nX: ");
    memset(big + n, 'b', 9000);
    assert_int_equal(parse_limited(big, n + 9000, NULL, &st), SL_ERROR);
    assert_int_equal(st, 431);
    n = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 99; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "X-%d: v\r\n", i);
    memcpy(big + n, "\r\n", 2);
    assert_int_equal(parse_limited(big, n + 2, NULL, &st), (int)(n + 2));
    assert_int_equal(msg.n_headers, 100);
    n += (size_t)snprintf(big + n, sizeof(big) - n, "X-last: v\r\n\r\n");
    assert_int_equal(parse_limited(big, n, NULL, &st), SL_ERROR);
    assert_int_equal(st, 431);
    /* max_headers above the array size is capped */
    const sl_http_limits_t lim3 = {.max_headers = 1000};
    assert_int_equal(parse_limited(big, n, &lim3, &st), SL_ERROR);
    assert_int_equal(st, 431);
}

static void test_resume_moved_buffer(void **state)
{
    static const char r[] = "GET /x HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n";
    char a[64], b[64];
    int st;
    const char *why;
    memcpy(a, r, sizeof(r));
    memcpy(b, r, sizeof(r));
    sl_http_msg_reset(&msg);
    assert_int_equal(sl_http_parse_request_resume(a, 30, &msg, NULL, &st, &why), SL_AGAIN);
    /* the caller reallocated: slices must point into the new buffer */
    assert_int_equal(sl_http_parse_request_resume(b, sizeof(r) - 1, &msg, NULL, &st, &why),
                     (int)sizeof(r) - 1);
    assert_ptr_equal(msg.method.p, b);
    assert_ptr_equal(msg.headers[1].name.p, b + 26);
    /* a completed parse leaves no state behind for the next head */
    assert_int_equal(sl_http_parse_request_resume(b, 10, &msg, NULL, &st, &why), SL_AGAIN);
}

static void test_hop_by_hop(void **state)
{
    static const char r[] = "GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Secret , keep-alive\r\n"
                            "connection: x-other, Content-Length,host\r\nX-Secret: 1\r\n\r\n";
    int st;
    const char *why;
    assert_true(sl_http_parse_request(r, sizeof(r) - 1, &msg, NULL, &st, &why) > 0);
    const char *yes[] = {"Connection",
                         "keep-alive",
                         "Proxy-Connection",
                         "TE",
                         "trailer",
                         "Transfer-Encoding",
                         "UPGRADE",
                         "Proxy-Authenticate",
                         "proxy-authorization",
                         "x-secret",
                         "X-Other"};
    const char *no[] = {"Host", "Content-Length", "X-Secrets", "Trailers", "T", ""};
    for (size_t i = 0; i < SL_ARRAY_LEN(yes); i++)
        if (!sl_http_is_hop_by_hop(&msg, sl_str_from(yes[i])))
            fail_msg("%s should be hop-by-hop", yes[i]);
    for (size_t i = 0; i < SL_ARRAY_LEN(no); i++)
        if (sl_http_is_hop_by_hop(&msg, sl_str_from(no[i])))
            fail_msg("%s should not be hop-by-hop", no[i]);
    assert_true(sl_http_is_hop_by_hop(NULL, SL_STR("te")));
    assert_false(sl_http_is_hop_by_hop(NULL, SL_STR("x-secret")));
}

static void test_reason(void **state)
{
    assert_string_equal(sl_http_reason(200), "OK");
    assert_string_equal(sl_http_reason(404), "Not Found");
    assert_string_equal(sl_http_reason(414), "URI Too Long");
    assert_string_equal(sl_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(sl_http_reason(502), "Bad Gateway");
    assert_string_equal(sl_http_reason(799), "Unknown");
    assert_string_equal(sl_http_reason(-1), "Unknown");
}

/* ---- responses ---------------------------------------------------------- */

typedef struct {
    const char *raw;
    size_t len;
    const char *method;
    int status;
    const char *reason;
    sl_http_body_t body;
    uint64_t cl;
    bool keep_alive;
} resp_case_t;

static const resp_case_t valid_responses[] = {
    {RAW("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), "GET", 200, "OK", SL_BODY_LENGTH, 5,
     true},
    {RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), "POST", 200, "OK",
     SL_BODY_CHUNKED, 0, true},
    {RAW("HTTP/1.1 200 OK\r\n\r\n"), "GET", 200, "OK", SL_BODY_UNTIL_CLOSE, 0, false},
    {RAW("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"), "GET", 200, "OK", SL_BODY_LENGTH, 1,
     false},
    {RAW("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"), "GET", 200,
     "OK", SL_BODY_LENGTH, 1, true},
    {RAW("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), "GET", 404,
     "Not Found", SL_BODY_NONE, 0, false},
    {RAW("HTTP/1.1 204 No Content\r\n\r\n"), "DELETE", 204, "No Content", SL_BODY_NONE, 0, true},
    {RAW("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"), "GET", 204, "No Content",
     SL_BODY_NONE, 0, true},
    {RAW("HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n"), "GET", 304, "Not Modified",
     SL_BODY_NONE, 0, true},
    {RAW("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"), "HEAD", 200, "OK", SL_BODY_NONE, 0,
     true},
    {RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), "HEAD", 200, "OK", SL_BODY_NONE,
     0, true},
    {RAW("HTTP/1.1 100 Continue\r\n\r\n"), "POST", 100, "Continue", SL_BODY_NONE, 0, true},
    {RAW("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
     "GET", 101, "Switching Protocols", SL_BODY_NONE, 0, true},
    {RAW("HTTP/1.1 200 Connection established\r\n\r\n"), "CONNECT", 200, "Connection established",
     SL_BODY_NONE, 0, true},
    {RAW("HTTP/1.1 500 \r\nContent-Length: 2\r\n\r\n"), "GET", 500, "", SL_BODY_LENGTH, 2, true},
    {RAW("HTTP/1.1 503\r\nContent-Length: 2\r\n\r\n"), "GET", 503, "", SL_BODY_LENGTH, 2, true},
    {RAW("HTTP/1.1 200 \xc3\xa7"
         "a va\t!\r\nContent-Length: 2\r\n\r\n"),
     "GET", 200,
     "\xc3\xa7"
     "a va\t!",
     SL_BODY_LENGTH, 2, true},
    /* RFC 9112 §2.2: a recipient may take a bare LF as a line end (CGI
     * scripts print "\n"); requests never get this leniency */
    {RAW("HTTP/1.1 200 OK\nContent-Length: 3\n\n"), "GET", 200, "OK", SL_BODY_LENGTH, 3, true},
    {RAW("HTTP/1.1 200 OK\r\nContent-Length: 0\n\n"), "GET", 200, "OK", SL_BODY_NONE, 0, true},
    {RAW("HTTP/1.1 404 Not Found\nContent-Type: text/plain\r\nContent-Length: 1\r\n\n"), "GET", 404,
     "Not Found", SL_BODY_LENGTH, 1, true},
    {RAW("HTTP/1.0 200 OK\nX-A: b \n\n"), "GET", 200, "OK", SL_BODY_UNTIL_CLOSE, 0, false},
};

static void check_resp(const resp_case_t *c, int rc)
{
    if (rc != (int)c->len)
        fail_msg("rc %d, want %zu for: %.*s", rc, c->len, (int)c->len, c->raw);
    assert_int_equal(msg.status, c->status);
    assert_str(msg.reason, c->reason);
    assert_int_equal(msg.body, c->body);
    if (c->body == SL_BODY_LENGTH)
        assert_true(msg.content_length == c->cl);
    assert_int_equal(msg.keep_alive, c->keep_alive);
    assert_int_equal(msg.head_len, c->len);
}

static void test_valid_responses(void **state)
{
    for (size_t k = 0; k < SL_ARRAY_LEN(valid_responses); k++) {
        const resp_case_t *c = &valid_responses[k];
        sl_str_t m = sl_str_from(c->method);
        const char *why = NULL;
        check_resp(c, sl_http_parse_response(c->raw, c->len, &msg, m, NULL, &why));
        for (size_t n = 0; n < c->len; n++)
            assert_int_equal(sl_http_parse_response(c->raw, n, &msg, m, NULL, &why), SL_AGAIN);
        sl_http_msg_reset(&msg);
        int rc = SL_AGAIN;
        for (size_t n = 0; n <= c->len && rc == SL_AGAIN; n++)
            rc = sl_http_parse_response_resume(c->raw, n, &msg, m, NULL, &why);
        check_resp(c, rc);
    }
    /* upgrade and status derived */
    const char *why;
    assert_true(sl_http_parse_response(valid_responses[12].raw, valid_responses[12].len, &msg,
                                       SL_STR("GET"), NULL, &why) > 0);
    assert_true(msg.upgrade);
}

typedef struct {
    const char *raw;
    size_t len;
    const char *method;
} bad_resp_t;

static const bad_resp_t bad_responses[] = {
    {RAW("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), "HEAD"},
    {RAW("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
     "GET"},
    {RAW("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 101 Switching\r\nTransfer-Encoding: chunked\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\r\n X-Fold: a\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\r\nX-A : a\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\r\nX-A: a\x00\r\n\r\n"), "GET"},
    /* bare LF ends a response line (below); a bare CR never does */
    {RAW("HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\nContent-Length: 0\r\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\nX-A: a\rb\n\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\n\rContent-Length: 0\n\n"), "GET"},
    {RAW("HTTP/2 200 OK\r\n\r\n"), "GET"},
    {RAW("HTTP/1.2 200 OK\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 20 OK\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 2000 OK\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 099 OK\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 600 OK\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 O\x01K\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1  200 OK\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200OK\r\n\r\n"), "GET"},
    {RAW("\r\nHTTP/1.1 200 OK\r\n\r\n"), "GET"},
    {RAW("ICY 200 OK\r\n\r\n"), "GET"},
    {RAW("HTTP/1.1 200 OK\r\nTransfer_Encoding: chunked\r\nContent-Length: 1\r\n\r\n"), "GET"},
};

static void test_bad_responses(void **state)
{
    for (size_t k = 0; k < SL_ARRAY_LEN(bad_responses); k++) {
        const bad_resp_t *c = &bad_responses[k];
        const char *why = NULL;
        int rc = sl_http_parse_response(c->raw, c->len, &msg, sl_str_from(c->method), NULL, &why);
        if (rc != SL_ERROR)
            fail_msg("case %zu: rc %d for: %.*s", k, rc, (int)c->len, c->raw);
        assert_non_null(why);
    }
}

/* ---- chunked ------------------------------------------------------------ */

typedef struct {
    const char *raw;
    size_t len;
    const char *data; /* decoded */
    size_t trailing;  /* bytes after the body (the next message) */
} ck_case_t;

static const ck_case_t valid_chunked[] = {
    {RAW("0\r\n\r\n"), "", 0},
    {RAW("5\r\nhello\r\n0\r\n\r\n"), "hello", 0},
    {RAW("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n"), "hello world", 16},
    {RAW("a\r\n0123456789\r\nA\r\nabcdefghij\r\n0000\r\n\r\n"), "0123456789abcdefghij", 0},
    {RAW("000000000000000f\r\n0123456789abcde\r\n0\r\n\r\n"), "0123456789abcde", 0},
    {RAW("3;foo\r\nabc\r\n0;bar=baz\r\n\r\n"), "abc", 0},
    {RAW("3 ; a = b ;c=\"q \\\" ;\\\\\"\r\nabc\r\n0\r\n\r\n"), "abc", 0},
    {RAW("3\t;x\r\nabc\r\n0\r\n\r\n"), "abc", 0},
    {RAW("2\r\n\r\n\r\n0\r\nTrailer-A: 1\r\nX-Sum:\tabc \r\n\r\n"), "\r\n", 0},
    {RAW("1\r\n\x00\r\n0\r\n\r\n"), "\0", 0},
};

/* Run one body through scan or decode, fed in pieces of `step` bytes (0 = all at once). */
static ssize_t run_chunked(const char *raw, size_t len, bool decode, size_t step, char *out,
                           size_t *out_n, bool *done, const char **why)
{
    static char buf[512];
    sl_chunked_t c;
    sl_chunked_init(&c);
    size_t off = 0;
    *out_n = 0;
    *done = false;
    while (off < len && !*done) {
        size_t n = step ? step : len - off;
        if (n > len - off)
            n = len - off;
        memcpy(buf, raw + off, n);
        ssize_t r;
        size_t dn = 0;
        if (decode)
            r = sl_chunked_decode(&c, buf, n, &dn, done, why);
        else
            r = sl_chunked_scan(&c, buf, n, done, why);
        if (r < 0)
            return r;
        assert_true((size_t)r <= n);
        if (!*done)
            assert_int_equal((size_t)r, n);
        memcpy(out + *out_n, buf, dn);
        *out_n += dn;
        off += (size_t)r;
    }
    return (ssize_t)off;
}

static void test_chunked_valid(void **state)
{
    char out[512];
    for (size_t k = 0; k < SL_ARRAY_LEN(valid_chunked); k++) {
        const ck_case_t *c = &valid_chunked[k];
        size_t dlen = k == SL_ARRAY_LEN(valid_chunked) - 1 ? 1 : strlen(c->data);
        for (size_t step = 0; step <= c->len; step++) {
            for (int dec = 0; dec < 2; dec++) {
                size_t n;
                bool done;
                const char *why = NULL;
                ssize_t r = run_chunked(c->raw, c->len, dec, step, out, &n, &done, &why);
                if (r != (ssize_t)(c->len - c->trailing) || !done)
                    fail_msg("case %zu step %zu dec %d: r %zd done %d (%s)", k, step, dec, r, done,
                             why ? why : "");
                if (dec) {
                    assert_int_equal(n, dlen);
                    assert_memory_equal(out, c->data, dlen);
                }
            }
        }
        /* split into two calls at every offset */
        for (size_t cut = 0; cut <= c->len; cut++) {
            sl_chunked_t ck = {0};
            bool done = false;
            const char *why;
            ssize_t a = sl_chunked_scan(&ck, c->raw, cut, &done, &why);
            assert_true(a >= 0);
            ssize_t b =
                done ? 0 : sl_chunked_scan(&ck, c->raw + a, c->len - (size_t)a, &done, &why);
            assert_int_equal(a + b, c->len - c->trailing);
            assert_true(done);
        }
    }
    /* after done, nothing more is consumed */
    sl_chunked_t ck = {0};
    bool done;
    const char *why;
    assert_int_equal(sl_chunked_scan(&ck, "0\r\n\r\nxx", 7, &done, &why), 5);
    assert_true(done);
    assert_int_equal(sl_chunked_scan(&ck, "xx", 2, &done, &why), 0);
    assert_true(done);
    /* a big chunk streams through in pieces */
    sl_chunked_init(&ck);
    assert_int_equal(sl_chunked_scan(&ck, "7fffffffffffffff\r\n", 18, &done, &why), 18);
    assert_false(done);
    assert_true(ck.remaining == 0x7fffffffffffffffull);
    assert_int_equal(sl_chunked_scan(&ck, "abcd", 4, &done, &why), 4);
    assert_true(ck.remaining == 0x7fffffffffffffffull - 4);
}

typedef struct {
    const char *raw;
    size_t len;
} ck_bad_t;

static const ck_bad_t bad_chunked[] = {
    {RAW("x\r\n")},
    {RAW("\r\n")},
    {RAW("0x5\r\nhello\r\n0\r\n\r\n")},
    {RAW("+5\r\nhello\r\n0\r\n\r\n")},
    {RAW("-5\r\nhello\r\n0\r\n\r\n")},
    {RAW(" 5\r\nhello\r\n0\r\n\r\n")},
    {RAW("5 \r\nhello\r\n0\r\n\r\n")},
    {RAW("5\nhello\r\n0\r\n\r\n")},
    {RAW("5\r\rhello\r\n0\r\n\r\n")},
    {RAW("5\r\nhelloX\r\n0\r\n\r\n")},
    {RAW("5\r\nhello\n0\r\n\r\n")},
    {RAW("5\r\nhello\r0\r\n\r\n")},
    {RAW("00000000000000001\r\nx\r\n0\r\n\r\n")}, /* 17 digits */
    {RAW("10000000000000000\r\n")},               /* overflows 64 bits */
    {RAW("8000000000000000\r\n")},                /* beyond INT64_MAX */
    {RAW("ffffffffffffffff\r\n")},
    {RAW("5;\r\nhello\r\n0\r\n\r\n")},
    {RAW("5;=x\r\nhello\r\n0\r\n\r\n")},
    {RAW("5;a=\r\nhello\r\n0\r\n\r\n")},
    {RAW("5;a b\r\nhello\r\n0\r\n\r\n")},
    {RAW("5;a=b c\r\nhello\r\n0\r\n\r\n")},
    {RAW("5;a=\"unterminated\r\nhello\r\n0\r\n\r\n")},
    {RAW("5;a=\"x\"y\r\nhello\r\n0\r\n\r\n")},
    {RAW("5;a=b\x00\r\nhello\r\n0\r\n\r\n")},
    {RAW("5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n")},
    {RAW("5;a \r\nhello\r\n0\r\n\r\n")},
    {RAW("0\r\n\n")},
    {RAW("0\r\n\rx")},
    {RAW("0\r\nX: y\n\r\n")},
    {RAW("0\r\nX: y\r\n Z\r\n\r\n")},
    {RAW("0\r\nX : y\r\n\r\n")},
    {RAW("0\r\n: y\r\n\r\n")},
    {RAW("0\r\nX: a\x00\r\n\r\n")},
    {RAW("0\r\nX: a\rb\r\n\r\n")},
    {RAW("0\r\nNoColon\r\n\r\n")},
};

static void test_chunked_invalid(void **state)
{
    char out[512];
    for (size_t k = 0; k < SL_ARRAY_LEN(bad_chunked); k++) {
        const ck_bad_t *c = &bad_chunked[k];
        for (size_t step = 0; step <= c->len; step++) {
            for (int dec = 0; dec < 2; dec++) {
                size_t n;
                bool done;
                const char *why = NULL;
                ssize_t r = run_chunked(c->raw, c->len, dec, step, out, &n, &done, &why);
                if (r != SL_ERROR)
                    fail_msg("case %zu step %zu: r %zd done %d", k, step, r, done);
                assert_non_null(why);
            }
        }
    }
    /* errors are sticky */
    sl_chunked_t ck = {0};
    bool done;
    const char *why = NULL, *why2 = NULL;
    assert_int_equal(sl_chunked_scan(&ck, "z", 1, &done, &why), SL_ERROR);
    assert_int_equal(sl_chunked_scan(&ck, "0\r\n\r\n", 5, &done, &why2), SL_ERROR);
    assert_string_equal(why, why2);
}

static void test_chunked_limits(void **state)
{
    static char big[20000];
    sl_chunked_t ck;
    bool done;
    const char *why;
    /* extensions: 4 KiB in total per body */
    size_t n = 0;
    big[n++] = '1';
    big[n++] = ';';
    while (n < 4097)
        big[n++] = 'e';
    memcpy(big + n, "\r\nx\r\n0\r\n\r\n", 10);
    sl_chunked_init(&ck);
    assert_int_equal(sl_chunked_scan(&ck, big, n + 10, &done, &why), (ssize_t)(n + 10));
    assert_true(done);
    big[n] = 'e';
    memcpy(big + n + 1, "\r\nx\r\n0\r\n\r\n", 10);
    sl_chunked_init(&ck);
    assert_int_equal(sl_chunked_scan(&ck, big, n + 11, &done, &why), SL_ERROR);
    /* ...summed over chunks */
    sl_chunked_init(&ck);
    ssize_t r = 0;
    for (int i = 0; i < 1000 && r >= 0; i++)
        r = sl_chunked_scan(&ck, "1;abcdefgh\r\nx\r\n", 15, &done, &why);
    assert_int_equal(r, SL_ERROR);

    /* trailers: 8 KiB in total */
    memcpy(big, "0\r\n", 3);
    n = 3;
    while (n < 3 + 8192 - 2) {
        memcpy(big + n, "X-T: aaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 33);
        n += 33;
    }
    n = 3 + 8192 - 2 - ((8192 - 2) % 33);
    size_t pad = 3 + 8192 - n;
    memcpy(big + n, "Y:", 2);
    memset(big + n + 2, 'z', pad - 4);
    memcpy(big + n + pad - 2, "\r\n\r\n", 4);
    sl_chunked_init(&ck);
    assert_int_equal(sl_chunked_scan(&ck, big, n + pad + 2, &done, &why), (ssize_t)(n + pad + 2));
    assert_true(done);
    memcpy(big + n + pad - 2, "z\r\n\r\n", 5);
    sl_chunked_init(&ck);
    assert_int_equal(sl_chunked_scan(&ck, big, n + pad + 3, &done, &why), SL_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_requests),
        cmocka_unit_test(test_header_values),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_resume_moved_buffer),
        cmocka_unit_test(test_hop_by_hop),
        cmocka_unit_test(test_reason),
        cmocka_unit_test(test_valid_responses),
        cmocka_unit_test(test_bad_responses),
        cmocka_unit_test(test_chunked_valid),
        cmocka_unit_test(test_chunked_invalid),
        cmocka_unit_test(test_chunked_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
