"""The sd_notify side of systemd: a datagram socket the test owns, given to
batond as NOTIFY_SOCKET, keeping every message with its arrival time."""

import re
import socket
import threading
import time

from .core import log, wait_until


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
