"""Print trainable backbone parameters of PEFT backbones for given archs and methods.

Example: python tools/analysis_tools/count_trainable.py --arch swin-base swin-large vit-base \
             --peft mona lora norm-tuning

A method is named by its slug (the name of its config folder: ``norm-tuning``, ``partial-1``...)
or its registered type (``NormTuning``, ``Partial``); the table prints the slug.

An arch is ``<family>-<arch>``: ``swin-{tiny,small,base,large}``, ``swinv2-<arch>``
(mmpretrain's Swin V2 archs), ``vit-<mmpretrain ViT arch>`` (``vit-base`` is ViT-B/16,
``vit-dinov2-base``...), ``convnext-<arch>``, ``resnet-<depth>`` (``resnet-50``),
``mit-b<0..5>`` (SegFormer's, mmseg's configs), ``pvtv2-b<0..5>`` (mmdet's configs) and
``sam-<arch>`` (mmpretrain's ``ViTSAM``: ``sam-base`` is SAM ViT-B's encoder), ``eva02-<arch>``,
``beit-<arch>`` and ``hivit-<arch>`` (mmpretrain's); a bare Swin arch (``base``) means
``swin-base``.
"""
import argparse

import torch

import mona_mm  # noqa: F401
from mona_mm.models import (SWIN_ARCHS, PEFTBackbone, PEFTSwinTransformer,
                            PEFTSwinTransformerV2, PEFTVisionTransformer, iter_adapters)
from mona_mm.models.peft.names import method_slug, peft_config
from mona_mm.utils import count_trainable


#: Depths of SegFormer's MiT and of PVTv2 b0..b5 (their configs in mmseg and mmdet); b0 has
#: 32 channels, the others 64; heads (1, 2, 5, 8).
B_DEPTHS = dict(b0=[2, 2, 2, 2], b1=[2, 2, 2, 2], b2=[3, 4, 6, 3], b3=[3, 4, 18, 3],
                b4=[3, 8, 27, 3], b5=[3, 6, 40, 3])


def _mit_like(name: str) -> dict:
    if name not in B_DEPTHS:
        raise SystemExit(f'unknown MiT/PVTv2 arch {name!r}: b0..b5')
    return dict(embed_dims=32 if name == 'b0' else 64, num_layers=B_DEPTHS[name],
                num_heads=[1, 2, 5, 8])


def build(arch: str, peft: str) -> torch.nn.Module:
    """The PEFT backbone for ``arch`` (see the module docstring) and method ``peft``.

    Args:
        arch: ``<family>-<arch>``, e.g. ``swin-base``.
        peft: A method slug or registered type, e.g. ``norm-tuning`` or ``NormTuning``.
    """
    family, _, name = arch.partition('-')
    if not name and family in SWIN_ARCHS:
        family, name = 'swin', family
    cfg = peft_config(peft)
    if family == 'swin':
        return PEFTSwinTransformer(arch=name, peft=cfg)
    if family == 'swinv2':
        return PEFTSwinTransformerV2(arch=name, peft=cfg)
    if family == 'vit':
        return PEFTVisionTransformer(arch=name, peft=cfg, codebase='mmpretrain')
    if family == 'convnext':
        return PEFTBackbone(dict(type='mmpretrain.ConvNeXt', arch=name), peft=cfg)
    if family == 'mit':
        return PEFTBackbone(dict(type='mmseg.MixVisionTransformer', **_mit_like(name)),
                            peft=cfg)
    if family == 'pvtv2':
        return PEFTBackbone(dict(type='mmdet.PyramidVisionTransformerV2', **_mit_like(name),
                                 mlp_ratios=(8, 8, 4, 4)), peft=cfg)
    if family == 'eva02':
        return PEFTBackbone(dict(type='mmpretrain.ViTEVA02', arch=name), peft=cfg)
    if family == 'beit':
        return PEFTBackbone(dict(type='mmpretrain.BEiTViT', arch=name), peft=cfg)
    if family == 'sam':
        return PEFTBackbone(dict(type='mmpretrain.ViTSAM', arch=name), peft=cfg)
    if family == 'hivit':
        return PEFTBackbone(dict(type='mmpretrain.HiViT', arch=name), peft=cfg)
    if family == 'resnet' and name.isdigit():
        return PEFTBackbone(dict(type='mmpretrain.ResNet', depth=int(name)), peft=cfg)
    raise SystemExit(f'unknown arch {arch!r}: use swin-<arch>, swinv2-<arch>, vit-<arch>, '
                     'convnext-<arch>, resnet-<depth>, mit-b<i>, pvtv2-b<i>, sam-<arch>, '
                     'eva02-<arch>, beit-<arch> or hivit-<arch>')


def _method(name: str) -> str:
    try:
        return method_slug(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def main() -> None:
    parser = argparse.ArgumentParser(
        description='Print the trainable backbone parameters of PEFT backbones for the given '
        'archs and methods, as a markdown table.')
    parser.add_argument('--arch', nargs='+', default=['swin-base', 'swin-large', 'vit-base'],
                        help='Backbones: swin-<arch>, swinv2-<arch>, vit-<mmpretrain ViT arch>, '
                        'convnext-<arch>, resnet-<depth>, mit-b<i>, pvtv2-b<i>, sam-<arch>, '
                        'eva02-<arch>, beit-<arch> or hivit-<arch>, e.g. swin-base '
                        'vit-dinov2-base resnet-50 mit-b2; a bare Swin arch means swin-<arch> '
                        '(default: swin-base swin-large vit-base).')
    parser.add_argument('--peft', nargs='+', type=_method, default=['mona'], metavar='METHOD',
                        help='PEFT methods, each by its slug (full, fixed, bitfit, '
                        'norm-tuning, partial-1, adapter, lora, adaptformer, lorand, mona) or '
                        'its registered type, e.g. NormTuning (default: mona).')
    args = parser.parse_args()
    width = max(8, *(len(p) for p in args.peft))
    print(f"| {'arch':12s} | {'method':{width}s} | {'adapters':>8s} | {'trainable':>12s} | "
          f"{'backbone':>12s} | {'%':>6s} |")
    print('|' + '|'.join('-' * w for w in (14, width + 2, 10, 14, 14, 8)) + '|')
    for arch in args.arch:
        for peft in args.peft:
            bb = build(arch, peft)
            c = count_trainable(bb)
            n_ad = len(list(iter_adapters(bb)))
            pct = 100.0 * c['backbone_trainable'] / c['backbone_total']
            print(f"| {arch:12s} | {peft:{width}s} | {n_ad:8d} | {c['backbone_trainable']:12,d} | "
                  f"{c['backbone_total']:12,d} | {pct:6.2f} |")


if __name__ == '__main__':
    main()
