"""One name per PEFT method: its slug.

The slug is the kebab-case spelling of the method's config folder
(``configs/<codebase>/<slug>/``) and the one name file names, folders and command-line modes
use. It maps to the registered ``peft`` type and the arguments that make the method
(``partial-1`` is ``dict(type='Partial', num_blocks=1)``); every other argument
(``hidden_dims``, ``init``...) is a setting of the method, not part of its name.

Command-line tools take either spelling: the slug (``norm-tuning``) or the registered type
(``NormTuning``).
"""
import re
from typing import Dict, Optional, Union

#: The paper's methods in its table order: slug -> registered ``peft`` type.
METHOD_TYPES: Dict[str, str] = {
    'full': 'Full', 'fixed': 'Fixed', 'bitfit': 'BitFit', 'norm-tuning': 'NormTuning',
    'partial-1': 'Partial', 'adapter': 'Adapter', 'lora': 'LoRA', 'adaptformer': 'AdaptFormer',
    'lorand': 'LoRand', 'mona': 'Mona'
}
#: Registered types without a config folder (benchmark baselines).
EXTRA_TYPES: Dict[str, str] = {'mona-reference': 'MonaReference'}
METHOD_SLUGS = tuple(METHOD_TYPES)

_PARTIAL = re.compile(r'partial-(\d+)')
_SCOPE = 'mona_mm.'


def _kebab(type_name: str) -> str:
    """``MyMethod`` -> ``my-method``: the slug of a type this module does not list."""
    return re.sub(r'(?<=[a-z0-9])(?=[A-Z])', '-', type_name).lower()


def _registered_types() -> tuple:
    from mona_mm.registry import PEFT_METHODS
    PEFT_METHODS.import_from_location()
    return tuple(PEFT_METHODS.module_dict)


def _slug_of_type(type_name: str, num_blocks: Optional[int] = None) -> str:
    if type_name.startswith(_SCOPE):
        type_name = type_name[len(_SCOPE):]
    if type_name == 'Partial':
        return f'partial-{1 if num_blocks is None else int(num_blocks)}'
    for table in (METHOD_TYPES, EXTRA_TYPES):
        for slug, name in table.items():
            if name == type_name:
                return slug
    return _kebab(type_name)


def method_slug(name: str) -> str:
    """The slug of a method given by its slug or its registered type name.

    Case does not matter, and ``_`` may stand for ``-`` (``norm_tuning``, the spelling of
    earlier benchmark results).

    Args:
        name: E.g. ``'norm-tuning'``, ``'NormTuning'``, ``'partial-2'``, ``'Partial'``.

    Returns:
        The slug, e.g. ``'norm-tuning'``.

    Raises:
        ValueError: If ``name`` is neither a known slug nor a registered PEFT type.
    """
    key = str(name).strip()
    if key.startswith(_SCOPE):
        key = key[len(_SCOPE):]
    folded = key.lower().replace('_', '-')
    if _PARTIAL.fullmatch(folded):
        return folded
    known = dict(METHOD_TYPES, **EXTRA_TYPES)
    if folded in known:
        return folded
    for slug, type_name in known.items():
        if folded == type_name.lower():
            return _slug_of_type(type_name)
    registered = _registered_types()
    for type_name in registered:
        if folded in (type_name.lower(), _kebab(type_name)):
            return _slug_of_type(type_name)
    raise ValueError(f'unknown PEFT method {name!r}: use a slug ({", ".join(METHOD_SLUGS)}, '
                     f'partial-<k>, {", ".join(EXTRA_TYPES)}) or a registered type '
                     f'({", ".join(sorted(registered))}).')


def peft_config(name: str) -> dict:
    """The backbone's ``peft`` field for a method given by its slug or registered type.

    Args:
        name: As for :func:`method_slug`.

    Returns:
        A new dict, e.g. ``dict(type='NormTuning')`` or
        ``dict(type='Partial', num_blocks=2)`` for ``'partial-2'``.
    """
    slug = method_slug(name)
    partial = _PARTIAL.fullmatch(slug)
    if partial:
        return dict(type='Partial', num_blocks=int(partial.group(1)))
    known = dict(METHOD_TYPES, **EXTRA_TYPES)
    if slug in known:
        return dict(type=known[slug])
    return dict(type=next(t for t in _registered_types() if _kebab(t) == slug))


def peft_slug(peft: Union[str, dict, None]) -> str:
    """The slug of a backbone's ``peft`` field.

    Args:
        peft: A method name (slug or type), a dict with ``type`` (a scope prefix such as
            ``mona_mm.`` is allowed), or None (full fine-tuning, as the backbone reads it).

    Returns:
        The slug, e.g. ``'partial-1'`` for ``dict(type='Partial')``.
    """
    if peft is None:
        return 'full'
    if isinstance(peft, str):
        return method_slug(peft)
    if isinstance(peft, dict) and isinstance(peft.get('type'), str):
        return _slug_of_type(peft['type'], peft.get('num_blocks'))
    raise TypeError(f'peft must be a method name, a dict with `type` or None, got {peft!r}')
