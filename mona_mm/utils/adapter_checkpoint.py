"""Adapter-only checkpoints: just the trained part, beside a reference to the pretrained
backbone they apply to."""
import os.path as osp
from collections import OrderedDict
from typing import Dict, Optional

import torch
import torch.nn as nn
from torch import Tensor

FORMAT = 'mona_mm/adapter-only/v1'


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, 'module', model)


def trained_keys(model: nn.Module) -> set:
    """State-dict keys of the trained part: everything outside the backbone (neck, heads,
    their buffers) plus the backbone parameters its PEFT method trains.

    Args:
        model: A model whose ``backbone`` is a mona_mm PEFT backbone (or any model: without
            a PEFT backbone every key counts as trained).
    """
    model = _unwrap(model)
    backbone = getattr(model, 'backbone', None)
    method = getattr(backbone, 'peft_method', None)
    params = dict(backbone.named_parameters()) if method is not None else {}
    keys = set()
    for k in model.state_dict():
        if method is not None and k.startswith('backbone.'):
            rel = k[len('backbone.'):]
            if rel in params and method.is_trainable(rel, backbone):
                keys.add(k)
        else:
            keys.add(k)
    return keys


def adapter_state_dict(model: nn.Module,
                       state_dict: Optional[Dict[str, Tensor]] = None) -> Dict[str, Tensor]:
    """Filter a (full) state dict down to the trained part, by key prefix match (no pops
    from a shared dict).

    Args:
        model: The model the state dict belongs to.
        state_dict: Defaults to ``model.state_dict()``.
    """
    keys = trained_keys(model)
    sd = _unwrap(model).state_dict() if state_dict is None else state_dict
    return OrderedDict((k, v) for k, v in sd.items() if k in keys)


def base_checkpoint_of(model: nn.Module) -> Optional[str]:
    """The pretrained backbone checkpoint named in the backbone's ``init_cfg``, if any."""
    init_cfg = getattr(getattr(_unwrap(model), 'backbone', None), 'init_cfg', None)
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
        return init_cfg.get('checkpoint')
    return None


def make_adapter_checkpoint(model: nn.Module, meta: Optional[dict] = None,
                            base_checkpoint: Optional[str] = None) -> dict:
    """Build an adapter-only checkpoint dict for ``model``.

    Args:
        model: The model.
        meta: Extra meta to carry (e.g. the run's config text).
        base_checkpoint: The pretrained backbone the adapters apply to; defaults to the
            backbone's ``init_cfg`` checkpoint.
    """
    from mona_mm.pruning.structure import STRUCTURE_META_KEY, get_structure
    meta = dict(meta or {})
    structure = get_structure(model)
    if structure:  # widths travel with the adapters (MiMi-pruned ones differ from the config)
        meta.setdefault(STRUCTURE_META_KEY, dict(structure=structure))
    meta['mona_mm'] = dict(format=FORMAT,
                           base_checkpoint=base_checkpoint or base_checkpoint_of(model))
    return dict(meta=meta, state_dict=adapter_state_dict(model))


def is_adapter_checkpoint(path: str) -> bool:
    """Whether ``path`` holds an adapter-only checkpoint (``weights_only`` peek)."""
    ckpt = torch.load(path, map_location='cpu')
    return _is_adapter(ckpt)


def _is_adapter(ckpt: dict) -> bool:
    return isinstance(ckpt, dict) and \
        ckpt.get('meta', {}).get('mona_mm', {}).get('format') == FORMAT


def load_adapter_checkpoint(model: nn.Module, path: str,
                            base_checkpoint: Optional[str] = None) -> dict:
    """Load pretrained backbone + adapter-only checkpoint into ``model``.

    The backbone is initialised from ``base_checkpoint`` (default: the one recorded in the
    adapter checkpoint, else the backbone's ``init_cfg``), then the trained part is loaded
    strictly: a key of the trained part that the file lacks is an error.

    Args:
        model: Freshly built model.
        path: Adapter-only checkpoint.
        base_checkpoint: Override of the pretrained backbone checkpoint.

    Returns:
        The loaded checkpoint dict.
    """
    ckpt = torch.load(path, map_location='cpu')
    if not _is_adapter(ckpt):
        raise ValueError(f'{path} is not an adapter-only checkpoint (no meta.mona_mm.format '
                         f'== {FORMAT!r}); load it as a normal checkpoint')
    model = _unwrap(model)
    base = base_checkpoint or ckpt['meta']['mona_mm'].get('base_checkpoint') or \
        base_checkpoint_of(model)
    if not base:
        raise ValueError(f'{path} needs the pretrained backbone it was trained on: pass '
                         '--base-checkpoint or set model.backbone.init_cfg')
    if not osp.exists(base):
        raise FileNotFoundError(f'pretrained backbone {base} (referenced by {path}) not found; '
                                'pass --base-checkpoint PATH')
    from mona_mm.pruning.structure import apply_structure, checkpoint_structure
    structure = checkpoint_structure(ckpt)
    if structure:  # MiMi-pruned adapters: shrink before anything loads
        apply_structure(model, structure)
    backbone = model.backbone
    backbone.init_cfg = dict(type='Pretrained', checkpoint=base)
    model.init_weights()
    missing = sorted(trained_keys(model) - set(ckpt['state_dict']))
    if missing:
        raise KeyError(f'{path} lacks {len(missing)} trained tensors of this model, e.g. '
                       f'{missing[:5]}; was it written for another config?')
    model.load_state_dict(ckpt['state_dict'], strict=False)
    return ckpt
