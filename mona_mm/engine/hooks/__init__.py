from .adapter_checkpoint_hook import AdapterCheckpointHook
from .backbone_checkpoint_hook import BackboneCheckpointHook
from .checkpoint_hook import SafeCheckpointHook
from .mimi_pruning_hook import MiMiPruningHook

__all__ = ['AdapterCheckpointHook', 'BackboneCheckpointHook', 'MiMiPruningHook',
           'SafeCheckpointHook']
