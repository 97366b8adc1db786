"""Write adapter-only checkpoints during training."""
from typing import Optional

from mmengine.hooks import Hook

from mona_mm.registry import HOOKS
from mona_mm.utils.adapter_checkpoint import FORMAT, adapter_state_dict, base_of


@HOOKS.register_module()
class AdapterCheckpointHook(Hook):
    """Keep only the trained part in every checkpoint the runner saves.

    The frozen backbone is dropped from ``state_dict`` (optimizer, schedulers and message hub
    stay). The checkpoint records which pretrained weights the backbone came from: its
    ``init_cfg`` checkpoint, else the run's ``load_from`` (its ``backbone.`` part), so
    ``--resume``, ``tools/test.py``, ``load_checkpoint`` and the upstream inferencers put
    that backbone back under the adapters. A run with neither is refused: its adapter-only
    checkpoints could never be restored.

    Args:
        base_checkpoint: Pretrained backbone to record instead (a backbone checkpoint).
    """

    priority = 'LOW'

    def __init__(self, base_checkpoint: Optional[str] = None) -> None:
        self.base_checkpoint = base_checkpoint
        self._base: Optional[dict] = None

    def _find_base(self, runner) -> Optional[dict]:
        if self.base_checkpoint:
            return dict(checkpoint=str(self.base_checkpoint), prefix=None)
        if self._base is not None:  # recorded by the checkpoint this run resumed from
            return self._base
        base = base_of(runner.model)
        load_from = getattr(runner, '_load_from', None)
        if base is None and load_from and not getattr(runner, '_resume', False):
            base = dict(checkpoint=str(load_from), prefix='backbone')
        return base

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
        meta['mona_mm'] = dict(format=FORMAT, base_checkpoint=base and base['checkpoint'])
