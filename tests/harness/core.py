"""The basics every part of the harness uses: the source root, -v (VERBOSE)
and log(), free ports, polling with a deadline (wait_until) and temporary
directories.

Ports (free_port, free_ports). Test servers are told their port before
they bind it (PostgreSQL's is written into postgresql.conf before initdb
has even run; a nats cluster's nodes name each other's ports), and some
bind it again after a restart (pg.kill()/pg.start(), Nats stop()/start()).
Choosing a port by binding port 0 and closing the socket raced in two ways
in the window until the server bound it, which can be seconds:
  - another test process (meson runs several at once) could be handed the
    same port by its own bind(0);
  - the kernel could hand the port out as the local port of any outgoing
    connection (every connect() draws from the same ephemeral range,
    net.ipv4.ip_local_port_range, as bind(0) does).
So the ports come from outside the ephemeral range (below its start, from
20000, and above its end), where the kernel never picks a port by itself,
and each is reserved among processes: this process holds a write lock on
byte <port> of one shared lock file (/tmp/baton-test-ports/ports.lock)
until it exits (the kernel drops the locks of a dead process: nothing
leaks). A process never hands out a port twice, and skips ports something
else is bound to (a bind test). A port handed out stays reserved for the
rest of the process, so the same server can stop and bind it again, and
no port can come out equal to another.

The locks are POSIX record locks (fcntl.lockf): one open file however many
ports, and visible in /proc/locks with the holder's pid. They belong to
the process, and closing any descriptor of the lock file would drop them
all: nothing but this module may open it."""

import errno
import fcntl
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time

# The source root: this file is tests/harness/core.py.
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
VERBOSE = '-v' in sys.argv


def log(message):
    if VERBOSE:
        print(f'# {message}', flush=True)


# Shared by every test process on the machine, whoever runs it (root in CI;
# the servers themselves may run as other users: the lock is this process's).
PORT_LOCK_DIR = '/tmp/baton-test-ports'
PORT_LOCK_FILE = os.path.join(PORT_LOCK_DIR, 'ports.lock')
# The lowest port used below the ephemeral range (lower ones are more often
# some service's), unless the range starts so low that that leaves too few.
PORT_FLOOR = 20000
MIN_PORTS = 256

_ports_lock = threading.Lock()
_ports = None           # {'fd', 'pool', 'next', 'pid'} once first used
_handed_out = set()     # ports this process reserved and returned


def _port_pool():
    """The ports outside the kernel's ephemeral range, at or above 1024."""
    path = '/proc/sys/net/ipv4/ip_local_port_range'
    try:
        with open(path) as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError) as e:
        raise RuntimeError(f'cannot read the ephemeral port range from {path}: {e}') from e
    floor = PORT_FLOOR if low - PORT_FLOOR >= MIN_PORTS else 1024
    pool = list(range(max(floor, 1024), low)) + list(range(max(high + 1, 1024), 65536))
    if len(pool) < MIN_PORTS:
        raise RuntimeError(
            f'only {len(pool)} ports outside the ephemeral range {low}-{high} '
            f'(net.ipv4.ip_local_port_range): the tests need at least {MIN_PORTS} ports that '
            'the kernel never picks for a connection; narrow the range, e.g. '
            'sysctl -w net.ipv4.ip_local_port_range="32768 60999"')
    return pool


def _open_lock_file():
    try:
        os.makedirs(PORT_LOCK_DIR, exist_ok=True)
        os.chmod(PORT_LOCK_DIR, 0o1777)     # any user's tests; sticky: nobody deletes another's file
    except PermissionError:
        pass                                # made by another user: theirs to set
    # Open without O_CREAT first: with fs.protected_regular, O_CREAT on
    # another user's file in a sticky world-writable directory is refused.
    for _ in range(10):
        try:
            return os.open(PORT_LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        except PermissionError as e:
            raise RuntimeError(f'cannot open the test port lock file {PORT_LOCK_FILE} for writing '
                               f'({e}): another user made it; make it mode 0666') from e
        try:
            fd = os.open(PORT_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue                        # another process made it just now
        os.fchmod(fd, 0o666)                # not the umask's: other users lock it too
        return fd
    raise RuntimeError(f'cannot open or create {PORT_LOCK_FILE}')


def _bindable(port):
    """Nothing is bound to port on any IPv4 address (nor a dual-stack IPv6
    socket): something outside the tests could be listening there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(('0.0.0.0', port))
            return True
        except OSError:
            return False


def free_port():
    """A port for a server of the tests on 127.0.0.1: outside the ephemeral
    range, reserved for this process until it exits (no other test process
    is handed it), never returned twice by this process, and not bound by
    anything when chosen. See the module's docstring for why."""
    global _ports
    with _ports_lock:
        if _ports is None or _ports['pid'] != os.getpid():
            # First use, or a forked child: POSIX locks are not inherited,
            # the ports the parent handed out stay in _handed_out.
            pool = _port_pool()
            _ports = {'fd': _open_lock_file(), 'pool': pool, 'pid': os.getpid(),
                      # A random start: parallel processes do not all
                      # contend for the same first ports.
                      'next': random.SystemRandom().randrange(len(pool))}
        pool, fd = _ports['pool'], _ports['fd']
        for i in range(len(pool)):
            port = pool[(_ports['next'] + i) % len(pool)]
            if port in _handed_out:
                continue
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EAGAIN):
                    continue                # another test process has it
                raise
            if not _bindable(port):
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, port)
                continue
            _ports['next'] = (_ports['next'] + i + 1) % len(pool)
            _handed_out.add(port)
            return port
        raise RuntimeError(f'no free port left among the {len(pool)} outside the ephemeral range '
                           f'(net.ipv4.ip_local_port_range); this process holds {len(_handed_out)}')


def free_ports(n):
    """n distinct free ports (free_port()), for servers that name each other
    before any of them listens (a cluster's nodes)."""
    return [free_port() for _ in range(n)]


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
