"""README.md's walkthroughs, as the system tests run them: the shell
block README.md marks <!-- walkthrough: NAME -->, as written but for the
assignments of the variables a reader sets for their hosts and the path
of the .deb in "apt install ./baton_....deb". So the text cannot drift
from what works (tests/system/test_package.py, test_fleet.py)."""

import os
import re
import shlex

from .core import ROOT


def walkthrough(name, variables=None, deb=None):
    with open(os.path.join(ROOT, 'README.md')) as f:
        readme = f.read()
    m = re.search(rf'^<!-- walkthrough: {re.escape(name)} -->\n```sh\n(.*?)\n```$', readme, re.S | re.M)
    assert m, f'README.md has no block marked "walkthrough: {name}"'
    script = m.group(1)
    for var, value in (variables or {}).items():
        script, n = re.subn(rf'^{var}=.*$', f'{var}={shlex.quote(value)}', script, flags=re.M)
        assert n == 1, f'walkthrough {name}: {n} assignments of {var}'
    if deb:
        script, n = re.subn(r'\./baton_\S+\.deb', deb, script)
        assert n == 1, f'walkthrough {name}: {n} "apt install ./baton_*.deb"'
    return script
