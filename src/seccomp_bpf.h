/*
 * seccomp_bpf.h — the built-in seccomp profiles compiled to classic BPF once
 * per process, for crun's `run.oci.seccomp_bpf_data` annotation.
 *
 * crun compiles config.json's linux.seccomp with libseccomp on every
 * `crun run` (about 8 ms of a cold start). The profiles are fixed per
 * runtime class, so the daemon compiles each one once, the way crun would
 * (same libseccomp calls over the same JSON), and hands crun the program.
 * runc ignores the annotation: it keeps getting the JSON.
 */
#ifndef SL_SECCOMP_BPF_H
#define SL_SECCOMP_BPF_H

#include "common.h"
#include "seccomp_profiles.h"
#include <jansson.h>

#define SL_SECCOMP_BPF_ANNOTATION "run.oci.seccomp_bpf_data"

/*
 * Compile an OCI linux.seccomp object to a raw BPF program as crun does:
 * default action and defaultErrnoRet, architectures, each rule's action,
 * errnoRet and argument conditions; names libseccomp does not know are
 * skipped. On success *out (xmalloc'd, caller frees) holds *len bytes.
 */
int sl_seccomp_bpf_compile(const json_t *profile, uint8_t **out, size_t *len, sl_error_t *err);

/*
 * The profile's program, base64-encoded, compiled on first use and cached
 * for the life of the process (thread-safe). Borrowed; NULL for
 * SL_SECCOMP_NONE or when compiling failed (logged once) — the caller then
 * falls back to the JSON profile.
 */
const char *sl_seccomp_bpf_base64(sl_seccomp_profile_t p);

#endif
