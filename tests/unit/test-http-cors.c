/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "http-cors.h"

typedef struct ParseCase {
        const char *spec;
        int r;
        const char *origins;            /* on success: "*", or the list kept, one per line */
        const char *item;               /* on failure: the item named, NULL for the whole value */
        const char *problem;            /* on failure: a word of the reason */
} ParseCase;

static void test_parse(void **state) {
        static const ParseCase cases[] = {
                /* No CORS: the default. */
                { "", 0, "", NULL, NULL },
                { "  \t", 0, "", NULL, NULL },
                { "*", 0, "*", NULL, NULL },
                { " * ", 0, "*", NULL, NULL },
                { "https://app.example", 0, "https://app.example\n", NULL, NULL },
                { "https://app.example, http://127.0.0.1:8081 ,http://[::1]:3000", 0,
                  "https://app.example\nhttp://127.0.0.1:8081\nhttp://[::1]:3000\n", NULL, NULL },
                /* Scheme and host are case-insensitive: kept as browsers send them. */
                { "HTTPS://App.Example:8443", 0, "https://app.example:8443\n", NULL, NULL },
                /* Any scheme (hybrid apps' capacitor://localhost, say). */
                { "capacitor://localhost", 0, "capacitor://localhost\n", NULL, NULL },
                { "https://a.example:65535", 0, "https://a.example:65535\n", NULL, NULL },
                { "http://a.example:443", 0, "http://a.example:443\n", NULL, NULL },

                { "https://app.example/", -EINVAL, NULL, "https://app.example/", "trailing slash" },
                { "https://app.example/path", -EINVAL, NULL, "https://app.example/path", "not an origin" },
                { "https://a.example, https://b.example/", -EINVAL, NULL, "https://b.example/", "not an origin" },
                { "app.example", -EINVAL, NULL, "app.example", "not an origin" },
                { "https://", -EINVAL, NULL, "https://", "not an origin" },
                { "https//a.example", -EINVAL, NULL, "https//a.example", "not an origin" },
                { "1http://a.example", -EINVAL, NULL, "1http://a.example", "not an origin" },
                { "https://user@a.example", -EINVAL, NULL, "https://user@a.example", "not an origin" },
                { "https://a.example?x=1", -EINVAL, NULL, "https://a.example?x=1", "not an origin" },
                { "https://a.example#", -EINVAL, NULL, "https://a.example#", "not an origin" },
                { "https://a b.example", -EINVAL, NULL, "https://a b.example", "not an origin" },
                { "https://a.example:", -EINVAL, NULL, "https://a.example:", "not an origin" },
                { "https://a.example:0", -EINVAL, NULL, "https://a.example:0", "not an origin" },
                { "https://a.example:080", -EINVAL, NULL, "https://a.example:080", "not an origin" },
                { "https://a.example:65536", -EINVAL, NULL, "https://a.example:65536", "not an origin" },
                { "https://a.example:8x", -EINVAL, NULL, "https://a.example:8x", "not an origin" },
                { "https://[::1", -EINVAL, NULL, "https://[::1", "not an origin" },
                { "https://[]", -EINVAL, NULL, "https://[]", "not an origin" },
                { "https://café.example", -EINVAL, NULL, "https://café.example", "not an origin" },
                /* A browser never sends the default port: it could never match. */
                { "https://a.example:443", -EINVAL, NULL, "https://a.example:443", "default port" },
                { "HTTP://a.example:80", -EINVAL, NULL, "HTTP://a.example:80", "default port" },
                { "wss://a.example:443", -EINVAL, NULL, "wss://a.example:443", "default port" },
                /* Any page can arrange to send Origin: null. */
                { "null", -EINVAL, NULL, "null", "sandboxed" },
                { "https://a.example, NULL", -EINVAL, NULL, "NULL", "sandboxed" },
                { "*, https://a.example", -EINVAL, NULL, NULL, "stands alone" },
                { "https://a.example,*", -EINVAL, NULL, NULL, "stands alone" },
                { "*,*", -EINVAL, NULL, NULL, "stands alone" },
                { "https://a.example,", -EINVAL, NULL, NULL, "empty item" },
                { ",https://a.example", -EINVAL, NULL, NULL, "empty item" },
                { "https://a.example, ,https://b.example", -EINVAL, NULL, NULL, "empty item" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const ParseCase *t = &cases[i];
                _cleanup_(cors_policy_freep) CorsPolicy *p = NULL;
                const char *problem = NULL, *item = NULL;
                size_t item_length = 0;
                char kept[256] = "";
                int r;

                print_message("# '%s'\n", t->spec);
                r = cors_policy_parse(t->spec, &p, &problem, &item, &item_length);
                assert_int_equal(r, t->r);
                /* Checking only gives the same answer. */
                assert_int_equal(cors_policy_parse(t->spec, NULL, &problem, &item, &item_length), t->r);
                if (r < 0) {
                        assert_null(p);
                        if (!strstr(problem, t->problem))
                                fail_msg("problem '%s' does not mention '%s'", problem, t->problem);
                        if (t->item) {
                                assert_non_null(item);
                                assert_int_equal(item_length, strlen(t->item));
                                assert_memory_equal(item, t->item, item_length);
                        } else
                                assert_null(item);
                        continue;
                }
                if (!p) {
                        assert_string_equal(t->origins, "");
                        continue;
                }
                if (p->any) {
                        assert_int_equal(p->n_origins, 0);
                        snprintf(kept, sizeof(kept), "*");
                }
                for (size_t j = 0; j < p->n_origins; j++) {
                        size_t n = strlen(kept);
                        snprintf(kept + n, sizeof(kept) - n, "%s\n", p->origins[j]);
                }
                assert_string_equal(kept, t->origins);
        }
}

#define LIST "https://app.example, http://127.0.0.1:8081, HTTP://Mixed.Example"

/* The headers as one string, "Name: value" per line. */
static void format_answer(const CorsAnswer *a, char *buf, size_t size) {
        buf[0] = '\0';
        for (size_t i = 0; i < a->n_headers; i++) {
                size_t n = strlen(buf);
                snprintf(buf + n, size - n, "%s: %s\n", a->headers[i].name, a->headers[i].value);
        }
}

#define EXPOSE "Access-Control-Expose-Headers: Retry-After, X-Request-ID\n"
#define VARY "Vary: Origin\n"
#define PREFLIGHT(methods) \
        "Access-Control-Allow-Methods: " methods "\n" \
        "Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID, Idempotency-Key\n" \
        "Access-Control-Max-Age: 600\n"

typedef struct DecideCase {
        const char *what;
        const char *spec;
        HttpMethod method;
        const char *origin;             /* NULL: no Origin header */
        const char *request_method;     /* Access-Control-Request-Method, or NULL */
        unsigned route_methods;
        bool preflight;
        const char *headers;
} DecideCase;

static void test_decide(void **state) {
        static const DecideCase cases[] = {
                { "exact match", LIST, HTTP_POST, "https://app.example", NULL, HTTP_POST, false,
                  "Access-Control-Allow-Origin: https://app.example\n"
                  "Access-Control-Allow-Credentials: true\n" EXPOSE VARY },
                { "exact match with port", LIST, HTTP_GET, "http://127.0.0.1:8081", NULL, HTTP_GET, false,
                  "Access-Control-Allow-Origin: http://127.0.0.1:8081\n"
                  "Access-Control-Allow-Credentials: true\n" EXPOSE VARY },
                { "port mismatch", LIST, HTTP_GET, "http://127.0.0.1:8082", NULL, HTTP_GET, false, VARY },
                { "port missing", LIST, HTTP_GET, "http://127.0.0.1", NULL, HTTP_GET, false, VARY },
                { "port added", LIST, HTTP_GET, "https://app.example:8443", NULL, HTTP_GET, false, VARY },
                { "default port spelt out", LIST, HTTP_GET, "https://app.example:443", NULL, HTTP_GET, false, VARY },
                { "scheme mismatch", LIST, HTTP_GET, "http://app.example", NULL, HTTP_GET, false, VARY },
                { "trailing slash", LIST, HTTP_GET, "https://app.example/", NULL, HTTP_GET, false, VARY },
                { "a longer host", LIST, HTTP_GET, "https://app.example.evil", NULL, HTTP_GET, false, VARY },
                { "a prefix of the host", LIST, HTTP_GET, "https://app.exampl", NULL, HTTP_GET, false, VARY },
                { "a subdomain", LIST, HTTP_GET, "https://x.app.example", NULL, HTTP_GET, false, VARY },
                /* Browsers send scheme and host in lower case; the list is
                 * kept so, and compared byte for byte. */
                { "listed in mixed case", LIST, HTTP_GET, "http://mixed.example", NULL, HTTP_GET, false,
                  "Access-Control-Allow-Origin: http://mixed.example\n"
                  "Access-Control-Allow-Credentials: true\n" EXPOSE VARY },
                { "sent in upper case", LIST, HTTP_GET, "HTTPS://APP.EXAMPLE", NULL, HTTP_GET, false, VARY },
                { "null origin", LIST, HTTP_GET, "null", NULL, HTTP_GET, false, VARY },
                { "empty origin", LIST, HTTP_GET, "", NULL, HTTP_GET, false, VARY },
                { "missing origin", LIST, HTTP_GET, NULL, NULL, HTTP_GET, false, VARY },

                { "preflight", LIST, HTTP_OPTIONS, "https://app.example", "POST", HTTP_GET | HTTP_POST, true,
                  "Access-Control-Allow-Origin: https://app.example\n"
                  "Access-Control-Allow-Credentials: true\n" PREFLIGHT("GET, HEAD, POST") VARY },
                { "preflight of a stream", LIST, HTTP_OPTIONS, "https://app.example", "GET", HTTP_GET, true,
                  "Access-Control-Allow-Origin: https://app.example\n"
                  "Access-Control-Allow-Credentials: true\n" PREFLIGHT("GET, HEAD") VARY },
                /* The browser compares the method it asked for with the list. */
                { "preflight for another method", LIST, HTTP_OPTIONS, "https://app.example", "DELETE",
                  HTTP_GET, true,
                  "Access-Control-Allow-Origin: https://app.example\n"
                  "Access-Control-Allow-Credentials: true\n" PREFLIGHT("GET, HEAD") VARY },
                { "preflight from another origin", LIST, HTTP_OPTIONS, "https://evil.example", "POST",
                  HTTP_GET | HTTP_POST, false, VARY },
                { "preflight from null", LIST, HTTP_OPTIONS, "null", "POST", HTTP_POST, false, VARY },
                { "preflight without Origin", LIST, HTTP_OPTIONS, NULL, "POST", HTTP_POST, false, VARY },
                { "OPTIONS without a requested method", LIST, HTTP_OPTIONS, "https://app.example", NULL,
                  HTTP_POST, false,
                  "Access-Control-Allow-Origin: https://app.example\n"
                  "Access-Control-Allow-Credentials: true\n" EXPOSE VARY },
                { "OPTIONS with an empty requested method", LIST, HTTP_OPTIONS, "https://app.example", "",
                  HTTP_POST, false,
                  "Access-Control-Allow-Origin: https://app.example\n"
                  "Access-Control-Allow-Credentials: true\n" EXPOSE VARY },
                { "a requested method on a GET", LIST, HTTP_GET, "https://app.example", "POST", HTTP_GET, false,
                  "Access-Control-Allow-Origin: https://app.example\n"
                  "Access-Control-Allow-Credentials: true\n" EXPOSE VARY },

                /* "*": the same answer for everyone, never with credentials. */
                { "* and an origin", "*", HTTP_POST, "https://any.example", NULL, HTTP_POST, false,
                  "Access-Control-Allow-Origin: *\n" EXPOSE },
                { "* and null", "*", HTTP_GET, "null", NULL, HTTP_GET, false,
                  "Access-Control-Allow-Origin: *\n" EXPOSE },
                { "* without Origin", "*", HTTP_GET, NULL, NULL, HTTP_GET, false,
                  "Access-Control-Allow-Origin: *\n" EXPOSE },
                { "* preflight", "*", HTTP_OPTIONS, "https://any.example", "POST", HTTP_GET | HTTP_POST, true,
                  "Access-Control-Allow-Origin: *\n" PREFLIGHT("GET, HEAD, POST") },
                { "* preflight without Origin", "*", HTTP_OPTIONS, NULL, "POST", HTTP_POST, false,
                  "Access-Control-Allow-Origin: *\n" EXPOSE },

                /* Empty: no CORS at all, as before CORS_ORIGINS. */
                { "empty list", "", HTTP_GET, "https://app.example", NULL, HTTP_GET, false, "" },
                { "empty list, preflight", "", HTTP_OPTIONS, "https://app.example", "POST", HTTP_POST, false, "" },
                /* Not a CORS path. */
                { "no CORS route", LIST, HTTP_GET, "https://app.example", NULL, 0, false, "" },
                { "no CORS route, preflight", "*", HTTP_OPTIONS, "https://app.example", "GET", 0, false, "" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const DecideCase *t = &cases[i];
                _cleanup_(cors_policy_freep) CorsPolicy *p = NULL;
                const char *problem, *item;
                size_t item_length;
                char headers[1024];
                CorsAnswer a;

                print_message("# %s\n", t->what);
                assert_int_equal(cors_policy_parse(t->spec, &p, &problem, &item, &item_length), 0);
                cors_decide(p, t->method, t->origin, t->request_method, t->route_methods, &a);
                format_answer(&a, headers, sizeof(headers));
                assert_string_equal(headers, t->headers);
                assert_int_equal(a.preflight, t->preflight);
                /* Never a wildcard with credentials. */
                assert_false(strstr(headers, "Origin: *") && strstr(headers, "Credentials"));
                if (t->route_methods)
                        assert_int_equal(cors_origin_allowed(p, t->origin),
                                         strstr(headers, "Access-Control-Allow-Origin") && t->origin);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse),
                cmocka_unit_test(test_decide),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
