#!/usr/bin/env python3
"""Migrations: exactly once across racing instances, refusal of changed or
unknown migrations, and the migrate command."""

import os
import subprocess

from tests.harness import MIGRATIONS, Batond, run, test, wait_until


def batond_cli(pg, *args, env=None):
    e = {'PATH': os.environ['PATH'], 'DATABASE_URL': pg.url(), 'LOG_LEVEL': 'info'}
    for k in ('ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS'):
        if k in os.environ:
            e[k] = os.environ[k]
    e.update(env or {})
    return subprocess.run([os.path.abspath(Batond.BINARY), *args], env=e, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=30)


@test
def two_instances_racing_apply_once(ctx):
    pg = ctx.postgres()
    a = ctx.batond({'DATABASE_URL': pg.url(), 'DEPLOYMENT_COLOR': 'blue'}, name='blue')
    b = ctx.batond({'DATABASE_URL': pg.url(), 'DEPLOYMENT_COLOR': 'green'}, name='green')
    a.start(trigger=False)
    b.start(trigger=False)
    # Trigger both socket activations as close together as we can.
    import threading
    threads = [threading.Thread(target=x.wait_serving) for x in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.wait_ready(20)
    b.wait_ready(20)
    rows = pg.psql('SELECT version, name FROM schema_migrations ORDER BY version').splitlines()
    assert rows == [f'{v}|{n}' for v, n in MIGRATIONS], rows
    applied = a.log().count('Applied migration') + b.log().count('Applied migration')
    assert applied == len(MIGRATIONS), f'{applied} applications of {len(MIGRATIONS)} migrations'
    print(f"# two instances started at once on an empty database: {applied} migration(s) applied "
          f"(blue {a.log().count('Applied migration')}, green {b.log().count('Applied migration')}), "
          f"both READY", flush=True)


@test
def changed_migration_is_refused(ctx):
    pg = ctx.postgres()
    r = batond_cli(pg, 'migrate')
    assert r.returncode == 0, r.stdout
    pg.psql("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")

    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    code = b.wait_exit(15)
    assert code == 1, code
    assert 'changed after it was applied' in b.log(), b.log()
    assert b.notify.find(r'^READY=1$') is None
    b.notify.wait_for(r'STATUS=Failed: migration 0001_create_topics_and_events.sql changed', 2)


@test
def newer_database_is_refused(ctx):
    pg = ctx.postgres()
    assert batond_cli(pg, 'migrate').returncode == 0
    pg.psql(f"INSERT INTO schema_migrations (version, name, checksum) "
            f"VALUES ({len(MIGRATIONS) + 1}, 'from_the_future', 'x')")

    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    assert b.wait_exit(15) == 1
    assert 'refusing to run an older binary against a newer schema' in b.log(), b.log()
    assert b.notify.find(r'^READY=1$') is None
    print('# newer database: exit 1, no READY: ' +
          next(line.strip() for line in b.log().splitlines() if 'newer schema' in line), flush=True)

    status = batond_cli(pg, 'migrate', '--status')
    assert status.returncode == 1, status.stdout
    assert 'from_the_future' in status.stdout and 'NOT IN THIS BINARY' in status.stdout, status.stdout


@test
def migrate_command(ctx):
    pg = ctx.postgres()
    status = batond_cli(pg, 'migrate', '--status')
    assert status.returncode == 0, status.stdout
    assert '0001  create_topics_and_events' in status.stdout and 'pending' in status.stdout

    first = batond_cli(pg, 'migrate')
    assert first.returncode == 0, first.stdout
    assert f'{len(MIGRATIONS)} migration(s) applied' in first.stdout, first.stdout
    again = batond_cli(pg, 'migrate')
    assert again.returncode == 0 and '0 migration(s) applied' in again.stdout, again.stdout

    status = batond_cli(pg, 'migrate', '--status')
    assert status.returncode == 0
    assert 'applied 20' in status.stdout, status.stdout   # applied <timestamp>


@test
def migrate_command_without_database_fails_clearly(ctx):
    pg = ctx.postgres()
    pg.stop()
    r = batond_cli(pg, 'migrate', env={'DATABASE_CONNECT_TIMEOUT': '1s'})
    assert r.returncode == 1, r.stdout
    assert 'Cannot connect to PostgreSQL' in r.stdout, r.stdout


@test
def migration_failing_half_way_leaves_database_as_before(ctx):
    pg = ctx.postgres()
    # 0001 creates "topics" and then "events": make the second statement fail.
    pg.psql('CREATE TABLE events (unrelated int)')
    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    assert b.wait_exit(15) == 1
    log = b.log()
    assert 'migration 0001_create_topics_and_events failed' in log, log
    assert 'relation "events" already exists' in log, log
    assert b.notify.find(r'^READY=1$') is None
    # The statement that succeeded before the failure was rolled back too.
    assert pg.psql("SELECT to_regclass('topics') IS NULL") == 't', 'half a migration left behind'
    assert pg.psql('SELECT count(*) FROM schema_migrations') == '0'
    assert pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == '0'
    print('# migration failing half way: exit 1, no READY, no table, no schema_migrations row, '
          'no lock left: ' + next(line.strip() for line in log.splitlines() if 'failed' in line), flush=True)


if __name__ == '__main__':
    run()
