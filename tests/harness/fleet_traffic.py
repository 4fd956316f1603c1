#!/usr/bin/env python3
"""What the users of a fleet send and see, from outside the hosts: many
SSE subscribers attached to each host through its nginx, and publishers
posting to the hosts in turn, each publish with an Idempotency-Key. Run in the bridge's network namespace by
tests/system/test_fleet.py and bench/fleet (standard library only; one
process, asyncio, so that thousands of streams cost little).

A subscriber resumes like an EventSource: when its stream ends (a colour
told it to reconnect), it comes back to the same host with Last-Event-ID;
when the host does not answer (refused, no bytes for HEARTBEAT_TIMEOUT
seconds: the heartbeats stopped), it moves to the next host of its list.
Every reconnect and move is counted.

Takes one JSON object as its argument:

    {"topic": "t", "seconds": 20, "settle": 15, "heartbeat_timeout": 8,
     "groups": [{"name": "h2", "hosts": ["http://10.87.0.2", ...], "subscribers": 10}],
     "publish": {"hosts": ["http://10.87.0.1"], "workers": 2, "interval": 0.05}}

Subscribers connect first; publishing starts once every one has its 200,
runs for "seconds" (or until SIGUSR1), then each subscriber has "settle"
seconds to receive the last acknowledged id. Prints one JSON line: per
group the ids received as runs ([first, last] pairs, so that "exactly
once, in order" is one comparison), reconnects, moves, and the latency
from each publish's request to its arrival (p50/p99/max, ms); and the
publishes: acknowledged ids, failures with their reason, and the
publishes sent again because a reused connection closed unanswered.
"""

import asyncio
import json
import os
import signal
import sys
import time
import urllib.parse


# Idempotency-Keys are global and kept for a day: this run's own.
RUN = os.urandom(8).hex()


def runs(ids):
    """[1,2,3,5,6] -> [[1,3],[5,6]]: arrival order kept, so a duplicate or
    a step back shows as a run of its own."""
    out = []
    for i in ids:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


class Subscriber:
    def __init__(self, group, hosts, topic, sent_at, heartbeat_timeout):
        self.group = group
        self.hosts = [urllib.parse.urlparse(h) for h in hosts]
        self.topic = topic
        self.sent_at = sent_at          # id -> monotonic time of its publish request
        self.timeout = heartbeat_timeout
        self.host = 0
        self.ids = []
        self.arrived = []               # monotonic time of each id's arrival
        self.last = 0
        self.reconnects = 0
        self.moves = 0
        self.other_events = {}
        self.connected = asyncio.Event()
        self.errors = []

    async def run(self, stop):
        while not stop.is_set():
            try:
                await self.stream(stop)
                self.reconnects += 1            # ended by the server: same host
            except (OSError, asyncio.TimeoutError, ConnectionError, ValueError) as e:
                self.errors.append(f'{self.hosts[self.host].netloc}: {type(e).__name__} {e}'[:200])
                self.host = (self.host + 1) % len(self.hosts)
                self.moves += 1
            if not stop.is_set():
                await asyncio.sleep(0.2)

    async def stream(self, stop):
        h = self.hosts[self.host]
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(h.hostname, h.port or 80), self.timeout)
        try:
            request = (f'GET /api/v1/topics/{self.topic}/stream HTTP/1.1\r\n'
                       f'Host: {h.netloc}\r\nAccept: text/event-stream\r\n'
                       f'Last-Event-ID: {self.last}\r\n\r\n')
            writer.write(request.encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b'\r\n\r\n'), self.timeout)
            status = int(head.split(b' ', 2)[1])
            if status != 200:
                raise ValueError(f'status {status}')
            chunked = b'transfer-encoding: chunked' in head.lower()
            self.connected.set()
            await self.read_events(reader, chunked, stop)
        finally:
            writer.close()

    async def read_events(self, reader, chunked, stop):
        buf = b''
        while not stop.is_set():
            if chunked:
                size_line = await asyncio.wait_for(reader.readuntil(b'\r\n'), self.timeout)
                size = int(size_line.split(b';')[0], 16)
                if size == 0:
                    return
                data = await asyncio.wait_for(reader.readexactly(size + 2), self.timeout)
                data = data[:-2]
            else:
                data = await asyncio.wait_for(reader.read(65536), self.timeout)
                if not data:
                    return
            buf += data
            while b'\n\n' in buf:
                block, buf = buf.split(b'\n\n', 1)
                self.on_block(block.decode())

    def on_block(self, block):
        fields = {}
        for line in block.split('\n'):
            if line.startswith(':') or ':' not in line:
                continue
            k, v = line.split(':', 1)
            fields[k] = v[1:] if v.startswith(' ') else v
        event = fields.get('event', 'message')
        if 'data' not in fields:
            return
        if event != 'message':
            self.other_events[event] = self.other_events.get(event, 0) + 1
            return
        i = int(fields['id'])
        self.ids.append(i)
        self.arrived.append(time.monotonic())
        self.last = i

    def latencies(self):
        """From each publish's request to the arrival here, in ms. Known
        only at the end: an event may arrive before its 201 does."""
        return [(t - self.sent_at[i]) * 1000 for i, t in zip(self.ids, self.arrived)
                if i in self.sent_at]


class Publisher:
    def __init__(self, hosts, topic, interval, sent_at, acked, failures, retried):
        self.hosts = [urllib.parse.urlparse(h) for h in hosts]
        self.topic, self.interval = topic, interval
        self.sent_at, self.acked, self.failures, self.retried = sent_at, acked, failures, retried

    async def run(self, stop, start):
        n = start
        conn = {}
        while not stop.is_set():
            h = self.hosts[n % len(self.hosts)]
            body = json.dumps({'n': n}).encode()
            # With a key, sending the publish again is safe: batond stores
            # it once and answers the first 201 again (Idempotency-Key).
            key = f'{RUN}-{n}'
            sent = time.monotonic()
            try:
                try:
                    status, answer = await self.post(conn, h, body, key)
                except ClosedUnanswered:
                    # A reused connection the server closed as this was
                    # sent (nginx retiring a worker at a reload): what
                    # HTTP clients do for an idempotent request. Counted.
                    self.retried.append(h.netloc)
                    status, answer = await self.post(conn, h, body, key)
                if status == 201:
                    i = json.loads(answer)['id']
                    self.sent_at[i] = sent
                    self.acked.append(i)
                else:
                    self.failures.append(f'{h.netloc}: {status} {answer[:120]!r}')
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError,
                    ValueError) as e:
                self.failures.append(f'{h.netloc}: {type(e).__name__} {e}'[:200])
                old = conn.pop(h.netloc, None)
                if old:
                    old[1].close()
            n += 1000
            await asyncio.sleep(self.interval)
        for _, w in conn.values():
            w.close()

    async def post(self, conn, h, body, key):
        """One POST on a kept-alive connection to the host. Raises
        ClosedUnanswered when a reused connection closed before a byte of
        the answer came; nothing else is sent again."""
        reused = h.netloc in conn
        if not reused:
            conn[h.netloc] = await asyncio.wait_for(
                asyncio.open_connection(h.hostname, h.port or 80), 10)
        reader, writer = conn[h.netloc]
        try:
            writer.write((f'POST /api/v1/topics/{self.topic}/events HTTP/1.1\r\nHost: {h.netloc}\r\n'
                          f'Content-Type: application/json\r\nContent-Length: {len(body)}\r\n'
                          f'Idempotency-Key: {key}\r\n\r\n').encode() + body)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b'\r\n\r\n'), 10)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as e:
            conn.pop(h.netloc)
            writer.close()
            if reused and not getattr(e, 'partial', b''):
                raise ClosedUnanswered() from e
            raise
        status = int(head.split(b' ', 2)[1])
        length = 0
        for line in head.decode().split('\r\n')[1:]:
            if line.lower().startswith('content-length:'):
                length = int(line.split(':', 1)[1])
            if line.lower() == 'connection: close':
                conn.pop(h.netloc)
        answer = await asyncio.wait_for(reader.readexactly(length), 10)
        if h.netloc not in conn:
            writer.close()
        return status, answer.decode()


class ClosedUnanswered(Exception):
    pass


async def main(cfg):
    sent_at, acked, failures, retried = {}, [], [], []
    stop_subscribers, stop_publishing = asyncio.Event(), asyncio.Event()
    subs = []
    for g in cfg['groups']:
        subs += [Subscriber(g['name'], g['hosts'], cfg['topic'], sent_at,
                            cfg.get('heartbeat_timeout', 8)) for _ in range(g['subscribers'])]
    tasks = [asyncio.create_task(s.run(stop_subscribers)) for s in subs]
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in subs)), 60)
    connect_seconds = time.monotonic() - started
    print('connected', file=sys.stderr, flush=True)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stop_publishing.set)
    p = cfg['publish']
    pubs = [Publisher(p['hosts'], cfg['topic'], p.get('interval', 0.05), sent_at, acked, failures,
                      retried)
            for _ in range(p.get('workers', 1))]
    published_from = time.monotonic()
    ptasks = [asyncio.create_task(pub.run(stop_publishing, k)) for k, pub in enumerate(pubs)]
    try:
        await asyncio.wait_for(stop_publishing.wait(), cfg['seconds'])
    except asyncio.TimeoutError:
        stop_publishing.set()
    await asyncio.gather(*ptasks)
    publish_seconds = time.monotonic() - published_from
    last = max(acked, default=0)
    deadline = time.monotonic() + cfg.get('settle', 15)
    while time.monotonic() < deadline and any(s.last < last for s in subs):
        await asyncio.sleep(0.1)
    stop_subscribers.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    groups = {}
    for s in subs:
        g = groups.setdefault(s.group, {'subscribers': 0, 'runs': {}, 'reconnects': 0, 'moves': 0,
                                        'latencies': [], 'events': {}, 'errors': []})
        g['subscribers'] += 1
        key = json.dumps(runs(s.ids))
        g['runs'][key] = g['runs'].get(key, 0) + 1
        g['reconnects'] += s.reconnects
        g['moves'] += s.moves
        g['latencies'] += s.latencies()
        g['errors'] += s.errors[:3]
        for e, n in s.other_events.items():
            g['events'][e] = g['events'].get(e, 0) + n
    for g in groups.values():
        lat = g.pop('latencies')
        g['latency_ms'] = {'n': len(lat), 'p50': percentile(lat, 50), 'p99': percentile(lat, 99),
                           'max': max(lat, default=None)}
        # The distinct histories, most common first: one entry when every
        # subscriber of the group saw the same ids in the same order.
        g['runs'] = sorted(([json.loads(k), n] for k, n in g['runs'].items()), key=lambda x: -x[1])
        g['errors'] = g['errors'][:10]
    print(json.dumps({'acked': sorted(acked), 'failures': failures, 'retried': retried,
                      'connect_seconds': connect_seconds, 'publish_seconds': publish_seconds,
                      'groups': groups}))


if __name__ == '__main__':
    asyncio.run(main(json.loads(sys.argv[1])))
