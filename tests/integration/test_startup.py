#!/usr/bin/env python3
"""Startup and readiness: READY=1 only after migrations and checks; a
database outage keeps batond (or turns it) not ready, and it recovers by
itself, without a restart."""

import re
import signal
import threading
import time

from tests.harness import MIGRATION_LOCK_KEY, MIGRATIONS, publish, run, test, wait_until


def tables(pg):
    return set(pg.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").split())


@test
def ready_waits_for_migrations(ctx):
    pg = ctx.postgres()
    # Hold the migration lock, as another instance applying migrations would.
    holder = ctx.add(pg.session(), lambda p: p.kill())
    holder.stdin.write(f'SELECT pg_advisory_lock({MIGRATION_LOCK_KEY});\n')
    holder.stdin.flush()
    wait_until(lambda: pg.psql(f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                               f"AND granted") == '1', 5, what='the test to hold the lock')

    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    b.notify.wait_for(r'STATUS=Starting: waiting to apply migrations: another instance', 10)
    time.sleep(1)
    assert b.notify.find(r'^READY=1$') is None, 'READY=1 sent while migrations could not run'
    assert 'schema_migrations' not in tables(pg) or \
        pg.psql('SELECT count(*) FROM schema_migrations') == '0'
    ready = b.get('/_/health/ready')
    assert ready.status == 503, ready
    assert 'migration' in ready.json()['reason'], ready.json()
    assert b.get('/_/health/startup').status == 503
    assert b.get('/_/health/live').status == 200
    # The API waits for readiness, 5 s at most, then says why not.
    started = time.monotonic()
    api = b.get('/api/v1/topics/x/events', timeout=10)
    took = time.monotonic() - started
    assert api.status == 503 and api.json()['error'] == 'not_ready', api
    assert 4.5 < took < 7, took
    # One that comes shortly before READY is served once it is.
    held = {}

    def held_request():
        t0 = time.monotonic()
        held['response'] = b.get('/api/v1/no-such-thing', timeout=10)
        held['took'] = time.monotonic() - t0
    t = threading.Thread(target=held_request)
    t.start()
    time.sleep(1)
    holder.stdin.write(f'SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY});\n')
    holder.stdin.flush()
    b.wait_ready(15)
    t.join(10)
    assert held['response'].status == 404 and 1 <= held['took'] < 4.5, held
    print(f'# held until ready: answered 404 after {held["took"]:.2f} s, not 503; past 5 s: 503 not_ready '
          f'after {took:.2f} s', flush=True)
    # By READY=1 the schema exists: READY never precedes the migrations.
    assert {'schema_migrations', 'topics', 'events'} <= tables(pg), tables(pg)
    applied = pg.psql('SELECT version, name FROM schema_migrations ORDER BY version').splitlines()
    assert applied == [f'{v}|{n}' for v, n in MIGRATIONS], applied
    assert b.get('/_/health/ready').status == 200
    assert b.get('/_/health/startup').status == 200
    assert b.get('/api/v1/no-such-thing').status == 404


@test
def database_down_at_start_then_up(ctx):
    pg = ctx.postgres()
    pg.stop()
    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    pid = b.pid
    b.notify.wait_for(r'STATUS=Starting: waiting for PostgreSQL: database_unreachable', 10)
    ready = b.get('/_/health/ready')
    assert ready.status == 503
    assert 'waiting for PostgreSQL' in ready.json()['reason'], ready.json()
    assert re.search(r'Cannot connect to PostgreSQL yet: .*(refused|failed)', b.log()), b.log()
    assert b.get('/_/health/live').status == 200
    assert b.notify.find(r'^READY=1$') is None

    pg.start()
    b.wait_ready(15)
    assert b.pid == pid and b.running(), 'recovered by restarting instead of by itself'
    assert b.get('/_/health/ready').status == 200


@test
def database_outage_after_ready_recovers(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    b.wait_ready()
    assert b.get('/_/health/ready').status == 200

    pg.kill()
    down = wait_until(lambda: (r := b.get('/_/health/ready')).status == 503 and r, 5,
                      what='ready to turn 503')
    body = down.json()
    assert body['status'] == 'DOWN'
    assert body['checks']['database']['status'] == 'DOWN'
    assert body['checks']['database']['error'], body
    assert b.get('/_/health/live').status == 200, 'liveness must not depend on PostgreSQL'
    b.notify.wait_for(r'STATUS=Not ready: .*; database check fails', 5)

    pg.start()
    wait_until(lambda: b.get('/_/health/ready').status == 200, 15, what='ready to recover')
    assert b.running()
    b.notify.wait_for(r'STATUS=Ready on', 5)


# libpq's words: they name hosts, ports, roles and databases.
LIBPQ_TEXT = re.compile(r'127\.0\.0\.1|refused|does not exist|no_such_db|FATAL|server closed|terminat', re.I)


def assert_no_libpq_text(where, body):
    found = LIBPQ_TEXT.search(body)
    assert not found, f'{where} shows libpq text ({found.group(0)!r}): {body}'


@test
def database_errors_reach_clients_as_a_word_and_the_journal_as_text(ctx):
    """Anyone who can reach the port reads the probes and the 503 bodies:
    they get the kind of failure (database_unreachable), never libpq's
    text, which names hosts, ports, roles and databases. That goes to the
    journal."""
    pg = ctx.postgres()
    wrong = ctx.batond({'DATABASE_URL': pg.url(db='no_such_db')}, name='wrong').start()
    wrong.notify.wait_for(r'STATUS=Starting: waiting for PostgreSQL: database_unreachable', 10)
    for path in ('/_/health/ready', '/_/health/startup', '/_/health', '/health/db'):
        assert_no_libpq_text(path + ' while starting', wrong.get(path).body)
    wait_until(lambda: 'database "no_such_db" does not exist' in wrong.log(), 5, what='the reason in the log')
    wrong.stop()

    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    b.wait_ready()
    assert publish(b.port, 'words', {'n': 1}).status == 201
    pg.kill()
    wait_until(lambda: b.get('/_/health/ready').status == 503, 5, what='ready to turn 503')
    r = publish(b.port, 'words', {'n': 2})
    assert r.status == 503 and '(database_unreachable)' in r.json()['message'], r
    assert_no_libpq_text('a publish', r.body)
    r = b.get('/api/v1/topics/words/events')
    assert r.status == 503 and '(database_unreachable)' in r.json()['message'], r
    assert_no_libpq_text('the history', r.body)
    for path in ('/_/health/ready', '/_/health', '/health/db'):
        r = b.get(path)
        assert_no_libpq_text(path, r.body)
    assert b.get('/health/db').json()['error'] == 'database_unreachable', b.get('/health/db').body
    assert re.search(r'Lost the PostgreSQL connection .*: .*(refused|terminat|closed)', b.log(), re.I), b.log()


@test
def hung_database_never_delays_probes(ctx):
    pg = ctx.postgres()
    # A long check timeout: a probe that waited for the check would show it.
    b = ctx.batond({'DATABASE_URL': pg.url(), 'HEALTH_CHECK_TIMEOUT': '3s'}).start()
    b.wait_ready()
    pids = pg.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'batond'").split()
    assert pids, 'batond has no PostgreSQL backend'
    import os
    for p in pids:
        os.kill(int(p), signal.SIGSTOP)
    try:
        worst = 0.0
        deadline = time.monotonic() + 6
        saw_down = False
        while time.monotonic() < deadline:
            t = time.monotonic()
            r = b.get('/_/health/ready', timeout=5)
            worst = max(worst, time.monotonic() - t)
            saw_down |= r.status == 503
            time.sleep(0.05)
        assert saw_down, 'a hung database did not turn ready red'
        assert worst < 1.0, f'a probe took {worst:.2f}s while the database hung (check timeout 3s)'
    finally:
        for p in pids:
            os.kill(int(p), signal.SIGCONT)
    # The timed-out check dropped that connection; a new one serves again.
    wait_until(lambda: b.get('/_/health/ready').status == 200, 10, what='recovery')


@test
def probe_flood_is_not_a_query_flood(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), 'HEALTH_CHECK_INTERVAL': '1s'}).start()
    b.wait_ready()

    def commits():
        return int(pg.psql("SELECT xact_commit FROM pg_stat_database WHERE datname = 'baton'"))

    import http.client
    conn = http.client.HTTPConnection('127.0.0.1', b.port, timeout=5)
    time.sleep(1.5)  # let statistics settle
    before = commits()
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 3:
        conn.request('GET', '/_/health/ready')
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        n += 1
    conn.close()
    time.sleep(1)  # statistics are flushed with a delay
    after = commits()
    # One check per second for ~4s, plus our two psql calls, plus slack.
    assert n > 500, f'only {n} probes in 3s'
    assert after - before <= 10, f'{n} probes caused {after - before} transactions'


@test
def first_host_refusing_falls_through_to_the_next(ctx):
    # libpq closes the refused socket and opens the next within one poll;
    # the new socket usually gets the same fd number and must be watched.
    pg = ctx.postgres()
    # Refused for the whole case, whatever else runs: a socket bound to the
    # port but never listening (connect() to it is refused on Linux), on a
    # port no other test process is handed (free_port()).
    import socket
    from tests.harness import free_port
    refuser = ctx.add(socket.socket(socket.AF_INET, socket.SOCK_STREAM), lambda s: s.close())
    refuser.bind(('127.0.0.1', free_port()))
    dead = refuser.getsockname()[1]
    url = f'postgres://baton@127.0.0.1:{dead},127.0.0.1:{pg.port}/baton'
    b = ctx.batond({'DATABASE_URL': url, 'DATABASE_CONNECT_TIMEOUT': '10s'}).start()
    started = time.monotonic()
    b.wait_ready(15)
    assert time.monotonic() - started < 5, 'connect hung until its timeout'


@test
def stop_before_ready_never_sends_ready(ctx):
    pg = ctx.postgres()
    pg.stop()
    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    b.notify.wait_for(r'STATUS=Starting: waiting for PostgreSQL', 10)
    b.signal(signal.SIGTERM)
    assert b.wait_exit(10) == 0
    pg.start()
    time.sleep(0.5)
    assert b.notify.find(r'^READY=1$') is None
    assert 'Startup cancelled while waiting for PostgreSQL' in b.log(), b.log()


@test
def stop_during_a_migration_query(ctx):
    pg = ctx.postgres()
    # schema_migrations exists but is locked: reading it blocks, so a
    # migration query is in flight when the stop signal arrives.
    pg.psql('CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, '
            'checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())')
    holder = ctx.add(pg.session(), lambda p: p.kill())
    holder.stdin.write('BEGIN; LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE;\n')
    holder.stdin.flush()
    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    wait_until(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                               "'batond' AND wait_event_type = 'Lock'") == '1', 10,
               what='batond to wait on the locked table')
    b.signal(signal.SIGTERM)
    assert b.wait_exit(10) == 0, b.log()
    assert b.notify.find(r'^READY=1$') is None
    assert 'Startup cancelled while applying migrations' in b.log(), b.log()
    # The abandoned backend notices its client is gone even while it waits
    # on the lock (client_connection_check_interval) and lets go of the
    # migration lock, so the next instance is not blocked by it.
    wait_until(lambda: pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == '0',
               5, what='the migration lock to be released')
    assert holder.poll() is None, 'the test released its own lock early'


@test
def binds_itself_without_socket_activation(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), 'SERVER_HOST': '127.0.0.1'},
                   socket_activate=False).start()
    b.wait_ready()
    assert b.get('/_/health/ready').status == 200
    assert 'own socket' in b.log()


@test
def binds_ipv6_itself(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), 'SERVER_HOST': '::1'}, socket_activate=False)
    b.start(trigger=False)
    from tests.harness import http_get
    wait_until(lambda: http_get(b.port, '/_/health/live', host='::1').status == 200, 10,
               what='batond on [::1]')
    b.wait_ready()
    assert http_get(b.port, '/_/health/ready', host='::1').status == 200
    assert f'Serving HTTP on [::1]:{b.port}' in b.log(), b.log()


@test
def serves_on_every_passed_socket(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url()}, n_sockets=2).start()
    b.wait_ready()
    from tests.harness import http_get
    for port in b.ports:
        assert http_get(port, '/_/health/ready').status == 200, port
    assert b.log().count('systemd socket') == 2


if __name__ == '__main__':
    run()
