"""Test harness for batond's integration tests: real PostgreSQL, real
nats-server, batond started through systemd-socket-activate, and the
sd_notify messages it sends, read from a socket the test owns.

Python standard library only. Each test file is a script that prints TAP
(meson counts it): run it directly to debug, e.g.
    BATOND=build/src/batond python3 tests/integration/test_startup.py -v
"""

import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

PG_BIN = None
for version in ('17', '16', '15', '14', '13'):
    candidate = f'/usr/lib/postgresql/{version}/bin'
    if os.path.exists(os.path.join(candidate, 'initdb')):
        PG_BIN = candidate
        break

VERBOSE = '-v' in sys.argv
MIGRATION_LOCK_KEY = 7089075310400727399
# The migrations batond embeds, as (version, name), from migrations/.
MIGRATIONS = sorted((int(f.split('_', 1)[0]), f.split('_', 1)[1][:-4])
                    for f in os.listdir(os.path.join(os.path.dirname(__file__), '..', '..',
                                                     'migrations')) if f.endswith('.sql'))


def log(message):
    if VERBOSE:
        print(f'# {message}', flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, interval=0.05, what='condition'):
    """Polls predicate until it returns a truthy value; returns that value."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the thing we wait for may not exist yet
            last_error = e
        time.sleep(interval)
    raise AssertionError(f'timed out after {timeout}s waiting for {what}'
                         + (f' (last error: {last_error})' if last_error else ''))


class TempDir:
    def __init__(self, prefix):
        # Short: unix socket paths inside must stay under 108 bytes.
        self.path = tempfile.mkdtemp(prefix=f'baton-{prefix[:20]}-')
        os.chmod(self.path, 0o755)

    def join(self, *parts):
        return os.path.join(self.path, *parts)

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


class Postgres:
    """A throwaway PostgreSQL cluster in a temporary directory. As root it
    runs as the 'postgres' user (PostgreSQL refuses to run as root)."""

    def __init__(self, tmp, durable=False):
        if not PG_BIN:
            raise RuntimeError('PostgreSQL server binaries not found under /usr/lib/postgresql')
        self.dir = tmp.join('pg')
        self.port = free_port()
        self.user = None
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            self.user = 'postgres'
            pw = pwd.getpwnam('postgres')
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(['initdb', '-D', self.data, '-U', 'baton', '--auth=trust', '-E', 'UTF8',
                   '--no-sync'], quiet=True)
        with open(os.path.join(self.data, 'postgresql.conf'), 'a') as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.dir}'\n"
                    # fsync off is safe here: tests kill the server, never
                    # the machine. synchronous_commit stays on: with it off,
                    # a killed server forgets commits it acknowledged.
                    # Benchmarks of writes want the real thing (durable).
                    + ("" if durable else "fsync = off\n")
                    + "max_connections = 200\n")
        self.start()
        self.psql('CREATE DATABASE baton', db='postgres')

    @property
    def data(self):
        return os.path.join(self.dir, 'data')

    def _run(self, argv, quiet=False, check=True):
        argv = [os.path.join(PG_BIN, argv[0])] + argv[1:]
        if self.user:
            argv = ['runuser', '-u', self.user, '--'] + argv
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if check and out.returncode != 0:
            raise RuntimeError(f'{argv} failed: {out.stdout}')
        return out

    def start(self):
        self._run(['pg_ctl', '-D', self.data, '-l', os.path.join(self.dir, 'log'), '-w', 'start'])

    def stop(self, mode='fast'):
        self._run(['pg_ctl', '-D', self.data, '-m', mode, '-w', 'stop'])

    def kill(self):
        """Crash-stop: what a power cut or OOM kill looks like to clients."""
        self.stop('immediate')

    def url(self, db='baton', password=None):
        auth = f'baton:{password}' if password else 'baton'
        return f'postgres://{auth}@127.0.0.1:{self.port}/{db}'

    def psql(self, sql, db='baton', check=True):
        out = subprocess.run(['psql', '-h', '127.0.0.1', '-p', str(self.port), '-U', 'baton',
                              '-d', db, '-v', 'ON_ERROR_STOP=1', '-At', '-c', sql],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if check and out.returncode != 0:
            raise RuntimeError(f'psql {sql!r} failed: {out.stderr}')
        return out.stdout.strip()

    def session(self, db='baton'):
        """An interactive psql session kept open (for holding locks)."""
        return subprocess.Popen(['psql', '-h', '127.0.0.1', '-p', str(self.port), '-U', 'baton',
                                 '-d', db, '-At', '-q'], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def destroy(self):
        try:
            self.stop('immediate')
        except Exception:
            pass


class Nats:
    def __init__(self, tmp):
        self.port = free_port()
        self.proc = None
        self.log = tmp.join(f'nats-{self.port}.log')
        self.start()

    @property
    def url(self):
        return f'nats://127.0.0.1:{self.port}'

    def start(self):
        self.proc = subprocess.Popen(['nats-server', '-a', '127.0.0.1', '-p', str(self.port),
                                      '-l', self.log], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def accepting():
            with socket.create_connection(('127.0.0.1', self.port), timeout=0.5):
                return True
        wait_until(accepting, 10, what='nats-server to accept connections')

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def destroy(self):
        self.stop()


class NotifySocket:
    """Receives sd_notify datagrams, as systemd would, and keeps them with
    their arrival time (monotonic)."""

    def __init__(self, tmp):
        self.path = tmp.join(f'notify-{id(self) % 100000}.sock')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []  # (time, text)
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while self.running:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            text = data.decode(errors='replace')
            with self.lock:
                self.messages.append((time.monotonic(), text))
            log(f'notify: {text!r}')

    def all(self):
        with self.lock:
            return list(self.messages)

    def texts(self):
        return [m for _, m in self.all()]

    def find(self, pattern, since=0):
        """First message (after index 'since') matching the regex, or None."""
        for i, (t, m) in enumerate(self.all()):
            if i >= since and re.search(pattern, m):
                return (i, t, m)
        return None

    def wait_for(self, pattern, timeout=10, since=0):
        return wait_until(lambda: self.find(pattern, since), timeout,
                          what=f'sd_notify message matching {pattern!r}; got {self.texts()[-8:]}')

    def count(self):
        with self.lock:
            return len(self.messages)

    def close(self):
        self.running = False
        self.sock.close()


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
                    head_done = True
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

    def wait_ended(self, timeout=15):
        return wait_until(lambda: self.ended, timeout, what='the stream to end')

    def close(self):
        close_socket(self.sock)


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


class Batond:
    """batond started the way systemd starts it: with listening sockets
    passed by systemd-socket-activate (which execs batond on the first
    connection) and NOTIFY_SOCKET pointing at a socket this test reads."""

    BINARY = os.environ.get('BATOND', os.path.join(os.path.dirname(__file__), '..', '..',
                                                   'build', 'src', 'batond'))

    def __init__(self, tmp, env, n_sockets=1, socket_activate=True, args=(), watchdog_usec=None,
                 name='batond', fdnames=None, wrap=()):
        self.tmp = tmp
        self.notify = NotifySocket(tmp)
        if fdnames:
            n_sockets = len(fdnames)
        self.fdnames = fdnames or [f'http{i}' for i in range(n_sockets)]
        # A command that execs the rest of the command line (unshare ...).
        self.wrap = list(wrap)
        self.ports = [free_port() for _ in range(n_sockets)]
        self.env = {
            'HEALTH_CHECK_INTERVAL': '300ms',
            'HEALTH_CHECK_TIMEOUT': '2s',
            'RETRY_BACKOFF_MAX': '1s',
            'DATABASE_CONNECT_TIMEOUT': '2s',
        }
        self.env.update(env)
        self.env['NOTIFY_SOCKET'] = self.notify.path
        if watchdog_usec:
            self.env['WATCHDOG_USEC'] = str(watchdog_usec)
        self.socket_activate = socket_activate
        self.args = list(args)
        self.log_path = tmp.join(f'{name}-{self.ports[0]}.log')
        self.proc = None

    @property
    def port(self):
        return self.ports[0]

    def start(self, trigger=True):
        binary = os.path.abspath(self.BINARY)
        log_file = open(self.log_path, 'w')
        if self.socket_activate:
            argv = ['systemd-socket-activate']
            for p in self.ports:
                argv += ['-l', f'127.0.0.1:{p}']
            argv += ['--fdname=' + ':'.join(self.fdnames)]
            for k, v in self.env.items():
                argv += ['-E', f'{k}={v}']
            # LISTEN_PID must match after exec: socket-activate sets it.
            argv += [binary] + self.args
            env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin')}
            # Sanitizer settings pass through to batond.
            for k in ('ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS'):
                if k in os.environ:
                    argv[1:1] = ['-E', f'{k}={os.environ[k]}']
        else:
            argv = [binary] + self.args
            env = dict(self.env)
            env['PATH'] = os.environ.get('PATH', '/usr/bin:/bin')
            env['SERVER_PORT'] = str(self.port)
            for k in ('ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS'):
                if k in os.environ:
                    env[k] = os.environ[k]
        self.proc = subprocess.Popen(self.wrap + argv, stdout=log_file, stderr=subprocess.STDOUT,
                                     env=env)
        log_file.close()
        if trigger:
            self.wait_serving()
        return self

    def wait_serving(self, timeout=10):
        """Connects until live answers: with socket activation the first
        connection is what starts batond."""
        def live():
            return self.get('/_/health/live', timeout=2).status == 200
        wait_until(live, timeout, interval=0.1, what='batond to answer /_/health/live')

    def get(self, path, **kw):
        return http_get(self.port, path, **kw)

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout=15):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f'batond did not exit within {timeout}s')

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def wait_log(self, pattern, timeout=10):
        return wait_until(lambda: re.search(pattern, self.log()), timeout,
                          what=f'log line matching {pattern!r}')

    def wait_ready(self, timeout=15):
        return self.notify.wait_for(r'^READY=1$', timeout)

    def stop(self):
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.notify.close()


# --- TAP runner -------------------------------------------------------------

_tests = []


def test(fn):
    _tests.append(fn)
    return fn


class Skip(Exception):
    pass


class Context:
    """Per-test resources, torn down in reverse order of creation."""

    def __init__(self, name):
        self.tmp = TempDir(name)
        self._cleanups = []

    def add(self, obj, cleanup):
        self._cleanups.append((obj, cleanup))
        return obj

    def postgres(self, durable=False):
        return self.add(Postgres(self.tmp, durable), lambda p: p.destroy())

    def nats(self):
        return self.add(Nats(self.tmp), lambda n: n.destroy())

    def batond(self, env, **kw):
        return self.add(Batond(self.tmp, env, **kw), lambda b: b.stop())

    def subscribe(self, port, path, **kw):
        return self.add(SseClient(port, path, **kw), lambda c: c.close())

    def close(self, keep):
        for obj, cleanup in reversed(self._cleanups):
            try:
                cleanup(obj)
            except Exception as e:
                print(f'# cleanup failed: {e}', flush=True)
        if not keep:
            self.tmp.cleanup()


# Extra context for failure reports: callables returning text (the system
# test adds the container's failed units and journal).
failure_notes = []


def report_failure(name, ctx):
    """Why a case failed, on stderr as well as in TAP comments: meson's
    --print-errorlogs (and so CI's log) shows a TAP test's stderr only."""
    lines = traceback.format_exc().splitlines()
    for obj, _ in ctx._cleanups:
        if isinstance(obj, Batond):
            lines.append(f'--- log of batond on port {obj.port} ---')
            lines += [f'  {line}' for line in obj.log().splitlines()[-40:]]
            lines.append(f'--- sd_notify: {obj.notify.texts()[-15:]}')
    for note in failure_notes:
        lines += note().splitlines()
    for line in lines:
        print(f'# {line}', flush=True)
    print(f'=== {name} failed:', *lines, sep='\n', file=sys.stderr, flush=True)


def run():
    only = [a for a in sys.argv[1:] if not a.startswith('-')]
    tests = [t for t in _tests if not only or t.__name__ in only]
    print(f'1..{len(tests)}', flush=True)
    failed = 0
    for n, fn in enumerate(tests, 1):
        ctx = Context(fn.__name__)
        started = time.monotonic()
        status = 'ok'
        directive = ''
        try:
            fn(ctx)
        except Skip as e:
            directive = f' # SKIP {e}'
        except Exception:
            status = 'not ok'
            failed += 1
            report_failure(fn.__name__, ctx)
        finally:
            ctx.close(keep=status != 'ok' and VERBOSE)
        elapsed = time.monotonic() - started
        print(f'{status} {n} - {fn.__name__} ({elapsed:.1f}s){directive}', flush=True)
    sys.exit(1 if failed else 0)
