"""Config text read out of a checkpoint is data, never code.

mmengine stores a run's config in its checkpoints as Python text (``meta.cfg``, written from
``Config.pretty_text``; also ``message_hub.runtime_info.cfg``), and reads it back with
``Config.fromstring``, which *executes* it: ``Runner.resume`` does so with ``meta.config``,
``BaseInferencer`` (mmdet's ``DetInferencer``, mmseg's ``MMSegInferencer``) with the others
when no config is given. A checkpoint of plain strings passes ``weights_only``, so its config
text could run anything.

Every checkpoint mona_mm loads passes through :func:`sanitize_checkpoint_configs` (from the
checkpoint loaders registered in :mod:`.checkpoint_io`): each config text is parsed with
:mod:`ast` — nothing is executed — and accepted only in the flattened literal form mmengine
writes (``name = <literal>`` lines whose values are ``dict(...)``, lists, tuples, numbers,
strings, booleans and None). The text is then replaced by a canonical rendering of the parsed
values, so what mmengine later executes is text mona_mm wrote from plain data (no braces, so
mmengine's ``{{ ... }}`` substitutions cannot rewrite it either). Anything else is refused.
"""
import ast
import math
import sys
from typing import Any, Dict, List, Tuple

#: Where checkpoints carry config text, as key paths.
CONFIG_TEXT_KEYS: Tuple[Tuple[str, ...], ...] = (
    ('meta', 'cfg'),
    ('meta', 'config'),
    ('message_hub', 'runtime_info', 'cfg'),
)

_SAFE_NAMES = {'True': True, 'False': False, 'None': None}


class UnsafeConfigError(ValueError):
    """Config text that is not the plain literal form mmengine writes."""


def _literal(node: ast.AST, where: str) -> Any:
    """The value of a literal expression; anything else raises :class:`UnsafeConfigError`."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (str, int, float, bool, type(None))) or \
                isinstance(node.value, complex):
            return node.value
        raise UnsafeConfigError(f'{where}: constant of type {type(node.value).__name__}')
    if isinstance(node, ast.Name) and node.id in _SAFE_NAMES:
        return _SAFE_NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, where)
        if isinstance(value, bool) or not isinstance(value, (int, float, complex)):
            raise UnsafeConfigError(f'{where}: sign applied to a non-number')
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List):
        return [_literal(e, f'{where}[{i}]') for i, e in enumerate(node.elts)]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e, f'{where}[{i}]') for i, e in enumerate(node.elts))
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                raise UnsafeConfigError(f'{where}: ** unpacking')
            key = _literal(k, f'{where} key')
            if not isinstance(key, (str, int, float, bool, tuple, type(None))):
                raise UnsafeConfigError(f'{where}: unhashable key')
            out[key] = _literal(v, f'{where}[{key!r}]')
        return out
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == 'float' and not node.keywords and len(node.args) == 1 and \
            isinstance(node.args[0], ast.Constant) and \
            str(node.args[0].value).lower().lstrip('+-') in ('inf', 'nan', 'infinity'):
        return float(node.args[0].value)  # how non-finite floats are written as literals
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == 'dict' and not node.args:
        out = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise UnsafeConfigError(f'{where}: ** unpacking')
            out[kw.arg] = _literal(kw.value, f'{where}.{kw.arg}')
        return out
    raise UnsafeConfigError(f'{where}: {type(node).__name__} `{ast.unparse(node)[:80]}` is '
                            'not a literal')


def parse_config_text(text: str) -> Dict[str, Any]:
    """Read config text in mmengine's flattened literal form into a dict, without executing
    anything.

    Args:
        text: Config text (``Config.pretty_text``).

    Returns:
        ``{name: value}`` of the top-level assignments.

    Raises:
        UnsafeConfigError: Any statement other than ``name = <literal>``, a name mmengine
            treats as an instruction (``_base_``, ``_deprecation_``... any leading
            underscore), or ``custom_imports`` naming a module that is not imported yet
            (importing runs its code).
    """
    if not isinstance(text, str):
        raise UnsafeConfigError(f'config text is a {type(text).__name__}, not a string')
    try:
        tree = ast.parse(text, mode='exec')
    except SyntaxError as e:
        raise UnsafeConfigError(f'not Python config text (line {e.lineno}: {e.msg})') from None
    out: Dict[str, Any] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            raise UnsafeConfigError(
                f'line {stmt.lineno}: {type(stmt).__name__} `{ast.unparse(stmt)[:80]}`; only '
                '`name = <literal>` lines are allowed')
        name = stmt.targets[0].id
        if name in ('dict', 'float'):
            raise UnsafeConfigError(f'line {stmt.lineno}: `{name}` would shadow the builtin '
                                    'the literal form calls')
        if name.startswith('_'):
            raise UnsafeConfigError(f'line {stmt.lineno}: `{name}` is an mmengine instruction '
                                    '(base files, deprecation), not a setting')
        out[name] = _literal(stmt.value, name)
    imports = out.get('custom_imports')
    if imports is not None:
        modules = imports.get('imports') if isinstance(imports, dict) else None
        modules = [modules] if isinstance(modules, str) else modules
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise UnsafeConfigError('custom_imports must be dict(imports=[module names])')
        missing = [m for m in modules if m not in sys.modules]
        if missing:
            raise UnsafeConfigError(
                f'custom_imports names modules that are not imported yet: {missing} (importing '
                'runs their code). Import them yourself before loading the checkpoint, or pass '
                'the config file instead of reading it from the checkpoint')
    return out


def _render(value: Any) -> str:
    """Python source for a literal value, with no ``{`` or ``}`` anywhere (mmengine
    substitutes ``{{ ... }}`` in config text before executing it)."""
    if isinstance(value, str):
        # `{`/`}` only ever appear as themselves inside a repr'd string: escape them
        return repr(value).replace('{', '\\x7b').replace('}', '\\x7d')
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    if value is None or isinstance(value, (bool, int, float, complex)):
        return repr(value)
    if isinstance(value, list):
        return '[' + ', '.join(_render(v) for v in value) + ']'
    if isinstance(value, tuple):
        return '(' + ''.join(_render(v) + ', ' for v in value) + ')'
    if isinstance(value, dict):
        if all(isinstance(k, str) and k.isidentifier() and k not in _KEYWORDS for k in value):
            return 'dict(' + ', '.join(f'{k}={_render(v)}' for k, v in value.items()) + ')'
        return 'dict([' + ', '.join(f'({_render(k)}, {_render(v)})'
                                    for k, v in value.items()) + '])'
    raise TypeError(f'cannot render {type(value).__name__}')


def _keywords() -> set:
    import keyword
    return set(keyword.kwlist)


_KEYWORDS = _keywords()


def render_config_text(cfg: Dict[str, Any]) -> str:
    """Config text that executes to exactly ``cfg`` and can do nothing else.

    Args:
        cfg: ``{name: literal value}`` as returned by :func:`parse_config_text`.
    """
    return ''.join(f'{name} = {_render(value)}\n' for name, value in cfg.items())


def safe_config_text(text: str) -> str:
    """Check ``text`` and return its canonical rendering (see the module docstring).

    Args:
        text: Config text from a checkpoint.
    """
    return render_config_text(parse_config_text(text))


def sanitize_checkpoint_configs(checkpoint: Any, source: str) -> List[str]:
    """Replace every config text of a loaded checkpoint by its canonical rendering; refuse
    the checkpoint if one is not the literal form.

    Args:
        checkpoint: What was loaded (a dict; anything else is left alone).
        source: The file or URL, for the message.

    Returns:
        The key paths that held config text.

    Raises:
        mona_mm.utils.CheckpointError: A config text that is not plain data.
    """
    from .checkpoint_io import CheckpointError
    found = []
    for path in CONFIG_TEXT_KEYS:
        parent = checkpoint
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or path[-1] not in parent:
            continue
        value = parent[path[-1]]
        where = '.'.join(path)
        if not isinstance(value, str):
            raise CheckpointError(f'refusing to load {source}: {where} should be config text, '
                                  f'found a {type(value).__name__}')
        try:
            parent[path[-1]] = safe_config_text(value)
        except UnsafeConfigError as e:
            raise CheckpointError(
                f'refusing to load {source}: its config text ({where}) is not the plain data '
                f'mmengine writes, and mmengine would execute it as Python ({e}). Load the '
                'weights with the config file instead of the config stored in the checkpoint, '
                'after removing that text from the file in a separate environment.') from None
        found.append(where)
    return found
