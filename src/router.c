/*
 * router.c — the ingress's lifecycle and plumbing: listening socket, the
 * shared buffer and write-request free lists, the write helper every relay
 * goes through, handle accounting for sl_router_close, and stats.
 *
 * The request state machine is in router_client.c, the response relay in
 * router_resp.c, instance pools in upstream.c; router_int.h explains the
 * memory model they share.
 */
#include "router_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>

/* ---- buffers ---------------------------------------------------------- */

sl_rbuf_t *sl_rbuf_get(sl_router_t *r)
{
    sl_rbuf_t *b = r->free_bufs;
    if (b) {
        r->free_bufs = b->next;
        r->n_free_bufs--;
    } else {
        b = xmalloc(sizeof(*b));
    }
    b->next = NULL;
    b->refs = 1;
    return b;
}

void sl_rbuf_unref(sl_router_t *r, sl_rbuf_t *b)
{
    if (!b || --b->refs > 0)
        return;
    if (r->n_free_bufs < SL_FREE_BUFS && !r->closing) {
        b->next = r->free_bufs;
        r->free_bufs = b;
        r->n_free_bufs++;
    } else {
        free(b);
    }
}

/*
 * Room to read into: the unconsumed bytes move to the front of the buffer
 * when we are its only user, or to a fresh buffer when a pending write or the
 * current request still points into it.
 */
void sl_rd_prepare(sl_router_t *r, sl_rd_t *rd, uv_buf_t *out)
{
    if (!rd->b) {
        rd->b = sl_rbuf_get(r);
        rd->start = rd->end = 0;
    } else if (rd->start == rd->end && rd->b->refs == 1) {
        rd->start = rd->end = 0;
    } else if (SL_RBUF_SIZE - rd->end < SL_RBUF_MINREAD && rd->start > 0) {
        size_t n = rd->end - rd->start;
        if (rd->b->refs == 1) {
            memmove(rd->b->data, rd->b->data + rd->start, n);
        } else {
            sl_rbuf_t *nb = sl_rbuf_get(r);
            memcpy(nb->data, rd->b->data + rd->start, n);
            sl_rbuf_unref(r, rd->b);
            rd->b = nb;
        }
        rd->start = 0;
        rd->end = n;
    }
    *out = uv_buf_init(rd->b->data + rd->end, (unsigned)(SL_RBUF_SIZE - rd->end));
}

void sl_rd_release(sl_router_t *r, sl_rd_t *rd)
{
    sl_rbuf_unref(r, rd->b);
    rd->b = NULL;
    rd->start = rd->end = 0;
}

/* ---- writes ----------------------------------------------------------- */

static sl_wreq_t *wreq_get(sl_router_t *r)
{
    sl_wreq_t *w = r->free_wreqs;
    if (w)
        r->free_wreqs = w->next;
    else
        w = xmalloc(sizeof(*w));
    w->next = NULL;
    w->nrefs = 0;
    r->stats.writes_pending++;
    return w;
}

static void wreq_put(sl_router_t *r, sl_wreq_t *w)
{
    for (unsigned i = 0; i < w->nrefs; i++)
        sl_rbuf_unref(r, w->refs[i]);
    w->nrefs = 0;
    w->next = r->free_wreqs;
    r->free_wreqs = w;
    r->stats.writes_pending--;
}

void sl_wreq_done(sl_router_t *r, uv_write_t *req)
{
    wreq_put(r, sl_container_of(req, sl_wreq_t, req));
}

size_t sl_iov_len(const uv_buf_t *iov, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += iov[i].len;
    return total;
}

char *sl_iov_gather(const uv_buf_t *iov, size_t n, char *dst)
{
    char *w = dst;
    for (size_t i = 0; i < n; i++) {
        memcpy(w, iov[i].base, iov[i].len);
        w += iov[i].len;
    }
    return dst;
}

int sl_send(sl_router_t *r, uv_stream_t *s, uv_buf_t *iov, unsigned n, sl_rbuf_t **refs,
            unsigned nrefs, uv_write_cb cb)
{
    size_t total = sl_iov_len(iov, n);
    if (total == 0)
        return 0;
    int rc = uv_try_write(s, iov, n);
    if (rc >= 0 && (size_t)rc == total)
        return 0;
    if (rc < 0 && rc != UV_EAGAIN)
        return rc;
    size_t done = rc > 0 ? (size_t)rc : 0;
    /* Skip what went out; the caller's array is ours to adjust. */
    unsigned i = 0;
    while (done >= iov[i].len) {
        done -= iov[i].len;
        i++;
    }
    /* uv_write copies the array, so iov[i] is adjusted only for the call:
     * callers may keep iov (a retry resends it). */
    uv_buf_t saved = iov[i];
    iov[i].base += done;
    iov[i].len -= done;
    sl_wreq_t *w = wreq_get(r);
    for (unsigned k = 0; k < nrefs && k < SL_WREQ_REFS; k++) {
        if (!refs[k])
            continue;
        bool dup = false;
        for (unsigned j = 0; j < w->nrefs; j++)
            dup |= w->refs[j] == refs[k];
        if (!dup) {
            sl_rbuf_ref(refs[k]);
            w->refs[w->nrefs++] = refs[k];
        }
    }
    rc = uv_write(&w->req, s, iov + i, n - i, cb);
    iov[i] = saved;
    if (rc < 0) {
        wreq_put(r, w);
        return rc;
    }
    return 0;
}

/* ---- lifecycle -------------------------------------------------------- */

static void router_free(sl_router_t *r)
{
    while (r->free_bufs) {
        sl_rbuf_t *b = r->free_bufs;
        r->free_bufs = b->next;
        free(b);
    }
    while (r->free_wreqs) {
        sl_wreq_t *w = r->free_wreqs;
        r->free_wreqs = w->next;
        free(w);
    }
    if (r->host_ns_fd >= 0)
        close(r->host_ns_fd);
    free(r);
}

void sl_handle_closed(sl_router_t *r)
{
    r->n_handles--;
    if (r->closing && r->n_handles == 0) {
        void (*cb)(void *) = r->close_cb;
        void *data = r->close_data;
        router_free(r);
        if (cb)
            cb(data);
    }
}

static void on_router_handle_close(uv_handle_t *h)
{
    sl_handle_closed(h->data);
}

static int parse_listen(const char *listen, struct sockaddr_storage *ss, sl_error_t *err)
{
    char host[64];
    const char *colon;
    const char *hs = listen, *he;
    if (!listen || !*listen)
        return sl_error_set(err, EINVAL, "router: listen address is empty");
    if (listen[0] == '[') {
        hs = listen + 1;
        he = strchr(hs, ']');
        if (!he || he[1] != ':')
            return sl_error_set(err, EINVAL, "router: listen %s: expected [ADDR]:PORT", listen);
        colon = he + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon)
            return sl_error_set(err, EINVAL, "router: listen %s: expected ADDR:PORT", listen);
        he = colon;
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0 || hl >= sizeof(host))
        return sl_error_set(err, EINVAL, "router: listen %s: bad address", listen);
    memcpy(host, hs, hl);
    host[hl] = '\0';
    int64_t port;
    if (sl_parse_int64(colon + 1, 0, 65535, &port) < 0)
        return sl_error_set(err, EINVAL, "router: listen %s: port must be 0..65535", listen);
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return sl_error_set(err, EINVAL, "router: listen %s: %s is not an IP address", listen, host);
}

static void apply_defaults(sl_router_t *r, const sl_router_config_t *cfg)
{
    r->cfg = *cfg;
    if (!r->cfg.header_timeout_ms)
        r->cfg.header_timeout_ms = 30000;
    if (!r->cfg.idle_timeout_ms)
        r->cfg.idle_timeout_ms = 60000;
    if (!r->cfg.upstream_idle_ms)
        r->cfg.upstream_idle_ms = 30000;
    if (!r->cfg.max_connections)
        r->cfg.max_connections = 10000;
    if (!r->cfg.body_timeout_ms)
        r->cfg.body_timeout_ms = 30000;
    if (!r->cfg.upstream_max_idle)
        r->cfg.upstream_max_idle = 256;
    if (r->cfg.busy_poll_ns > SL_BUSY_POLL_MAX_NS)
        r->cfg.busy_poll_ns = SL_BUSY_POLL_MAX_NS;
    r->cfg.listen = NULL; /* not kept: the caller owns the string */
    r->limits = sl_http_default_limits;
    r->limits.max_head = SL_RBUF_SIZE;
    if (r->limits.max_request_line > SL_RBUF_SIZE / 2)
        r->limits.max_request_line = SL_RBUF_SIZE / 2;
    if (r->limits.max_header_line > SL_RBUF_SIZE / 2)
        r->limits.max_header_line = SL_RBUF_SIZE / 2;
}

static int open_host_ns(sl_router_t *r, sl_error_t *err)
{
    r->host_ns_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (r->host_ns_fd < 0)
        return sl_error_errno(err, errno, "router: open /proc/thread-self/ns/net");
    struct stat st;
    if (fstat(r->host_ns_fd, &st) < 0)
        return sl_error_errno(err, errno, "router: fstat netns");
    r->host_ns_ino = st.st_ino;
    r->host_ns_dev = st.st_dev;
    return 0;
}

/* ---- busy polling --------------------------------------------------- */

/* An active idle handle makes libuv poll with a zero timeout. Each turn of
 * the loop checks whether the router read anything since the last turn; the
 * window restarts if it did, and the handle stops (the next poll may sleep)
 * once a whole window passed without I/O. */
static void on_busy_idle(uv_idle_t *h)
{
    sl_router_t *r = h->data;
    uint64_t now = uv_hrtime();
    if (r->busy_io) {
        r->busy_io = false;
        r->busy_until = now + r->cfg.busy_poll_ns;
    } else if (now >= r->busy_until) {
        uv_idle_stop(h);
        r->busy_on = false;
        r->stats.busy_poll_ns += now - r->busy_since;
    } else {
        /* Whatever else is runnable on this CPU (the client, an instance)
         * goes first: polling must not delay the work it waits for. */
        sched_yield();
    }
}

void sl_busy_start(sl_router_t *r)
{
    if (r->closing)
        return;
    r->busy_on = true;
    r->busy_since = uv_hrtime();
    r->busy_until = r->busy_since + r->cfg.busy_poll_ns;
    uv_idle_start(&r->busy, on_busy_idle);
}

static int start_listener(sl_router_t *r, const char *listen, sl_error_t *err)
{
    struct sockaddr_storage ss;
    int rc = parse_listen(listen, &ss, err);
    if (rc < 0)
        return rc;
    uv_tcp_init(r->loop, &r->listener);
    r->listener.data = r;
    r->n_handles++;
    rc = uv_tcp_bind(&r->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&r->listener, 1024, sl_client_on_accept);
    if (rc < 0)
        return sl_error_set(err, -rc, "router: listen on %s: %s", listen, uv_strerror(rc));
    return 0;
}

int sl_router_new(uv_loop_t *loop, const sl_router_config_t *cfg, const sl_router_ops_t *ops,
                  void *ctx, sl_router_t **out, sl_error_t *err)
{
    sl_router_t *r = xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->ops = *ops;
    r->ctx = ctx;
    r->host_ns_fd = -1;
    apply_defaults(r, cfg);
    /* A peer closing mid-write must be an error code, not a fatal signal. */
    signal(SIGPIPE, SIG_IGN);
    int rc = open_host_ns(r, err);
    if (rc == 0)
        rc = start_listener(r, cfg->listen, err);
    if (rc < 0) {
        if (r->n_handles) {
            r->closing = true;
            uv_close((uv_handle_t *)&r->listener, on_router_handle_close);
        } else {
            router_free(r);
        }
        return rc;
    }
    uv_timer_init(loop, &r->sweep);
    r->sweep.data = r;
    r->n_handles++;
    uint64_t every = r->cfg.upstream_idle_ms / 4;
    every = every < 10 ? 10 : every > 1000 ? 1000 : every;
    uv_timer_start(&r->sweep, sl_up_sweep, every, every);
    uv_unref((uv_handle_t *)&r->sweep);
    uv_timer_init(loop, &r->h1x_timer);
    r->h1x_timer.data = r;
    r->n_handles++;
    if (r->cfg.busy_poll_ns) {
        uv_idle_init(loop, &r->busy);
        r->busy.data = r;
        r->n_handles++;
    }
    *out = r;
    return 0;
}

void sl_router_close(sl_router_t *r, void (*cb)(void *), void *data)
{
    if (r->closing)
        return;
    r->closing = true;
    r->close_cb = cb;
    r->close_data = data;
    r->n_handles++; /* hold: nothing may finish before we are done here */
    uv_close((uv_handle_t *)&r->listener, on_router_handle_close);
    uv_close((uv_handle_t *)&r->sweep, on_router_handle_close);
    uv_close((uv_handle_t *)&r->h1x_timer, on_router_handle_close);
    if (r->cfg.busy_poll_ns)
        uv_close((uv_handle_t *)&r->busy, on_router_handle_close);
    while (r->clients) {
        sl_client_t *c = r->clients;
        sl_client_destroy(c); /* unlinks c */
    }
    sl_pool_close_all(r);
    sl_handle_closed(r);
}

/* ---- hosts ------------------------------------------------------------ */

static bool host_char_ok(unsigned char ch, bool literal)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    if (ch != 0 && strchr("-._~!$&'()*+,;=%", ch))
        return true;
    return literal && (ch == ':' || ch == '.');
}

ssize_t sl_router_normalize_host(sl_str_t h, char *out, size_t cap)
{
    if (!h.p || h.len == 0 || h.len >= cap)
        return -1;
    bool literal = h.p[0] == '[';
    size_t hl = h.len;
    if (literal) {
        const char *rb = memchr(h.p, ']', h.len);
        if (!rb || rb - h.p < 2)
            return -1;
        hl = (size_t)(rb - h.p) + 1;
    } else {
        const char *colon = memchr(h.p, ':', h.len);
        if (colon)
            hl = (size_t)(colon - h.p);
    }
    if (hl < h.len) {
        if (h.p[hl] != ':')
            return -1;
        for (size_t i = hl + 1; i < h.len; i++)
            if (h.p[i] < '0' || h.p[i] > '9')
                return -1;
    }
    if (!literal && hl > 1 && h.p[hl - 1] == '.' && h.p[hl - 2] != '.')
        hl--; /* "name." is the same fully-qualified name */
    if (hl == 0)
        return -1;
    for (size_t i = 0; i < hl; i++) {
        unsigned char ch = (unsigned char)h.p[i];
        bool edge = literal && (i == 0 || i == hl - 1);
        if (!edge && !host_char_ok(ch, literal))
            return -1;
        out[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : (char)ch;
    }
    out[hl] = '\0';
    return (ssize_t)hl;
}

int sl_router_port(const sl_router_t *r)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getsockname(&r->listener, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

void sl_router_stats(const sl_router_t *r, sl_router_stats_t *out)
{
    *out = r->stats;
    if (r->busy_on) /* the window still open counts too */
        out->busy_poll_ns += uv_hrtime() - r->busy_since;
}
