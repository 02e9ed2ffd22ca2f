/*
 * api.h — the control-plane REST API: Knative-shaped JSON over HTTP/1.1 on
 * the unix socket STATE_DIR/sluice.sock (mode 0600, so only its owner can
 * reach it), and optionally over TCP with a bearer token. Requests are parsed with the same strict
 * parser as the router; bodies are bounded (413 beyond 4 MiB).
 *
 *   GET    /healthz, /version
 *   GET    /apis/serving.knative.dev/v1/services                 all namespaces
 *   GET    /apis/serving.knative.dev/v1/namespaces/NS/services
 *   POST   /apis/serving.knative.dev/v1/namespaces/NS/services   create
 *   GET|PUT|DELETE /apis/serving.knative.dev/v1/namespaces/NS/services/NAME
 *   GET    /apis/serving.knative.dev/v1/[namespaces/NS/]revisions[?service=NAME]
 *   GET    /apis/sluice.dev/v1/[namespaces/NS/]instances[?service=NAME]
 *   GET    /apis/sluice.dev/v1/namespaces/NS/services/NAME/logs[?follow=1]
 *   GET    /apis/sluice.dev/v1/images;  POST {"ref": "oci:…"} imports one
 */
#ifndef SL_API_H
#define SL_API_H

#include "common.h"
#include "controller.h"
#include <uv.h>

typedef struct sl_api sl_api_t;

int sl_api_new(uv_loop_t *loop, const char *socket_path, const char *state_dir,
               sl_controller_t *ctl, sl_api_t **out, sl_error_t *err);
/* Also serve GET /metrics (and /healthz, nothing else) over TCP on
 * ADDR:PORT, for Prometheus. */
int sl_api_listen_metrics(sl_api_t *api, const char *addr, sl_error_t *err);
/* Serve the whole API over TCP on ADDR:PORT; every request except
 * /healthz must carry "Authorization: Bearer <token>" (compared in
 * constant time; 401 otherwise). token: at least 16 characters, copied. */
int sl_api_listen_tcp(sl_api_t *api, const char *addr, const char *token, sl_error_t *err);
/* Stop listening and close every connection; cb when all handles closed. */
void sl_api_close(sl_api_t *api, void (*cb)(void *), void *data);
/* Free after close's callback ran. */
void sl_api_free(sl_api_t *api);

#endif
