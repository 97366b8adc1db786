from typing import Dict, Sequence

import torch.nn as nn

from mona_mm.registry import PEFT_METHODS
from .adapter import BOTTLENECK_INITS, BottleneckAdapter, check_init
from .base import BasePEFTMethod, check_dropout, check_positive, check_positive_int


@PEFT_METHODS.register_module(name='AdaptFormer')
class AdaptFormerMethod(BasePEFTMethod):
    """ADAPTFORMER: one bottleneck per block, parallel to the MLP, scaled by 0.1:
    ``x = x + drop_path(mlp(norm2(x))) + 0.1 * adapter(norm2(x))``.

    The adapter reads the *normed* input, as in the AdaptFormer paper (the Mona authors' code
    feeds it the block input instead).

    Args:
        hidden_dims: Bottleneck width. Defaults to 64.
        scale: Branch scale. Defaults to 0.1.
        dropout: Dropout inside the adapter. Defaults to 0.1.
        init: ``'zero_up'`` (the up projection starts at zero: the branch starts at 0) or
            ``'trunc_normal'`` (both projections trunc-normal std 0.02, zero biases: the Mona
            authors' runs; the paper configs use it). See
            :class:`~mona_mm.models.peft.adapter.BottleneckAdapter`. Defaults to
            ``'zero_up'``.
    """

    name = 'ADAPTFORMER'

    def __init__(self, hidden_dims: int = 64, scale: float = 0.1, dropout: float = 0.1,
                 init: str = 'zero_up') -> None:
        self.hidden_dims = check_positive_int('AdaptFormer', 'hidden_dims', hidden_dims)
        self.scale = check_positive('AdaptFormer', 'scale', scale)
        self.dropout = check_dropout('AdaptFormer', 'dropout', dropout)
        self.init = check_init('AdaptFormer', init, BOTTLENECK_INITS)

    def build_adapters(self, embed_dims: int, index: int,
                       points: Sequence[str]) -> Dict[str, nn.Module]:
        self._require(('mlp_parallel', ), points)
        return {
            'mlp_parallel':
            BottleneckAdapter(embed_dims, self.hidden_dims, self.dropout, residual=False,
                              scale=self.scale, init=self.init)
        }
