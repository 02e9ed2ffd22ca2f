/*
 * fuzz_router_host.c — libFuzzer driver for the router's host matching:
 * sl_router_normalize_host alone and behind the request parser (the Host
 * header or an absolute-form authority, as the router sees it).
 *
 * Input: byte 0 picks the output capacity and where the host goes (Host
 * header or absolute-form target); the rest is the host. Checks that the
 * result fits, is lower-case, NUL-terminated, never longer than the input,
 * holds no byte that could break out of the quoted Forwarded host or split
 * a header (", \, CR, LF, NUL, space, /, @), has no port, and that
 * normalising it again gives itself (one name, one route).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"
#include "router.h"

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "invariant failed: %s\n", what);
        abort();
    }
}

static void check_normalized(const char *in, size_t n, size_t cap)
{
    char out[300], again[300];
    ssize_t r = sl_router_normalize_host((sl_str_t){in, n}, out, cap);
    if (r < 0)
        return;
    check((size_t)r < cap && (size_t)r <= n && r > 0, "length within input and capacity");
    check(out[r] == '\0' && strlen(out) == (size_t)r, "NUL-terminated, no NUL inside");
    bool literal = out[0] == '[';
    for (ssize_t i = 0; i < r; i++) {
        unsigned char ch = (unsigned char)out[i];
        check(!(ch >= 'A' && ch <= 'Z'), "lower-case");
        check(ch > ' ' && ch < 0x7f && !strchr("\"\\/@?#", ch), "no unsafe byte");
        check(ch != ':' || literal, "no port");
    }
    check(!literal || out[r - 1] == ']', "IP literal closed");
    ssize_t r2 = sl_router_normalize_host((sl_str_t){out, (size_t)r}, again, sizeof(again));
    check(r2 >= 0, "normalised host accepted again");
    check(r2 == r && memcmp(out, again, (size_t)r) == 0, "idempotent");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 280)
        return 0;
    uint8_t ctl = data[0];
    const char *host = (const char *)data + 1;
    size_t n = size - 1;
    size_t cap = (size_t)(ctl & 0x7f) + 1;
    if (ctl & 0x40)
        cap = 256; /* the router's own buffer */
    check_normalized(host, n, cap);

    /* Behind the parser, as the router receives it. */
    static char req[600];
    static sl_http_msg_t m;
    int len;
    if (ctl & 0x80)
        len = snprintf(req, sizeof(req), "GET http://%.*s/p HTTP/1.1\r\nHost: x\r\n\r\n", (int)n,
                       host);
    else
        len = snprintf(req, sizeof(req), "GET /p HTTP/1.1\r\nHost: %.*s\r\n\r\n", (int)n, host);
    if (len < 0 || (size_t)len >= sizeof(req) || memchr(host, '\0', n))
        return 0;
    int status = 0;
    const char *why = NULL;
    int rc = sl_http_parse_request(req, (size_t)len, &m, NULL, &status, &why);
    if (rc > 0 && m.host.p) {
        check(m.host.p >= req && m.host.p + m.host.len <= req + len, "host inside the buffer");
        check_normalized(m.host.p, m.host.len, 256);
    }
    return 0;
}
