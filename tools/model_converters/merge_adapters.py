"""Merge an adapter-only checkpoint with its pretrained backbone into a plain full checkpoint.

Usage: python tools/model_converters/merge_adapters.py CONFIG ADAPTER_CKPT OUT
           [--base-checkpoint PRETRAINED [--force-base]]

The base is the one the adapter checkpoint records (path and digest), not the config's
``init_cfg``; a file at that path, or a ``--base-checkpoint``, whose digest differs from the
recorded one is refused unless ``--force-base``.
"""
import argparse

from mmengine.config import Config

import mona_mm  # noqa: F401
from mona_mm.utils import (HASH_KEY, build_model_from_cfg, load_adapter_checkpoint,
                           save_checkpoint_file)


def main() -> None:
    parser = argparse.ArgumentParser(
        description='Merge an adapter-only checkpoint with its pretrained backbone into a plain '
        'full checkpoint.')
    parser.add_argument('config', help='The config the adapters were trained with.')
    parser.add_argument('adapter_checkpoint',
                        help='The adapter-only checkpoint (saved by a run with '
                        'mona_mm.AdapterCheckpointHook, or by export_adapters.py).')
    parser.add_argument('out', help='The full checkpoint file to write.')
    parser.add_argument('--base-checkpoint',
                        help='Pretrained backbone checkpoint to start from instead of the one '
                        'the adapter checkpoint records (e.g. the same file moved); it must '
                        'have the recorded digest. Default: the recorded one (for files that '
                        'record none, the config\'s model.backbone.init_cfg).')
    parser.add_argument('--force-base', action='store_true',
                        help='Merge onto a base whose digest differs from the recorded one '
                        '(the result is then not the trained model).')
    args = parser.parse_args()
    cfg = Config.fromfile(args.config)
    model = build_model_from_cfg(cfg)
    ckpt = load_adapter_checkpoint(model, args.adapter_checkpoint, args.base_checkpoint,
                                   force_base=args.force_base)
    # every meta field but the adapter-only marker travels (dataset_meta...)
    meta = {k: v for k, v in ckpt.get('meta', {}).items() if k not in ('mona_mm', HASH_KEY)}
    save_checkpoint_file(dict(meta=meta, state_dict=model.state_dict()), args.out)
    base = getattr(model.backbone, 'peft_base', None) or {}
    print(f'wrote full checkpoint {args.out} ({len(model.state_dict())} tensors; base: '
          f'{base.get("checkpoint")}, sha256 {(base.get("sha256") or "none")[:16]})')


if __name__ == '__main__':
    main()
