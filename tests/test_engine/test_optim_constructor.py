"""PEFTOptimWrapperConstructor: upstream rules for every trainable parameter, adapters free of
backbone-wide multipliers, frozen parameters out, one summary instead of per-tensor lines."""
import copy
import logging
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor, build_optim_wrapper
from mmengine.registry import DefaultScope

import mona_mm  # noqa: F401
from mona_mm.engine import PEFTOptimWrapperConstructor
from tests.conftest import NANO, ROOT

CONSTRUCTOR = 'mona_mm.PEFTOptimWrapperConstructor'
DEPTHS = [2, 2, 6, 2]


def _mask2former_cfg() -> Config:
    import mmdet
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'mask2former',
                    'mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py')
    return Config.fromfile(path)


class _Detector(nn.Module):
    """backbone + a head, the naming of a detector (``backbone.``, ``head.``)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8))
        self.head.query_embed = nn.Parameter(torch.zeros(4, 8))


def _model(peft='Mona', depths=(2, 2, 2, 2), **kw) -> nn.Module:
    from mmdet.models.backbones import SwinTransformer  # noqa: F401 (registers mmdet)
    from mona_mm.models.backbones import PEFTSwinTransformer
    arch = dict(NANO, depths=tuple(depths))
    torch.manual_seed(0)
    return _Detector(PEFTSwinTransformer(codebase='mmdet', peft=dict(type=peft), **arch, **kw))


def _settings(groups, defaults):
    """{param id: (lr, weight_decay)} of a param-group list."""
    out = {}
    for g in groups:
        for p in g['params']:
            out[id(p)] = (g.get('lr', defaults['lr']), g.get('weight_decay',
                                                            defaults['weight_decay']))
    return out


def _groups(constructor_type, optim_cfg: dict, model: nn.Module):
    cfg = copy.deepcopy(optim_cfg)
    paramwise = cfg.pop('paramwise_cfg', None)
    cfg.pop('constructor', None)
    if constructor_type is DefaultOptimWrapperConstructor and not paramwise:
        paramwise = dict(custom_keys={})  # per-tensor groups, for the comparison
    constructor = constructor_type(cfg, paramwise)
    params = []
    constructor.add_params(params, model)
    return params


def _names(model):
    return {id(p): n for n, p in model.named_parameters()}


def test_mask2former_keys_leave_adapters_at_their_lr():
    """The Mask2Former Swin config scales the whole backbone by 0.1 (`'backbone'`): adapters
    keep the base lr and the upstream norm rules, heads get exactly upstream's settings."""
    optim = _mask2former_cfg().optim_wrapper.to_dict()
    model = _model(depths=DEPTHS)
    base = dict(lr=optim['optimizer']['lr'], weight_decay=optim['optimizer']['weight_decay'])
    names = _names(model)
    ours = _settings(_groups(PEFTOptimWrapperConstructor, optim, model), base)
    upstream = _settings(_groups(DefaultOptimWrapperConstructor, optim, model), base)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ours) == trainable  # frozen parameters stay out
    adapters = [i for i in ours if '.adapters.' in names[i]]
    assert len(adapters) == 2 * sum(DEPTHS) * 16  # 16 tensors per Mona adapter
    for i in adapters:
        lr, wd = ours[i]
        assert lr == pytest.approx(1e-4), names[i]  # upstream: 1e-5 (the 'backbone' key)
        assert upstream[i][0] == pytest.approx(1e-5)
        # the norm rule (norm_decay_mult=0) still applies inside the adapters
        assert wd == (0.0 if '.norm.' in names[i] else pytest.approx(0.05)), names[i]
    for i in trainable - set(adapters):
        assert ours[i] == upstream[i], names[i]
    assert ours[id(model.head.query_embed)] == (1e-4, 0.0)  # 'query_embed': decay 0


@pytest.mark.parametrize('peft_cfg,lr,wd', [
    (dict(backbone_keys=True), 1e-5, 0.05),  # the backbone-wide key applies again
    (dict(lr_mult=3.0), 3e-4, 0.05),
    (dict(lr_mult=3.0, decay_mult=0.5, backbone_keys=True), 3e-5, 0.025),
])
def test_peft_rules_configurable(peft_cfg, lr, wd):
    optim = _mask2former_cfg().optim_wrapper.to_dict()
    optim['paramwise_cfg']['peft'] = peft_cfg
    model = _model(depths=DEPTHS)
    names = _names(model)
    ours = _settings(_groups(PEFTOptimWrapperConstructor, optim, model),
                     dict(lr=1e-4, weight_decay=0.05))
    proj = [i for i in ours if names[i].endswith('adapters.post_attn.project1.weight')]
    assert proj and all(ours[i] == (pytest.approx(lr), pytest.approx(wd)) for i in proj)
    head = ours[id(model.head[0].weight)]
    assert head == (1e-4, 0.05)  # outside the PEFT backbone: untouched


def test_full_fine_tuning_keeps_backbone_multipliers():
    """With peft=Full the backbone is the upstream one: its rules are upstream's."""
    optim = _mask2former_cfg().optim_wrapper.to_dict()
    model = _model('Full', depths=DEPTHS)
    base = dict(lr=1e-4, weight_decay=0.05)
    ours = _settings(_groups(PEFTOptimWrapperConstructor, optim, model), base)
    upstream = _settings(_groups(DefaultOptimWrapperConstructor, optim, model), base)
    assert ours == upstream


def _shipped_optim(config: str) -> dict:
    cfg = Config.fromfile(osp.join(ROOT, config)).optim_wrapper.to_dict()
    assert cfg.get('constructor') == CONSTRUCTOR, config
    return cfg


PAPER_OPTIM = [
    'configs/mmdet/mona/cascade-mask-rcnn_swin-b-p4-w7-mona_fpn_8xb2-3x_coco.py',
    'configs/mmdet/lora/retinanet_swin-l-p4-w7-lora_fpn_8xb2-4e_voc0712.py',
    'configs/mmseg/mona/upernet_swin-l-p4-w7-mona_8xb2-160k_ade20k-512x512.py',
    'configs/mmseg/mona/upernet_vit-b16-mona_8xb2-160k_ade20k-512x512.py',
    'configs/mmpretrain/bitfit/swin-l-p4-w7-bitfit_1xb16-100e_flowers102-224.py',
    'configs/mmpretrain/mona/swin-l-p4-w7-mona_1xb16-100e_oxford-pets-224.py',
]


@pytest.mark.parametrize('config', PAPER_OPTIM)
@pytest.mark.parametrize('peft', ['Mona', 'LoRA', 'BitFit'])
def test_paper_recipes_unchanged(config, peft):
    """The paper configs have no backbone-wide key: every trainable parameter gets exactly
    upstream's lr and decay (the authors' recipes stay as they were)."""
    optim = _shipped_optim(config)
    model = _model(peft)
    base = dict(lr=optim['optimizer']['lr'], weight_decay=optim['optimizer']['weight_decay'])
    ours = _settings(_groups(PEFTOptimWrapperConstructor, optim, model), base)
    upstream = _settings(_groups(DefaultOptimWrapperConstructor, optim, model), base)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ours) == trainable and set(upstream) == trainable
    assert ours == upstream


def test_step_equals_per_tensor_groups():
    """Merged groups change nothing in the optimizer's arithmetic."""
    optim = _mask2former_cfg().optim_wrapper.to_dict()
    optim['paramwise_cfg']['peft'] = dict(backbone_keys=True)  # same settings as upstream
    results = []
    for constructor in (PEFTOptimWrapperConstructor, DefaultOptimWrapperConstructor):
        model = _model(depths=(2, 2, 2, 2))
        groups = _groups(constructor, optim, model)
        opt = torch.optim.AdamW(groups, lr=1e-4, weight_decay=0.05)
        torch.manual_seed(1)
        for _ in range(3):
            opt.zero_grad()
            x = torch.randn(1, 3, 64, 64)
            loss = sum(o.square().mean() for o in model.backbone(x))
            loss = loss + model.head(torch.randn(2, 8)).sum()
            loss.backward()
            opt.step()
        results.append((len(groups), [p.detach().clone() for p in model.parameters()]))
    (n_ours, ours), (n_up, up) = results
    assert n_ours < 10 < n_up  # a handful of groups instead of one per tensor
    assert all(torch.equal(a, b) for a, b in zip(ours, up))


def test_one_table_no_per_tensor_lines(tmp_path):
    """Building the optimizer logs a group table and the trainable summary, none of
    mmengine's per-tensor lines."""
    optim = _mask2former_cfg().optim_wrapper.to_dict()
    optim['type'] = 'OptimWrapper'
    optim['constructor'] = CONSTRUCTOR
    model = _model(depths=DEPTHS)
    model.backbone.peft_pretrained_source = 'test'  # no "random backbone" warning
    logger = MMLogger.get_instance('test_optim_table', log_file=str(tmp_path / 'log.txt'),
                                   log_level='INFO')
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.INFO:
                records.append(record.getMessage())

    keep = Keep()
    logger.addHandler(keep)
    try:
        with DefaultScope.overwrite_default_scope('mmdet'):
            wrapper = build_optim_wrapper(model, optim)
    finally:
        logger.removeHandler(keep)
    text = '\n'.join(records)
    assert 'paramwise_options' not in text and 'requires_grad=False' not in text
    assert len(records) == 2, records
    table, summary = records
    assert 'AdamW parameter groups' in table and 'backbone (Mona)' in table
    assert "(they scale the whole backbone" in table and "['backbone']" in table
    assert len(wrapper.optimizer.param_groups) == table.count('\n| ') - 1
    assert summary.startswith('trainable parameters: backbone ')
    n_adapter = sum(p.numel() for n, p in model.backbone.named_parameters()
                    if p.requires_grad)
    assert f'backbone {n_adapter:,} / ' in summary


@pytest.mark.parametrize('paramwise,match', [
    (dict(norm_decay_mul=0.0), 'unknown keys'),
    (dict(peft=dict(lr=1e-3)), 'unknown keys'),
    (dict(peft=dict(lr_mult=-1)), 'finite number >= 0'),
    (dict(peft=dict(decay_mult=float('nan'))), 'finite number >= 0'),
    (dict(peft=dict(backbone_keys='yes')), 'True or False'),
])
def test_bad_paramwise_cfg(paramwise, match):
    with pytest.raises((ValueError, TypeError), match=match):
        PEFTOptimWrapperConstructor(
            dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)), paramwise)


def test_frozen_stages_counted_after_train():
    """mmdet's Swin freezes `frozen_stages` in train(): those tensors are not trainable and
    are left out even when the optimizer is built first."""
    model = _model('Full', frozen_stages=2)
    constructor = PEFTOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=1e-4)))
    wrapper = constructor(model)
    params = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    stage0 = {id(p) for p in model.backbone.stages[0].parameters()}
    assert stage0 and not (stage0 & params)
    assert {id(p) for p in model.backbone.stages[3].parameters()} <= params

