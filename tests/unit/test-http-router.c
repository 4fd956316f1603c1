/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "http-router.h"

static void handler(HttpRequest *req, void *userdata) {
}

static const Route routes[] = {
        { "live",     "/_/health/live",                  HTTP_GET, 0, handler, NULL },
        { "events",   "/api/v1/topics/{topic}/events",   HTTP_POST, ROUTE_ACCEPTS_BODY | ROUTE_CORS, handler, NULL },
        { "history",  "/api/v1/topics/{topic}/events",   HTTP_GET, ROUTE_CORS, handler, NULL },
        { "stream",   "/api/v1/topics/{topic}/stream",   HTTP_GET, ROUTE_CORS, handler, NULL },
        { "other",    "/api/v1/topics/{topic}/stream",   HTTP_PUT, 0, handler, NULL },
        { "delete",   "/api/v1/topics/{topic}",          HTTP_DELETE, 0, handler, NULL },
        { "api",      "/api/*",                          HTTP_ANY_METHOD, ROUTE_NEEDS_READY, handler, NULL },
};

static const Route *match(const char *path, HttpMethod method, int expect) {
        static RouteMatch m;
        assert_int_equal(router_match(routes, ELEMENTSOF(routes), path, method, &m), expect);
        return m.route;
}

static void test_exact(void **state) {
        assert_string_equal(match("/_/health/live", HTTP_GET, 0)->name, "live");
        /* GET routes answer HEAD too. */
        assert_string_equal(match("/_/health/live", HTTP_HEAD, 0)->name, "live");
        match("/_/health/live/", HTTP_GET, -ENOENT);
        match("/_/health/liv", HTTP_GET, -ENOENT);
        match("/_/health/livex", HTTP_GET, -ENOENT);
        match("", HTTP_GET, -ENOENT);
}

static void test_parameters(void **state) {
        RouteMatch m;

        assert_int_equal(router_match(routes, ELEMENTSOF(routes), "/api/v1/topics/orders/events",
                                      HTTP_POST, &m), 0);
        assert_string_equal(m.route->name, "events");
        assert_int_equal(m.n_params, 1);
        assert_int_equal(m.params[0].length, 6);
        assert_memory_equal(m.params[0].value, "orders", 6);

        assert_string_equal(match("/api/v1/topics/orders/stream", HTTP_GET, 0)->name, "stream");
        /* An empty segment is no parameter: the wildcard takes it. */
        assert_string_equal(match("/api/v1/topics//events", HTTP_GET, 0)->name, "api");
        /* A parameter never spans a '/'. */
        assert_string_equal(match("/api/v1/topics/a/b/events", HTTP_GET, 0)->name, "api");
}

static void test_method_not_allowed(void **state) {
        RouteMatch m;
        char allow[64];

        assert_int_equal(router_match(routes, ELEMENTSOF(routes), "/_/health/live", HTTP_POST, &m),
                         -EMETHOD);
        assert_null(m.route);
        assert_string_equal(router_format_allow(m.allowed, allow, sizeof(allow)), "GET, HEAD");

        assert_int_equal(router_match(routes, ELEMENTSOF(routes), "/api/v1/topics/x/events",
                                      HTTP_DELETE, &m), -EMETHOD);
        assert_string_equal(router_format_allow(m.allowed, allow, sizeof(allow)), "GET, HEAD, POST");
        assert_int_equal(m.cors_methods, HTTP_GET | HTTP_POST);

        /* A CORS preflight: the methods of the path's CORS routes only. */
        assert_int_equal(router_match(routes, ELEMENTSOF(routes), "/api/v1/topics/x/stream",
                                      HTTP_OPTIONS, &m), -EMETHOD);
        assert_int_equal(m.allowed, HTTP_GET | HTTP_PUT);
        assert_int_equal(m.cors_methods, HTTP_GET);
        assert_int_equal(router_match(routes, ELEMENTSOF(routes), "/_/health/live", HTTP_OPTIONS, &m),
                         -EMETHOD);
        assert_int_equal(m.cors_methods, 0);
}

static void test_wildcard_is_last_resort(void **state) {
        assert_string_equal(match("/api/v2/anything", HTTP_PUT, 0)->name, "api");
        assert_string_equal(match("/api/", HTTP_GET, 0)->name, "api");
        match("/api", HTTP_GET, -ENOENT);
        match("/apix/1", HTTP_GET, -ENOENT);
        assert_string_equal(match("/api/v1/topics/x", HTTP_DELETE, 0)->name, "delete");
}

static void test_methods(void **state) {
        assert_int_equal(http_method_from_string("GET"), HTTP_GET);
        assert_int_equal(http_method_from_string("DELETE"), HTTP_DELETE);
        assert_int_equal(http_method_from_string("get"), HTTP_OTHER);
        assert_int_equal(http_method_from_string("BREW"), HTTP_OTHER);
        assert_string_equal(match("/api/x", HTTP_OTHER, 0)->name, "api");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_exact),
                cmocka_unit_test(test_parameters),
                cmocka_unit_test(test_method_not_allowed),
                cmocka_unit_test(test_wildcard_is_last_resort),
                cmocka_unit_test(test_methods),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
