#!/usr/bin/env python3
"""Startup and readiness: READY=1 only after migrations and checks; a
database outage keeps batond (or turns it) not ready, and it recovers by
itself, without a restart."""

import os
import re
import signal
import threading
import time

from tests.harness import MIGRATION_LOCK_KEY, MIGRATIONS, http_get, metric, publish, run, test, wait_until

# A request that needs readiness waits for it this long at most, looked
# at every HOLD_CHECK (http-server.h, HTTP_HOLD_UNTIL_READY_USEC;
# http-internal.h, HTTP_HOLD_CHECK_USEC).
HOLD = 5.0
HOLD_CHECK = 0.25
# What a loaded 2-core machine under ASan may add to a step batond takes
# at once.
SLACK = 3.0


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
    # The API waits for readiness, 5 s at most, then says why not: at
    # the first look past HOLD, SLACK on top.
    started = time.monotonic()
    api = b.get('/api/v1/topics/x/events', timeout=HOLD + HOLD_CHECK + SLACK + 5)
    took = time.monotonic() - started
    assert api.status == 503 and api.json()['error'] == 'not_ready', api
    assert HOLD - 0.5 < took < HOLD + HOLD_CHECK + SLACK, took
    # One that comes shortly before READY is served once it is.
    held = {}

    def held_request():
        t0 = time.monotonic()
        held['response'] = b.get('/api/v1/no-such-thing', timeout=HOLD + HOLD_CHECK + SLACK + 5)
        held['answered'] = time.monotonic()
        held['took'] = held['answered'] - t0
    t = threading.Thread(target=held_request)
    t.start()
    # Held in batond (counted from its request line; the scrape asking is
    # the other one) before the lock goes, and then at once: READY=1 must
    # come within HOLD of its arrival, so the migrations get all of it.
    wait_until(lambda: metric(b.port, 'baton_http_requests_in_flight') >= 2, HOLD,
               interval=0.02, what='the request to be held')
    holder.stdin.write(f'SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY});\n')
    holder.stdin.flush()
    _, t_ready, _ = b.wait_ready(15)
    t.join(HOLD + HOLD_CHECK + SLACK + 5)
    # Served, not refused, and only once ready: the answer is written in a
    # loop turn after READY=1 goes out (lifecycle.c sends it last). Both on
    # the monotonic clock, READY=1's from the kernel's stamp.
    assert held['response'].status == 404, held
    assert held['answered'] >= t_ready - 0.01, (held, t_ready)
    print(f'# held until ready: answered 404 after {held["took"]:.2f} s, '
          f'{held["answered"] - t_ready:.3f} s after READY=1, not 503; past 5 s: 503 not_ready '
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


def ready_durations(port):
    """batond's own durations of the ready probe (request line to answer):
    {le: cumulative count} from /metrics, which reads no database."""
    body = http_get(port, '/metrics').body
    return {le: float(n) for le, n in re.findall(
        r'^baton_http_request_duration_seconds_bucket\{route="health_ready",le="([^"]+)"\} (\S+)$',
        body, re.M)}


@test
def hung_database_never_delays_probes(ctx):
    pg = ctx.postgres()
    # A long check timeout: a probe that waited for the check would show it.
    check_timeout = 3.0
    b = ctx.batond({'DATABASE_URL': pg.url(), 'HEALTH_CHECK_TIMEOUT': f'{check_timeout:g}s'}).start()
    b.wait_ready()
    pids = pg.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'batond'").split()
    assert pids, 'batond has no PostgreSQL backend'
    for p in pids:
        os.kill(int(p), signal.SIGSTOP)
    try:
        before = ready_durations(b.port)
        worst = 0.0
        # Until the hung check times out and ready turns red: every probe
        # meanwhile came while a check waited on the stopped backend.
        deadline = time.monotonic() + check_timeout + 30
        saw_down = False
        while not saw_down and time.monotonic() < deadline:
            t = time.monotonic()
            r = b.get('/_/health/ready', timeout=10)
            worst = max(worst, time.monotonic() - t)
            saw_down = r.status == 503
            time.sleep(0.05)
        after = ready_durations(b.port)
        assert saw_down, 'a hung database did not turn ready red'
        # The probe is answered from the last round's snapshot in the loop
        # turn that reads it (well under a millisecond); 0.5 s, a bound of
        # batond's histogram, leaves ASan and a loaded machine their slack,
        # while one that waited for the check would wait up to 3 s.
        n = after['+Inf'] - before.get('+Inf', 0)
        slow = n - (after['0.5'] - before.get('0.5', 0))
        assert n > 0 and slow == 0, f'{slow:g} of {n:g} probes took over 0.5 s in batond while the database hung'
        # Nor does the loop block on the stopped backend: it would stay
        # blocked until SIGCONT, after this loop, and the probe time out.
        assert worst < check_timeout, f'a probe took {worst:.2f}s while the database hung'
        print(f'# {n:g} probes while a check hung, none over 0.5 s in batond; the slowest '
              f'{worst * 1000:.0f} ms as the test saw it', flush=True)
    finally:
        for p in pids:
            os.kill(int(p), signal.SIGCONT)
    # The timed-out check dropped that connection; a new one serves again.
    wait_until(lambda: b.get('/_/health/ready').status == 200, 10, what='recovery')


@test
def probe_flood_is_not_a_query_flood(ctx):
    """Probes are answered from the last health round: however many come,
    batond's queries are the rounds' SELECT 1, one every interval."""
    interval = 1.0
    pg = ctx.postgres()
    # PostgreSQL logs every statement with the client's name as it receives
    # it: what batond sends is counted there, whether it touches a table
    # or not. (pg_stat_database.xact_commit does not see a SELECT 1: a
    # backend that touches no table keeps its counts until it exits.)
    pg.psql("ALTER SYSTEM SET log_statement = 'all'")
    pg.psql("ALTER SYSTEM SET log_line_prefix = '%m [%p] %a: '")
    pg.psql('SELECT pg_reload_conf()')
    log_path = os.path.join(pg.dir, 'log')
    batond_statement = re.compile(r'\] batond(/\w+)?: LOG:  (statement|execute)')

    def log_lines():
        with open(log_path, errors='replace') as f:
            return f.read().splitlines()

    def marker(text):
        pg.psql(f"SELECT '{text}'")
        return f"psql: LOG:  statement: SELECT '{text}'"

    # No pruning round (the only other periodic query, every
    # EVENT_RETENTION_INTERVAL) and no streams (no resyncs).
    b = ctx.batond({'DATABASE_URL': pg.url(), 'HEALTH_CHECK_INTERVAL': f'{interval:g}s',
                    'EVENT_RETENTION_INTERVAL': '24h'}).start()
    b.wait_ready()
    # The instrument works: batond's rounds show in the log.
    wait_until(lambda: any(batond_statement.search(line) and line.endswith('SELECT 1') for line in log_lines()),
               interval + 15, what="batond's health checks in PostgreSQL's log")

    import http.client
    conn = http.client.HTTPConnection('127.0.0.1', b.port, timeout=10)
    started = time.monotonic()
    start = marker('probe flood starts')
    n = 500
    for _ in range(n):
        conn.request('GET', '/_/health/ready')
        r = conn.getresponse()
        r.read()
        assert r.status == 200
    conn.close()
    end = marker('probe flood ends')
    elapsed = time.monotonic() - started
    lines = log_lines()
    i = next(k for k, line in enumerate(lines) if line.endswith(start))
    j = next(k for k, line in enumerate(lines) if line.endswith(end))
    sent = [line for line in lines[i + 1:j] if batond_statement.search(line)]
    # A round starts at least an interval after the last one ended
    # (health-checks.c, round_finish): at most elapsed / interval + 1 of
    # them in the window, + 1 for one sent just before it and logged in it.
    # A query per probe would be 500 more.
    allowed = elapsed / interval + 2
    print(f'# {n} probes in {elapsed:.2f} s; batond sent {len(sent)} statement(s) meanwhile '
          f'(at most {allowed:.1f} from the health rounds)', flush=True)
    assert len(sent) <= allowed, f'{n} probes in {elapsed:.2f} s: batond sent {len(sent)} statements: {sent[:5]}'


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
