#!/usr/bin/env python3
"""NATS enabled: no READY without it, readiness follows it, recovery needs
no restart."""

import hashlib
import hmac
import json
import re
import threading
import time

from tests.harness import MIGRATIONS, free_ports, http_get, publish, run, test, wait_until
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


def cluster(ctx, n=3):
    """n nats-server nodes routed to one another, once every route is up.
    Every node's ports are chosen at once: a port picked for one node's
    routes and not yet listened on must not be handed to another node."""
    ports = free_ports(3 * n)
    cluster_ports = ports[:n]
    nodes = [ctx.nats(cluster_port=cluster_ports[i], port=ports[n + i], monitor_port=ports[2 * n + i],
                      routes=[p for j, p in enumerate(cluster_ports) if j != i])
             for i in range(n)]
    wait_until(lambda: all(node.monitor('routez').get('num_routes', 0) >= n - 1 for node in nodes), 15,
               what='the cluster to form')
    return nodes


def connected_to(nodes, client):
    found = [node for node in nodes if node.proc and any(name == client for name in node.client_names())]
    return found[0] if len(found) == 1 else None


@test
def a_list_of_urls_connects_and_a_dead_node_is_left_for_another(ctx):
    """Three nodes. Blue lists two of them (NATS__URL with a blank after
    the comma), green the third. Under publishing on blue, the node blue
    is connected to is killed: blue goes on through another node within a
    few seconds, ready all along (a failover is not an outage), and
    green's stream gets every event once, in order. With every node gone, ready says
    NATS; one node back, and both recover by themselves."""
    nodes = cluster(ctx)
    pg = ctx.postgres()
    common = {**env(pg, nodes[0]), 'NATS__SIGNING_KEY': KEY, 'STREAM_RESYNC_INTERVAL': '1s',
              'HEALTH_CHECK_INTERVAL': '500ms'}
    blue = ctx.batond({**common, 'NATS__URL': f'{nodes[0].url}, {nodes[1].url}', 'DEPLOYMENT_COLOR': 'blue'},
                      name='blue').start()
    green = ctx.batond({**common, 'NATS__URL': nodes[2].url, 'DEPLOYMENT_COLOR': 'green'}, name='green').start()
    blue.wait_ready(15)
    green.wait_ready(15)
    sub = ctx.subscribe(green.port, '/api/v1/topics/failover/stream')
    wait_until(lambda: sub.status == 200, 5, what='the stream to open')

    answers = []

    def publisher():
        for i in range(150):
            answers.append(publish(blue.port, 'failover', {'i': i}).status)
            time.sleep(0.02)
    t = threading.Thread(target=publisher)
    t.start()
    wait_until(lambda: len(answers) >= 30, 10, what='publishing to be under way')
    node = wait_until(lambda: connected_to(nodes, 'batond-blue'), 5, what="blue's node")
    readiness = []
    sampling = threading.Event()

    def sampler():
        while not sampling.is_set():
            readiness.append(blue.get('/_/health/ready').status)
            time.sleep(0.05)
    s = threading.Thread(target=sampler)
    s.start()
    killed = time.monotonic()
    node.stop()
    wait_until(lambda: blue.log().count('Connected to NATS at') >= 2, 15, what='blue to reconnect')
    failover = time.monotonic() - killed
    again = wait_until(lambda: connected_to(nodes, 'batond-blue'), 5, what="blue's new node")
    assert again is not node
    t.join()
    time.sleep(1)           # two health rounds past the failover
    sampling.set()
    s.join()
    assert readiness and set(readiness) == {200}, readiness
    assert answers == [201] * 150, answers
    sub.wait_for_id(150, timeout=20)
    time.sleep(0.5)
    assert sub.ids() == list(range(1, 151)), sub.ids()
    assert blue.get('/_/health/ready').status == 200

    for n in nodes:
        n.stop()
    down = wait_until(lambda: (r := blue.get('/_/health/ready')).status == 503 and r, 15,
                      what='ready to turn red with no node left')
    assert down.json()['checks']['nats']['status'] == 'DOWN', down.json()
    nodes[2].start()
    wait_until(lambda: blue.get('/_/health/ready').status == 200 and green.get('/_/health/ready').status == 200,
               30, what='both to recover through the node that came back')
    print(f'# blue moved to another node {failover:.1f} s after its node was killed, ready in all '
          f'{len(readiness)} samples; 150 publishes, all 201; '
          f'green streamed 1..150 exactly once; no node: ready 503 (NATS), one back: 200', flush=True)


@test
def the_cluster_s_other_nodes_are_learned_from_the_server(ctx):
    """NATS__URL names one node of three. The servers tell the client the
    others (INFO connect_urls), so when that node dies the instance goes
    on through one it was never told of, ready all along, and a stream on
    it misses nothing published meanwhile."""
    nodes = cluster(ctx)
    pg = ctx.postgres()
    b = ctx.batond({**env(pg, nodes[0]), 'NATS__SIGNING_KEY': KEY, 'STREAM_RESYNC_INTERVAL': '1s',
                    'HEALTH_CHECK_INTERVAL': '500ms', 'DEPLOYMENT_COLOR': 'blue'}, name='blue').start()
    b.wait_ready(15)
    assert connected_to(nodes, 'batond-blue') is nodes[0]
    sub = ctx.subscribe(b.port, '/api/v1/topics/learned/stream')
    wait_until(lambda: sub.status == 200, 5, what='the stream to open')
    readiness = []
    nodes[0].stop()
    for i in range(60):
        readiness.append(b.get('/_/health/ready').status)
        assert publish(b.port, 'learned', {'i': i}).status == 201
        time.sleep(0.05)
    other = wait_until(lambda: connected_to(nodes, 'batond-blue'), 10, what='another node')
    assert other in (nodes[1], nodes[2]), other
    sub.wait_for_id(60, timeout=20)
    assert sub.ids() == list(range(1, 61)), sub.ids()
    assert set(readiness) == {200}, readiness
    print(f'# told of node 1 only; after it died, on node {nodes.index(other) + 1}; ready in all '
          f'{len(readiness)} samples; stream 1..60 exactly once', flush=True)


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
