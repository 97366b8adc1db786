import torch.nn as nn

from mona_mm.registry import PEFT_METHODS
from .base import BasePEFTMethod, check_positive_int


@PEFT_METHODS.register_module(name='Partial')
class PartialTuning(BasePEFTMethod):
    """PARTIAL-k: only the last ``num_blocks`` blocks of the backbone train (Swin: of its last
    stage).

    Args:
        num_blocks: How many trailing blocks train. Defaults to 1 (PARTIAL-1).
    """

    name = 'PARTIAL-1'

    def __init__(self, num_blocks: int = 1) -> None:
        self.num_blocks = check_positive_int('Partial', 'num_blocks', num_blocks)
        self.name = f'PARTIAL-{num_blocks}'

    def is_trainable(self, name: str, backbone: nn.Module) -> bool:
        # the blocks in forward order, as the backbone's spec lists them (for Swin: the
        # last blocks of the last stage)
        if self.num_blocks > len(backbone.peft_blocks):
            raise ValueError(f'Partial: num_blocks must be at most the backbone\'s '
                             f'{len(backbone.peft_blocks)} blocks (got {self.num_blocks})')
        blocks = backbone.peft_blocks[-self.num_blocks:]
        return any(name.startswith(block + '.') for block in blocks)
