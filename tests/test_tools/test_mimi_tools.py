"""MiMi through the tools: train with the hook, test.py / peft_summary / export / plot on the
pruned checkpoint, and a 2-process (gloo) run whose ranks end with identical shapes."""
import os
import os.path as osp
import re

import pytest

from tests.conftest import PY, ROOT, run_tool

CFG = osp.join(ROOT, 'configs', 'demo', 'swin-nano-mona-mimi_1xb32-4e_shapes-cls.py')
OPTS = ['train_dataloader.batch_size=8', 'param_scheduler.0.end=2',
        'default_hooks.logger.interval=1']


@pytest.fixture(scope='module')
def pruned_run(shapes_workspace):
    wd = shapes_workspace / 'work_dirs' / 'mimi_cls'
    out = run_tool([PY, osp.join(ROOT, 'tools', 'train.py'), CFG, '--work-dir', str(wd),
                    '--cfg-options', *OPTS], cwd=shapes_workspace)
    return wd, out


def test_training_prunes_and_continues(pruned_run):
    wd, out = pruned_run
    m = re.search(r'MiMi summary: adapter parameters ([\d,]+) -> ([\d,]+)', out)
    before, after = (int(g.replace(',', '')) for g in m.groups())
    assert before / after >= 4
    assert re.search(r'Epoch\(train\)\s+\[4\]', out)  # trained on after pruning
    assert (wd / 'mimi_neurons.png').exists()


def test_test_py_on_pruned_checkpoint(pruned_run, shapes_workspace):
    wd, _ = pruned_run
    out = run_tool([PY, osp.join(ROOT, 'tools', 'test.py'), CFG, str(wd / 'epoch_4.pth'),
                    '--work-dir', str(wd / 'test')], cwd=shapes_workspace)
    assert re.search(r'accuracy/top1: [0-9.]+', out)


def test_summary_export_and_plot_on_pruned_checkpoint(pruned_run, shapes_workspace):
    wd, out = pruned_run
    summary = run_tool([PY, osp.join(ROOT, 'tools', 'analysis_tools', 'peft_summary.py'), CFG,
                        CFG, '--checkpoint', str(wd / 'epoch_1.pth'), str(wd / 'epoch_4.pth')],
                       cwd=shapes_workspace)
    rows = [ln for ln in summary.splitlines() if ln.startswith('swin-nano-mona-mimi')]
    bb = [int(r.split()[2].replace(',', '')) for r in rows]
    flops = [float(r.split()[-1]) for r in rows]
    assert bb[1] < bb[0] and flops[1] < flops[0]
    exported = wd / 'pruned_adapters.pth'
    res = run_tool([PY, osp.join(ROOT, 'tools', 'model_converters', 'export_adapters.py'), CFG,
                    str(wd / 'epoch_4.pth'), str(exported), '--base-checkpoint',
                    str(wd / 'epoch_4.pth')], cwd=shapes_workspace)
    assert 'adapter params' in res
    assert exported.stat().st_size < (wd / 'epoch_4.pth').stat().st_size / 2
    # inference from the compact file onto a fresh pretrained backbone
    out = run_tool([PY, osp.join(ROOT, 'tools', 'test.py'), CFG, str(exported), '--work-dir',
                    str(wd / 'test_export')], cwd=shapes_workspace)
    full = run_tool([PY, osp.join(ROOT, 'tools', 'test.py'), CFG, str(wd / 'epoch_4.pth'),
                     '--work-dir', str(wd / 'test_full')], cwd=shapes_workspace)
    acc = [re.findall(r'accuracy/top1: ([0-9.]+)', o)[-1] for o in (out, full)]
    assert acc[0] == acc[1]
    # re-parameterised (deploy) checkpoint: same predictions
    deploy = wd / 'deploy.pth'
    res = run_tool([PY, osp.join(ROOT, 'tools', 'model_converters', 'reparameterize.py'), CFG,
                    str(wd / 'epoch_4.pth'), str(deploy)], cwd=shapes_workspace)
    assert 'folded' in res
    # converters keep every meta field (class names for the inferencers) and write a hash
    from mona_mm.utils import HASH_KEY, load_checkpoint_file
    source = load_checkpoint_file(str(wd / 'epoch_4.pth'))['meta']['dataset_meta']
    for path in (exported, deploy):
        meta = load_checkpoint_file(str(path))['meta']  # verifies the hash
        assert meta['dataset_meta'] == source and HASH_KEY in meta
    dep = run_tool([PY, osp.join(ROOT, 'tools', 'test.py'), CFG, str(deploy), '--work-dir',
                    str(wd / 'test_deploy')], cwd=shapes_workspace)
    assert re.findall(r'accuracy/top1: ([0-9.]+)', dep)[-1] == acc[1]
    png = wd / 'plot.png'
    run_tool([PY, osp.join(ROOT, 'tools', 'analysis_tools', 'plot_mimi.py'), CFG,
              str(wd / 'epoch_4.pth'), str(png)], cwd=shapes_workspace)
    assert png.stat().st_size > 1000


def test_ddp_two_processes_identical_shapes(shapes_workspace):
    wd = shapes_workspace / 'work_dirs' / 'mimi_dist'
    env = dict(PATH=osp.dirname(PY) + os.pathsep + os.environ['PATH'], PORT='29531')
    out = run_tool(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), CFG, '2', '--work-dir',
                    str(wd), '--cfg-options', 'train_dataloader.batch_size=4', *OPTS[1:]],
                   cwd=shapes_workspace, env=env)
    assert 'pruned shapes identical on all 2 ranks' in out
    assert 'MiMi summary' in out and (wd / 'epoch_4.pth').exists()
