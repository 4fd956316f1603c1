#!/usr/bin/env python3
"""The soak's load, run inside the container next to nginx: STREAMS SSE
subscribers of one topic and a publisher at a steady RATE, all through
nginx, for SECONDS. Every subscriber checks that the ids it sees are
contiguous (topic ids are 1, 2, 3, ... in commit order): a gap is a lost
event, a repeat a duplicate. When a colour drains it ends its streams; a
subscriber then reconnects with Last-Event-ID, as a browser's EventSource
does. Streams are one selector loop (a thread each would cost more than
batond); the publisher is a thread with a keep-alive connection.

Prints one JSON line every --report-every seconds ({"progress": ...}) and
a final one ({"result": ...}).

    soak_client.py BASE_URL STREAMS RATE SECONDS [--topic T] [--report-every S]
"""

import argparse
import http.client
import json
import selectors
import socket
import threading
import time
import urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument('base')
ap.add_argument('streams', type=int)
ap.add_argument('rate', type=float)
ap.add_argument('seconds', type=float)
ap.add_argument('--topic', default='soak')
ap.add_argument('--report-every', type=float, default=30)
args = ap.parse_args()
url = urllib.parse.urlparse(args.base)
HOST, PORT = url.hostname, url.port or 80
STREAM_PATH = f'/api/v1/topics/{args.topic}/stream'

lock = threading.Lock()
acked = []                  # ids answered 201
publish_errors = {}         # status (or exception name) -> count
publishing_done = threading.Event()


def publisher():
    conn = None
    interval = 1.0 / args.rate
    deadline = time.monotonic() + args.seconds
    next_at = time.monotonic()
    seq = 0
    while time.monotonic() < deadline:
        next_at += interval
        seq += 1
        body = json.dumps({'seq': seq, 'pad': 'x' * 64})
        try:
            if conn is None:
                conn = http.client.HTTPConnection(HOST, PORT, timeout=10)
            conn.request('POST', f'/api/v1/topics/{args.topic}/events', body=body,
                         headers={'Content-Type': 'application/json'})
            r = conn.getresponse()
            data = r.read()
            if r.status == 201:
                with lock:
                    acked.append(json.loads(data)['id'])
            else:
                with lock:
                    publish_errors[str(r.status)] = publish_errors.get(str(r.status), 0) + 1
            if r.getheader('Connection', '').lower() == 'close':
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            # A keep-alive connection nginx closed between requests: the
            # event was never sent, so sending it again cannot duplicate it.
            # Anything else is counted.
            name = type(e).__name__
            if name not in ('RemoteDisconnected', 'BrokenPipeError', 'ConnectionResetError'):
                with lock:
                    publish_errors[name] = publish_errors.get(name, 0) + 1
            if conn:
                conn.close()
            conn = None
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()
    publishing_done.set()


class Stream:
    """One subscriber: raw HTTP/1.1 over a non-blocking socket, chunked
    decoding and SSE parsing done here, so that thousands fit one loop."""

    def __init__(self, sel):
        self.sel = sel
        self.last_id = 0            # Last-Event-ID 0: from the topic's start
        self.events = 0
        self.gaps = 0               # events missing between two seen
        self.duplicates = 0
        self.reconnects = 0
        self.refused = {}           # non-200 answers, by status
        self.sock = None
        self.connect()

    def connect(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        try:
            self.sock.connect((HOST, PORT))
        except BlockingIOError:
            pass
        self.out = (f'GET {STREAM_PATH} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n'
                    f'Last-Event-ID: {self.last_id}\r\n\r\n').encode()
        self.buf = b''
        self.head = True
        self.chunk_left = None      # bytes left of the current chunk; None: at a size line
        self.text = b''             # de-chunked SSE text not yet parsed
        self.fields = {}
        self.sel.register(self.sock, selectors.EVENT_WRITE, self)

    def reconnect(self, status=None):
        if status is not None:
            self.refused[status] = self.refused.get(status, 0) + 1
        self.sel.unregister(self.sock)
        self.sock.close()
        self.reconnects += 1
        self.connect()

    def on_ready(self, mask):
        if mask & selectors.EVENT_WRITE:
            try:
                n = self.sock.send(self.out)
            except OSError:
                # nginx refused or reset: try again (after the others).
                return self.reconnect('connect')
            self.out = self.out[n:]
            if not self.out:
                self.sel.modify(self.sock, selectors.EVENT_READ, self)
            return
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b''
        if not data:
            return self.reconnect()
        self.buf += data
        if self.head:
            end = self.buf.find(b'\r\n\r\n')
            if end < 0:
                return
            status = int(self.buf.split(b' ', 2)[1])
            self.buf = self.buf[end + 4:]
            self.head = False
            if status != 200:
                return self.reconnect(status)
        self.dechunk()

    def dechunk(self):
        # chunk_left: None at a size line, > 0 inside a chunk's data, 0 at
        # the CRLF that ends a chunk.
        while True:
            if self.chunk_left is None:
                end = self.buf.find(b'\r\n')
                if end < 0:
                    return
                size = int(self.buf[:end].split(b';')[0] or b'0', 16)
                self.buf = self.buf[end + 2:]
                if size == 0:           # the stream's end: the colour drains
                    return self.reconnect()
                self.chunk_left = size
            if self.chunk_left > 0:
                take = self.buf[:self.chunk_left]
                self.buf = self.buf[len(take):]
                self.chunk_left -= len(take)
                self.text += take
                self.parse()
                if self.chunk_left > 0:
                    return
            if len(self.buf) < 2:
                return
            self.buf = self.buf[2:]
            self.chunk_left = None

    def parse(self):
        while True:
            end = self.text.find(b'\n')
            if end < 0:
                return
            line = self.text[:end].decode()
            self.text = self.text[end + 1:]
            if line == '':
                self.dispatch()
            elif not line.startswith(':') and ':' in line:
                k, v = line.split(':', 1)
                self.fields[k] = v[1:] if v.startswith(' ') else v

    def dispatch(self):
        fields, self.fields = self.fields, {}
        if 'data' not in fields or 'id' not in fields or fields.get('event', 'message') != 'message':
            return
        i = int(fields['id'])
        self.events += 1
        if i <= self.last_id:
            self.duplicates += 1
            return
        self.gaps += i - self.last_id - 1
        self.last_id = i


def main():
    sel = selectors.DefaultSelector()
    streams = [Stream(sel) for _ in range(args.streams)]
    pub = threading.Thread(target=publisher, daemon=True)
    started = time.monotonic()
    pub.start()
    next_report = started + args.report_every
    catch_up_deadline = None

    def summary():
        with lock:
            n_acked, top = len(acked), max(acked, default=0)
            errors = dict(publish_errors)
        behind = sum(max(0, top - s.last_id) for s in streams)
        refused = {}
        for s in streams:
            for k, v in s.refused.items():
                refused[str(k)] = refused.get(str(k), 0) + v
        return {
            'elapsed': round(time.monotonic() - started, 1),
            'acked': n_acked, 'max_acked_id': top, 'publish_errors': errors,
            'events_received': sum(s.events for s in streams),
            'gaps': sum(s.gaps for s in streams), 'duplicates': sum(s.duplicates for s in streams),
            'behind': behind, 'reconnects': sum(s.reconnects for s in streams),
            'streams_refused': refused,
        }

    while True:
        for key, mask in sel.select(timeout=0.5):
            key.data.on_ready(mask)
        now = time.monotonic()
        if now >= next_report:
            print(json.dumps({'progress': summary()}), flush=True)
            next_report += args.report_every
        if publishing_done.is_set():
            if catch_up_deadline is None:
                catch_up_deadline = now + 30
            s = summary()
            if s['behind'] == 0 or now > catch_up_deadline:
                break
    result = summary()
    # Lost: acknowledged events a stream never saw (a gap, or never caught up).
    result['lost'] = result['gaps'] + result['behind']
    result['streams'] = len(streams)
    print(json.dumps({'result': result}), flush=True)


main()
