"""``--help`` of every Python tool under tools/ (found by a glob, so new tools are covered):
it exits 0, the parser has a description, and the description and every argument's help are
there and end as a sentence does, not cut mid-sentence."""
import glob
import json
import os
import os.path as osp
import re
import subprocess

import pytest

from tests.conftest import PY, ROOT

TOOLS = sorted(osp.relpath(p, ROOT)
               for p in glob.glob(osp.join(ROOT, 'tools', '**', '*.py'), recursive=True)
               if not osp.basename(p).startswith('_'))
# a sentence's end (a period maybe inside closing brackets or quotes), or argparse's
# customary '(default: ...)' after one
COMPLETE = re.compile(r'([.!?]["\')\]]*|\(default: [^()]*\))$')
MARK = '@@help@@'
# runs each tool's main with --help; print_help reports the parser it was called on
DRIVER = r'''
import argparse, json, runpy, sys

def report(self, file=None):
    formatter = self._get_formatter()
    args = []
    for action in self._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        args.append(dict(name='/'.join(action.option_strings) or action.dest,
                         help=formatter._expand_help(action) if action.help else None))
    print(MARK + json.dumps(dict(tool=TOOL, description=self.description, args=args)))
    ORIGINAL(self, file)

ORIGINAL = argparse.ArgumentParser.print_help
argparse.ArgumentParser.print_help = report
for TOOL in sys.argv[1:]:
    sys.argv = [TOOL, '--help']
    try:
        runpy.run_path(TOOL, run_name='__main__')
    except SystemExit as e:
        print(MARK + json.dumps(dict(tool=TOOL, exit=e.code or 0)))
'''.replace('MARK', repr(MARK))


@pytest.fixture(scope='module')
def helps(tmp_path_factory):
    """``{tool: dict(description=..., args=[...], exit=code)}``, one process for all tools
    (each imports torch and the OpenMMLab packages: once is enough)."""
    driver = tmp_path_factory.mktemp('help') / 'driver.py'
    driver.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', COLUMNS='100')
    proc = subprocess.run([PY, str(driver), *TOOLS], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    found = {}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            record = json.loads(line[len(MARK):])
            found.setdefault(record.pop('tool'), {}).update(record)
    return found


def _incomplete(text):
    text = ' '.join((text or '').split())
    return not text or not COMPLETE.search(text)


@pytest.mark.parametrize('tool', TOOLS)
def test_help_is_complete(helps, tool):
    got = helps.get(tool)
    assert got and 'args' in got, f'{tool}: --help printed no argparse help'
    assert got['exit'] == 0, f'{tool} --help exited {got["exit"]}'
    assert not _incomplete(got['description']), \
        f'{tool}: parser description missing or cut mid-sentence: {got["description"]!r}'
    bad = {a['name']: a['help'] for a in got['args'] if _incomplete(a['help'])}
    assert not bad, f'{tool}: help missing or cut mid-sentence for {bad}'


def test_completeness_rule():
    assert not _incomplete('Input height and width (default: 800 1216).')
    assert not _incomplete('Seconds on screen (default: 2)')
    assert not _incomplete('Show it (mmdet only.)')
    for cut in (None, '', 'job launcher', 'a Swin backbone,', 'see (the docs'):
        assert _incomplete(cut)
