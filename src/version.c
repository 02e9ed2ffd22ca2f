/* version.c — version strings stamped in by the Makefile. */
#include "version.h"

#ifndef SL_VERSION
#define SL_VERSION "0.0.0"
#endif
#ifndef SL_GIT_REV
#define SL_GIT_REV "unknown"
#endif

const char sl_version[] = SL_VERSION;
const char sl_git_rev[] = SL_GIT_REV;
