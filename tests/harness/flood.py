#!/usr/bin/env python3
"""A connection flood: clients that each open a keep-alive connection, ask
for /_/health/live once and then hold the connection open, doing nothing.
When the server closes one (the shedding reserve gives its slot back), that
client opens another at once. Enough of them fill MAX_CONNECTIONS and the
reserve, and the rest wait in the kernel's backlog.

Imported by the integration tests, and run as a script inside the system
test's container (standard library only):

    flood.py PORT CLIENTS SECONDS     prints one JSON line
"""

import json
import socket
import sys
import threading
import time

PROBE = b'GET /_/health/live HTTP/1.1\r\nHost: flood\r\n\r\n'


class ProbeHolder(threading.Thread):
    def __init__(self, port, stop):
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.answers = 0
        self.connections = 0

    def run(self):
        while not self.stop.is_set():
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=30) as s:
                    self.connections += 1
                    s.sendall(PROBE)
                    self.hold(s)
            except OSError:
                time.sleep(0.05)

    def hold(self, s):
        s.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = s.recv(4096)
            except socket.timeout:
                continue
            if not data:
                return
            self.answers += data.count(b'HTTP/1.1 200 ')


class Flood:
    """with Flood(port, clients) as f: ... ; then f.answers, f.connections."""

    def __init__(self, port, clients):
        self.stop = threading.Event()
        self.holders = [ProbeHolder(port, self.stop) for _ in range(clients)]

    def __enter__(self):
        for h in self.holders:
            h.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for h in self.holders:
            h.join(5)

    @property
    def answers(self):
        return sum(h.answers for h in self.holders)

    @property
    def connections(self):
        return sum(h.connections for h in self.holders)


if __name__ == '__main__':
    port, clients, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    with Flood(port, clients) as flood:
        time.sleep(seconds)
    print(json.dumps({'answers': flood.answers, 'connections': flood.connections}))
