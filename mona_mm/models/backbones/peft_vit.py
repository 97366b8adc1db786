"""``mona_mm.PEFTVisionTransformer``: the ViT of the codebase a config is written for
(mmpretrain's or mmseg's), with PEFT adapters (Mona by default)."""
from typing import Optional, Sequence

import torch.nn as nn

from mona_mm.registry import MODELS
from .codebase import import_class, resolve_codebase
from .injection import peft_backbone_class
from .peft_swin import is_int, upstream_arguments

VIT_CLASSES = {
    'mmpretrain': 'mmpretrain.models.backbones.vision_transformer.VisionTransformer',
    'mmseg': 'mmseg.models.backbones.vit.VisionTransformer',
}


def _check_vit_args(codebase: str, cls: type, args: tuple, kwargs: dict) -> dict:
    """Raise a ValueError naming the argument for layer indices the upstream ViT of
    ``codebase`` would take with a silently missing output, and for head counts that fail
    only at the first forward; return ``kwargs``, with a tuple of
    ``out_indices`` holding negative indices given to mmpretrain as a list (which it
    resolves in place: a tuple fails there with a TypeError).
    Whatever it already rejects clearly (unknown arch, arch dict keys) is left to it."""
    bound = upstream_arguments(cls, args, {k: v for k, v in kwargs.items()
                                           if k not in ('peft', 'recompute')})
    if bound is None:
        return kwargs
    who = f'PEFTVisionTransformer ({codebase})'
    if codebase == 'mmpretrain':
        arch = bound['arch']
        if isinstance(arch, str):
            arch = cls.arch_zoo.get(arch.lower())
        if not isinstance(arch, dict) or not {'embed_dims', 'num_layers', 'num_heads',
                                              'feedforward_channels'} <= set(arch):
            return kwargs  # mmpretrain asserts with a clear message
        layers, dims, heads = arch['num_layers'], arch['embed_dims'], arch['num_heads']
    else:
        layers, dims, heads = bound['num_layers'], bound['embed_dims'], bound['num_heads']
    if not is_int(layers) or layers < 1:
        raise ValueError(f'{who}: num_layers must be a positive int (got {layers!r})')
    if codebase == 'mmpretrain' and not bound['layer_cfgs'] and is_int(dims) and \
            is_int(heads) and heads > 0 and dims % heads:
        raise ValueError(f'{who}: num_heads={heads} must divide embed_dims={dims}')
    out_indices = bound['out_indices']
    # only what upstream takes silently (an output that never comes) is ours to refuse; what
    # it refuses itself (wrong types, indices past the end) keeps upstream's exception
    if codebase == 'mmpretrain':
        # it accepts index == num_layers (negative ones count from the end) and never outputs
        # it, and an empty sequence (no outputs)
        indices = [out_indices] if is_int(out_indices) else out_indices
        if isinstance(indices, Sequence) and not isinstance(indices, str) and \
                (not indices or any(is_int(i) and i == layers for i in indices)):
            raise ValueError(f'{who}: out_indices must be a layer index or a non-empty '
                             f'sequence of them, each in [{-layers}, {layers}) for '
                             f'{layers} layers (got {out_indices!r})')
        if isinstance(out_indices, tuple) and any(is_int(i) and i < 0 for i in out_indices):
            kwargs = dict(kwargs, out_indices=list(out_indices))
    else:
        # mmseg takes the int -1 as the last layer, and no other negative index: any index
        # that is not a layer's is accepted and never output
        if is_int(out_indices):
            ok = out_indices == -1 or 0 <= out_indices < layers
        elif isinstance(out_indices, (list, tuple)):
            ok = (len(out_indices) > 0 or bool(bound['out_origin'])) and \
                all(isinstance(i, (int, float)) and i in range(layers) for i in out_indices)
        else:
            ok = True  # upstream raises its TypeError
        if not ok:
            raise ValueError(f'{who}: out_indices must be -1 (the last layer), a layer index '
                             f'in [0, {layers}) or a non-empty list of them (no negative '
                             f'indices in a list) (got {out_indices!r})')
    frozen = bound.get('frozen_stages', -1)  # mmseg's ViT has frozen_exclude instead
    if not is_int(frozen) or not -1 <= frozen <= layers:
        raise ValueError(f'{who}: frozen_stages must be an int from -1 (nothing frozen) to '
                         f'{layers} (all layers frozen) (got {frozen!r})')
    return kwargs


def PEFTVisionTransformer(*args, codebase: Optional[str] = None, **kwargs) -> nn.Module:
    """The upstream Vision Transformer of ``codebase`` with PEFT adapters.

    mmseg's ViT in the ``mmseg`` scope, mmpretrain's everywhere else (its archs cover ViT,
    DeiT, DINOv2, CLIP and EVA; mmdet has no ViT backbone of its own). Two Monas per block,
    after each residual; the patch tokens go through Mona's depthwise convs on their grid and
    every extra token (cls, register) alone, as a 1x1 map.

    Args:
        *args: Positional arguments of the upstream ViT.
        codebase: ``'mmpretrain'`` or ``'mmseg'``; None: from the scope.
        **kwargs: The upstream ViT's arguments, plus ``peft`` (a method name such as
            ``'Mona'`` or a dict with ``type``) and ``recompute``.
    """
    codebase = resolve_codebase(codebase, VIT_CLASSES, default='mmpretrain')
    upstream = import_class(VIT_CLASSES[codebase])
    kwargs = _check_vit_args(codebase, upstream, args, kwargs)
    return peft_backbone_class(upstream)(*args, **kwargs)


MODELS.register_module(name='PEFTVisionTransformer', module=PEFTVisionTransformer)
