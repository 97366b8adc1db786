"""Train a model from a config (mmdet, mmseg or mmpretrain scope) with mona_mm registered."""
import argparse
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction
from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                             is_npu_available)
from mmengine.optim import AmpOptimWrapper
from mmengine.runner import Runner

import mona_mm  # noqa: F401  (registers our modules and the checkpoint allow-list)
from mona_mm.datasets.checks import check_dataset_annotations
from mona_mm.engine import compile_eval_steps
from mona_mm.engine.optimizers import backbone_lr_mult_warning
from mona_mm.utils import prepare_cpu_distributed


CFG_OPTIONS_HELP = (
    'Override settings of the config with key=value pairs, merged into it (a dotted key '
    'reaches into dicts and lists, e.g. optim_wrapper.optimizer.lr=1e-4; a list value is '
    'written key="[a,b]" or key=a,b and may nest, key="[(a,b),(c,d)]", quotes needed and no '
    'white space).')
LAUNCHER_HELP = ('Job launcher: none (one process), pytorch (torchrun, tools/dist_train.sh), '
                 'slurm (srun, tools/slurm_train.sh) or mpi; without a GPU, pytorch and slurm '
                 'run on gloo (default: %(default)s).')
LOCAL_RANK_HELP = ('Rank of this process on its machine, passed by torch.distributed.launch; '
                   'the LOCAL_RANK environment variable, when set, wins.')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train a detector, segmentor or classifier from an mmdet, mmseg or '
        'mmpretrain config, with the mona_mm modules registered.')
    parser.add_argument('config', help='The config file to train with.')
    parser.add_argument('--work-dir', metavar='DIR',
                        help='Directory for logs and checkpoints (default: the config\'s '
                        'work_dir, else ./work_dirs/<config name>).')
    parser.add_argument('--amp', action='store_true',
                        help='Enable automatic mixed precision (AmpOptimWrapper with a dynamic '
                        'loss scale); it needs a GPU.')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='Scale the learning rate linearly by the actual total batch size '
                        '(processes x train_dataloader.batch_size) over the config\'s '
                        'auto_scale_lr.base_batch_size.')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto', metavar='CKPT',
        help='Resume from the given checkpoint, or, without a path, from the latest one in '
        'the work dir.')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help=CFG_OPTIONS_HELP)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help=LAUNCHER_HELP)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=LOCAL_RANK_HELP)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _is_amp_wrapper(kind) -> bool:
    if isinstance(kind, type):
        return issubclass(kind, AmpOptimWrapper)
    return isinstance(kind, str) and kind.split('.')[-1] == 'AmpOptimWrapper'


def check_amp_device(cfg: Config, amp: bool, config: Optional[str] = None) -> None:
    """Stop before the runner is built when the run asks for mixed precision on a machine
    without an accelerator: mmengine's ``AmpOptimWrapper`` needs CUDA (or NPU/MLU/MUSA) and
    refuses the CPU, with ``dtype='bfloat16'`` too.

    Args:
        cfg: The merged config (after ``--cfg-options``, before ``--amp`` is applied).
        amp: Whether ``--amp`` was given.
        config: The config file, for the message.
    """
    if is_cuda_available() or is_npu_available() or is_mlu_available() or \
            is_musa_available():
        return
    wrapper = cfg.get('optim_wrapper')
    kind = wrapper.get('type', 'OptimWrapper') if isinstance(wrapper, dict) else None
    if amp:
        raise RuntimeError(
            '--amp needs a CUDA GPU and none is available (mmengine\'s AmpOptimWrapper '
            "refuses the CPU, with dtype='bfloat16' too); on the CPU drop --amp to train "
            'in float32' + (', and since the config itself uses AmpOptimWrapper add '
                            '--cfg-options optim_wrapper.type=OptimWrapper'
                            if _is_amp_wrapper(kind) else '') + '.')
    if _is_amp_wrapper(kind):
        extra = sorted(k for k in ('loss_scale', 'dtype', 'use_fsdp') if k in wrapper)
        raise RuntimeError(
            f'{config or "the config"} sets optim_wrapper.type={kind!r} (mixed precision), '
            'which needs a CUDA GPU and none is available (mmengine\'s AmpOptimWrapper '
            "refuses the CPU, with dtype='bfloat16' too); to train in float32 on the CPU add "
            '--cfg-options optim_wrapper.type=OptimWrapper'
            + (f' and remove optim_wrapper\'s {", ".join(extra)} from the config'
               if extra else '') + '.')


def enable_auto_scale_lr(cfg: Config, config: Optional[str] = None) -> None:
    """Switch on mmengine's linear learning-rate scaling, as ``--auto-scale-lr`` asks: the
    runner multiplies the lr by the actual total batch size over ``base_batch_size``.

    Args:
        cfg: The merged config (after ``--cfg-options``); modified in place.
        config: The config file, for the message.

    Raises:
        RuntimeError: If the config has no ``auto_scale_lr`` with a ``base_batch_size``.
    """
    scale = cfg.get('auto_scale_lr')
    if not isinstance(scale, dict) or 'base_batch_size' not in scale:
        raise RuntimeError(
            '--auto-scale-lr needs auto_scale_lr.base_batch_size (the total batch size the '
            f'config\'s learning rate was set for) and {config or "the config"} has '
            + ('no auto_scale_lr' if scale is None else f'auto_scale_lr={scale!r}') +
            '; add auto_scale_lr = dict(base_batch_size=N) to the config or '
            '--cfg-options auto_scale_lr.base_batch_size=N.')
    cfg.auto_scale_lr.enable = True


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
    check_amp_device(cfg, args.amp, args.config)
    check_dataset_annotations(
        cfg, ('train_dataloader', 'val_dataloader') if cfg.get('val_cfg') else
        ('train_dataloader', ))
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'AmpOptimWrapper':
            print('AMP training is already enabled in your config.')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg, args.config)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    prepare_cpu_distributed(cfg)
    lr_mult_warning = backbone_lr_mult_warning(cfg)
    runner = Runner.from_cfg(cfg)
    if lr_mult_warning:  # once the runner's logger (console and log file) exists
        runner.logger.warning(lr_mult_warning)
    compile_eval_steps(runner)  # `compile`: validation compiled as well as training
    runner.train()


if __name__ == '__main__':
    main()
