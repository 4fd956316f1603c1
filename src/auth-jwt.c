/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

#include "auth-jwt.h"
#include "topic-pattern.h"

struct JwtKeys {
        char *hmac_key;                 /* HS256, or NULL */
        size_t hmac_key_size;
        EVP_PKEY *public_key;           /* RS256 or ES256, or NULL */
        JwtAlg public_alg;
};

const char *jwt_status_text(JwtStatus s) {
        static const char *const text[] = {
                [JWT_VALID] = "valid",
                [JWT_MALFORMED] = "the token is not a JWT",
                [JWT_ALG_REFUSED] = "the token's algorithm is not accepted here",
                [JWT_BAD_SIGNATURE] = "the token's signature does not verify",
                [JWT_EXPIRED] = "the token has expired",
                [JWT_NOT_YET_VALID] = "the token is not valid yet",
                [JWT_NO_MEMORY] = "out of memory",
        };
        return (size_t) s < ELEMENTSOF(text) ? text[s] : "invalid token";
}

/* --- keys --- */

static int load_public_key(const char *path, EVP_PKEY **ret, JwtAlg *ret_alg, char *error, size_t error_size) {
        EVP_PKEY *key;
        FILE *f = fopen(path, "re");
        char group[64];

        if (!f) {
                snprintf(error, error_size, "cannot read %s: %s", path, strerror(errno));
                return -EINVAL;
        }
        key = PEM_read_PUBKEY(f, NULL, NULL, NULL);
        fclose(f);
        if (!key) {
                snprintf(error, error_size, "%s is not a PEM public key (BEGIN PUBLIC KEY)", path);
                return -EINVAL;
        }
        if (EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA && EVP_PKEY_get_bits(key) >= 2048) {
                *ret_alg = JWT_ALG_RS256;
        } else if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC &&
                   EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof(group), NULL) == 1 &&
                   streq(group, "prime256v1")) {
                *ret_alg = JWT_ALG_ES256;
        } else {
                EVP_PKEY_free(key);
                snprintf(error, error_size, "%s is neither an RSA key of 2048 bits or more (RS256) nor a "
                         "P-256 key (ES256)", path);
                return -EINVAL;
        }
        *ret = key;
        return 0;
}

int jwt_keys_new(const char *hmac_key, const char *public_key_file, JwtKeys **ret, char *error,
                 size_t error_size) {
        _cleanup_(jwt_keys_freep) JwtKeys *k = NULL;
        int r;

        assert(ret && error);

        k = calloc(1, sizeof(JwtKeys));
        if (!k)
                return -ENOMEM;
        if (!isempty(hmac_key)) {
                k->hmac_key = strdup(hmac_key);
                if (!k->hmac_key)
                        return -ENOMEM;
                k->hmac_key_size = strlen(hmac_key);
        }
        if (!isempty(public_key_file)) {
                r = load_public_key(public_key_file, &k->public_key, &k->public_alg, error, error_size);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(k);
        return 0;
}

JwtKeys *jwt_keys_free(JwtKeys *k) {
        if (!k)
                return NULL;
        if (k->hmac_key)
                explicit_bzero(k->hmac_key, k->hmac_key_size);
        free(k->hmac_key);
        EVP_PKEY_free(k->public_key);
        return mfree(k);
}

bool jwt_keys_any(const JwtKeys *k) {
        return k && (k->hmac_key || k->public_key);
}

/* --- pure parts --- */

int jwt_base64url_decode(const char *s, size_t length, unsigned char **ret, size_t *ret_size) {
        static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        unsigned char *out;
        uint32_t bits = 0;
        size_t n = 0;
        int have = 0;

        assert(s && ret && ret_size);

        if (length % 4 == 1)
                return -EINVAL;         /* no whole byte in the last group */
        out = malloc(length * 3 / 4 + 1);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < length; i++) {
                const char *c = s[i] ? strchr(alphabet, s[i]) : NULL;
                if (!c) {
                        free(out);
                        return -EINVAL;
                }
                bits = (bits << 6) | (uint32_t) (c - alphabet);
                have += 6;
                if (have >= 8) {
                        have -= 8;
                        out[n++] = (unsigned char) (bits >> have);
                }
        }
        /* Leftover bits must be zero (one encoding per value). */
        if (bits & ((1u << have) - 1)) {
                free(out);
                return -EINVAL;
        }
        *ret = out;
        *ret_size = n;
        return 0;
}

JwtAlg jwt_header_alg(const json_t *header, const bool have[static _JWT_ALG_MAX]) {
        static const char *const names[_JWT_ALG_MAX] = {
                [JWT_ALG_HS256] = "HS256", [JWT_ALG_RS256] = "RS256", [JWT_ALG_ES256] = "ES256",
        };
        const char *alg = json_string_value(json_object_get(header, "alg"));

        if (!json_is_object(header) || !alg)
                return _JWT_ALG_INVALID;
        /* RFC 7515 4.1.11: extensions we do not understand must be refused. */
        if (json_object_get(header, "crit"))
                return _JWT_ALG_INVALID;
        for (int a = 0; a < _JWT_ALG_MAX; a++)
                if (streq(alg, names[a]))
                        return have[a] ? (JwtAlg) a : _JWT_ALG_INVALID;
        return _JWT_ALG_INVALID;
}

static JwtStatus numeric_date(const json_t *claims, const char *name, bool *ret_present, double *ret) {
        const json_t *v = json_object_get(claims, name);

        *ret_present = v != NULL;
        if (!v)
                return JWT_VALID;
        if (!json_is_number(v))
                return JWT_MALFORMED;
        *ret = json_number_value(v);
        return JWT_VALID;
}

JwtStatus jwt_claims_check_time(const json_t *claims, usec_t now_realtime_usec, usec_t leeway_usec) {
        double now = (double) now_realtime_usec / USEC_PER_SEC, leeway = (double) leeway_usec / USEC_PER_SEC;
        double exp = 0, nbf = 0;
        bool has_exp, has_nbf;

        if (!json_is_object(claims))
                return JWT_MALFORMED;
        if (numeric_date(claims, "exp", &has_exp, &exp) != JWT_VALID ||
            numeric_date(claims, "nbf", &has_nbf, &nbf) != JWT_VALID)
                return JWT_MALFORMED;
        if (has_exp && now >= exp + leeway)
                return JWT_EXPIRED;
        if (has_nbf && now + leeway < nbf)
                return JWT_NOT_YET_VALID;
        return JWT_VALID;
}

bool jwt_claims_allow(const json_t *claims, JwtAction action, const char *topic) {
        const json_t *list = json_object_get(json_object_get(claims, "baton"),
                                             action == JWT_PUBLISH ? "publish" : "subscribe");
        size_t i;
        json_t *v;

        if (!json_is_array(list))
                return false;
        json_array_foreach(list, i, v) {
                const char *pattern = json_string_value(v);
                if (pattern && topic_pattern_valid(pattern, strlen(pattern)) && topic_pattern_match(pattern, topic))
                        return true;
        }
        return false;
}

/* --- verification (libcrypto) --- */

static bool verify_hs256(const JwtKeys *k, const char *input, size_t input_size, const unsigned char *sig,
                         size_t sig_size) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_size = 0;

        if (!HMAC(EVP_sha256(), k->hmac_key, (int) k->hmac_key_size, (const unsigned char *) input, input_size,
                  mac, &mac_size))
                return false;
        return sig_size == mac_size && CRYPTO_memcmp(mac, sig, mac_size) == 0;
}

/* JWS ES256 signatures are R || S, 32 bytes each; libcrypto wants DER. */
static unsigned char *es256_der(const unsigned char *sig, size_t sig_size, int *ret_size) {
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
        unsigned char *der = NULL;
        int n = -1;

        assert(sig_size == 64);
        if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
                r = s = NULL;           /* es owns them now */
                n = i2d_ECDSA_SIG(es, &der);
        }
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        if (n <= 0) {
                OPENSSL_free(der);
                return NULL;
        }
        *ret_size = n;
        return der;
}

static bool verify_public(const JwtKeys *k, const char *input, size_t input_size, const unsigned char *sig,
                          size_t sig_size) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        unsigned char *der = NULL;
        int der_size = 0;
        bool ok = false;

        if (!ctx)
                return false;
        if (k->public_alg == JWT_ALG_ES256) {
                if (sig_size != 64 || !(der = es256_der(sig, sig_size, &der_size)))
                        goto done;
                sig = der;
                sig_size = (size_t) der_size;
        }
        ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k->public_key) == 1 &&
             EVP_DigestVerify(ctx, sig, sig_size, (const unsigned char *) input, input_size) == 1;
done:
        OPENSSL_free(der);
        EVP_MD_CTX_free(ctx);
        return ok;
}

static json_t *decode_json_part(const char *s, size_t length) {
        _cleanup_free_ unsigned char *raw = NULL;
        size_t n;
        json_error_t e;

        if (jwt_base64url_decode(s, length, &raw, &n) < 0)
                return NULL;
        return json_loadb((const char *) raw, n, JSON_REJECT_DUPLICATES, &e);
}

JwtStatus jwt_verify(const JwtKeys *keys, const char *token, usec_t now_realtime_usec, json_t **ret_claims) {
        _cleanup_(json_decrefp) json_t *header = NULL, *claims = NULL;
        _cleanup_free_ unsigned char *sig = NULL;
        const char *dot1, *dot2;
        size_t sig_size, length;
        bool have[_JWT_ALG_MAX] = { 0 };
        JwtAlg alg;
        JwtStatus st;
        bool ok;

        assert(keys && token && ret_claims);

        length = strnlen(token, JWT_TOKEN_MAX + 1);
        if (length > JWT_TOKEN_MAX)
                return JWT_MALFORMED;
        dot1 = strchr(token, '.');
        dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
        if (!dot1 || !dot2 || strchr(dot2 + 1, '.'))
                return JWT_MALFORMED;
        header = decode_json_part(token, (size_t) (dot1 - token));
        claims = decode_json_part(dot1 + 1, (size_t) (dot2 - dot1 - 1));
        if (!header || !claims || !json_is_object(claims))
                return JWT_MALFORMED;

        have[JWT_ALG_HS256] = keys->hmac_key;
        have[JWT_ALG_RS256] = keys->public_key && keys->public_alg == JWT_ALG_RS256;
        have[JWT_ALG_ES256] = keys->public_key && keys->public_alg == JWT_ALG_ES256;
        alg = jwt_header_alg(header, have);
        if (alg == _JWT_ALG_INVALID)
                return JWT_ALG_REFUSED;

        if (jwt_base64url_decode(dot2 + 1, strlen(dot2 + 1), &sig, &sig_size) < 0)
                return JWT_MALFORMED;
        /* The signing input is the first two parts, as sent. */
        if (alg == JWT_ALG_HS256)
                ok = verify_hs256(keys, token, (size_t) (dot2 - token), sig, sig_size);
        else
                ok = verify_public(keys, token, (size_t) (dot2 - token), sig, sig_size);
        if (!ok)
                return JWT_BAD_SIGNATURE;

        st = jwt_claims_check_time(claims, now_realtime_usec, JWT_LEEWAY_USEC);
        if (st != JWT_VALID)
                return st;
        *ret_claims = TAKE_PTR(claims);
        return JWT_VALID;
}
