"""``mona_mm.PEFTSwinTransformer``: the Swin of the codebase a config is written for, with
PEFT adapters (Mona by default)."""
from typing import Optional

import torch.nn as nn

from mona_mm.registry import MODELS
from .codebase import import_class, resolve_codebase
from .injection import peft_backbone_class

SWIN_CLASSES = {
    'mmdet': 'mmdet.models.backbones.swin.SwinTransformer',
    'mmseg': 'mmseg.models.backbones.swin.SwinTransformer',
    'mmpretrain': 'mmpretrain.models.backbones.swin_transformer.SwinTransformer',
}

#: mmpretrain's Swin archs, accepted by mmdet's and mmseg's Swin here too (``arch=``).
SWIN_ARCHS = {
    'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'small': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'base': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    'large': dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}


def _arch_to_dims(kwargs: dict) -> dict:
    """mmdet/mmseg spell the arch as embed_dims/depths/num_heads; take mmpretrain's
    ``arch`` (and ``img_size``) too, so one config line serves all three."""
    arch = kwargs.pop('arch', None)
    if arch is not None:
        given = sorted(k for k in ('embed_dims', 'depths', 'num_heads') if k in kwargs)
        if given:
            raise ValueError(f'PEFTSwinTransformer: give either `arch` or embed_dims/depths/'
                             f'num_heads, not both (got arch={arch!r} and {given})')
        if isinstance(arch, str):
            if arch.lower() not in SWIN_ARCHS:
                raise ValueError(f'Unknown Swin arch {arch!r}; choose one of '
                                 f'{sorted(SWIN_ARCHS)} or pass a dict with embed_dims, '
                                 'depths and num_heads')
            arch = SWIN_ARCHS[arch.lower()]
        missing = {'embed_dims', 'depths', 'num_heads'} - set(arch)
        if missing:
            raise ValueError(f'Custom Swin arch needs {sorted(missing)}')
        kwargs.update(embed_dims=arch['embed_dims'], depths=tuple(arch['depths']),
                      num_heads=tuple(arch['num_heads']))
    if 'img_size' in kwargs:
        kwargs.setdefault('pretrain_img_size', kwargs.pop('img_size'))
    return kwargs


def PEFTSwinTransformer(*args, codebase: Optional[str] = None, **kwargs) -> nn.Module:
    """The upstream Swin Transformer of ``codebase`` with PEFT adapters.

    The codebase is the config's ``default_scope`` (mmdet, mmseg or mmpretrain), so a
    shipped Swin config switches with ``type='mona_mm.PEFTSwinTransformer'`` and keeps the
    meaning of every argument; outside those scopes (plain Python) it is mmdet's. The result
    is an instance of the upstream class (a subclass of it, see
    :func:`~.injection.peft_backbone_class`): with ``peft=dict(type='Full')`` it computes and
    loads exactly as the upstream class.

    Args:
        *args: Positional arguments of the upstream Swin.
        codebase: ``'mmdet'``, ``'mmseg'`` or ``'mmpretrain'``; None: from the scope.
        **kwargs: The upstream Swin's arguments, plus ``peft`` (default Mona) and
            ``recompute`` (see :class:`~.injection.PEFTBackboneMixin`). mmdet's and mmseg's
            Swin also take mmpretrain's ``arch`` (``'tiny'``...``'large'`` or a dict) and
            ``img_size`` here.
    """
    codebase = resolve_codebase(codebase, SWIN_CLASSES, default='mmdet')
    if codebase == 'mmpretrain' and (isinstance(kwargs.get('window_size'), (list, tuple))
                                     or 'pretrained_window_sizes' in kwargs):
        raise ValueError('PEFTSwinTransformer is Swin V1; this config is a Swin V2 one '
                         '(per-stage window_size / pretrained_window_sizes). Swin V2 blocks '
                         '(post-norm) have no adapter spec yet.')
    if codebase != 'mmpretrain':
        kwargs = _arch_to_dims(dict(kwargs))
    cls = peft_backbone_class(import_class(SWIN_CLASSES[codebase]))
    return cls(*args, **kwargs)


MODELS.register_module(name='PEFTSwinTransformer', module=PEFTSwinTransformer)
