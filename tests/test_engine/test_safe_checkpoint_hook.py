"""SafeCheckpointHook: atomic checkpoint saves. A run killed (SIGKILL) while writing a checkpoint
keeps the previous one and ``resume`` continues from it; mmengine's CheckpointHook loses it."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time
import types

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.registry import HOOKS, DefaultScope
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mona_mm.engine import SafeCheckpointHook
from tests.conftest import ROOT

SAFE = 'mona_mm.SafeCheckpointHook'


class TinyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 1)

    def forward(self, inputs, labels, mode='tensor'):
        out = self.fc(torch.stack(inputs)).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((out - torch.stack(labels))**2).mean())
        return list(out)


class TinyData(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(8, generator=g), labels=torch.tensor(i % 2 * 1.))


class ScriptedMetric(BaseMetric):
    """Reports the given ``acc`` values, one per evaluation."""

    def __init__(self, scores):
        super().__init__()
        self.scores = list(scores)

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        return dict(acc=self.scores.pop(0))


class Record(Hook):
    """The iteration training starts at, and the complete checkpoints on disk at every save."""

    def __init__(self, work_dir):
        self.work_dir = str(work_dir)
        self.start = None
        self.snapshots = []

    def before_train(self, runner):
        self.start = runner.iter

    def before_save_checkpoint(self, runner, checkpoint):
        self.snapshots.append(sorted(n for n in os.listdir(self.work_dir) if n.endswith('.pth')))


def make_runner(work_dir, hook_type=SAFE, max_iters=4, resume=False, name='safe',
                val_scores=None, extra_hooks=(), **hook_kw):
    """An iteration-based run of a linear model, a checkpoint every iteration (keep 1)."""
    torch.manual_seed(0)
    hook_kw.setdefault('max_keep_ckpts', 1)
    val = {}
    if val_scores is not None:
        val = dict(val_dataloader=dict(dataset=TinyData(), batch_size=4, num_workers=0,
                                       sampler=dict(type='DefaultSampler', shuffle=False)),
                   val_cfg=dict(), val_evaluator=Evaluator([ScriptedMetric(val_scores)]))
    return Runner(
        model=TinyModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=TinyData(), batch_size=2, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, end=2)],
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1),
        default_hooks=dict(checkpoint=dict(type=hook_type, interval=1, by_epoch=False,
                                           **hook_kw)),
        custom_hooks=list(extra_hooks), resume=resume, experiment_name=name,
        default_scope='mmengine', randomness=dict(seed=0), **val)


def _ckpts(d):
    return sorted(n for n in os.listdir(d) if n.endswith('.pth'))


def _tmp_files(d):
    """The hook's temp files (``.<name>.tmp-<pid>``) under ``d``."""
    return sorted(osp.join(r, n) for r, _, ns in os.walk(d) for n in ns
                  if n.startswith('.') and '.tmp-' in n)


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def _hook(runner):
    return next(h for h in runner.hooks if isinstance(h, SafeCheckpointHook))


@pytest.mark.parametrize('keep', [1, 2])
def test_keeps_the_newest_and_cleans_leftovers(tmp_path, keep):
    # temp files of a killed run go at before_train; other files stay
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    leftovers = [tmp_path / f'.iter_9.pth.tmp-{dead.pid}',
                 tmp_path / f'.last_checkpoint.tmp-{dead.pid}']
    live = tmp_path / f'.iter_8.pth.tmp-{os.getppid()}'  # a save in progress elsewhere
    for p in leftovers + [tmp_path / 'notes.tmp-1', live]:
        p.write_bytes(b'partial')
    rec = Record(tmp_path)
    runner = make_runner(tmp_path, max_iters=5, max_keep_ckpts=keep, extra_hooks=[rec],
                         name=f'safe_keep{keep}')
    runner.train()
    assert _ckpts(tmp_path) == [f'iter_{i}.pth' for i in range(6 - keep, 6)]
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_5.pth')
    assert _tmp_files(tmp_path) == [str(live)]
    assert (tmp_path / 'notes.tmp-1').exists()
    assert len(rec.snapshots) == 5  # before_save_checkpoint ran once per save
    assert runner.message_hub.get_info('keep_ckpt_ids') == list(range(6 - keep, 6))
    ckpt = _load(tmp_path / 'iter_5.pth')
    assert ckpt['meta']['iter'] == 5
    assert ckpt['message_hub']['runtime_info']['keep_ckpt_ids'] == list(range(6 - keep, 6))


def test_never_without_a_complete_checkpoint_and_one_best(tmp_path):
    """At every save the previous periodic and best checkpoints are still complete on disk
    (mmengine's hook removes them first); in the end one of each is left."""
    scores = [0.5, 0.7, 0.6, 0.8]  # new best at iterations 1, 2 and 4
    records = {}
    for hook_type in (SAFE, 'CheckpointHook'):
        wd = tmp_path / hook_type.split('.')[-1]
        rec = Record(wd)
        runner = make_runner(wd, hook_type, val_scores=scores, save_best='acc',
                             extra_hooks=[rec], name=f'safe_best_{hook_type}')
        runner.train()
        records[hook_type] = rec
        assert _ckpts(wd) == ['best_acc_iter_4.pth', 'iter_4.pth']
        assert runner.message_hub.get_info('best_ckpt') == str(wd / 'best_acc_iter_4.pth')
        assert runner.message_hub.get_info('best_score') == 0.8
        assert _load(wd / 'best_acc_iter_4.pth')['meta']['iter'] == 4
        assert _tmp_files(wd) == []

    def ever_lost(snapshots, prefix):
        seen = False
        for names in snapshots:
            has = any(n.startswith(prefix) for n in names)
            if seen and not has:
                return True
            seen |= has
        return False

    safe, plain = records[SAFE].snapshots, records['CheckpointHook'].snapshots
    assert len(safe) == len(plain) == 10  # 4 periodic + 3 best + 3 re-saves after a new best
    assert not ever_lost(safe, 'iter_') and not ever_lost(safe, 'best_')
    assert ever_lost(plain, 'iter_') and ever_lost(plain, 'best_')


def test_same_name_best_is_replaced_not_removed(tmp_path):
    """A new best at the same iteration has the same name: it replaces the old one (removing
    the 'previous best' afterwards would delete it)."""
    runner = make_runner(tmp_path, val_scores=[0.5, 0.7], max_iters=2, save_best='acc',
                         name='safe_same_best')
    runner.train()
    assert _ckpts(tmp_path) == ['best_acc_iter_2.pth', 'iter_2.pth']
    _hook(runner)._save_best_checkpoint(runner, dict(acc=0.9))  # same iteration, same name
    assert _ckpts(tmp_path) == ['best_acc_iter_2.pth', 'iter_2.pth']
    hub = _load(tmp_path / 'best_acc_iter_2.pth')['message_hub']['runtime_info']
    assert hub['best_score'] == 0.9
    assert _tmp_files(tmp_path) == []


def test_non_local_out_dir_saves_as_upstream(tmp_path):
    """Without a local directory and mmengine's Runner the hook is CheckpointHook, and says so
    once."""
    saved, warnings = [], []
    runner = types.SimpleNamespace(
        work_dir=str(tmp_path), message_hub=MessageHub.get_instance('safe_non_local'),
        logger=types.SimpleNamespace(info=lambda m: None, warning=warnings.append),
        save_checkpoint=lambda out_dir, filename, *a, **k: saved.append(filename))
    hook = SafeCheckpointHook(interval=1, by_epoch=False, max_keep_ckpts=1)
    hook.before_train(runner)  # not a Runner: e.g. FlexibleRunner
    hook.before_train(runner)
    assert len(warnings) == 1 and 'atomic saving needs' in warnings[0]
    hook._save_checkpoint_with_step(runner, 1, dict(iter=1))
    assert saved == ['iter_1.pth']  # written in place, no temp file
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_1.pth')


@pytest.mark.parametrize('path', [
    'demo/swin-nano-mona_1xb32-10e_shapes-cls.py',
    'mmdet/mona/retinanet_swin-t-p4-w7-mona_fpn_8xb2-4e_voc0712.py',
    'mmseg/mona/upernet_vit-b16-mona_8xb2-160k_ade20k-512x512.py',
    'mmpretrain/mona/vit-b-p16-mona_1xb16-100e_flowers102-224.py'])
def test_shipped_configs_build_the_hook(path):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', path))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        hook = HOOKS.build(cfg.default_hooks.checkpoint)
    assert type(hook) is SafeCheckpointHook


# -- a run killed with SIGKILL while writing its second checkpoint ---------------------------

CRASH_SCRIPT = '''
import os, sys, time
sys.path.insert(0, {root!r})
from mmengine.fileio.backends import LocalBackend

work_dir, hook_type, marker = sys.argv[1:4]
put, calls = LocalBackend.put, []


def slow_put(self, obj, filepath):
    """Test only: write half of the 2nd checkpoint, flush it, signal, and hang until killed."""
    if 'iter_' not in os.path.basename(str(filepath)):
        return put(self, obj, filepath)
    calls.append(filepath)
    if len(calls) < 2:
        return put(self, obj, filepath)
    with open(filepath, 'wb') as f:
        f.write(obj[:len(obj) // 2])
        f.flush()
        os.fsync(f.fileno())
    with open(marker + '.tmp', 'w') as f:
        f.write(str(filepath))
    os.replace(marker + '.tmp', marker)
    time.sleep(600)


LocalBackend.put = slow_put
from tests.test_engine.test_safe_checkpoint_hook import make_runner  # noqa: E402
make_runner(work_dir, hook_type, max_iters=4, name='crash').train()
'''


@pytest.fixture(scope='module')
def killed_runs(tmp_path_factory):
    """Both hooks' runs, started together, each SIGKILLed mid-way through its 2nd checkpoint.
    Returns ``{hook_type: (work_dir, path being written when killed)}``."""
    root = tmp_path_factory.mktemp('killed')
    script = root / 'train.py'
    script.write_text(CRASH_SCRIPT.format(root=ROOT))
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    procs = {}
    for hook_type in (SAFE, 'CheckpointHook'):
        wd = root / hook_type.split('.')[-1]
        wd.mkdir()
        log = open(wd.with_suffix('.log'), 'w')
        proc = subprocess.Popen([sys.executable, str(script), str(wd), hook_type,
                                 str(wd.with_suffix('.marker'))], cwd=str(root), env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        procs[hook_type] = (proc, wd, log)
    out = {}
    try:
        for hook_type, (proc, wd, log) in procs.items():
            marker = wd.with_suffix('.marker')
            deadline = time.monotonic() + 120
            while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if not marker.exists():
                log.flush()
                pytest.fail(f'{hook_type}: no marker (exit {proc.poll()}):\n'
                            + wd.with_suffix('.log').read_text()[-4000:])
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
            out[hook_type] = (wd, marker.read_text())
    finally:
        for proc, _, log in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return out


def test_killed_while_saving_keeps_the_last_checkpoint_and_resumes(killed_runs):
    wd, writing = killed_runs[SAFE]
    assert osp.basename(writing).startswith('.iter_2.pth.tmp-')  # killed mid-write
    assert osp.getsize(writing) > 0
    assert _ckpts(wd) == ['iter_1.pth']
    last = (wd / 'last_checkpoint').read_text()
    assert last == str(wd / 'iter_1.pth')
    ckpt = _load(last)
    assert ckpt['meta']['iter'] == 1 and 'optimizer' in ckpt

    rec = Record(wd)
    runner = make_runner(wd, max_iters=4, resume=True, extra_hooks=[rec], name='safe_resumed')
    runner.train()
    assert rec.start == 1  # from the last complete checkpoint
    assert runner.iter == 4
    assert _ckpts(wd) == ['iter_4.pth']
    assert (wd / 'last_checkpoint').read_text() == str(wd / 'iter_4.pth')
    assert _load(wd / 'iter_4.pth')['meta']['iter'] == 4
    assert _tmp_files(wd) == []  # the killed run's temp file is gone


def test_upstream_hook_loses_the_checkpoint(killed_runs):
    """Why the hook exists: mmengine's CheckpointHook deleted iter_1 before writing iter_2."""
    wd, writing = killed_runs['CheckpointHook']
    assert writing == str(wd / 'iter_2.pth')
    assert _ckpts(wd) == ['iter_2.pth']
    assert (wd / 'last_checkpoint').read_text() == str(wd / 'iter_1.pth')  # a deleted file
    with pytest.raises(Exception):
        _load(wd / 'iter_2.pth')  # truncated
