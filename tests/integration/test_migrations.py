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


def plan_of(pg):
    """batond migrate --plan: its exit status and its name=value lines."""
    r = batond_cli(pg, 'migrate', '--plan')
    lines = dict(line.split('=', 1) for line in r.stdout.splitlines() if '=' in line and ' ' not in line.split('=', 1)[0])
    return r.returncode, lines, r.stdout


@test
def a_newer_schema_of_additive_migrations_is_run_on_and_a_breaking_one_refused(ctx):
    """The expand/contract contract: a batond starts on a database that has
    migrations it does not know when every one of them is additive (as
    recorded when applied), and says which; one breaking migration it does
    not know and it refuses, naming it, with no READY. --status and --plan
    say the same."""
    pg = ctx.postgres()
    assert batond_cli(pg, 'migrate').returncode == 0
    n = len(MIGRATIONS)
    additive, breaking = f'{n + 1:04d}_add_audit_table', f'{n + 2:04d}_rename_events'
    pg.psql(f"INSERT INTO schema_migrations (version, name, checksum, additive) "
            f"VALUES ({n + 1}, 'add_audit_table', 'x', true)")

    b = ctx.batond({'DATABASE_URL': pg.url(), 'LOG_LEVEL': 'info'}).start()
    b.wait_ready()
    assert f'database has migration {additive}, which this batond does not know; it is additive' in b.log(), b.log()
    b.stop()
    code, plan, out = plan_of(pg)
    assert code == 0 and plan['unknown'] == f'{additive}:additive' and plan['refused'] == '', out
    assert plan['apply'] == '' and plan['database_version'] == str(n + 1), out
    status = batond_cli(pg, 'migrate', '--status')
    assert status.returncode == 0 and 'this batond runs on it' in status.stdout, status.stdout

    pg.psql(f"INSERT INTO schema_migrations (version, name, checksum, additive) "
            f"VALUES ({n + 2}, 'rename_events', 'y', false)")
    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    assert b.wait_exit(15) == 1
    assert f'has migration {breaking}, which this batond does not know' in b.log(), b.log()
    assert 'which is breaking' in b.log(), b.log()
    assert b.notify.find(r'^READY=1$') is None
    print('# newer database with a breaking migration: exit 1, no READY: ' +
          next(line.strip() for line in b.log().splitlines() if 'breaking' in line), flush=True)
    code, plan, out = plan_of(pg)
    assert code == 1 and breaking in plan['refused'], out
    status = batond_cli(pg, 'migrate', '--status')
    assert status.returncode == 1, status.stdout
    assert 'rename_events' in status.stdout and 'this batond refuses to start' in status.stdout, status.stdout


@test
def plan_says_what_would_be_applied_and_writes_nothing(ctx):
    """migrate --plan on a fresh database lists every migration with its
    kind and the first breaking one, and leaves the database untouched;
    on one an older batond set up (no additive column) it works too, and
    the next apply adds the column, recording what was there as breaking."""
    pg = ctx.postgres()
    code, plan, out = plan_of(pg)
    assert code == 0, out
    assert plan['database_version'] == '0' and plan['binary_version'] == str(len(MIGRATIONS)), out
    names = [f'{v:04d}_{name}' for v, name in MIGRATIONS]
    root = os.path.join(os.path.dirname(__file__), '..', '..', 'migrations')

    def kind(m):
        with open(os.path.join(root, m + '.sql')) as f:
            return 'additive' if f.readline().rstrip('\n') == '-- baton:additive' else 'breaking'
    assert plan['apply'] == ' '.join(f'{m}:{kind(m)}' for m in names), out
    assert plan['breaking'] == names[0] and plan['refused'] == '', out
    assert pg.psql("SELECT to_regclass('schema_migrations') IS NULL") == 't'

    pg.psql("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
    code, plan, out = plan_of(pg)
    assert code == 0 and plan['database_version'] == '0', out
    assert pg.psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'schema_migrations' "
                   "AND column_name = 'additive'") == '0'
    assert batond_cli(pg, 'migrate').returncode == 0
    assert pg.psql("SELECT string_agg(additive::text, ',' ORDER BY version) FROM schema_migrations") == \
        ','.join('true' if kind(m) == 'additive' else 'false' for m in names)
    code, plan, out = plan_of(pg)
    assert code == 0 and plan['apply'] == '' and plan['breaking'] == '', out


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
