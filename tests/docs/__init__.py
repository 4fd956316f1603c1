"""The documentation checked against the code. Run from the source root:
    BATOND=build/src/batond python3 -m tests.docs.test_docs -v [case ...]
"""
