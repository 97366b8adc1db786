"""Adapter-only checkpoints: just the trained part, beside a reference to the pretrained
backbone they apply to."""
from collections import OrderedDict
from typing import Dict, Optional

import torch
import torch.nn as nn
from torch import Tensor

from .checkpoint_io import load_checkpoint_file

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
                       state_dict: Optional[Dict[str, Tensor]] = None,
                       base: Optional[dict] = None) -> Dict[str, Tensor]:
    """Filter a (full) state dict down to the trained part, by key prefix match (no pops
    from a shared dict). The backbone's record in the state-dict metadata is kept and marked
    adapter-only with its pretrained ``base``, so any loader (``load_checkpoint``, the
    upstream inferencers, ``--resume``) composes the backbone again.

    Args:
        model: The model the state dict belongs to.
        state_dict: Defaults to ``model.state_dict()``.
        base: ``dict(checkpoint=..., prefix=...)`` of the pretrained backbone; defaults to
            the backbone's ``init_cfg``.
    """
    keys = trained_keys(model)
    sd = _unwrap(model).state_dict() if state_dict is None else state_dict
    out = OrderedDict((k, v) for k, v in sd.items() if k in keys)
    out._metadata = mark_adapter_only(getattr(sd, '_metadata', None), model, base)
    return out


def mark_adapter_only(metadata: Optional[dict], model: nn.Module,
                      base: Optional[dict] = None) -> OrderedDict:
    """A copy of a state dict's ``_metadata`` whose PEFT backbone records say adapter-only
    and name the pretrained backbone.

    Args:
        metadata: The full state dict's ``_metadata`` (None: empty).
        model: The model it belongs to.
        base: The pretrained backbone (default: each backbone's ``init_cfg``).
    """
    from mona_mm.models.backbones.injection import RECORD_KEY, is_peft_backbone
    metadata = OrderedDict(metadata or {})
    for name, module in _unwrap(model).named_modules():
        if not is_peft_backbone(module):
            continue
        local = dict(metadata.get(name, {}))
        record = dict(local.get(RECORD_KEY) or module.peft_record())
        record['adapter_only'] = True
        if base is not None:
            record['base'] = base
        local[RECORD_KEY] = record
        metadata[name] = local
    return metadata


def base_checkpoint_of(model: nn.Module) -> Optional[str]:
    """The pretrained backbone checkpoint named in the backbone's ``init_cfg``, if any."""
    base = base_of(model)
    return base['checkpoint'] if base else None


def base_of(model: nn.Module) -> Optional[dict]:
    """``dict(checkpoint=..., prefix=...)`` of the backbone's ``init_cfg``, if pretrained."""
    init_cfg = getattr(getattr(_unwrap(model), 'backbone', None), 'init_cfg', None)
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained' and \
            init_cfg.get('checkpoint'):
        return dict(checkpoint=str(init_cfg['checkpoint']), prefix=init_cfg.get('prefix'))
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
    base = dict(checkpoint=base_checkpoint, prefix=None) if base_checkpoint else base_of(model)
    meta['mona_mm'] = dict(format=FORMAT, base_checkpoint=base and base['checkpoint'])
    return dict(meta=meta, state_dict=adapter_state_dict(model, base=base))


def is_adapter_checkpoint(path: str) -> bool:
    """Whether ``path`` holds an adapter-only checkpoint (``weights_only`` peek)."""
    ckpt = load_checkpoint_file(path)
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
    ckpt = load_checkpoint_file(path)
    if not _is_adapter(ckpt):
        raise ValueError(f'{path} is not an adapter-only checkpoint (no meta.mona_mm.format '
                         f'== {FORMAT!r}); load it as a normal checkpoint')
    model = _unwrap(model)
    from mona_mm.models.backbones.injection import checkpoint_records
    from mona_mm.pruning.structure import apply_structure, checkpoint_structure
    structure = checkpoint_structure(ckpt)
    if structure:  # MiMi-pruned adapters: shrink before anything loads
        apply_structure(model, structure)
    sd = ckpt['state_dict']
    missing = sorted(trained_keys(model) - set(sd))
    if missing:
        raise KeyError(f'{path} lacks {len(missing)} trained tensors of this model, e.g. '
                       f'{missing[:5]}; was it written for another config?')
    # the backbone composes itself from the base its record names (or the override)
    override = dict(checkpoint=base_checkpoint, prefix=None) if base_checkpoint else None
    metadata = mark_adapter_only(getattr(sd, '_metadata', None), model, override)
    sd = OrderedDict(sd)
    sd._metadata = metadata
    legacy = ckpt['meta']['mona_mm'].get('base_checkpoint')
    fallback = dict(checkpoint=legacy, prefix=None) if legacy else base_of(model)
    for record in checkpoint_records(sd).values():
        if not record.get('base'):
            record['base'] = fallback
    model.load_state_dict(sd, strict=False)
    return ckpt
