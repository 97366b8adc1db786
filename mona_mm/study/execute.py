"""One study run through mmengine's Runner, in this process: the run's config is a normal
config file with a few settings replaced (method, lr, seed, schedule, pretrained backbone,
data root), trained as ``tools/train.py`` trains it (``Runner.from_cfg(cfg).train()``), then
evaluated with mmengine's ``TestLoop`` on the validation and on the test split.

Training itself validates nothing: both splits are evaluated once, after the last
iteration, so the validation metric that picks the lr and the test metric the tables report
come from the same model.
"""
import contextlib
import copy
import gc
import io
import logging
import math
import os.path as osp
import platform
import subprocess
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from mona_mm.models.peft.names import peft_config
from .spec import MIMI_METHODS, StudySpec, base_method, is_template, lr_of, task_config
from .store import replace_prefixes

#: The data root the configs under ``configs/study/_base_`` are written for.
DATA_PLACEHOLDER = 'data/study_shapes/'
#: Config keys that only say where a run writes; they stay out of its key.
VOLATILE_KEYS = ('work_dir', 'experiment_name', 'launcher')
_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_RUN_COUNTER = [0]


def _plain(obj: Any) -> Any:
    """A deep copy with ConfigDicts as dicts (tuples stay tuples: pipelines need them)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def set_dotted(cfg: Config, key: str, value: Any) -> None:
    """Replace (not merge) the value at ``a.b.c`` of ``cfg``; parents must exist."""
    parts = key.split('.')
    node = cfg
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = copy.deepcopy(value)


def _is_iter_based(train_cfg: Mapping) -> bool:
    kind = str(train_cfg.get('type', ''))
    return kind.endswith('IterBasedTrainLoop') or train_cfg.get('by_epoch') is False


def _scaled(value: Any, old: int, new: int) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if value >= old:
        return new
    return max(0, int(round(value * new / old)))


def schedule_overrides(cfg: Config, iters: Optional[int] = None,
                       epochs: Optional[int] = None) -> Dict[str, Any]:
    """Settings that set the training length and stretch the parameter schedulers with it.

    Every scheduler counted in the changed unit (iterations for ``iters``, epochs for
    ``epochs``) has ``begin``/``end``/``T_max``/``milestones`` scaled by new / old length, so
    a warm-up over the first 5 % stays over the first 5 %.

    Args:
        cfg: The run's config.
        iters: New ``max_iters`` (iteration-based configs).
        epochs: New ``max_epochs`` (epoch-based configs).

    Returns:
        ``{dotted key: value}``; empty if neither is given.

    Raises:
        ValueError: If the length's unit does not match the config's loop.
    """
    if iters is None and epochs is None:
        return {}
    train_cfg = cfg.train_cfg
    iter_based = _is_iter_based(train_cfg)
    if iters is not None and not iter_based:
        raise ValueError(f'{cfg.filename}: the study gives `iters` but the config trains by '
                         'epochs; give the task `epochs` instead')
    if epochs is not None and iter_based:
        raise ValueError(f'{cfg.filename}: the study gives `epochs` but the config trains by '
                         'iterations; give the task `iters` instead')
    field, new = ('max_iters', iters) if iters is not None else ('max_epochs', epochs)
    old = int(train_cfg[field])
    out = {f'train_cfg.{field}': new, 'train_cfg.val_interval': new}
    schedulers = cfg.get('param_scheduler')
    if schedulers is not None:
        listed = isinstance(schedulers, (list, tuple))
        new_list = []
        for s in (schedulers if listed else [schedulers]):
            s = _plain(s)
            by_epoch = s.get('by_epoch', True)
            if by_epoch == (iters is None):
                for k in ('begin', 'end', 'T_max'):
                    if k in s:
                        s[k] = _scaled(s[k], old, new)
                # a scheduler keeps at least one step (mmengine refuses end <= begin)
                if 'begin' in s:
                    s['begin'] = min(s['begin'], new - 1)
                if 'end' in s:
                    s['end'] = max(s['end'], s.get('begin', 0) + 1)
                if 'T_max' in s:
                    s['T_max'] = max(s['T_max'], 1)
                if 'milestones' in s:
                    s['milestones'] = [max(1, _scaled(m, old, new)) for m in s['milestones']]
            new_list.append(s)
        out['param_scheduler'] = new_list if listed else new_list[0]
    return out


def mimi_hook(spec: StudySpec, task: str, cfg: Config) -> dict:
    """The MiMi pruning hook of the study: prune every ``prune_every`` of the schedule (the
    study's ``mimi`` settings, updated by the task's)."""
    tcfg = spec.tasks[task]
    mimi = dict(spec.mimi, **(tcfg.get('mimi') or {}))
    iter_based = _is_iter_based(cfg.train_cfg)
    length = tcfg.get('iters') or tcfg.get('epochs') or \
        int(cfg.train_cfg['max_iters' if iter_based else 'max_epochs'])
    interval = max(1, int(round(length * float(mimi.get('prune_every', 0.2)))))
    hook = dict(type='mona_mm.MiMiPruningHook', interval=interval, by_epoch=not iter_based,
                rho=float(mimi.get('rho', 0.5)),
                target_ratio=float(mimi.get('target_ratio', 4.0)), plot=False)
    for k, v in mimi.items():
        if k not in ('prune_every', 'rho', 'target_ratio'):
            hook[k] = v
    return hook


def finetune_config(spec: StudySpec, backbone: str, task: str, method: str,
                    lr_factor: float, seed: int, pretrained: Optional[str],
                    data_root: Optional[str],
                    load: Callable[[str], Config] = Config.fromfile
                    ) -> Tuple[Config, Dict[str, Any], float]:
    """The config of one fine-tuning run, the settings the study replaced, and its lr.

    Args:
        spec: The study.
        backbone: Backbone name.
        task: Task name.
        method: Method slug (MiMi variants included).
        lr_factor: Multiplies the method's default lr.
        seed: ``randomness.seed``.
        pretrained: The source-task checkpoint the backbone starts from (None: the config's
            own ``init_cfg``).
        data_root: Where the generated sets are (replaces :data:`DATA_PLACEHOLDER`).
        load: Reads a config file (a study passes a cached reader: one file, one parse).
    """
    path = spec.backbones[backbone]['tasks'][task]
    cfg = load(task_config(path, method))
    tcfg = spec.tasks[task]
    overrides: Dict[str, Any] = {}
    if not is_template(path):
        overrides['model.backbone.peft'] = peft_config(base_method(method))
    hooks = [h for h in _plain(cfg.get('custom_hooks') or [])
             if not str(h.get('type', '')).endswith('MiMiPruningHook')]
    if method in MIMI_METHODS:
        hooks.append(mimi_hook(spec, task, cfg))
    if hooks != _plain(cfg.get('custom_hooks') or []):
        overrides['custom_hooks'] = hooks
    if pretrained is not None:
        overrides['model.backbone.init_cfg'] = dict(type='Pretrained', checkpoint=pretrained,
                                                    prefix='backbone')
    overrides.update(schedule_overrides(cfg, tcfg.get('iters'), tcfg.get('epochs')))
    default = lr_of(spec, task, method)
    if default is None:
        default = float(cfg.optim_wrapper.optimizer.lr)
    lr = default * lr_factor
    overrides['optim_wrapper.optimizer.lr'] = lr
    overrides['randomness'] = dict(seed=seed)
    overrides['default_hooks.checkpoint'] = None  # fine-tuned weights are not kept
    overrides.update(tcfg.get('cfg_options') or {})
    for split in ('val_dataloader', 'test_dataloader'):  # a test split aliased to val
        if cfg.get(split) is not None:
            cfg[split] = copy.deepcopy(cfg[split])
    for k, v in overrides.items():
        set_dotted(cfg, k, v)
    check_splits(cfg, task)
    return _with_data_root(cfg, data_root), overrides, lr


def check_splits(cfg: Config, task: str) -> None:
    """Refuse a run config whose test split is its validation split: the lr is chosen on
    one and reported on the other.

    Raises:
        ValueError: Naming the config and how to give it a separate test split.
    """
    splits = eval_splits(cfg)
    if set(splits) != {'val', 'test'}:
        raise ValueError(f'{cfg.filename}: the study needs val_dataloader/val_evaluator and '
                         'test_dataloader/test_evaluator (the lr is chosen on val, the '
                         'table reports test)')
    if _plain(splits['val'][0].get('dataset')) == _plain(splits['test'][0].get('dataset')):
        raise ValueError(
            f'{cfg.filename}: its test split is its validation split, but the study chooses '
            f'the lr on one and reports the other; give task {task!r} cfg_options that make '
            "them differ in the study config (e.g. {'val_dataloader.dataset.split': 'val'}, "
            "or halves of one split: {'val_dataloader.dataset.indices': N, "
            "'test_dataloader.dataset.indices': -N})")


def pretrain_config(spec: StudySpec, backbone: str, data_root: Optional[str],
                    load: Callable[[str], Config] = Config.fromfile
                    ) -> Tuple[Config, Dict[str, Any]]:
    """The config of a backbone's source-task pretraining and the settings replaced.

    Args:
        spec: The study.
        backbone: Backbone name.
        data_root: Where the generated sets are.
        load: Reads a config file.
    """
    pre = spec.backbones[backbone]['pretrain']
    cfg = load(pre['config'])
    overrides = dict(schedule_overrides(cfg, pre.get('iters'), pre.get('epochs')))
    overrides['randomness'] = dict(seed=int(pre.get('seed', 0)))
    overrides['default_hooks.checkpoint'] = None  # the study saves the final weights itself
    for k, v in overrides.items():
        set_dotted(cfg, k, v)
    return _with_data_root(cfg, data_root), overrides


def _with_data_root(cfg: Config, data_root: Optional[str]) -> Config:
    if data_root is None:
        return cfg
    root = data_root.rstrip('/') + '/'
    if root == DATA_PLACEHOLDER:
        return cfg
    return Config(replace_prefixes(cfg.to_dict(), {DATA_PLACEHOLDER: root}),
                  filename=cfg.filename)


def key_config(cfg: Config, study_dir: str, data_root: Optional[str]) -> dict:
    """The config as it enters the run key: plain, without where the run writes, with the
    study folder and the data root as ``{study}/`` and ``{data}/``."""
    d = _plain(cfg.to_dict())
    for k in VOLATILE_KEYS:
        d.pop(k, None)
    mapping = {osp.abspath(study_dir).rstrip('/') + '/': '{study}/',
               study_dir.rstrip('/') + '/': '{study}/'}
    if data_root is not None:
        mapping[data_root.rstrip('/') + '/'] = '{data}/'
        mapping[osp.abspath(data_root).rstrip('/') + '/'] = '{data}/'
    return replace_prefixes(d, mapping)


def eval_splits(cfg: Config) -> Dict[str, Tuple[dict, Any]]:
    """The evaluation splits of a run config: ``val`` and (when the config has a separate
    one) ``test``, as (dataloader, evaluator) configs."""
    splits = {}
    for split in ('val', 'test'):
        dl, ev = cfg.get(f'{split}_dataloader'), cfg.get(f'{split}_evaluator')
        if dl is not None and ev is not None:
            splits[split] = (_plain(dl), _plain(ev))
    return splits


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=_ROOT, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ('-dirty' if dirty.stdout.strip() else '')


_ENV_CACHE: Dict[str, Any] = {}


def environment() -> Dict[str, Any]:
    """Versions, device and code revision, recorded in every run."""
    if not _ENV_CACHE:
        import mmengine

        import mona_mm
        versions = dict(python=platform.python_version(), torch=torch.__version__,
                        mmengine=mmengine.__version__, mona_mm=mona_mm.__version__)
        for name in ('mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'numpy'):
            try:
                versions[name] = __import__(name).__version__
            except Exception:  # noqa: BLE001  (not installed: not recorded)
                pass
        cuda = torch.cuda.is_available()
        _ENV_CACHE.update(
            versions=versions, git=_git_commit(),
            device=torch.cuda.get_device_name(0) if cuda else
            f'cpu ({platform.processor() or platform.machine()})',
            torch_threads=torch.get_num_threads())
    return dict(_ENV_CACHE)


def _close_runner(runner) -> None:
    """Close what a finished Runner keeps open (log files, visualizer backends): a study
    builds hundreds of runners in one process."""
    try:
        runner.visualizer.close()
    except Exception:  # noqa: BLE001
        pass
    for handler in list(runner.logger.handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            runner.logger.removeHandler(handler)


def _iter_times(runner) -> Tuple[float, int]:
    """Mean seconds per training iteration (the first, warm-up one left out) and count."""
    hub = runner.message_hub
    if 'train/time' not in hub.log_scalars:
        return math.nan, 0
    values = list(hub.get_scalar('train/time').data[0])
    timed = values[1:] if len(values) > 1 else values
    return (sum(timed) / len(timed) if timed else math.nan), len(values)


class _LastTrainBatch(Hook):
    """Keeps the last training batch, to count memory on after training (a second iterator
    over the train dataloader would share mmdet's AspectRatioBatchSampler buckets with the
    loop's suspended one and never yield)."""
    priority = 'LOWEST'

    def __init__(self) -> None:
        self.batch = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        self.batch = data_batch


def counted_memory_mb(runner, batch) -> float:
    """Train-step memory counted on a training batch: weights, gradients and AdamW state
    plus the activations autograd keeps (:mod:`mona_mm.utils.memory`), in MiB."""
    from mona_mm.utils import saved_activation_bytes, training_state_bytes
    model = runner.model
    model.train()
    data = model.data_preprocessor(batch, True)
    saved = saved_activation_bytes(model, lambda: model(**data, mode='loss'))
    state = training_state_bytes(model.parameters())
    model.zero_grad(set_to_none=True)
    return (saved + sum(state.values())) / 2 ** 20


def train_and_evaluate(cfg: Config, work_dir: str, name: str,
                       log_level: str = 'WARNING', save_to: Optional[str] = None,
                       splits: Tuple[str, ...] = ('val', 'test')) -> Dict[str, Any]:
    """Train ``cfg`` with mmengine's Runner and evaluate it on its val and test splits.

    Args:
        cfg: The run's config (with ``val_*`` and ``test_*`` dataloaders and evaluators).
        work_dir: The Runner's work dir (logs).
        name: Prefix of the experiment name (unique per call, so no two runs share a
            logger or message hub).
        log_level: The Runner's log level.
        save_to: If given, the trained model is saved there (atomic, hashed checkpoint).
        splits: The splits to evaluate (the pretraining has no test split).

    Returns:
        Part of a run record: ``val``, ``test`` (metric dicts), ``params``,
        ``params_start``, ``time``, ``memory``.
    """
    from mmengine.runner import Runner, TestLoop

    from mona_mm.utils import count_trainable
    cfg = copy.deepcopy(cfg)
    splits = {k: v for k, v in eval_splits(cfg).items() if k in splits}
    # training validates nothing; both splits are evaluated once, after training
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    cfg.log_level = log_level
    _RUN_COUNTER[0] += 1
    cfg.experiment_name = f'{name}_{time.strftime("%Y%m%d_%H%M%S")}_{_RUN_COUNTER[0]}'
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_start, c_start = time.perf_counter(), time.process_time()
    runner = Runner.from_cfg(cfg)
    try:
        params_start = count_trainable(runner.model)
        last_batch = _LastTrainBatch()
        runner.register_hook(last_batch)
        t0, c0 = time.perf_counter(), time.process_time()
        runner.train()
        train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        s_per_iter, iters = _iter_times(runner)
        cuda_peak = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None
        metrics: Dict[str, Dict[str, float]] = {}
        t1 = time.perf_counter()
        for split, (dl, ev) in splits.items():
            # pycocotools prints its summary tables; the metrics go into the record
            with contextlib.redirect_stdout(io.StringIO()):
                result = TestLoop(runner, dl, ev).run()
            metrics[split] = {k: float(v) for k, v in result.items()
                              if isinstance(v, (int, float))}
        eval_s = time.perf_counter() - t1
        memory = dict(mb=cuda_peak, kind='CUDA max allocated during training') if cuda else \
            dict(mb=counted_memory_mb(runner, last_batch.batch),
                 kind='counted train step: weights, grads, AdamW state, saved activations')
        params = count_trainable(runner.model)
        backbone = getattr(getattr(runner.model, 'module', runner.model), 'backbone', None)
        # what filled the backbone's frozen weights: the pretrained file, or None (random)
        init_source = getattr(backbone, 'peft_pretrained_source', None)
        if save_to is not None:
            from mmengine.runner.checkpoint import get_state_dict, weights_to_cpu

            from mona_mm.utils import save_checkpoint_file
            save_checkpoint_file(dict(state_dict=weights_to_cpu(get_state_dict(runner.model)),
                                      meta=dict(experiment_name=cfg.experiment_name)),
                                 save_to)
    finally:
        _close_runner(runner)
        del runner
        gc.collect()
    return dict(val=metrics.get('val', {}), test=metrics.get('test', {}), params=params,
                params_start=params_start, backbone_weights=init_source,
                # CPU seconds of this process too: on a shared machine they show what the
                # run costs alone (wall time includes waiting for other processes)
                time=dict(train_s=train_s, eval_s=eval_s, s_per_iter=s_per_iter, iters=iters,
                          wall_s=time.perf_counter() - t_start, train_cpu_s=train_cpu_s,
                          cpu_s=time.process_time() - c_start),
                memory=memory)


def split_files(cfg: Config) -> Dict[str, List[str]]:
    """Where each split's data come from (data root + annotation/prefix), for the record."""
    out = {}
    for split in ('train', 'val', 'test'):
        dl = cfg.get(f'{split}_dataloader')
        if not dl:
            continue
        ds = _plain(dl.get('dataset', {}))
        while isinstance(ds.get('dataset'), dict):  # RepeatDataset and friends
            ds = ds['dataset']
        out[split] = [str(ds.get(k)) for k in ('data_root', 'ann_file', 'data_prefix')
                      if ds.get(k)]
    return out


__all__ = ['DATA_PLACEHOLDER', 'finetune_config', 'pretrain_config',
           'key_config', 'train_and_evaluate', 'environment', 'schedule_overrides',
           'split_files', 'eval_splits']
