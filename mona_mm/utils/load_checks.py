"""Refuse a checkpoint that would leave part of a model at random weights.

A load with ``strict=False`` (what mmengine's ``load_from``, ``init_model`` and adapter-only
loading use) takes whatever matches and keeps the rest as built: a checkpoint of another model
loads nothing, a 4-class head stays untrained in a 5-class model, a BitFit checkpoint leaves
the Mona adapters of the config at their initial values. Nothing fails and the metrics are
those of random weights.

:func:`checkpoint_must_fit` watches a load tensor by tensor, *after* the PEFT backbone has
brought the state dict into its layout (pruned widths, deploy form, an adapter-only checkpoint
composed with its pretrained backbone: see ``mona_mm.models.backbones.injection``), and
:func:`check_checkpoint_fits` refuses it when no tensor landed, or when a tensor the config
trains (:func:`~mona_mm.utils.adapter_checkpoint.trained_keys`: heads, necks, and the
backbone parameters its PEFT method trains) is missing, or a parameter has another shape.
Frozen backbone weights a checkpoint lacks are the backbone's business (it refuses weights of
another arch and logs what it kept), and buffers the model rebuilds (relative position
indices, ``num_batches_tracked``) never count as missing.
"""
import itertools
from contextlib import contextmanager
from typing import Dict, Iterator, List, Set, Tuple

import torch
import torch.nn as nn

from mona_mm.models.peft.base import inside_adapter, iter_adapters
from .adapter_checkpoint import trained_keys

#: How many keys a message names before it only counts the rest.
SHOWN = 8


class CheckpointFitError(ValueError):
    """A checkpoint that does not fit the model it is loaded into: it would leave tensors the
    config trains at their initial (random) values."""


def _inner(model: nn.Module) -> nn.Module:
    """The model inside DDP / TTA wrappers (what the loaders load into)."""
    while isinstance(getattr(model, 'module', None), nn.Module):
        model = model.module
    return model


def _join(prefix: str, name: str) -> str:
    return f'{prefix}.{name}' if prefix else name


def _same_shape(given: torch.Tensor, own: torch.Tensor) -> bool:
    # torch's own tolerance: a 1-element 1-D tensor loads into a 0-D one
    return given.shape == own.shape or (own.dim() == 0 and given.shape == (1, ))


class LoadRecord:
    """What a load did to each tensor of a model: loaded, missing from the state dict, or
    refused for another shape; and the PEFT method the state dict's backbone records name.

    Filled by load-state-dict pre-hooks, which run after a module's own
    ``_load_from_state_dict`` has rewritten its part of the state dict, so this is what
    loaded, not what the file held.

    Args:
        model: The model (wrapped or not); names are relative to the model inside wrappers.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = _inner(model)
        self.loaded: Set[str] = set()
        self.missing: Set[str] = set()
        self.mismatched: Dict[str, Tuple[tuple, tuple]] = {}
        #: ``{backbone name: the peft config its record in the state dict names}``
        self.peft: Dict[str, dict] = {}
        #: The first keys of the state dict the model was given (for messages).
        self.given_keys: List[str] = []
        #: False once the watched load has finished (later loads are not recorded).
        self.active = True
        self._names: Dict[nn.Module, str] = {}
        self._handles: list = []
        for name, module in self.model.named_modules():
            self._watch(module, name)

    def _watch(self, module: nn.Module, name: str) -> None:
        self._names[module] = name
        self._handles.append(module.register_load_state_dict_pre_hook(self._pre_hook))

    def _pre_hook(self, module: nn.Module, state_dict: dict, prefix: str, local_metadata,
                  *args) -> None:
        name = self._names.get(module)
        if name is None or not self.active:
            return
        if not name:
            self.given_keys = list(state_dict)[:SHOWN]
        # modules made while loading (a backbone rebuilding pruned or deploy adapters from
        # its record) are watched before their own turn comes
        for child_name, child in module._modules.items():
            if child is not None and child not in self._names:
                self._watch(child, _join(name, child_name))
        record = local_metadata.get('mona_mm') if isinstance(local_metadata, dict) else None
        if isinstance(record, dict) and record.get('peft'):
            self.peft[name] = record['peft']
        persistent = ((k, v) for k, v in module._buffers.items()
                      if k not in module._non_persistent_buffers_set)
        for local, own in itertools.chain(module._parameters.items(), persistent):
            if own is None:
                continue
            key = _join(name, local)
            given = state_dict.get(prefix + local)
            if given is None:
                self.missing.add(key)
            elif torch.is_tensor(given) and _same_shape(given, own):
                self.loaded.add(key)
            else:
                shape = tuple(given.shape) if torch.is_tensor(given) else type(given).__name__
                self.mismatched[key] = (shape, tuple(own.shape))

    def close(self) -> None:
        """Remove the hooks (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _describe(peft: dict) -> str:
    args = ', '.join(f'{k}={v!r}' for k, v in peft.items() if k != 'type')
    return f"{peft.get('type')}({args})"


def _listed(keys: List[str]) -> str:
    shown = ', '.join(keys[:SHOWN])
    return shown + (f' ... ({len(keys)} in all)' if len(keys) > SHOWN else '')


def _adapter_keys(model: nn.Module, keys: List[str]) -> Set[str]:
    from mona_mm.models.backbones.injection import is_peft_backbone
    out = set()
    for name, module in model.named_modules():
        if not is_peft_backbone(module):
            continue
        prefix = name + '.' if name else ''
        out.update(k for k in keys
                   if k.startswith(prefix) and inside_adapter(k[len(prefix):], module))
    return out


def check_checkpoint_fits(model: nn.Module, record: LoadRecord, source: str) -> None:
    """Refuse a load that left the model partly untrained.

    Args:
        model: The model the state dict was loaded into (wrapped or not).
        record: What the load did (see :func:`checkpoint_must_fit`).
        source: The checkpoint, for the message.

    Raises:
        CheckpointFitError: No tensor of the checkpoint landed in the model, or a tensor the
            config trains is missing from it or has another shape; the message names them.
    """
    model = _inner(model)
    own = model.state_dict(keep_vars=True)
    if not record.loaded:
        raise CheckpointFitError(
            f'{source} matches no tensor of this model ({type(model).__name__}): it is a '
            f'checkpoint of another model. Its first keys are {record.given_keys}, the '
            f"model's are {list(own)[:SHOWN]}.")
    params = {n for n, _ in model.named_parameters()}
    trained = trained_keys(model)
    done = record.loaded | set(record.mismatched)
    mismatched = [k for k in own if k in record.mismatched and (k in trained or k in params)]
    untrained = [k for k in own if k in trained and k in params and k not in done]
    if not (mismatched or untrained):
        return
    adapters = _adapter_keys(model, untrained)
    parts = []
    if mismatched:
        parts.append(f'{len(mismatched)} have another shape (' + '; '.join(
            f'{k}: checkpoint {record.mismatched[k][0]}, model {record.mismatched[k][1]}'
            for k in mismatched[:SHOWN]) + (' ...' if len(mismatched) > SHOWN else '') + ')')
    others = [k for k in untrained if k not in adapters]
    if others:
        parts.append(f'{len(others)} are missing from it ({_listed(others)})')
    if adapters:
        # named by adapter (a Mona has 8 tensors), with the methods on both sides
        names = [n for n, _ in iter_adapters(model)
                 if any(k.startswith(n + '.') for k in adapters)]
        ours = sorted({_describe(m.peft_cfg) for m in model.modules()
                       if isinstance(getattr(m, 'peft_cfg', None), dict)})
        theirs = sorted({_describe(c) for c in record.peft.values()})
        parts.append(
            f'the {len(adapters)} tensors of {len(names)} adapters'
            + (f' of peft={" / ".join(ours)}' if ours else '') + ' are missing from it ('
            + _listed(names) + ')'
            + (f'; the checkpoint was trained with peft={" / ".join(theirs)}' if theirs
               else ''))
    raise CheckpointFitError(
        f'{source} does not fit this model: of the tensors this config trains, '
        + '; '.join(parts) + '. Loaded, the model would run with these at their initial '
        '(random) values. Use the config the checkpoint was trained with (same classes, '
        'widths and PEFT method), or override the settings that differ with --cfg-options '
        '(cfg_options in code).')


@contextmanager
def checkpoint_must_fit(model: nn.Module, source: str) -> Iterator[LoadRecord]:
    """Check the first state dict loaded into ``model`` inside this context (by
    ``load_state_dict``, mmengine's ``load_checkpoint``/``load_from``, adapter-only
    loading...): as soon as it has loaded, :func:`check_checkpoint_fits` runs and a
    checkpoint that does not fit raises :class:`CheckpointFitError` out of the load. Later
    loads are not watched.

    Args:
        model: The model (wrapped or not).
        source: The checkpoint, for the message.

    Yields:
        The :class:`LoadRecord` of the load.
    """
    record = LoadRecord(model)

    def post_hook(module: nn.Module, incompatible_keys) -> None:
        # the loaders call it on the model inside any wrapper once every submodule loaded
        # (hooks are removed when the context ends: not while the loader iterates them)
        if record.active:
            record.active = False
            check_checkpoint_fits(module, record, source)

    record._handles.append(record.model.register_load_state_dict_post_hook(post_hook))
    try:
        yield record
    finally:
        record.close()
