/* SPDX-License-Identifier: MIT */
#pragma once

/* JSON Web Tokens (RFC 7519), signed as JWS compact serialisations (RFC
 * 7515) with HS256, RS256 or ES256 (RFC 7518), verified with OpenSSL's
 * libcrypto: the HMAC and signature checks are libcrypto's; this file
 * only splits the token, decodes base64url and reads JSON (jansson).
 *
 * The algorithm is never taken from the token alone: each key says which
 * one it verifies (JWT_KEY: HS256; JWT_PUBLIC_KEY_FILE: RS256 for an RSA
 * key, ES256 for a P-256 key), and a token whose "alg" names no
 * configured key is refused before any signature is checked. So "none"
 * and algorithm confusion (an RS256 public key used as an HS256 secret)
 * cannot pass. "exp" and "nbf" are honoured with JWT_LEEWAY_USEC. */

#include <jansson.h>
#include <stdbool.h>

#include "util.h"

#define JWT_LEEWAY_USEC (30 * USEC_PER_SEC)
/* Longer tokens are refused unread (a header line is 3 KiB by default). */
#define JWT_TOKEN_MAX 8192

typedef enum JwtAlg {
        JWT_ALG_HS256,
        JWT_ALG_RS256,
        JWT_ALG_ES256,
        _JWT_ALG_MAX,
        _JWT_ALG_INVALID = -1,
} JwtAlg;

typedef enum JwtStatus {
        JWT_VALID,
        JWT_MALFORMED,                  /* not three base64url parts of JSON */
        JWT_ALG_REFUSED,                /* "none", unknown, or no key configured for it */
        JWT_BAD_SIGNATURE,
        JWT_EXPIRED,
        JWT_NOT_YET_VALID,
        JWT_NO_MEMORY,
} JwtStatus;

/* Words for the client (and the log); never the token. */
const char *jwt_status_text(JwtStatus s);

typedef struct JwtKeys JwtKeys;

/* hmac_key: "" or NULL for none; public_key_file: "" or NULL for none. On
 * a key file that cannot be read or is not an RSA (2048 bits or more) or
 * P-256 public key (PEM, SubjectPublicKeyInfo), -EINVAL with the reason. */
int jwt_keys_new(const char *hmac_key, const char *public_key_file, JwtKeys **ret, char *error,
                 size_t error_size);
JwtKeys *jwt_keys_free(JwtKeys *k);
DEFINE_POINTER_CLEANUP(JwtKeys, jwt_keys_free);
/* Whether any key is configured (JWT is on). */
bool jwt_keys_any(const JwtKeys *k);

/* Verifies a token at now_realtime_usec; on JWT_VALID *ret_claims holds
 * its claims (a new reference). */
JwtStatus jwt_verify(const JwtKeys *keys, const char *token, usec_t now_realtime_usec, json_t **ret_claims);

/* --- pure parts, table-tested --- */

/* The algorithm a header names, if it is one a configured key verifies:
 * have[alg] says which keys there are. */
JwtAlg jwt_header_alg(const json_t *header, const bool have[static _JWT_ALG_MAX]);

/* exp and nbf (NumericDate, seconds) against now, with the leeway. A
 * claim of the wrong type is malformed; a missing one is fine. */
JwtStatus jwt_claims_check_time(const json_t *claims, usec_t now_realtime_usec, usec_t leeway_usec);

typedef enum JwtAction { JWT_PUBLISH, JWT_SUBSCRIBE } JwtAction;

/* Whether claims grant the action on the topic: "baton": {"publish":
 * [...], "subscribe": [...]}, topic names and '*' patterns
 * (topic-pattern.h). Anything else (no claim, not a list, not strings)
 * grants nothing. */
bool jwt_claims_allow(const json_t *claims, JwtAction action, const char *topic);

/* base64url without padding (RFC 7515 section 2) into a new buffer;
 * -EINVAL for anything else. */
int jwt_base64url_decode(const char *s, size_t length, unsigned char **ret, size_t *ret_size);
