/*
 * supervisor_int.h — pieces of the supervisor that do not need its state:
 * host housekeeping at startup (leftovers of an earlier run), reaping
 * orphaned runtime processes, finding binaries, reading the tail of logs.
 * Internal to supervisor*.c.
 */
#ifndef SL_SUPERVISOR_INT_H
#define SL_SUPERVISOR_INT_H

#include "common.h"
#include <sys/types.h>
#include <uv.h>

/* Absolute path of an executable `name` on PATH (or name itself when it
 * contains a '/' and is executable); NULL when not found. Caller frees. */
char *sv_find_in_path(const char *name);

/* RLIMIT_NOFILE for containers: 1048576 when sluice may raise hard limits
 * (CAP_SYS_RESOURCE, capped by fs.nr_open), else its own hard limit. */
uint64_t sv_nofile_limit(void);

/* Runtime names are path components and argv[0]s: [a-z0-9_.-]{1,32}. */
bool sv_valid_runtime_name(const char *s);

/*
 * Remove what an earlier run under state_dir left behind: containers in
 * every runtime root (`RT --root R delete -f ID`), mounts below instances/,
 * instance dirs, and the cgroups of those instances. Blocking.
 */
int sv_cleanup_leftovers(const char *state_dir, sl_error_t *err);

/* Remove the cgroup /sluice/<id> from every mounted hierarchy. Best effort;
 * kills what still runs inside first. Blocking (short). */
void sv_remove_cgroups(const char *id);

/*
 * Reap zombie children that are orphaned runtime helpers (comm starting
 * with one of `runtimes`), never a pid libuv is waiting for and never one
 * of `keep`. crun's detaching helper exits after its parent, so as child
 * subreaper sluice inherits it.
 */
void sv_reap_orphans(uv_loop_t *loop, const char *const *runtimes, size_t n_runtimes,
                     const pid_t *keep, size_t n_keep);

/* How a watched process ended, from sv_wait_exit. */
typedef struct sv_exit {
    int code; /* exit status when sig == 0 */
    int sig;  /* killing signal, 0 when it exited */
} sv_exit_t;

enum { SV_EXIT_DONE = 1, SV_EXIT_PENDING = 0 };

/*
 * Collect the exit of a process that sluice watches through pidfd (or, when
 * pidfd < 0, by pid), without blocking. SV_EXIT_DONE: reaped, *out filled.
 * SV_EXIT_PENDING: not reapable yet: still running, or exited while still
 * the child of the runtime's helper, which has not exited yet (sluice, the
 * subreaper, inherits the zombie when it does). < 0 (-ECHILD): gone, reaped
 * by someone else. Never waits on any other pid, so it cannot steal an exit
 * status from libuv or a runtime helper.
 */
int sv_wait_exit(int pidfd, pid_t pid, sv_exit_t *out);

/* The last `max_lines` non-empty lines of a file, joined by " | ", each cut
 * to 240 bytes; lines that occur inside `skip_in` (say, the runtime's
 * error already quoted) are left out. NULL when there are none. Caller
 * frees. */
char *sv_log_tail(const char *path, int max_lines, const char *skip_in);

/* The error messages an OCI runtime wrote to its --log-format=json file,
 * joined by "; "; NULL when there are none. Caller frees. */
char *sv_runtime_errors(const char *path);

#endif
