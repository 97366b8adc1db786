from .adapter_checkpoint_hook import AdapterCheckpointHook
from .backbone_checkpoint_hook import BackboneCheckpointHook

__all__ = ['AdapterCheckpointHook', 'BackboneCheckpointHook']
