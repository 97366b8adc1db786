from .hooks import (AdapterCheckpointHook, BackboneCheckpointHook, MiMiPruningHook,
                    SafeCheckpointHook)

__all__ = ['AdapterCheckpointHook', 'BackboneCheckpointHook', 'MiMiPruningHook',
           'SafeCheckpointHook']
