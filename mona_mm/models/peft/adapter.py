"""The bottleneck adapter (Houlsby et al.) and the ADAPTER baseline."""
from typing import Dict, Optional, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor

from mona_mm.registry import PEFT_METHODS
from .base import (BaseAdapter, BasePEFTMethod, BiasAdapter, check_dropout,
                   check_positive_int)


#: How a :class:`BottleneckAdapter` starts (its ``init`` argument).
BOTTLENECK_INITS = ('zero_up', 'trunc_normal')


def check_init(method: str, value, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError naming the method, the field
    ``init`` and the valid values.

    Args:
        method: Method or adapter name as configs spell it, for the message.
        value: The configured ``init``.
        choices: The valid values.
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f'{method}: init must be one of {tuple(choices)} (got {value!r})')
    return value


class BottleneckAdapter(BaseAdapter):
    """``Linear(C->m) -> GELU -> Dropout -> Linear(m->C)``, times ``scale``, plus ``x`` if
    ``residual``.

    Two initialisations (``init``); both give the down projection a trunc-normal weight
    (std 0.02, mmengine's ``trunc_normal_``: bounds at +-2 absolute, i.e. untruncated in
    practice) and a zero bias:

    - ``'zero_up'`` (default): the up projection starts at zero (weight and bias), so a fresh
      adapter leaves the pretrained network as it was (the usual choice, Houlsby et al.).
    - ``'trunc_normal'``: the up projection as the down one (trunc-normal std 0.02 weight,
      zero bias). This is what the Mona authors' runs start from (github.com/Leiyi-Hu/mona,
      ``swin_transformer_adapter.py`` / ``_adaptformer.py``, the same in their mmdet, mmseg
      and mmcls copies): their adapter builds two plain ``nn.Linear`` and their backbone's
      ``init_weights`` then applies ``trunc_normal_(std=.02)`` and zero bias to every
      ``nn.Linear`` of the backbone, adapters included, before the pretrained weights load
      (which hold no adapter tensors).

    Args:
        in_dims: Channels ``C``.
        hidden_dims: Bottleneck width ``m``. Defaults to 64.
        dropout: Dropout after the GELU. Defaults to 0.1.
        residual: Add the input to the output. Defaults to True.
        scale: Multiplier of the bottleneck branch. Defaults to 1.0.
        init: ``'zero_up'`` or ``'trunc_normal'`` (see above). Defaults to ``'zero_up'``.
    """

    def __init__(self, in_dims: int, hidden_dims: int = 64, dropout: float = 0.1,
                 residual: bool = True, scale: float = 1.0, init: str = 'zero_up') -> None:
        super().__init__()
        self.init = check_init('BottleneckAdapter', init, BOTTLENECK_INITS)
        self.in_dims = in_dims
        self.residual = residual
        self.scale = scale
        self.down = nn.Linear(in_dims, hidden_dims)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(hidden_dims, in_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as ``init`` says (also what the backbone's random ``init_weights``
        restores)."""
        trunc_normal_(self.down.weight, std=.02)
        nn.init.zeros_(self.down.bias)
        if self.init == 'trunc_normal':
            trunc_normal_(self.up.weight, std=.02)
        else:
            nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    @property
    def hidden_dims(self) -> int:
        return self.down.out_features

    def hidden_param_dims(self) -> Dict[str, Tuple[int, ...]]:
        return {'down.weight': (0, ), 'down.bias': (0, ), 'up.weight': (1, )}

    def new_with_width(self, width: int) -> 'BottleneckAdapter':
        return BottleneckAdapter(self.in_dims, width, self.dropout.p, self.residual, self.scale,
                                 init=self.init)

    kept_when_vanished = ('up.bias', )

    def vanished(self) -> BiasAdapter:
        """No neuron left: ``up(0) * scale = up.bias * scale`` remains, plus ``x`` if
        ``residual`` (the scale stays a multiplier, not folded into the bias)."""
        return BiasAdapter(self.up.bias, self.residual, self.scale,
                           source='up.bias').train(self.training)

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
        init: ``'zero_up'`` (the up projection starts at zero: the network starts as the
            pretrained one) or ``'trunc_normal'`` (both projections trunc-normal std 0.02,
            zero biases: the Mona authors' runs; the paper configs use it). See
            :class:`BottleneckAdapter`. Defaults to ``'zero_up'``.
    """

    name = 'ADAPTER'

    def __init__(self, hidden_dims: int = 64, dropout: float = 0.1,
                 init: str = 'zero_up') -> None:
        self.hidden_dims = check_positive_int('Adapter', 'hidden_dims', hidden_dims)
        self.dropout = check_dropout('Adapter', 'dropout', dropout)
        self.init = check_init('Adapter', init, BOTTLENECK_INITS)

    def build_adapters(self, embed_dims: int, index: int,
                       points: Sequence[str]) -> Dict[str, nn.Module]:
        self._require(('attn_out', 'mlp_out'), points)
        return {
            point: BottleneckAdapter(embed_dims, self.hidden_dims, self.dropout,
                                     init=self.init)
            for point in ('attn_out', 'mlp_out')
        }
