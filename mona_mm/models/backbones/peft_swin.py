"""Swin Transformer with pluggable PEFT adapters (Mona by default), shared by mmdet, mmseg and
mmpretrain configs.

The network is mmdet's ``SwinTransformer`` (subclassed, not copied); each of its blocks is
rebuilt as a :class:`PEFTSwinBlock` that owns the same submodules (so checkpoint keys do not
change) plus an ``adapters`` dict filled by the chosen PEFT method.
"""
import re
from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmdet.models.backbones.swin import SwinTransformer, swin_converter
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor

from mona_mm.registry import MODELS, PEFT_METHODS
from ..peft.base import ADAPTER_POINTS, BasePEFTMethod, inside_adapter, iter_adapters


#: What ``PEFTSwinTransformer(recompute=...)`` can recompute in the backward.
RECOMPUTE_PARTS = ('adapters', 'attn', 'ffn')


class PEFTSwinBlock(nn.Module):
    """A Swin block whose forward has adapter points (see ``ADAPTER_POINTS``).

    Built from an mmdet ``SwinBlock`` by taking over its submodules: ``norm1``, ``attn``,
    ``norm2``, ``ffn`` keep their names, so pretrained keys load unchanged.

    Args:
        block: The mmdet ``SwinBlock`` to take over.
        adapters: ``{point: module}`` from the PEFT method.
        recompute: Parts whose activations are recomputed in the backward instead of
            stored (see ``PEFTSwinTransformer``): any of ``RECOMPUTE_PARTS``.
    """

    def __init__(self, block: nn.Module, adapters: Dict[str, nn.Module],
                 recompute: Sequence[str] = ()) -> None:
        super().__init__()
        self.with_cp = block.with_cp
        self.recompute = frozenset(recompute)
        self.norm1 = block.norm1
        self.attn = block.attn
        self.norm2 = block.norm2
        self.ffn = block.ffn
        unknown = set(adapters) - set(ADAPTER_POINTS)
        if unknown:
            raise ValueError(f'Unknown adapter points {sorted(unknown)}; '
                             f'valid points are {ADAPTER_POINTS}')
        self.adapters = nn.ModuleDict(adapters)

    def _recomputes(self, part: str) -> bool:
        return part in self.recompute and not self.with_cp and torch.is_grad_enabled()

    def _run(self, part: str, fn: Callable[..., Tensor], *args) -> Tensor:
        # Non-reentrant checkpointing keeps only `args` (the residual stream, which the next
        # layer stores anyway) and rebuilds the part's inner activations in the backward with
        # the same RNG state, so dropout/drop-path masks repeat exactly.
        if self._recomputes(part):
            return cp.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _adapt(self, point: str, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        adapter = self.adapters[point] if point in self.adapters else None
        return x if adapter is None else self._run('adapters', adapter, x, hw_shape)

    def _attn(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        return self.attn(self.norm1(x), hw_shape)  # drop path is applied inside attn

    def _mlp(self, x: Tensor) -> Tensor:
        return self.ffn.gamma2(self.ffn.layers(self.norm2(x)))

    def _inner_forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        identity = x
        x = self._run('attn', self._attn, x, hw_shape)
        x = identity + self._adapt('attn_out', x, hw_shape)
        x = self._adapt('post_attn', x, hw_shape)

        identity = x
        h = None
        if self._recomputes('ffn'):
            out = cp.checkpoint(self._mlp, x, use_reentrant=False)
        else:
            h = self.norm2(x)
            out = self.ffn.gamma2(self.ffn.layers(h))
        out = self._adapt('mlp_out', out, hw_shape)
        x = identity + self.ffn.dropout_layer(out)
        if 'mlp_parallel' in self.adapters:  # outside drop path, as AdaptFormer
            h = self.norm2(identity) if h is None else h
            x = x + self._run('adapters', self.adapters['mlp_parallel'], h, hw_shape)
        return self._adapt('post_mlp', x, hw_shape)

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        """Args:
            x: Tokens (B, H*W, C).
            hw_shape: (H, W).
        """
        # Non-reentrant checkpointing also saves memory when only adapters need gradients.
        if self.with_cp and torch.is_grad_enabled():
            return cp.checkpoint(self._inner_forward, x, hw_shape, use_reentrant=False)
        return self._inner_forward(x, hw_shape)


@MODELS.register_module()
class PEFTSwinTransformer(SwinTransformer):
    """Swin Transformer whose blocks carry PEFT adapters; Mona unless told otherwise.

    Inside the backbone only what the PEFT method marks trainable trains (for Mona: the
    adapters), also after ``model.train()``; necks and heads are not touched. Pretrained
    weights load from Microsoft's Swin release, mmpretrain Swin checkpoints and mmdet/mmseg
    Swin checkpoints (with or without ``backbone.``), via ``init_cfg`` or ``load_from``.

    Args:
        arch: ``'tiny'`` (default), ``'small'``, ``'base'``, ``'large'`` or a dict with
            ``embed_dims``, ``depths`` and ``num_heads``.
        peft: The PEFT method config, e.g. ``dict(type='Mona', hidden_dims=64)``; ``'Full'``
            and ``'Fixed'`` are the two trivial baselines.
        embed_dims, depths, num_heads: The arch spelled as mmdet/mmseg configs do (instead
            of ``arch``).
        recompute: Finer-grained activation checkpointing than ``with_cp`` (which recomputes
            whole blocks): any of ``'adapters'`` (every adapter keeps only its input; costs
            one extra adapter forward, cheap as adapters are small), ``'attn'`` (norm1 +
            window attention) and ``'ffn'`` (norm2 + MLP, whose 4x-wide hidden activation is
            the largest tensor a frozen block stores). Same outputs and gradients; less
            memory for more compute. Defaults to () (store everything).
        **kwargs: Everything mmdet's ``SwinTransformer`` accepts (``window_size``,
            ``out_indices``, ``drop_path_rate``, ``with_cp``, ``frozen_stages``,
            ``init_cfg``...); ``img_size`` (mmpretrain) means ``pretrain_img_size``;
            ``convert_weights`` is ignored (the checkpoint layout is detected).
    """

    arch_zoo = {
        'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
        'small': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
        'base': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
        'large': dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
    }

    def __init__(self, arch: Union[str, dict, None] = None,
                 peft: Union[dict, BasePEFTMethod, None] = dict(type='Mona'),
                 embed_dims: Optional[int] = None, depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None, recompute: Sequence[str] = (),
                 **kwargs) -> None:
        # mmdet/mmseg Swin configs spell the arch as embed_dims/depths/num_heads and
        # mmpretrain's as arch + img_size: accept both, so a downstream Swin config switches
        # with `backbone=dict(type='mona_mm.PEFTSwinTransformer')` alone.
        explicit = dict(embed_dims=embed_dims, depths=depths, num_heads=num_heads)
        given = {k: v for k, v in explicit.items() if v is not None}
        if given and arch is not None:
            raise ValueError('PEFTSwinTransformer: give either `arch` or embed_dims/depths/'
                             f'num_heads, not both (got arch={arch!r} and {sorted(given)})')
        if given:
            arch = dict(self.arch_zoo['tiny'], **given)
        arch = 'tiny' if arch is None else arch
        if 'img_size' in kwargs:  # mmpretrain's name
            kwargs.setdefault('pretrain_img_size', kwargs.pop('img_size'))
        # mmdet's flag for Microsoft's key layout: we detect the layout ourselves
        kwargs.pop('convert_weights', None)
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise ValueError(f'Unknown Swin arch {arch!r}; choose one of '
                                 f'{sorted(self.arch_zoo)} or pass a dict with embed_dims, '
                                 f'depths and num_heads')
            arch_cfg = self.arch_zoo[arch.lower()]
        else:
            missing = {'embed_dims', 'depths', 'num_heads'} - set(arch)
            if missing:
                raise ValueError(f'Custom Swin arch needs {sorted(missing)}')
            arch_cfg = dict(arch)
        self.arch = arch_cfg
        super().__init__(
            embed_dims=arch_cfg['embed_dims'],
            depths=tuple(arch_cfg['depths']),
            num_heads=tuple(arch_cfg['num_heads']),
            **kwargs)

        recompute = (recompute, ) if isinstance(recompute, str) else tuple(recompute)
        unknown = sorted(set(recompute) - set(RECOMPUTE_PARTS))
        if unknown:
            raise ValueError(f'PEFTSwinTransformer: cannot recompute {unknown}; `recompute` '
                             f'takes any of {RECOMPUTE_PARTS}')
        self.recompute = recompute
        if peft is None:
            peft = dict(type='Full')
        self.peft_method: BasePEFTMethod = (
            peft if isinstance(peft, BasePEFTMethod) else build_peft_method(peft))
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage.blocks):
                dims = block.norm1.normalized_shape[0]
                adapters = self.peft_method.build_adapters(dims, i, j)
                stage.blocks[j] = PEFTSwinBlock(block, adapters, recompute)
                self.peft_method.modify_block(stage.blocks[j], dims, i, j)
        self._set_trainable()

    # ------------------------------------------------------------------ trainability
    def _set_trainable(self) -> None:
        for name, param in self.named_parameters():
            param.requires_grad = self.peft_method.is_trainable(name, self)
        # frozen_stages still means frozen, adapters included (mmdet semantics)
        super()._freeze_stages()

    def train(self, mode: bool = True) -> 'PEFTSwinTransformer':
        """Switch mode; the PEFT trainability survives (mmdet's ``train`` re-freezes stages)."""
        nn.Module.train(self, mode)
        self._set_trainable()
        return self

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Return one NCHW map per ``out_indices`` as a tuple (what all three codebases take)."""
        return tuple(super().forward(x))

    # ------------------------------------------------------------------ pretrained weights
    def init_weights(self) -> None:
        """Random init (mmdet's), or load ``init_cfg=dict(type='Pretrained', checkpoint=...)``.

        Adapters keep their own published init either way.
        """
        init_cfg = self.init_cfg
        if not (isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'):
            super().init_weights()  # trunc-normal on every Linear, adapters' included
            for _, adapter in iter_adapters(self):
                if hasattr(adapter, 'reset_parameters'):
                    adapter.reset_parameters()
            return
        checkpoint = init_cfg.get('checkpoint')
        if not checkpoint:
            raise ValueError("init_cfg=dict(type='Pretrained') needs `checkpoint=<path>`")
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
        state_dict = extract_state_dict(ckpt)
        prefix = init_cfg.get('prefix')
        if prefix:
            prefix = prefix if prefix.endswith('.') else prefix + '.'
            state_dict = OrderedDict(
                (k[len(prefix):], v) for k, v in state_dict.items() if k.startswith(prefix))
        self._pretrained_source = str(checkpoint)
        try:
            self.load_state_dict(state_dict, strict=False)
        finally:
            self._pretrained_source = None
        self._is_init = True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs) -> None:
        # Runs for init_cfg and for load_from/resume: bring any supported layout under
        # `prefix` into ours (the dict is the loader's own copy), check it fits, log once.
        normalised = self._normalise_checkpoint(state_dict, prefix)
        if normalised is not None:
            self._check_and_log(*normalised, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def _normalise_checkpoint(self, state_dict: dict,
                              prefix: str) -> Optional[Tuple[Dict[str, Tensor], str]]:
        """Rewrite ``state_dict`` in place so its backbone keys are ours under ``prefix``.

        Returns the backbone part (keys without prefix) and the layout it came in, or None
        if there is no backbone part.
        """
        # torch and mmengine hand each child only the keys under its prefix, so a
        # backbone-only checkpoint given to load_from never reaches this point unmoved:
        # BackboneCheckpointHook puts its keys under `backbone.` first.
        mine = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                           if k.startswith(prefix))
        source = 'this layout'
        if not _has_swin_keys(mine):
            return None
        if any(k.startswith('layers.') for k in mine):
            mine = self._convert_official(mine)
            source = "Microsoft's Swin layout"
        mine = self._resize_tables(mine)
        for k in [k for k in state_dict if k.startswith(prefix)]:
            del state_dict[k]
        for k, v in mine.items():
            state_dict[prefix + k] = v
        return mine, source

    def _convert_official(self, sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
        out = OrderedDict()
        for k, v in swin_converter(sd).items():
            k = k[len('backbone.'):]
            if k.endswith('attn_mask') or k.startswith('head.'):
                continue  # buffers recomputed on the fly / classifier head
            last = len(self.stages) - 1
            if k.startswith('norm.') and last in self.out_indices:
                k = f'norm{last}.' + k[len('norm.'):]  # the release's final norm
            out[k] = v
        return out

    def _resize_tables(self, sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Bicubic-resize relative position tables for another window size (as mmdet does)."""
        own = self.state_dict()
        for k, table in list(sd.items()):
            if 'relative_position_bias_table' not in k or k not in own:
                continue
            L1, nH1 = table.shape
            L2, nH2 = own[k].shape
            if nH1 == nH2 and L1 != L2:
                S1, S2 = int(L1**0.5), int(L2**0.5)
                t = F.interpolate(table.permute(1, 0).reshape(1, nH1, S1, S1).float(),
                                  size=(S2, S2), mode='bicubic')
                sd[k] = t.view(nH2, L2).permute(1, 0).contiguous().to(table.dtype)
            if k.replace('bias_table', 'index') in sd and L1 != L2:
                sd.pop(k.replace('bias_table', 'index'))
        return sd

    def _check_and_log(self, sd: Dict[str, Tensor], source: str, prefix: str) -> None:
        own = self.state_dict()
        is_adapter = {k: inside_adapter(k, self) for k in own}
        mismatched = [f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}'
                      for k in sd if k in own and sd[k].shape != own[k].shape]
        unexpected = [k for k in sd if k not in own]
        missing = [k for k in own if k not in sd and not is_adapter[k]]
        missing_adapters = [k for k in own if k not in sd and is_adapter[k]]
        structural_unexpected = [k for k in unexpected if k.startswith(('stages.', 'patch_embed.'))]
        # an adapter-only state dict (no pretrained tensors at all) is partial by design
        has_pretrained = any(not is_adapter.get(k, False) for k in sd if k in own)
        structural_missing = [k for k in missing if k.startswith(('stages.', 'patch_embed.'))
                              ] if has_pretrained else []
        arch = f"embed_dims={self.arch['embed_dims']}, depths={tuple(self.arch['depths'])}"
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
                f'Swin checkpoint does not fit this arch ({arch}): {len(lines)} tensors differ, '
                f'e.g. ' + '; '.join(lines[:8]) + '. Set `arch` to the one the checkpoint was '
                'trained with.')
        loaded = sum(1 for k in sd if k in own)
        origin = getattr(self, '_pretrained_source', None) or 'state dict'
        msg = (f'PEFTSwinTransformer[{prefix or "backbone"}] <- {origin} ({source}): '
               f'{loaded} tensors loaded, {len(missing_adapters)} adapter tensors newly '
               f'initialised (expected)')
        if missing:
            msg += f'; missing (kept initialised): {", ".join(missing)}'
        if unexpected:
            msg += f'; unexpected (ignored): {", ".join(unexpected)}'
        MMLogger.get_current_instance().info(msg)


def build_peft_method(cfg: dict) -> BasePEFTMethod:
    """Build a PEFT method from ``dict(type=..., **kwargs)`` (whatever the default scope).

    Args:
        cfg: The backbone's ``peft`` field.
    """
    cfg = dict(cfg)
    name = cfg.pop('type', None)
    cls = PEFT_METHODS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise KeyError(f'{name!r} is not a registered PEFT method; known: '
                       f'{sorted(PEFT_METHODS.module_dict)}')
    return cls(**cfg)


def extract_state_dict(ckpt: dict) -> Dict[str, Tensor]:
    """The tensors of a checkpoint in any of the supported layouts (``state_dict``/``model``).

    Args:
        ckpt: What ``torch.load`` returned.
    """
    for key in ('state_dict', 'model'):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    sd = OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in ckpt.items()
                     if isinstance(v, Tensor))
    if any(k.startswith('backbone.') for k in sd):
        sd = _strip(sd, 'backbone.')
    return sd


def _strip(sd: Dict[str, Tensor], prefix: str) -> Dict[str, Tensor]:
    return OrderedDict((k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))


def _has_swin_keys(sd: Dict[str, Tensor]) -> bool:
    return any(k.startswith(('stages.', 'layers.')) and 'blocks.' in k for k in sd)
