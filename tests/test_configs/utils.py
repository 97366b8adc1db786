"""Shared by the config tests: run one real train step of a config on generated data."""
import torch
from mmengine.dataset import pseudo_collate
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DATASETS, DefaultScope

from mona_mm.datasets import SHAPES_CLASSES
from mona_mm.utils import build_model_from_cfg


#: Detection/segmentation pipelines run at a quarter of their sizes (same transforms): one
#: step of a Swin-B Cascade at 800x1333 costs half a minute on 2 cores.
SHRINK = 4


def _shrink(obj):
    """``obj`` (a pipeline or a transform) with every ``scale``/``scales``/``crop_size``
    divided by :data:`SHRINK`."""
    if isinstance(obj, (list, tuple)):
        return type(obj)(_shrink(o) for o in obj)
    if not isinstance(obj, dict):
        return obj
    out = {}
    for k, v in obj.items():
        if k in ('scale', 'scales', 'crop_size', 'size'):
            v = _divide(v)
        out[k] = _shrink(v) if isinstance(v, (list, tuple, dict)) and k != 'scales' else v
    return out


def _divide(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return max(32, int(v) // SHRINK)
    if isinstance(v, (list, tuple)):
        return type(v)(_divide(x) for x in v)
    return v


def point_data_at(cfg, ws):
    """Keep the config's dataset pipeline (detection/segmentation: at a quarter of its sizes),
    read the generated shapes instead."""
    root = str(ws / 'data' / 'shapes')
    scope = cfg.default_scope
    ds = cfg.train_dataloader.dataset
    pipeline = ds.get('pipeline') or cfg.get('train_pipeline')
    if scope in ('mmdet', 'mmseg') and pipeline:
        pipeline = _shrink(list(pipeline))
        ds = type(ds)(ds, pipeline=pipeline)
    if scope == 'mmdet' and ds.type == 'RepeatDataset':  # VOC07+12
        return dict(type='VOCDataset', data_root=root + '/VOCdevkit/',
                    ann_file='VOC2007/ImageSets/Main/trainval.txt',
                    data_prefix=dict(sub_data_root='VOC2007/'),
                    metainfo=dict(classes=SHAPES_CLASSES), pipeline=pipeline)
    if scope == 'mmdet':
        return dict(ds, data_root=root + '/coco/', ann_file='annotations/instances_train.json',
                    data_prefix=dict(img='train/'), metainfo=dict(classes=SHAPES_CLASSES))
    if scope == 'mmseg':
        return dict(ds, data_root=root + '/ade')
    if 'VOC2007SingleLabel' in ds.type:
        return dict(ds, data_root=root + '/VOCdevkit/VOC2007', classes=SHAPES_CLASSES)
    return dict(type='CustomDataset', data_root=root + '/cls', data_prefix='train',
                pipeline=pipeline)


def one_train_step(cfg, ws):
    """Build ``cfg.model``, take 2 samples through the config's own pipeline, step once;
    check frozen backbone weights stay, trained ones move. Returns the model."""
    if cfg.default_scope == 'mmseg' and cfg.model.get('data_preprocessor', {}).get('size'):
        cfg.model.data_preprocessor.size = _divide(cfg.model.data_preprocessor.size)
    model = revert_sync_batchnorm(build_model_from_cfg(cfg)).train()
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        dataset = DATASETS.build(point_data_at(cfg, ws))
        data = pseudo_collate([dataset[0], dataset[1]])  # 2: BN in heads needs >1 value
        optim_cfg = dict(cfg.optim_wrapper)
        if optim_cfg.get('type') == 'AmpOptimWrapper':  # no AMP on the CPU
            optim_cfg['type'] = 'OptimWrapper'
            optim_cfg.pop('loss_scale', None)
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
    frozen = {n: p.detach().clone() for n, p in model.backbone.named_parameters()
              if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    torch.manual_seed(0)
    losses = model.train_step(data, optim_wrapper)
    assert torch.isfinite(losses['loss']), losses
    for n, p in model.backbone.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f'frozen {n} changed'
    changed = sum(not torch.equal(p, trainable[n]) for n, p in model.named_parameters()
                  if n in trainable)
    assert changed > 0
    return model
