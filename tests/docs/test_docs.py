#!/usr/bin/env python3
"""The documentation against the code: fails when they drift apart.

- every key of config_keys[] in src/config.c, with its default, range and
  reloadable flag, in the shipped units/batond.conf, in batond.conf(5) and
  in README.md's configuration table;
- batond's options, command, exit codes, endpoints and journal fields in
  batond(8); baton-deploy's commands, settings, files and exit codes in
  baton-deploy(8);
- the pages lint clean (mandoc, groff, man) and are all installed;
- the shipped file parses, and so does every value it shows (BATOND=).

Python standard library only; prints TAP. Run it from the source root to
debug:
    BATOND=build/src/batond python3 -m tests.docs.test_docs -v [case ...]
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

from tests.harness import Skip, run, test

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
VERBOSE = '-v' in sys.argv
PAGES = ['man/batond.8', 'man/batond.conf.5', 'man/baton-deploy.8', 'man/baton-fleet.8']


def read(rel):
    with open(os.path.join(ROOT, rel), encoding='utf-8') as f:
        return f.read()


def log(message):
    if VERBOSE:
        print(f'# {message}', flush=True)


class Problems:
    """Collects every mismatch of a case, so one run lists them all."""

    def __init__(self):
        self.items = []

    def add(self, message):
        self.items.append(message)

    def check(self, condition, message):
        if not condition:
            self.add(message)

    def done(self):
        if self.items:
            raise AssertionError(f'{len(self.items)} problem(s):\n  ' + '\n  '.join(self.items))


# --- the code's side ---------------------------------------------------------

USEC_PER_SEC = 1000000


def split_args(text):
    """Splits C macro arguments at top-level commas."""
    args, depth, current, in_string = [], 0, '', False
    for i, ch in enumerate(text):
        if in_string:
            current += ch
            if ch == '"' and text[i - 1] != '\\':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch == '(':
            depth += 1
        elif ch == ')':
            depth -= 1
        elif ch == ',' and depth == 0:
            args.append(current.strip())
            current = ''
            continue
        current += ch
    args.append(current.strip())
    return args


def c_number(expr):
    """Evaluates a bound of the key table: 0, SEC(300), KiB(1024) * 1024, ..."""
    if not re.fullmatch(r'[A-Za-z0-9_()* ]+', expr):
        raise ValueError(f'unexpected bound expression {expr!r}')
    env = {'SEC': lambda n: n * USEC_PER_SEC, 'MSEC': lambda n: n * 1000,
           'KiB': lambda n: n * 1024, '__builtins__': {}}
    return eval(expr, env)  # our own source, checked above to be arithmetic


def config_keys():
    """[(name, type, default or None, lo, hi, reloadable, credential)] in table order."""
    src = read('src/config.c')
    m = re.search(r'config_keys\[_CONFIG_KEY_MAX\]\s*=\s*\{(.*?)\n\};', src, re.S)
    assert m, 'config_keys[] not found in src/config.c'
    keys = []
    for macro, body in re.findall(r'^\s*(KEY|SECRET_KEY)\((.*)\),\s*$', m.group(1), re.M):
        a = split_args(body)
        assert len(a) == (8 if macro == 'SECRET_KEY' else 7), f'cannot read {macro}({body})'
        default = None if a[3] == 'NULL' else a[3][1:-1]
        keys.append({'name': a[0], 'type': a[1], 'default': default, 'lo': c_number(a[4]),
                     'hi': c_number(a[5]), 'reloadable': a[6] == 'true',
                     'credential': a[7][1:-1] if macro == 'SECRET_KEY' else None})
    # The enum must list exactly these keys: a line the regex missed fails here.
    block = re.search(r'enum ConfigKeyId \{(.*?)\}', read('src/config.h'), re.S)
    assert block, 'enum ConfigKeyId not found in src/config.h'
    enum = re.findall(r'^\s*CONFIG_([A-Z0-9_]+),', block.group(1), re.M)
    assert [k['name'] for k in keys] == enum, (
        f'keys read from config_keys[] {[k["name"] for k in keys]} differ from ConfigKeyId {enum}')
    return keys


def format_duration(usec):
    """src/parse-util.c's format_duration()."""
    ms = usec // 1000
    if usec == 0:
        return '0s'
    if ms < 1000 or ms % 1000:
        return f'{ms}ms'
    sec = ms // 1000
    if sec < 60 or sec % 60:
        return f'{sec}s'
    if sec % 3600:
        return f'{sec // 60}m'
    return f'{sec // 3600}h'


def format_size(n):
    for suffix, factor in (('G', 1 << 30), ('M', 1 << 20), ('K', 1 << 10)):
        if n and n % factor == 0:
            return f'{n // factor}{suffix}'
    return str(n)


def range_texts(key):
    """What the documentation must say about a key's range, as alternatives
    (any one of each inner list); [] when the table gives no bound."""
    t, lo, hi = key['type'], key['lo'], key['hi']
    if t == 'TYPE_DURATION':
        los = [format_duration(lo)] + (['0'] if lo == 0 else [])
        return [[f'{x} to {format_duration(hi)}' for x in los]]
    if t == 'TYPE_SIZE':
        return [[f'{format_size(lo)} to {format_size(hi)}']]
    if t == 'TYPE_UINT':
        return [[f'{lo} to {hi}']]
    if t in ('TYPE_SECRET', 'TYPE_NAME') and hi:
        return [[f'at most {hi}', f'At most {hi}']]
    return []


# --- roff ---------------------------------------------------------------------

ESCAPES = {'aq': "'", 'dq': '"', 'ga': '`', 'rs': '\\', 'bu': '*', 'em': '--', 'en': '-',
           'lq': '"', 'rq': '"', 'ti': '~', 'ha': '^'}


def roff_args(text):
    """Macro arguments: blanks separate, double quotes group ("" is a quote)."""
    args, current, quoted, i, started = [], '', False, 0, False
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"' and text[i + 1:i + 2] == '"':
                current += '"'
                i += 1
            elif ch == '"':
                quoted = False
            else:
                current += ch
        elif ch == '"':
            quoted, started = True, True
        elif ch in ' \t':
            if started:
                args.append(current)
                current, started = '', False
        else:
            current += ch
            started = True
        i += 1
    if started:
        args.append(current)
    return args


def plain(text):
    """Roff escapes out: fonts dropped, \\- and special characters as text."""
    text = re.sub(r'\\f(\[[^\]]*\]|.)', '', text)
    text = re.sub(r'\\\((..)', lambda m: ESCAPES.get(m.group(1), ''), text)
    text = re.sub(r'\\\[(\w+)\]', lambda m: ESCAPES.get(m.group(1), ''), text)
    text = text.replace('\\-', '-').replace('\\&', '').replace('\\e', '\\').replace('\\%', '')
    return text


FONT_MACROS = {'B', 'I', 'SM', 'SB'}
ALTERNATING = {'BI', 'IB', 'BR', 'RB', 'IR', 'RI'}


def roff_line_text(line):
    """The text a source line contributes, or None for other requests."""
    if line.startswith('.\\"') or line.startswith("'\\\""):
        return None
    m = re.match(r'^[.\']\s*([A-Za-z]+)\s*(.*)$', line)
    if not m:
        return plain(line)
    macro, args = m.groups()
    if macro in FONT_MACROS:
        return plain(' '.join(roff_args(args)))
    if macro in ALTERNATING:
        return plain(''.join(roff_args(args)))
    return None


class Page:
    """A man page's source split into sections and tagged paragraphs."""

    def __init__(self, rel):
        self.rel = rel
        self.source = read(rel)
        self.lines = self.source.splitlines()

    def section_lines(self, name):
        out, inside = [], False
        for line in self.lines:
            m = re.match(r'^\.SH\s+"?([^"]*)"?\s*$', line)
            if m:
                inside = m.group(1).strip() == name
                continue
            if inside:
                out.append(line)
        return out

    def text(self, lines=None):
        parts = [roff_line_text(line) for line in (self.lines if lines is None else lines)]
        return re.sub(r'\s+', ' ', ' '.join(p for p in parts if p))

    def section_text(self, name):
        return self.text(self.section_lines(name))

    def tagged(self, section=None):
        """[(tag text, body text)] for every .TP paragraph (in one section)."""
        lines = self.lines if section is None else self.section_lines(section)
        items, i = [], 0
        while i < len(lines):
            if lines[i].strip() == '.TP' or lines[i].startswith('.TP '):
                tag = self.text([lines[i + 1]]).strip() if i + 1 < len(lines) else ''
                j = i + 2
                while j < len(lines) and not re.match(r'^\.(TP|SS|SH)\b', lines[j]):
                    j += 1
                items.append((tag, self.text(lines[i + 2:j]).strip()))
                i = j
            else:
                i += 1
        return items


def contains_word(text, word):
    return re.search(r'(?<![\w-])' + re.escape(word) + r'(?![\w-])', text) is not None


def check_marking_and_range(p, where, k, text):
    """A key's explanation says whether SIGHUP applies it (and nothing
    else) and states its range."""
    marking = 'Reloadable.' if k['reloadable'] else 'Needs a restart.'
    other = 'Needs a restart.' if k['reloadable'] else 'Reloadable.'
    p.check(marking in text and other not in text, f'{where}: {k["name"]} must be marked {marking!r} (only)')
    for alternatives in range_texts(k):
        p.check(any(a in text for a in alternatives),
                f'{where}: {k["name"]}: range {alternatives[0]!r} not stated')


# --- cases --------------------------------------------------------------------

@test
def config_keys_documented(ctx):
    """(a) units/batond.conf, (b) batond.conf(5), (c) README.md, per key."""
    keys = config_keys()
    names = {k['name'] for k in keys}
    p = Problems()
    log(f'{len(keys)} keys in config_keys[]')

    # (a) The shipped file: every key once, commented out, with its default.
    conf = read('units/batond.conf').splitlines()
    found = {}
    for n, line in enumerate(conf):
        stripped = line.lstrip(' \t')
        if stripped and stripped[0] not in '#;':
            p.add(f'units/batond.conf line {n + 1} sets a key ({line!r}): the shipped file '
                  'must leave every key at its default')
        m = re.match(r'^#([A-Za-z_][A-Za-z0-9_]*)=(.*)$', line)
        if m:
            if m.group(1) in found:
                p.add(f'units/batond.conf lists {m.group(1)} twice')
            found[m.group(1)] = (n, m.group(2))
    for extra in sorted(set(found) - names):
        p.add(f'units/batond.conf lists {extra}, which config_keys[] does not have')
    for k in keys:
        if k['name'] not in found:
            p.add(f'units/batond.conf does not list #{k["name"]}=')
            continue
        n, value = found[k['name']]
        # The key's explanation: the comment lines above it, up to a blank line.
        start = n
        while start > 0 and conf[start - 1].startswith('#'):
            start -= 1
        block = ' '.join(line.lstrip('#').strip() for line in conf[start:n + 1])
        if k['default'] is None:
            p.check('Required' in block or 'required' in block,
                    f'units/batond.conf: {k["name"]} has no default, but its comment does not say '
                    'it is required')
        else:
            p.check(value == k['default'], f'units/batond.conf: #{k["name"]}={value}, but the '
                    f'default is {k["default"]!r}')
        check_marking_and_range(p, 'units/batond.conf', k, block)

    # (b) batond.conf(5): one .TP per key, with default, range and marking.
    page = Page('man/batond.conf.5')
    documented = {}
    for tag, body in page.tagged('SETTINGS'):
        m = re.match(r'^([A-Z][A-Z0-9_]*)=', tag)
        if not m:
            continue
        if m.group(1) in documented:
            p.add(f'batond.conf(5) documents {m.group(1)} twice')
        documented[m.group(1)] = body
    for extra in sorted(set(documented) - names):
        p.add(f'batond.conf(5) documents {extra}, which config_keys[] does not have')
    for k in keys:
        body = documented.get(k['name'])
        if body is None:
            p.add(f'batond.conf(5) has no ".TP" entry for {k["name"]} under SETTINGS')
            continue
        if k['default'] is None:
            p.check('Required' in body and 'Default:' not in body,
                    f'batond.conf(5): {k["name"]} must say "Required" and give no default')
        elif k['default'] == '':
            p.check('Default: empty' in body, f'batond.conf(5): {k["name"]}: "Default: empty" missing')
        else:
            p.check(re.search(r'Default: ' + re.escape(k['default']) + r'(?=[.,;) ]|$)', body),
                    f'batond.conf(5): {k["name"]}: "Default: {k["default"]}" missing')
        check_marking_and_range(p, 'batond.conf(5)', k, body)
        if k['credential']:
            p.check(k['credential'] in body,
                    f'batond.conf(5): {k["name"]}: the credential {k["credential"]!r} not named')

    # (c) README.md's configuration table.
    readme = read('README.md')
    m = re.search(r'^## Configuration\n(.*?)(?=^## )', readme, re.S | re.M)
    p.check(m, 'README.md has no "## Configuration" section')
    rows = {}
    for line in (m.group(1) if m else '').splitlines():
        r = re.match(r'^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|([^|]*)\|([^|]*)\|', line)
        if r:
            rows[r.group(1)] = (r.group(2).strip(), r.group(3).strip())
    for extra in sorted(set(rows) - names):
        p.add(f'README.md configuration table lists {extra}, which config_keys[] does not have')
    for k in keys:
        if k['name'] not in rows:
            p.add(f'README.md configuration table has no row for `{k["name"]}`')
            continue
        default, reload = rows[k['name']]
        if k['default'] is None:
            p.check('required' in default, f'README.md: {k["name"]} default should be "(required)"')
        elif k['default'] == '':
            p.check('empty' in default, f'README.md: {k["name"]} default should be "(empty)"')
        else:
            p.check(f'`{k["default"]}`' in default,
                    f'README.md: {k["name"]} default {default!r}, the code says {k["default"]!r}')
        want = 'yes' if k['reloadable'] else 'restart'
        p.check(reload == want, f'README.md: {k["name"]} reload {reload!r}, the code says {want!r}')
    p.done()


def run_quiet(argv, env=None):
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env, cwd=ROOT, timeout=60)
    return out.stdout.strip()


@test
def man_pages_lint(ctx):
    """mandoc -T lint, groff -ww and man --warnings print nothing."""
    p = Problems()
    missing = [tool for tool in ('mandoc', 'groff', 'man') if not shutil.which(tool)]
    env = dict(os.environ, LC_ALL='C.UTF-8', MANWIDTH='80')
    env.pop('MANPAGER', None)
    env.pop('PAGER', None)
    for page in PAGES:
        if 'mandoc' not in missing:
            out = run_quiet(['mandoc', '-T', 'lint', '-W', 'warning', page], env)
            p.check(not out, f'mandoc -T lint -W warning {page}:\n{out}')
        if 'groff' not in missing:
            # -ww: every warning; -wall leaves out mac (undefined macros), di and reg.
            out = run_quiet(['groff', '-man', '-ww', '-z', page], env)
            p.check(not out, f'groff -man -ww -z {page}:\n{out}')
        if 'man' not in missing:
            r = subprocess.run(['man', '-l', '--warnings=w', page], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=60)
            p.check(not r.stderr.strip() and r.returncode == 0,
                    f'man -l --warnings=w {page} (exit {r.returncode}):\n{r.stderr.strip()}')
    p.done()
    if missing:
        raise Skip(f'{", ".join(missing)} not installed (the other linters were clean); '
                   'apt-get install mandoc groff-base man-db')


@test
def man_pages_well_formed(ctx):
    """ASCII source, the project's version in .TH, every page installed,
    every page naming the others."""
    p = Problems()
    version = re.search(r"^project\([^)]*?version\s*:\s*'([^']+)'", read('meson.build'), re.S | re.M)
    assert version, 'no version in meson.build'
    installed = re.findall(r"'([^']+\.[0-9])'", read('man/meson.build'))
    on_disk = sorted(os.path.relpath(f, ROOT) for f in glob.glob(os.path.join(ROOT, 'man', '*.[0-9]')))
    p.check(sorted(f'man/{f}' for f in installed) == on_disk,
            f'man/meson.build installs {installed}, man/ has {on_disk}')
    for rel in PAGES:
        page = Page(rel)
        for n, line in enumerate(page.lines, 1):
            p.check(all(ord(c) < 128 for c in line), f'{rel}:{n}: not ASCII: {line!r}')
            p.check(line == line.rstrip(), f'{rel}:{n}: trailing blank')
            p.check(line != '', f'{rel}:{n}: blank line (use .PP)')
            p.check(not line.startswith("'"), f'{rel}:{n}: starts with a quote')
        th = [line for line in page.lines if line.startswith('.TH ')]
        p.check(len(th) == 1 and f'"Baton {version.group(1)}"' in th[0],
                f'{rel}: .TH should name "Baton {version.group(1)}": {th}')
        name, section = os.path.basename(rel).rsplit('.', 1)
        see_also = page.section_text('SEE ALSO')
        for other in PAGES:
            o_name, o_section = os.path.basename(other).rsplit('.', 1)
            if other != rel:
                p.check(f'{o_name}({o_section})' in see_also,
                        f'{rel}: SEE ALSO does not name {o_name}({o_section})')
        p.check(re.match(rf'^{re.escape(name)} - ', page.section_text('NAME').strip()),
                f'{rel}: NAME should start with "{name} \\-"')
    p.done()


def exit_status_codes(page):
    return {tag for tag, _ in page.tagged('EXIT STATUS')}


def check_exit_codes(p, name, script, page):
    """Those the script's header promises and every "exit N" in it, 0
    included, are the page's EXIT STATUS entries."""
    header = re.search(r'^# Exit codes:(.*?)^[^#]', script, re.S | re.M)
    assert header, f'no "# Exit codes:" in the header of tools/{name}'
    codes = set(re.findall(r'(?:^\s*|[:;]\s*)(\d+) ', header.group(1).replace('\n#', ' ')))
    in_code = set(re.findall(r'\bexit (\d+)', script))
    p.check(in_code <= codes, f'tools/{name} exits with {sorted(in_code)}, its header '
            f'documents {sorted(codes)}')
    codes |= in_code | {'0'}
    documented = exit_status_codes(page)
    p.check(documented == codes, f'{name}(8) EXIT STATUS lists {sorted(documented)}, '
            f'the script has {sorted(codes)}')


@test
def batond_command_line_documented(ctx):
    """Options, the migrate command and exit codes of src/main.c in batond(8)
    (and the exit codes in README.md)."""
    p = Problems()
    page = Page('man/batond.8')
    main = read('src/main.c')
    tags = [t for t, _ in page.tagged('OPTIONS') + page.tagged('COMMANDS')]
    synopsis = page.section_text('SYNOPSIS')

    options = re.search(r'struct option options\[\]\s*=\s*\{(.*?)\};', main, re.S)
    assert options, 'no option table in src/main.c'
    longs = re.findall(r'\{\s*"([a-z-]+)",', options.group(1))
    shorts = re.search(r'getopt_long\([^"]*"([^"]*)"', main).group(1).replace(':', '')
    assert longs and shorts, 'cannot read the options of src/main.c'
    log(f'options: --{", --".join(longs)}; -{", -".join(shorts)}')
    for name in longs:
        p.check(any(contains_word(t, f'--{name}') for t in tags),
                f'batond(8): --{name} is not an entry of OPTIONS or COMMANDS')
        p.check(contains_word(synopsis, f'--{name}'), f'batond(8): --{name} not in SYNOPSIS')
    for ch in shorts:
        p.check(any(contains_word(t, f'-{ch}') for t in tags), f'batond(8): -{ch} not in OPTIONS')
    command_tags = [t for t, _ in page.tagged('COMMANDS')]
    for command in re.findall(r'streq\(argv\[optind\], "(\w+)"\)', main):
        p.check(any(t.split()[:1] == [command] for t in command_tags),
                f'batond(8): the command {command!r} is not an entry of COMMANDS')
        p.check(contains_word(synopsis, command), f'batond(8): {command!r} not in SYNOPSIS')

    # Exit codes: every EXIT_* the daemon returns, with the values of its defines.
    values = {'EXIT_SUCCESS': 0, 'EXIT_FAILURE': 1}
    used = set()
    for path in glob.glob(os.path.join(ROOT, 'src', '*.[ch]')):
        with open(path, encoding='utf-8') as f:
            text = f.read()
        for name, value in re.findall(r'^#define (EXIT_[A-Z_]+) (\d+)', text, re.M):
            values[name] = int(value)
        used |= set(re.findall(r'\b(EXIT_[A-Z_]+)\b', re.sub(r'^#define .*$', '', text, flags=re.M)))
    unknown = used - set(values)
    assert not unknown, f'exit codes of unknown value: {unknown}'
    codes = {str(values[name]) for name in used}
    log(f'exit codes in src/: {sorted(codes, key=int)}')
    documented = exit_status_codes(page)
    p.check(documented == codes, f'batond(8) EXIT STATUS lists {sorted(documented)}, '
            f'src/ uses {sorted(codes, key=int)}')
    m = re.search(r'^### Exit codes\n(.*?)(?=^##)', read('README.md'), re.S | re.M)
    readme_codes = set(re.findall(r'^\|\s*(\d+)\s*\|', m.group(1), re.M)) if m else set()
    p.check(readme_codes == codes, f'README.md "Exit codes" lists {sorted(readme_codes)}, '
            f'src/ uses {sorted(codes, key=int)}')
    p.done()


@test
def batond_endpoints_and_journal_fields_documented(ctx):
    """Every path of the route table and every journal field and BATON_EVENT
    value in batond(8)."""
    p = Problems()
    page = Page('man/batond.8')
    endpoints = page.section_text('HTTP ENDPOINTS')
    routes = re.findall(r'^\s*\{\s*"\w+",\s*"(/[^"]*)"', read('src/http-routes.c'), re.M)
    assert len(routes) > 5, f'cannot read the route table: {routes}'
    for path in routes:
        if path.endswith('/*'):
            path = path[:-1]        # "/api/": everything under it
        path = re.sub(r'\{(\w+)\}', lambda m: m.group(1).upper(), path)
        p.check(contains_word(endpoints, path), f'batond(8): {path} not under HTTP ENDPOINTS')

    journal = page.section_text('JOURNAL FIELDS')
    src = ''
    for path in sorted(glob.glob(os.path.join(ROOT, 'src', '*.c'))):
        with open(path, encoding='utf-8') as f:
            src += f.read()
    events = set(re.findall(r'log_event\([^,]+,\s*"(\w+)"', src))
    events |= set(re.findall(r'"BATON_EVENT=(\w+)"', src))
    fields = set(re.findall(r'"(BATON_[A-Z_]+)=', src))
    assert events and fields, 'cannot find journal fields in src/'
    log(f'journal fields {sorted(fields)}; events {sorted(events)}')
    for field in sorted(fields):
        p.check(contains_word(journal, field), f'batond(8): journal field {field} not documented')
    for event in sorted(events):
        p.check(contains_word(journal, event), f'batond(8): BATON_EVENT={event} not documented')
    p.done()


@test
def baton_deploy_documented(ctx):
    """Commands, settings, files and exit codes of tools/baton-deploy in
    baton-deploy(8)."""
    p = Problems()
    page = Page('man/baton-deploy.8')
    script = read('tools/baton-deploy')
    synopsis = page.section_text('SYNOPSIS')
    command_tags = [t for t, _ in page.tagged('COMMANDS')]

    # The usage in the header comment: "#   baton-deploy deploy [BINARY]   ...".
    usage = re.findall(r'^#\s+(baton-deploy [a-z]+(?: \[[A-Z]+\])?)', script, re.M)
    assert usage, 'no usage lines in the header of tools/baton-deploy'
    for line in usage:
        p.check(line in synopsis, f'baton-deploy(8): SYNOPSIS lacks {line!r}')
    # The dispatch at the end: "deploy) ...", "-h|--help|help) ...".
    dispatch = re.search(r'^case "\$\{1:-\}" in\n(.*?)^esac', script, re.S | re.M)
    assert dispatch, 'no command dispatch in tools/baton-deploy'
    words = []
    for pattern in re.findall(r'^\s+([a-z|-]+)\)', dispatch.group(1), re.M):
        words += pattern.split('|')
    log(f'commands: {words}')
    for word in words:
        p.check(any(contains_word(t, word) for t in command_tags),
                f'baton-deploy(8): {word!r} is not an entry of COMMANDS')

    check_exit_codes(p, 'baton-deploy', script, page)

    # Settings: ': "${NAME:=default}"' lines.
    settings = dict(re.findall(r'^: "\$\{([A-Z_]+):=([^}]*)\}"', script, re.M))
    assert settings, 'no settings in tools/baton-deploy'
    log(f'settings: {settings}')
    documented = dict(page.tagged('SETTINGS'))
    for name, default in settings.items():
        if name not in documented:
            p.add(f'baton-deploy(8): setting {name} is not an entry of SETTINGS')
            continue
        if '@' not in default:     # @SBINDIR@ is filled in at build time
            p.check(re.search(r'Default: ' + re.escape(default) + r'(?=[.,;) ]|$)', documented[name]),
                    f'baton-deploy(8): {name}: "Default: {default}" missing')
    for extra in sorted(set(documented) - set(settings)):
        p.add(f'baton-deploy(8) documents the setting {extra}, which the script does not have')
    # The settings file and the variable that moves it.
    conf = re.search(r'^CONF=\$\{([A-Z_]+):-([^}]*)\}', script, re.M)
    assert conf, 'no CONF= in tools/baton-deploy'
    p.check(any(t == conf.group(1) for t, _ in page.tagged('ENVIRONMENT')),
            f'baton-deploy(8): {conf.group(1)} is not an entry of ENVIRONMENT')
    files = [t for t, _ in page.tagged('FILES')]
    p.check(conf.group(2) in files, f'baton-deploy(8): {conf.group(2)} not under FILES')
    # Files under STATE_DIR, the lock and the release drop-in.
    state_dir = settings.get('STATE_DIR', '')
    for name, sub in re.findall(r'^([A-Z_]+)=\$STATE_DIR/(\w+)$', script, re.M):
        p.check(any(t.rstrip('/') == f'{state_dir}/{sub}' for t in files),
                f'baton-deploy(8): {state_dir}/{sub} ({name}) not under FILES')
    for name in ('LOCK', 'NGINX_UPSTREAM'):
        if name in settings:
            p.check(settings[name] in files, f'baton-deploy(8): {settings[name]} not under FILES')
    for dropin in set(re.findall(r'(\d+-release\.conf)', script)):
        p.check(any(t.endswith('/' + dropin) for t in files),
                f'baton-deploy(8): the drop-in {dropin} not under FILES')
    p.done()


def batond_env(extra=None):
    env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin')}
    for k in ('ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS'):
        if k in os.environ:
            env[k] = os.environ[k]
    env.update(extra or {})
    return env


def check_config(binary, path, env):
    r = subprocess.run([binary, '--config', path, '--check-config'], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env=env, timeout=30)
    sources = dict(re.findall(r'^([A-Z][A-Z0-9_]*)=.*  # (\w+)', r.stdout, re.M))
    return r, sources


@test
def baton_fleet_documented(ctx):
    """Commands and exit codes of tools/baton-fleet in baton-fleet(8)."""
    p = Problems()
    page = Page('man/baton-fleet.8')
    script = read('tools/baton-fleet')
    synopsis = page.section_text('SYNOPSIS')
    command_tags = [t for t, _ in page.tagged('COMMANDS')]
    usage = re.findall(r'^#\s+baton-fleet ([a-z]+)', script, re.M)
    assert usage, 'no usage lines in the header of tools/baton-fleet'
    dispatch = re.search(r'^    case \$cmd in\n(.*?)^    esac', script, re.S | re.M)
    assert dispatch, 'no command dispatch in tools/baton-fleet'
    words = []
    for pattern in re.findall(r'^    ([a-z|-]+)\)', dispatch.group(1), re.M):
        words += pattern.split('|')
    log(f'commands: {words}')
    for word in set(usage) | set(words):
        p.check(f'baton-fleet {word}' in synopsis or word in ('-h', '--help', 'help'),
                f'baton-fleet(8): SYNOPSIS lacks {word!r}')
        p.check(any(contains_word(t, word) for t in command_tags),
                f'baton-fleet(8): {word!r} is not an entry of COMMANDS')
    options = set(re.findall(r'^\s+(--[a-z-]+)\)', script, re.M))
    for option in options:
        p.check(option in synopsis, f'baton-fleet(8): SYNOPSIS lacks {option}')
    check_exit_codes(p, 'baton-fleet', script, page)
    envs = set(re.findall(r'\$\{(BATON_[A-Z_]+):-', script))
    for name in envs:
        p.check(any(t == name for t, _ in page.tagged('ENVIRONMENT')),
                f'baton-fleet(8): {name} is not an entry of ENVIRONMENT')
    p.done()


@test
def shipped_config_parses(ctx):
    """units/batond.conf as shipped sets nothing, and every value it shows
    (the defaults and the DATABASE_URL example) parses when uncommented."""
    binary = os.environ.get('BATOND')
    if not binary:
        raise Skip('BATOND (the batond binary) not set; meson sets it')
    binary = os.path.abspath(binary)
    keys = [k['name'] for k in config_keys()]
    p = Problems()

    r, sources = check_config(binary, os.path.join(ROOT, 'units', 'batond.conf'),
                              batond_env({'DATABASE_URL': 'postgres://baton@127.0.0.1/baton'}))
    p.check(r.returncode == 0 and 'configuration OK' in r.stdout,
            f'--check-config on units/batond.conf: exit {r.returncode}: {r.stderr.strip()}')
    p.check(sorted(sources) == sorted(keys), f'--check-config printed keys {sorted(sources)}')
    for key, source in sources.items():
        want = 'environment' if key == 'DATABASE_URL' else 'default'
        p.check(source == want, f'units/batond.conf as shipped: {key} comes from {source}')

    tmp = tempfile.mkdtemp(prefix='baton-docs-')
    try:
        uncommented = os.path.join(tmp, 'batond.conf')
        with open(uncommented, 'w', encoding='utf-8') as f:
            for line in read('units/batond.conf').splitlines():
                f.write(re.sub(r'^#(?=[A-Za-z_][A-Za-z0-9_]*=)', '', line) + '\n')
        r, sources = check_config(binary, uncommented, batond_env())
        p.check(r.returncode == 0 and 'configuration OK' in r.stdout,
                f'--check-config with every key uncommented: exit {r.returncode}: '
                f'{r.stderr.strip()}')
        for key in keys:
            p.check(sources.get(key) == 'file',
                    f'uncommented units/batond.conf: {key} comes from {sources.get(key)}')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    p.done()


if __name__ == '__main__':
    run()
