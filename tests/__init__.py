"""Baton's Python tests, run as modules from the source root, e.g.
    BATOND=build/src/batond python3 -m tests.integration.test_http -v
The harness the integration, system and docs tests share is tests.harness."""
