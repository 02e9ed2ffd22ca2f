/*
 * netns.h — network namespaces for instances.
 *
 * Each instance gets a fresh network namespace holding only `lo` (up). The
 * namespace lives as long as sluice holds its fd; nothing is bind-mounted,
 * so a crash leaves nothing behind. Sockets are created inside a namespace
 * by switching the calling thread into it and back (setns is per thread);
 * a socket keeps its namespace for life.
 */
#ifndef SL_NETNS_H
#define SL_NETNS_H

#include "common.h"

/* Open the calling thread's current network namespace (O_CLOEXEC).
 * Returns the fd or < 0 with err set. */
int sl_netns_open_current(sl_error_t *err);

/* Create a network namespace with `lo` up without leaving the caller's own.
 * Returns an O_CLOEXEC fd owned by the caller, or < 0 with err set. */
int sl_netns_create(sl_error_t *err);

/* socket(domain, type, 0) created inside netns_fd; host_fd must be the
 * calling thread's own namespace (from sl_netns_open_current) so the thread
 * can switch back. Add SOCK_CLOEXEC/SOCK_NONBLOCK to type as wanted.
 * Returns the fd or < 0 with err set. */
int sl_netns_socket(int netns_fd, int host_fd, int domain, int type, sl_error_t *err);

#endif
