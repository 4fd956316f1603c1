#!/usr/bin/env python3
"""Authorization with JWTs (RFC 7519): HS256 with JWT_KEY, RS256 and ES256
with JWT_PUBLIC_KEY_FILE; the "baton" claim says which topics a token may
publish to and read; "none", algorithm confusion, a wrong key and an
expired token get 401, a claim that does not cover the topic 403. Tokens
come from the Authorization header, the cookie baton_token or
?access_token=, and never reach the log. Tokens are minted here with
Python's hmac and the openssl command, not with batond's code."""

import base64
import hashlib
import hmac
import json
import re
import subprocess
import time

from tests.harness import http_get, run, test, wait_until

KEY = 'hs256-secret-of-the-fleet-0123456789'
API_TOKEN = 'service-token-42'


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode()


def signing_input(header, claims):
    return b64url(json.dumps(header).encode()) + '.' + b64url(json.dumps(claims).encode())


def hs256(claims, key=KEY, header=None):
    si = signing_input(header or {'alg': 'HS256', 'typ': 'JWT'}, claims)
    return si + '.' + b64url(hmac.new(key.encode(), si.encode(), hashlib.sha256).digest())


def openssl_sign(private_pem, data):
    return subprocess.run(['openssl', 'dgst', '-sha256', '-sign', private_pem], input=data,
                          stdout=subprocess.PIPE, check=True).stdout


def der_to_raw(der):
    """An ECDSA DER signature (SEQUENCE of two INTEGERs) as JWS wants it: R || S."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 3
    out = b''
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        out += der[i + 2:i + 2 + n].lstrip(b'\0').rjust(32, b'\0')
        i += 2 + n
    return out


def rs256(private_pem, claims):
    si = signing_input({'alg': 'RS256', 'typ': 'JWT'}, claims)
    return si + '.' + b64url(openssl_sign(private_pem, si.encode()))


def es256(private_pem, claims):
    si = signing_input({'alg': 'ES256', 'typ': 'JWT'}, claims)
    return si + '.' + b64url(der_to_raw(openssl_sign(private_pem, si.encode())))


def grant(publish=(), subscribe=(), **extra):
    return {'sub': 'alice', 'exp': int(time.time()) + 600,
            'baton': {'publish': list(publish), 'subscribe': list(subscribe)}, **extra}


def post(port, topic, token=None, body=b'{"n":1}', headers=None):
    h = {'Content-Type': 'application/json', **(headers or {})}
    if token:
        h['Authorization'] = f'Bearer {token}'
    return http_get(port, f'/api/v1/topics/{topic}/events', method='POST', body=body, headers=h)


def history(port, topic, token=None, query=''):
    h = {'Authorization': f'Bearer {token}'} if token else {}
    return http_get(port, f'/api/v1/topics/{topic}/events{query}', headers=h)


def keypair(ctx, kind):
    private, public = ctx.tmp.join(f'{kind}.pem'), ctx.tmp.join(f'{kind}.pub')
    gen = (['openssl', 'genrsa', '-out', private, '2048'] if kind == 'rsa'
           else ['openssl', 'ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', private])
    subprocess.run(gen, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(['openssl', 'rsa' if kind == 'rsa' else 'ec', '-in', private, '-pubout', '-out', public],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return private, public


def start(ctx, pg=None, **env):
    pg = pg or ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), 'ACCESS_LOG': 'true', **env}).start()
    b.wait_ready()
    return b


@test
def hs256_tokens_grant_what_their_claim_lists(ctx):
    b = start(ctx, JWT_KEY=KEY, API_TOKEN=API_TOKEN)
    writer = hs256(grant(publish=['orders-*'], subscribe=['orders-eu']))

    r = post(b.port, 'orders-eu')
    assert r.status == 401 and r.json()['error'] == 'unauthorized', r
    assert r.header('WWW-Authenticate') == 'Bearer realm="baton"', r
    assert post(b.port, 'orders-eu', writer).status == 201
    r = post(b.port, 'billing', writer)
    assert r.status == 403 and r.json()['error'] == 'forbidden' and 'billing' in r.json()['message'], r
    assert history(b.port, 'orders-eu', writer).status == 200
    assert history(b.port, 'orders-us', writer).status == 403, 'subscribe covers orders-eu only'
    assert history(b.port, 'orders-eu').status == 401, 'reading needs a token with JWT on'
    # API_TOKEN keeps working, for publishing and reading.
    assert post(b.port, 'billing', API_TOKEN).status == 201
    assert history(b.port, 'billing', API_TOKEN).status == 200

    refused = {
        'alg none': signing_input({'alg': 'none', 'typ': 'JWT'}, grant(publish=['*'])) + '.',
        'a wrong key': hs256(grant(publish=['*']), key='another-secret-of-the-same-length-00'),
        'expired a minute ago': hs256(grant(publish=['*'], exp=int(time.time()) - 60)),
        'not valid for an hour': hs256(grant(publish=['*'], nbf=int(time.time()) + 3600)),
        'HS512': hs256(grant(publish=['*']), header={'alg': 'HS512'}),
        'tampered claims': (lambda t: t.split('.')[0] + '.' + b64url(json.dumps(grant(publish=['*'])).encode())
                            + '.' + t.split('.')[2])(hs256(grant(publish=['orders-eu']))),
        'not a JWT': 'abc.def',
    }
    for why, token in refused.items():
        r = post(b.port, 'orders-eu', token)
        assert r.status == 401 and r.json()['error'] == 'invalid_token', (why, r)
        assert 'error="invalid_token"' in r.header('WWW-Authenticate'), (why, r)
    assert 'algorithm' in post(b.port, 'orders-eu', refused['alg none']).json()['message']
    assert 'expired' in post(b.port, 'orders-eu', refused['expired a minute ago']).json()['message']
    # Within the 30 s leeway.
    assert post(b.port, 'orders-eu', hs256(grant(publish=['*'], exp=int(time.time()) - 10))).status == 201
    log = b.log()
    for token in [writer, *refused.values()]:
        assert token.split('.')[-1] not in log or not token.split('.')[-1], 'a token reached the log'


@test
def streams_take_the_token_from_a_cookie_or_the_query_and_never_log_it(ctx):
    b = start(ctx, JWT_KEY=KEY, LOG_LEVEL='info')
    reader = hs256(grant(subscribe=['news']))
    writer = hs256(grant(publish=['news']))
    by_cookie = ctx.subscribe(b.port, '/api/v1/topics/news/stream', extra_headers={'Cookie': f'theme=dark; baton_token={reader}'})
    by_query = ctx.subscribe(b.port, f'/api/v1/topics/news/stream?access_token={reader}')
    anonymous = ctx.subscribe(b.port, '/api/v1/topics/news/stream')
    wait_until(lambda: by_cookie.status == 200 and by_query.status == 200 and anonymous.ended, 5,
               what='two streams to open and one to be refused')
    assert anonymous.status == 401, anonymous.status
    r = post(b.port, 'news', writer)
    assert r.status == 201
    by_cookie.wait_for_id(1)
    by_query.wait_for_id(1)
    assert reader.split('.')[2] not in b.log() and 'access_token' not in b.log(), 'the token reached the log'
    wait_until(lambda: re.search(r'GET /api/v1/topics/news/stream 401', b.log()), 5,
               what='the access log line of the refused stream')
    # A request with the token in its query, answered at once, is logged
    # without it.
    r = http_get(b.port, f'/api/v1/topics/news/events?after=0&access_token={reader}')
    assert r.status == 200, r
    wait_until(lambda: re.search(r'GET /api/v1/topics/news/events 200', b.log()), 5,
               what='the access log line of the history read')
    assert reader.split('.')[2] not in b.log() and 'access_token' not in b.log(), 'the token reached the log'


@test
def anonymous_subscribe_opens_reading_only(ctx):
    b = start(ctx, JWT_KEY=KEY, ANONYMOUS_SUBSCRIBE='true')
    assert history(b.port, 'open').status == 200
    s = ctx.subscribe(b.port, '/api/v1/topics/open/stream')
    wait_until(lambda: s.status == 200, 5, what='an anonymous stream')
    assert post(b.port, 'open').status == 401, 'publishing still needs a token'
    assert history(b.port, 'open', 'garbage.token.here').status == 401, 'a bad token is still refused'
    assert 'open to requests without a token (ANONYMOUS_SUBSCRIBE=true)' in b.log()


@test
def rs256_and_es256_verify_with_the_public_key_and_refuse_algorithm_confusion(ctx):
    pg = ctx.postgres()
    for kind, sign in (('rsa', rs256), ('ec', es256)):
        private, public = keypair(ctx, kind)
        b = start(ctx, pg, JWT_PUBLIC_KEY_FILE=public)
        token = sign(private, grant(publish=['t'], subscribe=['t']))
        assert post(b.port, 't', token).status == 201, kind
        assert history(b.port, 't', token).status == 200, kind
        # The classic confusion: the public key's PEM text as an HS256 secret.
        with open(public) as f:
            confused = hs256(grant(publish=['*']), key=f.read())
        r = post(b.port, 't', confused)
        assert r.status == 401 and 'algorithm' in r.json()['message'], (kind, r)
        # The other kind's algorithm, and a token of another key pair.
        other_private, _ = keypair(ctx, 'ec' if kind == 'rsa' else 'rsa')
        other = (es256 if kind == 'rsa' else rs256)(other_private, grant(publish=['*']))
        assert post(b.port, 't', other).status == 401, kind
        stranger_private, _ = keypair(ctx, kind)
        assert post(b.port, 't', sign(stranger_private, grant(publish=['*']))).json()['message'] == \
            "the token's signature does not verify", kind
        b.stop()


@test
def open_access_is_warned_about_at_start(ctx):
    pg = ctx.postgres()
    b = start(ctx, pg)
    log = b.log()
    assert 'Publishing is open to anyone who can reach batond' in log, log
    assert 'Reading (history and streams) is open to anyone' in log, log
    b.stop()
    b2 = start(ctx, pg, JWT_KEY=KEY)
    assert 'is open' not in b2.log(), b2.log()


if __name__ == '__main__':
    run()
