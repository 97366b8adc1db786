"""Count the training memory of a model without running it on the device it is meant for.

What a train step holds at its peak is, to first order, the parameters, their gradients, the
optimizer state and the activations autograd keeps for the backward. The last one can be
counted exactly on any device (including CPU) with saved-tensor hooks; the rest follows from
the parameter list. This is what makes memory ratios at GPU sizes measurable on the CPU; it
leaves out transient workspace (which the CUDA caching allocator adds on top).
"""
from typing import Callable, Dict, Iterable

import torch
import torch.nn as nn


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def saved_activation_bytes(model: nn.Module, run: Callable[[], object]) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward of ``run()``.

    Storages shared by several saved tensors (views, the residual stream kept by several
    layers) count once; parameters and buffers of ``model`` do not count (they exist anyway).

    Args:
        model: Whose parameters and buffers to leave out.
        run: Runs the forward pass (with gradients enabled) and returns anything.
    """
    own = {_storage_key(t) for t in list(model.parameters()) + list(model.buffers())}
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in own:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    del out
    return sum(seen.values())


def training_state_bytes(params: Iterable[nn.Parameter], optimizer_states: int = 2) -> Dict[str, int]:
    """Bytes of parameters, gradients and optimizer state (float32 moments, AdamW: 2).

    Args:
        params: All parameters of the model.
        optimizer_states: Per-element optimizer tensors of trainable parameters.
    """
    params = list(params)
    weights = sum(p.numel() * p.element_size() for p in params)
    trainable = [p for p in params if p.requires_grad]
    grads = sum(p.numel() * p.element_size() for p in trainable)
    optim = sum(p.numel() * 4 * optimizer_states for p in trainable)
    return dict(weights=weights, grads=grads, optimizer=optim)
