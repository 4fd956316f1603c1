/* SPDX-License-Identifier: MIT */
/* The fan-out's channel life where it used to go wrong: a stream that
 * cannot open for a channel's only subscriber freed the channel while
 * on_position() was still using it. The store, the stream and the answer
 * are replaced (-Wl,--wrap) so that the failure can be made to happen; the
 * event loop, the fan-out and the order are the real ones, and under
 * AddressSanitizer a use after free fails the test. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "event-fanout.h"
#include "event-store.h"

static DbQueryCallback position_cb;
static void *position_userdata;
static unsigned answered_500;
static HttpEndCallback end_cb;

int __wrap_store_query_position(Db *db, const char *topic, usec_t timeout_usec, DbQueryCallback cb,
                                void *userdata);
int __wrap_store_query_position(Db *db, const char *topic, usec_t timeout_usec, DbQueryCallback cb,
                                void *userdata) {
        position_cb = cb;
        position_userdata = userdata;
        return 0;
}

uint64_t __wrap_store_position(const DbResult *result);
uint64_t __wrap_store_position(const DbResult *result) {
        return 7;
}

void __wrap_db_cancel(Db *db, void *userdata);
void __wrap_db_cancel(Db *db, void *userdata) {
}

int __wrap_stream_open(StreamHub *hub, HttpRequest *req, StreamCloseCallback close_cb, void *userdata,
                       Stream **ret);
int __wrap_stream_open(StreamHub *hub, HttpRequest *req, StreamCloseCallback close_cb, void *userdata,
                       Stream **ret) {
        return -ENOMEM;
}

void __wrap_http_request_on_end(HttpRequest *req, HttpEndCallback cb, void *userdata);
void __wrap_http_request_on_end(HttpRequest *req, HttpEndCallback cb, void *userdata) {
        end_cb = cb;
}

void __wrap_http_respond_error(HttpRequest *req, unsigned status, const char *code, const char *format, ...);
void __wrap_http_respond_error(HttpRequest *req, unsigned status, const char *code, const char *format, ...) {
        if (status == 500)
                answered_500++;
}

static void test_stream_fails_for_the_only_subscriber(void **state) {
        FanoutSettings settings = {
                .query_timeout_usec = USEC_PER_SEC,
                .resync_interval_usec = 3600 * USEC_PER_SEC,
                .replay_page_bytes = 65536,
        };
        sd_event *event = NULL;
        Fanout *f = NULL;
        int fake_db, fake_hub, fake_req;

        assert_int_equal(sd_event_new(&event), 0);
        assert_int_equal(fanout_new(event, (Db *) &fake_db, (StreamHub *) &fake_hub, &settings, &f), 0);

        fanout_subscribe(f, (HttpRequest *) &fake_req, "lonely", false, 0);
        assert_non_null(position_cb);
        assert_int_equal(fanout_counters(f).channels, 1);
        assert_int_equal(fanout_counters(f).subscribers, 1);

        /* The position arrives, the stream fails: 500, the subscriber goes,
         * and the channel, still in use here, lives to the end of the turn. */
        position_cb((Db *) &fake_db, &(DbResult) { 0 }, position_userdata);
        assert_int_equal(answered_500, 1);
        assert_null(end_cb);            /* nothing left to call at the request's end */
        assert_int_equal(fanout_counters(f).subscribers, 0);
        assert_int_equal(fanout_counters(f).channels, 1);

        /* The turn ends: the channel goes. */
        assert_true(sd_event_run(event, 0) >= 0);
        assert_int_equal(fanout_counters(f).channels, 0);

        /* A new subscriber for the topic makes a new channel. */
        position_cb = NULL;
        fanout_subscribe(f, (HttpRequest *) &fake_req, "lonely", false, 0);
        assert_non_null(position_cb);
        assert_int_equal(fanout_counters(f).channels, 1);
        position_cb((Db *) &fake_db, &(DbResult) { 0 }, position_userdata);
        assert_int_equal(answered_500, 2);

        fanout_free(f);
        sd_event_unref(event);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_stream_fails_for_the_only_subscriber),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
