"""tools/train.py and tools/test.py stop before the runner is built, with one clear message,
on mixed precision without a GPU, on an annotation file without images, on --auto-scale-lr or
--tta without the config fields they need and on --launcher slurm outside srun; --show and
--show-dir set what each codebase's own tools/test.py sets."""
import importlib.util
import json
import os
import os.path as osp
import re
import subprocess

import pytest
import torch

from tests.conftest import PY, ROOT

CFG = osp.join(ROOT, 'configs', 'demo')
CLS_CFG = osp.join(CFG, 'swin-nano-mona_1xb32-10e_shapes-cls.py')
COCO_CFG = osp.join(CFG, 'cascade-mask-rcnn_swin-nano-mona_fpn_1xb4-4e_shapes.py')
# a paper config whose optim_wrapper is an AmpOptimWrapper
PAPER_AMP_CFG = osp.join(ROOT, 'configs', 'mmdet', 'mona',
                         'cascade-mask-rcnn_swin-b-p4-w7-mona_fpn_8xb2-3x_coco.py')
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only case')


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'_mona_tools_{name}',
                                                  osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(monkeypatch, name, argv):
    monkeypatch.setattr('sys.argv', [f'{name}.py', *argv])
    monkeypatch.setenv('LOCAL_RANK', '0')  # what parse_args would set for good
    _tool(name).main()


# ------------------------------------------------------------------ AMP without a GPU
@no_gpu
def test_amp_flag_on_cpu_stops_before_the_runner(shapes_workspace, tmp_path):
    work_dir = tmp_path / 'wd'
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    proc = subprocess.run([PY, osp.join(ROOT, 'tools', 'train.py'), CLS_CFG, '--amp',
                           '--work-dir', str(work_dir)], cwd=shapes_workspace, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    assert proc.returncode != 0
    assert ("RuntimeError: --amp needs a CUDA GPU and none is available (mmengine's "
            "AmpOptimWrapper refuses the CPU, with dtype='bfloat16' too); on the CPU drop "
            '--amp to train in float32.') in proc.stdout, proc.stdout[-3000:]
    assert not work_dir.exists()  # the runner (which creates it) was never built


@no_gpu
def test_amp_config_on_cpu_stops_before_the_runner(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError) as err:
        _main(monkeypatch, 'train', [PAPER_AMP_CFG, '--work-dir', str(tmp_path / 'wd')])
    assert str(err.value) == (
        f"{PAPER_AMP_CFG} sets optim_wrapper.type='AmpOptimWrapper' (mixed precision), which "
        "needs a CUDA GPU and none is available (mmengine's AmpOptimWrapper refuses the CPU, "
        "with dtype='bfloat16' too); to train in float32 on the CPU add --cfg-options "
        'optim_wrapper.type=OptimWrapper.')
    assert not (tmp_path / 'wd').exists()
    # with --amp too, the message names both fixes
    with pytest.raises(RuntimeError, match=r'drop --amp to train in float32, and since the '
                       'config itself uses AmpOptimWrapper add --cfg-options '
                       r'optim_wrapper.type=OptimWrapper\.$'):
        _main(monkeypatch, 'train', [PAPER_AMP_CFG, '--amp'])
    # the suggested override passes the check (the runner is then built as usual)
    from mmengine.config import Config
    cfg = Config.fromfile(PAPER_AMP_CFG)
    cfg.merge_from_dict({'optim_wrapper.type': 'OptimWrapper'})
    assert _tool('train').check_amp_device(cfg, amp=False) is None
    # a loss_scale in the config must go as well (OptimWrapper does not take it)
    with pytest.raises(RuntimeError, match=r"remove optim_wrapper's loss_scale from the "
                       r'config\.$'):
        _main(monkeypatch, 'train', [CLS_CFG, '--cfg-options',
                                     'optim_wrapper.type=AmpOptimWrapper',
                                     'optim_wrapper.loss_scale=dynamic'])


@no_gpu
def test_mmengine_amp_wrapper_refuses_the_cpu_even_in_bfloat16():
    """What the message claims: there is no CPU (bf16) fallback in mmengine's wrapper."""
    from mmengine.optim import AmpOptimWrapper
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(AssertionError, match='only available training on gpu'):
        AmpOptimWrapper(optimizer=opt, dtype='bfloat16')


# ------------------------------------------------------------------ empty annotation files
def _empty_coco(shapes_workspace, path):
    with open(shapes_workspace / 'data' / 'shapes' / 'coco' / 'annotations' /
              'instances_train.json') as f:
        coco = json.load(f)
    coco.update(images=[], annotations=[])
    path.write_text(json.dumps(coco))
    return str(path)


def test_train_on_coco_file_without_images(shapes_workspace, monkeypatch, tmp_path):
    empty = _empty_coco(shapes_workspace, tmp_path / 'empty.json')
    monkeypatch.chdir(shapes_workspace)
    with pytest.raises(ValueError) as err:
        _main(monkeypatch, 'train', [COCO_CFG, '--work-dir', str(tmp_path / 'wd'),
                                     '--cfg-options', 'model.backbone.init_cfg=None',
                                     f'train_dataloader.dataset.ann_file={empty}'])
    assert str(err.value) == (
        f'train_dataloader.dataset.ann_file {empty} has no images (its `images` list is '
        'empty): point ann_file (and data_root) at a usable annotation file, e.g. with '
        '--cfg-options train_dataloader.dataset.ann_file=<file>.')
    assert not (tmp_path / 'wd').exists()


def test_test_on_coco_file_without_images(shapes_workspace, monkeypatch, tmp_path):
    empty = _empty_coco(shapes_workspace, tmp_path / 'empty.json')
    checkpoint = tmp_path / 'model.pth'
    torch.save(dict(state_dict={}), checkpoint)
    monkeypatch.chdir(shapes_workspace)
    with pytest.raises(ValueError, match=r'^test_dataloader\.dataset\.ann_file '
                       + re.escape(empty) + ' has no images'):
        _main(monkeypatch, 'test', [COCO_CFG, str(checkpoint), '--work-dir',
                                    str(tmp_path / 'wd'), '--cfg-options',
                                    'model.backbone.init_cfg=None',
                                    f'test_dataloader.dataset.ann_file={empty}'])


def test_annotation_check_walks_wrappers_and_formats(tmp_path):
    from mona_mm.datasets.checks import check_dataset_annotations
    coco = tmp_path / 'coco.json'
    coco.write_text(json.dumps(dict(images=[], annotations=[], categories=[])))
    ids = tmp_path / 'ids.txt'
    ids.write_text('\n \n')
    data_list = tmp_path / 'list.json'
    data_list.write_text(json.dumps(dict(metainfo={}, data_list=[])))
    good = tmp_path / 'good.json'
    good.write_text(json.dumps(dict(images=[dict(id=1)], annotations=[],
                                    categories=[dict(id=1, name='a')])))
    cfg = dict(
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=dict(
            type='CocoDataset', data_root=str(tmp_path), ann_file='coco.json'))),
        val_dataloader=dict(dataset=dict(type='ConcatDataset', datasets=[
            dict(ann_file=str(good)), dict(data_root=str(tmp_path), ann_file='ids.txt')])),
        test_dataloader=dict(dataset=dict(ann_file=str(data_list))))
    with pytest.raises(ValueError, match=r'^train_dataloader.dataset.dataset.ann_file \S+'
                       r'coco.json has no images .*; val_dataloader.dataset.datasets.1.ann_file'
                       r' \S+ids.txt has no images \(it lists no image ids\): .*--cfg-options '
                       r'train_dataloader.dataset.dataset.ann_file=<file>\.$'):
        check_dataset_annotations(cfg, ('train_dataloader', 'val_dataloader'))
    with pytest.raises(ValueError, match=r'list.json has no samples \(its `data_list` is '
                       r'empty\)'):
        check_dataset_annotations(cfg, ('test_dataloader', ))
    # files with images, missing files, remote paths and absent loaders pass
    check_dataset_annotations(dict(
        train_dataloader=dict(dataset=dict(ann_file=str(good))),
        val_dataloader=dict(dataset=dict(ann_file=str(tmp_path / 'missing.json'))),
        test_dataloader=None), ('train_dataloader', 'val_dataloader', 'test_dataloader',
                                'no_such_loader'))


# ------------------------------------------------------------------ --auto-scale-lr
def test_auto_scale_lr_needs_a_base_batch_size(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError) as err:
        _main(monkeypatch, 'train', [CLS_CFG, '--auto-scale-lr', '--work-dir',
                                     str(tmp_path / 'wd')])
    assert str(err.value) == (
        '--auto-scale-lr needs auto_scale_lr.base_batch_size (the total batch size the '
        f"config's learning rate was set for) and {CLS_CFG} has no auto_scale_lr; add "
        'auto_scale_lr = dict(base_batch_size=N) to the config or --cfg-options '
        'auto_scale_lr.base_batch_size=N.')
    assert not (tmp_path / 'wd').exists()  # stopped before the runner
    from mmengine.config import Config
    cfg = Config.fromfile(CLS_CFG)
    cfg.auto_scale_lr = dict(enable=False)
    with pytest.raises(RuntimeError, match=r"has auto_scale_lr=\{'enable': False\}; add"):
        _tool('train').enable_auto_scale_lr(cfg)
    # mmdet's configs carry one (enable=False): the flag switches it on
    cfg = Config.fromfile(COCO_CFG)
    _tool('train').enable_auto_scale_lr(cfg, COCO_CFG)
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=4)


# ------------------------------------------------------------------ --show, --show-dir, --tta
SEG_CFG = osp.join(CFG, 'upernet_swin-nano-mona_1xb4-2k_shapes-ade-128x128.py')


def test_show_switches_on_the_visualization_hook_of_each_codebase():
    """What each codebase's own tools/test.py sets, chosen by the config's default_scope."""
    from mmengine.config import Config
    trigger = _tool('test').trigger_visualization_hook
    det = Config.fromfile(COCO_CFG)
    trigger(det, show=True, show_dir='painted', wait_time=0.5)
    assert det.default_hooks.visualization == dict(
        type='DetVisualizationHook', _scope_='mmdet', draw=True, show=True, wait_time=0.5,
        test_out_dir='painted')
    seg = Config.fromfile(SEG_CFG)
    trigger(seg, show=False, show_dir='painted')
    assert seg.default_hooks.visualization == dict(type='SegVisualizationHook',
                                                   _scope_='mmseg', draw=True)
    assert seg.visualizer.save_dir == 'painted'
    trigger(seg, show=False, show_dir='painted', interval=1)
    assert seg.default_hooks.visualization.interval == 1
    cls = Config.fromfile(CLS_CFG)
    trigger(cls, show=False, show_dir='painted')
    assert cls.default_hooks.visualization == dict(
        type='VisualizationHook', _scope_='mmpretrain', enable=True, show=False, wait_time=2,
        out_dir='painted', interval=1)
    cls.default_hooks.pop('visualization')
    with pytest.raises(RuntimeError, match=r"default_hooks have none; add default_hooks = "
                       r"dict\(visualization=dict\(type='VisualizationHook'\)\)\.$"):
        trigger(cls, show=True, show_dir=None)
    cls.default_scope = 'mmengine'
    with pytest.raises(RuntimeError, match=r"default_scope is 'mmengine'; set default_scope"):
        trigger(cls, show=True, show_dir=None)


def test_tta_needs_the_configs_tta_model_and_pipeline(monkeypatch, tmp_path):
    checkpoint = tmp_path / 'model.pth'
    torch.save(dict(state_dict={}), checkpoint)
    monkeypatch.chdir(tmp_path)
    # mmseg's default_runtime gives a tta_model; the demo's dataset has no tta_pipeline
    with pytest.raises(RuntimeError, match=r'^--tta needs tta_model and tta_pipeline in the '
                       'config and ' + re.escape(SEG_CFG) + ' has no tta_pipeline; add them'):
        _main(monkeypatch, 'test', [SEG_CFG, str(checkpoint), '--tta', '--work-dir',
                                    str(tmp_path / 'wd')])
    assert not (tmp_path / 'wd').exists()
    from mmengine.config import Config
    cfg = Config.fromfile(CLS_CFG)
    with pytest.raises(RuntimeError, match='has no tta_model and no tta_pipeline'):
        _tool('test').use_tta(cfg)
    cfg.tta_model = dict(type='AverageClsScoreTTA')
    cfg.tta_pipeline = [dict(type='LoadImageFromFile')]
    model = cfg.model
    _tool('test').use_tta(cfg)
    assert cfg.model == dict(type='AverageClsScoreTTA', module=model)
    assert cfg.test_dataloader.dataset.pipeline == [dict(type='LoadImageFromFile')]


# ------------------------------------------------------------------ --launcher slurm
@no_gpu
def test_slurm_launcher_without_srun_says_how_to_start(monkeypatch):
    from mmengine.config import Config

    from mona_mm.utils import prepare_cpu_distributed
    for var in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match=r'^--launcher slurm needs the SLURM_PROCID, '
                       'SLURM_NTASKS, SLURM_NODELIST that srun sets; start the job with '
                       r'tools/slurm_train.sh or tools/slurm_test.sh\.$'):
        prepare_cpu_distributed(Config(dict(launcher='slurm')))
    # other launchers are mmengine's business
    assert not prepare_cpu_distributed(Config(dict(launcher='mpi')))
    assert not prepare_cpu_distributed(Config(dict(launcher='none')))
