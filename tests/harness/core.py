"""The basics every part of the harness uses: the source root, -v (VERBOSE)
and log(), free ports, polling with a deadline (wait_until) and temporary
directories."""

import os
import shutil
import socket
import sys
import tempfile
import time

# The source root: this file is tests/harness/core.py.
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
VERBOSE = '-v' in sys.argv


def log(message):
    if VERBOSE:
        print(f'# {message}', flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def free_ports(n):
    """n distinct free ports, for servers that name each other before any
    of them listens (a cluster's nodes): all bound at once while chosen,
    so that none is handed out twice, as n free_port() calls could."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(('127.0.0.1', 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


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
