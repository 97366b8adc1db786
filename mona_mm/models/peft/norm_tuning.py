import torch.nn as nn

from mona_mm.registry import PEFT_METHODS
from .base import BasePEFTMethod


@PEFT_METHODS.register_module(name='NormTuning')
class NormTuning(BasePEFTMethod):
    """NORMTUNING (LN-tune): every norm layer of the backbone trains: the LayerNorms of a
    Transformer (patch embedding, blocks, patch merging and output norms), the BatchNorms and
    GroupNorms of a CNN (their affine parameters; a trained BatchNorm also keeps updating its
    running statistics, which adapter-only checkpoints then carry)."""

    name = 'NORMTUNING'

    def is_trainable(self, name: str, backbone: nn.Module) -> bool:
        owner = backbone.get_submodule(name.rsplit('.', 1)[0]) if '.' in name else backbone
        return isinstance(owner, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm))
