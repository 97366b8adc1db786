"""The bottleneck adapter (Houlsby et al.) and the ADAPTER baseline."""
from typing import Dict, Optional, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor

from mona_mm.registry import PEFT_METHODS
from .base import BaseAdapter, BasePEFTMethod, check_dropout, check_positive_int


class BottleneckAdapter(BaseAdapter):
    """``Linear(C->m) -> GELU -> Dropout -> Linear(m->C)``, times ``scale``, plus ``x`` if
    ``residual``.

    The up projection starts at zero, so a fresh adapter leaves the pretrained network as it
    was (the usual choice; the Mona authors do not publish theirs).

    Args:
        in_dims: Channels ``C``.
        hidden_dims: Bottleneck width ``m``. Defaults to 64.
        dropout: Dropout after the GELU. Defaults to 0.1.
        residual: Add the input to the output. Defaults to True.
        scale: Multiplier of the bottleneck branch. Defaults to 1.0.
    """

    def __init__(self, in_dims: int, hidden_dims: int = 64, dropout: float = 0.1,
                 residual: bool = True, scale: float = 1.0) -> None:
        super().__init__()
        self.in_dims = in_dims
        self.residual = residual
        self.scale = scale
        self.down = nn.Linear(in_dims, hidden_dims)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(hidden_dims, in_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_(self.down.weight, std=.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    @property
    def hidden_dims(self) -> int:
        return self.down.out_features

    def hidden_param_dims(self) -> Dict[str, Tuple[int, ...]]:
        return {'down.weight': (0, ), 'down.bias': (0, ), 'up.weight': (1, )}

    def new_with_width(self, width: int) -> 'BottleneckAdapter':
        return BottleneckAdapter(self.in_dims, width, self.dropout.p, self.residual, self.scale)

    def forward(self, x: Tensor, hw_shape: Optional[Tuple[int, int]] = None) -> Tensor:
        out = self.up(self.dropout(F.gelu(self.down(x)))) * self.scale
        return x + out if self.residual else out


@PEFT_METHODS.register_module(name='Adapter')
class AdapterMethod(BasePEFTMethod):
    """ADAPTER: a bottleneck adapter on the attention output and on the MLP output, each
    before its residual add; only the adapters train.

    Args:
        hidden_dims: Bottleneck width. Defaults to 64.
        dropout: Dropout inside the adapter. Defaults to 0.1.
    """

    name = 'ADAPTER'

    def __init__(self, hidden_dims: int = 64, dropout: float = 0.1) -> None:
        self.hidden_dims = check_positive_int('Adapter', 'hidden_dims', hidden_dims)
        self.dropout = check_dropout('Adapter', 'dropout', dropout)

    def build_adapters(self, embed_dims: int, index: int,
                       points: Sequence[str]) -> Dict[str, nn.Module]:
        self._require(('attn_out', 'mlp_out'), points)
        return {
            point: BottleneckAdapter(embed_dims, self.hidden_dims, self.dropout)
            for point in ('attn_out', 'mlp_out')
        }
