"""``mona_mm.PEFTBackbone``: PEFT adapters on any backbone with a spec, named by its config
(mmpretrain's ``LoRAModel`` convention)."""
from typing import Sequence, Union

import torch.nn as nn
from mmengine.registry import MODELS as ROOT_MODELS

from mona_mm.registry import MODELS
from .injection import peft_backbone_class


def PEFTBackbone(module: dict, peft: Union[dict, None] = dict(type='Mona'),
                 recompute: Union[str, Sequence[str]] = ()) -> nn.Module:
    """Build ``module`` (an upstream backbone config) with PEFT adapters.

    ``dict(type='mona_mm.PEFTBackbone', module=dict(type='mmpretrain.VisionTransformer',
    arch='b'), peft=dict(type='Mona'))``. The result is an instance of the upstream class
    (see :func:`~.injection.peft_backbone_class`), with the upstream state-dict keys.

    Args:
        module: Config of the backbone: ``type`` (a registered name, scoped or in the current
            scope, or a class) and its arguments.
        peft: The PEFT method. Defaults to Mona.
        recompute: See :class:`~.injection.PEFTBackboneMixin`.
    """
    cfg = dict(module)
    name = cfg.pop('type', None)
    if isinstance(name, type):
        cls = name
    else:
        with ROOT_MODELS.switch_scope_and_registry(None) as registry:
            cls = registry.get(name) if isinstance(name, str) else None
        if cls is None:
            raise KeyError(f'PEFTBackbone: {name!r} is not a registered backbone (scope it, '
                           "e.g. 'mmpretrain.VisionTransformer')")
    return peft_backbone_class(cls)(peft=peft, recompute=recompute, **cfg)


MODELS.register_module(name='PEFTBackbone', module=PEFTBackbone)
