#!/usr/bin/env python3
"""Configuration as an operator meets it: one clear line naming the key,
exit code 78 (systemd's "CONFIG"), and never a password on screen."""

import os
import re
import signal
import subprocess

from tests.harness import Batond, publish, run, test, wait_until

SECRET = 'hunter2-s3cret'


def batond(*args, env=None, timeout=10):
    e = {'PATH': os.environ['PATH']}
    for k in ('ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS'):
        if k in os.environ:
            e[k] = os.environ[k]
    e.update(env or {})
    return subprocess.run([os.path.abspath(Batond.BINARY), *args], env=e, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


@test
def missing_required_key(ctx):
    r = batond('--config', '/dev/null')
    assert r.returncode == 78, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert 'DATABASE_URL: required' in lines[0], lines


@test
def bad_values_name_the_key(ctx):
    url = f'postgres://baton:{SECRET}@127.0.0.1:1/baton'
    cases = {
        'SERVER_PORT': ('70000', 'out of range'),
        'DRAIN_TIMEOUT': ('2 minutes', 'not a duration'),
        'NATS__ENABLED': ('maybe', 'not a boolean'),
        'MAX_BODY_BYTES': ('10Q', 'not a size'),
        'NATS__SUBJECT_PREFIX': ('baton.*', 'no wildcards'),
        'NATS__SIGNING_KEY': ('short-' + SECRET, 'at least 32 characters'),
        'EVENT_RETENTION_TOPICS': ('chat-*=1h', "'chat-*=1h' is not PATTERN=AGE/COUNT"),
        'JWT_PUBLIC_KEY_FILE': ('/nonexistent/jwt.pub', 'cannot read /nonexistent/jwt.pub'),
        'JWT_KEY': ('short-' + SECRET, 'at least 32 characters'),
        'CORS_ORIGINS': ('https://app.example, https://b.example/', "'https://b.example/' is not an origin"),
    }
    for key, (value, problem) in cases.items():
        r = batond('--check-config', env={'DATABASE_URL': url, key: value})
        assert r.returncode == 78, (key, r)
        assert r.stderr.count('\n') == 1, r.stderr
        assert f'{key}: ' in r.stderr and problem in r.stderr, (key, r.stderr)
        assert SECRET not in r.stderr + r.stdout


@test
def config_file_errors_give_file_and_line(ctx):
    conf = ctx.tmp.join('batond.conf')
    with open(conf, 'w') as f:
        f.write(f'# Baton\nDATABASE_URL=postgres://baton:{SECRET}@db/baton\nSERVER_PROT=8080\n')
    r = batond('--check-config', '--config', conf)
    assert r.returncode == 78
    assert f'SERVER_PROT: unknown key ({conf} line 3)' in r.stderr, r.stderr

    r = batond('--check-config', '--config', ctx.tmp.join('missing.conf'))
    assert r.returncode == 78 and 'missing.conf' in r.stderr, r.stderr


@test
def check_config_reports_ok_without_secrets(ctx):
    conf = ctx.tmp.join('batond.conf')
    with open(conf, 'w') as f:
        f.write(f'DATABASE_URL="postgres://baton:{SECRET}@db/baton"\nDRAIN_TIMEOUT=0\n')
    r = batond('--check-config', '--config', conf, env={'SERVER_PORT': '8081'})
    assert r.returncode == 0, r
    assert r.stdout.strip().endswith('configuration OK')
    assert SECRET not in r.stdout + r.stderr
    assert 'DATABASE_URL=user=baton password=*** dbname=baton host=db  # file' in r.stdout, r.stdout
    assert 'SERVER_PORT=8081  # environment' in r.stdout
    assert 'DRAIN_TIMEOUT=0s  # file, reloadable' in r.stdout


@test
def version_and_usage(ctx):
    r = batond('--version')
    assert r.returncode == 0 and r.stdout.startswith('batond '), r
    r = batond('--help')
    assert r.returncode == 0 and 'migrate' in r.stdout
    r = batond('--bogus')
    assert r.returncode == 78
    r = batond('migrat')
    assert r.returncode == 78 and "unexpected argument 'migrat'" in r.stderr, r.stderr


@test
def password_never_logged(ctx):
    pg = ctx.postgres()
    # trust authentication accepts any password: the URL carries one anyway.
    b = ctx.batond({'DATABASE_URL': pg.url(password=SECRET)}).start()
    b.wait_ready()
    pg.kill()
    wait_until(lambda: b.get('/_/health/ready').status == 503, 5, what='ready to turn red')
    body = b.get('/_/health/ready').body
    pg.start()
    wait_until(lambda: b.get('/_/health/ready').status == 200, 15, what='recovery')
    log = b.log()
    assert 'user=baton password=*** dbname=baton host=127.0.0.1' in log, log
    assert SECRET not in log
    assert SECRET not in body
    assert all(SECRET not in m for m in b.notify.texts())


def guarded_by(b, token, warning):
    """Publishing on b needs exactly token, and b warns about the value it
    ignored: at start, and again at a reload. The token is never logged."""
    b.start()
    b.wait_ready()
    for wrong in (None, 'wrong', token[:-1]):
        r = publish(b.port, 'guarded', {'n': 1}, token=wrong)
        assert r.status == 401, (wrong, r)
    r = publish(b.port, 'guarded', {'n': 2}, token=token)
    assert r.status == 201, r
    b.wait_log(re.escape(warning))

    # A reload reads the same sources again, and says it again.
    since = b.notify.count()
    b.signal(signal.SIGHUP)
    b.notify.wait_for(r'^READY=1$', since=since)
    b.wait_log(r'Reloaded configuration')
    assert publish(b.port, 'guarded', {'n': 3}).status == 401
    log = b.log()
    assert log.count(warning) == 2, log
    assert token not in log
    return b


@test
def empty_env_does_not_override_a_credential(ctx):
    """An empty API_TOKEN= in the environment (left in a per-colour
    EnvironmentFile=, say) must not open the publishing that the api-token
    credential closes: the credential wins, and batond says so."""
    pg = ctx.postgres()
    token = 'cred-' + os.urandom(12).hex()
    creds = ctx.tmp.join('creds')
    os.makedirs(creds)
    with open(os.path.join(creds, 'api-token'), 'w') as f:
        f.write(token + '\n')
    env = {'DATABASE_URL': pg.url(), 'CREDENTIALS_DIRECTORY': creds, 'API_TOKEN': ''}
    warning = ('API_TOKEN is empty in the environment, but the credential api-token sets it; '
               'ignoring the empty value.')

    r = batond('--check-config', '--config', '/dev/null', env=env)
    assert r.returncode == 0, r
    assert 'API_TOKEN=***  # credential, reloadable' in r.stdout, r.stdout

    guarded_by(ctx.batond(env), token, warning)


@test
def empty_credential_does_not_override_the_file(ctx):
    """The shipped units always load /etc/baton/api-token, which tmpfiles.d
    creates empty: API_TOKEN=... in batond.conf must keep publishing closed.
    The file's value wins over the empty credential, and batond says so."""
    pg = ctx.postgres()
    token = 'file-' + os.urandom(12).hex()
    creds = ctx.tmp.join('creds')
    os.makedirs(creds)
    open(os.path.join(creds, 'api-token'), 'w').close()
    conf = ctx.tmp.join('batond.conf')
    with open(conf, 'w') as f:
        f.write(f'API_TOKEN={token}\n')
    env = {'DATABASE_URL': pg.url(), 'CREDENTIALS_DIRECTORY': creds}
    warning = (f'API_TOKEN: the credential api-token is empty, but {conf} sets it; '
               'ignoring the empty credential.')

    r = batond('--check-config', '--config', conf, env=env)
    assert r.returncode == 0, r
    assert 'API_TOKEN=***  # file, reloadable' in r.stdout, r.stdout

    guarded_by(ctx.batond(env, args=['--config', conf]), token, warning)

    # A non-empty credential still wins over the file, and nothing is said.
    with open(os.path.join(creds, 'api-token'), 'w') as f:
        f.write('cred-' + token + '\n')
    r = batond('--check-config', '--config', conf, env=env)
    assert r.returncode == 0 and 'API_TOKEN=***  # credential, reloadable' in r.stdout, r.stdout


if __name__ == '__main__':
    run()
