"""Write adapter-only checkpoints during training."""
from mmengine.hooks import Hook

from mona_mm.registry import HOOKS
from mona_mm.utils.adapter_checkpoint import FORMAT, adapter_state_dict, base_checkpoint_of


@HOOKS.register_module()
class AdapterCheckpointHook(Hook):
    """Keep only the trained part in every checkpoint the runner saves.

    The frozen backbone is dropped from ``state_dict`` (optimizer, schedulers and message hub
    stay, so ``--resume`` works: training re-initialises the backbone from its ``init_cfg``
    before resuming). The checkpoint records which pretrained backbone it belongs to.

    Args:
        base_checkpoint: Pretrained backbone to record; defaults to the backbone's init_cfg.
    """

    priority = 'LOW'

    def __init__(self, base_checkpoint: str = None) -> None:
        self.base_checkpoint = base_checkpoint

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['state_dict'] = adapter_state_dict(runner.model, checkpoint['state_dict'])
        meta = checkpoint.setdefault('meta', {})
        meta['mona_mm'] = dict(format=FORMAT, base_checkpoint=self.base_checkpoint
                               or base_checkpoint_of(runner.model))
