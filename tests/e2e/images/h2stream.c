/*
 * h2stream — a small HTTP/2-only (h2c, prior knowledge) test server that
 * streams: unlike nghttpd, its responses carry no content-length, so a
 * proxy in front of it sees a body of unknown length, several DATA frames
 * and trailers, as from a gRPC or server-sent-events server.
 *
 *   /stream?n=N   N lines "line I\n", one DATA frame each, then trailers
 *                 "x-lines: N" and "grpc-status: 0" (&big=1: and a 9000-byte
 *                 "x-big", more than an HTTP/1.1 relay takes)
 *   /echo         the request body (any method), then the same trailers
 *   /reset        a head and one line, then RST_STREAM INTERNAL_ERROR
 *   /badhead      a response head with a connection-specific field
 *   /slowread?ms=M  stops reading the connection for M ms once it has the
 *                 request's head (its windows are 2^31-1: only TCP holds the
 *                 sender back), then answers "got LEN" with the body's length
 *   anything else 200 "h2stream\n" with a content-length
 *
 * Listens on $PORT (default 8080); one thread, poll(2); exits on SIGTERM.
 */
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXCONN 64

typedef struct req {
    int32_t id;
    char path[256];
    char *body;
    size_t len, cap, off;
    int lines, sent;
    int mode; /* 0 echo, 1 stream, 2 reset */
    int big;  /* a big trailer field too */
    char nbuf[16];
} req_t;

static volatile sig_atomic_t stop;
static nghttp2_session_callbacks *cbs;
static int fds[MAXCONN + 1];
static long long paused_until[MAXCONN + 1]; /* per connection, ms */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    int fd = *(int *)ud;
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd p = {fd, POLLOUT, 0};
                poll(&p, 1, 1000);
                continue;
            }
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        off += (size_t)n;
    }
    return (ssize_t)len;
}

static int begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    req_t *r = calloc(1, sizeof(*r));
    r->id = f->hd.stream_id;
    nghttp2_session_set_stream_user_data(s, r->id, r);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    req_t *r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (r && nl == 5 && !memcmp(name, ":path", 5) && vl < sizeof(r->path)) {
        memcpy(r->path, value, vl);
        r->path[vl] = '\0';
        if (!strncmp(r->path, "/slowread", 9)) {
            const char *q = strstr(r->path, "ms=");
            paused_until[(int *)ud - fds] = now_ms() + (q ? atoi(q + 3) : 3000);
        }
    }
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    req_t *r = nghttp2_session_get_stream_user_data(s, id);
    if (!r)
        return 0;
    if (r->len + len > r->cap) {
        r->cap = (r->len + len) * 2;
        r->body = realloc(r->body, r->cap);
    }
    memcpy(r->body + r->len, data, len);
    r->len += len;
    return 0;
}

static void trailers(nghttp2_session *s, req_t *r)
{
    snprintf(r->nbuf, sizeof(r->nbuf), "%d", r->lines);
    static uint8_t big[9000];
    memset(big, 'b', sizeof(big));
    nghttp2_nv t[] = {
        {(uint8_t *)"x-lines", (uint8_t *)r->nbuf, 7, strlen(r->nbuf), 0},
        {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, 0},
        {(uint8_t *)"x-big", big, 5, sizeof(big), 0},
    };
    nghttp2_submit_trailer(s, r->id, t, r->big ? 3 : 2);
}

static ssize_t body_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    req_t *r = src->ptr;
    if (r->mode == 0 || r->mode == 3) { /* echo, then trailers; a plain body */
        size_t n = r->len - r->off < len ? r->len - r->off : len;
        memcpy(buf, r->body + r->off, n);
        r->off += n;
        if (r->off == r->len) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (r->mode == 0) {
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                trailers(s, r);
            }
        }
        return (ssize_t)n;
    }
    if (r->mode == 2 && r->sent == 1) {
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
        return NGHTTP2_ERR_DEFERRED;
    }
    int n = snprintf((char *)buf, len, "line %d\n", ++r->sent);
    if (r->mode == 1 && r->sent >= r->lines) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        trailers(s, r);
    }
    return n;
}

static int on_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
        (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA))
        return 0;
    req_t *r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!r)
        return 0;
    nghttp2_nv hdr[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0},
        {(uint8_t *)"content-type", (uint8_t *)"text/plain", 12, 10, 0},
    };
    nghttp2_data_provider prd = {.source.ptr = r, .read_callback = body_cb};
    if (!strncmp(r->path, "/stream", 7)) {
        const char *q = strstr(r->path, "n=");
        r->mode = 1;
        r->big = strstr(r->path, "big=1") != NULL;
        r->lines = q ? atoi(q + 2) : 3;
        if (r->lines < 1)
            r->lines = 1;
    } else if (!strncmp(r->path, "/slowread", 9)) {
        char msg[64];
        int k = snprintf(msg, sizeof(msg), "got %zu\n", r->len);
        r->body = realloc(r->body, (size_t)k);
        memcpy(r->body, msg, (size_t)k);
        r->len = (size_t)k;
        r->mode = 3;
    } else if (!strcmp(r->path, "/reset")) {
        r->mode = 2;
    } else if (!strcmp(r->path, "/badhead")) {
        /* a connection-specific field: a malformed response (RFC 9113 §8.2.2) */
        nghttp2_nv bad[] = {
            {(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0},
            {(uint8_t *)"connection", (uint8_t *)"close", 10, 5, 0},
        };
        nghttp2_submit_response(s, r->id, bad, 2, NULL);
        return 0;
    } else if (!strcmp(r->path, "/echo")) {
        r->mode = 0;
        r->lines = 0;
        if (!r->len) { /* nothing to echo: the trailers alone end it */
            nghttp2_submit_headers(s, NGHTTP2_FLAG_NONE, r->id, NULL, hdr, 2, NULL);
            trailers(s, r);
            return 0;
        }
    } else {
        static const char msg[] = "h2stream\n";
        nghttp2_nv plain[] = {
            {(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0},
            {(uint8_t *)"content-length", (uint8_t *)"9", 14, 1, 0},
        };
        r->body = realloc(r->body, sizeof(msg));
        memcpy(r->body, msg, sizeof(msg) - 1);
        r->len = sizeof(msg) - 1;
        r->off = 0;
        r->mode = 3;
        nghttp2_submit_response(s, r->id, plain, 2, &prd);
        return 0;
    }
    nghttp2_submit_response(s, r->id, hdr, 2, &prd);
    return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    req_t *r = nghttp2_session_get_stream_user_data(s, id);
    if (r) {
        free(r->body);
        free(r);
    }
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_term);
    const char *port = getenv("PORT");
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(port ? port : "8080"))};
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 64) < 0) {
        perror("h2stream: listen");
        return 1;
    }
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    struct pollfd p[MAXCONN + 1];
    nghttp2_session *sess[MAXCONN + 1];
    int n = 1;
    p[0] = (struct pollfd){lfd, POLLIN, 0};
    while (!stop) {
        long long t = now_ms();
        for (int i = 1; i < n; i++)
            p[i].events = paused_until[i] > t ? 0 : POLLIN;
        if (poll(p, (nfds_t)n, 50) < 0)
            continue;
        if ((p[0].revents & POLLIN) && n <= MAXCONN) {
            int fd = accept(lfd, NULL, NULL);
            if (fd >= 0) {
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                fds[n] = fd;
                p[n] = (struct pollfd){fd, POLLIN, 0};
                nghttp2_session_server_new(&sess[n], cbs, &fds[n]);
                nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0x7fffffff}};
                nghttp2_submit_settings(sess[n], NGHTTP2_FLAG_NONE, iv, 1);
                nghttp2_session_set_local_window_size(sess[n], NGHTTP2_FLAG_NONE, 0, 0x7fffffff);
                paused_until[n] = 0;
                nghttp2_session_send(sess[n]);
                n++;
            }
        }
        for (int i = 1; i < n; i++) {
            if (!p[i].revents)
                continue;
            uint8_t buf[16384];
            ssize_t k = read(fds[i], buf, sizeof(buf));
            int bad = k <= 0 || nghttp2_session_mem_recv(sess[i], buf, (size_t)k) < 0 ||
                      nghttp2_session_send(sess[i]) != 0 ||
                      (!nghttp2_session_want_read(sess[i]) && !nghttp2_session_want_write(sess[i]));
            if (bad) {
                nghttp2_session_del(sess[i]);
                close(fds[i]);
                n--;
                p[i] = p[n];
                sess[i] = sess[n];
                fds[i] = fds[n];
                paused_until[i] = paused_until[n];
                /* the session's send callback points at fds[i]: moved with it */
                if (i < n)
                    nghttp2_session_set_user_data(sess[i], &fds[i]);
                i--;
            }
        }
    }
    return 0;
}
