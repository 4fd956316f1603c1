"""Several hosts on one private network, each a container booting real
systemd (tests/harness/container.py). The network is made here and only
here: a network namespace holding a bridge, and one namespace per host
with a veth into it, addresses 10.87.0.N (host N) and 10.87.0.254 (the
bridge's own: where load clients run, like users outside the hosts).
Nothing is routed anywhere else: no traffic leaves these namespaces.

    fleet = Fleet(3)
    fleet.host(1).run([...])           # a Container
    fleet.client(['python3', ...])     # a process on the bridge's side
    fleet.ssh_command(directory)       # "ssh HOST COMMAND" into the hosts
    fleet.cut(3); fleet.mend(3)        # host 3's cable pulled, put back
    fleet.destroy()
"""

import os
import subprocess

from .container import Container

SUBNET = '10.87.0'


def ip(*args, check=True):
    r = subprocess.run(['ip'] + list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f'ip {" ".join(args)}: {r.stderr.strip()}')
    return r


class Fleet:
    def __init__(self, hosts, tag=None):
        self.tag = tag or f'bf{os.getpid()}'
        self.net = f'{self.tag}-net'
        self.names = [f'{self.tag}-h{n}' for n in range(1, hosts + 1)]
        self.hosts = []
        self.made = []
        try:
            self._network()
            for n, ns in enumerate(self.names, 1):
                self.hosts.append(Container(f'baton-fleet-{n}', netns=ns))
        except BaseException:
            self.destroy()
            raise

    def _network(self):
        ip('netns', 'add', self.net)
        self.made.append(self.net)
        ip('-n', self.net, 'link', 'set', 'lo', 'up')
        ip('-n', self.net, 'link', 'add', 'br0', 'type', 'bridge')
        ip('-n', self.net, 'addr', 'add', f'{SUBNET}.254/24', 'dev', 'br0')
        ip('-n', self.net, 'link', 'set', 'br0', 'up')
        for n, ns in enumerate(self.names, 1):
            ip('netns', 'add', ns)
            self.made.append(ns)
            ip('-n', ns, 'link', 'set', 'lo', 'up')
            ip('-n', self.net, 'link', 'add', f'h{n}', 'type', 'veth', 'peer', 'name', 'eth0',
               'netns', ns)
            ip('-n', self.net, 'link', 'set', f'h{n}', 'master', 'br0', 'up')
            ip('-n', ns, 'addr', 'add', f'{SUBNET}.{n}/24', 'dev', 'eth0')
            ip('-n', ns, 'link', 'set', 'eth0', 'up')

    def host(self, n):
        return self.hosts[n - 1]

    @staticmethod
    def address(n):
        return f'{SUBNET}.{n}'

    def url(self, n):
        """Host n's nginx, as its users reach it."""
        return f'http://{self.address(n)}'

    def client(self, argv, **kw):
        """A process on the bridge's side of the network (a user)."""
        return subprocess.Popen(['ip', 'netns', 'exec', self.net] + list(argv), **kw)

    def ssh_command(self, directory):
        """A script that stands in for "ssh HOST COMMAND" (baton-fleet's
        BATON_FLEET_SSH): into host HOST's container, by its address;
        exit 255, as ssh, for any other host. Returns its path."""
        path = os.path.join(directory, 'fleet-ssh')
        cases = ''.join(f'  {self.address(n)}) leader={c.leader} ;;\n'
                        for n, c in enumerate(self.hosts, 1))
        with open(path, 'w') as f:
            f.write('#!/bin/sh\nhost=$1; shift\ncase $host in\n' + cases +
                    '  *) echo "no such host: $host" >&2; exit 255 ;;\nesac\n'
                    'exec nsenter -t "$leader" -a sh -c "$*"\n')
        os.chmod(path, 0o755)
        return path

    def cut(self, n):
        """Host n drops off the network as when its power or cable goes:
        no FIN, no RST; its peers notice only by timeouts."""
        ip('-n', self.net, 'link', 'set', f'h{n}', 'down')

    def mend(self, n):
        ip('-n', self.net, 'link', 'set', f'h{n}', 'up')

    def destroy(self):
        for c in self.hosts:
            c.destroy()
        self.hosts = []
        for ns in reversed(self.made):
            ip('netns', 'del', ns, check=False)
        self.made = []
