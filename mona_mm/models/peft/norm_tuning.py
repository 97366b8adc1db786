import torch.nn as nn

from mona_mm.registry import PEFT_METHODS
from .base import BasePEFTMethod


@PEFT_METHODS.register_module(name='NormTuning')
class NormTuning(BasePEFTMethod):
    """NORMTUNING (LN-tune): every LayerNorm of the backbone trains (patch embedding,
    blocks, patch merging and output norms)."""

    name = 'NORMTUNING'

    def is_trainable(self, name: str, backbone: nn.Module) -> bool:
        owner = backbone.get_submodule(name.rsplit('.', 1)[0]) if '.' in name else backbone
        return isinstance(owner, nn.LayerNorm)
