/*
 * cli.h — what every CLI command shares: the subcommand table, option
 * parsing of the common flags (--state-dir, -n, -o), the API client (HTTP
 * over the daemon's unix socket with libcurl) and output in table, JSON or
 * YAML form.
 */
#ifndef SL_CLI_H
#define SL_CLI_H

#include "common.h"
#include <jansson.h>

typedef struct sl_cmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} sl_cmd_t;

typedef enum { SL_OUT_TABLE, SL_OUT_JSON, SL_OUT_YAML } sl_output_t;

/* Common options, filled by sl_cli_common_opt. */
typedef struct sl_cli_opts {
    const char *state_dir;
    const char *server; /* $SLUICE_SERVER: http://HOST:PORT of a TCP API, else the socket */
    const char *token;  /* $SLUICE_TOKEN (or read from $SLUICE_TOKEN_FILE) */
    const char *ns;
    bool ns_given; /* -n / --namespace was on the command line */
    sl_output_t output;
} sl_cli_opts_t;

/* Default state dir: $SLUICE_STATE_DIR, else /var/lib/sluice. */
const char *sl_cli_default_state_dir(void);
void sl_cli_opts_init(sl_cli_opts_t *o);
/* Handle a common option (getopt_long val 'S' state-dir, 'n', 'o').
 * Returns 1 if handled, 0 if not common, -1 on a bad value (message printed). */
int sl_cli_common_opt(sl_cli_opts_t *o, int opt, const char *arg);

/*
 * One API call. body may be NULL. On return *status is the HTTP status (0
 * when the daemon cannot be reached, with a message printed) and *out the
 * parsed JSON body (or NULL). Returns 0 if the daemon answered.
 */
int sl_cli_call(const sl_cli_opts_t *o, const char *method, const char *path, const json_t *body,
                long *status, json_t **out);
/* Stream a GET response body to stdout (logs -f). Returns exit code. */
int sl_cli_stream(const sl_cli_opts_t *o, const char *path);
/* Print the message of a Status object (or a generic one) to stderr as
 * "sluice: error: …" and return 1. */
int sl_cli_fail(long status, const json_t *body);
/* Read-modify-write (deploy, traffic) as client-go's RetryOnConflict: the
 * write carries the resourceVersion it read, and when the daemon refuses it
 * as a conflict (the object changed since, or was created meanwhile) the
 * command reads it again and redoes its change, up to this many times. */
#define SL_CLI_WRITE_ATTEMPTS 5
/* A 409 Conflict or AlreadyExists: worth reading the object again. */
bool sl_cli_conflict(long status, const json_t *body);
/* The pause before attempt `attempt` (2, 3, ...): about 10 ms, jittered, or
 * the seconds the last answer's details.retryAfterSeconds asked for (body
 * may be NULL). */
void sl_cli_retry_pause(int attempt, const json_t *body);
/* Rounds whose answer asks to come back later (details.retryAfterSeconds:
 * another change is in progress) do not count against the attempts, up to
 * this many of them (about a minute). */
#define SL_CLI_LATER_ROUNDS 60
/* The rounds of a read-modify-write:
 *     sl_cli_retry_t rt = {0};
 *     while (sl_cli_retry_round(&rt)) {
 *         ... read, change, write ...
 *         if (a conflict && !sl_cli_retry_last(&rt)) { rt.conflict = answer; continue; }
 *         break;
 *     }
 * A round after a conflict first pauses as sl_cli_retry_pause does and
 * frees the conflict's answer. */
typedef struct sl_cli_retry {
    int attempt, later;
    json_t *conflict; /* the answer that sent it round again (owned) */
} sl_cli_retry_t;
bool sl_cli_retry_round(sl_cli_retry_t *r);
/* This round is the last: a conflict now is the command's error. */
bool sl_cli_retry_last(const sl_cli_retry_t *r);
/* A number flag in [lo, hi]; 0, or the usage exit code after saying why. */
int sl_cli_number(const char *flag, const char *arg, double lo, double hi, double *out);
/* Print an object or list as JSON or YAML. */
void sl_cli_print(const json_t *v, sl_output_t out);
/* Print "sluice: error: fmt" to stderr; returns 1 (or 2 for usage). */
int sl_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int sl_cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Table printing: columns padded to the widest cell. */
typedef struct sl_table sl_table_t;
sl_table_t *sl_table_new(size_t ncols, const char *const *headers);
void sl_table_add(sl_table_t *t, const char *const *cells);
void sl_table_print(sl_table_t *t);

/* Make an image reference's path absolute (oci:, docker-archive:, dir:)
 * relative to the current directory; caller frees. */
char *sl_cli_abs_image_ref(const char *ref);

/* Commands. */
int sl_cmd_serve(int argc, char **argv);
int sl_cmd_deploy(int argc, char **argv);
int sl_cmd_apply(int argc, char **argv);
int sl_cmd_services(int argc, char **argv);
int sl_cmd_describe(int argc, char **argv);
int sl_cmd_delete(int argc, char **argv);
int sl_cmd_revisions(int argc, char **argv);
int sl_cmd_instances(int argc, char **argv);
int sl_cmd_images(int argc, char **argv);
int sl_cmd_logs(int argc, char **argv);
int sl_cmd_traffic(int argc, char **argv);
int sl_cmd_usage(int argc, char **argv);
int sl_cmd_debug(int argc, char **argv);
int sl_cmd_runtimeclasses(int argc, char **argv);
int sl_cmd_secrets(int argc, char **argv);
int sl_cmd_configmaps(int argc, char **argv);
int sl_cmd_version(int argc, char **argv);
int sl_cmd_doctor(int argc, char **argv);

#endif
