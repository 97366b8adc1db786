"""LoRand (Yin et al., CVPR 2023): a bottleneck whose projections are sums of low-rank
``A G B`` products."""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mona_mm.registry import PEFT_METHODS
from .adapter import check_init
from .base import BaseAdapter, BasePEFTMethod, check_positive_int


class LoRandProjection(nn.Module):
    """``x -> sum_b x A_b G_b B_b`` with A: in x k, G: k x k, B: k x out (no bias).

    Args:
        in_dims: Input width.
        out_dims: Output width.
        branches: Number of branches. Defaults to 4.
        inner: Inner size ``k``. Defaults to 8.
        zero_init: Start the kernels ``G`` at zero (the projection then outputs 0).
    """

    def __init__(self, in_dims: int, out_dims: int, branches: int = 4, inner: int = 8,
                 zero_init: bool = False) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(branches, in_dims, inner))
        self.G = nn.Parameter(torch.empty(branches, inner, inner))
        self.B = nn.Parameter(torch.empty(branches, inner, out_dims))
        self.zero_init = zero_init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for t in (self.A, self.B):
            nn.init.kaiming_uniform_(t, a=math.sqrt(5))
        if self.zero_init:
            nn.init.zeros_(self.G)
        else:
            nn.init.kaiming_uniform_(self.G, a=math.sqrt(5))

    def weight(self) -> Tensor:
        """The (in x out) matrix the branches sum to."""
        return torch.einsum('bik,bkl,blo->io', self.A, self.G, self.B)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight()


#: How a :class:`LoRandAdapter` starts (its ``init`` argument).
LORAND_INITS = ('zero_up', 'kaiming')


class LoRandAdapter(BaseAdapter):
    """``x + up(GELU(down(x)))`` with C -> C/2 -> C LoRand projections.

    Every factor ``A``, ``G``, ``B`` starts kaiming-uniform (``a=sqrt(5)``, the default of
    torch's layers), except, with ``init='zero_up'`` (default), the kernels ``G`` of the up
    projection, which start at zero: the adapter starts as the identity. ``init='kaiming'``
    leaves them kaiming-uniform too (no zero anywhere, as every adapter of the Mona authors'
    runs starts; their code publishes no LoRand).

    Args:
        in_dims: Channels ``C``.
        hidden_dims: Hidden width. Defaults to ``C // 2``.
        branches: Branches per projection. Defaults to 4.
        inner: Inner size of each branch. Defaults to 8.
        init: ``'zero_up'`` or ``'kaiming'`` (see above). Defaults to ``'zero_up'``.
    """

    def __init__(self, in_dims: int, hidden_dims: Optional[int] = None, branches: int = 4,
                 inner: int = 8, init: str = 'zero_up') -> None:
        super().__init__()
        self.init = check_init('LoRandAdapter', init, LORAND_INITS)
        self.in_dims = in_dims
        self.branches, self.inner = branches, inner
        hidden = in_dims // 2 if hidden_dims is None else hidden_dims
        self.down = LoRandProjection(in_dims, hidden, branches, inner)
        self.up = LoRandProjection(hidden, in_dims, branches, inner,
                                   zero_init=init == 'zero_up')

    @property
    def hidden_dims(self) -> int:
        return self.down.B.shape[-1]

    def hidden_param_dims(self) -> Dict[str, Tuple[int, ...]]:
        # hidden unit i = output i of the down projection = input i of the up projection
        return {'down.B': (2, ), 'up.A': (1, )}

    def new_with_width(self, width: int) -> 'LoRandAdapter':
        return LoRandAdapter(self.in_dims, width, self.branches, self.inner, init=self.init)

    def vanished(self) -> None:
        """No unit left: the up projection has no bias, so its output is exactly 0 and the
        adapter is the identity: removed."""
        return None

    def forward(self, x: Tensor, hw_shape: Optional[Tuple[int, int]] = None) -> Tensor:
        return x + self.up(F.gelu(self.down(x)))


@PEFT_METHODS.register_module(name='LoRand')
class LoRandMethod(BasePEFTMethod):
    """LORAND: a LoRand adapter on the attention output and on the FFN output (before each
    residual), like ADAPTER; only they train.

    Args:
        branches: Branches per projection. Defaults to 4.
        inner: Inner size per branch. Defaults to 8.
        init: ``'zero_up'`` (the up projection's kernels start at zero: the network starts
            as the pretrained one) or ``'kaiming'`` (every factor kaiming-uniform: no
            zero-init, as all adapters of the Mona authors' runs; the paper configs use it,
            the authors' code has no LoRand to check against). See :class:`LoRandAdapter`.
            Defaults to ``'zero_up'``.
    """

    name = 'LORAND'

    def __init__(self, branches: int = 4, inner: int = 8, init: str = 'zero_up') -> None:
        self.branches = check_positive_int('LoRand', 'branches', branches)
        self.inner = check_positive_int('LoRand', 'inner', inner)
        self.init = check_init('LoRand', init, LORAND_INITS)

    def build_adapters(self, embed_dims: int, index: int,
                       points: Sequence[str]) -> Dict[str, nn.Module]:
        self._require(('attn_out', 'mlp_out'), points)
        return {
            point: LoRandAdapter(embed_dims, branches=self.branches, inner=self.inner,
                                 init=self.init)
            for point in ('attn_out', 'mlp_out')
        }
