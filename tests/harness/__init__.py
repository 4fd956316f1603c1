"""Test harness for batond's integration and system tests: real PostgreSQL,
real nats-server, batond started through systemd-socket-activate, and the
sd_notify messages it sends, read from a socket the test owns.

Python standard library only. Each test file is a module that prints TAP
(meson counts it): run it from the source root to debug, e.g.
    BATOND=build/src/batond python3 -m tests.integration.test_startup -v

Tests import what they use from here (from tests.harness import Batond,
run, test, ...). The modules, one concern each:
    core         the source root, VERBOSE and log(), free_port(s), wait_until,
                 TempDir
    postgres     Postgres (a throwaway cluster), PG_BIN, MIGRATIONS,
                 MIGRATION_LOCK_KEY
    nats         Nats (nats-server on a free port)
    notify       NotifySocket (sd_notify messages, as systemd receives them)
    http_client  Response, http_get, metric, publish, raw_request,
                 read_until_closed, wait_streams, Scraper, close_socket, StrictReader
                 and Misframed
    sse          SseClient
    browser      headless Chromium over the DevTools protocol (ctx.browser())
    nginx        Nginx, one process on free ports (ctx.nginx())
    batond       Batond
    runner       the TAP runner: @test, run(), Context, Skip, failure_notes,
                 report_failure
    container    systemd booted in a container (nspawn) for the system
                 tests: Container, Shared, Unavailable (import it as
                 tests.harness.container; not re-exported here)
    readme       walkthrough(): README.md's marked shell blocks, to run
    traffic      a script, never imported: the system test copies it into
                 the container and runs it there
    fleet        several containers on a bridge of their own (network
                 namespaces made for the test): Fleet (tests/harness/fleet)
    fleet_traffic  a script, never imported: subscribers and publishers
                 run on the fleet's bridge by tests/system/test_fleet.py
"""

from .batond import Batond
from .core import ROOT, VERBOSE, TempDir, free_port, free_ports, log, wait_until
from .http_client import (Misframed, Response, Scraper, StrictReader, close_socket, http_get, metric,
                          publish, raw_request, read_until_closed, wait_streams)
from .nats import Nats
from .notify import NotifySocket
from .postgres import MIGRATION_LOCK_KEY, MIGRATIONS, PG_BIN, Postgres
from .runner import Context, Skip, failure_notes, report_failure, run, test
from .sse import SseClient

__all__ = [
    'Batond', 'Context', 'MIGRATIONS', 'MIGRATION_LOCK_KEY', 'Misframed', 'Nats', 'NotifySocket',
    'PG_BIN', 'Postgres', 'ROOT', 'Response', 'Scraper', 'Skip', 'SseClient', 'StrictReader', 'TempDir',
    'VERBOSE', 'close_socket', 'failure_notes', 'free_port', 'free_ports', 'http_get', 'log', 'metric', 'publish',
    'raw_request', 'read_until_closed', 'report_failure', 'run', 'test', 'wait_streams', 'wait_until',
]
