"""nginx for the tests (Nginx): one process (master_process off, so there
are no workers to find or to stop), in the test's temporary directory, on
free ports of 127.0.0.1, with its access log in a format the tests read
(access_log()). Each site is the inside of a server block; 'WWW' in it
stands for a directory the test fills (nginx.www)."""

import os
import re
import shutil
import socket
import subprocess

from .core import free_port, wait_until

NGINX = shutil.which('nginx') or next((p for p in ('/usr/sbin/nginx',) if os.path.exists(p)), None)

# One line per request: which site, what, its answer, and the two request
# headers the CORS tests look at.
LOG_FORMAT = r'$server_port $request_method $uri $status "$http_origin" "$http_cookie"'


class Nginx:
    def __init__(self, tmp, sites, name='nginx'):
        """sites: {site name: server block body}; each gets its own port
        (nginx.ports[name])."""
        if not NGINX:
            raise RuntimeError('nginx is not installed')
        self.dir = tmp.join(name)
        self.www = os.path.join(self.dir, 'www')
        os.makedirs(self.www)
        self.ports = {site: free_port() for site in sites}
        self.error_log = os.path.join(self.dir, 'error.log')
        self.access_log_path = os.path.join(self.dir, 'access.log')
        servers = '\n'.join(f'    server {{\n        listen 127.0.0.1:{self.ports[site]};\n'
                            f'        {body.replace("WWW", self.www)}\n    }}'
                            for site, body in sites.items())
        temp = ' '.join(f'{kind}_temp_path {self.dir}/{kind};'
                        for kind in ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'))
        conf = os.path.join(self.dir, 'nginx.conf')
        with open(conf, 'w') as f:
            f.write(f'''daemon off;
master_process off;
pid {self.dir}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 256; }}
http {{
    types {{ text/html html; text/javascript js; }}
    default_type application/octet-stream;
    log_format baton '{LOG_FORMAT}';
    access_log {self.access_log_path} baton;
    {temp}
{servers}
}}
''')
        self.proc = subprocess.Popen([NGINX, '-p', self.dir + '/', '-c', conf, '-e', self.error_log],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)

        def listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f'nginx exited ({self.proc.returncode}): {self.errors()}')
            for port in self.ports.values():
                with socket.socket() as s:
                    if s.connect_ex(('127.0.0.1', port)) != 0:
                        return False
            return True
        wait_until(listening, 10, what='nginx to listen')

    def url(self, site, path='/'):
        return f'http://127.0.0.1:{self.ports[site]}{path}'

    def write(self, name, text):
        """A file nginx serves from WWW."""
        with open(os.path.join(self.www, name), 'w', encoding='utf-8') as f:
            f.write(text)

    def errors(self):
        try:
            with open(self.error_log, errors='replace') as f:
                return f.read()[-2000:]
        except OSError:
            return ''

    def access_log(self, site=None):
        """The requests served, as dicts (of one site only when named)."""
        entries = []
        try:
            with open(self.access_log_path, errors='replace') as f:
                lines = f.read().splitlines()
        except OSError:
            return entries
        for line in lines:
            m = re.fullmatch(r'(\d+) (\S+) (\S+) (\d+) "(.*?)" "(.*)"', line)
            if not m:
                continue
            port, method, uri, status, origin, cookie = m.groups()
            # nginx logs an absent header as "-".
            entry = {'port': int(port), 'method': method, 'uri': uri, 'status': int(status),
                     'origin': '' if origin == '-' else origin, 'cookie': '' if cookie == '-' else cookie}
            if site is None or entry['port'] == self.ports[site]:
                entries.append(entry)
        return entries

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
