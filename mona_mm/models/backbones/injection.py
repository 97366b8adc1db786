"""Adapters injected into the upstream backbone classes themselves.

:func:`peft_backbone_class` turns an upstream backbone class that has a
:class:`~.spec.BackboneSpec` (mmdet's, mmseg's or mmpretrain's Swin, a ViT, ConvNeXt...) into a
subclass that takes two more arguments, ``peft`` and ``recompute``. Everything else is the
upstream class: its constructor, defaults, forward, ``train()``, ``init_weights`` for random
init, ``get_layer_depth``... The PEFT method's adapters are added to the blocks as an
``adapters`` child (keys ``<block>.adapters.<point>.*``) and called from forward hooks at the
points the spec names; no block forward is rewritten. With ``peft=dict(type='Full')`` nothing
is added at all.
"""
import functools
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor

from mona_mm.registry import PEFT_METHODS
from ..peft.base import BasePEFTMethod, inside_adapter, iter_adapters
from .spec import BackboneSpec, get_spec


def build_peft_method(cfg: Union[dict, BasePEFTMethod, None]) -> BasePEFTMethod:
    """Build a PEFT method from ``dict(type=..., **kwargs)`` (whatever the default scope).

    Args:
        cfg: The backbone's ``peft`` field; None means ``Full``.
    """
    if isinstance(cfg, BasePEFTMethod):
        return cfg
    cfg = dict(type='Full') if cfg is None else dict(cfg)
    name = cfg.pop('type', None)
    cls = PEFT_METHODS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise KeyError(f'{name!r} is not a registered PEFT method; known: '
                       f'{sorted(PEFT_METHODS.module_dict)}')
    return cls(**cfg)


class _GridContext:
    """The token grid of the current forward, shared by a backbone and its blocks (grid
    source ``patch_embed``)."""

    grid: Optional[Tuple[int, int]] = None


class _Checkpointed:
    """A module's forward run under non-reentrant activation checkpointing (RNG replayed, so
    dropout and drop path repeat exactly) while gradients are being recorded."""

    def __init__(self, forward) -> None:
        self.forward = forward

    def __call__(self, *args, **kwargs):
        if torch.is_grad_enabled():
            return cp.checkpoint(self.forward, *args, use_reentrant=False, **kwargs)
        return self.forward(*args, **kwargs)


class BlockAdapters(nn.ModuleDict):
    """The adapters of one block (``{point: adapter}``) and the hooks that call them.

    Registered as the block's ``adapters`` child. The hooks are bound methods of this module,
    so copies of the model (``deepcopy``) call their own adapters. A point whose adapter is
    gone (a MiMi-vanished adapter) is skipped.

    Args:
        adapters: ``{point: adapter}`` from the PEFT method.
        spec: The backbone spec.
        context: The backbone's grid context.
        recompute: Recompute the adapters in the backward instead of storing their
            activations.
    """

    def __init__(self, adapters: Dict[str, nn.Module], spec: BackboneSpec,
                 context: _GridContext, recompute: bool = False) -> None:
        super().__init__(adapters)
        self._points = {p: spec.points[p] for p in adapters}
        self._layout = spec.layout
        self._grid_source = spec.grid
        self._context = context
        self._recompute = recompute
        self._grid: Optional[Tuple[int, int]] = None
        self._stash: Dict[str, Tuple[Tensor, Tensor]] = {}

    # ------------------------------------------------------------------ wiring
    def attach(self, block: nn.Module) -> None:
        """Register the hooks of every point on ``block``'s submodules."""
        if self._grid_source == 'block_arg':
            block.register_forward_pre_hook(self._capture_grid)
        for point, spec in self._points.items():
            target = block.get_submodule(spec.module) if spec.module else block
            if spec.kind == 'output':
                target.register_forward_hook(functools.partial(self._on_output, point))
            elif spec.kind == 'parallel':
                target.register_forward_hook(functools.partial(self._on_parallel, point))
            else:
                target.register_forward_pre_hook(functools.partial(self._on_residual, point))
                block.get_submodule(spec.consumer).register_forward_pre_hook(
                    functools.partial(self._on_consumer, point), with_kwargs=True)

    def _capture_grid(self, block: nn.Module, args: tuple) -> None:
        self._grid = tuple(args[1])

    # ------------------------------------------------------------------ applying
    def _call(self, point: str, x: Tensor) -> Tensor:
        adapter = self[point]
        if self._layout == 'nchw':
            B, C, H, W = x.shape
            out = self._run(adapter, x.flatten(2).transpose(1, 2), (H, W))
            return out.transpose(1, 2).reshape(B, C, H, W)
        grid = self._grid if self._grid_source == 'block_arg' else self._context.grid
        if grid is None:
            raise RuntimeError(f'adapter {point}: no token grid recorded for this forward')
        return self._run(adapter, x, grid)

    def _run(self, adapter: nn.Module, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        if self._recompute and torch.is_grad_enabled():
            return cp.checkpoint(adapter, x, grid, use_reentrant=False)
        return adapter(x, grid)

    def _on_output(self, point: str, module: nn.Module, args: tuple, out):
        if point not in self:
            return None
        index = self._points[point].index
        if index is None:
            return self._call(point, out)
        out = list(out)
        out[index] = self._call(point, out[index])
        return tuple(out)

    def _on_parallel(self, point: str, module: nn.Module, args: tuple, out: Tensor):
        if point not in self:
            return None
        return out + self._call(point, args[0])

    def _on_residual(self, point: str, module: nn.Module, args: tuple):
        if point not in self:
            return None
        x = args[0]
        y = self._call(point, x)
        self._stash[point] = (x, y)
        return (y, ) + tuple(args[1:])

    def _on_consumer(self, point: str, module: nn.Module, args: tuple, kwargs: dict):
        stashed = self._stash.pop(point, None)
        if stashed is None:
            return None
        x, y = stashed
        if kwargs.get('identity') is not x:
            raise RuntimeError(
                f'adapter point {point!r}: {type(module).__name__} did not receive the '
                'residual stream as `identity`; the block no longer matches its spec')
        kwargs = dict(kwargs, identity=y)
        return args, kwargs


class PEFTBackboneMixin:
    """What a PEFT backbone adds to its upstream class (see :func:`peft_backbone_class`).

    Args:
        peft: The PEFT method, e.g. ``dict(type='Mona', hidden_dims=64)``. Defaults to Mona;
            None means ``Full``.
        recompute: Finer activation checkpointing than the upstream ``with_cp`` (which
            recomputes whole blocks): ``'adapters'`` (every adapter keeps only its input),
            and the parts the spec names (``'attn'``, ``'ffn'``: the frozen attention / MLP
            of every block). Same outputs and gradients, less memory, more compute.
        *args, **kwargs: The upstream class's own arguments, with its own defaults.
    """

    peft_spec: BackboneSpec

    def __init__(self, *args, peft: Union[dict, BasePEFTMethod, None] = dict(type='Mona'),
                 recompute: Union[str, Sequence[str]] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._inject(peft, recompute)

    # ------------------------------------------------------------------ injection
    def _inject(self, peft, recompute) -> None:
        spec = self.peft_spec
        recompute = (recompute, ) if isinstance(recompute, str) else tuple(recompute)
        valid = ('adapters', ) + tuple(spec.recompute)
        unknown = sorted(set(recompute) - set(valid))
        if unknown:
            raise ValueError(f'{type(self).__name__}: cannot recompute {unknown}; '
                             f'`recompute` takes any of {valid}')
        self.recompute = recompute
        self.peft_method = build_peft_method(peft)
        self._peft_context = _GridContext()
        blocks = spec.find_blocks(self)
        #: Names of the blocks, in forward order (what Partial and MiMi plots count).
        self.peft_blocks: List[str] = [name for name, _ in blocks]
        offered = tuple(spec.points)
        for index, (name, block) in enumerate(blocks):
            dims = block.get_submodule(spec.width).normalized_shape[0]
            adapters = self.peft_method.build_adapters(dims, index, offered)
            if adapters:
                holder = BlockAdapters(adapters, spec, self._peft_context,
                                       'adapters' in recompute)
                block.add_module('adapters', holder)
                holder.attach(block)
            self.peft_method.modify_block(block, dims, index, spec)
            for part in recompute:
                if part != 'adapters' and not getattr(block, 'with_cp', False):
                    module = block.get_submodule(spec.recompute[part])
                    module.forward = _Checkpointed(module.forward)
        if spec.grid == 'patch_embed' and any(True for _ in iter_adapters(self)):
            self.patch_embed.register_forward_hook(self._capture_patch_grid)
        self._apply_peft_trainability()

    def _capture_patch_grid(self, module: nn.Module, args: tuple, out) -> None:
        self._peft_context.grid = tuple(out[1])

    def _apply_peft_trainability(self) -> None:
        # Only ever freezes: what the upstream class froze (frozen_stages...) or the user
        # froze by hand stays frozen, and Full changes nothing.
        for name, param in self.named_parameters():
            if not self.peft_method.is_trainable(name, self):
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> nn.Module:
        """The upstream ``train()`` (frozen stages, norm_eval...), returning the module as
        ``nn.Module.train`` does (mmdet's, mmseg's and mmpretrain's return None)."""
        super().train(mode)
        return self

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Upstream random init (adapters keep their own), or load
        ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` in any layout the
        spec converts. Adapters keep their own init either way."""
        init_cfg = self.init_cfg
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            checkpoint = init_cfg.get('checkpoint')
            if not checkpoint:
                raise ValueError("init_cfg=dict(type='Pretrained') needs `checkpoint=<path>`")
            self.load_pretrained(checkpoint, init_cfg.get('prefix'))
            self._is_init = True
            return
        super().init_weights()
        for _, adapter in iter_adapters(self):
            if hasattr(adapter, 'reset_parameters'):
                adapter.reset_parameters()

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None) -> None:
        """Load a pretrained backbone (path or any mmengine scheme) into this backbone.

        Args:
            checkpoint: The file.
            prefix: Take only the keys under this prefix (e.g. ``'backbone'``, mmengine's
                ``Pretrained`` meaning). Without it, keys under ``backbone.`` are taken if
                there are any, else all.
        """
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
        state_dict = extract_state_dict(ckpt, prefix, source=str(checkpoint))
        self._peft_source = str(checkpoint)
        try:
            self.load_state_dict(state_dict, strict=False)
        finally:
            self._peft_source = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # Every load (init_cfg, load_from, resume, load_state_dict) passes here first: bring
        # the backbone part of `state_dict` (the loader's own copy) into this model's layout,
        # check it fits and log once; then the upstream class loads as it always does.
        self._normalise_checkpoint(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def _normalise_checkpoint(self, state_dict: dict, prefix: str) -> None:
        mine = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                           if k.startswith(prefix))
        source = getattr(self, '_peft_source', None)
        if not mine:
            if source:
                raise ValueError(f'{source}: no tensors for the backbone')
            return
        layout = 'this layout'
        if self.peft_spec.convert is not None:
            mine, layout = self.peft_spec.convert(mine, self)
        own = self.state_dict()
        if source is None and not any(k in own and not inside_adapter(k, self) for k in mine):
            return  # no pretrained tensor (adapter-only state, or another module's keys)
        for k in [k for k in state_dict if k.startswith(prefix)]:
            del state_dict[k]
        for k, v in mine.items():
            state_dict[prefix + k] = v
        self._check_and_log(mine, own, layout, prefix, source)

    def _check_and_log(self, sd: Dict[str, Tensor], own: Dict[str, Tensor], layout: str,
                       prefix: str, source: Optional[str]) -> None:
        is_adapter = {k: inside_adapter(k, self) for k in own}
        loaded = [k for k in sd if k in own and not is_adapter[k]]
        if not loaded:
            raise ValueError(
                f'{source or "state dict"} matches no tensor of this {self.peft_spec.name} '
                f'backbone ({type(self).__name__}); its first keys are '
                f'{list(sd)[:6]}, this backbone\'s are {list(own)[:4]}')
        mismatched = [f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}'
                      for k in sd if k in own and sd[k].shape != own[k].shape]
        unexpected = [k for k in sd if k not in own]
        missing = [k for k in own if k not in sd and not is_adapter[k]]
        missing_adapters = [k for k in own if k not in sd and is_adapter[k]]
        # a missing buffer (e.g. a relative position index dropped with a resized table) is
        # rebuilt by the model; a missing or extra weight of a block means another arch
        # (an extra patch-embedding bias is what mmseg's ViT ignores in timm-converted files)
        roots = {n.split('.')[0] for n in self.peft_blocks}
        params = dict(self.named_parameters())
        structural_unexpected = [k for k in unexpected if k.split('.')[0] in roots]
        structural_missing = [k for k in missing if k in params
                              and k.split('.')[0] in roots | {'patch_embed'}]
        if mismatched and all(is_adapter.get(m.split(':')[0], False) for m in mismatched) \
                and not (structural_unexpected or structural_missing):
            raise ValueError(
                f'Adapter widths in the checkpoint differ from this model ({len(mismatched)} '
                f'tensors, e.g. {mismatched[0]}): a MiMi-pruned checkpoint? Rebuild its '
                'structure first (tools/test.py and --resume do; in code: '
                'mona_mm.pruning.apply_checkpoint_structure).')
        if mismatched or structural_unexpected or structural_missing:
            lines = mismatched + [f'{k}: only in checkpoint' for k in structural_unexpected] + \
                [f'{k}: missing from checkpoint' for k in structural_missing]
            raise ValueError(
                f'{self.peft_spec.name} checkpoint does not fit this backbone: {len(lines)} '
                'tensors differ, e.g. ' + '; '.join(lines[:8]) + '. Build the backbone with '
                'the arch (embed dims, depths, heads, patch size) it was trained with.')
        msg = (f'{type(self).__name__}[{prefix or "backbone"}] <- {source or "state dict"} '
               f'({layout}): {len(loaded)} tensors loaded, {len(missing_adapters)} adapter '
               'tensors newly initialised (expected)')
        if missing:
            msg += f'; missing (kept initialised): {", ".join(missing)}'
        if unexpected:
            msg += f'; unexpected (ignored): {", ".join(unexpected)}'
        MMLogger.get_current_instance().info(msg)


def extract_state_dict(ckpt: dict, prefix: Optional[str] = None,
                       source: str = 'checkpoint') -> Dict[str, Tensor]:
    """The tensors of a checkpoint (``state_dict``/``model``/plain, ``module.`` stripped), the
    backbone part of it.

    Args:
        ckpt: What ``torch.load`` returned.
        prefix: Keep only keys under this prefix, stripped (mmengine's ``Pretrained``
            meaning); an error if none has it. None: keys under ``backbone.`` if any, else all.
        source: Name of the file, for errors.
    """
    for key in ('state_dict', 'model'):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    sd = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                     for k, v in ckpt.items() if isinstance(v, Tensor))
    if prefix is None:
        prefix = 'backbone.' if any(k.startswith('backbone.') for k in sd) else ''
    elif not prefix.endswith('.'):
        prefix += '.'
    if not prefix:
        return sd
    picked = OrderedDict((k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))
    if not picked:
        raise ValueError(f'{source}: no key starts with prefix {prefix!r}; its first keys '
                         f'are {list(sd)[:6]}')
    return picked


_CLASSES: Dict[type, type] = {}


def peft_backbone_class(upstream: type) -> type:
    """The PEFT subclass of ``upstream`` (created once, then cached).

    The class is named ``PEFT<Upstream>`` and lives in this module under a unique name, so
    models holding it can be pickled.

    Args:
        upstream: A backbone class with a registered spec.
    """
    if upstream in _CLASSES:
        return _CLASSES[upstream]
    spec = get_spec(upstream)
    scope = upstream.__module__.split('.')[0]
    qualname = f'PEFT_{scope}_{upstream.__name__}'
    cls = type(f'PEFT{upstream.__name__}', (PEFTBackboneMixin, upstream), dict(
        peft_spec=spec, __module__=__name__, __qualname__=qualname,
        __doc__=f'{scope}.{upstream.__name__} with PEFT adapters (spec: {spec.name}).\n\n'
        + (PEFTBackboneMixin.__doc__ or '')))
    setattr(sys.modules[__name__], qualname, cls)
    _CLASSES[upstream] = cls
    return cls


def is_peft_backbone(module: nn.Module) -> bool:
    """Whether ``module`` is a backbone built by :func:`peft_backbone_class`."""
    return isinstance(module, PEFTBackboneMixin)
