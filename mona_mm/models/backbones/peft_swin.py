"""``mona_mm.PEFTSwinTransformer``: the Swin of the codebase a config is written for, with
PEFT adapters (Mona by default)."""
import inspect
import numbers
from typing import Any, Dict, List, Optional, Sequence

import torch.nn as nn
from mmengine.logging import MMLogger

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


def upstream_arguments(cls: type, args: tuple, kwargs: dict) -> Optional[Dict[str, Any]]:
    """Every argument of upstream ``cls``'s constructor as this call would set it (defaults
    filled in), or None if the call does not fit the signature (the upstream class then
    raises its own error).

    Args:
        cls: The upstream backbone class.
        args: Positional arguments of the call.
        kwargs: Keyword arguments of the call, without ``peft`` and ``recompute``.
    """
    try:
        bound = inspect.signature(cls).bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


def is_int(value: Any) -> bool:
    """Whether ``value`` is an int (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_swin_args(codebase: str, cls: type, args: tuple, kwargs: dict) -> None:
    """Raise a ValueError naming the argument for stage settings the upstream Swin of
    ``codebase`` would take with an IndexError or a silently wrong model (outputs missing,
    stages dropped), a reshape error at the first forward, or a late error in ``train()``.
    Whatever it already rejects clearly (unknown arch, arch dict keys) is left to it."""
    bound = upstream_arguments(cls, args, {k: v for k, v in kwargs.items()
                                           if k not in ('peft', 'recompute')})
    if bound is None:
        return
    who = f'PEFTSwinTransformer ({codebase})'
    if codebase == 'mmpretrain':
        arch = bound['arch']
        if isinstance(arch, str):
            arch = cls.arch_zoo.get(arch.lower())
        if not isinstance(arch, dict) or set(arch) != {'embed_dims', 'depths', 'num_heads'}:
            return  # mmpretrain asserts with a clear message
        embed_dims, depths, num_heads = arch['embed_dims'], arch['depths'], arch['num_heads']
        where = 'arch'
    else:
        embed_dims, depths, num_heads = bound['embed_dims'], bound['depths'], \
            bound['num_heads']
        where = 'depths/num_heads'
    if not isinstance(depths, Sequence) or not isinstance(num_heads, Sequence) or \
            not depths or len(depths) != len(num_heads):
        raise ValueError(f'{who}: {where} must give depths and num_heads as non-empty '
                         f'sequences of the same length, one entry per stage (got '
                         f'depths={depths!r}, num_heads={num_heads!r})')
    stages = len(depths)
    if codebase != 'mmpretrain':
        strides = bound['strides']
        if isinstance(strides, Sequence) and len(strides) < stages:
            raise ValueError(f'{who}: strides needs an entry per stage, {stages} for depths='
                             f'{tuple(depths)} (got strides={strides!r})')
    if is_int(embed_dims) and all(is_int(h) and h > 0 for h in num_heads) and \
            (codebase != 'mmpretrain' or bound['stage_cfgs'] == dict()):
        for i, heads in enumerate(num_heads):
            channels = embed_dims * 2**i  # every patch merging doubles the channels
            if channels % heads:
                raise ValueError(f'{who}: num_heads[{i}]={heads} must divide the {channels} '
                                 f'channels of stage {i} (embed_dims={embed_dims} doubled '
                                 f'{i} times; got num_heads={tuple(num_heads)})')
    out_indices = bound['out_indices']
    if not isinstance(out_indices, Sequence) or not out_indices or \
            not all(is_int(i) and 0 <= i < stages for i in out_indices):
        raise ValueError(f'{who}: out_indices must be a non-empty sequence of stage indices '
                         f'in [0, {stages}) (no negative indices), e.g. (0, 1, 2, 3) for '
                         f'4 stages (got {out_indices!r})')
    # mmdet/mmseg freeze the patch embedding, then stages 1..frozen_stages (1-based);
    # mmpretrain the patch embedding and stages 0..frozen_stages (0-based)
    top = stages if codebase != 'mmpretrain' else stages - 1
    frozen = bound['frozen_stages']
    if not is_int(frozen) or not -1 <= frozen <= top:
        raise ValueError(f'{who}: frozen_stages must be an int from -1 (nothing frozen) to '
                         f'{top} (all {stages} stages frozen) (got {frozen!r})')


def frozen_stage_indices(codebase: str, frozen_stages: int, num_stages: int) -> List[int]:
    """The stages the upstream Swin of ``codebase`` freezes (in ``train()``) for
    ``frozen_stages``: mmdet's and mmseg's count from 1 (``1``: stage 0), mmpretrain's from 0
    (``0``: stage 0). Both also freeze the patch embedding from ``0`` on.

    Args:
        codebase: ``'mmdet'``, ``'mmseg'`` or ``'mmpretrain'``.
        frozen_stages: The backbone's ``frozen_stages``.
        num_stages: Number of stages.
    """
    last = frozen_stages + 1 if codebase == 'mmpretrain' else frozen_stages
    return list(range(max(0, min(last, num_stages))))


def warn_frozen_stages(codebase: str, model: nn.Module) -> None:
    """Log one warning when ``frozen_stages`` freezes parameters the PEFT method would train.

    ``frozen_stages`` keeps the upstream meaning (whole stages, adapters inside them
    included: they are submodules of the frozen blocks), so a config line copied from the
    Mona authors' code means something else here: their Swin (Microsoft's, mmdet 2.x
    layout) freezes only the patch embedding at ``frozen_stages=1`` (their VOC configs) and
    stages ``0..N-2`` at ``N >= 2``; with mmdet's or mmseg's Swin that is ``N - 1`` here (their
    ``1`` is ``0``), with mmpretrain's ``N - 2`` (their ``1``: ``-1``; no mmpretrain value
    freezes the patch embedding alone, which the adapter methods freeze anyway). The warning
    says how many parameters the stages take from the method and which value reproduces
    theirs.

    Args:
        codebase: ``'mmdet'``, ``'mmseg'`` or ``'mmpretrain'``.
        model: A PEFT Swin just built (before ``train()``, so ``requires_grad`` is still the
            method's choice).
    """
    k = getattr(model, 'frozen_stages', -1)
    stages = frozen_stage_indices(codebase, k, len(model.stages))
    if not stages:
        return
    if codebase == 'mmpretrain':
        norms = [i for i in model.out_indices if i <= k]
    else:
        norms = [i for i in stages if i in model.out_indices]
    frozen = [model.stages[i] for i in stages] + [
        getattr(model, f'norm{i}') for i in norms if hasattr(model, f'norm{i}')]
    lost = sum(p.numel() for m in frozen for p in m.parameters() if p.requires_grad)
    if not lost:
        return
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    span = 'stage 0' if len(stages) == 1 else f'stages 0-{stages[-1]}'
    if codebase == 'mmpretrain':
        counting, theirs = 'mmpretrain counts stages from 0', max(k - 2, -1)
    else:
        counting, theirs = f"{codebase}'s meaning", k - 1
    MMLogger.get_current_instance().warning(
        f'PEFTSwinTransformer ({codebase}): frozen_stages={k} freezes the patch embedding and '
        f'{span} ({counting}; adapters inside them too): {lost:,} of the {trainable:,} '
        f"parameters {model.peft_cfg['type']} trains stay frozen ({trainable - lost:,} "
        "train). If the value comes from the Mona authors' configs: their Swin freezes "
        'less (their frozen_stages=1, in their VOC configs, freezes only the patch '
        f'embedding; N >= 2 freezes stages 0..N-2); their frozen_stages={k} is '
        f'frozen_stages={theirs} here.')


def PEFTSwinTransformer(*args, codebase: Optional[str] = None, pretrained_out_norm: bool = True,
                        **kwargs) -> nn.Module:
    """The upstream Swin Transformer of ``codebase`` with PEFT adapters.

    The codebase is the config's ``default_scope`` (mmdet, mmseg or mmpretrain), so a
    shipped Swin config switches with ``type='mona_mm.PEFTSwinTransformer'`` and keeps the
    meaning of every argument; outside those scopes (plain Python) it is mmdet's. The result
    is an instance of the upstream class (a subclass of it, see
    :func:`~.injection.peft_backbone_class`): with ``peft=dict(type='Full')`` it computes and
    loads exactly as the upstream class.

    ``frozen_stages`` too keeps its upstream meaning: whole stages freeze in ``train()``, the
    adapters inside them included. Where that takes parameters from the PEFT method, a
    warning says how many, and which value the Mona authors' Swin (whose ``frozen_stages=1``
    freezes only the patch embedding) corresponds to (see :func:`warn_frozen_stages`).

    Args:
        *args: Positional arguments of the upstream Swin.
        codebase: ``'mmdet'``, ``'mmseg'`` or ``'mmpretrain'``; None: from the scope.
        pretrained_out_norm: Load a checkpoint's final ``norm`` (Microsoft's release, the
            mmpretrain v1 name) into the last stage's out norm (``norm3``), when that stage
            is an output. Defaults to True. False is what the Mona authors' runs did: their
            Swin has no ``norm``, so it stays unused and every out norm keeps its fresh init
            (weight 1, bias 0; frozen under Mona, so it stays so). Applies to every way of
            loading (``init_cfg``, ``load_from``, ``load_state_dict``); ``norm<i>`` tensors
            of a checkpoint in this layout load either way. All three codebases' Swins have
            per-stage out norms ``norm<i>`` for ``out_indices``.
        **kwargs: The upstream Swin's arguments, plus ``peft`` (default Mona; a method name
            such as ``'Full'`` or a dict such as ``dict(type='Mona', hidden_dims=32)``) and
            ``recompute`` (see :class:`~.injection.PEFTBackboneMixin`). mmdet's and mmseg's
            Swin also take mmpretrain's ``arch`` (``'tiny'``...``'large'`` or a dict) and
            ``img_size`` here.
    """
    codebase = resolve_codebase(codebase, SWIN_CLASSES, default='mmdet')
    if codebase == 'mmpretrain' and (isinstance(kwargs.get('window_size'), (list, tuple))
                                     or 'pretrained_window_sizes' in kwargs):
        raise ValueError('PEFTSwinTransformer is Swin V1; this config is a Swin V2 one '
                         '(per-stage window_size / pretrained_window_sizes): use '
                         "type='mona_mm.PEFTSwinTransformerV2'")
    if codebase != 'mmpretrain':
        kwargs = _arch_to_dims(dict(kwargs))
    if not isinstance(pretrained_out_norm, bool):
        raise TypeError(f'PEFTSwinTransformer: pretrained_out_norm must be True or False, got '
                        f'{pretrained_out_norm!r}')
    upstream = import_class(SWIN_CLASSES[codebase])
    _check_swin_args(codebase, upstream, args, kwargs)
    model = peft_backbone_class(upstream)(*args, **kwargs)
    warn_frozen_stages(codebase, model)
    #: read by the spec's checkpoint conversion (``specs/swin.py``: ``convert_swin``)
    model.pretrained_out_norm = pretrained_out_norm
    return model


MODELS.register_module(name='PEFTSwinTransformer', module=PEFTSwinTransformer)

SWIN_V2_CLASS = 'mmpretrain.models.backbones.swin_transformer_v2.SwinTransformerV2'


def PEFTSwinTransformerV2(*args, **kwargs) -> nn.Module:
    """mmpretrain's Swin Transformer V2 with PEFT adapters (Mona by default).

    The one-line switch of a V2 config (``mmpretrain::swin_transformer_v2/...``: ``type=
    'mona_mm.PEFTSwinTransformerV2'``); every argument keeps its upstream meaning, and with
    ``peft=dict(type='Full')`` it is the upstream class bit for bit. The blocks are post-norm
    (``x = x + norm(branch(x))``): Mona rewrites the stream after each residual add, as on V1
    (``specs/swin_v2.py``). LoRA is refused: V2's attention never calls its qkv layer.

    Args:
        *args: Positional arguments of mmpretrain's ``SwinTransformerV2``.
        **kwargs: Its keyword arguments, plus ``peft`` and ``recompute`` (see
            :class:`~.injection.PEFTBackboneMixin`).
    """
    return peft_backbone_class(import_class(SWIN_V2_CLASS))(*args, **kwargs)


MODELS.register_module(name='PEFTSwinTransformerV2', module=PEFTSwinTransformerV2)
