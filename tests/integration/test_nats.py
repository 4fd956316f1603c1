#!/usr/bin/env python3
"""NATS enabled: no READY without it, readiness follows it, recovery needs
no restart."""

import hashlib
import hmac
import json
import re
import time

from tests.harness import MIGRATIONS, http_get, publish, run, test, wait_until
from tests.harness.nats_client import NatsClient

KEY = 'k' * 16 + 'shared-by-the-fleet-0123'


def env(pg, nats):
    return {'DATABASE_URL': pg.url(), 'NATS__ENABLED': 'true', 'NATS__URL': nats.url,
            'HEALTH_CHECK_TIMEOUT': '1s'}


def signature(key, topic, data):
    mac = hmac.new(key.encode(), b'baton-bus-v1\n' + topic.encode() + b'\n' + data, hashlib.sha256)
    return 'v1=' + mac.hexdigest()


def received(port, kind):
    m = re.search(rf'^baton_bus_messages_received_total{{signature="{kind}"}} (\S+)$',
                  http_get(port, '/metrics').body, re.M)
    return float(m.group(1)) if m else 0.0


def forged(topic, id, data):
    return json.dumps({'id': id, 'topic': topic, 'ts': '2026-12-01T00:00:00.000000Z', 'data': data},
                      separators=(',', ':')).encode()


def bus_messages_only_hint_unless_signed(ctx, key):
    pg = ctx.postgres()
    nats = ctx.nats()
    extra = {'NATS__SIGNING_KEY': key} if key else {}
    a = ctx.batond({**env(pg, nats), **extra, 'STREAM_RESYNC_INTERVAL': '1h'}, name='a').start()
    b = ctx.batond({**env(pg, nats), **extra, 'STREAM_RESYNC_INTERVAL': '1h'}, name='b').start()
    a.wait_ready()
    b.wait_ready()
    topic = 'guarded'
    sub = ctx.subscribe(b.port, f'/api/v1/topics/{topic}/stream')
    wait_until(lambda: sub.status == 200, 5, what='the stream to open')
    spy = NatsClient(nats.port)
    spy.subscribe(f'baton.events.{topic}')
    spy.flush()

    assert publish(a.port, topic, {'real': 1}).status == 201
    subject, headers, payload = spy.next_message()
    if key:
        assert headers.get('Baton-Signature') == signature(key, topic, payload), headers
    else:
        assert 'Baton-Signature' not in headers, headers
    sub.wait_for_id(1)

    # Someone else on the bus: the next id with other content, unsigned,
    # badly signed, and an id far ahead. None is delivered, none shadows
    # the real event 2, and nothing is skipped.
    evil = NatsClient(nats.port)
    evil.publish(f'baton.events.{topic}', forged(topic, 2, {'forged': 'unsigned'}))
    evil.publish(f'baton.events.{topic}', forged(topic, 2, {'forged': 'bad signature'}),
                 headers={'Baton-Signature': 'v1=' + '0' * 64})
    evil.publish(f'baton.events.{topic}', forged(topic, 1000000, {'forged': 'far ahead'}))
    evil.flush()
    wait_until(lambda: received(b.port, 'none') + received(b.port, 'invalid') + received(b.port, 'unverifiable')
               >= 3 + (0 if key else 1), 5, what='b to take the messages in')
    time.sleep(0.3)
    assert sub.ids() == [1], f'a forged message was delivered: {sub.all()}'
    for i in (2, 3):
        assert publish(a.port, topic, {'real': i}).status == 201
    sub.wait_for_id(3)
    time.sleep(0.2)
    got = [(i, json.loads(d)['data']) for i, e, d in sub.all() if e == 'message']
    assert got == [(1, {'real': 1}), (2, {'real': 2}), (3, {'real': 3})], got
    if key:
        assert received(b.port, 'valid') >= 3 and received(b.port, 'invalid') == 1
        assert 'has a signature that does not verify' in b.log(), b.log()
    else:
        assert received(b.port, 'valid') == 0 and received(b.port, 'unverifiable') == 1
    spy.close()
    evil.close()
    return received(b.port, 'valid')


@test
def signed_bus_messages_are_delivered_and_forged_ones_are_not(ctx):
    """With NATS__SIGNING_KEY, events come over NATS signed (HMAC-SHA256):
    a valid signature is delivered as it came; a wrong one is dropped and
    counted; an unsigned message is only a hint, checked against
    PostgreSQL, so it neither injects an event nor shadows the real one."""
    bus_messages_only_hint_unless_signed(ctx, KEY)


@test
def without_a_signing_key_bus_messages_are_hints_checked_in_postgresql(ctx):
    """Without a key nothing on the bus is trusted: every message only says
    that ids exist; the events themselves are read from PostgreSQL. Remote
    delivery still works, and a forged id changes nothing."""
    bus_messages_only_hint_unless_signed(ctx, None)


@test
def no_ready_until_nats_is_up(ctx):
    pg = ctx.postgres()
    nats = ctx.nats()
    nats.stop()
    b = ctx.batond(env(pg, nats)).start()
    pid = b.pid
    b.notify.wait_for(r'STATUS=Starting: waiting for NATS', 10)
    # Migrations ran (PostgreSQL is up): only NATS holds READY back.
    assert pg.psql('SELECT count(*) FROM schema_migrations') == str(len(MIGRATIONS))
    ready = b.get('/_/health/ready')
    assert ready.status == 503 and 'waiting for NATS' in ready.json()['reason'], ready
    assert b.notify.find(r'^READY=1$') is None

    nats.start()
    b.wait_ready(20)
    assert b.pid == pid
    body = b.get('/_/health/ready').json()
    assert body['status'] == 'UP'
    assert body['checks']['nats']['status'] == 'UP', body
    assert body['checks']['database']['status'] == 'UP', body


@test
def nats_outage_turns_ready_red_and_back(ctx):
    pg = ctx.postgres()
    nats = ctx.nats()
    b = ctx.batond(env(pg, nats)).start()
    b.wait_ready()
    assert b.get('/_/health/ready').status == 200

    nats.stop()
    down = wait_until(lambda: (r := b.get('/_/health/ready')).status == 503 and r, 10,
                      what='ready to turn 503 without NATS')
    assert down.json()['checks']['nats']['status'] == 'DOWN', down.json()
    assert down.json()['checks']['database']['status'] == 'UP'
    assert b.get('/_/health/live').status == 200

    nats.start()
    wait_until(lambda: b.get('/_/health/ready').status == 200, 20, what='ready to recover')
    assert b.running()


@test
def nats_disabled_is_not_checked(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    b.wait_ready()
    body = b.get('/_/health/ready').json()
    assert 'nats' not in body['checks'], body
    summary = b.get('/_/health').json()
    assert summary['components'] == {'database': True, 'nats': False}, summary


if __name__ == '__main__':
    run()
