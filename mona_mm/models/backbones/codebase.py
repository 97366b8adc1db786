"""Which codebase (mmdet, mmseg, mmpretrain) a backbone is built for."""
import importlib
from typing import Dict, Optional

from mmengine.registry import DefaultScope

CODEBASES = ('mmdet', 'mmseg', 'mmpretrain')


def resolve_codebase(codebase: Optional[str], choices: Dict[str, str], default: str) -> str:
    """``codebase`` if given, else the current default scope if it is one of ``choices``,
    else ``default``.

    Args:
        codebase: Explicit choice (a backbone's ``codebase`` argument), or None.
        choices: ``{codebase: 'package.module.Class'}`` available for this backbone.
        default: What to use outside any of those scopes (plain Python use).
    """
    if codebase is None:
        scope = DefaultScope.get_current_instance()
        name = scope.scope_name if scope is not None else None
        codebase = name if name in choices else default
    if codebase not in choices:
        raise ValueError(f'codebase must be one of {sorted(choices)}, got {codebase!r}')
    return codebase


def import_class(path: str) -> type:
    """Import ``'package.module.Class'``."""
    module, _, name = path.rpartition('.')
    return getattr(importlib.import_module(module), name)
