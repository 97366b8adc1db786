from .scores import (SCORE_NORMS, SCORES, cumulative_fraction, neuron_scores, normalize_scores,
                     select_keep, select_keep_cumulative)
from .structure import (STRUCTURE_META_KEY, adapter_param_total, apply_checkpoint_structure,
                        apply_structure, checkpoint_structure, get_structure, prune_adapters,
                        unwrap)

__all__ = [
    'SCORES', 'SCORE_NORMS', 'neuron_scores', 'normalize_scores', 'select_keep',
    'select_keep_cumulative', 'cumulative_fraction', 'adapter_param_total', 'apply_structure',
    'get_structure', 'prune_adapters', 'unwrap', 'STRUCTURE_META_KEY',
    'apply_checkpoint_structure', 'checkpoint_structure'
]
