/* SPDX-License-Identifier: MIT */
#pragma once

/* What the process costs, read from /proc and the memory cgroup: for the
 * process_* metrics and the memory check of /health. The parsers are pure
 * (unit-tested); the *_read() functions do the I/O. */

#include "util.h"

typedef struct ProcessStats {
        uint64_t resident_bytes;
        uint64_t virtual_bytes;
        uint64_t open_fds;
        uint64_t max_fds;
        double cpu_seconds;             /* user + system, all threads */
} ProcessStats;

int process_stats_read(ProcessStats *ret);

typedef enum MemorySource {
        MEMORY_SOURCE_CGROUP,           /* the cgroup's usage against its limit */
        MEMORY_SOURCE_PHYSICAL,         /* our resident memory against the machine's */
} MemorySource;

typedef struct MemoryUsage {
        uint64_t used_bytes;
        uint64_t limit_bytes;
        MemorySource source;
} MemoryUsage;

const char *memory_source_to_string(MemorySource s);

/* With a cgroup memory limit (memory.max, or v1's memory.limit_in_bytes,
 * the tightest along the path to the root), the cgroup's usage without its
 * inactive file cache (what the kernel cannot simply drop counts towards
 * the OOM killer, the rest does not): the "working set". Without a limit,
 * the process's resident memory against physical memory. */
int memory_usage_read(MemoryUsage *ret);

/* --- parsers --- */

/* From /proc/self/cgroup: the memory cgroup's path, and whether it is a
 * cgroup v2 path (the "0::" line) or v1 (the "memory" controller line,
 * which wins where both exist). */
int cgroup_memory_path(const char *proc_cgroup, char **ret_path, bool *ret_v2);

/* memory.max / memory.limit_in_bytes: UINT64_MAX for "max" or v1's
 * "unlimited" (a page-rounded 2^63-1). */
int cgroup_parse_limit(const char *text, uint64_t *ret);

/* The value of 'key' in a memory.stat file ("key value" lines). */
int memory_stat_field(const char *text, const char *key, uint64_t *ret);

/* /proc/self/statm: sizes in pages -> bytes. */
int parse_statm(const char *text, uint64_t page_size, uint64_t *ret_virtual, uint64_t *ret_resident);
