#!/usr/bin/env python3
"""NATS enabled: no READY without it, readiness follows it, recovery needs
no restart."""

from tests.harness import MIGRATIONS, run, test, wait_until


def env(pg, nats):
    return {'DATABASE_URL': pg.url(), 'NATS__ENABLED': 'true', 'NATS__URL': nats.url,
            'HEALTH_CHECK_TIMEOUT': '1s'}


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
