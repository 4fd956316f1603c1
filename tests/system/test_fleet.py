#!/usr/bin/env python3
"""A fleet, as users of several hosts behind a load balancer meet it:
three hosts (containers booting real systemd, tests/harness/fleet.py) on a
private bridge made for the test, set up by README.md's "Run it on a host"
as it is written (tests/harness/readme.py): host 1 by "The first host" and
the commands that let others join, hosts 2 and 3 by "Adding a host". So
each has the .deb installed by apt, batond blue/green behind its own nginx
and a node of a three-node NATS cluster; one PostgreSQL, on host 1.
Subscribers and publishers run on the bridge's side, as users outside the
hosts.

The cases run in order on the same fleet: delivery across hosts, a
rolling deploy of a new release (one more migration) with baton-fleet
under load, one NATS node lost, every NATS node lost, a host lost.

Needs root, systemd-nspawn, ip and the packaging tools (tools/package);
skips with the reason otherwise. BATON_BUILD_DIR names the build whose
release binary is rolled out (default: build/). As root, from the source
root:
    python3 -m tests.system.test_fleet -v [case ...]"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from tests.harness import Skip, run, test, wait_until
from tests.harness.container import Unavailable
from tests.harness.fleet import Fleet
from tests.harness.readme import walkthrough
from tests.harness.runner import Once, failure_notes

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, '..', '..')
BUILD = os.environ.get('BATON_BUILD_DIR', os.path.join(ROOT, 'build'))
TRAFFIC = os.path.join(HERE, '..', 'harness', 'fleet_traffic.py')
HOSTS = (1, 2, 3)
# After the README's setup, short intervals (reloadable), so that the test
# waits little, and a short drain for baton-deploy.
RESYNC = 2
TEST_CONF = f"""
# The fleet test's, after the walkthrough.
HEALTH_CHECK_INTERVAL=1s
STREAM_HEARTBEAT_INTERVAL=2s
STREAM_RESYNC_INTERVAL={RESYNC}s
"""
DEPLOY_CONF = 'DRAIN_TIMEOUT=6\nPROGRESS_EVERY=3\n'
NATS_NODES = ' '.join(Fleet.address(n) for n in HOSTS)
RELEASE = '/usr/local/lib/baton-test/batond-release-additive'
STATE = {}


# --- the fleet, booted once ----------------------------------------------------

def set_up_fleet():
    started = time.monotonic()
    deb = package()
    try:
        f = Fleet(len(HOSTS))
    except Unavailable as e:
        raise Skip(f'cannot boot systemd in containers here: {str(e).splitlines()[0][:200]}')
    STATE['fleet'] = f
    try:
        database_url = first_host(f, deb)
        for n in HOSTS[1:]:
            next_host(f, n, deb, database_url)
        for n in HOSTS:
            tune(f, n)
    except Exception:
        for n in HOSTS:
            print(f'# host {n}:\n{f.host(n).diagnostics()}')
        raise
    failure_notes.append(lambda: '\n'.join(f'host {n}:\n{f.host(n).diagnostics()}' for n in HOSTS))
    print(f'# three hosts booted and set up by the README in {time.monotonic() - started:.0f}s')
    return f


FLEET = Once('the fleet setup', ('systemd-nspawn', 'nsenter', 'ip', 'dpkg-buildpackage'), set_up_fleet)


def fleet():
    return FLEET.get()


def package():
    """The .deb of this tree, built once (without its own test run)."""
    out = tempfile.mkdtemp(prefix='baton-fleet-pkg-')
    STATE['pkg'] = out
    r = subprocess.run([os.path.join(ROOT, 'tools', 'package'), '--out', out, 'deb'],
                       capture_output=True, text=True, env=dict(os.environ, DEB_BUILD_OPTIONS='nocheck'))
    if r.returncode != 0:
        raise AssertionError(f'tools/package deb: {r.stderr[-3000:]}')
    debs = [p for p in os.listdir(out) if re.match(r'baton_[^_]+_\w+\.deb$', p)]
    assert len(debs) == 1, os.listdir(out)
    return os.path.join(out, debs[0])


def prepare(f, n, deb):
    """What the test brings to a host before the README's commands: the
    package and the release to roll out, apt answering yes, and no
    PostgreSQL where the walkthrough puts none (the containers share this
    machine's installed packages)."""
    c = f.host(n)
    shutil.copy(deb, c.path('/root/'))
    with open(os.path.join(BUILD, 'tests', 'system', 'batond-release-additive'), 'rb') as src:
        data = src.read()
    c.write(RELEASE, '', 0o755)
    with open(c.path(RELEASE), 'wb') as dst:
        dst.write(data)
    if os.path.lexists(c.path('/usr/sbin/policy-rc.d')):
        os.unlink(c.path('/usr/sbin/policy-rc.d'))
    c.write('/etc/apt/apt.conf.d/90baton-test', 'APT::Get::Assume-Yes "true";\n')
    if n != 1:
        c.sh('systemctl disable -q --now postgresql', check=False)
    return f'/root/{os.path.basename(deb)}'


def readme_block(f, n, name, variables=None, deb=None):
    """Runs README.md's walkthrough NAME on host n as it is written."""
    started = time.monotonic()
    r = f.host(n).run(['bash', '-euo', 'pipefail', '-c', walkthrough(name, variables, deb)],
                      check=False, timeout=300)
    print(f'# host {n}: README walkthrough "{name}" in {time.monotonic() - started:.1f}s, '
          f'exit {r.returncode}')
    assert r.returncode == 0, f'host {n}: walkthrough {name}: {r.stdout[-2000:]} {r.stderr[-2000:]}'
    return r.stdout


def first_host(f, deb):
    """The first host, then the commands that let the others join; returns
    the DATABASE_URL line it prints for them."""
    path = prepare(f, 1, deb)
    readme_block(f, 1, 'first-host', deb=path)
    out = readme_block(f, 1, 'first-host-allow', {
        'FIRST': Fleet.address(1), 'NETWORK': f'{Fleet.address(0)}/24', 'NATS_NODES': NATS_NODES})
    lines = re.findall(r'^DATABASE_URL=(\S+)$', out, re.M)
    assert len(lines) == 1 and Fleet.address(1) in lines[0], out[-1000:]
    return lines[0]


def next_host(f, n, deb, database_url):
    """A host joining: the signing key copied from the first host (the
    README's scp, here through this machine), then its walkthrough."""
    path = prepare(f, n, deb)
    with open(f.host(1).path('/etc/baton/nats-signing-key')) as src:
        f.host(n).write('/root/nats-signing-key', src.read(), 0o600)
    readme_block(f, n, 'next-host', {
        'SELF': Fleet.address(n), 'FIRST': Fleet.address(1), 'NATS_NODES': NATS_NODES,
        'DATABASE_URL': database_url, 'KEY_FROM': '/root/nats-signing-key'}, deb=path)


def tune(f, n):
    c = f.host(n)
    with open(c.path('/etc/baton/batond.conf'), 'a') as conf:
        conf.write(TEST_CONF)
    c.write('/etc/baton/deploy.conf', DEPLOY_CONF)
    c.run(['systemctl', 'reload', f'batond@{serving(f, n)}'])


def deploy(f, n, *args):
    r = f.host(n).run(['baton-deploy', 'deploy'] + list(args), check=False, timeout=300)
    assert r.returncode == 0, f'host {n}: baton-deploy deploy: {r.stdout[-2000:]} {r.stderr[-2000:]}'
    return r.stdout


# --- what the users see -----------------------------------------------------

def traffic(f, cfg):
    """Starts fleet_traffic.py on the bridge's side; returns the process
    once every subscriber has its stream."""
    p = f.client(['python3', TRAFFIC, json.dumps(cfg)], stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    assert line.strip() == 'connected', f'the subscribers did not connect: {line}{p.stderr.read()[-2000:]}'
    return p


def finish(p, timeout=300):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f'fleet_traffic.py failed ({p.returncode}): {err[-3000:]}'
    return json.loads(out)


def assert_exactly_once(result, what, first=1):
    """Every group saw every acknowledged id once, in order, and nothing
    else; no publish failed."""
    acked = result['acked']
    print(f'# {what}: {len(acked)} publishes acknowledged, {len(result["failures"])} failed '
          f'{result["failures"][:5]}, {len(result["retried"])} sent again on a new connection after '
          f'nginx closed a kept-alive one unanswered (with the same Idempotency-Key)')
    assert acked and not result['failures'], result['failures'][:3]
    assert acked == list(range(first, first + len(acked))), f'ids not contiguous: {acked[:10]}...'
    want = [[[first, acked[-1]]], None]
    for name, g in sorted(result['groups'].items()):
        lat = g['latency_ms']
        print(f'#   {name}: {g["subscribers"]} subscribers, histories {[r[0] for r in g["runs"]][:3]}, '
              f'reconnects {g["reconnects"]}, host moves {g["moves"]}, events {g["events"]}, '
              f'latency p50 {fmt(lat["p50"])} p99 {fmt(lat["p99"])} max {fmt(lat["max"])} ms')
        assert len(g['runs']) == 1 and g['runs'][0][0] == want[0], (name, g['runs'][:3], g['errors'])


def fmt(ms):
    return '-' if ms is None else f'{ms:.1f}'


def ready(f, n, colour=None):
    """Host n's serving colour's readiness, from its own probe."""
    port = {'blue': 8080, 'green': 8081}[colour or serving(f, n)]
    r = f.host(n).run(['curl', '-s', '--max-time', '5', f'http://127.0.0.1:{port}/_/health/ready'],
                      check=False)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {'status': f'no answer ({r.returncode})'}


def serving(f, n):
    for colour in ('blue', 'green'):
        if f.host(n).run(['systemctl', 'is-active', '--quiet', f'batond@{colour}'],
                         check=False).returncode == 0:
            return colour
    raise AssertionError(f'host {n}: no colour serves')


def groups(f, subscribers, hosts=HOSTS):
    """Subscribers attached to each host's nginx, with the other hosts to
    move to, as a client with a list of endpoints does."""
    return [{'name': f'host{n}', 'subscribers': subscribers,
             'hosts': [f.url(n)] + [f.url(m) for m in HOSTS if m != n]} for n in hosts]


# --- the cases ------------------------------------------------------------------

@test
def events_published_on_one_host_reach_every_host_once_in_order(ctx):
    f = fleet()
    p = traffic(f, {'topic': 'across', 'seconds': 6, 'settle': 10,
                    'groups': groups(f, 5, hosts=(2, 3)),
                    'publish': {'hosts': [f.url(1)], 'workers': 4, 'interval': 0.02}})
    assert_exactly_once(finish(p), 'published on host 1, read on hosts 2 and 3')


@test
def a_rolling_deploy_across_hosts_under_load_loses_nothing(ctx):
    f = fleet()
    before = {n: serving(f, n) for n in HOSTS}
    p = traffic(f, {'topic': 'rolling', 'seconds': 300, 'settle': 15,
                    'groups': groups(f, 4),
                    'publish': {'hosts': [f.url(n) for n in HOSTS], 'workers': 3, 'interval': 0.05}})
    time.sleep(2)
    transport = f.ssh_command(ctx.tmp.path)
    started = time.monotonic()
    r = subprocess.run([os.path.join(ROOT, 'tools', 'baton-fleet'), 'deploy', '--binary', RELEASE]
                       + [Fleet.address(n) for n in HOSTS],
                       env=dict(os.environ, BATON_FLEET_SSH=transport),
                       capture_output=True, text=True, timeout=600)
    took = time.monotonic() - started
    for line in (r.stdout + r.stderr).splitlines():
        if not line.startswith('[10.87'):
            print(f'#   | {line}')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    time.sleep(2)
    p.send_signal(10)                        # SIGUSR1: stop publishing, settle
    result = finish(p)
    print(f'# baton-fleet deploy across 3 hosts: {took:.0f}s')
    assert_exactly_once(result, 'during the rolling deploy')
    for n in HOSTS:
        now = serving(f, n)
        assert now != before[n], f'host {n} still on {now}'
        exec_start = f.host(n).run(['systemctl', 'show', '-p', 'ExecStart', '--value',
                                    f'batond@{now}']).stdout
        assert '/var/lib/baton-deploy/releases/' in exec_start, exec_start
    reports = re.findall(r'^\[INFO\] (10\.87\.0\.\d): deploy to', r.stdout, re.M)
    assert reports == [Fleet.address(n) for n in HOSTS], r.stdout


@test
def baton_fleet_stops_at_the_first_host_that_fails(ctx):
    f = fleet()
    transport = f.ssh_command(ctx.tmp.path)
    env = dict(os.environ, BATON_FLEET_SSH=transport)
    before = {n: serving(f, n) for n in HOSTS}
    # An unknown host: refused before anything is touched.
    r = subprocess.run([os.path.join(ROOT, 'tools', 'baton-fleet'), 'deploy', Fleet.address(1),
                        '10.87.0.9'], env=env, capture_output=True, text=True, timeout=120)
    print(f'# an unreachable host: exit {r.returncode}: {r.stderr.strip()}')
    assert r.returncode == 1 and '10.87.0.9' in r.stderr and 'no host was touched' in r.stderr
    assert {n: serving(f, n) for n in HOSTS} == before
    # Host 2 has no such binary: host 1 deploys, host 2 fails, 3 is untouched.
    f.host(2).run(['mv', RELEASE, RELEASE + '.away'])
    try:
        r = subprocess.run([os.path.join(ROOT, 'tools', 'baton-fleet'), 'deploy', '--binary', RELEASE]
                           + [Fleet.address(n) for n in HOSTS], env=env, capture_output=True,
                           text=True, timeout=600)
    finally:
        f.host(2).run(['mv', RELEASE + '.away', RELEASE])
    print(f'# host 2 failing: exit {r.returncode}: {r.stderr.strip().splitlines()[-1]}')
    assert r.returncode == 1, r.stdout + r.stderr
    assert f'failed on {Fleet.address(2)}' in r.stderr and f'Not touched: {Fleet.address(3)}' in r.stderr
    after = {n: serving(f, n) for n in HOSTS}
    assert after[1] != before[1] and after[2] == before[2] and after[3] == before[3], (before, after)


@test
def losing_one_nats_node_changes_nothing_visible(ctx):
    f = fleet()
    p = traffic(f, {'topic': 'one-node-down', 'seconds': 12, 'settle': 10,
                    'groups': groups(f, 3),
                    'publish': {'hosts': [f.url(n) for n in HOSTS], 'workers': 3, 'interval': 0.05}})
    time.sleep(2)
    # systemctl kill fails inside nspawn (cgroup kill); the main process it is.
    pid = f.host(2).run(['systemctl', 'show', '-p', 'MainPID', '--value', 'nats-server']).stdout.strip()
    f.host(2).run(['kill', '-KILL', pid])
    down = time.monotonic()
    statuses = []
    while time.monotonic() - down < 6:
        statuses.append({n: ready(f, n)['status'] for n in HOSTS})
        time.sleep(0.5)
    result = finish(p)
    f.host(2).run(['systemctl', 'start', 'nats-server'])
    red = [s for s in statuses if set(s.values()) != {'UP'}]
    print(f'# host 2\'s NATS node killed: {len(statuses)} readiness samples of 3 hosts, '
          f'{len(red)} not all UP')
    assert not red, red[:3]
    assert_exactly_once(result, 'with host 2\'s NATS node killed')
    # Host 2's instance moved to another node (nats.c's server pool).
    conns = json.loads(f.host(1).run(['curl', '-s', 'http://127.0.0.1:8222/connz']).stdout)
    conns3 = json.loads(f.host(3).run(['curl', '-s', 'http://127.0.0.1:8222/connz']).stdout)
    print(f'# C clients on node 1: {sum(c.get("lang") == "C" for c in conns["connections"])}, '
          f'node 3: {sum(c.get("lang") == "C" for c in conns3["connections"])}')
    assert sum(c.get('lang') == 'C' for c in conns['connections'] + conns3['connections']) >= 3


@test
def losing_every_nats_node_falls_back_to_the_database(ctx):
    f = fleet()
    p = traffic(f, {'topic': 'no-nats', 'seconds': 12, 'settle': 3 * RESYNC + 5,
                    'groups': groups(f, 3),
                    'publish': {'hosts': [f.url(n) for n in HOSTS], 'workers': 3, 'interval': 0.1}})
    time.sleep(1)
    for n in HOSTS:
        f.host(n).run(['systemctl', 'stop', 'nats-server'])
    reasons = {}
    for n in HOSTS:
        wait_until(lambda: ready(f, n)['status'] != 'UP', 15, what=f'host {n} readiness turns red')
        reasons[n] = ready(f, n)
    result = finish(p)
    for n in HOSTS:
        f.host(n).run(['systemctl', 'start', 'nats-server'])
    print(f'# every NATS node stopped: readiness {json.dumps(reasons[1])[:300]}')
    for n in HOSTS:
        assert 'nats' in json.dumps(reasons[n]).lower(), reasons[n]
    assert_exactly_once(result, f'with no NATS node (resync every {RESYNC}s)')
    worst = max(g['latency_ms']['max'] for g in result['groups'].values())
    assert worst < 3 * RESYNC * 1000, f'an event took {worst:.0f} ms with the resync every {RESYNC}s'
    for n in HOSTS:
        wait_until(lambda: ready(f, n)['status'] == 'UP', 30, what=f'host {n} ready again')


@test
def losing_a_host_its_clients_resume_on_another(ctx):
    f = fleet()
    # Publishing to hosts 1 and 2 only: host 3 is the one that goes.
    p = traffic(f, {'topic': 'host-lost', 'seconds': 20, 'settle': 15, 'heartbeat_timeout': 6,
                    'groups': groups(f, 3, hosts=(3, 2)),
                    'publish': {'hosts': [f.url(1), f.url(2)], 'workers': 2, 'interval': 0.05}})
    time.sleep(3)
    cut = time.time()
    f.cut(3)
    try:
        result = finish(p)
    finally:
        f.mend(3)
    assert_exactly_once(result, 'host 3 cut off the network')
    # Instances that were on host 3's NATS node notice it by pings.
    for n in (1, 2):
        unit = f'batond@{serving(f, n)}.service'
        out = f.host(n).run(['journalctl', '-u', unit, '-o', 'json', '--no-pager', '-n', '300']).stdout
        lost = [int(r['__REALTIME_TIMESTAMP']) / 1e6 - cut for r in map(json.loads, out.splitlines())
                if str(r.get('MESSAGE', '')).startswith('Lost the NATS connection')
                and int(r['__REALTIME_TIMESTAMP']) / 1e6 > cut]
        print(f'# host {n}: ' + (f'left host 3\'s NATS node {lost[0]:.1f}s after the cut' if lost
                                 else 'was not on host 3\'s NATS node'))
    g = result['groups']['host3']
    assert g['moves'] >= g['subscribers'], g


def teardown():
    """The containers, the network and the package: nothing is left."""
    if 'fleet' in STATE:
        STATE.pop('fleet').destroy()
    if 'pkg' in STATE:
        shutil.rmtree(STATE.pop('pkg'), ignore_errors=True)


if __name__ == '__main__':
    try:
        run()
    finally:
        teardown()
