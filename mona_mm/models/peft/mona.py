"""The Mona adapter (Yin et al., "5%>100%", CVPR 2025), exactly as the authors' runs used it."""
import numbers
from typing import Dict, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor

from mona_mm.registry import PEFT_METHODS
from .base import (BaseAdapter, BasePEFTMethod, BiasAdapter, check_dropout,
                   check_positive_int)


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

    def folded_depthwise(self) -> Tuple[Tensor, Tensor]:
        """One depthwise kernel (m, 1, K, K) and bias equal to ``mean(convs) + identity``."""
        k = max(c.kernel_size[0] for c in self.convs)
        n = len(self.convs)
        kernel = None
        for c in self.convs:
            p = (k - c.kernel_size[0]) // 2
            w = F.pad(c.weight, (p, p, p, p))
            kernel = w if kernel is None else kernel + w
        kernel = kernel / n
        # the identity as a centre tap, built out of place (torch.compile, checkpoints)
        eye = F.pad(torch.ones_like(kernel[:, :, :1, :1]), (k // 2, ) * 4)
        bias = sum(c.bias for c in self.convs) / n
        return kernel + eye, bias

    def folded_projector(self) -> Tuple[Tensor, Tensor]:
        """``(P + I, b)``: the 1x1 conv with its identity, as a Linear weight."""
        w = self.projector.weight[:, :, 0, 0]
        return w + torch.eye(w.shape[0], dtype=w.dtype, device=w.device), self.projector.bias


class MonaReference(BaseAdapter):
    """Mona written straightforwardly, as the authors do: scaled LayerNorm -> down ->
    (B, m, H, W) -> three depthwise convs averaged + identity -> 1x1 conv + identity ->
    (B, N, m) -> GELU -> dropout -> up, plus the residual. Kept as the numerical reference
    (and the ``mona_reference`` benchmark mode); :class:`Mona` computes the same faster.

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

    def new_with_width(self, width: int) -> 'MonaReference':
        return type(self)(self.in_dims, width, self.kernel_sizes, self.dropout.p)

    kept_when_vanished = ('project2.bias', )

    def vanished(self) -> BiasAdapter:
        """No neuron left: the hidden path is 0, so Mona is ``x + project2.bias``."""
        return BiasAdapter(self.project2.bias, residual=True,
                           source='project2.bias').train(self.training)

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        """Args:
            x: Tokens (B, N, C): ``N - H * W`` extra tokens (cls, distillation, register
                tokens; none for Swin), then the H x W grid, row-major.
            hw_shape: (H, W).

        The grid tokens go through the depthwise convs on their grid; every extra token goes
        through them alone, as a 1x1 map (zero padding: each conv sees only its centre tap
        and bias). Everything else in Mona is token-wise.
        """
        B, N, _ = x.shape
        H, W = hw_shape
        E = _extra_tokens(N, hw_shape)
        h = self.norm(x) * self.gamma + x * self.gammax
        h = self.project1(h)
        g = h[:, E:].reshape(B, H, W, -1).permute(0, 3, 1, 2)
        g = self.adapter_conv(g)
        h_grid = g.permute(0, 2, 3, 1).reshape(B, H * W, -1)
        if E:  # each extra token alone, as a 1x1 map (the convs see only their centre tap)
            e = self.adapter_conv(h[:, :E].reshape(B * E, -1, 1, 1)).reshape(B, E, -1)
            h_grid = torch.cat([e, h_grid], dim=1)
        h = self.dropout(F.gelu(h_grid))
        return x + self.project2(h)


def _extra_tokens(n: int, hw_shape: Tuple[int, int]) -> int:
    extra = n - hw_shape[0] * hw_shape[1]
    if extra < 0:
        raise ValueError(f'Mona got {n} tokens for a {hw_shape[0]}x{hw_shape[1]} grid')
    return extra


def _depthwise_tokens(h: Tensor, hw_shape: Tuple[int, int], kernel: Tensor,
                      bias: Tensor) -> Tensor:
    """A depthwise conv (zero padding) over the grid tokens of ``h`` (B, N, m), read as a
    channels-last view; extra tokens (before the grid) as 1x1 maps: centre tap and bias."""
    B, N, m = h.shape
    H, W = hw_shape
    E = _extra_tokens(N, hw_shape)
    k = kernel.shape[-1]
    g = F.conv2d(h[:, E:].reshape(B, H, W, m).permute(0, 3, 1, 2), kernel, bias,
                 padding=k // 2, groups=m)
    g = g.permute(0, 2, 3, 1).reshape(B, H * W, m)
    if not E:
        return g
    e = torch.addcmul(bias, h[:, :E], kernel[:, 0, k // 2, k // 2])
    return torch.cat([e, g], dim=1)


def _scaled_norm(x: Tensor, weight: Tensor, bias: Tensor, gamma: Tensor, gammax: Tensor,
                 eps: float) -> Tensor:
    """``LayerNorm(x) * gamma + x * gammax`` as one ``layer_norm`` (gamma folded into its
    affine) and one ``addcmul``."""
    return torch.addcmul(F.layer_norm(x, x.shape[-1:], weight * gamma, bias * gamma, eps), x,
                         gammax)


class ScaledNormDown(torch.autograd.Function):
    """``linear(LayerNorm(x) * gamma + x * gammax, W, b)`` that does not store the normed
    (C-wide) input of the down-projection.

    Autograd would keep that input for the gradient of ``W``; here only ``x`` is kept and
    the normed tensor is rebuilt in the backward (element-wise work, no matmul) with the ops
    and dtypes of the forward, so it is the same tensor. The backward is written out (aten's
    own layer-norm backward, the two matmuls autograd would run, the products' rules) rather
    than asking autograd inside it, so ``torch.compile`` traces it into the same graph.
    Saves ``C`` values per token per Mona.
    """

    @staticmethod
    def forward(ctx, x: Tensor, norm_weight: Tensor, norm_bias: Tensor, gamma: Tensor,
                gammax: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        normed = F.layer_norm(x, x.shape[-1:], norm_weight * gamma, norm_bias * gamma, eps)
        out = F.linear(torch.addcmul(normed, x, gammax), weight, bias)
        ctx.save_for_backward(x, norm_weight, norm_bias, gamma, gammax, weight)
        ctx.eps = eps
        ctx.norm_dtype = normed.dtype  # what autocast ran the layer norm in
        ctx.mm_dtype = out.dtype  # ... and the linear
        ctx.bias_dtype = bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, nw, nb, gamma, gammax, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dt = ctx.norm_dtype
        x_norm = x.to(dt)
        w_eff, b_eff = (nw * gamma).to(dt), (nb * gamma).to(dt)
        normed, mean, rstd = torch.ops.aten.native_layer_norm(x_norm, x.shape[-1:], w_eff,
                                                               b_eff, ctx.eps)
        h = torch.addcmul(normed, x, gammax)
        grad2d = grad.reshape(-1, grad.shape[-1])
        g_weight = (grad2d.t() @ h.to(ctx.mm_dtype).reshape(-1, h.shape[-1])).to(
            weight.dtype) if needs[5] else None
        g_bias = grad2d.sum(0).to(ctx.bias_dtype) if needs[6] else None
        g_h = (grad @ weight.to(ctx.mm_dtype)).to(h.dtype)
        tokens = tuple(range(x.dim() - 1))
        g_gammax = (g_h * x).sum(tokens).to(gammax.dtype) if needs[4] else None
        g_x, g_w_eff, g_b_eff = torch.ops.aten.native_layer_norm_backward(
            g_h.to(dt), x_norm, x.shape[-1:], mean, rstd, w_eff, b_eff,
            [needs[0], needs[1] or needs[3], needs[2] or needs[3]])
        if needs[0]:
            g_x = (g_x.to(h.dtype) + g_h * gammax).to(x.dtype)
        g_nw = (g_w_eff * gamma).to(nw.dtype) if needs[1] else None
        g_nb = (g_b_eff * gamma).to(nb.dtype) if needs[2] else None
        g_gamma = (g_w_eff * nw + g_b_eff * nb).to(gamma.dtype) if needs[3] else None
        return g_x, g_nw, g_nb, g_gamma, g_gammax, g_weight, g_bias, None


class Mona(MonaReference):
    """Mona with the reference's parameters and numerics, computed with fewer kernels and
    less stored memory.

    * the scaled LayerNorm is one ``layer_norm`` with weight/bias pre-multiplied by
      ``gamma`` plus one ``addcmul`` for ``x * gammax``, fused with the down-projection in
      :class:`ScaledNormDown` so its C-wide output is not kept for the backward;
    * the three depthwise convs, their average and the identity are folded into one
      depthwise kernel built on the fly (gradients still reach the three kernels);
    * the 1x1 conv and its identity become one ``linear`` on the token layout, so the
      hidden map is never permuted into a separate NCHW copy: the depthwise conv reads a
      channels-last view of the tokens.

    Matches :class:`MonaReference` to float32 rounding (tests: rtol 1e-5, atol 1e-5 on
    outputs and gradients). Same constructor and state-dict keys as the reference.
    """

    #: Under ``recompute=('adapters', )`` (see :class:`~..backbones.injection.BlockAdapters`).
    recompute_kwargs = dict(recomputed=True)

    def forward(self, x: Tensor, hw_shape: Tuple[int, int], recomputed: bool = False) -> Tensor:
        """Args:
            x, hw_shape: As :meth:`MonaReference.forward`.
            recomputed: The adapter runs inside an activation checkpoint
                (``recompute=('adapters', )``). Under torch.compile it then computes as
                :class:`MonaReference` (same parameters, same result to rounding): inductor
                (torch 2.14) cannot partition the folded kernels' parameter-only products
                inside a checkpoint, and the checkpoint keeps only the input anyway.
        """
        if recomputed and torch.compiler.is_compiling():
            return super().forward(x, hw_shape)
        norm, p1 = self.norm, self.project1
        args = (x, norm.weight, norm.bias, self.gamma, self.gammax, p1.weight, p1.bias)
        if torch.is_grad_enabled() and any(t.requires_grad for t in args):
            h = ScaledNormDown.apply(*args, norm.eps)
        else:
            h = p1(_scaled_norm(*args[:5], norm.eps))
        kernel, bias = self.adapter_conv.folded_depthwise()
        h = _depthwise_tokens(h, hw_shape, kernel, bias)
        weight, bias = self.adapter_conv.folded_projector()
        h = self.dropout(F.gelu(F.linear(h, weight, bias)))
        return x + self.project2(h)

    def to_deploy(self) -> 'MonaDeploy':
        """The inference form: folded kernel and projector stored as plain layers."""
        return MonaDeploy.from_mona(self)


class MonaDeploy(BaseAdapter):
    """Re-parameterised Mona for inference (see :func:`mona_mm.models.reparameterize`):
    LayerNorm with ``gamma`` folded in, one depthwise conv (the three kernels, their
    average and the identity) and one ``Linear`` (the 1x1 conv plus identity).

    Args:
        in_dims: Token channels.
        hidden_dims: Hidden width.
        kernel_size: Size of the folded depthwise kernel.
    """

    def __init__(self, in_dims: int, hidden_dims: int, kernel_size: int) -> None:
        super().__init__()
        self.in_dims = in_dims
        self.norm = nn.LayerNorm(in_dims)
        self.gammax = nn.Parameter(torch.ones(in_dims))
        self.project1 = nn.Linear(in_dims, hidden_dims)
        self.dw = nn.Conv2d(hidden_dims, hidden_dims, kernel_size, padding=kernel_size // 2,
                            groups=hidden_dims)
        self.proj = nn.Linear(hidden_dims, hidden_dims)
        self.project2 = nn.Linear(hidden_dims, in_dims)

    @classmethod
    def from_mona(cls, mona: MonaReference) -> 'MonaDeploy':
        kernel, kbias = mona.adapter_conv.folded_depthwise()
        pw, pb = mona.adapter_conv.folded_projector()
        new = cls(mona.in_dims, mona.hidden_dims, kernel.shape[-1])
        with torch.no_grad():
            new.norm.weight.copy_(mona.norm.weight * mona.gamma)
            new.norm.bias.copy_(mona.norm.bias * mona.gamma)
            new.norm.eps = mona.norm.eps
            new.gammax.copy_(mona.gammax)
            new.project1.load_state_dict(mona.project1.state_dict())
            new.dw.weight.copy_(kernel)
            new.dw.bias.copy_(kbias)
            new.proj.weight.copy_(pw)
            new.proj.bias.copy_(pb)
            new.project2.load_state_dict(mona.project2.state_dict())
        ref = mona.project1.weight
        return new.to(ref.device, ref.dtype).train(mona.training)

    @property
    def hidden_dims(self) -> int:
        return self.project1.out_features

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        h = self.project1(torch.addcmul(self.norm(x), x, self.gammax))
        h = _depthwise_tokens(h, hw_shape, self.dw.weight, self.dw.bias)
        return x + self.project2(F.gelu(self.proj(h)))


@PEFT_METHODS.register_module(name='Mona')
class MonaMethod(BasePEFTMethod):
    """MONA: two Mona adapters per block, after each residual (one after each block of a
    backbone whose blocks offer only ``post_mlp``, e.g. ConvNeXt); only they train.

    Args:
        hidden_dims: Hidden width of every Mona. Defaults to 64.
        kernel_sizes: Depthwise kernel sizes. Defaults to (3, 5, 7).
        dropout: Dropout inside Mona. Defaults to 0.1.
    """

    name = 'MONA'

    def __init__(self, hidden_dims: int = 64, kernel_sizes: Sequence[int] = (3, 5, 7),
                 dropout: float = 0.1) -> None:
        method = type(self).__name__[:-len('Method')]  # Mona, MonaReference
        self.hidden_dims = check_positive_int(method, 'hidden_dims', hidden_dims)
        ks = tuple(kernel_sizes) if isinstance(kernel_sizes, Sequence) and \
            not isinstance(kernel_sizes, str) else None
        if not ks or not all(isinstance(k, numbers.Integral) and not isinstance(k, bool)
                             and k > 0 and k % 2 == 1 for k in ks):
            raise ValueError(f'{method}: kernel_sizes must be a non-empty sequence of odd '
                             f'positive ints, e.g. (3, 5, 7) (got {kernel_sizes!r})')
        self.kernel_sizes = tuple(int(k) for k in ks)
        self.dropout = check_dropout(method, 'dropout', dropout)

    adapter_cls = None  # Mona (set below: the class is defined above the method)

    def build_adapters(self, embed_dims: int, index: int,
                       points: Sequence[str]) -> Dict[str, nn.Module]:
        # after each residual where the block has two (Swin, ViT), after the block where it
        # has one (ConvNeXt)
        chosen = [p for p in ('post_attn', 'post_mlp') if p in points]
        if not chosen:
            self._require(('post_mlp', ), points)
        return {
            point: self.adapter_cls(embed_dims, self.hidden_dims, self.kernel_sizes,
                                    self.dropout)
            for point in chosen
        }


@PEFT_METHODS.register_module(name='MonaReference')
class MonaReferenceMethod(MonaMethod):
    """MONA with the straightforward :class:`MonaReference` adapters (benchmark baseline)."""

    name = 'MONA-REF'
    adapter_cls = MonaReference


MonaMethod.adapter_cls = Mona
