#!/usr/bin/env python3
"""Traffic against one instance while it restarts, run inside the
container: STREAMS topic streams that resume with their last id whenever
they end, a publisher (one event every 50 ms, each answer timed) and two
keep-alive readers of the topic's history (each answer timed). Prints one JSON line: what was
published, what each stream saw (lost and duplicated ids counted here),
the slowest publish and read, and every non-2xx or failure.

    restarts.py BASE_URL SECONDS STREAMS

A script (standard library only): tests/system/test_deploy.py copies it
into the container and runs it there.
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse

base, seconds, n_streams = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
url = urllib.parse.urlparse(base)
deadline = time.monotonic() + seconds
TOPIC = 'restarts'
lock = threading.Lock()
result = {'published': [], 'publish_max_s': 0.0, 'read_max_s': 0.0, 'reads': 0, 'errors': [],
          'reconnects': 0}
seen = [[] for _ in range(n_streams)]


def note_error(what):
    with lock:
        result['errors'].append(what)


def stream(i):
    last = 0
    while time.monotonic() < deadline + 3:
        try:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
            conn.request('GET', f'/api/v1/topics/{TOPIC}/stream',
                         headers={'Accept': 'text/event-stream', 'Last-Event-ID': str(last)})
            r = conn.getresponse()
            if r.status != 200:
                note_error(f'stream {i}: {r.status}')
                conn.close()
                time.sleep(0.2)
                continue
            fields = {}
            while time.monotonic() < deadline + 3:
                line = r.readline()     # chunked: not r.fp's raw lines (traffic.py)
                if not line:
                    break
                line = line.decode().rstrip('\n')
                if line == '':
                    if fields.get('event', 'message') == 'message' and 'id' in fields:
                        last = int(fields['id'])
                        seen[i].append(last)
                    fields = {}
                elif not line.startswith(':') and ':' in line:
                    k, v = line.split(':', 1)
                    fields[k] = v[1:] if v.startswith(' ') else v
            conn.close()
        except OSError:
            pass                # the restart cut it: resume, as an EventSource does
        with lock:
            result['reconnects'] += 1
        time.sleep(0.1)


def publisher():
    n = 0
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
            conn.request('POST', f'/api/v1/topics/{TOPIC}/events', body=json.dumps({'n': n}),
                         headers={'Content-Type': 'application/json'})
            r = conn.getresponse()
            body = r.read()
            conn.close()
            took = time.monotonic() - t0
            with lock:
                result['publish_max_s'] = max(result['publish_max_s'], took)
            if r.status == 201:
                result['published'].append(json.loads(body)['id'])
            else:
                note_error(f'publish: {r.status} {body[:200]!r}')
        except OSError as e:
            note_error(f'publish: {e}')
        n += 1
        time.sleep(0.05)


def reader():
    conn = None
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
            conn.request('GET', f'/api/v1/topics/{TOPIC}/events?limit=1')
            r = conn.getresponse()
            r.read()
            took = time.monotonic() - t0
            with lock:
                result['reads'] += 1
                result['read_max_s'] = max(result['read_max_s'], took)
            if r.status != 200:
                note_error(f'read: {r.status}')
            if r.getheader('Connection', '').lower() == 'close':
                conn.close()
                conn = None
        except OSError as e:
            # A keep-alive connection the old process closed under us: sent
            # again on a new one, as HTTP clients do (RFC 9112 9.3.1).
            if conn is not None:
                conn.close()
                conn = None
                continue
            note_error(f'read: {e}')
        time.sleep(0.02)


threads = [threading.Thread(target=stream, args=(i,)) for i in range(n_streams)]
threads += [threading.Thread(target=publisher)] + [threading.Thread(target=reader) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
published = sorted(result['published'])
lost = dup = 0
for ids in seen:
    got = set(ids)
    lost += len([p for p in published if p not in got])
    dup += len(ids) - len(got)
result.update(streams=n_streams, lost=lost, duplicated=dup, published=len(published))
print(json.dumps(result))
