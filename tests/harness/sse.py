"""A Server-Sent-Events subscriber (SseClient) on a thread of its own."""

import re
import socket
import threading

from .core import wait_until
from .http_client import close_socket


class SseClient:
    """A Server-Sent-Events subscriber on its own thread. Keeps every event
    as (id, event, data) and whether the stream ended; checks nothing
    itself (tests assert on what it saw)."""

    def __init__(self, port, path, last_event_id=None, rcvbuf=None, read=True, extra_headers=None):
        self.events = []
        self.ended = False
        self.status = None
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # A tiny receive buffer makes a slow client for real.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(60)
        self.sock.connect(('127.0.0.1', port))
        headers = f'GET {path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n'
        if last_event_id is not None:
            headers += f'Last-Event-ID: {last_event_id}\r\n'
        for name, value in (extra_headers or {}).items():
            headers += f'{name}: {value}\r\n'
        self.sock.sendall((headers + '\r\n').encode())
        self.reading = threading.Event()
        if read:
            self.reading.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def start_reading(self):
        self.reading.set()

    def _run(self):
        buf = b''
        head_done = False
        length = None
        try:
            while True:
                self.reading.wait()
                d = self.sock.recv(65536)
                if not d:
                    break
                buf += d
                if not head_done:
                    if b'\r\n\r\n' not in buf:
                        continue
                    head, buf = buf.split(b'\r\n\r\n', 1)
                    self.status = int(head.split(b' ')[1])
                    m = re.search(rb'(?im)^content-length: *(\d+)', head)
                    length = int(m.group(1)) if m else None
                    head_done = True
                if length is not None:
                    # A whole answer, not a stream (an error, or the ended
                    # stream of a refusal): the events in it, then the end.
                    if len(buf) < length:
                        continue
                    self._raw = buf[:length] + b'\n\n'
                    self._events_from_raw()
                    break
                buf = self._parse(buf)
        except OSError:
            pass
        with self.lock:
            self.ended = True

    def _parse(self, buf):
        # Chunked transfer: strip chunk framing lazily by scanning for events
        # in the de-chunked text.
        self._raw = getattr(self, '_raw', b'')
        while True:
            line_end = buf.find(b'\r\n')
            if line_end < 0:
                return buf
            size = int(buf[:line_end].split(b';')[0], 16) if buf[:line_end] else 0
            if len(buf) < line_end + 2 + size + 2:
                return buf
            if size == 0:
                # The last chunk: the stream ended (the connection may stay
                # open for keep-alive).
                with self.lock:
                    self.ended = True
            self._raw += buf[line_end + 2:line_end + 2 + size]
            buf = buf[line_end + 2 + size + 2:]
            self._events_from_raw()

    def _events_from_raw(self):
        """Takes the whole events out of the de-chunked text."""
        while b'\n\n' in self._raw:
            block, self._raw = self._raw.split(b'\n\n', 1)
            fields = {}
            for line in block.decode().split('\n'):
                if line.startswith(':') or ':' not in line:
                    continue
                k, v = line.split(':', 1)
                fields.setdefault(k, []).append(v[1:] if v.startswith(' ') else v)
            if 'data' in fields:
                ev = (int(fields['id'][0]) if 'id' in fields else None,
                      fields.get('event', ['message'])[0], '\n'.join(fields['data']))
                with self.lock:
                    self.events.append(ev)

    def ids(self, event='message'):
        with self.lock:
            return [i for i, e, _ in self.events if e == event]

    def all(self):
        with self.lock:
            return list(self.events)

    def wait_for_id(self, n, timeout=15):
        return wait_until(lambda: n in self.ids(), timeout,
                          what=f'event id {n} (have {self.ids()[-5:]})')

    def wait_open(self, timeout=15):
        """Until the stream's 200 is in: batond sends it only once the
        topic's position is known, so whatever is published from then on
        reaches this stream. A sleep instead loses the first events on a
        slow machine. (A client made with read=False reads no status:
        wait_streams() in http_client counts open streams instead.)"""
        assert self.reading.is_set(), 'wait_open() needs a client that reads'
        return wait_until(lambda: self.status == 200 or self.ended, timeout,
                          what='the stream to open') and self.status == 200

    def wait_ended(self, timeout=15):
        return wait_until(lambda: self.ended, timeout, what='the stream to end')

    def close(self):
        close_socket(self.sock)
