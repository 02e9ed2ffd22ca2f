/*
 * http_parse.c — strict, zero-copy, resumable HTTP/1.1 head parser and
 * incremental chunked-coding scanner (RFC 9110 / RFC 9112).
 *
 * This is the proxy's security boundary: every byte of a head is checked in
 * one left-to-right pass, and every error is reported at the first byte that
 * proves it, so a prefix of a message gives either SL_AGAIN or the same
 * answer as the whole (limits included: an over-long line or head fails as
 * soon as the byte past the limit arrives). Framing headers are interpreted
 * after the head is complete, from the parsed field slices.
 *
 * Owns nothing: all results point into the caller's buffer or at literals.
 */
#include "http_parse.h"

#include <limits.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

const sl_http_limits_t sl_http_default_limits = {
    .max_request_line = 8192,
    .max_header_line = 8192,
    .max_head = 65536,
    .max_headers = SL_HTTP_MAX_HEADERS,
};

#define MAX_LEADING_CRLF  8 /* empty lines skipped before a request line */
#define MAX_CONTENT_LEN   ((uint64_t)INT64_MAX)
#define CHUNK_EXT_MAX     4096 /* chunk extensions, per body */
#define CHUNK_TRAILER_MAX 8192 /* trailer section, per body */

/* ---- character classes -------------------------------------------------- */

/* tchar (RFC 9110 §5.6.2). */
static const uint8_t tok_tab[256] = {
    ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1, ['!'] = 1, ['#'] = 1, ['$'] = 1,
    ['%'] = 1,         ['&'] = 1,         ['\''] = 1,        ['*'] = 1, ['+'] = 1, ['-'] = 1,
    ['.'] = 1,         ['^'] = 1,         ['_'] = 1,         ['`'] = 1, ['|'] = 1, ['~'] = 1,
};

/* field-vchar / SP / HTAB: field values and reason phrases. */
static const uint8_t val_tab[256] = {
    ['\t'] = 1,
    [0x20 ... 0x7e] = 1,
    [0x80 ... 0xff] = 1,
};

/* Request-target and version bytes: visible, no SP, no CTL, no DEL. */
static const uint8_t vis_tab[256] = {
    [0x21 ... 0x7e] = 1,
    [0x80 ... 0xff] = 1,
};

/* reg-name (unreserved / pct-encoded / sub-delims), RFC 3986 §3.2.2. */
static const uint8_t host_tab[256] = {
    ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1, ['-'] = 1, ['.'] = 1,
    ['_'] = 1,         ['~'] = 1,         ['!'] = 1,         ['$'] = 1, ['&'] = 1,
    ['\''] = 1,        ['('] = 1,         [')'] = 1,         ['*'] = 1, ['+'] = 1,
    [','] = 1,         [';'] = 1,         ['='] = 1,         ['%'] = 1,
};

static inline unsigned char lower(unsigned char c)
{
    return (unsigned)(c - 'A') < 26u ? (unsigned char)(c | 0x20) : c;
}

static inline bool is_digit(unsigned char c)
{
    return (unsigned)(c - '0') < 10u;
}
static inline bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static inline int hex_val(unsigned char c)
{
    if ((unsigned)(c - '0') < 10u)
        return c - '0';
    unsigned l = (unsigned)((c | 0x20) - 'a');
    return l < 6u ? (int)l + 10 : -1;
}

/* Case-insensitive compare of s against a lower-case literal. */
static bool eq_lit(const char *s, size_t n, const char *lit, size_t litlen)
{
    if (n != litlen)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != (unsigned char)lit[i])
            return false;
    return true;
}
#define EQ(str, lit) eq_lit((str).p, (str).len, lit, sizeof(lit) - 1)

/*
 * Index of the first byte in b[i..stop) that is not a field-value byte other
 * than HTAB (i.e. a CTL or DEL; HTAB is skipped), or stop.
 */
static size_t scan_value(const unsigned char *b, size_t i, size_t stop)
{
#ifdef __SSE2__
    const __m128i ctl = _mm_set1_epi8(0x1f), del = _mm_set1_epi8(0x7f);
    while (stop - i >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + i));
        __m128i low = _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl); /* v <= 0x1f */
        int mask = _mm_movemask_epi8(_mm_or_si128(low, _mm_cmpeq_epi8(v, del)));
        if (mask == 0) {
            i += 16;
            continue;
        }
        i += (size_t)__builtin_ctz((unsigned)mask);
        if (b[i] != '\t')
            return i;
        i++;
    }
#endif
    while (i < stop && val_tab[b[i]])
        i++;
    return i;
}

/* ---- head parser -------------------------------------------------------- */

typedef struct {
    const unsigned char *b;
    size_t len;
    size_t end; /* min(len, max_head): the bytes the head may occupy */
    bool over;  /* bytes exist beyond max_head */
    size_t max_start_line;
    size_t max_field_line;
    size_t max_fields;
    int status;
    const char *why;
    bool lf_ok; /* a bare LF ends a line too (responses; RFC 9112 §2.2) */
} hp_t;

enum { PH_START = 0, PH_FIELDS = 1 };

static int fail(hp_t *p, int status, const char *why)
{
    p->status = status;
    p->why = why;
    return SL_ERROR;
}

/* The parse needs a byte at or past p->end. */
static int need_more(hp_t *p)
{
    if (p->over)
        return fail(p, 431, "header section too large");
    return SL_AGAIN;
}

/*
 * A line scan stopped at i == stop = min(end, line start + limit) before the
 * line's grammar was satisfied. If i is the line's limit and the byte there
 * is a CR the line is exactly at its limit and the caller goes on; otherwise
 * it is too long, or more bytes are needed.
 */
static inline bool stopped(const hp_t *p, size_t i, size_t stop)
{
    return i == stop && (i == p->end || (p->b[i] != '\r' && !(p->lf_ok && p->b[i] == '\n')));
}

static int line_stop(hp_t *p, size_t i, int status, const char *why)
{
    if (i >= p->end)
        return need_more(p);
    return fail(p, status, why);
}

/* b[i] is CR (or, where allowed, a bare LF): the line ends here; *next is
 * the index past its LF. */
static int crlf(hp_t *p, size_t i, size_t *next)
{
    if (p->lf_ok && p->b[i] == '\n') {
        *next = i + 1;
        return SL_OK;
    }
    if (i + 1 >= p->end)
        return need_more(p);
    if (p->b[i + 1] != '\n')
        return fail(p, 400, "bare CR in header section");
    *next = i + 2;
    return SL_OK;
}

static inline size_t min_sz(size_t a, size_t b)
{
    return a < b ? a : b;
}

static inline sl_str_t slice(const hp_t *p, size_t from, size_t to)
{
    return (sl_str_t){(const char *)p->b + from, to - from};
}

/* "HTTP/1.0" or "HTTP/1.1": 0/1; other well-formed versions 505; junk 400. */
static int parse_version(hp_t *p, const unsigned char *v, size_t n, int *minor)
{
    if (n != 8 || memcmp(v, "HTTP/", 5) != 0 || !is_digit(v[5]) || v[6] != '.' || !is_digit(v[7]))
        return fail(p, 400, "malformed HTTP version");
    if (v[5] != '1' || v[7] > '1')
        return fail(p, 505, "HTTP version not supported");
    *minor = v[7] - '0';
    return SL_OK;
}

/*
 * authority = host [ ":" port ] with host an IP-literal or reg-name. An
 * empty value passes only when allow_empty (Host: may be empty); userinfo
 * ("@") never does. need_port for CONNECT's authority-form.
 */
static bool valid_authority(const char *s, size_t n, bool allow_empty, bool need_port)
{
    const unsigned char *a = (const unsigned char *)s;
    size_t i = 0;
    if (n == 0)
        return allow_empty && !need_port;
    if (a[0] == '[') {
        for (i = 1; i < n && (hex_val(a[i]) >= 0 || a[i] == ':' || a[i] == '.'); i++)
            ;
        if (i == n || a[i] != ']' || i == 1)
            return false;
        i++;
    } else {
        while (i < n && host_tab[a[i]])
            i++;
        if (i == 0)
            return false;
    }
    if (i == n)
        return !need_port;
    if (a[i] != ':')
        return false;
    size_t ps = ++i;
    unsigned port = 0;
    for (; i < n && is_digit(a[i]) && i - ps < 5; i++)
        port = port * 10 + (unsigned)(a[i] - '0');
    if (i != n || port > 65535)
        return false;
    return !(need_port && i == ps);
}

/* Sets path/host from the request-target's form (RFC 9112 §3.2). */
static int classify_target(hp_t *p, sl_http_msg_t *m)
{
    sl_str_t t = m->target;
    bool connect = sl_str_eq(m->method, SL_STR("CONNECT"));
    if (connect) {
        if (!valid_authority(t.p, t.len, false, true))
            return fail(p, 400, "CONNECT needs an authority-form target (host:port)");
        m->host = t;
        m->path = SL_STR_NULL;
        return SL_OK;
    }
    if (t.p[0] == '/') {
        m->path = t;
        return SL_OK;
    }
    if (t.len == 1 && t.p[0] == '*') {
        if (!sl_str_eq(m->method, SL_STR("OPTIONS")))
            return fail(p, 400, "asterisk-form target is only valid for OPTIONS");
        m->path = t;
        return SL_OK;
    }
    size_t skip;
    if (t.len > 7 && eq_lit(t.p, 7, "http://", 7))
        skip = 7;
    else if (t.len > 8 && eq_lit(t.p, 8, "https://", 8))
        skip = 8;
    else
        return fail(p, 400, "invalid request target");
    size_t a = skip, e = skip;
    while (e < t.len && t.p[e] != '/' && t.p[e] != '?' && t.p[e] != '#')
        e++;
    if (!valid_authority(t.p + a, e - a, false, false))
        return fail(p, 400, "invalid authority in absolute-form target");
    if (e < t.len && t.p[e] != '/')
        return fail(p, 400, "absolute-form target without a path");
    m->host = (sl_str_t){t.p + a, e - a};
    m->path = e < t.len ? (sl_str_t){t.p + e, t.len - e} : SL_STR("/");
    return SL_OK;
}

/* request-line = method SP request-target SP HTTP-version CRLF */
static int parse_request_line(hp_t *p, sl_http_msg_t *m, size_t *pos)
{
    const unsigned char *b = p->b;
    size_t s = *pos, i = s, stop = min_sz(p->end, s + p->max_start_line);
    static const char too_long[] = "request line too long";

    while (i < stop && tok_tab[b[i]])
        i++;
    if (stopped(p, i, stop))
        return line_stop(p, i, 414, too_long);
    if (b[i] != ' ' || i == s)
        return fail(p, 400, "invalid method");
    m->method = slice(p, s, i);

    size_t t = ++i;
    while (i < stop && vis_tab[b[i]])
        i++;
    if (stopped(p, i, stop))
        return line_stop(p, i, 414, too_long);
    if (b[i] != ' ' || i == t)
        return fail(p, 400, "invalid request target");
    m->target = slice(p, t, i);

    size_t v = ++i;
    while (i < stop && vis_tab[b[i]])
        i++;
    if (stopped(p, i, stop))
        return line_stop(p, i, 414, too_long);
    if (b[i] != '\r')
        return fail(p, 400, "malformed request line");
    int rc = parse_version(p, b + v, i - v, &m->minor_version);
    if (rc == SL_OK)
        rc = classify_target(p, m);
    if (rc == SL_OK)
        rc = crlf(p, i, pos);
    return rc;
}

/* status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF */
static int parse_status_line(hp_t *p, sl_http_msg_t *m, size_t *pos)
{
    const unsigned char *b = p->b;
    size_t s = *pos, i = s, stop = min_sz(p->end, s + p->max_start_line);
    static const char too_long[] = "status line too long";

    while (i < stop && vis_tab[b[i]])
        i++;
    if (stopped(p, i, stop))
        return line_stop(p, i, 502, too_long);
    if (b[i] != ' ')
        return fail(p, 502, "malformed status line");
    if (parse_version(p, b + s, i - s, &m->minor_version) != SL_OK)
        return fail(p, 502, "unsupported HTTP version in status line");

    size_t d = ++i;
    while (i < stop && is_digit(b[i]))
        i++;
    if (stopped(p, i, stop))
        return line_stop(p, i, 502, too_long);
    if (i - d != 3)
        return fail(p, 502, "status code is not 3 digits");
    m->status = (b[d] - '0') * 100 + (b[d + 1] - '0') * 10 + (b[d + 2] - '0');
    if (m->status < 100 || m->status > 599)
        return fail(p, 502, "status code out of range");
    size_t r = i;
    if (b[i] == ' ') {
        r = ++i;
        i = scan_value(b, i, stop);
        if (stopped(p, i, stop))
            return line_stop(p, i, 502, too_long);
    }
    if (b[i] != '\r' && b[i] != '\n')
        return fail(p, 502, "malformed status line");
    m->reason = slice(p, r, i);
    return crlf(p, i, pos);
}

/*
 * field-line = field-name ":" OWS field-value OWS, until the empty line.
 * Returns SL_OK with *pos past the empty line; on SL_AGAIN *pos is the start
 * of the incomplete line.
 */
static int parse_fields(hp_t *p, sl_http_msg_t *m, size_t *pos)
{
    const unsigned char *b = p->b;
    static const char too_long[] = "header field line too long";
    for (;;) {
        size_t s = *pos, i = s;
        if (s >= p->end)
            return need_more(p);
        unsigned char c = b[s];
        if (c == '\r' || (c == '\n' && p->lf_ok))
            return crlf(p, s, pos);
        if (is_ows(c))
            return fail(p, 400, "obsolete line folding");
        if (c == '\n')
            return fail(p, 400, "bare LF in header section");
        if (m->n_headers >= p->max_fields)
            return fail(p, 431, "too many header fields");

        size_t stop = min_sz(p->end, s + p->max_field_line);
        while (i < stop && tok_tab[b[i]])
            i++;
        if (stopped(p, i, stop))
            return line_stop(p, i, 431, too_long);
        if (i == s)
            return fail(p, 400, b[i] == ':' ? "empty field name" : "invalid field name");
        if (b[i] != ':') {
            if (is_ows(b[i]))
                return fail(p, 400, "whitespace between field name and colon");
            return fail(p, 400, "invalid character in field name");
        }
        size_t ne = i++;
        i = scan_value(b, i, stop);
        if (stopped(p, i, stop))
            return line_stop(p, i, 431, too_long);
        if (b[i] != '\r' && !(b[i] == '\n' && p->lf_ok))
            return fail(p, 400,
                        b[i] == '\n' ? "bare LF in header section"
                                     : "invalid character in field value");
        size_t vs = ne + 1, ve = i, next;
        int rc = crlf(p, i, &next);
        if (rc != SL_OK)
            return rc;
        while (vs < ve && is_ows(b[vs]))
            vs++;
        while (ve > vs && is_ows(b[ve - 1]))
            ve--;
        sl_http_header_t *h = &m->headers[m->n_headers++];
        h->name = slice(p, s, ne);
        h->value = slice(p, vs, ve);
        *pos = next;
    }
}

/* ---- list fields and framing -------------------------------------------- */

/*
 * Next element of a comma-separated list, OWS trimmed; empty elements are
 * returned as such. False when the list is exhausted.
 */
static bool list_next(sl_str_t *rest, sl_str_t *elem)
{
    if (rest->p == NULL)
        return false;
    const char *s = rest->p, *e = s + rest->len, *c = memchr(s, ',', rest->len);
    const char *ee = c ? c : e;
    *rest = c ? (sl_str_t){c + 1, (size_t)(e - c - 1)} : SL_STR_NULL;
    while (s < ee && is_ows((unsigned char)*s))
        s++;
    while (ee > s && is_ows((unsigned char)ee[-1]))
        ee--;
    *elem = (sl_str_t){s, (size_t)(ee - s)};
    return true;
}

static bool is_token(sl_str_t s)
{
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (!tok_tab[(unsigned char)s.p[i]])
            return false;
    return true;
}

/* What the framing-relevant fields say; gathered over all field lines. */
typedef struct {
    unsigned hosts;
    sl_str_t host;
    bool has_cl;
    uint64_t cl;
    bool has_te;
    unsigned te_chunked;  /* times "chunked" was listed */
    bool te_last_chunked; /* the final coding is chunked */
    bool te_other;        /* some other coding was listed */
    bool conn_close, conn_keep_alive, conn_upgrade;
    bool has_upgrade;
    bool has_connection;
    bool expect_continue;
} fields_t;

/* Content-Length = 1*DIGIT, once. RFC 9110 §8.6 lets a recipient of
 * identical repeated values either reject the message or replace them with
 * one field before forwarding; the router forwards the head as it came, so
 * it rejects them, as nginx does. Differing values are never accepted. */
static int field_content_length(hp_t *p, fields_t *f, sl_str_t v, int bad)
{
    sl_str_t rest = v, e;
    if (v.len == 0)
        return fail(p, bad, "empty Content-Length");
    while (list_next(&rest, &e)) {
        if (e.len == 0)
            return fail(p, bad, "invalid Content-Length");
        uint64_t n = 0;
        for (size_t i = 0; i < e.len; i++) {
            unsigned char c = (unsigned char)e.p[i];
            if (!is_digit(c))
                return fail(p, bad, "invalid Content-Length");
            if (n > (MAX_CONTENT_LEN - (uint64_t)(c - '0')) / 10)
                return fail(p, bad, "Content-Length too large");
            n = n * 10 + (c - '0');
        }
        if (f->has_cl)
            return fail(p, bad,
                        n != f->cl ? "conflicting Content-Length values"
                                   : "duplicate Content-Length");
        f->has_cl = true;
        f->cl = n;
    }
    return SL_OK;
}

/* Transfer-Encoding = #transfer-coding; only bare tokens are accepted. */
static int field_transfer_encoding(hp_t *p, fields_t *f, sl_str_t v, int bad)
{
    sl_str_t rest = v, e;
    f->has_te = true;
    while (list_next(&rest, &e)) {
        if (!is_token(e))
            return fail(p, bad, "invalid Transfer-Encoding");
        f->te_last_chunked = EQ(e, "chunked");
        if (f->te_last_chunked)
            f->te_chunked++;
        else
            f->te_other = true;
    }
    return SL_OK;
}

static int field_connection(hp_t *p, fields_t *f, sl_str_t v, int bad)
{
    sl_str_t rest = v, e;
    while (list_next(&rest, &e)) {
        if (e.len == 0)
            continue;
        if (!is_token(e))
            return fail(p, bad, "invalid Connection option");
        if (EQ(e, "close"))
            f->conn_close = true;
        else if (EQ(e, "keep-alive"))
            f->conn_keep_alive = true;
        else if (EQ(e, "upgrade"))
            f->conn_upgrade = true;
    }
    return SL_OK;
}

/* One pass over the parsed fields, dispatching on name length. */
static int gather_fields(hp_t *p, const sl_http_msg_t *m, fields_t *f, int bad)
{
    memset(f, 0, sizeof(*f));
    for (size_t k = 0; k < m->n_headers; k++) {
        const sl_http_header_t *h = &m->headers[k];
        int rc = SL_OK;
        switch (h->name.len) {
        case 4:
            if (EQ(h->name, "host")) {
                f->hosts++;
                f->host = h->value;
            }
            break;
        case 6:
            if (EQ(h->name, "expect") && EQ(h->value, "100-continue"))
                f->expect_continue = true;
            break;
        case 7:
            if (EQ(h->name, "upgrade"))
                f->has_upgrade = true;
            break;
        case 10:
            if (EQ(h->name, "connection")) {
                f->has_connection = true;
                rc = field_connection(p, f, h->value, bad);
            }
            break;
        /* Servers that map '-' and '_' alike (CGI, WSGI, some frameworks)
         * would read the underscore spellings as framing we did not use. */
        case 14:
            if (EQ(h->name, "content-length"))
                rc = field_content_length(p, f, h->value, bad);
            else if (EQ(h->name, "content_length"))
                rc = fail(p, bad, "Content_Length look-alike of a framing header");
            break;
        case 17:
            if (EQ(h->name, "transfer-encoding"))
                rc = field_transfer_encoding(p, f, h->value, bad);
            else if (EQ(h->name, "transfer_encoding"))
                rc = fail(p, bad, "Transfer_Encoding look-alike of a framing header");
            break;
        default:
            break;
        }
        if (rc != SL_OK)
            return rc;
    }
    return SL_OK;
}

static void set_connection(sl_http_msg_t *m, const fields_t *f)
{
    m->keep_alive = !f->conn_close && (m->minor_version == 1 || f->conn_keep_alive);
    m->upgrade = f->conn_upgrade && f->has_upgrade;
    m->has_connection = f->has_connection;
}

/* RFC 9112 §6.3 for requests, strictly: anything ambiguous is a 400. */
static int finish_request(hp_t *p, sl_http_msg_t *m)
{
    fields_t f;
    int rc = gather_fields(p, m, &f, 400);
    if (rc != SL_OK)
        return rc;
    if (f.hosts > 1)
        return fail(p, 400, "more than one Host header");
    if (f.hosts == 0 && m->minor_version == 1)
        return fail(p, 400, "missing Host header");
    if (f.hosts == 1 && !valid_authority(f.host.p, f.host.len, true, false))
        return fail(p, 400, "invalid Host header");
    /* absolute-form and CONNECT already set host from the target */
    if (m->target.p[0] == '/' || (m->target.len == 1 && m->target.p[0] == '*'))
        m->host = f.hosts ? f.host : SL_STR_NULL;

    if (f.has_te) {
        if (f.has_cl)
            return fail(p, 400, "both Content-Length and Transfer-Encoding");
        if (m->minor_version == 0)
            return fail(p, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (f.te_chunked > 1 || (f.te_chunked == 1 && !f.te_last_chunked))
            return fail(p, 400, "chunked must be the final transfer coding, once");
        if (f.te_other)
            return fail(p, 501, "unsupported transfer coding");
        m->body = SL_BODY_CHUNKED;
    } else if (f.has_cl) {
        m->content_length = f.cl;
        m->body = f.cl ? SL_BODY_LENGTH : SL_BODY_NONE;
    }
    set_connection(m, &f);
    m->expect_continue = f.expect_continue && m->minor_version == 1;
    return SL_OK;
}

/*
 * RFC 9112 §6.3 for responses. A response the proxy cannot frame exactly is
 * an error (the upstream connection is then closed): CL+TE, a coding other
 * than a final chunked, TE on HTTP/1.0, TE or a non-zero CL on 1xx/204.
 */
static int finish_response(hp_t *p, sl_http_msg_t *m, sl_str_t method)
{
    fields_t f;
    int rc = gather_fields(p, m, &f, 502);
    if (rc != SL_OK)
        return rc;
    int st = m->status;
    bool connect_ok = st / 100 == 2 && sl_str_eq(method, SL_STR("CONNECT"));
    bool head = sl_str_eq(method, SL_STR("HEAD"));
    if (f.has_te && f.has_cl)
        return fail(p, 502, "both Content-Length and Transfer-Encoding");
    set_connection(m, &f);
    if (st < 200 || st == 204) {
        if (f.has_te)
            return fail(p, 502, "Transfer-Encoding on a 1xx or 204 response");
        if (f.has_cl && f.cl != 0)
            return fail(p, 502, "non-zero Content-Length on a 1xx or 204 response");
        return SL_OK;
    }
    if (st == 304 || head || connect_ok)
        return SL_OK; /* CL/TE describe the representation, not this message */
    if (f.has_te) {
        if (m->minor_version == 0)
            return fail(p, 502, "Transfer-Encoding in an HTTP/1.0 response");
        if (f.te_chunked != 1 || !f.te_last_chunked || f.te_other)
            return fail(p, 502, "unsupported transfer coding");
        m->body = SL_BODY_CHUNKED;
    } else if (f.has_cl) {
        m->content_length = f.cl;
        m->body = f.cl ? SL_BODY_LENGTH : SL_BODY_NONE;
    } else {
        m->body = SL_BODY_UNTIL_CLOSE;
        m->keep_alive = false;
    }
    return SL_OK;
}

/* ---- entry points ------------------------------------------------------- */

static void hp_init(hp_t *p, const char *buf, size_t len, const sl_http_limits_t *lim)
{
    const sl_http_limits_t *d = &sl_http_default_limits;
    size_t max_head = lim && lim->max_head ? lim->max_head : d->max_head;
    if (max_head > INT_MAX)
        max_head = INT_MAX;
    p->b = (const unsigned char *)buf;
    p->len = len;
    p->end = min_sz(len, max_head);
    p->over = len > max_head;
    p->max_start_line = min_sz(
        lim && lim->max_request_line ? lim->max_request_line : d->max_request_line, max_head);
    p->max_field_line =
        min_sz(lim && lim->max_header_line ? lim->max_header_line : d->max_header_line, max_head);
    p->max_fields =
        min_sz(lim && lim->max_headers ? lim->max_headers : d->max_headers, SL_HTTP_MAX_HEADERS);
    p->status = 0;
    p->lf_ok = false;
    p->why = NULL;
}

static void msg_start(sl_http_msg_t *m)
{
    m->method = m->target = m->path = m->reason = m->host = SL_STR_NULL;
    m->status = 0;
    m->minor_version = 0;
    m->n_headers = 0;
    m->body = SL_BODY_NONE;
    m->content_length = 0;
    m->keep_alive = m->expect_continue = m->upgrade = m->has_connection = false;
    m->head_len = 0;
}

void sl_http_msg_reset(sl_http_msg_t *msg)
{
    msg_start(msg);
    memset(&msg->resume, 0, sizeof(msg->resume));
}

static int parse_head(const char *buf, size_t len, sl_http_msg_t *m, const sl_http_limits_t *lim,
                      const sl_str_t *resp_method, bool resume, int *status, const char **why)
{
    hp_t p;
    hp_init(&p, buf, len, lim);
    /* Requests stay strict (a bare LF is where request smuggling hides);
     * an instance that ends its response lines with LF alone is read as
     * it meant them, and the router re-emits every line with CRLF. */
    p.lf_ok = resp_method != NULL;
    size_t pos = 0;
    unsigned phase = PH_START, blanks = 0;
    if (resume && m->resume.base == buf && m->resume.base && m->resume.pos <= len) {
        pos = m->resume.pos;
        phase = m->resume.phase;
        blanks = m->resume.blank_lines;
    } else {
        msg_start(m);
    }
    memset(&m->resume, 0, sizeof(m->resume));

    int rc = SL_OK;
    if (phase == PH_START) {
        /* RFC 9112 §2.2: a server may skip empty lines before the request. */
        while (!resp_method && pos < p.end && p.b[pos] == '\r' && rc == SL_OK) {
            rc = crlf(&p, pos, &pos);
            if (rc == SL_OK && ++blanks > MAX_LEADING_CRLF)
                rc = fail(&p, 400, "too many empty lines before the request line");
        }
        if (rc == SL_OK)
            rc = resp_method ? parse_status_line(&p, m, &pos) : parse_request_line(&p, m, &pos);
        if (rc == SL_OK)
            phase = PH_FIELDS;
    }
    if (rc == SL_OK)
        rc = parse_fields(&p, m, &pos);
    if (rc == SL_OK)
        rc = resp_method ? finish_response(&p, m, *resp_method) : finish_request(&p, m);

    if (rc == SL_OK) {
        m->head_len = pos;
        return (int)pos;
    }
    if (rc == SL_AGAIN) {
        if (resume)
            m->resume = (typeof(m->resume)){buf, pos, phase, blanks};
        return SL_AGAIN;
    }
    if (status)
        *status = p.status;
    if (why)
        *why = p.why;
    return SL_ERROR;
}

int sl_http_parse_request(const char *buf, size_t len, sl_http_msg_t *msg,
                          const sl_http_limits_t *lim, int *status, const char **why)
{
    return parse_head(buf, len, msg, lim, NULL, false, status, why);
}

int sl_http_parse_request_resume(const char *buf, size_t len, sl_http_msg_t *msg,
                                 const sl_http_limits_t *lim, int *status, const char **why)
{
    return parse_head(buf, len, msg, lim, NULL, true, status, why);
}

int sl_http_parse_response(const char *buf, size_t len, sl_http_msg_t *msg, sl_str_t request_method,
                           const sl_http_limits_t *lim, const char **why)
{
    return parse_head(buf, len, msg, lim, &request_method, false, NULL, why);
}

int sl_http_parse_response_resume(const char *buf, size_t len, sl_http_msg_t *msg,
                                  sl_str_t request_method, const sl_http_limits_t *lim,
                                  const char **why)
{
    return parse_head(buf, len, msg, lim, &request_method, true, NULL, why);
}

sl_str_t sl_http_header_get(const sl_http_msg_t *msg, sl_str_t name)
{
    for (size_t k = 0; k < msg->n_headers; k++)
        if (sl_str_caseeq(msg->headers[k].name, name))
            return msg->headers[k].value;
    return SL_STR_NULL;
}

bool sl_http_is_hop_by_hop(const sl_http_msg_t *msg, sl_str_t name)
{
    /* Every message's every field passes through here: decide by length
     * first, so most names cost one switch and at most one compare. */
    bool fixed;
    switch (name.len) {
    case 2:
        fixed = EQ(name, "te");
        break;
    case 7:
        fixed = EQ(name, "trailer") || EQ(name, "upgrade");
        break;
    case 10:
        fixed = EQ(name, "connection") || EQ(name, "keep-alive");
        break;
    case 16:
        fixed = EQ(name, "proxy-connection");
        break;
    case 17:
        fixed = EQ(name, "transfer-encoding");
        break;
    case 18:
        fixed = EQ(name, "proxy-authenticate");
        break;
    case 19:
        fixed = EQ(name, "proxy-authorization");
        break;
    default:
        fixed = false;
        break;
    }
    if (fixed)
        return true;
    if (!msg || !msg->has_connection || name.len == 0)
        return false;
    /* A connection option may not take away what frames or routes the
     * message: with Content-Length dropped, the body would reach the next
     * hop as a request (or response) of its own. A sender must not name
     * them (RFC 9110 §7.6.1); they stay, as if it had not. */
    if (EQ(name, "content-length") || EQ(name, "host"))
        return false;
    for (size_t k = 0; k < msg->n_headers; k++) {
        if (!EQ(msg->headers[k].name, "connection"))
            continue;
        sl_str_t rest = msg->headers[k].value, e;
        while (list_next(&rest, &e))
            if (sl_str_caseeq(e, name))
                return true;
    }
    return false;
}

/* ---- chunked transfer coding -------------------------------------------- */

enum {
    CK_SIZE0 = 0,   /* first hex digit of chunk-size */
    CK_SIZE,        /* further hex digits */
    CK_EXT_WS,      /* BWS after size or value, before ";" */
    CK_EXT_SEMI,    /* after ";", BWS before the name */
    CK_EXT_NAME,    /* chunk-ext-name */
    CK_EXT_NAME_WS, /* BWS after the name, before "=" */
    CK_EXT_EQ,      /* after "=", BWS before the value */
    CK_EXT_TOKEN,   /* token chunk-ext-val */
    CK_EXT_QSTR,    /* inside a quoted-string chunk-ext-val */
    CK_EXT_QPAIR,   /* after a backslash in the quoted-string */
    CK_EXT_QEND,    /* after the closing quote */
    CK_SIZE_LF,     /* CR seen at the end of the size line */
    CK_DATA,        /* chunk-data */
    CK_DATA_CR,     /* CRLF after chunk-data */
    CK_DATA_LF,
    CK_TR_START, /* start of a trailer line or the final CRLF */
    CK_TR_NAME,
    CK_TR_VALUE,
    CK_TR_LF,
    CK_END_LF, /* LF of the final CRLF */
    CK_DONE,
    CK_ERROR,
};

void sl_chunked_init(sl_chunked_t *c)
{
    memset(c, 0, sizeof(*c));
}

/* qdtext / quoted-pair octets besides the specials '"' and '\\'. */
static inline bool qd_ok(unsigned char ch)
{
    return ch == '\t' || ch == ' ' || vis_tab[ch];
}

/* One byte of a chunk-ext (states CK_EXT_*). Returns the next state. */
static int ext_step(int st, unsigned char ch)
{
    switch (st) {
    case CK_SIZE:
    case CK_EXT_WS:
    case CK_EXT_QEND:
        if (ch == ';')
            return CK_EXT_SEMI;
        return is_ows(ch) ? CK_EXT_WS : CK_ERROR;
    case CK_EXT_SEMI:
        if (is_ows(ch))
            return CK_EXT_SEMI;
        return tok_tab[ch] ? CK_EXT_NAME : CK_ERROR;
    case CK_EXT_NAME:
    case CK_EXT_NAME_WS:
        if (tok_tab[ch] && st == CK_EXT_NAME)
            return CK_EXT_NAME;
        if (ch == ';')
            return CK_EXT_SEMI;
        if (ch == '=')
            return CK_EXT_EQ;
        return is_ows(ch) ? CK_EXT_NAME_WS : CK_ERROR;
    case CK_EXT_EQ:
        if (is_ows(ch))
            return CK_EXT_EQ;
        if (ch == '"')
            return CK_EXT_QSTR;
        return tok_tab[ch] ? CK_EXT_TOKEN : CK_ERROR;
    case CK_EXT_TOKEN:
        if (tok_tab[ch])
            return CK_EXT_TOKEN;
        if (ch == ';')
            return CK_EXT_SEMI;
        return is_ows(ch) ? CK_EXT_WS : CK_ERROR;
    case CK_EXT_QSTR:
        if (ch == '"')
            return CK_EXT_QEND;
        if (ch == '\\')
            return CK_EXT_QPAIR;
        return qd_ok(ch) ? CK_EXT_QSTR : CK_ERROR;
    case CK_EXT_QPAIR:
        return qd_ok(ch) ? CK_EXT_QSTR : CK_ERROR;
    default:
        return CK_ERROR;
    }
}

/* States after which a CR may end the size line. */
static inline bool ext_can_end(int st)
{
    return st == CK_SIZE || st == CK_EXT_NAME || st == CK_EXT_TOKEN || st == CK_EXT_QEND;
}

static ssize_t ck_fail(sl_chunked_t *c, const char *msg, const char **why)
{
    c->state = CK_ERROR;
    c->why = msg;
    if (why)
        *why = msg;
    return SL_ERROR;
}

/* One byte of the size line, data delimiters or trailer section. */
static ssize_t ck_step(sl_chunked_t *c, unsigned char ch, const char **why)
{
    int st = c->state, hv;
    switch (st) {
    case CK_SIZE0:
        if ((hv = hex_val(ch)) < 0)
            return ck_fail(c, "invalid chunk size", why);
        c->remaining = (uint64_t)hv;
        c->hex_digits = 1;
        c->state = CK_SIZE;
        return SL_OK;
    case CK_SIZE:
        if ((hv = hex_val(ch)) >= 0) {
            if (++c->hex_digits > 16 || c->remaining > (uint64_t)(INT64_MAX >> 4))
                return ck_fail(c, "chunk size too large", why);
            c->remaining = c->remaining << 4 | (uint64_t)hv;
            return SL_OK;
        }
        __attribute__((fallthrough)); /* extensions or the end of the size line */
    case CK_EXT_WS ... CK_EXT_QEND:
        if (ch == '\r' && ext_can_end(st)) {
            c->state = CK_SIZE_LF;
            return SL_OK;
        }
        c->state = ext_step(st, ch);
        if (c->state == CK_ERROR)
            return ck_fail(c, st == CK_SIZE ? "invalid chunk size" : "invalid chunk extension",
                           why);
        if (++c->ext_len > CHUNK_EXT_MAX)
            return ck_fail(c, "chunk extensions too long", why);
        return SL_OK;
    case CK_SIZE_LF:
        if (ch != '\n')
            return ck_fail(c, "expected LF after chunk size", why);
        c->state = c->remaining ? CK_DATA : CK_TR_START;
        return SL_OK;
    case CK_DATA_CR:
        if (ch != '\r')
            return ck_fail(c, "missing CRLF after chunk data", why);
        c->state = CK_DATA_LF;
        return SL_OK;
    case CK_DATA_LF:
        if (ch != '\n')
            return ck_fail(c, "missing CRLF after chunk data", why);
        c->state = CK_SIZE0;
        return SL_OK;
    case CK_END_LF:
        if (ch != '\n')
            return ck_fail(c, "bare CR after trailer section", why);
        c->state = CK_DONE;
        return SL_OK;
    case CK_TR_START:
        if (ch == '\r') {
            c->state = CK_END_LF;
            return SL_OK;
        }
        break;
    default:
        break;
    }
    /* trailer section */
    if (++c->trailer_len > CHUNK_TRAILER_MAX)
        return ck_fail(c, "trailer section too large", why);
    switch (st) {
    case CK_TR_START:
        if (tok_tab[ch]) {
            c->state = CK_TR_NAME;
        } else {
            return ck_fail(
                c, is_ows(ch) ? "obsolete line folding in trailer" : "invalid trailer field", why);
        }
        return SL_OK;
    case CK_TR_NAME:
        if (ch == ':')
            c->state = CK_TR_VALUE;
        else if (!tok_tab[ch])
            return ck_fail(c, "invalid trailer field name", why);
        return SL_OK;
    case CK_TR_VALUE:
        if (ch == '\r')
            c->state = CK_TR_LF;
        else if (!val_tab[ch])
            return ck_fail(c, "invalid character in trailer field", why);
        return SL_OK;
    case CK_TR_LF:
        if (ch != '\n')
            return ck_fail(c, "bare CR in trailer field", why);
        c->state = CK_TR_START;
        return SL_OK;
    default:
        return ck_fail(c, "invalid chunked parser state", why);
    }
}

/* Shared by scan and decode; dst == NULL scans without moving bytes. */
static ssize_t chunked_run(sl_chunked_t *c, const char *buf, char *dst, size_t len, size_t *out_len,
                           bool *done, const char **why)
{
    const unsigned char *b = (const unsigned char *)buf;
    size_t i = 0, o = 0;
    if (done)
        *done = false;
    if (out_len)
        *out_len = 0;
    if (c->state == CK_ERROR) {
        if (why)
            *why = c->why ? c->why : "invalid chunked body";
        return SL_ERROR;
    }
    while (i < len && c->state != CK_DONE) {
        if (c->state == CK_DATA) {
            size_t n = len - i;
            if (n > c->remaining)
                n = (size_t)c->remaining;
            if (dst) {
                if (o != i)
                    memmove(dst + o, dst + i, n);
                o += n;
            }
            i += n;
            c->remaining -= n;
            if (c->remaining == 0)
                c->state = CK_DATA_CR;
            continue;
        }
        if (ck_step(c, b[i++], why) != SL_OK)
            return SL_ERROR;
    }
    if (done)
        *done = c->state == CK_DONE;
    if (out_len)
        *out_len = o;
    return (ssize_t)i;
}

ssize_t sl_chunked_scan(sl_chunked_t *c, const char *buf, size_t len, bool *done, const char **why)
{
    return chunked_run(c, buf, NULL, len, NULL, done, why);
}

ssize_t sl_chunked_decode(sl_chunked_t *c, char *buf, size_t len, size_t *out_len, bool *done,
                          const char **why)
{
    return chunked_run(c, buf, buf, len, out_len, done, why);
}

/* ---- reason phrases ----------------------------------------------------- */

static const struct {
    int status;
    const char *text;
} reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {103, "Early Hints"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Content"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *sl_http_reason(int status)
{
    for (size_t i = 0; i < SL_ARRAY_LEN(reasons); i++)
        if (reasons[i].status == status)
            return reasons[i].text;
    return "Unknown";
}
