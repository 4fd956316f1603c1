"""The TAP runner: @test registers a case, run() runs the registered cases
(or those named on the command line; -v for comments and to keep a failed
case's temporary directory) and prints TAP for meson. Each case gets a
Context that owns its resources; raising Skip skips it."""

import os
import shutil
import sys
import time
import traceback

from . import browser, nginx
from .batond import Batond
from .core import VERBOSE, TempDir
from .nats import Nats
from .postgres import Postgres
from .sse import SseClient

_tests = []


def test(fn):
    _tests.append(fn)
    return fn


class Skip(Exception):
    pass


class Once:
    """A setup every case of a test file shares, done by the first case
    that asks: later ones get its result, or skip or fail as the first
    did, with its reason, instead of running against half a setup. Needs
    root and the named tools, or every case skips saying so."""

    def __init__(self, what, tools, setup):
        self.what, self.tools, self.setup = what, tools, setup
        self.done, self.result, self.skip, self.error = False, None, None, None

    def get(self):
        if self.done:
            return self.result
        if self.skip:
            raise Skip(self.skip)
        if self.error:
            raise AssertionError(f'{self.what} failed earlier: {self.error}')
        missing = [t for t in self.tools if not shutil.which(t)]
        if os.geteuid() != 0 or missing:
            self.skip = f'needs root and {", ".join(missing) or "nothing else"}'
            raise Skip(self.skip)
        try:
            self.result = self.setup()
        except Skip as e:
            self.skip = str(e)
            raise
        except Exception as e:
            self.error = str(e)[:2000]
            raise
        self.done = True
        return self.result


class Context:
    """Per-test resources, torn down in reverse order of creation."""

    def __init__(self, name):
        self.tmp = TempDir(name)
        self._cleanups = []

    def add(self, obj, cleanup):
        self._cleanups.append((obj, cleanup))
        return obj

    def postgres(self, durable=False):
        return self.add(Postgres(self.tmp, durable), lambda p: p.destroy())

    def nats(self, **kw):
        return self.add(Nats(self.tmp, **kw), lambda n: n.destroy())

    def batond(self, env, **kw):
        return self.add(Batond(self.tmp, env, **kw), lambda b: b.stop())

    def browser(self):
        if not browser.CHROMIUM:
            raise Skip('chromium is not installed (apt-get install chromium; ./tools/dev deps does)')
        return self.add(browser.Browser(self.tmp), lambda b: b.close())

    def nginx(self, sites, **kw):
        if not nginx.NGINX:
            raise Skip('nginx is not installed (apt-get install nginx; ./tools/dev test installs it)')
        return self.add(nginx.Nginx(self.tmp, sites, **kw), lambda n: n.stop())

    def subscribe(self, port, path, **kw):
        return self.add(SseClient(port, path, **kw), lambda c: c.close())

    def close(self, keep):
        for obj, cleanup in reversed(self._cleanups):
            try:
                cleanup(obj)
            except Exception as e:
                print(f'# cleanup failed: {e}', flush=True)
        if not keep:
            self.tmp.cleanup()


# Extra context for failure reports: callables returning text (the system
# test adds the container's failed units and journal).
failure_notes = []


def report_failure(name, ctx):
    """Why a case failed, on stderr as well as in TAP comments: meson's
    --print-errorlogs (and so CI's log) shows a TAP test's stderr only."""
    lines = traceback.format_exc().splitlines()
    for obj, _ in ctx._cleanups:
        if isinstance(obj, Batond):
            lines.append(f'--- log of batond on port {obj.port} ---')
            lines += [f'  {line}' for line in obj.log().splitlines()[-40:]]
            lines.append(f'--- sd_notify: {obj.notify.texts()[-15:]}')
    for note in failure_notes:
        lines += note().splitlines()
    for line in lines:
        print(f'# {line}', flush=True)
    print(f'=== {name} failed:', *lines, sep='\n', file=sys.stderr, flush=True)


def run():
    only = [a for a in sys.argv[1:] if not a.startswith('-')]
    # The running module's own cases: one that imports another's helpers
    # does not run that module's cases too.
    tests = [t for t in _tests if t.__module__ == '__main__' and (not only or t.__name__ in only)]
    print(f'1..{len(tests)}', flush=True)
    failed = 0
    for n, fn in enumerate(tests, 1):
        ctx = Context(fn.__name__)
        started = time.monotonic()
        status = 'ok'
        directive = ''
        try:
            fn(ctx)
        except Skip as e:
            directive = f' # SKIP {e}'
        except Exception:
            status = 'not ok'
            failed += 1
            report_failure(fn.__name__, ctx)
        finally:
            ctx.close(keep=status != 'ok' and VERBOSE)
        elapsed = time.monotonic() - started
        print(f'{status} {n} - {fn.__name__} ({elapsed:.1f}s){directive}', flush=True)
    sys.exit(1 if failed else 0)
