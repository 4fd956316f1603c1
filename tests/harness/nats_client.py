"""A minimal NATS client (the text protocol, stdlib only), for tests that
play someone else on the bus: publishing what batond did not, with or
without headers, and reading what batond sends."""

import json
import socket


class NatsClient:
    def __init__(self, port, timeout=5):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
        self.buf = b''
        self._line()                                    # INFO {...}
        self._send(b'CONNECT ' + json.dumps({'verbose': False, 'pedantic': False, 'headers': True,
                                               'name': 'test'}).encode() + b'\r\n')
        self.flush()

    def close(self):
        self.sock.close()

    def _send(self, data):
        self.sock.sendall(data)

    def _line(self):
        while b'\r\n' not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError('nats-server closed the connection')
            self.buf += chunk
        line, self.buf = self.buf.split(b'\r\n', 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError('nats-server closed the connection')
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def publish(self, subject, payload, headers=None):
        if headers is None:
            self._send(f'PUB {subject} {len(payload)}\r\n'.encode() + payload + b'\r\n')
            return
        head = b'NATS/1.0\r\n' + b''.join(f'{k}: {v}\r\n'.encode() for k, v in headers.items()) + b'\r\n'
        self._send(f'HPUB {subject} {len(head)} {len(head) + len(payload)}\r\n'.encode() + head + payload + b'\r\n')

    def subscribe(self, subject, sid=1):
        self._send(f'SUB {subject} {sid}\r\n'.encode())

    def flush(self):
        """Returns once the server has processed everything sent so far."""
        self._send(b'PING\r\n')
        while True:
            line = self._line()
            if line == b'PONG':
                return
            if line.startswith(b'-ERR'):
                raise ConnectionError(line.decode())

    def next_message(self):
        """(subject, headers, payload) of the next MSG or HMSG."""
        while True:
            line = self._line()
            if line == b'PING':
                self._send(b'PONG\r\n')
                continue
            parts = line.split()
            if parts[0] == b'MSG':
                return parts[1].decode(), {}, self._bytes(int(parts[-1]))
            if parts[0] == b'HMSG':
                head_size, total = int(parts[-2]), int(parts[-1])
                data = self._bytes(total)
                headers = {}
                for h in data[:head_size].split(b'\r\n')[1:]:
                    if b':' in h:
                        k, v = h.split(b':', 1)
                        headers[k.decode()] = v.strip().decode()
                return parts[1].decode(), headers, data[head_size:]
