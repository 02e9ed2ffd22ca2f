/*
 * netns.c — create network namespaces with loopback up and make sockets
 * inside them. See netns.h.
 */
#include "netns.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

int sl_netns_open_current(sl_error_t *err)
{
    int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sl_error_errno(err, errno, "open /proc/thread-self/ns/net");
    return fd;
}

/* Bring `lo` up in the namespace the calling thread is in. */
static int loopback_up(sl_error_t *err)
{
    sl_autoclose int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return sl_error_errno(err, errno, "socket");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return sl_error_errno(err, errno, "SIOCGIFFLAGS lo");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return sl_error_errno(err, errno, "SIOCSIFFLAGS lo");
    return 0;
}

/* Switch back to host_fd; failing that the thread is stranded in the wrong
 * namespace, which no caller could recover from. */
static void return_to(int host_fd)
{
    if (setns(host_fd, CLONE_NEWNET) < 0) {
        fprintf(stderr, "FATAL: setns back to the host network namespace: %s\n", strerror(errno));
        abort();
    }
}

int sl_netns_create(sl_error_t *err)
{
    sl_autoclose int host = sl_netns_open_current(err);
    if (host < 0)
        return host;
    if (unshare(CLONE_NEWNET) < 0)
        return sl_error_errno(err, errno, "unshare(CLONE_NEWNET)");
    int rc = loopback_up(err);
    int fd = -1;
    if (rc == 0) {
        fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            rc = sl_error_errno(err, errno, "open new network namespace");
    }
    return_to(host);
    return rc < 0 ? rc : fd;
}

int sl_netns_socket(int netns_fd, int host_fd, int domain, int type, sl_error_t *err)
{
    if (setns(netns_fd, CLONE_NEWNET) < 0)
        return sl_error_errno(err, errno, "setns into instance network namespace");
    int s = socket(domain, type, 0);
    int e = errno;
    return_to(host_fd);
    if (s < 0)
        return sl_error_errno(err, e, "socket in instance network namespace");
    return s;
}
