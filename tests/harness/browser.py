"""A real browser for the tests: headless Chromium driven over the DevTools
protocol on a pipe (--remote-debugging-pipe: JSON messages ended by a NUL
on fds 3 and 4), so that nothing but the standard library is needed. It
is kept from the network: every host name resolves to nothing except
127.0.0.1, no proxy, no background services."""

import itertools
import json
import os
import shutil
import subprocess
import threading

from .core import wait_until

CHROMIUM = shutil.which('chromium')

FLAGS = [
    '--headless=new', '--no-sandbox', '--disable-gpu', '--remote-debugging-pipe',
    '--no-first-run', '--no-default-browser-check', '--disable-extensions',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-default-apps', '--disable-domain-reliability', '--no-proxy-server',
    '--disable-features=Translate,OptimizationHints,MediaRouter',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
]


class Browser:
    def __init__(self, tmp):
        if not CHROMIUM:
            raise RuntimeError('chromium is not installed')
        self.profile = tmp.join(f'chromium-{id(self) % 100000}')
        self.log = self.profile + '.log'
        commands_r, self.commands = os.pipe()
        self.replies, replies_w = os.pipe()
        argv = ' '.join([CHROMIUM, *[f"'{f}'" for f in FLAGS], f"--user-data-dir='{self.profile}'",
                         'about:blank'])
        self.proc = subprocess.Popen(['sh', '-c', f'exec {argv} 3<&{commands_r} 4>&{replies_w}'],
                                     pass_fds=(commands_r, replies_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, 'w'))
        os.close(commands_r)
        os.close(replies_w)
        self.ids = itertools.count(1)
        self.answers = {}
        self.cond = threading.Condition()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b''
        while True:
            try:
                data = os.read(self.replies, 1 << 16)
            except OSError:
                data = b''
            if not data:
                break
            buf += data
            while b'\0' in buf:
                message, buf = buf.split(b'\0', 1)
                reply = json.loads(message)
                if 'id' in reply:
                    with self.cond:
                        self.answers[reply['id']] = reply
                        self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def call(self, method, params=None, session=None, timeout=30):
        """One DevTools command; returns its result, raises on its error."""
        i = next(self.ids)
        message = {'id': i, 'method': method, 'params': params or {}}
        if session:
            message['sessionId'] = session
        os.write(self.commands, json.dumps(message).encode() + b'\0')
        with self.cond:
            if not self.cond.wait_for(lambda: i in self.answers or self.closed, timeout):
                raise TimeoutError(f'no answer to {method} within {timeout}s')
            if i not in self.answers:
                raise RuntimeError(f'chromium exited; see {self.log}')
            reply = self.answers.pop(i)
        if 'error' in reply:
            raise RuntimeError(f'{method}: {reply["error"]}')
        return reply['result']

    def open(self, url):
        """A new tab at url; returns a Page."""
        target = self.call('Target.createTarget', {'url': url})['targetId']
        session = self.call('Target.attachToTarget', {'targetId': target, 'flatten': True})['sessionId']
        page = Page(self, session)
        # The tab starts on about:blank, already "complete": wait for url.
        wait_until(lambda: page.evaluate('location.href') == url and
                   page.evaluate('document.readyState') == 'complete', 15, what=f'{url} to load')
        return page

    def close(self):
        try:
            self.call('Browser.close', timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.commands)


class Page:
    def __init__(self, browser, session):
        self.browser, self.session = browser, session

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (awaited)."""
        result = self.browser.call('Runtime.evaluate', {'expression': expression, 'returnByValue': True,
                                                        'awaitPromise': True}, self.session)
        if 'exceptionDetails' in result:
            raise RuntimeError(f'{expression!r}: {result["exceptionDetails"]}')
        return result['result'].get('value')
