#!/usr/bin/env python3
"""The packages, as an operator meets them: the .deb built by
tools/package is installed with apt into a container booted with real
systemd, set up and deployed by README.md's "The first host" run as
written (baton-deploy init), serves through nginx, is upgraded to a
rebuild with a higher version while a colour carries a stream, then
removed and purged. The rpm built from rpm/baton.spec is compared with
the .deb: files, configuration markings and what the scriptlets do.

Needs root, systemd-nspawn, dpkg-buildpackage and rpmbuild; skips with the
reason otherwise. As root, from the source root:
    python3 -m tests.system.test_package -v [case ...]"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from tests.harness import run, test
from tests.harness.runner import Once
from tests.harness.container import Shared
from tests.harness.readme import walkthrough

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, '..', '..')

# The walkthrough's nginx: the example site on port 80 (the container has
# a network namespace of its own).
NGINX = 'http://127.0.0.1'
UPGRADE_VERSION = '0.1.0+rebuild1'
SHARED = {}


def build_packages():
    """Builds the .deb and .rpm once, and a .deb with a higher version."""
    out = tempfile.mkdtemp(prefix='baton-pkg-')
    SHARED['out'] = out
    started = time.monotonic()
    for args in (['--out', f'{out}/first', 'all'],
                 ['--out', f'{out}/next', '--version', UPGRADE_VERSION, 'deb']):
        r = subprocess.run([os.path.join(ROOT, 'tools', 'package')] + args,
                           capture_output=True, text=True, env=dict(os.environ, DEB_BUILD_OPTIONS='nocheck')
                           if '--version' in args else None)
        if r.returncode != 0:
            raise AssertionError(f'tools/package {" ".join(args)}: {r.stderr[-3000:]}')
        for line in r.stdout.splitlines() + r.stderr.splitlines():
            if re.match(r'^[EW]: ', line):
                print(f'# lintian/rpmlint: {line}')
    pkg = {
        'deb': only(f'{out}/first', r'baton_[^_]+_\w+\.deb$'),
        'dbgsym': only(f'{out}/first', r'baton-dbgsym_.*\.deb$'),
        'rpm': only(f'{out}/first', r'baton-\d[^/]*\.x86_64\.rpm$|baton-\d[^/]*\.\w+\.rpm$'),
        'next': only(f'{out}/next', r'baton_[^_]+_\w+\.deb$'),
    }
    print(f'# built .deb, dbgsym .deb, .rpm and the {UPGRADE_VERSION} .deb '
          f'in {time.monotonic() - started:.0f}s')
    return pkg


PACKAGES = Once('building the packages', ('dpkg-buildpackage', 'lintian', 'rpmbuild', 'rpmlint'),
                build_packages)


def packages():
    return PACKAGES.get()


def only(directory, pattern):
    found = [f for f in os.listdir(directory) if re.search(pattern, f) and 'debuginfo' not in f
             and 'debugsource' not in f]
    assert len(found) == 1, (directory, pattern, os.listdir(directory))
    return os.path.join(directory, found[0])


def container():
    packages()
    return CONTAINER.get()


def prepare(c):
    pkg = packages()
    # Only what this test starts: the host's services in the image stay off.
    c.sh('systemctl stop nats-server nginx 2>/dev/null; true', check=False)
    # A build machine's policy-rc.d (Docker-style "exit 101") forbids
    # maintainer scripts to start or stop services; the container plays a
    # production host, which has none.
    if os.path.lexists(c.path('/usr/sbin/policy-rc.d')):
        os.unlink(c.path('/usr/sbin/policy-rc.d'))
    # README's "apt install" as an operator answers it: yes, and keep my
    # edited configuration files.
    c.write('/etc/apt/apt.conf.d/90baton-test',
            'APT::Get::Assume-Yes "true";\nDpkg::Options { "--force-confold"; };\n')
    for key in ('deb', 'next'):
        with open(pkg[key], 'rb') as src, open(c.path(f'/root/{os.path.basename(pkg[key])}'), 'wb') as dst:
            shutil.copyfileobj(src, dst)


CONTAINER = Shared('baton-package', ('systemd-nspawn', 'nsenter'), prepare)


def apt(c, *args):
    r = c.run(['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', '-y', '-q',
               '-o', 'Dpkg::Options::=--force-confold'] + list(args), check=False, timeout=300)
    assert r.returncode == 0, f'apt-get {" ".join(args)}: {r.stdout[-2000:]} {r.stderr[-2000:]}'
    return r.stdout + r.stderr


def main_pid(c, unit):
    return c.run(['systemctl', 'show', '-p', 'MainPID', '--value', unit]).stdout.strip()


@test
def deb_installs_with_apt_and_starts_nothing(ctx):
    c = container()
    deb = os.path.basename(packages()['deb'])
    started = time.monotonic()
    apt(c, 'install', f'/root/{deb}')
    print(f'# apt-get install ./{deb}: {time.monotonic() - started:.1f}s')
    assert c.run(['dpkg-query', '-W', '-f=${Status} ${Version}', 'baton']).stdout == \
        'install ok installed 0.1.0'
    for unit in ('batond.socket', 'batond.service', 'batond@blue.socket', 'batond@green.socket'):
        enabled = c.run(['systemctl', 'is-enabled', unit], check=False).stdout.strip()
        active = c.run(['systemctl', 'is-active', unit], check=False).stdout.strip()
        assert active == 'inactive' and enabled in ('disabled', 'indirect', 'static', ''), \
            (unit, enabled, active)
    assert c.run(['pgrep', '-x', 'batond'], check=False).returncode == 1, 'batond runs after install'
    # The user, and its directories from tmpfiles.d.
    assert c.run(['getent', 'passwd', 'baton']).stdout.split(':')[5] == '/var/lib/baton'
    assert c.run(['stat', '-c', '%a %U %G', '/etc/baton']).stdout.split() == ['750', 'root', 'baton']
    assert c.run(['stat', '-c', '%a %U %G', '/var/lib/baton']).stdout.split() == ['750', 'baton', 'baton']
    conffiles = c.run(['dpkg-query', '-W', '-f=${Conffiles}', 'baton']).stdout
    assert '/etc/baton/batond.conf' in conffiles, conffiles
    # The shipped configuration parses as it is: every key commented out.
    r = c.run(['batond', '--config', '/etc/baton/batond.conf', '--check-config'], check=False)
    keys_named = re.findall(r'\b[A-Z][A-Z_]{3,}\b', r.stdout + r.stderr)
    assert set(keys_named) <= {'DATABASE_URL'}, r.stdout + r.stderr
    # Man pages, found by man, and units verified with them (--man=yes).
    pages = c.run(['man', '-w', 'batond', 'batond.conf', 'baton-deploy', 'baton-fleet']).stdout.split()
    assert len(pages) == 4, pages
    units = ['batond.socket', 'batond.service', 'batond@blue.socket', 'batond@blue.service',
             'batond@green.socket', 'batond@green.service']
    r = c.run(['systemd-analyze', 'verify'] + units, check=False)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


# What init writes or might: its files, their modes, owners, times and
# contents (and where links point).
INIT_TARGETS = '/etc/baton /etc/nginx /var/lib/baton-deploy/created'


def snapshot(c):
    return c.sh(f"find {INIT_TARGETS} \\( -type f -o -type l \\) -printf '%p %m %u %g %T@ %l\\n' | sort; "
                f"find {INIT_TARGETS} -type f -print0 | sort -z | xargs -0 sha256sum").stdout


def http_code(c, *args):
    """The status code curl got, 000 for none."""
    return c.run(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '30'] + list(args),
                 check=False).stdout


@test
def first_host_walkthrough_serves_through_nginx(ctx):
    """README.md's "The first host", run with bash -euxo pipefail as it is
    written: apt install, baton-deploy init --local-database, baton-deploy
    deploy, curl through nginx. Then what its reader would check, and that
    init keeps what is there: run again, it changes nothing; with the
    operator's own DATABASE_URL, it keeps that; with a role baton that it
    does not know the password of, it refuses and changes nothing."""
    c = container()
    deb = '/root/' + os.path.basename(packages()['deb'])
    started = time.monotonic()
    r = c.run(['bash', '-euxo', 'pipefail', '-c', walkthrough('first-host', deb=deb)],
              check=False, timeout=300)
    out = r.stdout + r.stderr
    print(f'# README "The first host" ran in {time.monotonic() - started:.1f}s, exit {r.returncode}')
    assert r.returncode == 0, out[-4000:]
    assert re.search(r'^\[INFO\] Done in .*: blue serves release', out, re.M), out[-3000:]
    assert '"id":1' in r.stdout, r.stdout[-2000:]
    assert c.run(['systemctl', 'is-active', 'batond@blue']).stdout.strip() == 'active'
    assert c.run(['systemctl', 'is-active', 'nginx']).stdout.strip() == 'active'
    user = c.run(['ps', '-o', 'user=', '-p', main_pid(c, 'batond@blue')]).stdout.strip()
    assert user == 'baton', user

    # What a user checks: a publish through nginx, then the event in the
    # history and on a stream (replayed from id 0).
    r = c.run(['curl', '-s', '-w', '\\n%{http_code}', '--max-time', '30', '-H', 'Content-Type: application/json',
               '-d', '{"walkthrough":true}', f'{NGINX}/api/v1/topics/walkthrough/events'])
    body, code = r.stdout.rsplit('\n', 1)
    assert code == '201', r.stdout
    event_id = json.loads(body)['id']
    history = json.loads(c.run(['curl', '-sf', '--max-time', '30',
                                f'{NGINX}/api/v1/topics/walkthrough/events']).stdout)
    assert [(e['id'], e['data']) for e in history['events']] == [(event_id, {'walkthrough': True})], history
    stream = c.run(['curl', '-sN', '--max-time', '5', '-H', 'Last-Event-ID: 0',
                    f'{NGINX}/api/v1/topics/walkthrough/stream'], check=False).stdout
    assert f'id: {event_id}\n' in stream and '"data":{"walkthrough":true}' in stream, stream
    # The probes are not public through the example site.
    assert http_code(c, f'{NGINX}/_/health/ready') == '404'
    token = c.run(['stat', '-c', '%a %U %G %s', '/etc/baton/deployment-token']).stdout.split()
    assert token[:3] == ['640', 'root', 'baton'] and int(token[3]) > 0, token
    conf = open(c.path('/etc/baton/batond.conf')).read()
    assert re.search(r'^DATABASE_URL=postgres://baton:[0-9a-f]{48}@127\.0\.0\.1:5432/baton$', conf, re.M), conf
    print('# served: publish 201 through nginx, the event in the history and on a stream; '
          'deployment token 0640 root:baton')

    # Again: nothing changes, every step says "kept".
    before = snapshot(c)
    r = c.run(['baton-deploy', 'init', '--local-database'], check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    kept = re.findall(r'^\[INFO\] kept ', r.stdout, re.M)
    changed = re.findall(r'^\[INFO\] (?:added|installed|enabled|disabled|set|raised|created|wrote|generated|reloaded|started) .*',
                         r.stdout, re.M)
    assert not changed and len(kept) >= 6, r.stdout + r.stderr
    assert snapshot(c) == before, 'a second init changed files'
    print(f'# init again: exit 0, {len(kept)} "kept" lines, no file changed')

    # The operator's own DATABASE_URL: kept, whatever init is asked, and
    # its password never printed.
    operator = 'DATABASE_URL=postgres://theirs:s3cret@192.0.2.10:5432/theirs\n'
    c.write('/etc/baton/operator.conf', operator, 0o640)
    for args in (['--local-database'], ['--database-url', 'postgres://baton:other@127.0.0.1:5432/baton']):
        r = c.run(['env', 'BATON_DEPLOY_CONF=/dev/null', 'BATOND_CONF=/etc/baton/operator.conf',
                   'baton-deploy', 'init'] + args, check=False, timeout=120)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and 'kept DATABASE_URL' in out and 's3cret' not in out, out
        assert open(c.path('/etc/baton/operator.conf')).read() == operator
    # A role baton whose password init cannot know: refused, nothing written.
    c.write('/etc/baton/operator.conf', '', 0o640)
    r = c.run(['env', 'BATOND_CONF=/etc/baton/operator.conf', 'baton-deploy', 'init', '--local-database'],
              check=False, timeout=120)
    assert r.returncode == 1 and 'already has a role baton' in r.stderr, r.stdout + r.stderr
    assert open(c.path('/etc/baton/operator.conf')).read() == ''
    os.unlink(c.path('/etc/baton/operator.conf'))
    assert snapshot(c) == before, 'init changed files it should have kept'
    print("# init keeps the operator's DATABASE_URL, and refuses a role it did not make")


@test
def a_reboot_comes_back_serving(ctx):
    """The host reboots after the walkthrough's deploy: the colour nginx
    sends to starts at boot on the release pinned to it, the other stays
    down, and the event published before is served through nginx."""
    c = container()
    enabled = {u: c.run(['systemctl', 'is-enabled', u], check=False).stdout.strip()
               for u in ('batond@blue.service', 'batond@blue.socket', 'batond@green.service',
                         'batond@green.socket')}
    print(f'# before the reboot: {enabled}')
    assert enabled['batond@blue.service'] == enabled['batond@blue.socket'] == 'enabled', enabled
    assert 'enabled' not in (enabled['batond@green.service'], enabled['batond@green.socket']), enabled
    def release():
        exec_start = c.run(['systemctl', 'show', '-p', 'ExecStart', '--value', 'batond@blue']).stdout
        return re.search(r'path=(\S+)', exec_start).group(1)
    before = release()
    assert '/var/lib/baton-deploy/releases/' in before, before
    started = time.monotonic()
    c.reboot()
    booted = time.monotonic()
    c.sh(f'until curl -sf {NGINX}/api/v1/topics/walkthrough/events >/dev/null; do sleep 0.2; done',
         timeout=90)
    print(f'# rebooted ({c.state}) in {booted - started:.1f}s (poweroff and boot); serving through '
          f'nginx {time.monotonic() - booted:.1f}s after the boot')
    assert c.run(['systemctl', 'is-active', 'batond@blue']).stdout.strip() == 'active'
    assert c.run(['systemctl', 'is-active', 'batond@green'], check=False).stdout.strip() != 'active'
    assert release() == before, (release(), before)
    history = json.loads(c.run(['curl', '-s', f'{NGINX}/api/v1/topics/walkthrough/events']).stdout)
    assert [e['data'] for e in history['events']] == [{'walkthrough': True}], history


@test
def upgrade_keeps_a_running_colour_and_its_stream(ctx):
    c = container()
    next_deb = os.path.basename(packages()['next'])
    # Blue serves, deployed by the walkthrough; the single instance runs
    # next to it on 8090 (blue has 8080), socket-activated.
    assert c.run(['systemctl', 'is-active', 'batond@blue']).stdout.strip() == 'active'
    c.write('/etc/systemd/system/batond.socket.d/port.conf',
            '[Socket]\nListenStream=\nListenStream=127.0.0.1:8090\n')
    c.run(['systemctl', 'daemon-reload'])
    c.run(['systemctl', 'start', 'batond.socket'])
    started = time.monotonic()
    # The first connection starts batond (socket activation). Until it is
    # ready (migrations ran, checks passed) it answers probes, and the API
    # with 503 not_ready: wait for ready.
    c.sh('until curl -sf http://127.0.0.1:8090/_/health/ready >/dev/null; do sleep 0.1; done', timeout=30)
    print(f'# socket-activated batond ready {time.monotonic() - started:.2f}s after the first connection')
    assert c.run(['systemctl', 'is-active', 'batond.service']).stdout.strip() == 'active'
    blue_pid, single_pid = main_pid(c, 'batond@blue'), main_pid(c, 'batond.service')

    stream = c.popen(['curl', '-sN', '--max-time', '60', f'{NGINX}/stream/test?duration=15'],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    # Requests at the single instance all through the upgrade: its restart
    # must refuse none (systemd keeps the socket).
    probes = c.popen(['sh', '-c', 'for i in $(seq 150); do curl -s -o /dev/null -w "%{http_code}\\n" '
                      '--max-time 10 http://127.0.0.1:8090/_/health/live; sleep 0.05; done'],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(3)
    started = time.monotonic()
    out = apt(c, 'install', f'/root/{next_deb}')
    print(f'# upgrade to {UPGRADE_VERSION} took {time.monotonic() - started:.1f}s')
    assert c.run(['dpkg-query', '-W', '-f=${Version}', 'baton']).stdout == UPGRADE_VERSION, out

    codes = probes.communicate(timeout=120)[0].split()
    text = stream.communicate(timeout=90)[0]
    ticks = [int(t) for t in re.findall(r'^id: (\d+)$', text, re.M)]
    print(f'# blue stream across the upgrade: {len(ticks)} ticks, '
          f'ended cleanly: {"event: end" in text}; blue pid {blue_pid} -> {main_pid(c, "batond@blue")}')
    assert ticks == list(range(1, 16)) and 'event: end' in text, text[-500:]
    assert main_pid(c, 'batond@blue') == blue_pid, 'the upgrade restarted blue'
    assert c.run(['systemctl', 'is-active', 'batond@blue']).stdout.strip() == 'active'
    assert '/var/lib/baton-deploy/releases/' in c.run(
        ['systemctl', 'show', '-p', 'ExecStart', '--value', 'batond@blue']).stdout

    bad = [code for code in codes if code != '200']
    new_single = main_pid(c, 'batond.service')
    print(f'# single instance across the upgrade: {len(codes)} requests, {len(bad)} not 200; '
          f'pid {single_pid} -> {new_single}')
    assert len(codes) == 150 and not bad, codes
    assert new_single not in ('0', single_pid), 'batond.service was not restarted by the upgrade'
    # The operator's edits survive in the conffile.
    assert 'DATABASE_URL=postgres://baton' in open(c.path('/etc/baton/batond.conf')).read()


@test
def remove_then_purge_leaves_nothing(ctx):
    c = container()
    apt(c, 'remove', 'baton')
    assert c.run(['pgrep', '-x', 'batond'], check=False).returncode == 1, \
        c.run(['pgrep', '-a', 'batond'], check=False).stdout
    # Nothing running and no unit file behind any unit. systemd keeps a
    # stopped unit's object ("not-found inactive dead") until it collects
    # it, which a busy machine may not have done yet: that one is gone.
    def left():
        units = c.run(['systemctl', 'list-units', '--all', '--plain', '--no-legend', 'batond*']).stdout
        return [u for u in units.splitlines() if u.split()[1:3] != ['not-found', 'inactive']]
    assert not left(), left()
    assert os.path.exists(c.path('/etc/baton/batond.conf')), 'remove must keep the configuration'
    assert c.run(['getent', 'passwd', 'baton'], check=False).returncode == 0

    apt(c, 'purge', 'baton')
    # The nginx files init created, unchanged, go too (debian/baton.postrm);
    # nginx goes on without them.
    left = [p for p in ('/etc/baton', '/var/lib/baton', '/var/lib/baton-deploy',
                        '/etc/systemd/system/batond@blue.service.d', '/usr/sbin/batond',
                        '/lib/systemd/system/batond@.service', '/usr/lib/sysusers.d/baton.conf',
                        '/usr/share/baton', '/etc/nginx/sites-available/baton',
                        '/etc/nginx/sites-enabled/baton', '/etc/nginx/baton',
                        '/etc/nginx/modules-enabled/90-baton-limits.conf')
            if os.path.lexists(c.path(p))]
    assert not left, left
    c.run(['nginx', '-t'])
    assert c.run(['systemctl', 'is-active', 'nginx']).stdout.strip() == 'active'
    # No site left to answer port 80 (the default one stays disabled).
    assert http_code(c, f'{NGINX}/api/v1/topics/walkthrough/events') in ('000', '404'), \
        'nginx still proxies to Baton'
    assert c.run(['getent', 'passwd', 'baton'], check=False).returncode == 2, 'user baton left'
    assert c.run(['getent', 'group', 'baton'], check=False).returncode == 2, 'group baton left'
    files = c.run(['systemctl', 'list-unit-files', '--no-legend', 'batond*'], check=False).stdout
    assert not files.strip(), files
    assert c.run(['dpkg-query', '-W', 'baton'], check=False).returncode != 0
    print('# after purge: no process, unit, file, user or group named baton')


# --- the rpm against the deb -------------------------------------------------

def deb_files(deb):
    out = subprocess.run(['dpkg-deb', '-c', deb], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].lstrip('.') for line in out.splitlines() if not line.startswith('d')}


def rpm_files(rpm):
    out = subprocess.run(['rpm', '-qp', '--qf', '[%{FILEMODES:perms} %{FILENAMES}\n]', rpm],
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if not line.startswith('d')}


def normalised(paths):
    """The same file under each distribution's conventions: units in /lib on
    Debian 12 and /usr/lib on Fedora; compression of docs and man pages."""
    return {re.sub(r'\.gz$', '', re.sub(r'^/lib/systemd/', '/usr/lib/systemd/', p)) for p in paths}


def deb_scripts(deb):
    d = tempfile.mkdtemp(prefix='baton-debctl-')
    subprocess.run(['dpkg-deb', '-e', deb, d], check=True)
    scripts = {}
    for name in ('preinst', 'postinst', 'prerm', 'postrm'):
        p = os.path.join(d, name)
        scripts[name] = open(p).read() if os.path.exists(p) else ''
    conffiles = open(os.path.join(d, 'conffiles')).read().split() if os.path.exists(
        os.path.join(d, 'conffiles')) else []
    shutil.rmtree(d)
    return scripts, conffiles


def rpm_scripts(rpm):
    out = subprocess.run(['rpm', '-qp', '--scripts', rpm], capture_output=True, text=True,
                         check=True).stdout
    scripts, current = {}, None
    for line in out.splitlines():
        m = re.match(r'^(\w+) scriptlet', line)
        if m:
            current = m.group(1)
            scripts[current] = ''
        elif current:
            scripts[current] += line + '\n'
    return scripts


@test
def rpm_matches_the_deb(ctx):
    pkg = packages()
    deb, rpm = deb_files(pkg['deb']), rpm_files(pkg['rpm'])
    # Debian's own: its changelog and copyright; rpm's: the licence file.
    deb_only_ok = {'/usr/share/doc/baton/changelog', '/usr/share/doc/baton/copyright'}
    d, r = normalised(deb) - deb_only_ok, normalised(rpm)
    r = {p for p in r if not p.startswith('/usr/share/licenses/')}
    print(f'# files: .deb {len(deb)}, .rpm {len(rpm)}; compared {len(d)} after normalising')
    assert d == r, f'only in the deb: {sorted(d - r)}; only in the rpm: {sorted(r - d)}'

    debs, conffiles = deb_scripts(pkg['deb'])
    rpms = rpm_scripts(pkg['rpm'])
    rpm_config = subprocess.run(['rpm', '-qcp', pkg['rpm']], capture_output=True, text=True,
                                check=True).stdout.split()
    print(f'# configuration: deb conffiles {conffiles}, rpm %config {rpm_config}')
    assert conffiles == rpm_config == ['/etc/baton/batond.conf']
    # %config(noreplace): an edited file is kept on upgrade, as dpkg keeps
    # a conffile ("c" config, "n" noreplace).
    flags = subprocess.run(['rpm', '-qp', '--qf', '[%{FILEFLAGS:fflags} %{FILENAMES}\n]', pkg['rpm']],
                           capture_output=True, text=True, check=True).stdout
    assert 'cn /etc/baton/batond.conf' in flags.splitlines(), flags

    deb_all = '\n'.join(debs.values())
    rpm_all = '\n'.join(rpms.values())
    # What each package does, as a user of it would put it: (what, deb
    # evidence, rpm evidence). Both must show it, or neither.
    behaviours = [
        ('creates the user from sysusers.d',
         r'systemd-sysusers\b.*baton\.conf', r'systemd-sysusers\b|useradd\b.*baton'),
        ('creates /etc/baton, /var/lib/baton from tmpfiles.d',
         r'systemd-tmpfiles\b.*--create\b.*baton\.conf', r'systemd-tmpfiles\b.*--create\b.*baton\.conf'),
        ('reloads systemd', r'daemon-reload', r'daemon-reload'),
        ('try-restarts the single instance on upgrade',
         r"try-restart 'batond\.service'", r'try-restart\b[^\n]*batond\.service'),
        ('stops the colours on removal',
         r"stop batond\.socket batond\.service[^\n]*\n?[^\n]*'batond@\*\.service'",
         r"stop[^\n]*'?batond@\*\.service"),
    ]
    for what, deb_re, rpm_re in behaviours:
        in_deb, in_rpm = bool(re.search(deb_re, deb_all)), bool(re.search(rpm_re, rpm_all))
        print(f'# {what}: deb {in_deb}, rpm {in_rpm}')
        assert in_deb and in_rpm, (what, in_deb, in_rpm)
    # Never: starting anything, or restarting a socket or a colour.
    for name, text in (('deb', deb_all), ('rpm', rpm_all)):
        for line in text.splitlines():
            if re.search(r'(deb-systemd-invoke|systemctl)\b.*\b(start|restart|try-restart)\b', line):
                assert re.search(r"try-restart '?batond\.service'?( |$)", line), f'{name}: {line}'
    # Enabling: the deb re-enables only what the admin had enabled
    # (was-enabled); the rpm leaves it to the presets (Fedora: disabled).
    enables = [l for l in deb_all.splitlines() if re.search(r'deb-systemd-helper\s+enable', l)]
    assert enables and 'was-enabled' in deb_all, enables
    assert not re.search(r'systemctl\b[^\n]*\benable\b', rpm_all), rpm_all
    assert re.search(r'systemctl --no-reload preset batond', rpm_all) or '%systemd_post' in rpm_all


if __name__ == '__main__':
    try:
        run()
    finally:
        CONTAINER.destroy()
        if 'out' in SHARED:
            shutil.rmtree(SHARED['out'], ignore_errors=True)
