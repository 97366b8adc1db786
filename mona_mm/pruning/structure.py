"""Structural removal of adapter neurons: smaller tensors for real, optimizer state kept.

Names are relative to the unwrapped model (e.g. ``backbone.stages.0.blocks.1.adapters.
post_attn``). An adapter left with no neuron becomes its ``vanished()`` form, which computes
exactly what the adapter computed with those neurons zeroed: a :class:`~mona_mm.models.peft.
base.BiasAdapter` (width 0) where an output bias remains (Mona, Adapter, AdaptFormer), nothing
(LoRand) or the plain frozen layer (LoRA); a model remembers the adapters that were removed,
so its structure (width of every adapter, 0 for vanished ones) can be saved and replayed on a
freshly built model.
"""
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
from torch import Tensor

from mona_mm.models.peft.base import BaseAdapter, iter_adapters

VANISHED_ATTR = '_mona_mm_vanished_adapters'


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP/MMDistributedDataParallel wrapper."""
    return getattr(model, 'module', model)


def get_structure(model: nn.Module) -> Dict[str, int]:
    """``{adapter name: hidden width}``, vanished adapters included with width 0.

    Args:
        model: Any model holding adapters (wrapped or not).
    """
    model = unwrap(model)
    structure = {name: a.hidden_dims for name, a in iter_adapters(model)}
    for name in getattr(model, VANISHED_ATTR, []):
        structure[name] = 0
    return dict(sorted(structure.items()))


def _set_module(model: nn.Module, name: str, new: Optional[nn.Module]) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    if new is None:
        if isinstance(parent, nn.ModuleDict):
            del parent[child]
        else:
            raise ValueError(f'cannot remove {name}: its parent is not a ModuleDict')
    else:
        model.set_submodule(name, new)


def _slice_state(state: dict, old: Tensor, dims, keep: Optional[Tensor]) -> dict:
    out = {}
    for k, v in state.items():
        if torch.is_tensor(v) and v.shape == old.shape and keep is not None:
            for d in dims:
                v = v.index_select(d, keep.to(v.device))
        out[k] = v
    return out


def prune_adapters(model: nn.Module, keep: Dict[str, Tensor],
                   optimizer: Optional[torch.optim.Optimizer] = None) -> Dict[str, int]:
    """Keep only neurons ``keep[name]`` of each named adapter (empty: the adapter becomes
    its ``vanished()`` form, e.g. a bias-only :class:`~mona_mm.models.peft.base.BiasAdapter`).

    New, smaller parameters replace the old ones; if ``optimizer`` is given, its param
    groups point at the new parameters and their state (AdamW moments) is sliced with the
    same indices, not reset (a vanished form's parameters continue those named in its
    ``param_origin``, e.g. the output bias). Removed parameters leave the optimizer.

    Args:
        model: The model (wrapped or not).
        keep: ``{adapter name: sorted LongTensor of neuron indices to keep}``.
        optimizer: The torch optimizer training the model.

    Returns:
        The new widths of the touched adapters.
    """
    model = unwrap(model)
    vanished: List[str] = list(getattr(model, VANISHED_ATTR, []))
    remap = {}  # id(old param) -> (new param or None, dims, keep)
    widths = {}
    for name, idx in keep.items():
        adapter = model.get_submodule(name)
        if not isinstance(adapter, BaseAdapter):
            raise TypeError(f'{name} is not an adapter ({type(adapter).__name__})')
        idx = idx.to(torch.long).sort().values
        if idx.numel() == adapter.hidden_dims:
            widths[name] = adapter.hidden_dims
            continue
        dims = adapter.hidden_param_dims()
        new = adapter.keep_neurons(idx)
        new_params = {}
        if new is not None:  # by the name of the old parameter each new one continues
            origin = getattr(new, 'param_origin', None) or {}
            new_params = {origin.get(n, n): p for n, p in new.named_parameters()}
        for pname, p in adapter.named_parameters():
            remap[id(p)] = (new_params.get(pname), dims.get(pname, ()), idx)
        _set_module(model, name, new)
        widths[name] = int(idx.numel())
        if new is None or not isinstance(new, BaseAdapter):
            vanished.append(name)
    setattr(model, VANISHED_ATTR, sorted(set(vanished)))
    if optimizer is not None and remap:
        _remap_optimizer(optimizer, remap)
    return widths


def _remap_optimizer(optimizer: torch.optim.Optimizer, remap: dict) -> None:
    for group in optimizer.param_groups:
        new_list = []
        for p in group['params']:
            if id(p) not in remap:
                new_list.append(p)
                continue
            new_p, dims, idx = remap[id(p)]
            state = optimizer.state.pop(p, None)
            if new_p is None:
                continue
            if state:
                optimizer.state[new_p] = _slice_state(state, p, dims, idx)
            new_list.append(new_p)
        group['params'] = new_list


def apply_structure(model: nn.Module, structure: Dict[str, int],
                    optimizer: Optional[torch.optim.Optimizer] = None) -> None:
    """Give a freshly built model the adapter widths of ``structure`` (shapes only; load the
    weights afterwards). Widths can only shrink.

    Args:
        model: The model (wrapped or not).
        structure: As returned by :func:`get_structure`.
        optimizer: Its optimizer, whose param groups then follow the new parameters.
    """
    inner = unwrap(model)
    current = get_structure(inner)
    keep = {}
    for name, width in structure.items():
        if name not in current:
            raise KeyError(f'checkpoint structure names adapter {name!r}, which this model '
                           'does not have: was it trained with another config/PEFT method?')
        if current[name] == width:
            continue
        if width > current[name]:
            raise ValueError(f'{name}: checkpoint width {width} > model width '
                             f'{current[name]}; build the model from the same config')
        keep[name] = torch.arange(width)
    if keep:
        prune_adapters(inner, keep, optimizer)


def adapter_param_total(model: nn.Module) -> int:
    """Trainable adapter parameters in ``model`` (vanished adapters' kept biases included).

    Args:
        model: The model (wrapped or not).
    """
    return sum(a.param_count() for _, a in iter_adapters(unwrap(model)))


STRUCTURE_META_KEY = 'mona_mm_structure'


def checkpoint_structure(checkpoint: dict) -> Optional[Dict[str, int]]:
    """The adapter structure recorded in a checkpoint dict (None if it was never pruned)."""
    record = (checkpoint.get('meta') or {}).get(STRUCTURE_META_KEY)
    return record['structure'] if record else None


def apply_checkpoint_structure(model: nn.Module, checkpoint: Union[str, dict]) -> bool:
    """Give ``model`` the form a checkpoint was saved in, before its weights load:
    the MiMi-pruned adapter widths, and the re-parameterised (deploy) adapters.

    Args:
        model: Freshly built model (wrapped or not).
        checkpoint: Checkpoint file, or the checkpoint dict already loaded.

    Returns:
        Whether the model was changed.
    """
    from mona_mm.models.peft.reparameterize import DEPLOY_META_KEY, reparameterize
    from mona_mm.utils.checkpoint_io import load_checkpoint_file
    ckpt = load_checkpoint_file(checkpoint) if isinstance(checkpoint, str) else checkpoint
    structure = checkpoint_structure(ckpt)
    if structure is not None:
        apply_structure(model, structure)
    deploy = bool((ckpt.get('meta') or {}).get(DEPLOY_META_KEY))
    if deploy:
        reparameterize(model)
    return structure is not None or deploy
