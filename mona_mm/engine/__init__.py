from .compile import compile_eval_steps, compile_options
from .hooks import (AdapterCheckpointHook, BackboneCheckpointHook, MiMiPruningHook,
                    SafeCheckpointHook)
from .optimizers import PEFTOptimWrapperConstructor, trainable_summary

__all__ = ['AdapterCheckpointHook', 'BackboneCheckpointHook', 'MiMiPruningHook',
           'SafeCheckpointHook', 'PEFTOptimWrapperConstructor', 'trainable_summary',
           'compile_eval_steps', 'compile_options']
