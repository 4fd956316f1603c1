"""System tests: real systemd in a container (tests.harness.container).
As root, from the source root:
    python3 -m tests.system.test_deploy -v [case ...]    (BATON_BUILD_DIR: the build to
                                                         install, default build/)
    python3 -m tests.system.test_package -v [case ...]
"""
