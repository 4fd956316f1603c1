"""A real systemd, booted with systemd-nspawn on an overlay of this
machine's own root (../shared/NOTES.md): units, journald, systemctl and
journalctl as on a production host, with only a loopback network inside (or a network namespace the caller
made: tests/harness/fleet.py joins several on one bridge). Files written under .root from outside are visible inside. Used by the
system tests (tests/system) and tools/soak."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .runner import Once, Skip, failure_notes


class Unavailable(Exception):
    """This machine cannot boot systemd in a container (no overlay, no
    nspawn, systemd never came up): an environment limit, not a failure of
    what is under test. The message carries the boot log's tail."""


class Container:
    def __init__(self, name='baton-test', netns=None):
        """netns: the name of a network namespace (ip netns) to boot in,
        instead of a private one with only loopback."""
        self.name = name
        self.netns = netns
        self.leader = None
        self.proc = None
        self.dir = tempfile.mkdtemp(prefix='baton-nspawn-')
        self.root = os.path.join(self.dir, 'root')
        self.log = open(os.path.join(self.dir, 'boot.log'), 'w')
        try:
            self._boot(name)
        except BaseException:
            self.destroy()
            raise

    def _boot(self, name):
        # The overlay's upper layer on a tmpfs of its own: whatever /tmp is
        # on this machine (overlayfs cannot be an upper layer), tmpfs can.
        scratch = os.path.join(self.dir, 'scratch')
        os.makedirs(scratch)
        self._mount(['-t', 'tmpfs', '-o', 'mode=0755', 'baton-scratch', scratch])
        for d in ('scratch/upper', 'scratch/work', 'root'):
            os.makedirs(os.path.join(self.dir, d))
        self._mount(['-t', 'overlay', 'overlay', '-o',
                     f'lowerdir=/,upperdir={scratch}/upper,workdir={scratch}/work', self.root])
        self._spawn()

    def _spawn(self):
        self._clear_stale_propagation()
        self.proc = subprocess.Popen(
            ['systemd-nspawn', '-D', self.root, '--register=no', '--keep-unit',
             '--link-journal=no', '--console=pipe', '-b',
             f'--network-namespace-path=/run/netns/{self.netns}' if self.netns
             else '--private-network',
             f'--machine={self.name}'],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.leader = self._find_leader(30)
        self.state = self._wait_booted(120)
        self.pidns = os.readlink(f'/proc/{self.leader}/ns/pid')

    def _clear_stale_propagation(self):
        """An nspawn that was killed (a poweroff that timed out: _kill())
        leaves /run/systemd/nspawn/propagate/<machine> behind, and where
        /run is not a tmpfs the next nspawn of that name refuses to remove
        it ("Attempted to remove disk file system ... we can't allow
        that") and never boots: a reboot in CI failed so. The name is this
        container's and its last nspawn has exited, so the directory goes."""
        stale = os.path.join('/run/systemd/nspawn/propagate', self.name)
        if os.path.isdir(stale):
            shutil.rmtree(stale)

    def reboot(self):
        """Powers the container off and boots it again on the same root, as
        a host reboots: what is on disk stays, /run and every process go."""
        self.run(['systemctl', 'poweroff'], check=False, timeout=30)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self._kill()
        self._spawn()

    def _kill(self):
        """Every process of the container first: killing only nspawn would
        leave the container's systemd and its services running, orphaned.
        They are found by their PID namespace, recorded at boot, not by
        the leader's pid alone: a CI run whose poweroff timed out killed the
        leader and still left a container's systemd, PostgreSQL, NATS,
        nginx and batond running on the host."""
        for pid in self._pids_in_namespace():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait()

    def _pids_in_namespace(self):
        pids = [self.leader] if self.leader else []
        if not getattr(self, 'pidns', None):
            return pids
        for entry in os.listdir('/proc'):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f'/proc/{entry}/ns/pid') == self.pidns:
                    pids.append(int(entry))
            except OSError:
                pass            # gone meanwhile
        return pids

    def _mount(self, args):
        r = subprocess.run(['mount'] + args, capture_output=True, text=True)
        if r.returncode != 0:
            raise Unavailable(f'mount {" ".join(args)}: {r.stderr.strip()}')

    def _find_leader(self, timeout):
        """The container's PID 1: the nspawn process's child."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            kids = subprocess.run(['pgrep', '-P', str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
            if kids:
                return int(kids[0])
            time.sleep(0.1)
        raise Unavailable(f'systemd-nspawn started no container: {self.boot_log()[-2000:]}')

    def _wait_booted(self, timeout):
        """Waits for systemd inside to finish booting. "degraded" is fine
        (host services that cannot run inside); anything else after the
        timeout, or nspawn exiting, means no usable container."""
        deadline = time.monotonic() + timeout
        state = ''
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                state = self.run(['systemctl', 'is-system-running'], check=False,
                                 timeout=10).stdout.strip()
            except subprocess.TimeoutExpired:
                state = 'no answer'
            if state in ('running', 'degraded'):
                return state
            time.sleep(0.2)
        exited = self.proc.poll()
        raise Unavailable(f'systemd in the container did not boot (state "{state}"'
                          + (f', nspawn exited {exited}' if exited is not None else '')
                          + f'): {self.boot_log()[-2000:]}')

    def diagnostics(self):
        """What to read when something inside went wrong: failed units and
        the journal's tail."""
        if self.proc is None or self.proc.poll() is not None:
            return f'the container is gone; boot log:\n{self.boot_log()[-3000:]}'
        out = []
        for argv in (['systemctl', '--failed', '--no-pager'],
                     ['journalctl', '-b', '--no-pager', '-n', '60', '-p', 'warning']):
            try:
                r = self.run(argv, check=False, timeout=20)
                out.append(f'$ {" ".join(argv)}\n{r.stdout}{r.stderr}')
            except Exception as e:  # diagnostics must not hide the failure
                out.append(f'$ {" ".join(argv)}: {e}')
        return '\n'.join(out)

    def boot_log(self):
        with open(os.path.join(self.dir, 'boot.log'), errors='replace') as f:
            return f.read()

    def run(self, argv, check=True, timeout=120, input=None):
        """Runs a command inside; returns CompletedProcess (text)."""
        r = subprocess.run(['nsenter', '-t', str(self.leader), '-a'] + list(argv),
                           capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f'{" ".join(argv)} failed ({r.returncode}): '
                                 f'{r.stdout[-1500:]} {r.stderr[-1500:]}')
        return r

    def sh(self, script, check=True, timeout=120):
        return self.run(['sh', '-c', script], check=check, timeout=timeout)

    def popen(self, argv, **kw):
        return subprocess.Popen(['nsenter', '-t', str(self.leader), '-a'] + list(argv), **kw)

    def path(self, inside):
        return os.path.join(self.root, inside.lstrip('/'))

    def write(self, inside, text, mode=0o644):
        p = self.path(inside)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, 'w') as f:
            f.write(text)
        os.chmod(p, mode)

    def destroy(self):
        if self.proc is not None:
            if self.leader and self.proc.poll() is None:
                subprocess.run(['nsenter', '-t', str(self.leader), '-a', 'systemctl', 'poweroff'],
                               capture_output=True, timeout=30)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self._kill()
        self.log.close()
        subprocess.run(['umount', '-l', self.root], capture_output=True, check=False)
        subprocess.run(['umount', '-l', os.path.join(self.dir, 'scratch')], capture_output=True,
                       check=False)
        subprocess.run(['rm', '-rf', self.dir], check=False)


class Shared:
    """The one container every case of a test file shares, booted and set
    up once by the first case that asks (runner.Once: later cases get it,
    or skip or fail as the first did). A machine that cannot boot one
    skips every case (with the reason and the boot log). destroy() at
    exit, set up or not."""

    def __init__(self, name, tools, setup):
        self.name = name
        self.setup = setup
        self.container = None
        self.once = Once('the container setup', tools, self._boot_and_set_up)

    def _boot_and_set_up(self):
        started = time.monotonic()
        try:
            self.container = Container(self.name)
        except Unavailable as e:
            print(f'{self.name}: no container on this machine: {e}', file=sys.stderr, flush=True)
            raise Skip(f'cannot boot systemd in a container here: {str(e).splitlines()[0][:200]}')
        try:
            self.setup(self.container)
        except Exception as e:
            print(f'{self.name}: setup failed: {e}\n{self.container.diagnostics()}',
                  file=sys.stderr, flush=True)
            raise
        failure_notes.append(self.container.diagnostics)
        print(f'# container booted ({self.container.state}) and set up in '
              f'{time.monotonic() - started:.1f}s', flush=True)
        return self.container

    def get(self):
        return self.once.get()

    def destroy(self):
        if self.container:
            self.container.destroy()
