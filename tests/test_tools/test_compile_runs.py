"""``compile`` end to end through tools/train.py and tools/test.py: a MiMi run trains compiled
(pruning changes the adapters' shapes mid-run: the step recompiles, no stale graph) with the
losses of the eager run, and its pruned checkpoint and that checkpoint's adapter-only export
test compiled with the eager run's scores.

The runs compile with ``backend='aot_eager'``: dynamo's capture and AOTAutograd's forward and
backward graphs, which is where a graph break, a stale graph or a wrong gradient of ours would
show, without inductor's kernel compilation (minutes per run on two cores;
tests/test_models/test_compile.py checks inductor's results on the backbones).
"""
import os.path as osp
import pickle
import re

import torch

from tests.conftest import PY, ROOT, run_tool

CFG = osp.join(ROOT, 'configs', 'demo', 'swin-nano-mona-mimi_1xb32-4e_shapes-cls.py')
TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')
EXPORT = osp.join(ROOT, 'tools', 'model_converters', 'export_adapters.py')
# a constant warm-up lr: torch guards the optimizer step on the lr's value (one recompile
# per new value), which is mmengine's and torch's, not what this test is about
OPTS = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=2', 'train_dataloader.batch_size=8',
        'param_scheduler.0.start_factor=1.0',
        'default_hooks.logger.interval=1', 'randomness.seed=0']
COMPILED = ['compile.backend=aot_eager']


def _losses(log: str):
    return [float(v) for v in re.findall(r'Epoch\(train\).*?\bloss: ([0-9.]+)', log)]


def _scores(path):
    with open(path, 'rb') as f:
        return torch.stack([torch.as_tensor(s['pred_score']) for s in pickle.load(f)])


def test_compiled_mimi_run_and_compiled_tests_equal_eager(shapes_workspace):
    ws = shapes_workspace
    runs = {}
    for name, extra in (('eager', []), ('compiled', COMPILED)):
        wd = ws / 'work_dirs' / f'compile_{name}'
        runs[name] = (wd, run_tool([PY, TRAIN, CFG, '--work-dir', str(wd), '--cfg-options',
                                    *OPTS, *extra], cwd=ws))
    (eager_wd, eager_log), (wd, log) = runs['eager'], runs['compiled']
    assert 'Model has been "compiled"' in log and 'compiled' not in eager_log.lower()
    # both epochs' iterations, pruned twice in between and after: the same losses
    assert len(_losses(log)) == 8 and 'MiMi step 2' in log
    torch.testing.assert_close(torch.tensor(_losses(log)), torch.tensor(_losses(eager_log)),
                               rtol=1e-4, atol=1e-4)
    assert re.findall(r'accuracy/top1: ([0-9.]+)', log) == \
        re.findall(r'accuracy/top1: ([0-9.]+)', eager_log)
    pruned = wd / 'epoch_2.pth'
    adapters = wd / 'adapters.pth'
    base = ws / 'work_dirs' / 'demo' / 'pretrain' / 'epoch_20.pth'
    run_tool([PY, EXPORT, CFG, str(pruned), str(adapters), '--base-checkpoint', str(base)],
             cwd=ws)
    scores = {}
    for name, ckpt, extra, opts in (
            ('eager', pruned, [], []), ('compiled', pruned, [], COMPILED),
            ('adapters', adapters, ['--base-checkpoint', str(base)], COMPILED)):
        out = wd / f'test_{name}.pkl'
        res = run_tool([PY, TEST, CFG, str(ckpt), *extra, '--work-dir', str(wd / 'test'),
                        '--out', str(out), '--cfg-options', 'test_dataloader.batch_size=2',
                        *opts], cwd=ws)
        assert ('test_step compiled' in res) == bool(opts)
        scores[name] = _scores(out)
    torch.testing.assert_close(scores['compiled'], scores['eager'], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores['adapters'], scores['eager'], rtol=1e-4, atol=1e-5)
