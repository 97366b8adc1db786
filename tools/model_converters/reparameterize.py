"""Write the re-parameterised (deploy) form of a checkpoint: Mona's convs and identities
folded into one depthwise conv, LoRA merged into qkv, adapters MiMi emptied stay as their bias.

Usage: python tools/model_converters/reparameterize.py CONFIG CKPT OUT
``tools/test.py CONFIG OUT`` then builds the deploy form before loading.
"""
import argparse

from mmengine.config import Config
from mmengine.runner import load_checkpoint

import mona_mm  # noqa: F401
from mona_mm.models import DEPLOY_META_KEY, reparameterize
from mona_mm.pruning import STRUCTURE_META_KEY, apply_checkpoint_structure, get_structure
from mona_mm.utils import HASH_KEY, build_model_from_cfg, save_checkpoint_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out')
    args = parser.parse_args()
    cfg = Config.fromfile(args.config)
    model = build_model_from_cfg(cfg, pretrained=False).eval()
    apply_checkpoint_structure(model, args.checkpoint)
    source = load_checkpoint(model, args.checkpoint, map_location='cpu', strict=False)
    structure = get_structure(model)
    done = reparameterize(model)
    # every meta field travels (dataset_meta: class names for the inferencers)
    meta = {k: v for k, v in (source.get('meta') or {}).items() if k != HASH_KEY}
    meta[DEPLOY_META_KEY] = True
    meta[STRUCTURE_META_KEY] = dict(meta.get(STRUCTURE_META_KEY) or {}, structure=structure)
    save_checkpoint_file(dict(meta=meta, state_dict=model.state_dict()), args.out)
    print(f'wrote {args.out}: folded {done["mona"]} Mona, merged {done["lora"]} LoRA')


if __name__ == '__main__':
    main()
