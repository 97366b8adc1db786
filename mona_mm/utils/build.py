"""Build a config's model outside a Runner (tools, tests, benchmarks)."""
import copy

import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmengine.utils import import_modules_from_strings


def build_model_from_cfg(cfg: Config, pretrained: bool = True) -> nn.Module:
    """Import the config's ``custom_imports`` and build ``cfg.model`` in its default scope.

    Args:
        cfg: A loaded config (mmdet, mmseg or mmpretrain scope); not modified.
        pretrained: False drops the backbone's ``init_cfg``, for tools whose weights come
            from a checkpoint (or that only count), so no pretrained file is needed.
    """
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    scope = cfg.get('default_scope', 'mmengine')
    # registers the scope's modules (what Runner does through register_all_modules)
    utils = __import__(f'{scope}.utils', fromlist=['register_all_modules'])
    if hasattr(utils, 'register_all_modules'):
        utils.register_all_modules(init_default_scope=False)
    model_cfg = copy.deepcopy(cfg.model)
    if not pretrained and 'init_cfg' in model_cfg.get('backbone', {}):
        model_cfg.backbone.init_cfg = None
    if cfg.get('data_preprocessor') is not None:  # as Runner does (mmpretrain configs)
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(model_cfg)
