from .scores import SCORES, neuron_scores, select_keep
from .structure import (STRUCTURE_META_KEY, adapter_param_total, apply_checkpoint_structure,
                        apply_structure, checkpoint_structure, get_structure, prune_adapters,
                        unwrap)

__all__ = [
    'SCORES', 'neuron_scores', 'select_keep', 'adapter_param_total', 'apply_structure',
    'get_structure', 'prune_adapters', 'unwrap', 'STRUCTURE_META_KEY',
    'apply_checkpoint_structure', 'checkpoint_structure'
]
