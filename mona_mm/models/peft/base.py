"""What every adapter and every PEFT method provides, so code outside the backbone (MiMi
pruning, export, summaries) can find, measure and replace adapters without knowing their type.
"""
import math
import numbers
from collections import OrderedDict
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

# Where a block can host an adapter (each backbone spec says which points its blocks offer
# and how they are reached, see mona_mm.models.backbones.spec):
#   attn_out:     f(attn(norm1(x)))            applied to the attention branch, before its residual
#   post_attn:    f(x, hw_shape)               applied after the attention residual (Mona #1)
#   mlp_parallel: x + mlp(h) + f(h), h=norm2(x) a parallel branch beside the MLP (AdaptFormer)
#   mlp_out:      f(mlp(norm2(x)))             applied to the MLP branch, before its residual
#   post_mlp:     f(x, hw_shape)               applied after the block (Mona #2; a ConvNeXt
#                                              block's only point)
ADAPTER_POINTS = ('attn_out', 'post_attn', 'mlp_parallel', 'mlp_out', 'post_mlp')


class BaseAdapter(nn.Module):
    """An adapter module with a prunable hidden width.

    Subclasses implement ``forward(x, hw_shape)`` and report ``hidden_dims``. Every parameter
    of an adapter is trainable under its PEFT method.
    """

    #: Own parameters that belong to the wrapped pretrained layer, not to the adapter
    #: (e.g. the frozen ``weight``/``bias`` of a LoRA-wrapped Linear).
    frozen_param_names: Tuple[str, ...] = ()

    @property
    def hidden_dims(self) -> int:
        """Number of hidden neurons (the width MiMi prunes)."""
        raise NotImplementedError

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    # ---------------------------------------------------------------- structural pruning
    def hidden_param_dims(self) -> Dict[str, Tuple[int, ...]]:
        """``{param_name: dims}``: which dims of which own parameters index hidden neurons.

        A parameter may be hidden-indexed on several dims (Mona's 1x1 conv: both sides).
        """
        raise NotImplementedError(f'{type(self).__name__} does not support neuron pruning')

    def score_param_names(self) -> Tuple[str, ...]:
        """The hidden-indexed weights a neuron's importance is measured on (no biases)."""
        return tuple(n for n in self.hidden_param_dims() if not n.endswith('bias'))

    def new_with_width(self, width: int) -> nn.Module:
        """A fresh adapter of the same kind and settings with ``width`` hidden neurons."""
        raise NotImplementedError(f'{type(self).__name__} does not support neuron pruning')

    #: Own parameters that do not belong to any hidden neuron and still act when every
    #: neuron is gone (an output bias): :meth:`vanished` keeps exactly these, and
    #: :meth:`param_count` counts them at width 0.
    kept_when_vanished: Tuple[str, ...] = ()

    def vanished(self) -> Optional[nn.Module]:
        """What replaces this adapter once no neuron is left. It must compute exactly what
        this adapter computes with every hidden neuron zeroed, so removing the last neuron
        changes nothing but the cost.

        The default, None, removes the adapter (the block then skips the point: no
        parameters, no compute); that is exact only for adapters without
        :attr:`kept_when_vanished` parameters. Adapters with an output bias return a
        :class:`BiasAdapter`. A returned module may name, in a ``param_origin`` dict, the
        parameter of this adapter each of its parameters continues (``{'bias': 'up.bias'}``)
        so that optimizer state follows it.
        """
        if self.kept_when_vanished:
            raise NotImplementedError(
                f'{type(self).__name__} keeps {self.kept_when_vanished} when no neuron is left '
                'but defines no vanished() form')
        return None

    def keep_neurons(self, keep: Tensor) -> nn.Module:
        """A new, smaller adapter holding only hidden neurons ``keep`` (sorted indices).

        Every hidden-indexed parameter is sliced with ``index_select``; all others are
        copied. With an empty ``keep`` this is :meth:`vanished`.

        Args:
            keep: 1-D LongTensor of neuron indices to keep.
        """
        if keep.numel() == 0:
            return self.vanished()
        keep = keep.to(torch.long).sort().values
        new = self.new_with_width(int(keep.numel()))
        dims = self.hidden_param_dims()
        sd = OrderedDict()
        for name, t in self.state_dict().items():
            for d in dims.get(name, ()):
                t = t.index_select(d, keep.to(t.device))
            sd[name] = t
        new.load_state_dict(sd)
        ref = next(iter(self.parameters()), None)
        if ref is not None:
            new = new.to(device=ref.device, dtype=ref.dtype)
        # new tensors train (or stay frozen) as the ones they replace
        old = dict(self.named_parameters())
        for pname, p in new.named_parameters():
            if pname in old:
                p.requires_grad_(old[pname].requires_grad)
        new.train(self.training)
        return new

    def param_count(self, width: Optional[int] = None) -> int:
        """Own trainable parameters at hidden ``width`` (default: the current one); at width 0,
        those of the :meth:`vanished` form (:attr:`kept_when_vanished`)."""
        m = self.hidden_dims
        width = m if width is None else width
        if width == 0 and m > 0:
            params = dict(self.named_parameters())
            return sum(params[n].numel() for n in self.kept_when_vanished
                       if n not in self.frozen_param_names)
        try:
            dims = self.hidden_param_dims()
        except NotImplementedError:  # not prunable (e.g. a deployed adapter): as it is
            if width != m:
                raise
            dims = {}
        total = 0
        for name, p in self.named_parameters():
            if name in self.frozen_param_names:
                continue
            n = p.numel()
            for _ in dims.get(name, ()):
                n = n * width // m if m else 0
            total += n
        return total


class BiasAdapter(BaseAdapter):
    """What an adapter with an output bias becomes once MiMi removed all its hidden neurons:
    the bias it still adds, exactly what the adapter computes with every neuron zeroed.

    ``x + scale * bias`` with ``residual`` (Mona: ``x + project2.bias``; Adapter:
    ``x + up.bias``), else ``scale * bias`` for every token (AdaptFormer's parallel branch,
    which the block adds to the MLP output). The scale is applied in the forward rather than
    folded into the parameter, so the bias trains on exactly as it did inside the adapter:
    same gradient, AdamW moments and weight decay (a folded ``scale * bias`` would see its
    effective learning rate multiplied by ``1 / scale``).

    It is an adapter of width 0: it trains, is counted in adapter parameter totals, is saved
    in adapter-only checkpoints and recorded with width 0 in the structure.

    Args:
        bias: The bias (C,); copied, keeping its ``requires_grad``.
        residual: Add the input. Defaults to True.
        scale: Multiplier of the bias. Defaults to 1.0.
        source: Name of the parameter it was inside the adapter (e.g. ``'up.bias'``), so the
            optimizer state follows it. Defaults to ``'bias'``.
    """

    kept_when_vanished = ('bias', )

    def __init__(self, bias: Tensor, residual: bool = True, scale: float = 1.0,
                 source: str = 'bias') -> None:
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
        self.residual = residual
        self.scale = scale
        #: ``{own parameter: the vanished adapter's parameter it continues}``
        self.param_origin = {'bias': source}

    @property
    def hidden_dims(self) -> int:
        return 0

    def hidden_param_dims(self) -> Dict[str, Tuple[int, ...]]:
        return {}

    def new_with_width(self, width: int) -> 'BiasAdapter':
        if width != 0:
            raise ValueError(f'a vanished adapter cannot grow back to width {width}')
        return self

    def vanished(self) -> 'BiasAdapter':
        return self

    def forward(self, x: Tensor, hw_shape: Optional[Tuple[int, int]] = None) -> Tensor:
        b = self.bias if self.scale == 1 else self.bias * self.scale
        b = b.to(x.dtype)
        return x + b if self.residual else b.expand_as(x)

    def extra_repr(self) -> str:
        return f'dims={self.bias.numel()}, residual={self.residual}, scale={self.scale}'


def check_positive_int(method: str, field: str, value: Any) -> int:
    """``value`` if it is an int >= 1, else a ValueError naming the method and the field.

    Args:
        method: Method name as configs spell it (``'Mona'``), for the message.
        field: Argument name.
        value: The configured value.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f'{method}: {field} must be a positive int (got {value!r})')
    return int(value)


def check_positive(method: str, field: str, value: Any) -> float:
    """``value`` if it is a finite number > 0, else a ValueError naming the method and field.

    Args:
        method: Method name as configs spell it, for the message.
        field: Argument name.
        value: The configured value.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value) or value <= 0:
        raise ValueError(f'{method}: {field} must be a finite number > 0 (got {value!r})')
    return value


def check_dropout(method: str, field: str, value: Any) -> float:
    """``value`` if it is a probability in [0, 1), else a ValueError naming the method and
    field (1 would zero the branch in training).

    Args:
        method: Method name as configs spell it, for the message.
        field: Argument name.
        value: The configured value.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not 0 <= value < 1:
        raise ValueError(f'{method}: {field} must be a probability in [0, 1) (got {value!r})')
    return value


class BasePEFTMethod:
    """A PEFT method: which adapters go where, and what trains inside the backbone.

    Adding a method means one new file with a subclass registered in ``PEFT_METHODS``.
    """

    #: The name used in summaries (``FULL``, ``MONA``, ...).
    name: str = 'BASE'

    def modify_block(self, block: nn.Module, embed_dims: int, index: int, spec) -> None:
        """Change a block's own layers in place (e.g. wrap its qkv projection for LoRA).

        Runs at construction, before any weights load, so wrappers must keep the wrapped
        layer's parameter names (pretrained keys then load unchanged).

        Args:
            block: The upstream block.
            embed_dims: Channel width of the block.
            index: Position of the block among all blocks of the backbone.
            spec: The backbone's :class:`~mona_mm.models.backbones.spec.BackboneSpec`.
        """

    def build_adapters(self, embed_dims: int, index: int,
                       points: Sequence[str]) -> Dict[str, nn.Module]:
        """Return ``{point: adapter}`` for one block.

        Args:
            embed_dims: Channel width of the block.
            index: Position of the block among all blocks of the backbone.
            points: The adapter points the block offers (see ``ADAPTER_POINTS``).
        """
        return {}

    def _require(self, wanted: Sequence[str], points: Sequence[str]) -> None:
        missing = [p for p in wanted if p not in points]
        if missing:
            raise ValueError(f'{self.name} puts adapters at {tuple(wanted)}, but this '
                             f'backbone\'s blocks offer only {tuple(points)}')

    def is_trainable(self, name: str, backbone: nn.Module) -> bool:
        """Whether backbone parameter ``name`` trains. Default: the adapters' parameters.

        Args:
            name: Parameter name relative to the backbone.
            backbone: The backbone holding it.
        """
        return inside_adapter(name, backbone)


def inside_adapter(name: str, root: nn.Module) -> bool:
    """Whether parameter ``name`` of ``root`` is an adapter parameter.

    Walks the module path; the first :class:`BaseAdapter` on it owns the parameter unless the
    adapter declares it as the wrapped layer's own (``frozen_param_names``).

    Args:
        name: Parameter (or buffer) name relative to ``root``.
        root: The module holding it.
    """
    mod: Optional[nn.Module] = root
    parts = name.split('.')
    for i, part in enumerate(parts[:-1]):
        mod = getattr(mod, part, None)
        if mod is None:
            return False
        if isinstance(mod, BaseAdapter):
            return '.'.join(parts[i + 1:]) not in mod.frozen_param_names
    return False


def iter_adapters(model: nn.Module) -> Iterator[Tuple[str, BaseAdapter]]:
    """Yield ``(qualified_name, adapter)`` for every adapter in ``model`` (outermost only).

    Args:
        model: Any module, e.g. a whole detector.
    """
    outer = None
    for name, mod in model.named_modules():
        if outer is not None and name.startswith(outer + '.'):
            continue  # a submodule of an adapter we already yielded
        if isinstance(mod, BaseAdapter):
            outer = name
            yield name, mod


def replace_adapter(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Replace the adapter at qualified ``name`` by ``new`` and return the old one.

    Args:
        model: Model holding the adapter.
        name: Qualified name as given by :func:`iter_adapters`.
        new: Replacement (a smaller adapter, or an identity for a vanished one).
    """
    old = model.get_submodule(name)
    model.set_submodule(name, new)
    return old
