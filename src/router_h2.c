/*
 * router_h2.c — HTTP/2 without TLS (h2c, prior knowledge) at the ingress,
 * proxied stream by stream to instances that speak it: Knative's "h2c"
 * port, what gRPC servers expect.
 *
 * A client connection whose first bytes are the HTTP/2 connection preface
 * (RFC 9113 §3.4) becomes an nghttp2 server session. Each request stream is
 * routed on its own (:authority, else Host), waits for an instance slot like
 * an HTTP/1.1 request (one stream is one request in flight, metered and
 * autoscaled as one), and is sent over an HTTP/2 client session to the
 * instance. An upstream connection carries one stream at a time and goes
 * back to the instance's pool when its exchange ends cleanly, so the
 * instance's concurrency is exactly the router's count of streams on it.
 *
 * Bodies stream both ways under HTTP/2 flow control and are never buffered
 * whole: neither session updates its peer's window on receipt, only when
 * the other side has taken the bytes (nghttp2_session_consume), so a slow
 * reader stops its writer through the protocol itself, with at most one
 * stream window held per stream and direction. Trailers (gRPC's
 * grpc-status) are relayed after the body; a response that is trailers only
 * goes out as one HEADERS frame.
 *
 * Headers: pseudo-headers are rebuilt, connection-specific fields cannot
 * occur (nghttp2 rejects them), X-Forwarded-For and Forwarded gain this hop
 * and X-Forwarded-Proto / -Host are replaced, as for HTTP/1.1.
 *
 * Errors the router answers itself (unknown host 404, no capacity 503, a
 * timeout 504, a failed instance 502) are a response on the stream with a
 * text body, as on HTTP/1.1. A stream to a revision that speaks HTTP/1.1
 * is translated (h1_*, below), and so is an HTTP/1.1 client's request to
 * a revision that speaks HTTP/2 (x_*, last).
 *
 * nghttp2's callbacks only queue work and mark connections; frames are
 * written by h2_drain when the outermost entry point returns (h2_enter /
 * h2_leave), because each side's callbacks drive the other side's session.
 */
#include "router_int.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdarg.h>
#include <stdio.h>

#define MOD "router"
/* Stream windows: a client's (its request bodies, buffered here while a
 * stream waits for an instance: at most SL_H2_STREAMS of them) and an
 * instance's (its response, one stream per connection). The connection
 * windows never stop a stream: received bytes are given back to the
 * connection at once and to the stream when the other side took them. */
#define SL_H2_WINDOW (64 * 1024)
/* An instance's response buffered here per stream, at most: its window,
 * and for an HTTP/1.1 instance the point where it is no longer read. Like
 * nginx's proxy buffers, it bounds what one connection's SL_H2_STREAMS
 * streams can hold (6.4 MiB) whatever window its client advertises. */
#define SL_H2_UP_WINDOW       (64 * 1024)
#define SL_H2_CONN_WINDOW     (16 * 1024 * 1024)
#define SL_H2_STREAMS         100 /* concurrent streams per client connection */
#define SL_H2_NV              SL_HTTP_MAX_HEADERS
#define SL_H2_TRL_NV          32
#define SL_H2_ARENAS          4 /* header bytes per stream and side: at most 4 × 16 KiB */
#define SL_H2_MAX_HEADER_LIST (32 * 1024) /* SETTINGS_MAX_HEADER_LIST_SIZE, enforced */
#define SL_H2_FREE_STREAMS    256

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof(preface) - 1)

/* ---- byte queues --------------------------------------------------------- */

/* Bytes in flight between the two sessions: a chain of router buffers. */
typedef struct sl_bq {
    sl_rbuf_t *head, *tail;
    size_t start; /* in head */
    size_t end;   /* in tail */
    size_t len;
} sl_bq_t;

static void bq_push(sl_router_t *r, sl_bq_t *q, const uint8_t *p, size_t n)
{
    q->len += n;
    while (n) {
        if (!q->tail || q->end == SL_RBUF_SIZE) {
            sl_rbuf_t *b = sl_rbuf_get(r);
            if (q->tail)
                q->tail->next = b;
            else {
                q->head = b;
                q->start = 0;
            }
            q->tail = b;
            q->end = 0;
        }
        size_t k = SL_RBUF_SIZE - q->end;
        if (k > n)
            k = n;
        memcpy(q->tail->data + q->end, p, k);
        q->end += k;
        p += k;
        n -= k;
    }
}

static size_t bq_pop(sl_router_t *r, sl_bq_t *q, uint8_t *dst, size_t n)
{
    size_t got = 0;
    while (got < n && q->head) {
        size_t avail = (q->head == q->tail ? q->end : SL_RBUF_SIZE) - q->start;
        size_t k = avail < n - got ? avail : n - got;
        memcpy(dst + got, q->head->data + q->start, k);
        got += k;
        q->start += k;
        if (q->start == (q->head == q->tail ? q->end : SL_RBUF_SIZE)) {
            sl_rbuf_t *b = q->head;
            q->head = b->next;
            b->next = NULL;
            if (!q->head)
                q->tail = NULL;
            q->start = 0;
            sl_rbuf_unref(r, b);
        }
    }
    q->len -= got;
    return got;
}

static void bq_clear(sl_router_t *r, sl_bq_t *q)
{
    while (q->head) {
        sl_rbuf_t *b = q->head;
        q->head = b->next;
        b->next = NULL;
        sl_rbuf_unref(r, b);
    }
    memset(q, 0, sizeof(*q));
}

/* ---- state ---------------------------------------------------------------- */

typedef struct sl_h2conn sl_h2conn_t;
typedef struct sl_h2s sl_h2s_t;

typedef struct sl_h2arena {
    sl_rbuf_t *b[SL_H2_ARENAS];
    unsigned n;
    size_t used;
} sl_h2arena_t;

/* A header block being received or waiting to be sent. */
typedef struct sl_h2hdrs {
    nghttp2_nv *nv;
    size_t n, cap;
} sl_h2hdrs_t;

struct sl_h2s {
    sl_h2conn_t *hc;
    sl_h2s_t *prev, *next; /* the connection's streams; free list */
    int32_t id;            /* client stream */
    int32_t up_id;         /* upstream stream, 0 until submitted */
    sl_upconn_t *up;

    /* Header bytes (names and values) the nv arrays point into: the
     * client's fields and the instance's, apart, so neither side can use
     * up the other's room. */
    sl_h2arena_t req_arena, resp_arena;
    size_t req_list, trl_list; /* RFC 9113 §6.5.2 sizes of the client's blocks */
    bool req_overflow;         /* the request head did not fit: 431 */
    bool req_refused;          /* it has a field refused as a smuggling vector: 400 */
    uint32_t interim_bytes;    /* of the 1xx heads relayed */
    bool trl_overflow;         /* nor its trailers: none are passed on */
    bool resp_overflow;        /* the instance's head or trailers did not fit: 502 */

    sl_h2hdrs_t req, req_trl, resp, resp_trl;
    sl_str_t method, path, scheme, authority, host, xff, fwd, affinity;
    uint64_t content_length; /* UINT64_MAX = none */

    bool head_done;  /* request head received */
    bool req_eof;    /* client END_STREAM */
    bool in_req_trl; /* the client's block is trailers */
    uint64_t req_bytes;
    sl_bq_t req_bq; /* client → instance */

    void *target;
    sl_waiter_t waiter;
    bool queued;
    sl_stash_t stash;
    sl_pick_t pick;
    bool have_pick;
    uint64_t timeout_ms, deadline_ms, start_due_ms;
    int reroutes;              /* picks given back because the request never reached the instance */
    bool body_sent;            /* request body bytes went to the instance */
    bool up_head_sent;         /* ... and its head */
    bool up_unsendable;        /* nghttp2 would not send the head (the instance's limits) */
    uint64_t body_progress_ms; /* loop time request body bytes last arrived */

    int resp_status;       /* the instance's final status */
    bool resp_head;        /* a response head went to the client */
    bool up_final;         /* the instance's final head arrived */
    bool up_in_trl;        /* the instance's block is trailers */
    bool resp_eof;         /* the response body is complete */
    bool up_done;          /* the upstream stream closed cleanly */
    bool up_failed;        /* ... or not */
    bool inst_failed;      /* the client stream ends for its instance's failure */
    uint32_t up_error;     /* its RST_STREAM code */
    sl_bq_t resp_bq;       /* instance → client */
    uint64_t resp_wait_ms; /* loop time the client last took response bytes */
    uint64_t up_active_ms; /* loop time the instance last sent (or was sent the request) */
    uint64_t created_ms;

    /* An instance that speaks HTTP/1.1 (h1_*): the stream is translated. */
    bool h1;
    bool h1_head_sent, h1_chunked, h1_req_done, h1_keep_alive;
    int h1_body; /* the response's framing (sl_http_body_t) */
    uint64_t h1_left;
    sl_chunked_t h1_chunk;

    /* Last, so that a stream from the free list is cleared only up to here. */
    nghttp2_nv req_nv[SL_H2_NV + 8]; /* + rebuilt and forwarding fields */
    nghttp2_nv req_trl_nv[SL_H2_TRL_NV];
    nghttp2_nv resp_nv[SL_H2_NV + 2]; /* + set-cookie */
    nghttp2_nv resp_trl_nv[SL_H2_TRL_NV];
};

struct sl_h2conn {
    sl_client_t *c;
    nghttp2_session *s;
    sl_h2s_t *streams;
    size_t n_streams;
    bool dead;  /* the session failed or finished: close after the flush */
    bool dirty; /* on the router's h2_dirty list */
    sl_h2conn_t *dirty_next;
    bool send_waiting;         /* writes are queued on the socket */
    uint64_t send_progress_ms; /* loop time they last made progress */
    double reset_budget;       /* streams that may still end abnormally (h2_reset_spend) */
    uint64_t reset_ms;         /* loop time the budget was last refilled */
    bool reset_over;           /* it ran out: the session is being terminated */
};

static nghttp2_session_callbacks *server_cbs, *client_cbs;
static nghttp2_option *server_opt, *client_opt;
static sl_h2s_t *free_streams;
static size_t n_free_streams;

static void h2_client_flush(sl_h2conn_t *hc);
static void h2_up_flush(sl_upconn_t *up);
static void h2_drain(sl_router_t *r);
static void h2_enter(sl_router_t *r);
static void h2_leave(sl_router_t *r);
static void h2_stream_answer(sl_h2s_t *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void h2_stream_got_pick(sl_h2s_t *s);
static void h1_start(sl_h2s_t *s);
static void h1_send(sl_upconn_t *up);
static void h1_read(sl_upconn_t *up, ssize_t nread);
static void h2_up_settle(sl_upconn_t *up);
static bool str_is(sl_str_t s, const char *lit);
static void h2_stream_arm(sl_h2conn_t *hc);
static void h2_init_once(void);
typedef struct sl_h1x sl_h1x_t;
static int x_begin_headers(sl_upconn_t *up, sl_h1x_t *x, const nghttp2_frame *f);
static void x_kick_ended(sl_h1x_t *x);
static int x_on_header(sl_upconn_t *up, sl_h1x_t *x, const nghttp2_frame *f, const uint8_t *name,
                       size_t nl, const uint8_t *value, size_t vl);
static int x_frame_recv(sl_upconn_t *up, sl_h1x_t *x, const nghttp2_frame *f);
static int x_data_chunk(sl_upconn_t *up, sl_h1x_t *x, int32_t id, const uint8_t *data, size_t len);
static int x_stream_close(sl_h1x_t *x, int32_t id, uint32_t code);
static void x_unsendable(sl_h1x_t *x, const nghttp2_frame *f, int err);
static void x_read(sl_upconn_t *up, ssize_t nread);
static void x_lost(sl_upconn_t *up, const char *why, bool now);
static void x_free(sl_router_t *r, sl_h1x_t *x);

/* Hand every unread byte of rd to session (all of them are taken: the
 * callbacks queue what they cannot pass on). nghttp2's result. */
static ssize_t session_recv(nghttp2_session *session, sl_rd_t *rd)
{
    ssize_t rc = nghttp2_session_mem_recv(session, (const uint8_t *)rd->b->data + rd->start,
                                          rd->end - rd->start);
    rd->start = rd->end;
    return rc;
}

/* ---- header storage -------------------------------------------------------- */

/* HTTP/2 field names are lower case (RFC 9113 §8.2.1): lower p[0..n) in place. */
static void lower_name(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] >= 'A' && p[i] <= 'Z')
            p[i] = (uint8_t)(p[i] + ('a' - 'A'));
}

static uint8_t *arena_copy(sl_router_t *r, sl_h2arena_t *a, const uint8_t *p, size_t n)
{
    if (n > SL_RBUF_SIZE)
        return NULL;
    if (!a->n || SL_RBUF_SIZE - a->used < n) {
        if (a->n == SL_H2_ARENAS)
            return NULL;
        a->b[a->n++] = sl_rbuf_get(r);
        a->used = 0;
    }
    uint8_t *dst = (uint8_t *)a->b[a->n - 1]->data + a->used;
    memcpy(dst, p, n);
    a->used += n;
    return dst;
}

static void arena_clear(sl_router_t *r, sl_h2arena_t *a)
{
    for (unsigned i = 0; i < a->n; i++)
        sl_rbuf_unref(r, a->b[i]);
    a->n = 0;
    a->used = 0;
}

/* Append name: value to h, copying both into the stream's arena; false
 * (and *overflow set) when there is no room. */
static bool hdrs_add(sl_router_t *r, sl_h2arena_t *a, sl_h2hdrs_t *h, bool *overflow,
                     const uint8_t *name, size_t nl, const uint8_t *value, size_t vl)
{
    uint8_t *cn = h->n < h->cap ? arena_copy(r, a, name, nl) : NULL;
    uint8_t *cv = cn ? arena_copy(r, a, value, vl) : NULL;
    if (!cn || (!cv && vl)) {
        *overflow = true;
        return false;
    }
    h->nv[h->n++] = (nghttp2_nv){cn, cv ? cv : (uint8_t *)"", nl, vl, NGHTTP2_NV_FLAG_NONE};
    return true;
}

#define NV_LIT(n, v)                                                                               \
    (nghttp2_nv)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE         \
    }

/* ---- streams --------------------------------------------------------------- */

static sl_h2s_t *stream_new(sl_h2conn_t *hc, int32_t id)
{
    sl_h2s_t *s = free_streams;
    if (s) {
        free_streams = s->next;
        n_free_streams--;
    } else {
        s = xmalloc(sizeof(*s));
    }
    memset(s, 0, offsetof(sl_h2s_t, req_nv));
    s->hc = hc;
    s->id = id;
    s->content_length = UINT64_MAX;
    s->created_ms = uv_now(hc->c->r->loop);
    s->req = (sl_h2hdrs_t){s->req_nv, 0, SL_H2_NV};
    s->req_trl = (sl_h2hdrs_t){s->req_trl_nv, 0, SL_H2_TRL_NV};
    s->resp = (sl_h2hdrs_t){s->resp_nv, 0, SL_H2_NV};
    s->resp_trl = (sl_h2hdrs_t){s->resp_trl_nv, 0, SL_H2_TRL_NV};
    s->next = hc->streams;
    if (hc->streams)
        hc->streams->prev = s;
    hc->streams = s;
    hc->n_streams++;
    sl_router_t *r = hc->c->r;
    r->stats.requests_total++;
    r->stats.requests_in_flight++;
    return s;
}

/* Give the instance slot back; the upstream connection goes back to its
 * pool after a clean exchange, else it is closed. */
static void stream_detach(sl_h2s_t *s, bool failed)
{
    sl_router_t *r = s->hc->c->r;
    if (s->queued) {
        s->queued = false;
        r->ops.cancel(r->ctx, s->target, &s->waiter);
    }
    if (s->up) {
        sl_upconn_t *up = s->up;
        s->up = NULL;
        up->h2s = NULL;
        bool reusable = up->h2 ? !up->h2_goaway && nghttp2_session_want_read(up->h2)
                               : s->h1_keep_alive && s->h1_req_done && up->rd.start == up->rd.end;
        if (s->up_done && !failed && up->state == UP_BUSY && reusable) {
            sl_up_put(up);
        } else {
            sl_up_close(up);
        }
    }
    if (s->have_pick) {
        s->have_pick = false;
        r->ops.release(r->ctx, &s->pick, s->resp_status, failed);
    }
}

/* Request body bytes nobody will send: their stream window goes back (the
 * connection's went back on receipt). */
static void req_discard(sl_h2s_t *s)
{
    if (s->req_bq.len)
        nghttp2_session_consume_stream(s->hc->s, s->id, s->req_bq.len);
    bq_clear(s->hc->c->r, &s->req_bq);
}

static void stream_free(sl_h2s_t *s)
{
    sl_h2conn_t *hc = s->hc;
    sl_router_t *r = hc->c->r;
    stream_detach(s, false);
    if (s->prev)
        s->prev->next = s->next;
    else
        hc->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    hc->n_streams--;
    r->stats.requests_in_flight--;
    req_discard(s);
    bq_clear(r, &s->resp_bq);
    arena_clear(r, &s->req_arena);
    arena_clear(r, &s->resp_arena);
    if (n_free_streams < SL_H2_FREE_STREAMS && !r->closing) {
        s->next = free_streams;
        free_streams = s;
        n_free_streams++;
    } else {
        free(s);
    }
}

/* ---- response to the client ------------------------------------------------- */

/* How a data source that took n bytes from q answers nghttp2: the end of
 * the body once q is drained and its side ended (then trl, when it holds
 * fields, as trailers), else n bytes, or none yet (deferred until resumed). */
static ssize_t data_read_end(nghttp2_session *session, int32_t id, const sl_bq_t *q, bool eof,
                             const sl_h2hdrs_t *trl, size_t n, uint32_t *flags)
{
    if (q->len == 0 && eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (trl && trl->n) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            nghttp2_submit_trailer(session, id, trl->nv, trl->n);
        }
        return (ssize_t)n;
    }
    return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
}

static ssize_t resp_read_cb(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *user_data)
{
    sl_h2s_t *s = nghttp2_session_get_stream_user_data(session, id);
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    sl_router_t *r = s->hc->c->r;
    size_t n = bq_pop(r, &s->resp_bq, buf, length);
    if (n) /* the instance's silence counts from the client's read on */
        s->resp_wait_ms = s->up_active_ms = uv_now(r->loop);
    if (n && s->up && s->up->h2 && !s->up_done) {
        nghttp2_session_consume_stream(s->up->h2, s->up_id, n);
        h2_up_flush(s->up);
    } else if (s->up && s->up->bp_paused && s->resp_bq.len <= SL_H2_UP_WINDOW / 2) {
        s->up->bp_paused = false; /* an HTTP/1.1 instance: read it again */
        sl_up_update_reading(s->up);
    }
    return data_read_end(session, id, &s->resp_bq, s->resp_eof, &s->resp_trl, n, flags);
}

/* A response the router makes itself: status, text body. */
static void h2_stream_answer(sl_h2s_t *s, int status, const char *fmt, ...)
{
    sl_h2conn_t *hc = s->hc;
    sl_router_t *r = hc->c->r;
    h2_client_flush(hc);
    if (s->resp_head) {
        nghttp2_submit_rst_stream(hc->s, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    stream_detach(s, false);
    req_discard(s);
    s->resp_wait_ms = uv_now(r->loop);
    char body[640];
    va_list ap;
    va_start(ap, fmt);
    int bl = (int)sl_answer_body(body, sizeof(body), fmt, ap);
    va_end(ap);
    bq_clear(r, &s->resp_bq);
    bq_push(r, &s->resp_bq, (const uint8_t *)body, (size_t)bl);
    s->resp_eof = true;
    s->resp_trl.n = 0;
    char st[4], len[24];
    snprintf(st, sizeof(st), "%d", status);
    snprintf(len, sizeof(len), "%d", bl);
    nghttp2_nv nv[4] = {
        {(uint8_t *)":status", (uint8_t *)st, 7, strlen(st), NGHTTP2_NV_FLAG_NONE},
        NV_LIT("content-type", "text/plain; charset=utf-8"),
        {(uint8_t *)"content-length", (uint8_t *)len, 14, strlen(len), NGHTTP2_NV_FLAG_NONE},
        NV_LIT("retry-after", "1"),
    };
    size_t n = status == 429 || status == 503 ? 4 : 3;
    nghttp2_data_provider prd = {.read_callback = resp_read_cb};
    bool head = s->method.len == 4 && !memcmp(s->method.p, "HEAD", 4);
    s->resp_head = true;
    s->resp_status = status;
    if (nghttp2_submit_response(hc->s, s->id, nv, n, head ? NULL : &prd) != 0)
        nghttp2_submit_rst_stream(hc->s, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
}

/* ---- acquiring an instance --------------------------------------------------- */

static void h2_deliver(sl_h2s_t *s, int status, const sl_pick_t *pick, const char *reason)
{
    s->queued = false;
    if (status == 0 && pick) {
        s->pick = *pick;
        s->have_pick = true;
        if (s->hc->dead)
            stream_detach(s, false);
        else
            h2_stream_got_pick(s);
        return;
    }
    if (status < 400 || status > 599)
        status = 503;
    h2_stream_answer(s, status, "%s", reason ? reason : sl_http_reason(status));
}

static void h2_waiter_ready(sl_waiter_t *w, int status, const sl_pick_t *pick, const char *reason)
{
    sl_h2s_t *s = sl_container_of(w, sl_h2s_t, waiter);
    if ((!s->queued && !s->stash.in_acquire) || sl_stash(&s->stash, status, pick, reason))
        return;
    sl_router_t *r = s->hc->c->r;
    h2_enter(r);
    h2_deliver(s, status, pick, reason);
    h2_client_flush(s->hc);
    h2_leave(r);
}

static void h2_acquire(sl_h2s_t *s)
{
    sl_router_t *r = s->hc->c->r;
    sl_pick_t pick = {0};
    const char *reason = NULL;
    memset(&s->waiter, 0, sizeof(s->waiter));
    s->waiter.retry = s->reroutes > 0;
    s->waiter.ready = h2_waiter_ready;
    s->waiter.enqueued_ns = sl_now_ns();
    s->waiter.affinity = s->affinity;
    int rc = sl_acquire(r, s->target, &s->waiter, &s->stash, &pick, &reason);
    if (rc == SL_OK) {
        s->pick = pick;
        s->have_pick = true;
        h2_stream_got_pick(s);
    } else if (rc == SL_AGAIN) {
        s->queued = true;
    } else {
        h2_deliver(s, rc, NULL, reason);
    }
}

/* The request head is complete: route it. */
static void h2_stream_start(sl_h2s_t *s)
{
    sl_h2conn_t *hc = s->hc;
    sl_router_t *r = hc->c->r;
    if (s->req_overflow) {
        h2_stream_answer(s, 431, "request header fields too large");
        return;
    }
    if (s->method.len == 7 && !memcmp(s->method.p, "CONNECT", 7)) {
        h2_stream_answer(s, 501, "CONNECT is not supported");
        return;
    }
    /* Origin-form only (nghttp2 checks :path only for http and https): an
     * absolute :path would route the instance by another host than ours. */
    bool star = str_is(s->path, "*") && str_is(s->method, "OPTIONS");
    if (!star && (!s->path.len || s->path.p[0] != '/')) {
        h2_stream_answer(s, 400, ":path must begin with \"/\"");
        return;
    }
    if (s->req_refused) {
        h2_stream_answer(s, 400,
                         "field content_length or transfer_encoding refused: CGI-style "
                         "servers read it as the real one");
        return;
    }
    sl_str_t host = s->authority.len ? s->authority : s->host;
    char name[256];
    ssize_t nh = sl_router_normalize_host(host, name, sizeof(name));
    if (nh < 0) {
        h2_stream_answer(s, 400, host.len ? "invalid :authority" : "missing :authority");
        return;
    }
    if (s->content_length != UINT64_MAX && r->cfg.max_body_bytes &&
        s->content_length > r->cfg.max_body_bytes) {
        h2_stream_answer(s, 413, "request body of %llu bytes is over the %llu byte limit",
                         (unsigned long long)s->content_length,
                         (unsigned long long)r->cfg.max_body_bytes);
        return;
    }
    s->target = r->ops.resolve(r->ctx, (sl_str_t){name, (size_t)nh});
    if (!s->target) {
        h2_stream_answer(s, 404, "no service for host %s", name);
        return;
    }
    s->timeout_ms = r->ops.timeout_ms ? r->ops.timeout_ms(r->ctx, s->target) : 0;
    if (s->timeout_ms)
        s->deadline_ms = uv_now(r->loop) + s->timeout_ms;
    h2_acquire(s);
    h2_stream_arm(hc);
}

/* ---- the upstream exchange ----------------------------------------------------- */

static ssize_t req_read_cb(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *src, void *user_data)
{
    sl_upconn_t *up = user_data;
    sl_h2s_t *s = up->h2s;
    if (!s || s->up_id != id)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    sl_h2conn_t *hc = s->hc;
    size_t n = bq_pop(hc->c->r, &s->req_bq, buf, length);
    if (n) {
        s->body_sent = true;
        nghttp2_session_consume_stream(hc->s, s->id, n);
        h2_client_flush(hc);
    }
    return data_read_end(session, id, &s->req_bq, s->req_eof, &s->req_trl, n, flags);
}

/* How an exchange with an instance failed (h2_up_fail). */
enum {
    UPF_FAIL,    /* the instance failed: no second try */
    UPF_UNSENT,  /* it failed before it could see the request: route again */
    UPF_STALE,   /* a pooled connection it had closed: route again what is safe to */
    UPF_REQUEST, /* the request cannot be sent (too large for the instance) */
};

static void h2_up_fail(sl_h2s_t *s, int how, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * The exchange with the instance failed: 502 before the response head,
 * after it the client stream is reset. A request the instance cannot have
 * acted on is given back and routed again, at most SL_REROUTES times, as on
 * HTTP/1.1: UPF_UNSENT (the connection failed while connecting, the stream
 * was refused), or UPF_STALE (a reused connection that closed before any
 * answer) when no body byte went and the request head never went or the
 * method is idempotent (RFC 9110 §9.2.2). A stale connection does not
 * count against the instance.
 */
static void h2_up_fail(sl_h2s_t *s, int how, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    sl_h2conn_t *hc = s->hc;
    bool retry = how == UPF_UNSENT ||
                 (how == UPF_STALE && (!s->up_head_sent || sl_method_idempotent(s->method)));
    stream_detach(s, how == UPF_FAIL || how == UPF_UNSENT);
    if (how == UPF_REQUEST) {
        h2_stream_answer(s, 431, "request header fields too large for the instance: %s", why);
        return;
    }
    if (retry && !s->resp_head && !s->body_sent && s->reroutes < SL_REROUTES && !hc->dead &&
        (!s->deadline_ms || uv_now(hc->c->r->loop) < s->deadline_ms)) {
        s->reroutes++;
        s->up_id = 0;
        s->up_error = 0; /* the code the client may see is the next attempt's */
        s->up_final = s->up_in_trl = s->up_done = s->up_failed = false;
        s->up_head_sent = s->up_unsendable = false;
        s->h1 = s->h1_head_sent = s->h1_req_done = false;
        s->resp_status = 0;
        s->resp.n = s->resp_trl.n = 0;
        s->start_due_ms = 0;
        h2_acquire(s);
        return;
    }
    s->inst_failed = true; /* not the client's doing (h2_reset_spend) */
    if (s->resp_head) {
        /* The instance's own code where it reset the stream (gRPC tells
         * CANCEL from REFUSED_STREAM from INTERNAL_ERROR). */
        nghttp2_submit_rst_stream(hc->s, NGHTTP2_FLAG_NONE, s->id,
                                  s->up_error ? s->up_error : NGHTTP2_INTERNAL_ERROR);
        h2_client_flush(hc);
    } else {
        h2_stream_answer(s, 502, "instance failed: %s", why);
    }
}

static void h2_up_session_new(sl_upconn_t *up)
{
    nghttp2_session_client_new2(&up->h2, client_cbs, up, client_opt);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, SL_H2_UP_WINDOW},
    };
    nghttp2_submit_settings(up->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(up->h2, NGHTTP2_FLAG_NONE, 0, SL_H2_CONN_WINDOW);
}

/* The request's head as it goes to the instance: the client's fields
 * (already in s->req) after the rebuilt pseudo-headers, plus forwarding. */
static size_t h2_plan_request(sl_h2s_t *s, nghttp2_nv *out, char *xff, size_t xff_cap, char *fwd,
                              size_t fwd_cap)
{
    sl_client_t *c = s->hc->c;
    size_t n = 0;
    sl_str_t host = s->authority.len ? s->authority : s->host;
    out[n++] = (nghttp2_nv){(uint8_t *)":method", (uint8_t *)s->method.p, 7, s->method.len,
                            NGHTTP2_NV_FLAG_NONE};
    out[n++] = NV_LIT(":scheme", "http");
    out[n++] = (nghttp2_nv){(uint8_t *)":authority", (uint8_t *)host.p, 10, host.len,
                            NGHTTP2_NV_FLAG_NONE};
    out[n++] = (nghttp2_nv){(uint8_t *)":path", (uint8_t *)s->path.p, 5, s->path.len,
                            NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < s->req.n; i++) {
        /* The instance gets the authority the request was routed by, not
         * a Host field that may name another (RFC 9113 §8.3.1). */
        const nghttp2_nv *nv = &s->req.nv[i];
        if (s->authority.len && str_is((sl_str_t){(const char *)nv->name, nv->namelen}, "host"))
            continue;
        out[n++] = *nv;
    }
    int xl = snprintf(xff, xff_cap, "%.*s%s%s", (int)s->xff.len, s->xff.p, s->xff.len ? ", " : "",
                      c->peer);
    int fl = snprintf(fwd, fwd_cap, "%.*s%s%s;host=\"%.*s\";proto=http", (int)s->fwd.len, s->fwd.p,
                      s->fwd.len ? ", " : "", c->fwd_for, (int)host.len, host.p);
    if (xl > 0 && (size_t)xl < xff_cap)
        out[n++] = (nghttp2_nv){(uint8_t *)"x-forwarded-for", (uint8_t *)xff, 15, (size_t)xl,
                                NGHTTP2_NV_FLAG_NONE};
    if (fl > 0 && (size_t)fl < fwd_cap)
        out[n++] = (nghttp2_nv){(uint8_t *)"forwarded", (uint8_t *)fwd, 9, (size_t)fl,
                                NGHTTP2_NV_FLAG_NONE};
    out[n++] = NV_LIT("x-forwarded-proto", "http");
    out[n++] = (nghttp2_nv){(uint8_t *)"x-forwarded-host", (uint8_t *)host.p, 16, host.len,
                            NGHTTP2_NV_FLAG_NONE};
    return n;
}

static void h2_stream_got_pick(sl_h2s_t *s)
{
    sl_h2conn_t *hc = s->hc;
    sl_router_t *r = hc->c->r;
    uint64_t now = uv_now(r->loop);
    if (!sl_pick_deadline(&s->pick, &s->timeout_ms, &s->deadline_ms, now)) {
        h2_stream_answer(s, 504, "no instance became available within %llu ms",
                         (unsigned long long)s->timeout_ms);
        return;
    }
    sl_upstream_pool_t *pool = s->pick.pool;
    int err = 0;
    sl_upconn_t *up = pool && !pool->closed ? sl_up_get(pool, false, &err) : NULL;
    if (!up) {
        if (err)
            h2_up_fail(s, UPF_UNSENT, "connect: %s", uv_strerror(err));
        else
            h2_up_fail(s, UPF_UNSENT, "instance is stopping");
        return;
    }
    s->up = up;
    up->h2s = s;
    s->start_due_ms = s->pick.response_start_ms ? now + s->pick.response_start_ms : 0;
    s->up_active_ms = s->body_progress_ms = now;
    if (!s->pick.h2c) {
        h1_start(s);
        h2_stream_arm(hc);
        return;
    }
    up->is_h2 = true;
    if (!up->h2)
        h2_up_session_new(up);
    nghttp2_nv nv[SL_H2_NV + 16];
    char xff[512], fwd[768];
    size_t n = h2_plan_request(s, nv, xff, sizeof(xff), fwd, sizeof(fwd));
    nghttp2_data_provider prd = {.read_callback = req_read_cb};
    bool body = !(s->req_eof && s->req_bq.len == 0 && s->req_trl.n == 0);
    int32_t id = nghttp2_submit_request(up->h2, NULL, nv, n, body ? &prd : NULL, s);
    if (id < 0) {
        h2_up_fail(s, UPF_REQUEST, "submit: %s", nghttp2_strerror(id));
        return;
    }
    s->up_id = id;
    h2_up_flush(up);
    h2_stream_arm(hc);
}

/* ---- writing ------------------------------------------------------------------- */

/* Serialize what the session has to send into router buffers and write
 * them; stop while the socket's queue is over SL_BP_HIGH (the write
 * callback resumes). Returns false when the socket failed. */
static bool h2_send(sl_router_t *r, nghttp2_session *sess, uv_stream_t *tcp, uv_write_cb cb)
{
    sl_rbuf_t *bufs[SL_WREQ_REFS];
    uv_buf_t iov[SL_WREQ_REFS];
    unsigned nb = 0;
    size_t used = 0;
    const uint8_t *pend = NULL;
    size_t pend_len = 0; /* of the last frame piece, not yet copied */
    bool ok = true;
    for (;;) {
        if (!pend_len) {
            if (uv_stream_get_write_queue_size(tcp) > SL_BP_HIGH)
                break;
            ssize_t n = nghttp2_session_mem_send(sess, &pend);
            if (n <= 0) {
                ok = n == 0;
                break;
            }
            pend_len = (size_t)n;
        }
        if (!nb || used == SL_RBUF_SIZE) {
            if (nb == SL_WREQ_REFS) {
                int rc = sl_send(r, tcp, iov, nb, bufs, nb, cb);
                for (unsigned i = 0; i < nb; i++)
                    sl_rbuf_unref(r, bufs[i]);
                nb = 0;
                if (rc < 0)
                    return false;
            }
            bufs[nb++] = sl_rbuf_get(r);
            used = 0;
        }
        size_t k = SL_RBUF_SIZE - used < pend_len ? SL_RBUF_SIZE - used : pend_len;
        memcpy(bufs[nb - 1]->data + used, pend, k);
        used += k;
        pend += k;
        pend_len -= k;
        iov[nb - 1] = uv_buf_init(bufs[nb - 1]->data, (unsigned)used);
    }
    if (nb) {
        int rc = sl_send(r, tcp, iov, nb, bufs, nb, cb);
        for (unsigned i = 0; i < nb; i++)
            sl_rbuf_unref(r, bufs[i]);
        if (rc < 0)
            return false;
    }
    return ok;
}

/*
 * Frames are not written as the callbacks produce them: the connection is
 * marked, and h2_drain writes each marked connection once when the event
 * that caused them (a read, a write completion, a timer, an instance slot)
 * has been handled, so a response's HEADERS, DATA and trailers that arrive
 * in one read leave in one write. The drain runs only when the outermost
 * entry point returns and never nests, so no session is ever sent on from
 * inside its own mem_recv or mem_send.
 */
static void h2_client_flush(sl_h2conn_t *hc)
{
    if (!hc || hc->dirty)
        return;
    sl_router_t *r = hc->c->r;
    hc->dirty = true;
    hc->dirty_next = r->h2_dirty;
    r->h2_dirty = hc;
}

static void h2_up_flush(sl_upconn_t *up)
{
    if (!up || up->h2_dirty)
        return;
    sl_router_t *r = up->pool->r;
    up->h2_dirty = true;
    up->h2_dirty_next = r->h2_up_dirty;
    r->h2_up_dirty = up;
}

static void h2_client_send(sl_h2conn_t *hc)
{
    if (hc->c->state == C_CLOSED || hc->c->state == C_LINGER)
        return;
    sl_client_t *c = hc->c;
    if (!h2_send(c->r, hc->s, (uv_stream_t *)&c->tcp, sl_client_write_cb)) {
        sl_client_destroy(c);
        return;
    }
    if (hc->dead || (!nghttp2_session_want_read(hc->s) && !nghttp2_session_want_write(hc->s))) {
        sl_client_close_graceful(c); /* after what is queued */
        return;
    }
    if (!hc->send_waiting && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp)) {
        hc->send_waiting = true;
        hc->send_progress_ms = uv_now(c->r->loop);
    }
    h2_stream_arm(hc);
}

static void h2_up_send(sl_upconn_t *up)
{
    if (up->state == UP_CLOSING)
        return;
    if (!up->h2) {
        h1_send(up);
        return;
    }
    bool ok = h2_send(up->pool->r, up->h2, (uv_stream_t *)&up->tcp, sl_up_write_cb);
    if (ok && up->h2s && (up->h2s->up_done || up->h2s->up_failed)) {
        h2_up_settle(up); /* nghttp2 closed the stream while sending */
        return;
    }
    if (ok && up->h1x) {
        x_kick_ended(up->h1x); /* the same, for an HTTP/1.1 client's stream */
        return;
    }
    if (!ok) {
        sl_h2s_t *s = up->h2s;
        if (s) {
            h2_up_fail(s, up->reused && !up->resp_bytes ? UPF_STALE : UPF_FAIL,
                       "write: connection lost");
        } else if (up->h1x) {
            x_lost(up, "write failed", false);
        } else {
            sl_up_close(up);
        }
    }
}

/* Entry points from libuv and the owner: frames are written when the
 * outermost one returns, never under a caller that holds a stream. */
static void h2_enter(sl_router_t *r)
{
    r->h2_depth++;
}

static void h2_leave(sl_router_t *r)
{
    if (r->h2_depth == 1)
        h2_drain(r);
    r->h2_depth--;
}

static void h2_drain(sl_router_t *r)
{
    if (r->h2_draining)
        return; /* the loop further up the stack picks up new marks */
    r->h2_draining = true;
    while (r->h2_dirty || r->h2_up_dirty) {
        while (r->h2_up_dirty) {
            sl_upconn_t *up = r->h2_up_dirty;
            r->h2_up_dirty = up->h2_dirty_next;
            up->h2_dirty = false;
            up->h2_dirty_next = NULL;
            h2_up_send(up);
        }
        while (r->h2_dirty) {
            sl_h2conn_t *hc = r->h2_dirty;
            r->h2_dirty = hc->dirty_next;
            hc->dirty = false;
            hc->dirty_next = NULL;
            h2_client_send(hc);
        }
    }
    r->h2_draining = false;
}

/* ---- client session callbacks ---------------------------------------------------- */

static int c_begin_headers(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    sl_h2conn_t *hc = ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        sl_h2s_t *s = stream_new(hc, f->hd.stream_id);
        nghttp2_session_set_stream_user_data(sess, f->hd.stream_id, s);
    } else {
        sl_h2s_t *s = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
        if (s)
            s->in_req_trl = true;
    }
    return 0;
}

static bool str_is(sl_str_t s, const char *lit)
{
    size_t l = strlen(lit);
    return s.len == l && !memcmp(s.p, lit, l);
}

/* Request trailer fields not passed on: what frames, routes or forwards a
 * message, or authenticates it (RFC 9110 §6.5.1), which the instance would
 * otherwise see after the router has checked or rewritten the head's. */
static bool trailer_dropped(sl_str_t n)
{
    static const char *const names[] = {"content-length",
                                        "content_length",
                                        "transfer-encoding",
                                        "transfer_encoding",
                                        "host",
                                        "te",
                                        "trailer",
                                        "forwarded",
                                        "x-forwarded-for",
                                        "x-forwarded-host",
                                        "x-forwarded-proto",
                                        "authorization",
                                        "proxy-authorization",
                                        "cookie"};
    for (size_t i = 0; i < SL_ARRAY_LEN(names); i++)
        if (str_is(n, names[i]))
            return true;
    return false;
}

static int c_on_header(nghttp2_session *sess, const nghttp2_frame *f, const uint8_t *name,
                       size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    sl_h2conn_t *hc = ud;
    sl_router_t *r = hc->c->r;
    sl_h2s_t *s = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
    if (!s || s->req_overflow)
        return 0;
    if (s->in_req_trl) {
        s->trl_list += nl + vl + 32;
        if (s->trl_list > SL_H2_MAX_HEADER_LIST)
            s->trl_overflow = true;
        if (!s->trl_overflow && !trailer_dropped((sl_str_t){(const char *)name, nl}))
            hdrs_add(r, &s->req_arena, &s->req_trl, &s->trl_overflow, name, nl, value, vl);
        if (s->trl_overflow)
            s->req_trl.n = 0; /* all or none: a part could pass for the whole */
        return 0;
    }
    /* The limit advertised in SETTINGS, which nghttp2 does not enforce */
    s->req_list += nl + vl + 32;
    if (s->req_list > SL_H2_MAX_HEADER_LIST) {
        s->req_overflow = true;
        return 0;
    }
    sl_str_t n = {(const char *)name, nl};
    if (nl && name[0] == ':') {
        sl_str_t *slot = str_is(n, ":method")      ? &s->method
                         : str_is(n, ":path")      ? &s->path
                         : str_is(n, ":scheme")    ? &s->scheme
                         : str_is(n, ":authority") ? &s->authority
                                                   : NULL;
        if (slot) {
            uint8_t *v = arena_copy(r, &s->req_arena, value, vl);
            if (!v && vl)
                s->req_overflow = true;
            else
                *slot = (sl_str_t){(const char *)v, vl};
        }
        return 0;
    }
    /* Replaced by this hop's values; or for this hop alone, as on HTTP/1.1
     * (http_parse.c). */
    if (str_is(n, "x-forwarded-proto") || str_is(n, "x-forwarded-host") ||
        str_is(n, "proxy-authorization"))
        return 0;
    /* As the HTTP/1.1 parser refuses them (http_parse.c) */
    if (str_is(n, "content_length") || str_is(n, "transfer_encoding")) {
        s->req_refused = true;
        return 0;
    }
    bool xff = str_is(n, "x-forwarded-for"), fwd = str_is(n, "forwarded");
    if (xff || fwd) {
        /* Joined with this hop when the request goes out. */
        sl_str_t *acc = xff ? &s->xff : &s->fwd;
        size_t total = acc->len + (acc->len ? 2 : 0) + vl;
        if (total > 256) {
            s->req_overflow = true;
            return 0;
        }
        char tmp[260];
        int tl = snprintf(tmp, sizeof(tmp), "%.*s%s%.*s", (int)acc->len, acc->p,
                          acc->len ? ", " : "", (int)vl, (const char *)value);
        uint8_t *v = arena_copy(r, &s->req_arena, (const uint8_t *)tmp, (size_t)tl);
        if (!v)
            s->req_overflow = true;
        else
            *acc = (sl_str_t){(const char *)v, (size_t)tl};
        return 0;
    }
    if (!hdrs_add(r, &s->req_arena, &s->req, &s->req_overflow, name, nl, value, vl))
        return 0;
    const nghttp2_nv *nv = &s->req.nv[s->req.n - 1];
    sl_str_t v = {(const char *)nv->value, vl};
    if (str_is(n, "host"))
        s->host = v;
    else if (str_is(n, "cookie") && !s->affinity.len)
        s->affinity = sl_cookie_in(v, SL_STR(SL_AFFINITY_COOKIE));
    else if (str_is(n, "content-length")) {
        uint64_t cl = 0;
        for (size_t i = 0; i < vl; i++)
            cl = cl * 10 + (uint64_t)(value[i] - '0'); /* nghttp2 checked the digits */
        s->content_length = cl;
    }
    return 0;
}

static int c_frame_recv(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    sl_h2conn_t *hc = ud;
    sl_h2s_t *s =
        f->hd.stream_id ? nghttp2_session_get_stream_user_data(sess, f->hd.stream_id) : NULL;
    if (!s)
        return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (f->hd.type == NGHTTP2_HEADERS) {
        if (end)
            s->req_eof = true;
        if (!s->head_done) {
            s->head_done = true;
            h2_stream_start(s);
            return 0;
        }
    } else if (f->hd.type == NGHTTP2_DATA && end) {
        s->req_eof = true;
    } else {
        return 0;
    }
    if (s->up && s->up->h2 && s->up_id)
        nghttp2_session_resume_data(s->up->h2, s->up_id);
    h2_up_flush(s->up);
    SL_UNUSED(hc);
    return 0;
}

static int c_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t id, const uint8_t *data,
                        size_t len, void *ud)
{
    sl_h2conn_t *hc = ud;
    sl_router_t *r = hc->c->r;
    sl_h2s_t *s = nghttp2_session_get_stream_user_data(sess, id);
    /* The connection's window never waits for a stream's reader. */
    nghttp2_session_consume_connection(sess, len);
    if (!s || s->up_done || s->up_failed || (s->resp_head && !s->up)) {
        /* Nobody will read it: give the stream's window back at once. */
        nghttp2_session_consume_stream(sess, id, len);
        return 0;
    }
    s->req_bytes += len;
    s->body_progress_ms = uv_now(r->loop);
    if (r->cfg.max_body_bytes && s->req_bytes > r->cfg.max_body_bytes) {
        nghttp2_session_consume_stream(sess, id, len);
        h2_stream_answer(s, 413, "request body is over the %llu byte limit",
                         (unsigned long long)r->cfg.max_body_bytes);
        return 0;
    }
    bq_push(r, &s->req_bq, data, len);
    if (s->up && s->up->h2 && s->up_id)
        nghttp2_session_resume_data(s->up->h2, s->up_id);
    h2_up_flush(s->up);
    return 0;
}

/* A response that ended before its request did: the rest of the upload is
 * not wanted (RFC 9113 §8.1: RST_STREAM with NO_ERROR). */
static int c_frame_sent(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    sl_h2s_t *s = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
    if (s && !s->req_eof)
        nghttp2_submit_rst_stream(sess, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

/*
 * A stream that ends in a reset, whichever side sent it, or while the
 * instance is still at work, has cost a routed request, an instance slot and
 * often an instance's connection. nghttp2 limits only the resets the client
 * sends (CVE-2023-44487), not the ones a client makes the server send by a
 * protocol error (CVE-2025-8671), so the connection counts both: a burst of
 * SL_H2_RESETS_BURST, then SL_H2_RESETS_PER_S a second. Past that, GOAWAY
 * with ENHANCE_YOUR_CALM. False when the budget is spent.
 */
#define SL_H2_RESETS_BURST 200
#define SL_H2_RESETS_PER_S 50

static bool h2_reset_spend(sl_h2conn_t *hc)
{
    uint64_t now = uv_now(hc->c->r->loop);
    hc->reset_budget += (double)(now - hc->reset_ms) * SL_H2_RESETS_PER_S / 1000.0;
    if (hc->reset_budget > SL_H2_RESETS_BURST)
        hc->reset_budget = SL_H2_RESETS_BURST;
    hc->reset_ms = now;
    if (hc->reset_budget < 1)
        return false;
    hc->reset_budget -= 1;
    return true;
}

static int c_stream_close(nghttp2_session *sess, int32_t id, uint32_t code, void *ud)
{
    sl_h2s_t *s = nghttp2_session_get_stream_user_data(sess, id);
    if (!s)
        return 0;
    sl_h2conn_t *hc = s->hc;
    nghttp2_session_set_stream_user_data(sess, id, NULL);
    /* Not those the router reset for their instance's failure, nor those
     * whose response came whole (one the instance ended before the upload
     * did is closed with NO_ERROR, RFC 9113 §8.1). */
    bool cut = code != NGHTTP2_NO_ERROR || (s->up && !s->up_done && !s->resp_eof);
    if (!hc->reset_over && cut && !s->inst_failed && !h2_reset_spend(hc)) {
        hc->reset_over = true;
        sl_warn(MOD, "HTTP/2 client %s: too many streams reset, closing the connection",
                hc->c->peer);
        nghttp2_session_terminate_session(sess, NGHTTP2_ENHANCE_YOUR_CALM);
    }
    if (s->up && s->up_id && !s->up_done) {
        /* The client went away first: cancel the instance's stream. Its
         * connection is not reused (frames for the stream may follow). */
        nghttp2_submit_rst_stream(s->up->h2, NGHTTP2_FLAG_NONE, s->up_id, NGHTTP2_CANCEL);
        sl_upconn_t *up = s->up;
        h2_up_flush(up);
        stream_detach(s, false);
    }
    stream_free(s);
    h2_stream_arm(hc);
    return 0;
}

/* 1xx heads relayed to a client that need not read them are bounded, as on
 * HTTP/1.1 (SL_INTERIM_MAX): an instance could send them for ever. */
static bool interim_over(sl_h2s_t *s, const sl_h2hdrs_t *h)
{
    for (size_t i = 0; i < h->n; i++)
        s->interim_bytes += (uint32_t)(h->nv[i].namelen + h->nv[i].valuelen + 32);
    return s->interim_bytes > SL_INTERIM_MAX;
}

/* ---- upstream session callbacks ---------------------------------------------------- */

static int u_begin_headers(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    sl_upconn_t *up = ud;
    sl_h2s_t *s = up->h2s;
    if (up->h1x)
        return x_begin_headers(up, up->h1x, f);
    if (!s || f->hd.type != NGHTTP2_HEADERS || f->hd.stream_id != s->up_id)
        return 0;
    if (s->up_final) {
        s->up_in_trl = true;
    } else { /* a 1xx before it (relayed already), or the first */
        s->resp.n = 0;
        s->resp_overflow = false;
        arena_clear(up->pool->r, &s->resp_arena);
    }
    return 0;
}

static int u_on_header(nghttp2_session *sess, const nghttp2_frame *f, const uint8_t *name,
                       size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    sl_upconn_t *up = ud;
    sl_h2s_t *s = up->h2s;
    if (up->h1x)
        return x_on_header(up, up->h1x, f, name, nl, value, vl);
    if (!s || f->hd.stream_id != s->up_id)
        return 0;
    sl_router_t *r = up->pool->r;
    s->up_active_ms = uv_now(r->loop);
    if (s->up_in_trl) {
        hdrs_add(r, &s->resp_arena, &s->resp_trl, &s->resp_overflow, name, nl, value, vl);
        return 0;
    }
    if (nl == 7 && !memcmp(name, ":status", 7)) {
        int st = 0;
        for (size_t i = 0; i < vl && i < 3; i++)
            st = st * 10 + (value[i] - '0');
        s->resp_status = st;
    }
    hdrs_add(r, &s->resp_arena, &s->resp, &s->resp_overflow, name, nl, value, vl);
    return 0;
}

static int u_frame_recv(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    sl_upconn_t *up = ud;
    sl_h2s_t *s = up->h2s;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        up->h2_goaway = true;
        return 0;
    }
    if (up->h1x)
        return x_frame_recv(up, up->h1x, f);
    if (!s || f->hd.stream_id != s->up_id)
        return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    sl_h2conn_t *hc = s->hc;
    s->up_active_ms = uv_now(up->pool->r->loop);
    if (f->hd.type == NGHTTP2_HEADERS && !s->up_in_trl) {
        if (s->resp_status < 200) {
            /* 1xx (100 Continue, 103 Early Hints) go to the client as they
             * come; 101 cannot occur in HTTP/2. */
            if (interim_over(s, &s->resp)) {
                h2_up_fail(s, UPF_FAIL, "1xx heads over %d bytes", SL_INTERIM_MAX);
                return 0;
            }
            if (!s->resp_overflow && s->resp_status >= 100)
                nghttp2_submit_headers(hc->s, NGHTTP2_FLAG_NONE, s->id, NULL, s->resp.nv, s->resp.n,
                                       NULL);
            h2_client_flush(hc);
            return 0;
        }
        s->up_final = true;
        if (s->resp_overflow) {
            h2_up_fail(s, UPF_FAIL, "response header fields too large");
            return 0;
        }
        if (s->pick.set_cookie && s->resp.n < s->resp.cap + 2) {
            s->resp.nv[s->resp.n++] =
                (nghttp2_nv){(uint8_t *)"set-cookie", (uint8_t *)s->pick.set_cookie, 10,
                             strlen(s->pick.set_cookie), NGHTTP2_NV_FLAG_NONE};
        }
        s->resp_eof = end;
        s->resp_head = true;
        s->start_due_ms = 0;
        nghttp2_data_provider prd = {.read_callback = resp_read_cb};
        bool head = s->method.len == 4 && !memcmp(s->method.p, "HEAD", 4);
        if (nghttp2_submit_response(hc->s, s->id, s->resp.nv, s->resp.n,
                                    end || head ? NULL : &prd) != 0)
            nghttp2_submit_rst_stream(hc->s, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        h2_stream_arm(hc);
    } else if (f->hd.type == NGHTTP2_HEADERS && s->resp_overflow) {
        /* Trailers that did not all fit: none rather than some (a gRPC
         * client would miss its grpc-status and take it for another). */
        h2_up_fail(s, UPF_FAIL, "response trailer fields too large");
        return 0;
    } else if (f->hd.type == NGHTTP2_HEADERS || (f->hd.type == NGHTTP2_DATA && end)) {
        s->resp_eof = true;
        nghttp2_session_resume_data(hc->s, s->id);
    }
    h2_client_flush(hc);
    return 0;
}

static int u_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t id, const uint8_t *data,
                        size_t len, void *ud)
{
    sl_upconn_t *up = ud;
    sl_h2s_t *s = up->h2s;
    if (up->h1x)
        return x_data_chunk(up, up->h1x, id, data, len);
    nghttp2_session_consume_connection(sess, len);
    if (!s || id != s->up_id) {
        nghttp2_session_consume_stream(sess, id, len);
        return 0;
    }
    s->up_active_ms = uv_now(up->pool->r->loop);
    bool was_empty = !s->resp_bq.len;
    bq_push(up->pool->r, &s->resp_bq, data, len);
    nghttp2_session_resume_data(s->hc->s, s->id);
    h2_client_flush(s->hc);
    if (was_empty) {
        s->resp_wait_ms = s->up_active_ms;
        h2_stream_arm(s->hc); /* the client now owes a read */
    }
    return 0;
}

static int u_stream_close(nghttp2_session *sess, int32_t id, uint32_t code, void *ud)
{
    sl_upconn_t *up = ud;
    sl_h2s_t *s = up->h2s;
    if (up->h1x)
        return x_stream_close(up->h1x, id, code);
    if (!s || id != s->up_id)
        return 0;
    if (code == NGHTTP2_NO_ERROR && s->up_final && s->resp_eof) {
        s->up_done = true;
    } else {
        s->up_failed = true;
        s->up_error = code;
    }
    return 0;
}

static int u_frame_sent(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    sl_upconn_t *up = ud;
    if (up->h2s && f->hd.type == NGHTTP2_HEADERS && f->hd.stream_id == up->h2s->up_id)
        up->h2s->up_head_sent = true;
    return 0;
}

static int u_frame_not_sent(nghttp2_session *sess, const nghttp2_frame *f, int err, void *ud)
{
    sl_upconn_t *up = ud;
    if (up->h1x)
        x_unsendable(up->h1x, f, err);
    if (up->h2s && f->hd.type == NGHTTP2_HEADERS && f->hd.stream_id == up->h2s->up_id) {
        /* Too large a block for the instance: 431. Else the connection is
         * going away (a GOAWAY came first): nghttp2 closes the stream as
         * REFUSED_STREAM, and it is routed again as never sent. */
        up->h2_goaway = true;
        if (err == NGHTTP2_ERR_FRAME_SIZE_ERROR)
            up->h2s->up_unsendable = true;
    }
    return 0;
}

/* After the upstream session's callbacks: finish the exchange. */
static void h2_up_settle(sl_upconn_t *up)
{
    sl_h2s_t *s = up->h2s;
    if (!s)
        return;
    sl_h2conn_t *hc = s->hc;
    if (s->up_done) {
        /* Response complete: the slot and the connection are free while
         * the client drains what is buffered. */
        stream_detach(s, false);
        req_discard(s);
    } else if (s->up_failed) {
        if (s->up_unsendable)
            h2_up_fail(s, UPF_REQUEST, "its SETTINGS refuse the head");
        else if (s->up_error == NGHTTP2_REFUSED_STREAM)
            h2_up_fail(s, UPF_UNSENT, "stream refused"); /* RFC 9113 §8.7: not processed */
        else if (s->up_error)
            h2_up_fail(s, UPF_FAIL, "stream reset (%s)", nghttp2_http2_strerror(s->up_error));
        else
            h2_up_fail(s, UPF_FAIL, "stream ended before its response");
    }
    h2_client_flush(hc);
}

/* ---- upstream I/O (from upstream.c) -------------------------------------------------- */

static void h2_up_connected(sl_upconn_t *up, int status)
{
    sl_h2s_t *s = up->h2s;
    if (status < 0) {
        if (s) {
            sl_h2conn_t *hc = s->hc;
            h2_up_fail(s, UPF_UNSENT, "connect: %s", uv_strerror(status));
            h2_client_flush(hc);
        } else if (up->h1x && up->client) {
            sl_client_upstream_failed(up->client, status, "connect");
        } else {
            sl_up_close(up);
        }
        return;
    }
    up->state = UP_BUSY;
    sl_up_update_reading(up);
    h2_up_flush(up);
}

void sl_h2_up_connected(sl_upconn_t *up, int status)
{
    sl_router_t *r = up->pool->r;
    h2_enter(r);
    h2_up_connected(up, status);
    h2_leave(r);
}

static void h2_up_read(sl_upconn_t *up, ssize_t nread)
{
    sl_h2s_t *s = up->h2s;
    if (!up->h2) {
        if (s)
            h1_read(up, nread);
        else
            sl_up_close(up); /* an idle HTTP/1.1 connection: closed or unasked bytes */
        return;
    }
    if (up->h1x) {
        x_read(up, nread);
        return;
    }
    if (nread < 0) {
        if (s) {
            sl_h2conn_t *hc = s->hc;
            /* A pooled connection the instance closed as it was reused */
            h2_up_fail(s, up->reused && !up->resp_bytes ? UPF_STALE : UPF_FAIL, "%s",
                       nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
            h2_client_flush(hc);
        } else {
            sl_up_close(up);
        }
        return;
    }
    up->h2_rd.end += (size_t)nread;
    up->resp_bytes += (uint64_t)nread;
    if (s)
        sl_busy_touch(up->pool->r);
    ssize_t rc = session_recv(up->h2, &up->h2_rd);
    s = up->h2s;
    if (rc < 0) {
        if (s) {
            sl_h2conn_t *hc = s->hc;
            h2_up_fail(s, UPF_FAIL, "HTTP/2: %s", nghttp2_strerror((int)rc));
            h2_client_flush(hc);
        } else {
            sl_up_close(up);
        }
        return;
    }
    h2_up_flush(up);
    if (up->state == UP_CLOSING)
        return;
    if (s) {
        h2_up_settle(up);
    } else if (up->state == UP_IDLE && up->h2_goaway) {
        sl_up_close(up);
    }
}

void sl_h2_up_read(sl_upconn_t *up, ssize_t nread)
{
    sl_router_t *r = up->pool->r;
    h2_enter(r);
    h2_up_read(up, nread);
    h2_leave(r);
}

static void h2_up_wrote(sl_upconn_t *up, int status)
{
    if (up->state == UP_CLOSING)
        return;
    if (status < 0) {
        sl_h2s_t *s = up->h2s;
        if (up->h1x) {
            x_lost(up, "write failed", true);
        } else if (s) {
            sl_h2conn_t *hc = s->hc;
            h2_up_fail(s, up->reused && !up->resp_bytes ? UPF_STALE : UPF_FAIL, "write: %s",
                       uv_strerror(status));
            h2_client_flush(hc);
        } else {
            sl_up_close(up);
        }
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&up->tcp) <= SL_BP_LOW)
        h2_up_flush(up);
}

void sl_h2_up_wrote(sl_upconn_t *up, int status)
{
    sl_router_t *r = up->pool->r;
    h2_enter(r);
    h2_up_wrote(up, status);
    h2_leave(r);
}

void sl_h2_up_free(sl_upconn_t *up)
{
    if (up->h2_dirty) {
        sl_upconn_t **pp = &up->pool->r->h2_up_dirty;
        while (*pp != up)
            pp = &(*pp)->h2_dirty_next;
        *pp = up->h2_dirty_next;
        up->h2_dirty = false;
    }
    if (up->h2s) {
        up->h2s->up = NULL;
        up->h2s = NULL;
    }
    if (up->h1x) {
        x_free(up->pool->r, up->h1x);
        up->h1x = NULL;
    }
    nghttp2_session_del(up->h2);
    up->h2 = NULL;
}

/* ---- HTTP/1.1 instances ------------------------------------------------------------ */

/*
 * A stream to an instance that speaks HTTP/1.1 is translated (RFC 9113
 * §8.2.3, RFC 9112): the request goes out as an HTTP/1.1 head (Host from
 * :authority, Cookie fields joined with "; ", TE dropped) and its body with
 * the client's Content-Length, else chunked (the client's trailers as the
 * chunked trailer section). The response head becomes HEADERS (hop-by-hop
 * fields dropped, names lower-cased), its body DATA whatever its framing.
 * A response the client does not take stops the router reading the
 * instance above SL_H2_UP_WINDOW buffered. The connection goes back to the pool
 * when both messages ended cleanly and the instance keeps it alive.
 */
static bool h1_put(sl_rbuf_t *b, size_t *n, const void *p, size_t len)
{
    if (len > SL_RBUF_SIZE - *n)
        return false;
    memcpy(b->data + *n, p, len);
    *n += len;
    return true;
}

#define H1_PUTS(lit) ok = ok && h1_put(b, &n, lit, sizeof(lit) - 1)
#define H1_PUT(p, l) ok = ok && h1_put(b, &n, p, l)

static void h1_start(sl_h2s_t *s)
{
    sl_h2conn_t *hc = s->hc;
    sl_router_t *r = hc->c->r;
    sl_upconn_t *up = s->up;
    s->h1 = true;
    bool no_body = s->req_eof && !s->req_bq.len && !s->req_trl.n;
    s->h1_chunked = !no_body && s->content_length == UINT64_MAX;
    nghttp2_nv nv[SL_H2_NV + 16];
    char xff[512], fwd[768];
    size_t nn = h2_plan_request(s, nv, xff, sizeof(xff), fwd, sizeof(fwd));
    sl_rbuf_t *b = sl_rbuf_get(r);
    size_t n = 0;
    bool ok = true;
    H1_PUT(s->method.p, s->method.len);
    H1_PUTS(" ");
    H1_PUT(s->path.p, s->path.len);
    H1_PUTS(" HTTP/1.1\r\nHost: ");
    H1_PUT(nv[2].value, nv[2].valuelen); /* :authority */
    H1_PUTS("\r\n");
    bool cookie = false;
    for (size_t i = 4; i < nn; i++) {
        sl_str_t name = {(const char *)nv[i].name, nv[i].namelen};
        if (str_is(name, "host") || str_is(name, "te") || str_is(name, "cookie"))
            continue;
        H1_PUT(nv[i].name, nv[i].namelen);
        H1_PUTS(": ");
        H1_PUT(nv[i].value, nv[i].valuelen);
        H1_PUTS("\r\n");
    }
    for (size_t i = 4; i < nn; i++) {
        if (!str_is((sl_str_t){(const char *)nv[i].name, nv[i].namelen}, "cookie"))
            continue;
        if (!cookie)
            H1_PUTS("Cookie: ");
        else
            H1_PUTS("; ");
        H1_PUT(nv[i].value, nv[i].valuelen);
        cookie = true;
    }
    if (cookie)
        H1_PUTS("\r\n");
    if (s->h1_chunked)
        H1_PUTS("Transfer-Encoding: chunked\r\n");
    H1_PUTS("\r\n");
    if (!ok) {
        sl_rbuf_unref(r, b);
        stream_detach(s, false);
        h2_stream_answer(s, 431, "request header fields too large for HTTP/1.1");
        return;
    }
    uv_buf_t iov = uv_buf_init(b->data, (unsigned)n);
    int rc = sl_send(r, (uv_stream_t *)&up->tcp, &iov, 1, &b, 1, sl_up_write_cb);
    sl_rbuf_unref(r, b);
    if (rc < 0) {
        h2_up_fail(s, up->reused ? UPF_STALE : UPF_FAIL, "write: %s", uv_strerror(rc));
        return;
    }
    s->h1_head_sent = s->up_head_sent = true;
    h2_up_flush(up); /* the body, as far as it is here */
}

/* Write the request body bytes that are here, framed. */
static void h1_send(sl_upconn_t *up)
{
    sl_h2s_t *s = up->h2s;
    if (!s || !s->h1_head_sent || s->h1_req_done)
        return;
    sl_h2conn_t *hc = s->hc;
    sl_router_t *r = hc->c->r;
    uv_stream_t *tcp = (uv_stream_t *)&up->tcp;
    size_t queued;
    while (s->req_bq.len && (queued = uv_stream_get_write_queue_size(tcp)) <= SL_BP_HIGH) {
        /* While writes are queued, a few bytes wait here for more (not yet
         * given back to the client's window) rather than each read of
         * them taking a write and a buffer of its own until the instance
         * reads; the write callback brings them once the queue empties. */
        if (queued && !s->req_eof && s->req_bq.len < SL_RBUF_SIZE / 2)
            break;
        sl_rbuf_t *b = sl_rbuf_get(r);
        size_t hl = 0, room = SL_RBUF_SIZE - (s->h1_chunked ? 24 : 0);
        if (s->h1_chunked)
            hl = 20; /* the chunk size line goes right before the data */
        size_t k = bq_pop(r, &s->req_bq, (uint8_t *)b->data + hl, room);
        char *start = b->data + hl;
        size_t len = k;
        if (s->h1_chunked) {
            char line[20];
            int ll = snprintf(line, sizeof(line), "%zx\r\n", k);
            start -= ll;
            memcpy(start, line, (size_t)ll);
            memcpy(b->data + hl + k, "\r\n", 2);
            len += (size_t)ll + 2;
        }
        uv_buf_t iov = uv_buf_init(start, (unsigned)len);
        int rc = sl_send(r, tcp, &iov, 1, &b, 1, sl_up_write_cb);
        sl_rbuf_unref(r, b);
        nghttp2_session_consume_stream(hc->s, s->id, k);
        h2_client_flush(hc);
        s->body_sent = true;
        if (rc < 0) {
            h2_up_fail(s, UPF_FAIL, "write: %s", uv_strerror(rc));
            return;
        }
    }
    if (!s->req_eof || s->req_bq.len)
        return;
    if (s->h1_chunked) {
        sl_rbuf_t *b = sl_rbuf_get(r);
        size_t n = 0;
        bool ok = true;
        H1_PUTS("0\r\n");
        for (size_t i = 0; i < s->req_trl.n; i++) {
            H1_PUT(s->req_trl.nv[i].name, s->req_trl.nv[i].namelen);
            H1_PUTS(": ");
            H1_PUT(s->req_trl.nv[i].value, s->req_trl.nv[i].valuelen);
            H1_PUTS("\r\n");
        }
        H1_PUTS("\r\n");
        if (!ok) { /* trailers beyond a buffer: ended without them */
            n = 0;
            ok = true;
            H1_PUTS("0\r\n\r\n");
        }
        uv_buf_t iov = uv_buf_init(b->data, (unsigned)n);
        int rc = sl_send(r, tcp, &iov, 1, &b, 1, sl_up_write_cb);
        sl_rbuf_unref(r, b);
        if (rc < 0) {
            h2_up_fail(s, UPF_FAIL, "write: %s", uv_strerror(rc));
            return;
        }
    }
    s->h1_req_done = true;
}

/* The response head: HEADERS to the client (or a relayed 1xx). */
static bool h1_head(sl_h2s_t *s, const sl_http_msg_t *m)
{
    sl_h2conn_t *hc = s->hc;
    sl_router_t *r = hc->c->r;
    char st[4];
    snprintf(st, sizeof(st), "%d", m->status);
    s->resp.n = 0;
    s->resp_overflow = false;
    arena_clear(r, &s->resp_arena); /* a 1xx's fields went out with it */
    hdrs_add(r, &s->resp_arena, &s->resp, &s->resp_overflow, (const uint8_t *)":status", 7,
             (const uint8_t *)st, 3);
    for (size_t i = 0; i < m->n_headers && !s->resp_overflow; i++) {
        const sl_http_header_t *h = &m->headers[i];
        if (sl_http_is_hop_by_hop(m, h->name))
            continue;
        /* HTTP/2 has no length on a message that cannot have a body */
        if ((m->status < 200 || m->status == 204) &&
            sl_str_caseeq(h->name, SL_STR("Content-Length")))
            continue;
        if (!hdrs_add(r, &s->resp_arena, &s->resp, &s->resp_overflow, (const uint8_t *)h->name.p,
                      h->name.len, (const uint8_t *)h->value.p, h->value.len))
            break;
        lower_name(s->resp.nv[s->resp.n - 1].name, h->name.len);
    }
    if (s->resp_overflow)
        return false;
    if (m->status < 200) {
        if (interim_over(s, &s->resp))
            return false;
        nghttp2_submit_headers(hc->s, NGHTTP2_FLAG_NONE, s->id, NULL, s->resp.nv, s->resp.n, NULL);
        return true;
    }
    if (s->pick.set_cookie)
        s->resp.nv[s->resp.n++] =
            (nghttp2_nv){(uint8_t *)"set-cookie", (uint8_t *)s->pick.set_cookie, 10,
                         strlen(s->pick.set_cookie), NGHTTP2_NV_FLAG_NONE};
    s->up_final = true;
    s->resp_status = m->status;
    s->h1_body = m->body;
    s->h1_left = m->content_length;
    s->h1_keep_alive = m->keep_alive;
    sl_chunked_init(&s->h1_chunk);
    s->resp_eof = m->body == SL_BODY_NONE;
    s->resp_head = true;
    s->start_due_ms = 0;
    nghttp2_data_provider prd = {.read_callback = resp_read_cb};
    if (nghttp2_submit_response(hc->s, s->id, s->resp.nv, s->resp.n, s->resp_eof ? NULL : &prd))
        nghttp2_submit_rst_stream(hc->s, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    return true;
}

static void h1_read(sl_upconn_t *up, ssize_t nread)
{
    sl_h2s_t *s = up->h2s;
    sl_router_t *r = up->pool->r;
    if (nread < 0) {
        if (s->up_final && s->h1_body == SL_BODY_UNTIL_CLOSE && nread == UV_EOF) {
            s->resp_eof = s->up_done = true; /* a close-delimited body ends here */
            s->h1_keep_alive = false;
            nghttp2_session_resume_data(s->hc->s, s->id);
            h2_client_flush(s->hc);
            h2_up_settle(up);
            return;
        }
        h2_up_fail(s, up->reused && !up->resp_bytes ? UPF_STALE : UPF_FAIL, "%s",
                   nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
        return;
    }
    up->rd.end += (size_t)nread;
    up->resp_bytes += (uint64_t)nread;
    s->up_active_ms = uv_now(r->loop);
    sl_busy_touch(r);
    bool was_empty = !s->resp_bq.len;
    size_t pushed = 0;
    while (up->rd.start < up->rd.end && !s->resp_eof) {
        char *p = up->rd.b->data + up->rd.start;
        size_t avail = up->rd.end - up->rd.start;
        if (!s->up_final) {
            sl_http_msg_t m;
            const char *why = "malformed response";
            int hn = sl_http_parse_response(p, avail, &m, s->method, NULL, &why);
            if (hn == SL_AGAIN) {
                if (avail >= SL_RBUF_SIZE)
                    h2_up_fail(s, UPF_FAIL, "response head larger than %d bytes", SL_RBUF_SIZE);
                return;
            }
            if (hn <= 0 || m.status == 101) {
                h2_up_fail(s, UPF_FAIL, "%s", hn <= 0 ? why : "101 to a request without Upgrade");
                return;
            }
            if (!h1_head(s, &m)) {
                h2_up_fail(s, UPF_FAIL,
                           s->resp_overflow ? "response header fields too large"
                                            : "1xx heads over the limit");
                return;
            }
            up->rd.start += (size_t)hn;
            continue;
        }
        size_t take = avail, used = avail;
        if (s->h1_body == SL_BODY_LENGTH) {
            take = used = avail < s->h1_left ? avail : (size_t)s->h1_left;
            s->h1_left -= take;
            s->resp_eof = s->h1_left == 0;
        } else if (s->h1_body == SL_BODY_CHUNKED) {
            bool done = false;
            const char *why = NULL;
            ssize_t k = sl_chunked_decode(&s->h1_chunk, p, avail, &take, &done, &why);
            if (k < 0) {
                h2_up_fail(s, UPF_FAIL, "response body: %s", why ? why : "bad chunked coding");
                return;
            }
            used = (size_t)k;
            s->resp_eof = done;
        }
        bq_push(r, &s->resp_bq, (const uint8_t *)p, take);
        pushed += take;
        up->rd.start += used;
    }
    if (s->resp_eof && up->rd.start < up->rd.end)
        s->h1_keep_alive = false; /* bytes after the response: not reused */
    if (pushed || s->resp_eof) {
        nghttp2_session_resume_data(s->hc->s, s->id);
        h2_client_flush(s->hc);
    }
    if (pushed && was_empty) {
        s->resp_wait_ms = s->up_active_ms;
        h2_stream_arm(s->hc);
    }
    if (s->resp_eof) {
        s->up_done = true;
        h2_up_settle(up);
    } else if (s->resp_bq.len > SL_H2_UP_WINDOW && !up->bp_paused) {
        up->bp_paused = true; /* resp_read_cb resumes it */
        sl_up_update_reading(up);
    }
}

#undef H1_PUTS
#undef H1_PUT

/* ---- timers --------------------------------------------------------------------------- */

/* What a stream's limits call for (stream_check). */
enum {
    ST_NONE,
    ST_HEADER,   /* its header block is still open: the session ends */
    ST_DEADLINE, /* before the response head: timeoutSeconds, 504 */
    ST_START,    /* ... responseStartTimeoutSeconds, 504 */
    ST_SILENT,   /* the instance is silent past idleTimeoutSeconds: 504, or cut */
    ST_BODY,     /* ... the request body stalled: 408 */
    ST_UNREAD,   /* after it: the client does not read what is buffered: cut */
};

/*
 * Every per-stream limit, in one place for both the timer (what has
 * expired) and its arming (when the next one does): the first limit
 * expired at now, else ST_NONE with *due the loop time of the earliest one
 * still ahead (0: none).
 */
static int stream_check(const sl_h2s_t *s, const sl_router_t *r, uint64_t now, uint64_t *due)
{
    *due = 0;
#define LIMIT(cond, at, what)                                                                      \
    do {                                                                                           \
        if (cond) {                                                                                \
            uint64_t t_ = (at);                                                                    \
            if (now >= t_)                                                                         \
                return what;                                                                       \
            if (!*due || t_ < *due)                                                                \
                *due = t_;                                                                         \
        }                                                                                          \
    } while (0)
    bool owed = s->resp_bq.len || (s->resp_head && s->resp_eof); /* the client owes a read */
    bool watched = !owed && s->up && !s->up_done && s->pick.idle_ms;
    LIMIT(!s->head_done, s->created_ms + r->cfg.header_timeout_ms, ST_HEADER);
    if (!s->resp_head) {
        LIMIT(s->deadline_ms, s->deadline_ms, ST_DEADLINE);
        LIMIT(s->start_due_ms, s->start_due_ms, ST_START);
        LIMIT(watched, s->up_active_ms + s->pick.idle_ms, ST_SILENT);
        LIMIT(s->up && !s->req_eof && r->cfg.body_timeout_ms,
              s->body_progress_ms + r->cfg.body_timeout_ms, ST_BODY);
    } else {
        LIMIT(owed, s->resp_wait_ms + r->cfg.idle_timeout_ms, ST_UNREAD);
        LIMIT(watched, s->up_active_ms + s->pick.idle_ms, ST_SILENT);
    }
#undef LIMIT
    return ST_NONE;
}

/* Arm the client connection's timer for the earliest stream due time, or
 * the idle timeout of a connection without streams. */
static void h2_stream_arm(sl_h2conn_t *hc)
{
    sl_client_t *c = hc->c;
    if (c->state == C_CLOSED || c->state == C_LINGER || hc->dead)
        return;
    uint64_t now = uv_now(c->r->loop), due = 0;
    if (hc->send_waiting)
        due = hc->send_progress_ms + c->r->cfg.idle_timeout_ms;
    for (sl_h2s_t *s = hc->streams; s; s = s->next) {
        uint64_t d;
        if (stream_check(s, c->r, now, &d) != ST_NONE)
            d = now; /* expired already: the timer handles it at once */
        if (d && (!due || d < due))
            due = d;
    }
    /* never 0 ms: libuv would run a timer re-armed from its own callback
     * again in the same pass, and the loop would not poll */
    if (due)
        sl_client_set_timer(c, T_REQUEST, due > now ? due - now : 1);
    else if (!hc->n_streams)
        sl_client_set_timer(c, T_IDLE, c->r->cfg.idle_timeout_ms);
    else
        sl_client_set_timer(c, T_NONE, 0);
}

/* Abandon a stream whose response has started: the instance's slot back,
 * the client's stream reset. */
static void stream_cut(sl_h2s_t *s, const char *why)
{
    sl_h2conn_t *hc = s->hc;
    sl_warn(MOD, "HTTP/2 stream %d of %s: %s; stream reset", (int)s->id, hc->c->peer, why);
    stream_detach(s, false);
    bq_clear(hc->c->r, &s->resp_bq);
    s->resp_eof = false;
    s->resp_head = true;
    nghttp2_submit_rst_stream(hc->s, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
}

/* The session is over (protocol error, idle, a header block left open):
 * GOAWAY, every stream's slot back, and the connection closes once the
 * GOAWAY is out (sl_client_close_graceful bounds the wait). */
static void h2_conn_dead(sl_h2conn_t *hc, uint32_t code)
{
    if (!hc->dead)
        nghttp2_session_terminate_session(hc->s, code);
    hc->dead = true;
    for (sl_h2s_t *s = hc->streams; s; s = s->next)
        stream_detach(s, false);
    h2_client_flush(hc);
}

static void h2_timer(sl_client_t *c, int mode)
{
    sl_h2conn_t *hc = c->h2;
    sl_router_t *r = c->r;
    uint64_t now = uv_now(r->loop);
    if (hc->dead)
        return;
    if (mode == T_IDLE && !hc->n_streams) {
        h2_conn_dead(hc, NGHTTP2_NO_ERROR);
        return;
    }
    if (hc->send_waiting && now >= hc->send_progress_ms + r->cfg.idle_timeout_ms) {
        /* The client reads nothing at all: nothing else can be done. */
        sl_warn(MOD, "HTTP/2 client %s read nothing for %llu ms; connection closed", c->peer,
                (unsigned long long)r->cfg.idle_timeout_ms);
        sl_client_destroy(c);
        return;
    }
    for (sl_h2s_t *s = hc->streams; s; s = s->next) {
        uint64_t due;
        switch (stream_check(s, r, now, &due)) {
        case ST_HEADER:
            /* A header block left open holds the whole connection. */
            h2_conn_dead(hc, NGHTTP2_NO_ERROR);
            return;
        case ST_DEADLINE:
            h2_stream_answer(s, 504,
                             s->queued ? "no instance became available within %llu ms"
                                       : "instance did not answer within %llu ms",
                             (unsigned long long)s->timeout_ms);
            break;
        case ST_START:
            h2_stream_answer(s, 504,
                             "instance did not start its response within %u ms "
                             "(responseStartTimeoutSeconds)",
                             s->pick.response_start_ms);
            break;
        case ST_SILENT:
            if (!s->resp_head)
                h2_stream_answer(s, 504, "instance sent nothing for %u ms (idleTimeoutSeconds)",
                                 s->pick.idle_ms);
            else
                stream_cut(s, "the instance sent nothing within idleTimeoutSeconds");
            break;
        case ST_BODY:
            h2_stream_answer(s, 408, "request body stalled for %llu ms",
                             (unsigned long long)r->cfg.body_timeout_ms);
            break;
        case ST_UNREAD:
            /* A client that stops reading a response cannot hold the
             * instance (or the buffered bytes) for ever. */
            stream_cut(s, "the client stopped reading its response");
            break;
        default:
            break;
        }
    }
    h2_stream_arm(hc);
    h2_client_flush(hc);
}

void sl_h2_timer(sl_client_t *c, int mode)
{
    sl_router_t *r = c->r;
    h2_enter(r);
    h2_timer(c, mode);
    h2_leave(r);
}

/* ---- the client connection (from router_client.c) ----------------------------------------- */

int sl_h2_preface_match(const char *p, size_t n)
{
    size_t k = n < PREFACE_LEN ? n : PREFACE_LEN;
    if (memcmp(p, preface, k))
        return 0;
    return n >= PREFACE_LEN ? 1 : SL_AGAIN;
}

static void h2_init_once(void)
{
    if (server_cbs)
        return;
    nghttp2_session_callbacks_new(&server_cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(server_cbs, c_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(server_cbs, c_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(server_cbs, c_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(server_cbs, c_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(server_cbs, c_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(server_cbs, c_frame_sent);
    nghttp2_session_callbacks_new(&client_cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(client_cbs, u_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(client_cbs, u_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(client_cbs, u_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(client_cbs, u_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(client_cbs, u_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(client_cbs, u_frame_sent);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(client_cbs, u_frame_not_sent);
    nghttp2_option_new(&server_opt);
    nghttp2_option_set_no_auto_window_update(server_opt, 1);
    nghttp2_option_new(&client_opt);
    nghttp2_option_set_no_auto_window_update(client_opt, 1);
}

/* The client sent the HTTP/2 preface: from now on the connection is an
 * HTTP/2 session. Returns false when it could not be set up. */
bool sl_h2_start(sl_client_t *c)
{
    h2_init_once();
    sl_h2conn_t *hc = xcalloc(1, sizeof(*hc));
    hc->c = c;
    hc->reset_budget = SL_H2_RESETS_BURST;
    hc->reset_ms = uv_now(c->r->loop);
    if (nghttp2_session_server_new2(&hc->s, server_cbs, hc, server_opt) != 0) {
        free(hc);
        return false;
    }
    c->h2 = hc;
    c->state = C_PROXY;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, SL_H2_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, SL_H2_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, SL_H2_MAX_HEADER_LIST},
    };
    nghttp2_submit_settings(hc->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(hc->s, NGHTTP2_FLAG_NONE, 0, SL_H2_CONN_WINDOW);
    h2_stream_arm(hc);
    sl_h2_client_read(c);
    return true;
}

static void h2_client_read(sl_client_t *c)
{
    sl_h2conn_t *hc = c->h2;
    if (c->state == C_LINGER) {
        c->rd.start = c->rd.end;
        return;
    }
    if (c->rd.b && c->rd.end > c->rd.start) {
        ssize_t rc = session_recv(hc->s, &c->rd);
        if (c->state == C_CLOSED)
            return;
        if (rc < 0) {
            /* nghttp2 queued the GOAWAY naming the error where it could. */
            h2_conn_dead(hc, NGHTTP2_PROTOCOL_ERROR);
        }
    }
    h2_stream_arm(hc); /* streams begun, ended or still in their header block */
    h2_client_flush(hc);
}

void sl_h2_client_read(sl_client_t *c)
{
    sl_router_t *r = c->r;
    h2_enter(r);
    h2_client_read(c);
    h2_leave(r);
}

static void h2_client_wrote(sl_client_t *c)
{
    sl_h2conn_t *hc = c->h2;
    size_t q = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    hc->send_progress_ms = uv_now(c->r->loop);
    if (!q)
        hc->send_waiting = false;
    if (q <= SL_BP_LOW)
        h2_client_flush(hc);
}

void sl_h2_client_wrote(sl_client_t *c)
{
    sl_router_t *r = c->r;
    h2_enter(r);
    h2_client_wrote(c);
    h2_leave(r);
}

void sl_h2_free(sl_client_t *c)
{
    sl_h2conn_t *hc = c->h2;
    if (!hc)
        return;
    sl_router_t *r = c->r;
    h2_enter(r);
    /* Unqueue every waiter first: a slot given back below must not be
     * handed to another stream of this connection. */
    for (sl_h2s_t *s = hc->streams; s; s = s->next) {
        if (s->queued) {
            s->queued = false;
            r->ops.cancel(r->ctx, s->target, &s->waiter);
        }
    }
    while (hc->streams) {
        sl_h2s_t *s = hc->streams;
        nghttp2_session_set_stream_user_data(hc->s, s->id, NULL);
        stream_free(s);
    }
    if (hc->dirty) {
        sl_h2conn_t **pp = &r->h2_dirty;
        while (*pp != hc)
            pp = &(*pp)->dirty_next;
        *pp = hc->dirty_next;
    }
    nghttp2_session_del(hc->s);
    c->h2 = NULL;
    free(hc);
    h2_leave(r);
}

/* ---- HTTP/1.1 clients of h2c instances ------------------------------------------- */

/*
 * An HTTP/1.1 request to a revision whose instances speak HTTP/2 (RFC 9113
 * §8.3): the client path (router_client.c) proxies it as to any instance,
 * and this translation stands between it and the connection. The request,
 * as the client path writes it (its planned head, then body bytes in their
 * HTTP/1.1 framing), becomes one stream: pseudo-headers from the request
 * line and Host, field names lower-cased, the body decoded into DATA. The
 * stream's response is written back as the HTTP/1.1 bytes an instance
 * would have sent (a status line, the fields, Content-Length when the
 * instance gave one, else chunked with its trailers in the last chunk), and
 * router_resp.c relays them exactly as it relays any response: framing for
 * the client, HEAD, keep-alive, affinity cookie, back-pressure, timers.
 *
 * Flow control holds each direction to a window: request bytes stop the
 * client's reads above SL_BP_HIGH queued; response DATA is given back to
 * the stream's window only as the relay takes the bytes.
 *
 * Failures reach the client path from the connection's own callbacks
 * (read, write, connect, a timer) and never from inside its write, as with
 * an HTTP/1.1 instance: one met while the client path writes is kicked to
 * the next loop turn.
 */
struct sl_h1x {
    sl_upconn_t *up;
    struct sl_h1x *kick_next;
    bool kicked;
    int32_t id; /* the stream, once submitted */

    /* request */
    sl_rbuf_t *head; /* the planned head until it is whole */
    size_t head_len;
    bool head_done, is_head, req_chunked, req_eof;
    uint64_t req_left; /* Content-Length still to come */
    sl_chunked_t req_chunk;
    sl_bq_t req_bq; /* decoded body bytes, not yet in DATA frames */

    /* response, as HTTP/1.1 bytes */
    sl_bq_t resp_bq;
    sl_bq_t trl_bq; /* the trailer section's lines, until it is whole */
    int status;
    bool final, in_trl, chunked, no_body, has_length, resp_eof;
    size_t head_bytes, trl_bytes, interim_bytes;
    bool head_over;
    uint64_t owed; /* DATA bytes not yet given back to the stream's window */

    bool done;         /* the stream closed cleanly after the whole response */
    bool failed;       /* it ended otherwise, or the connection did */
    bool unstarted;    /* the connection would not start it: never sent */
    int fail_status;   /* the router answers this itself (the request cannot be sent) */
    const char *why;   /* static */
    uint32_t rst_code; /* the instance's RST_STREAM code */
};

#define SL_H1X_TRAILERS (8 * 1024) /* what the relay's chunked parser admits */

static sl_h1x_t *free_h1x;
static size_t n_free_h1x;

static void x_free(sl_router_t *r, sl_h1x_t *x)
{
    if (x->kicked) {
        sl_h1x_t **pp = &r->h1x_kicked;
        while (*pp != x)
            pp = &(*pp)->kick_next;
        *pp = x->kick_next;
    }
    if (x->head)
        sl_rbuf_unref(r, x->head);
    bq_clear(r, &x->req_bq);
    bq_clear(r, &x->resp_bq);
    bq_clear(r, &x->trl_bq);
    if (r->closing || n_free_h1x >= SL_H2_FREE_STREAMS) {
        free(x);
        return;
    }
    x->kick_next = free_h1x;
    free_h1x = x;
    n_free_h1x++;
}

/* Settle x on the next loop turn (from where the client path must not be
 * called back). */
static void x_kick(sl_h1x_t *x)
{
    sl_router_t *r = x->up->pool->r;
    if (x->kicked)
        return;
    x->kicked = true;
    x->kick_next = r->h1x_kicked;
    r->h1x_kicked = x;
    if (!uv_is_active((uv_handle_t *)&r->h1x_timer))
        uv_timer_start(&r->h1x_timer, sl_h2_kick_cb, 0, 0);
}

/* Settle x if its stream has ended (nghttp2 closes a stream it resets only
 * once the RST_STREAM is out, while sending). */
static void x_kick_ended(sl_h1x_t *x)
{
    if (x->failed || x->done)
        x_kick(x);
}

static void x_fail(sl_h1x_t *x, const char *why)
{
    if (x->failed || x->done)
        return;
    x->failed = true;
    x->why = why;
}

void sl_h2_bridge_attach(sl_upconn_t *up)
{
    h2_init_once();
    sl_h1x_t *x = free_h1x;
    if (x) {
        free_h1x = x->kick_next;
        n_free_h1x--;
    } else
        x = xmalloc(sizeof(*x));
    memset(x, 0, sizeof(*x));
    x->up = up;
    up->h1x = x;
    up->is_h2 = true;
    if (!up->h2)
        h2_up_session_new(up);
}

/* ---- the request ---- */

static ssize_t x_req_read_cb(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                             uint32_t *flags, nghttp2_data_source *src, void *user_data)
{
    sl_upconn_t *up = user_data;
    sl_h1x_t *x = up->h1x;
    if (!x || x->id != id)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t n = bq_pop(up->pool->r, &x->req_bq, buf, length);
    sl_client_t *c = up->client;
    if (c && c->bp_paused && x->req_bq.len <= SL_BP_LOW)
        sl_client_resume_body(c);
    return data_read_end(session, id, &x->req_bq, x->req_eof, NULL, n, flags);
}

/* Body bytes in the request's HTTP/1.1 framing (the client path checked
 * it) into req_bq, decoded. */
static void x_body_in(sl_h1x_t *x, const char *p, size_t len)
{
    sl_router_t *r = x->up->pool->r;
    if (x->req_eof || x->failed || !len)
        return;
    if (!x->req_chunked) {
        size_t k = len < x->req_left ? len : (size_t)x->req_left;
        bq_push(r, &x->req_bq, (const uint8_t *)p, k);
        x->req_left -= k;
        x->req_eof = x->req_left == 0;
    } else {
        sl_rbuf_t *tmp = sl_rbuf_get(r);
        while (len && !x->req_eof) {
            size_t k = len < SL_RBUF_SIZE ? len : SL_RBUF_SIZE;
            memcpy(tmp->data, p, k);
            size_t out = 0;
            bool done = false;
            const char *why = NULL;
            ssize_t used = sl_chunked_decode(&x->req_chunk, tmp->data, k, &out, &done, &why);
            if (used < 0) {
                x_fail(x, "request body: bad chunked framing");
                break;
            }
            bq_push(r, &x->req_bq, (const uint8_t *)tmp->data, out);
            x->req_eof = done;
            p += k;
            len -= k;
        }
        sl_rbuf_unref(r, tmp);
    }
    if (x->id > 0)
        nghttp2_session_resume_data(x->up->h2, x->id);
}

/* The planned head is whole: submit the stream. */
static void x_submit(sl_h1x_t *x, const sl_http_msg_t *m)
{
    sl_upconn_t *up = x->up;
    nghttp2_nv nv[SL_HTTP_MAX_HEADERS + 4];
    size_t n = 0;
    sl_str_t path = m->target.len ? m->target : SL_STR("/");
    nv[n++] = (nghttp2_nv){(uint8_t *)":method", (uint8_t *)m->method.p, 7, m->method.len,
                           NGHTTP2_NV_FLAG_NONE};
    nv[n++] = NV_LIT(":scheme", "http");
    nv[n++] = (nghttp2_nv){(uint8_t *)":authority", (uint8_t *)m->host.p, 10, m->host.len,
                           NGHTTP2_NV_FLAG_NONE};
    nv[n++] =
        (nghttp2_nv){(uint8_t *)":path", (uint8_t *)path.p, 5, path.len, NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < m->n_headers; i++) {
        const sl_http_header_t *h = &m->headers[i];
        /* Host is :authority; the planned head's Transfer-Encoding is
         * this hop's (HTTP/2 has none) */
        if (sl_str_caseeq(h->name, SL_STR("Host")) || sl_http_is_hop_by_hop(m, h->name))
            continue;
        lower_name((uint8_t *)h->name.p, h->name.len); /* the head is our own copy */
        nv[n++] = (nghttp2_nv){(uint8_t *)h->name.p, (uint8_t *)h->value.p, h->name.len,
                               h->value.len, NGHTTP2_NV_FLAG_NONE};
    }
    x->is_head = sl_str_eq(m->method, SL_STR("HEAD"));
    x->req_chunked = m->body == SL_BODY_CHUNKED;
    x->req_left = m->body == SL_BODY_LENGTH ? m->content_length : 0;
    x->req_eof = !x->req_chunked && x->req_left == 0;
    nghttp2_data_provider prd = {.read_callback = x_req_read_cb};
    int32_t id = nghttp2_submit_request(up->h2, NULL, nv, n, x->req_eof ? NULL : &prd, NULL);
    if (id < 0) {
        x_fail(x, nghttp2_strerror(id));
        return;
    }
    x->id = id;
}

static void x_head_in(sl_h1x_t *x, const char *p, size_t len)
{
    sl_router_t *r = x->up->pool->r;
    if (!x->head)
        x->head = sl_rbuf_get(r);
    size_t k = SL_RBUF_SIZE - x->head_len < len ? SL_RBUF_SIZE - x->head_len : len;
    memcpy(x->head->data + x->head_len, p, k);
    x->head_len += k;
    sl_http_msg_t m;
    sl_http_limits_t lim = {SL_RBUF_SIZE, SL_RBUF_SIZE, SL_RBUF_SIZE, SL_HTTP_MAX_HEADERS};
    int status = 0;
    const char *why = NULL;
    int rc = sl_http_parse_request(x->head->data, x->head_len, &m, &lim, &status, &why);
    if (rc == SL_AGAIN && x->head_len < SL_RBUF_SIZE)
        return;
    if (rc < 0 || rc == SL_AGAIN) {
        /* the client path's head passed this parser once; only the fields
         * it adds can take it over a limit */
        x->fail_status = 431;
        x->why = "request header fields too large to translate for an HTTP/2 instance";
        x->failed = true;
        return;
    }
    x->head_done = true;
    x_submit(x, &m);
    size_t rest = x->head_len - m.head_len;
    x_body_in(x, x->head->data + m.head_len, rest);
    x_body_in(x, p + k, len - k);
    sl_rbuf_unref(r, x->head);
    x->head = NULL;
}

void sl_h2_bridge_write(sl_upconn_t *up, const uv_buf_t *iov, unsigned n)
{
    sl_h1x_t *x = up->h1x;
    sl_router_t *r = up->pool->r;
    h2_enter(r);
    for (unsigned i = 0; i < n && !x->failed; i++) {
        if (!x->head_done)
            x_head_in(x, iov[i].base, iov[i].len);
        else
            x_body_in(x, iov[i].base, iov[i].len);
    }
    if (x->failed)
        x_kick(x);
    h2_up_flush(up);
    h2_leave(r);
}

/* Only what waits for DATA frames: h2_send keeps the socket's own queue
 * under SL_BP_HIGH, and the stream takes req_bq down as it drains (which
 * is where the client's reads resume, x_req_read_cb). */
size_t sl_h2_bridge_queued(const sl_upconn_t *up)
{
    return up->h1x->req_bq.len;
}

/* ---- the response ---- */

static void x_put(sl_h1x_t *x, const void *p, size_t n)
{
    bq_push(x->up->pool->r, &x->resp_bq, p, n);
}

static void x_puts(sl_h1x_t *x, const char *s)
{
    x_put(x, s, strlen(s));
}

static int x_begin_headers(sl_upconn_t *up, sl_h1x_t *x, const nghttp2_frame *f)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->hd.stream_id != x->id)
        return 0;
    if (x->final) {
        x->in_trl = true;
    } else {
        x->status = 0;
    }
    return 0;
}

static int x_on_header(sl_upconn_t *up, sl_h1x_t *x, const nghttp2_frame *f, const uint8_t *name,
                       size_t nl, const uint8_t *value, size_t vl)
{
    if (f->hd.stream_id != x->id)
        return 0;
    if (up->client)
        up->client->up_active_ms = uv_now(up->pool->r->loop);
    size_t line = nl + vl + 4;
    if (x->in_trl) {
        /* Trailers go out in the last chunk, when the body is chunked and
         * the section is whole. One over what the relay admits there cuts
         * the response before its last chunk: the client sees it end short
         * instead of taking a part for the whole. */
        if (!x->chunked || x->no_body || x->failed)
            return 0;
        if (x->trl_bytes + line > SL_H1X_TRAILERS) {
            x_fail(x, "response trailer fields too large");
            return 0;
        }
        x->trl_bytes += line;
        sl_router_t *r = up->pool->r;
        bq_push(r, &x->trl_bq, name, nl);
        bq_push(r, &x->trl_bq, (const uint8_t *)": ", 2);
        bq_push(r, &x->trl_bq, value, vl);
        bq_push(r, &x->trl_bq, (const uint8_t *)"\r\n", 2);
        return 0;
    } else if (nl == 7 && !memcmp(name, ":status", 7)) {
        int st = 0;
        for (size_t i = 0; i < vl && i < 3; i++)
            st = st * 10 + (value[i] - '0');
        x->status = st;
        char sl[64];
        int k = snprintf(sl, sizeof(sl), "HTTP/1.1 %03d %s\r\n", st, sl_http_reason(st));
        x->head_bytes = (size_t)k;
        if (st < 200 && (x->interim_bytes += (size_t)k) > SL_INTERIM_MAX)
            x->head_over = true;
        if (!x->head_over)
            x_put(x, sl, (size_t)k);
        return 0;
    } else {
        if (name[0] == ':')
            return 0;
        x->head_bytes += line;
        if (x->status < 200 && (x->interim_bytes += line) > SL_INTERIM_MAX)
            x->head_over = true;
        if (x->head_bytes > SL_RBUF_SIZE / 2)
            x->head_over = true; /* the relay parses a head in one buffer */
        if (x->head_over)
            return 0;
        if (nl == 14 && !memcmp(name, "content-length", 14))
            x->has_length = true;
    }
    x_put(x, name, nl);
    x_put(x, ": ", 2);
    x_put(x, value, vl);
    x_put(x, "\r\n", 2);
    return 0;
}

static int x_frame_recv(sl_upconn_t *up, sl_h1x_t *x, const nghttp2_frame *f)
{
    if (f->hd.stream_id != x->id || (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA))
        return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (f->hd.type == NGHTTP2_HEADERS && !x->in_trl) {
        if (x->head_over) {
            x_fail(x, x->status < 200 ? "1xx heads too large" : "response head too large");
            return 0;
        }
        if (x->status < 200) {
            x_put(x, "\r\n", 2); /* 1xx, relayed; the final head follows */
            return 0;
        }
        x->final = true;
        x->no_body = x->is_head || x->status == 204 || x->status == 304;
        if (end && !x->no_body && !x->has_length)
            x_puts(x, "content-length: 0\r\n");
        else if (!end && !x->no_body && !x->has_length) {
            x_puts(x, "transfer-encoding: chunked\r\n");
            x->chunked = true;
        }
        x_put(x, "\r\n", 2);
    } else if (f->hd.type == NGHTTP2_HEADERS) {
        if (x->chunked && !x->no_body && !x->failed) {
            uint8_t trl[SL_H1X_TRAILERS];
            size_t n = bq_pop(up->pool->r, &x->trl_bq, trl, sizeof(trl));
            x_puts(x, "0\r\n");
            x_put(x, trl, n);
            x_put(x, "\r\n", 2); /* the trailer section ends */
        }
        bq_clear(up->pool->r, &x->trl_bq);
    } else if (end && x->chunked && !x->no_body) {
        x_puts(x, "0\r\n\r\n");
    }
    if (end)
        x->resp_eof = true;
    return 0;
}

static int x_data_chunk(sl_upconn_t *up, sl_h1x_t *x, int32_t id, const uint8_t *data, size_t len)
{
    nghttp2_session_consume_connection(up->h2, len);
    if (id != x->id || x->no_body || !x->final) {
        nghttp2_session_consume_stream(up->h2, id, len);
        return 0;
    }
    if (up->client)
        up->client->up_active_ms = uv_now(up->pool->r->loop);
    if (x->chunked) {
        char size[24];
        int k = snprintf(size, sizeof(size), "%zx\r\n", len);
        x_put(x, size, (size_t)k);
    }
    x_put(x, data, len);
    if (x->chunked)
        x_put(x, "\r\n", 2);
    x->owed += len;
    return 0;
}

static int x_stream_close(sl_h1x_t *x, int32_t id, uint32_t code)
{
    if (id != x->id)
        return 0;
    if (code == NGHTTP2_NO_ERROR && x->final && x->resp_eof && !x->failed) {
        x->done = true;
    } else {
        x->rst_code = code;
        x_fail(x, code == NGHTTP2_REFUSED_STREAM ? "stream refused"
                  : code                         ? "stream reset"
                                                 : "stream ended before its response");
    }
    return 0;
}

/* Hand what is buffered to the relay, as far as the client takes it, then
 * any failure. Only from the connection's own callbacks or the kick. */
static void x_settle(sl_upconn_t *up)
{
    sl_h1x_t *x = up->h1x;
    sl_client_t *c = up->client;
    if (!x || !c)
        return;
    sl_router_t *r = up->pool->r;
    if (x->fail_status) {
        int st = x->fail_status;
        const char *why = x->why;
        sl_client_drop_upstream(c, false);
        sl_client_local_error(c, st, "%s", why);
        return;
    }
    while (x->resp_bq.len && !up->bp_paused && up->state == UP_BUSY) {
        uv_buf_t b;
        sl_rd_prepare(r, &up->rd, &b);
        if (!b.len) {
            x_fail(x, "response head too large");
            bq_clear(r, &x->resp_bq);
            break;
        }
        size_t n = bq_pop(r, &x->resp_bq, (uint8_t *)b.base, b.len);
        up->rd.end += n;
        up->resp_bytes += n;
        /* the window back for DATA the relay took: whatever is still
         * queued may all be DATA */
        size_t give = x->owed > x->resp_bq.len ? (size_t)x->owed - x->resp_bq.len : 0;
        if (give && x->id > 0 && !x->done) {
            nghttp2_session_consume_stream(up->h2, x->id, give);
            h2_up_flush(up);
        }
        x->owed -= give;
        sl_resp_process(c);
        /* the exchange may have ended (up pooled or closed, x gone) */
        if (up->h1x != x || up->client != c)
            return;
    }
    if (!x->failed || x->resp_bq.len)
        return;
    /* RFC 9113 §8.7: a refused stream, or one the connection would not
     * start, was not processed: routed again like a failed connect */
    bool unprocessed = x->rst_code == NGHTTP2_REFUSED_STREAM || x->unstarted;
    char what[96];
    snprintf(what, sizeof(what), "HTTP/2: %s%s%s", x->why, x->rst_code ? " " : "",
             x->rst_code ? nghttp2_http2_strerror(x->rst_code) : "");
    if (!c->resp_head_done)
        sl_client_upstream_refused(c, unprocessed ? UV_ECONNREFUSED : UV_ECONNRESET, what,
                                   unprocessed && !up->resp_bytes);
    else
        sl_resp_eof(c, UV_ECONNRESET);
}

void sl_h2_bridge_resume(sl_upconn_t *up)
{
    if (up->h1x->resp_bq.len || up->h1x->failed)
        x_kick(up->h1x);
}

bool sl_h2_bridge_detach(sl_upconn_t *up)
{
    sl_h1x_t *x = up->h1x;
    sl_router_t *r = up->pool->r;
    bool poolable = x->done && x->req_eof && !x->req_bq.len && !x->resp_bq.len && up->h2 &&
                    !up->h2_goaway && nghttp2_session_want_read(up->h2) && up->state == UP_BUSY;
    up->h1x = NULL;
    x_free(r, x);
    return poolable;
}

void sl_h2_kick_cb(uv_timer_t *t)
{
    sl_router_t *r = t->data;
    h2_enter(r);
    while (r->h1x_kicked) {
        sl_h1x_t *x = r->h1x_kicked;
        r->h1x_kicked = x->kick_next;
        x->kicked = false;
        x->kick_next = NULL;
        x_settle(x->up);
    }
    h2_leave(r);
}

/* nghttp2 would not send the request's HEADERS: too large a block for
 * the instance, else the connection is going away (a GOAWAY came first). */
static void x_unsendable(sl_h1x_t *x, const nghttp2_frame *f, int err)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->hd.stream_id != x->id || x->failed)
        return;
    x->up->h2_goaway = true; /* never pooled again */
    if (err == NGHTTP2_ERR_FRAME_SIZE_ERROR) {
        x->failed = true;
        x->fail_status = 431;
        x->why = "request header fields too large for the instance";
    } else {
        x_fail(x, "the connection would not start the stream");
        x->unstarted = true;
    }
    x_kick(x);
}

/* The connection failed under the exchange: settle now (from its own
 * callbacks) or on the next loop turn (from the drain, which may run
 * under the client path's write). */
static void x_lost(sl_upconn_t *up, const char *why, bool now)
{
    up->h2_goaway = true; /* never pooled again */
    x_fail(up->h1x, why);
    if (now)
        x_settle(up);
    else
        x_kick(up->h1x);
}

static void x_read(sl_upconn_t *up, ssize_t nread)
{
    if (nread < 0) {
        x_lost(up, nread == UV_EOF ? "connection closed" : "connection lost", true);
        return;
    }
    up->h2_rd.end += (size_t)nread;
    sl_busy_touch(up->pool->r);
    if (session_recv(up->h2, &up->h2_rd) < 0) {
        x_lost(up, "protocol error", true);
        return;
    }
    h2_up_flush(up);
    x_settle(up);
}
