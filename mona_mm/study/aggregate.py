"""From run records to table rows: the test metric over seeds at the chosen lr, compared with
full fine-tuning."""
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from .spec import Cell

#: Differences to ``full`` larger than this many standard errors are marked.
Z_SIGNIFICANT = 2.0
SIGNIFICANCE_RULE = ('|mean - mean_full| > 2 sqrt(std^2/n + std_full^2/n_full) (two standard '
                     'errors of the difference; needs n >= 2 on both sides)')


@dataclass
class Row:
    """One method of one backbone on one task.

    ``mean``/``std`` are over seeds (sample standard deviation) of the *test* metric at the
    lr chosen on validation; ``params`` are counted at the end of training (after MiMi's
    pruning), ``s_per_iter``/``memory_mb`` averaged over the seeds' runs.
    """
    backbone: str
    task: str
    method: str
    metric: str
    lr: float
    lr_factor: float
    n: int
    seeds: List[int]
    mean: float
    std: float
    params: Dict[str, float]
    s_per_iter: float
    memory_mb: float
    memory_kind: str
    delta: Optional[float] = None
    significant: Optional[bool] = None
    values: List[float] = field(default_factory=list)

    @property
    def backbone_pct(self) -> float:
        total = self.params.get('backbone_total') or 0
        return 100.0 * self.params.get('backbone_trainable', 0) / total if total else math.nan

    @property
    def model_pct(self) -> float:
        total = self.params.get('total') or 0
        return 100.0 * self.params.get('trainable', 0) / total if total else math.nan

    def to_dict(self) -> dict:
        return dict(asdict(self), backbone_pct=self.backbone_pct, model_pct=self.model_pct)


def significant(mean: float, std: float, n: int, mean_ref: float, std_ref: float,
                n_ref: int, z: float = Z_SIGNIFICANT) -> Optional[bool]:
    """Whether ``mean`` differs from ``mean_ref`` by more than ``z`` standard errors of the
    difference (Welch's standard error); None when either side has fewer than 2 seeds.

    Args:
        mean: Mean of the method.
        std: Its sample standard deviation over seeds.
        n: Its number of seeds.
        mean_ref: Mean of the reference (full fine-tuning).
        std_ref: Its standard deviation.
        n_ref: Its number of seeds.
        z: Standard errors that count as a difference.
    """
    if n < 2 or n_ref < 2:
        return None
    se = math.sqrt(std ** 2 / n + std_ref ** 2 / n_ref)
    return abs(mean - mean_ref) > z * se


def _mean(values: Iterable[float]) -> float:
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return statistics.fmean(values) if values else math.nan


def summarize(records: Iterable[Mapping], chosen: Mapping[Cell, Mapping],
              seeds: Sequence[int], reference: str = 'full') -> List[Row]:
    """Rows for every cell with a chosen lr, in the order of ``chosen``.

    Args:
        records: Run records (lr-search and seed runs; others are ignored).
        chosen: From :func:`~.select.select_lrs`.
        seeds: The study's seeds; runs at the chosen lr with these seeds count.
        reference: The method every other one is compared with.

    Returns:
        The rows, with ``delta``/``significant`` set where the reference row exists.
    """
    at_lr: Dict[Cell, Dict[int, Mapping]] = {}
    for r in records:
        if r.get('kind', 'finetune') != 'finetune':
            continue
        cell = (r['backbone'], r['task'], r['method'])
        if cell not in chosen or r['seed'] not in seeds or \
                not math.isclose(float(r['lr']), chosen[cell]['lr'], rel_tol=1e-9):
            continue
        at_lr.setdefault(cell, {})[r['seed']] = r
    rows = []
    for cell, pick in chosen.items():
        runs = [at_lr.get(cell, {})[s] for s in seeds if s in at_lr.get(cell, {})]
        if not runs:
            continue
        metric = runs[0]['metric']
        values = [float(r['test'][metric]) for r in runs]
        n = len(values)
        params = {k: _mean(r['params'][k] for r in runs) for k in runs[0]['params']}
        rows.append(Row(
            backbone=cell[0], task=cell[1], method=cell[2], metric=metric, lr=pick['lr'],
            lr_factor=pick['lr_factor'], n=n, seeds=[r['seed'] for r in runs],
            mean=statistics.fmean(values), std=statistics.stdev(values) if n > 1 else math.nan,
            params=params, s_per_iter=_mean(r['time']['s_per_iter'] for r in runs),
            memory_mb=_mean(r['memory']['mb'] for r in runs),
            memory_kind=runs[0]['memory']['kind'], values=values))
    ref = {(r.backbone, r.task): r for r in rows if r.method == reference}
    for row in rows:
        base = ref.get((row.backbone, row.task))
        if base is None or row.method == reference:
            continue
        row.delta = row.mean - base.mean
        row.significant = significant(row.mean, row.std, row.n, base.mean, base.std, base.n)
    return rows
