"""MiMiPruningHook refuses arguments that would fail late or prune nothing, and a pruned
checkpoint loads with the optimizer following its shapes: a resume without the MiMi hook
is refused with the fix, a ``load_from`` run trains the pruned adapters."""
import math
import types

import pytest
import torch
from mmengine.runner import Runner

from mona_mm.engine import MiMiPruningHook
from mona_mm.models import PEFTSwinTransformer
from mona_mm.pruning import get_structure
from tests.conftest import NANO
from tests.test_engine.test_mimi_pruning_hook import ToyData, ToyDetector, _hook

SAFE = dict(type='mona_mm.SafeCheckpointHook', interval=1)


@pytest.mark.parametrize('kw, match', [
    (dict(seed='x'), r"seed must be an int >= 0 .*got 'x'"),
    (dict(seed=1.5), 'seed must be an int >= 0'),
    (dict(target_ratio=math.inf), 'target_ratio must be a finite number > 1 .*got inf'),
])
def test_bad_arguments_fail_at_construction(kw, match):
    with pytest.raises(ValueError, match=match):
        MiMiPruningHook(**{'target_ratio': 4.0, **kw})


def test_min_neurons_at_or_above_every_width_is_refused():
    runner = types.SimpleNamespace(
        model=PEFTSwinTransformer(arch=NANO, peft=dict(type='Mona', hidden_dims=16)), hooks=[])
    with pytest.raises(ValueError, match=r'min_neurons=16 is not below the width of any '
                       r'adapter \(the widest has 16 neurons\), so nothing could be pruned'):
        MiMiPruningHook(target_ratio=4.0, min_neurons=16).before_train(runner)
    MiMiPruningHook(target_ratio=4.0, min_neurons=15).before_train(runner)  # one can go


def _run(work_dir, hook=None, max_epochs=1, name='r', **kw):
    torch.manual_seed(0)
    return Runner(
        model=ToyDetector(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs), default_hooks=dict(
            checkpoint=SAFE), custom_hooks=[hook] if hook else [], experiment_name=name,
        default_scope='mmengine', randomness=dict(seed=0), **kw)


def _adapters_in_optimizer(runner) -> bool:
    """Whether the optimizer updates exactly the model's tensors, every trainable backbone
    tensor (the adapters) among them."""
    held = {id(p) for g in runner.optim_wrapper.optimizer.param_groups for p in g['params']}
    trainable = [p for p in runner.model.backbone.parameters() if p.requires_grad]
    return bool(trainable) and all(id(p) in held for p in trainable) and \
        held <= {id(p) for p in runner.model.parameters()}


@pytest.fixture(scope='module')
def pruned(tmp_path_factory):
    """A run MiMi pruned (1 epoch, one prune) and its checkpoint."""
    wd = tmp_path_factory.mktemp('pruned')
    runner = _run(wd, _hook(), name='mimi_args_pruned')
    runner.train()
    assert sum(get_structure(runner.model).values()) < 256
    return wd, get_structure(runner.model)


def test_resume_without_the_mimi_hook_names_the_fix(pruned):
    wd, _ = pruned
    runner = _run(wd, max_epochs=2, name='mimi_args_resume', resume=True)
    with pytest.raises(ValueError, match=r'cannot resume: this checkpoint comes from a run '
                       r'that MiMi pruned \(1 pruning steps, backbone adapters at \d+ of 256 '
                       r'neurons\).*Resume with the config the run was trained with.*'
                       r'load_from=<checkpoint> without --resume'):
        runner.train()


def test_load_from_a_pruned_checkpoint_trains_its_adapters(pruned, tmp_path):
    """Fine-tuning from a pruned checkpoint (no MiMi hook): the optimizer, built before the
    weights load, follows the shrunk adapters; the run then resumes."""
    wd, structure = pruned
    runner = _run(tmp_path, max_epochs=1, name='mimi_args_ft',
                  load_from=str(wd / 'epoch_1.pth'))
    runner.train()
    assert get_structure(runner.model) == structure
    assert _adapters_in_optimizer(runner)
    resumed = _run(tmp_path, max_epochs=2, name='mimi_args_ft_resumed', resume=True)
    resumed.train()
    assert get_structure(resumed.model) == structure and _adapters_in_optimizer(resumed)
