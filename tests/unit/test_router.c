/*
 * test_router.c — the router over real sockets.
 *
 * The router runs on its own libuv loop in a background thread; the test
 * thread is a plain blocking HTTP client; backends are blocking servers
 * (a thread per connection) whose behaviour is chosen by the request path.
 * Anything that must touch the router runs on the loop thread via h_call.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "router.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

/* ---- byte buffers and a blocking reader --------------------------------- */

typedef struct dyn {
    char *p;
    size_t len, cap;
} dyn_t;

static void dyn_add(dyn_t *d, const void *p, size_t n)
{
    if (d->len + n + 1 > d->cap) {
        d->cap = (d->len + n + 1) * 2;
        d->p = realloc(d->p, d->cap);
        if (!d->p)
            abort();
    }
    memcpy(d->p + d->len, p, n);
    d->len += n;
    d->p[d->len] = '\0';
}

static void dyn_free(dyn_t *d)
{
    free(d->p);
    memset(d, 0, sizeof(*d));
}

typedef struct rdr {
    int fd;
    char buf[65536];
    size_t len;
} rdr_t;

static ssize_t rdr_fill(rdr_t *r)
{
    if (r->len == sizeof(r->buf))
        return -1;
    ssize_t n;
    do
        n = read(r->fd, r->buf + r->len, sizeof(r->buf) - r->len);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        r->len += (size_t)n;
    return n;
}

static void rdr_consume(rdr_t *r, size_t n)
{
    memmove(r->buf, r->buf + n, r->len - n);
    r->len -= n;
}

/* Returns head length (through CRLFCRLF) or -1 at EOF/error. */
static ssize_t rdr_head(rdr_t *r)
{
    for (;;) {
        char *e = memmem(r->buf, r->len, "\r\n\r\n", 4);
        if (e)
            return e + 4 - r->buf;
        if (rdr_fill(r) <= 0)
            return -1;
    }
}

/* Read n body bytes into d (NULL: just count); sum gets a checksum. */
static int rdr_exact(rdr_t *r, uint64_t n, dyn_t *d, uint64_t *sum)
{
    while (n > 0) {
        if (r->len == 0 && rdr_fill(r) <= 0)
            return -1;
        size_t k = r->len < n ? r->len : (size_t)n;
        if (d)
            dyn_add(d, r->buf, k);
        if (sum)
            for (size_t i = 0; i < k; i++)
                *sum = *sum * 31 + (unsigned char)r->buf[i];
        rdr_consume(r, k);
        n -= k;
    }
    return 0;
}

static ssize_t rdr_line(rdr_t *r, char *out, size_t cap)
{
    for (;;) {
        char *e = memmem(r->buf, r->len, "\r\n", 2);
        if (e) {
            size_t l = (size_t)(e - r->buf);
            if (l >= cap)
                return -1;
            memcpy(out, r->buf, l);
            out[l] = '\0';
            rdr_consume(r, l + 2);
            return (ssize_t)l;
        }
        if (rdr_fill(r) <= 0)
            return -1;
    }
}

/* Decode a chunked body into dec, keeping the wire bytes in raw. */
static int rdr_chunked(rdr_t *r, dyn_t *dec, dyn_t *raw, uint64_t *sum)
{
    char line[256];
    for (;;) {
        if (rdr_line(r, line, sizeof(line)) < 0)
            return -1;
        if (raw) {
            dyn_add(raw, line, strlen(line));
            dyn_add(raw, "\r\n", 2);
        }
        unsigned long sz = strtoul(line, NULL, 16);
        if (sz == 0)
            break;
        size_t before = dec ? dec->len : 0;
        if (rdr_exact(r, sz, dec, sum) < 0)
            return -1;
        if (raw && dec)
            dyn_add(raw, dec->p + before, sz);
        if (rdr_line(r, line, sizeof(line)) != 0)
            return -1;
        if (raw)
            dyn_add(raw, "\r\n", 2);
    }
    for (;;) { /* trailers up to the empty line */
        ssize_t l = rdr_line(r, line, sizeof(line));
        if (l < 0)
            return -1;
        if (raw) {
            dyn_add(raw, line, (size_t)l);
            dyn_add(raw, "\r\n", 2);
        }
        if (l == 0)
            return 0;
    }
}

/* Case-insensitive header value lookup in a raw head; "" when absent. */
static bool hdr_get(const char *head, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = strstr(head, "\r\n");
    while (p && p[2] != '\r') {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t l = (size_t)(e - v) < cap - 1 ? (size_t)(e - v) : cap - 1;
            memcpy(out, v, l);
            out[l] = '\0';
            return true;
        }
        p = strstr(p, "\r\n");
    }
    out[0] = '\0';
    return false;
}

static int count_header(const char *head, const char *name)
{
    int n = 0;
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n"))
        if (strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':')
            n++;
    return n;
}

/* ---- backend: blocking HTTP server, behaviour by path ------------------- */

#define BE_MAX_CONNS 64

typedef struct backend {
    int lfd, port, ns_fd;
    bool netns;
    pthread_t acc;
    sem_t ready;
    atomic_int accepts;
    pthread_mutex_t mu;
    pthread_t conn_threads[BE_MAX_CONNS];
    int conn_fds[BE_MAX_CONNS];
    int nconns;
    dyn_t last_head, last_raw_body;
} backend_t;

typedef struct be_conn {
    backend_t *b;
    int slot;
    rdr_t r;
} be_conn_t;

static void be_write(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t k = write(fd, s, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return;
        s += k;
        n -= (size_t)k;
    }
}

static bool be_head_req;

static void be_respond(int fd, const char *body, size_t n)
{
    char h[256];
    int hl =
        snprintf(h, sizeof(h), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nX-Backend: 1\r\n\r\n", n);
    be_write(fd, h, (size_t)hl);
    if (!be_head_req)
        be_write(fd, body, n);
}

static void be_send_big(int fd, uint64_t n)
{
    char h[128];
    int hl = snprintf(h, sizeof(h), "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n",
                      (unsigned long long)n);
    be_write(fd, h, (size_t)hl);
    static char chunk[65536];
    for (uint64_t off = 0; off < n;) {
        size_t k = n - off < sizeof(chunk) ? (size_t)(n - off) : sizeof(chunk);
        for (size_t i = 0; i < k; i++)
            chunk[i] = (char)('a' + (off + i) % 26);
        be_write(fd, chunk, k);
        off += k;
    }
}

/* Responses that cannot be framed safely: each must cost the upstream
 * connection (never pooled, so nothing is smuggled into the next exchange). */
static const char *const bad_responses[] = {
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nab",
    "HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 2\r\n\r\nab",
    "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nab",
    "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/",
    "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
};
#define N_BAD_RESPONSES (sizeof(bad_responses) / sizeof(bad_responses[0]))

static unsigned bad_index(const char *s)
{
    return (unsigned)strtoul(s, NULL, 10);
}

/* A WebSocket-ish endpoint: answer 101 whatever was asked, then echo
 * every byte (those that came with the head first) until EOF. */
static void be_ws_echo(int fd, rdr_t *r)
{
    static const char m[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nX-Backend: ws\r\n\r\n";
    be_write(fd, m, sizeof(m) - 1);
    if (r->len)
        be_write(fd, r->buf, r->len);
    r->len = 0;
    char buf[16384];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        be_write(fd, buf, (size_t)n);
    }
}

/* Serve one request; false ends the connection. */
static bool be_serve_one(be_conn_t *bc, bool *drop_next)
{
    backend_t *b = bc->b;
    rdr_t *r = &bc->r;
    int fd = r->fd;
    ssize_t hl = rdr_head(r);
    if (hl < 0 || *drop_next)
        return false;
    char *head = malloc((size_t)hl + 1);
    memcpy(head, r->buf, (size_t)hl);
    head[hl] = '\0';
    rdr_consume(r, (size_t)hl);
    char method[16] = "", path[256] = "", v[128];
    sscanf(head, "%15s %255s", method, path);
    bool slow_sink = strcmp(path, "/slowsink") == 0;
    bool is_sink = slow_sink || strcmp(path, "/sink") == 0;
    if (slow_sink)
        usleep(800000); /* reads the body only after a while */
    bool early = strcmp(path, "/early") == 0;
    bool head_first = strcmp(path, "/headfirst") == 0;
    if (head_first) {
        /* a head and part of the body, then the request body, read late;
         * then silence */
        static const char m[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789";
        be_write(fd, m, sizeof(m) - 1);
        usleep(300000);
    }
    if (early) {
        /* an answer before the body is read, which is read late */
        usleep(100000);
        be_respond(fd, "early", 5);
        usleep(300000);
    }
    be_head_req = strcmp(method, "HEAD") == 0; /* tests send one HEAD at a time */
    if (hdr_get(head, "Expect", v, sizeof(v)) && strcasecmp(v, "100-continue") == 0)
        be_write(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    dyn_t body = {0}, raw = {0};
    uint64_t sum = 0, cl = 0;
    int rc = 0;
    if (hdr_get(head, "Content-Length", v, sizeof(v))) {
        cl = strtoull(v, NULL, 10);
        rc = rdr_exact(r, cl, is_sink ? NULL : &body, &sum);
        if (!is_sink && body.len)
            dyn_add(&raw, body.p, body.len);
    } else if (hdr_get(head, "Transfer-Encoding", v, sizeof(v))) {
        rc = rdr_chunked(r, is_sink ? NULL : &body, is_sink ? NULL : &raw, &sum);
    }
    pthread_mutex_lock(&b->mu);
    b->last_head.len = 0;
    dyn_add(&b->last_head, head, (size_t)hl);
    b->last_raw_body.len = 0;
    dyn_add(&b->last_raw_body, raw.p ? raw.p : "", raw.len);
    pthread_mutex_unlock(&b->mu);
    bool keep = rc == 0;
    if (!keep || early || head_first) {
    } else if (strcmp(path, "/hello") == 0) {
        be_respond(fd, "hello", 5);
    } else if (strncmp(path, "/say?", 5) == 0) {
        be_respond(fd, path + 5, strlen(path + 5));
    } else if (strcmp(path, "/echo") == 0) {
        be_respond(fd, body.p ? body.p : "", body.len);
    } else if (strcmp(path, "/rawbody") == 0) {
        be_respond(fd, raw.p ? raw.p : "", raw.len);
    } else if (strncmp(path, "/headers", 8) == 0) {
        be_respond(fd, head, (size_t)hl);
    } else if (strcmp(path, "/chunked") == 0) {
        static const char m[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                "4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        be_write(fd, m, sizeof(m) - 1);
    } else if (strcmp(path, "/close") == 0) {
        static const char m[] = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close body";
        be_write(fd, m, sizeof(m) - 1);
        keep = false;
    } else if (strcmp(path, "/partial") == 0) {
        static const char m[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789";
        be_write(fd, m, sizeof(m) - 1);
        keep = false;
    } else if (strcmp(path, "/slow") == 0) {
        usleep(300000);
        be_respond(fd, "slow", 4);
    } else if (strcmp(path, "/garbage") == 0) {
        static const char m[] =
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        be_write(fd, m, sizeof(m) - 1);
    } else if (strcmp(path, "/lf") == 0) {
        /* a CGI-style head: every line ends in a bare LF */
        static const char m[] = "HTTP/1.1 201 Created\nContent-Type: text/plain\nX-B: b\n"
                                "Connection: x-hop\nX-Hop: 1\nContent-Length: 2\n\nok";
        be_write(fd, m, sizeof(m) - 1);
    } else if (strncmp(path, "/badresp?i=", 11) == 0) {
        const char *m = bad_responses[bad_index(path + 11) % N_BAD_RESPONSES];
        be_write(fd, m, strlen(m));
    } else if (strcmp(path, "/ws") == 0) {
        be_ws_echo(fd, r);
        keep = false;
    } else if (strcmp(path, "/ws-refuse") == 0) {
        be_respond(fd, "no upgrade", 10);
    } else if (strncmp(path, "/hints?n=", 9) == 0) {
        /* n 103 Early Hints of 3 KiB each, then the response */
        char hint[3072];
        int pre = snprintf(hint, sizeof(hint), "HTTP/1.1 103 Early Hints\r\nLink: <");
        memset(hint + pre, 'a', sizeof(hint) - (size_t)pre);
        memcpy(hint + sizeof(hint) - 5, ">\r\n\r\n", 5);
        for (long i = strtol(path + 9, NULL, 10); i > 0; i--)
            be_write(fd, hint, sizeof(hint));
        be_respond(fd, "hinted", 6);
    } else if (strcmp(path, "/hang") == 0) {
        /* never answer; wait for the next request or EOF */
    } else if (strcmp(path, "/chunkstall") == 0 || strcmp(path, "/chunkcut") == 0) {
        /* a chunked body that stops part way: silence, or the connection closes */
        static const char m[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
        be_write(fd, m, sizeof(m) - 1);
        keep = strcmp(path, "/chunkstall") == 0;
    } else if (strcmp(path, "/rstclose") == 0) {
        /* a body read until close, ended by a reset */
        static const char m[] = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial";
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        be_write(fd, m, sizeof(m) - 1);
        usleep(50000);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        keep = false;
    } else if (strcmp(path, "/stall") == 0) {
        /* a head and part of the body, then silence */
        static const char m[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789";
        be_write(fd, m, sizeof(m) - 1);
    } else if (strcmp(path, "/oneshot") == 0) {
        be_respond(fd, "oneshot", 7);
        *drop_next = true; /* like a server whose keep-alive just expired */
    } else if (strncmp(path, "/big?n=", 7) == 0) {
        be_send_big(fd, strtoull(path + 7, NULL, 10));
    } else if (is_sink) {
        char m[64];
        int ml =
            snprintf(m, sizeof(m), "%llu %llu", (unsigned long long)cl, (unsigned long long)sum);
        be_respond(fd, m, (size_t)ml);
    } else {
        static const char m[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        be_write(fd, m, sizeof(m) - 1);
    }
    free(head);
    dyn_free(&body);
    dyn_free(&raw);
    return keep;
}

static void *be_conn_main(void *arg)
{
    be_conn_t *bc = arg;
    bool drop_next = false;
    while (be_serve_one(bc, &drop_next)) {
    }
    pthread_mutex_lock(&bc->b->mu);
    int fd = bc->b->conn_fds[bc->slot];
    bc->b->conn_fds[bc->slot] = -1;
    pthread_mutex_unlock(&bc->b->mu);
    close(fd);
    free(bc);
    return NULL;
}

static void lo_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    close(s);
}

/* The receive buffer of the next backend's connections (0: the kernel's). */
static int be_rcvbuf;

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (be_rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &be_rcvbuf, sizeof(be_rcvbuf));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0)
        abort();
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void *be_accept_main(void *arg)
{
    backend_t *b = arg;
    if (b->netns) {
        if (unshare(CLONE_NEWNET) < 0)
            abort();
        lo_up();
    }
    b->ns_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    b->lfd = listen_any(&b->port);
    sem_post(&b->ready);
    for (;;) {
        int fd = accept4(b->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            break;
        atomic_fetch_add(&b->accepts, 1);
        be_conn_t *bc = calloc(1, sizeof(*bc));
        bc->b = b;
        bc->r.fd = fd;
        pthread_mutex_lock(&b->mu);
        if (b->nconns == BE_MAX_CONNS) {
            pthread_mutex_unlock(&b->mu);
            close(fd);
            free(bc);
            continue;
        }
        bc->slot = b->nconns++;
        b->conn_fds[bc->slot] = fd;
        pthread_create(&b->conn_threads[bc->slot], NULL, be_conn_main, bc);
        pthread_mutex_unlock(&b->mu);
    }
    return NULL;
}

static backend_t *be_start(bool netns)
{
    backend_t *b = calloc(1, sizeof(*b));
    b->netns = netns;
    pthread_mutex_init(&b->mu, NULL);
    sem_init(&b->ready, 0, 0);
    pthread_create(&b->acc, NULL, be_accept_main, b);
    sem_wait(&b->ready);
    return b;
}

static void be_stop(backend_t *b)
{
    shutdown(b->lfd, SHUT_RDWR);
    pthread_join(b->acc, NULL);
    close(b->lfd);
    pthread_mutex_lock(&b->mu);
    int n = b->nconns;
    for (int i = 0; i < n; i++)
        if (b->conn_fds[i] >= 0)
            shutdown(b->conn_fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < n; i++)
        pthread_join(b->conn_threads[i], NULL);
    close(b->ns_fd);
    dyn_free(&b->last_head);
    dyn_free(&b->last_raw_body);
    sem_destroy(&b->ready);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

static void be_last_head(backend_t *b, char *out, size_t cap)
{
    pthread_mutex_lock(&b->mu);
    snprintf(out, cap, "%s", b->last_head.p ? b->last_head.p : "");
    pthread_mutex_unlock(&b->mu);
}

/* A port with nothing listening. */
static int dead_port(void)
{
    int port;
    int fd = listen_any(&port);
    close(fd);
    return port;
}

/* ---- harness: router on a loop thread ----------------------------------- */

/* M_INLINE_THEN_QUEUE: the first acquire answers through the waiter from inside
 * acquire (and returns SL_AGAIN); later ones queue as M_QUEUE. */
enum { M_OK, M_QUEUE, M_QUEUE_FOREVER, M_REJECT, M_QUEUE_REJECT, M_INLINE_THEN_QUEUE };

typedef struct target {
    const char *host;
    int port;  /* backend port */
    int ns_fd; /* -1: the test's own netns */
    int mode;
    uint64_t timeout_ms;
    uint32_t idle_ms, response_start_ms, pick_timeout_ms; /* the picks' limits */
    sl_upstream_pool_t *pool;
    sl_waiter_t *waiting;
    int status;         /* M_REJECT / M_QUEUE_REJECT: the owner's answer (503) */
    const char *reason; /* and its reason ("queue full") */
    int alt_port;       /* a second instance: every pick after the first goes there */
    sl_upstream_pool_t *alt_pool;
    int picks;
} target_t;

typedef struct harness {
    uv_loop_t loop;
    uv_async_t async;
    uv_timer_t qtimer;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void (*fn)(struct harness *, void *);
    void *arg;
    bool done;
    sl_router_t *r;
    int port;
    target_t targets[4];
    int ntargets;
    atomic_int acquires, releases, releases_failed, cancels, last_status;
    atomic_bool closed;
} harness_t;

static harness_t H;

static void *op_resolve(void *ctx, sl_str_t host)
{
    harness_t *h = ctx;
    for (int i = 0; i < h->ntargets; i++)
        if (sl_str_eq(host, sl_str_from(h->targets[i].host)))
            return &h->targets[i];
    return NULL;
}

static sl_pick_t t_pick(target_t *t)
{
    bool alt = t->alt_pool && t->picks++ > 0;
    return (sl_pick_t){.pool = alt ? t->alt_pool : t->pool,
                       .instance = t,
                       .timeout_ms = t->pick_timeout_ms,
                       .response_start_ms = t->response_start_ms,
                       .idle_ms = t->idle_ms};
}

static void qtimer_cb(uv_timer_t *t)
{
    harness_t *h = t->data;
    for (int i = 0; i < h->ntargets; i++) {
        target_t *tg = &h->targets[i];
        if (tg->waiting && (tg->mode == M_QUEUE || tg->mode == M_QUEUE_REJECT ||
                            tg->mode == M_INLINE_THEN_QUEUE)) {
            sl_waiter_t *w = tg->waiting;
            tg->waiting = NULL;
            sl_pick_t pick = t_pick(tg);
            if (tg->mode != M_QUEUE_REJECT)
                w->ready(w, 0, &pick, NULL);
            else
                w->ready(w, tg->status ? tg->status : 503, NULL, tg->reason);
        }
    }
}

static int op_acquire(void *ctx, void *target, sl_waiter_t *w, sl_pick_t *pick, const char **reason)
{
    harness_t *h = ctx;
    target_t *t = target;
    atomic_fetch_add(&h->acquires, 1);
    switch (t->mode) {
    case M_OK:
        *pick = t_pick(t);
        return SL_OK;
    case M_QUEUE:
    case M_QUEUE_REJECT:
        t->waiting = w;
        uv_timer_start(&h->qtimer, qtimer_cb, 100, 0);
        return SL_AGAIN;
    case M_QUEUE_FOREVER:
        t->waiting = w;
        return SL_AGAIN;
    case M_INLINE_THEN_QUEUE:
        if (t->picks == 0) {
            sl_pick_t p = t_pick(t);
            w->ready(w, 0, &p, NULL);
            return SL_AGAIN;
        }
        t->waiting = w;
        uv_timer_start(&h->qtimer, qtimer_cb, 100, 0);
        return SL_AGAIN;
    default:
        *reason = t->reason ? t->reason : "queue full";
        return t->status ? t->status : 503;
    }
}

static void op_cancel(void *ctx, void *target, sl_waiter_t *w)
{
    harness_t *h = ctx;
    target_t *t = target;
    atomic_fetch_add(&h->cancels, 1);
    if (t->waiting == w)
        t->waiting = NULL;
}

static void op_release(void *ctx, const sl_pick_t *pick, int status, bool failed)
{
    harness_t *h = ctx;
    atomic_store(&h->last_status, status);
    atomic_fetch_add(&h->releases, 1);
    if (failed)
        atomic_fetch_add(&h->releases_failed, 1);
}

static uint64_t op_timeout(void *ctx, void *target)
{
    return ((target_t *)target)->timeout_ms;
}

static const sl_router_ops_t OPS = {op_resolve, op_acquire, op_cancel, op_release, op_timeout};

static void async_cb(uv_async_t *a)
{
    harness_t *h = a->data;
    pthread_mutex_lock(&h->mu);
    if (h->fn && !h->done) {
        h->fn(h, h->arg);
        h->done = true;
        pthread_cond_broadcast(&h->cv);
    }
    pthread_mutex_unlock(&h->mu);
}

/* Run fn on the loop thread and wait for it. */
static void h_call(harness_t *h, void (*fn)(harness_t *, void *), void *arg)
{
    pthread_mutex_lock(&h->mu);
    h->fn = fn;
    h->arg = arg;
    h->done = false;
    uv_async_send(&h->async);
    while (!h->done)
        pthread_cond_wait(&h->cv, &h->mu);
    h->fn = NULL;
    pthread_mutex_unlock(&h->mu);
}

static void *loop_main(void *arg)
{
    harness_t *h = arg;
    uv_run(&h->loop, UV_RUN_DEFAULT);
    return NULL;
}

static target_t *h_target(const char *host, int port)
{
    target_t *t = &H.targets[H.ntargets++];
    memset(t, 0, sizeof(*t));
    t->host = host;
    t->port = port;
    t->ns_fd = -1;
    return t;
}

static void h_reset(void)
{
    memset(&H, 0, sizeof(H));
}

static void h_start(const sl_router_config_t *cfg_in)
{
    harness_t *h = &H;
    sl_router_config_t cfg = {.listen = "127.0.0.1:0"};
    if (cfg_in)
        cfg = *cfg_in;
    assert_int_equal(uv_loop_init(&h->loop), 0);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    uv_async_init(&h->loop, &h->async, async_cb);
    h->async.data = h;
    uv_timer_init(&h->loop, &h->qtimer);
    h->qtimer.data = h;
    sl_error_t err = {0};
    int rc = sl_router_new(&h->loop, &cfg, &OPS, h, &h->r, &err);
    if (rc < 0)
        fail_msg("sl_router_new: %s", err.msg);
    h->port = sl_router_port(h->r);
    assert_true(h->port > 0);
    for (int i = 0; i < h->ntargets; i++) {
        target_t *t = &h->targets[i];
        int fd = t->ns_fd >= 0 ? t->ns_fd : open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        t->pool = sl_upstream_pool_new(h->r, fd, t->port);
        assert_non_null(t->pool);
        if (t->alt_port)
            t->alt_pool = sl_upstream_pool_new(h->r, fd, t->alt_port);
        if (t->ns_fd < 0)
            close(fd);
    }
    pthread_create(&h->thread, NULL, loop_main, h);
}

static void on_router_closed(void *data)
{
    harness_t *h = data;
    atomic_store(&h->closed, true);
}

static void close_fn(harness_t *h, void *arg)
{
    sl_router_close(h->r, on_router_closed, h);
    uv_close((uv_handle_t *)&h->qtimer, NULL);
    uv_close((uv_handle_t *)&h->async, NULL);
}

static void h_stop(void)
{
    harness_t *h = &H;
    h_call(h, close_fn, NULL);
    pthread_join(h->thread, NULL);
    assert_true(atomic_load(&h->closed));
    assert_int_equal(uv_loop_close(&h->loop), 0);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
}

static void stats_fn(harness_t *h, void *arg)
{
    sl_router_stats(h->r, arg);
}

static sl_router_stats_t h_stats(void)
{
    sl_router_stats_t st;
    h_call(&H, stats_fn, &st);
    return st;
}

/* Poll cond on the test thread for up to ms. */
#define WAIT_FOR(cond, ms)                                                                         \
    do {                                                                                           \
        for (int _i = 0; _i < (ms) / 5 && !(cond); _i++)                                           \
            usleep(5000);                                                                          \
    } while (0)

/* ---- client helpers -------------------------------------------------------- */

static rdr_t *cl_open_af(int af)
{
    rdr_t *r = calloc(1, sizeof(*r));
    r->fd = socket(af, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (af == AF_INET6) {
        struct sockaddr_in6 s6 = {.sin6_family = AF_INET6,
                                  .sin6_port = htons((uint16_t)H.port),
                                  .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        assert_int_equal(connect(r->fd, (struct sockaddr *)&s6, sizeof(s6)), 0);
        return r;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)H.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(r->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return r;
}

static rdr_t *cl_open(void)
{
    return cl_open_af(AF_INET);
}

static void cl_close(rdr_t *r)
{
    close(r->fd);
    free(r);
}

static void cl_send(rdr_t *r, const char *s)
{
    be_write(r->fd, s, strlen(s));
}

/* POST path on app.test with an n-byte body, all of it sent (blocking). */
static void cl_post(rdr_t *r, const char *path, size_t n)
{
    char *req = malloc(n + 160);
    int hl = snprintf(req, 160, "POST %s HTTP/1.1\r\nHost: app.test\r\nContent-Length: %zu\r\n\r\n",
                      path, n);
    memset(req + hl, 'y', n);
    req[hl + n] = '\0';
    cl_send(r, req);
    free(req);
}

typedef struct resp {
    int status;
    char head[8192];
    dyn_t body;
    uint64_t sum;
} resp_t;

/* Read one response (HEAD: no body). Returns 0, or -1 at EOF/timeout. */
static int cl_resp(rdr_t *r, resp_t *out, bool head_req, bool count_only)
{
    memset(out, 0, sizeof(*out));
    for (;;) {
        ssize_t hl = rdr_head(r);
        if (hl < 0 || hl >= (ssize_t)sizeof(out->head))
            return -1;
        memcpy(out->head, r->buf, (size_t)hl);
        out->head[hl] = '\0';
        rdr_consume(r, (size_t)hl);
        sscanf(out->head, "HTTP/1.%*d %d", &out->status);
        if (out->status >= 200)
            break;
    }
    char v[64];
    dyn_t *d = count_only ? NULL : &out->body;
    if (head_req || out->status == 204 || out->status == 304)
        return 0;
    if (hdr_get(out->head, "Content-Length", v, sizeof(v)))
        return rdr_exact(r, strtoull(v, NULL, 10), d, &out->sum);
    if (hdr_get(out->head, "Transfer-Encoding", v, sizeof(v)))
        return rdr_chunked(r, d, NULL, &out->sum);
    for (;;) { /* until close */
        if (r->len == 0 && rdr_fill(r) <= 0)
            return 0;
        if (d)
            dyn_add(d, r->buf, r->len);
        r->len = 0;
    }
}

/* True when the router closed the connection (EOF or reset). */
static bool cl_closed(rdr_t *r)
{
    if (r->len)
        return false;
    ssize_t n = rdr_fill(r);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static void resp_free(resp_t *rp)
{
    dyn_free(&rp->body);
}

/* The next response on c: a 200 whose body is want. */
static void resp_ok(rdr_t *c, const char *want)
{
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 200);
    assert_string_equal(rp.body.p ? rp.body.p : "", want);
    resp_free(&rp);
}

static void get_ok(rdr_t *c, const char *host, const char *path, const char *want)
{
    char req[512];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host);
    cl_send(c, req);
    resp_ok(c, want);
}

/* ---- tests ------------------------------------------------------------------ */

static backend_t *setup_basic(const sl_router_config_t *cfg)
{
    h_reset();
    backend_t *b = be_start(false);
    h_target("app.test", b->port);
    h_start(cfg);
    return b;
}

static void teardown_basic(backend_t *b)
{
    h_stop();
    be_stop(b);
}

static void test_get_keepalive_reuses_upstream(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    get_ok(c, "app.test", "/hello", "hello");
    get_ok(c, "APP.test:8080", "/hello", "hello"); /* case and port ignored */
    cl_close(c);
    c = cl_open(); /* another client, same pooled upstream connection */
    get_ok(c, "app.test", "/hello", "hello");
    cl_close(c);
    assert_int_equal(atomic_load(&b->accepts), 1);
    sl_router_stats_t st = h_stats();
    assert_int_equal(st.requests_total, 3);
    assert_int_equal(st.upstream_conns_open, 1);
    WAIT_FOR(h_stats().connections_open == 0, 2000);
    assert_int_equal(h_stats().connections_open, 0);
    assert_int_equal(h_stats().requests_in_flight, 0);
    WAIT_FOR(atomic_load(&H.releases) == 3, 2000);
    assert_int_equal(atomic_load(&H.releases), 3);
    assert_int_equal(atomic_load(&H.releases_failed), 0);
    assert_int_equal(atomic_load(&H.last_status), 200); /* the instance's status is reported */
    teardown_basic(b);
}

static void test_post_content_length_streamed(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    cl_send(c, "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 30000\r\n\r\n");
    char part[10000];
    for (int i = 0; i < 3; i++) {
        memset(part, 'a' + i, sizeof(part));
        be_write(c->fd, part, sizeof(part));
        usleep(20000);
    }
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 200);
    assert_int_equal(rp.body.len, 30000);
    assert_int_equal(rp.body.p[0], 'a');
    assert_int_equal(rp.body.p[15000], 'b');
    assert_int_equal(rp.body.p[29999], 'c');
    resp_free(&rp);
    get_ok(c, "app.test", "/hello", "hello"); /* keep-alive after a body */
    cl_close(c);
    teardown_basic(b);
}

/* Checks that raw is chunked as the router frames it (lowercase hex sizes
 * without leading zeros, no extensions, nothing after the last chunk) and
 * appends its data to data. */
static bool chunked_is_plain(const char *raw, size_t len, dyn_t *data)
{
    size_t i = 0;
    for (;;) {
        size_t size = 0, digits = 0;
        while (i < len && ((raw[i] >= '0' && raw[i] <= '9') || (raw[i] >= 'a' && raw[i] <= 'f'))) {
            if (digits++ == 0 && raw[i] == '0' && i + 1 < len && raw[i + 1] != '\r')
                return false; /* a leading zero */
            size = size * 16 + (size_t)(raw[i] <= '9' ? raw[i] - '0' : raw[i] - 'a' + 10);
            i++;
        }
        if (digits == 0 || i + 2 > len || memcmp(raw + i, "\r\n", 2) != 0)
            return false;
        i += 2;
        if (size == 0)
            return i + 2 == len && memcmp(raw + i, "\r\n", 2) == 0;
        if (i + size + 2 > len || memcmp(raw + i + size, "\r\n", 2) != 0)
            return false;
        dyn_add(data, raw + i, size);
        i += size + 2;
    }
}

/* A chunked request reaches an HTTP/1.1 instance re-framed: its data in
 * plain chunks, without the client's extensions, leading zeros or
 * trailers, whether the body came with the head (and a pipelined request
 * after it) or later. */
static void test_chunked_request_is_reframed(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    static const char head[] =
        "POST /rawbody HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char body[] = "0005\r\nhello\r\n6;ext=1;q=\"a b\"\r\n world\r\n"
                               "0\r\nAuthorization: Bearer x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    static const char next[] = "GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n";
    for (int late = 0; late < 2; late++) {
        char req[512]; /* with the head, and a pipelined request after it */
        snprintf(req, sizeof(req), "%s%s%s", head, late ? "" : body, late ? "" : next);
        cl_send(c, req);
        if (late) {
            usleep(20000);
            cl_send(c, body);
        }
        resp_t rp;
        assert_int_equal(cl_resp(c, &rp, false, false), 0);
        assert_int_equal(rp.status, 200);
        dyn_t data = {0};
        dyn_add(&data, "", 0);
        assert_true(chunked_is_plain(rp.body.p, rp.body.len, &data));
        assert_int_equal(data.len, 11);
        assert_memory_equal(data.p, "hello world", 11);
        assert_null(strstr(rp.body.p, "Bearer"));
        free(data.p);
        resp_free(&rp);
        char h[8192], v[64];
        if (late) { /* (else the last head may be the pipelined request's) */
            be_last_head(b, h, sizeof(h));
            assert_true(hdr_get(h, "Transfer-Encoding", v, sizeof(v)));
            assert_string_equal(v, "chunked");
        } else {
            assert_int_equal(cl_resp(c, &rp, false, false), 0);
            assert_int_equal(rp.status, 200);
            assert_string_equal(rp.body.p, "hello");
            resp_free(&rp);
        }
    }
    /* One 200,000-byte chunk sent in pieces, and many one-byte chunks:
     * what the instance gets still decodes to the same bytes. */
    cl_send(c, head);
    cl_send(c, "30d40\r\n");
    static char piece[20000];
    for (int i = 0; i < 10; i++) {
        memset(piece, 'a' + i, sizeof(piece));
        be_write(c->fd, piece, sizeof(piece));
        usleep(2000);
    }
    cl_send(c, "\r\n");
    for (int i = 0; i < 300; i++)
        cl_send(c, "1\r\nz\r\n");
    cl_send(c, "0\r\n\r\n");
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 200);
    dyn_t data = {0};
    assert_true(chunked_is_plain(rp.body.p, rp.body.len, &data));
    assert_int_equal(data.len, 200300);
    for (size_t i = 0; i < 200000; i++)
        assert_int_equal(data.p[i], 'a' + (int)(i / sizeof(piece)));
    for (size_t i = 200000; i < data.len; i++)
        assert_int_equal(data.p[i], 'z');
    free(data.p);
    resp_free(&rp);
    get_ok(c, "app.test", "/hello", "hello");
    cl_close(c);
    teardown_basic(b);
}

static void test_chunked_response_and_head(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    cl_send(c, "GET /chunked HTTP/1.1\r\nHost: app.test\r\n\r\n");
    resp_t rp;
    char v[64];
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 200);
    assert_true(hdr_get(rp.head, "Transfer-Encoding", v, sizeof(v)));
    assert_string_equal(rp.body.p, "Wikipedia");
    resp_free(&rp);
    cl_send(c, "HEAD /hello HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_int_equal(cl_resp(c, &rp, true, false), 0);
    assert_int_equal(rp.status, 200);
    assert_true(hdr_get(rp.head, "Content-Length", v, sizeof(v)));
    assert_string_equal(v, "5");
    resp_free(&rp);
    get_ok(c, "app.test", "/hello", "hello"); /* no stray body after HEAD */
    cl_close(c);
    /* HTTP/1.0 client: chunked is decoded and the connection closes. */
    c = cl_open();
    cl_send(c, "GET /chunked HTTP/1.0\r\nHost: app.test\r\n\r\n");
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_false(hdr_get(rp.head, "Transfer-Encoding", v, sizeof(v)));
    assert_string_equal(rp.body.p, "Wikipedia");
    resp_free(&rp);
    cl_close(c);
    teardown_basic(b);
}

static void test_response_until_close(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    cl_send(c, "GET /close HTTP/1.1\r\nHost: app.test\r\n\r\n");
    resp_t rp;
    char v[64];
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 200);
    assert_true(hdr_get(rp.head, "Transfer-Encoding", v, sizeof(v))); /* re-chunked */
    assert_string_equal(rp.body.p, "until close body");
    resp_free(&rp);
    get_ok(c, "app.test", "/hello", "hello"); /* client connection survives */
    cl_close(c);
    c = cl_open();
    cl_send(c, "GET /close HTTP/1.0\r\nHost: app.test\r\n\r\n");
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_string_equal(rp.body.p, "until close body");
    resp_free(&rp);
    cl_close(c);
    WAIT_FOR(atomic_load(&H.releases) == 3, 2000);
    assert_int_equal(atomic_load(&H.releases_failed), 0);
    teardown_basic(b);
}

static void test_unknown_host_and_bad_requests(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    resp_t rp;
    cl_send(c, "GET / HTTP/1.1\r\nHost: nope.test\r\n\r\n");
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 404);
    assert_string_equal(rp.body.p, "no service for host nope.test\n");
    resp_free(&rp);
    get_ok(c, "app.test", "/hello", "hello"); /* a 404 keeps the connection */
    cl_close(c);

    c = cl_open(); /* request smuggling attempt: CL + TE */
    cl_send(
        c,
        "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 400);
    assert_true(strstr(rp.head, "Connection: close") != NULL);
    resp_free(&rp);
    assert_true(cl_closed(c));
    cl_close(c);

    c = cl_open(); /* no Host */
    cl_send(c, "GET / HTTP/1.1\r\n\r\n");
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 400);
    resp_free(&rp);
    cl_close(c);
    assert_int_equal(atomic_load(&b->accepts), 1);
    assert_int_equal(atomic_load(&H.acquires), 1);
    teardown_basic(b);
}

static void test_forwarding_headers(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    cl_send(c, "GET /headers HTTP/1.1\r\nHost: app.test:9000\r\n"
               "Connection: keep-alive, X-Secret\r\nX-Secret: s3cr3t\r\nKeep-Alive: timeout=5\r\n"
               "X-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\n"
               "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nX-Keep: yes\r\n"
               "TE: trailers\r\nUpgrade: websocket\r\n\r\n");
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 200);
    const char *h = rp.body.p;
    char v[256];
    assert_non_null(strstr(h, "GET /headers HTTP/1.1\r\n"));
    assert_true(hdr_get(h, "Host", v, sizeof(v)));
    assert_string_equal(v, "app.test:9000");
    assert_true(hdr_get(h, "X-Keep", v, sizeof(v)));
    assert_false(hdr_get(h, "X-Secret", v, sizeof(v)));
    assert_false(hdr_get(h, "Keep-Alive", v, sizeof(v)));
    assert_false(hdr_get(h, "Connection", v, sizeof(v)));
    assert_false(hdr_get(h, "TE", v, sizeof(v)));
    assert_false(hdr_get(h, "Upgrade", v, sizeof(v)));
    assert_true(hdr_get(h, "X-Forwarded-For", v, sizeof(v)));
    assert_string_equal(v, "10.0.0.1, 127.0.0.1");
    assert_true(hdr_get(h, "Forwarded", v, sizeof(v)));
    assert_string_equal(v, "for=10.0.0.1, for=127.0.0.1;host=\"app.test:9000\";proto=http");
    assert_int_equal(count_header(h, "X-Forwarded-Proto"), 1);
    assert_true(hdr_get(h, "X-Forwarded-Proto", v, sizeof(v)));
    assert_string_equal(v, "http");
    assert_int_equal(count_header(h, "X-Forwarded-Host"), 1);
    assert_true(hdr_get(h, "X-Forwarded-Host", v, sizeof(v)));
    assert_string_equal(v, "app.test:9000");
    /* and hop-by-hop fields of the response are not passed back */
    assert_true(hdr_get(rp.head, "X-Backend", v, sizeof(v)));
    resp_free(&rp);
    /* absolute-form target becomes origin-form with Host from the URI */
    cl_send(c, "GET http://app.test/headers?q=1 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    if (rp.status != 200)
        fail_msg("absolute-form: %s%s", rp.head, rp.body.p);
    assert_non_null(strstr(rp.body.p, "GET /headers?q=1 HTTP/1.1\r\n"));
    assert_int_equal(count_header(rp.body.p, "Host"), 1);
    resp_free(&rp);
    cl_close(c);
    teardown_basic(b);
}

static void test_backend_closes_mid_response(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    cl_send(c, "GET /partial HTTP/1.1\r\nHost: app.test\r\n\r\n");
    ssize_t hl = rdr_head(c);
    assert_true(hl > 0);
    assert_int_equal(strncmp(c->buf, "HTTP/1.1 200", 12), 0);
    rdr_consume(c, (size_t)hl);
    dyn_t body = {0};
    assert_int_equal(rdr_exact(c, 1000, &body, NULL), -1); /* truncated, then closed */
    assert_true(body.len < 1000);
    dyn_free(&body);
    cl_close(c);
    WAIT_FOR(atomic_load(&H.releases_failed) == 1, 2000);
    assert_int_equal(atomic_load(&H.releases_failed), 1);
    c = cl_open(); /* the router is fine */
    get_ok(c, "app.test", "/hello", "hello");
    cl_close(c);
    teardown_basic(b);
}

/* Where the client could not tell a cut body from a whole one by a close
 * (an HTTP/1.0 client of a chunked response; a body read until close), a
 * failed instance makes the router reset the connection. */
static void test_cut_body_resets_the_client(void **state)
{
    backend_t *b = setup_basic(NULL);
    H.targets[0].idle_ms = 200; /* the instance's silence cuts /chunkstall */
    const char *reqs[] = {"GET /chunkcut HTTP/1.0\r\nHost: app.test\r\n\r\n",
                          "GET /rstclose HTTP/1.0\r\nHost: app.test\r\n\r\n",
                          "GET /chunkstall HTTP/1.0\r\nHost: app.test\r\n\r\n"};
    for (size_t i = 0; i < SL_ARRAY_LEN(reqs); i++) {
        rdr_t *c = cl_open();
        cl_send(c, reqs[i]);
        ssize_t n;
        while ((n = rdr_fill(c)) > 0) {
        }
        assert_true(n < 0);
        assert_int_equal(errno, ECONNRESET);
        assert_non_null(memmem(c->buf, c->len, "HTTP/1.1 200", 12));
        cl_close(c);
    }
    rdr_t *c = cl_open(); /* the router is fine */
    get_ok(c, "app.test", "/hello", "hello");
    cl_close(c);
    teardown_basic(b);
}

static void test_refused_is_502(void **state)
{
    h_reset();
    h_target("down.test", dead_port());
    h_start(NULL);
    rdr_t *c = cl_open();
    cl_send(c, "GET / HTTP/1.1\r\nHost: down.test\r\n\r\n");
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 502);
    assert_string_equal(rp.body.p, "instance failed: connect: connection refused\n");
    resp_free(&rp);
    cl_close(c);
    /* never sent, so asked of the owner twice more before the 502 */
    assert_int_equal(atomic_load(&H.acquires), 3);
    assert_int_equal(atomic_load(&H.releases_failed), 3);
    h_stop();
}

static void test_owner_status_retry_after(void **state)
{
    h_reset();
    h_target("full.test", dead_port())->mode = M_REJECT; /* 503 "queue full" at once */
    target_t *t = h_target("max.test", dead_port());
    t->mode = M_QUEUE_REJECT; /* 429 later, through w->ready */
    t->status = 429;
    t->reason = "over max scale";
    t = h_target("failed.test", dead_port());
    t->mode = M_REJECT;
    t->status = 502;
    t->reason = "revision failed";
    h_start(NULL);
    rdr_t *c = cl_open();
    const char *hosts[] = {"full.test", "max.test", "failed.test", "nope.test"};
    const int codes[] = {503, 429, 502, 404};
    const char *bodies[] = {"queue full\n", "over max scale\n", "revision failed\n",
                            "no service for host nope.test\n"};
    for (int i = 0; i < 4; i++) {
        char req[128], v[32];
        snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", hosts[i]);
        cl_send(c, req);
        resp_t rp;
        assert_int_equal(cl_resp(c, &rp, false, false), 0);
        assert_int_equal(rp.status, codes[i]);
        assert_string_equal(rp.body.p, bodies[i]);
        bool later = codes[i] == 429 || codes[i] == 503;
        assert_int_equal(hdr_get(rp.head, "Retry-After", v, sizeof(v)), later);
        if (later)
            assert_string_equal(v, "1");
        resp_free(&rp);
    }
    cl_close(c);
    assert_int_equal(atomic_load(&H.releases), 0);
    h_stop();
}

static void test_never_sent_is_rerouted(void **state)
{
    h_reset();
    backend_t *b = be_start(false);
    target_t *t = h_target("two.test", dead_port()); /* first instance refuses */
    t->alt_port = b->port;
    t = h_target("q.test", dead_port()); /* same, the second pick queued */
    t->alt_port = b->port;
    t->mode = M_QUEUE;
    t = h_target("body.test", dead_port());
    t->alt_port = b->port;
    h_start(NULL);
    rdr_t *c = cl_open();
    cl_send(c, "POST /echo HTTP/1.1\r\nHost: two.test\r\nContent-Length: 5\r\n\r\nhello");
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 200);
    assert_string_equal(rp.body.p, "hello"); /* the buffered body was replayed */
    resp_free(&rp);
    assert_int_equal(atomic_load(&H.acquires), 2);
    WAIT_FOR(atomic_load(&H.releases) == 2, 2000);
    assert_int_equal(atomic_load(&H.releases), 2);
    assert_int_equal(atomic_load(&H.releases_failed), 1);
    get_ok(c, "q.test", "/hello", "hello");
    assert_int_equal(atomic_load(&H.acquires), 4);
    WAIT_FOR(atomic_load(&H.releases) == 4, 2000);
    assert_int_equal(atomic_load(&H.releases_failed), 2);
    assert_int_equal(atomic_load(&H.cancels), 0);
    /* A body still on its way cannot be replayed: 502, no second pick. */
    cl_send(c, "POST /echo HTTP/1.1\r\nHost: body.test\r\nContent-Length: 10\r\n\r\n");
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 502);
    resp_free(&rp);
    assert_int_equal(atomic_load(&H.acquires), 5);
    assert_true(cl_closed(c));
    cl_close(c);
    assert_int_equal(atomic_load(&b->accepts), 2);
    h_stop();
    be_stop(b);
}

/* The owner answers the first acquire from inside it (a refused instance),
 * and the request is routed again: the second acquire queues, and the
 * request waits for that answer instead of taking the first one again. */
/* The router's connection to the backend listening on port (the harness
 * runs the router in this process): -1 if it has none. */
static int router_upstream_fd(int port)
{
    for (int fd = 3; fd < 1024; fd++) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof(sa);
        if (getpeername(fd, (struct sockaddr *)&sa, &sl) == 0 && sa.sin_family == AF_INET &&
            ntohs(sa.sin_port) == port)
            return fd;
    }
    return -1;
}

/* The basic set-up with small kernel buffers on both sides of the router's
 * pooled connection to the backend (after one request on *c): most of a
 * body the backend is not reading stays queued in the router. */
static backend_t *setup_small_buffers(rdr_t **c)
{
    be_rcvbuf = 4096;
    backend_t *b = setup_basic(NULL);
    be_rcvbuf = 0;
    *c = cl_open();
    get_ok(*c, "app.test", "/hello", "hello");
    int ufd = router_upstream_fd(b->port), small = 4096;
    assert_true(ufd >= 0);
    assert_int_equal(setsockopt(ufd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    return b;
}

/* An instance that answers before it has read all of the request: what is
 * still queued to it must not go out ahead of the next request, so the
 * connection is closed, not pooled. */
static void test_early_answer_is_not_pooled(void **state)
{
    rdr_t *c;
    backend_t *b = setup_small_buffers(&c);
    cl_post(c, "/early", 192 * 1024);
    resp_ok(c, "early");
    get_ok(c, "app.test", "/hello", "hello");
    assert_int_equal(atomic_load(&b->accepts), 2);
    cl_close(c);
    teardown_basic(b);
}

static void test_inline_answer_is_not_reused(void **state)
{
    h_reset();
    backend_t *b = be_start(false);
    target_t *t = h_target("inline.test", dead_port());
    t->alt_port = b->port;
    t->mode = M_INLINE_THEN_QUEUE;
    h_start(NULL);
    rdr_t *c = cl_open();
    get_ok(c, "inline.test", "/hello", "hello");
    assert_int_equal(atomic_load(&H.acquires), 2);
    WAIT_FOR(atomic_load(&H.releases) == 2, 2000);
    assert_int_equal(atomic_load(&H.releases_failed), 1);
    cl_close(c);
    h_stop();
    be_stop(b);
}

/* Send req on c: a 504 answers it, at least lo_ms later (and within 3 s),
 * its body holding needle unless that is NULL. */
static void expect_504(rdr_t *c, const char *req, const char *needle, uint64_t lo_ms)
{
    uint64_t t0 = sl_now_ms();
    cl_send(c, req);
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    uint64_t el = sl_now_ms() - t0;
    assert_int_equal(rp.status, 504);
    if (needle) {
        assert_non_null(rp.body.p);
        assert_non_null(memmem(rp.body.p, rp.body.len, needle, strlen(needle)));
    }
    assert_true(el >= lo_ms && el < 3000);
    resp_free(&rp);
}

static void test_timeout_is_504(void **state)
{
    h_reset();
    backend_t *b = be_start(false);
    target_t *t = h_target("slow.test", b->port);
    t->timeout_ms = 200;
    h_start(NULL);
    rdr_t *c = cl_open();
    expect_504(c, "GET /hang HTTP/1.1\r\nHost: slow.test\r\n\r\n", NULL, 150);
    cl_close(c);
    WAIT_FOR(h_stats().upstream_conns_open == 0, 2000);
    assert_int_equal(h_stats().upstream_conns_open, 0); /* abandoned, not pooled */
    assert_int_equal(atomic_load(&H.releases), 1);
    assert_int_equal(atomic_load(&H.releases_failed), 0);
    h_stop();
    be_stop(b);
}

/* pick.idle_ms (Knative's idleTimeoutSeconds): an instance silent that
 * long gets a 504 before its head and its response cut after; one that
 * pauses for less is waited for. */
static void test_instance_silence_is_cut(void **state)
{
    h_reset();
    backend_t *b = be_start(false);
    target_t *t = h_target("quiet.test", b->port);
    t->idle_ms = 200;
    t->timeout_ms = 60000;
    h_start(NULL);
    rdr_t *c = cl_open();
    expect_504(c, "GET /hang HTTP/1.1\r\nHost: quiet.test\r\n\r\n", "idleTimeoutSeconds", 150);
    /* /slow is silent for 300 ms before its head: a 504 too */
    expect_504(c, "GET /slow HTTP/1.1\r\nHost: quiet.test\r\n\r\n", NULL, 0);
    cl_close(c);
    t->idle_ms = 500;
    c = cl_open();
    cl_send(c, "GET /slow HTTP/1.1\r\nHost: quiet.test\r\n\r\n");
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 200);
    assert_int_equal(rp.body.len, 4);
    assert_memory_equal(rp.body.p, "slow", 4);
    resp_free(&rp);
    uint64_t t0 = sl_now_ms();
    cl_send(c, "GET /stall HTTP/1.1\r\nHost: quiet.test\r\n\r\n");
    assert_int_not_equal(cl_resp(c, &rp, false, false), 0); /* cut mid-body */
    uint64_t el = sl_now_ms() - t0;
    assert_true(el >= 400 && el < 3000);
    resp_free(&rp);
    cl_close(c);
    WAIT_FOR(h_stats().upstream_conns_open == 0, 2000);
    assert_int_equal(h_stats().upstream_conns_open, 0); /* abandoned, not pooled */
    assert_int_equal(atomic_load(&H.releases), 4);
    h_stop();
    be_stop(b);
}

/* pick.response_start_ms (Knative's responseStartTimeoutSeconds) counts
 * from the request's delivery to the instance: a request queued for longer
 * is still served; one the instance does not answer in time is a 504. */
static void test_response_start_counts_from_delivery(void **state)
{
    h_reset();
    backend_t *b = be_start(false);
    target_t *t = h_target("late.test", b->port);
    t->response_start_ms = 50;
    t->timeout_ms = 60000;
    t->mode = M_QUEUE; /* each request queued for 100 ms (qtimer) */
    h_start(NULL);
    rdr_t *c = cl_open();
    cl_send(c, "GET /chunked HTTP/1.1\r\nHost: late.test\r\n\r\n");
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 200); /* 100 ms queued, answered at once */
    resp_free(&rp);
    cl_send(c, "GET /slow HTTP/1.1\r\nHost: late.test\r\n\r\n"); /* 300 ms: too late */
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 504);
    assert_non_null(rp.body.p);
    assert_non_null(memmem(rp.body.p, rp.body.len, "responseStartTimeoutSeconds", 27));
    resp_free(&rp);
    cl_close(c);
    h_stop();
    be_stop(b);
}

/* A slow reader holds back the instance's bytes (back-pressure): that is
 * not the instance's silence, and the router does not spin meanwhile. */
static void test_backpressure_is_not_silence(void **state)
{
    sl_router_config_t cfg = {.listen = "127.0.0.1:0", .idle_timeout_ms = 5000};
    backend_t *b = setup_basic(&cfg);
    H.targets[0].idle_ms = 150;
    rdr_t *c = cl_open();
    /* more than the socket buffers hold: the router pauses the upstream */
    cl_send(c, "GET /big?n=67108864 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    usleep(600000); /* 4 x idle_ms without reading */
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    usleep(300000);
    getrusage(RUSAGE_SELF, &r1);
    double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) +
                 (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
                 (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
                 (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    assert_true(cpu < 0.15); /* a spinning loop would burn the whole 0.3 s */
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, true), 0); /* all 64 MiB, not cut */
    assert_int_equal(rp.status, 200);
    resp_free(&rp);
    cl_close(c);
    teardown_basic(b);
}

/* A client whose upload the router holds back, because the instance does
 * not read it yet, is not the one stalling: no 408 for it. */
static void test_held_back_body_is_not_stalled(void **state)
{
    sl_router_config_t cfg = {.listen = "127.0.0.1:0", .body_timeout_ms = 300};
    be_rcvbuf = 4096;
    backend_t *b = setup_basic(&cfg);
    be_rcvbuf = 0;
    rdr_t *c = cl_open();
    size_t n = 8u << 20;
    cl_post(c, "/slowsink", n); /* held back for 800 ms: more than the socket buffers hold */
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 200);
    char want[32];
    snprintf(want, sizeof(want), "%zu ", n); /* all of it reached the instance */
    assert_int_equal(strncmp(rp.body.p, want, strlen(want)), 0);
    resp_free(&rp);
    cl_close(c);
    teardown_basic(b);
}

/* A client that trickles its upload a byte at a time while the instance
 * is not reading gets its bytes gathered into a few writes, not one queued
 * write per read; all of them still arrive. */
static void test_trickled_body_is_gathered(void **state)
{
    rdr_t *c;
    backend_t *b = setup_small_buffers(&c);
    int one = 1;
    assert_int_equal(setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
    size_t prefix = 96 * 1024, trickle = 1500;
    char head[160];
    snprintf(head, sizeof(head),
             "POST /slowsink HTTP/1.1\r\nHost: app.test\r\nContent-Length: %zu\r\n\r\n",
             prefix + trickle);
    cl_send(c, head);
    char *pre = malloc(prefix);
    memset(pre, 'p', prefix);
    be_write(c->fd, pre, prefix); /* most of it stays queued in the router */
    free(pre);
    for (size_t i = 0; i < trickle; i++) {
        be_write(c->fd, "t", 1);
        usleep(50);
    }
    uint64_t pending = h_stats().writes_pending; /* the instance reads nothing yet */
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 200);
    char want[32];
    snprintf(want, sizeof(want), "%zu ", prefix + trickle);
    assert_int_equal(strncmp(rp.body.p, want, strlen(want)), 0);
    resp_free(&rp);
    assert_true(pending < 64);
    get_ok(c, "app.test", "/hello", "hello");
    cl_close(c);
    teardown_basic(b);
}

/* Once the response head is out, the client's timers stay those of the
 * response, even when back-pressure on the upload ends: the instance's
 * silence afterwards still cuts it (idleTimeoutSeconds). */
static void test_silence_after_a_held_back_upload_is_cut(void **state)
{
    be_rcvbuf = 4096;
    backend_t *b = setup_basic(NULL);
    be_rcvbuf = 0;
    H.targets[0].idle_ms = 600;
    rdr_t *c = cl_open();
    uint64_t t0 = sl_now_ms();
    cl_post(c, "/headfirst", 32u << 20);
    resp_t rp;
    assert_int_not_equal(cl_resp(c, &rp, false, false), 0); /* 10 of 1000 bytes, then cut */
    assert_true(sl_now_ms() - t0 < 4000);
    resp_free(&rp);
    cl_close(c);
    teardown_basic(b);
}

/* The serving revision's timeout (the pick's) replaces the route's guess,
 * counted from the request's arrival. */
static void test_pick_timeout_replaces_the_routes(void **state)
{
    h_reset();
    backend_t *b = be_start(false);
    target_t *t = h_target("slow.test", b->port);
    t->timeout_ms = 60000;
    t->pick_timeout_ms = 200;
    h_start(NULL);
    rdr_t *c = cl_open();
    expect_504(c, "GET /hang HTTP/1.1\r\nHost: slow.test\r\n\r\n", "within 200 ms", 150);
    cl_close(c);
    h_stop();
    be_stop(b);
}

/* A request that waited past its serving revision's timeout for an
 * instance is answered 504 and never sent to it. */
static void test_past_its_deadline_is_not_sent(void **state)
{
    h_reset();
    backend_t *b = be_start(false);
    target_t *t = h_target("late.test", b->port);
    t->timeout_ms = 60000;
    t->pick_timeout_ms = 50;
    t->mode = M_QUEUE; /* queued for 100 ms */
    h_start(NULL);
    rdr_t *c = cl_open();
    cl_send(c, "GET /hello HTTP/1.1\r\nHost: late.test\r\n\r\n");
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 504);
    assert_non_null(memmem(rp.body.p, rp.body.len, "no instance became available", 28));
    resp_free(&rp);
    cl_close(c);
    WAIT_FOR(atomic_load(&H.releases) == 1, 2000);
    assert_int_equal(atomic_load(&H.releases), 1);
    assert_int_equal(atomic_load(&H.releases_failed), 0);
    assert_int_equal(atomic_load(&b->accepts), 0); /* never connected, never sent */
    h_stop();
    be_stop(b);
}

static void test_queued_request_is_served(void **state)
{
    h_reset();
    backend_t *b = be_start(false);
    h_target("q.test", b->port)->mode = M_QUEUE;
    h_start(NULL);
    rdr_t *c = cl_open();
    uint64_t t0 = sl_now_ms();
    get_ok(c, "q.test", "/hello", "hello");
    assert_true(sl_now_ms() - t0 >= 90);
    cl_close(c);
    assert_int_equal(atomic_load(&H.cancels), 0);
    WAIT_FOR(atomic_load(&H.releases) == 1, 2000);
    assert_int_equal(atomic_load(&H.releases), 1);
    h_stop();
    be_stop(b);
}

static void test_client_leaves_while_queued(void **state)
{
    h_reset();
    backend_t *b = be_start(false);
    target_t *t = h_target("q.test", b->port);
    t->mode = M_QUEUE_FOREVER;
    h_start(NULL);
    rdr_t *c = cl_open();
    cl_send(c, "GET /hello HTTP/1.1\r\nHost: q.test\r\n\r\n");
    WAIT_FOR(atomic_load(&H.acquires) == 1, 2000);
    assert_int_equal(atomic_load(&H.acquires), 1);
    cl_close(c);
    WAIT_FOR(atomic_load(&H.cancels) == 1, 2000);
    assert_int_equal(atomic_load(&H.cancels), 1);
    assert_int_equal(atomic_load(&H.releases), 0);
    assert_int_equal(atomic_load(&b->accepts), 0);
    /* and a request still queued when the router closes is cancelled too */
    c = cl_open();
    cl_send(c, "GET /hello HTTP/1.1\r\nHost: q.test\r\n\r\n");
    WAIT_FOR(atomic_load(&H.acquires) == 2, 2000);
    h_stop();
    assert_int_equal(atomic_load(&H.cancels), 2);
    cl_close(c);
    be_stop(b);
}

static void test_pipelined_in_order(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    cl_send(c, "GET /say?one HTTP/1.1\r\nHost: app.test\r\n\r\n"
               "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\ntwo"
               "GET /nope HTTP/1.1\r\nHost: nope.test\r\n\r\n"
               "GET /say?four HTTP/1.1\r\nHost: app.test\r\n\r\n");
    const char *want[] = {"one", "two", "no service for host nope.test\n", "four"};
    const int codes[] = {200, 200, 404, 200};
    for (int i = 0; i < 4; i++) {
        resp_t rp;
        assert_int_equal(cl_resp(c, &rp, false, false), 0);
        assert_int_equal(rp.status, codes[i]);
        assert_string_equal(rp.body.p, want[i]);
        resp_free(&rp);
    }
    cl_close(c);
    teardown_basic(b);
}

static void test_large_bodies_both_ways(void **state)
{
    backend_t *b = setup_basic(NULL);
    const uint64_t n = 8u << 20;
    rdr_t *c = cl_open();
    char head[128];
    snprintf(head, sizeof(head),
             "POST /sink HTTP/1.1\r\nHost: app.test\r\nContent-Length: %llu\r\n\r\n",
             (unsigned long long)n);
    cl_send(c, head);
    static char chunk[65536];
    uint64_t sum = 0;
    for (uint64_t off = 0; off < n; off += sizeof(chunk)) {
        for (size_t i = 0; i < sizeof(chunk); i++) {
            chunk[i] = (char)('A' + (off + i) % 23);
            sum = sum * 31 + (unsigned char)chunk[i];
        }
        be_write(c->fd, chunk, sizeof(chunk));
    }
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    char want[64];
    snprintf(want, sizeof(want), "%llu %llu", (unsigned long long)n, (unsigned long long)sum);
    assert_string_equal(rp.body.p, want);
    resp_free(&rp);

    snprintf(head, sizeof(head), "GET /big?n=%llu HTTP/1.1\r\nHost: app.test\r\n\r\n",
             (unsigned long long)n);
    cl_send(c, head);
    usleep(200000); /* let back-pressure kick in while we do not read */
    assert_int_equal(cl_resp(c, &rp, false, true), 0);
    uint64_t s2 = 0;
    for (uint64_t i = 0; i < n; i++)
        s2 = s2 * 31 + (unsigned char)('a' + i % 26);
    assert_true(rp.sum == s2);
    resp_free(&rp);
    get_ok(c, "app.test", "/hello", "hello");
    cl_close(c);
    teardown_basic(b);
}

static void test_instance_in_own_netns(void **state)
{
    h_reset();
    backend_t *b = be_start(true);
    /* Nothing listens on that port in our namespace... */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)b->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), -1);
    assert_int_equal(errno, ECONNREFUSED);
    close(fd);
    target_t *t = h_target("ns.test", b->port);
    t->ns_fd = b->ns_fd;
    h_start(NULL);
    rdr_t *c = cl_open(); /* ...but the router reaches it inside its own */
    get_ok(c, "ns.test", "/hello", "hello");
    get_ok(c, "ns.test", "/say?again", "again");
    cl_close(c);
    assert_int_equal(atomic_load(&b->accepts), 1);
    /* and the router's own sockets are still in our namespace */
    c = cl_open();
    cl_close(c);
    h_stop();
    be_stop(b);
}

static void test_stale_pooled_conn_is_retried(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    get_ok(c, "app.test", "/oneshot", "oneshot");
    get_ok(c, "app.test", "/hello", "hello"); /* first try hits the dropped conn */
    cl_close(c);
    assert_int_equal(atomic_load(&b->accepts), 2);
    WAIT_FOR(atomic_load(&H.releases) == 2, 2000);
    assert_int_equal(atomic_load(&H.releases_failed), 0);
    teardown_basic(b);
}

/* The same failure under a POST, even one without a body, is a 502: the
 * instance may have read it and acted before it went (RFC 9112 §9.3.1). */
static void test_post_on_a_failed_pooled_conn_is_not_retried(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    get_ok(c, "app.test", "/oneshot", "oneshot");
    cl_send(c, "POST /charge HTTP/1.1\r\nHost: app.test\r\n\r\n");
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 502);
    resp_free(&rp);
    cl_close(c);
    assert_int_equal(atomic_load(&b->accepts), 1);
    teardown_basic(b);
}

/* Interim responses are relayed, up to 256 KiB of them per exchange: an
 * instance sending them without end to a client that does not read would
 * make the router hold each one. Past that, 502. */
static void test_interim_responses_bounded(void **state)
{
    backend_t *b = setup_basic(NULL);
    const long ns[] = {2, 200};
    for (size_t k = 0; k < SL_ARRAY_LEN(ns); k++) {
        rdr_t *c = cl_open();
        char req[128];
        snprintf(req, sizeof(req), "GET /hints?n=%ld HTTP/1.1\r\nHost: app.test\r\n\r\n", ns[k]);
        cl_send(c, req);
        long hints = 0;
        ssize_t hl;
        while ((hl = rdr_head(c)) > 0 && strncmp(c->buf, "HTTP/1.1 103 ", 13) == 0) {
            hints++;
            rdr_consume(c, (size_t)hl);
        }
        assert_true(hl > 0);
        resp_t rp;
        assert_int_equal(cl_resp(c, &rp, false, false), 0);
        if (k == 0) {
            assert_int_equal(hints, 2);
            assert_int_equal(rp.status, 200);
            assert_string_equal(rp.body.p, "hinted");
        } else {
            assert_true(hints > 0 && hints <= (256 << 10) / 3072);
            assert_int_equal(rp.status, 502);
        }
        resp_free(&rp);
        cl_close(c);
    }
    teardown_basic(b);
}

static void test_expect_continue_relayed(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    cl_send(c, "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n"
               "Expect: 100-continue\r\n\r\n");
    ssize_t hl = rdr_head(c);
    assert_true(hl > 0);
    assert_int_equal(strncmp(c->buf, "HTTP/1.1 100 Continue\r\n", 23), 0);
    rdr_consume(c, (size_t)hl);
    cl_send(c, "ahoy!");
    resp_ok(c, "ahoy!");
    cl_close(c);
    teardown_basic(b);
}

static void test_limits(void **state)
{
    sl_router_config_t cfg = {
        .listen = "127.0.0.1:0", .max_body_bytes = 1000, .max_connections = 2};
    backend_t *b = setup_basic(&cfg);
    rdr_t *c = cl_open();
    resp_t rp;
    cl_send(c, "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2000\r\n\r\n");
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 413);
    resp_free(&rp);
    cl_close(c);
    WAIT_FOR(h_stats().connections_open == 0, 2000);

    c = cl_open(); /* chunked body over the limit */
    cl_send(c, "POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    char big[2055];
    memset(big, 'x', sizeof(big));
    memcpy(big, "800\r\n", 5);
    memcpy(big + 2053, "\r\n", 2);
    be_write(c->fd, big, sizeof(big));
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 413);
    resp_free(&rp);
    cl_close(c);
    WAIT_FOR(h_stats().connections_open == 0, 2000);

    rdr_t *c1 = cl_open(), *c2 = cl_open();
    WAIT_FOR(h_stats().connections_open == 2, 2000);
    rdr_t *c3 = cl_open();
    assert_int_equal(cl_resp(c3, &rp, false, false), 0);
    assert_int_equal(rp.status, 503);
    assert_string_equal(rp.body.p, "too many connections\n");
    resp_free(&rp);
    get_ok(c1, "app.test", "/hello", "hello");
    cl_close(c3);
    cl_close(c2);
    cl_close(c1);
    teardown_basic(b);
}

static void test_timeouts_close_idle_connections(void **state)
{
    sl_router_config_t cfg = {.listen = "127.0.0.1:0",
                              .header_timeout_ms = 150,
                              .idle_timeout_ms = 150,
                              .upstream_idle_ms = 100};
    backend_t *b = setup_basic(&cfg);
    rdr_t *c = cl_open();
    cl_send(c, "GET / HTTP/1.1\r\nHost: app"); /* never finished */
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 408);
    resp_free(&rp);
    cl_close(c);
    c = cl_open();
    get_ok(c, "app.test", "/hello", "hello");
    assert_true(cl_closed(c)); /* idle keep-alive connection closed */
    cl_close(c);
    WAIT_FOR(h_stats().upstream_conns_open == 0, 2000);
    assert_int_equal(h_stats().upstream_conns_open, 0); /* idle pooled conn reaped */
    teardown_basic(b);
}

static void test_bad_response_is_502(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    resp_t rp;
    cl_send(c, "GET /garbage HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 502);
    assert_non_null(strstr(rp.body.p, "instance failed: bad response"));
    resp_free(&rp);
    get_ok(c, "app.test", "/hello", "hello");
    cl_close(c);
    assert_int_equal(atomic_load(&b->accepts), 2); /* the bad conn was not pooled */
    assert_int_equal(atomic_load(&H.releases_failed), 1);
    teardown_basic(b);
}

/* Lines the instance ends with a bare LF reach the client as CRLF lines,
 * hop-by-hop fields still dropped, and the connection is pooled as usual. */
static void test_bare_lf_response_is_normalised(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    for (int k = 0; k < 2; k++) {
        resp_t rp;
        cl_send(c, "GET /lf HTTP/1.1\r\nHost: app.test\r\n\r\n");
        assert_int_equal(cl_resp(c, &rp, false, false), 0);
        assert_int_equal(rp.status, 201);
        assert_string_equal(rp.body.p, "ok");
        assert_non_null(strstr(rp.head, "HTTP/1.1 201 Created\r\n"));
        assert_non_null(strstr(rp.head, "\r\nContent-Type: text/plain\r\n"));
        assert_non_null(strstr(rp.head, "\r\nX-B: b\r\n"));
        assert_null(strstr(rp.head, "X-Hop"));
        for (const char *p = strchr(rp.head, '\n'); p; p = strchr(p + 1, '\n'))
            assert_true(p > rp.head && p[-1] == '\r');
        resp_free(&rp);
    }
    cl_close(c);
    assert_int_equal(atomic_load(&b->accepts), 1);
    teardown_basic(b);
}

static void test_ipv6_client_forwarded_quoted(void **state)
{
    h_reset();
    backend_t *b = be_start(false);
    h_target("app.test", b->port);
    sl_router_config_t cfg = {.listen = "[::1]:0"};
    h_start(&cfg);
    rdr_t *c = cl_open_af(AF_INET6);
    cl_send(c, "GET /headers HTTP/1.1\r\nHost: app.test\r\n\r\n");
    resp_t rp;
    char v[256];
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_true(hdr_get(rp.body.p, "Forwarded", v, sizeof(v)));
    assert_string_equal(v, "for=\"[::1]\";host=\"app.test\";proto=http");
    assert_true(hdr_get(rp.body.p, "X-Forwarded-For", v, sizeof(v)));
    assert_string_equal(v, "::1");
    resp_free(&rp);
    cl_close(c);
    h_stop();
    be_stop(b);
}

static void pool_close_fn(harness_t *h, void *arg)
{
    sl_upstream_pool_close(((target_t *)arg)->pool);
}

typedef struct bulk {
    int fd;
    size_t n;
} bulk_t;

static unsigned char bulk_byte(size_t i)
{
    return (unsigned char)(i * 7 + i / 4096);
}

static void *bulk_writer(void *arg)
{
    bulk_t *bk = arg;
    static unsigned char chunk[65536];
    for (size_t off = 0; off < bk->n; off += sizeof(chunk)) {
        for (size_t i = 0; i < sizeof(chunk); i++)
            chunk[i] = bulk_byte(off + i);
        be_write(bk->fd, chunk, sizeof(chunk));
    }
    return NULL;
}

static const char ws_req[] = "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\n"
                             "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/* Read the 101 head and check what the router relayed. */
static void ws_expect_101(rdr_t *c)
{
    ssize_t hl = rdr_head(c);
    assert_true(hl > 0);
    char head[1024], v[64];
    snprintf(head, sizeof(head), "%.*s", (int)hl, c->buf);
    rdr_consume(c, (size_t)hl);
    assert_int_equal(strncmp(head, "HTTP/1.1 101 ", 13), 0);
    assert_true(hdr_get(head, "Upgrade", v, sizeof(v)));
    assert_string_equal(v, "websocket");
    assert_true(hdr_get(head, "Connection", v, sizeof(v)));
    assert_string_equal(v, "Upgrade");
    assert_true(hdr_get(head, "X-Backend", v, sizeof(v)));
    assert_string_equal(v, "ws");
}

static void ws_echo(rdr_t *c, const char *s)
{
    cl_send(c, s);
    dyn_t d = {0};
    assert_int_equal(rdr_exact(c, strlen(s), &d, NULL), 0);
    assert_string_equal(d.p, s);
    dyn_free(&d);
}

static void test_websocket_tunnel(void **state)
{
    sl_router_config_t cfg = {.listen = "127.0.0.1:0", .idle_timeout_ms = 800};
    h_reset();
    backend_t *b = be_start(false);
    h_target("app.test", b->port)->timeout_ms = 200;
    h_start(&cfg);
    rdr_t *c = cl_open();
    char req[512], v[128];
    snprintf(req, sizeof(req), "%searly", ws_req); /* bytes before the 101 wait for it */
    cl_send(c, req);
    ws_expect_101(c);
    char bh[2048];
    be_last_head(b, bh, sizeof(bh)); /* the instance got the handshake fields */
    assert_true(hdr_get(bh, "Upgrade", v, sizeof(v)));
    assert_string_equal(v, "websocket");
    assert_true(hdr_get(bh, "Connection", v, sizeof(v)));
    assert_string_equal(v, "Upgrade");
    assert_true(hdr_get(bh, "Sec-WebSocket-Key", v, sizeof(v)));
    dyn_t d = {0};
    assert_int_equal(rdr_exact(c, 5, &d, NULL), 0);
    assert_string_equal(d.p, "early");
    dyn_free(&d);
    usleep(400000); /* past the request timeout: it stopped at the 101 */
    ws_echo(c, "ping");
    assert_int_equal(h_stats().requests_in_flight, 1); /* one request until it closes */
    assert_int_equal(atomic_load(&H.releases), 0);

    /* Both directions at once, more than the back-pressure marks. */
    bulk_t bk = {c->fd, 4u << 20};
    pthread_t wt;
    pthread_create(&wt, NULL, bulk_writer, &bk);
    bool same = true;
    for (size_t off = 0; off < bk.n && same;) {
        if (c->len == 0 && rdr_fill(c) <= 0)
            break;
        for (size_t i = 0; i < c->len && same; i++)
            same = (unsigned char)c->buf[i] == bulk_byte(off + i);
        off += c->len;
        c->len = 0;
    }
    pthread_join(wt, NULL);
    assert_true(same);

    /* The client half-closes: the instance sees EOF, closes, the client
     * gets EOF and the request ends with its 101. */
    shutdown(c->fd, SHUT_WR);
    assert_true(cl_closed(c));
    cl_close(c);
    WAIT_FOR(atomic_load(&H.releases) == 1, 2000);
    assert_int_equal(atomic_load(&H.releases), 1);
    assert_int_equal(atomic_load(&H.last_status), 101);
    assert_int_equal(atomic_load(&H.releases_failed), 0);
    assert_int_equal(h_stats().requests_in_flight, 0);

    /* An idle tunnel is closed after idle_timeout_ms. */
    c = cl_open();
    cl_send(c, ws_req);
    ws_expect_101(c);
    uint64_t t0 = sl_now_ms();
    assert_true(cl_closed(c));
    uint64_t el = sl_now_ms() - t0;
    assert_true(el >= 600 && el < 4000);
    cl_close(c);
    WAIT_FOR(atomic_load(&H.releases) == 2, 2000);
    assert_int_equal(atomic_load(&H.last_status), 101);

    /* An instance that declines answers normally; the connection stays. */
    c = cl_open();
    snprintf(req, sizeof(req), "GET /ws-refuse%s", ws_req + 7);
    cl_send(c, req);
    resp_ok(c, "no upgrade");
    resp_t rp;
    get_ok(c, "app.test", "/hello", "hello");
    /* A 101 nobody asked for is a broken instance. */
    cl_send(c, "GET /ws HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_int_equal(rp.status, 502);
    resp_free(&rp);
    cl_close(c);
    h_stop();
    be_stop(b);
}

static void test_pool_closed_while_busy(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    get_ok(c, "app.test", "/hello", "hello"); /* one idle pooled conn */
    rdr_t *c2 = cl_open();
    cl_send(c, "GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n");
    cl_send(c2, "GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n");
    WAIT_FOR(h_stats().upstream_conns_open == 2, 2000);
    h_call(&H, pool_close_fn, &H.targets[0]);
    resp_t rp;
    assert_int_equal(cl_resp(c, &rp, false, false), 0);
    assert_string_equal(rp.body.p, "slow"); /* busy conns finish their exchange */
    resp_free(&rp);
    assert_int_equal(cl_resp(c2, &rp, false, false), 0);
    assert_string_equal(rp.body.p, "slow");
    resp_free(&rp);
    WAIT_FOR(h_stats().upstream_conns_open == 0, 2000);
    assert_int_equal(h_stats().upstream_conns_open, 0); /* then close, pool freed */
    cl_close(c2);
    cl_close(c);
    teardown_basic(b);
}

static void test_client_aborts_transfers(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open(); /* leaves mid-download */
    cl_send(c, "GET /big?n=67108864 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_true(rdr_head(c) > 0);
    cl_close(c);
    WAIT_FOR(atomic_load(&H.releases) == 1, 3000);
    assert_int_equal(atomic_load(&H.releases), 1);
    c = cl_open(); /* leaves mid-upload */
    cl_send(c, "POST /sink HTTP/1.1\r\nHost: app.test\r\nContent-Length: 67108864\r\n\r\n");
    static char chunk[65536];
    memset(chunk, 'u', sizeof(chunk));
    for (int i = 0; i < 16; i++)
        be_write(c->fd, chunk, sizeof(chunk));
    cl_close(c);
    WAIT_FOR(atomic_load(&H.releases) == 2, 3000);
    assert_int_equal(atomic_load(&H.releases), 2);
    WAIT_FOR(h_stats().upstream_conns_open == 0, 3000);
    sl_router_stats_t st = h_stats();
    assert_int_equal(st.upstream_conns_open, 0);
    assert_int_equal(st.requests_in_flight, 0);
    WAIT_FOR(h_stats().connections_open == 0, 3000);
    assert_int_equal(h_stats().connections_open, 0);
    c = cl_open();
    get_ok(c, "app.test", "/hello", "hello");
    cl_close(c);
    teardown_basic(b);
}

static void test_stalled_reader_is_cut_off(void **state)
{
    sl_router_config_t cfg = {.listen = "127.0.0.1:0", .idle_timeout_ms = 300};
    backend_t *b = setup_basic(&cfg);
    rdr_t *c = cl_open();
    int small = 4096;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    cl_send(c, "GET /big?n=268435456 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    /* never read: the router must give the instance slot back */
    WAIT_FOR(atomic_load(&H.releases) == 1, 4000);
    assert_int_equal(atomic_load(&H.releases), 1);
    WAIT_FOR(h_stats().connections_open == 0, 2000);
    assert_int_equal(h_stats().connections_open, 0);
    cl_close(c);
    teardown_basic(b);
}

static void test_bad_responses_close_upstream(void **state)
{
    backend_t *b = setup_basic(NULL);
    rdr_t *c = cl_open();
    get_ok(c, "app.test", "/hello", "hello"); /* one pooled upstream conn */
    for (unsigned i = 0; i < N_BAD_RESPONSES; i++) {
        char req[128];
        snprintf(req, sizeof(req), "GET /badresp?i=%u HTTP/1.1\r\nHost: app.test\r\n\r\n", i);
        cl_send(c, req);
        resp_t rp;
        assert_int_equal(cl_resp(c, &rp, false, false), 0);
        if (rp.status != 502)
            fail_msg("bad response %u relayed as %d", i, rp.status);
        assert_non_null(strstr(rp.body.p, "bad response"));
        resp_free(&rp);
        /* the next exchange gets a fresh upstream connection */
        get_ok(c, "app.test", "/hello", "hello");
        assert_int_equal(atomic_load(&b->accepts), (int)i + 2);
    }
    assert_int_equal(atomic_load(&H.releases_failed), (int)N_BAD_RESPONSES);
    cl_close(c);
    teardown_basic(b);
}

static void test_stalled_body_is_408(void **state)
{
    sl_router_config_t cfg = {.listen = "127.0.0.1:0", .body_timeout_ms = 200};
    for (int with_deadline = 0; with_deadline < 2; with_deadline++) {
        backend_t *b = setup_basic(&cfg);
        H.targets[0].timeout_ms = with_deadline ? 60000 : 0;
        rdr_t *c = cl_open();
        /* A body that trickles keeps the request alive... */
        cl_send(c, "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 6\r\n\r\nab");
        usleep(120000);
        cl_send(c, "cd");
        usleep(120000);
        cl_send(c, "ef");
        resp_ok(c, "abcdef");
        resp_t rp;
        /* ...one that stops is cut off, and the slot is given back. */
        cl_send(c, "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\nabc");
        assert_int_equal(cl_resp(c, &rp, false, false), 0);
        assert_int_equal(rp.status, 408);
        assert_non_null(strstr(rp.body.p, "request body stalled"));
        assert_non_null(strstr(rp.head, "Connection: close"));
        resp_free(&rp);
        assert_true(cl_closed(c));
        cl_close(c);
        WAIT_FOR(atomic_load(&H.releases) == 2, 2000);
        assert_int_equal(atomic_load(&H.releases), 2);
        assert_int_equal(atomic_load(&H.releases_failed), 0);
        teardown_basic(b);
    }
}

static void test_idle_pool_is_capped(void **state)
{
    sl_router_config_t cfg = {.listen = "127.0.0.1:0", .upstream_max_idle = 2};
    backend_t *b = setup_basic(&cfg);
    rdr_t *c[5];
    for (int i = 0; i < 5; i++) {
        c[i] = cl_open();
        cl_send(c[i], "GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n");
    }
    WAIT_FOR(h_stats().upstream_conns_open == 5, 2000);
    assert_int_equal(h_stats().upstream_conns_open, 5);
    for (int i = 0; i < 5; i++) {
        resp_t rp;
        assert_int_equal(cl_resp(c[i], &rp, false, false), 0);
        assert_string_equal(rp.body.p, "slow");
        resp_free(&rp);
    }
    WAIT_FOR(h_stats().upstream_conns_open == 2, 2000);
    assert_int_equal(h_stats().upstream_conns_open, 2);
    get_ok(c[0], "app.test", "/hello", "hello"); /* the kept ones are reused */
    assert_int_equal(atomic_load(&b->accepts), 5);
    for (int i = 0; i < 5; i++)
        cl_close(c[i]);
    teardown_basic(b);
}

static uint64_t thread_cpu_ns(pthread_t t)
{
    clockid_t id;
    struct timespec ts;
    assert_int_equal(pthread_getcpuclockid(t, &id), 0);
    assert_int_equal(clock_gettime(id, &ts), 0);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* --busy-poll: each window lasts at least its length after the last read,
 * requests are served as usual, and the loop sleeps again once idle. */
static void test_busy_poll_windows_end(void **state)
{
    const uint64_t window = 2000000; /* 2ms */
    sl_router_config_t cfg = {.listen = "127.0.0.1:0", .busy_poll_ns = window};
    backend_t *b = setup_basic(&cfg);
    rdr_t *c = cl_open();
    for (int i = 0; i < 20; i++)
        get_ok(c, "app.test", "/hello", "hello");
    cl_close(c);
    usleep(100000); /* the last window (2ms) is over */
    uint64_t polled = h_stats().busy_poll_ns;
    assert_true(polled >= window);
    /* Idle: no window is open, so the loop thread blocks in epoll_wait.
     * A loop left polling would use the whole interval. */
    uint64_t cpu0 = thread_cpu_ns(H.thread);
    usleep(400000);
    uint64_t used = thread_cpu_ns(H.thread) - cpu0;
    assert_true(used < 100000000u);
    assert_int_equal(h_stats().busy_poll_ns, polled);
    teardown_basic(b);
}

static void test_normalize_host(void **state)
{
    static const struct {
        const char *in, *out; /* out NULL: rejected */
    } cases[] = {
        {"App.Test", "app.test"},
        {"app.test:8080", "app.test"},
        {"app.test:", "app.test"},
        {"app.test.", "app.test"},
        {"app.test.:80", "app.test"},
        {"HELLO.default.LOCALHOST", "hello.default.localhost"},
        {"127.0.0.1:80", "127.0.0.1"},
        {"[::1]:8080", "[::1]"},
        {"[FE80::1]", "[fe80::1]"},
        {"a..", "a.."},
        {"", NULL},
        {":80", NULL},
        {"app.test:8o", NULL},
        {"app test", NULL},
        {"app/test", NULL},
        {"app\"test", NULL},
        {"app\\test", NULL},
        {"app@test", NULL},
        {"[::1", NULL},
        {"[]", NULL},
        {"[::1]x", NULL},
        {"[::1]:x", NULL},
        {"[:[:]", NULL},
    };
    char out[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ssize_t n = sl_router_normalize_host(sl_str_from(cases[i].in), out, sizeof(out));
        if (!cases[i].out) {
            if (n >= 0)
                fail_msg("'%s' accepted as '%s'", cases[i].in, out);
            continue;
        }
        if (n < 0)
            fail_msg("'%s' rejected", cases[i].in);
        assert_int_equal((size_t)n, strlen(cases[i].out));
        assert_string_equal(out, cases[i].out);
    }
    /* NUL inside, and a name that does not fit */
    assert_true(sl_router_normalize_host((sl_str_t){"a\0b", 3}, out, sizeof(out)) < 0);
    char big[80];
    memset(big, 'a', sizeof(big));
    assert_true(sl_router_normalize_host((sl_str_t){big, sizeof(big)}, out, sizeof(out)) < 0);
    assert_true(sl_router_normalize_host((sl_str_t){big, 63}, out, sizeof(out)) == 63);
}

static void test_router_new_errors(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    sl_router_t *r = NULL;
    sl_error_t err = {0};
    sl_router_config_t cfg = {.listen = "localhost"};
    assert_true(sl_router_new(&loop, &cfg, &OPS, NULL, &r, &err) < 0);
    assert_non_null(strstr(err.msg, "ADDR:PORT"));
    cfg.listen = "127.0.0.1:99999";
    assert_true(sl_router_new(&loop, &cfg, &OPS, NULL, &r, &err) < 0);
    assert_non_null(strstr(err.msg, "0..65535"));
    int port;
    int fd = listen_any(&port); /* taken */
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    cfg.listen = addr;
    assert_true(sl_router_new(&loop, &cfg, &OPS, NULL, &r, &err) < 0);
    assert_non_null(strstr(err.msg, addr));
    close(fd);
    uv_run(&loop, UV_RUN_NOWAIT); /* finish closing the failed listener */
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    signal(SIGPIPE, SIG_IGN);
    sl_log_set_level(SL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_keepalive_reuses_upstream),
        cmocka_unit_test(test_post_content_length_streamed),
        cmocka_unit_test(test_chunked_request_is_reframed),
        cmocka_unit_test(test_chunked_response_and_head),
        cmocka_unit_test(test_response_until_close),
        cmocka_unit_test(test_unknown_host_and_bad_requests),
        cmocka_unit_test(test_forwarding_headers),
        cmocka_unit_test(test_backend_closes_mid_response),
        cmocka_unit_test(test_cut_body_resets_the_client),
        cmocka_unit_test(test_refused_is_502),
        cmocka_unit_test(test_owner_status_retry_after),
        cmocka_unit_test(test_never_sent_is_rerouted),
        cmocka_unit_test(test_early_answer_is_not_pooled),
        cmocka_unit_test(test_inline_answer_is_not_reused),
        cmocka_unit_test(test_websocket_tunnel),
        cmocka_unit_test(test_timeout_is_504),
        cmocka_unit_test(test_instance_silence_is_cut),
        cmocka_unit_test(test_response_start_counts_from_delivery),
        cmocka_unit_test(test_backpressure_is_not_silence),
        cmocka_unit_test(test_held_back_body_is_not_stalled),
        cmocka_unit_test(test_trickled_body_is_gathered),
        cmocka_unit_test(test_silence_after_a_held_back_upload_is_cut),
        cmocka_unit_test(test_pick_timeout_replaces_the_routes),
        cmocka_unit_test(test_past_its_deadline_is_not_sent),
        cmocka_unit_test(test_queued_request_is_served),
        cmocka_unit_test(test_client_leaves_while_queued),
        cmocka_unit_test(test_pipelined_in_order),
        cmocka_unit_test(test_large_bodies_both_ways),
        cmocka_unit_test(test_instance_in_own_netns),
        cmocka_unit_test(test_stale_pooled_conn_is_retried),
        cmocka_unit_test(test_post_on_a_failed_pooled_conn_is_not_retried),
        cmocka_unit_test(test_interim_responses_bounded),
        cmocka_unit_test(test_expect_continue_relayed),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_timeouts_close_idle_connections),
        cmocka_unit_test(test_bad_response_is_502),
        cmocka_unit_test(test_bare_lf_response_is_normalised),
        cmocka_unit_test(test_ipv6_client_forwarded_quoted),
        cmocka_unit_test(test_pool_closed_while_busy),
        cmocka_unit_test(test_client_aborts_transfers),
        cmocka_unit_test(test_stalled_reader_is_cut_off),
        cmocka_unit_test(test_router_new_errors),
        cmocka_unit_test(test_bad_responses_close_upstream),
        cmocka_unit_test(test_stalled_body_is_408),
        cmocka_unit_test(test_idle_pool_is_capped),
        cmocka_unit_test(test_busy_poll_windows_end),
        cmocka_unit_test(test_normalize_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
