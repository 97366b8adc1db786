from .hooks import AdapterCheckpointHook, BackboneCheckpointHook

__all__ = ['AdapterCheckpointHook', 'BackboneCheckpointHook']
