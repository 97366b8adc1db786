"""mona_mm registries: children of mmengine's root registries.

Configs written in the mmdet, mmseg or mmpretrain scope name our types as ``mona_mm.<Type>``;
the ``locations`` make such a lookup import the defining module lazily.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mona_mm',
                  locations=['mona_mm.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='mona_mm',
                    locations=['mona_mm.datasets'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mona_mm',
                 locations=['mona_mm.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor',
                                      parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope='mona_mm', locations=['mona_mm.engine'])
# PEFT methods (Mona, and the baselines) are built from the backbone's ``peft`` field.
PEFT_METHODS = Registry('peft method', scope='mona_mm', locations=['mona_mm.models.peft'])

__all__ = ['MODELS', 'DATASETS', 'HOOKS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PEFT_METHODS']
