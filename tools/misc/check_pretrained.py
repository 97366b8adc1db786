"""List the pretrained backbones the shipped configs read and check the ones present.

For each expected file: found or missing in the folder the configs read
(``$MONA_MM_PRETRAINED``, default ``data/pretrained``), its SHA-256 when found, and whether
that digest matches the prefix its release records (OpenMMLab model-zoo files). Exits 1 when a
file named with ``--require`` is missing or a digest does not match.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import mona_mm  # noqa: F401
from mona_mm.utils.pretrained import (ENV_VAR, PRETRAINED, pretrained_dir, sha256_matches,
                                      sha256_of)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='List the pretrained backbones the shipped configs read, with their '
        'sources, and check the SHA-256 of those present.')
    parser.add_argument(
        '--dir', default=None,
        help=f'Folder to look in (default: ${ENV_VAR}, else data/pretrained, as the configs).')
    parser.add_argument(
        '--require', nargs='*', default=[],
        help='File names that must be present: exit 1 when one is missing (e.g. the file '
        'the config you are about to train reads).')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Print one block per expected file; return the exit status.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    folder = args.dir or pretrained_dir()
    unknown = sorted(set(args.require) - set(PRETRAINED))
    if unknown:
        print(f'not a file the shipped configs read: {unknown}; known: {sorted(PRETRAINED)}')
        return 1
    status = 0
    print(f'pretrained folder: {folder}')
    for name, entry in PRETRAINED.items():
        path = osp.join(folder, name)
        if osp.isfile(path):
            digest = sha256_of(path)
            ok = sha256_matches(path, digest)
            state = {None: 'found (no digest recorded for it)', True: 'found, sha256 matches '
                     f'its release ({entry["sha256_prefix"]}...)',
                     False: f'found, sha256 MISMATCH (its release: {entry["sha256_prefix"]}...)'}
            line = f'{state[ok]}\n  sha256  {digest}'
            status |= ok is False
        else:
            line = 'MISSING'
            status |= name in args.require
        print(f'{name}: {line}\n  model   {entry["model"]} (read by {entry["configs"]})\n'
              f'  source  {entry["source"]}')
    return int(status)


if __name__ == '__main__':
    sys.exit(main())
