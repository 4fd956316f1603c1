#!/usr/bin/env python3
"""The sd_notify protocol around reload and shutdown, the drain of requests
and streams, and the watchdog."""

import http.client
import os
import re
import signal
import socket
import threading
import time

from tests import harness
from tests.harness import http_get, metric, publish, raw_request, run, test, wait_streams, wait_until
from tests.harness.flood import Flood


def open_stream(port, path, timeout=30):
    """Starts an SSE request and returns (socket, reader) to read events."""
    s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    s.sendall(f'GET {path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n'.encode())
    return s


def read_until_closed(s):
    return harness.read_until_closed(s).decode(errors='replace')


def ready_with_config(ctx, text, env=None):
    """A ready batond reading a config file; returns it and a function that
    rewrites the file and sends SIGHUP (returning the notify mark)."""
    pg = ctx.postgres()
    conf = ctx.tmp.join('batond.conf')
    with open(conf, 'w') as f:
        f.write(text)
    b = ctx.batond({'DATABASE_URL': pg.url(), **(env or {})}, args=['--config', conf]).start()
    b.wait_ready()

    def reload(new_text):
        with open(conf, 'w') as f:
            f.write(new_text)
        mark = b.notify.count()
        b.signal(signal.SIGHUP)
        return mark
    return b, reload


@test
def reload_sends_reloading_then_ready_and_applies(ctx):
    b, reload = ready_with_config(ctx, 'LOG_LEVEL=info\nSHUTDOWN_TIMEOUT=30s\n')
    mark = reload('LOG_LEVEL=debug\nSHUTDOWN_TIMEOUT=5s\nSERVER_PORT=9999\n')
    i, t_reloading, m = b.notify.wait_for(r'^RELOADING=1\nMONOTONIC_USEC=\d+$', 5, since=mark)
    _, t_ready, _ = b.notify.wait_for(r'^READY=1$', 5, since=i)
    assert t_ready >= t_reloading
    b.wait_log(r'Reload: LOG_LEVEL changed from info to debug')
    b.wait_log(r'Reload: SHUTDOWN_TIMEOUT changed from 30s to 5s')
    b.wait_log(r'Reload: SERVER_PORT changed from 8080 to 9999, which needs a restart')
    assert b.get('/_/health/ready').status == 200
    # The new level is live: libmicrohttpd's diagnostics (debug) appear.
    assert 'debug: libmicrohttpd' not in b.log()
    raw_request(b.port, b'NOT A REQUEST\r\n\r\n')
    b.wait_log(r'debug: libmicrohttpd')
    assert b.get('/_/health/ready').status == 200


@test
def reload_says_when_the_environment_shadows_the_file(ctx):
    b, reload = ready_with_config(ctx, 'LOG_LEVEL=info\n', env={'LOG_LEVEL': 'info'})
    reload('LOG_LEVEL=debug\n')
    b.wait_log(r'LOG_LEVEL is set in both .*batond.conf and the environment; the '
               r"environment's value wins")
    assert 'Reload: LOG_LEVEL changed' not in b.log()


@test
def reload_with_broken_file_keeps_running_config(ctx):
    b, reload = ready_with_config(ctx, 'LOG_LEVEL=info\n')
    mark = reload('LOG_LEVEL=info\nHEALTH_CHECK_TIMEOUT=forever\n')
    b.notify.wait_for(r'^READY=1$', 5, since=mark)
    b.wait_log(r"Reload failed, keeping the running configuration: HEALTH_CHECK_TIMEOUT: "
               r"'forever' is not a duration")
    assert b.running()
    assert b.get('/_/health/ready').status == 200


@test
def sigterm_drains_requests_and_streams(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), 'SHUTDOWN_TIMEOUT': '10s'},
                   watchdog_usec=2_000_000).start()
    b.wait_ready()
    # A keep-alive connection that will ask for ready after SIGTERM.
    keepalive = http.client.HTTPConnection('127.0.0.1', b.port, timeout=5)
    keepalive.request('GET', '/_/health/ready')
    r = keepalive.getresponse()
    r.read()
    assert r.status == 200
    stream = open_stream(b.port, '/stream/test?duration=3')
    # Open (its 200 sent) before the drain: one that arrives during it is
    # told to reconnect elsewhere instead.
    wait_streams(b.port, 1)
    # A request in flight: request line and headers sent, final CRLF not yet.
    partial = socket.create_connection(('127.0.0.1', b.port), timeout=10)
    partial.sendall(b'GET /_/health/live HTTP/1.1\r\nHost: t\r\n')
    # batond counts it from its request line (and the scrape asking, too).
    wait_until(lambda: metric(b.port, 'baton_http_requests_in_flight') >= 2, 15,
               what='the partial request to be in flight')

    mark = b.notify.count()
    b.signal(signal.SIGTERM)
    b.notify.wait_for(r'^STOPPING=1$', 5, since=mark)
    b.notify.wait_for(r'^EXTEND_TIMEOUT_USEC=\d+$', 5, since=mark)

    # Ready turns 503 at once, live stays 200, and both say Connection: close.
    keepalive.request('GET', '/_/health/ready')
    r = keepalive.getresponse()
    body = r.read()
    assert r.status == 503, (r.status, body)
    assert b'shutting down' in body
    assert r.getheader('Connection') == 'close'
    keepalive.close()

    partial.sendall(b'\r\n')
    reply = read_until_closed(partial)
    assert reply.startswith('HTTP/1.1 200 OK'), reply
    assert 'Connection: close' in reply

    # New connections are refused (we closed our copy of the socket)...
    try:
        socket.create_connection(('127.0.0.1', b.port), timeout=1).close()
    except OSError:
        pass
    # ...while the stream runs to its natural end.
    events = read_until_closed(stream)
    ticks = re.findall(r'^id: (\d+)$', events, re.M)
    assert ticks == ['1', '2', '3'], events
    assert 'event: end' in events and 'event: reconnect' not in events, events

    assert b.wait_exit(10) == 0
    progress = [m for m in b.notify.texts() if m.startswith('STATUS=Draining')]
    assert any('1 stream(s)' in m for m in progress), progress
    assert 'Drained: no request or stream left' in b.log()


@test
def sigterm_loses_no_request_under_load(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    b.wait_ready()
    stop = threading.Event()
    results = {'ok': 0, 'refused': 0, 'broken': []}
    lock = threading.Lock()

    def client():
        conn = None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection('127.0.0.1', b.port, timeout=5)
                    conn.connect()
            except OSError:
                with lock:
                    results['refused'] += 1
                conn = None
                time.sleep(0.01)
                continue
            try:
                conn.request('GET', '/_/health/live')
                r = conn.getresponse()
                r.read()
                with lock:
                    results['ok'] += 1
                if r.getheader('Connection') == 'close':
                    conn.close()
                    conn = None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                # Only acceptable if the server closed an idle keep-alive
                # connection before our request reached it; a response cut
                # off mid-way would be a lost request.
                with lock:
                    results['broken'].append(repr(e))
                conn = None

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    # Under load when the signal comes: the clients are being served.
    wait_until(lambda: results['ok'] > 100, 30, what='the clients to be served')
    b.signal(signal.SIGTERM)
    assert b.wait_exit(10) == 0
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert results['ok'] > 100, results
    # Every connection in use got Connection: close before the process
    # went away, so no request can have been written into a closing socket.
    assert results['broken'] == [], results


@test
def streams_opened_while_draining_are_sent_elsewhere(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    b.wait_ready()
    # An open stream keeps the drain going; a keep-alive connection asks for
    # a new stream meanwhile.
    first = open_stream(b.port, '/stream/test?duration=60')
    wait_streams(b.port, 1)
    conn = socket.create_connection(('127.0.0.1', b.port), timeout=5)
    conn.sendall(b'GET /_/health/live HTTP/1.1\r\nHost: t\r\n\r\n')
    assert conn.recv(4096).startswith(b'HTTP/1.1 200')
    b.signal(signal.SIGTERM)
    b.wait_log('Draining')
    started = time.monotonic()
    conn.sendall(b'GET /stream/test?duration=60 HTTP/1.1\r\nHost: t\r\n\r\n')
    events = read_until_closed(conn)
    # Refused at once (sse-stream.c, stream_open); accepted, it would last
    # as long as the drain, which the first stream holds for its 60 s.
    assert time.monotonic() - started < 10, 'a new stream was accepted during the drain'
    assert 'event: reconnect' in events and 'tick' not in events, events
    first.close()


def status_file(path):
    """$RUNTIME_DIRECTORY/status as a dict; None when there is none."""
    try:
        with open(path) as f:
            return dict(line.rstrip('\n').split('=', 1) for line in f if '=' in line)
    except FileNotFoundError:
        return None


@test
def the_status_file_says_the_state_and_counts_and_goes_with_the_process(ctx):
    """The machine-readable control channel baton-deploy reads: the state
    and the counts as name=value lines in $RUNTIME_DIRECTORY/status,
    rewritten once a second and at every transition, through a drain, and
    removed when batond exits (so a stale file is never read as current)."""
    pg = ctx.postgres()
    run_dir = ctx.tmp.join('run')
    os.makedirs(run_dir)
    path = os.path.join(run_dir, 'status')
    b = ctx.batond({'DATABASE_URL': pg.url(), 'RUNTIME_DIRECTORY': run_dir, 'DRAIN_TIMEOUT': '2s'}).start()
    b.wait_ready()
    st = wait_until(lambda: (f := status_file(path)) and f['STATE'] == 'ready' and f, 5, what='STATE=ready')
    assert st['PID'] == str(b.pid), st
    assert abs(int(st['UPDATED_USEC']) / 1e6 - time.time()) < 3, st
    assert publish(b.port, 'status-file', {'n': 1}).status == 201
    sub = ctx.subscribe(b.port, '/api/v1/topics/status-file/stream', last_event_id=0)
    sub.wait_for_id(1)
    st = wait_until(lambda: (f := status_file(path)) and f['STREAMS'] == '1' and f, 5, what='STREAMS=1')
    assert st['STREAMS_RESUMED'] == '1' and st['EVENTS_REPLAYED'] == '1', st
    assert int(st['SERVED']) >= 1 and st['PUBLISH_FAILURES'] == '0', st

    b.signal(signal.SIGTERM)
    st = wait_until(lambda: (f := status_file(path)) and f['STATE'] == 'draining' and f, 5,
                    what='STATE=draining')
    assert st['STREAMS'] == '1', st
    assert b.wait_exit(10) == 0
    assert status_file(path) is None, 'the status file outlived batond'
    print(f'# status file while draining: {st}', flush=True)


@test
def sigint_tells_streams_to_reconnect_at_once(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    b.wait_ready()
    stream = open_stream(b.port, '/stream/test?duration=60')
    wait_streams(b.port, 1)
    started = time.monotonic()
    b.signal(signal.SIGINT)
    events = read_until_closed(stream)
    assert time.monotonic() - started < 3
    assert 'event: reconnect' in events, events
    assert 'shutting down' in events
    assert b.wait_exit(5) == 0


@test
def drain_timeout_ends_streams_with_reconnect(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), 'DRAIN_TIMEOUT': '2s'}).start()
    b.wait_ready()
    stream = open_stream(b.port, '/stream/test?duration=60')
    wait_streams(b.port, 1)
    started = time.monotonic()
    b.signal(signal.SIGTERM)
    events = read_until_closed(stream)
    elapsed = time.monotonic() - started
    # DRAIN_TIMEOUT (2 s) ends the streams at the drain's first 1 s tick
    # past it (lifecycle-drain.c): never before 2 s, about 2 s after the
    # signal; 3 s of slack above that for a loaded machine.
    assert 1.5 < elapsed < 5, elapsed
    assert 'event: reconnect' in events and 'drain timeout' in events, events
    assert b.wait_exit(5) == 0


@test
def second_sigterm_forces_exit(ctx):
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url()}).start()
    b.wait_ready()
    stream = open_stream(b.port, '/stream/test?duration=60')
    wait_streams(b.port, 1)
    b.signal(signal.SIGTERM)
    b.wait_log('Draining')
    time.sleep(0.5)
    assert b.running(), 'exited although a stream was open'
    b.signal(signal.SIGTERM)
    assert b.wait_exit(5) == 0
    assert 'Second stop signal: exiting now with 0 request(s) and 1 stream(s) open.' in b.log()
    stream.close()


def pings(b):
    """Arrival times (the kernel's) of batond's WATCHDOG=1 messages."""
    return [t for t, m in b.notify.all() if m == 'WATCHDOG=1']


def process_state(pid):
    with open(f'/proc/{pid}/stat') as f:
        return f.read().rsplit(')', 1)[1].split()[0]


@test
def watchdog_pings_follow_ready_and_stop_when_stuck(ctx):
    # batond self-probes and pings every third of WATCHDOG_USEC (1 s here,
    # lifecycle-watchdog.c); a probe without an answer within that third
    # is given up on and sent again, a gap of two thirds. 3 s gives a probe
    # 1 s to be answered on a loaded machine, not 333 ms.
    watchdog = 3.0
    b = ctx.batond({'DATABASE_URL': ctx.postgres().url()}, watchdog_usec=int(watchdog * 1e6)).start()
    i, t_ready, _ = b.wait_ready()
    # The first ping comes right after READY=1, in the same loop turn
    # (manager.c, on_startup_ready): the very next message, not a probe's.
    j, t_first, _ = b.notify.wait_for(r'^WATCHDOG=1$', 15, since=i)
    assert j == i + 1, b.notify.texts()[i:j + 1]
    wait_until(lambda: len(pings(b)) >= 4, 4 * watchdog + 15, what='four pings')
    gaps = [b2 - a for a, b2 in zip(pings(b), pings(b)[1:])]
    # systemd's contract: a ping within every WATCHDOG_USEC.
    assert max(gaps) < watchdog, gaps

    # A stopped process proves nothing: the pings stop with it.
    b.signal(signal.SIGSTOP)
    wait_until(lambda: process_state(b.pid) == 'T', 15, what='batond to be stopped')
    t_stopped = time.monotonic()
    # Over two of its ping intervals, nothing arrives (by the kernel's
    # stamps: whenever the reader thread gets to them).
    time.sleep(2 * watchdog / 3 + 0.5)
    late = [t - t_stopped for t in pings(b) if t > t_stopped]
    assert not late, f'pings from a stopped process, {late} s after it stopped'
    mark = b.notify.count()
    b.signal(signal.SIGCONT)
    # At once: the probe that was out when it stopped is answered, or
    # given up on and sent again.
    b.notify.wait_for(r'^WATCHDOG=1$', 2 * watchdog + 15, since=mark)



@test
def watchdog_pings_go_on_while_a_flood_holds_every_connection(ctx):
    """200 clients hold keep-alive connections to a batond that serves 64
    (and sheds 4 more): the self-probe has its own way in, so WATCHDOG=1
    never pauses for longer than half the interval, and requests that reach
    the shedding reserve are still answered 503, one per connection."""
    # Pings every third of WATCHDOG_USEC (lifecycle-watchdog.c): with 6 s,
    # every 2 s, and the contract (the project's: never a pause longer than
    # half the interval) is 3 s, a second of slack for a probe's answer on
    # a loaded 2-core machine under ASan with 200 flood threads (2 s gave
    # it 333 ms). A probe not answered within its 2 s is given up on
    # ("not pinging" in the log) and sent again: a gap of at least 4 s,
    # which the gap check catches by itself; any other failed probe (a
    # wrong answer) means the flood reached the self-probe.
    watchdog = 6.0
    pg = ctx.postgres()
    b = ctx.batond({'DATABASE_URL': pg.url(), 'MAX_CONNECTIONS': '64'}, fdnames=['http', 'metrics'],
                   watchdog_usec=int(watchdog * 1e6)).start()
    b.wait_ready()
    public, ops = b.ports
    log_mark = len(b.log())
    with Flood(public, 200) as flood:
        flood_started = time.monotonic()
        wait_until(lambda: int(re.search(r'^baton_http_connections (\d+)$', http_get(ops, '/metrics').body,
                                         re.M).group(1)) >= 64,
                   20, interval=0.2, what='the flood to fill MAX_CONNECTIONS')
        t_full = time.monotonic()
        # A request past the limit waits in the kernel's backlog behind the
        # flood until the reserve turns over to it, and is told 503.
        answer = raw_request(public, b'GET /api/v1/topics/flood/events HTTP/1.1\r\nHost: t\r\n\r\n',
                             timeout=30)
        assert answer.startswith(b'HTTP/1.1 503 ') and b'"error":"overloaded"' in answer, answer[:300]
        assert b'Retry-After: 1' in answer and b'Connection: close' in answer, answer[:300]
        # Each served connection got its probe answered.
        wait_until(lambda: flood.answers >= 64, 30, what='the 64 served connections to be answered')
        # Four self-probes with every connection taken.
        time.sleep(max(0.0, t_full + 4 * watchdog / 3 - time.monotonic()))
        flood_ended = time.monotonic()
    # The ping after the flood closes the last gap that overlaps it.
    wait_until(lambda: pings(b)[-1] > flood_ended, 2 * watchdog + 15, what='a ping after the flood')
    gaps = [(earlier, later - earlier) for earlier, later in zip(pings(b), pings(b)[1:])
            if later >= flood_started and earlier <= flood_ended]
    failed = [line for line in b.log()[log_mark:].splitlines() if 'not pinging' in line]
    longest = max(g for _, g in gaps)
    assert longest <= watchdog / 2, (f'WATCHDOG=1 paused for {longest:.2f} s under the flood '
                                     f'(gaps {[round(g, 2) for _, g in gaps]}); {failed}')
    assert not failed, failed
    print(f'# flood of 200 held connections for {flood_ended - flood_started:.1f}s against MAX_CONNECTIONS=64: '
          f'{sum(flood_started <= t <= flood_ended for t in pings(b))} pings, longest gap {longest:.2f}s '
          f'(WATCHDOG_USEC={watchdog:g}s, at most '
          f'{watchdog / 2:g}s); a request past the limit was answered 503', flush=True)
    assert b.running()


if __name__ == '__main__':
    run()
