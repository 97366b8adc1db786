"""MiMi through the tools: train with the hook, test.py (also --tta) / peft_summary / export /
plot on the pruned checkpoint, plot_mimi alike on a checkpoint and its adapter export (pruned
or not), and a 2-process (gloo) run whose ranks end with identical shapes."""
import importlib.util
import os
import os.path as osp
import pickle
import re

import pytest
import torch

from tests.conftest import PY, ROOT, run_tool

CFG = osp.join(ROOT, 'configs', 'demo', 'swin-nano-mona-mimi_1xb32-4e_shapes-cls.py')
PLAIN_CFG = osp.join(ROOT, 'configs', 'demo', 'swin-nano-mona_1xb32-10e_shapes-cls.py')
OPTS = ['train_dataloader.batch_size=8', 'param_scheduler.0.end=2',
        'default_hooks.logger.interval=1']
EXPORT = osp.join(ROOT, 'tools', 'model_converters', 'export_adapters.py')


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


@pytest.fixture(scope='module')
def unpruned_run(shapes_workspace):
    """One epoch of the same classifier without MiMi: a checkpoint that never pruned."""
    wd = shapes_workspace / 'work_dirs' / 'plain_cls_for_plot'
    run_tool([PY, osp.join(ROOT, 'tools', 'train.py'), PLAIN_CFG, '--work-dir', str(wd),
              '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', *OPTS],
             cwd=shapes_workspace)
    return wd / 'epoch_1.pth'


def _plot(monkeypatch, capsys, config, checkpoint, out):
    """plot_mimi.py in this process (its import of torch and mmengine is paid once)."""
    path = osp.join(ROOT, 'tools', 'analysis_tools', 'plot_mimi.py')
    spec = importlib.util.spec_from_file_location('_mona_tools_plot_mimi', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr('sys.argv', ['plot_mimi.py', config, str(checkpoint), str(out)])
    capsys.readouterr()
    module.main()
    return capsys.readouterr().out.strip().replace(str(out), 'OUT')


@pytest.mark.parametrize('pruned', [True, False], ids=['pruned', 'unpruned'])
def test_plot_of_a_checkpoint_and_its_export_alike(pruned, pruned_run, unpruned_run,
                                                   shapes_workspace, tmp_path, monkeypatch,
                                                   capsys):
    config, full = (CFG, pruned_run[0] / 'epoch_4.pth') if pruned else \
        (PLAIN_CFG, unpruned_run)
    exported = tmp_path / 'adapters.pth'
    run_tool([PY, EXPORT, config, str(full), str(exported), '--base-checkpoint', str(full)],
             cwd=shapes_workspace)
    printed = [_plot(monkeypatch, capsys, config, ckpt, tmp_path / f'{name}.png')
               for name, ckpt in (('full', full), ('export', exported))]
    assert printed[0] == printed[1]
    assert (tmp_path / 'full.png').read_bytes() == (tmp_path / 'export.png').read_bytes()
    if pruned:
        kept, total = map(int, re.fullmatch(r'wrote OUT: (\d+)/(\d+) neurons kept',
                                            printed[0]).groups())
        assert kept * 2 < total
    else:  # never pruned: the config's widths, all kept, for both files
        assert printed[0] == 'wrote OUT: 1024/1024 neurons kept (not pruned)'


def test_tta_on_pruned_checkpoint_and_its_export(pruned_run, shapes_workspace, tmp_path):
    """--tta wraps the model; the pruned structure and the adapter-only loading still apply
    to the model inside."""
    wd, _ = pruned_run
    exported = tmp_path / 'adapters.pth'
    run_tool([PY, EXPORT, CFG, str(wd / 'epoch_4.pth'), str(exported), '--base-checkpoint',
              str(wd / 'epoch_4.pth')], cwd=shapes_workspace)
    tta_cfg = tmp_path / 'tta.py'
    tta_cfg.write_text(
        f'_base_ = {CFG!r}\n'
        "tta_model = dict(type='AverageClsScoreTTA')\n"
        "tta_pipeline = [dict(type='LoadImageFromFile'), dict(type='TestTimeAug', transforms=["
        "[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)], "
        "[dict(type='PackInputs')]])]\n")
    scores = []
    for name, ckpt in (('full', wd / 'epoch_4.pth'), ('export', exported)):
        out = run_tool([PY, osp.join(ROOT, 'tools', 'test.py'), str(tta_cfg), str(ckpt),
                        '--tta', '--work-dir', str(tmp_path / name), '--out',
                        str(tmp_path / f'{name}.pkl')], cwd=shapes_workspace)
        assert re.search(r'accuracy/top1: [0-9.]+', out)
        with open(tmp_path / f'{name}.pkl', 'rb') as f:
            scores.append(torch.stack([s['pred_score'] for s in pickle.load(f)]))
    assert torch.equal(*scores)


def test_ddp_two_processes_identical_shapes(shapes_workspace):
    wd = shapes_workspace / 'work_dirs' / 'mimi_dist'
    env = dict(PATH=osp.dirname(PY) + os.pathsep + os.environ['PATH'], PORT='29531')
    out = run_tool(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), CFG, '2', '--work-dir',
                    str(wd), '--cfg-options', 'train_dataloader.batch_size=4', *OPTS[1:]],
                   cwd=shapes_workspace, env=env)
    assert 'pruned shapes identical on all 2 ranks' in out
    assert 'MiMi summary' in out and (wd / 'epoch_4.pth').exists()
