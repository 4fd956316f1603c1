#!/usr/bin/env python3
"""HTTP behaviour a client sees: JSON errors, limits, keep-alive, aliases,
timeouts."""

import http.client
import os
import re
import signal
import socket
import threading
import time

from tests.harness import (Response, SseClient, StrictReader, http_get, publish, raw_request, run, test,
                           wait_until)


def ready_batond(ctx, **env):
    pg = ctx.postgres()
    e = {'DATABASE_URL': pg.url()}
    e.update(env)
    b = ctx.batond(e).start()
    b.wait_ready()
    return b


@test
def probes_and_aliases(ctx):
    b = ready_batond(ctx, DEPLOYMENT_COLOR='blue')
    live = b.get('/_/health/live')
    assert live.status == 200 and live.json() == {'status': 'UP'}, live
    assert live.header('Content-Type') == 'application/json'
    assert live.header('Cache-Control') == 'no-store'
    for path in ('/live', '/health/live'):
        assert b.get(path).json() == {'status': 'UP'}, path
    for path in ('/_/health/ready', '/ready', '/health/ready', '/_/health/startup'):
        r = b.get(path)
        assert r.status == 200 and r.json()['status'] == 'UP', (path, r)
        db = r.json()['checks']['database']
        assert db['status'] == 'UP' and isinstance(db['durationMs'], float), db
    summary = b.get('/_/health').json()
    assert summary['status'] == 'UP' and summary['color'] == 'blue', summary
    assert summary['version'].count('.') == 2, summary


@test
def json_errors_for_unknown_paths_and_methods(ctx):
    b = ready_batond(ctx)
    r = b.get('/nope')
    assert r.status == 404 and r.json()['error'] == 'not_found', r
    assert '/nope' in r.json()['message']

    r = b.get('/_/health/live', method='POST', body='x=1',
              headers={'Content-Type': 'application/x-www-form-urlencoded'})
    assert r.status == 405, r
    assert r.header('Allow') == 'GET, HEAD', r.headers
    assert r.json()['error'] == 'method_not_allowed'

    r = b.get('/_/health/live', method='HEAD')
    assert r.status == 200 and r.body == '', r


@test
def oversized_headers_get_431_json(ctx):
    b = ready_batond(ctx, MAX_HEADER_BYTES='4K')
    # Just over the limit: within what libmicrohttpd reads, so batond answers.
    r = b.get('/_/health/live', headers={'X-Big': 'a' * 4050})
    assert r.status == 431, r
    assert r.json()['error'] == 'header_too_large'
    # Far beyond the limit libmicrohttpd itself refuses (its own body).
    r = b.get('/_/health/live', headers={'X-Huge': 'a' * 60000})
    assert r.status == 431, r
    assert b.get('/_/health/live').status == 200


@test
def oversized_body_gets_413_json(ctx):
    b = ready_batond(ctx, MAX_BODY_BYTES='2K', MAX_EVENT_BYTES='3K')
    # Event bodies have their own limit (MAX_EVENT_BYTES), others MAX_BODY_BYTES.
    r = b.get('/api/v1/elsewhere', method='POST', body='a' * 2500,
              headers={'Content-Type': 'application/json'})
    assert r.status == 413, r
    assert r.json()['error'] == 'payload_too_large'
    assert 'the limit is 2048' in r.json()['message']
    r = b.get('/api/v1/topics/x/events', method='POST', body='a' * 5000,
              headers={'Content-Type': 'application/json'})
    assert r.status == 413 and 'the limit is 3072' in r.json()['message'], r
    # A chunked body that grows past the limit cannot get a response
    # mid-body: the connection is closed instead.
    chunk = b'a' * 1000
    body = b''.join(b'%x\r\n%s\r\n' % (len(chunk), chunk) for _ in range(5)) + b'0\r\n\r\n'
    reply = raw_request(b.port, b'POST /api/v1/topics/x/events HTTP/1.1\r\nHost: t\r\n'
                        b'Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n' + body)
    assert not reply.startswith(b'HTTP/1.1 2'), reply[:100]
    assert b.get('/_/health/live').status == 200


@test
def malformed_requests_get_400(ctx):
    b = ready_batond(ctx)
    for raw, status in ((b'GET /_/health/live\r\n\r\n', b'400'),        # no version
                        (b'GET /_/health/live HTTP/1.1\r\n\r\n', b'400'),  # HTTP/1.1 without Host
                        (b'GET /_/health/live HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n', b'400'),
                        (b'GET /_/health/live HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n', b'400'),
                        (b'GET /_/health/live HTTP/9.9\r\nHost: a\r\n\r\n', b'505')):
        reply = raw_request(b.port, raw)
        assert reply.startswith(b'HTTP/1.1 ' + status), (raw, reply[:120])
    # Not HTTP at all (no URI): libmicrohttpd closes without an answer.
    reply = raw_request(b.port, b'GARBAGE\r\n\r\n')
    assert reply == b'', reply[:120]
    assert b.get('/_/health/live').status == 200


@test
def absolute_form_targets_are_served_as_their_path(ctx):
    """RFC 9112 3.2.2: a server must accept "GET http://host/path"; batond
    serves it as "/path", on a kept-alive connection like any request."""
    b = ready_batond(ctx, API_TOKEN='t0ken')
    with socket.create_connection(('127.0.0.1', b.port), timeout=5) as s:
        reader = StrictReader(s)

        def ask(raw, method='GET'):
            s.sendall(raw)
            return reader.response(method)
        r = ask(b'GET http://baton.example/_/health/live HTTP/1.1\r\nHost: baton.example\r\n\r\n')
        assert r.status == 200 and r.json() == {'status': 'UP'}, r
        r = ask(b'GET HTTPS://user@baton.example:8443/_/health/live?x=1 HTTP/1.1\r\nHost: a\r\n\r\n')
        assert r.status == 200 and r.json() == {'status': 'UP'}, r
        body = b'{"absolute":true}'
        r = ask(b'POST http://baton.example/api/v1/topics/abs/events HTTP/1.1\r\nHost: a\r\n'
                b'Authorization: Bearer t0ken\r\nContent-Type: application/json\r\n'
                b'Content-Length: %d\r\n\r\n%s' % (len(body), body))
        assert r.status == 201, r
        r = ask(b'GET http://baton.example HTTP/1.1\r\nHost: a\r\n\r\n')
        assert r.status == 404 and r.json()['message'] == 'no such resource: /', r
        r = ask(b'GET ftp://baton.example/_/health/live HTTP/1.1\r\nHost: a\r\n\r\n')
        assert r.status == 404 and r.json()['error'] == 'not_found', r
        assert r.header('Connection') != 'close', r
    events = b.get('/api/v1/topics/abs/events').json()['events']
    assert [e['data'] for e in events] == [{'absolute': True}], events


@test
def ambiguous_body_framing_is_refused(ctx):
    """Request smuggling needs a proxy and a server that disagree on where a
    body ends: refuse every request whose framing is ambiguous."""
    b = ready_batond(ctx)
    for raw in (b'POST /api/v1/topics/x/events HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n'
                b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n',
                b'POST /api/v1/topics/x/events HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n'
                b'Content-Length: 40\r\n\r\nx'):
        reply = raw_request(b.port, raw).decode()
        assert reply.startswith('HTTP/1.1 400'), reply[:200]
        assert '"error":"bad_request"' in reply and 'ambiguous body length' in reply, reply
        assert 'Connection: close' in reply
        assert '/smuggled' not in reply and reply.count('HTTP/1.1') == 1, reply


@test
def keep_alive_serves_many_requests_on_one_connection(ctx):
    b = ready_batond(ctx)
    conn = http.client.HTTPConnection('127.0.0.1', b.port, timeout=5)
    conn.connect()
    local = conn.sock.getsockname()
    for path in ['/_/health/live', '/_/health/ready', '/nope', '/_/health'] * 5:
        conn.request('GET', path)
        r = conn.getresponse()
        r.read()
        assert r.getheader('Connection') != 'close', path
    assert conn.sock.getsockname() == local, 'the connection was not kept'
    conn.close()


@test
def idle_connections_time_out(ctx):
    b = ready_batond(ctx, CONNECTION_TIMEOUT='1s')
    s = socket.create_connection(('127.0.0.1', b.port), timeout=5)
    started = time.monotonic()
    # A slowloris-style client: connects and sends nothing.
    assert s.recv(100) == b''
    assert 0.8 < time.monotonic() - started < 4
    s.close()


@test
def idle_clients_hold_connection_slots_only_until_the_timeout(ctx):
    b = ready_batond(ctx, MAX_CONNECTIONS='16', CONNECTION_TIMEOUT='2s')
    # 16 served and the shedding reserve: every slot taken.
    idle = [socket.create_connection(('127.0.0.1', b.port), timeout=10)
            for _ in range(16 + shed_reserve(16))]
    time.sleep(0.3)
    started = time.monotonic()
    # The next client waits in the backlog until idle ones are evicted.
    r = b.get('/_/health/live', timeout=10)
    waited = time.monotonic() - started
    assert r.status == 200
    assert 1.0 < waited < 6, f'served after {waited:.1f}s'
    for s in idle:
        s.close()


@test
def stream_test_validates_its_parameters(ctx):
    b = ready_batond(ctx, STREAM_TEST_MAX_DURATION='10s')
    for query in ('duration=0', 'duration=11', 'duration=abc', 'duration=-1', 'duration=3&lastEventId=3',
                  'duration=3&lastEventId=x'):
        r = b.get('/stream/test?' + query)
        assert r.status == 400 and r.json()['error'] == 'bad_request', (query, r)
    reply = raw_request(b.port, b'GET /stream/test?duration=2 HTTP/1.1\r\nHost: t\r\n'
                        b'Last-Event-ID: 1\r\n\r\n', timeout=6)
    text = reply.decode()
    assert 'Content-Type: text/event-stream' in text, text
    assert 'retry: 2000' in text
    assert 'id: 1\n' not in text and 'id: 2\nevent: tick\n' in text, text
    assert 'event: end' in text



def shed_reserve(served):
    """HTTP_SHED_RESERVE() in src/http.h."""
    return min(256, max(4, served // 16))


@test
def connection_flood_is_shed_with_503_and_recovers(ctx):
    """A low open-file limit makes MAX_CONNECTIONS shrink to fit; a flood of
    streams past it is answered 503 at once (not left hanging), probes on
    both sockets keep answering, and everything recovers when it ends."""
    pg = ctx.postgres()
    # Heartbeats are how a suspended stream learns its client left.
    b = ctx.batond({'DATABASE_URL': pg.url(), 'STREAM_HEARTBEAT_INTERVAL': '1s'},
                   fdnames=['http', 'metrics'],
                   wrap=['prlimit', '--nofile=160:160', '--']).start(trigger=False)
    public, ops = b.ports
    wait_until(lambda: http_get(ops, '/_/health/live', timeout=2).status == 200, 10, interval=0.1,
               what='batond to start')
    b.wait_ready()
    served = int(b.wait_log(r'MAX_CONNECTIONS=10000 does not fit the open-file limit \(160\) '
                            r'with 2 socket\(s\); using (\d+)').group(1))
    fds_before = len(os.listdir(f'/proc/{b.pid}/fd'))

    streams = [SseClient(public, '/api/v1/topics/flood/stream') for _ in range(served)]
    wait_until(lambda: all(s.status == 200 for s in streams), 30, what='every stream to start')

    extra = shed_reserve(served) + 150    # far past what batond may accept at once
    answers = [None] * extra
    took = [0.0] * extra

    def knock(i):
        started = time.monotonic()
        try:
            answers[i] = raw_request(public, b'GET /api/v1/topics/flood/stream HTTP/1.1\r\nHost: t\r\n\r\n',
                                     timeout=20)
        except OSError as e:
            answers[i] = repr(e).encode()
        took[i] = time.monotonic() - started

    knocks = [threading.Thread(target=knock, args=(i,)) for i in range(extra)]
    for t in knocks:
        t.start()
    # Health keeps answering during the flood, on the metrics socket and,
    # through the shedding reserve, on the public one.
    probe_started = time.monotonic()
    assert http_get(ops, '/_/health/ready', timeout=5).status == 200
    assert http_get(public, '/_/health/live', timeout=5).status == 200
    probe_time = time.monotonic() - probe_started
    for t in knocks:
        t.join(30)
    shed = [a for a in answers if a.startswith(b'HTTP/1.1 503')]
    assert len(shed) == extra, [a[:100] for a in answers if not a.startswith(b'HTTP/1.1 503')]
    for a in shed:
        assert b'"error":"overloaded"' in a and b'Retry-After: 1' in a and b'Connection: close' in a, a
    assert all(s.status == 200 and not s.ended for s in streams)
    print(f'# open-file limit 160: {served} connections served, reserve {shed_reserve(served)}; '
          f'{extra} more streams all answered 503 (slowest after {max(took) * 1000:.0f} ms); '
          f'both probes answered in {probe_time:.2f}s during the flood', flush=True)

    for s in streams:
        s.close()
    # The scrape's own connection is the one left.
    wait_until(lambda: re.search(r'^baton_http_connections 1$', http_get(ops, '/metrics').body, re.M), 15,
               what='the flood connections to close')
    metrics = http_get(ops, '/metrics').body
    assert re.search(rf'^baton_http_requests_shed_total {extra}$', metrics, re.M), \
        re.findall(r'^baton_http_requests_shed_total.*$', metrics, re.M)
    assert publish(public, 'flood', {'after': 'flood'}).status == 201
    after = SseClient(public, '/api/v1/topics/flood/stream', last_event_id=0)
    wait_until(lambda: after.ids() != [], 10, what='a stream after the flood')
    after.close()
    wait_until(lambda: len(os.listdir(f'/proc/{b.pid}/fd')) <= fds_before + 2, 10,
               what=f'descriptors back to {fds_before}')
    assert b.running()


APP = 'http://app.example:8081'
CORS_ALLOW_HEADERS = 'Authorization, Content-Type, Last-Event-ID, Idempotency-Key'


def cors_headers(r):
    """The CORS part of an answer: its Access-Control-* and Vary headers."""
    return {k.lower(): v for k, v in r.headers if k.lower().startswith('access-control-') or
            k.lower() == 'vary'}


def stream_head(port, path, headers):
    """A stream's status and headers, without waiting for its body."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
    try:
        conn.request('GET', path, headers=headers)
        r = conn.getresponse()
        return r.status, r.getheaders()
    finally:
        conn.close()


@test
def cors_answers_the_listed_origins_only(ctx):
    """CORS_ORIGINS lets pages on the listed origins call the event API: a
    preflight gets 204 with what the path allows, every answer the origin
    echoed with credentials; other origins get no Access-Control-* at all.
    '*' on reload: the same answer for all, never with credentials; empty:
    no CORS header, as before the key existed."""
    pg = ctx.postgres()
    conf = ctx.tmp.join('batond.conf')
    with open(conf, 'w') as f:
        f.write(f'CORS_ORIGINS=https://other.example, {APP}\n')
    b = ctx.batond({'DATABASE_URL': pg.url()}, args=['--config', conf]).start()
    b.wait_ready()
    allowed = {'access-control-allow-origin': APP, 'access-control-allow-credentials': 'true',
               'access-control-expose-headers': 'Retry-After, X-Request-ID', 'vary': 'Origin'}
    json_type = {'Content-Type': 'application/json'}

    def preflight(path, origin, method='POST'):
        return b.get(path, method='OPTIONS', headers={
            'Origin': origin, 'Access-Control-Request-Method': method,
            'Access-Control-Request-Headers': 'content-type'})

    r = preflight('/api/v1/topics/web/events', APP)
    assert r.status == 204 and r.body == '', r
    assert cors_headers(r) == {
        'access-control-allow-origin': APP, 'access-control-allow-credentials': 'true',
        'access-control-allow-methods': 'GET, HEAD, POST',
        'access-control-allow-headers': CORS_ALLOW_HEADERS,
        'access-control-max-age': '600', 'vary': 'Origin'}, r.headers
    assert r.header('Content-Length') is None and r.header('X-Request-ID'), r.headers
    r = preflight('/api/v1/topics/web/stream', APP, 'GET')
    assert r.status == 204 and r.header('Access-Control-Allow-Methods') == 'GET, HEAD', r.headers

    # Other origins (a port, a scheme, a slash away): today's 405.
    for origin in ('http://app.example:8082', 'https://app.example:8081', APP + '/', 'null'):
        r = preflight('/api/v1/topics/web/events', origin)
        assert r.status == 405 and r.header('Allow') == 'GET, HEAD, POST', (origin, r)
        assert cors_headers(r) == {'vary': 'Origin'}, (origin, r.headers)
    # Paths outside the event API keep their answer to OPTIONS.
    r = preflight('/_/health/live', APP, 'GET')
    assert r.status == 405 and cors_headers(r) == {}, r.headers
    r = preflight('/api/v2/elsewhere', APP)
    assert r.status == 404 and cors_headers(r) == {}, r.headers

    # Answers: 201, 200, errors and a stream's head.
    r = b.get('/api/v1/topics/web/events', method='POST', body='{"n":1}',
              headers={'Origin': APP, **json_type})
    assert r.status == 201 and cors_headers(r) == allowed, r.headers
    r = b.get('/api/v1/topics/web/events', method='POST', body='{"n":2}',
              headers={'Origin': 'https://evil.example', **json_type})
    assert r.status == 201 and cors_headers(r) == {'vary': 'Origin'}, r.headers
    r = b.get('/api/v1/topics/web/events?after=0', headers={'Origin': APP})
    assert r.status == 200 and len(r.json()['events']) == 2 and cors_headers(r) == allowed, r
    r = b.get('/api/v1/topics/web/events', method='POST', body='x',
              headers={'Origin': APP, 'Content-Type': 'text/plain'})
    assert r.status == 415 and cors_headers(r) == allowed, r
    r = b.get('/api/v1/topics/bad.topic/events', headers={'Origin': APP})
    assert r.status == 400 and cors_headers(r) == allowed, r
    r = b.get('/api/v1/topics/web/events', method='DELETE', headers={'Origin': APP})
    assert r.status == 405 and cors_headers(r) == allowed, r
    status, headers = stream_head(b.port, '/api/v1/topics/web/stream',
                                  {'Origin': APP, 'Accept': 'text/event-stream'})
    assert status == 200 and cors_headers(Response(status, headers, '')) == allowed, headers
    r = b.get('/api/v1/topics/web/events', headers={'Origin': APP})
    assert r.header('X-Request-ID') and r.header('Cache-Control') == 'no-store', r.headers

    # A preflight and its request on one kept-alive connection, read strictly.
    body = b'{"n":3}'
    with socket.create_connection(('127.0.0.1', b.port), timeout=5) as sock:
        sock.sendall(f'OPTIONS /api/v1/topics/web/events HTTP/1.1\r\nHost: a\r\nOrigin: {APP}\r\n'
                     'Access-Control-Request-Method: POST\r\n\r\n'.encode() +
                     f'POST /api/v1/topics/web/events HTTP/1.1\r\nHost: a\r\nOrigin: {APP}\r\n'
                     f'Content-Type: application/json\r\nContent-Length: {len(body)}\r\n'
                     'Connection: close\r\n\r\n'.encode() + body)
        reader = StrictReader(sock)
        first, second = reader.response('OPTIONS'), reader.response()
        reader.expect_end()
    assert first.status == 204 and first.body == b'', first
    assert second.status == 201 and second.header('Access-Control-Allow-Origin') == APP, second

    # A 503 (the database down) is readable too, Retry-After included.
    pg.kill()
    status, headers = wait_until(lambda: (lambda h: h[0] == 503 and h)(
        stream_head(b.port, '/api/v1/topics/nobody-follows/stream', {'Origin': APP})), 15,
        what='a stream refused with 503')
    r = Response(status, headers, '')
    assert cors_headers(r) == allowed and r.header('Retry-After') == '1', headers
    pg.start()
    wait_until(lambda: b.get('/_/health/ready').status == 200, 20, what='ready again')

    # '*' (reloaded): every origin, no credentials, no Vary.
    with open(conf, 'w') as f:
        f.write('CORS_ORIGINS=*\n')
    since = b.notify.count()
    b.signal(signal.SIGHUP)
    b.notify.wait_for(r'^READY=1$', since=since)
    b.wait_log(r'Reload: CORS_ORIGINS changed from https://other.example, http://app.example:8081 to \*')
    r = preflight('/api/v1/topics/web/events', 'https://any.example')
    assert r.status == 204 and cors_headers(r) == {
        'access-control-allow-origin': '*', 'access-control-allow-methods': 'GET, HEAD, POST',
        'access-control-allow-headers': CORS_ALLOW_HEADERS, 'access-control-max-age': '600'}, r.headers
    r = b.get('/api/v1/topics/web/events', headers={'Origin': 'null'})
    assert r.status == 200 and cors_headers(r) == {
        'access-control-allow-origin': '*',
        'access-control-expose-headers': 'Retry-After, X-Request-ID'}, r.headers

    # Empty again: no CORS header anywhere, OPTIONS as before.
    with open(conf, 'w') as f:
        f.write('CORS_ORIGINS=\n')
    since = b.notify.count()
    b.signal(signal.SIGHUP)
    b.notify.wait_for(r'^READY=1$', since=since)
    r = preflight('/api/v1/topics/web/events', APP)
    assert r.status == 405 and cors_headers(r) == {}, r.headers
    r = b.get('/api/v1/topics/web/events', headers={'Origin': APP})
    assert r.status == 200 and cors_headers(r) == {}, r.headers

    # A wrong value on reload: the running origins stay, the log says why.
    with open(conf, 'w') as f:
        f.write(f'CORS_ORIGINS={APP}/\n')
    b.signal(signal.SIGHUP)
    b.wait_log(re.escape(f"Reload failed, keeping the running configuration: CORS_ORIGINS: '{APP}/' "
                         'is not an origin'))
    assert preflight('/api/v1/topics/web/events', APP).status == 405
    assert b.running()


if __name__ == '__main__':
    run()
