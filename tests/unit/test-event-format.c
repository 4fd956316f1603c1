/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "event-format.h"
#include "event-api.h"
#include "event-pglisten.h"

static void test_topic_names(void **state) {
        static const char *const good[] = { "a", "orders", "Orders_2026-11", "-", "_" };
        static const char *const bad[] = { "", "a.b", "*", ">", "a b", "..", "ä", "a/b", "a\nb",
                                           "x%2e", "a,b" };
        char longest[TOPIC_NAME_MAX + 2];

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                assert_true(topic_name_valid(good[i], strlen(good[i])));
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (topic_name_valid(bad[i], strlen(bad[i])))
                        fail_msg("accepted '%s'", bad[i]);
        memset(longest, 'x', sizeof(longest));
        assert_true(topic_name_valid(longest, TOPIC_NAME_MAX));
        assert_false(topic_name_valid(longest, TOPIC_NAME_MAX + 1));
        /* Length, not NUL, ends the name: an embedded NUL is refused. */
        assert_false(topic_name_valid("ab\0c", 4));
}

static void test_envelope_and_frame(void **state) {
        _cleanup_free_ char *e = NULL;
        size_t size;
        Frame *f;

        assert_int_equal(event_envelope(42, "orders", "2026-11-21T10:00:00.000001Z", "{\"a\":1}", 7,
                                        &e, &size), 0);
        assert_string_equal(e, "{\"id\":42,\"topic\":\"orders\",\"ts\":\"2026-11-21T10:00:00.000001Z\","
                               "\"data\":{\"a\":1}}");
        assert_int_equal(size, strlen(e));

        f = event_frame(42, e);
        assert_non_null(f);
        assert_int_equal(f->size, strlen("id: 42\nevent: message\ndata: ") + size + 2);
        assert_memory_equal(f->data, "id: 42\nevent: message\ndata: {\"id\":42,", 37);
        assert_memory_equal(f->data + f->size - 2, "\n\n", 2);
        assert_null(frame_unref(f));
}

static void test_envelope_parse(void **state) {
        _cleanup_free_ char *e = NULL;
        size_t size;
        uint64_t id = 0;

        assert_int_equal(event_envelope(7, "t1", "ts", "null", 4, &e, &size), 0);
        assert_int_equal(event_envelope_parse(e, size, "t1", &id), 0);
        assert_true(id == 7);
        /* The subject's topic must be the envelope's. */
        assert_int_equal(event_envelope_parse(e, size, "t2", &id), -EBADMSG);

        static const char *const bad[] = {
                "", "{}", "{\"id\":0,\"topic\":\"t1\",\"ts\":\"x\",\"data\":1}",
                "{\"id\":-1,\"topic\":\"t1\",\"ts\":\"x\",\"data\":1}",
                "{\"id\":1,\"topic\":\"t1\",\"ts\":\"x\",\"data\":1",
                "{\"id\":99999999999999999999,\"topic\":\"t1\",\"ts\":\"x\",\"data\":1}",
                "{\"id\":1 ,\"topic\":\"t1\",\"ts\":\"x\",\"data\":1}",
                "{\"topic\":\"t1\",\"id\":1,\"ts\":\"x\",\"data\":1}",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (event_envelope_parse(bad[i], strlen(bad[i]), "t1", &id) != -EBADMSG)
                        fail_msg("accepted '%s'", bad[i]);
        /* A NUL inside is refused too (it would end an SSE line early). */
        assert_int_equal(event_envelope_parse("{\"id\":1,\"topic\":\"t1\",\"ts\":\"\0\"}", 30, "t1", &id),
                         -EBADMSG);
}

static void test_hint(void **state) {
        char hint[EVENT_HINT_MAX];
        size_t n = event_hint(18446744073709551615u, "t1", hint);
        uint64_t id = 0;

        assert_string_equal(hint, "{\"id\":18446744073709551615,\"topic\":\"t1\",\"hint\":true}");
        assert_int_equal(event_hint_parse(hint, n, "t1", &id), 0);
        assert_true(id == 18446744073709551615u);
        /* Never taken for an event, nor an event for a hint. */
        assert_int_equal(event_envelope_parse(hint, n, "t1", &id), -EBADMSG);
        assert_int_equal(event_hint_parse(hint, n, "t2", &id), -EBADMSG);

        static const char *const bad[] = {
                "", "{\"id\":0,\"topic\":\"t1\",\"hint\":true}",
                "{\"id\":-1,\"topic\":\"t1\",\"hint\":true}",
                "{\"id\": 1,\"topic\":\"t1\",\"hint\":true}",
                "{\"id\":01,\"topic\":\"t1\",\"hint\":true}",
                "{\"id\":1,\"topic\":\"t1\",\"hint\":true} ",
                "{\"id\":1,\"topic\":\"t1\",\"hint\":false}",
                "{\"id\":1,\"topic\":\"t1\",\"ts\":\"x\",\"data\":1}",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (event_hint_parse(bad[i], strlen(bad[i]), "t1", &id) != -EBADMSG)
                        fail_msg("accepted '%s'", bad[i]);
}

static void test_notify_payload(void **state) {
        char topic[129];
        uint64_t last = 0;

        assert_int_equal(pglisten_parse("orders 5 9", topic, &last), 0);
        assert_string_equal(topic, "orders");
        assert_true(last == 9);
        static const char *const bad[] = { "", "orders", "orders 5", "orders 9 5", "orders 0 0",
                                           "a.b 1 2", "orders 1 2 3", "orders 1 2 ", "orders x 2" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (pglisten_parse(bad[i], topic, &last) != -EBADMSG)
                        fail_msg("accepted '%s'", bad[i]);
}

static void test_authorization(void **state) {
        assert_true(event_api_authorized(NULL, ""));
        assert_true(event_api_authorized("anything", ""));
        assert_true(event_api_authorized("Bearer s3cret", "s3cret"));
        assert_true(event_api_authorized("bearer s3cret", "s3cret"));
        assert_false(event_api_authorized(NULL, "s3cret"));
        assert_false(event_api_authorized("s3cret", "s3cret"));
        assert_false(event_api_authorized("Basic s3cret", "s3cret"));
        assert_false(event_api_authorized("Bearer s3cre", "s3cret"));
        assert_false(event_api_authorized("Bearer s3crets", "s3cret"));
        assert_false(event_api_authorized("Bearer ", "s3cret"));
}

static void test_content_type(void **state) {
        assert_true(events_content_type_json("application/json"));
        assert_true(idempotency_key_valid(NULL));
        assert_true(idempotency_key_valid("order-42"));
        assert_true(idempotency_key_valid("with space and ~!\"\\"));
        assert_false(idempotency_key_valid(""));
        assert_false(idempotency_key_valid("tab\there"));
        assert_false(idempotency_key_valid("caf\xc3\xa9"));
        char key[IDEMPOTENCY_KEY_MAX + 2];
        memset(key, 'k', sizeof(key) - 1);
        key[sizeof(key) - 1] = '\0';
        assert_false(idempotency_key_valid(key));       /* 256 */
        key[IDEMPOTENCY_KEY_MAX] = '\0';
        assert_true(idempotency_key_valid(key));        /* 255 */
        assert_true(events_content_type_json("Application/JSON"));
        assert_true(events_content_type_json("application/json; charset=utf-8"));
        assert_false(events_content_type_json(NULL));
        assert_false(events_content_type_json("application/jsonp"));
        assert_false(events_content_type_json("text/plain"));
        assert_false(events_content_type_json("application/x-www-form-urlencoded"));
}

static void test_payload_compact(void **state) {
        static const struct {
                const char *body;
                const char *stored;             /* NULL: refused */
        } cases[] = {
                { " { \"a\" : [1, 2.5, true, null] }\n", "{\"a\":[1,2.5,true,null]}" },
                { "\"line\\nbreak\"", "\"line\\nbreak\"" },
                { "\" kept \\\" inside \"", "\" kept \\\" inside \"" },
                { "42", "42" },
                /* Numbers keep their text, whatever their size. */
                { "{\"price\": 0.1}", "{\"price\":0.1}" },
                { "[1e2, 1E+2, -0, 0.10, 1.5e-7]", "[1e2,1E+2,-0,0.10,1.5e-7]" },
                { "18446744073709551616", "18446744073709551616" },
                { "[-123456789012345678901234567890, 1e400]", "[-123456789012345678901234567890,1e400]" },
                { "{\"\\u00e9\": \"caf\\u00e9\"}", "{\"\\u00e9\":\"caf\\u00e9\"}" },
                /* Refused, as by jansson or by the number grammar. */
                { "{\"a\":1,\"a\":2}", NULL },
                { "{\"a\":", NULL },
                { "{} {}", NULL },
                { "1 2", NULL },
                { "01", NULL },
                { "1.", NULL },
                { ".5", NULL },
                { "-", NULL },
                { "+1", NULL },
                { "1e", NULL },
                { "1.5.3", NULL },
                { "[1,,2]", NULL },
                { "\"nul\\u0000\"", NULL },
                { "\"\xff\"", NULL },
                { "NaN", NULL },
                { "-Infinity", NULL },
        };
        char error[512];
        size_t size;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *payload = NULL;
                int r = event_payload_compact(cases[i].body, strlen(cases[i].body), 1024, &payload,
                                              &size, error, sizeof(error));
                if (!cases[i].stored) {
                        assert_int_equal(r, -EINVAL);
                        assert_true(strncmp(error, "invalid JSON: ", 14) == 0);
                        continue;
                }
                assert_int_equal(r, 0);
                assert_string_equal(payload, cases[i].stored);
                assert_int_equal(size, strlen(payload));
        }
        char *payload = NULL;
        assert_int_equal(event_payload_compact("", 0, 1024, &payload, &size, error, sizeof(error)), -EINVAL);
        assert_string_equal(error, "the body is empty");
        /* jansson's line and column are the client's: numbers are checked
         * as blanks of their own length. */
        assert_int_equal(event_payload_compact("[12345,\n 1,]", 12, 1024, &payload, &size, error,
                                               sizeof(error)), -EINVAL);
        assert_non_null(strstr(error, "line 2, column 4"));
        assert_int_equal(event_payload_compact("[1, 01]", 7, 1024, &payload, &size, error, sizeof(error)),
                         -EINVAL);
        assert_string_equal(error, "invalid JSON: invalid number at byte 4");
        assert_int_equal(event_payload_compact("4\0", 2, 1024, &payload, &size, error, sizeof(error)), -EINVAL);
        assert_string_equal(error, "invalid JSON: a NUL byte at byte 1");
        /* The limit applies to what is stored: whitespace does not count. */
        assert_int_equal(event_payload_compact("[1,   2]", 8, 5, &payload, &size, error, sizeof(error)), 0);
        free(payload);
        payload = NULL;
        assert_int_equal(event_payload_compact("[1,2,3]", 7, 5, &payload, &size, error, sizeof(error)), -EFBIG);
        assert_string_equal(error, "the event is 7 bytes without whitespace, the limit is 5");
        assert_null(payload);           /* written on success only */
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_topic_names),
                cmocka_unit_test(test_envelope_and_frame),
                cmocka_unit_test(test_envelope_parse),
                cmocka_unit_test(test_hint),
                cmocka_unit_test(test_notify_payload),
                cmocka_unit_test(test_authorization),
                cmocka_unit_test(test_content_type),
                cmocka_unit_test(test_payload_compact),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
