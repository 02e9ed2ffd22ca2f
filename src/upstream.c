/*
 * upstream.c — per-instance pools of keep-alive connections.
 *
 * An instance lives in its own network namespace with only loopback, so a
 * connection to it is a socket created inside that namespace: setns into
 * it, socket(), setns back to the namespace saved at router creation, then
 * hand the fd to libuv and connect to 127.0.0.1:PORT. The socket keeps its
 * namespace for life, so a pooled connection costs nothing extra.
 *
 * Idle connections sit on a LIFO list (the most recently used is the least
 * likely to have been closed by the instance) and keep read-polling, so an
 * instance closing one is noticed at once; a sweep timer closes those idle
 * longer than upstream_idle_ms, and at most upstream_max_idle stay (the
 * oldest goes first). A pool that is closed frees itself when its
 * last connection has closed.
 */
#include "router_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>

static void up_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- idle list ---------------------------------------------------------- */

static void idle_push(sl_upstream_pool_t *p, sl_upconn_t *up)
{
    up->prev = NULL;
    up->next = p->idle;
    if (p->idle)
        p->idle->prev = up;
    else
        p->idle_tail = up;
    p->idle = up;
    p->n_idle++;
}

static void idle_remove(sl_upstream_pool_t *p, sl_upconn_t *up)
{
    if (up->prev)
        up->prev->next = up->next;
    else
        p->idle = up->next;
    if (up->next)
        up->next->prev = up->prev;
    else
        p->idle_tail = up->prev;
    up->prev = up->next = NULL;
    p->n_idle--;
}

/* ---- pools -------------------------------------------------------------- */

static void pool_free(sl_upstream_pool_t *p)
{
    sl_router_t *r = p->r;
    if (p->prev)
        p->prev->next = p->next;
    else
        r->pools = p->next;
    if (p->next)
        p->next->prev = p->prev;
    close(p->netns_fd);
    free(p);
}

sl_upstream_pool_t *sl_upstream_pool_new(sl_router_t *r, int netns_fd, int port)
{
    if (r->closing || port <= 0 || port > 65535)
        return NULL;
    int fd = fcntl(netns_fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
        sl_err("router", "pool: dup netns fd %d: %s", netns_fd, strerror(errno));
        return NULL;
    }
    sl_upstream_pool_t *p = xcalloc(1, sizeof(*p));
    p->r = r;
    p->netns_fd = fd;
    p->port = port;
    struct stat st;
    p->same_ns = fstat(fd, &st) == 0 && st.st_ino == r->host_ns_ino && st.st_dev == r->host_ns_dev;
    p->next = r->pools;
    if (r->pools)
        r->pools->prev = p;
    r->pools = p;
    return p;
}

void sl_upstream_pool_close(sl_upstream_pool_t *p)
{
    if (!p || p->closed)
        return;
    p->closed = true;
    while (p->idle)
        sl_up_close(p->idle);
    if (p->n_conns == 0)
        pool_free(p);
}

void sl_pool_close_all(sl_router_t *r)
{
    sl_upstream_pool_t *p = r->pools;
    while (p) {
        sl_upstream_pool_t *next = p->next;
        sl_upstream_pool_close(p);
        p = next;
    }
}

/* ---- connections -------------------------------------------------------- */

static void up_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    sl_upconn_t *up = h->data;
    sl_rd_prepare(up->pool->r, up->h2 ? &up->h2_rd : &up->rd, buf);
}

void sl_up_update_reading(sl_upconn_t *up)
{
    /* An HTTP/2 session always reads (its flow control stops the instance);
     * a translated exchange stops handing bytes to the relay instead. */
    bool want = (up->state == UP_BUSY || up->state == UP_IDLE) && (!up->bp_paused || up->h2);
    if (up->h1x && !up->bp_paused)
        sl_h2_bridge_resume(up);
    if (want && !up->reading) {
        if (uv_read_start((uv_stream_t *)&up->tcp, up_alloc_cb, up_read_cb) == 0)
            up->reading = true;
    } else if (!want && up->reading) {
        uv_read_stop((uv_stream_t *)&up->tcp);
        up->reading = false;
    }
}

static void up_on_close(uv_handle_t *h)
{
    sl_upconn_t *up = h->data;
    sl_upstream_pool_t *pool = up->pool;
    sl_router_t *r = pool->r;
    if (up->h2)
        sl_h2_up_free(up);
    sl_rd_release(r, &up->rd);
    sl_rd_release(r, &up->h2_rd);
    r->stats.upstream_conns_open--;
    free(up);
    if (--pool->n_conns == 0 && pool->closed)
        pool_free(pool);
    sl_handle_closed(r);
}

void sl_up_close(sl_upconn_t *up)
{
    if (up->state == UP_CLOSING)
        return;
    if (up->state == UP_IDLE)
        idle_remove(up->pool, up);
    up->state = UP_CLOSING;
    up->client = NULL;
    up->reading = false;
    uv_close((uv_handle_t *)&up->tcp, up_on_close);
}

/* socket() inside the instance's network namespace. Returns fd or -errno. */
static int ns_socket(sl_upstream_pool_t *p)
{
    int flags = SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC;
    if (p->same_ns) {
        int fd = socket(AF_INET, flags, 0);
        return fd < 0 ? -errno : fd;
    }
    if (setns(p->netns_fd, CLONE_NEWNET) < 0)
        return -errno;
    int fd = socket(AF_INET, flags, 0);
    int e = errno;
    if (setns(p->r->host_ns_fd, CLONE_NEWNET) < 0) {
        /* The loop thread would now create every socket in the wrong
         * namespace, the listener's accepts included: nothing sane to do. */
        sl_err("router", "setns back to the host network namespace: %s", strerror(errno));
        abort();
    }
    return fd < 0 ? -e : fd;
}

static void up_connect_cb(uv_connect_t *req, int status)
{
    sl_upconn_t *up = req->handle->data;
    if (status == UV_ECANCELED || up->state == UP_CLOSING)
        return;
    if (up->is_h2 || up->h2s) {
        sl_h2_up_connected(up, status);
        return;
    }
    if (status < 0) {
        if (up->client)
            sl_client_upstream_failed(up->client, status, "connect");
        else
            sl_up_close(up);
        return;
    }
    up->state = UP_BUSY;
    sl_up_update_reading(up);
}

static sl_upconn_t *up_connect(sl_upstream_pool_t *p, int *err)
{
    sl_router_t *r = p->r;
    int fd = ns_socket(p);
    if (fd < 0) {
        *err = fd;
        return NULL;
    }
    sl_upconn_t *up = xcalloc(1, sizeof(*up));
    up->pool = p;
    up->state = UP_CONNECTING;
    uv_tcp_init(r->loop, &up->tcp);
    up->tcp.data = up;
    r->n_handles++;
    p->n_conns++;
    r->stats.upstream_conns_open++;
    int rc = uv_tcp_open(&up->tcp, fd);
    if (rc < 0) {
        close(fd);
        sl_up_close(up);
        *err = rc;
        return NULL;
    }
    uv_tcp_nodelay(&up->tcp, 1);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", p->port, &sa);
    rc = uv_tcp_connect(&up->connect_req, &up->tcp, (const struct sockaddr *)&sa, up_connect_cb);
    if (rc < 0) {
        sl_up_close(up);
        *err = rc;
        return NULL;
    }
    return up;
}

sl_upconn_t *sl_up_get(sl_upstream_pool_t *p, bool fresh, int *err)
{
    if (!fresh && p->idle) {
        sl_upconn_t *up = p->idle;
        idle_remove(p, up);
        up->state = UP_BUSY;
        up->reused = true;
        up->resp_bytes = 0;
        return up;
    }
    return up_connect(p, err);
}

void sl_up_put(sl_upconn_t *up)
{
    sl_upstream_pool_t *p = up->pool;
    /* An HTTP/1.1 connection is idle only once nothing is queued to it
     * either: an instance may answer before it has read all of the
     * request, and the rest would go out ahead of the next one. */
    if (p->closed || p->r->closing ||
        (!up->h2 && uv_stream_get_write_queue_size((uv_stream_t *)&up->tcp) > 0)) {
        sl_up_close(up);
        return;
    }
    up->client = NULL;
    up->state = UP_IDLE;
    up->bp_paused = false;
    up->reused = false;
    up->idle_since_ms = uv_now(p->r->loop);
    sl_rd_release(p->r, &up->rd);
    /* A burst leaves many connections behind; keep the newest few. */
    while (p->n_idle >= p->r->cfg.upstream_max_idle && p->idle_tail)
        sl_up_close(p->idle_tail);
    idle_push(p, up);
    sl_up_update_reading(up);
}

void sl_up_sweep(uv_timer_t *t)
{
    sl_router_t *r = t->data;
    uint64_t now = uv_now(r->loop);
    for (sl_upstream_pool_t *p = r->pools; p; p = p->next) {
        while (p->idle_tail && now - p->idle_tail->idle_since_ms >= r->cfg.upstream_idle_ms)
            sl_up_close(p->idle_tail);
    }
}

static void up_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sl_upconn_t *up = s->data;
    if (nread == 0) {
        if (up->state == UP_IDLE && up->rd.b && up->rd.start == up->rd.end)
            sl_rd_release(up->pool->r, &up->rd);
        return;
    }
    if (up->is_h2 || up->h2s) {
        sl_h2_up_read(up, nread);
        return;
    }
    if (up->state != UP_BUSY || !up->client) {
        /* Idle: the instance closed it, or sent bytes nobody asked for. */
        sl_up_close(up);
        return;
    }
    sl_client_t *c = up->client;
    if (nread < 0) {
        sl_resp_eof(c, (int)nread);
        return;
    }
    up->rd.end += (size_t)nread;
    up->resp_bytes += (uint64_t)nread;
    c->up_active_ms = uv_now(up->pool->r->loop);
    sl_busy_touch(up->pool->r);
    sl_resp_process(c);
}

void sl_up_write_cb(uv_write_t *req, int status)
{
    sl_upconn_t *up = req->handle->data;
    sl_wreq_done(up->pool->r, req);
    if (up->is_h2 || up->h2s) {
        sl_h2_up_wrote(up, status);
        return;
    }
    sl_client_t *c = up->client;
    if (!c || up->state == UP_CLOSING)
        return;
    if (status < 0) {
        c->up_write_failed = true;
        if (!up->reading)
            sl_up_update_reading(up);
        return;
    }
    size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&up->tcp);
    if (c->bp_paused && queued <= SL_BP_LOW)
        sl_client_resume_body(c);
    if (queued == 0)
        sl_client_up_drained(c);
}

static void up_shutdown_cb(uv_shutdown_t *req, int status)
{
    /* Nothing to do: the instance answers a FIN with its own EOF, which the
     * read side turns into the end of the tunnel. */
    SL_UNUSED(req);
    SL_UNUSED(status);
}

int sl_up_shutdown(sl_upconn_t *up)
{
    if (up->state != UP_BUSY)
        return UV_ENOTCONN;
    return uv_shutdown(&up->shutdown_req, (uv_stream_t *)&up->tcp, up_shutdown_cb);
}
