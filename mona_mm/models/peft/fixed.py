import torch.nn as nn

from mona_mm.registry import PEFT_METHODS
from .base import BasePEFTMethod


@PEFT_METHODS.register_module(name='Fixed')
class FixedBackbone(BasePEFTMethod):
    """FIXED: the backbone is frozen; only neck and heads train."""

    name = 'FIXED'

    def is_trainable(self, name: str, backbone: nn.Module) -> bool:
        return False
