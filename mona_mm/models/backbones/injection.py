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
import hashlib
import inspect
import os.path as osp
import sys
from collections import OrderedDict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import MMLogger
from torch import Tensor
from torch.nn.modules.utils import _pair

from mona_mm.registry import PEFT_METHODS
from ..peft.base import BasePEFTMethod, inside_adapter, iter_adapters
from .spec import BackboneSpec, get_spec


def _peft_dict(cfg: Union[str, dict, None]) -> dict:
    """The ``peft`` field as a new dict: None is ``Full``, a name is ``dict(type=name)``, and a
    method's slug (``'mona'``, ``'norm-tuning'``, ``'partial-2'``: the names of the README
    and the config folders, see :mod:`mona_mm.models.peft.names`) becomes its registered
    type (with ``num_blocks`` for ``partial-<k>``)."""
    if cfg is None:
        return dict(type='Full')
    if isinstance(cfg, str):
        cfg = dict(type=cfg)
    if not isinstance(cfg, dict):
        raise TypeError(f'peft must be a method name, a dict with `type` or None, got '
                        f'{type(cfg).__name__} {cfg!r}; e.g. peft=\'Mona\' (or its slug '
                        f"'mona') or peft=dict(type='Mona', hidden_dims=64) (methods: "
                        f'{sorted(PEFT_METHODS.module_dict)})')
    cfg = dict(cfg)
    name = cfg.get('type')
    if isinstance(name, str) and PEFT_METHODS.get(name) is None:
        from ..peft.names import peft_config
        try:
            named = peft_config(name)
        except ValueError:
            return cfg  # unknown: build_peft_method names both spellings
        clash = {k: (cfg[k], v) for k, v in named.items()
                 if k != 'type' and k in cfg and cfg[k] != v}
        if clash:
            raise ValueError(f'peft={cfg!r}: the slug {name!r} means {named!r}, which '
                             f'contradicts {sorted(clash)}; give type={named["type"]!r} '
                             'with the arguments you want')
        cfg.update(named)
    return cfg


def _known_names() -> str:
    """Every spelling a ``peft`` type may take (for errors)."""
    from ..peft.names import EXTRA_TYPES, METHOD_SLUGS
    return (f'{sorted(PEFT_METHODS.module_dict)} or their slugs '
            f'{list(METHOD_SLUGS) + ["partial-<k>"] + list(EXTRA_TYPES)}')


def build_peft_method(cfg: Union[str, dict, BasePEFTMethod, None]) -> BasePEFTMethod:
    """Build a PEFT method from ``dict(type=..., **kwargs)`` or its bare name (``'Mona'`` is
    ``dict(type='Mona')``), whatever the default scope. The type may also be the method's
    slug (``'mona'``, ``'norm-tuning'``, ``'partial-2'``).

    Args:
        cfg: The backbone's ``peft`` field: a registered method name or slug, a config dict
            with ``type``, or a built method; None means ``Full``.
    """
    if isinstance(cfg, BasePEFTMethod):
        return cfg
    cfg = _peft_dict(cfg)
    name = cfg.pop('type', None)
    cls = PEFT_METHODS.get(name) if isinstance(name, str) else None
    if cls is None:
        what = 'peft has no `type`' if name is None else \
            f'{name!r} is not a registered PEFT method'
        raise KeyError(f'{what}; known: {_known_names()}')
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(cfg) - set(params))
        if unknown:
            raise TypeError(f'{name}: unknown argument(s) {unknown}; it takes '
                            f'{list(params) or "no arguments"}')
    return cls(**cfg)


def _has_submodule(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def block_width(block: nn.Module, spec: BackboneSpec) -> int:
    """The channel count of ``block``: of its submodule ``spec.width`` (the first of a tuple
    the block has), a LayerNorm or any other norm (BatchNorm, GroupNorm: upstream
    ``norm_cfg`` may choose them), or a conv or linear layer (its output channels).

    Args:
        block: One block of the backbone.
        spec: The family's spec.
    """
    paths = (spec.width, ) if isinstance(spec.width, str) else tuple(spec.width)
    path = next((p for p in paths if _has_submodule(block, p)), paths[0])
    module = block.get_submodule(path)
    for attr in ('normalized_shape', 'num_features', 'num_channels', 'out_channels',
                 'out_features'):
        value = getattr(module, attr, None)
        if value is not None:
            return int(value[0] if isinstance(value, (tuple, list, torch.Size)) else value)
    raise TypeError(f'{spec.name} spec: cannot read a channel count from {path!r} '
                    f'({type(module).__name__}) of {type(block).__name__}: `width` must name '
                    'a norm, conv or linear layer of the block')


def _plain(value):
    """Config values as plain, comparable data (tuples and lists alike)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in sorted(value.items())}
    return value


def peft_method_config(cfg: Union[str, dict, BasePEFTMethod, None]) -> dict:
    """The backbone's ``peft`` argument as a full, comparable config: the registered name
    and every constructor argument with its default filled in.

    Args:
        cfg: As given to the backbone (name, dict, built method or None).
    """
    if isinstance(cfg, BasePEFTMethod):
        names = [k for k, v in PEFT_METHODS.module_dict.items() if v is type(cfg)]
        return dict(type=names[0] if names else type(cfg).__name__)
    cfg = _peft_dict(cfg)
    name = cfg.pop('type')
    try:
        bound = inspect.signature(PEFT_METHODS.get(name)).bind(**cfg)
        bound.apply_defaults()
        cfg = dict(bound.arguments)
    except (TypeError, ValueError):  # **kwargs methods: as given
        pass
    return dict(type=name, **_plain(cfg))


#: Method arguments that only choose the starting point of training, not the model.
_START_ONLY = ('init', )


def _settings(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in _START_ONLY}


def _describe(cfg: dict) -> str:
    args = ', '.join(f'{k}={v!r}' for k, v in cfg.items() if k != 'type')
    return f"{cfg.get('type')}({args})"


#: How to put an adapter-only checkpoint on a pretrained backbone (for error messages).
_WITH_BASE = ('with its pretrained backbone given: `tools/test.py CONFIG CKPT --base-checkpoint '
              'PRETRAINED`, `tools/infer.py IMAGES CONFIG CKPT --base-checkpoint PRETRAINED`, '
              'mona_mm.apis.init_model(CONFIG, CKPT, base_checkpoint=PRETRAINED) or '
              'mona_mm.utils.load_adapter_checkpoint(model, CKPT, base_checkpoint=PRETRAINED)')

#: Key of the backbone's record in its state-dict metadata (``state_dict._metadata``).
RECORD_KEY = 'mona_mm'
#: Key, in a loader's copy of a record, of the base given instead of the recorded one.
OVERRIDE_KEY = 'base_override'


def _record_in_state_dict(module: nn.Module, state_dict: dict, prefix: str,
                          local_metadata: dict) -> None:
    # a plain function (not a bound method): copies of the model record themselves
    local_metadata[RECORD_KEY] = module.peft_record()


class _GridContext:
    """The token grid of the current forward, shared by a backbone and its blocks (grid
    sources ``patch_embed`` and ``patch_embed_input``)."""

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
        self._inputs: Dict[str, Tensor] = {}  # branch inputs (``source`` of a point)

    # ------------------------------------------------------------------ wiring
    def attach(self, block: nn.Module) -> None:
        """Register the hooks of every point on ``block``'s submodules."""
        if self._grid_source == 'block_arg':
            block.register_forward_pre_hook(self._capture_grid)
        for point, spec in self._points.items():
            target = block.get_submodule(spec.module) if spec.module else block
            if spec.kind == 'output':
                target.register_forward_hook(functools.partial(self._on_output, point))
            elif spec.kind in ('parallel', 'post_residual'):
                if spec.source:  # the stream entering the branch, kept for the module's hook
                    block.get_submodule(spec.source).register_forward_pre_hook(
                        functools.partial(self._keep_input, point))
                on = self._on_parallel if spec.kind == 'parallel' else self._on_post_residual
                target.register_forward_hook(functools.partial(on, point))
            elif spec.kind == 'stream':
                target.register_forward_pre_hook(functools.partial(self._on_stream, point))
                block.get_submodule(spec.consumer).register_forward_hook(
                    functools.partial(self._on_stream_end, point))
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
        if self._layout == 'nhwc':
            B, H, W, C = x.shape
            return self._run(adapter, x.reshape(B, H * W, C), (H, W)).reshape(B, H, W, C)
        grid = self._grid if self._grid_source == 'block_arg' else self._context.grid
        if grid is None:
            raise RuntimeError(f'adapter {point}: no token grid recorded for this forward')
        return self._run(adapter, x, grid)

    def _run(self, adapter: nn.Module, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        if self._recompute and torch.is_grad_enabled():
            # what the adapter does differently when it is recomputed (Mona under compile)
            kwargs = getattr(adapter, 'recompute_kwargs', {})
            return cp.checkpoint(adapter, x, grid, use_reentrant=False, **kwargs)
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

    def _keep_input(self, point: str, module: nn.Module, args: tuple) -> None:
        if point in self:
            self._inputs[point] = args[0]

    def _kept_input(self, point: str, module: nn.Module) -> Tensor:
        x = self._inputs.pop(point, None)
        if x is None:
            raise RuntimeError(
                f'adapter point {point!r}: {type(module).__name__} ran without its branch '
                f'input ({self._points[point].source} did not run first); the block no '
                'longer matches its spec')
        return x

    def _on_parallel(self, point: str, module: nn.Module, args: tuple, out: Tensor):
        if point not in self:
            return None
        x = self._kept_input(point, module) if self._points[point].source else args[0]
        return out + self._call(point, x)

    def _on_post_residual(self, point: str, module: nn.Module, args: tuple, out: Tensor):
        if point not in self:
            return None
        x = self._kept_input(point, module)
        # the block adds x back: x + (adapter(x + out) - x) is the adapted stream
        return self._call(point, x + out) - x

    def _on_residual(self, point: str, module: nn.Module, args: tuple):
        if point not in self:
            return None
        x = args[0]
        y = self._call(point, x)
        self._stash[point] = (x, y)
        return (y, ) + tuple(args[1:])

    def _on_stream(self, point: str, module: nn.Module, args: tuple):
        if point not in self:
            return None
        x = args[0]
        y = self._call(point, x)
        # what the block's own add (x + consumer's output) still lacks of y
        self._stash[point] = (x, y - x)
        return (y, ) + tuple(args[1:])

    def _on_stream_end(self, point: str, module: nn.Module, args: tuple, out: Tensor):
        stashed = self._stash.pop(point, None)
        if stashed is None:  # an earlier call of a shared module (the first branch's)
            return None
        return out + stashed[1]

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


_RANDOM_CHECK_DEFERRED: List[bool] = []


@contextmanager
def random_check_deferred() -> Iterator[None]:
    """``train()`` calls inside do not count as the start of training for the random-weights
    check (the optimizer constructor applies the upstream freezing before weights load)."""
    _RANDOM_CHECK_DEFERRED.append(True)
    try:
        yield
    finally:
        _RANDOM_CHECK_DEFERRED.pop()


def _python_scalars(model: nn.Module) -> None:
    """Numpy scalars among the modules' public attributes (mmpretrain's ViTs take drop-path
    rates from ``np.linspace``) become the same Python numbers, and shapes held as small
    numpy integer arrays (mmdet's PVT position-embedding grid, ``pos_shape``) tuples of ints.

    Forwards branch on and compute shapes from them (``drop_prob == 0.``, ``pos_h * pos_w``);
    torch.compile treats a numpy scalar as data and breaks its graph there, in every block.
    The values, and so every output and gradient, are unchanged.
    """

    def plain(value, name=''):
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            return value.item()
        if name.endswith('_shape') and isinstance(value, np.ndarray) and value.ndim == 1 \
                and value.size <= 3 and value.dtype.kind in 'iu':
            return tuple(int(v) for v in value)
        if isinstance(value, tuple) and any(isinstance(v, np.generic) for v in value):
            return tuple(plain(v) for v in value)
        return value

    for module in model.modules():
        for name, value in list(vars(module).items()):
            if not name.startswith('_'):
                new = plain(value, name)
                if new is not value:
                    setattr(module, name, new)


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
        _python_scalars(self)
        recompute = (recompute, ) if isinstance(recompute, str) else tuple(recompute)
        valid = ('adapters', ) + tuple(spec.recompute)
        unknown = sorted(set(recompute) - set(valid))
        if unknown:
            raise ValueError(f'{type(self).__name__}: cannot recompute {unknown}; '
                             f'`recompute` takes any of {valid}')
        self.recompute = recompute
        self.peft_method = build_peft_method(peft)
        #: The PEFT method as a full config (recorded in state dicts, compared on load).
        self.peft_cfg = peft_method_config(peft)
        self._peft_context = _GridContext()
        blocks = spec.find_blocks(self)
        #: Names of the blocks, in forward order (what Partial and MiMi plots count).
        self.peft_blocks: List[str] = [name for name, _ in blocks]
        offered = tuple(spec.points)
        # methods that only choose what trains (Full, Fixed, BitFit...) touch no block, so
        # the block's width is never read: the model stays the upstream one, whatever norms
        # its arguments chose
        changes_blocks = any(
            getattr(type(self.peft_method), fn) is not getattr(BasePEFTMethod, fn)
            for fn in ('build_adapters', 'modify_block'))
        for index, (name, block) in enumerate(blocks):
            if not changes_blocks:
                continue
            dims = block_width(block, spec)
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
        if any(True for _ in iter_adapters(self)):
            if spec.grid == 'patch_embed':
                self.patch_embed.register_forward_hook(self._capture_patch_grid)
            elif spec.grid == 'patch_embed_input':
                self.patch_embed.register_forward_pre_hook(self._capture_input_grid)
        self._apply_peft_trainability()
        # every adapter the method built (MiMi may remove some later: width 0)
        self._peft_built = [name for name, _ in iter_adapters(self)]
        #: What filled the frozen backbone tensors: the pretrained file, ``'state dict'``
        #: (a full state dict: load_from, resume, load_state_dict), None while they are
        #: still as built (random).
        self.peft_pretrained_source: Optional[str] = None
        #: The pretrained backbone the frozen tensors are from, as recorded in state dicts:
        #: ``dict(checkpoint=path, prefix=..., sha256=digest)`` (see :func:`base_digest`);
        #: None while unknown.
        self.peft_base: Optional[dict] = None
        # own keys the base supplied (None: unknown): the other frozen tensors travel in
        # adapter-only checkpoints, as the base cannot give them back
        self._peft_base_keys: Optional[frozenset] = None
        # whether the method freezes backbone weights (so they must come pretrained)
        self._peft_freezes = any(not self.peft_method.is_trainable(n, self)
                                 for n, _ in self.named_parameters()
                                 if not inside_adapter(n, self))
        self._peft_random_checked = False
        self.register_forward_pre_hook(self._warn_if_random)
        self._peft_last_loaded: Optional[List[str]] = None  # frozen keys of the last load
        self.register_state_dict_post_hook(_record_in_state_dict)

    def _capture_patch_grid(self, module: nn.Module, args: tuple, out) -> None:
        self._peft_context.grid = tuple(out[1])

    def _capture_input_grid(self, module: nn.Module, args: tuple) -> None:
        # the grid the embedding itself computes: (H // patch height, W // patch width)
        ph, pw = _pair(module.patch_size)
        H, W = args[0].shape[-2:]
        self._peft_context.grid = (H // ph, W // pw)

    def _apply_peft_trainability(self) -> None:
        # Only ever freezes: what the upstream class froze (frozen_stages...) or the user
        # froze by hand stays frozen, and Full changes nothing.
        for name, param in self.named_parameters():
            if not self.peft_method.is_trainable(name, self):
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> nn.Module:
        """The upstream ``train()`` (frozen stages, norm_eval...), returning the module as
        ``nn.Module.train`` does (mmdet's, mmseg's and mmpretrain's return None).

        A BatchNorm whose parameters are all frozen (every BatchNorm under Fixed, Mona,
        LoRA...) then runs in eval mode, as with mmdet's ``norm_eval=True``: its running
        statistics are frozen backbone state too (they would drift on the target data, and an
        adapter-only checkpoint, which holds what trains, would not carry them). A BatchNorm
        the method trains (BitFit, NormTuning) updates them as upstream, and they are saved
        with it. Full (which freezes nothing) is left exactly as upstream.
        """
        super().train(mode)
        if mode and getattr(self, '_peft_freezes', False):  # (upstream __init__ may train())
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and \
                        not any(p.requires_grad for p in module.parameters(recurse=False)):
                    module.eval()
        if mode and not _RANDOM_CHECK_DEFERRED:
            self._check_random()
        return self

    def _warn_if_random(self, module: nn.Module, args: tuple) -> None:
        """Forward pre-hook: the random-weights check (:meth:`_check_random`) at the first
        training forward. Not while torch.compile traces: the flag it flips would be a
        guard, and every compiled forward would be compiled twice; there the first
        ``train()`` of the loop checks instead."""
        if torch.compiler.is_compiling() or not self.training:
            return
        self._check_random()

    def _check_random(self) -> None:
        """Once, when training starts — after the runner's ``init_weights``, ``load_from``
        and resume (the first training forward, or a ``train()`` other than the optimizer
        constructor's, which comes before any weights load) — say if the PEFT method
        freezes backbone weights that nothing has loaded (see
        :attr:`peft_pretrained_source`): the adapters would train on a frozen random
        backbone."""
        if getattr(self, '_peft_random_checked', True):  # (upstream __init__ may train())
            return
        self._peft_random_checked = True  # a flag, not handle.remove(): deepcopies share it
        if self._peft_freezes and self.peft_pretrained_source is None:
            MMLogger.get_current_instance().warning(
                f'{type(self).__name__} (peft={_describe(self.peft_cfg)}) trains with NO '
                'pretrained weights: its frozen backbone weights are random, so the '
                'adapters train on a frozen random backbone. Set model.backbone.init_cfg='
                "dict(type='Pretrained', checkpoint=PATH, prefix='backbone') (prefix: where "
                "the backbone's keys sit in the file; omit it for a plain backbone file) or "
                'load_from=PATH.')

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Upstream random init (adapters keep their own), or load
        ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` in any layout the
        spec converts. Adapters keep their own init either way, unless the checkpoint holds
        them (a trained checkpoint, e.g. of the Mona authors' code): then they load too."""
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

    # ------------------------------------------------------------------ the record
    def peft_record(self) -> dict:
        """What a state dict of this backbone says about it, so any loader can tell what it
        holds: the PEFT method and settings, every adapter's width (0: removed by MiMi),
        whether adapters are in deploy form, and the pretrained weights it started from.

        The base is :attr:`peft_base` (path, prefix and the digest of the tensors that were
        loaded) when known, else the ``init_cfg`` checkpoint (no digest: not loaded yet)."""
        from ..peft.mona import MonaDeploy
        adapters = dict(iter_adapters(self))
        base = dict(self.peft_base) if self.peft_base and self.peft_base.get('checkpoint') \
            else None
        init_cfg = self.init_cfg if isinstance(self.init_cfg, dict) else {}
        if base is None and init_cfg.get('type') == 'Pretrained' and \
                init_cfg.get('checkpoint'):
            base = dict(checkpoint=str(init_cfg['checkpoint']), prefix=init_cfg.get('prefix'),
                        sha256=None)
        return dict(peft=self.peft_cfg,
                    structure={n: adapters[n].hidden_dims if n in adapters else 0
                               for n in self._peft_built},
                    deploy=any(isinstance(a, MonaDeploy) for a in adapters.values()),
                    base=base)

    def check_peft_record(self, record: dict, strict: bool = False) -> None:
        """Refuse weights trained with another PEFT method or other settings, saying both.

        Weights of a method that adds no modules (Full, Fixed, BitFit, NormTuning, Partial)
        are pretrained weights for any method, unless ``strict`` (a resume: the optimizer
        state and the schedule belong to the recorded method).

        Args:
            record: A backbone record from a state dict's metadata.
            strict: Any difference counts.
        """
        theirs = record.get('peft')
        if theirs is None or _settings(theirs) == _settings(self.peft_cfg):
            return
        if not strict and not record.get('structure'):
            return
        what = 'resume' if strict else 'load'
        raise ValueError(
            f'cannot {what}: these weights were trained with peft={_describe(theirs)}, but '
            f'this backbone is built with peft={_describe(self.peft_cfg)}. Build the model '
            "with the checkpoint's settings to resume or test it; to start another method "
            "from its weights, load them as pretrained weights: backbone.init_cfg=dict("
            "type='Pretrained', checkpoint=..., prefix='backbone').")

    def _apply_record(self, record: dict, state_dict: dict, prefix: str) -> bool:
        """Make this backbone what the record says the weights are (pruned widths, deploy
        form) and compose an adapter-only state with its pretrained base; refuse weights
        of another method or other settings. Returns whether a base was composed in."""
        from mona_mm.pruning.structure import apply_structure
        from ..peft.reparameterize import reparameterize
        self.check_peft_record(record)
        mine = self.peft_record()
        structure = record.get('structure')
        if structure and structure != mine['structure']:
            if set(structure) != set(mine['structure']):
                raise ValueError(
                    f'the checkpoint\'s adapters ({len(structure)}) are not this '
                    f'backbone\'s ({len(mine["structure"])}), e.g. '
                    f'{sorted(set(structure) ^ set(mine["structure"]))[:3]}')
            apply_structure(self, {n: w for n, w in structure.items()
                                   if w != mine['structure'][n]})
            MMLogger.get_current_instance().info(
                f'{type(self).__name__}: adapter widths rebuilt from the checkpoint record '
                f'({sum(1 for w in structure.values() if w == 0)} removed adapters)')
        if record.get('deploy') and not mine['deploy']:
            reparameterize(self)
        if record.get('adapter_only'):
            return self._compose_base(record.get('base'), state_dict, prefix,
                                      record.get(OVERRIDE_KEY))
        return False

    def _compose_base(self, base: Optional[dict], state_dict: dict, prefix: str,
                      override: Optional[dict] = None) -> bool:
        """Put the pretrained backbone an adapter-only state dict records under its
        adapters: every frozen tensor the state dict lacks comes from the base (the frozen
        tensors the base lacks travel in the state dict itself).

        The base must be the one the adapters were trained on: the digest of the frozen
        tensors it gives (:meth:`peft_base_digest`) must equal the recorded one, else a
        ValueError names both (unless the override forces it). A record without a digest
        (files of earlier versions) composes with a warning.

        Args:
            base: The record's ``dict(checkpoint=..., prefix=..., sha256=...)``.
            state_dict: The loader's state dict (composed in place).
            prefix: This backbone's prefix in it.
            override: ``dict(checkpoint=..., prefix=..., force=...)`` from
                ``load_adapter_checkpoint(base_checkpoint=..., force_base=...)``: another
                file (same digest required unless ``force``).

        Returns:
            Whether the base was composed in (False: the frozen tensors are all there).
        """
        own = self.state_dict()
        frozen = [k for k in own if not inside_adapter(k, self)]
        if all(prefix + k in state_dict for k in frozen):
            return False  # the backbone's own weights are there already
        override = override or {}
        recorded = base.get('checkpoint') if base else None
        path = override.get('checkpoint') or recorded
        if not path:
            raise ValueError(
                'this is an adapter-only checkpoint that records no pretrained backbone; '
                f'load it {_WITH_BASE}')
        base_prefix = override.get('prefix') if override.get('checkpoint') else \
            base.get('prefix')
        from mona_mm.utils.checkpoint_io import load_checkpoint_file
        if '://' not in str(path) and not osp.exists(path):
            raise FileNotFoundError(
                f'adapter-only checkpoint: its pretrained backbone {path} is not there. Put '
                f'the file there, or load it {_WITH_BASE}')
        sd = extract_state_dict(load_checkpoint_file(path), base_prefix, source=str(path))
        if self.peft_spec.convert is not None:
            sd, _ = self.peft_spec.convert(sd, self)
        # what the state dict holds itself (frozen tensors the base lacks) stays, so the
        # digest covers the tensors the base gives, as when it was recorded
        digest, taken = self.peft_base_digest(
            {k: v for k, v in sd.items() if prefix + k not in state_dict})
        if not taken:
            raise ValueError(
                f'adapter-only checkpoint: its pretrained backbone {path} holds none of the '
                f'frozen tensors of this {self.peft_spec.name} backbone '
                f'({type(self).__name__}) (prefix {base_prefix!r}; its first keys: '
                f'{list(sd)[:4]}); load it {_WITH_BASE}')
        expected = base.get('sha256') if base else None
        logger = MMLogger.get_current_instance()
        if not expected:
            logger.warning(
                f'{type(self).__name__}: this adapter-only checkpoint records no digest of '
                f'its pretrained backbone (written by an earlier mona_mm), so nothing checks '
                f'that {path} is the backbone its adapters were trained on; if that file '
                'was replaced or re-trained since, the predictions are wrong. Re-export it '
                '(tools/model_converters/export_adapters.py) to record the digest.')
        elif digest != expected:
            what = (f'the given base {path}' if override.get('checkpoint')
                    and str(path) != str(recorded) else f'the file at {path}')
            msg = (f'adapter-only checkpoint: {what} is not the pretrained backbone its '
                   f'adapters were trained on: the frozen backbone tensors it gives have '
                   f'sha256 {_short(digest)}, the checkpoint records {_short(expected)} (for '
                   f'{recorded}). ')
            if not override.get('force'):
                raise ValueError(
                    msg + f'Put the original file back, or load the checkpoint {_WITH_BASE}. '
                    'To compose with this file anyway (the model is then not the trained '
                    'one): force_base=True (--force-base).')
            logger.warning(msg + 'Composing with it anyway (force_base): the predictions '
                           'are not those of the trained model.')
        for k in taken:
            state_dict[prefix + k] = sd[k]
        self._set_base(dict(checkpoint=str(path), prefix=base_prefix, sha256=digest), taken)
        logger.info(f'{type(self).__name__}: adapter-only checkpoint composed with its '
                    f'pretrained backbone {path} (sha256 {_short(digest)})')
        return True

    def _frozen_keys(self) -> List[str]:
        """State-dict keys of what the PEFT method keeps frozen (no adapter, not trained):
        what a pretrained base gives."""
        params = dict(self.named_parameters())
        return [k for k in self.state_dict() if not inside_adapter(k, self) and
                not (k in params and self.peft_method.is_trainable(k, self))]

    def peft_base_digest(self, tensors: Dict[str, Tensor]) -> Tuple[str, List[str]]:
        """The digest by which this backbone identifies a pretrained base:
        :func:`base_digest` of the frozen tensors (see ``_frozen_keys``) it takes from
        ``tensors`` (the base's backbone part in this backbone's layout), and their keys.

        Only what the backbone receives counts, so the same weights give the same digest
        whatever else the file holds (heads, adapters, optimizer state) or how it is saved.

        Args:
            tensors: ``{key: tensor}`` in this backbone's layout (converted).
        """
        keys = [k for k in self._frozen_keys() if k in tensors]
        return base_digest({k: tensors[k] for k in keys}), keys

    def _set_base(self, base: Optional[dict], keys=None, source: Optional[str] = None) -> None:
        """Remember what filled the frozen tensors (see :attr:`peft_base`)."""
        self.peft_base = base
        self._peft_base_keys = None if keys is None else frozenset(keys)
        self.peft_pretrained_source = source or (base or {}).get('checkpoint') or 'state dict'

    def peft_base_extras(self) -> Optional[List[str]]:
        """Keys of the frozen tensors of this backbone that its pretrained base does not
        supply (e.g. the per-stage norms of a detection Swin on a classifier's weights):
        adapter-only checkpoints carry them. None when unknown (the base was not loaded by
        this backbone)."""
        if self._peft_base_keys is None:
            return None
        return [k for k in self.state_dict() if not inside_adapter(k, self)
                and k not in self._peft_base_keys]

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None) -> None:
        """Load a pretrained backbone (path or any mmengine scheme) into this backbone.

        Args:
            checkpoint: The file.
            prefix: Take only the keys under this prefix (e.g. ``'backbone'``, mmengine's
                ``Pretrained`` meaning). Without it, keys under ``backbone.`` are taken if
                there are any, else all.
        """
        from mona_mm.utils.checkpoint_io import load_checkpoint_file
        from mona_mm.utils.pretrained import check_pretrained_exists
        check_pretrained_exists(checkpoint)  # names MONA_MM_PRETRAINED and the source
        ckpt = load_checkpoint_file(checkpoint, map_location='cpu')
        state_dict = extract_state_dict(ckpt, prefix, source=str(checkpoint))
        self._peft_source = str(checkpoint)
        try:
            self.load_state_dict(state_dict, strict=False)
        finally:
            self._peft_source = None
        converted = state_dict if self.peft_spec.convert is None else \
            self.peft_spec.convert(state_dict, self)[0]
        digest, taken = self.peft_base_digest(converted)
        self._set_base(dict(checkpoint=str(checkpoint), prefix=prefix, sha256=digest), taken)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # Every load (init_cfg, load_from, resume, load_state_dict) passes here first: bring
        # the backbone part of `state_dict` (the loader's own copy) into this model's layout,
        # check it fits and log once; then the upstream class loads as it always does.
        record = local_metadata.get(RECORD_KEY) if isinstance(local_metadata, dict) else None
        pretrained = getattr(self, '_peft_source', None) is not None
        composed = bool(record) and not pretrained and \
            self._apply_record(record, state_dict, prefix)
        self._peft_last_loaded = None
        self._normalise_checkpoint(state_dict, prefix)
        if self._peft_last_loaded and not composed and not pretrained:
            # a full state dict filled the frozen tensors (load_from, resume,
            # load_state_dict): weights trained with this very method keep the base their
            # record names (their frozen tensors are that base's); any other state dict is
            # itself the base, of a path only its loader knows
            base = (record or {}).get('base')
            same = record and _settings(record.get('peft') or {}) == _settings(self.peft_cfg)
            if same and base and base.get('checkpoint') and not record.get('adapter_only'):
                self._set_base(dict(base), None, 'state dict')
            else:
                self._set_base(None, self._peft_last_loaded, 'state dict')
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
            if any(k in own for k in mine) and self.peft_pretrained_source is None:
                raise ValueError(
                    f'{type(self).__name__}: the state dict holds only adapter tensors (an '
                    'adapter-only checkpoint) and this backbone has no pretrained weights '
                    f'loaded; load it {_WITH_BASE}, or init the backbone from its pretrained '
                    'checkpoint first')
            return  # adapters onto the loaded pretrained backbone, or another module's keys
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
        adapters = [n for n, _ in iter_adapters(self)]
        have = {n for n in adapters
                if any(is_adapter.get(k) and k.startswith(n + '.') for k in sd)}
        if have and len(have) < len(adapters):
            lost = [n for n in adapters if n not in have]
            raise ValueError(
                f'{source or "state dict"} has the tensors of {len(have)} adapters but none of '
                f'{len(lost)} others (e.g. {lost[:3]}): adapters MiMi removed, from a '
                'checkpoint whose structure record was stripped? Rebuild its structure first '
                '(mona_mm.pruning.apply_checkpoint_structure) or build the matching config.')
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
        loaded_adapters = [k for k in sd if k in own and is_adapter[k]]
        self._peft_last_loaded = loaded
        msg = (f'{type(self).__name__}[{prefix or "backbone"}] <- {source or "state dict"} '
               f'({layout}): {len(loaded)} tensors loaded, ')
        if loaded_adapters:  # a checkpoint with its adapters (trained ones)
            msg += f'{len(loaded_adapters)} adapter tensors loaded'
            if missing_adapters:
                msg += (f', {len(missing_adapters)} adapter tensors missing (kept '
                        f'initialised): {", ".join(missing_adapters)}')
        else:
            msg += f'{len(missing_adapters)} adapter tensors newly initialised (expected)'
        if missing:
            msg += f'; missing (kept initialised): {", ".join(missing)}'
        if unexpected:
            msg += f'; unexpected (ignored): {", ".join(unexpected)}'
        MMLogger.get_current_instance().info(msg)


def checkpoint_records(state_dict: Optional[dict]) -> Dict[str, dict]:
    """``{backbone module name: record}`` from a state dict's metadata (empty without any).

    Args:
        state_dict: A (loaded) state dict, or None.
    """
    metadata = getattr(state_dict, '_metadata', None) or {}
    return {name: local[RECORD_KEY] for name, local in metadata.items()
            if isinstance(local, dict) and local.get(RECORD_KEY)}


def check_checkpoint_records(model: nn.Module, checkpoint: dict, strict: bool = True) -> None:
    """Check the backbone records of a checkpoint's state dict against ``model``'s PEFT
    backbones before anything (optimizer, pruned structure) is restored from it.

    Args:
        model: The model (wrapped or not).
        checkpoint: A loaded checkpoint dict.
        strict: Any other method or setting is refused (resume); else only weights whose
            method adds adapters (see ``check_peft_record``).
    """
    records = checkpoint_records(checkpoint.get('state_dict'))
    model = getattr(model, 'module', model)
    for name, module in model.named_modules():
        if is_peft_backbone(module) and name in records:
            module.check_peft_record(records[name], strict)


def base_digest(tensors: Dict[str, Tensor]) -> str:
    """SHA-256 over tensors in sorted key order, each as ``name|dtype|shape|`` and its bytes:
    how a pretrained backbone is identified (a PEFT backbone hashes the frozen tensors it
    takes from the file, see ``PEFTBackboneMixin.peft_base_digest``).

    Not the file's SHA-256: re-saving the same tensors (another container, optimizer state
    dropped, other meta) keeps it, while any changed value, key, dtype or shape changes it.

    Args:
        tensors: ``{key: tensor}``.
    """
    digest = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        digest.update(f'{key}|{t.dtype}|{tuple(t.shape)}|'.encode())
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _short(digest: Optional[str]) -> str:
    return f'{digest[:16]}...' if digest else 'none'


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
