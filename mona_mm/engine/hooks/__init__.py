from .backbone_checkpoint_hook import BackboneCheckpointHook

__all__ = ['BackboneCheckpointHook']
