/*
 * http_parse.h — sluice's own HTTP/1.1 message parser (RFC 9110/9112).
 *
 * Zero-copy: every sl_str_t points into the caller's buffer, which must stay
 * unchanged while the parsed message is in use. Resumable in the
 * picohttpparser sense: on SL_AGAIN the caller appends bytes and calls again
 * with the whole head so far. Strict: anything a smuggling attack relies on
 * (CL+TE, duplicate differing CL, non-final chunked, obs-fold, whitespace
 * before the colon, bare CR, NUL/CTL in values, invalid chunk sizes,
 * Content_Length / Transfer_Encoding spelled with an underscore, which
 * CGI-style servers read as the real thing) is an error, never a guess. The same rules apply to
 * responses read from instances, so nothing is smuggled back through a pooled connection,
 * with one leniency RFC 9112 §2.2 allows a recipient: a response line may end in a bare LF
 * (CGI scripts print "\n"); requests must use CRLF.
 */
#ifndef SL_HTTP_PARSE_H
#define SL_HTTP_PARSE_H

#include "common.h"
#include <sys/types.h>

#define SL_HTTP_MAX_HEADERS 100

typedef struct sl_http_header {
    sl_str_t name;
    sl_str_t value; /* leading/trailing OWS removed */
} sl_http_header_t;

typedef enum {
    SL_BODY_NONE = 0,   /* no body (or zero-length) */
    SL_BODY_LENGTH,     /* content_length bytes follow */
    SL_BODY_CHUNKED,    /* chunked transfer coding follows */
    SL_BODY_UNTIL_CLOSE /* responses only: body runs until the peer closes */
} sl_http_body_t;

typedef struct sl_http_limits {
    size_t max_request_line; /* longer → 414 (default 8192) */
    size_t max_header_line;  /* one header field line longer → 431 (default 8192) */
    size_t max_head;         /* whole head longer → 431 (default 65536) */
    size_t max_headers;      /* more fields → 431 (default and cap SL_HTTP_MAX_HEADERS) */
} sl_http_limits_t;

/* Defaults above; pass NULL to the parse functions to use them. A zero field
 * also means its default; line limits are capped at max_head, max_head at
 * INT_MAX. */
extern const sl_http_limits_t sl_http_default_limits;

typedef struct sl_http_msg {
    /* request line (requests) */
    sl_str_t method;
    sl_str_t target; /* as sent: origin-form, absolute-form, authority-form or "*" */
    sl_str_t path;   /* origin-form path+query; for absolute-form the part after the authority
                      * ("/" when that is empty); "*" for OPTIONS *; SL_STR_NULL for CONNECT */
    /* status line (responses) */
    int status;
    sl_str_t reason;
    int minor_version; /* HTTP/1.<minor>: 0 or 1 */

    sl_http_header_t headers[SL_HTTP_MAX_HEADERS];
    size_t n_headers;

    /* Derived while parsing. */
    sl_str_t host; /* Host header value, or the authority of an absolute-form or CONNECT
                    * target (which wins over Host); SL_STR_NULL when neither (HTTP/1.0) */
    sl_http_body_t body;
    uint64_t content_length; /* valid when body == SL_BODY_LENGTH */
    bool keep_alive;         /* after this message, per version + Connection */
    bool expect_continue;    /* request had "Expect: 100-continue" */
    bool upgrade;            /* Connection: upgrade + Upgrade header present */
    bool has_connection;     /* at least one Connection header (it may name more fields) */
    size_t head_len;         /* bytes of the head, including the final CRLF */

    /* Progress kept by the *_resume variants between SL_AGAIN calls; private. */
    struct {
        const char *base;
        size_t pos;
        unsigned phase;
        unsigned blank_lines;
    } resume;
} sl_http_msg_t;

/*
 * Parse a request head from buf[0..len).
 * Returns head length (> 0) when complete, SL_AGAIN when more bytes are
 * needed, or SL_ERROR with *status set to the response to send (400, 414,
 * 431, 501 for an unknown transfer coding, 505 for a bad version) and *why
 * to a static human-readable reason. `lim` may be NULL.
 * Transfer-Encoding must be exactly one "chunked" (OWS and case aside) and
 * only on HTTP/1.1: a well-formed list of other codings is 501 ("gzip",
 * "xchunked", "gzip, chunked"); chunked non-final or repeated, empty list
 * elements, parameters, or TE with Content-Length is 400. Content-Length may
 * repeat (lines or list) only with equal values, at most INT64_MAX. Up to 8
 * empty lines before the request line are skipped (counted in head_len).
 */
int sl_http_parse_request(const char *buf, size_t len, sl_http_msg_t *msg,
                          const sl_http_limits_t *lim, int *status, const char **why);

/*
 * Parse a response head. `request_method` decides framing (HEAD and 2xx to
 * CONNECT have no body); 1xx, 204 and 304 have none either. Returns as
 * sl_http_parse_request; on SL_ERROR *why says why (status is not used).
 * Errors (close the upstream): CL+TE; TE other than exactly one final
 * "chunked" (no close-delimited fallback for "gzip"); TE on HTTP/1.0; TE or
 * a non-zero Content-Length on 1xx/204 ("Content-Length: 0" is ignored);
 * invalid Content-Length even where it is ignored (HEAD, 304). Without CL or
 * TE the body runs until close and keep_alive is false.
 */
int sl_http_parse_response(const char *buf, size_t len, sl_http_msg_t *msg, sl_str_t request_method,
                           const sl_http_limits_t *lim, const char **why);

/*
 * Resumable variants for callers that re-parse as bytes trickle in. After
 * SL_AGAIN, call again with the same, untouched `msg` and the same buffer
 * grown at its end (earlier bytes unchanged, same address): parsing resumes
 * at the last complete line instead of byte 0, so a peer sending one byte at
 * a time costs O(bytes) per line, not O(head) per byte. Results equal those
 * of the plain functions on the whole buffer. Start every new head with
 * sl_http_msg_reset (or a zeroed msg); a moved buffer restarts from byte 0.
 */
void sl_http_msg_reset(sl_http_msg_t *msg);
int sl_http_parse_request_resume(const char *buf, size_t len, sl_http_msg_t *msg,
                                 const sl_http_limits_t *lim, int *status, const char **why);
int sl_http_parse_response_resume(const char *buf, size_t len, sl_http_msg_t *msg,
                                  sl_str_t request_method, const sl_http_limits_t *lim,
                                  const char **why);

/* Case-insensitive header lookup: first value or SL_STR_NULL (p == NULL). */
sl_str_t sl_http_header_get(const sl_http_msg_t *msg, sl_str_t name);

/*
 * True if header `name` must not be forwarded by a proxy: the RFC 9110 §7.6.1
 * hop-by-hop set (Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
 * Transfer-Encoding, Upgrade, Proxy-Authenticate, Proxy-Authorization) and
 * every field named in this message's Connection header but Content-Length
 * and Host, which frame and route the message and are never dropped.
 */
bool sl_http_is_hop_by_hop(const sl_http_msg_t *msg, sl_str_t name);

/*
 * Chunked transfer coding, incremental. Zero-init (or sl_chunked_init) per
 * message. Limits: chunk-size at most 16 hex digits without overflow, chunk
 * extensions at most 4 KiB total, trailers at most 8 KiB total.
 */
typedef struct sl_chunked {
    int state;
    uint64_t remaining; /* data bytes left in the current chunk */
    size_t ext_len;
    size_t trailer_len;
    unsigned hex_digits;
    const char *why; /* set with the error; later calls fail with it again */
} sl_chunked_t;

void sl_chunked_init(sl_chunked_t *c);

/*
 * Pass-through scan: consume wire bytes of a chunked body without changing
 * them. Returns the number of bytes of buf that belong to this body (<= len);
 * sets *done when the terminating chunk and trailers ended (bytes after that
 * belong to the next message). Returns SL_ERROR on malformed framing and sets
 * *why.
 */
ssize_t sl_chunked_scan(sl_chunked_t *c, const char *buf, size_t len, bool *done, const char **why);

/*
 * In-place decode: like scan, but moves only the chunk data to the front of
 * buf. Returns bytes consumed; *out_len is the number of data bytes now at
 * buf[0..*out_len).
 */
ssize_t sl_chunked_decode(sl_chunked_t *c, char *buf, size_t len, size_t *out_len, bool *done,
                          const char **why);

/* Reason phrase for a status code ("Not Found"); "Unknown" when not known. */
const char *sl_http_reason(int status);

#endif
