"""MiMiPruningHook driven by a real Runner on a toy model with a Mona Swin backbone."""
import hashlib
import logging

import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mona_mm.engine import MiMiPruningHook
from mona_mm.models import PEFTSwinTransformer
from mona_mm.pruning import adapter_param_total, get_structure
from tests.conftest import NANO


class ToyDetector(BaseModel):

    def __init__(self, method='Mona', hidden=16):
        super().__init__()
        kw = dict(rank=hidden) if method == 'LoRA' else dict(hidden_dims=hidden) \
            if method in ('Mona', 'MonaReference', 'Adapter', 'AdaptFormer') else {}
        # no drop path: a resumed run then repeats an uninterrupted one exactly (mmengine
        # does not restore the RNG state on resume)
        # codebase named: without it the scope an earlier test left current picks the Swin
        self.backbone = PEFTSwinTransformer(arch=NANO, peft=dict(type=method, **kw),
                                            codebase='mmdet', out_indices=(3, ),
                                            drop_path_rate=0.)
        self.head = nn.Linear(256, 1)

    def forward(self, inputs, labels, mode='tensor'):
        feat = self.backbone(torch.stack(inputs))[0].mean((2, 3))
        out = self.head(feat).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((out - torch.stack(labels))**2).mean())
        return out


class ToyData(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, 32, 32, generator=g), labels=torch.tensor(i % 2 * 1.))


class Crash(Hook):
    """Simulates a run killed after epoch ``at`` (its checkpoint already written)."""

    priority = 'LOWEST'

    def __init__(self, at):
        self.at = at

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == self.at:
            raise KeyboardInterrupt('simulated crash')


def _runner(work_dir, hook, max_epochs=5, resume=False, extra_hooks=(), method='Mona',
            name='r', checkpoint=dict(type='CheckpointHook', interval=1), **kw):
    torch.manual_seed(0)
    return Runner(
        model=ToyDetector(method), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler',
                                                               shuffle=True),
                              batch_size=4, num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3), clip_grad=dict(max_norm=1.0)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=3),
                         dict(type='CosineAnnealingLR', by_epoch=True, T_max=max_epochs)],
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=checkpoint),
        custom_hooks=[hook, *extra_hooks], resume=resume, experiment_name=name,
        default_scope='mmengine', randomness=dict(seed=0), **kw)


def _hook(**kw):
    return dict(dict(type='mona_mm.MiMiPruningHook', interval=1, rho=0.5, target_ratio=4.0, plot=True),
                **kw)


def test_prunes_until_target_then_trains_on(tmp_path):
    runner = _runner(tmp_path, _hook())
    before = adapter_param_total(runner.model)
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, MiMiPruningHook))
    after = adapter_param_total(runner.model)
    assert hook.done and before / after >= 4.0
    assert hook.steps < 5  # stopped pruning before the last epoch
    assert runner.train_loop.epoch == 5
    # the optimizer holds exactly the live trainable parameters
    live = {id(p) for p in runner.model.parameters()}
    assert all(id(p) in live for g in runner.optim_wrapper.optimizer.param_groups
               for p in g['params'])
    assert (tmp_path / 'mimi_neurons.png').exists()
    log = next(tmp_path.glob('*/*.log')).read_text()
    assert 'MiMi step 1' in log and 'neurons kept per adapter' in log
    assert 'MiMi summary' in log
    # loading the pruned checkpoint (load_from, test) reports the steps it records
    ckpt = str(tmp_path / f'epoch_{runner.train_loop.epoch}.pth')
    loader = _runner(tmp_path / 'load', _hook(), name='load_pruned')
    lines = []
    keep = logging.Handler()
    keep.emit = lambda record: lines.append(record.getMessage())
    loader.logger.addHandler(keep)
    loader.load_checkpoint(ckpt)
    loader.logger.removeHandler(keep)
    assert get_structure(loader.model) == get_structure(runner.model)
    assert any(f'{hook.steps} pruning steps done' in line for line in lines), lines


@pytest.mark.parametrize('score', ['mimi_unnormalized', 'grad_l1', 'random'])
def test_other_scores_and_local_selection(tmp_path, score):
    runner = _runner(tmp_path, _hook(score=score, selection='local', target_ratio=2.0),
                     max_epochs=2, name=score)
    runner.train()
    structure = get_structure(runner.model)
    # local: every adapter keeps the same share
    assert len(set(structure.values())) == 1 and 0 < next(iter(structure.values())) < 16


def test_min_neurons_floor(tmp_path):
    runner = _runner(tmp_path, _hook(target_ratio=100.0, min_neurons=2), max_epochs=3,
                     name='floor')
    runner.train()
    assert min(get_structure(runner.model).values()) >= 2


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    ref = _runner(tmp_path / 'ref', _hook(), name='ref')
    ref.train()
    crashed = _runner(tmp_path / 'run', _hook(), extra_hooks=[Crash(2)], name='a')
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    assert (tmp_path / 'run' / 'epoch_2.pth').exists()
    resumed = _runner(tmp_path / 'run', _hook(), resume=True, name='b')
    resumed.train()
    shapes = lambda r: {n: tuple(p.shape) for n, p in r.model.named_parameters()}  # noqa
    assert get_structure(resumed.model) == get_structure(ref.model)
    assert shapes(resumed) == shapes(ref)
    h_ref, h_res = (next(h for h in r.hooks if isinstance(h, MiMiPruningHook))
                    for r in (ref, resumed))
    assert (h_res.steps, h_res.done, h_res.initial_params) == \
        (h_ref.steps, h_ref.done, h_ref.initial_params)
    assert resumed.train_loop.iter == ref.train_loop.iter
    lr = lambda r: [g['lr'] for g in r.optim_wrapper.optimizer.param_groups]  # noqa
    assert lr(resumed) == pytest.approx(lr(ref))
    st = lambda r: sorted(tuple(s['exp_avg'].shape) for s in  # noqa
                          r.optim_wrapper.optimizer.state.values())
    assert st(resumed) == st(ref)


def test_failed_resume_keeps_the_last_good_checkpoint(tmp_path):
    _runner(tmp_path, _hook(), max_epochs=2, name='good').train()
    ckpt = tmp_path / 'epoch_2.pth'
    digest = hashlib.sha1(ckpt.read_bytes()).hexdigest()
    last = (tmp_path / 'last_checkpoint').read_text()
    # a model of another PEFT method cannot take this pruned structure
    bad = _runner(tmp_path, _hook(), max_epochs=3, resume=True, method='Adapter', name='bad')
    with pytest.raises(ValueError, match=r'trained with peft=Mona\(.*built with peft=Adapter'):
        bad.train()
    assert hashlib.sha1(ckpt.read_bytes()).hexdigest() == digest
    assert (tmp_path / 'last_checkpoint').read_text() == last


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match='needs a target'):
        MiMiPruningHook()
    with pytest.raises(ValueError, match='unknown score'):
        MiMiPruningHook(target_ratio=2, score='l2')
    with pytest.raises(ValueError, match='rho'):
        MiMiPruningHook(target_ratio=2, rho=1.5)
    for kw, field in [(dict(target_ratio=1.0), 'target_ratio'),
                      (dict(target_ratio=0.5), 'target_ratio'),
                      (dict(target_params=0), 'target_params'),
                      (dict(target_params=-5), 'target_params'),
                      (dict(target_ratio=2, interval=1.5), 'interval'),
                      (dict(target_ratio=2, interval=0), 'interval'),
                      (dict(target_ratio=2, max_steps=0), 'max_steps'),
                      (dict(target_ratio=2, min_neurons=-1), 'min_neurons'),
                      (dict(target_ratio=2, selection='everywhere'), 'selection')]:
        with pytest.raises(ValueError, match=field):
            MiMiPruningHook(**kw)


def test_target_params_above_the_current_size_is_refused(tmp_path):
    runner = _runner(tmp_path, _hook(target_ratio=None, target_params=10**9), max_epochs=1,
                     name='big')
    with pytest.raises(ValueError, match='not below the current'):
        runner.train()


def test_ema_beside_mimi_is_refused_up_front(tmp_path):
    runner = _runner(tmp_path, _hook(), max_epochs=2, extra_hooks=[dict(type='EMAHook')],
                     name='ema')
    with pytest.raises(RuntimeError, match='EMAHook'):
        runner.train()
    assert not (tmp_path / 'epoch_1.pth').exists()  # refused before any training


class Poison(Hook):
    """Puts a NaN into one adapter weight just before the prune of epoch 1."""

    priority = 'NORMAL'  # before MiMi's LOW

    def after_train_epoch(self, runner):
        with torch.no_grad():
            runner.model.backbone.stages[1].blocks[0].adapters.post_mlp.project1.weight[0, 0] = \
                float('nan')


def test_non_finite_adapter_is_refused_with_its_name(tmp_path):
    runner = _runner(tmp_path, _hook(), max_epochs=2, extra_hooks=[Poison()], name='nan')
    with pytest.raises(FloatingPointError, match=r'stages\.1\.blocks\.0\.adapters\.post_mlp'):
        runner.train()


class GradProbe(Hook):
    """Copies MiMi's accumulated gradients when training (re)starts."""

    priority = 'NORMAL'

    def before_train_epoch(self, runner):
        if not hasattr(self, 'grads'):
            mimi = next(h for h in runner.hooks if isinstance(h, MiMiPruningHook))
            self.grads = {n: {k: v.clone() for k, v in g.items()} for n, g in mimi._grads.items()}


def test_grad_l1_resumed_between_prunes_keeps_the_accumulated_gradients(tmp_path):
    """The gradients accumulated since the last prune travel in the checkpoint, so the next
    prune ranks by the same sums as an uninterrupted run."""
    hook = _hook(score='grad_l1', interval=2, target_ratio=8.0)
    crashed = _runner(tmp_path, hook, max_epochs=4, extra_hooks=[Crash(1)], name='ga')
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    before = next(h for h in crashed.hooks if isinstance(h, MiMiPruningHook))._grads
    assert before and all(g for g in before.values())
    probe = GradProbe()
    resumed = _runner(tmp_path, hook, max_epochs=2, resume=True, extra_hooks=[probe],
                      name='gb')
    resumed.train()
    assert set(probe.grads) == set(before)
    for name, grads in before.items():
        for k, v in grads.items():
            assert torch.equal(probe.grads[name][k], v), (name, k)
    # and the prune at the end of epoch 2 used them: fewer adapter params than at start
    assert next(h for h in resumed.hooks if isinstance(h, MiMiPruningHook)).steps == 1
