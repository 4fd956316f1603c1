"""Integration tests: batond against real PostgreSQL, nats-server and
systemd-socket-activate. Run one from the source root:
    BATOND=build/src/batond python3 -m tests.integration.test_startup -v [case ...]
"""
