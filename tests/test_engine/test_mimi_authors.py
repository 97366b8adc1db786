"""MiMi as its authors' code runs it (``schedule='authors'``, ``score_norm='adapter_max'``,
``restart_lr``), checked against a re-statement of their algorithm written here: masks on
full-size weights, scores from the masked weights, a global threshold on the cumulative
fraction of the original neurons, and ``torch.nn.utils.prune.ln_structured`` per adapter, as
in ``structured_magnitude_pruning_layer`` of their ``few_shot_prune.py``."""
import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune
from mmengine.hooks import Hook
from mmengine.logging import MessageHub, MMLogger
from mmengine.runner import Runner

from mona_mm.engine import MiMiPruningHook
from mona_mm.models import PEFTSwinTransformer, iter_adapters
from mona_mm.models.peft.base import BiasAdapter
from mona_mm.pruning import (cumulative_fraction, get_structure, neuron_scores,
                             normalize_scores, select_keep_cumulative)
from tests.conftest import NANO
from tests.test_engine.test_mimi_pruning_hook import ToyData, ToyDetector

HIDDEN = 16


# ---------------------------------------------------------------- their algorithm, restated
def authors_amounts(rho, phases):
    """``pruning_amount`` of every phase, as their loop computes it."""
    amounts, amount = [], rho
    for phase in range(phases):
        if phase:
            amount = amount + (1 - amount) * rho
        amounts.append(amount)
    return amounts


def authors_scores(pairs, weighted):
    """Their score of every neuron (masked neurons included, at 0): L1 of the concatenated
    down row and up column over its length, optionally divided by the adapter's max."""
    scores = []
    for down, up in pairs:
        concat = torch.cat((down, up.T), 1)
        w = torch.sum(torch.abs(concat), 1)
        w /= concat.shape[1]
        scores.append(w.view(-1))
    if weighted:
        normalised = []
        for score in scores:
            maxi = max(score)
            normalised.append(torch.stack([item / maxi if item != 0 else item
                                           for item in score]))
        scores = normalised
    return scores


def authors_prune(pairs, amount, weighted):
    """One prune of their global ("layerwise") MiMi: new row masks of every adapter.

    Args:
        pairs: ``[(down (m, C), up (C, m))]``, already masked.
        amount: Cumulative fraction of the original neurons to prune.
        weighted: Their ``--weighted``.
    """
    total = torch.FloatTensor([down.shape[0] for down, _ in pairs])
    num_surv = int(np.floor(total.sum() * (1.0 - amount)))
    scores = authors_scores(pairs, weighted)
    pooled = torch.cat(scores, dim=0)
    if num_surv == 0:
        threshold = torch.tensor(float('inf'))
    else:
        threshold = torch.topk(pooled, num_surv)[0][-1]
    final_survs = [torch.ge(s, threshold * torch.ones(s.size())).sum() for s in scores]
    masks = []
    for (down, up), surv, m in zip(pairs, final_survs, total):
        concat = torch.cat((down, up.T), 1)
        module = nn.Linear(concat.shape[0], concat.shape[1], bias=False)
        module.weight = nn.Parameter(concat)
        torch_prune.ln_structured(module, name='weight', amount=float(1.0 - surv / m), n=1,
                                  dim=0)
        masks.append(module.weight_mask[:, 0] != 0)
    return masks


# ---------------------------------------------------------------- helpers
def _model():
    torch.manual_seed(0)
    return PEFTSwinTransformer(arch=NANO, peft=dict(type='Adapter', hidden_dims=HIDDEN),
                               drop_path_rate=0.0).eval()


def _fake_runner(model):
    params = [p for p in model.parameters() if p.requires_grad]
    return SimpleNamespace(model=model, hooks=[],
                           optim_wrapper=SimpleNamespace(optimizer=torch.optim.AdamW(params)),
                           logger=MMLogger.get_current_instance(),
                           message_hub=MessageHub.get_current_instance())


def _train(ref, masks, gen):
    """Stand-in for a training phase of the reference: every weight moves, masked ones stay 0
    (their masks hide them from the forward and the gradient)."""
    with torch.no_grad():
        for name, a in iter_adapters(ref):
            for p in (a.down.weight, a.down.bias, a.up.weight, a.up.bias):
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            a.down.weight.mul_(masks[name][:, None])
            a.up.weight.mul_(masks[name][None, :])


def _apply_masks(ref, masks):
    with torch.no_grad():
        for name, a in iter_adapters(ref):
            a.down.weight.mul_(masks[name][:, None])
            a.up.weight.mul_(masks[name][None, :])


def _copy_live(ref, model, orig):
    """Give our pruned model the reference's weights of the neurons it still holds."""
    with torch.no_grad():
        for name, a in iter_adapters(ref):
            ours = model.get_submodule(name)
            if isinstance(ours, BiasAdapter):
                ours.bias.copy_(a.up.bias)
                continue
            idx = orig[name]
            ours.down.weight.copy_(a.down.weight[idx])
            ours.down.bias.copy_(a.down.bias[idx])
            ours.up.weight.copy_(a.up.weight[:, idx])
            ours.up.bias.copy_(a.up.bias)


def _surviving(ref, model, orig):
    """Original indices of the neurons our model kept (matched by their weights)."""
    out = {}
    for name, a in iter_adapters(ref):
        ours = model.get_submodule(name)
        if isinstance(ours, BiasAdapter):
            out[name] = torch.zeros(0, dtype=torch.long)
            continue
        cand = a.down.weight[orig[name]]
        eq = (ours.down.weight[:, None, :] == cand[None]).all(-1)
        assert (eq.sum(1) == 1).all()
        out[name] = orig[name][eq.float().argmax(1)]
    return out


# ---------------------------------------------------------------- the schedule
@pytest.mark.parametrize('rho', [0.5, 0.3])
@pytest.mark.parametrize('score_norm, weighted', [('none', 0), ('adapter_max', 1)])
def test_authors_schedule_keeps_the_neurons_their_algorithm_keeps(rho, score_norm, weighted):
    model = _model()
    ref = copy.deepcopy(model)
    names = [n for n, _ in iter_adapters(model)]
    masks = {n: torch.ones(HIDDEN, dtype=torch.bool) for n in names}
    orig = {n: torch.arange(HIDDEN) for n in names}
    phases = 5
    hook = MiMiPruningHook(schedule='authors', rho=rho, max_steps=phases,
                           score_norm=score_norm, plot=False)
    runner = _fake_runner(model)
    hook.before_train(runner)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    vanished_seen = False
    for phase, amount in enumerate(authors_amounts(rho, phases)):
        assert cumulative_fraction(rho, phase) == amount
        _train(ref, masks, gen)
        _copy_live(ref, model, orig)
        adapters = dict(iter_adapters(ref))
        new_masks = authors_prune(
            [(adapters[n].down.weight.detach(), adapters[n].up.weight.detach())
             for n in names], amount, weighted)
        masks = dict(zip(names, new_masks))
        assert hook.prune(runner)
        orig = _surviving(ref, model, orig)
        for n in names:
            assert sorted(orig[n].tolist()) == masks[n].nonzero().flatten().tolist(), \
                (phase, n)
        # and the pruned model computes what their masked one computes
        _apply_masks(ref, masks)
        with torch.no_grad():
            for a, b in zip(model(x), ref(x)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        kept = sum(int(m.sum()) for m in masks.values())
        floor = int(np.floor(np.float32(len(names) * HIDDEN) * np.float32(1 - amount)))
        assert sum(get_structure(model).values()) == kept >= floor
        vanished_seen |= any(isinstance(a, BiasAdapter) for _, a in iter_adapters(model))
    assert hook.steps == phases and hook.done and not hook.prune(runner)
    if score_norm == 'adapter_max':  # every adapter's best neuron scores 1.0: never below
        assert not vanished_seen
    elif rho == 0.5:  # 8 of 256 neurons left for 16 adapters
        assert vanished_seen


def test_select_keep_cumulative_keeps_ties_and_counts_the_original_neurons():
    scores = {'a': torch.tensor([1., 1., .5]), 'b': torch.tensor([1., .2])}
    initial = {'a': 3, 'b': 2, 'gone': 4}  # an adapter removed earlier still counts in N0
    # N0 = 9, fraction 0.5: floor(4.5) = 4 -> threshold 0.5; fraction 0.7: 2 -> 1.0, ties
    keep = select_keep_cumulative(scores, 0.5, initial)
    assert keep['a'].tolist() == [0, 1, 2] and keep['b'].tolist() == [0]
    keep = select_keep_cumulative(scores, 0.7, initial)
    assert keep['a'].tolist() == [0, 1] and keep['b'].tolist() == [0]
    keep = select_keep_cumulative(scores, 0.99, initial)
    assert keep['a'].tolist() == [] and keep['b'].tolist() == []
    # local: m0 - round(p * m0) per adapter, like torch.nn.utils.prune
    keep = select_keep_cumulative(scores, 0.5, {'a': 6, 'b': 2}, selection='local')
    assert keep['a'].tolist() == [0, 1, 2] and keep['b'].tolist() == [0]
    with pytest.raises(ValueError, match='fraction'):
        select_keep_cumulative(scores, 0.0, initial)
    with pytest.raises(KeyError, match='original width'):
        select_keep_cumulative(scores, 0.5, {'a': 3})


def test_adapter_max_normalisation_is_theirs():
    model = _model()
    adapters = dict(iter_adapters(model))
    with torch.no_grad():
        for a in adapters.values():
            a.up.weight.normal_(0, 0.05)
    ours = normalize_scores({n: neuron_scores(a) for n, a in adapters.items()}, 'adapter_max')
    theirs = authors_scores([(a.down.weight.detach(), a.up.weight.detach())
                             for a in adapters.values()], weighted=1)
    for (n, s), t in zip(ours.items(), theirs):
        torch.testing.assert_close(s, t, rtol=1e-5, atol=0)
        assert s.max() == 1.0
    # and the unnormalised score is theirs too
    plain = authors_scores([(a.down.weight.detach(), a.up.weight.detach())
                            for a in adapters.values()], weighted=0)
    for a, t in zip(adapters.values(), plain):
        torch.testing.assert_close(neuron_scores(a), t, rtol=1e-5, atol=0)
    assert normalize_scores({'z': torch.zeros(3)}, 'adapter_max')['z'].tolist() == [0.] * 3
    with pytest.raises(ValueError, match='adapter_max'):
        normalize_scores({}, 'max')


def test_authors_never_stop_mid_step_while_ours_do():
    n0 = None
    kept = {}
    for schedule in ('authors', 'iterative'):
        model = _model()
        runner = _fake_runner(model)
        hook = MiMiPruningHook(schedule=schedule, rho=0.5, target_ratio=1.2, plot=False)
        hook.before_train(runner)
        n0 = sum(get_structure(model).values())
        hook.prune(runner)
        assert hook.done and hook.steps == 1
        kept[schedule] = sum(get_structure(model).values())
    assert kept['authors'] == n0 // 2 < kept['iterative'] < n0


# ---------------------------------------------------------------- through a Runner
class LrProbe(Hook):
    priority = 'VERY_HIGH'

    def __init__(self):
        self.lrs = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs.append(runner.optim_wrapper.optimizer.param_groups[0]['lr'])


def _runner(work_dir, hook, max_epochs, name, resume=False, extra_hooks=()):
    torch.manual_seed(0)
    return Runner(
        model=ToyDetector('Mona'), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler',
                                                               shuffle=False),
                              batch_size=2, num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        # one phase (= 1 epoch = 4 iterations): 2 warmup iterations, then cosine
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2),
                         dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=1,
                              T_max=1, eta_min=1e-5, convert_to_iter_based=True)],
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        custom_hooks=[hook, *extra_hooks], resume=resume, experiment_name=name,
        default_scope='mmengine', randomness=dict(seed=0))


def _authors(**kw):
    return dict(dict(type='mona_mm.MiMiPruningHook', schedule='authors', interval=1, rho=0.5,
                     max_steps=2, plot=False), **kw)


@pytest.mark.parametrize('restart', [True, False])
def test_phases_and_lr_restarts_in_a_runner(tmp_path, restart):
    probe = LrProbe()
    runner = _runner(tmp_path, _authors(restart_lr=restart), 3, f'lr{restart}',
                     extra_hooks=[probe])
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, MiMiPruningHook))
    assert hook.steps == 2 and hook.done
    n0 = sum(hook.initial_structure.values())
    assert sum(get_structure(runner.model).values()) == n0 // 4  # p_1 = 0.75
    lrs = [probe.lrs[i:i + 4] for i in (0, 4, 8)]
    assert lrs[0][0] == pytest.approx(1e-4) and lrs[0][2] > lrs[0][3]
    if restart:  # every phase runs the first phase's schedule again
        assert lrs[1] == pytest.approx(lrs[0]) and lrs[2] == pytest.approx(lrs[0])
    else:  # one schedule: it ended with the first phase, its last lr stays
        assert all(lr == pytest.approx(lrs[0][3]) for lr in lrs[1] + lrs[2])
    log = next(tmp_path.glob('*/*.log')).read_text()
    assert 'authors: 0.7500 of the original' in log and '2 prunes done' in log
    assert ('parameter schedules restarted' in log) == restart


def test_resume_continues_the_authors_phases_and_refuses_another_schedule(tmp_path):
    ref = _runner(tmp_path / 'ref', _authors(restart_lr=True), 3, 'ref')
    ref.train()
    _runner(tmp_path / 'run', _authors(restart_lr=True), 1, 'a').train()
    with pytest.raises(ValueError, match="cannot resume a schedule='authors' run"):
        _runner(tmp_path / 'run', _authors(schedule='iterative', target_ratio=4.0), 3, 'b',
                resume=True).train()
    resumed = _runner(tmp_path / 'run', _authors(restart_lr=True), 3, 'c', resume=True)
    resumed.train()
    hooks = [next(h for h in r.hooks if isinstance(h, MiMiPruningHook)) for r in (ref, resumed)]
    assert [(h.steps, h.done) for h in hooks] == [(2, True)] * 2
    # (dropout draws differ after a resume, so which neurons survive may too; not how many)
    assert set(get_structure(resumed.model)) == set(get_structure(ref.model))
    assert sum(get_structure(resumed.model).values()) == \
        sum(get_structure(ref.model).values()) == sum(hooks[0].initial_structure.values()) // 4
    lr = lambda r: [g['lr'] for g in r.optim_wrapper.optimizer.param_groups]  # noqa
    assert lr(resumed) == pytest.approx(lr(ref))


# ---------------------------------------------------------------- arguments
@pytest.mark.parametrize('kw, field', [
    (dict(schedule='paper', target_ratio=2), 'schedule'),
    (dict(schedule='authors'), 'max_steps'),
    (dict(schedule='authors', max_steps=0), 'max_steps'),
    (dict(schedule='authors', max_steps=2, min_neurons=1), 'min_neurons'),
    (dict(target_ratio=2, score_norm='max'), 'score_norm'),
    (dict(target_ratio=2, restart_lr='yes'), 'restart_lr'),
    (dict(), 'needs a target'),
])
def test_bad_arguments_are_refused_naming_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        MiMiPruningHook(**kw)


def test_restart_lr_needs_restartable_schedulers():
    from mmengine.optim.scheduler import ReduceOnPlateauLR
    hook = MiMiPruningHook(schedule='authors', max_steps=2, restart_lr=True, plot=False)
    runner = _fake_runner(_model())
    runner.param_schedulers = None
    with pytest.raises(ValueError, match='no param_scheduler'):
        hook.before_train(runner)
    runner.param_schedulers = [ReduceOnPlateauLR(runner.optim_wrapper.optimizer)]
    with pytest.raises(ValueError, match='ReduceOnPlateauLR'):
        hook.before_train(runner)


def test_cumulative_fraction():
    assert [cumulative_fraction(0.5, k) for k in range(3)] == [0.5, 0.75, 0.875]
    assert cumulative_fraction(0.2, 3) == pytest.approx(1 - 0.8**4)
    assert math.isclose(cumulative_fraction(0.3, 0), 0.3)
    with pytest.raises(ValueError, match='rho'):
        cumulative_fraction(1.0, 0)
