/* SPDX-License-Identifier: MIT */
#pragma once

/* Who may publish to and read a topic. Pure: the handlers gather the
 * facts (auth_token_from() finds the token, jwt_verify() checks it) and
 * auth_decide() gives the verdict, table-tested on every combination.
 *
 * Without JWT keys: API_TOKEN, when set, guards publishing; reading is
 * open (as before JWT existed).
 * With JWT_KEY or JWT_PUBLIC_KEY_FILE: publishing, history and streams
 * need a valid token whose "baton" claim covers the topic (401 without a
 * valid token, 403 when its claim does not cover it); API_TOKEN still
 * works, for everything; ANONYMOUS_SUBSCRIBE=true opens reading to
 * requests without a token (a token that is sent must still be valid). */

#include <stdbool.h>

#include "auth-jwt.h"

typedef enum AuthVerdict {
        AUTH_ALLOW,
        AUTH_UNAUTHORIZED,              /* 401: no token, or not a valid one */
        AUTH_FORBIDDEN,                 /* 403: a valid token that does not cover the topic */
} AuthVerdict;

typedef struct AuthFacts {
        bool jwt_on;                    /* a JWT key is configured */
        bool anonymous_subscribe;
        bool api_token_set;
        bool api_token_matches;         /* the token is API_TOKEN */
        bool has_token;                 /* from any of the places auth_token_from() looks */
        JwtStatus jwt;                  /* of the token, when jwt_on and has_token */
        bool granted;                   /* its claim covers action and topic (JWT_VALID) */
} AuthFacts;

AuthVerdict auth_decide(JwtAction action, const AuthFacts *facts);

/* Where a request's token is, first found first: "Authorization: Bearer
 * T", the cookie baton_token (an EventSource cannot set headers, but
 * sends cookies), the query parameter access_token (which reaches
 * proxies' access logs: batond never logs it). cookie_header and
 * query_token may be NULL. Returns the token, or NULL; *ret_size its
 * length (a cookie's value ends at ';'). */
const char *auth_token_from(const char *authorization, const char *cookie_header, const char *query_token,
                            size_t *ret_size);
