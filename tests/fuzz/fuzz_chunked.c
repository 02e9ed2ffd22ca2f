/*
 * fuzz_chunked.c — libFuzzer driver for sl_chunked_scan / sl_chunked_decode.
 *
 * Input: bytes 0-1 pick a split point, the rest is a chunked body. The body
 * is run through scan and decode whole, split in two at that point, and one
 * byte at a time; all runs must agree with each other and with a small
 * whole-buffer reference parser written straight from the RFC 9112 §7.1
 * grammar (same limits): same verdict (done / need more / error), same
 * number of body bytes, same decoded data.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

enum { R_ERR = -1, R_MORE = -2 };

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "invariant failed: %s\n", what);
        abort();
    }
}

static int hexv(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool tchar(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}
static bool qdtext(uint8_t c)
{
    return c == '\t' || c == ' ' || (c > 0x20 && c != 0x7f);
}
static bool fvalue(uint8_t c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* Reference: whole buffer; R_ERR, R_MORE or the body length. */
static long ref_parse(const uint8_t *b, size_t n, uint8_t *out, size_t *outn)
{
    size_t i = 0, ext = 0, tr = 0;
    *outn = 0;
#define NEED()                                                                                     \
    do {                                                                                           \
        if (i >= n)                                                                                \
            return R_MORE;                                                                         \
    } while (0)
#define EXT()                                                                                      \
    do {                                                                                           \
        if (++ext > 4096)                                                                          \
            return R_ERR;                                                                          \
        i++;                                                                                       \
    } while (0)
    for (;;) {
        uint64_t v = 0;
        unsigned d = 0;
        for (;;) {
            NEED();
            int h = hexv(b[i]);
            if (h < 0)
                break;
            if (d == 16 || v > (uint64_t)(INT64_MAX >> 4))
                return R_ERR;
            v = v * 16 + (uint64_t)h;
            d++;
            i++;
        }
        if (d == 0)
            return R_ERR;
        /* chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ) */
        bool ws = false;
        for (;;) {
            NEED();
            while (ows(b[i])) {
                ws = true;
                EXT();
                NEED();
            }
            if (b[i] == '\r') {
                if (ws)
                    return R_ERR;
                break;
            }
            if (b[i] != ';')
                return R_ERR;
            EXT();
            NEED();
            while (ows(b[i])) {
                EXT();
                NEED();
            }
            if (!tchar(b[i]))
                return R_ERR;
            while (tchar(b[i])) {
                EXT();
                NEED();
            }
            ws = false;
            while (ows(b[i])) {
                ws = true;
                EXT();
                NEED();
            }
            if (b[i] != '=')
                continue;
            EXT();
            NEED();
            while (ows(b[i])) {
                EXT();
                NEED();
            }
            ws = false;
            if (b[i] == '"') {
                EXT();
                for (;;) {
                    NEED();
                    if (b[i] == '"')
                        break;
                    if (b[i] == '\\') {
                        EXT();
                        NEED();
                    }
                    if (!qdtext(b[i]))
                        return R_ERR;
                    EXT();
                }
                EXT();
            } else {
                if (!tchar(b[i]))
                    return R_ERR;
                while (tchar(b[i])) {
                    EXT();
                    NEED();
                }
            }
        }
        i++; /* CR */
        NEED();
        if (b[i++] != '\n')
            return R_ERR;
        if (v == 0)
            break;
        if (n - i < v)
            return R_MORE;
        memcpy(out + *outn, b + i, (size_t)v);
        *outn += (size_t)v;
        i += (size_t)v;
        NEED();
        if (b[i++] != '\r')
            return R_ERR;
        NEED();
        if (b[i++] != '\n')
            return R_ERR;
    }
    /* trailer-section CRLF */
#define TR()                                                                                       \
    do {                                                                                           \
        if (++tr > 8192)                                                                           \
            return R_ERR;                                                                          \
        i++;                                                                                       \
    } while (0)
    for (;;) {
        NEED();
        if (b[i] == '\r') {
            i++;
            NEED();
            return b[i] == '\n' ? (long)(i + 1) : R_ERR;
        }
        if (!tchar(b[i]))
            return R_ERR;
        while (tchar(b[i])) {
            TR();
            NEED();
        }
        if (b[i] != ':')
            return R_ERR;
        TR();
        NEED();
        while (fvalue(b[i])) {
            TR();
            NEED();
        }
        if (b[i] != '\r')
            return R_ERR;
        TR();
        NEED();
        if (b[i] != '\n')
            return R_ERR;
        TR();
    }
#undef NEED
#undef EXT
#undef TR
}

/*
 * Feed body[0..n) in pieces of `step` bytes (first piece `first` bytes when
 * non-zero) through scan or decode. Returns R_ERR, R_MORE or the body length;
 * decoded data is appended to out.
 */
static long run(const uint8_t *body, size_t n, bool decode, size_t first, size_t step, uint8_t *out,
                size_t *outn)
{
    sl_chunked_t c;
    sl_chunked_init(&c);
    size_t off = 0;
    bool done = false;
    *outn = 0;
    while (!done) {
        size_t k = first ? first : step;
        first = 0;
        if (k > n - off)
            k = n - off;
        char *piece = malloc(k ? k : 1);
        memcpy(piece, body + off, k);
        const char *why = NULL;
        size_t dn = 0;
        ssize_t r = decode ? sl_chunked_decode(&c, piece, k, &dn, &done, &why)
                           : sl_chunked_scan(&c, piece, k, &done, &why);
        if (r < 0) {
            check(r == SL_ERROR && why != NULL, "error without why");
            free(piece);
            return R_ERR;
        }
        check((size_t)r <= k && (done || (size_t)r == k), "consumed");
        check(dn <= (size_t)r, "decoded more than consumed");
        memcpy(out + *outn, piece, dn);
        *outn += dn;
        off += (size_t)r;
        free(piece);
        if (!done && off == n)
            return R_MORE;
    }
    return (long)off;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 65536)
        return 0;
    const uint8_t *body = data + 2;
    size_t n = size - 2;
    size_t split = ((size_t)data[0] << 8 | data[1]) % (n + 1);
    uint8_t *want = malloc(n + 1), *got = malloc(n + 1);
    size_t want_n, got_n;

    long ref = ref_parse(body, n, want, &want_n);
    for (int dec = 0; dec < 2; dec++) {
        long r = run(body, n, dec, 0, n ? n : 1, got, &got_n);
        check(r == ref, dec ? "decode whole vs reference" : "scan whole vs reference");
        if (dec && ref >= 0)
            check(got_n == want_n && memcmp(got, want, want_n) == 0, "decoded data (whole)");

        r = run(body, n, dec, split, n ? n : 1, got, &got_n);
        check(r == ref, dec ? "decode split vs whole" : "scan split vs whole");
        if (dec && ref >= 0)
            check(got_n == want_n && memcmp(got, want, want_n) == 0, "decoded data (split)");

        if (n <= 4096) {
            r = run(body, n, dec, 0, 1, got, &got_n);
            check(r == ref, dec ? "decode bytewise vs whole" : "scan bytewise vs whole");
            if (dec && ref >= 0)
                check(got_n == want_n && memcmp(got, want, want_n) == 0, "decoded data (bytes)");
        }
    }
    free(want);
    free(got);
    return 0;
}
