/*
 * seccomp_profiles.h — the seccomp filters of the built-in runtime classes,
 * as OCI `linux.seccomp` objects.
 *
 * SL_SECCOMP_DEFAULT follows Docker's/Podman's default profile: deny by
 * default (EPERM), a broad allow-list of ordinary syscalls, clone without
 * namespace flags, clone3 answered ENOSYS (its flags sit behind a pointer
 * seccomp cannot read, so libc falls back to clone), and the mount /
 * namespace / module / kexec / bpf families left out (Docker admits them
 * only with CAP_SYS_ADMIN and friends, which the default class never has).
 *
 * SL_SECCOMP_SANDBOXED is a much shorter allow-list for HTTP servers (static
 * C, busybox, Python, Node, Go): file I/O, readiness polling, sockets,
 * memory, threads, signals, clocks and timers. Everything else fails with
 * ENOSYS ("this kernel has no such call"), so runtimes probing newer calls
 * (openat2, io_uring, statx-style probes, clone3) fall back to the old ones;
 * the escape-relevant calls (mount, unshare, setns, ptrace, bpf, module,
 * kexec, keyctl, …) get an explicit EPERM so failures read as "Operation not
 * permitted". docs/sandbox.md lists every group and why it is there.
 */
#ifndef SL_SECCOMP_PROFILES_H
#define SL_SECCOMP_PROFILES_H

#include "common.h"
#include <jansson.h>

typedef enum {
    SL_SECCOMP_NONE = 0,  /* no filter (the runtime's own default: none) */
    SL_SECCOMP_DEFAULT,   /* Docker-like */
    SL_SECCOMP_SANDBOXED, /* the sandboxed class's allow-list */
} sl_seccomp_profile_t;

/* The profile as an OCI linux.seccomp object (new reference); NULL for
 * SL_SECCOMP_NONE. */
json_t *sl_seccomp_profile_json(sl_seccomp_profile_t p);

/* How many distinct syscalls the profile admits on this machine's native
 * architecture (unconditionally or with argument conditions); 32-bit-only
 * names in the default profile are not counted. 0 for SL_SECCOMP_NONE. */
size_t sl_seccomp_profile_count(sl_seccomp_profile_t p);

/* Does the profile admit `name` at all (with or without conditions)? */
bool sl_seccomp_profile_allows(sl_seccomp_profile_t p, const char *name);

/* "none" | "default" | "sandboxed"; NULL/-1 for others. */
const char *sl_seccomp_profile_name(sl_seccomp_profile_t p);
int sl_seccomp_profile_from_name(const char *name, sl_seccomp_profile_t *out);

#endif
