"""Adapter-only checkpoints: just the trained part, beside a reference to the pretrained
backbone they apply to.

The reference names the base by path *and content*: ``dict(checkpoint=path, prefix=...,
sha256=digest)`` in the backbone's state-dict record. The digest is not the file's SHA-256 but
a SHA-256 over the frozen backbone tensors the backbone takes from the file (prefix taken off,
converted to the backbone's layout, sorted keys, ``name|dtype|shape|`` and bytes; see
``PEFTBackboneMixin.peft_base_digest``), so re-saving the same weights, or a file that holds
them among other tensors (the run's own full checkpoint), keeps it, while any changed frozen
value changes it. Composing with a file whose digest differs is refused, naming both digests,
unless forced; a record without a digest (files of earlier versions) composes with a warning.
Frozen backbone tensors the base does not supply (e.g. a detection Swin's per-stage norms on a
classifier's weights) travel in the adapter-only file, so base + file is the trained model
exactly.
"""
import os.path as osp
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
    their buffers) plus the backbone parameters its PEFT method trains and the buffers of the
    modules holding them (a trained BatchNorm's running statistics).

    Args:
        model: A model whose ``backbone`` is a mona_mm PEFT backbone (or any model: without
            a PEFT backbone every key counts as trained).
    """
    model = _unwrap(model)
    backbone = getattr(model, 'backbone', None)
    method = getattr(backbone, 'peft_method', None)
    params = dict(backbone.named_parameters()) if method is not None else {}
    trained = {n for n in params if method.is_trainable(n, backbone)} if method else set()
    # buffers of a module the method trains (a trained BatchNorm's running statistics)
    owners = {n.rpartition('.')[0] for n in trained} - {''}
    keys = set()
    for k in model.state_dict():
        if method is not None and k.startswith('backbone.'):
            rel = k[len('backbone.'):]
            if rel in trained or (rel not in params and rel.rpartition('.')[0] in owners):
                keys.add(k)
        else:
            keys.add(k)
    return keys


def _backbone(model: nn.Module) -> Optional[nn.Module]:
    """The model's PEFT backbone (``model.backbone``), or None."""
    from mona_mm.models.backbones.injection import is_peft_backbone
    backbone = getattr(_unwrap(model), 'backbone', None)
    return backbone if backbone is not None and is_peft_backbone(backbone) else None


def saved_keys(model: nn.Module) -> set:
    """State-dict keys an adapter-only checkpoint of ``model`` holds: :func:`trained_keys`
    plus the frozen backbone tensors its pretrained base does not supply (known once the
    backbone has loaded its base; see ``peft_base_extras``).

    Args:
        model: The model.
    """
    keys = trained_keys(model)
    backbone = _backbone(model)
    extras = backbone.peft_base_extras() if backbone is not None else None
    return keys | {f'backbone.{k}' for k in extras or ()}


def adapter_state_dict(model: nn.Module,
                       state_dict: Optional[Dict[str, Tensor]] = None,
                       base: Optional[dict] = None) -> Dict[str, Tensor]:
    """Filter a (full) state dict down to the trained part (and the frozen tensors the base
    lacks: :func:`saved_keys`), by key prefix match (no pops from a shared dict). The
    backbone's record in the state-dict metadata is kept and marked adapter-only with its
    pretrained ``base``, so any loader (``load_checkpoint``, the upstream inferencers,
    ``--resume``) composes the backbone again.

    Args:
        model: The model the state dict belongs to.
        state_dict: Defaults to ``model.state_dict()``.
        base: ``dict(checkpoint=..., prefix=..., sha256=...)`` of the pretrained backbone;
            defaults to :func:`base_of`.
    """
    keys = saved_keys(model)
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
        base: The pretrained backbone (default: what each record already names).
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
            record['base'] = dict(base)
        local[RECORD_KEY] = record
        metadata[name] = local
    return metadata


def base_checkpoint_of(model: nn.Module) -> Optional[str]:
    """The pretrained backbone checkpoint of the model's backbone (see :func:`base_of`)."""
    base = base_of(model)
    return base['checkpoint'] if base else None


def base_of(model: nn.Module) -> Optional[dict]:
    """``dict(checkpoint=..., prefix=..., sha256=...)`` of the pretrained backbone the model's
    frozen backbone tensors are from: what the backbone loaded or its weights' record names
    (``backbone.peft_base``), else its ``init_cfg`` (not loaded yet: ``sha256=None``).

    Args:
        model: The model (wrapped or not).
    """
    backbone = getattr(_unwrap(model), 'backbone', None)
    held = getattr(backbone, 'peft_base', None)
    if held and held.get('checkpoint'):
        return dict(held)
    init_cfg = getattr(backbone, 'init_cfg', None)
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained' and \
            init_cfg.get('checkpoint'):
        return dict(checkpoint=str(init_cfg['checkpoint']), prefix=init_cfg.get('prefix'),
                    sha256=None)
    return None


def _short(digest: Optional[str]) -> str:
    return f'{digest[:16]}...' if digest else 'none recorded'


def verify_base(model: nn.Module, checkpoint: str, prefix: Optional[str] = None,
                force: bool = False, expected: Optional[dict] = None) -> dict:
    """Check that ``checkpoint`` is the pretrained backbone ``model``'s frozen backbone
    tensors are from, and make it the backbone's recorded base.

    The criterion is the model itself: every frozen backbone tensor the file supplies must
    equal the model's (then base + adapter-only file is the model exactly, whatever else the
    file holds). A file that differs is refused with a ValueError naming it, its digest, the
    digest the weights record for their base (``expected``) and the fix, unless ``force``
    (then a warning).

    Args:
        model: The model (wrapped or not) holding the trained weights.
        checkpoint: The candidate base file.
        prefix: Where the backbone's keys sit in it (None: ``backbone.`` if any, else all).
        force: Record it even if it does not match.
        expected: The base the weights record (default: :func:`base_of`).

    Returns:
        ``dict(checkpoint=..., prefix=..., sha256=...)`` of ``checkpoint``.
    """
    from mmengine.logging import MMLogger

    from mona_mm.models.backbones.injection import extract_state_dict
    backbone = _backbone(model)
    if backbone is None:
        raise ValueError('verify_base: the model has no mona_mm PEFT backbone at `backbone`')
    if expected is None:
        expected = base_of(model)
    if '://' not in str(checkpoint) and not osp.exists(checkpoint):
        raise FileNotFoundError(f'pretrained backbone {checkpoint} does not exist')
    sd = extract_state_dict(load_checkpoint_file(checkpoint), prefix, source=str(checkpoint))
    if backbone.peft_spec.convert is not None:
        sd, _ = backbone.peft_spec.convert(sd, backbone)
    digest, supplied = backbone.peft_base_digest(sd)
    own = backbone.state_dict()
    differ = [k for k in supplied if sd[k].shape != own[k].shape or
              not torch.equal(sd[k].to(own[k].device, own[k].dtype), own[k])]
    logger = MMLogger.get_current_instance()
    want = (expected or {}).get('sha256')
    if not supplied or differ:
        what = ('it supplies none of the frozen backbone tensors' if not supplied
                else f'{len(differ)} of the {len(supplied)} frozen backbone tensors it '
                f'supplies differ from the trained model\'s (e.g. {differ[:3]})')
        msg = (f'{checkpoint} (sha256 {_short(digest)}) is not the pretrained backbone these '
               f'weights were trained on ({(expected or {}).get("checkpoint")}, sha256 '
               f'{_short(want)}): {what}. ')
        if not force:
            raise ValueError(msg + 'Give the backbone they were trained on (--base-checkpoint '
                             'PRETRAINED), or force it (force_base=True, --force-base): the '
                             'adapter-only checkpoint then does not reproduce the model.')
        logger.warning(msg + 'Recorded anyway (forced).')
    elif want and want != digest:  # same frozen tensors in another file: fine
        logger.info(f'{checkpoint} (sha256 {_short(digest)}) is another file than the recorded '
                    f'base ({expected.get("checkpoint")}, sha256 {_short(want)}) but holds the '
                    'same frozen backbone tensors; recording it')
    base = dict(checkpoint=str(checkpoint), prefix=prefix, sha256=digest)
    backbone._set_base(base, supplied)
    return base


def make_adapter_checkpoint(model: nn.Module, meta: Optional[dict] = None,
                            base_checkpoint: Optional[str] = None,
                            base_prefix: Optional[str] = None,
                            force_base: bool = False) -> dict:
    """Build an adapter-only checkpoint dict for ``model``.

    The base recorded is the one the model's backbone tensors are from (:func:`base_of`:
    what the backbone loaded or its checkpoint's record names), with its digest. When the
    backbone did not load it itself (weights from a full checkpoint), the file is read and
    checked against the model's frozen tensors (:func:`verify_base`).

    Args:
        model: The model.
        meta: Extra meta to carry (e.g. the run's config text).
        base_checkpoint: Record this pretrained backbone instead; refused (naming both
            digests) when it is not the one the weights record or its tensors are not the
            model's, unless ``force_base``.
        base_prefix: Where the backbone's keys sit in ``base_checkpoint``.
        force_base: Record ``base_checkpoint`` even if it does not match.
    """
    from mona_mm.pruning.structure import STRUCTURE_META_KEY, get_structure
    meta = dict(meta or {})
    structure = get_structure(model)
    if structure:  # widths travel with the adapters (MiMi-pruned ones differ from the config)
        meta.setdefault(STRUCTURE_META_KEY, dict(structure=structure))
    base = base_of(model)
    backbone = _backbone(model)
    if base_checkpoint:
        base = verify_base(model, base_checkpoint, base_prefix, force_base, base)
    elif base and backbone is not None and \
            (not base.get('sha256') or backbone.peft_base_extras() is None):
        base = verify_base(model, base['checkpoint'], base.get('prefix'), force_base, base)
    meta['mona_mm'] = dict(format=FORMAT, base_checkpoint=base and base['checkpoint'],
                           base_sha256=base and base.get('sha256'))
    return dict(meta=meta, state_dict=adapter_state_dict(model, base=base))


def is_adapter_checkpoint(path: str) -> bool:
    """Whether ``path`` holds an adapter-only checkpoint (``weights_only`` peek)."""
    ckpt = load_checkpoint_file(path)
    return _is_adapter(ckpt)


def _is_adapter(ckpt: dict) -> bool:
    return isinstance(ckpt, dict) and \
        ckpt.get('meta', {}).get('mona_mm', {}).get('format') == FORMAT


def load_adapter_checkpoint(model: nn.Module, path: str,
                            base_checkpoint: Optional[str] = None,
                            force_base: bool = False) -> dict:
    """Load pretrained backbone + adapter-only checkpoint into ``model``.

    The backbone is composed from the base the adapter checkpoint records (else the
    backbone's ``init_cfg``), or from ``base_checkpoint``; either must have the digest the
    checkpoint records (a ValueError names both otherwise) unless ``force_base``. Then the
    trained part is loaded strictly: a key of the trained part that the file lacks is an
    error.

    Args:
        model: Freshly built model.
        path: Adapter-only checkpoint.
        base_checkpoint: Override of the pretrained backbone checkpoint (e.g. the same file
            moved elsewhere).
        force_base: Compose with a base whose digest differs from the recorded one (the
            model is then not the trained one; a warning says so).

    Returns:
        The loaded checkpoint dict.
    """
    from mona_mm.models.backbones.injection import OVERRIDE_KEY, checkpoint_records
    from mona_mm.pruning.structure import apply_structure, checkpoint_structure
    ckpt = load_checkpoint_file(path)
    if not _is_adapter(ckpt):
        raise ValueError(f'{path} is not an adapter-only checkpoint (no meta.mona_mm.format '
                         f'== {FORMAT!r}); load it as a normal checkpoint')
    model = _unwrap(model)
    structure = checkpoint_structure(ckpt)
    if structure:  # MiMi-pruned adapters: shrink before anything loads
        apply_structure(model, structure)
    sd = ckpt['state_dict']
    missing = sorted(trained_keys(model) - set(sd))
    if missing:
        raise KeyError(f'{path} lacks {len(missing)} trained tensors of this model, e.g. '
                       f'{missing[:5]}; was it written for another config?')
    # the backbone composes itself from the base its record names (or the override) and
    # checks its digest (see PEFTBackboneMixin._compose_base)
    metadata = mark_adapter_only(getattr(sd, '_metadata', None), model)
    sd = OrderedDict(sd)
    sd._metadata = metadata
    info = ckpt['meta']['mona_mm']
    legacy = info.get('base_checkpoint')
    fallback = dict(checkpoint=legacy, prefix=None, sha256=info.get('base_sha256')) \
        if legacy else base_of(model)
    override = dict(checkpoint=base_checkpoint, prefix=None, force=force_base) \
        if base_checkpoint or force_base else None
    for record in checkpoint_records(sd).values():
        if not record.get('base'):
            record['base'] = fallback
        if override:
            record[OVERRIDE_KEY] = override
    model.load_state_dict(sd, strict=False)
    return ckpt
