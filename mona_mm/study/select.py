"""Learning-rate choice: on the validation split only.

Every lr-search run records its metrics on the validation *and* the test split; the choice
reads the validation metric and nothing else, so the test numbers the tables report were
never used to pick anything.
"""
import math
from typing import Dict, Iterable, Mapping, Optional, Sequence

from .spec import Cell


def _val_score(record: Mapping) -> float:
    """The validation metric of a run, NaN (a diverged run) ranked last."""
    value = record['val'].get(record['metric'])
    try:
        value = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return -math.inf if math.isnan(value) else value


def select_lrs(records: Iterable[Mapping], factors: Optional[Sequence[float]] = None,
               greater_is_better: bool = True) -> Dict[Cell, dict]:
    """Choose each cell's learning rate from its lr-search runs by the validation metric.

    A pure function of the records: it reads ``stage``, ``backbone``, ``task``, ``method``,
    ``lr``, ``lr_factor``, ``metric`` and ``val[metric]``, never ``test``. Ties go to the
    factor nearest 1 (the method's default), then to the smaller lr.

    Args:
        records: Run records; only ``stage == 'lr'`` ones count.
        factors: The grid; if given, a cell whose search lacks a factor gets no choice yet.
        greater_is_better: Whether a larger metric is better (accuracy, mIoU, mAP).

    Returns:
        ``{(backbone, task, method): dict(lr=..., lr_factor=..., val=..., key=...)}``.
    """
    by_cell: Dict[Cell, Dict[float, Mapping]] = {}
    for r in records:
        if r.get('stage') != 'lr':
            continue
        cell = (r['backbone'], r['task'], r['method'])
        by_cell.setdefault(cell, {})[float(r['lr_factor'])] = r
    sign = 1.0 if greater_is_better else -1.0
    chosen = {}
    for cell, runs in by_cell.items():
        if factors is not None and not all(
                any(math.isclose(f, g) for g in runs) for f in factors):
            continue
        best = max(runs.values(), key=lambda r: (
            sign * _val_score(r) if _val_score(r) != -math.inf else -math.inf,
            -abs(math.log(float(r['lr_factor']))), -float(r['lr'])))
        chosen[cell] = dict(lr=float(best['lr']), lr_factor=float(best['lr_factor']),
                            val=_val_score(best), key=best.get('key'))
    return chosen
