/*
 * api.c — the REST API server on the daemon's unix socket.
 *
 * One connection at a time per client, keep-alive, requests fully read
 * (bounded) before dispatch. Handlers answer at once or, for operations
 * that import images, when the controller calls back; a connection stays
 * alive (ref-counted) until its pending operation answered. Log following
 * streams a chunked response fed by a timer that tails the instance logs.
 */
#include "api.h"

#include "http_parse.h"
#include "metrics.h"
#include "service.h"
#include "version.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>

#define API_MAX_BODY (4u << 20)
#define API_MAX_HEAD (64u << 10)
/* Requests buffered, read ahead of the one being answered: one whole
 * request always fits. */
#define API_BUF_MAX (API_MAX_HEAD + API_MAX_BODY + 65536)
/* Answers queued for a client that does not take them: reading stops above
 * this, and the requests already in wait until the client reads. */
#define API_QUEUE_MAX (1u << 20)
/* Requests of one connection answered in one turn of the loop; the rest
 * wait for the next turn (conn_resume_later), so that a client with
 * thousands pipelined does not hold the loop, and the router on it. */
#define API_BATCH 8
/* TCP connections open at once, per listener; past it a new one is closed
 * as it is accepted. Each listener has its own, so that clients of the
 * metrics listener, which needs no token, cannot take the API's. */
#define API_TCP_CONNS_MAX     1024
#define METRICS_TCP_CONNS_MAX 64
/* Of the API listener's, those that have not yet sent the token: past it
 * the oldest idle one is closed (evict_anon). */
#define API_TCP_ANON_MAX 256
#define LOG_FILES_MAX    256
#define LOG_INITIAL_MAX  (1u << 20)
/* A TCP client (API or metrics) has this long from the connection or its
 * last response to send a whole request, else it is closed: an idle or
 * trickling client cannot hold a connection (and its buffer) forever.
 * Longer than Prometheus' default scrape interval (1 m), as nginx's
 * keepalive_timeout (75 s), so a scraper's kept-alive connection is not
 * closed just as it is used again. */
#define API_TCP_IDLE_MS 75000
/* A request answered before its body was read (400, 401, 411, 413) is
 * closed after the answer with a FIN, and what the client still sends is
 * read and dropped: closing at once would reset the connection, and the
 * client could lose the answer. As nginx's lingering_timeout and
 * lingering_time: until the client has sent nothing for API_LINGER_MS, for
 * API_LINGER_MAX_MS at most. */
#define API_LINGER_MS     5000
#define API_LINGER_MAX_MS 30000

static const char *MOD = "api";

typedef struct log_file {
    char *path;
    char *id;
    off_t off;
    int64_t mtime_ns;  /* for the order: oldest first */
    bool skip_partial; /* started inside the file: its first line is cut */
} log_file_t;

typedef struct api_conn {
    union {
        uv_pipe_t pipe; /* the API socket */
        uv_tcp_t tcp;   /* --metrics-listen or --api-listen */
    } h;
    bool metrics_only; /* --metrics-listen: /metrics and /healthz only */
    int *counted;      /* TCP: the listener's count of open connections */
    bool anon;         /* --api-listen, no request with the token yet (api->n_anon) */
    bool resume;       /* more requests to answer next turn (api->resume) */
    bool needs_token;  /* --api-listen: every request but /healthz carries the token */
    sl_api_t *api;
    char *buf;
    size_t len, cap;
    int refs;
    bool closing;
    bool busy;       /* a request is being answered */
    bool processing; /* conn_process is on the stack: it goes on to the next request */
    bool reading;    /* the socket is read (conn_reading decides) */
    bool keep_alive;
    bool finished;  /* last response sent; the connection closes after it */
    bool linger;    /* ...after a lingering close (API_LINGER_MS) */
    bool lingering; /* its FIN is sent: what comes is dropped */
    uint64_t linger_until;
    uv_timer_t *idle;   /* TCP: API_TCP_IDLE_MS to the next whole request; any: linger */
    size_t idle_queued; /* bytes queued when the idle timer started */
    /* logs: read on the thread pool, one pass at a time */
    uv_timer_t *follow;
    uv_work_t log_work;
    bool log_busy;
    bool follow_raw; /* an HTTP/1.0 follower: lines unframed, to the close */
    char *log_out;   /* a pass's result: "[id] line\n"... */
    size_t log_len, log_budget;
    char *log_dir;
    log_file_t files[LOG_FILES_MAX];
    size_t n_files;
    struct api_conn *prev, *next;
} api_conn_t;

struct sl_api {
    uv_loop_t *loop;
    uv_pipe_t listener;
    uv_tcp_t *metrics_listener;
    uv_tcp_t *tcp_listener;
    char *token; /* bearer token of the TCP API */
    sl_controller_t *ctl;
    char *state_dir;
    char *path;
    api_conn_t *conns;
    int n_api, n_metrics; /* TCP connections open, per listener (*_TCP_CONNS_MAX) */
    int n_anon;           /* of n_api, those without the token yet (API_TCP_ANON_MAX) */
    uv_idle_t *resume;    /* runs while a connection has requests left (API_BATCH) */
    int n_resume;
    uint64_t full_warn_ms; /* when a connection was last refused for it, in the log */
    int open_handles;
    void (*close_cb)(void *);
    void *close_data;
};

typedef struct write_req {
    uv_write_t req;
    api_conn_t *conn;
    char *data;
    bool close_after;
} write_req_t;

static void conn_unref(api_conn_t *c);
static void conn_close(api_conn_t *c);
static void conn_process(api_conn_t *c);
static void conn_idle_arm(api_conn_t *c);
static void conn_reading(api_conn_t *c);
static bool conn_next(api_conn_t *c);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void on_idle_timeout(uv_timer_t *t);
static size_t conn_queued(api_conn_t *c);
static void conn_idle_start(api_conn_t *c);

/* ---- output ----------------------------------------------------------- */

static size_t conn_queued(api_conn_t *c)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->h);
}

/* A new timer of c's (its idle or follow timer); conn_close closes it. */
static uv_timer_t *conn_timer(api_conn_t *c)
{
    uv_timer_t *t = xcalloc(1, sizeof(*t));
    uv_timer_init(c->api->loop, t);
    t->data = c;
    return t;
}

/* The TCP idle timer, from now, with what is queued now (see
 * conn_idle_arm). */
static void conn_idle_start(api_conn_t *c)
{
    c->idle_queued = conn_queued(c);
    uv_timer_start(c->idle, on_idle_timeout, API_TCP_IDLE_MS, 0);
}

static void shutdown_done(uv_shutdown_t *req, int status)
{
    api_conn_t *c = req->data;
    free(req);
    conn_unref(c);
}

/* The lingering close's timer, from now: API_LINGER_MS, cut to what is
 * left of API_LINGER_MAX_MS. */
static void conn_linger_arm(api_conn_t *c)
{
    uint64_t now = uv_now(c->api->loop);
    if (now >= c->linger_until) {
        conn_close(c);
        return;
    }
    uint64_t left = c->linger_until - now;
    uv_timer_start(c->idle, on_idle_timeout, left < API_LINGER_MS ? left : API_LINGER_MS, 0);
}

/* The answer is out: FIN, then drop what still comes until the client
 * closes or stops sending (conn_linger_arm). A socket client has no idle
 * timer of its own until then. */
static void conn_linger(api_conn_t *c)
{
    uv_shutdown_t *sh = xcalloc(1, sizeof(*sh));
    sh->data = c;
    c->refs++;
    if (uv_shutdown(sh, (uv_stream_t *)&c->h, shutdown_done) < 0) {
        free(sh);
        c->refs--;
        conn_close(c);
        return;
    }
    if (!c->idle)
        c->idle = conn_timer(c);
    c->lingering = true;
    c->linger_until = uv_now(c->api->loop) + API_LINGER_MAX_MS;
    conn_linger_arm(c);
    conn_reading(c);
}

static void write_done(uv_write_t *req, int status)
{
    write_req_t *w = (write_req_t *)req;
    api_conn_t *c = w->conn;
    free(w->data);
    if (status >= 0 && w->close_after && c->linger && !c->closing) {
        conn_linger(c);
    } else if (w->close_after || status < 0) {
        conn_close(c);
    } else {
        if (c->idle) /* the client took a response: its send timeout starts again */
            uv_timer_stop(c->idle);
        conn_idle_arm(c);
        conn_reading(c);
        conn_process(c); /* requests held back while the queue was full */
    }
    free(w);
    conn_unref(c);
}

static void conn_write(api_conn_t *c, char *data, size_t len, bool close_after)
{
    if (c->closing) {
        free(data);
        return;
    }
    write_req_t *w = xcalloc(1, sizeof(*w));
    w->conn = c;
    w->data = data;
    w->close_after = close_after;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    c->refs++;
    if (uv_write(&w->req, (uv_stream_t *)&c->h, &b, 1, write_done) < 0) {
        free(data);
        free(w);
        c->refs--;
        conn_close(c);
    }
}

static void send_response(api_conn_t *c, int status, const char *ctype, const char *body,
                          size_t blen)
{
    bool close_after = !c->keep_alive;
    if (close_after) {
        c->finished = true;
        conn_reading(c);
    }
    char *out =
        xasprintf("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                  sl_http_reason(status), ctype, blen, close_after ? "Connection: close\r\n" : "");
    size_t hlen = strlen(out);
    out = xrealloc(out, hlen + blen);
    memcpy(out + hlen, body, blen);
    conn_write(c, out, hlen + blen, close_after);
}

static void send_json(api_conn_t *c, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(body);
    size_t n = strlen(text);
    text = xrealloc(text, n + 2);
    text[n++] = '\n';
    send_response(c, status, "application/json", text, n);
    free(text);
    c->busy = false;
    conn_process(c);
}

static void send_error(api_conn_t *c, int status, const char *reason, const char *msg)
{
    send_json(c, status, sl_status_json(status, reason, msg));
}

/* ---- connections ------------------------------------------------------ */

static void api_handle_closed(sl_api_t *api)
{
    if (--api->open_handles == 0 && api->close_cb) {
        void (*cb)(void *) = api->close_cb;
        api->close_cb = NULL;
        cb(api->close_data);
    }
}

static void free_handle(uv_handle_t *h)
{
    sl_api_t *api = h->data;
    free(h);
    api_handle_closed(api);
}

static void log_files_clear(api_conn_t *c)
{
    for (size_t i = 0; i < c->n_files; i++) {
        free(c->files[i].path);
        free(c->files[i].id);
    }
    c->n_files = 0;
}

static void conn_free(api_conn_t *c)
{
    sl_api_t *api = c->api;
    if (c->counted)
        (*c->counted)--;
    log_files_clear(c);
    free(c->log_out);
    free(c->log_dir);
    free(c->buf);
    free(c);
    api_handle_closed(api);
}

static void conn_unref(api_conn_t *c)
{
    if (--c->refs == 0)
        conn_free(c);
}

static void conn_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

/* c no longer counts among the API listener's connections without the
 * token (API_TCP_ANON_MAX). */
static void conn_not_anon(api_conn_t *c)
{
    if (c->anon) {
        c->anon = false;
        c->api->n_anon--;
    }
}

static void conn_close(api_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    sl_api_t *api = c->api;
    conn_not_anon(c);
    if (c->resume) {
        c->resume = false;
        api->n_resume--;
        conn_unref(c); /* its handle's reference remains until closed */
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        api->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_timer_t **timers[] = {&c->follow, &c->idle};
    for (size_t i = 0; i < SL_ARRAY_LEN(timers); i++) {
        if (*timers[i]) {
            (*timers[i])->data = api;
            api->open_handles++;
            uv_close((uv_handle_t *)*timers[i], free_handle);
            *timers[i] = NULL;
        }
    }
    uv_close((uv_handle_t *)&c->h, conn_closed);
}

/* Controller callbacks hold a reference so the conn outlives them. */
static void op_done(int status, json_t *body, void *data)
{
    api_conn_t *c = data;
    if (!c->closing)
        send_json(c, status, body);
    else
        json_decref(body);
    conn_unref(c);
}

/* The same for an answer the controller renders as text. */
static void text_done(int status, char *text, size_t len, void *data)
{
    api_conn_t *c = data;
    if (!c->closing) {
        send_response(c, status, "application/json", text, len);
        c->busy = false;
        conn_process(c);
    }
    free(text);
    conn_unref(c);
}

/* ---- log streaming ---------------------------------------------------- */

/*
 * `sluice logs` reads the service's instance logs (the last
 * LOG_INITIAL_MAX of each, oldest first) and, with follow, what they add
 * every FOLLOW_MS. The reading happens on the thread pool, never on the
 * loop the data path shares: a pass works on the conn's files alone while
 * log_busy, and the conn holds a reference until it is done. A follow tick
 * is skipped while a pass runs or the client has not taken the last one.
 */
#define FOLLOW_MS        200
#define FOLLOW_PASS_MAX  (4u << 20) /* read per follow pass; the rest next time */
#define FOLLOW_QUEUE_MAX (1u << 20) /* unsent output that holds the next pass */

static int cmp_mtime(const void *a, const void *b)
{
    const log_file_t *x = a, *y = b;
    return (x->mtime_ns > y->mtime_ns) - (x->mtime_ns < y->mtime_ns);
}

static void scan_log_dir(api_conn_t *c)
{
    DIR *d = opendir(c->log_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) && c->n_files < LOG_FILES_MAX) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 4, ".log"))
            continue;
        bool known = false;
        for (size_t i = 0; i < c->n_files && !known; i++)
            known = !strncmp(c->files[i].id, de->d_name, n - 4) && c->files[i].id[n - 4] == '\0';
        if (known)
            continue;
        log_file_t *f = &c->files[c->n_files++];
        *f = (log_file_t){.path = xasprintf("%s/%s", c->log_dir, de->d_name),
                          .id = xstrndup(de->d_name, n - 4)};
        struct stat st;
        if (stat(f->path, &st) == 0) {
            f->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
            if (st.st_size > (off_t)LOG_INITIAL_MAX) {
                f->off = st.st_size - (off_t)LOG_INITIAL_MAX;
                f->skip_partial = true;
            }
        }
    }
    closedir(d);
    qsort(c->files, c->n_files, sizeof(c->files[0]), cmp_mtime);
}

/* Append new complete lines of f to out as "[id] line\n", reading at most
 * about `budget` bytes; returns what it read. */
static size_t read_new_lines(log_file_t *f, char **out, size_t *len, size_t *cap, size_t budget)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    /* Shorter than what was read: the supervisor dropped its oldest part
     * (the cap on a running instance's log). Where the new data starts is
     * unknown, so follow on from the end. Where the filesystem punched it
     * out instead, the offsets stay, and a reader behind skips the hole. */
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size < f->off)
        f->off = st.st_size;
    off_t data = sl_data_from(fd, f->off);
    if (data > f->off) {
        f->off = data;
        f->skip_partial = true;
    }
    char buf[65536];
    size_t read_total = 0;
    while (read_total < budget) {
        ssize_t r = pread(fd, buf, sizeof(buf), f->off);
        if (r <= 0)
            break;
        read_total += (size_t)r;
        size_t used = 0;
        if (f->skip_partial) {
            char *nl = memchr(buf, '\n', (size_t)r);
            if (!nl && (size_t)r < sizeof(buf))
                break; /* the cut line's end is still to come */
            used = nl ? (size_t)(nl - buf) + 1 : (size_t)r;
            f->skip_partial = nl == NULL;
        }
        for (;;) {
            char *nl = memchr(buf + used, '\n', (size_t)r - used);
            if (!nl)
                break;
            size_t ll = (size_t)(nl - (buf + used)) + 1;
            size_t need = *len + ll + strlen(f->id) + 4;
            if (need > *cap) {
                *cap = need * 2;
                *out = xrealloc(*out, *cap);
            }
            *len += (size_t)snprintf(*out + *len, *cap - *len, "[%s] ", f->id);
            memcpy(*out + *len, buf + used, ll);
            *len += ll;
            used += ll;
        }
        if (used == 0 && (size_t)r == sizeof(buf))
            used = (size_t)r; /* a line longer than the buffer: skip it */
        f->off += (off_t)used;
        if (used < (size_t)r && (size_t)r < sizeof(buf))
            break; /* an incomplete last line: the rest is still to come */
    }
    close(fd);
    return read_total;
}

/* Thread pool: new files of the dir, then what each added. */
static void log_pass(uv_work_t *w)
{
    api_conn_t *c = w->data;
    scan_log_dir(c);
    size_t cap = 4096, budget = c->log_budget;
    c->log_out = xmalloc(cap);
    c->log_len = 0;
    for (size_t i = 0; i < c->n_files && budget > 0; i++) {
        size_t n = read_new_lines(&c->files[i], &c->log_out, &c->log_len, &cap, budget);
        budget -= n < budget ? n : budget;
    }
}

static void log_pass_done(uv_work_t *w, int status)
{
    api_conn_t *c = w->data;
    char *data = c->log_out;
    size_t len = c->log_len;
    c->log_out = NULL;
    c->log_busy = false;
    if (c->closing || status < 0) {
        /* nobody to answer */
    } else if (!c->follow) {
        send_response(c, 200, "text/plain; charset=utf-8", data, len);
        c->busy = false;
        conn_process(c);
    } else if (len > 0 && c->follow_raw) {
        conn_write(c, data, len, false);
        data = NULL;
    } else if (len > 0) {
        char *chunk = xasprintf("%zx\r\n", len);
        size_t hl = strlen(chunk);
        chunk = xrealloc(chunk, hl + len + 2);
        memcpy(chunk + hl, data, len);
        memcpy(chunk + hl + len, "\r\n", 2);
        conn_write(c, chunk, hl + len + 2, false);
    }
    free(data);
    conn_unref(c);
}

static void log_pass_start(api_conn_t *c)
{
    if (c->log_busy || c->closing)
        return;
    c->log_work.data = c;
    c->log_budget = c->follow ? FOLLOW_PASS_MAX : SIZE_MAX;
    if (uv_queue_work(c->api->loop, &c->log_work, log_pass, log_pass_done) < 0) {
        if (!c->follow) /* following, the next tick tries again */
            send_error(c, 500, "InternalError", "could not queue reading the logs");
        return;
    }
    c->log_busy = true;
    c->refs++;
}

static void follow_tick(uv_timer_t *t)
{
    api_conn_t *c = t->data;
    if (conn_queued(c) < FOLLOW_QUEUE_MAX)
        log_pass_start(c);
    else if (c->idle && !uv_is_active((uv_handle_t *)c->idle))
        conn_idle_start(c); /* a follower that stopped reading: as any client */
}

/* follow: a stream of new lines until the client goes; chunked, or to an
 * HTTP/1.0 client (no chunked coding) unframed, ended by the close. */
static void handle_logs(api_conn_t *c, const char *ns, const char *name, bool follow, bool http10)
{
    sl_api_t *api = c->api;
    json_t *svc = NULL;
    if (sl_controller_get_service(api->ctl, ns, name, &svc) != 200) {
        send_json(c, 404, svc);
        return;
    }
    json_decref(svc);
    log_files_clear(c); /* an earlier request's, on this connection */
    free(c->log_dir);
    c->log_dir = xasprintf("%s/logs/%s/%s", api->state_dir, ns, name);
    if (follow) {
        c->follow_raw = http10;
        char *head = xasprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                               "%s\r\n",
                               http10 ? "Connection: close\r\n" : "Transfer-Encoding: chunked\r\n");
        conn_write(c, head, strlen(head), false);
        if (c->closing) /* the write failed: no follow timer to outlive it */
            return;
        c->follow = conn_timer(c);
        uv_timer_start(c->follow, follow_tick, FOLLOW_MS, FOLLOW_MS);
    }
    log_pass_start(c);
}

/* ---- routing ---------------------------------------------------------- */

typedef struct route_ctx {
    api_conn_t *c;
    sl_http_msg_t *msg;
    const char *body;
    size_t body_len;
    char path[1024];
    char query[1024];
} route_ctx_t;

/* Split "/a/b/c" into at most max segments; returns the count. */
static size_t split_path(char *path, char **segs, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(path, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        if (n == max)
            return max + 1;
        segs[n++] = tok;
    }
    return n;
}

/* Value of key in an x-www-form query ("a=1&b=2"), percent-decoding
 * "%3D"/"%2F"; a key without "=" ("?dryRun") has the empty value; NULL if
 * absent. Writes into out. */
static const char *query_get(const char *query, const char *key, char *out, size_t outlen)
{
    size_t kl = strlen(key);
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        if (seg >= kl && !strncmp(p, key, kl) && (seg == kl || p[kl] == '=')) {
            size_t o = 0;
            for (size_t i = kl + 1; i < seg && o + 1 < outlen; i++) {
                if (p[i] == '%' && i + 2 < seg) {
                    char hex[3] = {p[i + 1], p[i + 2], 0};
                    out[o++] = (char)strtol(hex, NULL, 16);
                    i += 2;
                } else {
                    out[o++] = p[i] == '+' ? ' ' : p[i];
                }
            }
            out[o] = '\0';
            return out;
        }
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

static const char *service_filter(route_ctx_t *r, char *buf, size_t n)
{
    const char *s = query_get(r->query, "service", buf, n);
    if (s)
        return s;
    s = query_get(r->query, "labelSelector", buf, n);
    if (s && !strncmp(s, SL_LABEL_SERVICE "=", strlen(SL_LABEL_SERVICE) + 1))
        return s + strlen(SL_LABEL_SERVICE) + 1;
    return NULL;
}

static bool method_is(route_ctx_t *r, const char *m)
{
    return sl_str_eq(r->msg->method, sl_str_from(m));
}

/* Kubernetes' ?dryRun=All on a write: 1 for a dry run, 0 for none, -1
 * (the 400 sent) for any other value. */
static int dry_run_param(route_ctx_t *r)
{
    char buf[64];
    const char *v = query_get(r->query, "dryRun", buf, sizeof(buf));
    if (!v)
        return 0;
    if (!strcmp(v, "All"))
        return 1;
    sl_autofree char *msg =
        xasprintf("dryRun: unsupported value \"%.40s\" (the supported value is \"All\")", v);
    send_error(r->c, 400, "BadRequest", msg);
    return -1;
}

/* A delete or an image import is never a dry run here: one asked for is
 * refused (400) rather than carried out. True when it was refused. */
static bool dry_run_refused(route_ctx_t *r, const char *what, const char *done)
{
    char buf[64];
    if (!query_get(r->query, "dryRun", buf, sizeof(buf)))
        return false;
    sl_autofree char *msg = xasprintf("dryRun: not supported on %s (nothing was %s)", what, done);
    send_error(r->c, 400, "BadRequest", msg);
    return true;
}

static json_t *parse_body(route_ctx_t *r);

/* A DELETE's query and body (Kubernetes' DeleteOptions, optional): false
 * once an error was sent; else *opts is the body (NULL without one) and
 * *pre its preconditions, if any (borrowed from *opts). */
static bool delete_options(route_ctx_t *r, json_t **opts, const json_t **pre)
{
    *opts = NULL;
    *pre = NULL;
    if (dry_run_refused(r, "DELETE", "deleted"))
        return false;
    if (r->body_len == 0)
        return true;
    if (!(*opts = parse_body(r)))
        return false;
    if (!json_is_object(*opts)) {
        json_decref(*opts);
        *opts = NULL;
        send_error(r->c, 400, "BadRequest", "request body: must be a DeleteOptions object");
        return false;
    }
    json_t *dry = json_object_get(*opts, "dryRun"); /* where kubectl puts it */
    if (json_is_array(dry) ? json_array_size(dry) > 0 : dry && !json_is_null(dry)) {
        json_decref(*opts);
        *opts = NULL;
        send_error(r->c, 400, "BadRequest",
                   "dryRun: not supported on DELETE (nothing was deleted)");
        return false;
    }
    *pre = json_object_get(*opts, "preconditions");
    return true;
}

/* A DELETE of a kind that takes no preconditions: false once an error was
 * sent (a dry run, a malformed body, or preconditions, which would
 * otherwise go unheeded). */
static bool delete_plain(route_ctx_t *r)
{
    json_t *opts;
    const json_t *pre;
    if (!delete_options(r, &opts, &pre))
        return false;
    bool has_pre = pre && !json_is_null(pre);
    json_decref(opts);
    if (has_pre)
        send_error(r->c, 400, "BadRequest",
                   "preconditions: not supported on this resource (nothing was deleted)");
    return !has_pre;
}

static json_t *parse_body(route_ctx_t *r)
{
    json_error_t jerr;
    json_t *j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        sl_autofree char *msg = xasprintf("request body: invalid JSON at line %d, column %d: %s",
                                          jerr.line, jerr.column, jerr.text);
        send_error(r->c, 400, "BadRequest", msg);
    }
    return j;
}

/* A PUT's (or POST's) dryRun and body: NULL once an error was sent. The
 * body is an object whose metadata, name and namespace, when given, have
 * their types: a name of the wrong type is an error, not absent (which
 * would let the URL's name stand in for it). */
static json_t *put_body(route_ctx_t *r, int *dry_run)
{
    *dry_run = dry_run_param(r);
    json_t *j = *dry_run < 0 ? NULL : parse_body(r);
    if (!j)
        return NULL;
    json_t *md = json_object_get(j, "metadata");
    json_t *name = json_object_get(md, "name"), *ns = json_object_get(md, "namespace");
    const char *bad = !json_is_object(j)              ? "request body: must be a JSON object"
                      : md && !json_is_object(md)     ? "metadata: must be an object"
                      : name && !json_is_string(name) ? "metadata.name: must be a string"
                      : ns && !json_is_string(ns)     ? "metadata.namespace: must be a string"
                                                      : NULL;
    if (bad) {
        json_decref(j);
        send_error(r->c, 400, "BadRequest", bad);
        return NULL;
    }
    return j;
}

static void route_services(route_ctx_t *r, const char *ns, const char *name)
{
    api_conn_t *c = r->c;
    sl_controller_t *ctl = c->api->ctl;
    json_t *body = NULL;
    int st;
    if (!name && method_is(r, "GET")) {
        c->refs++;
        sl_controller_list_services(ctl, ns, text_done, c);
    } else if ((!name && method_is(r, "POST")) || (name && method_is(r, "PUT"))) {
        int dry_run;
        json_t *svc = put_body(r, &dry_run);
        if (!svc)
            return;
        const char *bname = sl_json_str(svc, "metadata.name");
        const char *bns = sl_json_str(svc, "metadata.namespace");
        if (name && bname && strcmp(name, bname)) {
            json_decref(svc);
            send_error(c, 400, "BadRequest", "metadata.name: does not match the name in the URL");
            return;
        }
        if (bns && strcmp(bns, ns)) {
            json_decref(svc);
            send_error(c, 400, "BadRequest",
                       "metadata.namespace: does not match the namespace in the URL");
            return;
        }
        if (name && !bname && json_is_object(json_object_get(svc, "metadata")))
            json_object_set_new(json_object_get(svc, "metadata"), "name", json_string(name));
        c->refs++;
        sl_controller_apply(ctl, svc, ns,
                            (name ? 0 : SL_APPLY_CREATE) | (dry_run ? SL_APPLY_DRY_RUN : 0),
                            op_done, c);
    } else if (name && method_is(r, "GET")) {
        st = sl_controller_get_service(ctl, ns, name, &body);
        send_json(c, st, body);
    } else if (name && method_is(r, "DELETE")) {
        json_t *opts;
        const json_t *pre;
        if (!delete_options(r, &opts, &pre))
            return;
        st = sl_controller_delete_service(ctl, ns, name, pre, &body);
        json_decref(opts);
        send_json(c, st, body);
    } else {
        send_error(c, 405, "MethodNotAllowed", "method not allowed on this resource");
    }
}

/* seg[at], seg[at + 1] = "namespaces", NS: *ns = NS, *k = at + 2; else NULL
 * and at.
 * False, the 400 sent, when NS is not a namespace's name: a DNS-1123
 * label, as in Kubernetes (it names directories and cgroups too). */
static bool path_namespace(route_ctx_t *r, char **seg, size_t n, size_t at, const char **ns,
                           size_t *k)
{
    *ns = NULL;
    *k = at;
    if (n < at + 2 || strcmp(seg[at], "namespaces") != 0)
        return true;
    if (!sl_is_dns1123_label(seg[at + 1])) {
        sl_autofree char *msg =
            xasprintf("namespace \"%.80s\": must be a DNS-1123 label (lower-case "
                      "letters, digits and '-', at most 63 characters)",
                      seg[at + 1]);
        send_error(r->c, 400, "BadRequest", msg);
        return false;
    }
    *ns = seg[at + 1];
    *k = at + 2;
    return true;
}

static void route_knative(route_ctx_t *r, char **seg, size_t n)
{
    /* seg: apis serving.knative.dev v1 [namespaces NS] KIND [NAME] */
    const char *ns;
    size_t k;
    if (!path_namespace(r, seg, n, 3, &ns, &k))
        return;
    if (k >= n) {
        send_error(r->c, 404, "NotFound", "no such API path");
        return;
    }
    const char *kind = seg[k];
    const char *name = k + 1 < n ? seg[k + 1] : NULL;
    if (k + 2 < n) {
        send_error(r->c, 404, "NotFound", "no such API path");
        return;
    }
    if (!strcmp(kind, "services")) {
        if (!ns && (name || !method_is(r, "GET"))) {
            send_error(r->c, 404, "NotFound", "use /namespaces/NS/services/NAME");
            return;
        }
        route_services(r, ns, name);
    } else if (!strcmp(kind, "revisions") && name && ns && method_is(r, "DELETE")) {
        if (!delete_plain(r))
            return;
        json_t *body = NULL;
        int st = sl_controller_delete_revision(r->c->api->ctl, ns, name, &body);
        send_json(r->c, st, body);
    } else if (!strcmp(kind, "revisions") && !name && method_is(r, "GET")) {
        char buf[256];
        r->c->refs++;
        sl_controller_list_revisions(r->c->api->ctl, ns, service_filter(r, buf, sizeof(buf)),
                                     text_done, r->c);
    } else {
        send_error(r->c, 404, "NotFound", "no such API path");
    }
}

static void route_sluice(route_ctx_t *r, char **seg, size_t n)
{
    /* seg: apis sluice.dev v1 ... */
    api_conn_t *c = r->c;
    sl_controller_t *ctl = c->api->ctl;
    json_t *body = NULL;
    char buf[256];
    if (n == 4 && !strcmp(seg[3], "images")) {
        if (method_is(r, "GET")) {
            int st = sl_controller_list_images(ctl, &body);
            send_json(c, st, body);
        } else if (method_is(r, "POST")) {
            if (dry_run_refused(r, "image imports", "imported"))
                return;
            json_t *req = parse_body(r);
            if (!req)
                return;
            const char *ref = sl_json_str(req, "ref");
            if (!ref) {
                json_decref(req);
                send_error(c, 400, "BadRequest", "ref: is required");
                return;
            }
            c->refs++;
            sl_controller_import_image(ctl, ref, op_done, c);
            json_decref(req);
        } else {
            send_error(c, 405, "MethodNotAllowed", "use GET or POST");
        }
        return;
    }
    const char *ns;
    size_t k;
    if (!path_namespace(r, seg, n, 3, &ns, &k))
        return;
    if (k < n && !strcmp(seg[k], "usage") && k + 1 == n && method_is(r, "GET")) {
        char sbuf[64];
        const char *since = query_get(r->query, "since", sbuf, sizeof(sbuf));
        int64_t since_wall = 0;
        if (since && sl_parse_int64(since, 0, INT64_MAX, &since_wall) < 0) {
            send_error(c, 400, "BadRequest", "since: must be epoch seconds");
            return;
        }
        int st =
            sl_controller_usage(ctl, ns, service_filter(r, buf, sizeof(buf)), since_wall, &body);
        send_json(c, st, body);
    } else if (k < n && !strcmp(seg[k], "instances") && k + 1 == n && method_is(r, "GET")) {
        int st = sl_controller_list_instances(ctl, ns, service_filter(r, buf, sizeof(buf)), &body);
        send_json(c, st, body);
    } else if (ns && k + 3 == n && !strcmp(seg[k], "services") && !strcmp(seg[k + 2], "logs") &&
               method_is(r, "GET")) {
        const char *f = query_get(r->query, "follow", buf, sizeof(buf));
        handle_logs(c, ns, seg[k + 1], f && (!strcmp(f, "1") || !strcmp(f, "true")),
                    r->msg->minor_version == 0);
    } else {
        send_error(c, 404, "NotFound", "no such API path");
    }
}

static void route_runtimeclasses(route_ctx_t *r, const char *name)
{
    sl_controller_t *ctl = r->c->api->ctl;
    json_t *body = NULL;
    int st;
    if (!name && method_is(r, "GET")) {
        st = sl_controller_list_runtimeclasses(ctl, &body);
    } else if (name && method_is(r, "GET")) {
        st = sl_controller_get_runtimeclass(ctl, name, &body);
    } else if (name && method_is(r, "PUT")) {
        int dry_run;
        json_t *obj = put_body(r, &dry_run);
        if (!obj)
            return;
        st = sl_controller_put_runtimeclass(ctl, name, obj, dry_run, &body);
        json_decref(obj);
    } else if (name && method_is(r, "DELETE")) {
        json_t *opts;
        const json_t *pre;
        if (!delete_options(r, &opts, &pre))
            return;
        st = sl_controller_delete_runtimeclass(ctl, name, pre, &body);
        json_decref(opts);
    } else {
        send_error(r->c, 405, "MethodNotAllowed", "use GET, PUT or DELETE");
        return;
    }
    send_json(r->c, st, body);
}

/* Kubernetes' core API: /api/v1/[namespaces/NS/]{secrets,configmaps}[/NAME]. */
static void route_core(route_ctx_t *r, char **seg, size_t n)
{
    sl_controller_t *ctl = r->c->api->ctl;
    const char *ns;
    size_t k;
    if (!path_namespace(r, seg, n, 2, &ns, &k))
        return;
    sl_data_kind_t kind;
    if (k < n && !strcmp(seg[k], "secrets"))
        kind = SL_DATA_SECRET;
    else if (k < n && !strcmp(seg[k], "configmaps"))
        kind = SL_DATA_CONFIGMAP;
    else {
        send_error(r->c, 404, "NotFound", "no such API path");
        return;
    }
    const char *name = k + 1 < n ? seg[k + 1] : NULL;
    if (k + 2 < n || (!ns && (name || !method_is(r, "GET")))) {
        send_error(r->c, 404, "NotFound", "no such API path");
        return;
    }
    json_t *body = NULL;
    int st;
    if (!name && method_is(r, "GET")) {
        st = sl_controller_list_data(ctl, kind, ns, &body);
    } else if (name && method_is(r, "GET")) {
        st = sl_controller_get_data(ctl, kind, ns, name, &body);
    } else if ((name && method_is(r, "PUT")) || (!name && method_is(r, "POST"))) {
        int dry_run;
        json_t *obj = put_body(r, &dry_run);
        if (!obj)
            return;
        /* POST creates, named by the body (Kubernetes' create) */
        const char *bname = name ? name : sl_json_str(obj, "metadata.name");
        if (!bname) {
            json_decref(obj);
            send_error(r->c, 422, "Invalid", "metadata.name: is required");
            return;
        }
        sl_autofree char *oname = xstrdup(bname);
        st = sl_controller_put_data(ctl, kind, ns, oname, obj, !name, dry_run, &body);
        json_decref(obj);
    } else if (name && method_is(r, "DELETE")) {
        json_t *opts;
        const json_t *pre;
        if (!delete_options(r, &opts, &pre))
            return;
        st = sl_controller_delete_data(ctl, kind, ns, name, pre, &body);
        json_decref(opts);
    } else {
        send_error(r->c, 405, "MethodNotAllowed",
                   name ? "use GET, PUT or DELETE" : "use GET or POST");
        return;
    }
    send_json(r->c, st, body);
}

/* Constant-time comparison of the request's bearer token. */
static bool token_ok(const api_conn_t *c, const sl_http_msg_t *msg)
{
    const char *want = c->api->token;
    sl_str_t auth = sl_http_header_get(msg, SL_STR("Authorization"));
    static const char prefix[] = "Bearer ";
    size_t pl = sizeof(prefix) - 1, wl = want ? strlen(want) : 0;
    if (!want || !auth.p || auth.len != pl + wl || strncasecmp(auth.p, prefix, pl))
        return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < wl; i++)
        diff |= (unsigned char)(auth.p[pl + i] ^ want[i]);
    return diff == 0;
}

static void send_unauthorized(api_conn_t *c)
{
    send_error(c, 401, "Unauthorized",
               "this API listener needs \"Authorization: Bearer TOKEN\" (see --api-token-file)");
}

static void dispatch_request(route_ctx_t *r)
{
    sl_str_t p = r->msg->path;
    if (!p.p || p.len == 0 || p.p[0] != '/') { /* CONNECT's authority, OPTIONS' "*", a URL */
        send_error(r->c, 400, "BadRequest", "the request target must be a path (\"/...\")");
        return;
    }
    size_t qpos = p.len;
    for (size_t i = 0; i < p.len; i++)
        if (p.p[i] == '?') {
            qpos = i;
            break;
        }
    if (qpos >= sizeof(r->path) || p.len - qpos >= sizeof(r->query)) {
        send_error(r->c, 414, "URITooLong", "request target too long");
        return;
    }
    memcpy(r->path, p.p, qpos);
    r->path[qpos] = '\0';
    size_t ql = qpos < p.len ? p.len - qpos - 1 : 0;
    memcpy(r->query, p.p + qpos + (ql ? 1 : 0), ql);
    r->query[ql] = '\0';
    if (!strcmp(r->path, "/healthz")) {
        send_response(r->c, 200, "text/plain", "ok\n", 3);
        r->c->busy = false;
        conn_process(r->c);
        return;
    }
    if (r->c->needs_token && !token_ok(r->c, r->msg)) {
        send_unauthorized(r->c);
        return;
    }
    conn_not_anon(r->c); /* it has the token: one of API_TCP_CONNS_MAX only */
    if (r->c->metrics_only && strcmp(r->path, "/metrics") && strcmp(r->path, "/healthz")) {
        send_error(r->c, 404, "NotFound", "this listener serves /metrics and /healthz only");
        return;
    }
    if (!strcmp(r->path, "/metrics") && method_is(r, "GET")) {
        char *text = NULL;
        size_t len = 0;
        if (sl_controller_metrics(r->c->api->ctl, &text, &len) < 0) {
            send_error(r->c, 500, "InternalError", "metrics unavailable");
            return;
        }
        send_response(r->c, 200, SL_METRICS_CONTENT_TYPE, text, len);
        free(text);
        r->c->busy = false;
        conn_process(r->c);
        return;
    }
    if (!strcmp(r->path, "/version")) {
        send_json(r->c, 200, json_pack("{s:s,s:s}", "version", sl_version, "commit", sl_git_rev));
        return;
    }
    char *seg[12];
    size_t n = split_path(r->path, seg, 10);
    if (n >= 4 && !strcmp(seg[0], "apis") && !strcmp(seg[1], SL_API_GROUP) && !strcmp(seg[2], "v1"))
        route_knative(r, seg, n);
    else if (n >= 4 && !strcmp(seg[0], "apis") && !strcmp(seg[1], "node.k8s.io") &&
             !strcmp(seg[2], "v1") && !strcmp(seg[3], "runtimeclasses") && n <= 5)
        route_runtimeclasses(r, n == 5 ? seg[4] : NULL);
    else if (n >= 3 && !strcmp(seg[0], "api") && !strcmp(seg[1], "v1"))
        route_core(r, seg, n);
    else if (n >= 4 && !strcmp(seg[0], "apis") && !strcmp(seg[1], "sluice.dev") &&
             !strcmp(seg[2], "v1"))
        route_sluice(r, seg, n);
    else
        send_error(r->c, 404, "NotFound", "no such API path");
}

/* ---- request reading -------------------------------------------------- */

static void consume(api_conn_t *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static void on_idle_timeout(uv_timer_t *t)
{
    api_conn_t *c = t->data;
    size_t queued = conn_queued(c);
    if (queued > 0 && queued < c->idle_queued) { /* it took some: more time */
        conn_idle_start(c);
        return;
    }
    conn_close(c);
}

/* The Status reason of a request the parser refused. */
static const char *parse_error_reason(int status)
{
    switch (status) {
    case 413:
        return "RequestEntityTooLarge";
    case 414:
        return "URITooLong";
    case 431:
        return "RequestHeaderFieldsTooLarge";
    case 501:
        return "NotImplemented";
    case 505:
        return "HTTPVersionNotSupported";
    default:
        return "BadRequest";
    }
}

/* A TCP client has API_TCP_IDLE_MS for each of: sending a whole request
 * (from the connection, or from its last answer), and making progress on
 * the answers queued for it (any byte taken restarts it: on_idle_timeout).
 * A client that never reads what it asked for is closed, as one that never
 * asks; one that reads slowly is not. */
static void conn_idle_arm(api_conn_t *c)
{
    if (!c->idle || c->closing || c->follow || uv_is_active((uv_handle_t *)c->idle))
        return;
    if (conn_queued(c) > 0 || (!c->busy && !c->finished))
        conn_idle_start(c);
}

/* Whether the socket is read. Not while the answers queued pass
 * API_QUEUE_MAX (a client that pipelines requests and reads nothing would
 * make the daemon queue answers without end), nor while the requests
 * buffered pass API_BUF_MAX (at least one whole request is in; the rest
 * waits for it to be answered). After the last answer only a lingering
 * close reads, to drop what still comes. */
static void conn_reading(api_conn_t *c)
{
    bool want =
        !c->closing &&
        (c->finished ? c->lingering : conn_queued(c) <= API_QUEUE_MAX && c->len <= API_BUF_MAX);
    if (want == c->reading)
        return;
    c->reading = want;
    if (want)
        uv_read_start((uv_stream_t *)&c->h, alloc_cb, read_cb);
    else
        uv_read_stop((uv_stream_t *)&c->h);
}

static void on_resume(uv_idle_t *h)
{
    sl_api_t *api = h->data;
    api_conn_t *batch[64];
    size_t n = 0;
    for (api_conn_t *c = api->conns; c && n < SL_ARRAY_LEN(batch); c = c->next) {
        if (c->resume) {
            c->resume = false; /* its reference passes to batch[] */
            api->n_resume--;
            batch[n++] = c;
        }
    }
    if (api->n_resume == 0)
        uv_idle_stop(h);
    for (size_t i = 0; i < n; i++) {
        conn_process(batch[i]);
        conn_unref(batch[i]);
    }
}

/* c has requests left after its turn's API_BATCH: on the next turn. */
static void conn_resume_later(api_conn_t *c)
{
    sl_api_t *api = c->api;
    if (c->resume)
        return;
    if (!api->resume) {
        api->resume = xcalloc(1, sizeof(*api->resume));
        uv_idle_init(api->loop, api->resume);
        api->resume->data = api;
        api->open_handles++;
    }
    c->resume = true;
    c->refs++;
    if (api->n_resume++ == 0)
        uv_idle_start(api->resume, on_resume);
}

/* Answers the requests buffered, one after another, for as long as each
 * is answered at once, API_BATCH of them in this turn. An answer given from
 * inside (send_json & co.) calls back here; that call returns at once and
 * the loop below goes on, so a thousand pipelined requests take one stack
 * frame, not a thousand. */
static void conn_process(api_conn_t *c)
{
    if (c->processing || c->resume)
        return;
    c->processing = true;
    c->refs++;
    for (int budget = API_BATCH; conn_next(c);) {
        if (--budget == 0) {
            conn_resume_later(c);
            break;
        }
    }
    c->processing = false;
    conn_reading(c);
    conn_idle_arm(c); /* an answer queued, the last one too, has its timeout */
    conn_unref(c);
}

/* A request refused before its body is read (unparsable, 411, 413, no
 * token): the answer goes out with Connection: close, then a lingering
 * close drops what the client still sends, so that it reads the answer
 * rather than a reset. */
static void conn_refuse(api_conn_t *c)
{
    c->keep_alive = false;
    c->linger = true;
    c->busy = true;
    if (c->idle)
        uv_timer_stop(c->idle);
}

/* Takes the next whole request from the buffer and dispatches it; false
 * when there is none to take now. */
static bool conn_next(api_conn_t *c)
{
    if (c->closing || c->finished || c->busy || c->follow)
        return false;
    if (c->len == 0 || conn_queued(c) > API_QUEUE_MAX)
        return false;
    sl_http_msg_t msg;
    int status = 400;
    const char *why = "bad request";
    int rc = sl_http_parse_request(c->buf, c->len, &msg, NULL, &status, &why);
    if (rc == SL_AGAIN)
        return false;
    if (rc < 0) {
        conn_refuse(c);
        send_error(c, status, parse_error_reason(status), why);
        return false;
    }
    size_t head = (size_t)rc;
    size_t body_len = 0;
    /* Whether a body will be taken is known from the head: a client of the
     * TCP API without the token, or any of the metrics listener, is
     * answered before its body is read and cannot make the daemon hold up
     * to API_MAX_BODY for it. */
    if (msg.body != SL_BODY_NONE && (c->metrics_only || (c->needs_token && !token_ok(c, &msg)))) {
        conn_refuse(c);
        if (c->metrics_only)
            send_error(c, 413, "RequestEntityTooLarge", "this listener takes no request bodies");
        else
            send_unauthorized(c);
        return false;
    }
    if (msg.body == SL_BODY_LENGTH) {
        if (msg.content_length > API_MAX_BODY) {
            conn_refuse(c);
            send_error(c, 413, "RequestEntityTooLarge", "request body larger than 4 MiB");
            return false;
        }
        if (c->len - head < msg.content_length)
            return false;
        body_len = (size_t)msg.content_length;
    } else if (msg.body == SL_BODY_CHUNKED) {
        conn_refuse(c);
        send_error(c, 411, "LengthRequired", "send the body with Content-Length");
        return false;
    }
    c->keep_alive = msg.keep_alive;
    c->busy = true;
    if (c->idle)
        uv_timer_stop(c->idle);
    /* Answering may go on to the next pipelined request in c->buf, so this
     * one moves out of the buffer first and is parsed again where it lands
     * (its slices must point into the copy). */
    sl_autofree char *copy = xmalloc(head + body_len + 1);
    memcpy(copy, c->buf, head + body_len);
    consume(c, head + body_len);
    sl_http_parse_request(copy, head, &msg, NULL, &status, &why);
    route_ctx_t r = {.c = c, .msg = &msg, .body = copy + head, .body_len = body_len};
    dispatch_request(&r);
    return true;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    api_conn_t *c = h->data;
    size_t need = c->len + 65536;
    if (need > c->cap) {
        c->cap = need;
        c->buf = xrealloc(c->buf, c->cap);
    }
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    api_conn_t *c = s->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (c->lingering) {
        c->len = 0; /* a refused body: dropped */
        conn_linger_arm(c);
        return;
    }
    c->len += (size_t)n;
    conn_reading(c);
    conn_process(c);
}

typedef enum { CONN_UNIX, CONN_METRICS, CONN_TCP_API } conn_kind_t;

/* API_TCP_ANON_MAX connections without the token are open: the oldest
 * that is not being answered goes, so that a flood of them delays a
 * client with the token (which must win a slot) but cannot lock it out. */
static void evict_anon(sl_api_t *api)
{
    api_conn_t *oldest = NULL;
    for (api_conn_t *x = api->conns; x; x = x->next) /* newest first */
        if (x->anon && !x->busy && !x->closing)
            oldest = x;
    if (oldest)
        conn_close(oldest);
}

static void accept_conn(uv_stream_t *server, conn_kind_t kind)
{
    sl_api_t *api = server->data;
    api_conn_t *c = xcalloc(1, sizeof(*c));
    c->api = api;
    c->refs = 1;
    c->metrics_only = kind == CONN_METRICS;
    c->needs_token = kind == CONN_TCP_API;
    if (kind != CONN_UNIX) {
        uv_tcp_init(api->loop, &c->h.tcp);
        uv_tcp_nodelay(&c->h.tcp, 1);
    } else {
        uv_pipe_init(api->loop, &c->h.pipe, 0);
    }
    c->h.pipe.data = c;
    api->open_handles++;
    if (kind != CONN_UNIX) {
        c->counted = kind == CONN_METRICS ? &api->n_metrics : &api->n_api;
        (*c->counted)++;
    }
    int most = kind == CONN_METRICS ? METRICS_TCP_CONNS_MAX : API_TCP_CONNS_MAX;
    bool full = c->counted && *c->counted > most;
    if (uv_accept(server, (uv_stream_t *)&c->h) < 0 || full) {
        if (full && (!api->full_warn_ms || uv_now(api->loop) - api->full_warn_ms >= 10000)) {
            api->full_warn_ms = uv_now(api->loop);
            sl_warn(MOD, "%d connections open on the %s listener: closing new ones", most,
                    kind == CONN_METRICS ? "metrics" : "API");
        }
        c->closing = true;
        uv_close((uv_handle_t *)&c->h, conn_closed);
        return;
    }
    if (kind == CONN_TCP_API) {
        c->anon = true; /* not yet in the list: not evicted */
        if (++api->n_anon > API_TCP_ANON_MAX)
            evict_anon(api);
    }
    c->next = api->conns;
    if (api->conns)
        api->conns->prev = c;
    api->conns = c;
    if (kind != CONN_UNIX)
        c->idle = conn_timer(c);
    conn_reading(c);
    conn_process(c); /* starts the idle timer */
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status >= 0)
        accept_conn(server, CONN_UNIX);
}

static void on_metrics_connection(uv_stream_t *server, int status)
{
    if (status >= 0)
        accept_conn(server, CONN_METRICS);
}

static void on_tcp_api_connection(uv_stream_t *server, int status)
{
    if (status >= 0)
        accept_conn(server, CONN_TCP_API);
}

/* Bind and listen on ADDR:PORT ("[v6]:port" too); *slot owns the handle. */
static int listen_tcp(sl_api_t *api, const char *flag, const char *addr, uv_connection_cb cb,
                      uv_tcp_t **slot, sl_error_t *err)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    int64_t port;
    if (!colon || (size_t)(colon - addr) >= sizeof(host) ||
        sl_parse_int64(colon + 1, 0, 65535, &port) < 0)
        return sl_error_set(err, EINVAL, "%s: expected ADDR:PORT, got '%s'", flag, addr);
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    struct sockaddr_storage ss;
    size_t hl = strlen(host);
    int rc;
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        rc = uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)&ss);
    } else {
        rc = uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss);
    }
    if (rc < 0)
        return sl_error_set(err, EINVAL, "%s: bad address '%s'", flag, addr);
    uv_tcp_t *l = xcalloc(1, sizeof(*l));
    uv_tcp_init(api->loop, l);
    l->data = api;
    api->open_handles++;
    rc = uv_tcp_bind(l, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)l, 128, cb);
    *slot = l;
    if (rc < 0)
        return sl_error_set(err, -rc, "%s %s: %s", flag, addr, uv_strerror(rc));
    return 0;
}

int sl_api_listen_metrics(sl_api_t *api, const char *addr, sl_error_t *err)
{
    int rc = listen_tcp(api, "--metrics-listen", addr, on_metrics_connection,
                        &api->metrics_listener, err);
    if (rc == 0)
        sl_info(MOD, "metrics on http://%s/metrics", addr);
    return rc;
}

int sl_api_listen_tcp(sl_api_t *api, const char *addr, const char *token, sl_error_t *err)
{
    if (!token || strlen(token) < 16)
        return sl_error_set(err, EINVAL,
                            "--api-listen: the API token must be at least 16 characters");
    free(api->token);
    api->token = xstrdup(token);
    int rc = listen_tcp(api, "--api-listen", addr, on_tcp_api_connection, &api->tcp_listener, err);
    if (rc == 0)
        sl_info(MOD, "API on http://%s (bearer token required)", addr);
    return rc;
}

int sl_api_new(uv_loop_t *loop, const char *socket_path, const char *state_dir,
               sl_controller_t *ctl, sl_api_t **out, sl_error_t *err)
{
    sl_api_t *api = xcalloc(1, sizeof(*api));
    api->loop = loop;
    api->ctl = ctl;
    api->state_dir = xstrdup(state_dir);
    api->path = xstrdup(socket_path);
    uv_pipe_init(loop, &api->listener, 0);
    api->listener.data = api;
    api->open_handles = 1;
    unlink(socket_path);
    mode_t old = umask(0177);
    int rc = uv_pipe_bind(&api->listener, socket_path);
    umask(old);
    if (rc == 0)
        rc = chmod(socket_path, 0600) < 0 ? -errno : 0;
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&api->listener, 128, on_connection);
    if (rc < 0) {
        sl_error_set(err, -rc, "API socket %s: %s", socket_path, uv_strerror(rc));
        uv_close((uv_handle_t *)&api->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        free(api->state_dir);
        free(api->path);
        free(api);
        return -1;
    }
    sl_info(MOD, "API listening on unix:%s", socket_path);
    *out = api;
    return 0;
}

static void listener_closed(uv_handle_t *h)
{
    sl_api_t *api = h->data;
    unlink(api->path);
    api_handle_closed(api);
}

void sl_api_close(sl_api_t *api, void (*cb)(void *), void *data)
{
    api->close_cb = cb;
    api->close_data = data;
    while (api->conns)
        conn_close(api->conns);
    if (api->metrics_listener) {
        uv_close((uv_handle_t *)api->metrics_listener, free_handle);
        api->metrics_listener = NULL;
    }
    if (api->tcp_listener) {
        uv_close((uv_handle_t *)api->tcp_listener, free_handle);
        api->tcp_listener = NULL;
    }
    if (api->resume) {
        uv_close((uv_handle_t *)api->resume, free_handle);
        api->resume = NULL;
    }
    uv_close((uv_handle_t *)&api->listener, listener_closed);
}

void sl_api_free(sl_api_t *api)
{
    if (!api)
        return;
    free(api->state_dir);
    free(api->path);
    free(api->token);
    free(api);
}
