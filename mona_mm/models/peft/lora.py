"""LoRA on the q and v parts of a block's fused qkv projection (Hu et al.; loralib defaults)."""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mona_mm.registry import PEFT_METHODS
from .base import BaseAdapter, BasePEFTMethod, check_positive, check_positive_int


class LoRAQKV(nn.Linear, BaseAdapter):
    """A fused qkv ``Linear`` plus low-rank updates on chosen parts (q, k, v).

    It *is* the pretrained Linear (same ``weight``/``bias`` names, so checkpoints load
    unchanged; both stay frozen) with ``lora_A`` (parts x r x C) and ``lora_B`` (parts x C x r).
    The output of part p gains ``scaling * x A_p^T B_p^T``.

    Args:
        in_features: ``C``.
        rank: ``r``. Defaults to 64.
        alpha: ``scaling = alpha / r``. Defaults to 1 (loralib's default).
        parts: Which of q (0), k (1), v (2) get an update. Defaults to (0, 2).
        bias: Whether the wrapped Linear has a bias.
    """

    frozen_param_names = ('weight', 'bias')

    def __init__(self, in_features: int, rank: int = 64, alpha: float = 1.0,
                 parts: Sequence[int] = (0, 2), bias: bool = True) -> None:
        nn.Linear.__init__(self, in_features, 3 * in_features, bias=bias)
        self.parts = tuple(parts)
        self.rank = rank
        self.alpha = alpha
        self.lora_A = nn.Parameter(torch.empty(len(self.parts), rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(len(self.parts), in_features, rank))
        self.reset_lora()

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> 'LoRAQKV':
        """Wrap an existing qkv Linear, sharing its weight and bias tensors."""
        lora = cls(linear.in_features, bias=linear.bias is not None, **kwargs)
        lora.weight = linear.weight
        lora.bias = linear.bias
        return lora

    def reset_lora(self) -> None:
        """loralib init: A kaiming-uniform (``a=sqrt(5)``, fan-in C: bound ``1/sqrt(C)``), B
        zero (the update starts at 0).

        This is also what the Mona authors' runs start from: their LoRA is loralib's
        ``MergedLinear`` (rank 64, q and v), whose own ``reset_parameters`` draws the stacked
        (2r, C) A the same way; their backbone init (trunc-normal on every ``nn.Linear``)
        reaches only the wrapped, frozen qkv weight, which the pretrained weights then
        replace. So LoRA has no other initialisation to choose (no ``init`` argument).
        """
        for a in self.lora_A:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def reset_parameters(self) -> None:
        # nn.Linear.__init__ calls this before lora_A exists; later calls only reset LoRA.
        if hasattr(self, 'lora_A'):
            self.reset_lora()
        else:
            nn.Linear.reset_parameters(self)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @property
    def hidden_dims(self) -> int:
        return self.lora_A.shape[1]

    def hidden_param_dims(self) -> Dict[str, Tuple[int, ...]]:
        return {'lora_A': (1, ), 'lora_B': (2, )}  # rank components

    def new_with_width(self, width: int) -> 'LoRAQKV':
        new = LoRAQKV(self.in_features, rank=width, alpha=self.alpha, parts=self.parts,
                      bias=self.bias is not None)
        # keep the scaling of the trained update: alpha / rank must not change with rank
        new.alpha = self.alpha * width / self.rank
        return new

    def vanished(self) -> Optional[nn.Module]:
        """Rank 0: the plain pretrained Linear again (same tensors). LoRA has no bias of its
        own (the frozen ``bias`` is the Linear's), so this is exactly zeroed ``lora_A/B``."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        lin.weight = self.weight
        lin.bias = self.bias
        return lin

    def delta_weight(self) -> Tensor:
        """The (3C x C) update LoRA adds to ``weight``."""
        C = self.in_features
        delta = self.weight.new_zeros(3 * C, C)
        for i, p in enumerate(self.parts):
            delta[p * C:(p + 1) * C] = (self.lora_B[i] @ self.lora_A[i]) * self.scaling
        return delta

    def forward(self, x: Tensor, hw_shape=None) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.rank == 0:
            return out
        C = self.in_features
        low = torch.einsum('...c,prc->...pr', x, self.lora_A)
        up = torch.einsum('...pr,pcr->...pc', low, self.lora_B) * self.scaling
        chunks = list(out.split(C, dim=-1))
        for i, p in enumerate(self.parts):
            chunks[p] = chunks[p] + up[..., i, :]
        return torch.cat(chunks, dim=-1)

    def merged(self) -> nn.Linear:
        """A plain Linear whose weight includes the update (for inference)."""
        delta = self.delta_weight().detach()
        if not torch.isfinite(delta).all():
            raise ValueError('LoRA update has non-finite values; refusing to merge')
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        lin = lin.to(self.weight.device, self.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight + delta)
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin


def merge_lora(model: nn.Module) -> int:
    """Replace every :class:`LoRAQKV` in ``model`` by its merged plain Linear.

    Args:
        model: Any module holding LoRA layers.

    Returns:
        How many layers were merged.
    """
    targets = [(n, m) for n, m in model.named_modules()
               if isinstance(m, (LoRAQKV, LoRAMultiheadAttention))]
    for name, mod in targets:
        model.set_submodule(name, mod.merged())
    return len(targets)


@PEFT_METHODS.register_module(name='LoRA')
class LoRAMethod(BasePEFTMethod):
    """LORA: low-rank updates of q and v in every block's qkv; only they train.

    Args:
        rank: LoRA rank. Defaults to 64.
        alpha: Scaling numerator (``alpha / rank``). Defaults to 1.
        parts: Which of q/k/v are adapted, as a string. Defaults to ``'qv'``.
    """

    name = 'LORA'

    def __init__(self, rank: int = 64, alpha: float = 1.0, parts: str = 'qv') -> None:
        letters = list(parts) if isinstance(parts, (str, list, tuple)) else [parts]
        if not letters or any(p not in ('q', 'k', 'v') for p in letters) or \
                len(set(letters)) != len(letters):
            raise ValueError(f"LoRA: parts must be distinct letters of 'qkv', e.g. 'qv' "
                             f'(got {parts!r})')
        self.rank = check_positive_int('LoRA', 'rank', rank)
        self.alpha = check_positive('LoRA', 'alpha', alpha)
        self.parts = tuple('qkv'.index(p) for p in letters)

    def modify_block(self, block: nn.Module, embed_dims: int, index: int, spec) -> None:
        if not spec.qkv:
            why = f' ({spec.no_qkv})' if spec.no_qkv else ''
            raise ValueError(f'LoRA needs a qkv projection; {spec.name} blocks name none'
                             f'{why}. Methods for it: any other (e.g. Mona, Adapter, BitFit)')
        target = block.get_submodule(spec.qkv)
        kwargs = dict(rank=self.rank, alpha=self.alpha, parts=self.parts)
        if isinstance(target, nn.MultiheadAttention):
            new = LoRAMultiheadAttention.from_attention(target, **kwargs)
        elif isinstance(target, nn.Linear) and target.out_features == 3 * target.in_features:
            new = LoRAQKV.from_linear(target, **kwargs)
        else:
            raise TypeError(f'LoRA target {spec.qkv} of {spec.name} blocks is a '
                            f'{type(target).__name__}; expected a fused qkv nn.Linear (C -> 3C) '
                            'or an nn.MultiheadAttention')
        block.set_submodule(spec.qkv, new)


class LoRAMultiheadAttention(nn.MultiheadAttention, BaseAdapter):
    """``nn.MultiheadAttention`` whose fused ``in_proj_weight`` gets LoRA updates on q/k/v.

    Same parameter names as the wrapped attention (``in_proj_weight``, ``in_proj_bias``,
    ``out_proj.*``; all frozen, shared with it) plus ``lora_A``/``lora_B`` as in
    :class:`LoRAQKV`; the forward runs torch's attention with ``in_proj_weight + delta``.
    Used where a backbone's attention is torch's module (mmseg's ViT, through mmcv).

    Args:
        embed_dims: ``C``.
        num_heads: Attention heads.
        rank: ``r``. Defaults to 64.
        alpha: ``scaling = alpha / r``. Defaults to 1.
        parts: Which of q (0), k (1), v (2) get an update. Defaults to (0, 2).
        **kwargs: The other arguments of ``nn.MultiheadAttention`` (``dropout``, ``bias``).
    """

    frozen_param_names = ('in_proj_weight', 'in_proj_bias', 'out_proj.weight', 'out_proj.bias')

    def __init__(self, embed_dims: int, num_heads: int, rank: int = 64, alpha: float = 1.0,
                 parts: Sequence[int] = (0, 2), **kwargs) -> None:
        nn.MultiheadAttention.__init__(self, embed_dims, num_heads, **kwargs)
        if not self._qkv_same_embed_dim or self.batch_first:
            raise ValueError('LoRAMultiheadAttention supports a fused in_proj_weight with '
                             'batch_first=False (what mmcv builds)')
        self.parts = tuple(parts)
        self.rank = rank
        self.alpha = alpha
        self.lora_A = nn.Parameter(torch.empty(len(self.parts), rank, embed_dims))
        self.lora_B = nn.Parameter(torch.zeros(len(self.parts), embed_dims, rank))
        LoRAQKV.reset_lora(self)

    @classmethod
    def from_attention(cls, attn: nn.MultiheadAttention, **kwargs) -> 'LoRAMultiheadAttention':
        """Wrap an existing attention, sharing its parameters."""
        new = cls(attn.embed_dim, attn.num_heads, dropout=attn.dropout,
                  bias=attn.in_proj_bias is not None, batch_first=attn.batch_first, **kwargs)
        new.in_proj_weight = attn.in_proj_weight
        new.in_proj_bias = attn.in_proj_bias
        new.out_proj = attn.out_proj
        return new.train(attn.training)

    in_features = property(lambda self: self.embed_dim)
    weight = property(lambda self: self.in_proj_weight)
    scaling = LoRAQKV.scaling
    hidden_dims = LoRAQKV.hidden_dims
    hidden_param_dims = LoRAQKV.hidden_param_dims
    delta_weight = LoRAQKV.delta_weight

    def new_with_width(self, width: int) -> 'LoRAMultiheadAttention':
        # alpha scales with the rank so the trained update keeps its scaling (as LoRAQKV)
        return LoRAMultiheadAttention(self.embed_dim, self.num_heads, rank=width,
                                      alpha=self.alpha * width / self.rank, parts=self.parts,
                                      dropout=self.dropout,
                                      bias=self.in_proj_bias is not None)

    def vanished(self) -> Optional[nn.Module]:
        """Rank 0: torch's attention again (same tensors; exact, as for :class:`LoRAQKV`)."""
        return self.merged(with_delta=False)

    def merged(self, with_delta: bool = True) -> nn.MultiheadAttention:
        """Torch's attention whose ``in_proj_weight`` includes the update (inference)."""
        attn = nn.MultiheadAttention(self.embed_dim, self.num_heads, dropout=self.dropout,
                                     bias=self.in_proj_bias is not None)
        attn.out_proj = self.out_proj
        attn.in_proj_bias = self.in_proj_bias
        if not with_delta:
            attn.in_proj_weight = self.in_proj_weight
            return attn.train(self.training)
        delta = self.delta_weight().detach()
        if not torch.isfinite(delta).all():
            raise ValueError('LoRA update has non-finite values; refusing to merge')
        attn = attn.to(self.in_proj_weight.device, self.in_proj_weight.dtype)
        with torch.no_grad():
            attn.in_proj_weight.copy_(self.in_proj_weight + delta)
        attn.in_proj_weight.requires_grad_(self.in_proj_weight.requires_grad)
        return attn.train(self.training)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask=None,
                need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False):
        weight = self.in_proj_weight + self.delta_weight() if self.rank else self.in_proj_weight
        return F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, weight, self.in_proj_bias,
            self.bias_k, self.bias_v, self.add_zero_attn, self.dropout, self.out_proj.weight,
            self.out_proj.bias, training=self.training, key_padding_mask=key_padding_mask,
            need_weights=need_weights, attn_mask=attn_mask,
            average_attn_weights=average_attn_weights, is_causal=is_causal)
