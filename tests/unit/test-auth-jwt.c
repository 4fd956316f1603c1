/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "auth-jwt.h"
#include "event-auth.h"
#include "util.h"

#define SEC(n) ((usec_t) (n) * USEC_PER_SEC)

static void test_base64url(void **state) {
        static const struct {
                const char *in;
                const char *out;        /* NULL: refused */
        } cases[] = {
                { "", "" },
                { "YQ", "a" },
                { "YWI", "ab" },
                { "YWJj", "abc" },
                { "eyJhbGciOiJIUzI1NiJ9", "{\"alg\":\"HS256\"}" },
                { "_-8", "\xff\xef" },
                { "YQ==", NULL },       /* padding is not base64url's */
                { "Y", NULL },          /* no whole byte */
                { "YR", NULL },         /* leftover bits set: another encoding of "a" */
                { "Y+Q", NULL },
                { "Y/Q", NULL },
                { "Y Q", NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ unsigned char *out = NULL;
                size_t n = 0;
                int r = jwt_base64url_decode(cases[i].in, strlen(cases[i].in), &out, &n);
                if (!cases[i].out) {
                        if (r != -EINVAL)
                                fail_msg("'%s' accepted", cases[i].in);
                        continue;
                }
                assert_int_equal(r, 0);
                assert_int_equal(n, strlen(cases[i].out));
                assert_memory_equal(out, cases[i].out, n);
        }
}

static void test_header_alg(void **state) {
        static const struct {
                const char *header;
                bool hs, rs, es;        /* keys configured */
                int alg;
        } cases[] = {
                { "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", true, false, false, JWT_ALG_HS256 },
                { "{\"alg\":\"HS256\"}", false, true, false, _JWT_ALG_INVALID },  /* confusion: no HS key */
                { "{\"alg\":\"RS256\"}", false, true, false, JWT_ALG_RS256 },
                { "{\"alg\":\"RS256\"}", true, false, true, _JWT_ALG_INVALID },
                { "{\"alg\":\"ES256\"}", false, false, true, JWT_ALG_ES256 },
                { "{\"alg\":\"none\"}", true, true, true, _JWT_ALG_INVALID },
                { "{\"alg\":\"None\"}", true, true, true, _JWT_ALG_INVALID },
                { "{\"alg\":\"HS512\"}", true, true, true, _JWT_ALG_INVALID },
                { "{\"alg\":\"hs256\"}", true, true, true, _JWT_ALG_INVALID },
                { "{}", true, true, true, _JWT_ALG_INVALID },
                { "{\"alg\":256}", true, true, true, _JWT_ALG_INVALID },
                { "{\"alg\":\"HS256\",\"crit\":[\"b64\"]}", true, false, false, _JWT_ALG_INVALID },
                { "[\"HS256\"]", true, true, true, _JWT_ALG_INVALID },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_error_t e;
                json_t *h = json_loads(cases[i].header, JSON_DECODE_ANY, &e);
                bool have[_JWT_ALG_MAX] = { cases[i].hs, cases[i].rs, cases[i].es };
                assert_non_null(h);
                if ((int) jwt_header_alg(h, have) != cases[i].alg)
                        fail_msg("%s (hs %d rs %d es %d): want %d", cases[i].header, cases[i].hs, cases[i].rs,
                                 cases[i].es, cases[i].alg);
                json_decref(h);
        }
}

static void test_time_claims(void **state) {
        const usec_t now = SEC(1800000000);
        static const struct {
                const char *claims;
                JwtStatus status;
        } cases[] = {
                { "{}", JWT_VALID },                            /* neither: valid */
                { "{\"exp\":1800000100}", JWT_VALID },
                { "{\"exp\":1799999990}", JWT_VALID },          /* 10 s ago: within the leeway */
                { "{\"exp\":1799999970}", JWT_EXPIRED },        /* 30 s ago: the leeway is over */
                { "{\"exp\":1700000000}", JWT_EXPIRED },
                { "{\"nbf\":1800000020}", JWT_VALID },          /* 20 s early: within the leeway */
                { "{\"nbf\":1800000100}", JWT_NOT_YET_VALID },
                { "{\"exp\":\"tomorrow\"}", JWT_MALFORMED },
                { "{\"nbf\":null}", JWT_MALFORMED },
                { "{\"exp\":1800000100.5}", JWT_VALID },        /* NumericDate may have a fraction */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_error_t e;
                json_t *c = json_loads(cases[i].claims, 0, &e);
                assert_non_null(c);
                if (jwt_claims_check_time(c, now, JWT_LEEWAY_USEC) != cases[i].status)
                        fail_msg("%s: want %d", cases[i].claims, cases[i].status);
                json_decref(c);
        }
}

static void test_claims_allow(void **state) {
        static const struct {
                const char *claims;
                JwtAction action;
                const char *topic;
                bool allow;
        } cases[] = {
                { "{\"baton\":{\"publish\":[\"orders\"]}}", JWT_PUBLISH, "orders", true },
                { "{\"baton\":{\"publish\":[\"orders\"]}}", JWT_SUBSCRIBE, "orders", false },
                { "{\"baton\":{\"publish\":[\"orders\"]}}", JWT_PUBLISH, "orders2", false },
                { "{\"baton\":{\"subscribe\":[\"chat-*\",\"news\"]}}", JWT_SUBSCRIBE, "chat-42", true },
                { "{\"baton\":{\"subscribe\":[\"chat-*\",\"news\"]}}", JWT_SUBSCRIBE, "news", true },
                { "{\"baton\":{\"subscribe\":[\"*\"]}}", JWT_SUBSCRIBE, "anything", true },
                { "{\"baton\":{\"subscribe\":\"*\"}}", JWT_SUBSCRIBE, "anything", false },      /* not a list */
                { "{\"baton\":{\"subscribe\":[1,null,\"x.*\"]}}", JWT_SUBSCRIBE, "x.y", false }, /* no valid entry */
                { "{\"baton\":[\"*\"]}", JWT_SUBSCRIBE, "a", false },
                { "{\"sub\":\"alice\"}", JWT_PUBLISH, "a", false },
                { "{}", JWT_SUBSCRIBE, "a", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_error_t e;
                json_t *c = json_loads(cases[i].claims, 0, &e);
                assert_non_null(c);
                if (jwt_claims_allow(c, cases[i].action, cases[i].topic) != cases[i].allow)
                        fail_msg("%s, %s %s: want %d", cases[i].claims,
                                 cases[i].action == JWT_PUBLISH ? "publish" : "subscribe", cases[i].topic,
                                 cases[i].allow);
                json_decref(c);
        }
}

static void test_decide(void **state) {
        enum { P = JWT_PUBLISH, S = JWT_SUBSCRIBE };
        static const struct {
                int action;
                AuthFacts facts;
                AuthVerdict verdict;
        } cases[] = {
                /* Without JWT: API_TOKEN guards publishing, reading is open. */
                { P, { .jwt_on = false }, AUTH_ALLOW },
                { P, { .api_token_set = true }, AUTH_UNAUTHORIZED },
                { P, { .api_token_set = true, .has_token = true }, AUTH_UNAUTHORIZED },
                { P, { .api_token_set = true, .has_token = true, .api_token_matches = true }, AUTH_ALLOW },
                { S, { .api_token_set = true }, AUTH_ALLOW },
                /* With JWT. */
                { P, { .jwt_on = true }, AUTH_UNAUTHORIZED },
                { S, { .jwt_on = true }, AUTH_UNAUTHORIZED },
                { S, { .jwt_on = true, .anonymous_subscribe = true }, AUTH_ALLOW },
                { P, { .jwt_on = true, .anonymous_subscribe = true }, AUTH_UNAUTHORIZED },
                { P, { .jwt_on = true, .has_token = true, .jwt = JWT_VALID, .granted = true }, AUTH_ALLOW },
                { P, { .jwt_on = true, .has_token = true, .jwt = JWT_VALID }, AUTH_FORBIDDEN },
                { S, { .jwt_on = true, .has_token = true, .jwt = JWT_VALID }, AUTH_FORBIDDEN },
                { S, { .jwt_on = true, .anonymous_subscribe = true, .has_token = true, .jwt = JWT_VALID },
                  AUTH_ALLOW },
                { P, { .jwt_on = true, .has_token = true, .jwt = JWT_EXPIRED }, AUTH_UNAUTHORIZED },
                { P, { .jwt_on = true, .has_token = true, .jwt = JWT_ALG_REFUSED }, AUTH_UNAUTHORIZED },
                { P, { .jwt_on = true, .has_token = true, .jwt = JWT_BAD_SIGNATURE }, AUTH_UNAUTHORIZED },
                /* A bad token is an error even where anonymous reading is open. */
                { S, { .jwt_on = true, .anonymous_subscribe = true, .has_token = true, .jwt = JWT_MALFORMED },
                  AUTH_UNAUTHORIZED },
                /* API_TOKEN keeps working, for everything. */
                { P, { .jwt_on = true, .api_token_set = true, .has_token = true, .api_token_matches = true },
                  AUTH_ALLOW },
                { S, { .jwt_on = true, .api_token_set = true, .has_token = true, .api_token_matches = true },
                  AUTH_ALLOW },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (auth_decide((JwtAction) cases[i].action, &cases[i].facts) != cases[i].verdict)
                        fail_msg("case %zu: want %d", i, cases[i].verdict);
}

static void test_token_from(void **state) {
        static const struct {
                const char *authorization, *cookie, *query;
                const char *token;      /* NULL: none */
        } cases[] = {
                { "Bearer abc", "baton_token=c", "q", "abc" },           /* the header first */
                { "bearer abc", NULL, NULL, "abc" },
                { "Basic YTpi", "baton_token=c", "q", NULL },             /* another scheme: no token */
                { "Bearer ", NULL, "q", NULL },
                { NULL, "baton_token=c", "q", "c" },                     /* then the cookie */
                { NULL, "a=1; baton_token=tok.en ; b=2", NULL, "tok.en" },
                { NULL, "xbaton_token=no", "q", "q" },                   /* not that cookie */
                { NULL, "baton_token=", "q", "q" },
                { NULL, NULL, "q.r.s", "q.r.s" },                        /* then the query */
                { NULL, NULL, "", NULL },
                { NULL, NULL, NULL, NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                size_t n = 0;
                const char *t = auth_token_from(cases[i].authorization, cases[i].cookie, cases[i].query, &n);
                if (!cases[i].token) {
                        if (t)
                                fail_msg("case %zu: found '%.*s'", i, (int) n, t);
                        continue;
                }
                if (!t || n != strlen(cases[i].token) || memcmp(t, cases[i].token, n) != 0)
                        fail_msg("case %zu: found '%.*s', want '%s'", i, (int) n, t ? t : "", cases[i].token);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_base64url),
                cmocka_unit_test(test_header_alg),
                cmocka_unit_test(test_time_claims),
                cmocka_unit_test(test_claims_allow),
                cmocka_unit_test(test_decide),
                cmocka_unit_test(test_token_from),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
