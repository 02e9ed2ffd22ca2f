/* version.h — the build's version and commit, compiled into version.c only
 * so that a new commit rebuilds one object. */
#ifndef SL_VERSION_H
#define SL_VERSION_H
extern const char sl_version[];
extern const char sl_git_rev[];
#endif
