"""Evaluate a checkpoint on a config's test set, with mona_mm registered."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import mona_mm  # noqa: F401  (registers our modules and the checkpoint allow-list)
from mona_mm.datasets.checks import check_dataset_annotations
from mona_mm.pruning import apply_checkpoint_structure
from mona_mm.utils import (is_adapter_checkpoint, load_adapter_checkpoint,
                           prepare_cpu_distributed)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (full, or adapter-only)')
    parser.add_argument('--base-checkpoint',
                        help='pretrained backbone for an adapter-only checkpoint (default: the '
                        'one it records, else model.backbone.init_cfg)')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument('--amp', action='store_true', help='test with mixed precision')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    check_dataset_annotations(cfg, ('test_dataloader', ))
    adapter_only = is_adapter_checkpoint(args.checkpoint)
    cfg.load_from = None if adapter_only else args.checkpoint
    if args.amp:
        cfg.test_cfg = cfg.get('test_cfg') or dict()
        cfg.test_cfg.fp16 = True
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError('--out must end with .pkl or .pickle')
        cfg.test_evaluator = [cfg.test_evaluator] if isinstance(cfg.test_evaluator, dict) \
            else list(cfg.test_evaluator)
        cfg.test_evaluator.append(dict(type='DumpResults', out_file_path=args.out))
    prepare_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    # a MiMi-pruned checkpoint: rebuild its adapter shapes before its weights load
    apply_checkpoint_structure(runner.model, args.checkpoint)
    if adapter_only:  # pretrained backbone + the small trained part
        load_adapter_checkpoint(runner.model, args.checkpoint, args.base_checkpoint)
        runner.logger.info(f'adapter-only checkpoint {args.checkpoint} loaded onto its '
                           'pretrained backbone')
    runner.test()


if __name__ == '__main__':
    main()
