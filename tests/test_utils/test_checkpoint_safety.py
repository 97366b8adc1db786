"""--resume works under torch>=2.6 with weights_only loading kept on."""
import os
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from torch.utils.data import Dataset

import mona_mm  # noqa: F401  (registers the allow-list)
from mona_mm.utils import mmengine_checkpoint_globals


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=((out.squeeze(-1) - torch.stack(labels))**2).mean())
        return out


class ToyDataset(Dataset):
    METAINFO = dict()

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), float(i)), labels=torch.tensor(float(i % 3)))


def _runner(work_dir, max_epochs, resume=False):
    return Runner(
        model=ToyModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyDataset(), sampler=dict(type='DefaultSampler'),
                              batch_size=4, num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1], by_epoch=True),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        resume=resume, experiment_name=f'exp_{max_epochs}_{resume}',
        default_scope='mmengine')


def test_weights_only_stays_on():
    assert not os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    allowed = torch.serialization.get_safe_globals()
    for obj in mmengine_checkpoint_globals():
        assert obj in allowed


def test_runner_saves_and_resumes(tmp_path):
    r1 = _runner(tmp_path, max_epochs=1)
    r1.train()
    ckpt = tmp_path / 'epoch_1.pth'
    assert ckpt.exists()
    # the checkpoint holds mmengine's own objects and loads with weights_only=True
    loaded = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert 'message_hub' in loaded and 'optimizer' in loaded
    w1 = r1.model.linear.weight.detach().clone()
    r2 = _runner(tmp_path, max_epochs=2, resume=True)
    r2.train()
    assert r2.train_loop.epoch == 2
    assert r2.train_loop.iter == 4  # continued from iteration 2, not restarted
    assert (tmp_path / 'epoch_2.pth').exists()
    assert not torch.equal(r2.model.linear.weight, w1)


class Evil:

    def __reduce__(self):
        return (os.system, ('echo pwned',))


class GetattrEvil:
    """Asks the allow-listed getattr for something other than a statistics method
    (a way into the module's globals)."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


def test_resume_in_a_fresh_process(tmp_path):
    """Loading in a process that never built a HistoryBuffer (what --resume does)."""
    import subprocess
    import sys
    _runner(tmp_path, max_epochs=1).train()
    code = ('import torch, mona_mm; c = torch.load(%r, map_location="cpu"); '
            'print(sorted(c["message_hub"]["log_scalars"])[:1])' % str(tmp_path / 'epoch_1.pth'))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'train/' in out.stdout


def test_getattr_is_limited_to_history_buffer(tmp_path):
    path = tmp_path / 'evil_getattr.pth'
    torch.save({'meta': GetattrEvil()}, path)
    with pytest.raises(pickle.UnpicklingError, match='only the statistics methods'):
        torch.load(path, map_location='cpu')


def test_arbitrary_pickled_object_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'linear.weight': torch.zeros(1, 2)}, 'meta': Evil()}, path)
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(path, map_location='cpu')
    from mona_mm.utils import CheckpointError
    with pytest.raises(CheckpointError, match='refusing to load'):
        load_checkpoint(ToyModel(), str(path), map_location='cpu')
