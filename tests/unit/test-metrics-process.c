/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "metrics-process.h"

static void test_cgroup_v2_path(void **state) {
        _cleanup_free_ char *path = NULL;
        bool v2 = false;

        assert_int_equal(cgroup_memory_path("0::/system.slice/system-batond.slice/batond@blue.service\n",
                                            &path, &v2), 0);
        assert_true(v2);
        assert_string_equal(path, "/system.slice/system-batond.slice/batond@blue.service");
}

/* Hybrid hierarchies (v1 controllers plus an empty v2 tree): the v1
 * memory controller is the one that limits. */
static void test_cgroup_v1_memory_wins(void **state) {
        _cleanup_free_ char *path = NULL;
        bool v2 = true;

        assert_int_equal(cgroup_memory_path("9:name=systemd:/\n"
                                            "4:memory:/process_api/5c1c\n"
                                            "2:cpu,cpuacct:/x\n"
                                            "0::/\n", &path, &v2), 0);
        assert_false(v2);
        assert_string_equal(path, "/process_api/5c1c");

        path = mfree(path);
        assert_int_equal(cgroup_memory_path("3:cpuset,memory:/a/b\n", &path, &v2), 0);
        assert_false(v2);
        assert_string_equal(path, "/a/b");

        /* "memoryx" is not "memory". */
        path = mfree(path);
        assert_int_equal(cgroup_memory_path("3:memoryx:/a\n", &path, &v2), -ENOENT);
        assert_int_equal(cgroup_memory_path("", &path, &v2), -ENOENT);
}

static void test_limits(void **state) {
        uint64_t v;

        assert_int_equal(cgroup_parse_limit("max\n", &v), 0);
        assert_true(v == UINT64_MAX);
        assert_int_equal(cgroup_parse_limit("536870912\n", &v), 0);
        assert_true(v == 536870912);
        /* cgroup v1's "unlimited". */
        assert_int_equal(cgroup_parse_limit("9223372036854771712\n", &v), 0);
        assert_true(v == UINT64_MAX);
        assert_int_equal(cgroup_parse_limit("\n", &v), -EINVAL);
        assert_int_equal(cgroup_parse_limit("12k\n", &v), -EINVAL);
}

static void test_memory_stat(void **state) {
        const char *stat = "anon 100\nfile 5000\ninactive_file 4096\nactive_file 904\n";
        uint64_t v;

        assert_int_equal(memory_stat_field(stat, "inactive_file", &v), 0);
        assert_true(v == 4096);
        assert_int_equal(memory_stat_field(stat, "file", &v), 0);
        assert_true(v == 5000);
        assert_int_equal(memory_stat_field(stat, "total_inactive_file", &v), -ENOENT);
}

static void test_statm(void **state) {
        uint64_t vsz, rss;

        assert_int_equal(parse_statm("765 434 406 5 0 123 0\n", 4096, &vsz, &rss), 0);
        assert_true(vsz == 765 * 4096);
        assert_true(rss == 434 * 4096);
        assert_int_equal(parse_statm("garbage", 4096, &vsz, &rss), -EINVAL);
}

/* The live readers work here (this test runs with /proc mounted). */
static void test_read_self(void **state) {
        ProcessStats ps;
        MemoryUsage mu;

        assert_int_equal(process_stats_read(&ps), 0);
        assert_true(ps.resident_bytes > 0);
        assert_true(ps.open_fds >= 3);
        assert_true(ps.max_fds >= ps.open_fds);
        assert_int_equal(memory_usage_read(&mu), 0);
        assert_true(mu.limit_bytes > 0);
        assert_true(mu.used_bytes > 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cgroup_v2_path),
                cmocka_unit_test(test_cgroup_v1_memory_wins),
                cmocka_unit_test(test_limits),
                cmocka_unit_test(test_memory_stat),
                cmocka_unit_test(test_statm),
                cmocka_unit_test(test_read_self),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
