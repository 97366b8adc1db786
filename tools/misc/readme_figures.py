"""Check or regenerate the figures in README.md from the commands that produce them.

A figure is a README block between ``<!-- figure: NAME -->`` and ``<!-- /figure -->`` holding
a ```` ```bash ```` block with the command and the plain ```` ``` ```` block of what it printed
(the part named by :data:`FIGURES`). ``--check`` re-runs figures and reports the ones whose
output changed (exit 1); ``--update`` rewrites them. Without names, the quick figures are
taken (``make test`` and ``make demo`` take minutes and run only when named).
"""
import argparse
import os
import os.path as osp
import re
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
README = osp.join(ROOT, 'README.md')
BLOCK = re.compile(r'(<!-- figure: (?P<name>[\w-]+) -->\n```bash\n(?P<cmd>.*?)\n```\n\n```\n)'
                   r'(?P<out>.*?)(\n```\n<!-- /figure -->)', re.S)


def _from(pattern: str) -> Callable[[List[str]], List[str]]:
    def keep(lines: List[str]) -> List[str]:
        start = next(i for i, line in enumerate(lines) if re.match(pattern, line))
        return lines[start:]
    return keep


def _last(pattern: str) -> Callable[[List[str]], List[str]]:
    def keep(lines: List[str]) -> List[str]:
        return [[line for line in lines if re.search(pattern, line)][-1]]
    return keep


#: name -> (which lines of the output the README shows, quick enough for --check by default)
FIGURES: Dict[str, Tuple[Callable[[List[str]], List[str]], bool]] = {
    'count-trainable': (_from(r'\| arch'), True),
    'optimizer-groups': (_from(r'\w+ parameter groups \('), True),
    'demo': (_from(r'=+$'), False),
    'tests': (_last(r'\d+ passed'), False),
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Check or regenerate the README figures from their commands.')
    parser.add_argument('names', nargs='*',
                        help=f'Figures to run (default: the quick ones); known: '
                        f'{", ".join(FIGURES)}.')
    parser.add_argument('--update', action='store_true',
                        help='Rewrite README.md with the new outputs instead of only '
                        'reporting the differences.')
    return parser.parse_args(argv)


def figures(text: str) -> Dict[str, re.Match]:
    """The figure blocks of a README text by name.

    Args:
        text: README.md's text.
    """
    return {m.group('name'): m for m in BLOCK.finditer(text)}


def run_figure(name: str, command: str) -> str:
    """Run a figure's command from the repository root and return the lines the README shows.

    Args:
        name: The figure (selects what part of the output is kept).
        command: The shell command written in the README.
    """
    env = dict(os.environ, PATH=osp.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
    proc = subprocess.run(['bash', '-c', command.replace('\\\n', ' ')], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'figure {name}: `{command}` exited {proc.returncode}:\n'
                           f'{proc.stdout[-3000:]}')
    keep, _ = FIGURES[name]
    return '\n'.join(keep(proc.stdout.rstrip('\n').splitlines()))


def main(argv: Optional[List[str]] = None) -> int:
    """Check or update the figures; return the exit status.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    with open(README) as f:
        text = f.read()
    found = figures(text)
    names = args.names or [n for n, (_, quick) in FIGURES.items() if quick]
    unknown = [n for n in names if n not in FIGURES or n not in found]
    if unknown:
        print(f'no such figure in README.md: {unknown}; figures: {sorted(found)}')
        return 1
    stale = []
    for name in names:
        match = found[name]
        new = run_figure(name, match.group('cmd'))
        if new != match.group('out'):
            stale.append(name)
            text = text.replace(match.group(0), match.group(1) + new + match.group(5))
        print(f'{name}: {"changed" if name in stale else "up to date"}')
    if args.update and stale:
        with open(README, 'w') as f:
            f.write(text)
        print(f'README.md updated: {stale}')
    return 1 if stale and not args.update else 0


if __name__ == '__main__':
    sys.exit(main())
