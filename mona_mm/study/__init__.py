"""The PEFT study: every method on several tasks and backbones, under one protocol
(``tools/analysis_tools/peft_study.py``, ``docs/study.md``).

Grid (:mod:`.spec`), keys and results (:mod:`.store`), lr choice (:mod:`.select`),
aggregation (:mod:`.aggregate`), tables and plot (:mod:`.report`) are plain functions over
run records; :class:`Study` runs the grid and :mod:`.execute` trains one run through
mmengine's Runner.
"""
from .aggregate import SIGNIFICANCE_RULE, Row, significant, summarize
from .report import pareto_front, tables_markdown, update_docs
from .select import select_lrs
from .spec import (MIMI_METHODS, STUDY_METHODS, Slot, StudySpec, in_shard, matches,
                   parse_only, parse_shard, parse_spec)
from .store import ResultStore, load_merged, run_key, write_json_atomic
from .study import Study, render, render_json, rows_from


def load_spec(path: str, root: str = '.') -> StudySpec:
    """Read and check a study config file (:func:`~.spec.parse_spec`).

    Args:
        path: The config (``configs/study/cpu.py``); tried under ``root`` when not found.
        root: The repository root.
    """
    import os.path as osp

    from mmengine.config import Config
    if not osp.exists(path) and osp.exists(osp.join(root, path)):
        path = osp.join(root, path)
    return parse_spec(Config.fromfile(path), source=path, root=root)


__all__ = [
    'SIGNIFICANCE_RULE', 'Row', 'significant', 'summarize', 'pareto_front', 'tables_markdown',
    'update_docs', 'select_lrs', 'MIMI_METHODS', 'STUDY_METHODS', 'Slot', 'StudySpec',
    'in_shard', 'matches', 'parse_only', 'parse_shard', 'parse_spec', 'ResultStore',
    'load_merged', 'run_key', 'write_json_atomic', 'Study', 'render', 'render_json',
    'rows_from', 'load_spec'
]
