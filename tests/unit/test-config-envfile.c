/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "config-envfile.h"

typedef struct Collected {
        char text[1024];
} Collected;

static int collect(const char *key, const char *value, unsigned line, void *userdata) {
        Collected *c = userdata;
        size_t n = strlen(c->text);
        snprintf(c->text + n, sizeof(c->text) - n, "%u:%s=[%s]\n", line, key, value);
        return 0;
}

static void expect(const char *input, const char *output) {
        Collected c = { "" };
        unsigned line = 0;
        const char *reason = NULL;

        assert_int_equal(envfile_parse(input, collect, &c, &line, &reason), 0);
        assert_string_equal(c.text, output);
}

static void expect_error(const char *input, unsigned error_line) {
        Collected c = { "" };
        unsigned line = 0;
        const char *reason = NULL;

        assert_int_equal(envfile_parse(input, collect, &c, &line, &reason), -EINVAL);
        assert_int_equal(line, error_line);
        assert_non_null(reason);
}

static void test_assignments(void **state) {
        expect("", "");
        expect("A=1", "1:A=[1]\n");
        expect("A=1\nB=two words\n", "1:A=[1]\n2:B=[two words]\n");
        expect("  A = spaced  \n", "1:A=[spaced]\n");
        expect("EMPTY=\n", "1:EMPTY=[]\n");
        expect("URL=postgres://u:p@h/d?x=1&y=2\n", "1:URL=[postgres://u:p@h/d?x=1&y=2]\n");
        expect("WIN=crlf\r\nNEXT=1\r\n", "1:WIN=[crlf]\n2:NEXT=[1]\n");
        expect("_X1=a=b=c\n", "1:_X1=[a=b=c]\n");
}

static void test_comments_and_blanks(void **state) {
        expect("# comment\n\n; also a comment\n   \nA=1 # not a comment\n",
               "5:A=[1 # not a comment]\n");
}

static void test_quotes(void **state) {
        expect("A=\"quoted value\"\n", "1:A=[quoted value]\n");
        expect("A='single $HOME \\n'\n", "1:A=[single $HOME \\n]\n");
        expect("A=\"esc \\\" \\\\ \\$\"\n", "1:A=[esc \" \\ $]\n");
        expect("A=\"\"\n", "1:A=[]\n");
        expect("A=\"x\"   \n", "1:A=[x]\n");
}

static void test_errors(void **state) {
        expect_error("=1\n", 1);
        expect_error("A=1\n1A=2\n", 2);
        expect_error("A B=1\n", 1);
        expect_error("A\n", 1);
        expect_error("A=\"open\n", 1);
        expect_error("A=\"x\" trailing\n", 1);
        expect_error("export A=1\n", 1);
}

static int stop_at_b(const char *key, const char *value, unsigned line, void *userdata) {
        return streq(key, "B") ? -EBADMSG : 0;
}

static void test_callback_error_stops(void **state) {
        unsigned line = 0;
        const char *reason = NULL;
        assert_int_equal(envfile_parse("A=1\nB=2\nC=3\n", stop_at_b, NULL, &line, &reason), -EBADMSG);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_assignments),
                cmocka_unit_test(test_comments_and_blanks),
                cmocka_unit_test(test_quotes),
                cmocka_unit_test(test_errors),
                cmocka_unit_test(test_callback_error_stops),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
