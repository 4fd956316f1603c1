"""nats-server for the tests: one on a free port, logging to the test's
temporary directory."""

import socket
import subprocess

from .core import free_port, wait_until


class Nats:
    def __init__(self, tmp, max_payload=None):
        self.port = free_port()
        self.proc = None
        self.log = tmp.join(f'nats-{self.port}.log')
        self.config = None
        if max_payload:
            self.config = tmp.join(f'nats-{self.port}.conf')
            with open(self.config, 'w') as f:
                f.write(f'max_payload: {max_payload}\n')
        self.start()

    @property
    def url(self):
        return f'nats://127.0.0.1:{self.port}'

    def start(self):
        config = ['-c', self.config] if self.config else []
        self.proc = subprocess.Popen(['nats-server', *config, '-a', '127.0.0.1', '-p', str(self.port),
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
