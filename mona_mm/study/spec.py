"""What a PEFT study trains: the study config, read and checked, and its ordered run slots.

A study config (``configs/study/*.py``, an mmengine config) names:

* ``backbones``: ``{name: dict(pretrain=..., tasks={task: config})}``. ``pretrain`` is
  ``dict(config=<file>, iters=<n>)``, the full training on the source task whose checkpoint
  every fine-tuning run of that backbone starts from, or None when the task configs carry
  their own pretrained weights. A task config may hold ``{method}`` and ``{folder}``
  (the method's slug and its config folder, ``mimi`` for the MiMi variants): then it is the
  method's own config; otherwise the study sets the method on ``model.backbone.peft``.
* ``tasks``: ``{task: dict(metric=<key>, iters=<n> or epochs=<n>, lr=<lrs>,
  cfg_options=<dict>)}``; ``lr`` maps method slugs (and ``default``) to the default learning
  rate, or is None for the config's; ``cfg_options`` (dotted key -> value, replaced) go into
  every run of the task, e.g. to give it a test split apart from the validation split;
  ``mimi`` (optional) updates the study's ``mimi`` for the task.
* ``methods``: slugs of :data:`~mona_mm.models.peft.names.METHOD_SLUGS` and the MiMi variants
  ``mona-mimi``/``adapter-mimi``; ``lr_factors``: the grid around the default (1 included);
  ``seeds``; ``mimi``: the pruning of the MiMi variants; ``data``: the generated sets
  (:func:`~mona_mm.datasets.shapes.generate_study_shapes` arguments plus ``root``) or None.

The runs form *slots*: for every cell (backbone, task, method) one lr-search slot per grid
factor at the first seed, then one slot per further seed at the lr chosen on validation.
"""
import math
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from mona_mm.models.peft.names import METHOD_SLUGS

#: MiMi variants: slug -> the method it prunes.
MIMI_METHODS = {'mona-mimi': 'mona', 'adapter-mimi': 'adapter'}
#: Every method a study can run, in the papers' table order.
STUDY_METHODS = tuple(METHOD_SLUGS) + tuple(MIMI_METHODS)
#: ``(backbone, task, method)``.
Cell = Tuple[str, str, str]


@dataclass(frozen=True)
class Slot:
    """One run of the study grid.

    Args:
        index: Position in the ordered list of all slots (what ``--shard`` splits).
        stage: ``'lr'`` (lr search at the first seed) or ``'seed'`` (a further seed at the
            chosen lr).
        backbone: Backbone name.
        task: Task name.
        method: Method slug.
        seed: Random seed.
        lr_factor: The grid factor of an lr-search slot; None for a seed slot.
    """
    index: int
    stage: str
    backbone: str
    task: str
    method: str
    seed: int
    lr_factor: Optional[float] = None

    @property
    def cell(self) -> Cell:
        return (self.backbone, self.task, self.method)

    def describe(self, lr: Optional[float] = None) -> str:
        what = f'lr x{self.lr_factor:g}' if self.stage == 'lr' else 'chosen lr'
        lr_text = f' lr={lr:.3g}' if lr is not None else ''
        return (f'{self.backbone} {self.task} {self.method}{lr_text} seed={self.seed} '
                f'({what})')


@dataclass
class StudySpec:
    """A study config, checked. See the module docstring for the fields."""
    name: str
    tag: str
    data: Optional[dict]
    backbones: Dict[str, dict]
    tasks: Dict[str, dict]
    methods: List[str]
    lr_factors: List[float]
    seeds: List[int]
    mimi: dict
    estimate_methods: List[str]
    source: str = ''

    def cells(self) -> List[Cell]:
        """Every (backbone, task, method) the study runs, in table order."""
        return [(b, t, m) for b, bcfg in self.backbones.items() for t in self.tasks
                if t in bcfg['tasks'] for m in self.methods]

    def slots(self) -> List[Slot]:
        """The ordered slots: every lr-search slot, then every further-seed slot."""
        out: List[Slot] = []
        for b, t, m in self.cells():
            for f in self.lr_factors:
                out.append(Slot(len(out), 'lr', b, t, m, self.seeds[0], f))
        for b, t, m in self.cells():
            for s in self.seeds[1:]:
                out.append(Slot(len(out), 'seed', b, t, m, s))
        return out

    def metric(self, task: str) -> str:
        return self.tasks[task]['metric']

    def summary(self) -> dict:
        """What the tables and the plot need, for the merged JSON (``--from-json``)."""
        return dict(name=self.name, tag=self.tag, source=self.source,
                    backbones=list(self.backbones), tasks={t: dict(metric=c['metric'])
                                                          for t, c in self.tasks.items()},
                    methods=list(self.methods), lr_factors=list(self.lr_factors),
                    seeds=list(self.seeds), data=self.data, mimi=self.mimi)


def config_folder(method: str) -> str:
    """The config folder of a method: its slug, ``mimi`` for the MiMi variants."""
    return 'mimi' if method in MIMI_METHODS else method


def base_method(method: str) -> str:
    """The method a MiMi variant prunes; the method itself otherwise."""
    return MIMI_METHODS.get(method, method)


def _fail(source: str, msg: str) -> None:
    raise ValueError(f'study config {source}: {msg}')


def _positive_int(source: str, where: str, value) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        _fail(source, f'{where} must be a positive int, got {value!r}')
    return value


def parse_spec(cfg: Mapping, source: str = '<dict>', root: str = '.') -> StudySpec:
    """Read and check a study config.

    Args:
        cfg: The loaded config (an mmengine ``Config`` or a dict with its fields).
        source: Its file name, for messages.
        root: Folder that relative config paths are tried against when they are not found
            from the working directory (the repository root).

    Returns:
        The checked :class:`StudySpec`.

    Raises:
        ValueError: Naming the field and what it must be.
    """
    get = cfg.get
    methods = list(get('methods') or [])
    unknown = [m for m in methods if m not in STUDY_METHODS]
    if not methods or unknown:
        _fail(source, f'methods must be a non-empty list of {", ".join(STUDY_METHODS)}; '
              f'unknown: {unknown}')
    if len(set(methods)) != len(methods):
        _fail(source, f'methods lists a method twice: {methods}')
    factors = [float(f) for f in (get('lr_factors') or [])]
    if not factors or not any(math.isclose(f, 1.0) for f in factors) or \
            any(f <= 0 for f in factors) or len(set(factors)) != len(factors):
        _fail(source, f'lr_factors must be distinct positive numbers including 1 (each '
              f'method\'s default lr sits in the grid), got {get("lr_factors")!r}')
    seeds = list(get('seeds') or [])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        _fail(source, f'seeds must be a non-empty list of distinct ints, got {seeds!r}')
    tasks = {}
    for name, tcfg in dict(get('tasks') or {}).items():
        tcfg = dict(tcfg)
        if not isinstance(tcfg.get('metric'), str):
            _fail(source, f'tasks.{name}.metric must name the metric the lr is chosen on and '
                  "the table reports (e.g. 'accuracy/top1')")
        if tcfg.get('iters') is not None and tcfg.get('epochs') is not None:
            _fail(source, f'tasks.{name}: give iters or epochs, not both')
        for k in ('iters', 'epochs'):
            if tcfg.get(k) is not None:
                _positive_int(source, f'tasks.{name}.{k}', tcfg[k])
        lrs = tcfg.get('lr')
        if lrs is not None:
            lrs = dict(lrs)
            bad = [k for k in lrs if k != 'default' and k not in STUDY_METHODS]
            if bad or not all(isinstance(v, (int, float)) and v > 0 for v in lrs.values()):
                _fail(source, f'tasks.{name}.lr maps method slugs or "default" to positive '
                      f'learning rates (None: each config\'s own), got {lrs!r}')
            missing = [m for m in methods
                       if m not in lrs and base_method(m) not in lrs and 'default' not in lrs]
            if missing:
                _fail(source, f'tasks.{name}.lr has no lr for {missing}; add them or a '
                      '"default"')
        tcfg['lr'] = lrs
        if not isinstance(tcfg.get('cfg_options') or {}, dict):
            _fail(source, f'tasks.{name}.cfg_options maps dotted config keys to the values '
                  'every run of the task gets (replaced, not merged)')
        tasks[name] = tcfg
    if not tasks:
        _fail(source, 'tasks must name at least one task')
    backbones = {}
    for name, bcfg in dict(get('backbones') or {}).items():
        bcfg = dict(bcfg)
        pre = bcfg.get('pretrain')
        if pre is not None:
            pre = dict(pre)
            if not isinstance(pre.get('config'), str):
                _fail(source, f'backbones.{name}.pretrain needs config=<file> (or is None)')
            pre['config'] = resolve_path(pre['config'], root, source)
            if pre.get('iters') is not None:
                _positive_int(source, f'backbones.{name}.pretrain.iters', pre['iters'])
        task_cfgs = dict(bcfg.get('tasks') or {})
        if not task_cfgs:
            _fail(source, f'backbones.{name}.tasks must map task names to config files')
        stray = [t for t in task_cfgs if t not in tasks]
        if stray:
            _fail(source, f'backbones.{name}.tasks names {stray}, which tasks does not define')
        resolved = {t: _resolve_template(path, root, methods, source)
                    for t, path in task_cfgs.items()}
        backbones[name] = dict(pretrain=pre, tasks=resolved)
    if not backbones:
        _fail(source, 'backbones must name at least one backbone')
    data = get('data')
    if data is not None:
        data = dict(data)
        if not isinstance(data.get('root'), str):
            _fail(source, 'data.root must be the folder of the generated sets')
    estimate = list(get('estimate_methods') or [methods[0]])
    if any(m not in methods for m in estimate):
        _fail(source, f'estimate_methods must be among methods, got {estimate}')
    mimi = dict(get('mimi') or dict(rho=0.5, target_ratio=4.0, prune_every=0.2))
    if not 0 < float(mimi.get('prune_every', 0.2)) < 1:
        _fail(source, 'mimi.prune_every is the fraction of the schedule between prunes, in '
              f'(0, 1); got {mimi.get("prune_every")!r}')
    return StudySpec(name=str(get('study_name') or osp.splitext(osp.basename(source))[0]),
                     tag=str(get('tag', 'v1')), data=data, backbones=backbones, tasks=tasks,
                     methods=methods, lr_factors=factors, seeds=seeds, mimi=mimi,
                     estimate_methods=estimate, source=source)


def resolve_path(path: str, root: str, source: str = '<study>') -> str:
    """``path`` if it exists from the working directory, else under ``root``.

    Raises:
        ValueError: If neither exists.
    """
    if osp.exists(path):
        return path
    if not osp.isabs(path) and osp.exists(osp.join(root, path)):
        return osp.join(root, path)
    _fail(source, f'config file {path!r} not found (from the working directory or {root})')


def is_template(path: str) -> bool:
    """Whether a task config path names one config per method."""
    return '{method}' in path or '{folder}' in path


def task_config(path: str, method: str) -> str:
    """The config file of ``method`` for a task config path (a template or one file)."""
    return path.format(method=method, folder=config_folder(method)) if is_template(path) \
        else path


def _resolve_template(path: str, root: str, methods: Sequence[str], source: str) -> str:
    if not is_template(path):
        return resolve_path(path, root, source)
    for cand in (path, osp.join(root, path)):
        if all(osp.exists(task_config(cand, m)) for m in methods):
            return cand
    missing = [task_config(path, m) for m in methods
               if not osp.exists(task_config(osp.join(root, path), m))]
    _fail(source, f'no config for some methods: {missing} (a task config with {{method}} '
          'needs one file per method)')


def lr_of(spec: StudySpec, task: str, method: str) -> Optional[float]:
    """The default lr of ``method`` on ``task`` (None: the config's own)."""
    lrs = spec.tasks[task]['lr']
    if lrs is None:
        return None
    for key in (method, base_method(method), 'default'):
        if key in lrs:
            return float(lrs[key])
    raise KeyError((task, method))


def parse_shard(text: Optional[str]) -> Tuple[int, int]:
    """``'i/n'`` -> ``(i, n)`` with 0 <= i < n; None -> ``(0, 1)``.

    Raises:
        ValueError: For anything else.
    """
    if text is None:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split('/'))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ValueError(f'--shard takes i/n with 0 <= i < n (e.g. 0/2 and 1/2 for two '
                         f'machines), got {text!r}')
    return i, n


def in_shard(slot: Slot, shard: Tuple[int, int]) -> bool:
    """Whether ``slot`` belongs to ``shard``: slots are dealt round-robin by position."""
    return slot.index % shard[1] == shard[0]


def parse_only(items: Optional[Sequence[str]]) -> Dict[str, List[str]]:
    """``['task=cls', 'method=mona,full']`` -> ``{'task': ['cls'], 'method': [...]}``.

    Raises:
        ValueError: For a key other than backbone, task, method, seed or stage.
    """
    out: Dict[str, List[str]] = {}
    for item in items or []:
        key, sep, values = item.partition('=')
        if not sep or key not in ('backbone', 'task', 'method', 'seed', 'stage') or not values:
            raise ValueError(f'--only takes key=v1,v2 with key one of backbone, task, method, '
                             f'seed, stage; got {item!r}')
        out.setdefault(key, []).extend(values.split(','))
    return out


def matches(slot: Slot, only: Dict[str, List[str]]) -> bool:
    """Whether ``slot`` passes the ``--only`` filters."""
    fields = dict(backbone=slot.backbone, task=slot.task, method=slot.method,
                  seed=str(slot.seed), stage=slot.stage)
    return all(fields[k] in v for k, v in only.items())
