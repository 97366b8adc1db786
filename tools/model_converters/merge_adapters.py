"""Merge an adapter-only checkpoint with its pretrained backbone into a plain full checkpoint.

Usage: python tools/model_converters/merge_adapters.py CONFIG ADAPTER_CKPT OUT
           [--base-checkpoint PRETRAINED]
"""
import argparse

from mmengine.config import Config

import mona_mm  # noqa: F401
from mona_mm.utils import (HASH_KEY, build_model_from_cfg, load_adapter_checkpoint,
                           save_checkpoint_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('adapter_checkpoint')
    parser.add_argument('out')
    parser.add_argument('--base-checkpoint')
    args = parser.parse_args()
    cfg = Config.fromfile(args.config)
    model = build_model_from_cfg(cfg)
    ckpt = load_adapter_checkpoint(model, args.adapter_checkpoint, args.base_checkpoint)
    # every meta field but the adapter-only marker travels (dataset_meta...)
    meta = {k: v for k, v in ckpt.get('meta', {}).items() if k not in ('mona_mm', HASH_KEY)}
    save_checkpoint_file(dict(meta=meta, state_dict=model.state_dict()), args.out)
    print(f'wrote full checkpoint {args.out} ({len(model.state_dict())} tensors)')


if __name__ == '__main__':
    main()
