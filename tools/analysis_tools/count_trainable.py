"""Print trainable backbone parameters of PEFT backbones for given archs and methods.

Example: python tools/analysis_tools/count_trainable.py --arch swin-base swin-large vit-base --peft Mona

An arch is ``<family>-<arch>``: ``swin-{tiny,small,base,large}``, ``vit-<mmpretrain ViT
arch>`` (``vit-base`` is ViT-B/16, ``vit-dinov2-base``...), ``convnext-<arch>``; a bare Swin
arch (``base``) means ``swin-base``.
"""
import argparse

import mona_mm  # noqa: F401
from mona_mm.models import (SWIN_ARCHS, PEFTBackbone, PEFTSwinTransformer,
                            PEFTVisionTransformer, iter_adapters)
from mona_mm.utils import count_trainable


def build(arch: str, peft: str):
    """The PEFT backbone for ``arch`` (see the module docstring) and method ``peft``."""
    family, _, name = arch.partition('-')
    if not name and family in SWIN_ARCHS:
        family, name = 'swin', family
    cfg = dict(type=peft)
    if family == 'swin':
        return PEFTSwinTransformer(arch=name, peft=cfg)
    if family == 'vit':
        return PEFTVisionTransformer(arch=name, peft=cfg, codebase='mmpretrain')
    if family == 'convnext':
        return PEFTBackbone(dict(type='mmpretrain.ConvNeXt', arch=name), peft=cfg)
    raise SystemExit(f'unknown arch {arch!r}: use swin-<arch>, vit-<arch> or convnext-<arch>')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', nargs='+', default=['swin-base', 'swin-large', 'vit-base'],
                        help='backbones: swin-<arch>, vit-<arch>, convnext-<arch>')
    parser.add_argument('--peft', nargs='+', default=['Mona'],
                        help='PEFT method types (registered in mona_mm PEFT_METHODS)')
    args = parser.parse_args()
    print(f"| {'arch':12s} | {'method':8s} | {'adapters':>8s} | {'trainable':>12s} | "
          f"{'backbone':>12s} | {'%':>6s} |")
    print('|' + '|'.join('-' * w for w in (14, 10, 10, 14, 14, 8)) + '|')
    for arch in args.arch:
        for peft in args.peft:
            bb = build(arch, peft)
            c = count_trainable(bb)
            n_ad = len(list(iter_adapters(bb)))
            pct = 100.0 * c['backbone_trainable'] / c['backbone_total']
            print(f"| {arch:12s} | {peft:8s} | {n_ad:8d} | {c['backbone_trainable']:12,d} | "
                  f"{c['backbone_total']:12,d} | {pct:6.2f} |")


if __name__ == '__main__':
    main()
