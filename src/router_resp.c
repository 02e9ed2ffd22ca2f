/*
 * router_resp.c — relay an instance's response to the client.
 *
 * Parses the head from the upstream connection's buffer (interim 1xx heads
 * are relayed to HTTP/1.1 clients and the final one read after them),
 * rewrites only what a proxy must (HTTP/1.1 status line, hop-by-hop fields
 * out, Transfer-Encoding / Connection as this hop needs, CRLF for lines the
 * instance ended with a bare LF), and streams the
 * body in its original framing: Content-Length and chunked pass through
 * byte for byte (chunked is validated by sl_chunked_scan to find its end);
 * a body delimited by close is re-chunked for a keep-alive HTTP/1.1 client;
 * an HTTP/1.0 client gets chunked bodies decoded and the connection closed
 * after. The head and the first body bytes go out in one write.
 */
#include "router_int.h"

#include <stdio.h>

#define RESP_IOV (4 * SL_HTTP_MAX_HEADERS + 20)

static bool resp_skip(const sl_http_msg_t *m, sl_str_t name, void *arg)
{
    return sl_http_is_hop_by_hop(m, name);
}

/* Status line + end-to-end header fields; caller adds its own + CRLF. */
static size_t resp_head_iov(const sl_http_msg_t *m, const char *head, size_t head_len,
                            uv_buf_t *iov)
{
    const char *fields_end =
        head + head_len - ((head_len >= 2 && head[head_len - 2] == '\r') ? 2 : 1);
    const char *sl_end = m->n_headers ? m->headers[0].name.p : fields_end;
    size_t n = 0;
    iov[n++] = uv_buf_init((char *)"HTTP/1.1", 8);
    if (sl_end[-2] == '\r') {
        iov[n++] = uv_buf_init((char *)head + 8, (unsigned)(sl_end - head - 8));
    } else { /* ended by a bare LF: this hop sends CRLF */
        iov[n++] = uv_buf_init((char *)head + 8, (unsigned)(sl_end - 1 - head - 8));
        iov[n++] = uv_buf_init((char *)"\r\n", 2);
    }
    return sl_plan_headers(m, fields_end, iov, n, resp_skip, NULL);
}

/*
 * A small response (head and body, or a re-chunked piece) is copied into
 * one contiguous segment when the gen buffer has room: the kernel's send
 * loop costs more per iovec than copying a few hundred bytes does. Only
 * with room already there: a fresh gen buffer could be the one some iov
 * points into, just given back.
 */
static int resp_send(sl_client_t *c, uv_buf_t *iov, size_t n)
{
    sl_rbuf_t *refs[2] = {c->up ? c->up->rd.b : NULL, c->gen};
    size_t total = sl_iov_len(iov, n);
    if (n > 1 && total <= SL_FLAT_MAX && sl_client_gen_fits(c, total)) {
        uv_buf_t one = uv_buf_init(sl_iov_gather(iov, n, sl_client_gen(c, total)), (unsigned)total);
        return sl_send(c->r, (uv_stream_t *)&c->tcp, &one, 1, &c->gen, 1, sl_client_write_cb);
    }
    return sl_send(c->r, (uv_stream_t *)&c->tcp, iov, (unsigned)n, refs, 2, sl_client_write_cb);
}

static void resp_bad(sl_client_t *c, const char *why)
{
    sl_client_drop_upstream(c, true);
    if (c->resp_started)
        sl_client_abort(c);
    else
        sl_client_local_error(c, 502, "instance failed: bad response: %s", why);
}

/* The client saw a head and part of a body: all we can do is close (a
 * reset where a close would pass the body off as whole: sl_client_abort). */
static void resp_truncated(sl_client_t *c)
{
    sl_client_drop_upstream(c, true);
    if (c->rb_mode == RB_DECHUNK || c->rb_mode == RB_CLOSE_RAW) {
        sl_client_abort(c);
        return;
    }
    c->must_close = true;
    sl_client_close_graceful(c);
    if (c->in_request) {
        c->in_request = false;
        c->r->stats.requests_in_flight--;
    }
}

/* Decide how the body travels and whether the client connection survives. */
static void resp_framing(sl_client_t *c, const sl_http_msg_t *m)
{
    bool close = !c->keep_alive || !c->req_done || c->must_close;
    c->up_reusable = m->keep_alive;
    c->resp_left = 0;
    switch (m->body) {
    case SL_BODY_LENGTH:
        c->rb_mode = RB_LENGTH;
        c->resp_left = m->content_length;
        break;
    case SL_BODY_CHUNKED:
        c->rb_mode = c->minor >= 1 ? RB_CHUNKED : RB_DECHUNK;
        close |= c->minor == 0;
        break;
    case SL_BODY_UNTIL_CLOSE:
        c->up_reusable = false;
        if (c->minor >= 1 && !close) {
            c->rb_mode = RB_CLOSE_CHUNK;
        } else {
            c->rb_mode = RB_CLOSE_RAW;
            close = true;
        }
        break;
    default:
        c->rb_mode = RB_NONE;
        break;
    }
    sl_chunked_init(&c->resp_chunk);
    c->must_close = close;
}

/* Session affinity's Set-Cookie field, in the gen buffer (the write holds
 * it); empty when the owner set none. */
static uv_buf_t resp_set_cookie(sl_client_t *c)
{
    const char *v = c->have_pick ? c->pick.set_cookie : NULL;
    if (!v)
        return uv_buf_init(NULL, 0);
    size_t len = 12 + strlen(v) + 2;
    /* with room for a chunk prefix after it: nothing later in this write
     * may replace the gen buffer the cookie is in */
    sl_client_gen_reserve(c, len + 32);
    char *p = sl_client_gen(c, len);
    memcpy(p, "Set-Cookie: ", 12);
    memcpy(p + 12, v, len - 14);
    memcpy(p + len - 2, "\r\n", 2);
    return uv_buf_init(p, (unsigned)len);
}

/*
 * The instance accepted a WebSocket upgrade: relay the 101 with the
 * Connection/Upgrade fields it needs (hop-by-hop, so dropped from the
 * relayed head otherwise), then every later byte is tunnel data, relayed
 * raw until the instance closes (RB_CLOSE_RAW), while the client side
 * forwards its bytes the other way.
 */
static bool resp_switch(sl_client_t *c, const sl_http_msg_t *m, const char *head, size_t hl,
                        uv_buf_t *iov, size_t *n)
{
    sl_str_t proto = sl_http_header_get(m, SL_STR("Upgrade"));
    if (!c->upgrade || !proto.p) {
        resp_bad(c, c->upgrade ? "101 without Upgrade" : "unexpected 101 Switching Protocols");
        return false;
    }
    c->resp_head_done = true;
    c->resp_status = 101;
    c->plan = NULL;
    c->up_reusable = false;
    c->rb_mode = RB_CLOSE_RAW;
    uv_buf_t cookie = resp_set_cookie(c);
    *n = resp_head_iov(m, head, hl, iov);
    if (cookie.len)
        iov[(*n)++] = cookie;
    iov[(*n)++] = uv_buf_init((char *)"Connection: Upgrade\r\nUpgrade: ", 30);
    iov[(*n)++] = uv_buf_init((char *)proto.p, (unsigned)proto.len);
    iov[(*n)++] = uv_buf_init((char *)"\r\n\r\n", 4);
    c->resp_started = true;
    c->up->rd.start += hl;
    sl_client_tunnel_start(c);
    return true;
}

/* Returns false when it cannot go on (needs bytes, or failed). Adds the
 * final head to iov; sends interim ones itself. */
static bool resp_parse_head(sl_client_t *c, uv_buf_t *iov, size_t *n)
{
    sl_rd_t *rd = &c->up->rd;
    size_t avail = rd->end - rd->start;
    if (avail == 0)
        return false;
    sl_http_msg_t m;
    const char *why = "malformed response";
    const char *head = rd->b->data + rd->start;
    int hl = sl_http_parse_response(head, avail, &m, c->method, &c->r->limits, &why);
    if (hl == SL_AGAIN) {
        if (avail >= SL_RBUF_SIZE)
            resp_bad(c, "response head too large");
        return false;
    }
    if (hl <= 0) {
        resp_bad(c, why ? why : "malformed response");
        return false;
    }
    if (m.status < 200) {
        if (m.status == 101)
            return resp_switch(c, &m, head, (size_t)hl, iov, n);
        /* Each is written at once, and the client may not be reading:
         * what an instance may make the router hold for it is bounded. */
        c->interim_bytes += (uint32_t)hl;
        if (c->interim_bytes > SL_INTERIM_MAX) {
            char why_big[48];
            snprintf(why_big, sizeof(why_big), "interim (1xx) responses over %d KiB",
                     SL_INTERIM_MAX / 1024);
            resp_bad(c, why_big);
            return false;
        }
        c->plan = NULL; /* the instance has the request: no retry from here on */
        if (c->minor >= 1) {
            uv_buf_t tmp[RESP_IOV];
            size_t k = resp_head_iov(&m, head, (size_t)hl, tmp);
            tmp[k++] = uv_buf_init((char *)"\r\n", 2);
            if (resp_send(c, tmp, k) < 0) {
                sl_client_destroy(c);
                return false;
            }
        }
        rd->start += (size_t)hl;
        return true;
    }
    c->resp_head_done = true;
    c->resp_status = m.status;
    c->plan = NULL; /* no retry from here on */
    c->send_progress_ms = uv_now(c->r->loop);
    sl_client_arm_send_timer(c);
    resp_framing(c, &m);
    /* First: a fresh gen buffer must not replace one an iov points into. */
    uv_buf_t cookie = resp_set_cookie(c);
    *n = resp_head_iov(&m, head, (size_t)hl, iov);
    if (cookie.len)
        iov[(*n)++] = cookie;
    if (c->rb_mode == RB_CHUNKED || c->rb_mode == RB_CLOSE_CHUNK)
        iov[(*n)++] = uv_buf_init((char *)"Transfer-Encoding: chunked\r\n", 28);
    if (c->must_close)
        iov[(*n)++] = uv_buf_init((char *)"Connection: close\r\n", 19);
    else if (c->minor == 0)
        iov[(*n)++] = uv_buf_init((char *)"Connection: keep-alive\r\n", 24);
    iov[(*n)++] = uv_buf_init((char *)"\r\n", 2);
    c->resp_started = true;
    rd->start += (size_t)hl;
    return true;
}

/* Append the body bytes now buffered to iov. Returns -1 on bad framing. */
static int resp_body_iov(sl_client_t *c, uv_buf_t *iov, size_t *n, bool *done)
{
    sl_rd_t *rd = &c->up->rd;
    size_t avail = rd->end - rd->start;
    char *p = rd->b->data + rd->start;
    const char *why = NULL;
    *done = false;
    switch (c->rb_mode) {
    case RB_NONE:
        *done = true;
        return 0;
    case RB_LENGTH: {
        size_t k = avail < c->resp_left ? avail : (size_t)c->resp_left;
        if (k)
            iov[(*n)++] = uv_buf_init(p, (unsigned)k);
        c->resp_left -= k;
        rd->start += k;
        *done = c->resp_left == 0;
        return 0;
    }
    case RB_CHUNKED: {
        if (!avail)
            return 0;
        ssize_t k = sl_chunked_scan(&c->resp_chunk, p, avail, done, &why);
        if (k < 0)
            return -1;
        if (k)
            iov[(*n)++] = uv_buf_init(p, (unsigned)k);
        rd->start += (size_t)k;
        return 0;
    }
    case RB_DECHUNK: {
        if (!avail)
            return 0;
        size_t out = 0;
        ssize_t k = sl_chunked_decode(&c->resp_chunk, p, avail, &out, done, &why);
        if (k < 0)
            return -1;
        if (out)
            iov[(*n)++] = uv_buf_init(p, (unsigned)out);
        rd->start += (size_t)k;
        return 0;
    }
    case RB_CLOSE_RAW:
        if (avail)
            iov[(*n)++] = uv_buf_init(p, (unsigned)avail);
        rd->start += avail;
        return 0;
    case RB_CLOSE_CHUNK:
        if (avail) {
            char *pre = sl_client_gen(c, SL_CHUNK_SIZE_MAX);
            int pl = snprintf(pre, SL_CHUNK_SIZE_MAX, "%zx\r\n", avail);
            iov[(*n)++] = uv_buf_init(pre, (unsigned)pl);
            iov[(*n)++] = uv_buf_init(p, (unsigned)avail);
            iov[(*n)++] = uv_buf_init((char *)"\r\n", 2);
        }
        rd->start += avail;
        return 0;
    }
    return 0;
}

void sl_resp_process(sl_client_t *c)
{
    sl_upconn_t *up = c->up;
    uv_buf_t iov[RESP_IOV];
    size_t n = 0;
    bool done = false;
    if (c->tunnel)
        c->tunnel_active_ms = uv_now(c->r->loop);
    while (!c->resp_head_done) {
        if (!resp_parse_head(c, iov, &n))
            return;
        if (c->up != up || c->state == C_CLOSED)
            return;
    }
    if (resp_body_iov(c, iov, &n, &done) < 0) {
        if (n && resp_send(c, iov, n) < 0) {
            sl_client_destroy(c);
            return;
        }
        resp_truncated(c);
        return;
    }
    if (n && resp_send(c, iov, n) < 0) {
        sl_client_destroy(c);
        return;
    }
    if (done) {
        sl_client_exchange_done(c);
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > SL_BP_HIGH) {
        up->bp_paused = true;
        sl_up_update_reading(up);
    }
}

void sl_resp_eof(sl_client_t *c, int err)
{
    if (!c->resp_head_done) {
        sl_client_upstream_failed(c, err, "read");
        return;
    }
    if (c->tunnel) {
        /* The instance ended the tunnel (closed or reset): deliver what
         * it sent, then close the client; the request ends with its 101. */
        sl_client_exchange_done(c);
        return;
    }
    if (err == UV_EOF && (c->rb_mode == RB_CLOSE_RAW || c->rb_mode == RB_CLOSE_CHUNK)) {
        if (c->rb_mode == RB_CLOSE_CHUNK) {
            uv_buf_t last = uv_buf_init((char *)"0\r\n\r\n", 5);
            if (resp_send(c, &last, 1) < 0) {
                sl_client_destroy(c);
                return;
            }
        }
        sl_client_exchange_done(c);
        return;
    }
    resp_truncated(c);
}
