"""HTTP from the test's side: one request (http_get, publish), raw bytes
in and out (raw_request, read_until_closed, close_socket), and a strict
HTTP/1.1 response reader (StrictReader, raising Misframed) for checking
how answers are framed."""

import http.client
import json
import re
import socket

from .core import wait_until


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return f'<Response {self.status} {self.body[:200]!r}>'


def metric(port, name, timeout=5):
    """A sample without labels of batond's /metrics on port, as a float."""
    m = re.search(rf'^{re.escape(name)} (\S+)$', http_get(port, '/metrics', timeout=timeout).body, re.M)
    assert m, f'no {name} in /metrics'
    return float(m.group(1))


def wait_streams(port, n, timeout=15):
    """Until batond has n streams open (baton_streams_active): a stream
    counts once its 200 went out, that is once its topic's position is
    known. baton_stream_subscribers counts the ones still waiting too."""
    return wait_until(lambda: metric(port, 'baton_streams_active') == n, timeout,
                      what=f'{n} open streams')


class Scraper:
    """/metrics asked again and again on one keep-alive connection. MHD
    completes (and counts out) a request before it reads the next one on
    the same connection, so baton_http_requests_in_flight counts this
    scrape and the others in flight, never a scrape of ours that is still
    to be counted out (as one on a new connection may be)."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)

    def scrape(self):
        self.conn.request('GET', '/metrics')
        r = self.conn.getresponse()
        body = r.read().decode()
        assert r.status == 200 and not r.will_close, (r.status, r.getheaders())
        return Response(r.status, r.getheaders(), body)

    def metric(self, name):
        """A sample without labels, as a float."""
        return float(re.search(rf'^{re.escape(name)} (\S+)$', self.scrape().body, re.M).group(1))

    def in_flight(self):
        return self.metric('baton_http_requests_in_flight')

    def close(self):
        self.conn.close()


def http_get(port, path, method='GET', headers=None, body=None, timeout=5, host='127.0.0.1'):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read().decode(errors='replace'))
    finally:
        conn.close()


def read_until_closed(sock):
    """Everything the peer sends until it closes (or the socket times out)."""
    chunks = []
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                break
            chunks.append(d)
    except (socket.timeout, ConnectionResetError):
        pass
    return b''.join(chunks)


def raw_request(port, data, timeout=5):
    """Sends raw bytes, returns raw bytes received until close (or timeout)."""
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
        s.sendall(data)
        return read_until_closed(s)



class Misframed(AssertionError):
    """An answer a strict HTTP/1.1 client could not read as one response."""


class StrictReader:
    """Reads HTTP/1.1 responses off a socket one at a time, as strictly as
    RFC 9112 allows: one status line, field lines without obs-fold, and a
    body exactly as long as the head says (Content-Length, or chunked), or
    none for a HEAD, 1xx, 204 or 304. Whatever is left over belongs to the
    next response. EOF before a response starts: response() returns None."""

    TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
    HEAD_MAX = 64 * 1024

    def __init__(self, sock):
        self.sock = sock
        self.buf = b''
        self.eof = False

    def _fill(self):
        if self.eof:
            return False
        try:
            d = self.sock.recv(65536)
        except ConnectionResetError:    # after what the server sent: the close
            d = b''
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _take(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise Misframed(f'the connection closed {n - len(self.buf)} bytes short of the body')
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self):
        while b'\r\n' not in self.buf:
            if len(self.buf) > self.HEAD_MAX:
                raise Misframed('a line that never ends')
            if not self._fill():
                raise Misframed(f'the connection closed inside a line: {self.buf[:200]!r}')
        line, _, self.buf = self.buf.partition(b'\r\n')
        return line

    def _head(self):
        line = self._line()
        m = re.fullmatch(rb'HTTP/1\.[01] ([1-5]\d\d) [^\r\n\x00]*', line)
        if not m:
            raise Misframed(f'not a status line: {line[:200]!r}')
        headers = []
        while True:
            line = self._line()
            if not line:
                return int(m.group(1)), headers
            name, colon, value = line.partition(b':')
            if not colon or not self.TOKEN.fullmatch(name):
                raise Misframed(f'not a field line: {line[:200]!r}')
            headers.append((name.decode().lower(), value.strip(b' \t').decode('latin-1')))

    def _chunked(self):
        body = b''
        while True:
            size_line = self._line()
            m = re.fullmatch(rb'([0-9A-Fa-f]+)(;[^\r\n]*)?', size_line)
            if not m:
                raise Misframed(f'not a chunk size: {size_line[:100]!r}')
            size = int(m.group(1), 16)
            if size == 0:
                break
            body += self._take(size)
            if self._take(2) != b'\r\n':
                raise Misframed('a chunk not followed by CRLF')
        while self._line():             # trailer fields, then the empty line
            pass
        return body

    def response(self, method='GET'):
        """The next final response (1xx ones are skipped), as a Response."""
        if not self.buf and not self._fill():
            return None
        while True:
            status, headers = self._head()
            if status >= 200:
                break
        fields = dict(headers)
        lengths = [v for k, v in headers if k == 'content-length']
        if len(lengths) > 1:
            raise Misframed(f'{len(lengths)} Content-Length headers')
        if method == 'HEAD' or status in (204, 304):
            body = b''
        elif fields.get('transfer-encoding', '').lower() == 'chunked':
            if lengths:
                raise Misframed('both Content-Length and chunked')
            body = self._chunked()
        elif lengths:
            if not re.fullmatch(r'\d+', lengths[0]):
                raise Misframed(f'Content-Length {lengths[0]!r}')
            body = self._take(int(lengths[0]))
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b''
        return Response(status, headers, body)

    def expect_end(self):
        """Nothing more: the server closes (or resets) without another byte."""
        while self._fill():
            pass
        if self.buf:
            raise Misframed(f'{len(self.buf)} bytes after the answer: {self.buf[:200]!r}')


def close_socket(sock):
    """Ends a connection at once, waking a thread blocked reading it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()



def publish(port, topic, data, token=None, timeout=10):
    headers = {'Content-Type': 'application/json'}
    if token:
        headers['Authorization'] = f'Bearer {token}'
    return http_get(port, f'/api/v1/topics/{topic}/events', method='POST',
                    body=json.dumps(data), headers=headers, timeout=timeout)
