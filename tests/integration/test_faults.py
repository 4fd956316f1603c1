#!/usr/bin/env python3
"""Faults under load, measured. While several publisher threads publish and
SSE subscribers read:

- PostgreSQL is crash-stopped (pg_ctl stop -m immediate) and restarted;
- NATS is killed and restarted (two instances, events crossing over);
- PostgreSQL hangs (the postmaster and every backend SIGSTOPped) and resumes;
- batond itself is SIGKILLed and a fresh one started on the same database.

Each case prints what it measured as TAP comments, then asserts: readiness
turns red in time and green again by itself (same process), probes stay
fast, a publish is answered 201 only for an event that is stored (checked
against the database, event by event), errors are a JSON 503, streams stay
open, and every subscriber gets every stored event exactly once, in order,
with the payload that was stored under its id.
"""

import http.client
import json
import re
import signal
import socket
import statistics
import threading
import time

from tests.harness import close_socket, http_get, run, test, wait_until

INTERVAL = 1.0          # HEALTH_CHECK_INTERVAL
FAILOVER_GRACE = 3.0    # health-checks.c, BUS_FAILOVER_GRACE_USEC
CHECK_TIMEOUT = 1.0     # HEALTH_CHECK_TIMEOUT
QUERY_TIMEOUT = 2.0     # DATABASE_QUERY_TIMEOUT
RESYNC = 1.0            # STREAM_RESYNC_INTERVAL
HEARTBEAT = 1.0         # STREAM_HEARTBEAT_INTERVAL
CANCEL_GRACE = 2.0      # DB_CANCEL_GRACE_USEC: how long past the timeout batond waits for the server
# What a loaded 2-core machine running the suite under ASan may add to a
# step batond takes at once (its loop late to a timer or a socket, the
# 50 ms prober or a publisher thread late to look, among 10 threads). Every
# time bound below is what the code guarantees plus this.
SLACK = 2.0
# The longest a publish waits for an answer, by the code: up to
# DATABASE_QUERY_TIMEOUT queued (event-publisher.c, on_expiry), then its
# batch in flight up to the timeout and DB_CANCEL_GRACE_USEC more before
# db.c resets the connection and fails it.
PUBLISH_WAIT_MAX = QUERY_TIMEOUT + QUERY_TIMEOUT + CANCEL_GRACE
# A probe is answered from the last health round's snapshot, in the loop
# turn that reads it: no database, no waiting. batond's own figure for it
# (baton_http_request_duration_seconds, from the request line to the
# answer) is well under a millisecond; this histogram bound leaves ASan and
# a loaded machine their slack, while a probe that waited on the frozen
# database would wait for the check timeout (1 s) or a query timeout.
PROBE_SERVER_MAX = '0.5'

ENV = {
    'HEALTH_CHECK_INTERVAL': f'{INTERVAL:g}s',
    'HEALTH_CHECK_TIMEOUT': f'{CHECK_TIMEOUT:g}s',
    'DATABASE_QUERY_TIMEOUT': f'{QUERY_TIMEOUT:g}s',
    'DATABASE_CONNECT_TIMEOUT': '2s',
    'RETRY_BACKOFF_MAX': '1s',
    'STREAM_RESYNC_INTERVAL': f'{RESYNC:g}s',
    'STREAM_HEARTBEAT_INTERVAL': f'{HEARTBEAT:g}s',
}
TOPICS = ('orders', 'billing')
# 503 messages of publishes that never reached the server (no connection).
NOT_SENT = ('timed out connecting', 'connection to server at')
PAD = 'p' * 100


def note(text):
    print(f'# {text}', flush=True)


def ms(seconds):
    return f'{seconds * 1000:.0f} ms'


# --- load: publishers, subscribers, probes ------------------------------------

class Load:
    """Publisher threads, one keep-alive connection each, publishing
    {"w": thread, "k": attempt} until stopped. Every attempt is recorded:
    status (None: sent, no answer), the id of a 201, the error (and any
    Retry-After) of others, and when it was sent (t0) and answered (t1). Connections refused before
    anything was sent are only counted."""

    def __init__(self, targets, pace=0.01, first_worker=0, pad=PAD, token=None):
        self.pad = pad
        self.headers = {'Content-Type': 'application/json'}
        if token:
            self.headers['Authorization'] = f'Bearer {token}'

        self.records = []
        self.refused = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.pace = pace
        self.threads = [threading.Thread(target=self._run, args=(w, port, topic), daemon=True)
                        for w, (port, topic) in enumerate(targets, first_worker)]
        for t in self.threads:
            t.start()

    def _run(self, w, port, topic):
        conn = None
        k = 0
        while not self.stopping.is_set():
            if conn is None or conn.sock is None:
                conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
                try:
                    conn.connect()
                except OSError:
                    conn = None
                    with self.lock:
                        self.refused += 1
                    time.sleep(0.05)
                    continue
            rec = {'w': w, 'k': k, 'topic': topic, 'port': port, 'status': None,
                   't0': time.monotonic()}
            k += 1
            try:
                conn.request('POST', f'/api/v1/topics/{topic}/events',
                             body=json.dumps({'w': w, 'k': rec['k'], 'pad': self.pad}),
                             headers=self.headers)
                r = conn.getresponse()
                body = r.read()
                rec['status'] = r.status
                try:
                    j = json.loads(body)
                except ValueError:
                    j = {'unparsable': body[:200].decode(errors='replace')}
                if r.status == 201:
                    rec['id'] = j['id']
                    assert j['topic'] == topic, j
                else:
                    rec['error'] = j
                    rec['retry_after'] = r.getheader('Retry-After')
            except (OSError, http.client.HTTPException) as e:
                rec['exc'] = repr(e)
                conn.close()
                conn = None
            rec['t1'] = time.monotonic()
            with self.lock:
                self.records.append(rec)
            if self.pace:
                time.sleep(self.pace)
        if conn:
            conn.close()

    def all(self):
        with self.lock:
            return list(self.records)

    def acked(self, after=None):
        return [r for r in self.all() if r['status'] == 201 and (after is None or r['t0'] >= after)]

    def count(self, status, after=None):
        return sum(1 for r in self.all() if r['status'] == status and
                   (after is None or r['t0'] >= after))

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(90)
        assert not any(t.is_alive() for t in self.threads), 'a publisher thread hangs'

    def summary(self, after=None, before=None):
        recs = [r for r in self.all() if (after is None or r['t0'] >= after) and
                (before is None or r['t1'] <= before)]
        counts = {}
        for r in recs:
            counts[r['status']] = counts.get(r['status'], 0) + 1
        other = sum(v for s, v in counts.items() if s not in (201, 503, None))
        return (f'{len(recs)} publishes: {counts.get(201, 0)} x 201, {counts.get(503, 0)} x 503, '
                f'{other} other, {counts.get(None, 0)} unanswered')


class Stream:
    """One SSE subscriber of a topic, on its own thread, that can be resumed
    on another connection with Last-Event-ID. Keeps every event with its
    arrival time, the payload's publisher marker, heartbeats, and how each
    connection ended."""

    def __init__(self, port, topic, last_event_id=None):
        self.topic = topic
        self.start_after = last_event_id or 0
        self.events = []            # (id, (w, k), arrival)
        self.heartbeats = []        # arrival times
        self.ends = []              # (time, reason)
        self.connections = 0
        self.status = None
        self.lock = threading.Lock()
        self.sock = None
        self._open(port, last_event_id)

    def _open(self, port, last_event_id):
        sock = socket.create_connection(('127.0.0.1', port), timeout=10)
        sock.settimeout(120)
        head = (f'GET /api/v1/topics/{self.topic}/stream HTTP/1.1\r\nHost: t\r\n'
                f'Accept: text/event-stream\r\n')
        if last_event_id is not None:
            head += f'Last-Event-ID: {last_event_id}\r\n'
        sock.sendall((head + '\r\n').encode())
        with self.lock:
            self.sock = sock
            self.status = None
            self.connections += 1
        threading.Thread(target=self._read, args=(sock,), daemon=True).start()

    def resume(self, port):
        """Reconnects with the last id received, as an EventSource would."""
        ids = self.ids()
        self._open(port, ids[-1] if ids else self.start_after)

    def _end(self, reason):
        with self.lock:
            self.ends.append((time.monotonic(), reason))

    def _read(self, sock):
        buf = b''
        text = b''
        chunked = None
        try:
            while True:
                d = sock.recv(65536)
                if not d:
                    self._end('connection closed without an end')
                    return
                buf += d
                if chunked is None:
                    if b'\r\n\r\n' not in buf:
                        continue
                    head, buf = buf.split(b'\r\n\r\n', 1)
                    with self.lock:
                        self.status = int(head.split(b' ')[1])
                    chunked = b'transfer-encoding: chunked' in head.lower()
                if chunked:
                    while True:
                        eol = buf.find(b'\r\n')
                        if eol < 0:
                            break
                        size = int(buf[:eol].split(b';')[0], 16)
                        if len(buf) < eol + 2 + size + 2:
                            break
                        if size == 0:
                            self._end('last chunk')
                            return
                        text += buf[eol + 2:eol + 2 + size]
                        buf = buf[eol + 2 + size + 2:]
                else:
                    text, buf = text + buf, b''
                while b'\n\n' in text:
                    block, text = text.split(b'\n\n', 1)
                    if self._block(block.decode()):
                        return
        except OSError as e:
            self._end(f'error: {e!r}')

    def _block(self, block):
        now = time.monotonic()
        fields = {}
        for line in block.split('\n'):
            if line.startswith(':'):
                with self.lock:
                    self.heartbeats.append(now)
                continue
            k, _, v = line.partition(':')
            fields[k] = v[1:] if v.startswith(' ') else v
        if 'data' not in fields:
            return False
        if fields.get('event', 'message') != 'message':
            self._end(f"event: {fields.get('event')} {fields['data']}")
            return True
        data = json.loads(fields['data'])
        assert int(fields['id']) == data['id'] and data['topic'] == self.topic, fields
        payload = data['data']
        with self.lock:
            self.events.append((data['id'], (payload.get('w'), payload.get('k')), now))
        return False

    def ids(self):
        with self.lock:
            return [i for i, _, _ in self.events]

    def last_id(self):
        with self.lock:
            return self.events[-1][0] if self.events else self.start_after

    def heard_between(self, lo, hi):
        """Whether anything (an event or a heartbeat) arrived in [lo, hi]."""
        with self.lock:
            return any(lo <= a <= hi for a in self.heartbeats + [a for _, _, a in self.events])

    def wait_open(self, timeout=10):
        wait_until(lambda: self.status is not None, timeout, what=f'stream of {self.topic} to open')
        assert self.status == 200, f'stream answered {self.status}'

    def close(self):
        close_socket(self.sock)


class Prober:
    """Polls the ready and live probes on one keep-alive connection each,
    every 50 ms, recording (sent, answered, status, body)."""

    def __init__(self, port):
        self.port = port
        self.samples = {'ready': [], 'live': []}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conns = {}
        while not self.stopping.is_set():
            for probe in ('ready', 'live'):
                t0 = time.monotonic()
                status, body = None, None
                try:
                    conn = conns.get(probe) or http.client.HTTPConnection('127.0.0.1', self.port,
                                                                          timeout=10)
                    conns[probe] = conn
                    conn.request('GET', f'/_/health/{probe}')
                    r = conn.getresponse()
                    status, body = r.status, r.read()
                except (OSError, http.client.HTTPException):
                    conns.pop(probe).close()
                with self.lock:
                    self.samples[probe].append((t0, time.monotonic(), status, body))
            time.sleep(0.05)
        for c in conns.values():
            c.close()

    def get(self, probe='ready', after=0.0, before=float('inf')):
        with self.lock:
            return [s for s in self.samples[probe] if after <= s[0] and s[1] <= before]

    def first(self, status, after, probe='ready'):
        """The first sample sent after 'after' with this status."""
        for s in self.get(probe, after):
            if s[2] == status:
                return s
        return None

    def wait(self, status, after, timeout, what):
        return wait_until(lambda: self.first(status, after), timeout, interval=0.02, what=what)

    def stop(self):
        self.stopping.set()
        self.thread.join(30)


# --- checks ---------------------------------------------------------------------

def probe_durations(port):
    """batond's own request durations of the two probes:
    {route: {le: cumulative count}} from /metrics (which reads no database)."""
    body = http_get(port, '/metrics', timeout=10).body
    out = {}
    for route, le, n in re.findall(r'^baton_http_request_duration_seconds_bucket'
                                   r'\{route="(health_ready|health_live)",le="([^"]+)"\} (\S+)$', body, re.M):
        out.setdefault(route, {})[le] = float(n)
    return out


def probes_between(before, after, le):
    """{route: (probes answered between the two snapshots, how many of them
    took longer than le seconds by batond's clock)}."""
    out = {}
    for route, buckets in after.items():
        was = before.get(route, {})
        n = buckets['+Inf'] - was.get('+Inf', 0)
        out[route] = (int(n), int(n - (buckets[le] - was.get(le, 0))))
    return out


def stored_events(pg):
    """{topic: {id: (w, k)}} from the database."""
    out = {}
    rows = pg.psql("SELECT topic, id, payload->>'w', payload->>'k' FROM events ORDER BY topic, id")
    for line in rows.splitlines():
        topic, i, w, k = line.split('|')
        out.setdefault(topic, {})[int(i)] = (int(w), int(k))
    return out


def check_store(pg, loads, topics):
    """Every 201 is stored exactly once under its id; ids have no gaps; no
    marker is stored twice. Returns the stored events and figures."""
    stored = stored_events(pg)
    records = [r for load in loads for r in load.all()]
    for topic in topics:
        ids = sorted(stored.get(topic, {}))
        assert ids == list(range(1, len(ids) + 1)), \
            f'{topic}: stored ids have gaps: {sorted(set(range(1, ids[-1] + 1)) - set(ids))[:10]}'
    where = {}
    for topic, events in stored.items():
        for i, marker in events.items():
            where.setdefault(marker, []).append((topic, i))
    dups = {m: w for m, w in where.items() if len(w) > 1}
    assert not dups, f'events stored more than once: {list(dups.items())[:5]}'
    false_201 = [r for r in records if r['status'] == 201 and
                 where.get((r['w'], r['k'])) != [(r['topic'], r['id'])]]
    assert not false_201, (f'{len(false_201)} events answered 201 are not stored under their id: '
                           f'{false_201[:3]} (stored as {[where.get((r["w"], r["k"])) for r in false_201[:3]]})')
    figures = {
        'acked': sum(1 for r in records if r['status'] == 201),
        'stored': sum(len(e) for e in stored.values()),
        'rejected_stored': [r for r in records if r['status'] not in (201, None) and
                            (r['w'], r['k']) in where],
        'unknown': [r for r in records if r['status'] is None],
    }
    figures['unknown_stored'] = [r for r in figures['unknown'] if (r['w'], r['k']) in where]
    # A 503 may hide a commit only when the batch had reached the server
    # (README: "only when the connection broke after the commit was sent is
    # the outcome unknown"); one refused while not connected never can.
    never_sent = [r for r in figures['rejected_stored']
                  if any(m in r.get('error', {}).get('message', '') for m in NOT_SENT)]
    assert not never_sent, f'stored although answered "not connected": {never_sent[:3]}'
    return stored, figures


def wait_delivered(streams, stored, timeout=30):
    for s in streams:
        last = max(stored.get(s.topic, {0: None}))
        wait_until(lambda: s.last_id() >= last, timeout,
                   what=f'{s.topic} stream to reach id {last} (has {s.ids()[-3:]})')
    # Anything duplicated or late would show by now.
    time.sleep(0.5)


def check_streams(streams, stored):
    """Every stream got exactly the stored ids after its start, in order,
    each with the payload stored under that id."""
    for n, s in enumerate(streams):
        events = stored.get(s.topic, {})
        expected = list(range(s.start_after + 1, max(events, default=0) + 1))
        ids = s.ids()
        if ids != expected:
            missing = sorted(set(expected) - set(ids))
            dups = sorted({i for i in ids if ids.count(i) > 1})
            order = [(a, b) for a, b in zip(ids, ids[1:]) if b <= a][:5]
            raise AssertionError(f'stream {n} ({s.topic}, after {s.start_after}): {len(ids)} ids, '
                                 f'expected {len(expected)}; missing {missing[:10]}, duplicated '
                                 f'{dups[:10]}, out of order {order}')
        wrong = [(i, m, events[i]) for i, m, _ in s.events if events[i] != m]
        assert not wrong, f'stream {n} got other payloads than stored: {wrong[:3]}'


def assert_json_503(load, expect_in_message):
    """Every failed publish is a JSON 503 'unavailable' saying why."""
    bad = []
    for r in load.all():
        if r['status'] in (201, None):
            continue
        e = r.get('error', {})
        if r['status'] != 503 or e.get('error') != 'unavailable' or \
                expect_in_message not in e.get('message', ''):
            bad.append(r)
    assert not bad, f'{len(bad)} publishes failed otherwise than 503 unavailable: {bad[:3]}'
    messages = sorted({r['error']['message'][:80] for r in load.all() if r['status'] == 503})
    return messages


def open_streams(port, topics=TOPICS):
    """Per topic: one from Last-Event-ID 0 and one live (no Last-Event-ID),
    both open before anything is published, so both must see every id."""
    streams = []
    for topic in topics:
        streams.append(Stream(port, topic, last_event_id=0))
        streams.append(Stream(port, topic))
    for s in streams:
        s.wait_open()
    return streams


def report_store(figures, streams):
    note(f"{figures['acked']}/{figures['acked']} acknowledged events stored under their id; "
         f"{figures['stored']} stored in all; {len(figures['rejected_stored'])} answered 503 but "
         f"stored; {len(figures['unknown'])} unanswered ({len(figures['unknown_stored'])} of them "
         f"stored); all {figures['stored']} delivered to {len(streams)} streams in order, "
         f"exactly once, with the stored payloads")


def stop_cleanly(instances, probes, streams):
    """SIGTERM after the fault: a clean drain and exit 0 (under ASan, also
    no leak and no sanitizer report from the outage paths)."""
    for p in probes:
        p.stop()
    for s in streams:
        s.close()
    for b in instances:
        b.signal(signal.SIGTERM)
    for b in instances:
        rc = b.wait_exit(60)
        assert rc == 0, f'batond exited with {rc} at SIGTERM after the fault:\n{b.log()[-3000:]}'


def managed(ctx, obj, fn):
    ctx.add(obj, fn)
    return obj


def one_instance_under_load(ctx):
    """PostgreSQL, one batond, a prober, streams on both topics and four
    publishers, with 200 publishes acknowledged before the fault."""
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), **ENV}).start()
    b.wait_ready()
    probe = managed(ctx, Prober(b.port), Prober.stop)
    streams = [ctx.add(s, Stream.close) for s in open_streams(b.port)]
    load = managed(ctx, Load([(b.port, TOPICS[w % 2]) for w in range(4)]), Load.stop)
    wait_until(lambda: len(load.acked()) >= 200, 30, what='200 acknowledged publishes')
    return pg, b, probe, streams, load


def recover(load, probe, t_from, what):
    """Waits from t_from (the fault's end) for ready 200, a first 201 and
    200 more, then stops the load. Returns (the 200 probe, the first 201's
    time)."""
    green = probe.wait(200, t_from, 30, 'ready to turn 200 again')
    first_201 = wait_until(lambda: sorted(r['t1'] for r in load.acked(after=t_from)), 30,
                           what=f'a 201 after {what}')[0]
    wait_until(lambda: len(load.acked(after=first_201)) >= 200, 30,
               what='200 acknowledged publishes after recovery')
    load.stop()
    return green, first_201


def check_survived(b, pid, probe, streams):
    """The same process, ready again, live throughout, every stream still on
    its first connection."""
    assert b.pid == pid and b.running(), 'batond was restarted'
    assert b.get('/_/health/ready').status == 200
    assert all(s[2] == 200 for s in probe.get('live')), 'live failed during the fault'
    for s in streams:
        assert s.connections == 1 and not s.ends, f'{s.topic} stream ended: {s.ends}'


def check_nothing_lost(pg, loads, topics, streams):
    """Every acknowledged event stored once and delivered once, in order, to
    every stream. Returns check_store's figures."""
    stored, figures = check_store(pg, loads, topics)
    wait_delivered(streams, stored)
    check_streams(streams, stored)
    assert not [s for s in streams if s.ends], [s.ends for s in streams]
    report_store(figures, streams)
    return figures


# --- the cases --------------------------------------------------------------------

@test
def database_killed_and_restarted_under_load(ctx):
    pg, b, probe, streams, load = one_instance_under_load(ctx)
    pid = b.pid

    t_kill = time.monotonic()
    pg.kill()
    # pg_ctl -m immediate -w has returned: the postmaster and every backend
    # are gone, so each of batond's connections has seen its socket close.
    t_down = time.monotonic()
    red = probe.wait(503, t_kill, INTERVAL + 10, 'ready to turn 503')
    # From the fault in effect, not from pg_ctl's start (runuser and pg_ctl
    # take their time on a loaded machine): may be negative, when batond
    # saw its backends die before pg_ctl returned.
    red_after = red[1] - t_down
    body = json.loads(red[3])
    assert body['checks']['database']['status'] == 'DOWN', body
    # An outage of a few check intervals, with publishes failing all along,
    # and long enough for every stream to hear a heartbeat: a quiet stream
    # gets one on the first tick of the hub's timer (every HEARTBEAT, with
    # 1 s of accuracy, sse-stream.c) at least HEARTBEAT after its last
    # write, so up to ~3 s after t_down; waited for, not assumed.
    wait_until(lambda: time.monotonic() - t_down >= 3 * INTERVAL and
               load.count(503, after=t_down) >= 20 and
               all(s.heard_between(t_down + HEARTBEAT, time.monotonic()) for s in streams), 30,
               what='publishes to fail for a while and every stream to hear a heartbeat')
    t_restart = time.monotonic()
    assert b.get('/_/health/live').status == 200
    pg.start()
    t_up = time.monotonic()
    green, first_201 = recover(load, probe, t_restart, 'the restart')

    outage = [r for r in load.all() if r['t0'] >= t_down and r['t1'] <= t_restart]
    waits = sorted(r['t1'] - r['t0'] for r in outage)
    note(f'ready turned 503 {red_after:.2f} s after pg_ctl stop -m immediate returned '
         f'({red[1] - t_kill:.2f} s after it started; check interval {INTERVAL:g} s); '
         f'200 again {green[1] - t_up:.2f} s after the restart; '
         f'first 201 {first_201 - t_up:.2f} s after it')
    note(f'during the outage ({t_restart - t_down:.1f} s): {load.summary(t_down, t_restart)}; '
         f'a failing publish waited median {ms(statistics.median(waits))}, max {ms(waits[-1])}')
    note(f'in all: {load.summary()}')
    heard = [s.heard_between(t_down + HEARTBEAT, t_restart) for s in streams]
    note(f'{len(streams)} streams: {sum(s.connections for s in streams)} connections, '
         f'{sum(len(s.ends) for s in streams)} ended; {sum(heard)} got heartbeats during the outage')

    # The round under way fails as its connection closes, or the next one
    # starts at most INTERVAL after the last ended (health-checks.c,
    # round_finish) and fails at once (not connected).
    assert red_after <= INTERVAL + SLACK, \
        f'ready turned 503 {red_after:.2f} s after the database went down (interval {INTERVAL:g} s)'
    assert not [r for r in outage if r['status'] == 201], 'a 201 while PostgreSQL was down'
    assert all(r['status'] == 503 for r in outage), \
        f"outage answers: {sorted({r['status'] for r in outage}, key=str)}"
    messages = assert_json_503(load, 'database unavailable')
    note(f'503 messages: {messages[:3]}')
    assert not load.count(None), f'{load.count(None)} publishes got no answer'
    check_survived(b, pid, probe, streams)
    assert all(heard), 'a stream got nothing (not even a heartbeat) during the outage'

    check_nothing_lost(pg, [load], TOPICS, streams)
    stop_cleanly([b], [probe], streams)


@test
def nats_killed_and_restarted_under_load(ctx):
    """Two instances on one database and one NATS. README: NATS is a
    readiness dependency (ready turns 503 once the connection has been
    lost for the failover grace, 3 s, plus at most an interval, and back
    by itself), publishing needs only PostgreSQL (so it goes on: 201), and
    events published while the bus is down still arrive on the other
    instance through the resync every STREAM_RESYNC_INTERVAL."""
    pg = ctx.postgres()
    n = ctx.nats()
    env = {'DATABASE_URL': pg.url(), 'NATS__ENABLED': 'true', 'NATS__URL': n.url, **ENV}
    blue = ctx.batond({**env, 'DEPLOYMENT_COLOR': 'blue'}, name='blue').start()
    green = ctx.batond({**env, 'DEPLOYMENT_COLOR': 'green'}, name='green').start()
    blue.wait_ready()
    green.wait_ready()
    pids = (blue.pid, green.pid)
    probes = [managed(ctx, Prober(x.port), Prober.stop) for x in (blue, green)]
    # 'cross' is published on blue only: green gets it through NATS or the
    # resync, nothing else. 'mixed' is published on both.
    topics = ('cross', 'mixed')
    streams = [ctx.add(s, Stream.close) for s in open_streams(green.port, topics)]
    streams += [ctx.add(s, Stream.close) for s in open_streams(blue.port, topics)]
    cross_on_green = streams[:2]
    load = managed(ctx, Load([(blue.port, 'cross'), (blue.port, 'cross'), (blue.port, 'mixed'),
                              (green.port, 'mixed')]), Load.stop)
    wait_until(lambda: len(load.acked()) >= 200, 30, what='200 acknowledged publishes')

    t_kill = time.monotonic()
    n.stop()
    t_down = time.monotonic()
    reds = [p.wait(503, t_kill, INTERVAL + 10, 'ready to turn 503') for p in probes]
    for red in reds:
        body = json.loads(red[3])
        assert body['checks']['nats']['status'] == 'DOWN', body
        assert body['checks']['database']['status'] == 'UP', body

    # Down long enough for several resyncs, and green has delivered events
    # blue acknowledged after the bus went away.
    def crossed():
        acked = {r['id'] for r in load.acked(after=t_down) if r['topic'] == 'cross'}
        return all(len(acked & set(s.ids())) >= 20 for s in cross_on_green)
    wait_until(lambda: time.monotonic() - t_down >= 3 * RESYNC and crossed(), 30,
               what='events published on blue during the outage to reach green')
    t_restart = time.monotonic()
    n.start()
    t_up = time.monotonic()
    greens = [p.wait(200, t_restart, 30, 'ready to turn 200 again') for p in probes]
    wait_until(lambda: len(load.acked(after=max(g[1] for g in greens))) >= 200, 30,
               what='200 acknowledged publishes after recovery')
    t_recovered = max(g[1] for g in greens)
    load.stop()

    # Delivery lag on green of what blue acknowledged: ack -> arrival.
    ack_time = {(r['w'], r['k']): r['t1'] for r in load.acked()}

    def lags(lo, hi):
        out = []
        for s in cross_on_green:
            out += [a - ack_time[m] for _, m, a in list(s.events)
                    if m in ack_time and lo <= ack_time[m] <= hi]
        return sorted(out)
    during = lags(t_down, t_restart)
    before = lags(0, t_kill)
    after = lags(t_recovered + 0.5, float('inf'))
    note(f'ready turned 503 on blue {reds[0][1] - t_kill:.2f} s, on green {reds[1][1] - t_kill:.2f} s '
         f'after NATS was killed (check interval {INTERVAL:g} s); 200 again '
         f'{greens[0][1] - t_up:.2f} s / {greens[1][1] - t_up:.2f} s after it restarted')
    note(f'during the outage ({t_restart - t_down:.1f} s): {load.summary(t_down, t_restart)}')
    note(f'in all: {load.summary()}')
    note(f"blue's events on green, ack to arrival: through NATS before median {ms(statistics.median(before))}; "
         f'bus down median {ms(statistics.median(during))}, max {ms(during[-1])} ({len(during)} deliveries, '
         f'resync every {RESYNC:g} s); after recovery median {ms(statistics.median(after))}')

    for red in reds:
        # The grace: a failover to another node is not an outage (README,
        # Health reports); with no other node, red after it. Not before
        # the grace from the kill (the connection was lost after it); by
        # the code, at most a retry (0.1 s) after the grace, from when the
        # loss was seen: INTERVAL (the round that retries may start up to
        # an interval later) and SLACK on top, from the kill's end.
        assert FAILOVER_GRACE <= red[1] - t_kill and \
            red[1] - t_down <= FAILOVER_GRACE + INTERVAL + SLACK, \
            f'ready turned 503 after {red[1] - t_kill:.2f} s'
    assert all(r['status'] == 201 for r in load.all()), \
        f'publishing failed without NATS: {[r for r in load.all() if r["status"] != 201][:3]}'
    # Without the bus, green reads blue's events at its next resync: the
    # timer (every RESYNC, 0.1 s accuracy, event-fanout.c), then a
    # positions query and a range read; SLACK for those and the threads.
    assert during and during[-1] <= RESYNC + 0.1 + SLACK, \
        f'events published during the outage took {during[-1]:.2f} s to reach green'
    for x, pid, p in zip((blue, green), pids, probes):
        check_survived(x, pid, p, streams)

    check_nothing_lost(pg, [load], topics, streams)
    stop_cleanly([blue, green], probes, streams)


@test
def database_hangs_under_load(ctx):
    """The whole server hangs (postmaster and every child SIGSTOPped): open
    connections stop answering and new ones are accepted by the kernel but
    never served, as with a frozen machine or storage. Stopping only
    batond's backends would let it reconnect to a live server at once."""
    pg, b, probe, streams, load = one_instance_under_load(ctx)
    pid = b.pid

    t_hang = time.monotonic()
    n_children = pg.freeze()
    # Every process of the server is stopped from here on.
    t_hung = time.monotonic()
    durations_before = probe_durations(b.port)
    red = probe.wait(503, t_hang, INTERVAL + CHECK_TIMEOUT + 10, 'ready to turn 503')
    red_after = red[1] - t_hung
    # Long enough for publishes to time out and for the reconnects to hang,
    # and longer than a publish may wait by the code (and SLACK), so that
    # one left waiting for SIGCONT would show.
    hang_min = PUBLISH_WAIT_MAX + SLACK + 1.0
    wait_until(lambda: time.monotonic() - t_hung >= hang_min and
               load.count(503, after=t_hung) >= 20, 30, what='publishes to fail for a while')
    durations_after = probe_durations(b.port)
    t_resume = time.monotonic()
    pg.thaw()
    t_up = time.monotonic()
    green, first_201 = recover(load, probe, t_resume, 'the database resumed')

    hang = [r for r in load.all() if r['t1'] >= t_hung and r['t0'] <= t_resume]
    hang_sent = [r for r in hang if r['t0'] >= t_hung and r['t1'] <= t_resume]
    waits = sorted(r['t1'] - r['t0'] for r in hang)
    # Every probe sent during the hang, however late its answer came.
    probes_during = [s for p in ('ready', 'live') for s in probe.get(p, t_hung) if s[0] <= t_resume]
    latencies = sorted(s[1] - s[0] for s in probes_during)
    served = probes_between(durations_before, durations_after, PROBE_SERVER_MAX)
    note(f'SIGSTOPped the postmaster and its {n_children} children; ready turned 503 '
         f'{red_after:.2f} s later (interval {INTERVAL:g} s + check timeout {CHECK_TIMEOUT:g} s)'
         f'; 200 again {green[1] - t_up:.2f} s after SIGCONT, first 201 {first_201 - t_up:.2f} s after it')
    note(f'{len(latencies)} probes during the hang, as the prober saw them: median '
         f'{ms(statistics.median(latencies))}, max {ms(latencies[-1])}; by batond (answered, '
         f'of them over {PROBE_SERVER_MAX} s): {served}')
    note(f'publishes answered during the hang ({t_resume - t_hung:.1f} s): '
         f'{load.summary(t_hung, t_resume)}; waited median {ms(statistics.median(waits))}, '
         f'max {ms(waits[-1])} (query timeout {QUERY_TIMEOUT:g} s)')
    note(f'in all: {load.summary()}')
    messages = assert_json_503(load, 'database unavailable')
    note(f'503 messages: {messages[:4]}')

    # By t_hung the server answers nothing: the check under way, or the next
    # round's (at most INTERVAL after the last ended), gets no answer, and
    # its timer fails it after CHECK_TIMEOUT (the control connection has no
    # statement timeout, so no cancel grace: db.c, db_send_next).
    assert red_after <= INTERVAL + CHECK_TIMEOUT + SLACK, \
        f'ready turned 503 {red_after:.2f} s after the database froze'
    # Probes do not wait for the frozen database, by batond's own clock...
    assert all(n > 0 for n, _ in served.values()) and len(served) == 2, served
    assert not any(slow for _, slow in served.values()), \
        f'probes took over {PROBE_SERVER_MAX} s in batond while the database hung: {served}'
    # ... nor does its loop block on it: blocked, it would stay so until
    # SIGCONT, at least hang_min after t_hung, and the probes sent meanwhile
    # would wait for that; a few seconds is already far beyond what the
    # prober's own thread adds on a loaded machine.
    assert latencies[-1] < hang_min / 3, f'a probe took {latencies[-1]:.2f} s while the database hung'
    assert not [r for r in hang_sent if r['status'] == 201], 'a 201 while PostgreSQL was stopped'
    assert all(r['status'] == 503 for r in hang_sent), \
        f"answers during the hang: {sorted({r['status'] for r in hang_sent}, key=str)}"
    # A frozen server cancels nothing: batond gives up on its own after the
    # timeout and DB_CANCEL_GRACE_USEC (README: DATABASE_QUERY_TIMEOUT),
    # after up to a timeout in the queue (PUBLISH_WAIT_MAX). One that
    # waited for SIGCONT instead would have waited at least hang_min.
    assert waits[-1] <= PUBLISH_WAIT_MAX + SLACK, \
        f'a publish waited {waits[-1]:.2f} s (at most {PUBLISH_WAIT_MAX:g} s by the code)'
    assert not load.count(None), f'{load.count(None)} publishes got no answer'
    check_survived(b, pid, probe, streams)

    figures = check_nothing_lost(pg, [load], TOPICS, streams)
    # A 503 says "not stored" unless its message says the event may have
    # been stored: a batch the frozen server had got commits on SIGCONT.
    maybe = 'the event may have been stored'
    unknown = [r for r in load.all() if r['status'] == 503 and maybe in r['error']['message']]
    lying = [r for r in figures['rejected_stored'] if maybe not in r['error']['message']]
    assert not lying, f'answered 503 without "{maybe}" but stored: {lying[:3]}'
    note(f"503s saying the event may have been stored: {len(unknown)}, of which stored "
         f"(committed when the server resumed): {len(figures['rejected_stored'])}")
    stop_cleanly([b], [probe], streams)


@test
def batond_killed_under_load(ctx):
    pg = ctx.postgres()
    env = {'DATABASE_URL': pg.url(), **ENV}
    first = ctx.batond(env, name='first').start()
    first.wait_ready()
    streams = [ctx.add(s, Stream.close) for s in open_streams(first.port)]
    # Full speed: every thread has a request in flight at the kill.
    load = managed(ctx, Load([(first.port, TOPICS[w % 2]) for w in range(6)], pace=0), Load.stop)
    wait_until(lambda: len(load.acked()) >= 500, 30, what='500 acknowledged publishes')
    t_kill = time.monotonic()
    first.signal(signal.SIGKILL)
    first.wait_exit()
    # Every publisher has found out: its request failed or was refused.
    wait_until(lambda: all(any(r['w'] == w and r['t1'] >= t_kill for r in load.all())
                           for w in range(6)), 10,
               what='the publishers to notice the kill')
    load.stop()
    for s in streams:
        wait_until(lambda: s.ends, 10, what='the stream to see the kill')
    before = {s: s.last_id() for s in streams}

    second = ctx.batond(env, name='second').start()
    second.wait_ready()
    # The subscribers resume on the new instance with their last id; new
    # ones join from ids acknowledged before the kill.
    for s in streams:
        s.resume(second.port)
    late = []
    for topic in TOPICS:
        ids = [r['id'] for r in load.acked() if r['topic'] == topic]
        late.append(ctx.add(Stream(second.port, topic, last_event_id=ids[len(ids) // 2]),
                            Stream.close))
    for s in streams + late:
        s.wait_open()
    more = managed(ctx, Load([(second.port, t) for t in TOPICS], pace=0.01, first_worker=100),
                   Load.stop)
    wait_until(lambda: len(more.acked()) >= 50, 30, what='publishes on the new instance')
    more.stop()

    stored, figures = check_store(pg, [load, more], TOPICS)
    unknown = figures['unknown']
    note(f'SIGKILL after {load.summary()}; {load.refused} connections refused afterwards')
    note(f"acknowledged {len(load.acked())}, stored {sum(len(e) for e in stored.values()) - len(more.acked())} "
         f'(before the new instance), in flight without answer {len(unknown)} '
         f"({len(figures['unknown_stored'])} of them stored, none twice)")
    note(f'streams resumed on the new instance from ids {sorted(before.values())}; '
         f'late joiners from {[s.start_after for s in late]}; '
         f'{len(more.acked())} more published there')
    wait_delivered(streams + late, stored)
    check_streams(streams + late, stored)
    report_store(figures, streams + late)
    assert len(figures['rejected_stored']) == 0, figures['rejected_stored'][:3]
    stop_cleanly([second], [], streams + late)


if __name__ == '__main__':
    run()
