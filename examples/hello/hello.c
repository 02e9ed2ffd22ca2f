/*
 * hello.c — sluice's sample service: a tiny static HTTP/1.1 server.
 *
 * libc only, one thread, one epoll loop. Listens on 0.0.0.0:$PORT (default
 * 8080), keeps connections alive, reads Content-Length and chunked request
 * bodies, answers pipelined requests in order, and on SIGTERM closes the
 * listener, finishes the requests in flight and exits 0.
 *
 *   GET  /            "Hello from sluice! revision=$K_REVISION"
 *   GET  /env         the environment, one K=V per line
 *   GET  /whoami      "uid=N gid=N"
 *   GET  /sleep?ms=N  answers after N ms without blocking anyone else
 *   POST /echo        the request body
 *   GET  /stats       "sleeping_max=N requests=M": the most /sleep requests
 *                     it ever held at once, and requests served
 *   anything else     404
 *
 * One log line per request on stdout (line-buffered, so it is never stuck
 * in a buffer when the platform collects logs), unless ACCESS_LOG=off
 * (benchmarks: a write per request is the backend's largest cost after the
 * socket I/O itself).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEAD     (16 * 1024)
#define MAX_BODY     (16 * 1024 * 1024)
#define MAX_SLEEP_MS 3600000L
#define READ_CHUNK   65536

extern char **environ;

enum cstate { C_HEAD, C_BODY, C_WAIT };
enum { CK_SIZE, CK_DATA, CK_DATA_END, CK_TRAILER, CK_DONE };

typedef struct conn {
    int fd;
    enum cstate st;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    /* current request */
    char method[16];
    char target[2048];
    size_t head_len;
    bool keepalive, chunked, want_close, peer_eof;
    size_t clen;
    /* chunked decoding: position in `in`, decoded body */
    size_t ck_pos, ck_left;
    int ck_state;
    char *body;
    size_t body_len, body_cap;
    /* /sleep */
    uint64_t deadline;
    size_t heap_idx;
    long sleep_ms;
    uint64_t t_start;
} conn_t;

static int g_ep = -1, g_listen = -1;
static conn_t **g_conns; /* indexed by fd */
static size_t g_nconns_cap, g_nconns;
static conn_t **g_heap; /* sleeping connections, min-heap on deadline */
static size_t g_heap_len, g_heap_cap;
static bool g_draining;
static bool g_access_log = true;
static long g_sleeping, g_sleeping_max, g_requests;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return q;
}

static void buf_append(char **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (nc < *len + n)
            nc *= 2;
        *buf = xrealloc(*buf, nc);
        *cap = nc;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
}

/* ---- timer heap ---------------------------------------------------------- */

static void heap_swap(size_t a, size_t b)
{
    conn_t *t = g_heap[a];
    g_heap[a] = g_heap[b];
    g_heap[b] = t;
    g_heap[a]->heap_idx = a;
    g_heap[b]->heap_idx = b;
}

static void heap_up(size_t i)
{
    while (i > 0 && g_heap[(i - 1) / 2]->deadline > g_heap[i]->deadline) {
        heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < g_heap_len && g_heap[l]->deadline < g_heap[m]->deadline)
            m = l;
        if (r < g_heap_len && g_heap[r]->deadline < g_heap[m]->deadline)
            m = r;
        if (m == i)
            return;
        heap_swap(i, m);
        i = m;
    }
}

static void heap_push(conn_t *c)
{
    if (g_heap_len == g_heap_cap) {
        g_heap_cap = g_heap_cap ? g_heap_cap * 2 : 64;
        g_heap = xrealloc(g_heap, g_heap_cap * sizeof(*g_heap));
    }
    c->heap_idx = g_heap_len;
    g_heap[g_heap_len++] = c;
    heap_up(c->heap_idx);
}

static void heap_remove(conn_t *c)
{
    size_t i = c->heap_idx;
    if (i >= g_heap_len || g_heap[i] != c)
        return;
    g_heap_len--;
    if (i != g_heap_len) {
        g_heap[i] = g_heap[g_heap_len];
        g_heap[i]->heap_idx = i;
        heap_down(i);
        heap_up(i);
    }
    c->heap_idx = SIZE_MAX;
}

/* ---- connections --------------------------------------------------------- */

static void conn_close(conn_t *c)
{
    if (c->st == C_WAIT) {
        heap_remove(c);
        g_sleeping--;
    }
    epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    g_conns[c->fd] = NULL;
    g_nconns--;
    free(c->in);
    free(c->out);
    free(c->body);
    free(c);
}

static bool conn_idle(const conn_t *c)
{
    return c->st == C_HEAD && c->in_len == 0 && c->out_off == c->out_len;
}

static void conn_interest(conn_t *c)
{
    struct epoll_event ev = {.data.fd = c->fd};
    bool pending = c->out_off < c->out_len;
    if (pending)
        ev.events |= EPOLLOUT;
    else if (c->st != C_WAIT && !c->want_close && !c->peer_eof)
        ev.events |= EPOLLIN;
    epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static const char *reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 413:
        return "Content Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

static void respond(conn_t *c, int status, const char *body, size_t len)
{
    char head[256];
    bool close_it = !c->keepalive || g_draining;
    if (close_it)
        c->want_close = true;
    bool head_only = strcmp(c->method, "HEAD") == 0;
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\n%s\r\n",
                     status, reason(status), len, close_it ? "Connection: close\r\n" : "");
    buf_append(&c->out, &c->out_len, &c->out_cap, head, (size_t)n);
    if (!head_only && len)
        buf_append(&c->out, &c->out_len, &c->out_cap, body, len);
    if (g_access_log)
        printf("%s %s %d %zu %.3fms\n", c->method[0] ? c->method : "-",
               c->target[0] ? c->target : "-", status, len,
               (double)(now_us() - c->t_start) / 1000.0);
}

/* Write what we can; false if the connection died. */
static bool conn_flush(conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return true;
            return false;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return true;
}

/* ---- request handling ---------------------------------------------------- */

static void handle_sleep(conn_t *c, const char *query)
{
    const char *ms = NULL;
    for (const char *p = query; p && *p;) {
        if (strncmp(p, "ms=", 3) == 0) {
            ms = p + 3;
            break;
        }
        p = strchr(p, '&');
        if (p)
            p++;
    }
    char *end = NULL;
    errno = 0;
    long v = ms ? strtol(ms, &end, 10) : -1;
    if (!ms || errno || end == ms || (*end && *end != '&') || v < 0 || v > MAX_SLEEP_MS) {
        const char *msg = "sleep: want ?ms=N with 0 <= N <= 3600000\n";
        respond(c, 400, msg, strlen(msg));
        return;
    }
    c->sleep_ms = v;
    c->deadline = now_ms() + (uint64_t)v;
    c->st = C_WAIT;
    heap_push(c);
    if (++g_sleeping > g_sleeping_max)
        g_sleeping_max = g_sleeping;
}

static void handle_env(conn_t *c)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (char **e = environ; e && *e; e++) {
        buf_append(&buf, &len, &cap, *e, strlen(*e));
        buf_append(&buf, &len, &cap, "\n", 1);
    }
    respond(c, 200, buf ? buf : "", len);
    free(buf);
}

static void dispatch(conn_t *c)
{
    char path[2048];
    const char *q = strchr(c->target, '?');
    size_t plen = q ? (size_t)(q - c->target) : strlen(c->target);
    memcpy(path, c->target, plen);
    path[plen] = '\0';
    bool get = !strcmp(c->method, "GET") || !strcmp(c->method, "HEAD");
    char msg[256];
    g_requests++;
    if (get && !strcmp(path, "/")) {
        const char *rev = getenv("K_REVISION");
        int n = snprintf(msg, sizeof(msg), "Hello from sluice! revision=%s\n", rev ? rev : "");
        respond(c, 200, msg, (size_t)n);
    } else if (get && !strcmp(path, "/env")) {
        handle_env(c);
    } else if (get && !strcmp(path, "/whoami")) {
        int n =
            snprintf(msg, sizeof(msg), "uid=%u gid=%u\n", (unsigned)getuid(), (unsigned)getgid());
        respond(c, 200, msg, (size_t)n);
    } else if (get && !strcmp(path, "/sleep")) {
        handle_sleep(c, q ? q + 1 : NULL);
    } else if (get && !strcmp(path, "/stats")) {
        int n = snprintf(msg, sizeof(msg), "sleeping_max=%ld requests=%ld\n", g_sleeping_max,
                         g_requests);
        respond(c, 200, msg, (size_t)n);
    } else if (!strcmp(c->method, "POST") && !strcmp(path, "/echo")) {
        if (c->chunked)
            respond(c, 200, c->body, c->body_len);
        else
            respond(c, 200, c->in + c->head_len, c->clen);
    } else {
        respond(c, 404, "not found\n", 10);
    }
}

static void fail(conn_t *c, int status, const char *msg)
{
    c->keepalive = false;
    respond(c, status, msg, strlen(msg));
    c->st = C_HEAD;
    c->in_len = 0;
}

static bool header_is(const char *name, size_t nlen, const char *want)
{
    return nlen == strlen(want) && strncasecmp(name, want, nlen) == 0;
}

static bool value_has_token(const char *v, size_t vlen, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i + tl <= vlen; i++)
        if (strncasecmp(v + i, tok, tl) == 0 && (i == 0 || v[i - 1] == ' ' || v[i - 1] == ',') &&
            (i + tl == vlen || v[i + tl] == ' ' || v[i + tl] == ',' || v[i + tl] == ';'))
            return true;
    return false;
}

/* Parse one header line; returns false (and answered) on a bad request. */
static bool parse_header(conn_t *c, const char *line, size_t len, bool *have_cl, bool *expect)
{
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line) {
        fail(c, 400, "bad header line\n");
        return false;
    }
    size_t nlen = (size_t)(colon - line);
    for (size_t i = 0; i < nlen; i++)
        if (line[i] == ' ' || line[i] == '\t') {
            fail(c, 400, "whitespace in header name\n");
            return false;
        }
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);
    if (header_is(line, nlen, "content-length")) {
        size_t n = 0;
        if (vlen == 0 || vlen > 12) {
            fail(c, 400, "bad content-length\n");
            return false;
        }
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9') {
                fail(c, 400, "bad content-length\n");
                return false;
            }
            n = n * 10 + (size_t)(v[i] - '0');
        }
        if (*have_cl && n != c->clen) {
            fail(c, 400, "conflicting content-length\n");
            return false;
        }
        *have_cl = true;
        c->clen = n;
    } else if (header_is(line, nlen, "transfer-encoding")) {
        if (!(vlen == 7 && strncasecmp(v, "chunked", 7) == 0)) {
            fail(c, 501, "only chunked transfer-encoding is supported\n");
            return false;
        }
        c->chunked = true;
    } else if (header_is(line, nlen, "connection")) {
        if (value_has_token(v, vlen, "close"))
            c->keepalive = false;
        else if (value_has_token(v, vlen, "keep-alive"))
            c->keepalive = true;
    } else if (header_is(line, nlen, "expect")) {
        *expect = vlen == 12 && strncasecmp(v, "100-continue", 12) == 0;
    }
    return true;
}

/* Returns 1 when the head was parsed, 0 when more bytes are needed, -1 when
 * the request was refused. */
static int parse_head(conn_t *c)
{
    /* Tolerate empty lines before a request (RFC 9112 2.2). */
    size_t skip = 0;
    while (skip + 1 < c->in_len && c->in[skip] == '\r' && c->in[skip + 1] == '\n')
        skip += 2;
    if (skip) {
        memmove(c->in, c->in + skip, c->in_len - skip);
        c->in_len -= skip;
    }
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end) {
        if (c->in_len > MAX_HEAD) {
            fail(c, 431, "request head too large\n");
            return -1;
        }
        return 0;
    }
    c->head_len = (size_t)(end - c->in) + 4;
    c->t_start = now_us();
    c->method[0] = c->target[0] = '\0';
    c->clen = 0;
    c->chunked = false;
    c->body_len = 0;
    char *line = c->in, *eol = memmem(line, c->head_len, "\r\n", 2);
    char *sp1 = memchr(line, ' ', (size_t)(eol - line));
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || (size_t)(sp1 - line) >= sizeof(c->method) ||
        (size_t)(sp2 - sp1 - 1) >= sizeof(c->target) || sp2 == sp1 + 1) {
        fail(c, 400, "bad request line\n");
        return -1;
    }
    memcpy(c->method, line, (size_t)(sp1 - line));
    c->method[sp1 - line] = '\0';
    memcpy(c->target, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    c->target[sp2 - sp1 - 1] = '\0';
    size_t vlen = (size_t)(eol - sp2 - 1);
    if (vlen == 8 && !memcmp(sp2 + 1, "HTTP/1.1", 8))
        c->keepalive = true;
    else if (vlen == 8 && !memcmp(sp2 + 1, "HTTP/1.0", 8))
        c->keepalive = false;
    else {
        fail(c, 505, "only HTTP/1.0 and HTTP/1.1\n");
        return -1;
    }
    bool have_cl = false, expect = false;
    for (char *p = eol + 2; p < end + 2;) {
        char *e = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
        if (!parse_header(c, p, (size_t)(e - p), &have_cl, &expect))
            return -1;
        p = e + 2;
    }
    if (have_cl && c->chunked) {
        fail(c, 400, "both content-length and transfer-encoding\n");
        return -1;
    }
    if (c->clen > MAX_BODY) {
        fail(c, 413, "body too large\n");
        return -1;
    }
    c->ck_pos = c->head_len;
    c->ck_state = CK_SIZE;
    bool need_body = c->chunked || c->clen > 0;
    if (expect && need_body && c->in_len == c->head_len) {
        const char *cont = "HTTP/1.1 100 Continue\r\n\r\n";
        buf_append(&c->out, &c->out_len, &c->out_cap, cont, strlen(cont));
    }
    return 1;
}

/* Advance the chunked decoder over the bytes received so far.
 * Returns 1 when the body is complete, 0 for more, -1 refused. */
static int decode_chunked(conn_t *c)
{
    while (c->ck_state != CK_DONE) {
        char *p = c->in + c->ck_pos;
        size_t avail = c->in_len - c->ck_pos;
        if (c->ck_state == CK_DATA) {
            size_t n = avail < c->ck_left ? avail : c->ck_left;
            if (n == 0)
                return 0;
            if (c->body_len + n > MAX_BODY) {
                fail(c, 413, "body too large\n");
                return -1;
            }
            buf_append(&c->body, &c->body_len, &c->body_cap, p, n);
            c->ck_pos += n;
            c->ck_left -= n;
            if (c->ck_left == 0)
                c->ck_state = CK_DATA_END;
            continue;
        }
        char *eol = memmem(p, avail, "\r\n", 2);
        if (!eol) {
            if (avail > 4096) {
                fail(c, 400, "bad chunk framing\n");
                return -1;
            }
            return 0;
        }
        size_t llen = (size_t)(eol - p);
        c->ck_pos += llen + 2;
        if (c->ck_state == CK_DATA_END) {
            if (llen != 0) {
                fail(c, 400, "bad chunk framing\n");
                return -1;
            }
            c->ck_state = CK_SIZE;
        } else if (c->ck_state == CK_SIZE) {
            size_t n = 0, i = 0;
            for (; i < llen && i < 8; i++) {
                char ch = p[i];
                int d = ch >= '0' && ch <= '9'   ? ch - '0'
                        : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                        : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                                 : -1;
                if (d < 0)
                    break;
                n = n * 16 + (size_t)d;
            }
            if (i == 0 || (i < llen && p[i] != ';' && p[i] != ' ' && p[i] != '\t')) {
                fail(c, 400, "bad chunk size\n");
                return -1;
            }
            c->ck_left = n;
            c->ck_state = n ? CK_DATA : CK_TRAILER;
        } else { /* trailers until an empty line */
            if (llen == 0)
                c->ck_state = CK_DONE;
        }
    }
    return 1;
}

static void process(conn_t *c);

static void finish_request(conn_t *c)
{
    size_t used = c->chunked ? c->ck_pos : c->head_len + c->clen;
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    c->st = C_HEAD;
}

/* Parse and answer as many complete requests as the buffer holds, one at a
 * time: the next waits until the previous response is on the wire. */
static void process(conn_t *c)
{
    while (!c->want_close) {
        if (!conn_flush(c)) {
            c->want_close = true;
            c->out_off = c->out_len = 0;
            return;
        }
        if (c->out_off != c->out_len || c->st == C_WAIT)
            return;
        if (c->st == C_HEAD) {
            int r = parse_head(c);
            if (r <= 0)
                return;
            c->st = C_BODY;
        }
        if (c->chunked) {
            int r = decode_chunked(c);
            if (r <= 0)
                return;
        } else if (c->in_len - c->head_len < c->clen) {
            return;
        }
        dispatch(c);
        if (c->st == C_WAIT)
            return;
        finish_request(c);
    }
}

/* Returns false if the connection must be closed now. */
static bool conn_step(conn_t *c)
{
    process(c);
    if (!conn_flush(c))
        return false;
    if ((c->want_close || (c->peer_eof && c->st != C_WAIT)) && c->out_off == c->out_len)
        return false;
    if (g_draining && conn_idle(c))
        return false;
    conn_interest(c);
    return true;
}

static void on_readable(conn_t *c)
{
    for (int i = 0; i < 16; i++) {
        if (c->in_len + READ_CHUNK > c->in_cap) {
            c->in_cap = c->in_len + READ_CHUNK;
            c->in = xrealloc(c->in, c->in_cap);
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, READ_CHUNK, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {
            conn_close(c);
            return;
        }
        if (n == 0) { /* half-close: answer what arrived, then close */
            c->peer_eof = true;
            break;
        }
        c->in_len += (size_t)n;
        if ((size_t)n < READ_CHUNK)
            break;
    }
    if (!conn_step(c))
        conn_close(c);
}

static void fire_timers(void)
{
    uint64_t now = now_ms();
    while (g_heap_len && g_heap[0]->deadline <= now) {
        conn_t *c = g_heap[0];
        heap_remove(c);
        g_sleeping--;
        char msg[64];
        int n = snprintf(msg, sizeof(msg), "slept %ld ms\n", c->sleep_ms);
        c->st = C_BODY;
        respond(c, 200, msg, (size_t)n);
        finish_request(c);
        if (!conn_step(c))
            conn_close(c);
    }
}

static void on_accept(void)
{
    for (;;) {
        int fd = accept4(g_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN)
                perror("accept");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if ((size_t)fd >= g_nconns_cap) {
            size_t nc = g_nconns_cap ? g_nconns_cap : 1024;
            while (nc <= (size_t)fd)
                nc *= 2;
            g_conns = xrealloc(g_conns, nc * sizeof(*g_conns));
            memset(g_conns + g_nconns_cap, 0, (nc - g_nconns_cap) * sizeof(*g_conns));
            g_nconns_cap = nc;
        }
        conn_t *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->heap_idx = SIZE_MAX;
        g_conns[fd] = c;
        g_nconns++;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

static void start_drain(void)
{
    if (g_draining)
        return;
    g_draining = true;
    epoll_ctl(g_ep, EPOLL_CTL_DEL, g_listen, NULL);
    close(g_listen);
    g_listen = -1;
    printf("SIGTERM: listener closed, draining %zu connection(s)\n", g_nconns);
    for (size_t fd = 0; fd < g_nconns_cap; fd++)
        if (g_conns[fd] && conn_idle(g_conns[fd]))
            conn_close(g_conns[fd]);
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int get_port(void)
{
    const char *p = getenv("PORT");
    if (!p || !*p)
        return 8080;
    char *end = NULL;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (errno || *end || v < 1 || v > 65535) {
        fprintf(stderr, "hello: PORT must be 1..65535, got '%s'\n", p);
        exit(2);
    }
    return (int)v;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int port = get_port();
    const char *al = getenv("ACCESS_LOG");
    g_access_log = !(al && strcmp(al, "off") == 0);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    g_listen = listen_on(port);
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (sfd < 0 || g_listen < 0 || g_ep < 0) {
        fprintf(stderr, "hello: cannot listen on :%d: %s\n", port, strerror(errno));
        return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = g_listen};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, g_listen, &ev);
    ev.data.fd = sfd;
    epoll_ctl(g_ep, EPOLL_CTL_ADD, sfd, &ev);
    printf("listening on :%d\n", port);

    struct epoll_event evs[256];
    while (!(g_draining && g_nconns == 0)) {
        int timeout = -1;
        if (g_heap_len) {
            uint64_t now = now_ms(), d = g_heap[0]->deadline;
            timeout = d > now ? (int)(d - now) : 0;
        }
        int n = epoll_wait(g_ep, evs, 256, timeout);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == sfd) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof(si)) == sizeof(si))
                    ;
                start_drain();
            } else if (fd == g_listen) {
                on_accept();
            } else if ((size_t)fd < g_nconns_cap && g_conns[fd]) {
                conn_t *c = g_conns[fd];
                if (evs[i].events & EPOLLIN)
                    on_readable(c);
                else if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
                    if (!conn_step(c))
                        conn_close(c);
                }
            }
        }
        fire_timers();
    }
    printf("drained, exiting\n");
    return 0;
}
