import torch.nn as nn

from mona_mm.registry import PEFT_METHODS
from .base import BasePEFTMethod


@PEFT_METHODS.register_module(name='Full')
class FullFineTuning(BasePEFTMethod):
    """FULL: every backbone parameter trains."""

    name = 'FULL'

    def is_trainable(self, name: str, backbone: nn.Module) -> bool:
        return True
