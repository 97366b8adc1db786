"""Parameter accounting shared by the demo, the tools and the tests."""
from typing import Dict

import torch.nn as nn


def count_trainable(model: nn.Module) -> Dict[str, int]:
    """Count parameters of a model (unwrapped or DDP-wrapped) by part.

    Args:
        model: A detector/segmentor/classifier with a ``backbone`` attribute, or a backbone.

    Returns:
        ``backbone_trainable``, ``backbone_total``, ``other_trainable`` (neck and heads),
        ``trainable`` and ``total``.
    """
    model = getattr(model, 'module', model)
    backbone = getattr(model, 'backbone', model)
    bb_ids = {id(p) for p in backbone.parameters()}
    out = dict(backbone_trainable=0, backbone_total=0, other_trainable=0, trainable=0, total=0)
    for p in model.parameters():
        n = p.numel()
        out['total'] += n
        if p.requires_grad:
            out['trainable'] += n
        if id(p) in bb_ids:
            out['backbone_total'] += n
            if p.requires_grad:
                out['backbone_trainable'] += n
        elif p.requires_grad:
            out['other_trainable'] += n
    return out
