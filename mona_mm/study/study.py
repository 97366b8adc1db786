"""A PEFT study from its config to its tables: data, pretraining, lr search, seeds, outputs.

Protocol (``docs/study.md``):

1. generate the source and target sets (skipped when ``study_shapes.json`` matches);
2. per backbone, one full training on the source task; its checkpoint is cached under
   ``pretrain/<key>.pth`` (the key hashes the resolved config) and every fine-tuning run of
   that backbone starts from it;
3. per (backbone, task, method), one run per lr of the grid at the first seed, each
   evaluated on the validation and the test split; the lr with the best *validation* metric
   is chosen (:func:`~.select.select_lrs`);
4. the other seeds at the chosen lr; the tables report the test metric's mean and std over
   the seeds.

Every run writes ``results/<key>.json`` when it finishes, so an interrupted study resumes by
skipping them. ``--shard i/n`` deals the ordered slots round-robin; a shard trains the
pretraining it needs unless its checkpoint is already cached (several machines: run
``--pretrain-only`` once and share ``pretrain/``, or accept one pretraining per machine), and
runs the further seeds of the cells whose lr search is complete in ``results/`` (after the
other shards' results are copied in, run it again).
"""
import copy
import datetime
import json
import math
import os
import os.path as osp
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from .aggregate import Row, summarize
from .report import docs_blocks, plot, tables_markdown, update_docs
from .select import select_lrs
from .spec import Cell, Slot, StudySpec, in_shard, matches
from .store import ResultStore, load_merged, replace_prefixes, run_key, write_json_atomic


@dataclass
class Planned:
    """A slot with its resolved config and key."""
    slot: Slot
    key: str
    lr: float
    lr_factor: float
    cfg: object
    overrides: dict
    pretrain_key: Optional[str]


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec='seconds')


def _hms(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return '?'
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


class Study:
    """Runs (part of) a study and writes its outputs.

    Args:
        spec: The checked study config.
        work_dir: The study folder: ``results/``, ``pretrain/``, ``work/`` (Runner logs),
            ``study.json``, ``tables.md``, ``plot.png``.
        data_root: Where the generated sets go (default: the config's ``data.root``).
        shard: ``(i, n)``: this process runs the slots with index % n == i.
        only: ``--only`` filters (:func:`~.spec.parse_only`).
        log_level: The Runners' log level.
        echo: Where progress lines go.
    """

    def __init__(self, spec: StudySpec, work_dir: str, data_root: Optional[str] = None,
                 shard: Tuple[int, int] = (0, 1), only: Optional[Dict] = None,
                 log_level: str = 'WARNING', echo: Callable[[str], None] = print) -> None:
        self.spec = spec
        self.work_dir = work_dir
        self.data_root = data_root or (spec.data['root'] if spec.data else None)
        self.shard = shard
        self.only = only or {}
        self.log_level = log_level
        self.echo = echo
        self.store = ResultStore(osp.join(work_dir, 'results'))
        self.pretrain_dir = osp.join(work_dir, 'pretrain')
        self._base_cfgs: Dict[str, object] = {}
        self._pretrain: Dict[str, Tuple[str, object, dict]] = {}
        self.trained: List[str] = []
        # wall seconds of the runs trained in this session / found finished, for the ETA
        self._durations: Dict[Tuple[str, str], List[float]] = {}
        self._prior: Dict[Tuple[str, str], List[float]] = {}

    # ---------------------------------------------------------------- data and planning
    def data_args(self) -> Optional[dict]:
        if self.spec.data is None:
            return None
        return {k: v for k, v in self.spec.data.items() if k != 'root'}

    def ensure_data(self) -> None:
        """Generate the study's sets unless ``study_shapes.json`` says they are there."""
        args = self.data_args()
        if args is None:
            return
        from mona_mm.datasets.shapes import STUDY_STAMP, generate_study_shapes
        stamp = osp.join(self.data_root, STUDY_STAMP)
        if osp.exists(stamp):
            with open(stamp) as f:
                if json.load(f) == self._full_data_args(args):
                    return
        self.echo(f'[study] generating the source and target sets in {self.data_root}')
        t0 = time.perf_counter()
        generate_study_shapes(self.data_root, **args)
        self.echo(f'[study] data ready in {time.perf_counter() - t0:.0f} s')

    @staticmethod
    def _full_data_args(args: dict) -> dict:
        import inspect

        from mona_mm.datasets.shapes import generate_study_shapes
        defaults = {k: p.default for k, p in
                    inspect.signature(generate_study_shapes).parameters.items()
                    if k != 'out_dir'}
        return dict(defaults, **args)

    def _load(self, path: str):
        from mmengine.config import Config
        if path not in self._base_cfgs:
            self._base_cfgs[path] = Config.fromfile(path)
        return copy.deepcopy(self._base_cfgs[path])

    def _payload(self, kind: str, cfg, extra: dict) -> dict:
        from .execute import key_config
        data = self._data_key()
        if kind == 'pretrain' and data is not None:
            # the source set depends on these only: resizing a target split (shots...)
            # keeps the pretraining
            data = {k: v for k, v in data.items() if k == 'seed' or k.startswith('source')}
        return dict(kind=kind, tag=self.spec.tag, data=data,
                    config=key_config(cfg, self.work_dir, self.data_root), **extra)

    def _data_key(self) -> Optional[dict]:
        args = self.data_args()
        return None if args is None else self._full_data_args(args)

    def pretrain_plan(self, backbone: str) -> Optional[Tuple[str, object, dict]]:
        """``(key, config, overrides)`` of a backbone's pretraining, or None without one."""
        if self.spec.backbones[backbone]['pretrain'] is None:
            return None
        if backbone not in self._pretrain:
            from .execute import pretrain_config
            cfg, overrides = pretrain_config(self.spec, backbone, self.data_root, self._load)
            key = run_key(self._payload('pretrain', cfg, {}))
            self._pretrain[backbone] = (key, cfg, overrides)
        return self._pretrain[backbone]

    def pretrain_paths(self, key: str) -> Tuple[str, str]:
        return (osp.join(self.pretrain_dir, f'{key}.pth'),
                osp.join(self.pretrain_dir, f'{key}.json'))

    def plan(self, slot: Slot, lr_factor: float) -> Planned:
        """Resolve a slot's config (at ``lr_factor``) and key; trains nothing."""
        from .execute import finetune_config
        pre = self.pretrain_plan(slot.backbone)
        ckpt = self.pretrain_paths(pre[0])[0] if pre else None
        cfg, overrides, lr = finetune_config(self.spec, slot.backbone, slot.task, slot.method,
                                             lr_factor, slot.seed, ckpt, self.data_root,
                                             self._load)
        key = run_key(self._payload('finetune', cfg, dict(pretrain=pre[0] if pre else None)))
        return Planned(slot, key, lr, lr_factor, cfg, overrides, pre[0] if pre else None)

    def lr_plans(self) -> List[Planned]:
        """Every lr-search slot of the study (all shards), planned."""
        return [self.plan(s, s.lr_factor) for s in self.spec.slots() if s.stage == 'lr']

    def chosen(self, lr_records: Sequence[dict]) -> Dict[Cell, dict]:
        return select_lrs(lr_records, factors=self.spec.lr_factors)

    def seed_plans(self, chosen: Dict[Cell, dict]) -> Tuple[List[Planned], List[Slot]]:
        """The further-seed slots planned at their chosen lr, and those still waiting for
        their cell's lr search."""
        planned, waiting = [], []
        for s in self.spec.slots():
            if s.stage != 'seed':
                continue
            if s.cell in chosen:
                planned.append(self.plan(s, chosen[s.cell]['lr_factor']))
            else:
                waiting.append(s)
        return planned, waiting

    def mine(self, slot: Slot) -> bool:
        return in_shard(slot, self.shard) and matches(slot, self.only)

    # ---------------------------------------------------------------- running
    def ensure_pretrain(self, backbone: str) -> Optional[str]:
        """The cached source-task checkpoint of ``backbone``, trained first if missing."""
        pre = self.pretrain_plan(backbone)
        if pre is None:
            return None
        key, cfg, overrides = pre
        ckpt, record_path = self.pretrain_paths(key)
        if osp.exists(ckpt) and osp.exists(record_path):
            return ckpt
        from . import execute
        self.echo(f'[study] pretraining {backbone} on the source task (key {key})')
        result = execute.train_and_evaluate(
            cfg, osp.join(self.work_dir, 'work', key), f'pretrain_{key}', self.log_level,
            save_to=ckpt, splits=('val', ))
        pre_cfg = self.spec.backbones[backbone]['pretrain']
        record = dict(key=key, kind='pretrain', study=self.spec.name, tag=self.spec.tag,
                      backbone=backbone, seed=overrides['randomness']['seed'],
                      config_file=pre_cfg['config'], overrides=self._norm(overrides),
                      config=self._payload('pretrain', cfg, {})['config'],
                      data=self._data_key(), splits=self._norm(execute.split_files(cfg)),
                      finished=_now(), **execute.environment(), **result)
        write_json_atomic(record_path, record)
        self.trained.append(key)
        self.echo(f'[study] pretrained {backbone} in {_hms(result["time"]["wall_s"])}: '
                  f'source val {self._fmt_metrics(result["val"])}')
        return ckpt

    def _norm(self, obj):
        from .execute import _plain
        mapping = {osp.abspath(self.work_dir).rstrip('/') + '/': '{study}/',
                   self.work_dir.rstrip('/') + '/': '{study}/'}
        if self.data_root:
            mapping[self.data_root.rstrip('/') + '/'] = '{data}/'
            mapping[osp.abspath(self.data_root).rstrip('/') + '/'] = '{data}/'
        return replace_prefixes(_plain(obj), mapping)

    @staticmethod
    def _fmt_metrics(metrics: dict) -> str:
        return ', '.join(f'{k}={v:.4g}' for k, v in list(metrics.items())[:3])

    def execute(self, p: Planned) -> dict:
        """Train and evaluate one planned slot and write its record."""
        from . import execute
        self.ensure_pretrain(p.slot.backbone)
        t0 = time.perf_counter()
        result = execute.train_and_evaluate(
            p.cfg, osp.join(self.work_dir, 'work', p.key), f'{p.slot.method}_{p.key}',
            self.log_level)
        s = p.slot
        record = dict(
            key=p.key, kind='finetune', study=self.spec.name, tag=self.spec.tag,
            stage=s.stage, backbone=s.backbone, task=s.task, method=s.method, seed=s.seed,
            lr=p.lr, lr_factor=p.lr_factor, metric=self.spec.metric(s.task),
            config_file=self.spec.backbones[s.backbone]['tasks'][s.task],
            overrides=self._norm(p.overrides),
            config=self._payload('finetune', p.cfg, {})['config'], pretrain=p.pretrain_key,
            data=self._data_key(), splits=self._norm(execute.split_files(p.cfg)),
            finished=_now(), **execute.environment(), **result)
        self.store.write(record)
        self.trained.append(p.key)
        self._durations.setdefault((s.backbone, s.task), []).append(time.perf_counter() - t0)
        return record

    def _mean_duration(self, backbone: str, task: str) -> float:
        """Mean wall time of this session's runs of (backbone, task), else of all its
        runs, else nan."""
        for known in (self._durations, self._prior):
            mine = known.get((backbone, task))
            if mine:
                return sum(mine) / len(mine)
        every = [d for known in (self._durations, self._prior) for v in known.values()
                 for d in v]
        return sum(every) / len(every) if every else math.nan

    def _eta(self, pending: Sequence[Slot]) -> float:
        return sum(self._mean_duration(s.backbone, s.task) for s in pending)

    def _run_list(self, todo: List[Planned], counter: List[int], total: int,
                  pending_after: Sequence[Slot], t_start: float) -> None:
        for i, p in enumerate(todo):
            counter[0] += 1
            self.echo(f'[study {counter[0]}/{total}] {p.slot.describe(p.lr)} ...')
            rec = self.execute(p)
            eta = self._eta([q.slot for q in todo[i + 1:]] + list(pending_after))
            m = rec['metric']
            self.echo(f'[study {counter[0]}/{total}] done in {rec["time"]["wall_s"]:.1f} s '
                      f'({rec["time"]["s_per_iter"]:.3f} s/iter): val {m}='
                      f'{rec["val"].get(m, math.nan):.4g}, test {rec["test"].get(m, math.nan):.4g}'
                      f' | elapsed {_hms(time.perf_counter() - t_start)}, ETA {_hms(eta)}')

    def run(self, max_runs: Optional[int] = None, pretrain_only: bool = False,
            estimate: bool = False) -> Dict[str, object]:
        """Run this shard's missing runs (see the module docstring), then write the outputs.

        Args:
            max_runs: Stop after this many fine-tuning runs (a sitting).
            pretrain_only: Only the pretraining this shard needs.
            estimate: Only the lr-search runs at factor 1 of ``estimate_methods`` per
                (backbone, task) (they are ordinary runs of the grid and stay), then print
                the projected time of the whole grid.

        Returns:
            ``dict(trained=[keys], waiting=[slots], outputs=...)``.
        """
        t_start = time.perf_counter()
        self.ensure_data()
        lr_plans = self.lr_plans()
        mine = [p for p in lr_plans if self.mine(p.slot)]
        if estimate:
            mine = [p for p in mine if p.slot.method in self.spec.estimate_methods
                    and math.isclose(p.lr_factor, 1.0)]
        todo = [p for p in mine if not self.store.has(p.key)]
        for r in self.store.records([p.key for p in mine if self.store.has(p.key)]):
            self._prior.setdefault((r['backbone'], r['task']), []).append(r['time']['wall_s'])
        # pretraining first: the backbones this shard still trains (all of its backbones
        # with --pretrain-only)
        needed = {s.backbone for s in self.spec.slots() if self.mine(s)} if pretrain_only \
            else {p.slot.backbone for p in todo}
        pending_pre = [b for b in self.spec.backbones if b in needed and self.pretrain_plan(b)
                       and not all(osp.exists(x) for x in
                                   self.pretrain_paths(self.pretrain_plan(b)[0]))]
        seed_slots: List[Slot] = []  # further seeds still to run, as far as known now
        if not estimate:
            planned, waiting_now = self.seed_plans(
                self.chosen(self.store.records([p.key for p in lr_plans])))
            seed_slots = [p.slot for p in planned
                          if self.mine(p.slot) and not self.store.has(p.key)]
            seed_slots += [s for s in waiting_now if self.mine(s)]
        done_lr = len(mine) - len(todo)
        self.echo(f'[study] {self.spec.name}: {len(lr_plans)} lr-search runs in the grid, '
                  f'{len(mine)} in this shard/filter ({done_lr} done), '
                  f'{len(seed_slots)} further-seed runs; {len(pending_pre)} pretraining(s) '
                  f'to do')
        for b in pending_pre:
            self.ensure_pretrain(b)
        if pretrain_only:
            return dict(trained=list(self.trained), waiting=[], outputs=None)
        if max_runs is not None:
            todo = todo[:max_runs]
        counter = [0]
        total = len(todo) + len(seed_slots)
        self._run_list(todo, counter, total, seed_slots, t_start)
        left = None if max_runs is None else max_runs - len(todo)
        waiting: List[Slot] = []
        if not estimate and (left is None or left > 0):
            lr_records = self.store.records([p.key for p in lr_plans])
            seed_plans, waiting_all = self.seed_plans(self.chosen(lr_records))
            seed_todo = [p for p in seed_plans if self.mine(p.slot)
                         and not self.store.has(p.key)]
            waiting = [s for s in waiting_all if self.mine(s)]
            if left is not None:
                seed_todo = seed_todo[:left]
            total = counter[0] + len(seed_todo) + len(waiting)
            self._run_list(seed_todo, counter, total, waiting, t_start)
            if waiting:
                self.echo(f'[study] {len(waiting)} further-seed runs wait for the lr search of '
                          'their cells (other shards or --only); run again once those '
                          'results are in ' + self.store.root)
        outputs = self.write_outputs()
        if estimate:
            self.echo(self.estimate_text())
        return dict(trained=list(self.trained), waiting=waiting, outputs=outputs)

    def dry_run_text(self) -> str:
        """The pretraining and this shard's runs with their keys and status."""
        lines = []
        for b in self.spec.backbones:
            pre = self.pretrain_plan(b)
            if pre:
                done = all(osp.exists(x) for x in self.pretrain_paths(pre[0]))
                lines.append(f'pretrain {b}: {pre[0]} ({"done" if done else "todo"})')
        lr_plans = self.lr_plans()
        for p in lr_plans:
            if self.mine(p.slot):
                lines.append(f'{p.slot.index:4d} {p.key} '
                             f'{"done" if self.store.has(p.key) else "todo"}  '
                             f'{p.slot.describe(p.lr)}')
        seed_plans, waiting = self.seed_plans(
            self.chosen(self.store.records([p.key for p in lr_plans])))
        for p in seed_plans:
            if self.mine(p.slot):
                lines.append(f'{p.slot.index:4d} {p.key} '
                             f'{"done" if self.store.has(p.key) else "todo"}  '
                             f'{p.slot.describe(p.lr)}')
        n_wait = sum(1 for s in waiting if self.mine(s))
        if n_wait:
            lines.append(f'{n_wait} further-seed runs wait for their cell\'s lr search')
        return '\n'.join(lines)

    # ---------------------------------------------------------------- outputs
    def current_records(self) -> List[dict]:
        """Records of the current plan found in ``results/`` and ``pretrain/`` (a record of
        an older config has another key and is left out)."""
        lr_plans = self.lr_plans()
        lr_records = self.store.records([p.key for p in lr_plans])
        seed_plans, _ = self.seed_plans(self.chosen(lr_records))
        records = lr_records + self.store.records([p.key for p in seed_plans])
        for b in self.spec.backbones:
            pre = self.pretrain_plan(b)
            if pre and osp.exists(self.pretrain_paths(pre[0])[1]):
                with open(self.pretrain_paths(pre[0])[1]) as f:
                    records.insert(0, json.load(f))
        return records

    def write_outputs(self, out_dir: Optional[str] = None) -> Dict[str, str]:
        """Write ``study.json`` (merged records, full configs left in the per-run files),
        ``tables.md`` and ``plot.png``."""
        records = self.current_records()
        merged = dict(study=self.spec.summary(), generated=_now(),
                      records=[{k: v for k, v in r.items() if k != 'config'}
                               for r in records])
        path = osp.join(self.work_dir, 'study.json')
        write_json_atomic(path, merged)
        return render(merged, out_dir or self.work_dir, echo=self.echo)

    def estimate_text(self) -> str:
        """Projected time of the whole grid from the runs timed so far, per (backbone,
        task): the mean time of its runs times the number of its runs. Wall time is what it
        took here; CPU time (this process) is what it costs on an otherwise idle machine
        with one thread per run."""
        records = self.current_records()
        lines = ['[study] estimate of the whole grid from the runs measured so far:',
                 '| backbone | task | runs measured | wall s/run | CPU s/run | s/iter | '
                 'runs in grid | total (wall) | total (CPU) |',
                 '|---|---|---:|---:|---:|---:|---:|---:|---:|']
        n_per = len(self.spec.lr_factors) + len(self.spec.seeds) - 1
        wall = cpu = 0.0
        for b, bcfg in self.spec.backbones.items():
            pre = [r for r in records if r.get('kind') == 'pretrain' and r['backbone'] == b]
            groups = [('pretrain', pre, 1)] if pre else []
            groups += [(t, [r for r in records if r.get('kind') == 'finetune' and
                            r['backbone'] == b and r['task'] == t], n_per * len(self.spec.methods))
                       for t in self.spec.tasks if t in bcfg['tasks']]
            for t, mine, n in groups:
                mean = (lambda key: sum(r['time'][key] for r in mine) / len(mine)
                        if mine and all(key in r['time'] for r in mine) else math.nan)
                w, c, it = mean('wall_s'), mean('cpu_s'), mean('s_per_iter')
                wall += 0 if math.isnan(w) else w * n
                cpu += 0 if math.isnan(c) else c * n
                lines.append(f'| {b} | {t} | {len(mine)} | {w:.1f} | {c:.1f} | {it:.3f} | {n} '
                             f'| {_hms(w * n)} | {_hms(c * n)} |')
        lines.append(f'[study] projected total: {_hms(wall)} at the wall times measured here, '
                     f'{_hms(cpu)} of CPU time (one thread per run, machine to itself)')
        return '\n'.join(lines)


def rows_from(merged: dict) -> List[Row]:
    """Select the lrs (validation only) and summarise a merged study JSON."""
    study = merged['study']
    records = [r for r in merged['records'] if r.get('kind', 'finetune') == 'finetune']
    chosen = select_lrs(records, factors=study['lr_factors'])
    order = {(b, t, m): i for i, (b, t, m) in enumerate(
        (b, t, m) for b in study['backbones'] for t in study['tasks']
        for m in study['methods'])}
    chosen = dict(sorted(chosen.items(), key=lambda kv: order.get(kv[0], len(order))))
    return summarize(records, chosen, study['seeds'])


def render(merged: dict, out_dir: str, docs: Union[str, Sequence[str], None] = None,
           echo: Callable[[str], None] = print, json_name: str = 'study.json'
           ) -> Dict[str, str]:
    """Write ``tables.md`` and ``plot.png`` for a merged study JSON (and update the docs).

    Args:
        merged: ``{'study': ..., 'records': [...]}``.
        out_dir: Where the table and the plot go.
        docs: Markdown files whose ``<!-- study:NAME -->`` blocks are rewritten: ``results``,
            ``figure`` and ``headline`` (the first file must have all three, e.g.
            ``docs/study.md``; further ones any of them, e.g. the README's ``headline``).
        echo: Where the tables are printed.
        json_name: How the merged JSON is named in the docs caption.

    Returns:
        ``{'tables': path, 'plot': path}``.
    """
    rows = rows_from(merged)
    text = tables_markdown(rows, merged['study'])
    os.makedirs(out_dir, exist_ok=True)
    tables_path = osp.join(out_dir, 'tables.md')
    with open(tables_path, 'w') as f:
        f.write(text)
    plot_path = plot(rows, osp.join(out_dir, 'plot.png'), merged['study'])
    echo(text)
    docs = [docs] if isinstance(docs, str) else list(docs or [])
    n = sum(1 for r in merged['records'] if r.get('kind', 'finetune') == 'finetune')
    for i, md in enumerate(docs):
        rel = osp.relpath(plot_path, osp.dirname(osp.abspath(md)))
        changed = update_docs(md, docs_blocks(rows, merged['study'], rel, n, json_name),
                              only_present=i > 0)
        echo(f'[study] {md}: ' + (f'updated {changed}' if changed else 'up to date'))
    return dict(tables=tables_path, plot=plot_path)


def render_json(path: str, out_dir: str, docs: Union[str, Sequence[str], None] = None,
                echo: Callable[[str], None] = print) -> Dict[str, str]:
    """:func:`render` for a merged JSON file (``--from-json``)."""
    return render(load_merged(path), out_dir, docs, echo, json_name=path)
