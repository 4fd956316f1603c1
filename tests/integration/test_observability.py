#!/usr/bin/env python3
"""Observability: /metrics (checked by promtool) and /metrics/json, the full
health report, the deployment endpoint, the metrics socket, STATUS= and the
journal fields, each against a real batond, PostgreSQL and NATS."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

from tests import harness
from tests.harness import Skip, free_port, http_get, publish, run, test, wait_until

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """{(name, frozenset(labels)): value} from the Prometheus text format."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        m = SAMPLE.match(line)
        assert m, f'unparsable metrics line: {line!r}'
        labels = frozenset(LABEL.findall(m.group(2) or ''))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(port, path='/metrics'):
    r = http_get(port, path)
    assert r.status == 200, r
    return r


class Scraper(harness.Scraper):
    def settled(self, timeout=15):
        """(response, samples) of a scrape with nothing else in flight. A
        request is counted (baton_http_requests_total, the duration
        histogram) in http_on_completed(), which MHD calls when it next
        looks at the connection, often after the client has its answer;
        baton_http_requests_in_flight counts it until then (streams
        apart). So once it counts this scrape alone, every request answered
        before is counted."""
        def once():
            r = self.scrape()
            samples = parse_metrics(r.body)
            return (r, samples) if value(samples, 'baton_http_requests_in_flight') == 1 else None
        return wait_until(once, timeout, what='a scrape with no other request in flight')


def start(ctx, pg, nats=None, **kw):
    env = {'DATABASE_URL': pg.url(), 'DEPLOYMENT_COLOR': 'blue'}
    if nats:
        env.update({'NATS__ENABLED': 'true', 'NATS__URL': nats.url})
    env.update(kw.pop('env', {}))
    b = ctx.batond(env, **kw).start()
    b.wait_ready()
    return b


# --- metrics ---------------------------------------------------------------

@test
def metrics_pass_promtool_and_count_requests(ctx):
    pg, nats = ctx.postgres(), ctx.nats()
    b = start(ctx, pg, nats)
    sub = ctx.subscribe(b.port, '/api/v1/topics/orders/stream')
    assert sub.wait_open(), sub.status
    scraper = ctx.add(Scraper(b.port), Scraper.close)

    # Settled before and after: the request that started batond, and those
    # below, may be counted a moment after their answers.
    _, before = scraper.settled()
    for _ in range(7):
        assert b.get('/_/health/live').status == 200
    assert b.get('/no/such/path-123').status == 404
    assert b.get('/api/v1/topics/x-9/nothing').status == 404
    assert publish(b.port, 'orders', {'n': 1}).status == 201
    sub.wait_for_id(1)
    r, after = scraper.settled()

    # What promtool (Prometheus' own linter) says about a live scrape.
    if not shutil.which('promtool'):
        raise Skip('promtool not installed (apt-get install prometheus): the format check needs it')
    lint = subprocess.run(['promtool', 'check', 'metrics'], input=r.body, capture_output=True,
                          text=True)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), \
        f'promtool: rc={lint.returncode} {lint.stdout!r} {lint.stderr!r}'
    assert r.header('Content-Type').startswith('text/plain; version=0.0.4')

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved('baton_http_requests_total', route='health_live', method='GET', status='2xx') == 7
    assert moved('baton_http_requests_total', route='unmatched', method='GET', status='4xx') == 1
    # Under /api/ the catch-all route answers (and labels) unknown paths.
    assert moved('baton_http_requests_total', route='api_unknown', method='GET', status='4xx') == 1
    assert moved('baton_http_requests_total', route='events_publish', method='POST', status='2xx') == 1
    assert moved('baton_http_request_duration_seconds_count', route='health_live') == 7
    assert moved('baton_events_published_total') == 1
    assert moved('baton_events_delivered_total') == 1
    # Route labels come from the route table only, never from a path.
    routes = {dict(labels).get('route') for (name, labels) in after
              if name == 'baton_http_requests_total'}
    assert routes <= {'health_live', 'unmatched', 'api_unknown', 'events_publish', 'metrics',
                      'health_ready', 'events_stream'}, routes
    assert value(after, 'baton_streams_active') == 1
    assert value(after, 'baton_stream_subscribers') == 1
    assert value(after, 'baton_build_info', version=b.get('/_/health').json()['version'],
                 color='blue') == 1
    assert value(after, 'baton_ready') == 1 and value(after, 'baton_draining') == 0
    assert value(after, 'baton_dependency_up', dependency='database') == 1
    assert value(after, 'baton_dependency_up', dependency='nats') == 1
    assert value(after, 'baton_dependency_checks_total', dependency='database', result='success') >= 1
    assert value(after, 'baton_dependency_check_duration_seconds_count', dependency='nats') >= 1
    assert value(after, 'baton_http_requests_in_flight') == 1     # the scrape itself (settled())
    assert value(after, 'process_resident_memory_bytes') > 1e6
    assert value(after, 'process_open_fds') >= 10
    assert abs(value(after, 'process_start_time_seconds') - time.time()) < 120
    assert value(after, 'process_cpu_seconds_total') > 0

    # /metrics/json: the same figures (those a scrape does not change).
    j = scrape(b.port, '/metrics/json').json()
    assert j['baton_http_requests_total']['type'] == 'counter'
    js = {(s['labels'].get('route'), s['labels'].get('status')): s['value']
          for s in j['baton_http_requests_total']['samples']}
    assert js[('health_live', '2xx')] == value(after, 'baton_http_requests_total', route='health_live',
                                               method='GET', status='2xx')
    assert j['baton_events_published_total']['samples'][0]['value'] == \
        value(after, 'baton_events_published_total')
    h = [s for s in j['baton_http_request_duration_seconds']['samples']
         if s['labels']['route'] == 'health_live'][0]
    assert h['count'] == 7 + value(before, 'baton_http_request_duration_seconds_count',
                                   route='health_live')
    assert h['buckets'][-1] == {'le': '+Inf', 'count': h['count']}
    print(f'# scrape: {len(r.body)} bytes, {len(after)} samples; promtool clean')


# --- the full health report ---------------------------------------------------

@test
def health_report_degrades_with_postgres_and_fails_on_sigterm(ctx):
    pg = ctx.postgres()
    b = start(ctx, pg)
    r = b.get('/health')
    assert r.status == 200, r
    body = r.json()
    assert body['status'] == 'healthy', body
    assert body['checks']['database']['status'] == 'UP'
    assert body['checks']['database']['responseTimeMs'] >= 0
    assert body['checks']['nats'] == {'status': 'DISABLED'}
    mem = body['checks']['memory']
    assert mem['status'] == 'UP' and 0 < mem['usedBytes'] < mem['limitBytes'], mem
    assert mem['limitSource'] in ('cgroup', 'physical')
    assert body['checks']['server']['status'] == 'UP'
    assert b.get('/health/db').json()['status'] == 'UP'

    pg.stop(mode='immediate')
    started = time.monotonic()
    wait_until(lambda: b.get('/health').json()['status'] == 'degraded', 10,
               what='/health to turn degraded')
    print(f'# degraded {time.monotonic() - started:.2f}s after PostgreSQL stopped '
          f'(check interval 0.3s, timeout 2s)')
    r = b.get('/health')
    assert r.status == 200 and r.json()['reason'] == 'database is down', r
    assert r.json()['checks']['database']['status'] == 'DOWN'
    r = b.get('/health/db')
    assert r.status == 503 and r.json()['status'] == 'DOWN' and r.json()['error'], r

    pg.start()
    wait_until(lambda: b.get('/health').json()['status'] == 'healthy', 15,
               what='/health to recover by itself')
    assert b.get('/health/db').status == 200

    # A stream keeps the drain going; a keep-alive connection opened before
    # SIGTERM can still ask (new connections are no longer accepted).
    stream = ctx.subscribe(b.port, '/stream/test?duration=30')
    wait_until(lambda: stream.status == 200, 10, what='the test stream')
    conn = http.client.HTTPConnection('127.0.0.1', b.port, timeout=5)
    conn.request('GET', '/health')
    conn.getresponse().read()
    b.signal(signal.SIGTERM)
    b.notify.wait_for(r'STOPPING=1')
    conn.request('GET', '/health')
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 503, (resp.status, body)
    assert body['status'] == 'unhealthy' and body['reason'] == 'shutting down', body
    assert body['checks']['server']['status'] == 'DRAINING'
    assert body['checks']['server']['activeStreams'] == 1
    conn.close()


# --- the deployment endpoint -------------------------------------------------

def slow_request(port):
    """A publish whose body never completes: a request in flight."""
    s = socket.create_connection(('127.0.0.1', port), timeout=10)
    s.sendall(b'POST /api/v1/topics/slow/events HTTP/1.1\r\nHost: t\r\n'
              b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":')
    return s


@test
def deployment_endpoint_needs_its_token(ctx):
    pg = ctx.postgres()
    b = start(ctx, pg)
    r = b.get('/health/deployment', headers={'Authorization': 'Bearer anything'})
    assert r.status == 503 and r.json()['error'] == 'not_configured', r
    assert 'DEPLOYMENT_TOKEN' in r.json()['message']

    token = 'dep-' + os.urandom(12).hex()
    creds = ctx.tmp.join('creds')
    os.makedirs(creds)
    with open(os.path.join(creds, 'deployment-token'), 'w') as f:
        f.write(token + '\n')       # as "echo" writes it
    b2 = start(ctx, pg, env={'CREDENTIALS_DIRECTORY': creds, 'DEPLOYMENT_COLOR': 'green'})
    for headers in ({}, {'Authorization': 'Bearer ' + token[:-1]},
                    {'Authorization': 'Bearer ' + token + 'x'},
                    {'Authorization': 'Bearer ' + token[:-1] + 'Z'},
                    {'Authorization': 'Basic ' + token}, {'Authorization': token}):
        r = b2.get('/health/deployment', headers=headers)
        assert r.status == 401, (headers, r)
        assert r.json()['error'] == 'unauthorized'
        assert r.header('WWW-Authenticate') == 'Bearer'
    r = b2.get('/health/deployment', headers={'Authorization': 'Bearer ' + token})
    assert r.status == 200, r
    d = r.json()
    assert d['status'] == 'ready' and d['deploymentColor'] == 'green', d
    assert d['port'] == b2.port and d['uptimeSeconds'] >= 0 and d['version']
    # The six refused probes' connections may still be closing (slowly,
    # under ASan): the counts must settle on nothing but the asker.
    def counts():
        d = b2.get('/health/deployment', headers={'Authorization': 'Bearer ' + token}).json()
        return (d['activeRequests'], d['activeStreams'], d['activeConnections'])
    wait_until(lambda: counts() == (0, 0, 0), 5, what='counts (0, 0, 0)')
    assert d['draining'] is False and d['readyForShutdown'] is True
    assert token not in b2.log()


@test
def deployment_counts_open_streams_and_slow_requests(ctx):
    pg = ctx.postgres()
    b = start(ctx, pg, env={'DEPLOYMENT_TOKEN': 's3cret-token'})
    auth = {'Authorization': 'Bearer s3cret-token'}

    def deployment():
        return b.get('/health/deployment', headers=auth).json()

    stream = ctx.subscribe(b.port, '/stream/test?duration=60')
    wait_until(lambda: stream.status == 200, 10, what='the test stream')
    slow = slow_request(b.port)
    # Earlier probes' connections (each asker's own among them) may still be
    # closing when the next one asks: wait for one answer that counts
    # exactly what is open, and check that answer.
    def settled():
        d = deployment()
        counts = (d['activeRequests'], d['activeStreams'], d['activeConnections'])
        return d if counts == (1, 1, 2) else None
    d = wait_until(settled, 5, what='counts (1, 1, 2)')
    assert d['readyForShutdown'] is False, d

    slow.close()
    stream.close()
    # The stream sees its client gone when it next writes: a tick, every
    # second (sse-ticker.c); 15 s leaves a loaded machine its slack.
    wait_until(lambda: deployment()['readyForShutdown'], 15, what='readyForShutdown after both ended')
    wait_until(lambda: deployment()['activeConnections'] == 0, 15, what='both connections to close')
    d = deployment()
    assert (d['activeRequests'], d['activeStreams']) == (0, 0), d


# --- the metrics socket ------------------------------------------------------

@test
def metrics_socket_serves_ops_only_and_public_can_hide_them(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), 'PUBLIC_HEALTH': 'false'},
                   fdnames=['http', 'metrics'], watchdog_usec=2_000_000).start(trigger=False)
    public, metrics = b.ports
    # The first connection starts batond (socket activation); on the
    # metrics socket, live answers.
    wait_until(lambda: http_get(metrics, '/_/health/live', timeout=2).status == 200, 10,
               what='live on the metrics socket')
    b.wait_ready()
    # Public: the API, no probes or metrics.
    assert http_get(public, '/_/health/live').status == 404
    assert http_get(public, '/metrics').status == 404
    assert http_get(public, '/health').status == 404
    assert publish(public, 't', {'x': 1}).status == 201
    # Metrics socket: probes and metrics, no API.
    assert http_get(metrics, '/_/health/live').status == 200
    assert http_get(metrics, '/_/health/ready').status == 200
    assert http_get(metrics, '/metrics').status == 200
    assert http_get(metrics, '/health').json()['status'] == 'healthy'
    assert http_get(metrics, '/api/v1/topics/t/events').status == 404
    # The watchdog's self-probe still finds its way (to the metrics socket).
    first = b.notify.count()
    b.notify.wait_for(r'^WATCHDOG=1$', timeout=5, since=first)


@test
def metrics_port_binds_its_own_socket(ctx):
    pg = ctx.postgres()
    mport = free_port()
    b = ctx.batond({'DATABASE_URL': pg.url(), 'METRICS_PORT': str(mport)},
                   socket_activate=False).start()
    b.wait_ready()
    assert http_get(mport, '/metrics').status == 200
    assert http_get(mport, '/api/v1/topics/t/events').status == 404
    assert b.get('/metrics').status == 200      # PUBLIC_HEALTH defaults to true
    assert f'127.0.0.1:{mport} (metrics)' in b.notify.wait_for(r'^STATUS=Ready')[2]


@test
def public_health_off_without_metrics_socket_is_a_config_error(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), 'PUBLIC_HEALTH': 'false'},
                   socket_activate=False).start(trigger=False)
    assert b.wait_exit() == 78
    assert 'PUBLIC_HEALTH' in b.log() and 'metrics socket' in b.log(), b.log()


# --- STATUS= -----------------------------------------------------------------

def statuses(b, since=0):
    return [m[len('STATUS='):] for m in b.notify.texts()[since:] if m.startswith('STATUS=')]


@test
def status_tells_where_the_service_is_and_is_rate_limited(ctx):
    pg = ctx.postgres()
    pg.stop()
    b = ctx.batond({'DATABASE_URL': pg.url(), 'DEPLOYMENT_COLOR': 'blue'}).start()
    b.notify.wait_for(r'^STATUS=Starting: waiting for PostgreSQL')
    pg.start()
    b.wait_ready()
    b.notify.wait_for(r'^STATUS=Ready on 127\.0\.0\.1:\d+, colour blue: \d+ requests?, 0 streams')

    stream = ctx.subscribe(b.port, '/stream/test?duration=60')
    wait_until(lambda: stream.status == 200, 10, what='the test stream')
    # The counts reach STATUS= at the status timer's next round, within
    # STATUS_REFRESH_USEC (1 s): 10 s leaves a loaded machine its slack.
    b.notify.wait_for(r'^STATUS=Ready on .*: \d+ requests?, 1 stream, ', timeout=10)

    # Under a steady flood of requests the text changes all the time; at
    # most one STATUS= per STATUS_REFRESH_USEC (1 s, the timer re-armed
    # after each round) reaches systemd.
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            b.get('/_/health/live')

    def served_in(texts):
        return [int(m.group(1)) for s in texts if (m := re.search(r'(\d+) served', s))]
    threads = [threading.Thread(target=flood) for _ in range(4)]
    first = b.notify.count()
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        # Four seconds of flood at least, and until three updates are in: a
        # timer round every second, each with new counts, not assumed to
        # have come within a fixed time.
        wait_until(lambda: time.monotonic() - started >= 4 and len(served_in(statuses(b, first))) >= 3, 30,
                   what='three STATUS= updates under the flood')
    finally:
        stop.set()
        for t in threads:
            t.join()
    elapsed = time.monotonic() - started
    sent = statuses(b, first)
    served = served_in(sent)
    print(f'# {len(sent)} STATUS= updates in {elapsed:.1f}s of load; served went '
          f'{served[0] if served else "?"} -> {served[-1] if served else "?"}')
    # At most one timer round per second of the flood, one at its start,
    # and one sent before `first` was read but received after.
    assert 2 <= len(sent) <= elapsed + 2, sent
    assert served == sorted(served) and served[-1] > served[0], sent

    # Reload and drain say so.
    mark = b.notify.count()
    b.signal(signal.SIGHUP)
    b.notify.wait_for(r'^STATUS=Reloading configuration', since=mark)
    b.notify.wait_for(r'^STATUS=Ready on ', since=mark + 1)
    mark = b.notify.count()
    b.signal(signal.SIGTERM)
    b.notify.wait_for(r'^STATUS=Draining for .*1 stream', since=mark)


# --- the journal -------------------------------------------------------------

class FakeJournal:
    """Receives what batond sends to /run/systemd/journal/socket, in
    journald's native protocol ("KEY=value" lines, or KEY\\n<le64 size>
    <value>\\n for values with newlines), as a list of dicts."""

    def __init__(self, directory):
        os.makedirs(directory)
        self.dir = directory
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(os.path.join(directory, 'socket'))
        self.sock.settimeout(0.2)
        self.records = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @staticmethod
    def parse(data):
        record, i = {}, 0
        while i < len(data):
            nl = data.index(b'\n', i)
            line = data[i:nl]
            if b'=' in line:
                k, v = line.split(b'=', 1)
                i = nl + 1
            else:
                size = int.from_bytes(data[nl + 1:nl + 9], 'little')
                k, v = line, data[nl + 9:nl + 9 + size]
                i = nl + 9 + size + 1
            record[k.decode()] = v.decode(errors='replace')
        return record

    def _loop(self):
        while self.running:
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.records.append(self.parse(data))

    def find(self, **fields):
        with self.lock:
            return [r for r in self.records if all(r.get(k) == v for k, v in fields.items())]

    def close(self):
        self.running = False
        self.sock.close()


def journal_wrap(journal_dir):
    """Runs batond in its own mount namespace where the journal's socket is
    ours: the records travel exactly as they would to journald."""
    if os.geteuid() != 0 or not shutil.which('unshare'):
        raise Skip('needs root and unshare(1) for a private /run/systemd/journal')
    script = ('mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && '
              f'mount --bind {journal_dir} /run/systemd/journal && exec "$@"')
    return ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', script, 'sh']


@test
def journal_records_carry_structured_fields(ctx):
    pg = ctx.postgres()
    journal = ctx.add(FakeJournal(ctx.tmp.join('journal')), lambda j: j.close())
    config = ctx.tmp.join('batond.conf')
    with open(config, 'w') as f:
        f.write('ACCESS_LOG=false\n')
    b = ctx.batond({'DATABASE_URL': pg.url(), 'DEPLOYMENT_COLOR': 'blue'}, args=['--config', config],
                   wrap=journal_wrap(journal.dir))
    # JOURNAL_STREAM names batond's stderr (the log file), as systemd would.
    open(b.log_path, 'w').close()
    st = os.stat(b.log_path)
    b.env['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'
    b.start()
    b.wait_ready()
    wait_until(lambda: journal.find(BATON_EVENT='ready'), 5, what='the ready record')
    ready = journal.find(BATON_EVENT='ready')[0]
    assert ready['BATON_COLOR'] == 'blue' and ready['PRIORITY'] == '6', ready
    assert ready['SYSLOG_IDENTIFIER'] == 'batond'

    # ACCESS_LOG=false: successful requests leave no record.
    assert publish(b.port, 'orders', {'n': 1}).status == 201
    # Errors always do: publishing while PostgreSQL is down answers 503.
    pg.stop(mode='immediate')
    r = http_get(b.port, '/api/v1/topics/orders/events', method='POST', body='{"n":2}',
                 headers={'Content-Type': 'application/json', 'X-Request-ID': 'req-outage-1'},
                 timeout=15)
    assert r.status == 503, r
    assert r.header('X-Request-ID') == 'req-outage-1'
    wait_until(lambda: journal.find(BATON_REQUEST_ID='req-outage-1'), 5, what='the 503 record')
    rec = journal.find(BATON_REQUEST_ID='req-outage-1')[0]
    assert rec['BATON_STATUS'] == '503' and rec['BATON_ROUTE'] == 'events_publish', rec
    assert rec['BATON_EVENT'] == 'http_request' and rec['BATON_METHOD'] == 'POST'
    assert rec['PRIORITY'] == '4' and float(rec['BATON_DURATION_MS']) >= 0
    assert rec['BATON_COLOR'] == 'blue'
    wait_until(lambda: journal.find(BATON_EVENT='dependency_down'), 10, what='dependency_down')
    # The ready probe's 503 is its answer, not an error.
    assert b.get('/_/health/ready').status == 503
    assert not journal.find(BATON_ROUTE='health_ready')
    assert not journal.find(BATON_STATUS='201')

    pg.start()
    wait_until(lambda: journal.find(BATON_EVENT='dependency_up'), 15, what='dependency_up')
    # ACCESS_LOG=true takes effect on reload: now every request is recorded.
    with open(config, 'w') as f:
        f.write('ACCESS_LOG=true\n')
    b.signal(signal.SIGHUP)
    wait_until(lambda: journal.find(BATON_EVENT='reloaded'), 5, what='the reload record')
    wait_until(lambda: b.get('/_/health/ready').status == 200, 15, what='ready again')
    r = http_get(b.port, '/api/v1/topics/orders/events', method='POST', body='{"n":3}',
                 headers={'Content-Type': 'application/json'})
    assert r.status == 201, r
    own_id = r.header('X-Request-ID')
    assert re.fullmatch(r'[0-9a-f]{12}-[0-9a-f]{6,}', own_id), own_id
    wait_until(lambda: journal.find(BATON_REQUEST_ID=own_id), 5, what='the access record')
    rec = journal.find(BATON_REQUEST_ID=own_id)[0]
    assert rec['BATON_STATUS'] == '201' and rec['PRIORITY'] == '6', rec
    assert rec['MESSAGE'].startswith('POST /api/v1/topics/orders/events 201 '), rec
    b.signal(signal.SIGTERM)
    assert b.wait_exit() == 0
    for event in ('starting', 'ready', 'reloaded', 'drain_started', 'stopping'):
        wait_until(lambda: journal.find(BATON_EVENT=event), 5, what=f'the {event} record')
    # Nothing went to stderr that should have gone to the journal.
    assert 'Ready: serving' not in b.log(), b.log()
    print(f'# {len(journal.records)} journal records, '
          f'{len(journal.find(BATON_EVENT="http_request"))} of them for requests')


if __name__ == '__main__':
    run()
