"""Importance of every hidden neuron of an adapter, and MiMi's selection."""
import math
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from mona_mm.models.peft.base import BaseAdapter

SCORES = ('mimi', 'mimi_unnormalized', 'grad_l1', 'random')
#: ``'none'``: scores as computed; ``'adapter_max'``: every adapter's scores divided by that
#: adapter's largest (the MiMi authors' ``--weighted 1``).
SCORE_NORMS = ('none', 'adapter_max')


def _owned_sums(t: Tensor, dims) -> (Tensor, Tensor):
    """Per hidden neuron: L1 mass and number of the entries of ``t`` it owns on ``dims``
    (with two hidden dims, e.g. a square 1x1 conv, row i and column i, counted once)."""
    a = t.detach().abs().float()
    if len(dims) == 1:
        d = dims[0]
        other = [i for i in range(a.dim()) if i != d]
        mass = a.sum(dim=other) if other else a
        count = torch.full_like(mass, a.numel() / a.shape[d])
        return mass, count
    d0, d1 = dims
    rest = [i for i in range(a.dim()) if i not in dims]
    m2 = a.sum(dim=rest) if rest else a  # (m, m) after summing kernel positions
    m2 = m2 if d0 < d1 else m2.t()
    per_pos = a.numel() // (a.shape[d0] * a.shape[d1])
    mass = m2.sum(1) + m2.sum(0) - m2.diagonal()
    count = torch.full_like(mass, (2 * a.shape[d0] - 1) * per_pos)
    return mass, count


def neuron_scores(adapter: BaseAdapter, method: str = 'mimi',
                  grads: Optional[Dict[str, Tensor]] = None,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """Score every hidden neuron of ``adapter`` (higher = more important).

    ``mimi``: L1 mass of the weights the neuron owns (down row, up column; for Mona also its
    depthwise kernels and its row and column of the 1x1 conv) divided by how many they are.
    ``mimi_unnormalized``: the mass alone. ``grad_l1``: the same mass of accumulated
    gradient magnitudes (``grads``, by parameter name). ``random``: uniform noise.

    Args:
        adapter: The adapter.
        method: One of ``SCORES``.
        grads: Accumulated ``|grad|`` per parameter name (for ``grad_l1``).
        generator: RNG for ``random`` (seeded identically on every rank).
    """
    if method not in SCORES:
        raise ValueError(f'unknown MiMi score {method!r}; choose one of {SCORES}')
    m = adapter.hidden_dims
    if method == 'random':
        return torch.rand(m, generator=generator)
    dims = adapter.hidden_param_dims()
    params = dict(adapter.named_parameters())
    mass = torch.zeros(m)
    count = torch.zeros(m)
    for name in adapter.score_param_names():
        t = params[name]
        if method == 'grad_l1':
            if grads is None or name not in grads:
                raise ValueError('grad_l1 needs accumulated gradients (no training step ran '
                                 'since the last prune?)')
            t = grads[name]
        ms, cn = _owned_sums(t, dims[name])
        mass += ms.cpu()
        count += cn.cpu()
    return mass / count if method == 'mimi' else mass


def select_keep(scores: Dict[str, Tensor], rho: float, selection: str = 'global',
                min_neurons: int = 0,
                stop: Optional[Callable[[Dict[str, int]], bool]] = None) -> Dict[str, Tensor]:
    """Choose which neurons stay: remove a fraction ``rho`` of the remaining ones.

    ``global``: pool all scores and remove the lowest ``floor(rho * N)`` overall (an adapter
    can lose every neuron). ``local``: remove ``floor(rho * n_j)`` from each adapter.
    ``min_neurons`` keeps at least that many per adapter. ``stop(widths)`` ends the removal
    early once a target is met (checked after each removed neuron, global only).

    Args:
        scores: ``{adapter name: scores}``.
        rho: Fraction of the remaining neurons to remove, in (0, 1).
        selection: ``'global'`` or ``'local'``.
        min_neurons: Floor per adapter.
        stop: Optional early-stop predicate on the widths.

    Returns:
        ``{adapter name: sorted indices to keep}``.
    """
    if not 0 < rho < 1:
        raise ValueError(f'rho must be in (0, 1), got {rho}')
    if selection not in ('global', 'local'):
        raise ValueError(f"selection must be 'global' or 'local', got {selection!r}")
    removed = {k: set() for k in scores}
    widths = {k: v.numel() for k, v in scores.items()}
    if selection == 'local':
        for k, s in scores.items():
            n = min(int(math.floor(rho * s.numel())), max(0, s.numel() - min_neurons))
            removed[k] = set(torch.argsort(s, stable=True)[:n].tolist())
    else:
        total = sum(widths.values())
        budget = int(math.floor(rho * total))
        # ascending by score; ties broken by adapter name then index (rank-independent)
        order = sorted(((float(v), k, i) for k, s in scores.items() for i, v in enumerate(s)))
        for _, k, i in order:
            if budget == 0 or (stop is not None and stop(widths)):
                break
            if widths[k] <= min_neurons:
                continue
            removed[k].add(i)
            widths[k] -= 1
            budget -= 1
    return {k: torch.tensor(sorted(set(range(s.numel())) - removed[k]), dtype=torch.long)
            for k, s in scores.items()}


def normalize_scores(scores: Dict[str, Tensor], norm: str = 'none') -> Dict[str, Tensor]:
    """Rescale the scores of each adapter before the global ranking.

    ``'adapter_max'`` divides every adapter's scores by its own largest score, as the MiMi
    authors' ``weighted`` option does (an adapter whose scores are all 0 stays at 0). Every
    adapter then has a neuron scoring exactly 1.0, so with the authors' keep-ties threshold
    no adapter can lose its best neuron while any neuron is kept.

    Args:
        scores: ``{adapter name: scores}``.
        norm: One of ``SCORE_NORMS``.

    Returns:
        New ``{adapter name: scores}``.
    """
    if norm not in SCORE_NORMS:
        raise ValueError(f'unknown score normalisation {norm!r}; choose one of {SCORE_NORMS}')
    out = {}
    for k, s in scores.items():
        top = s.max() if s.numel() else None
        out[k] = s / top if norm == 'adapter_max' and top is not None and top > 0 else s.clone()
    return out


def cumulative_fraction(rho: float, step: int) -> float:
    """The MiMi authors' pruning amount after prune ``step`` (0-based), as a fraction of the
    *original* neuron count: ``p_0 = rho``, ``p_k = p_{k-1} + (1 - p_{k-1}) * rho``
    (computed by that recursion, in float64, as their code does).

    Args:
        rho: Fraction of the remaining neurons each prune removes, in (0, 1).
        step: How many prunes came before this one.
    """
    if not 0 < rho < 1:
        raise ValueError(f'rho must be in (0, 1), got {rho}')
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f'step must be an int >= 0, got {step!r}')
    p = rho
    for _ in range(step):
        p = p + (1 - p) * rho
    return p


def select_keep_cumulative(scores: Dict[str, Tensor], fraction: float,
                           initial: Dict[str, int],
                           selection: str = 'global') -> Dict[str, Tensor]:
    """The MiMi authors' selection: prune to ``fraction`` of the *original* neurons.

    ``global``: ``n = floor(N0 * (1 - fraction))`` with ``N0`` the original neuron count of
    all adapters (float32 arithmetic, as in their code); the threshold is the ``n``-th
    largest score of all neurons and every neuron scoring ``>=`` it stays (ties at the
    threshold all stay, so slightly more than ``n`` may). ``local``: adapter ``j`` keeps
    its ``m0_j - round(fraction * m0_j)`` best neurons (``torch.nn.utils.prune``'s count;
    ties: the lower index goes first).

    Neurons removed earlier are simply absent here; in the authors' masks they score 0,
    below any threshold, so the kept sets are the same.

    Args:
        scores: ``{adapter name: scores of its current neurons}``.
        fraction: Cumulative pruning amount ``p_k`` in (0, 1] (see
            :func:`cumulative_fraction`).
        initial: ``{adapter name: original width}``, every adapter of the model (vanished
            ones included).
        selection: ``'global'`` or ``'local'``.

    Returns:
        ``{adapter name: sorted indices to keep}``.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f'fraction must be in (0, 1], got {fraction}')
    if selection not in ('global', 'local'):
        raise ValueError(f"selection must be 'global' or 'local', got {selection!r}")
    missing = sorted(set(scores) - set(initial))
    if missing:
        raise KeyError(f'no original width for adapters {missing[:3]}')
    keep = {}
    if selection == 'local':
        for k, s in scores.items():
            n_keep = initial[k] - round(fraction * initial[k])
            order = torch.argsort(s, descending=True, stable=True)
            keep[k] = order[:max(n_keep, 0)].sort().values
        return keep
    n0 = torch.tensor(float(sum(initial.values())), dtype=torch.float32)
    n_keep = int(math.floor(float(n0 * (1.0 - fraction))))
    pooled = torch.cat([s.detach().float().flatten() for s in scores.values()]) \
        if scores else torch.zeros(0)
    if n_keep <= 0:
        threshold = math.inf
    elif n_keep >= pooled.numel():
        threshold = -math.inf
    else:
        threshold = float(torch.topk(pooled, n_keep).values[-1])
    for k, s in scores.items():
        keep[k] = torch.nonzero(s.detach().float() >= threshold).flatten()
    return keep
