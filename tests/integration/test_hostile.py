#!/usr/bin/env python3
"""Hostile clients: a corpus of malicious or broken HTTP sent raw over
sockets (request smuggling, header and path injection, absurd chunk sizes,
deep JSON, topic names aimed at other NATS subjects, garbage ids, almost
right tokens), slow clients, and a run through a whole service life looking
for the secrets (database password, API and deployment tokens) everywhere
batond writes or answers.

Every case must get a 4xx (a 505 for an unknown HTTP version), read as a
strict client reads it: one response, framed by its own head, then the
close or the answer to one more request. Where batond answers, the body is
its JSON error; where libmicrohttpd 0.9.75 answers by itself (its fixed
HTML page) or just closes the connection, the case says why (README,
"Limits of libmicrohttpd"). After each case the instance must still be
live and ready, be the same process, and accept a normal publish."""

import base64
import collections
import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

from tests.harness import Batond, Misframed, StrictReader, publish, run, test, wait_until

API_TOKEN = 'api-Tok3n-7f1c9e2b5d8a4c6e0b1d'
DEPLOYMENT_TOKEN = 'dep-Tok3n-3b9d1f7a2c5e8b0d4f6a'
# '/' and '+' make the password's URL-encoded form differ from its raw form.
DB_PASSWORD = 'Pw-h0stile/s3cr3t+x9'
CONNECTION_TIMEOUT = 2      # seconds, for the instances below

MHD = 'mhd'         # libmicrohttpd's own HTML page
CLOSED = 'closed'   # no answer at all: the connection is closed

Case = collections.namedtuple('Case', 'name raw status body why')


def case(name, raw, status, body, why=''):
    """status: the code expected (or None when the connection is just
    closed); body: the JSON error code batond answers with, MHD or CLOSED
    (then why says why batond cannot answer itself)."""
    assert body not in (MHD, CLOSED) or why, name
    return Case(name, raw, status, body, why)


def request(method, path, headers=(), body=b'', host=True, length=True):
    """Raw bytes of a request; headers as (name, value) pairs of bytes/str."""
    def b(x):
        return x if isinstance(x, bytes) else x.encode()
    out = b(method) + b' ' + b(path) + b' HTTP/1.1\r\n'
    if host:
        out += b'Host: hostile\r\n'
    for name, value in headers:
        out += b(name) + b': ' + b(value) + b'\r\n'
    if length and body:
        out += b'Content-Length: %d\r\n' % len(body)
    return out + b'\r\n' + body


def publish_raw(topic, body=b'{"ok":true}', token=API_TOKEN, headers=(), **kw):
    h = [('Content-Type', 'application/json')]
    if token is not None:
        h.append(('Authorization', f'Bearer {token}'))
    return request('POST', f'/api/v1/topics/{topic}/events' if isinstance(topic, str)
                   else b'/api/v1/topics/' + topic + b'/events', h + list(headers), body, **kw)


def chunked_publish(chunks, extra=()):
    return request('POST', '/api/v1/topics/hostile/events',
                   [('Content-Type', 'application/json'), ('Authorization', f'Bearer {API_TOKEN}'),
                    ('Transfer-Encoding', 'chunked')] + list(extra), chunks, length=False)


def stream(last_event_id=None, query=''):
    headers = [('Last-Event-ID', last_event_id)] if last_event_id is not None else []
    return request('GET', '/api/v1/topics/hostile/stream' + query, headers)


def deployment(authorization):
    return request('GET', '/health/deployment',
                   [('Authorization', a) for a in authorization])


def corpus(api_token=API_TOKEN, deployment_token=DEPLOYMENT_TOKEN):
    """The hostile requests, as (name, raw bytes, status, body, why)."""
    ok = b'{"ok":true}'
    almost = api_token[:-1] + ('x' if api_token[-1] != 'x' else 'y')
    dep_almost = deployment_token[:-1] + ('x' if deployment_token[-1] != 'x' else 'y')
    big = 300 * 1024    # past MAX_EVENT_BYTES (256K) below
    cases = [
        # --- Request smuggling: batond and a proxy must agree where a body ends.
        case('cl_with_te', request('POST', '/api/v1/topics/hostile/events',
                                   [('Content-Length', '5'), ('Transfer-Encoding', 'chunked')],
                                   b'0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n', length=False),
             400, 'bad_request'),
        case('te_with_cl', request('POST', '/api/v1/topics/hostile/events',
                                   [('Transfer-Encoding', 'chunked'), ('Content-Length', '40')],
                                   b'0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n', length=False),
             400, 'bad_request'),
        case('cl_twice_same', publish_raw('hostile', ok, headers=[('Content-Length', '11')]),
             400, 'bad_request'),
        case('cl_twice_different', request('POST', '/api/v1/topics/hostile/events',
                                           [('Content-Length', '1'), ('Content-Length', '11')], ok,
                                           length=False), 400, 'bad_request'),
        case('te_obs_fold_with_cl', request('POST', '/api/v1/topics/hostile/events',
                                            [('Content-Length', '5'), ('Transfer-Encoding', ''),
                                             (' chunked', '')], b'0\r\n\r\n', length=False)
             .replace(b' chunked: \r\n', b' chunked\r\n'), 401, 'unauthorized',
             'obs-fold: libmicrohttpd 0.9.75 glues the folded line onto the header NAME, so batond '
             'sees no Transfer-Encoding and frames by Content-Length alone (nginx refuses obs-fold)'),
        # libmicrohttpd keeps the space in the name: refused as whitespace
        # in a header name (RFC 9112 5.1).
        case('te_space_before_colon_with_cl', request('POST', '/api/v1/topics/hostile/events',
                                                      [('Content-Length', '5'), ('Transfer-Encoding ', 'chunked')],
                                                      b'0\r\n\r\n', length=False), 400, 'bad_request'),
        case('te_xchunked', chunked_publish(b'b\r\n{"ok":true}\r\n0\r\n\r\n')
             .replace(b'Transfer-Encoding: chunked', b'Transfer-Encoding: xchunked'), 400, 'bad_request'),
        case('te_gzip_chunked', chunked_publish(b'0\r\n\r\n')
             .replace(b'Transfer-Encoding: chunked', b'Transfer-Encoding: gzip, chunked'), 400, 'bad_request'),
        case('te_chunked_chunked', chunked_publish(b'0\r\n\r\n')
             .replace(b'Transfer-Encoding: chunked', b'Transfer-Encoding: chunked, chunked'), 400, 'bad_request'),
        case('te_twice', chunked_publish(b'0\r\n\r\n', [('Transfer-Encoding', 'chunked')]), 400, 'bad_request'),
        case('cl_list', publish_raw('hostile', ok, headers=[('Content-Length', '11, 11')], length=False),
             400, 'bad_request'),
        case('cl_negative', publish_raw('hostile', ok, headers=[('Content-Length', '-1')], length=False),
             400, 'bad_request'),
        case('cl_plus_sign', publish_raw('hostile', ok, headers=[('Content-Length', '+11')], length=False),
             400, 'bad_request'),
        case('cl_hex', publish_raw('hostile', ok, headers=[('Content-Length', '0xb')], length=False),
             400, 'bad_request'),
        case('cl_overflows_64_bits', publish_raw('hostile', ok, headers=[
             ('Content-Length', '99999999999999999999999')], length=False),
             413, 'payload_too_large'),
        case('cl_over_limit', publish_raw('hostile', ok, headers=[('Content-Length', str(big))],
                                          length=False), 413, 'payload_too_large'),

        # --- Malformed request lines and header blocks: each gets one
        # answer that a strict client reads as one response, batond's JSON
        # where it can be (README "Limits of libmicrohttpd").
        case('no_host', request('GET', '/_/health/live', host=False), 400, 'bad_request'),
        case('no_host_publish', publish_raw('hostile', ok, host=False), 400, 'bad_request'),
        case('space_in_target', request('GET', '/_/health/live x'), 400, 'bad_request'),
        case('tab_in_target', request('GET', '/_/health/live\tx'), 400, 'bad_request'),
        case('control_char_in_target', request('GET', b'/_/health/live\x01'), 400, 'bad_request'),
        case('no_version', b'GET /_/health/live\r\nHost: hostile\r\n\r\n', 400, MHD,
             'libmicrohttpd refuses a request line without a version before batond sees it'),
        case('lowercase_version', b'GET /_/health/live http/1.1\r\nHost: hostile\r\n\r\n', 400, MHD,
             'libmicrohttpd refuses a request line without a version before batond sees it'),
        case('version_2', b'GET /_/health/live HTTP/2.0\r\nHost: hostile\r\n\r\n', 505, MHD,
             'libmicrohttpd answers an unknown HTTP version before batond sees it'),
        case('no_target', b'GET\r\nHost: hostile\r\n\r\n', None, CLOSED,
             'not a request line at all: libmicrohttpd closes without an answer'),
        case('header_without_colon', b'GET /_/health/live HTTP/1.1\r\nHost: hostile\r\nX-Broken\r\n\r\n',
             400, MHD,
             'libmicrohttpd refuses a field line without a colon as it reads it'),
        case('header_block_over_limit', request('GET', '/_/health/live', [('X-Big', 'a' * 3300)]),
             431, 'header_too_large'),
        case('header_block_past_the_buffer', request('GET', '/_/health/live', [('X-Big', 'a' * 20000)]),
             431, MHD, 'past twice MAX_HEADER_BYTES libmicrohttpd has no room left to read it'),
        case('target_past_the_buffer', request('GET', '/' + 'a' * 20000), 414, MHD,
             'past twice MAX_HEADER_BYTES libmicrohttpd has no room left to read it'),
        case('cl_empty', publish_raw('hostile', ok, headers=[('Content-Length', '')], length=False),
             400, 'bad_request'),
        case('cl_with_space_inside', publish_raw('hostile', ok, headers=[('Content-Length', '1 1')],
                                                 length=False), 400, 'bad_request'),
        case('cl_negative_pipelined', publish_raw('hostile', ok, headers=[('Content-Length', '-1')],
                                                  length=False) + PROBE, 400, 'bad_request'),

        # --- Chunked bodies with absurd or broken chunk sizes.
        case('chunk_size_not_hex', chunked_publish(b'zz\r\n{"ok":true}\r\n0\r\n\r\n'), 400, MHD,
             'libmicrohttpd decodes chunked bodies itself'),
        case('chunk_size_0x', chunked_publish(b'0xb\r\n{"ok":true}\r\n0\r\n\r\n'), 400, MHD,
             'libmicrohttpd decodes chunked bodies itself'),
        case('chunk_size_negative', chunked_publish(b'-1\r\n{"ok":true}\r\n0\r\n\r\n'), 400, MHD,
             'libmicrohttpd decodes chunked bodies itself'),
        case('chunk_size_17_digits', chunked_publish(b'10000000000000000\r\n{"ok":true}\r\n0\r\n\r\n'),
             413, MHD, 'libmicrohttpd decodes chunked bodies itself'),
        case('chunk_size_2_64_minus_1', chunked_publish(b'ffffffffffffffff\r\n' + b'1' * big),
             None, CLOSED, 'a chunked body past the limit can only be cut: no answer mid-body'),
        case('chunk_over_limit', chunked_publish(b'%x\r\n' % big + b'1' * big),
             None, CLOSED, 'a chunked body past the limit can only be cut: no answer mid-body'),
        case('chunks_add_up_over_limit', chunked_publish(b''.join(b'8000\r\n' + b'1' * 0x8000 + b'\r\n'
                                                                  for _ in range(big // 0x8000 + 1))),
             None, CLOSED, 'a chunked body past the limit can only be cut: no answer mid-body'),

        # --- Header injection. A NUL inside a header value never reaches
        # batond: libmicrohttpd ends the value there, so what follows the
        # NUL is never used (shown here with a right token after it).
        case('nul_in_header_value_hides_the_rest', publish_raw(
             'hostile', ok, token=f'wrong\x00{api_token}'), 401, 'unauthorized'),
        case('bare_cr_in_header_value', request('GET', '/_/health/live', [('X-Note', 'a\rb')]),
             400, 'bad_request'),
        case('bare_cr_in_authorization', publish_raw('hostile', ok, token=f'{api_token}\rX-Admin: 1'),
             400, 'bad_request'),
        case('control_char_in_header_value', request('GET', '/_/health/live', [('X-Note', 'a\x01b')]),
             400, 'bad_request'),
        case('del_in_header_value', request('GET', '/_/health/live', [('X-Note', 'a\x7fb')]),
             400, 'bad_request'),
        case('bare_lf_in_header_value', request('GET', '/_/health/live', [('X-Note', 'a\nb')]),
             400, MHD, 'libmicrohttpd ends the line at the LF and refuses the rest (no colon)'),
        case('host_twice', request('GET', '/_/health/live', [('Host', 'evil.example')]), 400, 'bad_request'),
        case('content_type_twice', publish_raw('hostile', ok, headers=[('Content-Type', 'text/plain')]),
             400, 'bad_request'),
        case('last_event_id_twice', request('GET', '/api/v1/topics/hostile/stream',
                                            [('Last-Event-ID', '1'), ('Last-Event-ID', '2')]),
             400, 'bad_request'),

        # --- Path injection and traversal.
        case('nul_in_path', request('GET', b'/_/health/live\x00.json'), 400, 'bad_request'),
        case('encoded_nul_in_path', request('GET', '/_/health/live%00.json'), 400, 'bad_request'),
        case('encoded_nul_in_query', request('GET', '/api/v1/topics/hostile/events?after=1%00x'),
             400, 'bad_request'),
        case('crlf_in_path', request('GET', b'/api/v1/topics/a\r\nX-Injected: 1/events'), 400, MHD,
             'the CRLF ends the request line: libmicrohttpd refuses what is left'),
        case('encoded_crlf_in_topic', publish_raw('a%0d%0aX-Injected:%201'), 400, 'invalid_topic'),
        case('dotdot_topic', publish_raw('..'), 400, 'invalid_topic'),
        case('dotdot_past_the_api', request('GET', '/api/v1/topics/a/../../../_/health/live'),
             404, 'not_found'),
        case('encoded_dotdot_topic', publish_raw('%2e%2e'), 400, 'invalid_topic'),
        case('encoded_slash_in_topic', publish_raw('a%2fb'), 404, 'not_found'),
        case('encoded_slash_dotdot', request('GET', '/api/v1/topics/%2e%2e%2f%2e%2e%2fmetrics/events'),
             404, 'not_found'),
        case('overlong_utf8_dot', publish_raw('%c0%ae%c0%ae'), 400, 'invalid_topic'),
        case('invalid_utf8_topic', publish_raw('%ff%fe'), 400, 'invalid_topic'),
        case('raw_invalid_utf8_topic', publish_raw(b'\xff\xfe'), 400, 'invalid_topic'),
        case('invalid_utf8_unknown_path', request('GET', '/%ff%c0%ae'), 404, 'not_found'),
        case('raw_invalid_utf8_unknown_path', request('GET', b'/\xff\xfe'), 404, 'not_found'),
        case('invalid_utf8_method_not_allowed', request('DELETE', '/api/v1/topics/%ff/stream'),
             405, 'method_not_allowed'),
        # 300 two-byte characters: the message is cut at 512 bytes, maybe
        # inside a character.
        case('long_utf8_path_cut_in_a_character', request('GET', '/x' + '%c3%a9' * 300), 404, 'not_found'),

        # --- Topic names aimed at other NATS subjects (no '.', '*', '>').
        case('topic_a_gt', publish_raw('a.>'), 400, 'invalid_topic'),
        case('topic_star', publish_raw('*'), 400, 'invalid_topic'),
        case('topic_gt', publish_raw('>'), 400, 'invalid_topic'),
        case('topic_a_dot_b', publish_raw('a.b'), 400, 'invalid_topic'),
        case('topic_encoded_star', publish_raw('%2A'), 400, 'invalid_topic'),
        case('topic_encoded_gt', publish_raw('a.%3E'), 400, 'invalid_topic'),
        case('topic_space', publish_raw('a%20b'), 400, 'invalid_topic'),
        case('topic_empty', publish_raw(''), 404, 'not_found'),
        case('topic_129_chars', publish_raw('t' * 129), 400, 'invalid_topic'),
        case('topic_stream_wildcard', request('GET', '/api/v1/topics/%3E/stream'), 400, 'invalid_topic'),

        # --- Event bodies.
        case('json_100k_brackets', publish_raw('hostile', b'[' * 100000), 400, 'invalid_json'),
        case('json_100k_objects', publish_raw('hostile', b'{"a":' * 50000), 400, 'invalid_json'),
        case('json_deep_but_closed', publish_raw('hostile', b'[' * 20000 + b']' * 20000), 400, 'invalid_json'),
        case('json_duplicate_keys', publish_raw('hostile', b'{"a":1,"a":2}'), 400, 'invalid_json'),
        case('json_duplicate_keys_nested', publish_raw('hostile', b'{"x":{"id":1,"id":2}}'), 400,
             'invalid_json'),
        case('json_leading_zero', publish_raw('hostile', b'{"n":01}'), 400, 'invalid_json'),
        case('json_bare_minus', publish_raw('hostile', b'[-]'), 400, 'invalid_json'),
        case('json_nul_after_value', publish_raw('hostile', b'{}\0'), 400, 'invalid_json'),
        case('json_nan', publish_raw('hostile', b'{"n":NaN}'), 400, 'invalid_json'),
        case('json_empty', publish_raw('hostile', b'', headers=[('Content-Length', '0')]), 400,
             'invalid_json'),
        case('json_trailing_garbage', publish_raw('hostile', b'{} {}'), 400, 'invalid_json'),
        case('json_invalid_utf8', publish_raw('hostile', b'{"s":"\xff"}'), 400, 'invalid_json'),
        case('json_escaped_nul', publish_raw('hostile', b'{"s":"a\\u0000b"}'), 400, 'invalid_json'),
        case('json_lone_surrogate', publish_raw('hostile', b'{"s":"\\ud800"}'), 400, 'invalid_json'),
        case('not_json_content_type', publish_raw('hostile', ok).replace(
             b'application/json', b'text/plain'), 415, 'unsupported_media_type'),

        # --- Last-Event-ID garbage.
        case('last_event_id_negative', stream('-1'), 400, 'bad_request'),
        case('last_event_id_past_int64', stream('9223372036854775808'), 400, 'bad_request'),
        case('last_event_id_past_uint64', stream('99999999999999999999999'), 400, 'bad_request'),
        case('last_event_id_text', stream('abc'), 400, 'bad_request'),
        case('last_event_id_empty', stream(''), 400, 'bad_request'),
        case('last_event_id_hex', stream('0x10'), 400, 'bad_request'),
        case('last_event_id_two_numbers', stream('1 2'), 400, 'bad_request'),
        case('last_event_id_query_negative', stream(query='?lastEventId=-5'), 400, 'bad_request'),
        case('history_after_negative', request('GET', '/api/v1/topics/hostile/events?after=-1'),
             400, 'bad_request'),
        case('history_limit_huge', request('GET', '/api/v1/topics/hostile/events?limit=99999999999999999999'),
             400, 'bad_request'),

        # --- The API token.
        case('api_no_token', publish_raw('hostile', ok, token=None), 401, 'unauthorized'),
        case('api_empty_token', publish_raw('hostile', ok, token=''), 401, 'unauthorized'),
        case('api_wrong_token', publish_raw('hostile', ok, token='wrong'), 401, 'unauthorized'),
        case('api_one_char_different', publish_raw('hostile', ok, token=almost), 401, 'unauthorized'),
        case('api_first_char_different', publish_raw('hostile', ok, token='X' + api_token[1:]), 401,
             'unauthorized'),
        case('api_prefix', publish_raw('hostile', ok, token=api_token[:-1]), 401, 'unauthorized'),
        case('api_plus_a_char', publish_raw('hostile', ok, token=api_token + 'x'), 401, 'unauthorized'),
        case('api_twice_the_token', publish_raw('hostile', ok, token=api_token * 2), 401, 'unauthorized'),
        case('api_basic_scheme', publish_raw('hostile', ok, token=None, headers=[
             ('Authorization', 'Basic ' + base64.b64encode(f'x:{api_token}'.encode()).decode())]),
             401, 'unauthorized'),
        case('api_no_scheme', publish_raw('hostile', ok, token=None, headers=[('Authorization', api_token)]),
             401, 'unauthorized'),
        case('api_deployment_token', publish_raw('hostile', ok, token=deployment_token), 401, 'unauthorized'),
        case('api_right_then_wrong', publish_raw('hostile', ok, headers=[('Authorization', 'Bearer wrong')]),
             400, 'bad_request'),
        case('api_wrong_then_right', publish_raw('hostile', ok, token='wrong', headers=[
             ('Authorization', f'Bearer {api_token}')]), 400, 'bad_request'),

        # --- The deployment token.
        case('deploy_no_token', deployment([]), 401, 'unauthorized'),
        case('deploy_empty_token', deployment(['Bearer ']), 401, 'unauthorized'),
        case('deploy_one_char_different', deployment([f'Bearer {dep_almost}']), 401, 'unauthorized'),
        case('deploy_prefix', deployment([f'Bearer {deployment_token[:-1]}']), 401, 'unauthorized'),
        case('deploy_plus_a_char', deployment([f'Bearer {deployment_token}x']), 401, 'unauthorized'),
        case('deploy_basic_scheme', deployment([f'Basic {deployment_token}']), 401, 'unauthorized'),
        case('deploy_api_token', deployment([f'Bearer {api_token}']), 401, 'unauthorized'),
        case('deploy_right_then_wrong', deployment([f'Bearer {deployment_token}', 'Bearer x']),
             400, 'bad_request'),
        case('deploy_wrong_then_right', deployment(['Bearer x', f'Bearer {deployment_token}']),
             400, 'bad_request'),
    ]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), 'case names must be unique'
    return cases


# --- talking to batond ------------------------------------------------------

Reply = collections.namedtuple('Reply', 'response hung misframed')

PROBE = b'GET /_/health/live HTTP/1.1\r\nHost: hostile\r\n\r\n'


def exchange(port, raw, timeout):
    """Sends raw bytes (the server may close before taking them all) and
    reads the answer the way a strict client does (harness.StrictReader):
    one response, framed by its own head. After it the connection must
    either end (when the answer said Connection: close) or carry exactly
    the answer to one more request, a probe sent on it: a second head, or
    any byte too many, shows up there. hung: neither an answer nor a close
    within the timeout; misframed: what a strict client could not read."""
    method = raw.split(b' ', 1)[0].decode(errors='replace')
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reader = StrictReader(s)
        try:
            response = reader.response(method)
            if response is None:
                return Reply(None, False, None)
            if (response.header('Connection') or '').lower() == 'close':
                reader.expect_end()
            else:
                s.sendall(PROBE)
                probe = reader.response()
                if probe is None or probe.status != 200 or json.loads(probe.body) != {'status': 'UP'}:
                    raise Misframed(f'the next answer on the connection is not the probe\'s: {probe}')
        except socket.timeout:
            return Reply(None, True, None)
        except Misframed as e:
            return Reply(None, False, str(e))
    return Reply(response, False, None)


def check_reply(c, r):
    """The answer a case must get; returns a short label for the summary."""
    where = f'{c.name}: {r.response}'
    assert not r.hung, f'{c.name}: no answer and no close within the timeout'
    assert not r.misframed, f'{c.name}: {r.misframed}'
    if c.body == CLOSED:
        assert r.response is None, where
        return 'closed'
    assert r.response is not None, f'{c.name}: the connection closed without an answer'
    status = r.response.status
    assert status == c.status, where
    if c.body == MHD:
        # libmicrohttpd's page, one head and its body, and the close.
        assert b'<html>' in r.response.body, where
        assert (r.response.header('Connection') or '').lower() == 'close', where
        return f'{status} (libmicrohttpd)'
    assert 400 <= status < 500, where
    assert r.response.header('Content-Type') == 'application/json', where
    assert r.response.header('X-Request-ID'), where
    doc = json.loads(r.response.body)
    assert doc['error'] == c.body and isinstance(doc['message'], str) and doc['message'], where
    return str(status)


def assert_healthy(b, pid, what):
    assert b.running() and b.pid == pid, f'batond exited after {what}'
    with open(f'/proc/{pid}/comm') as f:
        assert f.read().strip() == 'batond', f'pid {pid} is no longer batond after {what}'
    live = b.get('/_/health/live')
    assert live.status == 200, (what, live)
    ready = b.get('/_/health/ready')
    assert ready.status == 200, (what, ready)
    r = publish(b.port, 'healthy', {'after': what}, token=API_TOKEN)
    assert r.status == 201, (what, r)


def server_errors(metrics_text):
    """Sum of the 5xx request counters."""
    return sum(float(v) for v in re.findall(
        r'^baton_http_requests_total\{[^}]*status="5xx"[^}]*\} (\S+)$', metrics_text, re.M))


def hostile_batond(ctx, pg_url=None, extra_env=None):
    pg = None
    if pg_url is None:
        pg = ctx.postgres()
        pg_url = pg.url()
    env = {'DATABASE_URL': pg_url, 'API_TOKEN': API_TOKEN, 'DEPLOYMENT_TOKEN': DEPLOYMENT_TOKEN,
           'MAX_EVENT_BYTES': '256K', 'MAX_BODY_BYTES': '64K',
           'CONNECTION_TIMEOUT': f'{CONNECTION_TIMEOUT}s'}
    env.update(extra_env or {})
    b = ctx.batond(env).start()
    b.wait_ready()
    return b


# --- tests ------------------------------------------------------------------

@test
def hostile_corpus_gets_4xx_and_leaves_the_service_healthy(ctx):
    b = hostile_batond(ctx)
    pid = b.pid
    cases = corpus()
    counts = collections.Counter()
    for c in cases:
        r = exchange(b.port, c.raw, timeout=CONNECTION_TIMEOUT + 8)
        counts[check_reply(c, r)] += 1
        assert_healthy(b, pid, c.name)

    # Not hostile, but the other side of the rules above: any JSON value is
    # an event (README), numbers of any size included (they were refused
    # when jansson re-serialised payloads), stored and read back byte for
    # byte as sent, less whitespace.
    values = [b'"text"', b'42', b'-1.5', b'null', b'true', b'[1,"a",{"k":null}]', b'{"a":{"b":[]}}',
              b'1' * 400, b'-' + b'9' * 30, b'{"n":1e999999}', b'0.1']
    for v in values:
        r = exchange(b.port, publish_raw('values', v), timeout=10)
        assert r.response and r.response.status == 201, (v, r)
    history = b.get('/api/v1/topics/values/events').body.encode()
    for v in values:
        assert b',"data":' + v + b'}' in history, (v, history[:300])

    metrics = b.get('/metrics').body
    assert server_errors(metrics) == 0, re.findall(r'^baton_http_requests_total.*5xx.*$', metrics, re.M)
    assert not re.search(r' 5\d\d [\d.]+ms \(request ', b.log()), 'a 5xx was logged'
    assert_healthy(b, pid, 'the whole corpus')
    summary = ', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))
    print(f'# {len(cases)} hostile requests, all 4xx (505 for HTTP/2.0) or closed, each read as one response, service healthy after each '
          f'(same pid {pid}, 0 5xx in /metrics): {summary}', flush=True)
    print(f'# and {len(values)} non-object JSON values accepted and read back byte for byte', flush=True)


def trickle(port, first, data, interval, stop, cut_after):
    """Sends first at once, then data a byte every interval, never falling
    silent, until the server closes the connection (or stop is set).
    Records how long after connecting the server closed it."""
    s = socket.create_connection(('127.0.0.1', port), timeout=30)
    opened = time.monotonic()
    pending = list(data)
    closed = False
    try:
        s.sendall(first)
        while not stop.is_set():
            if pending:
                s.sendall(bytes([pending.pop(0)]))
            readable, _, _ = select.select([s], [], [], interval)
            if readable and not s.recv(65536):     # an answer to first is read and dropped
                closed = True
                break
    except OSError:
        closed = True
    finally:
        if closed:
            cut_after.append(time.monotonic() - opened)
        s.close()


def slow_requests():
    """Per kind of slow client: what it sends at once, then what it trickles."""
    publish_head = (f'POST /api/v1/topics/slow/events HTTP/1.1\r\nHost: hostile\r\n'
                    f'Authorization: Bearer {API_TOKEN}\r\nContent-Type: application/json\r\n'
                    f'Content-Length: 4000\r\n\r\n').encode()
    live = b'GET /_/health/live HTTP/1.1\r\nHost: hostile\r\n\r\n'
    return {
        'request line': (b'', b'GET /_/health/live?' + b'a' * 2000),
        'headers': (b'', b'GET /_/health/live HTTP/1.1\r\nHost: hostile\r\nX-Slow: ' + b'a' * 2000),
        'body': (publish_head, b'{"a":"' + b'a' * 3990),
        'next request (keep-alive)': (live, b'GET /_/health/live HTTP/1.1\r\nX-Slow: ' + b'a' * 2000),
    }


@test
def slow_clients_are_cut_and_do_not_block_others(ctx):
    """Slowloris. libmicrohttpd 0.9.75 times inactivity only, so a byte now
    and then would keep a connection for ever; batond gives a connection
    CONNECTION_TIMEOUT to deliver a whole request from when it starts
    waiting for one (README "Slow clients"). Clients trickling a request
    line, headers, a body, or the next request on a keep-alive connection,
    a byte every eighth of the timeout, are all cut about CONNECTION_TIMEOUT
    in; everyone else is served meanwhile."""
    b = hostile_batond(ctx)
    pid = b.pid
    stop = threading.Event()
    ctx.add(stop, threading.Event.set)
    kinds = slow_requests()
    runs = []
    for kind, (first, data) in kinds.items():
        for _ in range(5):
            cut_after = []
            t = threading.Thread(target=trickle, daemon=True,
                                 args=(b.port, first, data, CONNECTION_TIMEOUT / 8, stop, cut_after))
            t.start()
            runs.append((kind, t, cut_after))
    started = time.monotonic()
    slowest = 0.0
    while any(t.is_alive() for _, t, _ in runs) and time.monotonic() - started < CONNECTION_TIMEOUT * 5:
        t0 = time.monotonic()
        assert b.get('/_/health/ready', timeout=5).status == 200
        assert publish(b.port, 'slow', {'n': 1}, token=API_TOKEN).status == 201
        slowest = max(slowest, time.monotonic() - t0)
        time.sleep(0.1)
    stop.set()
    for _, t, _ in runs:
        t.join(5)

    by_kind = {kind: sorted(c[0] for k, _, c in runs if k == kind and c) for kind in kinds}
    never_cut = [kind for kind, _, c in runs if not c]
    print(f'# {len(runs)} clients trickling a byte every {CONNECTION_TIMEOUT / 8:g} s '
          f'(CONNECTION_TIMEOUT={CONNECTION_TIMEOUT}s); others served in at most {slowest * 1000:.0f} ms; cut after: '
          + '; '.join(f'{k} {min(v):.2f}-{max(v):.2f} s' for k, v in by_kind.items() if v), flush=True)
    assert not never_cut, f'never cut: {never_cut}'
    for kind, waits in by_kind.items():
        assert all(CONNECTION_TIMEOUT - 0.1 <= w <= CONNECTION_TIMEOUT + 1.5 for w in waits), (kind, waits)
    assert slowest < 2.0, f'a request took {slowest:.2f}s while {len(runs)} clients trickled'
    metrics = b.get('/metrics').body
    cut = re.search(r'^baton_http_read_timeouts_total (\d+)$', metrics, re.M)
    assert cut and int(cut.group(1)) == len(runs), cut and cut.group(0)
    assert_healthy(b, pid, 'the slow clients')


# --- secrets ------------------------------------------------------------------

def setup_password_role(pg):
    """A role that must log in with its password (scram-sha-256 over TCP),
    owning the database; the harness's own role stays trusted."""
    pg.psql(f"SET password_encryption = 'scram-sha-256'; "
            f"CREATE ROLE hostile LOGIN PASSWORD '{DB_PASSWORD}'", db='postgres')
    pg.psql('ALTER DATABASE baton OWNER TO hostile', db='postgres')
    hba = os.path.join(pg.data, 'pg_hba.conf')
    with open(hba) as f:
        rules = f.read()
    with open(hba, 'w') as f:
        f.write('host all hostile 127.0.0.1/32 scram-sha-256\n' + rules)
    pg.psql('SELECT pg_reload_conf()', db='postgres')

    def login(password):
        return subprocess.run(['psql', '-h', '127.0.0.1', '-p', str(pg.port), '-U', 'hostile', '-d', 'baton',
                               '-At', '-c', 'SELECT 1'], env=dict(os.environ, PGPASSWORD=password),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).returncode
    # The password is really checked, so the URL's password is really used.
    wait_until(lambda: login('not-the-password') != 0, 5, what='password authentication to apply')
    assert login(DB_PASSWORD) == 0
    quoted = urllib.parse.quote(DB_PASSWORD, safe='')
    return f'postgres://hostile:{quoted}@127.0.0.1:{pg.port}/baton'


@test
def secrets_never_appear(ctx):
    pg = ctx.postgres()
    url = setup_password_role(pg)
    secrets = {'database password': DB_PASSWORD, 'API token': API_TOKEN, 'deployment token': DEPLOYMENT_TOKEN}
    needles = {}
    for what, value in secrets.items():
        needles[value] = what
        needles[urllib.parse.quote(value, safe='')] = f'{what} (URL-encoded)'
        needles[urllib.parse.quote_plus(value)] = f'{what} (form-encoded)'
    assert urllib.parse.quote(DB_PASSWORD, safe='') != DB_PASSWORD

    # The database URL and the deployment token as systemd credentials,
    # the API token in the environment.
    creds = ctx.tmp.join('credentials')
    os.makedirs(creds)
    for name, value in (('database-url', url), ('deployment-token', DEPLOYMENT_TOKEN)):
        with open(os.path.join(creds, name), 'w') as f:
            f.write(value + '\n')
    env = {'CREDENTIALS_DIRECTORY': creds, 'API_TOKEN': API_TOKEN, 'MAX_EVENT_BYTES': '256K',
           'CONNECTION_TIMEOUT': f'{CONNECTION_TIMEOUT}s', 'DEPLOYMENT_COLOR': 'blue'}
    b = ctx.batond(env)
    b.start()
    b.wait_ready()
    bodies = []     # (where, text)

    def get(path, **kw):
        r = b.get(path, **kw)
        bodies.append((path, r.body + ''.join(f'{k}: {v}\n' for k, v in r.headers)))
        return r

    def scrape(when):
        for path in ('/metrics', '/metrics/json', '/_/health', '/_/health/live', '/_/health/ready',
                     '/_/health/startup', '/health', '/health/db'):
            get(path)
        r = get('/health/deployment', headers={'Authorization': f'Bearer {DEPLOYMENT_TOKEN}'})
        assert r.status == 200 and r.json()['deploymentColor'] == 'blue', (when, r)

    scrape('started')
    # Right and wrong tokens.
    r = publish(b.port, 'secrets', {'n': 1}, token=API_TOKEN)
    bodies.append(('publish', r.body))
    assert r.status == 201, r
    for token in ('', 'wrong', API_TOKEN[:-1], API_TOKEN + 'x', DEPLOYMENT_TOKEN):
        r = publish(b.port, 'secrets', {'n': 2}, token=token or None)
        bodies.append(('publish with a wrong token', r.body))
        assert r.status == 401, r
    for token in ('', 'wrong', DEPLOYMENT_TOKEN[:-1], DEPLOYMENT_TOKEN + 'x', API_TOKEN):
        r = get('/health/deployment', headers={'Authorization': f'Bearer {token}'})
        assert r.status == 401, r
    # The part of the corpus about tokens and headers.
    for c in corpus():
        if c.name.startswith(('api_', 'deploy_', 'nul_', 'bare_cr', 'cl_with', 'host_', 'json_dup')):
            reply = exchange(b.port, c.raw, timeout=CONNECTION_TIMEOUT + 8)
            check_reply(c, reply)
            if reply.response:
                bodies.append((c.name, repr(reply.response.headers) + reply.response.body.decode(errors='replace')))

    # A database outage: errors with the connection's details get logged,
    # reported by the health endpoints and answered to publishers.
    pg.stop()
    wait_until(lambda: b.get('/_/health/ready').status == 503, 10, what='ready to turn red')
    r = publish(b.port, 'secrets', {'n': 3}, token=API_TOKEN)
    bodies.append(('publish during the outage', r.body))
    assert r.status == 503, r
    r = get('/api/v1/topics/secrets/events')
    assert r.status == 503, r
    scrape('outage')
    pg.start()
    wait_until(lambda: b.get('/_/health/ready').status == 200, 20, what='recovery')
    scrape('recovered')

    # A reload.
    since = b.notify.count()
    b.signal(signal.SIGHUP)
    b.notify.wait_for(r'^READY=1$', since=since)
    b.wait_log(r"Reloaded configuration")

    # --check-config, the same way configured; then with a broken key.
    check_env = {'PATH': os.environ['PATH'], 'CREDENTIALS_DIRECTORY': creds, 'API_TOKEN': API_TOKEN}
    for k in ('ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS'):
        if k in os.environ:
            check_env[k] = os.environ[k]
    outputs = []
    for extra, code in (({}, 0), ({'SERVER_PORT': '99999'}, 78)):
        out = subprocess.run([os.path.abspath(Batond.BINARY), '--check-config', '--config', '/dev/null'],
                             env=dict(check_env, **extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=30)
        assert out.returncode == code, out.stdout
        outputs.append(out.stdout)
    assert 'configuration OK' in outputs[0] and 'user=hostile password=*** ' in outputs[0], outputs[0]
    assert 'API_TOKEN=' in outputs[0], outputs[0]

    # Shutdown.
    b.signal(signal.SIGTERM)
    assert b.wait_exit(30) == 0

    log = b.log()
    # The scan is only worth something if the secrets had chances to leak.
    assert 'user=hostile password=*** dbname=baton host=127.0.0.1' in log, log[-2000:]
    assert 'Lost the PostgreSQL connection' in log, log[-2000:]
    notify = b.notify.texts()
    assert any(m.startswith('STATUS=') for m in notify)
    places = [('batond log', log)] + [(f'response {w}', t) for w, t in bodies] + \
        [('sd_notify', m) for m in notify] + [('--check-config output', o) for o in outputs]
    leaks = [f'{what} in {where}' for where, text in places for needle, what in needles.items() if needle in text]
    assert not leaks, leaks
    n_bytes = sum(len(t.encode()) for _, t in places)
    print(f'# scanned {n_bytes} bytes for {len(needles)} strings (3 secrets, raw and URL-encoded): the log ({len(log.encode())} bytes), '
          f'{len(bodies)} response bodies, {len(notify)} sd_notify messages, {len(outputs)} --check-config '
          f'outputs; none found', flush=True)


if __name__ == '__main__':
    run()
