"""The mona_mm demo: the whole parameter-efficient fine-tuning workflow on CPU.

1. generate the synthetic shapes dataset (COCO/VOC/ADE/classification formats);
2. pretrain a small Swin on the shapes classification set (full training, mmpretrain);
3. Mona-tune a Cascade Mask R-CNN whose Swin starts from that checkpoint and stays frozen
   (only the Mona adapters train inside it; neck and heads train fully);
4. evaluate COCO bbox/segm mAP on the val split and print the table.

Usage: python tools/demo.py [--work-dir work_dirs/demo] [--data-root data/shapes]
"""
import argparse
import os.path as osp
import sys
import time

from mmengine.config import Config
from mmengine.runner import Runner

import mona_mm  # noqa: F401
from mona_mm.datasets import generate_shapes
from mona_mm.utils import count_trainable

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PRETRAIN_CFG = osp.join(ROOT, 'configs/demo/swin-nano_1xb32-20e_shapes-cls.py')
DET_CFG = osp.join(ROOT, 'configs/demo/cascade-mask-rcnn_swin-nano-mona_fpn_1xb4-4e_shapes.py')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='The mona_mm demo on the CPU: generate the shapes dataset, pretrain a '
        'small Swin on it, Mona-tune a Cascade Mask R-CNN with that backbone frozen and print '
        'its COCO mAP.')
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='Directory for the logs and checkpoints of both runs '
                        '(default: %(default)s).')
    parser.add_argument('--data-root', default='data/shapes',
                        help='Where the shapes dataset is, or is generated when missing '
                        '(default: %(default)s).')
    parser.add_argument('--pretrain-epochs', type=int, default=None,
                        help='Override the pretraining epochs of the config.')
    parser.add_argument('--det-epochs', type=int, default=None,
                        help='Override the detection fine-tuning epochs of the config.')
    parser.add_argument('--seed', type=int, default=0,
                        help='Random seed of both runs: data order, init and augmentation '
                        '(default: %(default)s, the seed of the README table).')
    return parser.parse_args()


def _set_data_root(cfg: Config, old: str, new: str) -> None:
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds = cfg[key]['dataset']
        ds['data_root'] = ds['data_root'].replace(old, new)
    for key in ('val_evaluator', 'test_evaluator'):
        ev = cfg.get(key)
        if isinstance(ev, dict) and 'ann_file' in ev:
            ev['ann_file'] = ev['ann_file'].replace(old, new)


def main() -> None:
    args = parse_args()
    t_start = time.time()
    data_root = args.data_root.rstrip('/')
    stamp = osp.join(data_root, 'README.txt')
    if not osp.exists(stamp):
        print(f'[demo] generating shapes dataset in {data_root}', flush=True)
        generate_shapes(data_root)
    else:
        print(f'[demo] reusing shapes dataset in {data_root}', flush=True)

    # 1) full pretraining of the small Swin (classification)
    cfg = Config.fromfile(PRETRAIN_CFG)
    _set_data_root(cfg, 'data/shapes', data_root)
    if args.pretrain_epochs:
        cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = args.pretrain_epochs
        cfg.param_scheduler[1].update(T_max=args.pretrain_epochs, end=args.pretrain_epochs)
    cfg.randomness = dict(seed=args.seed)
    cfg.work_dir = osp.join(args.work_dir, 'pretrain')
    print('[demo] step 1/2: pretraining Swin-nano on shapes classification', flush=True)
    t0 = time.time()
    runner = Runner.from_cfg(cfg)
    runner.train()
    cls_metrics = {'accuracy/top1': runner.message_hub.get_scalar('val/accuracy/top1').current()}
    pretrain_ckpt = osp.join(cfg.work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth')
    t_pretrain = time.time() - t0

    # 2) Mona fine-tuning of Cascade Mask R-CNN with the frozen pretrained backbone
    cfg = Config.fromfile(DET_CFG)
    _set_data_root(cfg, 'data/shapes', data_root)
    cfg.model.backbone.init_cfg.checkpoint = pretrain_ckpt
    if args.det_epochs:
        cfg.train_cfg.max_epochs = args.det_epochs
        cfg.param_scheduler[1].update(
            end=args.det_epochs,
            milestones=[max(1, int(args.det_epochs * 0.75)), max(1, args.det_epochs - 1)])
    # evaluated once, after the last epoch (the train loop always validates at the end)
    cfg.train_cfg.val_interval = cfg.train_cfg.max_epochs
    cfg.randomness = dict(seed=args.seed)
    cfg.work_dir = osp.join(args.work_dir, 'mona_cascade_mask_rcnn')
    print('[demo] step 2/2: Mona-tuning Cascade Mask R-CNN (backbone frozen)', flush=True)
    t0 = time.time()
    runner = Runner.from_cfg(cfg)
    runner.train()
    t_finetune = time.time() - t0
    hub = runner.message_hub
    metrics = {k: hub.get_scalar('val/' + k).current()
               for k in ('coco/bbox_mAP', 'coco/segm_mAP')}
    params = count_trainable(runner.model)
    wall = time.time() - t_start

    bb_pct = 100.0 * params['backbone_trainable'] / params['backbone_total']
    tot_pct = 100.0 * params['trainable'] / params['total']
    rows = [
        ('seed', str(args.seed)),
        ('pretrain top-1 (cls, full training)',
         f"{cls_metrics.get('accuracy/top1', float('nan')):.1f} %"),
        ('trainable backbone params (Mona)',
         f"{params['backbone_trainable']:,} / {params['backbone_total']:,} ({bb_pct:.2f} %)"),
        ('trainable params, whole detector',
         f"{params['trainable']:,} / {params['total']:,} ({tot_pct:.2f} %)"),
        ('bbox mAP (COCO, val)', f"{metrics['coco/bbox_mAP']:.3f}"),
        ('segm mAP (COCO, val)', f"{metrics['coco/segm_mAP']:.3f}"),
        ('time: pretrain / fine-tune / total',
         f'{t_pretrain:.0f} s / {t_finetune:.0f} s / {wall:.0f} s'),
    ]
    width = max(len(r[0]) for r in rows)
    print('\n' + '=' * (width + 40))
    print('mona_mm demo: Mona-tuned Cascade Mask R-CNN on synthetic shapes (CPU)')
    print('-' * (width + 40))
    for name, value in rows:
        print(f'{name:<{width}}  {value}')
    print('=' * (width + 40))
    print(f'outputs: {args.work_dir}/')
    sys.stdout.flush()


if __name__ == '__main__':
    main()
