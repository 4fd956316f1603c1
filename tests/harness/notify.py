"""The sd_notify side of systemd: a datagram socket the test owns, given to
batond as NOTIFY_SOCKET, keeping every message with its arrival time."""

import re
import socket
import struct
import threading
import time

from .core import log, wait_until

# Not in Python's socket module; asm-generic/socket.h (SO_TIMESTAMPNS_OLD,
# a struct timespec of two 64-bit fields on 64-bit Linux).
SO_TIMESTAMPNS = 35


class NotifySocket:
    """Receives sd_notify datagrams, as systemd would, and keeps them with
    their arrival time (monotonic)."""

    def __init__(self, tmp):
        self.path = tmp.join(f'notify-{id(self) % 100000}.sock')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        # The kernel stamps each datagram as it arrives: a busy test process
        # may read it much later, and gaps between pings must be batond's.
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.2)
        self.messages = []  # (time, text)
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while self.running:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16))
            except socket.timeout:
                continue
            except OSError:
                return
            text = data.decode(errors='replace')
            with self.lock:
                self.messages.append((self._arrival(ancillary), text))
            log(f'notify: {text!r}')

    @staticmethod
    def _arrival(ancillary):
        """The datagram's arrival on the monotonic clock, from the kernel's
        CLOCK_REALTIME stamp."""
        now_monotonic, now_real = time.monotonic(), time.time()
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack('qq', data[:16])
                return now_monotonic - max(0.0, now_real - (sec + nsec / 1e9))
        return now_monotonic

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
