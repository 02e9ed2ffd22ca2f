/*
 * router.h — the HTTP/1.1 and HTTP/2 (h2c) ingress.
 *
 * Accepts client connections on --listen, parses requests with
 * http_parse.h, maps Host to a route target through the owner's ops, waits
 * (without blocking) for an instance slot, and proxies the request to the
 * instance over a pooled keep-alive upstream connection created inside the
 * instance's network namespace. Bodies stream both ways (Content-Length and
 * chunked) with back-pressure; nothing buffers a whole body. Hop-by-hop
 * headers are removed; Forwarded, X-Forwarded-For, X-Forwarded-Proto and
 * X-Forwarded-Host are added. Errors the router itself answers carry a short
 * text body saying why (404 unknown host, 502 instance failed, 503, 504).
 *
 * Policies (router_*.c, upstream.c):
 * - Forwarding headers: X-Forwarded-For and Forwarded keep what the client
 *   sent and gain this hop (for=<client ip>, IPv6 quoted; host="<Host>";
 *   proto=http); X-Forwarded-Proto (http) and X-Forwarded-Host (the Host
 *   value) are replaced. Host is kept; an absolute-form target is sent as
 *   origin-form with Host taken from it. Upstream speaks HTTP/2 to
 *   instances whose port is named h2c, else HTTP/1.1.
 * - Expect: 100-continue is forwarded; the instance's 100 is relayed (1xx
 *   other than 101 reach HTTP/1.1 clients; HTTP/1.0 clients get none).
 * - Over max_connections a connection is accepted, answered 503 "too many
 *   connections" and closed, so clients fail fast instead of hanging.
 * - max_body_bytes: Content-Length over it → 413 before anything is sent
 *   upstream; a chunked body is counted in wire bytes as it streams.
 * - An HTTP/1.1 client's chunked request body is passed on re-framed, as
 *   nginx streams one: its data in chunks with plain hex sizes, without
 *   the client's extensions or trailers, so an instance parses only
 *   framing the router wrote.
 * - Timeouts: timeout_ms(target) runs from head parsed (queue time counts)
 *   to the instance's response head; then 504 and the upstream connection
 *   is abandoned (release with failed = false). A started response streams
 *   on with no deadline. A request head must arrive whole within
 *   header_timeout_ms of its first byte (408), however slowly it trickles;
 *   a request body must keep making progress (body_timeout_ms, 408).
 *   The pick's response_start_ms bounds the time from the request's
 *   delivery to the instance to its response head (504), and its idle_ms
 *   the instance's silence from then on: a 504 before the head, and after
 *   it the response is cut (the client connection closes). Time the router
 *   itself does not read the instance (back-pressure from a slow client)
 *   does not count.
 * - Hostile input: every parse error, limit (414 request line, 431 header
 *   line / head / count, 413 body) and unknown transfer coding is answered
 *   and the connection closed; bytes after the bad head are never parsed.
 *   An absolute-form target's authority is the routing host, so a foreign
 *   authority gets 404 like an unknown Host and is never proxied.
 * - A pooled connection that fails before any response byte is retried
 *   once on a fresh connection when the whole request is still buffered and
 *   the method is idempotent: the instance may have read a POST and acted on
 *   it before it died, and a proxy must not repeat it (RFC 9112 §9.3.1).
 * - A request that never reached its instance (the connection failed while
 *   connecting: refused, reset, or the pool was closed) and is still wholly
 *   buffered is released with failed = true and acquired again, at most
 *   twice (so up to three instances) and only before its deadline; then 502.
 * - A status the owner answers (acquire's or w->ready's) goes out with its
 *   reason as the body; 429 and 503 also carry "Retry-After: 1".
 * - WebSocket: an HTTP/1.1 request without a body carrying Connection:
 *   upgrade and Upgrade: websocket is forwarded with those two fields. A 101
 *   from the instance is relayed and the connection becomes a byte tunnel
 *   both ways (back-pressure as for bodies; a client FIN is passed on, the
 *   instance closing ends it) until either side closes or no byte moves
 *   for idle_timeout_ms; the request timeout stops at the 101. It stays one
 *   request in flight until then and is released with status 101. Any other
 *   answer is relayed as usual; a 101 to any other request is a 502.
 * - A client that sends EOF while its request is queued or in flight is
 *   gone: the request is cancelled / released. A client that stops reading
 *   a response (no write progress for idle_timeout_ms) is disconnected, so it
 *   cannot hold an instance slot forever.
 * - HTTP/2: a connection that opens with the HTTP/2 preface (prior
 *   knowledge, RFC 9113 §3.3) is served by router_h2.c. Each stream is one
 *   request (resolve, acquire, release, the timeouts above) sent to the
 *   instance over HTTP/2 when the pick says it speaks h2c, else translated
 *   to HTTP/1.1; an HTTP/1.1 request whose pick speaks h2c becomes one
 *   HTTP/2 stream and its response HTTP/1.1 again (a WebSocket handshake
 *   to such an instance is a 501).
 * - The router ignores SIGPIPE process-wide (sl_router_new).
 */
#ifndef SL_ROUTER_H
#define SL_ROUTER_H

#include "common.h"
#include "http_parse.h"
#include <uv.h>

typedef struct sl_router sl_router_t;
typedef struct sl_upstream_pool sl_upstream_pool_t;
typedef struct sl_waiter sl_waiter_t;

/* What the owner hands the router for one request: where to send it. */
typedef struct sl_pick {
    sl_upstream_pool_t *pool; /* the instance's pool (netns + port) */
    void *instance;           /* owner's instance handle, given back in release */
    uint64_t token;           /* owner's per-request value (e.g. metering), given back */
    /* Session affinity: a Set-Cookie value for the response (copied when
     * its head is built; valid until the request is released); NULL none */
    const char *set_cookie;
    /* The serving revision's limits on the request (0 = none): its
     * timeoutSeconds, which replaces timeout_ms(target)'s from the request's
     * arrival on, and once it is delivered to the instance Knative's
     * responseStartTimeoutSeconds (to the response head) and
     * idleTimeoutSeconds (the instance's silence). */
    uint32_t timeout_ms, response_start_ms, idle_ms;
    bool h2c; /* the instance speaks HTTP/2 (prior knowledge), not HTTP/1.1 */
} sl_pick_t;

/* The cookie that carries session affinity (Cloud Run's GAESA). */
#define SL_AFFINITY_COOKIE "sluice-affinity"

/*
 * A request waiting for capacity. The router embeds one per request; the
 * owner queues it (e.g. in a per-revision FIFO via `link`) and later calls
 * w->ready exactly once — with status 0 and a pick, or with an HTTP status
 * (503, 429, 502, 504) and a reason — unless the router cancels it first.
 */
struct sl_waiter {
    void (*ready)(sl_waiter_t *w, int status, const sl_pick_t *pick, const char *reason);
    struct sl_waiter *prev, *next; /* owner's queue links */
    uint64_t enqueued_ns; /* sl_now_ns() when the router asked: the owner's "now" in acquire */
    bool retry;           /* the same request asked again (it never reached an instance) */
    void *owner_data;     /* for the owner's use */
    sl_str_t affinity;    /* the request's SL_AFFINITY_COOKIE value; empty if none */
};

typedef struct sl_router_ops {
    /*
     * Resolve a Host (lower-cased, port removed, never empty) to an opaque
     * route target, or NULL for an unknown host (router answers 404).
     */
    void *(*resolve)(void *ctx, sl_str_t host);
    /*
     * Ask for an instance slot on target. Returns SL_OK with *pick filled
     * (the owner counted the request in flight), SL_AGAIN when w was queued
     * (w->ready will be called), or an HTTP status >= 400 to answer at once
     * with *reason (static or owner-lifetime string).
     */
    int (*acquire)(void *ctx, void *target, sl_waiter_t *w, sl_pick_t *pick, const char **reason);
    /* Remove a queued waiter (client went away or timed out). */
    void (*cancel)(void *ctx, void *target, sl_waiter_t *w);
    /* The request finished with the instance: pick as acquired, status the
     * instance's response status (0 if none arrived), failed = upstream
     * error (connect, reset, unframeable response). */
    void (*release)(void *ctx, const sl_pick_t *pick, int status, bool failed);
    /* Per-target request timeout in ms (Knative timeoutSeconds); 0 = none. */
    uint64_t (*timeout_ms)(void *ctx, void *target);
} sl_router_ops_t;

typedef struct sl_router_config {
    const char *listen;         /* "127.0.0.1:8080" or "[::1]:8080" */
    uint64_t header_timeout_ms; /* client must send a full head within (default 30000) */
    uint64_t idle_timeout_ms;   /* idle keep-alive client conns closed after (default 60000) */
    uint64_t upstream_idle_ms;  /* idle pooled upstream conns closed after (default 30000) */
    size_t max_connections;     /* client connections; 0 = 10000 */
    uint64_t max_body_bytes;    /* 0 = unlimited, else 413 */
    /* A request body that makes no progress for this long while the
     * instance waits for it is cut off: 408 when no response has started,
     * else the connection closes (default 30000). Applies whether or not
     * the target has a request timeout. */
    uint64_t body_timeout_ms;
    /* Idle pooled connections kept per instance; beyond it the oldest idle
     * one is closed (default 256). */
    size_t upstream_max_idle;
    /* Busy polling (opt-in, HAProxy's busy-polling): for this long after the
     * router last read from a client or an instance, the loop polls for I/O
     * without sleeping. On a VM, a CPU that sleeps costs the next request a
     * halt and a wake-up IPI, both VM exits; polling trades CPU for that
     * latency. 0 = off (default); at most SL_BUSY_POLL_MAX_NS. */
    uint64_t busy_poll_ns;
} sl_router_config_t;

#define SL_BUSY_POLL_MAX_NS 10000000ull /* 10ms */

int sl_router_new(uv_loop_t *loop, const sl_router_config_t *cfg, const sl_router_ops_t *ops,
                  void *ctx, sl_router_t **out, sl_error_t *err);
/* Stop accepting, close every connection; cb runs once all handles closed.
 * Queued requests are cancelled (ops->cancel) and in-flight ones released
 * (ops->release, failed = false) during this call. Pools the owner has not
 * closed are closed and freed with the router: no pool pointer may be used
 * after this call. r itself is freed before cb runs. */
void sl_router_close(sl_router_t *r, void (*cb)(void *), void *data);
/*
 * The Host normalisation routing uses: lower-cased, port removed, one
 * trailing dot of a name removed ("App.Test.:80" → "app.test"). Writes a
 * NUL-terminated name of at most cap - 1 bytes into out; returns its length,
 * or -1 when h is empty, too long or malformed (characters outside RFC 3986
 * reg-name / IPv4 / [IP-literal], a non-numeric port). Pure; no allocation.
 */
ssize_t sl_router_normalize_host(sl_str_t h, char *out, size_t cap);

/* The bound port (useful with port 0). */
int sl_router_port(const sl_router_t *r);

/*
 * An instance's upstream pool: connections are created by setns(netns_fd),
 * socket(), setns(back) and connect to 127.0.0.1:port. The router dups
 * netns_fd. Close it when the instance stops: idle connections close now,
 * busy ones when their exchange ends; freed when the last one is gone.
 */
sl_upstream_pool_t *sl_upstream_pool_new(sl_router_t *r, int netns_fd, int port);
/* sl_upstream_pool_new returns NULL when netns_fd cannot be duplicated or
 * the router is closing. After sl_upstream_pool_close the owner must no
 * longer hand the pool out in a pick. */
void sl_upstream_pool_close(sl_upstream_pool_t *pool);

/* Counters for status and metrics. */
typedef struct sl_router_stats {
    uint64_t connections_open;
    uint64_t requests_total;
    uint64_t requests_in_flight;
    uint64_t upstream_conns_open;
    uint64_t writes_pending; /* writes waiting on a socket, either side */
    uint64_t busy_poll_ns;   /* time the loop spent with busy polling on (--busy-poll) */
} sl_router_stats_t;
void sl_router_stats(const sl_router_t *r, sl_router_stats_t *out);

#endif
