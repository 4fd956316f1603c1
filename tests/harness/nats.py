"""nats-server for the tests: one on a free port, logging to the test's
temporary directory; or a node of a cluster (cluster_port, routes), with
its monitoring port (the cluster's routes, its clients by name)."""

import json
import socket
import subprocess
import urllib.request

from .core import free_port, wait_until


class Nats:
    def __init__(self, tmp, max_payload=None, cluster_port=None, routes=(), port=None, monitor_port=None):
        """port, monitor_port: chosen by the caller (a cluster chooses all
        its nodes' ports at once, free_ports()), or free ones."""
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        self.cluster_port = cluster_port
        self.routes = list(routes)
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
        if self.cluster_port:
            config += ['--cluster_name', 'baton', '--cluster', f'nats://127.0.0.1:{self.cluster_port}']
            if self.routes:
                config += ['--routes', ','.join(f'nats://127.0.0.1:{p}' for p in self.routes)]
        self.proc = subprocess.Popen(['nats-server', *config, '-a', '127.0.0.1', '-p', str(self.port),
                                      '-m', str(self.monitor_port), '-l', self.log],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def accepting():
            if self.proc.poll() is not None:
                with open(self.log, errors='replace') as f:
                    raise AssertionError(f'nats-server exited ({self.proc.returncode}): {f.read()[-1500:]}')
            with socket.create_connection(('127.0.0.1', self.port), timeout=0.5):
                return True
        wait_until(accepting, 10, what='nats-server to accept connections')

    def monitor(self, path):
        """A page of the monitoring endpoint (varz, routez, connz), as JSON."""
        with urllib.request.urlopen(f'http://127.0.0.1:{self.monitor_port}/{path}', timeout=5) as r:
            return json.load(r)

    def client_names(self):
        return [c.get('name', '') for c in self.monitor('connz').get('connections') or []]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def destroy(self):
        self.stop()
