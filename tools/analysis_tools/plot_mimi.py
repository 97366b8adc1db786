"""Plot kept/removed adapter neurons of a checkpoint (MiMi paper Fig. 5 style).

Usage: python tools/analysis_tools/plot_mimi.py CONFIG CKPT OUT.png
The initial widths come from the checkpoint's MiMi record, else from the config.
"""
import argparse

from mmengine.config import Config

import mona_mm  # noqa: F401
from mona_mm.pruning import STRUCTURE_META_KEY, get_structure
from mona_mm.pruning.plot import plot_structure
from mona_mm.utils import build_model_from_cfg, load_checkpoint_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out')
    args = parser.parse_args()
    record = (load_checkpoint_file(args.checkpoint).get('meta') or {}).get(
        STRUCTURE_META_KEY)
    if not record:
        raise SystemExit(f'{args.checkpoint} carries no adapter structure (not MiMi-pruned)')
    initial = record.get('initial_structure')
    if not initial:
        cfg = Config.fromfile(args.config)
        initial = get_structure(build_model_from_cfg(cfg, pretrained=False))
    plot_structure(record['structure'], initial, args.out)
    kept, total = sum(record['structure'].values()), sum(initial.values())
    print(f'wrote {args.out}: {kept}/{total} neurons kept')


if __name__ == '__main__':
    main()
