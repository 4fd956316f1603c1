/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sse-frame.h"

static void expect(SseBuffer *b, const char *text) {
        char out[1024];
        size_t n = sse_buffer_take(b, out, sizeof(out) - 1);
        out[n] = '\0';
        assert_string_equal(out, text);
        assert_int_equal(sse_buffer_pending(b), 0);
}

static void test_event(void **state) {
        SseBuffer b = { 0 };

        assert_int_equal(sse_append_event(&b, "7", "tick", "{\"n\":1}"), 0);
        expect(&b, "id: 7\nevent: tick\ndata: {\"n\":1}\n\n");
        assert_int_equal(sse_append_event(&b, NULL, NULL, "x"), 0);
        expect(&b, "data: x\n\n");
        assert_int_equal(sse_append_event(&b, NULL, "end", ""), 0);
        expect(&b, "event: end\ndata: \n\n");
        sse_buffer_done(&b);
}

static void test_multiline_data(void **state) {
        SseBuffer b = { 0 };

        /* Every line break style becomes its own data: line, so no payload
         * can end an event early or inject a field. */
        assert_int_equal(sse_append_event(&b, NULL, NULL, "a\nb\r\nc\rd"), 0);
        expect(&b, "data: a\ndata: b\ndata: c\ndata: d\n\n");
        assert_int_equal(sse_append_event(&b, NULL, NULL, "x\n\nevent: evil"), 0);
        expect(&b, "data: x\ndata: \ndata: event: evil\n\n");
        sse_buffer_done(&b);
}

static void test_fields_reject_line_breaks(void **state) {
        SseBuffer b = { 0 };

        assert_int_equal(sse_append_event(&b, "1\nevent: x", "tick", "d"), -EINVAL);
        assert_int_equal(sse_append_event(&b, "1", "ti\rck", "d"), -EINVAL);
        /* Nothing half-written stays behind. */
        assert_int_equal(sse_buffer_pending(&b), 0);
        assert_int_equal(sse_append_comment(&b, "a\nb"), -EINVAL);
        assert_int_equal(sse_buffer_pending(&b), 0);
        sse_buffer_done(&b);
}

/* Found by fuzz-sse: a refused event whose first fields made the buffer
 * move its pending bytes to the front must leave those bytes as they were. */
static void test_refused_event_after_compaction(void **state) {
        SseBuffer b = { 0 };
        char sent[256], long_id[221];

        memset(long_id, 'i', sizeof(long_id) - 1);
        long_id[sizeof(long_id) - 1] = '\0';
        assert_int_equal(sse_append_comment(&b, "0123456789012345678901234567890123456789"), 0);
        assert_int_equal(sse_append_comment(&b, "kept"), 0);
        /* Send the first comment; the buffer (256 bytes) now has room only
         * after compaction for the long id. */
        assert_int_equal(sse_buffer_take(&b, sent, 44), 44);
        assert_int_equal(sse_append_event(&b, long_id, "bad\ntype", "d"), -EINVAL);
        expect(&b, ": kept\n\n");
        sse_buffer_done(&b);
}

static void test_comment_and_retry(void **state) {
        SseBuffer b = { 0 };

        assert_int_equal(sse_append_retry(&b, 2000), 0);
        assert_int_equal(sse_append_comment(&b, "heartbeat"), 0);
        expect(&b, "retry: 2000\n\n: heartbeat\n\n");
        sse_buffer_done(&b);
}

static void test_partial_takes(void **state) {
        SseBuffer b = { 0 };
        char out[8];
        size_t total = 0;

        for (int i = 0; i < 100; i++)
                assert_int_equal(sse_append_event(&b, NULL, NULL, "0123456789"), 0);
        while (sse_buffer_pending(&b) > 0) {
                size_t n = sse_buffer_take(&b, out, sizeof(out));
                assert_true(n > 0 && n <= sizeof(out));
                total += n;
                /* Appending while partly sent keeps the order. */
                if (total == 400)
                        assert_int_equal(sse_append_event(&b, NULL, NULL, "tail"), 0);
        }
        assert_int_equal(total, 100 * strlen("data: 0123456789\n\n") + strlen("data: tail\n\n"));
        sse_buffer_done(&b);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_event),
                cmocka_unit_test(test_multiline_data),
                cmocka_unit_test(test_fields_reject_line_breaks),
                cmocka_unit_test(test_refused_event_after_compaction),
                cmocka_unit_test(test_comment_and_retry),
                cmocka_unit_test(test_partial_takes),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
