"""Inference on every checkpoint kind: ``mona_mm.apis`` / ``tools/infer.py`` on a full, an
adapter-only (+ its pretrained backbone), a MiMi-pruned and a re-parameterised checkpoint give
the predictions of the model the checkpoint came from and write the upstream visualizers'
drawings; the upstream inferencers of mmdet, mmseg and mmpretrain take our full and deploy
checkpoints (mmpretrain's also the adapter-only and pruned ones) directly.

Each model trains one or two iterations in-process on the generated shapes; the reference
predictions are those of the trained model itself, through the same upstream inferencer.
"""
import copy
import functools
import os
import os.path as osp
import runpy
import shutil
import sys
from unittest import mock

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mona_mm.apis import inference_model, init_model
from mona_mm.models import MonaDeploy
from mona_mm.models.peft.base import iter_adapters
from mona_mm.pruning import get_structure
from mona_mm.utils import (HASH_KEY, build_model_from_cfg, load_checkpoint_file,
                           make_adapter_checkpoint, save_checkpoint_file)
from tests.conftest import PY, ROOT, run_tool

DEMO = osp.join(ROOT, 'configs', 'demo')
CLS = osp.join(DEMO, 'swin-nano-mona_1xb32-10e_shapes-cls.py')
MIMI = osp.join(DEMO, 'swin-nano-mona-mimi_1xb32-4e_shapes-cls.py')
PRETRAIN = osp.join(DEMO, 'swin-nano_1xb32-20e_shapes-cls.py')
DET = osp.join(DEMO, 'cascade-mask-rcnn_swin-nano-mona_fpn_1xb4-4e_shapes.py')
SEG = osp.join(DEMO, 'upernet_swin-nano-mona_1xb4-2k_shapes-ade-128x128.py')
INFER = osp.join(ROOT, 'tools', 'infer.py')
REPARAM = osp.join(ROOT, 'tools', 'model_converters', 'reparameterize.py')
# in-process data loading, no validation, a log line per iteration
FAST = {f'{loader}.{k}': v for loader in ('train_dataloader', 'val_dataloader',
                                          'test_dataloader')
        for k, v in (('num_workers', 0), ('persistent_workers', False))}
FAST.update({'default_hooks.logger.interval': 1, 'default_hooks.checkpoint.interval': 1})
CLS_IMAGES = ['data/shapes/cls/val/circle/circle_00000.jpg',
              'data/shapes/cls/val/star/star_00000.jpg']


@functools.lru_cache()
def _parsed(path: str) -> Config:
    return Config.fromfile(path)


def _config(path: str) -> Config:
    """The config, parsed once (mmdet's and mmseg's bases take seconds to resolve)."""
    return copy.deepcopy(_parsed(path))


@pytest.fixture(scope='module', autouse=True)
def in_workspace(shapes_workspace):
    """The demo configs read ``data/shapes`` relative to the working directory; one thread,
    as ``run_tool`` gives the tools (two threads on a shared 2-core machine thrash)."""
    old, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(shapes_workspace)
    torch.set_num_threads(1)
    yield shapes_workspace
    torch.set_num_threads(threads)
    os.chdir(old)


def _train(config: str, work_dir, options: dict):
    """Train in-process; return the trained model (eval mode, ``cfg`` set)."""
    cfg = _config(config)
    cfg.merge_from_dict(dict(FAST, **options))
    cfg.work_dir = str(work_dir)
    cfg.launcher = 'none'
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model.eval()
    model.cfg = runner.cfg
    return model


def _convert(config: str, checkpoint: str, out: str, *extra: str) -> None:
    """tools/model_converters/reparameterize.py, in this process."""
    with mock.patch.object(sys, 'argv', [REPARAM, config, checkpoint, out, *extra]):
        runpy.run_path(REPARAM, run_name='__main__')


def _adapter_only(model, source: str, out: str) -> str:
    """The trained part of ``model`` as export_adapters.py writes it (meta of ``source``)."""
    meta = {k: v for k, v in load_checkpoint_file(source)['meta'].items() if k != HASH_KEY}
    save_checkpoint_file(make_adapter_checkpoint(model, meta=meta), out)
    return out


def _predict(model, images):
    return inference_model(model, images)['predictions']


def _assert_same(preds, refs, atol: float = 0.0) -> None:
    """Same predictions: classification scores, detection boxes/scores/labels/masks,
    segmentation logits and label maps (exactly, or within ``atol``)."""
    assert len(preds) == len(refs) > 0
    close = dict(rtol=0, atol=atol)
    for pred, ref in zip(preds, refs):
        if 'pred_score' in ref:
            torch.testing.assert_close(pred.pred_score, ref.pred_score, **close)
        if 'pred_instances' in ref:
            p, r = pred.pred_instances, ref.pred_instances
            assert len(r) > 0 and len(p) == len(r)
            for key in ('bboxes', 'scores', 'labels'):
                torch.testing.assert_close(p[key], r[key], **close)
            assert (p.masks != r.masks).float().mean() <= (1e-3 if atol else 0)
        if 'seg_logits' in ref:
            torch.testing.assert_close(pred.seg_logits.data, ref.seg_logits.data, **close)
            assert torch.equal(pred.pred_sem_seg.data, ref.pred_sem_seg.data)


@pytest.fixture(scope='module')
def cls_runs(tmp_path_factory):
    """A pretrained classifier (the base), a Mona classifier tuned on it and a MiMi-pruned
    one, with their full, adapter-only and deploy checkpoints and reference predictions."""
    tmp = tmp_path_factory.mktemp('infer_cls')
    torch.manual_seed(0)
    pretrained = build_model_from_cfg(Config.fromfile(PRETRAIN), pretrained=False)
    base = str(tmp / 'pretrained.pth')
    torch.save({'state_dict': dict(pretrained.state_dict())}, base)
    options = {'model.backbone.init_cfg': dict(type='Pretrained', checkpoint=base),
               'train_dataloader.dataset.indices': 8, 'train_dataloader.batch_size': 8,
               'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 100,
               'param_scheduler.0.end': 2}
    runs = {}
    for name, config in (('mona', CLS), ('mimi', MIMI)):
        wd = tmp / name
        model = _train(config, wd, options)
        full = str(wd / 'epoch_1.pth')
        deploy = str(wd / 'deploy.pth')
        _convert(config, full, deploy)
        runs[name] = dict(config=config, model=model, full=full, deploy=deploy,
                          adapters=_adapter_only(model, full, str(wd / 'adapters.pth')),
                          ref=_predict(model, CLS_IMAGES))
    runs['base'] = base
    return runs


@pytest.fixture(scope='module')
def det_run(tmp_path_factory):
    """A Mona Cascade Mask R-CNN after one iteration: full and deploy checkpoints."""
    wd = tmp_path_factory.mktemp('infer_det')
    model = _train(DET, wd, {'model.backbone.init_cfg': None,
                             'train_dataloader.dataset.indices': 2,
                             'train_dataloader.batch_size': 2, 'train_cfg.max_epochs': 1,
                             'train_cfg.val_interval': 100})
    full, deploy = str(wd / 'epoch_1.pth'), str(wd / 'deploy.pth')
    _convert(DET, full, deploy)
    images = ['data/shapes/coco/val/val_00000.jpg', 'data/shapes/coco/val/val_00001.jpg']
    return dict(model=model, full=full, deploy=deploy, images=images,
                ref=_predict(model, images), wd=wd)


@pytest.fixture(scope='module')
def seg_run(tmp_path_factory):
    """A Mona UperNet after one iteration: full and deploy checkpoints."""
    wd = tmp_path_factory.mktemp('infer_seg')
    model = _train(SEG, wd, {'train_dataloader.batch_size': 2, 'train_cfg.max_iters': 1,
                             'train_cfg.val_interval': 100, 'param_scheduler.0.end': 1,
                             'param_scheduler.1.begin': 1, 'param_scheduler.1.end': 2})
    full, deploy = str(wd / 'iter_1.pth'), str(wd / 'deploy.pth')
    _convert(SEG, full, deploy)
    images = ['data/shapes/ade/images/validation/val_00000.jpg',
              'data/shapes/ade/images/validation/val_00001.jpg']
    return dict(model=model, full=full, deploy=deploy, images=images,
                ref=_predict(model, images), wd=wd)


def test_full_checkpoint(cls_runs, tmp_path):
    run = cls_runs['mona']
    model = init_model(run['config'], run['full'])
    assert model.checkpoint_kind == 'full'
    # CustomDataset's classes: the class folders, sorted
    assert list(model.dataset_meta['classes']) == sorted(os.listdir('data/shapes/cls/val'))
    # a folder and a file: every image once, drawn by mmpretrain's UniversalVisualizer
    out = inference_model(model, ['data/shapes/cls/val/circle', CLS_IMAGES[1]],
                          out_dir=str(tmp_path))
    circles = sorted(os.listdir('data/shapes/cls/val/circle'))
    assert len(out['predictions']) == len(circles) + 1
    _assert_same([out['predictions'][0], out['predictions'][-1]], run['ref'])
    expected = [str(tmp_path / 'vis' / (osp.splitext(n)[0] + '.png'))
                for n in circles + ['star_00000.jpg']]
    assert out['visualizations'] == sorted(expected)
    assert all(osp.getsize(p) > 1000 for p in expected)


def test_adapter_only_checkpoint_with_its_base(cls_runs, tmp_path):
    run = cls_runs['mona']
    model = init_model(_config(run['config']), run['adapters'])  # base: the one it records
    assert model.checkpoint_kind == 'adapter-only'
    out = inference_model(model, CLS_IMAGES, out_dir=str(tmp_path))
    _assert_same(out['predictions'], run['ref'])
    assert len(out['visualizations']) == 2
    # the base moved: an error saying how to pass it; then passed explicitly
    moved = str(tmp_path / 'moved.pth')
    shutil.move(cls_runs['base'], moved)
    try:
        with pytest.raises(FileNotFoundError, match='base-checkpoint'):
            init_model(_config(run['config']), run['adapters'])
        model = init_model(_config(run['config']), run['adapters'], base_checkpoint=moved)
        _assert_same(_predict(model, CLS_IMAGES), run['ref'])
    finally:
        shutil.move(moved, cls_runs['base'])


def test_mimi_pruned_checkpoints(cls_runs, tmp_path):
    run = cls_runs['mimi']
    widths = get_structure(run['model'])
    assert any(w < 64 for w in widths.values())  # the run pruned
    for ckpt, kind in ((run['full'], 'full, MiMi-pruned'),
                       (run['adapters'], 'adapter-only, MiMi-pruned')):
        model = init_model(_config(run['config']), ckpt)
        assert model.checkpoint_kind == kind
        assert get_structure(model) == widths
        out = inference_model(model, CLS_IMAGES, out_dir=str(tmp_path / kind))
        _assert_same(out['predictions'], run['ref'])
        assert len(out['visualizations']) == 2
    # the unpruned config takes it too: the widths come from the checkpoint
    model = init_model(_config(CLS), run['full'])
    assert get_structure(model) == widths
    _assert_same(_predict(model, CLS_IMAGES), run['ref'])


def test_deploy_checkpoints(cls_runs, tmp_path, capsys):
    # from an adapter-only checkpoint whose base moved: --base-checkpoint, and the output
    # holds the whole model (no adapter-only marker)
    mona = cls_runs['mona']
    moved = str(tmp_path / 'moved.pth')
    shutil.move(cls_runs['base'], moved)
    try:
        _convert(CLS, mona['adapters'], str(tmp_path / 'from_adapters.pth'),
                 '--base-checkpoint', moved)
    finally:
        shutil.move(moved, cls_runs['base'])
    assert 'folded 16 Mona' in capsys.readouterr().out
    meta = load_checkpoint_file(str(tmp_path / 'from_adapters.pth'))['meta']
    assert 'mona_mm' not in meta and meta['dataset_meta']['classes'][0] == 'circle'
    for run, ckpt, kind in ((mona, mona['deploy'], 'full, re-parameterised'),
                            (mona, str(tmp_path / 'from_adapters.pth'),
                             'full, re-parameterised'),
                            (cls_runs['mimi'], cls_runs['mimi']['deploy'],
                             'full, MiMi-pruned, re-parameterised')):
        model = init_model(_config(run['config']), ckpt)
        assert model.checkpoint_kind == kind
        assert any(isinstance(a, MonaDeploy) for _, a in iter_adapters(model))
        out = inference_model(model, CLS_IMAGES, out_dir=str(tmp_path / 'vis'))
        _assert_same(out['predictions'], run['ref'], atol=1e-5)


def test_infer_tool(cls_runs, tmp_path):
    """The command line on an adapter-only checkpoint with --base-checkpoint."""
    run = cls_runs['mimi']
    out = run_tool([PY, INFER, 'data/shapes/cls/val/star', CLS_IMAGES[0], MIMI, run['adapters'],
                    '--base-checkpoint', run['full'], '--out-dir', str(tmp_path),
                    '--device', 'cpu'], cwd=os.getcwd())
    assert 'adapter-only, MiMi-pruned checkpoint, 3 image(s)' in out
    assert 'wrote 3 visualisation(s)' in out
    for name in ('star_00000', 'star_00001', 'circle_00000'):
        assert osp.getsize(tmp_path / 'vis' / f'{name}.png') > 1000
        assert f'{name}.png' in out


def test_upstream_image_classification_inferencer(cls_runs):
    from mmpretrain.apis import ImageClassificationInferencer

    def upstream(run, ckpt):
        # mmpretrain builds its pipeline in the current scope: another codebase's after
        # the detection or segmentation tests of this process
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            inferencer = ImageClassificationInferencer(_config(run['config']), pretrained=ckpt)
            return inferencer(CLS_IMAGES, return_datasamples=True)

    mona, mimi = cls_runs['mona'], cls_runs['mimi']
    for run, ckpt, atol in ((mona, mona['full'], 0), (mona, mona['deploy'], 1e-5),
                            (mona, mona['adapters'], 0),  # the base it records
                            (mimi, mimi['full'], 0), (mimi, mimi['deploy'], 1e-5)):
        _assert_same(upstream(run, ckpt), run['ref'], atol)


def test_upstream_det_inferencer(det_run, tmp_path):
    from mmdet.apis import DetInferencer
    # the config given, or (None) the one the checkpoint carries
    for config, ckpt, atol in ((DET, det_run['full'], 0), (DET, det_run['deploy'], 1e-4),
                               (None, det_run['deploy'], 1e-4)):
        inferencer = DetInferencer(model=config and _config(config), weights=ckpt,
                                   device='cpu', show_progress=False)
        preds = inferencer(det_run['images'], return_datasamples=True)['predictions']
        _assert_same(preds, det_run['ref'], atol)
    # a checkpoint with no meta (no config, no class names): the converter records both, so
    # the deploy checkpoint alone is enough for DetInferencer
    bare = str(tmp_path / 'bare.pth')
    torch.save({'state_dict': load_checkpoint_file(det_run['full'])['state_dict']}, bare)
    _convert(DET, bare, str(tmp_path / 'bare_deploy.pth'))
    inferencer = DetInferencer(model=None, weights=str(tmp_path / 'bare_deploy.pth'),
                               device='cpu', show_progress=False)
    assert inferencer.model.dataset_meta['classes'] == det_run['model'].cfg.metainfo['classes']
    preds = inferencer(det_run['images'], return_datasamples=True)['predictions']
    _assert_same(preds, det_run['ref'], 1e-4)
    model = init_model(_config(DET), det_run['deploy'])
    out = inference_model(model, det_run['images'], out_dir=str(tmp_path), pred_score_thr=0.1)
    _assert_same(out['predictions'], det_run['ref'], 1e-4)
    assert out['visualizations'] == [str(tmp_path / 'vis' / f'val_0000{i}.jpg')
                                     for i in range(2)]


def test_upstream_seg_inferencer(seg_run, tmp_path):
    from mmseg.apis import MMSegInferencer
    for config, ckpt, atol in ((SEG, seg_run['full'], 0), (SEG, seg_run['deploy'], 1e-4),
                               (None, seg_run['deploy'], 1e-4)):
        inferencer = MMSegInferencer(model=config and _config(config), weights=ckpt,
                                     device='cpu')
        preds = inferencer(seg_run['images'], return_datasamples=True)
        _assert_same(preds, seg_run['ref'], atol)
    model = init_model(_config(SEG), seg_run['deploy'])
    out = inference_model(model, seg_run['images'], out_dir=str(tmp_path))
    _assert_same(out['predictions'], seg_run['ref'], 1e-4)
    assert out['visualizations'] == [str(tmp_path / 'vis' / f'val_0000{i}.jpg')
                                     for i in range(2)]
