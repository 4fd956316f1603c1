/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "parse-util.h"
#include "metrics-process.h"

#define CGROUP_ROOT "/sys/fs/cgroup"
/* v1 reports "no limit" as LONG_MAX rounded down to a page. */
#define CGROUP_V1_UNLIMITED (UINT64_C(1) << 62)

const char *memory_source_to_string(MemorySource s) {
        return s == MEMORY_SOURCE_CGROUP ? "cgroup" : "physical";
}

/* Small pseudo-files only: /proc and cgroupfs answer in one read. */
static int read_small_file(const char *path, char *buf, size_t size) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = read(fd, buf, size - 1);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        return 0;
}

int parse_statm(const char *text, uint64_t page_size, uint64_t *ret_virtual, uint64_t *ret_resident) {
        uint64_t vsz, rss;

        assert(text && ret_virtual && ret_resident);

        if (sscanf(text, "%" SCNu64 " %" SCNu64, &vsz, &rss) != 2)
                return -EINVAL;
        *ret_virtual = vsz * page_size;
        *ret_resident = rss * page_size;
        return 0;
}

static int count_open_fds(uint64_t *ret) {
        struct stat st;
        struct dirent *de;
        uint64_t n = 0;
        DIR *d;

        /* Linux 6.2 and later report the count as the directory's size:
         * one stat() instead of listing 10,000 entries under load (which
         * took 7 ms). Older kernels say 0 there; then we list. */
        if (stat("/proc/self/fd", &st) == 0 && st.st_size > 0) {
                *ret = (uint64_t) st.st_size;
                return 0;
        }
        d = opendir("/proc/self/fd");
        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        *ret = n > 0 ? n - 1 : 0;       /* not the one opendir() holds */
        return 0;
}

static int read_statm(uint64_t *ret_virtual, uint64_t *ret_resident) {
        char statm[128];
        int r = read_small_file("/proc/self/statm", statm, sizeof(statm));

        return r < 0 ? r : parse_statm(statm, (uint64_t) sysconf(_SC_PAGESIZE), ret_virtual, ret_resident);
}

int process_stats_read(ProcessStats *ret) {
        struct rusage ru;
        struct rlimit rl;
        ProcessStats s = { 0 };
        int r;

        assert(ret);

        r = read_statm(&s.virtual_bytes, &s.resident_bytes);
        if (r < 0)
                return r;
        r = count_open_fds(&s.open_fds);
        if (r < 0)
                return r;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || getrusage(RUSAGE_SELF, &ru) < 0)
                return -errno;
        s.max_fds = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t) rl.rlim_cur;
        s.cpu_seconds = (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6 +
                        (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
        *ret = s;
        return 0;
}

static bool has_controller(const char *list, size_t len, const char *name) {
        size_t n = strlen(name);

        for (const char *p = list; p < list + len; ) {
                const char *end = memchr(p, ',', (size_t) (list + len - p));
                size_t l = end ? (size_t) (end - p) : (size_t) (list + len - p);
                if (l == n && strncmp(p, name, n) == 0)
                        return true;
                p += l + 1;
        }
        return false;
}

int cgroup_memory_path(const char *text, char **ret_path, bool *ret_v2) {
        const char *v2 = NULL, *v1 = NULL;
        size_t v2_len = 0, v1_len = 0;

        assert(text && ret_v2);

        /* Lines are "hierarchy-id:controllers:path". */
        for (const char *line = text; *line; ) {
                const char *eol = strchrnul(line, '\n');
                const char *c1 = memchr(line, ':', (size_t) (eol - line));
                const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t) (eol - c1 - 1)) : NULL;

                if (c2) {
                        const char *path = c2 + 1;
                        size_t len = (size_t) (eol - path);
                        if (c1 - line == 1 && line[0] == '0' && c2 == c1 + 1) {
                                v2 = path;
                                v2_len = len;
                        } else if (has_controller(c1 + 1, (size_t) (c2 - c1 - 1), "memory")) {
                                v1 = path;
                                v1_len = len;
                        }
                }
                line = *eol ? eol + 1 : eol;
        }
        if (!v1 && !v2)
                return -ENOENT;
        *ret_v2 = !v1;
        *ret_path = v1 ? strndup(v1, v1_len) : strndup(v2, v2_len);
        return *ret_path ? 0 : -ENOMEM;
}

int cgroup_parse_limit(const char *text, uint64_t *ret) {
        assert(text && ret);

        char buf[32];
        size_t n = strcspn(text, "\n");
        uint64_t v;

        if (n == 0 || n >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, text, n);
        buf[n] = '\0';
        if (streq(buf, "max")) {
                *ret = UINT64_MAX;
                return 0;
        }
        if (parse_uint64(buf, &v) < 0)
                return -EINVAL;
        *ret = v >= CGROUP_V1_UNLIMITED ? UINT64_MAX : v;
        return 0;
}

int memory_stat_field(const char *text, const char *key, uint64_t *ret) {
        assert(text && key && ret);

        size_t n = strlen(key);

        for (const char *line = text; *line; ) {
                const char *eol = strchrnul(line, '\n');
                if (strncmp(line, key, n) == 0 && line[n] == ' ')
                        return sscanf(line + n + 1, "%" SCNu64, ret) == 1 ? 0 : -EINVAL;
                line = *eol ? eol + 1 : eol;
        }
        return -ENOENT;
}

typedef struct CgroupFiles {
        const char *root;
        const char *limit;
        const char *usage;
        const char *inactive_file;      /* key in memory.stat */
} CgroupFiles;

static const CgroupFiles cgroup_v1 = {
        CGROUP_ROOT "/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file",
};
static const CgroupFiles cgroup_v2 = {
        CGROUP_ROOT, "memory.max", "memory.current", "inactive_file",
};

static int read_cgroup_value(const char *dir, const char *file, uint64_t *ret) {
        _cleanup_free_ char *path = NULL;
        char buf[64];
        int r;

        if (asprintf(&path, "%s/%s", dir, file) < 0)
                return -ENOMEM;
        r = read_small_file(path, buf, sizeof(buf));
        return r < 0 ? r : cgroup_parse_limit(buf, ret);
}

/* The working set of the cgroup at dir: usage minus inactive file cache. */
static int read_cgroup_working_set(const CgroupFiles *f, const char *dir, uint64_t *ret) {
        _cleanup_free_ char *path = NULL;
        char stat[8192];
        uint64_t usage, inactive = 0;
        int r;

        r = read_cgroup_value(dir, f->usage, &usage);
        if (r < 0)
                return r;
        if (asprintf(&path, "%s/memory.stat", dir) < 0)
                return -ENOMEM;
        if (read_small_file(path, stat, sizeof(stat)) == 0)
                (void) memory_stat_field(stat, f->inactive_file, &inactive);
        *ret = usage > inactive ? usage - inactive : 0;
        return 0;
}

/* Walks from our cgroup towards the root: a limit on a parent slice binds
 * us as much as one on our own unit. Keeps the tightest one. */
static int read_cgroup_memory(MemoryUsage *ret) {
        _cleanup_free_ char *own = NULL, *dir = NULL;
        char text[4096];
        const CgroupFiles *f;
        uint64_t best = UINT64_MAX, limit;
        bool v2;
        int r;

        r = read_small_file("/proc/self/cgroup", text, sizeof(text));
        if (r < 0)
                return r;
        r = cgroup_memory_path(text, &own, &v2);
        if (r < 0)
                return r;
        f = v2 ? &cgroup_v2 : &cgroup_v1;
        for (;;) {
                _cleanup_free_ char *candidate = NULL;
                if (asprintf(&candidate, "%s%s", f->root, streq(own, "/") ? "" : own) < 0)
                        return -ENOMEM;
                if (read_cgroup_value(candidate, f->limit, &limit) == 0 && limit < best) {
                        best = limit;
                        free(dir);
                        dir = TAKE_PTR(candidate);
                }
                char *slash = strrchr(own, '/');
                if (!slash || streq(own, "/"))
                        break;
                if (slash == own)
                        slash[1] = '\0';        /* "/a" -> "/" */
                else
                        *slash = '\0';
        }
        if (!dir)
                return -ENOENT;
        ret->limit_bytes = best;
        ret->source = MEMORY_SOURCE_CGROUP;
        return read_cgroup_working_set(f, dir, &ret->used_bytes);
}

int memory_usage_read(MemoryUsage *ret) {
        uint64_t physical = (uint64_t) sysconf(_SC_PHYS_PAGES) * (uint64_t) sysconf(_SC_PAGESIZE);
        uint64_t virtual_bytes, resident_bytes;
        MemoryUsage m;
        int r;

        assert(ret);

        /* A cgroup limit above physical memory limits nothing. */
        if (read_cgroup_memory(&m) == 0 && m.limit_bytes < physical) {
                *ret = m;
                return 0;
        }
        r = read_statm(&virtual_bytes, &resident_bytes);
        if (r < 0)
                return r;
        *ret = (MemoryUsage) {
                .used_bytes = resident_bytes,
                .limit_bytes = physical,
                .source = MEMORY_SOURCE_PHYSICAL,
        };
        return 0;
}
