"""Write adapter-only checkpoints during training."""
from typing import Optional

from mmengine.hooks import Hook

from mona_mm.registry import HOOKS
from mona_mm.utils.adapter_checkpoint import (FORMAT, _backbone, adapter_state_dict, base_of,
                                              verify_base)


@HOOKS.register_module()
class AdapterCheckpointHook(Hook):
    """Keep only the trained part in every checkpoint the runner saves.

    The frozen backbone is dropped from ``state_dict`` (optimizer, schedulers and message hub
    stay). The checkpoint records which pretrained weights the backbone came from, by path and
    digest (see :mod:`mona_mm.utils.adapter_checkpoint`): what the backbone loaded (its
    ``init_cfg`` checkpoint, or the base of the adapter-only checkpoint it resumed from),
    else the run's ``load_from`` (its ``backbone.`` part, or all of a backbone-only file),
    so ``--resume``, ``tools/test.py``, ``load_checkpoint`` and the upstream inferencers put
    that very backbone back under the adapters, and refuse a file that was replaced since.
    A run with neither is refused: its adapter-only checkpoints could never be restored.

    Args:
        base_checkpoint: Pretrained backbone to record instead (a backbone checkpoint); it
            must hold the frozen backbone tensors the run has loaded.
    """

    priority = 'LOW'

    def __init__(self, base_checkpoint: Optional[str] = None) -> None:
        self.base_checkpoint = base_checkpoint
        self._base: Optional[dict] = None

    def _find_base(self, runner) -> Optional[dict]:
        model = runner.model
        backbone = _backbone(model)
        if self.base_checkpoint:
            return verify_base(model, str(self.base_checkpoint))
        if backbone is None:
            held = base_of(model)
        else:  # what filled the frozen tensors (init_cfg, an adapter-only checkpoint's base)
            held = backbone.peft_base if backbone.peft_base and \
                backbone.peft_base.get('checkpoint') else None
        if held is None and self._base is not None:  # recorded by the resumed checkpoint
            held = self._base
        load_from = getattr(runner, '_load_from', None)
        if held is None and load_from and not getattr(runner, '_resume', False):
            # a whole model's file (its `backbone.` keys) or a backbone-only one
            held = dict(checkpoint=str(load_from), prefix=None, sha256=None)
        if held is None or backbone is None:
            return held
        if held.get('sha256') and backbone.peft_base_extras() is not None:
            return held  # loaded by the backbone itself: path, digest and keys are known
        # the tensors came from a full state dict: read the base once, check it is theirs
        return verify_base(model, held['checkpoint'], held.get('prefix'), expected=held)

    def before_train(self, runner) -> None:
        self._base = self._find_base(runner)
        if self._base is None:
            raise RuntimeError(
                'AdapterCheckpointHook: the backbone has no pretrained weights to record '
                "(model.backbone.init_cfg=dict(type='Pretrained', checkpoint=...) or "
                'load_from); adapter-only checkpoints of a randomly initialised backbone '
                'could not be restored. Set one, pass base_checkpoint=..., or drop the hook.')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        from mona_mm.models.backbones.injection import (check_checkpoint_records,
                                                        checkpoint_records)
        check_checkpoint_records(runner.model, checkpoint, getattr(runner, '_resume', False))
        for record in checkpoint_records(checkpoint.get('state_dict')).values():
            if record.get('adapter_only') and record.get('base'):
                self._base = record['base']

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        base = self._base or self._find_base(runner)
        checkpoint['state_dict'] = adapter_state_dict(runner.model, checkpoint['state_dict'],
                                                      base=base)
        meta = checkpoint.setdefault('meta', {})
        meta['mona_mm'] = dict(format=FORMAT, base_checkpoint=base and base['checkpoint'],
                               base_sha256=base and base.get('sha256'))
