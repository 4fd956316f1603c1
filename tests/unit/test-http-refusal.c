/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>

#include "http-refusal.h"

static void test_decide(void **state) {
        static const struct {
                const char *content_length;
                bool transfer_encoding;
                size_t header_size;
                unsigned status;
                const char *code;
        } cases[] = {
                { "-1", false, 100, 400, "bad_request" },
                { "+5", false, 100, 400, "bad_request" },
                { "12abc", false, 100, 400, "bad_request" },
                { "0x10", false, 100, 400, "bad_request" },
                { "11, 11", false, 100, 400, "bad_request" },
                { "", false, 100, 400, "bad_request" },
                { "18446744073709551616", false, 100, 413, "payload_too_large" },
                { "99999999999999999999999", false, 100, 413, "payload_too_large" },
                /* With Transfer-Encoding the length is not what MHD refused. */
                { "-1", true, 100, 400, "bad_request" },
                { "-1", true, 5000, 431, "header_too_large" },
                /* A header block past the limit (MHD: no room for the Cookie). */
                { NULL, false, 5000, 431, "header_too_large" },
                { "5", false, 5000, 431, "header_too_large" },
                { NULL, false, 100, 400, "bad_request" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                HttpRefusal r;
                http_refusal_decide(cases[i].content_length, cases[i].transfer_encoding,
                                    cases[i].header_size, 3072, &r);
                assert_int_equal(r.status, cases[i].status);
                assert_string_equal(r.code, cases[i].code);
                assert_true(strlen(r.message) > 0);
        }
}

/* Parses what a client would: one head, then exactly Content-Length bytes
 * of JSON, and nothing after them. */
static void test_format(void **state) {
        HttpRefusal r;
        char buf[1024], date[HTTP_DATE_MAX];
        const char *body, *length;
        json_error_t e;
        int n;

        http_refusal_decide("-1", false, 80, 3072, &r);
        n = http_refusal_format(&r, "abc-1", http_date_format(784111777, date), buf, sizeof(buf));
        assert_true(n > 0 && (size_t) n == strlen(buf));
        assert_string_equal(date, "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_true(strncmp(buf, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
        assert_non_null(strstr(buf, "\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
        assert_non_null(strstr(buf, "\r\nConnection: close\r\n"));
        assert_non_null(strstr(buf, "\r\nContent-Type: application/json\r\n"));
        assert_non_null(strstr(buf, "\r\nX-Request-ID: abc-1\r\n"));
        body = strstr(buf, "\r\n\r\n");
        assert_non_null(body);
        body += 4;
        assert_null(strstr(body, "HTTP/1.1"));
        length = strstr(buf, "\r\nContent-Length: ");
        assert_non_null(length);
        assert_int_equal(strtoul(length + 18, NULL, 10), strlen(body));
        json_t *j = json_loads(body, 0, &e);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "error")), "bad_request");
        assert_non_null(json_string_value(json_object_get(j, "message")));
        json_decref(j);

        /* Too small a buffer is an error, never a cut answer. */
        assert_int_equal(http_refusal_format(&r, "abc-1", date, buf, 100), -ENOBUFS);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_decide),
                cmocka_unit_test(test_format),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
