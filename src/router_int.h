/*
 * router_int.h — internals shared by router.c (lifecycle, buffers, writes),
 * router_client.c (client connections and requests), router_resp.c
 * (response relay) and upstream.c (instance pools and upstream connections).
 *
 * Memory model: every byte that travels through the proxy sits in a
 * ref-counted 16 KiB buffer (sl_rbuf_t) taken from a per-router free list.
 * Parsed heads are zero-copy slices into those buffers; a write that could
 * not finish synchronously holds a reference to each buffer its iovecs point
 * into, so reading goes on into other buffers while the write drains. Small
 * generated strings (request line, Forwarded, chunk sizes) and the request's
 * iovec plan are bump-allocated from a per-request "gen" buffer. After
 * warm-up nothing on the request path calls malloc.
 */
#ifndef SL_ROUTER_INT_H
#define SL_ROUTER_INT_H

#include "router.h"

#include <netinet/in.h>

#define SL_RBUF_SIZE      (16 * 1024)
#define SL_RBUF_MINREAD   4096
#define SL_FREE_BUFS      512          /* buffers kept on the free list */
#define SL_BP_HIGH        (256 * 1024) /* pause the source above this queue size */
#define SL_INTERIM_MAX    SL_BP_HIGH   /* 1xx heads relayed in one exchange, in bytes */
#define SL_BP_LOW         (64 * 1024)  /* resume it at or below */
#define SL_WREQ_REFS      4
#define SL_LINGER_MS      3000
#define SL_REROUTES       2    /* never-sent requests asked of the owner again */
#define SL_TRICKLE_MIN    4096 /* client bytes gathered while the instance's writes queue */
#define SL_PLAN_BODY_IOV  4    /* a body's iovecs: chunk size, data, CRLF, last chunk */
#define SL_CHUNK_SIZE_MAX 24   /* "%zx\r\n" of any size_t, and its NUL */

#define sl_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef struct sl_rbuf {
    struct sl_rbuf *next; /* free list */
    uint32_t refs;
    _Alignas(16) char data[SL_RBUF_SIZE];
} sl_rbuf_t;

/* A read cursor: unconsumed bytes are b->data[start..end). */
typedef struct sl_rd {
    sl_rbuf_t *b;
    size_t start, end;
} sl_rd_t;

typedef struct sl_wreq {
    uv_write_t req;
    struct sl_wreq *next;
    sl_rbuf_t *refs[SL_WREQ_REFS];
    unsigned nrefs;
} sl_wreq_t;

typedef struct sl_client sl_client_t;
typedef struct sl_upconn sl_upconn_t;

/* The owner's answer to a waiter given from inside acquire, kept until
 * acquire has returned (sl_acquire). */
typedef struct sl_stash {
    bool in_acquire, ready;
    int status;
    sl_pick_t pick;
    bool have_pick;
    const char *reason;
} sl_stash_t;

enum { UP_CONNECTING, UP_BUSY, UP_IDLE, UP_CLOSING };

struct sl_upconn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_shutdown_t shutdown_req; /* tunnel: the client half-closed */
    sl_upstream_pool_t *pool;
    sl_client_t *client;      /* while busy */
    sl_upconn_t *prev, *next; /* pool's idle list, most recent first */
    sl_rd_t rd;
    int state;
    bool reading;
    bool bp_paused;      /* reading stopped: client write queue too long */
    bool reused;         /* taken from the idle list for this exchange */
    uint64_t resp_bytes; /* response bytes received in this exchange */
    uint64_t idle_since_ms;
    /* HTTP/2 (the instance's port is "h2c"): one stream at a time */
    bool is_h2, h2_goaway;
    bool h2_dirty; /* frames to write: on the router's h2_up_dirty list */
    sl_upconn_t *h2_dirty_next;
    struct nghttp2_session *h2;
    sl_rd_t h2_rd;      /* the session's bytes from the socket (rd is the relay's) */
    struct sl_h2s *h2s; /* the stream it carries, while busy */
    /* An HTTP/1.1 client's exchange, translated (router_h2.c): the
     * response reaches router_resp.c as HTTP/1.1 bytes in rd. */
    struct sl_h1x *h1x;
};

struct sl_upstream_pool {
    sl_router_t *r;
    sl_upstream_pool_t *prev, *next; /* router's list */
    int netns_fd;
    bool same_ns; /* netns is the router's own: no setns needed */
    int port;
    bool closed;
    sl_upconn_t *idle;      /* head = most recently used */
    sl_upconn_t *idle_tail; /* oldest */
    size_t n_idle;
    size_t n_conns; /* every conn not yet freed */
};

/* Client connection states. */
enum { C_HEAD, C_WAIT, C_PROXY, C_LINGER, C_CLOSED };
/* What the client timer is measuring. */
enum { T_NONE, T_HEADER, T_IDLE, T_REQUEST, T_SEND, T_FLUSH, T_LINGER, T_TUNNEL };
/* How the response body travels to the client. */
enum { RB_NONE, RB_LENGTH, RB_CHUNKED, RB_DECHUNK, RB_CLOSE_RAW, RB_CLOSE_CHUNK };

struct sl_client {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    sl_router_t *r;
    sl_client_t *prev, *next;
    int pending_closes;
    int state;
    int timer_mode;
    uint64_t timer_due;  /* loop time (ms) the current mode expires */
    uint64_t timer_fire; /* loop time the libuv timer is armed for; 0 = not armed */
    bool reading, bp_paused, shutting_down, in_parse;
    uint64_t n_requests;
    char peer[INET6_ADDRSTRLEN + 2];
    char fwd_for[INET6_ADDRSTRLEN + 12]; /* for=1.2.3.4 / for="[::1]" */
    size_t peer_len, fwd_for_len;
    bool peer_v6;
    sl_rd_t rd;

    /* The current request (valid from head parsed to end_request). */
    bool in_request;
    sl_rbuf_t *head_buf; /* holds the request head the plan points into */
    sl_rbuf_t *gen;      /* scratch for generated strings + plan */
    size_t gen_used;
    sl_str_t method;
    bool is_head, idempotent, keep_alive, must_close;
    int minor;
    sl_http_body_t req_body;
    uint64_t body_left; /* LENGTH: bytes still to come */
    uint64_t body_seen; /* wire bytes of body seen (limit check) */
    sl_chunked_t req_chunk;
    bool req_done; /* whole request handed to the upstream */
    bool up_write_failed;
    uv_buf_t *plan; /* request head iovecs (in gen) + buffered body */
    unsigned plan_n, plan_head_n;
    char *plan_chunk;         /* beside the plan: the buffered body's chunk size */
    sl_rbuf_t *plan_body_buf; /* ref: buffer with the buffered body bytes */
    sl_rbuf_t *stage;         /* small pieces gathered while the instance's writes queue */
    size_t stage_len;
    bool replayable;
    int attempts; /* fresh-connection retries on this pick */
    int reroutes; /* picks given back because the request was never sent */
    bool upgrade; /* a WebSocket upgrade was forwarded */
    void *target;
    sl_str_t affinity; /* SL_AFFINITY_COOKIE's value, in head_buf */
    sl_waiter_t waiter;
    bool queued;
    sl_stash_t stash;
    sl_pick_t pick;
    bool have_pick;
    uint64_t timeout_ms;
    uint64_t deadline_ms;      /* loop time of the 504 (0 = none) */
    uint64_t body_progress_ms; /* loop time request body bytes last arrived */
    uint64_t up_idle_ms;       /* pick.idle_ms: the instance's silence allowed (0 = any) */
    uint64_t up_active_ms;     /* loop time the instance last sent (or was sent the request) */
    uint64_t start_due_ms;     /* loop time of the response-start 504 (0 = none) */
    uint64_t send_progress_ms; /* loop time a response write to the client last completed */
    sl_upconn_t *up;

    /* Response relay. */
    bool resp_head_done, resp_started, resp_done, up_reusable;
    int resp_status;        /* the instance's final status, 0 until its head arrived */
    uint32_t interim_bytes; /* of the 1xx heads relayed before it */
    int rb_mode;
    uint64_t resp_left;
    sl_chunked_t resp_chunk;

    /* After a relayed 101: bytes flow both ways until either side ends. */
    bool tunnel, tunnel_rd_eof;
    uint64_t tunnel_active_ms; /* loop time bytes last moved */

    /* The client spoke HTTP/2 (router_h2.c): the connection is a session. */
    struct sl_h2conn *h2;
};

struct sl_router {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t sweep;
    uv_idle_t busy;      /* keeps the loop's poll non-blocking (cfg.busy_poll_ns) */
    uint64_t busy_since; /* uv_hrtime() at which the current window began */
    uint64_t busy_until; /* uv_hrtime() at which polling stops unless I/O came */
    bool busy_on;        /* busy handle started */
    bool busy_io;        /* the router read something since the last check */
    sl_router_config_t cfg;
    sl_router_ops_t ops;
    void *ctx;
    int host_ns_fd;
    unsigned long host_ns_ino;
    unsigned long host_ns_dev;
    sl_http_limits_t limits;
    size_t n_handles; /* open libuv handles */
    size_t n_clients;
    bool closing;
    void (*close_cb)(void *);
    void *close_data;
    sl_client_t *clients;
    sl_upstream_pool_t *pools;
    sl_rbuf_t *free_bufs;
    size_t n_free_bufs;
    sl_wreq_t *free_wreqs;
    sl_router_stats_t stats;
    /* HTTP/2 connections with frames to write (router_h2.c's h2_drain) */
    struct sl_h2conn *h2_dirty;
    sl_upconn_t *h2_up_dirty;
    bool h2_draining;
    int h2_depth; /* router_h2.c entry points on the stack */
    /* Translated HTTP/1.1 exchanges with work for the next loop turn:
     * bytes a client can take again, a failure met while it was writing. */
    uv_timer_t h1x_timer;
    struct sl_h1x *h1x_kicked;
};

/* router.c: buffers, writes, handle accounting. */
sl_rbuf_t *sl_rbuf_get(sl_router_t *r);
static inline void sl_rbuf_ref(sl_rbuf_t *b)
{
    b->refs++;
}
void sl_rbuf_unref(sl_router_t *r, sl_rbuf_t *b);
/* Make room to read into rd; *out is empty when the buffer is full of
 * unconsumed bytes. */
void sl_rd_prepare(sl_router_t *r, sl_rd_t *rd, uv_buf_t *out);
void sl_rd_release(sl_router_t *r, sl_rd_t *rd);
/* Write iov to s: synchronously when the socket takes it all, else queue the
 * rest with a request holding a reference on each of refs[]. Returns 0 or a
 * libuv error. */
int sl_send(sl_router_t *r, uv_stream_t *s, uv_buf_t *iov, unsigned n, sl_rbuf_t **refs,
            unsigned nrefs, uv_write_cb cb);
void sl_wreq_done(sl_router_t *r, uv_write_t *req);
/* Writes of at most this many bytes are gathered into one contiguous
 * segment: the kernel's send loop costs more per iovec than the copy. */
#define SL_FLAT_MAX 4096
size_t sl_iov_len(const uv_buf_t *iov, size_t n);
/* Copy iov[0..n) back to back into dst; returns dst. */
char *sl_iov_gather(const uv_buf_t *iov, size_t n, char *dst);
void sl_handle_closed(sl_router_t *r);
void sl_busy_start(sl_router_t *r);
/* The router read from a socket: with busy polling on, keep polling. */
static inline void sl_busy_touch(sl_router_t *r)
{
    if (r->cfg.busy_poll_ns) {
        r->busy_io = true;
        if (!r->busy_on)
            sl_busy_start(r);
    }
}

/* router_client.c */
void sl_client_on_accept(uv_stream_t *server, int status);
/* Destroy c after a response was cut short: where a close would end its
 * body as if whole (read until close, or de-chunked for an HTTP/1.0
 * client), with a reset, so the client sees the failure. */
void sl_client_abort(sl_client_t *c);
void sl_client_destroy(sl_client_t *c);
void sl_client_upstream_failed(sl_client_t *c, int err, const char *what);
/* The same, where the instance said it did not process the request
 * (unprocessed: an HTTP/2 REFUSED_STREAM): routed again like a connect
 * that failed. */
void sl_client_upstream_refused(sl_client_t *c, int err, const char *what, bool unprocessed);
void sl_client_local_error(sl_client_t *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sl_client_exchange_done(sl_client_t *c);
void sl_client_drop_upstream(sl_client_t *c, bool failed);
void sl_client_update_reading(sl_client_t *c);
/* The instance took enough of the request body: read the client again
 * (back-pressure ends), its body timeout counting from now. */
void sl_client_resume_body(sl_client_t *c);
/* The instance's write queue emptied: client bytes staged go now. */
void sl_client_up_drained(sl_client_t *c);
void sl_client_close_graceful(sl_client_t *c);
void sl_client_set_timer(sl_client_t *c, int mode, uint64_t ms);
/* T_SEND from the response head on (router_client.c). */
void sl_client_arm_send_timer(sl_client_t *c);
char *sl_client_gen(sl_client_t *c, size_t n);
/* Make sure the gen buffer has n bytes free, starting a fresh one if not
 * (do it before anything of the write being built points into it). */
void sl_client_gen_reserve(sl_client_t *c, size_t n);
/* True when sl_client_gen(c, n) would use the current gen buffer's room
 * (no fresh buffer that an iovec could point into after a give-back). */
bool sl_client_gen_fits(const sl_client_t *c, size_t n);
/* Append m's header lines minus those skip() rejects to iov[n..]; returns
 * the new count. Needs at most n_headers + 1 + 4 * (rebuilt lines) slots. */
size_t sl_plan_headers(const sl_http_msg_t *m, const char *fields_end, uv_buf_t *iov, size_t n,
                       bool (*skip)(const sl_http_msg_t *, sl_str_t, void *), void *arg);
void sl_client_write_cb(uv_write_t *req, int status);
/* GET, HEAD, OPTIONS, TRACE, PUT, DELETE (RFC 9110 §9.2.2): safe to send again. */
bool sl_method_idempotent(sl_str_t m);
/* The value of cookie `name` in one Cookie field value; empty when absent. */
sl_str_t sl_cookie_in(sl_str_t value, sl_str_t name);
/* The 101 went out: switch the client connection to a byte tunnel. */
void sl_client_tunnel_start(sl_client_t *c);

/* Ask the owner for an instance for a request (ops.acquire): SL_OK with
 * *pick, SL_AGAIN when w was queued (w->ready answers later), else the
 * owner's status. An answer the owner gave from inside acquire (kept by
 * sl_stash from w->ready) is returned as if acquire had given it. */
int sl_acquire(sl_router_t *r, void *target, sl_waiter_t *w, sl_stash_t *st, sl_pick_t *pick,
               const char **reason);
/* From a waiter's ready: keep the answer when it comes from inside
 * sl_acquire (true: the caller does nothing more). */
bool sl_stash(sl_stash_t *st, int status, const sl_pick_t *pick, const char *reason);

/* The serving revision's timeout (pick->timeout_ms) replaces the route's
 * guess, counted from the request's arrival (the guess covered the wait
 * for an instance). False when the request is already past it: it is not
 * sent at all, a 504. */
bool sl_pick_deadline(const sl_pick_t *pick, uint64_t *timeout_ms, uint64_t *deadline_ms,
                      uint64_t now);
/* The text body of an answer the router makes itself: the message,
 * truncated to fit cap, and a newline. Returns its length. */
size_t sl_answer_body(char *body, size_t cap, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* router_resp.c */
void sl_resp_process(sl_client_t *c);
void sl_resp_eof(sl_client_t *c, int err);

/* upstream.c */
/* Idle conn (LIFO) or a new connecting one; NULL with *err set on failure. */
sl_upconn_t *sl_up_get(sl_upstream_pool_t *pool, bool fresh, int *err);
void sl_up_put(sl_upconn_t *up);
void sl_up_close(sl_upconn_t *up);
void sl_up_update_reading(sl_upconn_t *up);
void sl_up_sweep(uv_timer_t *t);
void sl_pool_close_all(sl_router_t *r);
void sl_up_write_cb(uv_write_t *req, int status);
/* Send FIN once queued writes drain (tunnel half-close). 0 or libuv error. */
int sl_up_shutdown(sl_upconn_t *up);

/* router_h2.c: HTTP/2 (h2c) clients and instances. */
/* 1 when p[0..n) is the HTTP/2 client preface, SL_AGAIN for a prefix of
 * it, 0 otherwise. */
int sl_h2_preface_match(const char *p, size_t n);
/* Turn c into an HTTP/2 session; false when it could not be set up. */
bool sl_h2_start(sl_client_t *c);
void sl_h2_client_read(sl_client_t *c);
void sl_h2_client_wrote(sl_client_t *c);
void sl_h2_timer(sl_client_t *c, int mode);
void sl_h2_free(sl_client_t *c);
void sl_h2_up_connected(sl_upconn_t *up, int status);
void sl_h2_up_read(sl_upconn_t *up, ssize_t nread);
void sl_h2_up_wrote(sl_upconn_t *up, int status);
void sl_h2_up_free(sl_upconn_t *up);
/* HTTP/1.1 clients of h2c instances: the exchange on up is translated to
 * one HTTP/2 stream. attach when the client's exchange takes up; write is
 * the request as the client path sends it (head, then body bytes in its
 * framing) and never fails synchronously; queued is the request bytes the
 * stream has not sent yet (back-pressure); resume when up->bp_paused went
 * off; detach when the exchange ends: true when up may go back to its
 * pool. */
void sl_h2_bridge_attach(sl_upconn_t *up);
void sl_h2_bridge_write(sl_upconn_t *up, const uv_buf_t *iov, unsigned n);
size_t sl_h2_bridge_queued(const sl_upconn_t *up);
void sl_h2_bridge_resume(sl_upconn_t *up);
bool sl_h2_bridge_detach(sl_upconn_t *up);
void sl_h2_kick_cb(uv_timer_t *t);

#endif
