"""Plot kept/removed adapter neurons of a checkpoint (MiMi paper Fig. 5 style).

Usage: python tools/analysis_tools/plot_mimi.py CONFIG CKPT OUT.png

CKPT may be a full checkpoint, its adapter-only export or its re-parameterised form: all
three plot alike. The widths come from the checkpoint's MiMi record; a checkpoint without one
was not pruned and holds the config's widths, all kept.
"""
import argparse

from mmengine.config import Config

import mona_mm  # noqa: F401
from mona_mm.pruning import get_structure
from mona_mm.pruning.plot import checkpoint_widths, plot_structure
from mona_mm.utils import build_model_from_cfg, load_checkpoint_file


def main() -> None:
    parser = argparse.ArgumentParser(
        description='Plot the kept and removed hidden neurons of every adapter of a '
        '(MiMi-pruned or not) checkpoint, in the style of the MiMi paper\'s Fig. 5.')
    parser.add_argument('config', help='The config the checkpoint was trained with.')
    parser.add_argument('checkpoint', help='A full, adapter-only (export_adapters.py) or '
                        're-parameterised (reparameterize.py) checkpoint.')
    parser.add_argument('out', help='The PNG file to write.')
    args = parser.parse_args()

    def config_widths() -> dict:
        cfg = Config.fromfile(args.config)
        return get_structure(build_model_from_cfg(cfg, pretrained=False))

    structure, initial = checkpoint_widths(load_checkpoint_file(args.checkpoint),
                                           config_widths)
    if not initial:
        raise SystemExit(f'{args.config} builds a model without adapters: nothing to plot')
    plot_structure(structure, initial, args.out)
    kept, total = sum(structure.get(n, 0) for n in initial), sum(initial.values())
    print(f'wrote {args.out}: {kept}/{total} neurons kept' +
          (' (not pruned)' if structure == initial else ''))


if __name__ == '__main__':
    main()
