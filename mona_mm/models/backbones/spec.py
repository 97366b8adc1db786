"""Where adapters go in a backbone family, as data.

A :class:`BackboneSpec` tells the generic injection (:mod:`.injection`) which modules of an
upstream backbone are blocks, how each adapter point of a block is reached (which submodule's
input or output it rewrites), how tokens are laid out and where their grid size comes from,
and which checkpoint layouts of the family can be converted. Specs are registered against the
upstream classes they describe; adding a backbone family is one spec file (see
``specs/convnext.py``) plus tests.
"""
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch.nn as nn

#: How an adapter point is realised inside a block.
#:   ``output``:   the adapter rewrites the output of ``module`` (``''``: the block itself)
#:   ``residual``: the adapter rewrites the residual stream that enters ``module`` (a norm) and
#:                 that ``consumer`` receives as its ``identity`` keyword (the stream after the
#:                 previous residual add: ``x = consumer(module(x), identity=x)``)
#:   ``parallel``: the adapter reads the input of ``source`` (default: ``module``) and its
#:                 output is added to the module's output (a branch beside it)
#:   ``post_residual``: for post-norm blocks (``x = x + module(source(x))``, Swin V2): the
#:                 adapter rewrites the residual stream after that add; ``module`` (the norm
#:                 closing the branch) returns ``adapter(x + out) - x``, ``x`` being the input
#:                 of ``source`` (the branch's first module)
#:   ``stream``:   for pre-norm blocks that add the stream back in their own code
#:                 (``x = x + drop_path(branch(norm(x)))``: BEiT, EVA-02): the adapter
#:                 rewrites the stream entering ``module`` (the branch's norm) and ``consumer``
#:                 (the module whose output the block adds to the stream, e.g. the shared drop
#:                 path) gets ``adapter(x) - x`` added to its next output
POINT_KINDS = ('output', 'residual', 'parallel', 'post_residual', 'stream')

#: Token layouts: (B, N, C) tokens on an H x W grid, optionally preceded by extra tokens
#: (cls / distillation / register tokens: N = extra + H * W), (B, C, H, W) maps, or
#: (B, H, W, C) maps (SAM's encoder; windowed attention outputs are such maps per window).
LAYOUTS = ('tokens', 'nchw', 'nhwc')

#: Where the grid size of a block's tokens comes from:
#:   ``block_arg``:   the block's positional argument 1 (Swin's ``hw_shape``)
#:   ``patch_embed``: element 1 of the output of the backbone's ``patch_embed`` (ViT)
#:   ``tensor``:      the map itself (NCHW and NHWC layouts)
#:   ``patch_embed_input``: the input of the backbone's ``patch_embed`` (B, C, H, W) over its
#:                    ``patch_size`` (HiViT: its embedding returns sub-patch maps, not the grid)
GRID_SOURCES = ('block_arg', 'patch_embed', 'tensor', 'patch_embed_input')


@dataclass(frozen=True)
class AdapterPoint:
    """One place in a block where an adapter can sit.

    Args:
        kind: One of :data:`POINT_KINDS`.
        module: Path of the submodule, relative to the block (``''``: the block).
        consumer: For ``residual``: the module whose ``identity`` keyword carries the stream;
            for ``stream``: the module whose next output the block adds to the stream.
        index: If the module returns a tuple, the element the adapter rewrites.
        source: For ``parallel`` (optional) and ``post_residual``: the module whose input the
            adapter reads (the residual stream entering the branch).
    """

    kind: str
    module: str = ''
    consumer: str = ''
    index: Optional[int] = None
    source: str = ''

    def __post_init__(self) -> None:
        if self.kind not in POINT_KINDS:
            raise ValueError(f'AdapterPoint kind must be one of {POINT_KINDS}, got {self.kind!r}')
        if self.kind in ('residual', 'stream') and not (self.module and self.consumer):
            raise ValueError(f'a {self.kind} point needs `module` (the norm) and `consumer`')
        if self.kind == 'post_residual' and not (self.module and self.source):
            raise ValueError('a post_residual point needs `module` (the norm closing the '
                             'branch) and `source` (the branch\'s first module)')
        if self.source and self.kind not in ('parallel', 'post_residual'):
            raise ValueError(f'`source` is for parallel and post_residual points, not '
                             f'{self.kind!r}')


#: Converts a backbone state dict (keys relative to the backbone) of any layout the family
#: knows into the model's own; returns the new dict and the name of the layout it found.
Converter = Callable[[Dict, nn.Module], Tuple[Dict, str]]


@dataclass
class BackboneSpec:
    """How adapters are injected into one backbone family.

    Args:
        name: Family name, shown in logs and summaries (``'Swin'``, ``'ViT'``...).
        blocks: Regular expressions, each matching a whole module name, selecting the
            blocks (``r'stages\.\d+\.blocks\.\d+'``); blocks are taken in module order,
            which is forward order.
        points: ``{point name: AdapterPoint}`` the blocks offer (point names are those the
            PEFT methods ask for, see ``mona_mm.models.peft.base.ADAPTER_POINTS``).
        width: Attribute path, relative to a block, of a layer whose channel count is the
            block's: a norm (LayerNorm, BatchNorm, GroupNorm) or a conv/linear layer (its
            output channels); a tuple: the first path the block has (blocks of two kinds).
            Read only for methods that add adapters or change blocks.
        layout: One of :data:`LAYOUTS`.
        grid: One of :data:`GRID_SOURCES`.
        qkv: Path (relative to a block) of the fused qkv projection LoRA adapts: an
            ``nn.Linear`` or an ``nn.MultiheadAttention`` (its ``in_proj_weight``).
        no_qkv: Why a family has no ``qkv`` LoRA can adapt (in LoRA's refusal).
        recompute: ``{part: submodule path}`` that ``recompute=(part, ...)`` may
            checkpoint besides ``'adapters'``.
        convert: Checkpoint converter (see :data:`Converter`); None: the upstream keys only.
        extra_tokens: What extra tokens (``tokens`` layout with N > H * W) are, for docs.
        block_classes: Class names a block must have, where ``blocks`` also matches other
            modules (PVT v1's position embedding sits among its blocks); empty: any.
        block_has: Submodule paths a block must have, where ``blocks`` also matches blocks of
            another kind of the same class that take no adapters (HiViT's MLP-only early
            blocks have no ``attn``); empty: any.
    """

    name: str
    blocks: Tuple[str, ...]
    points: Dict[str, AdapterPoint]
    width: Union[str, Tuple[str, ...]]
    layout: str = 'tokens'
    grid: str = 'block_arg'
    qkv: Optional[str] = None
    no_qkv: str = ''
    recompute: Dict[str, str] = field(default_factory=dict)
    convert: Optional[Converter] = None
    extra_tokens: str = 'none'
    block_classes: Tuple[str, ...] = ()
    block_has: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f'layout must be one of {LAYOUTS}, got {self.layout!r}')
        if self.grid not in GRID_SOURCES:
            raise ValueError(f'grid must be one of {GRID_SOURCES}, got {self.grid!r}')
        self.blocks = tuple(self.blocks)
        self.block_has = tuple(self.block_has)

    def find_blocks(self, backbone: nn.Module) -> List[Tuple[str, nn.Module]]:
        """``[(name, block)]`` in forward order (module registration order)."""
        found = [(n, m) for n, m in backbone.named_modules()
                 if n and any(re.fullmatch(p, n) for p in self.blocks)
                 and (not self.block_classes or type(m).__name__ in self.block_classes)
                 and all(_has_submodule(m, p) for p in self.block_has)]
        if not found:
            raise ValueError(f'{self.name} spec: no module of {type(backbone).__name__} '
                             f'matches {self.blocks}'
                             + (f' with submodules {self.block_has}' if self.block_has else ''))
        return found


def _has_submodule(module: nn.Module, path: str) -> bool:
    """Whether ``module`` has a submodule at ``path`` (an attribute set to None is none)."""
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


_SPECS: Dict[str, BackboneSpec] = {}


def _class_path(cls: type) -> str:
    return f'{cls.__module__}.{cls.__qualname__}'


def register_spec(spec: BackboneSpec, *classes: str) -> BackboneSpec:
    """Register ``spec`` for upstream backbone classes, named by their import path (nothing
    is imported until such a backbone is built). Exact classes, not subclasses: a subclass may
    change the blocks and needs its own entry.

    Args:
        spec: The family spec.
        *classes: ``'package.module.Class'`` of each upstream class it describes.
    """
    for path in classes:
        _SPECS[path] = spec
    return spec


def get_spec(cls: type) -> BackboneSpec:
    """The spec registered for upstream class ``cls``.

    Args:
        cls: An upstream backbone class.
    """
    path = _class_path(cls)
    if path in _SPECS:
        return _SPECS[path]
    raise KeyError(f'no adapter spec for {path}; backbones with a spec: '
                   f'{", ".join(sorted(_SPECS))} (adding one: docs/adding_a_backbone.md)')


def registered_specs() -> Dict[str, BackboneSpec]:
    """All registered ``{upstream class path: spec}``."""
    return dict(_SPECS)
