"""SafeCheckpointHook cleans, when a run is resumed, what a run killed between writing a
checkpoint and removing the one it supersedes left on disk: periodic checkpoints beyond
``max_keep_ckpts`` and a second ``best_*.pth`` (the newest best is kept, and adopted with the
score it was saved with when the killed run had not recorded it yet)."""
import shutil

import pytest
import torch

from mona_mm.utils.checkpoint_io import stamp_hash
from tests.test_engine.test_safe_checkpoint_hook import _ckpts, _hook, _load, make_runner


def test_superseded_checkpoints_are_removed_on_resume(tmp_path):
    runner = make_runner(tmp_path, max_iters=3, max_keep_ckpts=2, name='left_keep')
    runner.train()
    assert _ckpts(tmp_path) == ['iter_2.pth', 'iter_3.pth']
    # killed after iter_3 was in place and named by last_checkpoint, before iter_1 went;
    # iter_0 is older still; iter_7 is from a later step (another timeline): both kinds stay
    # untouched unless superseded by the resumed bookkeeping
    for name in ('iter_1.pth', 'iter_0.pth', 'iter_7.pth'):
        shutil.copy(tmp_path / 'iter_2.pth', tmp_path / name)
    (tmp_path / 'notes.pth').write_bytes(b'not a checkpoint of the run')
    resumed = make_runner(tmp_path, max_iters=3, max_keep_ckpts=2, resume=True,
                          name='left_keep_resumed')
    resumed.train()  # nothing left to train: before_train runs, then the run ends
    assert _ckpts(tmp_path) == ['iter_2.pth', 'iter_3.pth', 'iter_7.pth', 'notes.pth']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_3.pth')
    # keeping all checkpoints (max_keep_ckpts=-1): nothing is superseded
    shutil.copy(tmp_path / 'iter_2.pth', tmp_path / 'iter_0.pth')
    make_runner(tmp_path, max_iters=4, max_keep_ckpts=-1, resume=True,
                name='left_keep_all').train()
    assert _ckpts(tmp_path) == ['iter_0.pth', 'iter_2.pth', 'iter_3.pth', 'iter_4.pth',
                                'iter_7.pth', 'notes.pth']


def test_older_second_best_is_removed(tmp_path):
    runner = make_runner(tmp_path, max_iters=2, val_scores=[0.5, 0.7], save_best='acc',
                         name='left_best_old')
    runner.train()
    assert _ckpts(tmp_path) == ['best_acc_iter_2.pth', 'iter_2.pth']
    # a best the killed run wrote before the current one and did not get to remove
    shutil.copy(tmp_path / 'best_acc_iter_2.pth', tmp_path / 'best_acc_iter_1.pth')
    resumed = make_runner(tmp_path, max_iters=3, val_scores=[0.6], save_best='acc',
                          resume=True, name='left_best_old_resumed')
    resumed.train()
    assert _ckpts(tmp_path) == ['best_acc_iter_2.pth', 'iter_3.pth']
    assert resumed.message_hub.get_info('best_score') == 0.7


@pytest.mark.parametrize('save_best', ['acc', 'auto'])
def test_newer_unrecorded_best_is_adopted(tmp_path, save_best):
    """Killed after writing a new best, before removing the previous one and before the
    periodic checkpoint recorded it: the newest best is kept, with its own score."""
    runner = make_runner(tmp_path, max_iters=3, val_scores=[0.7, 0.5, 0.6],
                         save_best=save_best, name=f'left_best_new_{save_best}')
    runner.train()
    assert _ckpts(tmp_path) == ['best_acc_iter_1.pth', 'iter_3.pth']
    # the best that validation at iteration 3 would have written with a score of 0.9
    ckpt = _load(tmp_path / 'best_acc_iter_1.pth')
    new_best = str(tmp_path / 'best_acc_iter_3.pth')
    ckpt['meta'].update(iter=3)
    ckpt['message_hub']['runtime_info'].update(best_score=0.9, best_ckpt=new_best)
    stamp_hash(ckpt)
    torch.save(ckpt, new_best)
    resumed = make_runner(tmp_path, max_iters=4, val_scores=[0.8], save_best=save_best,
                          resume=True, name=f'left_best_new_resumed_{save_best}')
    resumed.train()
    # 0.8 at iteration 4 is not better than the adopted 0.9: no new best
    assert resumed.message_hub.get_info('best_score') == 0.9
    assert resumed.message_hub.get_info('best_ckpt') == new_best
    assert _hook(resumed).best_ckpt_path == new_best
    assert _ckpts(tmp_path) == ['best_acc_iter_3.pth', 'iter_4.pth']
