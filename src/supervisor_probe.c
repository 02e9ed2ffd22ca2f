/*
 * supervisor_probe.c — an instance's startup, readiness and liveness
 * probes (Kubernetes' tcpSocket, httpGet and exec), run from the loop.
 *
 * Start-up polls the startup probe, if any, every few ms until it passes
 * (failing the instance once Kubernetes' budget for it is spent), then the
 * readiness probe the same way until it passes (the instance is then
 * READY); from then on an explicit readiness probe runs
 * every period and flips the instance's serving flag through readiness_cb,
 * and a liveness probe runs every period and stops the instance after
 * failure_threshold consecutive failures. The lifecycle itself (READY,
 * stopping, handles and finalizing) stays in supervisor.c; see
 * supervisor_int.h.
 */
#include "netns.h"
#include "oci_spec.h"
#include "supervisor_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>

#define MOD                 "supervisor"
#define PROBE_FAST_MS       2
#define PROBE_SLOW_MS       20
#define PROBE_FAST_FOR_NS   (1000 * 1000000ull)
#define PROBE_PERIOD_MS     10000 /* Kubernetes' defaults */
#define PROBE_TIMEOUT_MS    1000
#define PROBE_FAILURES      3
#define PROBE_EXEC_FIRST_MS 5
#define PROBE_EXEC_MAX_MS   50
#define STARTUP_SLOW_MS     1000 /* a startup probe after its first second */

/* One attempt at a time per probe; its timer paces the attempts and, while
 * one runs, is its timeout. Sockets are made inside the instance's network
 * namespace and watched with a uv_poll; exec probes are `RT exec` children
 * (sv_exec_start). The poll handle and the exec of an attempt live on the
 * heap and close on their own, so an abandoned attempt never holds up the
 * next one. */
struct sv_probe {
    sl_instance_t *inst;
    sl_probe_t cfg;   /* defaults applied; path and exec_cmd owned */
    const char *what; /* "readiness" | "liveness" | "startup" */
    bool is_default;  /* the built-in TCP readiness: start-up only */
    uv_timer_t timer; /* .data = inst, for on_handle_closed */
    int fd;
    uv_poll_t *io;
    sv_exec_t *exec; /* the exec attempt in flight */
    bool connected;
    bool holding; /* an attempt holds the app's CPU (sv_cpu_hold) */
    char *req;
    size_t req_len, sent, got;
    char resp[256];
    int successes, failures;
    unsigned backoff_ms;
    uint64_t since_ns;  /* start-up polling began */
    char last_why[160]; /* the last failure, for a start-up timeout's reason */
    /* grpc: the attempt's HTTP/2 session and what it has heard */
    nghttp2_session *h2;
    int h2_status, grpc_status; /* -1 until heard */
    uint8_t msg[64];
    size_t msg_len;
    bool h2_closed;
};

static void probe_fire(uv_timer_t *t);
static void probe_result(sv_probe_t *p, bool ok, const char *why);

static const char *probe_kind_name(sl_probe_kind_t k)
{
    return k == SL_PROBE_HTTP   ? "httpGet"
           : k == SL_PROBE_EXEC ? "exec"
           : k == SL_PROBE_GRPC ? "grpc"
                                : "tcpSocket";
}

static int probe_port(const sv_probe_t *p)
{
    return p->cfg.port > 0 ? p->cfg.port : p->inst->port;
}

sv_probe_t *sv_probe_new(sl_instance_t *inst, const sl_probe_t *cfg, const char *what)
{
    sv_probe_t *p = xcalloc(1, sizeof(*p));
    p->inst = inst;
    p->what = what;
    p->fd = -1;
    p->is_default = !cfg || cfg->kind == SL_PROBE_NONE;
    if (!p->is_default)
        p->cfg = *cfg;
    if (p->is_default)
        p->cfg.kind = SL_PROBE_TCP;
    p->cfg.path = xstrdup(p->cfg.kind == SL_PROBE_GRPC                ? (cfg->path ? cfg->path : "")
                          : p->cfg.kind == SL_PROBE_HTTP && cfg->path ? cfg->path
                                                                      : "/");
    p->cfg.headers = p->cfg.kind == SL_PROBE_HTTP && cfg->headers ? xstrdup(cfg->headers) : NULL;
    p->cfg.exec_cmd = NULL;
    if (p->cfg.kind == SL_PROBE_EXEC)
        p->cfg.exec_cmd = sl_strv_dup(cfg->exec_cmd, cfg->n_exec);
    if (p->cfg.period_ms <= 0)
        p->cfg.period_ms = PROBE_PERIOD_MS;
    if (p->cfg.timeout_ms <= 0)
        p->cfg.timeout_ms = PROBE_TIMEOUT_MS;
    if (p->cfg.success_threshold <= 0)
        p->cfg.success_threshold = 1;
    if (p->cfg.failure_threshold <= 0)
        p->cfg.failure_threshold = PROBE_FAILURES;
    uv_timer_init(inst->sup->loop, &p->timer);
    p->timer.data = inst;
    inst->handles++;
    return p;
}

void sv_probe_free(sv_probe_t *p)
{
    if (!p)
        return;
    free((char *)p->cfg.path);
    free((char *)p->cfg.headers);
    sl_strv_free((char **)p->cfg.exec_cmd);
    free(p->req);
    sl_closep(&p->fd);
    free(p);
}

/* Probes run while the container runs and nobody is stopping it. */
static bool probe_active(const sv_probe_t *p)
{
    const sl_instance_t *inst = p->inst;
    return inst->ctr.running && !inst->reap_pending && !inst->stop_requested && !inst->cleaning &&
           (inst->state == SL_INST_STARTING || inst->state == SL_INST_READY);
}

static void on_attempt_handle_closed(uv_handle_t *h)
{
    sv_probe_t *p = h->data;
    sl_instance_t *inst = p->inst;
    free(h);
    inst->handles--;
    sv_maybe_finalize(inst);
}

/* Drop what the attempt in flight holds; a running exec is killed and its
 * exit, when it comes, is ignored. */
static void attempt_end(sv_probe_t *p)
{
    uv_timer_stop(&p->timer);
    if (p->io) {
        uv_close((uv_handle_t *)p->io, on_attempt_handle_closed); /* off epoll now */
        p->io = NULL;
    }
    sl_closep(&p->fd);
    if (p->exec) {
        sv_exec_abandon(p->exec);
        p->exec = NULL;
    }
    free(p->req);
    p->req = NULL;
    if (p->h2) {
        nghttp2_session_del(p->h2);
        p->h2 = NULL;
    }
    p->connected = false;
    p->req_len = p->sent = p->got = 0;
    if (p->holding) {
        p->holding = false;
        sv_cpu_hold(p->inst, -1);
    }
}

static void probe_schedule(sv_probe_t *p, uint64_t ms)
{
    if (probe_active(p))
        uv_timer_start(&p->timer, probe_fire, ms, 0);
}

void sv_probes_stop(sl_instance_t *inst)
{
    sv_probe_t *ps[] = {inst->readiness, inst->liveness, inst->startup};
    for (size_t i = 0; i < SL_ARRAY_LEN(ps); i++)
        if (ps[i])
            attempt_end(ps[i]);
}

void sv_probes_close(sl_instance_t *inst)
{
    sv_probe_t *ps[] = {inst->readiness, inst->liveness, inst->startup};
    for (size_t i = 0; i < SL_ARRAY_LEN(ps); i++) {
        if (!ps[i])
            continue;
        attempt_end(ps[i]);
        sv_close_handle(inst, &ps[i]->timer);
    }
}

/* Whether header lines "Name: value\r\n..." hold one called name. */
static bool header_named(const char *lines, const char *name)
{
    size_t n = strlen(name);
    for (const char *l = lines; *l; l = strchr(l, '\n') + 1) {
        if (strncasecmp(l, name, n) == 0 && l[n] == ':')
            return true;
        if (!strchr(l, '\n'))
            break;
    }
    return false;
}

/* "HTTP/1.1 200 OK\r\n..." → 200; -1 when not a status line. */
static int http_status(const char *resp, size_t len)
{
    if (len < 12 || memcmp(resp, "HTTP/", 5) != 0)
        return -1;
    const char *sp = memchr(resp, ' ', len);
    if (!sp || (size_t)(sp - resp) + 4 > len)
        return -1;
    int code = 0;
    for (int i = 1; i <= 3; i++) {
        if (sp[i] < '0' || sp[i] > '9')
            return -1;
        code = code * 10 + (sp[i] - '0');
    }
    return code;
}

/* The status line is all an httpGet probe needs. */
static void http_read(sv_probe_t *p)
{
    ssize_t n = 0;
    size_t room;
    while ((room = sizeof(p->resp) - 1 - p->got) > 0 && !memchr(p->resp, '\n', p->got)) {
        n = read(p->fd, p->resp + p->got, room);
        if (n <= 0)
            break;
        p->got += (size_t)n;
    }
    char why[160];
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return; /* the rest of the line is still to come */
    if (n < 0) {
        snprintf(why, sizeof(why), "HTTP probe read: %s", strerror(errno));
        probe_result(p, false, why);
        return;
    }
    int code = http_status(p->resp, p->got);
    if (code < 0)
        snprintf(why, sizeof(why), "HTTP probe got no status line from port %d", probe_port(p));
    else
        snprintf(why, sizeof(why), "HTTP probe of %.80s failed with status %d", p->cfg.path, code);
    probe_result(p, code >= 200 && code < 400, why);
}

static void http_write(sv_probe_t *p)
{
    while (p->sent < p->req_len) {
        ssize_t n = write(p->fd, p->req + p->sent, p->req_len - p->sent);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n < 0) {
            char why[128];
            snprintf(why, sizeof(why), "HTTP probe write: %s", strerror(errno));
            probe_result(p, false, why);
            return;
        }
        p->sent += (size_t)n;
    }
}

/* ---- grpc: grpc.health.v1.Health/Check over HTTP/2 without TLS ---------- */

static int g_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                       const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    sv_probe_t *p = ud;
    int v = vl && vl < 9 ? 0 : -2; /* -2: not a number */
    for (size_t i = 0; i < vl && v >= 0; i++)
        v = value[i] >= '0' && value[i] <= '9' ? v * 10 + (value[i] - '0') : -2;
    if (nl == 7 && !memcmp(name, ":status", 7))
        p->h2_status = v;
    else if (nl == 11 && !memcmp(name, "grpc-status", 11))
        p->grpc_status = v;
    return 0;
}

static int g_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                     void *ud)
{
    sv_probe_t *p = ud;
    size_t k = len < sizeof(p->msg) - p->msg_len ? len : sizeof(p->msg) - p->msg_len;
    memcpy(p->msg + p->msg_len, data, k);
    p->msg_len += k;
    return 0;
}

static int g_on_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    ((sv_probe_t *)ud)->h2_closed = true;
    return 0;
}

static ssize_t g_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                      nghttp2_data_source *src, void *ud)
{
    sv_probe_t *p = ud;
    /* One length-prefixed message: HealthCheckRequest{service = 1} */
    size_t sl = strlen(p->cfg.path), n = 0;
    if (sl > 1024)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* service.c allows 1024 */
    uint8_t pb[1040];
    if (sl) {
        pb[n++] = 0x0a; /* field 1, length-delimited */
        for (size_t v = sl;; v >>= 7) {
            pb[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
            if (v <= 0x7f)
                break;
        }
        memcpy(pb + n, p->cfg.path, sl);
        n += sl;
    }
    if (length < n + 5)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    buf[0] = 0;
    buf[1] = (uint8_t)(n >> 24);
    buf[2] = (uint8_t)(n >> 16);
    buf[3] = (uint8_t)(n >> 8);
    buf[4] = (uint8_t)n;
    memcpy(buf + 5, pb, n);
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)(n + 5);
}

/* Queue what the session has to send after p->req[p->sent..]. */
static void grpc_take_output(sv_probe_t *p)
{
    const uint8_t *data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(p->h2, &data)) > 0) {
        p->req = xrealloc(p->req, p->req_len + (size_t)n);
        memcpy(p->req + p->req_len, data, (size_t)n);
        p->req_len += (size_t)n;
    }
}

static void grpc_prepare(sv_probe_t *p)
{
    static nghttp2_session_callbacks *cbs;
    if (!cbs) {
        nghttp2_session_callbacks_new(&cbs);
        nghttp2_session_callbacks_set_on_header_callback(cbs, g_on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, g_on_data);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, g_on_close);
    }
    nghttp2_session_client_new(&p->h2, cbs, p);
    p->h2_status = p->grpc_status = -1;
    p->msg_len = 0;
    p->h2_closed = false;
    char authority[32];
    snprintf(authority, sizeof(authority), "127.0.0.1:%d", probe_port(p));
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nv[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":authority", authority),
        NV(":path", "/grpc.health.v1.Health/Check"),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "sluice-probe"),
    };
#undef NV
    nghttp2_submit_settings(p->h2, NGHTTP2_FLAG_NONE, NULL, 0);
    nghttp2_data_provider body = {.read_callback = g_body};
    nghttp2_submit_request(p->h2, NULL, nv, SL_ARRAY_LEN(nv), &body, NULL);
    grpc_take_output(p);
}

/* grpc.health.v1.HealthCheckResponse.ServingStatus */
static const char *serving_status_name(int st)
{
    static const char *names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    return st >= 0 && st < 4 ? names[st] : "(unknown)";
}

/* status (field 1, varint) of the one message in p->msg; 0 = UNKNOWN
 * (the field left out), -1 = no message or one that does not parse */
static int grpc_serving_status(const sv_probe_t *p)
{
    if (p->msg_len < 5 || p->msg[0] != 0)
        return -1;
    size_t len =
        (size_t)p->msg[1] << 24 | (size_t)p->msg[2] << 16 | (size_t)p->msg[3] << 8 | p->msg[4];
    if (len > p->msg_len - 5)
        return -1;
    const uint8_t *m = p->msg + 5, *end = m + len;
    int status = 0;
    while (m < end) {
        uint8_t tag = *m++;
        uint64_t v = 0;
        int shift = 0;
        if ((tag & 7) != 0 && (tag & 7) != 2)
            return -1; /* only varints and length-delimited fields expected */
        do {
            if (m >= end || shift > 63)
                return -1;
            v |= (uint64_t)(*m & 0x7f) << shift;
            shift += 7;
        } while (*m++ & 0x80);
        if ((tag & 7) == 2) {
            if (v > (uint64_t)(end - m))
                return -1;
            m += v; /* unknown length-delimited field: skipped */
        } else if (tag == 0x08) {
            status = v > 1000 ? -1 : (int)v;
        }
    }
    return status;
}

static void grpc_read(sv_probe_t *p)
{
    char buf[4096], why[160];
    ssize_t n;
    while ((n = read(p->fd, buf, sizeof(buf))) > 0) {
        bool http1 = p->got == 0 && n >= 5 && !memcmp(buf, "HTTP/", 5);
        p->got += (size_t)n;
        if (http1 || nghttp2_session_mem_recv(p->h2, (const uint8_t *)buf, (size_t)n) < 0) {
            snprintf(why, sizeof(why), "gRPC probe: port %d does not speak HTTP/2", probe_port(p));
            probe_result(p, false, why);
            return;
        }
        if (p->h2_closed)
            break;
    }
    if (!p->h2_closed) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!nghttp2_session_want_read(p->h2) && !nghttp2_session_want_write(p->h2)) {
                snprintf(why, sizeof(why), "gRPC probe: the HTTP/2 session ended (%s)",
                         "GOAWAY or a protocol error");
                probe_result(p, false, why);
                return;
            }
            grpc_take_output(p); /* SETTINGS acknowledgements, window updates */
            return;
        }
        snprintf(why, sizeof(why), "gRPC probe: %s before the answer",
                 n == 0 ? "connection closed" : strerror(errno));
        probe_result(p, false, why);
        return;
    }
    int st = grpc_serving_status(p);
    if (p->h2_status != 200)
        snprintf(why, sizeof(why), "gRPC probe: HTTP status %d", p->h2_status);
    else if (p->grpc_status != 0)
        snprintf(why, sizeof(why), "gRPC probe: grpc-status %d%s", p->grpc_status,
                 p->grpc_status == 12 ? " (UNIMPLEMENTED: no grpc.health.v1.Health service)" : "");
    else
        snprintf(why, sizeof(why), "gRPC probe: service \"%.60s\" is %s", p->cfg.path,
                 serving_status_name(st));
    probe_result(p, p->h2_status == 200 && p->grpc_status == 0 && st == 1, why);
}

static void on_probe_io(uv_poll_t *h, int status, int events)
{
    sv_probe_t *p = h->data;
    char why[128];
    /* libuv reports POLLERR as UV_EBADF; a refused connect is one, and
     * the socket's own error says which */
    if (status < 0 && (p->connected || status != UV_EBADF)) {
        snprintf(why, sizeof(why), "%s probe: %s", probe_kind_name(p->cfg.kind),
                 uv_strerror(status));
        probe_result(p, false, why);
        return;
    }
    if (!p->connected) {
        int e = 0;
        socklen_t len = sizeof(e);
        if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
            e = errno;
        if (e == 0 && status < 0)
            e = EBADF;
        if (e != 0) {
            snprintf(why, sizeof(why), "dial tcp 127.0.0.1:%d: %s", probe_port(p), strerror(e));
            probe_result(p, false, why);
            return;
        }
        p->connected = true;
        if (p->cfg.kind == SL_PROBE_TCP) {
            probe_result(p, true, NULL);
            return;
        }
    }
    if (p->cfg.kind == SL_PROBE_GRPC) {
        /* HTTP/2 both ways at once: frames to send (SETTINGS ACK, window
         * updates) must not stop the reading, nor reading the sending */
        if (p->sent < p->req_len)
            http_write(p);
        if (p->io && (events & (UV_READABLE | UV_DISCONNECT)))
            grpc_read(p);
        if (p->io)
            uv_poll_start(p->io, UV_READABLE | (p->sent < p->req_len ? UV_WRITABLE : 0),
                          on_probe_io);
        return;
    }
    if (p->sent < p->req_len) {
        http_write(p);
        if (p->io && p->sent == p->req_len)
            uv_poll_start(p->io, UV_READABLE, on_probe_io);
        return;
    }
    if (events & (UV_READABLE | UV_DISCONNECT))
        http_read(p);
}

/* TCP and HTTP: a non-blocking connect from inside the namespace. */
static int attempt_socket(sv_probe_t *p, char *why, size_t why_len)
{
    sl_instance_t *inst = p->inst;
    sl_error_t err = {0};
    p->fd = sl_netns_socket(inst->netns_fd, inst->sup->host_netns, AF_INET,
                            SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, &err);
    if (p->fd < 0) {
        snprintf(why, why_len, "%.200s", err.msg);
        return -1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)probe_port(p))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(p->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
        snprintf(why, why_len, "dial tcp 127.0.0.1:%d: %s", probe_port(p), strerror(errno));
        return -1;
    }
    if (p->cfg.kind == SL_PROBE_GRPC)
        grpc_prepare(p);
    if (p->cfg.kind == SL_PROBE_HTTP && !p->req) {
        const char *h = p->cfg.headers ? p->cfg.headers : "";
        char host[32] = "";
        if (!header_named(h, "Host"))
            snprintf(host, sizeof(host), "Host: 127.0.0.1:%d\r\n", probe_port(p));
        p->req =
            xasprintf("GET %s HTTP/1.1\r\n%s%s%s%sConnection: close\r\n\r\n", p->cfg.path, host,
                      header_named(h, "User-Agent") ? "" : "User-Agent: sluice-probe\r\n",
                      header_named(h, "Accept") ? "" : "Accept: */*\r\n", h);
        p->req_len = strlen(p->req);
    }
    p->io = xmalloc(sizeof(*p->io));
    uv_poll_init(inst->sup->loop, p->io, p->fd);
    p->io->data = p;
    inst->handles++;
    uv_poll_start(p->io, UV_WRITABLE, on_probe_io);
    return 0;
}

static void on_exec_exit(void *data, int rc, const sv_exit_t *ex)
{
    sv_probe_t *p = data;
    p->exec = NULL;
    sl_autofree char *how = sv_exit_text(rc, ex);
    char why[256];
    snprintf(why, sizeof(why), "exec probe %s %s", p->cfg.exec_cmd[0], how);
    probe_result(p, rc >= 0 && ex->code == 0 && ex->sig == 0, why);
}

/* EXEC: `RT --root R exec --process FILE <id>`, stdio on /dev/null. */
static int attempt_exec(sv_probe_t *p, char *why, size_t why_len)
{
    sl_instance_t *inst = p->inst;
    sl_autofree char *process = sv_exec_process_path(inst, p->what);
    int rc = sv_exec_start(inst, process, on_exec_exit, p, &p->exec);
    if (rc < 0) {
        snprintf(why, why_len, "spawning %s exec: %s", inst->runtime, strerror(-rc));
        return -1;
    }
    return 0;
}

static void on_attempt_timeout(uv_timer_t *t)
{
    sv_probe_t *p = container_of(t, sv_probe_t, timer);
    char why[128];
    snprintf(why, sizeof(why), "%s probe timed out after %d ms", probe_kind_name(p->cfg.kind),
             p->cfg.timeout_ms);
    probe_result(p, false, why);
}

static void probe_fire(uv_timer_t *t)
{
    sv_probe_t *p = container_of(t, sv_probe_t, timer);
    if (!probe_active(p))
        return;
    /* An app held to idle CPU answers its probes at full speed. */
    p->holding = true;
    sv_cpu_hold(p->inst, +1);
    char why[256] = "";
    int rc = p->cfg.kind == SL_PROBE_EXEC ? attempt_exec(p, why, sizeof(why))
                                          : attempt_socket(p, why, sizeof(why));
    if (rc < 0) {
        probe_result(p, false, why);
        return;
    }
    uv_timer_start(&p->timer, on_attempt_timeout, (uint64_t)p->cfg.timeout_ms, 0);
}

/* Start-up polls every few ms whatever the period (as Knative's
 * queue-proxy does); exec probes, a process each, back off faster. */
static uint64_t startup_delay(sv_probe_t *p)
{
    if (p->cfg.kind == SL_PROBE_EXEC) {
        p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : PROBE_EXEC_FIRST_MS;
        if (p->backoff_ms > PROBE_EXEC_MAX_MS)
            p->backoff_ms = PROBE_EXEC_MAX_MS;
        return p->backoff_ms;
    }
    bool early = sl_now_ns() - p->since_ns < PROBE_FAST_FOR_NS;
    return early ? PROBE_FAST_MS : PROBE_SLOW_MS;
}

static void start_liveness(sl_instance_t *inst)
{
    sv_probe_t *p = inst->liveness;
    if (!p)
        return;
    uint64_t since_ms = (sl_now_ns() - inst->started_ns) / 1000000u;
    uint64_t delay = (uint64_t)p->cfg.period_ms;
    if ((uint64_t)p->cfg.initial_delay_ms > since_ms + delay)
        delay = (uint64_t)p->cfg.initial_delay_ms - since_ms;
    probe_schedule(p, delay);
}

/* READY: an explicit readiness probe goes on every period, and the
 * liveness probe begins. */
static void became_ready(sl_instance_t *inst)
{
    sv_became_ready(inst);
    sv_probe_t *r = inst->readiness;
    if (!r->is_default)
        probe_schedule(r, (uint64_t)r->cfg.period_ms);
    start_liveness(inst);
}

static void readiness_result(sv_probe_t *p, bool ok, const char *why)
{
    sl_instance_t *inst = p->inst;
    if (inst->state == SL_INST_STARTING) {
        if (ok && p->successes >= p->cfg.success_threshold)
            became_ready(inst);
        else
            probe_schedule(p, startup_delay(p));
        return;
    }
    bool flip = false;
    if (!inst->unready && !ok && p->failures >= p->cfg.failure_threshold) {
        inst->unready = flip = true;
        sl_warn(MOD, "instance %s: not ready (readiness probe failed %d times: %s)", inst->id,
                p->failures, why);
    } else if (inst->unready && ok && p->successes >= p->cfg.success_threshold) {
        inst->unready = false;
        flip = true;
        sl_info(MOD, "instance %s: ready again", inst->id);
    }
    probe_schedule(p, (uint64_t)p->cfg.period_ms);
    if (flip && inst->readiness_cb && !inst->silent)
        inst->readiness_cb(inst, !inst->unready, inst->data);
}

static void liveness_result(sv_probe_t *p, bool ok, const char *why)
{
    sl_instance_t *inst = p->inst;
    if (!ok && p->failures >= p->cfg.failure_threshold) {
        sl_warn(MOD, "instance %s: liveness probe failed %d times (%s); stopping it", inst->id,
                p->failures, why);
        sv_set_reason(inst, "liveness probe failed: %s", why);
        sv_stop(inst, inst->grace_ms);
        return;
    }
    if (!ok)
        sl_debug(MOD, "instance %s: liveness probe failed: %s", inst->id, why);
    probe_schedule(p, (uint64_t)p->cfg.period_ms);
}

uint64_t sv_startup_budget_ms(const sl_probe_t *p)
{
    uint64_t period = p->period_ms > 0 ? (uint64_t)p->period_ms : PROBE_PERIOD_MS;
    uint64_t failures = p->failure_threshold > 0 ? (uint64_t)p->failure_threshold : PROBE_FAILURES;
    return (uint64_t)(p->initial_delay_ms > 0 ? p->initial_delay_ms : 0) + failures * period;
}

/* Start-up polling of the readiness probe, once its initial delay from
 * the container's start (as Kubernetes counts it) is over. */
static void start_readiness(sl_instance_t *inst)
{
    sv_probe_t *p = inst->readiness;
    p->since_ns = sl_now_ns();
    uint64_t since_ms = (p->since_ns - inst->started_ns) / 1000000u;
    if ((uint64_t)p->cfg.initial_delay_ms > since_ms)
        probe_schedule(p, (uint64_t)p->cfg.initial_delay_ms - since_ms);
    else
        probe_fire(&p->timer);
}

/* Until the startup probe passes nothing else runs; when its budget is
 * spent without a pass, the instance fails as Kubernetes kills it. */
static void startup_result(sv_probe_t *p, bool ok, const char *why)
{
    sl_instance_t *inst = p->inst;
    if (ok) {
        start_readiness(inst);
        return;
    }
    uint64_t spent_ms = (sl_now_ns() - p->since_ns) / 1000000u;
    if (spent_ms >= sv_startup_budget_ms(&p->cfg)) {
        sl_warn(MOD, "instance %s: startup probe did not pass within %llums (%s); stopping it",
                inst->id, (unsigned long long)spent_ms, why);
        sv_set_reason(inst, "startup probe failed: %s", why);
        sv_stop(inst, inst->grace_ms);
        return;
    }
    /* Fast for the first second, as the readiness probe at start-up; then
     * every period, at most a second apart (a slow app is not kept waiting
     * a whole period, nor probed hundreds of times a second). */
    uint64_t delay = startup_delay(p);
    if (sl_now_ns() - p->since_ns >= PROBE_FAST_FOR_NS) {
        delay = (uint64_t)p->cfg.period_ms;
        if (delay > STARTUP_SLOW_MS)
            delay = STARTUP_SLOW_MS;
    }
    probe_schedule(p, delay);
}

static void probe_result(sv_probe_t *p, bool ok, const char *why)
{
    attempt_end(p);
    if (!probe_active(p))
        return;
    if (ok) {
        p->successes++;
        p->failures = 0;
    } else {
        p->failures++;
        p->successes = 0;
        snprintf(p->last_why, sizeof(p->last_why), "%s", why ? why : "");
    }
    if (p == p->inst->readiness)
        readiness_result(p, ok, why ? why : "");
    else if (p == p->inst->startup)
        startup_result(p, ok, why ? why : "");
    else
        liveness_result(p, ok, why ? why : "");
}

void sv_probes_start(sl_instance_t *inst)
{
    sv_probe_t *p = inst->startup;
    if (!p) {
        start_readiness(inst);
        return;
    }
    p->since_ns = sl_now_ns();
    if (p->cfg.initial_delay_ms > 0)
        probe_schedule(p, (uint64_t)p->cfg.initial_delay_ms);
    else
        probe_fire(&p->timer);
}

/* Kubernetes' rules for probe fields; `field` names the probe for the user. */
int sv_probe_validate(const sl_probe_t *p, const char *field, bool once, sl_error_t *err)
{
    if (!p || p->kind == SL_PROBE_NONE)
        return 0;
    if (p->kind != SL_PROBE_TCP && p->kind != SL_PROBE_HTTP && p->kind != SL_PROBE_EXEC &&
        p->kind != SL_PROBE_GRPC)
        return sl_error_set(err, EINVAL, "instance spec: %s: unknown probe kind %d", field,
                            (int)p->kind);
    if (p->port < 0 || p->port > 65535)
        return sl_error_set(err, EINVAL, "instance spec: %s.port must be 0..65535, got %d", field,
                            p->port);
    if (p->initial_delay_ms < 0 || p->period_ms < 0 || p->timeout_ms < 0 ||
        p->success_threshold < 0 || p->failure_threshold < 0)
        return sl_error_set(err, EINVAL,
                            "instance spec: %s: times and thresholds must not be "
                            "negative",
                            field);
    if (once && p->success_threshold > 1)
        return sl_error_set(err, EINVAL, "instance spec: %s.successThreshold must be 1, got %d",
                            field, p->success_threshold);
    if (p->kind == SL_PROBE_HTTP && p->path) {
        size_t n = strlen(p->path);
        if (p->path[0] != '/' || n > 1024 || strcspn(p->path, " \t\r\n") != n)
            return sl_error_set(err, EINVAL,
                                "instance spec: %s.httpGet.path must be an absolute path "
                                "without spaces, got '%.100s'",
                                field, p->path);
    }
    if (p->kind == SL_PROBE_EXEC) {
        if (p->n_exec == 0 || !p->exec_cmd)
            return sl_error_set(err, EINVAL, "instance spec: %s.exec.command is empty", field);
        for (size_t i = 0; i < p->n_exec; i++)
            if (!p->exec_cmd[i])
                return sl_error_set(err, EINVAL, "instance spec: %s.exec.command[%zu] is null",
                                    field, i);
    }
    return 0;
}

/* Why an instance was not ready in time, from the probe it was waiting on:
 * with the built-in probe, that nothing listened on $PORT, as Cloud Run
 * says it (the usual cause); else the probe's last failure. */
void sv_probe_timeout_reason(const sl_instance_t *inst, char *buf, size_t len)
{
    const sv_probe_t *p =
        inst->startup && !inst->startup->successes ? inst->startup : inst->readiness;
    if (!p || !p->last_why[0]) {
        snprintf(buf, len, "no probe attempt completed");
    } else if (p->is_default) {
        snprintf(buf, len,
                 "the container did not listen on port %d, the PORT environment variable "
                 "(last attempt: %s)",
                 inst->port, p->last_why);
    } else {
        snprintf(buf, len, "%s probe: %s", p->what, p->last_why);
    }
}
