"""Evaluate a checkpoint on a config's test set, with mona_mm registered."""
import argparse
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.runner import Runner

import mona_mm  # noqa: F401  (registers our modules and the checkpoint allow-list)
from mona_mm.datasets.checks import check_dataset_annotations
from mona_mm.engine import compile_eval_steps
from mona_mm.pruning import apply_checkpoint_structure
from mona_mm.utils import (checkpoint_must_fit, is_adapter_checkpoint, load_adapter_checkpoint,
                           prepare_cpu_distributed)

CFG_OPTIONS_HELP = (
    'Override settings of the config with key=value pairs, merged into it (a dotted key '
    'reaches into dicts and lists, e.g. test_dataloader.batch_size=2; a list value is '
    'written key="[a,b]" or key=a,b and may nest, key="[(a,b),(c,d)]", quotes needed and no '
    'white space).')
LAUNCHER_HELP = ('Job launcher: none (one process), pytorch (torchrun, tools/dist_test.sh), '
                 'slurm (srun, tools/slurm_test.sh) or mpi; without a GPU, pytorch and slurm '
                 'run on gloo (default: %(default)s).')
LOCAL_RANK_HELP = ('Rank of this process on its machine, passed by torch.distributed.launch; '
                   'the LOCAL_RANK environment variable, when set, wins.')
# the visualization hook of each codebase, as its default_runtime names it
VISUALIZATION_HOOKS = dict(mmdet='DetVisualizationHook', mmseg='SegVisualizationHook',
                           mmpretrain='VisualizationHook')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a full, adapter-only, MiMi-pruned or '
        're-parameterised checkpoint on the test set of an mmdet, mmseg or mmpretrain '
        'config, with the mona_mm modules registered.')
    parser.add_argument('config', help='The config file to test with.')
    parser.add_argument('checkpoint', help='The checkpoint file: full, adapter-only, '
                        'MiMi-pruned or re-parameterised.')
    parser.add_argument('--base-checkpoint', metavar='PRETRAINED',
                        help='Pretrained backbone for an adapter-only checkpoint (default: the '
                        'one it records, else model.backbone.init_cfg).')
    parser.add_argument('--force-base', action='store_true',
                        help='Compose an adapter-only checkpoint with --base-checkpoint even '
                        'when its tensors differ from the base the checkpoint records (the '
                        'model is then not the trained one).')
    parser.add_argument('--work-dir', metavar='DIR',
                        help='Directory for logs and metrics (default: the config\'s '
                        'work_dir, else ./work_dirs/<config name>).')
    parser.add_argument('--out', metavar='FILE',
                        help='Dump the raw predictions to this pickle file (.pkl or .pickle) '
                        'for offline evaluation.')
    parser.add_argument('--show', action='store_true',
                        help='Show the painted predictions in a window (needs a display).')
    parser.add_argument('--show-dir', metavar='DIR',
                        help='Save the painted predictions to this directory; mmdet puts a '
                        'relative one under WORK_DIR/TIMESTAMP/, mmseg writes the images '
                        'under DIR/vis_data/vis_image/.')
    parser.add_argument('--wait-time', type=float, default=2, metavar='SECONDS',
                        help='Seconds each image stays on screen with --show '
                        '(default: %(default)s).')
    parser.add_argument('--interval', type=int, metavar='N',
                        help='With --show or --show-dir, visualize every N-th test sample '
                        '(mmpretrain) or batch (mmseg); mmdet draws every image (default: 1 for '
                        'mmpretrain, the hook\'s own, 50, for mmseg).')
    parser.add_argument('--tta', action='store_true',
                        help='Test with test-time augmentation: the model is wrapped in the '
                        'config\'s tta_model and the test set uses its tta_pipeline.')
    parser.add_argument('--amp', action='store_true', help='Test with mixed precision.')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help=CFG_OPTIONS_HELP)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help=LAUNCHER_HELP)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=LOCAL_RANK_HELP)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg: Config, show: bool, show_dir: Optional[str],
                               wait_time: float = 2, interval: Optional[int] = None) -> None:
    """Switch on the visualization hook of the config's codebase, as that codebase's own
    ``tools/test.py`` does for ``--show`` / ``--show-dir``: mmdet's ``DetVisualizationHook``
    (``draw``, ``test_out_dir``), mmseg's ``SegVisualizationHook`` (``draw``, the visualizer's
    ``save_dir``) or mmpretrain's ``VisualizationHook`` (``enable``, ``out_dir``,
    ``interval``).

    Args:
        cfg: The merged config; modified in place.
        show: Show each painted image in a window.
        show_dir: Save the painted images there.
        wait_time: Seconds each shown image stays on screen.
        interval: Visualize every ``interval``-th sample (mmpretrain; default 1) or batch
            (mmseg; default: the hook's own).

    Raises:
        RuntimeError: If the config's ``default_scope`` is none of the three codebases, or
            its ``default_hooks`` have no ``visualization`` hook.
    """
    scope = cfg.get('default_scope')
    if scope not in VISUALIZATION_HOOKS:
        raise RuntimeError('--show/--show-dir switch on the visualization hook of mmdet, '
                           'mmseg or mmpretrain, and the config\'s default_scope is '
                           f'{scope!r}; set default_scope to one of them.')
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if hook is None:
        raise RuntimeError('--show/--show-dir need a visualization hook and the config\'s '
                           'default_hooks have none; add default_hooks = dict(visualization='
                           f"dict(type='{VISUALIZATION_HOOKS[scope]}')).")
    if scope == 'mmpretrain':
        hook.update(enable=True, show=show, wait_time=wait_time, out_dir=show_dir,
                    interval=interval or 1)
        return
    hook['draw'] = True
    if interval and scope == 'mmseg':
        hook['interval'] = interval
    if show:
        hook.update(show=True, wait_time=wait_time)
    if show_dir:
        if scope == 'mmdet':
            hook['test_out_dir'] = show_dir
        else:
            cfg.visualizer['save_dir'] = show_dir


def use_tta(cfg: Config, config: Optional[str] = None) -> None:
    """Test with test-time augmentation as the codebases' ``tools/test.py`` do: the model
    becomes ``cfg.tta_model`` around ``cfg.model`` and the test set uses ``cfg.tta_pipeline``.

    Args:
        cfg: The merged config; modified in place.
        config: The config file, for the message.

    Raises:
        RuntimeError: If the config lacks ``tta_model`` or ``tta_pipeline``.
    """
    missing = [k for k in ('tta_model', 'tta_pipeline') if not cfg.get(k)]
    if missing:
        raise RuntimeError(
            f'--tta needs tta_model and tta_pipeline in the config and {config or "the config"}'
            f' has no {" and no ".join(missing)}; add them (e.g. mmdet: tta_model = '
            "dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), "
            "max_per_img=100)), mmseg: dict(type='SegTTAModel'), mmpretrain: "
            "dict(type='AverageClsScoreTTA'); tta_pipeline: the test pipeline with a "
            "TestTimeAug step) or test without --tta.")
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


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
    if args.show or args.show_dir:
        trigger_visualization_hook(cfg, args.show, args.show_dir, args.wait_time,
                                   args.interval)
    if args.tta:
        use_tta(cfg, args.config)
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
    # a MiMi-pruned checkpoint: rebuild its adapter shapes before its weights load (the
    # model may be a TTA wrapper: the structure applies to the model inside)
    apply_checkpoint_structure(runner.model, args.checkpoint)
    # no metrics of random weights: a checkpoint that matches nothing, or leaves heads or
    # adapters of this config untrained, is refused as soon as it has loaded (the runner
    # loads `load_from` inside test(), after the hooks' before_run)
    with checkpoint_must_fit(runner.model, args.checkpoint):
        if adapter_only:  # pretrained backbone + the small trained part
            load_adapter_checkpoint(runner.model, args.checkpoint, args.base_checkpoint,
                                    force_base=args.force_base)
            runner.logger.info(f'adapter-only checkpoint {args.checkpoint} loaded onto its '
                               'pretrained backbone')
        if compile_eval_steps(runner):  # `compile`: mmengine would test eagerly
            runner.logger.info('test_step compiled (the config sets `compile`)')
        runner.test()


if __name__ == '__main__':
    main()
