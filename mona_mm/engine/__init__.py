from .hooks import BackboneCheckpointHook

__all__ = ['BackboneCheckpointHook']
