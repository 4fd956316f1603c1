#!/usr/bin/env python3
"""The promise Baton is bought for, under real systemd: a container boots
systemd (nspawn), the build is installed into it (meson install --destdir),
PostgreSQL and nginx run there, and batond runs from the shipped units and
baton-deploy, with wrk pushing load through nginx and streams open.

Needs root, systemd-nspawn, an overlay mount and wrk; skips with the reason
otherwise. BATON_BUILD_DIR names the build to install (default: build/).
As root, from the source root:
    python3 -m tests.system.test_deploy -v [case ...]"""

import json
import os
import re
import subprocess
import time

from tests.harness import run, test, wait_until
from tests.harness.container import Shared

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get('BATON_BUILD_DIR', os.path.join(HERE, '..', '..', 'build'))
# The traffic generator, a script: copied into the container, run there.
TRAFFIC = os.path.join(HERE, '..', 'harness', 'traffic.py')
FLOOD = os.path.join(HERE, '..', 'harness', 'flood.py')
RESTARTS = os.path.join(HERE, '..', 'harness', 'restarts.py')
NGINX = 'http://127.0.0.1:8000'
# baton-deploy's settings in the container: a short drain wait for tests.
DEPLOY_CONF = 'DRAIN_TIMEOUT=25\nPROGRESS_EVERY=3\n'


def container():
    return CONTAINER.get()


def install(c):
    subprocess.run(['meson', 'install', '-C', BUILD, '--no-rebuild', '--quiet', '--destdir', c.root],
                   check=True, stdout=subprocess.DEVNULL)
    c.write('/usr/local/lib/baton-test/traffic.py', open(TRAFFIC).read(), 0o755)
    c.write('/usr/local/lib/baton-test/flood.py', open(FLOOD).read(), 0o755)
    c.write('/usr/local/lib/baton-test/restarts.py', open(RESTARTS).read(), 0o755)
    # Releases B (one more migration, additive) and C (and a breaking one).
    for name in ('additive', 'breaking'):
        with open(os.path.join(BUILD, 'tests', 'system', f'batond-release-{name}'), 'rb') as f:
            data = f.read()
        with open(c.path(f'/usr/local/lib/baton-test/batond-release-{name}'), 'wb') as f:
            f.write(data)
        os.chmod(c.path(f'/usr/local/lib/baton-test/batond-release-{name}'), 0o755)
    # Only what this test starts: the host's own services in the image stay off.
    c.sh('systemctl stop nats-server nginx 2>/dev/null; systemctl daemon-reload; systemd-sysusers; '
         'systemd-tmpfiles --create /usr/local/lib/tmpfiles.d/baton.conf', check=False)
    c.sh("su postgres -c \"psql -qc \\\"CREATE ROLE baton LOGIN PASSWORD 'pw'\\\" "
         "-c 'CREATE DATABASE baton OWNER baton'\"")
    c.write('/etc/baton/batond.conf',
            'DATABASE_URL=postgres://baton:pw@127.0.0.1:5432/baton\n'
            'HEALTH_CHECK_INTERVAL=1s\nSTREAM_HEARTBEAT_INTERVAL=2s\nDRAIN_TIMEOUT=60s\n', 0o640)
    c.write('/etc/baton/deploy.conf', DEPLOY_CONF)
    c.write('/etc/baton/deployment-token', 'system-test-token\n', 0o640)
    c.sh('chgrp baton /etc/baton/batond.conf /etc/baton/deployment-token')
    # nginx: only the example site, on port 8000, with its managed upstream.
    site = open(os.path.join(HERE, '..', '..', 'nginx', 'baton-site.conf')).read()
    site = site.replace("listen 80 backlog=4096;", "listen 127.0.0.1:8000;").replace("listen [::]:80 backlog=4096;", "")
    c.write('/etc/nginx/sites-enabled/baton', site)
    c.sh('rm -f /etc/nginx/sites-enabled/default; mkdir -p /etc/nginx/baton')
    c.write('/etc/nginx/baton/upstream.conf',
            open(os.path.join(HERE, '..', '..', 'nginx', 'upstream.conf')).read())
    c.run(['nginx', '-t'])
    c.run(['systemctl', 'start', 'nginx'])



# The one container every case here shares: boots and installs once.
CONTAINER = Shared('baton-system', ('systemd-nspawn', 'nsenter', 'wrk', 'nginx'), install)


def deploy(c, *args, check=True):
    started = time.monotonic()
    r = c.run(['baton-deploy'] + list(args), check=False, timeout=300)
    elapsed = time.monotonic() - started
    out = r.stdout + r.stderr
    for line in out.strip().splitlines():
        print(f'#   | {line}')
    if check:
        assert r.returncode == 0, f'baton-deploy {" ".join(args)} failed ({r.returncode})'
    return r.returncode, out, elapsed


def active_colour(c):
    for colour in ('blue', 'green'):
        if c.run(['systemctl', 'is-active', '--quiet', f'batond@{colour}'], check=False).returncode == 0:
            return colour
    return None


def wrk_start(c, seconds, url=f'{NGINX}/api/v1/topics/load/events?limit=1', connections=8):
    return c.popen(['wrk', '-t1', f'-c{connections}', f'-d{seconds}s', url],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_result(proc):
    out = proc.communicate(timeout=300)[0]
    total = int(re.search(r'(\d+) requests in', out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r'Non-2xx or 3xx responses: (\d+)', out)) else 0
    errors = 0
    if m := re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', out):
        errors = sum(int(x) for x in m.groups())
    return {'requests': total, 'non2xx': non2xx, 'socket_errors': errors, 'raw': out}


def assert_clean(w, what, nginx_reloads=0):
    """wrk: no non-2xx ever. Socket errors: none, except that each nginx
    reload may reset a request that wrk sent on an idle keep-alive
    connection the retiring nginx worker was closing (nginx 1.22; wrk never
    retries). The control test measures that for nginx alone."""
    print(f'# {what}: {w["requests"]} requests, {w["non2xx"]} non-2xx, '
          f'{w["socket_errors"]} socket errors')
    assert w['requests'] > 0 and w['non2xx'] == 0, w['raw']
    if nginx_reloads == 0:
        assert w['socket_errors'] == 0, w['raw']


def assert_reads_clean(t, what):
    r = t['reads']
    print(f'# {what}: keep-alive readers: {r["ok"]} ok, {r["non2xx"]} non-2xx, {r["failed"]} failed, '
          f'{r["retried"]} resent after nginx closed an idle keep-alive connection')
    assert r['ok'] > 0 and r['non2xx'] == 0 and r['failed'] == 0, t.get('read_errors')


def stopped_at(c, unit):
    """When systemd logged the unit stopped, as a unix time (the journal's
    own microsecond timestamp)."""
    out = c.run(['journalctl', '-u', unit, '-o', 'json', '--no-pager', '-n', '200']).stdout
    # "Stopped" after a stop job; "Deactivated" when batond exited by itself.
    times = [int(r['__REALTIME_TIMESTAMP']) / 1e6 for r in map(json.loads, out.splitlines())
             if isinstance(r.get('MESSAGE'), str) and
             (r['MESSAGE'].startswith('Stopped ') or 'Deactivated successfully' in r['MESSAGE'])]
    assert times, f'no "Stopped" record for {unit}'
    return times[-1]


@test
def control_nginx_reload_alone_under_wrk(ctx):
    """What an nginx reload costs keep-alive clients with no deploy at all:
    the yardstick for the wrk socket errors printed by the deploy tests."""
    c = container()
    if not active_colour(c):
        deploy(c, 'deploy')
    wrk = wrk_start(c, 8)
    for _ in range(2):
        time.sleep(2.5)
        c.run(['systemctl', 'reload', 'nginx'])
    w = wrk_result(wrk)
    print(f'# control: wrk through nginx, 2 nginx reloads, no deploy: {w["requests"]} requests, '
          f'{w["non2xx"]} non-2xx, {w["socket_errors"]} socket errors')
    assert w['non2xx'] == 0, w['raw']


@test
def units_verify_clean_and_hardened(ctx):
    c = container()
    units = ['batond.socket', 'batond.service', 'batond@blue.socket', 'batond@blue.service',
             'batond@green.socket', 'batond@green.service']
    # Documentation= too: the man pages are installed (/usr/local/share/man).
    r = c.run(['systemd-analyze', 'verify'] + units, check=False)
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr
    for unit in ('batond@blue.service', 'batond.service'):
        out = c.run(['systemd-analyze', 'security', unit], check=False).stdout
        level = float(re.search(r'Overall exposure level for \S+: ([\d.]+)', out).group(1))
        print(f'# systemd-analyze security {unit}: {level}')
        assert level <= 2.0, out[-2000:]


@test
def deploy_blue_to_green_under_load_loses_nothing(ctx):
    c = container()
    if not active_colour(c):
        deploy(c, 'deploy')                  # the first deploy: blue
    old = active_colour(c)
    new = 'green' if old == 'blue' else 'blue'
    wrk = wrk_start(c, 30)
    traffic = c.popen(['python3', '/usr/local/lib/baton-test/traffic.py', NGINX, '32', '12'],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    rc, out, took = deploy(c, 'deploy')
    print(f'# deploy {old} -> {new} took {took:.1f}s')
    assert active_colour(c) == new
    w = wrk_result(wrk)
    t = json.loads(traffic.communicate(timeout=120)[0])
    assert_clean(w, 'wrk through nginx during the deploy', nginx_reloads=2)
    assert_reads_clean(t, 'during the deploy')
    ts = t['test_stream']
    print(f'# /stream/test: {len(ts["ticks"])} ticks served by {ts["colors"]}, '
          f'ended {ts["ended_at"] - ts["started_at"]:.1f}s after it started')
    assert ts['ticks'] == list(range(1, 13)) and ts['ended_at'], ts
    assert ts['colors'] == [old], ts
    blue_stopped = stopped_at(c, f'batond@{old}.service')
    print(f'# {old} stopped {blue_stopped - ts["ended_at"]:.1f}s after the stream ended')
    assert blue_stopped >= ts['ended_at'], (blue_stopped, ts)
    published, seen = t['published'], t['topic_stream']['ids']
    print(f'# topic stream: {len(published)} published, {len(seen)} received, '
          f'{t["topic_stream"]["reconnects"]} reconnect(s); publish errors: {t.get("publish_errors")}')
    assert not t.get('publish_errors'), t.get('publish_errors')
    assert seen == sorted(published) and len(seen) == len(set(seen)), (published, seen)
    assert 'Waiting [' in out or 'drained after' in out


@test
def deploy_back_with_a_new_release_and_roll_back(ctx):
    c = container()
    start = active_colour(c)
    assert start
    # A different build is a different release: pinned, not shared.
    c.sh('cp /usr/local/sbin/batond /tmp/batond-next && printf x >> /tmp/batond-next')
    wrk = wrk_start(c, 12)
    time.sleep(2)
    rc, out, took = deploy(c, 'deploy', '/tmp/batond-next')
    w = wrk_result(wrk)
    assert_clean(w, f'wrk during deploy {start} -> {active_colour(c)} ({took:.1f}s)', nginx_reloads=2)
    now = active_colour(c)
    assert now != start
    exec_start = c.run(['systemctl', 'show', '-p', 'ExecStart', '--value', f'batond@{now}']).stdout
    assert '/var/lib/baton-deploy/releases/' in exec_start, exec_start
    status = c.run(['baton-deploy', 'status']).stdout
    print('\n'.join(f'#   | {l}' for l in status.splitlines()))
    releases = dict(re.findall(r'^(blue|green)\s+\S+\s+release (\S+)', status, re.M))
    assert releases[now] != releases[start], releases

    wrk = wrk_start(c, 12)
    time.sleep(2)
    rc, out, took = deploy(c, 'rollback')
    w = wrk_result(wrk)
    assert_clean(w, f'wrk during rollback to {start} ({took:.1f}s)', nginx_reloads=2)
    assert active_colour(c) == start
    status = c.run(['baton-deploy', 'status']).stdout
    assert re.search(rf'^Active colour: {start}', status, re.M), status
    assert dict(re.findall(r'^(blue|green)\s+\S+\s+release (\S+)', status, re.M))[start] == releases[start]


@test
def status_warns_when_nginx_cannot_hold_what_a_colour_accepts(ctx):
    """Debian's nginx.conf (worker_connections 768, no worker_rlimit_nofile)
    cannot proxy a colour's 10,000 connections: baton-deploy status says
    so, and what to raise; with the README's settings it is quiet."""
    c = container()
    before = c.run(['baton-deploy', 'status'])
    print('\n'.join(f'#   | {l}' for l in before.stderr.splitlines()))
    assert 'worker_connections 768' in before.stderr and 'MAX_CONNECTIONS=10000' in before.stderr, before.stderr
    assert 'worker_rlimit_nofile' in before.stderr, before.stderr
    original = open(c.path('/etc/nginx/nginx.conf')).read()
    # The README's settings, within the open-file limit nginx may raise
    # itself to here (a sandbox may hold it below 65,536).
    hard = c.sh("awk '/^Max open files/ { print $5 }' /proc/$(cat /run/nginx.pid)/limits").stdout.strip()
    nofile = 65536 if hard == 'unlimited' else min(65536, int(hard))
    raised = original.replace('worker_connections 768;', f'worker_connections {min(32768, nofile)};')
    raised = f'worker_rlimit_nofile {nofile};\n' + raised
    try:
        c.write('/etc/nginx/nginx.conf', raised)
        c.run(['nginx', '-t'])
        c.run(['systemctl', 'reload', 'nginx'])
        # The reload is asynchronous: wait until every worker is a new one.
        limits = ("for p in $(pgrep -f '^nginx: worker process'); do "
                  "awk '/^Max open files/ { print $4 }' /proc/$p/limits; done")
        wait_until(lambda: set(c.sh(limits, check=False).stdout.split()) == {str(nofile)}, 30,
                   what='nginx workers with the raised limit')
        after = c.run(['baton-deploy', 'status'])
        assert 'nginx' not in after.stderr, after.stderr
    finally:
        c.write('/etc/nginx/nginx.conf', original)
        c.run(['systemctl', 'reload', 'nginx'])


@test
def deploy_that_cannot_become_ready_leaves_everything_as_it_was(ctx):
    c = container()
    serving = active_colour(c)
    idle = 'green' if serving == 'blue' else 'blue'
    upstream_before = open(c.path('/etc/nginx/baton/upstream.conf')).read()
    c.write(f'/etc/baton/batond-{idle}.conf', 'MAX_BODY_BYTES=lots\n')
    try:
        rc, out, took = deploy(c, 'deploy', check=False)
    finally:
        os.unlink(c.path(f'/etc/baton/batond-{idle}.conf'))
    print(f'# failed deploy exited {rc} after {took:.1f}s')
    assert rc == 1, out
    assert 'MAX_BODY_BYTES' in out, out           # the reason, from the journal
    assert open(c.path('/etc/nginx/baton/upstream.conf')).read() == upstream_before
    assert active_colour(c) == serving
    r = c.run(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', f'{NGINX}/api/v1/topics/x/events'])
    assert r.stdout == '200', r.stdout
    # A database that is not there: the same.
    c.write(f'/etc/baton/batond-{idle}.conf', 'DATABASE_URL=postgres://baton:pw@127.0.0.1:1/baton\n')
    try:
        c.write('/etc/baton/deploy.conf', DEPLOY_CONF + 'START_TIMEOUT=6\n')
        rc, out, took = deploy(c, 'deploy', check=False)
    finally:
        os.unlink(c.path(f'/etc/baton/batond-{idle}.conf'))
        c.write('/etc/baton/deploy.conf', DEPLOY_CONF)
    print(f'# deploy against an unreachable database exited {rc} after {took:.1f}s')
    assert rc == 1 and 'PostgreSQL' in out, out
    assert open(c.path('/etc/nginx/baton/upstream.conf')).read() == upstream_before
    assert active_colour(c) == serving


@test
def reload_under_load_has_no_errors(ctx):
    c = container()
    colour = active_colour(c)
    wrk = wrk_start(c, 8)
    time.sleep(2)
    started = time.monotonic()
    c.run(['systemctl', 'reload', f'batond@{colour}'])
    print(f'# systemctl reload batond@{colour} returned after {time.monotonic() - started:.2f}s')
    w = wrk_result(wrk)
    assert_clean(w, 'wrk through nginx during a reload')
    log = c.run(['journalctl', '-u', f'batond@{colour}', '-o', 'cat', '--no-pager']).stdout
    assert 'Reloaded configuration' in log


def wrk_max_latency(raw):
    """wrk's slowest request, in seconds."""
    m = re.search(r'Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b', raw)
    assert m, raw
    return float(m.group(1)) * {'us': 1e-6, 'ms': 1e-3, 's': 1.0}[m.group(2)]


@test
def restarts_of_the_single_instance_never_stall(ctx):
    """batond.socket + batond.service restarted three times under wrk, a
    publisher and 100 streams that resume with their last id: each
    systemctl restart returns within seconds (the unit stops batond with
    SIGINT: streams reconnect at once, requests finish), the successor
    holds what it accepts until it is ready, so no request and no publish
    waits more than a second or fails, and no stream loses an event."""
    c = container()
    c.write('/etc/systemd/system/batond.socket.d/port.conf', '[Socket]\nListenStream=\nListenStream=127.0.0.1:8090\n')
    c.run(['systemctl', 'daemon-reload'])
    c.run(['systemctl', 'start', 'batond.socket'])
    c.run(['curl', '-sf', 'http://127.0.0.1:8090/_/health/live'])
    c.sh('until curl -sf http://127.0.0.1:8090/_/health/ready >/dev/null; do sleep 0.2; done', timeout=30)
    seconds = 24
    traffic = c.popen(['python3', '/usr/local/lib/baton-test/restarts.py', 'http://127.0.0.1:8090',
                       str(seconds), '100'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wrk = wrk_start(c, seconds, url='http://127.0.0.1:8090/api/v1/topics/load/events?limit=1', connections=16)
    restarts = []
    for _ in range(3):
        time.sleep(5)
        pid = c.run(['systemctl', 'show', '-p', 'MainPID', '--value', 'batond']).stdout.strip()
        started = time.monotonic()
        c.run(['systemctl', 'restart', 'batond.service'])
        restarts.append(time.monotonic() - started)
        print(f'# systemctl restart batond.service (was pid {pid}) returned after {restarts[-1]:.2f} s')
    w = wrk_result(wrk)
    out, err = traffic.communicate(timeout=120)
    t = json.loads(out)
    slowest = wrk_max_latency(w['raw'])
    # Where each restart's time went, from the journal's own timestamps.
    records = [json.loads(line) for line in c.run(['journalctl', '-u', 'batond.service', '-o', 'json', '--no-pager',
                                                   '-n', '2000']).stdout.splitlines()]
    marks = [(int(r['__REALTIME_TIMESTAMP']) / 1e6, r['MESSAGE']) for r in records
             if isinstance(r.get('MESSAGE'), str) and re.match(r'(Received SIGINT|Stopping|batond \S+ starting|Ready: )',
                                                              r['MESSAGE'])]
    for (t0, m0), (t1, m1) in zip(marks, marks[1:]):
        print(f'#   {m0[:30]!r} -> {m1[:30]!r}: {(t1 - t0) * 1000:.0f} ms')
    print(f'# across 3 restarts: wrk {w["requests"]} requests, {w["non2xx"]} non-2xx, '
          f'{w["socket_errors"]} socket errors, slowest {slowest * 1000:.0f} ms; {t["published"]} '
          f'published, slowest publish {t["publish_max_s"] * 1000:.0f} ms, slowest probe '
          f'{t["read_max_s"] * 1000:.0f} ms; {t["streams"]} streams: {t["lost"]} lost, '
          f'{t["duplicated"]} duplicated, {t["reconnects"]} reconnects; errors {t["errors"][:5]}')
    assert all(r < 5 for r in restarts), restarts
    assert_clean(w, 'wrk straight at the single instance across three restarts')
    assert slowest < 1.0 and t['publish_max_s'] < 1.0 and t['read_max_s'] < 1.0, (slowest, t)
    assert not t['errors'] and t['published'] > 100, t
    assert t['lost'] == 0 and t['duplicated'] == 0, t
    log = c.run(['journalctl', '-u', 'batond.service', '-o', 'cat', '--no-pager', '-n', '400']).stdout
    assert 'Second stop signal' not in log and 'Received SIGINT' in log, log[-2000:]


@test
def frozen_process_is_killed_by_the_watchdog_and_restarted(ctx):
    c = container()
    c.write('/etc/systemd/system/batond.service.d/watchdog.conf',
            '[Service]\nWatchdogSec=2s\nTimeoutAbortSec=5s\n')
    c.run(['systemctl', 'daemon-reload'])
    c.run(['systemctl', 'restart', 'batond.service'])
    pid = c.run(['systemctl', 'show', '-p', 'MainPID', '--value', 'batond']).stdout.strip()
    c.run(['kill', '-STOP', pid])
    frozen = time.monotonic()
    new_pid = None
    while time.monotonic() - frozen < 30:
        p = c.run(['systemctl', 'show', '-p', 'MainPID', '--value', 'batond']).stdout.strip()
        if p not in ('0', pid) and c.run(['systemctl', 'is-active', '--quiet', 'batond'],
                                          check=False).returncode == 0:
            new_pid = p
            break
        time.sleep(0.2)
    assert new_pid, 'batond was not restarted within 30s of freezing'
    print(f'# frozen pid {pid} replaced by {new_pid} after {time.monotonic() - frozen:.1f}s')
    log = c.run(['journalctl', '-u', 'batond', '--no-pager', '-o', 'cat']).stdout
    assert re.search(r'[Ww]atchdog timeout', log), log[-2000:]
    os.unlink(c.path('/etc/systemd/system/batond.service.d/watchdog.conf'))
    c.run(['systemctl', 'daemon-reload'])
    c.run(['systemctl', 'stop', 'batond.service', 'batond.socket'])


@test
def a_connection_flood_does_not_get_batond_restarted_by_the_watchdog(ctx):
    """200 clients hold every connection batond.service accepts
    (MAX_CONNECTIONS=64 and its reserve) for 15 s under WatchdogSec=2s:
    the self-probe has its own way in, so systemd sees its pings and keeps
    the same process running."""
    c = container()
    c.write('/etc/systemd/system/batond.service.d/flood.conf',
            '[Service]\nWatchdogSec=2s\nEnvironment=MAX_CONNECTIONS=64\n')
    c.run(['systemctl', 'daemon-reload'])
    c.run(['systemctl', 'restart', 'batond.socket', 'batond.service'])
    # Where the socket listens (an earlier case may have moved it).
    listen = c.run(['systemctl', 'show', '-p', 'Listen', '--value', 'batond.socket']).stdout
    port = re.search(r':(\d+) \(Stream\)', listen)[1]
    c.sh(f'until curl -sf http://127.0.0.1:{port}/_/health/ready >/dev/null; do sleep 0.2; done', timeout=30)
    pid = c.run(['systemctl', 'show', '-p', 'MainPID', '--value', 'batond']).stdout.strip()
    restarts = c.run(['systemctl', 'show', '-p', 'NRestarts', 'batond']).stdout.strip()
    flood = json.loads(c.run(['python3', '/usr/local/lib/baton-test/flood.py', port, '200', '15'],
                             timeout=60).stdout)
    after = c.run(['systemctl', 'show', '-p', 'MainPID', '-p', 'NRestarts', '-p', 'ActiveState',
                   'batond']).stdout
    log = c.run(['journalctl', '-u', 'batond', '--no-pager', '-o', 'cat', f'_PID={pid}']).stdout
    print(f'# 15 s of 200 held connections against MAX_CONNECTIONS=64 (WatchdogSec=2s): '
          f'{flood["connections"]} connections, {flood["answers"]} probes answered; '
          f'{" ".join(after.split())}')
    assert f'MainPID={pid}' in after and restarts in after and 'ActiveState=active' in after, (restarts, after)
    assert 'not pinging' not in log, log[-2000:]
    assert flood['answers'] >= 64, flood
    os.unlink(c.path('/etc/systemd/system/batond.service.d/flood.conf'))
    c.run(['systemctl', 'daemon-reload'])
    c.run(['systemctl', 'stop', 'batond.service', 'batond.socket'])


@test
def journal_shows_the_structured_fields(ctx):
    c = container()
    colour = active_colour(c)
    with open(c.path('/etc/baton/batond.conf'), 'a') as f:
        f.write('ACCESS_LOG=true\n')
    c.run(['systemctl', 'reload', f'batond@{colour}'])
    c.run(['curl', '-s', '-H', 'X-Request-ID: system-test-42', f'{NGINX}/api/v1/topics/x/events'])
    time.sleep(1)
    out = c.run(['journalctl', '-u', f'batond@{colour}', '-o', 'json', '--no-pager',
                 'BATON_REQUEST_ID=system-test-42']).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert records, 'no journal record for the request'
    r = records[-1]
    print(f'# journalctl -u batond@{colour} BATON_REQUEST_ID=system-test-42: '
          + ' '.join(f'{k}={r[k]}' for k in sorted(r) if k.startswith('BATON_')))
    assert r['BATON_COLOR'] == colour and r['BATON_ROUTE'] == 'events_history'
    assert r['BATON_STATUS'] == '200' and r['BATON_EVENT'] == 'http_request'
    assert float(r['BATON_DURATION_MS']) >= 0
    ready = c.run(['journalctl', '-u', f'batond@{colour}', '-o', 'json', '--no-pager',
                   'BATON_EVENT=ready']).stdout
    assert ready.strip(), 'no BATON_EVENT=ready record'


PORTS = {'blue': 8080, 'green': 8081}


def other(colour):
    return 'green' if colour == 'blue' else 'blue'


@test
def a_slow_request_in_flight_when_the_old_colour_is_retired_completes(ctx):
    """After its drain wait, baton-deploy sends the old colour one SIGINT
    (streams reconnect, requests finish) and waits for it to exit by
    itself: a publish whose body is still trickling in at that moment
    completes with 201, and batond never sees a second stop signal."""
    c = container()
    old = active_colour(c) or deploy(c, 'deploy') and active_colour(c)
    c.write('/etc/baton/deploy.conf', DEPLOY_CONF.replace('DRAIN_TIMEOUT=25', 'DRAIN_TIMEOUT=2'))
    # A stream keeps the drain waiting until its timeout; the publish
    # trickles its body in over 8 s, straight to the old colour.
    stream = c.popen(['curl', '-sN', '--max-time', '40', f'http://127.0.0.1:{PORTS[old]}/stream/test?duration=30'],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    slow = c.popen(['python3', '-c', f'''
import socket, time, json
s = socket.create_connection(("127.0.0.1", {PORTS[old]}))
body = json.dumps({{"slow": "x" * 64}}).encode()
s.sendall(b"POST /api/v1/topics/slow/events HTTP/1.1\\r\\nHost: t\\r\\nContent-Type: application/json\\r\\n"
          b"Content-Length: " + str(len(body)).encode() + b"\\r\\n\\r\\n")
for b in body:
    s.sendall(bytes([b])); time.sleep(8 / len(body))
print(s.recv(4096).decode().split("\\r\\n")[0])
'''], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        rc, out, took = deploy(c, 'deploy')
    finally:
        c.write('/etc/baton/deploy.conf', DEPLOY_CONF)
    status_line = slow.communicate(timeout=60)[0].strip()
    stream.communicate(timeout=60)
    print(f'# deploy {old} -> {other(old)} in {took:.1f}s; the slow publish in flight on {old}: {status_line!r}')
    assert status_line == 'HTTP/1.1 201 Created', (status_line, out)
    assert 'exited by itself' in out, out
    log = c.run(['journalctl', '-u', f'batond@{old}', '-o', 'cat', '--no-pager', '-n', '50000']).stdout
    last_run = log[[m.start() for m in re.finditer(r'batond \S+ starting', log)][-1]:]
    assert 'Received SIGINT' in last_run and 'Second stop signal' not in last_run, last_run[-2000:]


@test
def an_interrupted_switch_is_finished_never_repinned(ctx):
    """A deploy stopped after nginx went to the new colour: a rerun with
    the same release finishes the switch; one with another release is
    refused, and the running colour's pinned binary is left alone."""
    c = container()
    old = active_colour(c)
    new = other(old)
    c.run(['baton-deploy', 'deploy'])           # back to a known state: new serves
    assert active_colour(c) == new
    # What an interruption right after the nginx switch leaves: both
    # colours running, nginx on the new one, the state still saying old.
    c.run(['systemctl', 'start', f'batond@{old}.socket', f'batond@{old}.service'])
    state = open(c.path('/var/lib/baton-deploy/state')).read()
    c.write('/var/lib/baton-deploy/state', re.sub(r'^ACTIVE=.*$', f'ACTIVE={old}', state, flags=re.M)
            .replace('PHASE=idle', 'PHASE=draining'))
    dropin = f'/etc/systemd/system/batond@{new}.service.d/50-release.conf'
    pinned = open(c.path(dropin)).read()
    c.sh('cp /usr/local/sbin/batond /tmp/batond-other && printf y >> /tmp/batond-other')
    rc, out, _ = deploy(c, 'deploy', '/tmp/batond-other', check=False)
    assert rc == 1 and 'interrupted deploy' in out, out
    assert open(c.path(dropin)).read() == pinned, 'the running colour was re-pinned'
    rc, out, _ = deploy(c, 'deploy')
    assert 'Finishing the interrupted deploy' in out, out
    assert active_colour(c) == new
    assert c.run(['systemctl', 'is-active', f'batond@{old}'], check=False).stdout.strip() != 'active'


def nginx_shim(c, rule):
    """An nginx first in PATH whose -t fails when the shell test RULE holds
    for the upstream file ($U); otherwise the real one."""
    c.write('/usr/local/lib/baton-test/shim/nginx',
            '#!/bin/sh\nU=/etc/nginx/baton/upstream.conf\n'
            f'if [ "$1" = -t ] && {rule}; then echo "nginx: [emerg] refused by the test" >&2; exit 1; fi\n'
            'exec /usr/sbin/nginx "$@"\n', 0o755)
    return 'PATH=/usr/local/lib/baton-test/shim:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'


@test
def nginx_refusing_a_later_step_leaves_nginx_as_before(ctx):
    """nginx -t passing the 100/1 step and refusing the one with only the
    new colour: the upstream from before the deploy comes back (not the
    100/1 one), the serving colour is unchanged, the new one stopped. And a
    refused upstream never stays behind, even where the file was empty."""
    c = container()
    serving = active_colour(c)
    before = open(c.path('/etc/nginx/baton/upstream.conf')).read()
    path = nginx_shim(c, '[ "$(grep -c " server " $U)" = 1 ] && ! grep -q "weight=1;" $U && grep -q "# Managed" $U && '
                         f'! grep -q "# {serving}$" $U')
    r = c.run(['env', path, 'baton-deploy', 'deploy'], check=False)
    out = r.stdout + r.stderr
    print('\n'.join(f'#   | {l}' for l in out.strip().splitlines()[-6:]))
    assert r.returncode == 1 and 'nginx as before' in out, out
    assert open(c.path('/etc/nginx/baton/upstream.conf')).read() == before
    assert active_colour(c) == serving
    code = c.run(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', f'{NGINX}/api/v1/topics/x/events']).stdout
    assert code == '200', code

    # An empty upstream file, and an nginx that refuses everything.
    c.sh('cp -p /etc/nginx/baton/upstream.conf /tmp/upstream.saved && : > /etc/nginx/baton/upstream.conf')
    try:
        path = nginx_shim(c, 'true')
        r = c.run(['env', path, 'NGINX_UPSTREAM=/etc/nginx/baton/upstream.conf', 'bash', '-c',
                   '. <(sed -n "/^NGINX_RELOADS=0$/,/^nginx_write()/{/^nginx_write()/!p}" /usr/local/sbin/baton-deploy); '
                   'die() { echo "$*"; exit 1; }; nginx_try "upstream baton { server 127.0.0.1:1; }" || echo refused'],
                  check=False)
        assert 'refused' in r.stdout, r.stdout + r.stderr
        assert open(c.path('/etc/nginx/baton/upstream.conf')).read() == '', 'the refused upstream stayed'
        left = [f for f in os.listdir(c.path('/etc/nginx/baton')) if f.startswith('upstream.conf.')]
        assert not left, left
    finally:
        c.sh('cp -p /tmp/upstream.saved /etc/nginx/baton/upstream.conf')


def schema_rows(c):
    return c.run(['su', 'postgres', '-c', 'psql -Atq baton -c "SELECT version, name, additive FROM '
                  'schema_migrations ORDER BY version"']).stdout.split()


@test
def rollback_across_an_additive_migration_and_a_breaking_one_refused(ctx):
    """Release A (this build) serves; B adds a table (additive) and is
    deployed, then rolled back to A under load: 0 non-2xx, streams resume,
    A runs on the schema it does not fully know. C drops a column
    (breaking): deploying it is refused up front, nginx and the units
    untouched; with --allow-breaking the old colour goes first and C
    applies it, after which a rollback to A is refused, naming it."""
    c = container()
    if not active_colour(c):
        deploy(c, 'deploy')
    start = active_colour(c)
    n = len(schema_rows(c))
    b_bin, c_bin = '/usr/local/lib/baton-test/batond-release-additive', '/usr/local/lib/baton-test/batond-release-breaking'
    wrk = wrk_start(c, 40)
    traffic = c.popen(['python3', '/usr/local/lib/baton-test/traffic.py', NGINX, '40', '5'],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    rc, out, took = deploy(c, 'deploy', '--json', b_bin)
    report = json.loads(next(line for line in out.splitlines() if line.startswith('{')))
    print(f'# A -> B (additive) in {took:.1f}s: {report}')
    assert report['colour'] == other(start) and report['nginx_reloads'] == 2, report
    rows = schema_rows(c)
    assert len(rows) == n + 1 and rows[-1].endswith('|add_audit_log|t'), rows
    time.sleep(2)
    rc, out, took = deploy(c, 'rollback')
    assert active_colour(c) == start
    assert 'Summary: rollback' in out and 'resumed on' in out, out
    w = wrk_result(wrk)
    t = json.loads(traffic.communicate(timeout=120)[0])
    assert_clean(w, 'wrk through nginx across A -> B -> A', nginx_reloads=4)
    published, seen = t['published'], t['topic_stream']['ids']
    print(f'# rollback to A in {took:.1f}s; topic stream: {len(published)} published, {len(seen)} received, '
          f'{t["topic_stream"]["reconnects"]} reconnect(s)')
    # The topic has the earlier cases' events too: the stream starts from 0.
    assert not t.get('publish_errors') and seen == sorted(set(seen)), (t.get('publish_errors'), seen)
    assert [i for i in seen if i >= min(published)] == sorted(published), (published, seen)
    # (An earlier case may have turned the access log on: look far enough back.)
    log = c.run(['journalctl', '-u', f'batond@{start}', '-o', 'cat', '--no-pager', '-n', '50000']).stdout
    assert f'{n + 1:04d}_add_audit_log, which this batond does not know; it is additive' in log, log[-2000:]

    # C: refused up front.
    upstream = open(c.path('/etc/nginx/baton/upstream.conf')).read()
    idle = other(start)
    dropin = open(c.path(f'/etc/systemd/system/batond@{idle}.service.d/50-release.conf')).read()
    rc, out, _ = deploy(c, 'deploy', c_bin, check=False)
    breaking = f'{n + 2:04d}_drop_audit_log_note'
    assert rc == 1 and breaking in out and 'breaking' in out and 'nothing was changed' in out, out
    assert open(c.path('/etc/nginx/baton/upstream.conf')).read() == upstream
    assert open(c.path(f'/etc/systemd/system/batond@{idle}.service.d/50-release.conf')).read() == dropin
    assert active_colour(c) == start and len(schema_rows(c)) == n + 1

    # With --allow-breaking, under wrk: the old colour stops first.
    wrk = wrk_start(c, 15)
    time.sleep(2)
    rc, out, took = deploy(c, 'deploy', '--allow-breaking', c_bin)
    w = wrk_result(wrk)
    slowest = wrk_max_latency(w['raw'])
    print(f'# --allow-breaking A -> C in {took:.1f}s: wrk {w["requests"]} requests, {w["non2xx"]} non-2xx, '
          f'{w["socket_errors"]} socket errors, slowest {slowest:.2f} s')
    codes = c.sh("awk '{print $9}' /var/log/nginx/access.log | sort | uniq -c | sort -rn | head -5",
                 check=False).stdout
    print('# nginx access log, status codes: ' + ' '.join(codes.split()))
    assert active_colour(c) == idle and len(schema_rows(c)) == n + 2
    assert w['non2xx'] == 0, w['raw']
    assert not os.path.exists(c.path(f'/run/systemd/system/batond@{idle}.service.d/60-breaking.conf'))
    log = c.run(['journalctl', '-u', f'batond@{start}', '-o', 'cat', '--no-pager', '-n', '50000']).stdout
    last_run = log[[m.start() for m in re.finditer(r'batond \S+ starting', log)][-1]:]
    assert 'Received SIGINT' in last_run and 'Second stop signal' not in last_run, last_run[-2000:]
    rc, out, _ = deploy(c, 'rollback', check=False)
    assert rc == 1 and breaking in out and 'no longer allows' in out, out
    assert active_colour(c) == idle

    # Back to this build's schema and release for whatever follows.
    c.run(['su', 'postgres', '-c', f'psql -q baton -c "DELETE FROM schema_migrations WHERE version > {n}; '
           'DROP TABLE audit_log"'])
    deploy(c, 'deploy')
    assert active_colour(c) == start


if __name__ == '__main__':
    try:
        run()
    finally:
        CONTAINER.destroy()
