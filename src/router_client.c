/*
 * router_client.c — one client connection: read and parse request heads,
 * map Host to a target, wait for an instance slot, plan and forward the
 * request head (zero-copy iovecs into the read buffer), stream the request
 * body with back-pressure, answer errors the router owns, and close
 * gracefully (shutdown, drain, close) or at once.
 *
 * States: C_HEAD (reading a head; timer = header or idle timeout) → C_WAIT
 * (queued for capacity; timer = request timeout) → C_PROXY (attached to an
 * upstream connection) → back to C_HEAD for the next keep-alive request, or
 * C_LINGER (response flushed, draining input until EOF) → C_CLOSED (handles
 * closing; freed in the last close callback).
 *
 * Forwarding headers: the router is the edge, so it appends to the chain the
 * client sent — X-Forwarded-For and Forwarded keep their earlier values and
 * gain this hop — while X-Forwarded-Proto and X-Forwarded-Host describe this
 * hop only and replace whatever the client sent.
 */
#include "router_int.h"

#include <arpa/inet.h>
#include <stdio.h>

static void c_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void c_parse_heads(sl_client_t *c);
static void c_end_request(sl_client_t *c, bool close);
static void c_got_pick(sl_client_t *c);

/* ---- small helpers ---------------------------------------------------- */

static void c_timer_cb(uv_timer_t *t);

/*
 * T_SEND (response streaming), T_IDLE and T_FLUSH (closing, output still
 * queued) are re-armed by every completed client write, so they measure
 * time without progress: a client that stops reading is cut off after
 * idle_timeout_ms instead of holding an instance slot forever.
 *
 * Every request moves its connection through several modes, so setting one
 * only records the mode and its due time. The libuv timer is re-armed only
 * when the new due time is earlier than the one it is armed for; when it
 * fires early the callback re-arms it for what is left. A keep-alive request
 * therefore costs no timer-heap operation at all in the steady state.
 */
void sl_client_set_timer(sl_client_t *c, int mode, uint64_t ms)
{
    c->timer_mode = mode;
    if (mode == T_NONE)
        return; /* an armed timer finds T_NONE and does nothing */
    uint64_t due = uv_now(c->r->loop) + ms;
    c->timer_due = due;
    if (c->timer_fire && c->timer_fire <= due)
        return;
    c->timer_fire = due;
    uv_timer_start(&c->timer, c_timer_cb, ms, 0);
}

static size_t gen_round(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

bool sl_client_gen_fits(const sl_client_t *c, size_t n)
{
    return c->gen && c->gen_used + gen_round(n) <= SL_RBUF_SIZE;
}

void sl_client_gen_reserve(sl_client_t *c, size_t n)
{
    if (!sl_client_gen_fits(c, n)) {
        sl_rbuf_unref(c->r, c->gen);
        c->gen = sl_rbuf_get(c->r);
        c->gen_used = 0;
    }
}

char *sl_client_gen(sl_client_t *c, size_t n)
{
    n = gen_round(n);
    sl_client_gen_reserve(c, n);
    char *p = c->gen->data + c->gen_used;
    c->gen_used += n;
    return p;
}

static void c_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    sl_client_t *c = h->data;
    sl_rd_prepare(c->r, &c->rd, buf);
}

void sl_client_update_reading(sl_client_t *c)
{
    bool want;
    if (c->state == C_CLOSED || c->tunnel_rd_eof)
        want = false; /* a tunnel's client half-closed: nothing more to read */
    else if (c->state == C_LINGER)
        want = true;
    else
        want = !c->bp_paused && (!c->rd.b || c->rd.end - c->rd.start < SL_RBUF_SIZE);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, c_alloc_cb, c_read_cb) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static bool method_is(sl_str_t m, const char *lit)
{
    return sl_str_eq(m, sl_str_from(lit));
}

bool sl_method_idempotent(sl_str_t m)
{
    return method_is(m, "GET") || method_is(m, "HEAD") || method_is(m, "OPTIONS") ||
           method_is(m, "TRACE") || method_is(m, "PUT") || method_is(m, "DELETE");
}

/* ---- closing ---------------------------------------------------------- */

static void c_on_close(uv_handle_t *h)
{
    sl_client_t *c = h->data;
    if (--c->pending_closes > 0)
        return;
    sl_router_t *r = c->r;
    sl_rd_release(r, &c->rd);
    sl_rbuf_unref(r, c->head_buf);
    sl_rbuf_unref(r, c->gen);
    sl_rbuf_unref(r, c->plan_body_buf);
    sl_rbuf_unref(r, c->stage);
    free(c);
    r->n_handles--; /* the timer; sl_handle_closed accounts for the tcp */
    sl_handle_closed(r);
}

/* Abandon the exchange with the instance: unqueue, close the upstream
 * connection (never pooled), give the slot back. */
void sl_client_drop_upstream(sl_client_t *c, bool failed)
{
    sl_router_t *r = c->r;
    if (c->queued) {
        c->queued = false;
        r->ops.cancel(r->ctx, c->target, &c->waiter);
    }
    if (c->up) {
        sl_upconn_t *up = c->up;
        c->up = NULL;
        up->client = NULL;
        sl_up_close(up);
    }
    c->bp_paused = false;
    if (c->have_pick) {
        c->have_pick = false;
        r->ops.release(r->ctx, &c->pick, c->resp_status, failed);
    }
}

void sl_client_abort(sl_client_t *c)
{
    uv_os_fd_t fd;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (c->state != C_CLOSED && c->resp_started &&
        (c->rb_mode == RB_DECHUNK || c->rb_mode == RB_CLOSE_RAW) &&
        uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    sl_client_destroy(c);
}

void sl_client_destroy(sl_client_t *c)
{
    if (c->state == C_CLOSED)
        return;
    sl_router_t *r = c->r;
    sl_h2_free(c);
    sl_client_drop_upstream(c, false);
    if (c->in_request) {
        c->in_request = false;
        r->stats.requests_in_flight--;
    }
    c->state = C_CLOSED;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    r->n_clients--;
    r->stats.connections_open--;
    c->pending_closes = 2;
    uv_close((uv_handle_t *)&c->timer, c_on_close);
    uv_close((uv_handle_t *)&c->tcp, c_on_close);
}

static void c_shutdown_cb(uv_shutdown_t *req, int status)
{
    sl_client_t *c = req->handle->data;
    c->shutting_down = false;
    if (status < 0 || c->tunnel_rd_eof)
        sl_client_destroy(c); /* failed, or the client has closed its side too */
    else if (c->state == C_LINGER)
        sl_client_set_timer(c, T_LINGER, SL_LINGER_MS); /* all sent: drain briefly */
}

/* Flush what is queued, send FIN, then read and discard until the client
 * closes too (or SL_LINGER_MS), so a final response is not lost to a RST
 * caused by unread input. */
void sl_client_close_graceful(sl_client_t *c)
{
    if (c->state == C_CLOSED || c->state == C_LINGER)
        return;
    c->state = C_LINGER;
    c->rd.start = c->rd.end;
    sl_client_set_timer(c, T_FLUSH, c->r->cfg.idle_timeout_ms);
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, c_shutdown_cb) < 0) {
        sl_client_destroy(c);
        return;
    }
    c->shutting_down = true;
    sl_client_update_reading(c);
}

/* ---- accept ------------------------------------------------------------ */

static const char too_many[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 21\r\n"
                               "Connection: close\r\n\r\n"
                               "too many connections\n";

static void c_peer_name(sl_client_t *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    snprintf(c->peer, sizeof(c->peer), "unknown");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof(c->peer));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], c->peer, sizeof(c->peer));
        } else {
            uv_ip6_name(s6, c->peer, sizeof(c->peer));
            c->peer_v6 = true;
        }
    }
}

/* Per-connection parts of the forwarding headers, built once. */
static void c_forwarded_for(sl_client_t *c)
{
    c->peer_len = strlen(c->peer);
    int n =
        snprintf(c->fwd_for, sizeof(c->fwd_for), c->peer_v6 ? "for=\"[%s]\"" : "for=%s", c->peer);
    c->fwd_for_len = n > 0 && (size_t)n < sizeof(c->fwd_for) ? (size_t)n : 0;
}

void sl_client_on_accept(uv_stream_t *server, int status)
{
    sl_router_t *r = server->data;
    if (status < 0 || r->closing)
        return;
    sl_busy_touch(r);
    sl_client_t *c = xcalloc(1, sizeof(*c));
    c->r = r;
    uv_tcp_init(r->loop, &c->tcp);
    uv_timer_init(r->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    r->n_handles += 2;
    c->next = r->clients;
    if (r->clients)
        r->clients->prev = c;
    r->clients = c;
    r->n_clients++;
    r->stats.connections_open++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        sl_client_destroy(c);
        return;
    }
    if (r->n_clients > r->cfg.max_connections) {
        /* Over the limit: a short answer beats a hung connect (document:
         * we accept and answer 503 instead of leaving clients in the
         * backlog). */
        uv_buf_t b = uv_buf_init((char *)too_many, sizeof(too_many) - 1);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        sl_client_destroy(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c_peer_name(c);
    c_forwarded_for(c);
    c->state = C_HEAD;
    sl_client_set_timer(c, T_HEADER, r->cfg.header_timeout_ms);
    sl_client_update_reading(c);
}

/* ---- local responses ---------------------------------------------------- */

/* True when the request body is fully consumed (or skipped now), so the
 * connection can carry another request after a local answer. */
static bool c_skip_body(sl_client_t *c)
{
    if (!c->in_request || c->req_done || c->req_body == SL_BODY_NONE)
        return true;
    if (c->req_body == SL_BODY_LENGTH && c->body_left <= c->rd.end - c->rd.start) {
        c->rd.start += c->body_left;
        c->body_left = 0;
        c->req_done = true;
        return true;
    }
    return false;
}

/* Answer status with a short text body; extra is added to the head as is
 * ("" or complete header lines). */
static void c_vanswer(sl_client_t *c, int status, const char *extra, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void c_vanswer(sl_client_t *c, int status, const char *extra, const char *fmt, va_list ap)
{
    if (c->state == C_CLOSED || c->state == C_LINGER)
        return;
    if (c->resp_started) {
        /* Too late for a status: the client sees the connection close. */
        sl_client_destroy(c);
        return;
    }
    sl_client_drop_upstream(c, false);
    char body[640];
    int bl = (int)sl_answer_body(body, sizeof(body), fmt, ap);
    bool close = !c->in_request || !c->keep_alive || c->must_close || !c_skip_body(c);
    const char *conn =
        close ? "Connection: close\r\n" : (c->minor == 0 ? "Connection: keep-alive\r\n" : "");
    size_t cap = 256 + (size_t)bl;
    char *out = sl_client_gen(c, cap);
    int hl = snprintf(out, cap,
                      "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                      "Content-Length: %d\r\n%s%s\r\n",
                      status, sl_http_reason(status), bl, extra, conn);
    size_t len = (size_t)hl;
    if (!(c->in_request && c->is_head)) {
        memcpy(out + len, body, (size_t)bl);
        len += (size_t)bl;
    }
    uv_buf_t iov = uv_buf_init(out, (unsigned)len);
    c->resp_started = true;
    if (sl_send(c->r, (uv_stream_t *)&c->tcp, &iov, 1, &c->gen, 1, sl_client_write_cb) < 0) {
        sl_client_destroy(c);
        return;
    }
    c_end_request(c, close);
}

void sl_client_local_error(sl_client_t *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    c_vanswer(c, status, "", fmt, ap);
    va_end(ap);
}

static void c_answer_extra(sl_client_t *c, int status, const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void c_answer_extra(sl_client_t *c, int status, const char *extra, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    c_vanswer(c, status, extra, fmt, ap);
    va_end(ap);
}

/*
 * A status the owner decided (queue full, over capacity, revision failed).
 * 429 and 503 are "come back later": Retry-After says so, with one second —
 * long enough to spread a retry storm, short next to a cold start — so
 * clients that honour it back off instead of hammering.
 */
static void c_owner_status(sl_client_t *c, int status, const char *reason)
{
    if (status < 400 || status > 599)
        status = 503;
    const char *extra = status == 429 || status == 503 ? "Retry-After: 1\r\n" : "";
    c_answer_extra(c, status, extra, "%s", reason ? reason : sl_http_reason(status));
}

/* ---- timers ------------------------------------------------------------- */

static void c_request_timeout(sl_client_t *c)
{
    if (c->resp_head_done)
        return;
    bool waiting = c->queued;
    sl_client_drop_upstream(c, false);
    if (waiting)
        sl_client_local_error(c, 504, "no instance became available within %llu ms",
                              (unsigned long long)c->timeout_ms);
    else
        sl_client_local_error(c, 504, "instance did not answer within %llu ms",
                              (unsigned long long)c->timeout_ms);
}

/* The instance is waiting for request body bytes the client still owes. */
static bool c_body_pending(const sl_client_t *c)
{
    return c->state == C_PROXY && !c->req_done && c->req_body != SL_BODY_NONE;
}

/* The client owes body bytes and has sent none for body_timeout_ms. Not
 * while the router holds its reads back for an instance that does not
 * read (back-pressure): that wait is the instance's, and is bounded by the
 * request's deadline. */
static bool c_body_stalled(const sl_client_t *c, uint64_t now)
{
    return c_body_pending(c) && !c->bp_paused &&
           now - c->body_progress_ms >= c->r->cfg.body_timeout_ms;
}

/* The instance's silence (idleTimeoutSeconds) counts only while the
 * router could take its bytes: nothing of its response is still waiting
 * for the client (that holds the reads back, whether or not the upstream
 * is paused); sl_client_write_cb restarts the clock. */
static bool c_up_watched(const sl_client_t *c)
{
    return c->up_idle_ms && c->up && c->state == C_PROXY && !c->up->bp_paused &&
           uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp) == 0;
}

/* The instance has been silent for longer than its revision allows. */
static bool c_up_silent(const sl_client_t *c, uint64_t now)
{
    return c_up_watched(c) && now - c->up_active_ms >= c->up_idle_ms;
}

/* ms from now to `at` (0 when past), or *wake if that is sooner. */
static void sooner(uint64_t *wake, uint64_t now, uint64_t at)
{
    uint64_t d = at > now ? at - now : 0;
    if (d < *wake)
        *wake = d;
}

/*
 * T_REQUEST covers the time to the response head: it fires at the request
 * deadline, at the response-start deadline, when a pending body has made no
 * progress for body_timeout_ms, or when the instance has been silent too
 * long, whichever is first. Progress only updates timestamps; the timer
 * checks them lazily and re-arms.
 */
static void c_arm_request_timer(sl_client_t *c)
{
    uint64_t now = uv_now(c->r->loop);
    uint64_t wake = UINT64_MAX;
    if (c->deadline_ms)
        sooner(&wake, now, c->deadline_ms);
    if (c->start_due_ms && c->state == C_PROXY)
        sooner(&wake, now, c->start_due_ms);
    if (c_body_pending(c) && !c->bp_paused)
        sooner(&wake, now, c->body_progress_ms + c->r->cfg.body_timeout_ms);
    if (c_up_watched(c))
        sooner(&wake, now, c->up_active_ms + c->up_idle_ms);
    if (wake == UINT64_MAX)
        sl_client_set_timer(c, T_NONE, 0);
    else
        sl_client_set_timer(c, T_REQUEST, wake);
}

static void c_request_timer(sl_client_t *c)
{
    if (c->resp_head_done)
        return;
    uint64_t now = uv_now(c->r->loop);
    if (c->deadline_ms && now >= c->deadline_ms) {
        c_request_timeout(c);
    } else if (c->start_due_ms && c->state == C_PROXY && now >= c->start_due_ms) {
        uint64_t ms = c->pick.response_start_ms;
        sl_client_drop_upstream(c, false);
        sl_client_local_error(c, 504,
                              "instance did not start its response within %llu ms "
                              "(responseStartTimeoutSeconds)",
                              (unsigned long long)ms);
    } else if (c_body_stalled(c, now)) {
        c->must_close = true;
        sl_client_drop_upstream(c, false);
        sl_client_local_error(c, 408, "request body stalled: no bytes for %llu ms",
                              (unsigned long long)c->r->cfg.body_timeout_ms);
    } else if (c_up_silent(c, now)) {
        sl_client_drop_upstream(c, false);
        sl_client_local_error(c, 504, "instance sent nothing for %llu ms (idleTimeoutSeconds)",
                              (unsigned long long)c->up_idle_ms);
    } else {
        c_arm_request_timer(c);
    }
}

/* T_SEND, while a response streams: it ends the connection when the client
 * has taken no byte for idle_timeout_ms while output waits for it (or a
 * request body it owes has stalled), or when the instance has been silent
 * for its idleTimeoutSeconds; else it sleeps until the next of those. */
void sl_client_arm_send_timer(sl_client_t *c)
{
    uint64_t now = uv_now(c->r->loop);
    uint64_t wake = UINT64_MAX;
    sooner(&wake, now, c->send_progress_ms + c->r->cfg.idle_timeout_ms);
    if (c_up_watched(c)) /* not while back-pressure stops its reads */
        sooner(&wake, now, c->up_active_ms + c->up_idle_ms);
    sl_client_set_timer(c, T_SEND, wake);
}

static void c_send_timer(sl_client_t *c)
{
    uint64_t now = uv_now(c->r->loop);
    bool no_progress = now - c->send_progress_ms >= c->r->cfg.idle_timeout_ms;
    if (no_progress &&
        (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > 0 || c_body_stalled(c, now))) {
        sl_client_destroy(c);
    } else if (c_up_silent(c, now)) {
        sl_warn("router",
                "%s: response cut: the instance sent nothing for %llu ms "
                "(idleTimeoutSeconds)",
                c->peer, (unsigned long long)c->up_idle_ms);
        sl_client_abort(c);
    } else {
        if (no_progress)
            c->send_progress_ms = now; /* the instance is slow, not the client */
        sl_client_arm_send_timer(c);
    }
}

/* A tunnel with no bytes moving either way for idle_timeout_ms is closed.
 * Traffic only stamps tunnel_active_ms; the timer checks it lazily. */
static void c_tunnel_timer(sl_client_t *c)
{
    uint64_t now = uv_now(c->r->loop);
    uint64_t idle = c->r->cfg.idle_timeout_ms;
    if (now - c->tunnel_active_ms >= idle)
        sl_client_destroy(c);
    else
        sl_client_set_timer(c, T_TUNNEL, c->tunnel_active_ms + idle - now);
}

static void c_timer_cb(uv_timer_t *t)
{
    sl_client_t *c = t->data;
    c->timer_fire = 0;
    if (c->timer_mode == T_NONE)
        return;
    uint64_t now = uv_now(c->r->loop);
    if (now < c->timer_due) {
        c->timer_fire = c->timer_due;
        uv_timer_start(&c->timer, c_timer_cb, c->timer_due - now, 0);
        return;
    }
    int mode = c->timer_mode;
    c->timer_mode = T_NONE;
    if (c->h2 && (mode == T_REQUEST || mode == T_IDLE)) {
        sl_h2_timer(c, mode);
        return;
    }
    switch (mode) {
    case T_HEADER:
        if (c->rd.b && c->rd.end > c->rd.start)
            sl_client_local_error(c, 408, "request head not received within %llu ms",
                                  (unsigned long long)c->r->cfg.header_timeout_ms);
        else
            sl_client_destroy(c);
        break;
    case T_REQUEST:
        c_request_timer(c);
        break;
    case T_SEND:
        c_send_timer(c);
        break;
    case T_TUNNEL:
        c_tunnel_timer(c);
        break;
    case T_IDLE:
    case T_FLUSH:
    case T_LINGER:
        sl_client_destroy(c);
        break;
    default:
        break;
    }
}

/* ---- request planning ------------------------------------------------- */

static bool is_forwarding_header(sl_str_t name)
{
    return sl_str_caseeq(name, SL_STR("X-Forwarded-For")) ||
           sl_str_caseeq(name, SL_STR("Forwarded")) ||
           sl_str_caseeq(name, SL_STR("X-Forwarded-Proto")) ||
           sl_str_caseeq(name, SL_STR("X-Forwarded-Host"));
}

#define IOV(s, l)   (iov[n++] = uv_buf_init((char *)(s), (unsigned)(l)))
#define IOVS(lit)   IOV(lit, sizeof(lit) - 1)
#define IOVSTR(str) IOV((str).p, (str).len)

/* End of the head's field section: where the final empty line starts. */
static const char *head_fields_end(const char *head, size_t head_len)
{
    const char *e = head + head_len;
    return (head_len >= 2 && e[-2] == '\r') ? e - 2 : e - 1;
}

/*
 * Append header lines to iov, skipping those skip() rejects. Consecutive
 * kept lines go out as one iovec straight from the read buffer; a line whose
 * extent is not the usual contiguous "name: value CRLF" is rebuilt.
 */
size_t sl_plan_headers(const sl_http_msg_t *m, const char *fields_end, uv_buf_t *iov, size_t n,
                       bool (*skip)(const sl_http_msg_t *, sl_str_t, void *), void *arg)
{
    const char *run = NULL, *run_end = NULL;
    for (size_t i = 0; i < m->n_headers; i++) {
        const sl_http_header_t *h = &m->headers[i];
        const char *ls = h->name.p;
        const char *le = i + 1 < m->n_headers ? m->headers[i + 1].name.p : fields_end;
        /* A line that ends in a bare LF (responses may) is rebuilt too. */
        bool whole = le - ls >= 2 && le[-1] == '\n' && le[-2] == '\r';
        bool contiguous = whole && (!run || run_end == ls);
        bool drop = skip(m, h->name, arg);
        if (run && (drop || !contiguous)) {
            IOV(run, run_end - run);
            run = NULL;
        }
        if (drop)
            continue;
        if (whole) {
            if (!run)
                run = ls;
            run_end = le;
        } else {
            IOVSTR(h->name);
            IOVS(": ");
            IOVSTR(h->value);
            IOVS("\r\n");
        }
    }
    if (run)
        IOV(run, run_end - run);
    return n;
}

static bool req_skip(const sl_http_msg_t *m, sl_str_t name, void *arg)
{
    bool absolute = *(bool *)arg;
    return sl_http_is_hop_by_hop(m, name) || is_forwarding_header(name) ||
           (absolute && sl_str_caseeq(name, SL_STR("Host")));
}

static size_t plan_joined(const sl_http_msg_t *m, sl_str_t name, uv_buf_t *iov, size_t n)
{
    for (size_t i = 0; i < m->n_headers; i++) {
        if (!sl_str_caseeq(m->headers[i].name, name) || m->headers[i].value.len == 0)
            continue;
        IOVSTR(m->headers[i].value);
        IOVS(", ");
    }
    return n;
}

/* Every header line, rebuilt (4 iovecs each), plus the fixed parts. */
#define PLAN_IOV (4 * SL_HTTP_MAX_HEADERS + 40)

/* Build the upstream request head in c->gen (kept for a retry). */
static void c_plan_request(sl_client_t *c, const sl_http_msg_t *m, const char *head,
                           size_t head_len)
{
    uv_buf_t iov[PLAN_IOV];
    size_t n = 0;
    bool star = m->target.len == 1 && m->target.p[0] == '*';
    bool absolute = !star && m->target.len > 0 && m->target.p[0] != '/';

    IOVSTR(m->method);
    IOVS(" ");
    if (star)
        IOVS("*");
    else if (m->path.len == 0)
        IOVS("/");
    else
        IOVSTR(m->path);
    IOVS(" HTTP/1.1\r\n");
    if (absolute) {
        IOVS("Host: ");
        IOVSTR(m->host);
        IOVS("\r\n");
    }
    n = sl_plan_headers(m, head_fields_end(head, head_len), iov, n, req_skip, &absolute);
    if (m->body == SL_BODY_CHUNKED)
        IOVS("Transfer-Encoding: chunked\r\n");
    if (c->upgrade)
        IOVS("Connection: Upgrade\r\nUpgrade: websocket\r\n");

    IOVS("X-Forwarded-For: ");
    n = plan_joined(m, SL_STR("X-Forwarded-For"), iov, n);
    size_t peer_at = n;
    IOV(c->peer, c->peer_len);
    IOVS("\r\nForwarded: ");
    n = plan_joined(m, SL_STR("Forwarded"), iov, n);
    size_t fwd_at = n;
    IOV(c->fwd_for, c->fwd_for_len);
    IOVS(";host=\""); /* parser and normalize_host admit no '"' or '\\' */
    IOVSTR(m->host);
    IOVS("\";proto=http\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ");
    IOVSTR(m->host);
    IOVS("\r\n\r\n");

    /* The plan lives in gen (a retry resends it) with room for the body
     * that came with the head: SL_PLAN_BODY_IOV iovecs, and for a chunked
     * body the chunk size it is re-framed with. Nothing else may be taken
     * from gen before the plan is sent: a new gen buffer would free it. A
     * head of usual size is copied into one contiguous string: the kernel
     * then copies one segment instead of a dozen small ones. */
    size_t total = sl_iov_len(iov, n);
    size_t chunk_room = m->body == SL_BODY_CHUNKED ? SL_CHUNK_SIZE_MAX : 0;
    if (total <= SL_FLAT_MAX) {
        size_t plan_size = (1 + SL_PLAN_BODY_IOV) * sizeof(uv_buf_t);
        char *g = sl_client_gen(c, plan_size + total + chunk_room);
        c->plan = (uv_buf_t *)g;
        c->plan[0] = uv_buf_init(sl_iov_gather(iov, n, g + plan_size), (unsigned)total);
        c->plan_chunk = chunk_room ? g + plan_size + total : NULL;
        c->plan_n = c->plan_head_n = 1;
        return;
    }
    /* The iovecs may point into the request's own buffers, which the send
     * holds until it completes, but not into c: a client that goes away
     * is freed while its request may still be queued to the instance. Its
     * two forwarding strings are copied beside the plan. */
    size_t plan_size = (n + SL_PLAN_BODY_IOV) * sizeof(uv_buf_t);
    char *g = sl_client_gen(c, plan_size + c->peer_len + c->fwd_for_len + chunk_room);
    c->plan = (uv_buf_t *)g;
    memcpy(c->plan, iov, n * sizeof(uv_buf_t));
    char *peer = memcpy(g + plan_size, c->peer, c->peer_len);
    char *fwd = memcpy(peer + c->peer_len, c->fwd_for, c->fwd_for_len);
    c->plan[peer_at] = uv_buf_init(peer, (unsigned)c->peer_len);
    c->plan[fwd_at] = uv_buf_init(fwd, (unsigned)c->fwd_for_len);
    c->plan_chunk = chunk_room ? fwd + c->fwd_for_len : NULL;
    c->plan_n = c->plan_head_n = (unsigned)n;
}

/*
 * Only a WebSocket handshake is tunnelled: an HTTP/1.1 request without a
 * body that says Connection: upgrade and Upgrade: websocket. Anything else
 * (h2c, a body with the upgrade) is forwarded as a plain request, its
 * Upgrade header dropped as hop-by-hop.
 */
static bool c_wants_websocket(const sl_http_msg_t *m, sl_http_body_t body)
{
    if (!m->upgrade || m->minor_version != 1 || body != SL_BODY_NONE)
        return false;
    return sl_str_caseeq(sl_http_header_get(m, SL_STR("Upgrade")), SL_STR("websocket"));
}

/* ---- request lifecycle --------------------------------------------------- */

static void c_reset_request(sl_client_t *c)
{
    c->is_head = c->idempotent = c->keep_alive = c->must_close = false;
    c->req_done = c->up_write_failed = c->replayable = false;
    c->body_left = c->body_seen = 0;
    sl_chunked_init(&c->req_chunk);
    c->plan = NULL;
    c->plan_chunk = NULL;
    c->plan_n = c->plan_head_n = 0;
    c->attempts = c->reroutes = 0;
    c->upgrade = c->tunnel = c->tunnel_rd_eof = false;
    c->target = NULL;
    c->queued = false;
    c->stash = (sl_stash_t){0};
    c->have_pick = false;
    c->timeout_ms = c->deadline_ms = c->body_progress_ms = c->up_idle_ms = c->start_due_ms = 0;
    c->resp_head_done = c->resp_started = c->resp_done = c->up_reusable = false;
    c->resp_status = 0;
    c->interim_bytes = 0;
    c->rb_mode = RB_NONE;
    c->resp_left = 0;
    sl_chunked_init(&c->resp_chunk);
    if (c->gen && c->gen->refs == 1) {
        c->gen_used = 0;
    } else {
        sl_rbuf_unref(c->r, c->gen);
        c->gen = NULL;
    }
}

static void c_waiter_ready(sl_waiter_t *w, int status, const sl_pick_t *pick, const char *reason);

static void c_deliver(sl_client_t *c, int status, const sl_pick_t *pick, const char *reason)
{
    c->queued = false;
    if (status == 0 && pick) {
        c->pick = *pick;
        c->have_pick = true;
        c_got_pick(c);
        return;
    }
    c_owner_status(c, status, reason);
}

static void c_waiter_ready(sl_waiter_t *w, int status, const sl_pick_t *pick, const char *reason)
{
    sl_client_t *c = sl_container_of(w, sl_client_t, waiter);
    if (c->state != C_WAIT || sl_stash(&c->stash, status, pick, reason))
        return;
    c_deliver(c, status, pick, reason);
}

bool sl_pick_deadline(const sl_pick_t *pick, uint64_t *timeout_ms, uint64_t *deadline_ms,
                      uint64_t now)
{
    if (!pick->timeout_ms || !*deadline_ms || pick->timeout_ms == *timeout_ms)
        return true;
    *deadline_ms = *deadline_ms - *timeout_ms + pick->timeout_ms;
    *timeout_ms = pick->timeout_ms;
    return now < *deadline_ms;
}

size_t sl_answer_body(char *body, size_t cap, const char *fmt, va_list ap)
{
    int bl = vsnprintf(body, cap - 1, fmt, ap);
    if (bl < 0)
        bl = 0;
    if ((size_t)bl > cap - 2)
        bl = (int)cap - 2;
    body[bl++] = '\n';
    return (size_t)bl;
}

int sl_acquire(sl_router_t *r, void *target, sl_waiter_t *w, sl_stash_t *st, sl_pick_t *pick,
               const char **reason)
{
    *st = (sl_stash_t){.in_acquire = true};
    int rc = r->ops.acquire(r->ctx, target, w, pick, reason);
    st->in_acquire = false;
    if (rc == SL_AGAIN && st->ready) {
        st->ready = false;
        *reason = st->reason;
        if (st->status == 0 && st->have_pick) {
            *pick = st->pick;
            return SL_OK;
        }
        return st->status ? st->status : 503;
    }
    return rc;
}

bool sl_stash(sl_stash_t *st, int status, const sl_pick_t *pick, const char *reason)
{
    if (!st->in_acquire)
        return false;
    st->ready = true;
    st->status = status;
    st->have_pick = pick != NULL;
    st->pick = pick ? *pick : (sl_pick_t){0};
    st->reason = reason;
    return true;
}

/* The value of cookie `name` in one Cookie field value (RFC 6265 §5.4:
 * "name=value" pairs split by "; "); empty when absent. */
sl_str_t sl_cookie_in(sl_str_t v, sl_str_t name)
{
    const char *p = v.p, *end = v.p + v.len;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pair_end = semi ? semi : end;
        while (p < pair_end && (*p == ' ' || *p == '\t'))
            p++;
        size_t pl = (size_t)(pair_end - p);
        while (pl > 0 && (p[pl - 1] == ' ' || p[pl - 1] == '\t'))
            pl--;
        if (pl > name.len && p[name.len] == '=' && !memcmp(p, name.p, name.len))
            return (sl_str_t){p + name.len + 1, pl - name.len - 1};
        p = pair_end + (semi ? 1 : 0);
    }
    return (sl_str_t){NULL, 0};
}

/* ... in the request's Cookie fields. */
static sl_str_t c_cookie(const sl_http_msg_t *m, sl_str_t name)
{
    for (size_t h = 0; h < m->n_headers; h++) {
        if (!sl_str_caseeq(m->headers[h].name, SL_STR("Cookie")))
            continue;
        sl_str_t v = sl_cookie_in(m->headers[h].value, name);
        if (v.p)
            return v;
    }
    return (sl_str_t){NULL, 0};
}

static void c_acquire(sl_client_t *c)
{
    sl_router_t *r = c->r;
    sl_pick_t pick = {0};
    const char *reason = NULL;
    c->state = C_WAIT;
    memset(&c->waiter, 0, sizeof(c->waiter));
    c->waiter.ready = c_waiter_ready;
    c->waiter.enqueued_ns = sl_now_ns();
    c->waiter.retry = c->reroutes > 0;
    c->waiter.affinity = c->affinity;
    int rc = sl_acquire(r, c->target, &c->waiter, &c->stash, &pick, &reason);
    if (rc == SL_OK) {
        c->pick = pick;
        c->have_pick = true;
        c_got_pick(c);
    } else if (rc == SL_AGAIN) {
        c->queued = true;
        sl_client_update_reading(c); /* keep reading: notice a client that leaves */
    } else {
        c_owner_status(c, rc, reason);
    }
}

static void c_start_request(sl_client_t *c, const sl_http_msg_t *m, size_t head_len)
{
    sl_router_t *r = c->r;
    const char *head = c->rd.b->data + c->rd.start;
    c_reset_request(c);
    c->in_request = true;
    r->stats.requests_total++;
    r->stats.requests_in_flight++;
    c->head_buf = c->rd.b;
    sl_rbuf_ref(c->head_buf);
    c->rd.start += head_len;
    sl_client_set_timer(c, T_NONE, 0);

    c->method = m->method;
    c->is_head = method_is(m->method, "HEAD");
    c->idempotent = sl_method_idempotent(m->method);
    c->keep_alive = m->keep_alive;
    c->minor = m->minor_version;
    c->req_body = m->body;
    c->body_left = m->body == SL_BODY_LENGTH ? m->content_length : 0;
    if (c->req_body == SL_BODY_LENGTH && c->body_left == 0)
        c->req_body = SL_BODY_NONE;
    c->upgrade = c_wants_websocket(m, c->req_body);
    c->affinity = c_cookie(m, SL_STR(SL_AFFINITY_COOKIE));

    char host[256];
    if (method_is(m->method, "CONNECT")) {
        sl_client_local_error(c, 501, "CONNECT is not supported");
        return;
    }
    ssize_t nh = sl_router_normalize_host(m->host, host, sizeof(host));
    if (nh < 0) {
        sl_client_local_error(c, 400, m->host.len ? "invalid Host header" : "missing Host header");
        return;
    }
    if (m->body == SL_BODY_LENGTH && r->cfg.max_body_bytes &&
        m->content_length > r->cfg.max_body_bytes) {
        c->must_close = true;
        sl_client_local_error(c, 413, "request body of %llu bytes is over the %llu byte limit",
                              (unsigned long long)m->content_length,
                              (unsigned long long)r->cfg.max_body_bytes);
        return;
    }
    c->target = r->ops.resolve(r->ctx, (sl_str_t){host, (size_t)nh});
    if (!c->target) {
        sl_client_local_error(c, 404, "no service for host %s", host);
        return;
    }
    c_plan_request(c, m, head, head_len);
    c->timeout_ms = r->ops.timeout_ms ? r->ops.timeout_ms(r->ctx, c->target) : 0;
    if (c->timeout_ms)
        c->deadline_ms = uv_now(r->loop) + c->timeout_ms;
    c_arm_request_timer(c);
    c_acquire(c);
}

static void c_parse_heads(sl_client_t *c)
{
    if (c->in_parse)
        return; /* the loop below is running further up the stack */
    c->in_parse = true;
    while (c->state == C_HEAD && !c->in_request) {
        sl_rd_t *rd = &c->rd;
        size_t avail = rd->b ? rd->end - rd->start : 0;
        if (avail == 0) {
            if (c->n_requests > 0 && c->timer_mode != T_IDLE)
                sl_client_set_timer(c, T_IDLE, c->r->cfg.idle_timeout_ms);
            break;
        }
        sl_http_msg_t m;
        int status = 400;
        const char *why = "bad request";
        int n =
            sl_http_parse_request(rd->b->data + rd->start, avail, &m, &c->r->limits, &status, &why);
        if (n == SL_AGAIN) {
            /* The head timeout runs from its first bytes; a head that
             * arrived whole never needs it. */
            if (avail >= SL_RBUF_SIZE)
                sl_client_local_error(c, 431, "request head larger than %d bytes", SL_RBUF_SIZE);
            else if (c->timer_mode != T_HEADER)
                sl_client_set_timer(c, T_HEADER, c->r->cfg.header_timeout_ms);
            break;
        }
        if (n <= 0) {
            sl_client_local_error(c, status >= 400 ? status : 400, "%s", why ? why : "bad request");
            break;
        }
        c->n_requests++;
        c_start_request(c, &m, (size_t)n);
    }
    c->in_parse = false;
}

static void c_end_request(sl_client_t *c, bool close)
{
    sl_router_t *r = c->r;
    if (c->in_request) {
        c->in_request = false;
        r->stats.requests_in_flight--;
    }
    sl_rbuf_unref(r, c->head_buf);
    c->head_buf = NULL;
    sl_rbuf_unref(r, c->plan_body_buf);
    c->plan_body_buf = NULL;
    sl_rbuf_unref(r, c->stage); /* what the instance did not wait for */
    c->stage = NULL;
    c->stage_len = 0;
    c->plan = NULL;
    if (c->timer_mode == T_REQUEST || c->timer_mode == T_SEND)
        sl_client_set_timer(c, T_NONE, 0);
    if (close) {
        sl_client_close_graceful(c);
        return;
    }
    c->state = C_HEAD;
    c_parse_heads(c);
    sl_client_update_reading(c);
}

/* ---- request body ------------------------------------------------------ */

/* How many buffered bytes belong to the body; updates framing state. A
 * chunked body's data is decoded in place: *data bytes of it are at the
 * cursor (else *data == *k). Returns 0, or the status to answer (400 bad
 * chunking, 413 too large). */
static int c_body_take(sl_client_t *c, size_t *k, size_t *data, const char **why)
{
    sl_rd_t *rd = &c->rd;
    size_t avail = rd->b ? rd->end - rd->start : 0;
    *k = *data = 0;
    if (c->req_done)
        return 0;
    if (c->req_body == SL_BODY_NONE) {
        c->req_done = true;
        return 0;
    }
    if (c->req_body == SL_BODY_LENGTH) {
        *k = *data = avail < c->body_left ? avail : (size_t)c->body_left;
        c->body_left -= *k;
        c->req_done = c->body_left == 0;
    } else if (avail) {
        bool done = false;
        char *p = rd->b->data + rd->start;
        ssize_t got = sl_chunked_decode(&c->req_chunk, p, avail, data, &done, why);
        if (got < 0)
            return 400;
        *k = (size_t)got;
        c->req_done = done;
    }
    c->body_seen += *k;
    /* For chunked bodies the limit applies to the encoded size. */
    if (c->r->cfg.max_body_bytes && c->body_seen > c->r->cfg.max_body_bytes) {
        *why = "request body too large";
        return 413;
    }
    return 0;
}

/*
 * A chunked request body from an HTTP/1.1 client is passed on re-framed,
 * as nginx streams one: the data the client sent, in chunks with plain hex
 * sizes, no extensions, and no trailer section. An instance's parser then
 * sees only framing the router wrote, never a client's odd sizes,
 * extensions or trailer fields (Authorization, X-Forwarded-For) it might
 * read. The same holds whichever instance the request is routed to, first
 * or again: an h2c instance's bridge decodes the body it is given.
 *
 * The iovecs (at most SL_PLAN_BODY_IOV) that carry n body bytes at p to the
 * instance; size_buf (SL_CHUNK_SIZE_MAX bytes) takes a chunk size.
 */
static unsigned c_body_iov(const sl_client_t *c, char *p, size_t n, char *size_buf, uv_buf_t *iov)
{
    if (c->req_body != SL_BODY_CHUNKED) {
        iov[0] = uv_buf_init(p, (unsigned)n);
        return n ? 1 : 0;
    }
    unsigned i = 0;
    if (n) {
        int sl = snprintf(size_buf, SL_CHUNK_SIZE_MAX, "%zx\r\n", n);
        iov[i++] = uv_buf_init(size_buf, (unsigned)sl);
        iov[i++] = uv_buf_init(p, (unsigned)n);
        iov[i++] = uv_buf_init((char *)"\r\n", 2);
    }
    if (c->req_done)
        iov[i++] = uv_buf_init((char *)"0\r\n\r\n", 5);
    return i;
}

static void c_body_error(sl_client_t *c, int status, const char *why)
{
    c->must_close = true;
    sl_client_drop_upstream(c, false);
    if (status == 413)
        sl_client_local_error(c, 413, "request body is over the %llu byte limit",
                              (unsigned long long)c->r->cfg.max_body_bytes);
    else
        sl_client_local_error(c, status, "bad request body: %s", why ? why : "malformed");
}

/* Request bytes toward the instance: to its socket, or into the stream of
 * an HTTP/2 instance's translation. 0 or a libuv error. */
static int c_up_send(sl_client_t *c, uv_buf_t *iov, unsigned n, sl_rbuf_t **refs, unsigned nrefs)
{
    if (c->up->h1x) {
        sl_h2_bridge_write(c->up, iov, n);
        return 0;
    }
    return sl_send(c->r, (uv_stream_t *)&c->up->tcp, iov, n, refs, nrefs, sl_up_write_cb);
}

void sl_client_resume_body(sl_client_t *c)
{
    c->bp_paused = false;
    c->body_progress_ms = uv_now(c->r->loop); /* the client's clock starts again */
    sl_client_update_reading(c);
    if (c->state == C_PROXY && !c->resp_head_done)
        c_arm_request_timer(c); /* after the head, the send timer checks it */
}

static void c_check_backpressure(sl_client_t *c)
{
    if (!c->up)
        return;
    size_t queued = c->up->h1x ? sl_h2_bridge_queued(c->up)
                               : uv_stream_get_write_queue_size((uv_stream_t *)&c->up->tcp);
    if (queued > SL_BP_HIGH) {
        c->bp_paused = true;
        sl_client_update_reading(c);
    }
}

static void c_up_write_error(sl_client_t *c, int err)
{
    /* Let the read side decide: a response may already be on its way, and
     * a stale pooled connection shows up there as EOF before any byte. */
    c->up_write_failed = true;
    if (c->up && !c->up->reading && !c->up->bp_paused)
        sl_up_update_reading(c->up);
    SL_UNUSED(err);
}

/*
 * While the instance has writes queued, small pieces of the client's bytes
 * are gathered into a stage (copied, up to SL_TRICKLE_MIN bytes) instead of
 * each becoming a write of its own: a client that trickles bytes to an
 * instance that is not reading costs a few writes, not one per read (each
 * holds a write request until the instance reads). The stage goes out
 * ahead of the next write, or once the queue empties (sl_client_up_drained).
 * True when the piece needs no write now (staged, or empty).
 */
static bool c_stage_piece(sl_client_t *c, const uv_buf_t *iov, unsigned n)
{
    size_t len = sl_iov_len(iov, n);
    if (len == 0)
        return true; /* framing alone: nothing to send */
    if (c->stage_len + len > SL_TRICKLE_MIN || !c->up || c->up->h1x ||
        uv_stream_get_write_queue_size((uv_stream_t *)&c->up->tcp) == 0)
        return false;
    if (!c->stage)
        c->stage = sl_rbuf_get(c->r);
    sl_iov_gather(iov, n, c->stage->data + c->stage_len);
    c->stage_len += len;
    return true;
}

/* Send iov[1..n) to the instance after the stage, which iov[0] takes. */
static int c_send_staged(sl_client_t *c, uv_buf_t *iov, unsigned n, sl_rbuf_t *ref0,
                         sl_rbuf_t *ref1)
{
    sl_rbuf_t *refs[3] = {ref0, ref1, c->stage};
    unsigned first = 1;
    if (c->stage_len) {
        iov[0] = uv_buf_init(c->stage->data, (unsigned)c->stage_len);
        first = 0;
    }
    int rc = n > first ? c_up_send(c, iov + first, n - first, refs, 3) : 0;
    sl_rbuf_unref(c->r, c->stage);
    c->stage = NULL;
    c->stage_len = 0;
    return rc;
}

static void c_stream_body(sl_client_t *c)
{
    size_t k, data;
    const char *why = NULL;
    int st = c_body_take(c, &k, &data, &why);
    if (st) {
        c_body_error(c, st, why);
        return;
    }
    if (k == 0)
        return;
    char *p = c->rd.b->data + c->rd.start;
    c->rd.start += k;
    c->body_progress_ms = uv_now(c->r->loop);
    if (c->up_write_failed || !c->up)
        return; /* the instance stopped reading; drop what it would not take */
    uv_buf_t b[1 + SL_PLAN_BODY_IOV];
    char size[SL_CHUNK_SIZE_MAX];
    unsigned nb = c_body_iov(c, p, data, size, b + 1);
    if (!c->req_done && c_stage_piece(c, b + 1, nb))
        return;
    /* A chunk size line moves to gen, as the write may outlive this frame
     * (the plan went out with the head: gen's scratch is free again). */
    bool sized = nb && b[1].base == size;
    if (sized)
        b[1].base = memcpy(sl_client_gen(c, SL_CHUNK_SIZE_MAX), size, b[1].len);
    int rc = c_send_staged(c, b, 1 + nb, c->rd.b, sized ? c->gen : NULL);
    if (rc < 0)
        c_up_write_error(c, rc);
    else
        c_check_backpressure(c);
}

static void c_send_plan(sl_client_t *c)
{
    sl_rbuf_t *refs[3] = {c->head_buf, c->gen, c->plan_body_buf};
    int rc = c_up_send(c, c->plan, c->plan_n, refs, 3);
    if (rc < 0)
        c_up_write_error(c, rc);
    else
        c_check_backpressure(c);
}

static void c_attach(sl_client_t *c, sl_upconn_t *up)
{
    c->up = up;
    up->client = c;
    up->resp_bytes = 0;
    if (c->pick.h2c)
        sl_h2_bridge_attach(up);
    c->up_write_failed = false;
    c->state = C_PROXY;
    uint64_t now = uv_now(c->r->loop);
    c->body_progress_ms = c->up_active_ms = now;
    /* the serving revision's other limits count from the delivery */
    c->up_idle_ms = c->pick.idle_ms;
    c->start_due_ms = c->pick.response_start_ms ? now + c->pick.response_start_ms : 0;
    if (!c->resp_head_done)
        c_arm_request_timer(c);
}

/*
 * The request never reached the instance (connect refused, instance gone):
 * give the slot back as failed and ask the owner again, at most SL_REROUTES
 * times and only before the deadline. The owner's answer may be a queue.
 * True when the request went back to the owner.
 */
static bool c_reroute(sl_client_t *c)
{
    if (!c->replayable || c->resp_head_done || c->reroutes >= SL_REROUTES || !c->plan)
        return false;
    if (c->deadline_ms && uv_now(c->r->loop) >= c->deadline_ms)
        return false;
    c->reroutes++;
    c->attempts = 0;
    sl_client_drop_upstream(c, true);
    c_acquire(c);
    return true;
}

static void c_got_pick(sl_client_t *c)
{
    if (!sl_pick_deadline(&c->pick, &c->timeout_ms, &c->deadline_ms, uv_now(c->r->loop))) {
        sl_client_drop_upstream(c, false);
        sl_client_local_error(c, 504, "no instance became available within %llu ms",
                              (unsigned long long)c->timeout_ms);
        return;
    }
    if (c->pick.h2c && c->upgrade) {
        sl_client_drop_upstream(c, false);
        sl_client_local_error(c, 501,
                              "this revision's instances speak HTTP/2 (their port is named "
                              "\"h2c\"): WebSocket to them is not supported");
        return;
    }
    if (c->pick.h2c && sl_iov_len(c->plan, c->plan_head_n) > SL_RBUF_SIZE) {
        sl_client_drop_upstream(c, false);
        sl_client_local_error(c, 431,
                              "request head over %d bytes: too large to translate for this "
                              "revision's HTTP/2 instances",
                              SL_RBUF_SIZE);
        return;
    }
    /* Body bytes that arrived with the head (or while queued) go in the
     * same write; a request whose body is all here can be replayed, here
     * or on another instance. A re-routed request has taken it already. */
    size_t k, data;
    const char *why = NULL;
    int st = c_body_take(c, &k, &data, &why);
    if (st) {
        c_body_error(c, st, why);
        return;
    }
    if (k) {
        c->plan_n +=
            c_body_iov(c, c->rd.b->data + c->rd.start, data, c->plan_chunk, c->plan + c->plan_n);
        c->plan_body_buf = c->rd.b;
        sl_rbuf_ref(c->plan_body_buf);
        c->rd.start += k;
    }
    c->replayable = c->req_done;
    sl_upstream_pool_t *pool = c->pick.pool;
    int err = 0;
    sl_upconn_t *up = pool && !pool->closed ? sl_up_get(pool, false, &err) : NULL;
    if (!up) {
        if (c_reroute(c))
            return;
        sl_client_drop_upstream(c, true);
        if (err)
            sl_client_local_error(c, 502, "instance failed: connect: %s", uv_strerror(err));
        else
            sl_client_local_error(c, 502, "instance failed: instance is stopping");
        return;
    }
    c_attach(c, up);
    c_send_plan(c);
    if (c->state == C_PROXY)
        sl_client_update_reading(c);
}

void sl_client_upstream_failed(sl_client_t *c, int err, const char *what)
{
    sl_client_upstream_refused(c, err, what, false);
}

void sl_client_upstream_refused(sl_client_t *c, int err, const char *what, bool unprocessed)
{
    sl_upconn_t *up = c->up;
    /* Still connecting: not one byte of the request reached the instance. */
    bool never_sent = unprocessed || (up && up->state == UP_CONNECTING);
    bool retry = up && up->reused && up->resp_bytes == 0 && !c->resp_head_done && c->replayable &&
                 c->attempts == 0 && c->idempotent;
    if (retry) {
        /* A pooled connection the instance had already given up on. */
        c->attempts++;
        c->up = NULL;
        up->client = NULL;
        sl_upstream_pool_t *pool = up->pool;
        sl_up_close(up);
        int e = 0;
        sl_upconn_t *nu = pool->closed ? NULL : sl_up_get(pool, true, &e);
        if (nu) {
            c_attach(c, nu);
            c_send_plan(c);
            return;
        }
        err = e ? e : UV_ECANCELED;
        what = "reconnect";
        never_sent = true;
    }
    if (never_sent && c_reroute(c))
        return;
    sl_client_drop_upstream(c, true);
    if (c->resp_started) {
        sl_client_destroy(c);
        return;
    }
    sl_client_local_error(c, 502, "instance failed: %s: %s", what,
                          err == UV_EOF ? "connection closed before a response" : uv_strerror(err));
}

void sl_client_exchange_done(sl_client_t *c)
{
    sl_upconn_t *up = c->up;
    c->resp_done = true;
    if (up) {
        c->up = NULL;
        up->client = NULL;
        bool reuse =
            c->up_reusable && c->req_done && !c->up_write_failed && up->rd.start == up->rd.end;
        if (up->h1x && !sl_h2_bridge_detach(up))
            reuse = false;
        if (reuse)
            sl_up_put(up);
        else
            sl_up_close(up);
    }
    c->bp_paused = false;
    if (c->have_pick) {
        c->have_pick = false;
        c->r->ops.release(c->r->ctx, &c->pick, c->resp_status, false);
    }
    c_end_request(c, c->must_close || !c->keep_alive || !c->req_done);
}

/* ---- tunnel (after a relayed 101) ----------------------------------------- */

/* Client bytes go to the instance as they arrive, with back-pressure. */
static void c_tunnel_forward(sl_client_t *c)
{
    sl_rd_t *rd = &c->rd;
    size_t k = rd->b ? rd->end - rd->start : 0;
    if (k == 0)
        return;
    uv_buf_t b[2];
    b[1] = uv_buf_init(rd->b->data + rd->start, (unsigned)k);
    rd->start = rd->end;
    c->tunnel_active_ms = uv_now(c->r->loop);
    if (!c->up || c->up_write_failed)
        return; /* the read side will see the instance go */
    if (c_stage_piece(c, b + 1, 1))
        return;
    int rc = c_send_staged(c, b, 2, rd->b, NULL);
    if (rc < 0)
        c_up_write_error(c, rc);
    else
        c_check_backpressure(c);
}

/* The client half-closed: pass the FIN on once its bytes are delivered and
 * keep relaying the instance's bytes until the instance closes too. */
static void c_tunnel_client_eof(sl_client_t *c)
{
    c->tunnel_rd_eof = true;
    c->reading = false;      /* libuv stopped reading at EOF */
    sl_client_up_drained(c); /* bytes staged go ahead of the FIN */
    if (!c->up || sl_up_shutdown(c->up) < 0)
        sl_client_destroy(c);
}

void sl_client_up_drained(sl_client_t *c)
{
    if (!c->stage_len || !c->up || c->up_write_failed)
        return;
    uv_buf_t b[1];
    int rc = c_send_staged(c, b, 1, NULL, NULL);
    if (rc < 0)
        c_up_write_error(c, rc);
}

void sl_client_tunnel_start(sl_client_t *c)
{
    c->tunnel = true;
    c->must_close = true;
    c->tunnel_active_ms = uv_now(c->r->loop);
    sl_client_set_timer(c, T_TUNNEL, c->r->cfg.idle_timeout_ms);
    c_tunnel_forward(c); /* bytes the client sent before the 101 */
}

/* ---- reading ------------------------------------------------------------ */

static void c_on_eof(sl_client_t *c, ssize_t err)
{
    if (err == UV_ENOBUFS) {
        /* Buffer full of bytes we cannot use yet (pipelined, or queued
         * body): wait until they are consumed. */
        sl_client_update_reading(c);
        return;
    }
    if (err == UV_EOF && c->tunnel && c->state == C_PROXY) {
        c_tunnel_client_eof(c);
        return;
    }
    sl_client_destroy(c);
}

static void c_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sl_client_t *c = s->data;
    if (nread == 0) {
        if (c->state == C_HEAD && !c->in_request && c->rd.b && c->rd.start == c->rd.end)
            sl_rd_release(c->r, &c->rd); /* idle keep-alive: hold no buffer */
        return;
    }
    if (nread < 0) {
        c_on_eof(c, nread);
        return;
    }
    c->rd.end += (size_t)nread;
    sl_busy_touch(c->r);
    if (c->h2) {
        sl_h2_client_read(c);
        sl_client_update_reading(c);
        return;
    }
    switch (c->state) {
    case C_HEAD:
        if (c->n_requests == 0 && c->rd.start == 0 && c->rd.b->data[0] == 'P') {
            /* HTTP/2 with prior knowledge (RFC 9113 §3.3) */
            int m = sl_h2_preface_match(c->rd.b->data, c->rd.end);
            if (m == 1) {
                if (!sl_h2_start(c))
                    sl_client_destroy(c);
                else
                    sl_client_update_reading(c);
                return;
            }
            if (m == SL_AGAIN)
                break;
        }
        /* A head can only complete (or fail a line) where a line ends:
         * a client trickling bytes costs one parse per line, not per read. */
        if (memchr(buf->base, '\n', (size_t)nread) || c->rd.end - c->rd.start >= SL_RBUF_SIZE)
            c_parse_heads(c);
        else if (c->timer_mode != T_HEADER)
            sl_client_set_timer(c, T_HEADER, c->r->cfg.header_timeout_ms);
        break;
    case C_PROXY:
        if (c->tunnel)
            c_tunnel_forward(c);
        else if (!c->req_done)
            c_stream_body(c);
        break;
    case C_LINGER:
        c->rd.start = c->rd.end;
        break;
    default:
        break;
    }
    sl_client_update_reading(c);
}

void sl_client_write_cb(uv_write_t *req, int status)
{
    sl_client_t *c = req->handle->data;
    sl_wreq_done(c->r, req);
    if (c->state == C_CLOSED)
        return;
    if (status < 0) {
        sl_client_destroy(c);
        return;
    }
    if (c->h2) {
        sl_h2_client_wrote(c);
        return;
    }
    if (c->up && c->up->bp_paused &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= SL_BP_LOW) {
        c->up->bp_paused = false;
        sl_up_update_reading(c->up);
    }
    if (c->timer_mode == T_SEND) {
        c->send_progress_ms = uv_now(c->r->loop); /* the timer checks it when it fires */
        if (c->up_idle_ms) {
            /* the instance's bytes have reached the client: its silence
             * counts from here */
            c->up_active_ms = c->send_progress_ms;
            sl_client_arm_send_timer(c);
        }
    } else if (c->timer_mode == T_REQUEST && c->up_idle_ms && c->up) {
        c->up_active_ms = uv_now(c->r->loop); /* a 1xx the instance sent has gone out */
        c_arm_request_timer(c);
    } else if (c->timer_mode == T_IDLE || c->timer_mode == T_FLUSH)
        sl_client_set_timer(c, c->timer_mode, c->r->cfg.idle_timeout_ms);
    else if (c->tunnel)
        c->tunnel_active_ms = uv_now(c->r->loop); /* a slow reader still drains */
}
