"""Give a checkpoint you trust mona_mm's content hash (or drop the config text it carries).

mona_mm refuses a file it wrote whose content no longer matches its hash (edited, corrupted,
hash deleted) and one whose hash is of an older format. When you know the file is what you
want — you edited its class names yourself, or it comes from an older mona_mm — this re-saves
it with a fresh hash. It still loads the file ``weights_only`` (no pickled code) and still
refuses config text that is not plain data, unless ``--drop-config`` removes that text.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import mona_mm  # noqa: F401
from mona_mm.utils.checkpoint_io import (HASH_KEY, CheckpointError, safe_torch_load,
                                         save_checkpoint_file)
from mona_mm.utils.config_text import CONFIG_TEXT_KEYS


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Re-save a checkpoint you trust with a fresh mona_mm content hash, '
        'optionally without the config text it carries.')
    parser.add_argument('checkpoint', help='The checkpoint file.')
    parser.add_argument('--out', default=None,
                        help='Where to write (default: replace the file, atomically).')
    parser.add_argument(
        '--drop-config', action='store_true',
        help='Remove the config text (meta.cfg, meta.config, message_hub.runtime_info.cfg) '
        'instead of checking it; pass the config file when you use the checkpoint.')
    return parser.parse_args(argv)


def drop_config_text(ckpt: dict) -> List[str]:
    """Remove every config text of a checkpoint dict; return the key paths removed.

    Args:
        ckpt: A checkpoint dict.
    """
    removed = []
    for path in CONFIG_TEXT_KEYS:
        parent = ckpt
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent:
            del parent[path[-1]]
            removed.append('.'.join(path))
    return removed


def main(argv: Optional[List[str]] = None) -> int:
    """Re-stamp one checkpoint; return the exit status.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    out = args.out or args.checkpoint
    try:
        if args.drop_config:
            # the config text is removed before anything reads it, so load it raw
            import torch
            from mona_mm.utils.checkpoint_io import _looks_like_torch_file, validate_arrays
            from mona_mm.utils.checkpoint_safety import register_mmengine_safe_globals
            register_mmengine_safe_globals()
            if not osp.isfile(args.checkpoint) or not _looks_like_torch_file(args.checkpoint):
                raise CheckpointError(f'{args.checkpoint} is not a torch checkpoint')
            ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=True)
            validate_arrays(ckpt, args.checkpoint)
            removed = drop_config_text(ckpt) if isinstance(ckpt, dict) else []
            print(f'removed config text: {", ".join(removed) or "none"}')
        else:
            ckpt = safe_torch_load(args.checkpoint, verify=False)
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    if not isinstance(ckpt, dict):
        print(f'error: {args.checkpoint} holds a {type(ckpt).__name__}, not a checkpoint dict',
              file=sys.stderr)
        return 1
    if 'state_dict' not in ckpt and 'meta' not in ckpt:
        ckpt = dict(state_dict=ckpt)  # a bare state dict becomes a checkpoint with meta
    old = (ckpt.get('meta') or {}).get(HASH_KEY)
    digest = save_checkpoint_file(ckpt, out)
    print(f'{out}: content hash {digest} (was {old or "none"})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
