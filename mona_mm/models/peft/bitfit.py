import torch.nn as nn

from mona_mm.registry import PEFT_METHODS
from .base import BasePEFTMethod


@PEFT_METHODS.register_module(name='BitFit')
class BitFit(BasePEFTMethod):
    """BITFIT: every bias of the backbone trains.

    As in the authors' code, "bias" is any parameter whose own name contains ``bias``, so the
    relative position bias tables train too.
    """

    name = 'BITFIT'

    def is_trainable(self, name: str, backbone: nn.Module) -> bool:
        return 'bias' in name.rsplit('.', 1)[-1]
