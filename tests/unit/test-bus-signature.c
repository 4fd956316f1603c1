/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "bus-signature.h"
#include "util.h"

#define KEY "0123456789abcdef0123456789abcdef"
#define ENVELOPE "{\"id\":7,\"topic\":\"orders\",\"ts\":\"2026-12-01T00:00:00.000000Z\",\"data\":{\"n\":1}}"

static bool valid(const char *key, const char *topic, const char *data, const char *signature) {
        return bus_signature_valid(key, strlen(key), topic, data, strlen(data), signature);
}

static void test_sign_and_verify(void **state) {
        char sig[BUS_SIGNATURE_MAX], again[BUS_SIGNATURE_MAX];

        assert_int_equal(bus_signature(KEY, strlen(KEY), "orders", ENVELOPE, strlen(ENVELOPE), sig), 0);
        assert_int_equal(strlen(sig), BUS_SIGNATURE_MAX - 1);
        assert_memory_equal(sig, "v1=", 3);
        assert_int_equal(strspn(sig + 3, "0123456789abcdef"), 64);
        assert_int_equal(bus_signature(KEY, strlen(KEY), "orders", ENVELOPE, strlen(ENVELOPE), again), 0);
        assert_string_equal(sig, again);        /* deterministic: every instance agrees */
        assert_true(valid(KEY, "orders", ENVELOPE, sig));
}

static void test_what_does_not_verify(void **state) {
        char sig[BUS_SIGNATURE_MAX], other[BUS_SIGNATURE_MAX];

        assert_int_equal(bus_signature(KEY, strlen(KEY), "orders", ENVELOPE, strlen(ENVELOPE), sig), 0);
        assert_false(valid("another key, just as long as ours.", "orders", ENVELOPE, sig));
        assert_false(valid(KEY, "orders2", ENVELOPE, sig));             /* replayed on another topic */
        assert_false(valid(KEY, "orders", ENVELOPE " ", sig));          /* the data changed */
        assert_false(valid(KEY, "orders", ENVELOPE, NULL));             /* unsigned */
        assert_false(valid(KEY, "orders", ENVELOPE, ""));
        assert_false(valid(KEY, "orders", ENVELOPE, "v1=00"));
        strcpy(other, sig);
        other[10] = other[10] == '0' ? '1' : '0';
        assert_false(valid(KEY, "orders", ENVELOPE, other));
        strcpy(other, sig);
        other[1] = '2';                                                 /* another version */
        assert_false(valid(KEY, "orders", ENVELOPE, other));
        /* The topic and the data are separated: moving a byte across fails. */
        assert_int_equal(bus_signature(KEY, strlen(KEY), "ab", "c", 1, sig), 0);
        assert_false(valid(KEY, "a", "bc", sig));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sign_and_verify),
                cmocka_unit_test(test_what_does_not_verify),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
