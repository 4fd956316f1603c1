#!/usr/bin/env python3
"""./tools/dev run as a person runs it: from a checkout in a private
directory (root's home is 0700), in a terminal (a pseudo-terminal), and
stopped with Ctrl-C, which the terminal turns into SIGINT for its
foreground process group. Afterwards no process of the run may be left:
not batond, not the throwaway PostgreSQL."""

import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from tests.harness import Batond, free_port, http_get, publish, run, test, wait_until

SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))


class Checkout:
    """tools/ copied into <private dir>/baton, build/ a link to the build
    under test (the run builds it: nothing to do). Its throwaway cluster
    is keyed to this path, so it is not the developer's own. Its port is
    a free one picked here (BATON_DEV_PG_PORT), as every test's PostgreSQL
    is: "the first free from 55432" could race another test for a port
    the kernel hands out as ephemeral. free_port() keeps it reserved for
    this process, so each run of the checkout finds it free again."""

    def __init__(self):
        self.pg_port = free_port()
        self.home = tempfile.mkdtemp(prefix='baton-home-')
        os.chmod(self.home, 0o700)
        self.root = os.path.join(self.home, 'baton')
        os.makedirs(self.root)
        shutil.copytree(os.path.join(SOURCE, 'tools'), os.path.join(self.root, 'tools'))
        build = os.path.dirname(os.path.dirname(os.path.abspath(Batond.BINARY)))
        os.symlink(build, os.path.join(self.root, 'build'))
        self.dev_dir = self.dev('pg', 'dir').strip()

    def env(self, **extra):
        env = dict(os.environ, BATON_DEV_PG_PORT=str(self.pg_port), **extra)
        for k in ('BATON_DEV_DIR', 'DATABASE_URL'):
            env.pop(k, None)
        return env

    def dev(self, *args):
        return subprocess.run([os.path.join(self.root, 'tools', 'dev'), *args], check=True,
                              stdout=subprocess.PIPE, text=True, env=self.env()).stdout

    def cleanup(self):
        subprocess.run([os.path.join(self.root, 'tools', 'dev'), 'pg', 'drop'], env=self.env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.home, ignore_errors=True)

    def processes(self):
        """Live processes of this run: anything whose command line names the
        checkout (batond) or the cluster's directory (postgres -D)."""
        found = []
        for pid in filter(str.isdigit, os.listdir('/proc')):
            try:
                with open(f'/proc/{pid}/cmdline', 'rb') as f:
                    cmdline = f.read().replace(b'\0', b' ').decode(errors='replace')
                with open(f'/proc/{pid}/stat') as f:
                    state = f.read().rsplit(')', 1)[1].split()[0]
            except OSError:
                continue
            if state != 'Z' and (self.root in cmdline or self.dev_dir in cmdline):
                found.append(f'{pid}: {cmdline.strip()}')
        return found


class Terminal:
    """A command in a pseudo-terminal of its own, as a shell would start it."""

    def __init__(self, cwd, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            # As a terminal starts its shell: no signal ignored. An
            # inherited SIG_IGN (nohup, a CI runner) would stay ignored in
            # bash, whose traps could then never see the hangup.
            for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_DFL)
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        self.output = b''
        self.status = None

    def read(self, timeout):
        end = time.monotonic() + timeout
        while self.fd is not None and time.monotonic() < end:
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if not r:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:     # the other side is gone
                data = b''
            if not data:
                return
            self.output += data

    def wait_for(self, text, timeout):
        end = time.monotonic() + timeout
        while text.encode() not in self.output and time.monotonic() < end:
            self.read(0.2)
            if self.exited():
                break
        assert text.encode() in self.output, (f'no {text!r} from ./tools/dev run:\n'
                                              + self.text()[-3000:])

    def press_ctrl_c(self):
        os.write(self.fd, b'\x03')      # the line discipline sends SIGINT

    def close(self):
        """As closing the window does: the session gets SIGHUP."""
        os.close(self.fd)
        self.fd = None

    def exited(self):
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status is not None

    def wait_exit(self, timeout):
        end = time.monotonic() + timeout
        while not self.exited() and time.monotonic() < end:
            self.read(0.2)
        assert self.exited(), f'./tools/dev run still running {timeout}s later:\n' + self.text()[-3000:]
        self.read(0.2)
        return self.status

    def kill(self):
        if not self.exited():
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def text(self):
        return self.output.decode(errors='replace')


def start_run(ctx, checkout):
    port = free_port()
    env = checkout.env(SERVER_PORT=str(port), TERM='xterm')
    term = Terminal(checkout.root, ['./tools/dev', 'run'], env)
    ctx.add(term, lambda t: t.kill())
    term.wait_for('Try: curl', 120)
    assert http_get(port, '/_/health/live').status == 200
    wait_until(lambda: http_get(port, '/_/health/ready').status == 200, 10, what='ready')
    return term, port


def assert_nothing_left(checkout, term, what):
    left = []

    def gone():
        left[:] = checkout.processes()
        return not left
    try:
        wait_until(gone, 10, what='the run\'s processes to end')
    except AssertionError:
        raise AssertionError(f'{what}: still running: {left}\n' + term.text()[-2000:])


def make_checkout(ctx):
    checkout = Checkout()
    ctx.add(checkout, lambda c: c.cleanup())
    assert not checkout.dev_dir.startswith(checkout.home), checkout.dev_dir
    return checkout


@test
def ctrl_c_stops_batond_and_the_database(ctx):
    checkout = make_checkout(ctx)
    term, port = start_run(ctx, checkout)
    r = publish(port, 'dev', {'n': 1})
    assert r.status == 201, r
    stream = ctx.subscribe(port, '/api/v1/topics/dev/stream', last_event_id='0')
    wait_until(lambda: len(stream.events) == 1, 10, what='the stored event on the stream')
    assert checkout.processes(), 'nothing of the run found while it runs'

    term.press_ctrl_c()
    status = term.wait_exit(30)
    assert status == 0, (status, term.text()[-2000:])
    assert 'Received SIGINT' in term.text(), term.text()[-2000:]
    wait_until(lambda: stream.ended, 5, what='the stream to end')
    assert_nothing_left(checkout, term, 'after Ctrl-C')
    # The data stays for the next run, outside the private checkout.
    assert os.path.isdir(os.path.join(checkout.dev_dir, 'pg', 'data'))
    with open(os.path.join(checkout.dev_dir, 'checkout')) as f:
        assert f.read().strip() == checkout.root
    print(f'# Ctrl-C: exit 0, stream ended, no process left; cluster in {checkout.dev_dir}',
          flush=True)

    # And the next run finds what the first stored.
    term, port = start_run(ctx, checkout)
    events = json.loads(http_get(port, '/api/v1/topics/dev/events').body)['events']
    assert [e['data'] for e in events] == [{'n': 1}], events
    term.press_ctrl_c()
    assert term.wait_exit(30) == 0
    assert_nothing_left(checkout, term, 'after the second run')


@test
def a_second_ctrl_c_exits_without_waiting_for_requests(ctx):
    checkout = make_checkout(ctx)
    term, port = start_run(ctx, checkout)
    # A publish whose body never finishes: a request in flight, which a
    # drain gives SHUTDOWN_TIMEOUT (30 s).
    s = ctx.add(socket.create_connection(('127.0.0.1', port)), lambda s: s.close())
    s.sendall(b'POST /api/v1/topics/dev/events HTTP/1.1\r\nHost: x\r\n'
              b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":')
    time.sleep(0.3)
    term.press_ctrl_c()
    term.wait_for('Draining (SIGINT', 10)
    time.sleep(0.5)
    assert not term.exited(), 'exited although a request was in flight'
    started = time.monotonic()
    term.press_ctrl_c()
    status = term.wait_exit(10)
    took = time.monotonic() - started
    assert took < 5, took
    assert 'Second stop signal' in term.text(), term.text()[-2000:]
    assert_nothing_left(checkout, term, 'after two Ctrl-C')
    print(f'# second Ctrl-C: ./tools/dev run ended {took:.1f} s later (exit {status}), '
          f'no process left', flush=True)


@test
def closing_the_terminal_stops_everything(ctx):
    checkout = make_checkout(ctx)
    term, port = start_run(ctx, checkout)
    term.close()
    term.wait_exit(30)
    assert_nothing_left(checkout, term, 'after the terminal closed')


if __name__ == '__main__':
    run()
