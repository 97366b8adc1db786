from .hooks import AdapterCheckpointHook, BackboneCheckpointHook, MiMiPruningHook

__all__ = ['AdapterCheckpointHook', 'BackboneCheckpointHook', 'MiMiPruningHook']
