"""Inference with any checkpoint mona_mm writes, drawn by the upstream visualizers.

:func:`init_model` builds a config's model and loads one of our checkpoints into it: a runner
checkpoint (``epoch_N.pth``), an adapter-only checkpoint on its pretrained backbone, a
MiMi-pruned checkpoint (adapter widths rebuilt before its weights load) or a re-parameterised
(deploy) checkpoint. :func:`inference_model` runs the config's codebase's own inferencer on
that model (mmdet ``DetInferencer``, mmseg ``MMSegInferencer``, mmpretrain
``ImageClassificationInferencer``), so predictions are post-processed and drawn exactly as
upstream does (``DetLocalVisualizer``, ``SegLocalVisualizer``, ``UniversalVisualizer``).
"""
import copy
import os
import os.path as osp
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DATASETS, DefaultScope
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from mona_mm.models.backbones.injection import checkpoint_records
from mona_mm.models.peft.reparameterize import DEPLOY_META_KEY
from mona_mm.pruning import apply_checkpoint_structure, get_structure
from mona_mm.utils import (build_model_from_cfg, checkpoint_must_fit, load_adapter_checkpoint,
                           load_checkpoint_file)
from mona_mm.utils.adapter_checkpoint import _is_adapter

#: Codebases whose inferencer :func:`build_inferencer` picks from a config's default scope.
CODEBASES = ('mmdet', 'mmseg', 'mmpretrain')
#: What :func:`list_images` takes from a folder (mmcv's image suffixes).
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')

ImagesType = Union[str, Path, np.ndarray, Sequence[Union[str, Path, np.ndarray]]]


def config_codebase(cfg: Config) -> str:
    """The codebase (``'mmdet'``, ``'mmseg'`` or ``'mmpretrain'``) a config is written for:
    its ``default_scope``.

    Args:
        cfg: A loaded config.
    """
    scope = cfg.get('default_scope')
    if scope not in CODEBASES:
        raise ValueError(f'default_scope={scope!r}: inference needs a config of one of '
                         f'{CODEBASES} (their default_runtime bases set it)')
    return scope


def _checkpoint_kind(model: nn.Module, checkpoint: dict, fresh: Dict[str, int]) -> str:
    """What a checkpoint held, in words, once loaded into ``model``: ``'full'`` or
    ``'adapter-only'``, then ``', MiMi-pruned'`` and ``', re-parameterised'`` where so.

    Args:
        model: The model the checkpoint was loaded into.
        checkpoint: The loaded checkpoint dict.
        fresh: The adapter structure of the model as the config builds it
            (:func:`~mona_mm.pruning.get_structure` before loading).
    """
    meta = checkpoint.get('meta') or {}
    kinds = ['adapter-only' if _is_adapter(checkpoint) else 'full']
    now = get_structure(model)
    if any(now.get(name, width) < width for name, width in fresh.items()):
        kinds.append('MiMi-pruned')
    records = checkpoint_records(checkpoint.get('state_dict'))
    if meta.get(DEPLOY_META_KEY) or any(r.get('deploy') for r in records.values()):
        kinds.append('re-parameterised')
    return ', '.join(kinds)


def _config_metainfo(cfg: Config) -> dict:
    """The test dataset's metainfo as the config states it, completed by its dataset class's
    ``METAINFO`` (what the upstream inferencers fall back on without a checkpoint meta)."""
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    while 'metainfo' not in dataset and isinstance(dataset.get('dataset'), dict):
        dataset = dataset['dataset']  # dataset wrappers
    meta = dict(dataset.get('metainfo') or {})
    if not meta.get('classes') and isinstance(dataset.get('type'), str):
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
            cls = DATASETS.get(dataset['type'])
        meta = dict(getattr(cls, 'METAINFO', None) or {}, **meta)
    return meta


def _set_dataset_meta(model: nn.Module, cfg: Config, checkpoint_meta: dict) -> None:
    """``model.dataset_meta`` (class names, palette) in the form the codebase's inferencer
    and visualizer read: the checkpoint's, else the config's."""
    meta = checkpoint_meta.get('dataset_meta')
    if meta is None and 'CLASSES' in checkpoint_meta:  # checkpoints of the 0.x codebases
        meta = dict(classes=checkpoint_meta['CLASSES'])
    meta = dict(meta) if meta else _config_metainfo(cfg)
    codebase = cfg.get('default_scope')
    if codebase == 'mmdet':  # DetInferencer: lower-case keys, a palette always
        meta = {k.lower(): v for k, v in meta.items()}
        if not meta.get('palette'):
            meta['palette'] = _config_metainfo(cfg).get('palette') or 'random'
    elif codebase == 'mmseg':  # SegLocalVisualizer.set_dataset_meta takes exactly these
        classes, palette = meta.get('classes'), meta.get('palette')
        if classes and not palette:  # as mmseg's datasets do without one: seeded colours
            palette = np.random.RandomState(42).randint(0, 255, (len(classes), 3)).tolist()
        meta = dict(classes=classes, palette=palette)
    elif codebase == 'mmpretrain':  # what ImageClassificationInferencer reads (get_model's)
        model._dataset_meta = meta
        model._config = cfg
    model.dataset_meta = meta


def init_model(config: Union[str, Path, Config],
               checkpoint: Optional[str] = None,
               base_checkpoint: Optional[str] = None,
               device: str = 'cpu',
               cfg_options: Optional[dict] = None,
               force_base: bool = False) -> nn.Module:
    """Build a model from a config and load any checkpoint mona_mm writes into it.

    The checkpoint may be a runner checkpoint, an adapter-only checkpoint (its pretrained
    backbone is the one it records, ``base_checkpoint``, or else the backbone's
    ``init_cfg``), a MiMi-pruned checkpoint (its adapter widths are rebuilt first) or a
    re-parameterised one from ``tools/model_converters/reparameterize.py`` (the model is
    turned into its deploy form first). Nothing else is initialised: without a checkpoint
    the weights are random. A checkpoint that matches no tensor of the model, or leaves a
    tensor the config trains (heads, necks, the PEFT method's adapters) missing or of another
    shape, is refused (:class:`~mona_mm.utils.CheckpointFitError`, naming the tensors).

    Args:
        config: Config file path or loaded config (not modified).
        checkpoint: Checkpoint path or URL; None leaves the weights random.
        base_checkpoint: Pretrained backbone for an adapter-only checkpoint, instead of the
            one it records. Ignored (with a warning) for a checkpoint of the whole model.
        device: Device to put the model on.
        cfg_options: Overrides of config entries, as ``--cfg-options`` gives them.
        force_base: Compose an adapter-only checkpoint with ``base_checkpoint`` even when
            its tensors differ from the base the checkpoint records (refused otherwise).

    Returns:
        The model in eval mode, with ``cfg`` (the config), ``dataset_meta`` (class names and
        palette, from the checkpoint or else the config) and ``checkpoint_kind`` (e.g.
        ``'adapter-only, MiMi-pruned'``; None without a checkpoint) set.
    """
    if isinstance(config, (str, Path)):
        config = Config.fromfile(str(config))
    elif isinstance(config, Config):
        config = copy.deepcopy(config)
    else:
        raise TypeError(f'config must be a file path or a Config, got {type(config).__name__}')
    if cfg_options:
        config.merge_from_dict(cfg_options)
    # init_cfg stays (the fallback base of an adapter-only checkpoint) but is never run
    model = build_model_from_cfg(config)
    logger = MMLogger.get_current_instance()
    ckpt, kind = {}, None
    if checkpoint is not None:
        ckpt = load_checkpoint_file(checkpoint)
        if not isinstance(ckpt, dict):
            raise TypeError(f'{checkpoint} holds a {type(ckpt).__name__}, not a checkpoint dict')
        fresh = get_structure(model)
        # pruned widths, deploy form: from meta too (covers a checkpoint whose records were lost)
        apply_checkpoint_structure(model, ckpt)
        # no silent random weights: refuse a checkpoint that leaves what the config trains
        # (heads, adapters) untrained or matches nothing
        with checkpoint_must_fit(model, checkpoint):
            if _is_adapter(ckpt):
                load_adapter_checkpoint(model, checkpoint, base_checkpoint, force_base=force_base)
            else:
                if base_checkpoint:
                    logger.warning(f'base checkpoint {base_checkpoint} ignored: {checkpoint} '
                                   'holds the whole model, not only its trained part')
                _load_checkpoint_to_model(model, ckpt, strict=False)
        kind = _checkpoint_kind(model, ckpt, fresh)
        logger.info(f'{checkpoint} ({kind} checkpoint) loaded')
    _set_dataset_meta(model, config, ckpt.get('meta') or {})
    model.cfg = config
    model.checkpoint_kind = kind
    if str(device) == 'cpu':  # SyncBN (heads of the paper configs) cannot run on CPU
        model = revert_sync_batchnorm(model)
    return model.to(device).eval()


def _prebuilt(upstream: type, model: nn.Module) -> type:
    """A subclass of an mmengine ``Inferencer`` that uses ``model`` as it is instead of
    building and loading one (everything else, pipeline and visualizer included, is
    upstream's)."""

    class PrebuiltModelInferencer(upstream):

        def _init_model(self, cfg, weights, device) -> nn.Module:
            return model

    PrebuiltModelInferencer.__name__ = upstream.__name__
    return PrebuiltModelInferencer


def build_inferencer(model: nn.Module, cfg: Optional[Config] = None):
    """The upstream inferencer of the model's codebase around an already loaded model:
    mmdet ``DetInferencer``, mmseg ``MMSegInferencer`` or mmpretrain
    ``ImageClassificationInferencer``.

    Args:
        model: A loaded model, e.g. from :func:`init_model`, or one a runner trained.
        cfg: Its config; defaults to ``model.cfg`` (set by :func:`init_model`).
    """
    cfg = cfg if cfg is not None else getattr(model, 'cfg', None)
    if cfg is None:
        raise ValueError('build_inferencer needs the model\'s config: pass cfg=... or load '
                         'the model with mona_mm.apis.init_model (which sets model.cfg)')
    codebase = config_codebase(cfg)
    if getattr(model, 'dataset_meta', None) is None:
        _set_dataset_meta(model, cfg, {})
    model.eval()
    cfg = copy.deepcopy(cfg)  # the inferencers edit the pipeline and visualizer config
    # mmpretrain's inferencer builds its pipeline in whatever scope is current (another
    # codebase's, after a DetInferencer or MMSegInferencer in the same process)
    with DefaultScope.overwrite_default_scope(codebase):
        if codebase == 'mmpretrain':
            from mmpretrain.apis import ImageClassificationInferencer
            model._config = cfg
            return ImageClassificationInferencer(model, pretrained=False)
        if codebase == 'mmdet':
            from mmdet.apis import DetInferencer
            inferencer = _prebuilt(DetInferencer, model)(model=cfg, scope='mmdet')
        else:
            from mmseg.apis import MMSegInferencer
            inferencer = _prebuilt(MMSegInferencer, model)(model=cfg, scope='mmseg')
    inferencer.show_progress = False
    return inferencer


def list_images(images: ImagesType) -> List[Union[str, np.ndarray]]:
    """Image files (and arrays) from an image, a folder of images, or a list of them.

    Args:
        images: A path or URL, a folder (its images with a suffix of
            :data:`IMG_EXTENSIONS`, sorted, not recursive), an array, or a sequence of those.
    """
    items = [images] if isinstance(images, (str, Path, np.ndarray)) else list(images)
    found: List[Union[str, np.ndarray]] = []
    for item in items:
        if isinstance(item, np.ndarray):
            found.append(item)
            continue
        item = str(item)
        if osp.isdir(item):
            files = sorted(osp.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMG_EXTENSIONS)
                           and osp.isfile(osp.join(item, f)))
            if not files:
                raise FileNotFoundError(f'folder {item} holds no image '
                                        f'({", ".join(IMG_EXTENSIONS)})')
            found.extend(files)
        elif '://' in item or osp.isfile(item):
            found.append(item)
        else:
            raise FileNotFoundError(f'image {item} does not exist')
    if not found:
        raise ValueError('no image given')
    return found


def _files(folder: Optional[str]) -> Dict[str, Tuple[int, int]]:
    if not folder or not osp.isdir(folder):
        return {}
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = osp.join(root, name)
            st = os.stat(path)
            out[path] = (st.st_mtime_ns, st.st_size)
    return out


def inference_model(model: nn.Module,
                    images: ImagesType,
                    out_dir: Optional[str] = None,
                    show: bool = False,
                    wait_time: float = 0,
                    pred_score_thr: float = 0.3,
                    batch_size: int = 1) -> dict:
    """Run the upstream inferencer of the model's codebase on images and draw the
    predictions with its visualizer.

    Visualisations go to ``out_dir/vis/``, named after the input images (upstream's names:
    mmdet and mmseg keep the file name, mmpretrain writes ``<stem>.png``).

    Args:
        model: A loaded model with its config as ``model.cfg`` (see :func:`init_model`).
        images: An image, a folder of images, or a list of paths/arrays (see
            :func:`list_images`).
        out_dir: Folder for the visualisations; None writes nothing.
        show: Also display each visualisation in a window.
        wait_time: Seconds each displayed window stays (0: until a key is pressed).
        pred_score_thr: Detection only: boxes and masks scoring below are not drawn (all are
            returned).
        batch_size: Images per forward.

    Returns:
        ``dict(predictions=[one data sample per image, as the upstream inferencer returns
        it with return_datasamples=True], visualizations=[files written])``.
    """
    inputs = list_images(images)
    inferencer = build_inferencer(model)
    codebase = config_codebase(model.cfg)
    before = _files(out_dir)
    with DefaultScope.overwrite_default_scope(codebase):
        predictions = _run(inferencer, codebase, inputs, out_dir, show, wait_time,
                           pred_score_thr, batch_size)
    after = _files(out_dir)
    written = sorted(p for p, stat in after.items() if before.get(p) != stat)
    return dict(predictions=predictions, visualizations=written)


def _run(inferencer, codebase: str, inputs: list, out_dir: Optional[str], show: bool,
         wait_time: float, pred_score_thr: float, batch_size: int) -> list:
    if codebase == 'mmdet':
        result = inferencer(inputs, batch_size=batch_size, show=show, wait_time=wait_time,
                            out_dir=out_dir or '', no_save_vis=not out_dir, no_save_pred=True,
                            pred_score_thr=pred_score_thr, return_datasamples=True)
        predictions = result['predictions']
    elif codebase == 'mmseg':
        result = inferencer(inputs, return_datasamples=True, batch_size=batch_size,
                            show=show, wait_time=wait_time, out_dir=out_dir or '')
        predictions = result if isinstance(result, list) else [result]
    else:
        vis_dir = osp.join(out_dir, 'vis') if out_dir else None
        if vis_dir:  # mmpretrain creates only the last level
            os.makedirs(vis_dir, exist_ok=True)
        predictions = inferencer(inputs, return_datasamples=True, batch_size=batch_size,
                                 show=show, wait_time=wait_time, show_dir=vis_dir)
    return list(predictions)
