"""Few-iteration train + test through tools/train.py and tools/test.py on generated data,
for each codebase, with the Mona Swin; resume; and a 2-process (gloo) distributed run."""
import os
import os.path as osp
import re


from tests.conftest import PY, ROOT, run_tool

TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')
CFG = osp.join(ROOT, 'configs', 'demo')
SMALL = ['train_dataloader.batch_size=4', 'val_dataloader.batch_size=2',
         'test_dataloader.batch_size=2', 'default_hooks.logger.interval=1']


def _train(cfg, ws, work_dir, extra=(), resume=False):
    args = [PY, TRAIN, cfg, '--work-dir', str(work_dir)]
    if resume:
        args.append('--resume')
    return run_tool(args + ['--cfg-options', *SMALL, *extra], cwd=ws)


def test_cascade_mask_rcnn_coco_train_resume_test(shapes_workspace):
    cfg = osp.join(CFG, 'cascade-mask-rcnn_swin-nano-mona_fpn_1xb4-4e_shapes.py')
    wd = shapes_workspace / 'work_dirs' / 'cascade'
    common = ['model.backbone.init_cfg=None', 'default_hooks.checkpoint.interval=1',
              'param_scheduler.0.end=2']
    out = _train(cfg, shapes_workspace, wd, common + ['train_cfg.max_epochs=1',
                                                     'train_cfg.val_interval=1'])
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out
    assert (wd / 'epoch_1.pth').exists()
    # --resume continues from the last checkpoint in the work dir
    out = _train(cfg, shapes_workspace, wd, common + ['train_cfg.max_epochs=2',
                                                     'train_cfg.val_interval=5'], resume=True)
    assert re.search(r'resumed epoch: 1, iter: 2', out), out[-3000:]
    assert re.search(r'Epoch\(train\)\s+\[2\]\[2/2\]', out)
    assert not re.search(r'Epoch\(train\)\s+\[1\]', out)  # epoch 1 is not redone
    assert (wd / 'epoch_2.pth').exists()
    out = run_tool([PY, TEST, cfg, str(wd / 'epoch_2.pth'), '--work-dir', str(wd / 'test'),
                    '--cfg-options', 'model.backbone.init_cfg=None', *SMALL[1:]],
                   cwd=shapes_workspace)
    assert re.search(r'Epoch\(test\)\s+\[2/2\]', out)
    # after 4 iterations the detector may still predict nothing: mmdet then says so
    assert re.search(r'coco/bbox_mAP: [0-9.]+|testing results of the whole dataset is empty',
                     out)


def test_retinanet_voc_train_test(shapes_workspace):
    cfg = osp.join(CFG, 'retinanet_swin-nano-mona_fpn_1xb4-12e_shapes-voc.py')
    wd = shapes_workspace / 'work_dirs' / 'retina'
    out = _train(cfg, shapes_workspace, wd, ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                                            'param_scheduler.0.end=2'])
    assert re.search(r'pascal_voc/mAP: [0-9.]+', out), out[-3000:]
    assert 'loss_cls' in out


def test_upernet_ade_train_test(shapes_workspace):
    cfg = osp.join(CFG, 'upernet_swin-nano-mona_1xb4-2k_shapes-ade-128x128.py')
    wd = shapes_workspace / 'work_dirs' / 'upernet'
    out = _train(cfg, shapes_workspace, wd, ['train_cfg.max_iters=3', 'train_cfg.val_interval=3',
                                            'param_scheduler.0.end=2',
                                            'param_scheduler.1.begin=2',
                                            'param_scheduler.1.end=3'])
    assert re.search(r'mIoU: [0-9.]+', out), out[-3000:]
    assert (wd / 'iter_3.pth').exists()
    out = run_tool([PY, TEST, cfg, str(wd / 'iter_3.pth'), '--work-dir', str(wd / 'test')],
                   cwd=shapes_workspace)
    assert 'mIoU' in out


def test_image_classifier_train_test(shapes_workspace):
    cfg = osp.join(CFG, 'swin-nano-mona_1xb32-10e_shapes-cls.py')
    wd = shapes_workspace / 'work_dirs' / 'cls'
    out = _train(cfg, shapes_workspace, wd, ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                                            'param_scheduler.0.end=2'])
    assert re.search(r'accuracy/top1: [0-9.]+', out), out[-3000:]
    assert (wd / 'epoch_1.pth').exists()


def test_distributed_two_cpu_processes(shapes_workspace):
    cfg = osp.join(CFG, 'swin-nano-mona_1xb32-10e_shapes-cls.py')
    wd = shapes_workspace / 'work_dirs' / 'dist'
    env = dict(PATH=osp.dirname(PY) + os.pathsep + os.environ['PATH'], PORT='29517')
    out = run_tool(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), cfg, '2', '--work-dir',
                    str(wd), '--cfg-options', 'train_cfg.max_epochs=1',
                    'train_cfg.val_interval=1', 'param_scheduler.0.end=2',
                    'train_dataloader.batch_size=4', 'default_hooks.logger.interval=1'],
                   cwd=shapes_workspace, env=env)
    assert 'Distributed training: True' in out
    # 32 images / (2 ranks x 4) = 4 iterations per epoch (one process would need 8)
    assert re.search(r'Epoch\(train\)\s+\[1\]\[4/4\]', out), out[-3000:]
    assert (wd / 'epoch_1.pth').exists()
