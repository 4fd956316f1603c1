#!/usr/bin/env python3
"""Traffic a user sends through nginx during a deploy, run inside the
container: a /stream/test stream that must run to its end, a topic stream
that must see every published event exactly once (reconnecting with its
last id when a colour tells it to), a publisher, and keep-alive readers
that behave like libcurl, Go's net/http or a browser: a GET sent on a
reused connection that the server closed before answering is sent again
on a new one (RFC 9112 section 9.3.1). nginx 1.22 closes idle keep-alive
connections when a reload retires a worker, racing requests already on
their way (fixed upstream by keepalive_min_timeout, nginx 1.27.4); such
retries are counted, never hidden. Prints one JSON line.

    traffic.py BASE_URL SECONDS TEST_STREAM_SECONDS

A script, not a module of the harness to import: tests/system/test_deploy.py
copies it into the container (standard library only, nothing from this
package) and runs it there.
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse

base, seconds, test_seconds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
host = urllib.parse.urlparse(base)
deadline = time.monotonic() + seconds


def sse(path, last_id=None, on_event=None, stop=None):
    """One connection: calls on_event(id, event, data) per event; returns
    when the server ends the stream or the connection breaks."""
    conn = http.client.HTTPConnection(host.hostname, host.port or 80, timeout=30)
    headers = {'Accept': 'text/event-stream'}
    if last_id is not None:
        headers['Last-Event-ID'] = str(last_id)
    conn.request('GET', path, headers=headers)
    r = conn.getresponse()
    if r.status != 200:
        conn.close()
        return r.status
    fields = {}
    while not (stop and stop()):
        # r.readline(), not r.fp.readline(): through nginx the response is
        # chunked, and the raw socket's lines carry the chunk framing, a
        # chunk may end mid-line ("event: mes" | "sage"), and that event
        # would be lost to this client, not to batond.
        line = r.readline()
        if not line:
            break
        line = line.decode().rstrip('\n')
        if line == '':
            if 'data' in fields:
                on_event(fields.get('id'), fields.get('event', 'message'), fields['data'])
            fields = {}
        elif not line.startswith(':') and ':' in line:
            k, v = line.split(':', 1)
            fields[k] = v[1:] if v.startswith(' ') else v
    conn.close()
    return 200


result = {'test_stream': {}, 'topic_stream': {}, 'published': [],
          'reads': {'ok': 0, 'non2xx': 0, 'failed': 0, 'retried': 0}}
reads_lock = threading.Lock()
colors = set()              # the colours that served the test stream


def test_stream():
    ticks, ended = [], None
    started = time.time()

    def on(i, ev, data):
        nonlocal ended
        if ev == 'tick':
            ticks.append(int(i))
            colors.add(json.loads(data)['color'])
        elif ev == 'end':
            ended = time.time()
    status = sse(f'/stream/test?duration={test_seconds}', on_event=on)
    result['test_stream'] = {'status': status, 'ticks': ticks, 'ended_at': ended,
                             'started_at': started, 'colors': sorted(colors)}


def topic_stream():
    ids, reconnects, statuses = [], 0, []
    last = 0

    def on(i, ev, data):
        nonlocal last
        if ev == 'message':
            ids.append(int(i))
            last = int(i)
    while time.monotonic() < deadline:
        try:
            statuses.append(sse('/api/v1/topics/deploy/stream', last_id=last, on_event=on,
                                stop=lambda: time.monotonic() >= deadline))
        except OSError as e:
            # Cut under us (an nginx reload retiring a worker): resume
            # with the last id, as an EventSource does. Counted, never hidden.
            statuses.append(f'error: {e}')
        if time.monotonic() < deadline:
            reconnects += 1
            time.sleep(0.2)
    result['topic_stream'] = {'ids': ids, 'reconnects': reconnects, 'statuses': statuses}


def publisher():
    n = 0
    while time.monotonic() < deadline - 2:
        conn = http.client.HTTPConnection(host.hostname, host.port or 80, timeout=10)
        try:
            conn.request('POST', '/api/v1/topics/deploy/events', body=json.dumps({'n': n}),
                         headers={'Content-Type': 'application/json'})
            r = conn.getresponse()
            body = r.read()
            if r.status == 201:
                result['published'].append(json.loads(body)['id'])
            else:
                result.setdefault('publish_errors', []).append(r.status)
        except OSError as e:
            result.setdefault('publish_errors', []).append(str(e))
        finally:
            conn.close()
        n += 1
        time.sleep(0.1)


def count(key):
    with reads_lock:
        result['reads'][key] += 1


def reader():
    conn, reused = None, False
    while time.monotonic() < deadline - 2:
        for attempt in (1, 2):
            if conn is None:
                conn = http.client.HTTPConnection(host.hostname, host.port or 80, timeout=10)
                reused = False
            try:
                conn.request('GET', '/api/v1/topics/load/events?limit=1')
                r = conn.getresponse()
                r.read()
                count('ok' if r.status == 200 else 'non2xx')
                reused = True
                if r.getheader('Connection', '').lower() == 'close':
                    conn.close()
                    conn = None
                break
            except OSError as e:        # RemoteDisconnected is a ConnectionResetError
                conn.close()
                conn = None
                closed_under_us = isinstance(e, (ConnectionResetError, BrokenPipeError))
                if closed_under_us and reused and attempt == 1:
                    count('retried')
                    continue
                count('failed')
                result.setdefault('read_errors', []).append(str(e))
                break


threads = [threading.Thread(target=f) for f in (test_stream, topic_stream, publisher)]
threads += [threading.Thread(target=reader) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(result))
