"""MiMi paper Fig. 5 style: kept and removed hidden neurons per adapter, by layer."""
from typing import Callable, Dict, Tuple

import matplotlib

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_structure(structure: Dict[str, int], initial: Dict[str, int], out: str) -> str:
    """Stacked bars of kept / removed neurons for every adapter, in network order.

    Args:
        structure: Current widths (0 = vanished).
        initial: Widths before pruning.
        out: PNG path to write.
    """
    names = sorted(initial, key=_network_order)
    kept = [structure.get(n, 0) for n in names]
    removed = [initial[n] - k for n, k in zip(names, kept)]
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(names)), 3.5))
    x = range(len(names))
    ax.bar(x, kept, color='#2b7bba', label='kept')
    ax.bar(x, removed, bottom=kept, color='#d9d9d9', label='removed')
    ax.set_xticks(list(x))
    ax.set_xticklabels([_short(n) for n in names], rotation=90, fontsize=6)
    ax.set_ylabel('hidden neurons')
    total_k, total_i = sum(kept), sum(initial.values())
    ax.set_title(f'MiMi: {total_k}/{total_i} neurons kept, '
                 f'{sum(1 for k in kept if k == 0)} adapters vanished', fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def checkpoint_widths(checkpoint: dict, config_widths: Callable[[], Dict[str, int]]
                      ) -> Tuple[Dict[str, int], Dict[str, int]]:
    """The current and the initial adapter widths of a checkpoint, to plot.

    A full checkpoint of a run that never pruned carries no structure record, while its
    adapter-only export records the widths it holds, without initial ones: both mean the
    config's widths, kept in full, so both plot alike. A MiMi-pruned checkpoint, its export
    and its re-parameterised form all carry the pruning hook's record.

    Args:
        checkpoint: The checkpoint dict (full, adapter-only or re-parameterised).
        config_widths: Returns the widths of a model built from the config; called only
            when the checkpoint does not record them.

    Returns:
        ``(structure, initial)``: ``{adapter name: hidden width}`` now (0 = vanished) and
        before pruning.
    """
    from .structure import STRUCTURE_META_KEY
    record = (checkpoint.get('meta') or {}).get(STRUCTURE_META_KEY) or {}
    structure, initial = record.get('structure'), record.get('initial_structure')
    if structure is None or not initial:
        widths = config_widths()
        structure = widths if structure is None else structure
        initial = initial or widths
    return dict(structure), dict(initial)


def _network_order(name: str):
    return [int(p) if p.isdigit() else p for p in name.split('.')]


def _short(name: str) -> str:
    parts = name.split('.')
    if 'stages' in parts and 'blocks' in parts:  # Swin
        s, b = parts[parts.index('stages') + 1], parts[parts.index('blocks') + 1]
        return f's{s}b{b}.{parts[-1]}'
    if 'layers' in parts:  # ViT
        return f'l{parts[parts.index("layers") + 1]}.{parts[-1]}'
    return name
