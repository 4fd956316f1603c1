"""batond under test (Batond), started as systemd starts it. The binary is
$BATOND, else build/src/batond in the source root."""

import os
import re
import signal
import subprocess

from .core import ROOT, free_port, wait_until
from .http_client import http_get
from .notify import NotifySocket


class Batond:
    """batond started the way systemd starts it: with listening sockets
    passed by systemd-socket-activate (which execs batond on the first
    connection) and NOTIFY_SOCKET pointing at a socket this test reads."""

    BINARY = os.environ.get('BATOND', os.path.join(ROOT, 'build', 'src', 'batond'))

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
