"""Write the re-parameterised (deploy) form of a checkpoint: Mona's convs and identities
folded into one depthwise conv, LoRA merged into qkv, vanished adapters dropped.

Usage: python tools/model_converters/reparameterize.py CONFIG CKPT OUT
``tools/test.py CONFIG OUT`` then builds the deploy form before loading.
"""
import argparse
import os

import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

import mona_mm  # noqa: F401
from mona_mm.models import DEPLOY_META_KEY, reparameterize
from mona_mm.pruning import STRUCTURE_META_KEY, apply_checkpoint_structure, get_structure
from mona_mm.utils import build_model_from_cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out')
    args = parser.parse_args()
    cfg = Config.fromfile(args.config)
    model = build_model_from_cfg(cfg, pretrained=False).eval()
    apply_checkpoint_structure(model, args.checkpoint)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=False)
    structure = get_structure(model)
    done = reparameterize(model)
    meta = {DEPLOY_META_KEY: True, STRUCTURE_META_KEY: dict(structure=structure)}
    tmp = args.out + '.tmp'
    torch.save(dict(meta=meta, state_dict=model.state_dict()), tmp)
    os.replace(tmp, args.out)
    print(f'wrote {args.out}: folded {done["mona"]} Mona, merged {done["lora"]} LoRA')


if __name__ == '__main__':
    main()
