"""``compile=True`` for evaluation too: mmengine's Runner compiles only ``train_step``."""
from typing import Any, Optional

import torch


def compile_options(compile_cfg: Any) -> Optional[dict]:
    """The ``torch.compile`` keyword arguments a config's ``compile`` field asks for, read as
    mmengine's Runner reads it (``True``: defaults; a dict: the arguments); None: off.

    Args:
        compile_cfg: The config's ``compile`` value.
    """
    if compile_cfg is None or compile_cfg is False:
        return None
    if compile_cfg is True:
        return {}
    if not isinstance(compile_cfg, dict):
        raise TypeError(f'`compile` must be a bool or a dict of torch.compile arguments, got '
                        f'{compile_cfg!r}')
    return dict(compile_cfg)


def compile_eval_steps(runner) -> bool:
    """Compile the model's ``val_step`` and ``test_step`` with the config's ``compile``
    options, as the Runner compiles ``train_step`` (mmengine 0.10 leaves evaluation eager).
    ``tools/train.py`` and ``tools/test.py`` call it; call it in your own scripts after
    building the runner. Returns whether anything was compiled.

    Args:
        runner: An mmengine Runner.
    """
    options = compile_options(runner.cfg.get('compile', None))
    if options is None:
        return False
    for target in ('val_step', 'test_step'):
        setattr(runner.model, target, torch.compile(getattr(runner.model, target), **options))
    return True
