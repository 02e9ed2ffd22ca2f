/*
 * cli.c — the CLI's shared plumbing: API calls over the unix socket,
 * common flags, and output formatting.
 */
#include "cli.h"

#include "manifest.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CLI_MAX_RESPONSE (64u << 20)

const char *sl_cli_default_state_dir(void)
{
    const char *e = getenv("SLUICE_STATE_DIR");
    return e && *e ? e : "/var/lib/sluice";
}

void sl_cli_opts_init(sl_cli_opts_t *o)
{
    static char *file_token;
    o->state_dir = sl_cli_default_state_dir();
    o->server = getenv("SLUICE_SERVER");
    o->token = getenv("SLUICE_TOKEN");
    const char *tf = getenv("SLUICE_TOKEN_FILE");
    if (!o->token && tf && !file_token && sl_read_file(tf, 4096, &file_token, NULL, NULL) == 0)
        file_token[strcspn(file_token, "\r\n")] = '\0';
    if (!o->token)
        o->token = file_token;
    o->ns = "default";
    o->ns_given = false;
    o->output = SL_OUT_TABLE;
}

int sl_cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("sluice: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int sl_cli_usage(const char *fmt, ...)
{
    va_list ap;
    fputs("sluice: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

int sl_cli_number(const char *flag, const char *arg, double lo, double hi, double *out)
{
    char *end = NULL;
    double v = strtod(arg, &end);
    if (!*arg || !end || *end || v < lo || v > hi)
        return sl_cli_usage("%s: expected a number in %g..%g, got '%s'", flag, lo, hi, arg);
    *out = v;
    return 0;
}

int sl_cli_common_opt(sl_cli_opts_t *o, int opt, const char *arg)
{
    switch (opt) {
    case 'S':
        o->state_dir = arg;
        return 1;
    case 'n':
        o->ns = arg;
        o->ns_given = true;
        return 1;
    case 'o':
        if (!strcmp(arg, "json"))
            o->output = SL_OUT_JSON;
        else if (!strcmp(arg, "yaml"))
            o->output = SL_OUT_YAML;
        else if (!strcmp(arg, "table") || !strcmp(arg, "wide"))
            o->output = SL_OUT_TABLE;
        else
            return sl_cli_usage("-o: unknown output format '%s' (use json, yaml or table)", arg)
                       ? -1
                       : -1;
        return 1;
    default:
        return 0;
    }
}

typedef struct buf {
    char *p;
    size_t len;
    bool too_big;
} buf_t;

static size_t collect(char *data, size_t size, size_t n, void *ud)
{
    buf_t *b = ud;
    size_t len = size * n;
    if (b->len + len > CLI_MAX_RESPONSE) {
        b->too_big = true;
        return 0;
    }
    b->p = xrealloc(b->p, b->len + len + 1);
    memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
    return len;
}

static size_t to_stdout(char *data, size_t size, size_t n, void *ud)
{
    size_t w = fwrite(data, size, n, stdout);
    fflush(stdout);
    return w * size;
}

static CURL *easy_for(const sl_cli_opts_t *o, const char *path)
{
    static bool inited;
    if (!inited) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        inited = true;
    }
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    if (o->server && *o->server) {
        size_t n = strlen(o->server);
        sl_autofree char *url =
            xasprintf("%.*s%s", (int)(o->server[n - 1] == '/' ? n - 1 : n), o->server, path);
        curl_easy_setopt(h, CURLOPT_URL, url);
        if (o->token) {
            curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, o->token);
            curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
        }
    } else {
        char sock[PATH_MAX];
        snprintf(sock, sizeof(sock), "%s/sluice.sock", o->state_dir);
        sl_autofree char *url = xasprintf("http://sluice%s", path);
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, sock);
        curl_easy_setopt(h, CURLOPT_URL, url);
    }
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    return h;
}

static void unreachable(const sl_cli_opts_t *o, CURLcode rc)
{
    if (o->server && *o->server)
        sl_cli_error("cannot reach the sluice API at %s (%s)", o->server, curl_easy_strerror(rc));
    else
        sl_cli_error("cannot reach the sluice daemon at %s/sluice.sock (%s); is `sluice serve` "
                     "running with the same --state-dir?",
                     o->state_dir, curl_easy_strerror(rc));
}

int sl_cli_call(const sl_cli_opts_t *o, const char *method, const char *path, const json_t *body,
                long *status, json_t **out)
{
    *status = 0;
    *out = NULL;
    CURL *h = easy_for(o, path);
    if (!h)
        return sl_cli_error("libcurl initialisation failed");
    buf_t resp = {0};
    sl_autofree char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct curl_slist *hdrs = NULL;
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (payload) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
        if (resp.p)
            *out = json_loadb(resp.p, resp.len, 0, NULL);
    } else if (resp.too_big) {
        sl_cli_error("the daemon's answer is larger than %u MiB", CLI_MAX_RESPONSE >> 20);
    } else {
        unreachable(o, rc);
    }
    free(resp.p);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return rc == CURLE_OK ? 0 : 1;
}

int sl_cli_stream(const sl_cli_opts_t *o, const char *path)
{
    CURL *h = easy_for(o, path);
    if (!h)
        return sl_cli_error("libcurl initialisation failed");
    buf_t err = {0};
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, to_stdout);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    free(err.p);
    if (rc != CURLE_OK) {
        unreachable(o, rc);
        return 1;
    }
    return status == 200 ? 0 : 1;
}

int sl_cli_fail(long status, const json_t *body)
{
    const char *msg = json_string_value(json_object_get(body, "message"));
    if (msg)
        return sl_cli_error("%s", msg);
    return sl_cli_error("the daemon answered HTTP %ld", status);
}

bool sl_cli_conflict(long status, const json_t *body)
{
    const char *reason = json_string_value(json_object_get(body, "reason"));
    return status == 409 && reason &&
           (!strcmp(reason, "Conflict") || !strcmp(reason, "AlreadyExists"));
}

/* details.retryAfterSeconds of an answer (0: none), at most 10. */
static time_t retry_after(const json_t *body)
{
    json_t *after = json_object_get(json_object_get(body, "details"), "retryAfterSeconds");
    json_int_t s = json_is_integer(after) ? json_integer_value(after) : 0;
    return s <= 0 ? 0 : s > 10 ? 10 : (time_t)s;
}

void sl_cli_retry_pause(int attempt, const json_t *body)
{
    if (attempt < 2)
        return;
    /* client-go's DefaultRetry: 10 ms steps, 10 % jitter */
    long jitter = (long)(((unsigned)getpid() * 2654435761u + (unsigned)attempt) % 1000000u);
    struct timespec ts = {retry_after(body), 10000000L + jitter};
    nanosleep(&ts, NULL);
}

bool sl_cli_retry_round(sl_cli_retry_t *r)
{
    if (r->conflict) {
        if (retry_after(r->conflict) && ++r->later < SL_CLI_LATER_ROUNDS)
            r->attempt--; /* another change is in progress: wait for it */
        sl_cli_retry_pause(r->attempt + 1, r->conflict);
        json_decref(r->conflict);
        r->conflict = NULL;
    }
    return ++r->attempt <= SL_CLI_WRITE_ATTEMPTS;
}

bool sl_cli_retry_last(const sl_cli_retry_t *r)
{
    return r->attempt >= SL_CLI_WRITE_ATTEMPTS;
}

void sl_cli_print(const json_t *v, sl_output_t out)
{
    if (out == SL_OUT_YAML) {
        char *y = sl_manifest_to_yaml(v);
        fputs(y, stdout);
        free(y);
    } else {
        char *j = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        puts(j);
        free(j);
    }
}

struct sl_table {
    size_t ncols, nrows;
    char **cells;
};

sl_table_t *sl_table_new(size_t ncols, const char *const *headers)
{
    sl_table_t *t = xcalloc(1, sizeof(*t));
    t->ncols = ncols;
    sl_table_add(t, headers);
    return t;
}

void sl_table_add(sl_table_t *t, const char *const *cells)
{
    t->cells = xrealloc(t->cells, (t->nrows + 1) * t->ncols * sizeof(char *));
    for (size_t i = 0; i < t->ncols; i++)
        t->cells[t->nrows * t->ncols + i] = xstrdup(cells[i] ? cells[i] : "");
    t->nrows++;
}

void sl_table_print(sl_table_t *t)
{
    size_t *w = xcalloc(t->ncols, sizeof(size_t));
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t l = strlen(t->cells[r * t->ncols + c]);
            if (l > w[c])
                w[c] = l;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];
            if (c + 1 == t->ncols)
                printf("%s\n", cell);
            else
                printf("%-*s   ", (int)w[c], cell);
        }
    }
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(w);
    free(t);
}

char *sl_cli_abs_image_ref(const char *ref)
{
    static const char *transports[] = {"oci:", "docker-archive:", "dir:"};
    for (size_t i = 0; i < SL_ARRAY_LEN(transports); i++) {
        size_t tl = strlen(transports[i]);
        if (strncmp(ref, transports[i], tl) || ref[tl] == '/')
            continue;
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof(cwd)))
            return xstrdup(ref);
        return xasprintf("%s%s/%s", transports[i], cwd, ref + tl);
    }
    return xstrdup(ref);
}
