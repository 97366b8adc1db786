"""Few-iteration train + test through tools/train.py and tools/test.py on generated data,
for each codebase, with the Mona Swin; resume; --auto-scale-lr; --show-dir and --tta; and
2-process (gloo) distributed runs through torchrun and through srun (slurm_*.sh)."""
import os
import os.path as osp
import pickle
import re

import torch

from tests.conftest import PY, ROOT, run_tool

TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')
CFG = osp.join(ROOT, 'configs', 'demo')
SMALL = ['train_dataloader.batch_size=4', 'val_dataloader.batch_size=2',
         'test_dataloader.batch_size=2', 'default_hooks.logger.interval=1']


def _train(cfg, ws, work_dir, extra=(), resume=False, extra_args=()):
    args = [PY, TRAIN, cfg, '--work-dir', str(work_dir), *extra_args]
    if resume:
        args.append('--resume')
    return run_tool(args + ['--cfg-options', *SMALL, *extra], cwd=ws)



#: One short epoch of the shapes classifier with 4 images per rank.
ONE_SHORT_EPOCH = ('--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                   'param_scheduler.0.end=2', 'train_dataloader.batch_size=4',
                   'default_hooks.logger.interval=1')


def _check_two_rank_epoch(out: str, wd) -> None:
    assert 'Distributed training: True' in out
    # 32 images / (2 ranks x 4) = 4 iterations per epoch (one process would need 8)
    assert re.search(r'Epoch\(train\)\s+\[1\]\[4/4\]', out), out[-3000:]
    assert (wd / 'epoch_1.pth').exists()


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
                    '--show-dir', 'painted', '--cfg-options', 'model.backbone.init_cfg=None',
                    *SMALL[1:]], cwd=shapes_workspace)
    assert re.search(r'Epoch\(test\)\s+\[2/2\]', out)
    # mmdet's hook paints every test image under WORK_DIR/TIMESTAMP/<show-dir>
    assert len(list((wd / 'test').glob('*/painted/*.jpg'))) == 4
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
    out = run_tool([PY, TEST, cfg, str(wd / 'iter_3.pth'), '--work-dir', str(wd / 'test'),
                    '--show-dir', str(wd / 'painted'), '--interval', '1'], cwd=shapes_workspace)
    assert 'mIoU' in out
    # mmseg's visualizer writes through its LocalVisBackend, one image per test batch
    assert len(list((wd / 'painted' / 'vis_data' / 'vis_image').glob('*.png'))) == 4


def _scores(path):
    with open(path, 'rb') as f:
        return torch.stack([sample['pred_score'] for sample in pickle.load(f)])


def test_image_classifier_train_test(shapes_workspace):
    cfg = osp.join(CFG, 'swin-nano-mona_1xb32-10e_shapes-cls.py')
    wd = shapes_workspace / 'work_dirs' / 'cls'
    out = _train(cfg, shapes_workspace, wd, ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                                            'param_scheduler.0.end=2',
                                            'auto_scale_lr.base_batch_size=16'],
                 extra_args=['--auto-scale-lr'])
    assert re.search(r'accuracy/top1: [0-9.]+', out), out[-3000:]
    assert (wd / 'epoch_1.pth').exists()
    # --auto-scale-lr: batch 4 on one process against the config's 16
    assert 'LR is set based on batch size of 16 and the current batch size is 4. Scaling ' \
        'the original LR by 0.25.' in out
    assert re.search(r'base_lr: 2\.0000e-03 lr: 5\.0000e-04', out)
    # --show-dir: mmpretrain's hook paints every sample (--interval 1, as its test.py)
    out = run_tool([PY, TEST, cfg, str(wd / 'epoch_1.pth'), '--work-dir', str(wd / 'test'),
                    '--show-dir', str(wd / 'painted'), '--out', str(wd / 'plain.pkl')],
                   cwd=shapes_workspace)
    assert re.search(r'accuracy/top1: [0-9.]+', out)
    assert len(list((wd / 'painted').glob('*.png'))) == 8
    # --tta: the config's tta_model around the model, its tta_pipeline on the test set
    tta_cfg = wd / 'tta.py'
    tta_cfg.write_text(
        f'_base_ = {cfg!r}\n'
        "tta_model = dict(type='AverageClsScoreTTA')\n"
        "tta_pipeline = [dict(type='LoadImageFromFile'), dict(type='TestTimeAug', transforms=["
        "[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)], "
        "[dict(type='PackInputs')]])]\n")
    out = run_tool([PY, TEST, str(tta_cfg), str(wd / 'epoch_1.pth'), '--tta', '--work-dir',
                    str(wd / 'test_tta'), '--out', str(wd / 'tta.pkl')], cwd=shapes_workspace)
    assert re.search(r'accuracy/top1: [0-9.]+', out)
    plain, tta = _scores(wd / 'plain.pkl'), _scores(wd / 'tta.pkl')
    assert plain.shape == tta.shape and not torch.allclose(plain, tta)  # flips averaged in


def test_distributed_two_cpu_processes(shapes_workspace):
    cfg = osp.join(CFG, 'swin-nano-mona_1xb32-10e_shapes-cls.py')
    wd = shapes_workspace / 'work_dirs' / 'dist'
    env = dict(PATH=osp.dirname(PY) + os.pathsep + os.environ['PATH'], PORT='29517')
    out = run_tool(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), cfg, '2', '--work-dir',
                    str(wd), *ONE_SHORT_EPOCH], cwd=shapes_workspace, env=env)
    _check_two_rank_epoch(out, wd)


# srun stand-in: record the command line, run --ntasks copies of the command with the
# variables srun sets for each task
FAKE_SRUN = r'''#!/usr/bin/env bash
echo "srun $*" >> "$FAKE_SRUN_LOG"
ntasks=1
while [[ $# -gt 0 ]]; do
    case $1 in
        -p) shift 2 ;;
        --ntasks=*) ntasks=${1#--ntasks=}; shift ;;
        -*) shift ;;
        *) break ;;
    esac
done
pids=()
for ((i = 0; i < ntasks; i++)); do
    SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$ntasks SLURM_NODELIST=node-[1] "$@" &
    pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
exit $rc
'''


def test_slurm_scripts_two_cpu_processes(shapes_workspace, tmp_path):
    """tools/slurm_train.sh and slurm_test.sh under an srun stand-in: the srun options of
    mmdet's scripts, and --launcher slurm on the CPU (gloo, master from scontrol)."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text(FAKE_SRUN)
    (bin_dir / 'scontrol').write_text('#!/usr/bin/env bash\necho localhost\n')
    for tool in ('srun', 'scontrol'):
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / 'srun.log'
    env = dict(PATH=os.pathsep.join([str(bin_dir), osp.dirname(PY), os.environ['PATH']]),
               GPUS='2', CPUS_PER_TASK='1', MASTER_PORT='29523', FAKE_SRUN_LOG=str(log))
    cfg = osp.join(CFG, 'swin-nano-mona_1xb32-10e_shapes-cls.py')
    wd = shapes_workspace / 'work_dirs' / 'slurm'
    out = run_tool(['bash', osp.join(ROOT, 'tools', 'slurm_train.sh'), 'debug', 'mona', cfg,
                    str(wd), *ONE_SHORT_EPOCH], cwd=shapes_workspace, env=env)
    _check_two_rank_epoch(out, wd)
    out = run_tool(['bash', osp.join(ROOT, 'tools', 'slurm_test.sh'), 'debug', 'mona', cfg,
                    str(wd / 'epoch_1.pth'), '--work-dir', str(wd / 'test')],
                   cwd=shapes_workspace, env=env)
    assert 'Distributed training: True' in out and re.search(r'accuracy/top1: [0-9.]+', out)
    train, test = log.read_text().splitlines()
    options = ('srun -p debug --job-name=mona --gres=gpu:2 --ntasks=2 --ntasks-per-node=2 '
               '--cpus-per-task=1 --kill-on-bad-exit=1 python -u ')
    assert train.startswith(options + osp.join(ROOT, 'tools', 'train.py') +
                            f' {cfg} --work-dir={wd} --launcher=slurm --cfg-options ')
    assert test == options + osp.join(ROOT, 'tools', 'test.py') + \
        f' {cfg} {wd / "epoch_1.pth"} --launcher=slurm --work-dir {wd / "test"}'
