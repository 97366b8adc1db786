"""Print the optimizer parameter groups a config's training would start with.

Builds the config's model (no pretrained weights needed) and its optimizer wrapper, and
prints the group table and trainable-parameter summary that training logs when the config
uses ``mona_mm.PEFTOptimWrapperConstructor`` (``--peft-constructor`` switches any config to
it, e.g. an upstream one with the one-line backbone switch in ``--cfg-options``).
"""
import argparse
import logging
import sys
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

import mona_mm  # noqa: F401
from mona_mm.utils import build_model_from_cfg


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Print the optimizer parameter groups (lr, weight decay, tensors, '
        'parameters) and the trainable-parameter summary of a config.')
    parser.add_argument('config', help='Config file, or an upstream one as '
                        '`mmdet::path/in/its/configs.py` (also mmseg::, mmpretrain::).')
    parser.add_argument('--peft-constructor', action='store_true',
                        help='Use mona_mm.PEFTOptimWrapperConstructor whatever the config '
                        'says.')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='Override config settings, key=value (e.g. '
                        'model.backbone.type=mona_mm.PEFTSwinTransformer).')
    return parser.parse_args(argv)


def load_config(path: str) -> Config:
    """Load a config file, or ``pkg::rel/path.py`` from an installed OpenMMLab package.

    Args:
        path: The config.
    """
    if '::' in path:
        from mmengine.hub import get_config
        return get_config(path)
    return Config.fromfile(path)


def main(argv: Optional[List[str]] = None) -> None:
    """Build the model and optimizer of a config and print the groups.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    cfg = load_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.peft_constructor:
        cfg.optim_wrapper.constructor = 'mona_mm.PEFTOptimWrapperConstructor'
    optim = cfg.optim_wrapper.to_dict()
    optim['type'] = 'OptimWrapper'  # only the groups matter: no AMP (refused on the CPU)
    for key in ('loss_scale', 'dtype'):
        optim.pop(key, None)
    model = build_model_from_cfg(cfg, pretrained=False)
    logger = MMLogger.get_instance('print_optim_groups', log_level='INFO')
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter('%(message)s'))
    handler.setLevel(logging.INFO)
    logger.handlers = [handler]
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmengine')):
        build_optim_wrapper(model, optim)


if __name__ == '__main__':
    main()
