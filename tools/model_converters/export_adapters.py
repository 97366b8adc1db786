"""Export the trained part of a (MiMi-pruned or not) checkpoint as a compact adapter-only
checkpoint that records its adapter structure and the pretrained backbone it applies to.

Usage: python tools/model_converters/export_adapters.py CONFIG CKPT OUT
           [--base-checkpoint PRETRAINED]

Load it for inference with ``tools/test.py CONFIG OUT`` (the pretrained backbone comes from
the recorded path, ``--base-checkpoint``, or the config's ``init_cfg``).
"""
import argparse
import os.path as osp

from mmengine.config import Config
from mmengine.runner import load_checkpoint

import mona_mm  # noqa: F401
from mona_mm.pruning import adapter_param_total, apply_checkpoint_structure
from mona_mm.utils import (HASH_KEY, build_model_from_cfg, make_adapter_checkpoint,
                           save_checkpoint_file)


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
                        'the one of the config\'s model.backbone.init_cfg).')
    args = parser.parse_args()
    cfg = Config.fromfile(args.config)
    base = args.base_checkpoint or cfg.model.backbone.get('init_cfg', {}).get('checkpoint')
    # the backbone weights come from the checkpoint
    model = build_model_from_cfg(cfg, pretrained=False)
    apply_checkpoint_structure(model, args.checkpoint)
    source = load_checkpoint(model, args.checkpoint, map_location='cpu', strict=False)
    # every meta field travels (dataset_meta: class names for the inferencers)
    meta = {k: v for k, v in (source.get('meta') or {}).items() if k != HASH_KEY}
    ckpt = make_adapter_checkpoint(model, meta=meta, base_checkpoint=base)
    save_checkpoint_file(ckpt, args.out)  # atomic, with a content hash
    print(f'wrote {args.out}: {len(ckpt["state_dict"])} tensors, '
          f'{adapter_param_total(model):,} adapter params, '
          f'{osp.getsize(args.out) / 2**20:.2f} MB (base: {base})')


if __name__ == '__main__':
    main()
