"""PostgreSQL for the tests: a throwaway cluster (Postgres), where the
server binaries are (PG_BIN), and what batond's migrations are
(MIGRATIONS, from migrations/ in the source root; MIGRATION_LOCK_KEY, the
advisory lock batond takes while it migrates)."""

import os
import pwd
import signal
import subprocess

from .core import ROOT, free_port

PG_BIN = None
for version in ('17', '16', '15', '14', '13'):
    candidate = f'/usr/lib/postgresql/{version}/bin'
    if os.path.exists(os.path.join(candidate, 'initdb')):
        PG_BIN = candidate
        break

MIGRATION_LOCK_KEY = 7089075310400727399
# The migrations batond embeds, as (version, name), from migrations/.
MIGRATIONS = sorted((int(f.split('_', 1)[0]), f.split('_', 1)[1][:-4])
                    for f in os.listdir(os.path.join(ROOT, 'migrations')) if f.endswith('.sql'))


class Postgres:
    """A throwaway PostgreSQL cluster in a temporary directory. As root it
    runs as the 'postgres' user (PostgreSQL refuses to run as root)."""

    def __init__(self, tmp, durable=False):
        if not PG_BIN:
            raise RuntimeError('PostgreSQL server binaries not found under /usr/lib/postgresql')
        self.dir = tmp.join('pg')
        self.port = free_port()
        self.user = None
        self.frozen = []        # SIGSTOPped by freeze()
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            self.user = 'postgres'
            pw = pwd.getpwnam('postgres')
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(['initdb', '-D', self.data, '-U', 'baton', '--auth=trust', '-E', 'UTF8',
                   '--no-sync'], quiet=True)
        with open(os.path.join(self.data, 'postgresql.conf'), 'a') as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.dir}'\n"
                    # fsync off is safe here: tests kill the server, never
                    # the machine. synchronous_commit stays on: with it off,
                    # a killed server forgets commits it acknowledged.
                    # Benchmarks of writes want the real thing (durable).
                    + ("" if durable else "fsync = off\n")
                    + "max_connections = 200\n")
        self.start()
        self.psql('CREATE DATABASE baton', db='postgres')

    @property
    def data(self):
        return os.path.join(self.dir, 'data')

    def _run(self, argv, quiet=False, check=True):
        argv = [os.path.join(PG_BIN, argv[0])] + argv[1:]
        if self.user:
            argv = ['runuser', '-u', self.user, '--'] + argv
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if check and out.returncode != 0:
            raise RuntimeError(f'{argv} failed: {out.stdout}')
        return out

    def start(self):
        self._run(['pg_ctl', '-D', self.data, '-l', os.path.join(self.dir, 'log'), '-w', 'start'])

    def stop(self, mode='fast'):
        self._run(['pg_ctl', '-D', self.data, '-m', mode, '-w', 'stop'])

    def kill(self):
        """Crash-stop: what a power cut or OOM kill looks like to clients."""
        self.stop('immediate')

    def processes(self):
        """The postmaster and its children (backends and background workers)."""
        with open(os.path.join(self.data, 'postmaster.pid')) as f:
            postmaster = int(f.readline())
        children = []
        for d in os.listdir('/proc'):
            if not d.isdigit():
                continue
            try:
                with open(f'/proc/{d}/stat') as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(')', 1)[1].split()[1]) == postmaster:
                children.append(int(d))
        return postmaster, children

    def freeze(self):
        """The whole server hangs (postmaster and every child SIGSTOPped):
        open connections stop answering and new ones are accepted by the
        kernel but never served, as with a frozen machine or storage.
        Stopping only some backends would let clients reconnect to a live
        server at once. Returns how many children were stopped."""
        postmaster, _ = self.processes()
        os.kill(postmaster, signal.SIGSTOP)     # first: it forks no more children
        self.frozen.append(postmaster)
        for p in self.processes()[1]:
            os.kill(p, signal.SIGSTOP)
            self.frozen.append(p)
        return len(self.frozen) - 1

    def thaw(self):
        for p in reversed(self.frozen):
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.frozen.clear()

    def url(self, db='baton', password=None):
        auth = f'baton:{password}' if password else 'baton'
        return f'postgres://{auth}@127.0.0.1:{self.port}/{db}'

    def psql(self, sql, db='baton', check=True):
        out = subprocess.run(['psql', '-h', '127.0.0.1', '-p', str(self.port), '-U', 'baton',
                              '-d', db, '-v', 'ON_ERROR_STOP=1', '-At', '-c', sql],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if check and out.returncode != 0:
            raise RuntimeError(f'psql {sql!r} failed: {out.stderr}')
        return out.stdout.strip()

    def session(self, db='baton'):
        """An interactive psql session kept open (for holding locks)."""
        return subprocess.Popen(['psql', '-h', '127.0.0.1', '-p', str(self.port), '-U', 'baton',
                                 '-d', db, '-At', '-q'], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def destroy(self):
        self.thaw()             # a frozen server would not stop
        try:
            self.stop('immediate')
        except Exception:
            pass
