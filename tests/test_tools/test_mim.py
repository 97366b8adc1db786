"""``mim`` with mona_mm: ``mim train mona_mm`` from the editable install ``make env`` builds and
after a wheel install, ``mim train mmdet <our config>``, ``mim search`` / ``mim list``, and
``model-index.yml`` kept in step with the configs (tools/misc/gen_model_index.py)."""
import glob
import importlib.util
import json
from importlib import metadata
import os
import os.path as osp
import re
import subprocess

import pytest
from mmengine.config import Config
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mona_mm.version import __version__
from tests.conftest import PY, ROOT

MIM = osp.join(osp.dirname(PY), 'mim')
CLS_DEMO = 'swin-nano-mona_1xb32-10e_shapes-cls.py'
# One short epoch: 32 generated images in batches of 8.
SHORT_CLS_RUN = ['--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                 'param_scheduler.0.end=2', 'train_dataloader.batch_size=8']


def _run(args, cwd, pythonpath):
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS='1')
    proc = subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:]
    return proc.stdout


def _load_generator():
    path = osp.join(ROOT, 'tools', 'misc', 'gen_model_index.py')
    spec = importlib.util.spec_from_file_location('gen_model_index', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def gen():
    return _load_generator()


def test_editable_install_links_mim_files():
    # Made by setup.py's DevelopWithMim during `make env`; links, so edits show at once.
    for name in ('configs', 'tools', 'model-index.yml'):
        path = osp.join(ROOT, 'mona_mm', '.mim', name)
        assert osp.islink(path), f'{path} is not a link: run `make env`'
        assert osp.realpath(path) == osp.realpath(osp.join(ROOT, name))


def test_mim_train_mona_mm_editable(tmp_path, shapes_workspace):
    # No PYTHONPATH: mim must find mona_mm (and its .mim) through the editable install.
    out = _run([MIM, 'train', 'mona_mm', CLS_DEMO, '--gpus', '0', '--work-dir',
                str(tmp_path / 'wd')] + SHORT_CLS_RUN, cwd=shapes_workspace, pythonpath='')
    assert osp.join(ROOT, 'configs', 'demo', CLS_DEMO) in out  # resolved through the link
    assert re.search(r'Epoch\(train\)\s+\[1\]\[4/4\]', out), out[-3000:]
    assert (tmp_path / 'wd' / 'epoch_1.pth').exists()


def test_mim_train_mona_mm_after_wheel_install(tmp_path, shapes_workspace):
    wheel_dir, site = tmp_path / 'wheel', tmp_path / 'site'
    _run([PY, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
          str(wheel_dir), ROOT], cwd=tmp_path, pythonpath='')
    wheel = glob.glob(str(wheel_dir / 'mona_mm-*.whl'))[0]
    _run([PY, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(site), wheel],
         cwd=tmp_path, pythonpath='')
    mim_dir = site / 'mona_mm' / '.mim'
    assert (mim_dir / 'configs' / 'demo').is_dir() and not (mim_dir / 'configs').is_symlink()
    assert (mim_dir / 'tools' / 'train.py').is_file()
    assert (mim_dir / 'model-index.yml').read_text() == open(
        osp.join(ROOT, 'model-index.yml')).read()
    out = _run([MIM, 'train', 'mona_mm', CLS_DEMO, '--gpus', '0', '--work-dir',
                str(tmp_path / 'wd')] + SHORT_CLS_RUN, cwd=shapes_workspace,
               pythonpath=str(site))
    assert re.search(r'Epoch\(train\)\s+\[1\]\[4/4\]', out), out[-3000:]
    assert str(mim_dir) in out  # mim used the installed copy
    assert (tmp_path / 'wd' / 'epoch_1.pth').exists()


def test_mim_train_mmdet_with_our_config(tmp_path, shapes_workspace):
    cfg = osp.join(ROOT, 'configs', 'demo', 'retinanet_swin-nano-mona_fpn_1xb4-12e_shapes-voc.py')
    out = _run([MIM, 'train', 'mmdet', cfg, '--gpus', '0', '--work-dir', str(tmp_path / 'wd'),
                '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                'param_scheduler.0.end=2'], cwd=shapes_workspace, pythonpath=ROOT)
    assert re.search(r'pascal_voc/mAP', out), out[-3000:]
    assert (tmp_path / 'wd' / 'epoch_1.pth').exists()


def test_mim_search_lists_every_config(tmp_path, gen):
    _run([MIM, 'search', 'mona_mm', '--json', str(tmp_path / 'models.json')], cwd=tmp_path,
         pythonpath='')
    table = json.loads((tmp_path / 'models.json').read_text())
    configs = gen.find_configs(osp.join(ROOT, 'configs'))
    assert set(table['config'].values()) == set(configs)
    assert table['model']['swin-l-p4-w7-partial-1_1xb16-100e_flowers102-224'] == 'partial'
    assert table['model']['upernet_swin-l-p4-w7-norm-tuning_8xb2-160k_ade20k-512x512'] == \
        'normtuning'
    mimi = 'retinanet_swin-l-p4-w7-adapter-mimi_fpn_8xb2-4e_voc0712'
    assert table['model'][mimi] == 'mimi' and table['peft_method'][mimi] == 'adapter'
    assert table['paper'][mimi].startswith('Mini but Mighty')
    row = 'cascade-mask-rcnn_swin-b-p4-w7-mona_fpn_8xb2-3x_coco'
    assert (table['task'][row], table['training_data'][row], table['epochs'][row],
            table['batch_size'][row]) == ('instance segmentation', 'coco', 36, 16)
    assert not any(col == 'weight' or '/' in col for col in table)  # no weights, no results


def test_mim_search_by_collection(tmp_path):
    out = _run([MIM, 'search', 'mona_mm', '--model', 'mona', '--display-width', '200'],
               cwd=tmp_path, pythonpath='')
    assert 'config id: swin-nano-mona_1xb32-10e_shapes-cls' in out
    assert 'config id: upernet_vit-b16-mona_8xb2-160k_ade20k-512x512' in out
    assert 'config id: retinanet_swin-l-p4-w7-lora_fpn_8xb2-4e_voc0712' not in out
    assert '5%>100%: Breaking Performance Shackles of Full Fine-Tuning' in out


def test_mim_list_includes_mona_mm(tmp_path):
    out = _run([MIM, 'list'], cwd=tmp_path, pythonpath='')
    assert re.search(rf'^mona-mm\s+{re.escape(__version__)}\s', out, re.M), out


def test_model_index_is_up_to_date(gen):
    assert gen.main(['--check']) == 0, \
        'model-index.yml is out of date: run python tools/misc/gen_model_index.py'


def test_model_index_metadata_match_configs(gen):
    """What the generator reads from a name is what the config does (demo + one per codebase)."""
    configs = gen.find_configs(osp.join(ROOT, 'configs'))
    sample = [c for c in configs if c.startswith('configs/demo/')]
    sample += [next(c for c in configs if c.startswith(f'configs/{cb}/mimi/'))
               for cb in ('mmdet', 'mmseg', 'mmpretrain')]
    for rel in sample:
        meta = gen.describe_config(rel)['Metadata']
        cfg = Config.fromfile(osp.join(ROOT, rel))
        gpus = int(re.search(r'_(\d+)xb\d+-', rel)[1])
        train_cfg = cfg.get('train_cfg', {})
        hooks = [h['type'] for h in cfg.get('custom_hooks', [])]
        assert (cfg.default_scope, cfg.train_dataloader.batch_size * gpus,
                train_cfg.get('max_epochs'), train_cfg.get('max_iters'),
                cfg.model.backbone.peft.type, 'mona_mm.MiMiPruningHook' in hooks) == \
            (meta['Codebase'], meta['Batch Size'], meta.get('Epochs'),
             meta.get('Iterations'), meta['PEFT Method'], meta.get('Pruning') == 'MiMi'), rel


@pytest.mark.parametrize('rel, message', [
    ('configs/demo/swin-nano-mona_1xb32-10e_imagenet.py', 'unknown dataset'),
    ('configs/demo/solov2_swin-nano-mona_fpn_1xb4-4e_shapes.py', 'unknown algorithm'),
    ('configs/mmdet/lora/retinanet_swin-l-p4-w7-lorand_fpn_8xb2-4e_voc0712.py', 'in folder'),
    ('configs/mmdet/vpt/retinanet_swin-l-p4-w7-vpt_fpn_8xb2-4e_voc0712.py', 'unknown method'),
    ('configs/demo/swin-nano-mona_shapes-cls.py', 'expected'),
])
def test_model_index_refuses_unreadable_names(gen, rel, message):
    with pytest.raises(ValueError, match=message):
        gen.describe_config(rel)


def test_install_requires_admit_the_pinned_stack():
    """setup.py's ranges hold the pins of requirements/ and what `make env` installed."""
    pins = {}
    for name in ('runtime.txt', 'constraints.txt'):
        with open(osp.join(ROOT, 'requirements', name)) as f:
            for line in f:
                req = line.split('#')[0].strip()
                if '==' in req:
                    pkg, version = req.split('==')
                    pins[canonicalize_name(pkg)] = version
    requires = [Requirement(r) for r in metadata.requires('mona_mm')]
    assert {'mmcv', 'mmdet', 'mmsegmentation', 'mmpretrain', 'mmengine', 'torch'} <= \
        {canonicalize_name(r.name) for r in requires}
    for req in requires:
        installed = metadata.version(req.name)
        assert req.specifier.contains(installed, prereleases=True), (str(req), installed)
        pin = pins.get(canonicalize_name(req.name))
        assert pin is None or req.specifier.contains(pin, prereleases=True), (str(req), pin)
