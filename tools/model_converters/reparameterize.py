"""Write the re-parameterised (deploy) form of a checkpoint: Mona's convs and identities
folded into one depthwise conv, LoRA merged into qkv, adapters MiMi emptied stay as their bias.

Usage: python tools/model_converters/reparameterize.py CONFIG CKPT OUT [--base-checkpoint B]

CKPT may be a full, adapter-only or MiMi-pruned checkpoint; OUT holds the whole model. It
loads as it is into ``tools/test.py CONFIG OUT``, ``tools/infer.py IMAGES CONFIG OUT`` and the
upstream inferencers (``DetInferencer(model=CONFIG, weights=OUT)``,
``MMSegInferencer(model=CONFIG, weights=OUT)``,
``ImageClassificationInferencer(model=CONFIG, pretrained=OUT)``; mmdet's and mmseg's also with
no config, from the one OUT carries).
"""
import argparse

import mona_mm  # noqa: F401
from mona_mm.apis import init_model
from mona_mm.models import DEPLOY_META_KEY, reparameterize
from mona_mm.pruning import STRUCTURE_META_KEY, get_structure
from mona_mm.utils import HASH_KEY, load_checkpoint_file, save_checkpoint_file
from mona_mm.utils.adapter_checkpoint import FORMAT as ADAPTER_FORMAT


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write the re-parameterised (deploy) form of a full, adapter-only or '
        'MiMi-pruned checkpoint, which loads without any other file.')
    parser.add_argument('config', help='Config file the checkpoint was trained with.')
    parser.add_argument('checkpoint',
                        help='Checkpoint to convert: full, adapter-only or MiMi-pruned.')
    parser.add_argument('out', help='File to write the re-parameterised checkpoint to.')
    parser.add_argument('--base-checkpoint', metavar='PRETRAINED',
                        help='Pretrained backbone for an adapter-only checkpoint; by default '
                        'the one the checkpoint records, else the backbone init_cfg of the '
                        'config. It must have the digest the checkpoint records for its base '
                        '(the same weights; refused otherwise).')
    parser.add_argument('--force-base', action='store_true',
                        help='Compose an adapter-only checkpoint with --base-checkpoint even '
                        'when its tensors differ from the base the checkpoint records (the '
                        'model is then not the trained one).')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # any kind of checkpoint, in the model it was saved from (pruned widths, base backbone)
    model = init_model(args.config, args.checkpoint, base_checkpoint=args.base_checkpoint,
                       force_base=args.force_base)
    structure = get_structure(model)
    done = reparameterize(model)
    # every meta field travels (dataset_meta: class names for the inferencers), but the
    # output holds the whole model: no adapter-only marker, no stale content hash
    source = load_checkpoint_file(args.checkpoint).get('meta') or {}
    meta = {k: v for k, v in source.items() if k != HASH_KEY}
    if (meta.get('mona_mm') or {}).get('format') == ADAPTER_FORMAT:
        del meta['mona_mm']
    # what the inferencers read: the config (mmdet's and mmseg's build the model from it
    # when given no config) and the class names
    if 'cfg' not in meta:
        meta['cfg'] = model.cfg.pretty_text
    if model.dataset_meta and model.dataset_meta.get('classes'):
        meta.setdefault('dataset_meta', model.dataset_meta)
    meta[DEPLOY_META_KEY] = True
    meta[STRUCTURE_META_KEY] = dict(meta.get(STRUCTURE_META_KEY) or {}, structure=structure)
    save_checkpoint_file(dict(meta=meta, state_dict=model.state_dict()), args.out)
    print(f'wrote {args.out}: folded {done["mona"]} Mona, merged {done["lora"]} LoRA '
          f'({model.checkpoint_kind} checkpoint {args.checkpoint})')


if __name__ == '__main__':
    main()
