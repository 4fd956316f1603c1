#!/usr/bin/env python3
"""The event API and its guarantee: per topic, every subscriber receives
every event exactly once, in increasing id order, across the replay/live
seam, across instances, across reconnects, and across outages."""

import collections
import json
import random
import re
import socket
import threading
import time

from tests import harness
from tests.harness import http_get, metric, publish, raw_request, run, test, wait_streams, wait_until

FAST = {'STREAM_RESYNC_INTERVAL': '500ms', 'STREAM_HEARTBEAT_INTERVAL': '1s'}


def assert_exactly_once(ids, first, last, who='subscriber'):
    expected = list(range(first, last + 1))
    if ids != expected:
        missing = sorted(set(expected) - set(ids))
        dups = sorted({i for i in ids if ids.count(i) > 1})
        order = [(a, b) for a, b in zip(ids, ids[1:]) if b <= a][:5]
        raise AssertionError(f'{who}: {len(ids)} ids, expected {first}..{last}; missing '
                             f'{missing[:10]}, duplicated {dups[:10]}, out of order {order}')


def store_events(pg, topic, n, pad):
    """Events 1..n of topic written straight into the store, each
    {"n": i, "pad": "xxx..."} with pad bytes of padding."""
    pg.psql(f"INSERT INTO topics (name, last_id) VALUES ('{topic}', {n});"
            f"INSERT INTO events (topic, id, payload) SELECT '{topic}', g, "
            f"json_build_object('n', g, 'pad', repeat('x', {pad}))::json FROM generate_series(1, {n}) g")


def one_instance(ctx, **env):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), **FAST, **env}).start()
    b.wait_ready()
    return pg, b


def two_instances(ctx, nats):
    pg = ctx.postgres()
    env = {'DATABASE_URL': pg.url(), **FAST}
    if nats:
        n = ctx.nats()
        env.update({'NATS__ENABLED': 'true', 'NATS__URL': n.url})
    else:
        n = None
    a = ctx.batond({**env, 'DEPLOYMENT_COLOR': 'blue'}, name='blue').start()
    b = ctx.batond({**env, 'DEPLOYMENT_COLOR': 'green'}, name='green').start()
    a.wait_ready()
    b.wait_ready()
    return pg, n, a, b


def publisher(port, topic, count, results, delay=0.0):
    for i in range(count):
        r = publish(port, topic, {'n': i, 'port': port})
        results.append((r.status, r.json().get('id') if r.status == 201 else r.body))
        if delay:
            time.sleep(delay)


@test
def publish_history_and_errors(ctx):
    pg, b = one_instance(ctx)
    r = publish(b.port, 'orders', {'item': 'book', 'qty': 2})
    assert r.status == 201, r
    body = r.json()
    assert body['id'] == 1 and body['topic'] == 'orders' and body['ts'].endswith('Z'), body
    assert publish(b.port, 'orders', [1, 'two', None]).json()['id'] == 2
    assert publish(b.port, 'other', 'just a string').json()['id'] == 1, 'ids are per topic'

    history = b.get('/api/v1/topics/orders/events').json()
    assert [e['id'] for e in history['events']] == [1, 2]
    assert history['events'][0]['data'] == {'item': 'book', 'qty': 2}
    assert history['events'][0]['ts'] == body['ts']
    assert [e['id'] for e in b.get('/api/v1/topics/orders/events?after=1').json()['events']] == [2]
    assert b.get('/api/v1/topics/orders/events?limit=1').json()['events'][0]['id'] == 1
    assert b.get('/api/v1/topics/nothing-yet/events').json() == {'topic': 'nothing-yet', 'events': []}

    for bad in ('a.b', '*', '..', 'a>', 'x' * 129, 'sp%20ace', '%2e%2e'):
        r = publish(b.port, bad, {})
        assert r.status == 400 and r.json()['error'] == 'invalid_topic', (bad, r)
        assert b.get(f'/api/v1/topics/{bad}/events').status == 400
        assert b.get(f'/api/v1/topics/{bad}/stream').status == 400
    assert publish(b.port, 'x' * 128, {}).status == 201

    def post(body, ctype='application/json'):
        return http_get(b.port, '/api/v1/topics/orders/events', method='POST', body=body,
                        headers={'Content-Type': ctype})
    r = post('{"a": [1, 2')
    assert r.status == 400 and r.json()['error'] == 'invalid_json', r
    assert 'line 1, column' in r.json()['message'], r.json()
    assert post('{"a": 1, "a": 2}').status == 400, 'duplicate keys'
    assert post('').status == 400
    assert post('{}', 'text/plain').status == 415
    assert post('{}', 'application/json; charset=utf-8').status == 201
    r = post(json.dumps({'pad': 'x' * 70000}))
    assert r.status == 413 and r.json()['error'] == 'payload_too_large', r
    # Numbers are kept as sent, so a body's size is what is stored, less
    # its whitespace: a body of the limit, half of it blanks, is stored.
    r = post('[' + ' ' * 30000 + '"' + 'x' * 30000 + '"]')
    assert r.status == 201, r
    assert post('{"a": 01}').status == 400, 'a number with a leading zero'

    for query in ('after=-1', 'after=x', 'limit=0', 'limit=1001'):
        r = b.get('/api/v1/topics/orders/events?' + query)
        assert r.status == 400, (query, r)
    r = b.get('/api/v1/topics/orders/stream', headers={'Last-Event-ID': 'abc'})
    assert r.status == 400, r
    assert b.get('/api/v1/topics/orders').status == 404


# As sent (left), as stored and delivered (right): whitespace outside
# strings dropped, every other byte kept.
EXACT_PAYLOADS = [
    (b'{"price": 0.1}', b'{"price":0.1}'),
    (b'1e2', b'1e2'),
    (b'{"big": 18446744073709551616, "neg": -123456789012345678901234567890}',
     b'{"big":18446744073709551616,"neg":-123456789012345678901234567890}'),
    (b'[ -0, 0.10, 1E+2, 1.5e-7 ]', b'[-0,0.10,1E+2,1.5e-7]'),
    (b'"caf\\u00e9 \\" kept "', b'"caf\\u00e9 \\" kept "'),
    (b'{"k": {"b": 1, "a": 2}}', b'{"k":{"b":1,"a":2}}'),
]


@test
def payloads_come_back_exactly_as_sent(ctx):
    """Numbers keep their text (0.1 is not 0.10000000000000001, 1e2 not
    100.0, big integers are accepted), in the history, in a live stream on
    the publishing instance, on another instance through NATS, and in a
    replay: the same bytes everywhere."""
    pg, n, a, b = two_instances(ctx, nats=True)
    live_a = ctx.subscribe(a.port, '/api/v1/topics/exact/stream')
    live_b = ctx.subscribe(b.port, '/api/v1/topics/exact/stream')
    assert live_a.wait_open() and live_b.wait_open(), (live_a.all(), live_b.all())
    for sent, _ in EXACT_PAYLOADS:
        r = http_get(a.port, '/api/v1/topics/exact/events', method='POST', body=sent,
                     headers={'Content-Type': 'application/json'})
        assert r.status == 201, (sent, r)
    last = len(EXACT_PAYLOADS)
    replay = ctx.subscribe(b.port, '/api/v1/topics/exact/stream', last_event_id=0)
    history = http_get(b.port, '/api/v1/topics/exact/events').body
    for name, sub in (('live on the publishing instance', live_a), ('live through NATS', live_b),
                      ('replayed', replay)):
        sub.wait_for_id(last)
        got = [d.encode() for _, e, d in sub.all() if e == 'message']
        assert len(got) == last, (name, got)
        for text, (sent, stored) in zip(got, EXACT_PAYLOADS):
            assert text.endswith(b',"data":' + stored + b'}'), (name, sent, text)
    for sent, stored in EXACT_PAYLOADS:
        assert (b',"data":' + stored + b'}') in history.encode(), (sent, history)
    assert pg.psql("SELECT string_agg(payload::text, '|' ORDER BY id) FROM events WHERE topic = 'exact'") \
        == '|'.join(s.decode() for _, s in EXACT_PAYLOADS)


def keyed(port, topic, data, key, timeout=10):
    return http_get(port, f'/api/v1/topics/{topic}/events', method='POST', body=json.dumps(data),
                    headers={'Content-Type': 'application/json', 'Idempotency-Key': key}, timeout=timeout)


@test
def a_publish_repeated_with_its_idempotency_key_is_stored_once(ctx):
    """The same key and body within IDEMPOTENCY_TTL: the first 201, again
    (same id, same ts, Idempotent-Replayed), nothing stored, on either
    instance. The key with another body or topic: 422. Keys the header
    cannot carry: 400 before the body is read."""
    pg, n, a, b = two_instances(ctx, nats=False)
    sub = ctx.subscribe(b.port, '/api/v1/topics/keyed/stream')
    assert sub.wait_open(), sub.all()
    first = keyed(a.port, 'keyed', {'order': 1}, 'order-1')
    assert first.status == 201 and first.header('Idempotent-Replayed') is None, first
    for port in (a.port, b.port, a.port):
        again = keyed(port, 'keyed', {'order': 1}, 'order-1')
        assert again.status == 201 and again.json() == first.json(), (first, again)
        assert again.header('Idempotent-Replayed') == 'true', again
    assert keyed(a.port, 'keyed', {'order': 2}, 'order-2').status == 201
    for topic, body in (('keyed', {'order': 'other'}), ('other-topic', {'order': 1})):
        r = keyed(b.port, topic, body, 'order-1')
        assert r.status == 422 and r.json()['error'] == 'idempotency_key_reused', r
    for bad in ('x' * 256, 'tab\there'):
        r = keyed(a.port, 'keyed', {}, bad)
        assert r.status == 400 and r.json()['error'] == 'invalid_idempotency_key', (bad, r)
    assert keyed(a.port, 'keyed', {}, 'x' * 255).status == 201, 'a key of 255 bytes is valid'
    assert pg.psql("SELECT string_agg(payload::text, ' ' ORDER BY id) FROM events WHERE topic = 'keyed'") \
        == '{"order":1} {"order":2} {}'
    sub.wait_for_id(3)
    time.sleep(0.3)
    assert_exactly_once(sub.ids(), 1, 3)

    # Concurrent retries of one publish, on both instances at once: one
    # event, and every answer carries its id.
    answers = []

    def retry(port):
        answers.append(keyed(port, 'keyed', {'order': 'raced'}, 'raced'))
    threads = [threading.Thread(target=retry, args=(p,)) for p in [a.port, b.port] * 10]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status == 201 for r in answers), [r.status for r in answers]
    assert len({r.json()['id'] for r in answers}) == 1, [r.body for r in answers]
    assert sum(r.header('Idempotent-Replayed') is None for r in answers) == 1, 'not exactly one first answer'
    assert pg.psql("SELECT count(*) FROM events WHERE topic = 'keyed' AND payload::text LIKE '%raced%'") == '1'

    # Past IDEMPOTENCY_TTL a key is free again.
    pg.psql("UPDATE publish_keys SET created_at = now() - interval '25 hours' WHERE key = 'order-2'")
    r = keyed(a.port, 'keyed', {'order': 2}, 'order-2')
    assert r.status == 201 and r.json()['id'] == 5 and r.header('Idempotent-Replayed') is None, r


@test
def a_publish_cut_off_after_its_commit_and_retried_is_stored_once(ctx):
    """The client gives up before the answer (its connection is reset once
    batond has its whole request), the event commits anyway, and the
    client retries with the same key: one event, and the retry gets its id."""
    import os
    import signal
    pg, b = one_instance(ctx)
    body = json.dumps({'payment': 42}).encode()
    request = (b'POST /api/v1/topics/payments/events HTTP/1.1\r\nHost: x\r\n'
               b'Content-Type: application/json\r\nIdempotency-Key: pay-42\r\n'
               b'Content-Length: ' + str(len(body)).encode() + b'\r\n\r\n' + body)
    # The publish connection is held so that the commit cannot come before
    # the reset. The reset itself waits until batond has queued the event:
    # a reset that beats batond to the bytes takes the request with it (the
    # kernel discards what was not read), and that is not this case.
    writer = pg.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'batond/publish'")
    assert writer, 'no publish connection'
    os.kill(int(writer), signal.SIGSTOP)
    try:
        with socket.create_connection(('127.0.0.1', b.port)) as s:
            s.sendall(request)
            wait_until(lambda: metric(b.port, 'baton_events_publish_queue_bytes') > 0, 10,
                       what='batond to queue the publish')
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
        assert pg.psql("SELECT count(*) FROM events WHERE topic = 'payments'") == '0'
    finally:
        os.kill(int(writer), signal.SIGCONT)
    # Closed with a reset, before any answer: now wait for the commit.
    wait_until(lambda: pg.psql("SELECT count(*) FROM events WHERE topic = 'payments'") == '1', 10,
               what='the cut-off publish to commit')
    r = keyed(b.port, 'payments', {'payment': 42}, 'pay-42')
    assert r.status == 201 and r.json()['id'] == 1 and r.header('Idempotent-Replayed') == 'true', r
    assert pg.psql("SELECT count(*) FROM events WHERE topic = 'payments'") == '1'


@test
def a_new_subscriber_gets_what_is_published_after_its_answer(ctx):
    """The stream's 200 goes out only once the topic's position is known:
    an event published after the client saw it must reach the client."""
    import os
    import signal
    pg, b = one_instance(ctx)
    reader = pg.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'batond/read'")
    assert reader, 'no read connection'
    os.kill(int(reader), signal.SIGSTOP)    # the position query cannot answer
    try:
        sub = ctx.subscribe(b.port, '/api/v1/topics/fresh/stream')
        time.sleep(0.7)
        assert sub.status is None, 'the stream answered before knowing its position'
    finally:
        os.kill(int(reader), signal.SIGCONT)
    assert sub.wait_open(), sub.all()
    r = publish(b.port, 'fresh', {'after': 'the answer'})
    assert r.status == 201
    sub.wait_for_id(r.json()['id'])


@test
def streams_work_with_headers_near_the_limit(ctx):
    pg, b = one_instance(ctx)
    cookie = 'c=' + 'x' * 2900      # the whole header block stays under MAX_HEADER_BYTES (3K)
    sub = ctx.subscribe(b.port, '/api/v1/topics/cookies/stream', extra_headers={'Cookie': cookie})
    assert sub.wait_open(), sub.all()
    for i in range(20):
        assert publish(b.port, 'cookies', {'i': i, 'pad': 'y' * 2000}).status == 201
    sub.wait_for_id(20)
    assert_exactly_once(sub.ids(), 1, 20)


@test
def api_token_protects_publishing(ctx):
    token = 'a-long-random-token-0123456789'
    pg, b = one_instance(ctx, API_TOKEN=token)
    r = publish(b.port, 'secure', {'x': 1})
    assert r.status == 401 and r.header('WWW-Authenticate').startswith('Bearer'), r
    for wrong in ('wrong', token[:-1], token + 'x', ''):
        assert publish(b.port, 'secure', {'x': 1}, token=wrong).status == 401, wrong
    assert publish(b.port, 'secure', {'x': 1}, token=token).status == 201
    # Reading stays open; the token never shows anywhere.
    assert b.get('/api/v1/topics/secure/events').status == 200
    assert token not in b.log()

    # Refused at its headers: the 401 comes before any of the body is
    # sent, and the connection closes rather than read it.
    for auth in (b'', b'Authorization: Bearer wrong\r\n'):
        with socket.create_connection(('127.0.0.1', b.port), timeout=5) as s:
            s.sendall(b'POST /api/v1/topics/secure/events HTTP/1.1\r\nHost: t\r\n' + auth +
                      b'Content-Type: application/json\r\nContent-Length: 65536\r\n\r\n')
            answer = harness.read_until_closed(s)
        assert answer.startswith(b'HTTP/1.1 401 ') and b'"error":"unauthorized"' in answer, answer


@test
def replay_and_live_meet_without_gap_or_duplicate(ctx):
    pg, b = one_instance(ctx)
    topic = 'seam'
    results = []
    for i in range(20):
        publish(b.port, topic, {'warmup': i})
    live = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream')
    # Live: it gets what is published once its 200 is out, not before.
    assert live.wait_open(), live.all()
    t = threading.Thread(target=publisher, args=(b.port, topic, 300, results))
    t.start()
    subscribers = []
    # Join while events flow, resuming from various points of the past: at
    # most the newest stored id less one, so that every subscriber has at
    # least id 320 still to get (one that joined after the publisher
    # finished and asked for "after 320" rightly got nothing, and waited
    # for 320 in vain). The same offsets each run.
    rng = random.Random(320)
    for _ in range(8):
        time.sleep(rng.uniform(0.05, 0.3))
        have = len(results) + 20
        after = rng.randint(0, have - 1)
        subscribers.append((after, ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream',
                                                 last_event_id=after)))
    t.join()
    assert all(status == 201 for status, _ in results), results[:5]
    for after, sub in subscribers:
        sub.wait_for_id(320)
        time.sleep(0.2)
        assert_exactly_once(sub.ids(), after + 1, 320, f'subscriber after {after}')
    live.wait_for_id(320)
    time.sleep(0.2)
    assert_exactly_once(live.ids(), 21, 320, 'live subscriber')


def two_publishers_two_instances(ctx, nats):
    pg, n, a, b = two_instances(ctx, nats)
    topic = 'shared'
    subs = [ctx.subscribe(x.port, f'/api/v1/topics/{topic}/stream', last_event_id=0)
            for x in (a, b, a, b)]
    for sub in subs:
        assert sub.wait_open(), sub.all()
    ra, rb = [], []
    ta = threading.Thread(target=publisher, args=(a.port, topic, 150, ra))
    tb = threading.Thread(target=publisher, args=(b.port, topic, 150, rb))
    ta.start()
    tb.start()
    ta.join()
    tb.join()
    assert all(s == 201 for s, _ in ra + rb)
    assert sorted(i for _, i in ra + rb) == list(range(1, 301)), 'ids are not 1..300'
    for i, sub in enumerate(subs):
        sub.wait_for_id(300)
        time.sleep(0.2)
        assert_exactly_once(sub.ids(), 1, 300, f'subscriber {i}')
    # Same bytes everywhere: what blue delivered, green delivered.
    assert subs[0].all() == subs[1].all()


@test
def two_instances_publishing_at_once_through_nats(ctx):
    two_publishers_two_instances(ctx, nats=True)


@test
def two_instances_publishing_at_once_through_postgres_notify(ctx):
    two_publishers_two_instances(ctx, nats=False)


@test
def reconnecting_to_the_other_instance_continues_seamlessly(ctx):
    pg, n, a, b = two_instances(ctx, nats=True)
    topic = 'move'
    results = []
    t = threading.Thread(target=publisher, args=(a.port, topic, 200, results, 0.005))
    t.start()
    first = ctx.subscribe(a.port, f'/api/v1/topics/{topic}/stream', last_event_id=0)
    wait_until(lambda: len(first.ids()) >= 50, 30, what='50 events on blue')
    first.close()
    # Until its reader thread is gone it may still take in events that were
    # on the way: read after `last`, they would look like duplicates.
    first.thread.join(5)
    assert not first.thread.is_alive(), 'the reader of the closed stream is still running'
    last = first.ids()[-1]
    second = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream', last_event_id=last)
    t.join()
    if last < 200:      # (a slow start can have had them all on blue)
        second.wait_for_id(200)
    time.sleep(0.2)
    assert_exactly_once(first.ids() + second.ids(), 1, 200, 'client that moved')


@test
def a_burst_cuts_no_subscriber_that_keeps_up(ctx):
    """Sixteen publishers post 40 events of 16 KB each to one topic at once:
    640 events, 10 MB, in batches of many events a commit. Three subscribers
    reading as fast as they can get every event, in order, and none is cut
    (a batch lands in a stream at once, past its 256 KiB buffer, and drains
    in a moment). It used to cut every one of them after a few events."""
    pg, b = one_instance(ctx)
    topic = 'burst'
    subs = [ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream') for _ in range(3)]
    for sub in subs:
        assert sub.wait_open(), sub.all()
    pad = 'x' * 16000
    results = []

    def post(k):
        for i in range(40):
            r = publish(b.port, topic, {'k': k, 'i': i, 'pad': pad})
            results.append(r.status)
    threads = [threading.Thread(target=post, args=(k,)) for k in range(16)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(201) == 640, collections.Counter(results)
    for sub in subs:
        sub.wait_for_id(640, timeout=20)
    took = time.monotonic() - started
    time.sleep(0.2)
    for sub in subs:
        assert_exactly_once(sub.ids(), 1, 640, 'a fast subscriber')
        assert not any(e[1] == 'reconnect' for e in sub.all())
    cut = metric(b.port, 'baton_stream_subscribers_cut_total')
    assert cut == 0, cut
    print(f'# 640 events of 16 KB from 16 publishers at once: 3 subscribers had all of them in '
          f'order {took:.1f} s after the first publish; 0 cut', flush=True)


@test
def a_subscriber_that_stays_behind_is_cut_and_resumes_without_loss(ctx):
    """Slow means staying behind over time: a subscriber that reads nothing
    while 300 events of 4 KB arrive is over its buffer from the start, and
    is cut STREAM_SLOW_TIMEOUT later, with its backlog dropped and a
    reconnect event; it resumes from its last id and loses nothing. The
    fast one beside it is not delayed."""
    pg, b = one_instance(ctx, STREAM_SLOW_TIMEOUT='2s')
    topic = 'firehose'
    # Both live (no Last-Event-ID). A replaying subscriber is paced from
    # PostgreSQL instead and never needs cutting.
    fast = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream')
    slow = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream', rcvbuf=4096, read=False)
    # Both open, so both get every event from the first on.
    assert fast.wait_open(), fast.all()
    wait_streams(b.port, 2)
    payload = 'x' * 4000
    results, timing = [], {}

    def firehose():
        for i in range(300):
            results.append(publish(b.port, topic, {'i': i, 'pad': payload}).status)
        timing['published'] = time.monotonic() - started
        fast.wait_for_id(300, timeout=30)
        timing['fast'] = time.monotonic() - started

    def cut_count():
        return metric(b.port, 'baton_stream_subscribers_cut_total')
    t = threading.Thread(target=firehose)
    started = time.monotonic()
    t.start()
    # Over its buffer after some 64 events, it is cut 2 to 3 s later, while
    # the events may still be coming, and its connection is shut 2 to 3 s
    # after the cut (on_slow_check() in src/sse-stream.c): it reads from the
    # moment the cut shows, or its reconnect event may be lost with it.
    wait_until(lambda: cut_count() == 1, 30, what='the slow subscriber to be cut')
    cut_after = time.monotonic() - started
    slow.start_reading()
    # Not before it was behind for 2 s: it can be behind only from the first
    # publish on, after `started`.
    assert cut_after >= 2, f'cut {cut_after:.2f} s after the first publish'
    slow.wait_ended()
    events = slow.all()
    assert events[-1][1] == 'reconnect' and 'too slow' in events[-1][2], events[-1]
    got = slow.ids()
    assert 0 < len(got) < 300, len(got)
    t.join(60)
    assert not t.is_alive(), 'the publishes did not end'
    assert results.count(201) == 300, collections.Counter(results)
    resumed = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream', last_event_id=got[-1])
    resumed.wait_for_id(300)
    time.sleep(0.2)
    assert_exactly_once(got + resumed.ids(), 1, 300, 'slow client after resuming')
    fast.wait_for_id(300)
    assert_exactly_once(fast.ids(), 1, 300, 'fast client')
    print(f"# fast subscriber had all 300 events {timing.get('fast', float('nan')):.2f}s after the "
          f"first publish (the last 201 came at {timing['published']:.2f}s); the slow one was cut "
          f"{cut_after:.1f} s in (STREAM_SLOW_TIMEOUT=2s) after {len(got)}, and resumed", flush=True)


@test
def a_subscriber_that_reads_nothing_at_all_is_disconnected(ctx):
    """Cut, it does not even read its reconnect event: its connection is
    shut STREAM_SLOW_TIMEOUT after the cut, so its memory is given back."""
    pg, b = one_instance(ctx, STREAM_SLOW_TIMEOUT='1s')
    topic = 'deaf'
    deaf = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream', rcvbuf=4096, read=False)
    # It reads nothing, its 200 neither: batond counts it open.
    wait_streams(b.port, 1)
    for i in range(200):
        assert publish(b.port, topic, {'i': i, 'pad': 'x' * 4000}).status == 201

    def streams():
        return metric(b.port, 'baton_streams_active')
    wait_until(lambda: streams() == 0, 10, what='the deaf stream to be shut')


@test
def many_streams_catching_up_at_once_each_get_everything_in_order(ctx):
    """70 streams resume from Last-Event-ID 0 at once on 600 stored events
    of 2 KB (two replay pages each): more than the 32 replays that may hold
    a page at once, so some wait their turn; the pages spread over the
    replay connections. Every stream gets every event once, in order, and
    then the live ones."""
    pg, b = one_instance(ctx)
    topic = 'catch-up'
    n = 600
    store_events(pg, topic, n, pad=2000)
    started = time.monotonic()
    subs = [ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream', last_event_id=0) for _ in range(70)]
    for sub in subs:
        sub.wait_for_id(n, timeout=60)
    took = time.monotonic() - started
    replays = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'batond%/replay%'")
    assert publish(b.port, topic, {'live': True}).status == 201
    for sub in subs:
        sub.wait_for_id(n + 1)
        assert_exactly_once(sub.ids(), 1, n + 1)
    assert replays == '2', replays
    print(f'# 70 streams caught up on {n} x 2 KB in {took:.1f} s over 2 replay connections, then live',
          flush=True)


@test
def streams_resuming_from_different_ids_share_pages_and_each_get_theirs(ctx):
    """120 streams resume from ids 0, 5, 10, ... 595 of 600 stored events
    while PostgreSQL is frozen for a moment, so that 32 replays have a
    query in flight and the others wait their turn (as at a deploy's drain
    timeout). Those waiting take what a page read for another holds after
    their own id: one query serves many. Each gets exactly the ids after
    its own, in order, then the live ones."""
    pg, b = one_instance(ctx, HEALTH_CHECK_INTERVAL='60s')
    topic = 'resume-spread'
    n, streams = 600, 120
    store_events(pg, topic, n, pad=2000)
    live = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream')
    # Its 200 goes out once the channel knows its position (a subscriber
    # is counted before that, while the position query is still out).
    assert live.wait_open(), live.all()
    pg.freeze()
    try:
        subs = [ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream', last_event_id=5 * i)
                for i in range(streams)]
        # The channel knows its position: each opens at once, its replay
        # then waits for the frozen server.
        wait_streams(b.port, streams + 1)
    finally:
        pg.thaw()
    for sub in subs:
        sub.wait_for_id(n, timeout=60)
    assert publish(b.port, topic, {'live': True}).status == 201
    live.wait_for_id(n + 1)
    assert live.ids() == [n + 1], live.ids()
    for i, sub in enumerate(subs):
        sub.wait_for_id(n + 1)
        assert_exactly_once(sub.ids(), 5 * i + 1, n + 1, who=f'the stream from {5 * i}')
    print(f'# {streams} streams from {streams} different ids caught up, each exactly from its own, '
          f'then live', flush=True)


@test
def streams_catching_up_on_what_another_read_cost_postgresql_no_read(ctx):
    """One stream catches up on 2,000 stored events of 500 B; 30 more then
    resume from ids spread over the same stretch. The pages the first one
    read are still in the replay cache (16 pages): the others are served
    from memory, with no read of PostgreSQL at all, and each still gets
    exactly the ids after its own, in order, then the live ones."""
    pg, b = one_instance(ctx)
    topic = 'cached'
    n = 2000
    store_events(pg, topic, n, pad=500)
    first = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream', last_event_id=0)
    first.wait_for_id(n, timeout=30)
    read = metric(b.port, 'baton_stream_replay_pages_read_total')
    cached = metric(b.port, 'baton_stream_replay_pages_cached_total')
    assert read >= 2, read
    starts = [i * 67 for i in range(30)]
    subs = [ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream', last_event_id=k) for k in starts]
    for k, sub in zip(starts, subs):
        sub.wait_for_id(n, timeout=30)
    assert metric(b.port, 'baton_stream_replay_pages_read_total') == read
    assert metric(b.port, 'baton_stream_replay_pages_cached_total') >= cached + len(subs)
    assert 0 < metric(b.port, 'baton_stream_replay_cache_bytes') <= 16 * 1024 * 1024
    assert publish(b.port, topic, {'live': True}).status == 201
    for k, sub in zip(starts, subs):
        sub.wait_for_id(n + 1)
        assert_exactly_once(sub.ids(), k + 1, n + 1, f'the stream from {k}')


@test
def a_hole_in_the_ids_is_skipped_after_a_wait_not_spun_on(ctx):
    """An event deleted by hand leaves a hole: the fan-out reads the range
    (here because the other "instance", psql, announces its events on
    LISTEN/NOTIFY), misses the id, waits, reads once more and then delivers
    on from the next one, with a warning. It used to re-read at once, for
    ever, and deliver nothing more on that topic."""
    pg, b = one_instance(ctx)
    topic = 'holes'
    for i in range(3):
        assert publish(b.port, topic, {'n': i}).status == 201
    sub = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream')
    assert sub.wait_open(), sub.all()
    before = int(pg.psql("SELECT xact_commit FROM pg_stat_database WHERE datname = 'baton'"))
    # Before the hole is made: the fan-out sees it (and starts its HOLE_WAIT
    # of 2 s, src/event-order.c) only once it is committed, so event 5
    # cannot come sooner than 2 s from here.
    started = time.monotonic()
    # Ids 4 and 5 are taken, only 5 is stored, and 4..5 announced.
    pg.psql("BEGIN; UPDATE topics SET last_id = 5 WHERE name = 'holes';"
            "INSERT INTO events (topic, id, payload) VALUES ('holes', 5, '{\"n\":5}');"
            "SELECT pg_notify('baton_events', 'holes 4 5'); COMMIT;")
    sub.wait_for_id(5, timeout=10)
    took = time.monotonic() - started
    queries = int(pg.psql("SELECT xact_commit FROM pg_stat_database WHERE datname = 'baton'")) - before
    assert sub.ids() == [5], sub.ids()
    # The 2 s wait, one more read and the delivery: the rest of 6 s is slack for a loaded machine.
    assert 2 <= took < 6, took
    # Health checks run every 300 ms here; a spinning fan-out makes thousands.
    assert queries < 60, queries
    assert 'holes: events 4 to 4 are not in the database' in b.log(), b.log()[-2000:]
    # And on it goes, in order.
    assert publish(b.port, topic, {'n': 6}).status == 201
    sub.wait_for_id(6)
    assert sub.ids() == [5, 6], sub.ids()
    print(f'# event 4 deleted: event 5 delivered {took:.1f} s later, after {queries} database '
          f'transactions in all (health checks included)', flush=True)


@test
def a_slow_read_fails_alone_and_its_connection_keeps_serving(ctx):
    """Two history reads wait on one connection while the events table is
    locked; DATABASE_QUERY_TIMEOUT is 2 s. The server cancels the first at
    2 s (503); the second then runs, and is answered 200 when the lock
    goes. The connection was reset on the first timeout before, which
    failed everything queued on it."""
    pg, b = one_instance(ctx, DATABASE_QUERY_TIMEOUT='2s')
    assert publish(b.port, 'slow', {'n': 1}).status == 201
    # Held in an open transaction until the test commits it, not for a
    # fixed time that a slow machine could use up before the reads came.
    lock = pg.session()
    answers = {}

    def history(name):
        started = time.monotonic()
        r = b.get('/api/v1/topics/slow/events', timeout=15)
        answers[name] = (r.status, time.monotonic() - started, r.body)
    first = threading.Thread(target=history, args=('first',))
    second = threading.Thread(target=history, args=('second',))
    try:
        lock.stdin.write('BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE;\n')
        lock.stdin.flush()
        wait_until(lambda: pg.psql("SELECT count(*) FROM pg_locks WHERE relation = 'events'::regclass "
                                   "AND mode = 'AccessExclusiveLock' AND granted") == '1', 10,
                   what='the lock')
        first.start()
        # The first read runs on the read connection, waiting for the lock
        # (its 2 s run from here)...
        wait_until(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                   "'batond/read' AND wait_event_type = 'Lock'") == '1', 10,
                   what='the first read to wait for the lock')
        second.start()
        # ... and the second is queued behind it: in flight are the two and
        # this scrape. (On a machine so slow that the first timed out before
        # the second came, the second still waits for the lock, alone.)
        wait_until(lambda: 'first' in answers or metric(b.port, 'baton_http_requests_in_flight') == 3, 10,
                   what='the second read to be in flight')
        queued = 'first' not in answers
        first.join(15)
        assert not first.is_alive(), 'the first read got no answer'
    finally:
        # The first answered (or the test failed): the second now runs on the
        # same connection, and gets the table as soon as the lock goes.
        lock.stdin.write('COMMIT;\n')
        lock.stdin.close()
        lock.wait(10)
    second.join(15)
    assert not second.is_alive(), 'the second read got no answer'
    assert answers['first'][0] == 503 and '(query_timeout)' in answers['first'][2], answers
    assert answers['second'][0] == 200 and json.loads(answers['second'][2])['events'], answers
    assert 'Lost the PostgreSQL connection (batond/read)' not in b.log(), b.log()[-2000:]
    print(f"# the locked read was cancelled after {answers['first'][1]:.1f} s (503), the one "
          f"{'queued behind it' if queued else 'after it'} answered 200 after "
          f"{answers['second'][1]:.1f} s, the connection kept", flush=True)


@test
def events_published_while_nats_is_down_reach_the_other_instance(ctx):
    pg, n, a, b = two_instances(ctx, nats=True)
    topic = 'outage'
    sub = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream', last_event_id=0)
    for i in range(10):
        assert publish(a.port, topic, {'i': i}).status == 201
    sub.wait_for_id(10)
    n.stop()
    for i in range(10):
        assert publish(a.port, topic, {'i': i}).status == 201
    # Not through NATS: green reads them from PostgreSQL (resync).
    sub.wait_for_id(20, timeout=10)
    n.start()
    wait_until(lambda: a.get('/_/health/ready').status == 200 and
               b.get('/_/health/ready').status == 200, 20, what='both ready again')
    for i in range(10):
        assert publish(a.port, topic, {'i': i}).status == 201
    sub.wait_for_id(30)
    time.sleep(0.3)
    assert_exactly_once(sub.ids(), 1, 30)
    assert not sub.ended


@test
def an_event_over_the_nats_limit_reaches_the_other_instance_at_once(ctx):
    """nats-server takes at most 4 KiB a message here: events of 20 and 30 KB go
    on the bus as hints, and the other instance reads them from PostgreSQL
    at once (its periodic resync is an hour away), in order with the small
    events around it."""
    pg = ctx.postgres()
    n = ctx.nats(max_payload=4096)
    env = {'DATABASE_URL': pg.url(), 'NATS__ENABLED': 'true', 'NATS__URL': n.url,
           'STREAM_RESYNC_INTERVAL': '1h', 'STREAM_HEARTBEAT_INTERVAL': '1s'}
    a = ctx.batond({**env, 'DEPLOYMENT_COLOR': 'blue'}, name='blue').start()
    b = ctx.batond({**env, 'DEPLOYMENT_COLOR': 'green'}, name='green').start()
    a.wait_ready()
    b.wait_ready()
    topic = 'large'
    sub = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream')
    assert sub.wait_open(), sub.all()
    # The last one large too: no later event reveals it as a gap.
    sizes = [10, 20000, 10, 30000]
    for i, size in enumerate(sizes):
        assert publish(a.port, topic, {'i': i, 'pad': 'x' * size}).status == 201
    sent = time.monotonic()
    sub.wait_for_id(len(sizes), timeout=5)
    took = time.monotonic() - sent
    assert_exactly_once(sub.ids(), 1, len(sizes))
    assert [len(json.loads(data)['data']['pad']) for _, kind, data in sub.all() if kind == 'message'] == sizes
    metrics = a.get('/metrics').body
    assert re.search(r'^baton_bus_events_hinted_total 2$', metrics, re.M), \
        re.findall(r'^baton_bus.*$', metrics, re.M)
    assert 'max_payload' in a.log()
    print(f'# 2 of 4 events over max_payload 4096 went as hints; all 4 on the other instance, in order, '
          f'{took:.2f} s after the last 201 (resync: 1 h)', flush=True)


class StreamStart:
    """A stream request as an EventSource sends it (Accept:
    text/event-stream) or as a plain client does, whose whole answer is
    read strictly: status, headers, body, and the seconds until it ended."""

    def __init__(self, port, topic, event_source, timeout=10):
        accept = b'Accept: text/event-stream\r\n' if event_source else b''
        started = time.monotonic()
        with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
            s.sendall(f'GET /api/v1/topics/{topic}/stream HTTP/1.1\r\nHost: t\r\n'.encode() + accept +
                      b'\r\n')
            r = harness.StrictReader(s).response()
        self.took = time.monotonic() - started
        self.status, self.body = r.status, r.body.decode()
        self.headers = {k.lower(): v for k, v in r.headers}

    def __repr__(self):
        return f'<{self.status} after {self.took:.2f} s: {self.headers} {self.body[:300]!r}>'

    def unavailable(self):
        """The data of the "unavailable" event of an ended 200 stream."""
        assert self.status == 200 and self.headers['content-type'] == 'text/event-stream', self
        assert self.body.startswith('retry: 2000\n\n') and '\nevent: unavailable\ndata: {' in '\n' + self.body, self
        return json.loads(self.body.split('data: ', 1)[1].split('\n', 1)[0])


@test
def a_stream_that_cannot_start_is_answered_at_once_as_a_browser_can_retry(ctx):
    """A browser's EventSource gives up for good on any status but 200, and
    retries after a 200 ends. A stream that cannot start (not ready yet,
    the database down) is answered within seconds: an ended 200 event
    stream with a retry hint and an "unavailable" event for an EventSource,
    a 503 for other clients; and it starts once the cause is gone."""
    pg = ctx.postgres()
    pg.stop()
    b = ctx.batond({'DATABASE_URL': pg.url(), **FAST}).start()
    b.notify.wait_for(r'STATUS=Starting: waiting for PostgreSQL', 10)
    # Not ready yet: held for readiness 5 s, then answered. The upper
    # bounds here are each deadline plus 2 s: a timer's answer on a loaded
    # machine under ASan, not a hang (which is what they catch).
    not_ready = StreamStart(b.port, 'browser', event_source=True)
    assert not_ready.unavailable()['error'] == 'not_ready' and 4.5 < not_ready.took < 7.5, not_ready
    plain = StreamStart(b.port, 'browser', event_source=False)
    assert plain.status == 503 and json.loads(plain.body)['error'] == 'not_ready', plain
    pg.start()
    b.wait_ready(20)

    pg.kill()
    down = StreamStart(b.port, 'browser', event_source=True)
    data = down.unavailable()
    assert data['error'] == 'unavailable' and down.took < 5, down
    plain = StreamStart(b.port, 'browser', event_source=False)
    assert plain.status == 503 and plain.headers['retry-after'] == '1' and plain.took < 5, plain
    # Counted as what it is: a stream that did not start.
    metrics = b.get('/metrics').body
    assert re.search(r'^baton_http_requests_total\{route="events_stream",method="GET",status="5xx"\} [1-9]',
                     metrics, re.M), re.findall(r'^baton_http_requests_total\{route="events_stream".*$', metrics, re.M)

    pg.start()
    wait_until(lambda: b.get('/_/health/ready').status == 200, 20, what='ready again')
    # Frozen, the server answers nothing: a new topic's stream (whose start
    # needs a query) is answered when its start deadline passes.
    pg.freeze()
    frozen = StreamStart(b.port, 'browser-frozen', event_source=True)
    pg.thaw()
    assert frozen.unavailable()['error'] == 'unavailable' and 2.5 < frozen.took < 5, frozen

    def live_stream():
        """A stream that started for real (as an EventSource retrying would)."""
        sub = ctx.subscribe(b.port, '/api/v1/topics/browser/stream', last_event_id=0)
        # Either answer may take a while (a refusal comes at the start
        # deadline, 3 s): one that started counts as an open stream, one
        # refused (a 200 too, with "unavailable") ends and never counts.
        try:
            wait_until(lambda: sub.ended or metric(b.port, 'baton_streams_active') == 1, 10,
                       what='the stream to start or be refused')
        except AssertionError:
            sub.close()
            raise
        if sub.ended or sub.ids('unavailable'):
            sub.close()
            return None
        return sub
    sub = wait_until(live_stream, 20, interval=0.3, what='a stream to start once the database is back')
    # Each connection comes back on its own: publishing may follow a little later.
    wait_until(lambda: publish(b.port, 'browser', {'back': True}).status == 201, 20, interval=0.2,
               what='publishing to work again')
    sub.wait_for_id(1)
    print(f"# not ready: 200 + unavailable after {not_ready.took:.1f} s (held for readiness); database down: after "
          f"{down.took * 1000:.0f} ms ({data['message']}); frozen: after {frozen.took:.2f} s; "
          f"plain clients: 503", flush=True)


@test
def database_outage_keeps_streams_and_never_lies_about_publishes(ctx):
    pg, b = one_instance(ctx)
    topic = 'db-outage'
    sub = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream', last_event_id=0)
    for i in range(5):
        assert publish(b.port, topic, {'i': i}).status == 201
    sub.wait_for_id(5)
    pg.kill()
    r = publish(b.port, topic, {'i': 'lost?'})
    assert r.status == 503 and r.json()['error'] == 'unavailable', r
    assert 'database unavailable' in r.json()['message']
    time.sleep(2)
    assert not sub.ended, 'the stream was dropped during the outage'
    pg.start()
    wait_until(lambda: publish(b.port, topic, {'i': 'back'}).status == 201, 20,
               what='publishing to work again')
    sub.wait_for_id(6)
    time.sleep(0.3)
    assert_exactly_once(sub.ids(), 1, 6)
    # Reads have their own connection, which may come back a little after
    # the publishing one (until then they are answered 503, as they should).
    history = wait_until(lambda: (lambda r: r.status == 200 and r)(
        b.get(f'/api/v1/topics/{topic}/events')), 20, what='reading history to work again')
    stored = [e['id'] for e in history.json()['events']]
    assert stored == [1, 2, 3, 4, 5, 6], 'an event answered 503 was stored anyway'


@test
def streams_end_with_reconnect_on_sigint(ctx):
    pg, b = one_instance(ctx)
    sub = ctx.subscribe(b.port, '/api/v1/topics/bye/stream')
    assert sub.wait_open(), sub.all()
    assert publish(b.port, 'bye', {'x': 1}).status == 201
    sub.wait_for_id(1)
    import signal
    b.signal(signal.SIGINT)
    sub.wait_ended(5)
    assert sub.all()[-1][1] == 'reconnect', sub.all()
    assert b.wait_exit(5) == 0


if __name__ == '__main__':
    run()
