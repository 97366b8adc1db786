"""PEFT methods selectable with the backbone's ``peft`` field."""
from typing import Dict, Sequence

import torch.nn as nn

from mona_mm.registry import PEFT_METHODS
from .base import BasePEFTMethod
from .mona import Mona


@PEFT_METHODS.register_module(name='Full')
class FullFineTuning(BasePEFTMethod):
    """FULL: every backbone parameter trains."""

    name = 'FULL'

    def is_trainable(self, name: str, backbone: nn.Module) -> bool:
        return True


@PEFT_METHODS.register_module(name='Fixed')
class FixedBackbone(BasePEFTMethod):
    """FIXED: the backbone is frozen; only neck and heads train."""

    name = 'FIXED'

    def is_trainable(self, name: str, backbone: nn.Module) -> bool:
        return False


@PEFT_METHODS.register_module(name='Mona')
class MonaMethod(BasePEFTMethod):
    """MONA: two Mona adapters per Swin block, after each residual; only they train.

    Args:
        hidden_dims: Hidden width of every Mona. Defaults to 64.
        kernel_sizes: Depthwise kernel sizes. Defaults to (3, 5, 7).
        dropout: Dropout inside Mona. Defaults to 0.1.
    """

    name = 'MONA'

    def __init__(self, hidden_dims: int = 64, kernel_sizes: Sequence[int] = (3, 5, 7),
                 dropout: float = 0.1) -> None:
        self.hidden_dims = hidden_dims
        self.kernel_sizes = tuple(kernel_sizes)
        self.dropout = dropout

    def build_adapters(self, embed_dims: int, stage: int, block: int) -> Dict[str, nn.Module]:
        def make() -> Mona:
            return Mona(embed_dims, self.hidden_dims, self.kernel_sizes, self.dropout)

        return {'post_attn': make(), 'post_mlp': make()}
