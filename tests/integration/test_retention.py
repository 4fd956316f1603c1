#!/usr/bin/env python3
"""Retention: events past EVENT_RETENTION_MAX_AGE or beyond
EVENT_RETENTION_MAX_EVENTS (per topic, with EVENT_RETENTION_TOPICS
overrides) are deleted in the background, oldest first, by one instance
at a time; a stream or a history read asking for deleted ids is told so
(event: reset / "reset"), never left with a silent gap or a hang."""

import json
import os
import re
import signal
import time

from tests.harness import http_get, publish, run, test, wait_until

PRUNE_LOCK_KEY = 7089075310400727400      # src/event-pruner.c
FAST = {'EVENT_RETENTION_INTERVAL': '1s', 'STREAM_RESYNC_INTERVAL': '500ms'}


def counter(port, name, **labels):
    selector = ','.join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf'^{re.escape(name)}{{{re.escape(selector)}}} (\S+)$' if labels else rf'^{re.escape(name)} (\S+)$'
    m = re.search(pattern, http_get(port, '/metrics').body, re.M)
    assert m, f'no {name} {labels} in /metrics'
    return float(m.group(1))


def stored(pg, topic):
    """(oldest id, count) of a topic's stored events."""
    row = pg.psql(f"SELECT coalesce(min(id), 0), count(*) FROM events WHERE topic = '{topic}'")
    oldest, n = row.split('|')
    return int(oldest), int(n)


def publish_n(port, topic, n):
    for i in range(n):
        r = publish(port, topic, {'i': i})
        assert r.status == 201, r


@test
def the_oldest_events_beyond_the_count_go_and_a_resumed_stream_is_told(ctx):
    pg = ctx.postgres()
    config = ctx.tmp.join('retention.conf')
    with open(config, 'w') as f:
        f.write('EVENT_RETENTION_MAX_EVENTS=100\n')
    b = ctx.batond({'DATABASE_URL': pg.url(), **FAST}, args=['--config', config]).start()
    b.wait_ready()
    publish_n(b.port, 'kept', 250)
    wait_until(lambda: stored(pg, 'kept') == (151, 100), 10, what='retention to keep the last 100 ids')
    # The counter follows each delete's commit a moment later (on_pruned(),
    # once batond has read the answer), and a round may have deleted some
    # while the rest were still being published: the rounds' deletes add up
    # to 150, once the last one's answer is read.
    wait_until(lambda: counter(b.port, 'baton_events_pruned_total') == 150, 10,
               what='baton_events_pruned_total to reach 150')
    # From here on the topic stays as it is (a reload raises the limit), so
    # that what follows sees ids 151.. whatever the rounds do.
    with open(config, 'w') as f:
        f.write('EVENT_RETENTION_MAX_EVENTS=1000\n')
    os.kill(b.pid, signal.SIGHUP)
    wait_until(lambda: 'Reloaded configuration' in b.log(), 5, what='the reload')

    # Resuming from a deleted id: "reset" first, then everything from the
    # oldest stored id, exactly once, in order; then live events.
    sub = ctx.subscribe(b.port, '/api/v1/topics/kept/stream', last_event_id=10)
    sub.wait_for_id(250)
    events = sub.all()
    assert events[0][1] == 'reset' and json.loads(events[0][2]) == {'oldest': 151, 'requested': 10}, events[:2]
    assert sub.ids() == list(range(151, 251)), sub.ids()[:5]
    assert publish(b.port, 'kept', {'live': True}).status == 201
    sub.wait_for_id(251)
    assert [e for _, e, _ in sub.all()].count('reset') == 1
    assert counter(b.port, 'baton_stream_resets_total') == 1

    # Not from a kept id, nor from one retention never reached.
    for after in (150, 200):
        s = ctx.subscribe(b.port, '/api/v1/topics/kept/stream', last_event_id=after)
        s.wait_for_id(251)
        assert 'reset' not in [e for _, e, _ in s.all()], (after, s.all()[:2])
        assert s.ids() == list(range(after + 1, 252))

    # History says so too.
    h = http_get(b.port, '/api/v1/topics/kept/events?after=10&limit=5').json()
    assert h['reset'] == {'oldest': 151, 'requested': 10}, h
    assert [e['id'] for e in h['events']] == [151, 152, 153, 154, 155]
    h = http_get(b.port, '/api/v1/topics/kept/events?after=150&limit=5').json()
    assert 'reset' not in h and h['events'][0]['id'] == 151, h


@test
def age_limits_and_per_topic_overrides(ctx):
    """The first pattern that matches decides; age counts from each event's
    commit; other topics keep the defaults."""
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), **FAST, 'EVENT_RETENTION_MAX_EVENTS': '100',
                    'EVENT_RETENTION_TOPICS': 'keep-*=forever/unlimited, short-*=1h/5, aged-*=1h/unlimited'}).start()
    b.wait_ready()
    for t in ('keep-a', 'short-a', 'other'):
        publish_n(b.port, t, 120)
    # 50 events two hours old, then 10 new ones.
    pg.psql("INSERT INTO topics (name, last_id) VALUES ('aged-a', 60);"
            "INSERT INTO events (topic, id, payload, created_at) SELECT 'aged-a', g, '{}',"
            " CASE WHEN g <= 50 THEN now() - interval '2 hours' ELSE now() END FROM generate_series(1, 60) g")
    wait_until(lambda: stored(pg, 'short-a') == (116, 5) and stored(pg, 'aged-a') == (51, 10)
               and stored(pg, 'other') == (21, 100), 10, what='the round to apply every policy')
    assert stored(pg, 'keep-a') == (1, 120)

    sub = ctx.subscribe(b.port, '/api/v1/topics/aged-a/stream', last_event_id=0)
    sub.wait_for_id(60)
    assert sub.all()[0][1] == 'reset' and json.loads(sub.all()[0][2]) == {'oldest': 51, 'requested': 0}


@test
def everything_deleted_is_a_reset_to_what_comes_next_never_a_hang(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), **FAST}).start()
    b.wait_ready()
    pg.psql("INSERT INTO topics (name, last_id) VALUES ('gone', 30);"
            "INSERT INTO events (topic, id, payload, created_at) SELECT 'gone', g, '{}',"
            " now() - interval '8 days' FROM generate_series(1, 30) g")
    wait_until(lambda: stored(pg, 'gone') == (0, 0), 10, what='the default 7 days to delete all 30')
    sub = ctx.subscribe(b.port, '/api/v1/topics/gone/stream', last_event_id=5)
    wait_until(lambda: sub.all(), 5, what='an answer to a stream resuming from a deleted id')
    assert sub.all()[0][1] == 'reset' and json.loads(sub.all()[0][2]) == {'oldest': 31, 'requested': 5}, sub.all()
    r = publish(b.port, 'gone', {'next': True})
    assert r.status == 201 and r.json()['id'] == 31
    sub.wait_for_id(31)
    h = http_get(b.port, '/api/v1/topics/gone/events?after=5').json()
    assert h['reset'] == {'oldest': 31, 'requested': 5} and [e['id'] for e in h['events']] == [31], h


@test
def one_instance_prunes_at_a_time_and_publishing_goes_on(ctx):
    """Two instances: each round runs on whichever takes the advisory lock;
    every event beyond the count is deleted once, and publishes during the
    rounds all succeed."""
    pg = ctx.postgres()
    env = {'DATABASE_URL': pg.url(), **FAST, 'EVENT_RETENTION_MAX_EVENTS': '50'}
    a = ctx.batond({**env, 'DEPLOYMENT_COLOR': 'blue'}, name='blue').start()
    b = ctx.batond({**env, 'DEPLOYMENT_COLOR': 'green'}, name='green').start()
    a.wait_ready()
    b.wait_ready()
    deadline = time.monotonic() + 4
    n = 0
    while time.monotonic() < deadline:
        for port in (a.port, b.port):
            assert publish(port, 'shared', {'n': n}).status == 201
            n += 1
    wait_until(lambda: stored(pg, 'shared') == (n - 49, 50), 10, what='the last 50 kept')
    # The counters follow the commit a moment later (batond reads the answer).
    wait_until(lambda: sum(counter(x.port, 'baton_events_pruned_total') for x in (a, b)) == n - 50, 10,
               what='the counters to say so')
    pruned = sum(counter(x.port, 'baton_events_pruned_total') for x in (a, b))

    # A round is counted done when its unlock is answered, after its last
    # delete: waited for, not read once (rounds go on every second).
    def rounds_done():
        return sum(counter(x.port, 'baton_retention_rounds_total', result='done') for x in (a, b))
    wait_until(lambda: rounds_done() >= 2, 10, what='two rounds done')
    done = rounds_done()
    elsewhere = sum(counter(x.port, 'baton_retention_rounds_total', result='elsewhere') for x in (a, b))

    # Someone else holds the lock (another instance mid-round): rounds are
    # skipped, nothing is deleted, and pruning resumes once it is free.
    holder = ctx.add(pg.session(), lambda p: p.kill())
    holder.stdin.write(f'SELECT pg_advisory_lock({PRUNE_LOCK_KEY});\n')
    holder.stdin.flush()
    wait_until(lambda: pg.psql(f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                               f"objid = {PRUNE_LOCK_KEY & 0xffffffff} AND granted") == '1', 5,
               what='the test to hold the lock')
    skipped = sum(counter(x.port, 'baton_retention_rounds_total', result='elsewhere') for x in (a, b))
    publish_n(a.port, 'shared', 20)
    wait_until(lambda: sum(counter(x.port, 'baton_retention_rounds_total', result='elsewhere')
                           for x in (a, b)) >= skipped + 2, 5, what='rounds to be skipped')
    assert stored(pg, 'shared')[1] == 70, 'pruned while another held the lock'
    # Its session ends, and the lock with it.
    holder.kill()
    holder.wait(5)
    wait_until(lambda: stored(pg, 'shared')[1] == 50, 10, what='pruning to resume')
    print(f'# {n} events published during the rounds, {pruned:.0f} pruned once; rounds done {done:.0f}, '
          f'skipped for the other instance {elsewhere:.0f}; with the lock held elsewhere, rounds were '
          f'skipped and nothing deleted', flush=True)


@test
def expired_idempotency_keys_are_deleted(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), **FAST, 'IDEMPOTENCY_TTL': '1m'}).start()
    b.wait_ready()
    for key in ('old-1', 'old-2', 'fresh'):
        r = http_get(b.port, '/api/v1/topics/k/events', method='POST', body='{}',
                     headers={'Content-Type': 'application/json', 'Idempotency-Key': key})
        assert r.status == 201, r
    pg.psql("UPDATE publish_keys SET created_at = now() - interval '2 minutes' WHERE key LIKE 'old-%'")
    wait_until(lambda: pg.psql('SELECT string_agg(key, \',\') FROM publish_keys') == 'fresh', 10,
               what='the expired keys to go')
    wait_until(lambda: counter(b.port, 'baton_idempotency_keys_expired_total') == 2, 10,
               what='the counter to say so')


if __name__ == '__main__':
    run()
