"""Export the trained part of a (MiMi-pruned or not) checkpoint as a compact adapter-only
checkpoint that records its adapter structure and the pretrained backbone it applies to.

Usage: python tools/model_converters/export_adapters.py CONFIG CKPT OUT
           [--base-checkpoint PRETRAINED [--force-base]]

The base recorded is the one the checkpoint was trained on, as its backbone record names it
(path and digest), not the config's ``init_cfg`` (which may have been overridden for the run);
only a checkpoint that records none falls back to the config. The base file is read and
checked: its digest must be the recorded one and its tensors the checkpoint's frozen backbone
tensors, else the export is refused (``--force-base`` records it anyway).

Load the result for inference with ``tools/test.py CONFIG OUT``.
"""
import argparse
import os.path as osp

from mmengine.config import Config
from mmengine.runner import load_checkpoint

import mona_mm  # noqa: F401
from mona_mm.pruning import adapter_param_total, apply_checkpoint_structure
from mona_mm.utils import (HASH_KEY, build_model_from_cfg, checkpoint_must_fit,
                           make_adapter_checkpoint, save_checkpoint_file)
from mona_mm.utils.adapter_checkpoint import base_of


def main() -> None:
    parser = argparse.ArgumentParser(
        description='Export the trained part of a (MiMi-pruned or not) checkpoint as a compact '
        'adapter-only checkpoint that records its adapter structure and the pretrained '
        'backbone it applies to.')
    parser.add_argument('config', help='The config the checkpoint was trained with.')
    parser.add_argument('checkpoint',
                        help='The full checkpoint to export from (MiMi-pruned or not).')
    parser.add_argument('out', help='The adapter-only checkpoint file to write.')
    parser.add_argument('--base-checkpoint',
                        help='Pretrained backbone checkpoint to record in the file (default: '
                        'the one the checkpoint records it was trained on; for a checkpoint '
                        'that records none, the config\'s model.backbone.init_cfg). Refused '
                        'if it is not the backbone the checkpoint was trained on.')
    parser.add_argument('--force-base', action='store_true',
                        help='Record --base-checkpoint even if its digest or tensors differ '
                        'from the backbone the checkpoint was trained on (the adapter-only '
                        'file then does not reproduce the model).')
    args = parser.parse_args()
    cfg = Config.fromfile(args.config)
    # the backbone weights come from the checkpoint, and so does the base it records
    model = build_model_from_cfg(cfg, pretrained=False)
    apply_checkpoint_structure(model, args.checkpoint)
    with checkpoint_must_fit(model, args.checkpoint):  # never export untrained adapters
        source = load_checkpoint(model, args.checkpoint, map_location='cpu', strict=False)
    base, prefix = args.base_checkpoint, None
    if not base and base_of(model) is None:  # a checkpoint that records no base
        init_cfg = cfg.model.backbone.get('init_cfg') or {}
        base, prefix = init_cfg.get('checkpoint'), init_cfg.get('prefix')
        if not base:
            raise SystemExit(f'{args.checkpoint} records no pretrained backbone and the config '
                             'names none (model.backbone.init_cfg): pass --base-checkpoint '
                             'PRETRAINED')
        print(f'{args.checkpoint} records no pretrained backbone: checking the config\'s '
              f'{base}')
    # every meta field travels (dataset_meta: class names for the inferencers)
    meta = {k: v for k, v in (source.get('meta') or {}).items() if k != HASH_KEY}
    ckpt = make_adapter_checkpoint(model, meta=meta, base_checkpoint=base, base_prefix=prefix,
                                   force_base=args.force_base)
    save_checkpoint_file(ckpt, args.out)  # atomic, with a content hash
    info = ckpt['meta']['mona_mm']
    print(f'wrote {args.out}: {len(ckpt["state_dict"])} tensors, '
          f'{adapter_param_total(model):,} adapter params, '
          f'{osp.getsize(args.out) / 2**20:.2f} MB (base: {info["base_checkpoint"]}, '
          f'sha256 {(info["base_sha256"] or "none")[:16]})')


if __name__ == '__main__':
    main()
