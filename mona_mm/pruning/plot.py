"""MiMi paper Fig. 5 style: kept and removed hidden neurons per adapter, by layer."""
from typing import Dict

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
