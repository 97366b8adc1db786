"""The Mona adapter (Yin et al., "5%>100%", CVPR 2025), exactly as the authors' runs used it."""
from typing import Dict, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor

from mona_mm.registry import PEFT_METHODS
from .base import BaseAdapter, BasePEFTMethod


class MonaOp(nn.Module):
    """Multi-cognitive convolution: averaged depthwise convs + identity, then 1x1 conv + identity.

    Args:
        channels: Hidden width ``m``.
        kernel_sizes: Depthwise kernel sizes (the paper: 3, 5, 7).
    """

    def __init__(self, channels: int, kernel_sizes: Sequence[int] = (3, 5, 7)) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels)
            for k in kernel_sizes)
        self.projector = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x: (B, m, H, W)."""
        x = sum(conv(x) for conv in self.convs) / len(self.convs) + x
        return x + self.projector(x)


class Mona(BaseAdapter):
    """Mona: scaled LayerNorm -> down -> MonaOp -> GELU -> dropout -> up, plus the residual.

    Parameters with ``hidden_dims=64``: ``133 * in_dims + 9728``.

    Args:
        in_dims: Token channels ``C``.
        hidden_dims: Hidden width ``m``. Defaults to 64.
        kernel_sizes: Depthwise kernel sizes. Defaults to (3, 5, 7).
        dropout: Dropout after the GELU. Defaults to 0.1.
    """

    def __init__(self, in_dims: int, hidden_dims: int = 64,
                 kernel_sizes: Sequence[int] = (3, 5, 7), dropout: float = 0.1) -> None:
        super().__init__()
        self.in_dims = in_dims
        self.kernel_sizes = tuple(kernel_sizes)
        self.norm = nn.LayerNorm(in_dims)
        self.gamma = nn.Parameter(torch.full((in_dims, ), 1e-6))
        self.gammax = nn.Parameter(torch.ones(in_dims))
        self.project1 = nn.Linear(in_dims, hidden_dims)
        self.adapter_conv = MonaOp(hidden_dims, kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.project2 = nn.Linear(hidden_dims, in_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The published init: Linear trunc-normal(0.02) with zero bias, convs keep PyTorch's."""
        for lin in (self.project1, self.project2):
            trunc_normal_(lin.weight, std=.02)
            nn.init.zeros_(lin.bias)

    def init_weights(self) -> None:
        # Called by mmengine's BaseModule.init_weights of the enclosing model.
        self.reset_parameters()

    @property
    def hidden_dims(self) -> int:
        return self.project1.out_features

    def hidden_param_dims(self) -> Dict[str, Tuple[int, ...]]:
        # a hidden channel runs through project1 (rows), every depthwise conv (its own
        # kernel), the 1x1 conv (as input *and* output channel) and project2 (columns)
        dims = {'project1.weight': (0, ), 'project1.bias': (0, ), 'project2.weight': (1, ),
                'adapter_conv.projector.weight': (0, 1), 'adapter_conv.projector.bias': (0, )}
        for i in range(len(self.adapter_conv.convs)):
            dims[f'adapter_conv.convs.{i}.weight'] = (0, )
            dims[f'adapter_conv.convs.{i}.bias'] = (0, )
        return dims

    def new_with_width(self, width: int) -> 'Mona':
        return Mona(self.in_dims, width, self.kernel_sizes, self.dropout.p)

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        """Args:
            x: Tokens (B, N, C) with N = H * W.
            hw_shape: (H, W).
        """
        B, N, _ = x.shape
        H, W = hw_shape
        h = self.norm(x) * self.gamma + x * self.gammax
        h = self.project1(h)
        h = h.reshape(B, H, W, -1).permute(0, 3, 1, 2)
        h = self.adapter_conv(h)
        h = h.permute(0, 2, 3, 1).reshape(B, N, -1)
        h = self.dropout(F.gelu(h))
        return x + self.project2(h)


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
        return {
            point: Mona(embed_dims, self.hidden_dims, self.kernel_sizes, self.dropout)
            for point in ('post_attn', 'post_mlp')
        }
