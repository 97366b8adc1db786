"""Let ``load_from`` take a backbone-only checkpoint."""
from collections import OrderedDict

from mmengine.hooks import Hook
from torch import Tensor

from mona_mm.models.backbones.injection import is_peft_backbone
from mona_mm.registry import HOOKS


@HOOKS.register_module()
class BackboneCheckpointHook(Hook):
    """Put the keys of a backbone-only checkpoint under ``backbone.`` before mmengine loads it.

    ``load_from`` loads into the whole model, so a backbone-only checkpoint (Microsoft's Swin
    release, a saved mmpretrain/mmdet backbone, a ViT) would match nothing. mmengine calls
    ``after_load_checkpoint`` before the weights are loaded; there we move the tensors under
    ``backbone.`` and the backbone converts the layout itself. Checkpoints of whole models
    (anything with ``backbone.`` keys: detectors, classifiers, resumes) pass untouched.

    Args:
        prefix: Where the backbone sits in the model. Defaults to ``'backbone.'``.
    """

    priority = 'VERY_HIGH'

    def __init__(self, prefix: str = 'backbone.') -> None:
        self.prefix = prefix

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Rewrite ``checkpoint`` in place when it holds only the backbone's tensors (in any
        layout its spec converts)."""
        for key in ('state_dict', 'model'):
            if isinstance(checkpoint.get(key), dict):
                sd, src_key = checkpoint[key], key
                break
        else:
            sd, src_key = checkpoint, None
        tensors = OrderedDict((k, v) for k, v in sd.items() if isinstance(v, Tensor))
        if not tensors or any(k.startswith(self.prefix) for k in tensors):
            return
        model = getattr(runner.model, 'module', runner.model)
        backbone = model.get_submodule(self.prefix.rstrip('.'))
        if not is_peft_backbone(backbone):
            return
        convert = backbone.peft_spec.convert
        converted = convert(OrderedDict(tensors), backbone)[0] if convert else tensors
        own = backbone.state_dict()
        if not any(k in own for k in converted):
            return  # not a checkpoint of this backbone: mmengine loads it as it is
        moved = OrderedDict((self.prefix + k, v) for k, v in tensors.items())
        if src_key is None:
            for k in tensors:
                checkpoint.pop(k)
        else:
            checkpoint.pop(src_key)
        checkpoint['state_dict'] = moved
        runner.logger.info(f'BackboneCheckpointHook: backbone-only checkpoint, {len(moved)} '
                           f'tensors moved under `{self.prefix}`')
