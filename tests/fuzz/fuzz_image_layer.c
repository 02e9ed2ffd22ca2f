/*
 * fuzz_image_layer.c — libFuzzer driver for the layer unpacker.
 *
 * Each input is a layer blob (any compression). It is unpacked into
 * BASE/root with small limits, then the driver asserts that nothing was
 * created outside the root: BASE holds only "root", the escape directory the
 * seed corpus' absolute symlinks point at stays empty, and the only device
 * nodes in the tree are 0:0 overlay whiteouts.
 */
#include "image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define ESCAPE_DIR "/tmp/sl-fuzz-escape"
/* tmpfs when available: unpacking is all metadata operations */
#define BASE_DIRS                                                                                  \
    {                                                                                              \
        "/dev/shm", "/tmp"                                                                         \
    }

static char g_base[PATH_MAX];

static size_t dir_count(const char *path, const char *except)
{
    DIR *d = opendir(path);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (except && !strcmp(de->d_name, except))
            continue;
        fprintf(stderr, "unexpected entry %s/%s\n", path, de->d_name);
        n++;
    }
    closedir(d);
    return n;
}

/* Only 0:0 char devices (whiteouts) may exist below the root. */
static void check_tree(int dirfd_, int depth)
{
    if (depth > 512)
        return;
    DIR *d = fdopendir(dirfd_);
    if (!d) {
        close(dirfd_);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISBLK(st.st_mode) || (S_ISCHR(st.st_mode) && st.st_rdev != makedev(0, 0))) {
            fprintf(stderr, "device node created: %s\n", de->d_name);
            abort();
        }
        if (S_ISDIR(st.st_mode)) {
            int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd >= 0)
                check_tree(fd, depth + 1);
        }
    }
    closedir(d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    sl_log_set_level(SL_LOG_ERROR);
    mkdir(ESCAPE_DIR, 0755);
    static const char *const bases[] = BASE_DIRS;
    for (size_t i = 0; i < SL_ARRAY_LEN(bases); i++) {
        snprintf(g_base, sizeof(g_base), "%s/sl-fuzz-layer.%d", bases[i], (int)getpid());
        if (access(bases[i], W_OK) == 0)
            break;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char root[PATH_MAX];
    snprintf(root, sizeof(root), "%s/root", g_base);
    sl_rm_rf(g_base, NULL);
    if (sl_mkdir_p(root, 0755, NULL) < 0)
        abort();
    sl_image_limits_t lim = {.max_layer_bytes = 1 << 20, .max_entries = 512};
    sl_error_t err = {0};
    int rc = sl_image_unpack_layer(data, size, root, &lim, &err);
    if (rc < 0 && err.msg[0] == '\0') {
        fprintf(stderr, "error without a message\n");
        abort();
    }
    if (dir_count(g_base, "root") != 0 || dir_count(ESCAPE_DIR, NULL) != 0)
        abort();
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0)
        check_tree(fd, 0);
    sl_rm_rf(g_base, NULL);
    return 0;
}
