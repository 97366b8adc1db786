"""`mim train mona_mm <config>` after a non-editable install, and `mim train mmdet <our
config>` with mona_mm importable."""
import glob
import os
import os.path as osp
import re
import subprocess

from tests.conftest import PY, ROOT

MIM = osp.join(osp.dirname(PY), 'mim')


def _run(args, cwd, pythonpath):
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS='1')
    proc = subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:]
    return proc.stdout


def test_mim_train_mona_mm_after_wheel_install(tmp_path, shapes_workspace):
    wheel_dir, site = tmp_path / 'wheel', tmp_path / 'site'
    _run([PY, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
          str(wheel_dir), ROOT], cwd=tmp_path, pythonpath='')
    wheel = glob.glob(str(wheel_dir / 'mona_mm-*.whl'))[0]
    _run([PY, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(site), wheel],
         cwd=tmp_path, pythonpath='')
    assert (site / 'mona_mm' / '.mim' / 'configs' / 'demo').is_dir()
    assert (site / 'mona_mm' / '.mim' / 'tools' / 'train.py').is_file()
    out = _run([MIM, 'train', 'mona_mm', 'swin-nano-mona_1xb32-10e_shapes-cls.py', '--gpus', '0',
                '--work-dir', str(tmp_path / 'wd'), '--cfg-options', 'train_cfg.max_epochs=1',
                'train_cfg.val_interval=1', 'param_scheduler.0.end=2',
                'train_dataloader.batch_size=8'], cwd=shapes_workspace, pythonpath=str(site))
    assert re.search(r'Epoch\(train\)\s+\[1\]\[4/4\]', out), out[-3000:]
    assert str(site / 'mona_mm' / '.mim') in out  # mim used the installed copy
    assert (tmp_path / 'wd' / 'epoch_1.pth').exists()


def test_mim_train_mmdet_with_our_config(tmp_path, shapes_workspace):
    cfg = osp.join(ROOT, 'configs', 'demo', 'retinanet_swin-nano-mona_fpn_1xb4-12e_shapes-voc.py')
    out = _run([MIM, 'train', 'mmdet', cfg, '--gpus', '0', '--work-dir', str(tmp_path / 'wd'),
                '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                'param_scheduler.0.end=2'], cwd=shapes_workspace, pythonpath=ROOT)
    assert re.search(r'pascal_voc/mAP', out), out[-3000:]
    assert (tmp_path / 'wd' / 'epoch_1.pth').exists()
