"""A real systemd, booted with systemd-nspawn on an overlay of this
machine's own root (../shared/NOTES.md): units, journald, systemctl and
journalctl as on a production host, with only a loopback network inside.
Files written under .root from outside are visible inside."""

import os
import subprocess
import tempfile
import time


class Container:
    def __init__(self, name='baton-test'):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix='baton-nspawn-')
        self.root = os.path.join(self.dir, 'root')
        for d in ('upper', 'work', 'root'):
            os.makedirs(os.path.join(self.dir, d))
        subprocess.run(['mount', '-t', 'overlay', 'overlay', '-o',
                        f'lowerdir=/,upperdir={self.dir}/upper,workdir={self.dir}/work', self.root],
                       check=True)
        self.log = open(os.path.join(self.dir, 'boot.log'), 'w')
        self.proc = subprocess.Popen(
            ['systemd-nspawn', '-D', self.root, '--register=no', '--keep-unit',
             '--link-journal=no', '--private-network', '--console=pipe', '-b',
             f'--machine={name}'],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.leader = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.leader is None:
            kids = subprocess.run(['pgrep', '-P', str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
            if kids:
                self.leader = int(kids[0])
            else:
                time.sleep(0.1)
        if self.leader is None:
            raise RuntimeError(f'the container did not boot: {self.boot_log()[-2000:]}')
        # "degraded" is fine (host services that fail inside); we want it up.
        self.run(['systemctl', 'is-system-running', '--wait'], check=False, timeout=90)

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
        if self.leader:
            subprocess.run(['nsenter', '-t', str(self.leader), '-a', 'systemctl', 'poweroff'],
                           capture_output=True, timeout=30)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        subprocess.run(['umount', '-l', self.root], check=False)
        subprocess.run(['rm', '-rf', self.dir], check=False)
