"""The paper configs follow the Mona authors' runs (github.com/Leiyi-Hu/mona, their code and
published logs): the adapters start as theirs did, ``frozen_stages`` freezes what theirs froze
(trainable and total backbone parameters equal to the counts their VOC logs print), and the
classification / ADE20K schedules and weight-decay rules are mmcv's, as they ran them."""
import glob
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS

from mona_mm.models import (BottleneckAdapter, LoRandAdapter, Mona, MonaReference,
                            PEFTSwinTransformer, iter_adapters)
from mona_mm.models.peft.adapter import AdapterMethod
from mona_mm.models.peft.adaptformer import AdaptFormerMethod
from mona_mm.models.peft.lora import LoRAQKV
from mona_mm.models.peft.lorand import LoRandMethod
from tests.conftest import NANO, ROOT
from tests.test_models.test_backbones.test_pretrained_loading import logger_context

CONFIGS = osp.join(ROOT, 'configs')


# ---------------------------------------------------------------- the authors' code, as published
class AuthorsAdapter(nn.Module):
    """``Adapter`` of their ``swin_transformer_adapter.py`` (``scale=None``) and of their
    ``swin_transformer_adaptformer.py`` (``scale=0.1``, no residual), with the constructor
    their blocks call (``Adapter(dim, 2)`` raises TypeError as written; the 2 is unused)."""

    def __init__(self, in_dim, scale=None):
        super().__init__()
        self.project1 = nn.Linear(in_dim, 64)
        self.nonlinear = F.gelu
        self.project2 = nn.Linear(64, in_dim)
        self.scale = scale
        self.dropout = nn.Dropout(p=0.1)

    def forward(self, x):
        out = self.project2(self.dropout(self.nonlinear(self.project1(x))))
        return x + out if self.scale is None else out * self.scale


@torch.no_grad()
def timm_trunc_normal_(tensor, mean=0., std=1., a=-2., b=2.):
    """``timm.models.layers.trunc_normal_`` as their runs had it (timm with torch 1.8): the
    inverse-CDF sampler (torch 2.x's ``nn.init.trunc_normal_`` now rejection-samples, which
    draws other numbers from the same distribution). Bounds ``a, b`` are absolute."""
    def norm_cdf(x):
        return (1. + math.erf(x / math.sqrt(2.))) / 2.

    lo, up = norm_cdf((a - mean) / std), norm_cdf((b - mean) / std)
    tensor.uniform_(2 * lo - 1, 2 * up - 1)
    tensor.erfinv_()
    tensor.mul_(std * math.sqrt(2.))
    tensor.add_(mean)
    tensor.clamp_(min=a, max=b)
    return tensor


def authors_init_weights(m):
    """Their backbone's ``_init_weights`` (``self.apply``-ed to the whole backbone, adapters
    included, before the pretrained weights load)."""
    if isinstance(m, nn.Linear):
        timm_trunc_normal_(m.weight, std=.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


def _check_trunc_normal(w):
    """std 0.02 around 0, untruncated at 2 std (the bounds are +-2 absolute: 100 std)."""
    w = w.detach().flatten()
    assert abs(w.mean().item()) < 2e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.05)
    beyond = (w.abs() > 0.04).float().mean().item()  # 4.55 % for an untruncated normal
    assert 0.03 < beyond < 0.065, beyond
    assert w.abs().max().item() <= 2


# ---------------------------------------------------------------- item 3: baseline init
@pytest.mark.parametrize('scale', [None, 0.1], ids=['adapter', 'adaptformer'])
def test_trunc_normal_init_is_bit_identical_to_the_authors(scale):
    """Same seed: our adapter with init='trunc_normal' holds exactly the tensors theirs holds
    after their backbone init, and computes the same."""
    C = 96
    torch.manual_seed(3)
    theirs = AuthorsAdapter(C, scale)
    theirs.apply(authors_init_weights)
    torch.manual_seed(3)
    ours = BottleneckAdapter(C, 64, 0.1, residual=scale is None, scale=scale or 1.0,
                             init='trunc_normal')
    for a, b in (('down', 'project1'), ('up', 'project2')):
        for p in ('weight', 'bias'):
            assert torch.equal(getattr(getattr(ours, a), p), getattr(getattr(theirs, b), p))
    x = torch.randn(2, 5, C)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize('method', ['Adapter', 'AdaptFormer'])
def test_trunc_normal_statistics_in_a_backbone(method):
    torch.manual_seed(0)
    bb = PEFTSwinTransformer(arch=NANO, peft=dict(type=method, init='trunc_normal'))
    adapters = [a for _, a in iter_adapters(bb)]
    assert adapters and all(a.init == 'trunc_normal' for a in adapters)
    for proj in ('down', 'up'):
        _check_trunc_normal(torch.cat([getattr(a, proj).weight.flatten() for a in adapters]))
        assert all(not getattr(a, proj).bias.any() for a in adapters)
    # the backbone's own random init (no pretrained file) keeps the adapters' init
    bb.init_weights()
    _check_trunc_normal(torch.cat([a.up.weight.flatten() for a in adapters]))


@pytest.mark.parametrize('method', ['Adapter', 'AdaptFormer'])
def test_zero_up_stays_the_default(method):
    bb = PEFTSwinTransformer(arch=NANO, peft=dict(type=method))
    for _, a in iter_adapters(bb):
        assert a.init == 'zero_up' and not a.up.weight.any() and not a.up.bias.any()
        assert a.down.weight.all() and not a.down.bias.any()
    assert bb.peft_cfg['init'] == 'zero_up'  # recorded with the method's settings


def test_mimi_pruning_keeps_the_init_setting():
    a = BottleneckAdapter(32, 16, init='trunc_normal')
    assert a.keep_neurons(torch.tensor([1, 4, 7])).init == 'trunc_normal'
    lr = LoRandAdapter(32, init='kaiming')
    assert lr.keep_neurons(torch.tensor([0, 3])).init == 'kaiming'


@pytest.mark.parametrize('build', [
    lambda v: AdapterMethod(init=v),
    lambda v: AdaptFormerMethod(init=v),
    lambda v: LoRandMethod(init=v),
    lambda v: BottleneckAdapter(8, 4, init=v),
    lambda v: LoRandAdapter(8, init=v),
])
@pytest.mark.parametrize('bad', ['authors', 'zeros', None, 1])
def test_bad_init_values_are_refused(build, bad):
    with pytest.raises(ValueError, match=r'init must be one of \('):
        build(bad)


def test_bad_init_value_names_the_method_through_the_config():
    with pytest.raises(ValueError, match=r"Adapter: init must be one of \('zero_up', "
                       r"'trunc_normal'\) \(got 'kaiming'\)"):
        PEFTSwinTransformer(arch=NANO, peft=dict(type='Adapter', init='kaiming'))
    with pytest.raises(ValueError, match=r"LoRand: init must be one of \('zero_up', "
                       r"'kaiming'\)"):
        PEFTSwinTransformer(arch=NANO, peft=dict(type='LoRand', init='trunc_normal'))


def test_lorand_inits():
    torch.manual_seed(0)
    zero = LoRandAdapter(64)
    assert zero.init == 'zero_up' and not zero.up.G.any() and zero.down.G.all()
    kaiming = LoRandAdapter(64, init='kaiming')
    for proj in (kaiming.down, kaiming.up):
        for t in (proj.A, proj.G, proj.B):
            fan_in = t.shape[1] * t[0, 0].numel()  # torch's fan-in of a (b, n, k) tensor
            assert t.all() and t.abs().max() <= 1 / math.sqrt(fan_in)
    x = torch.randn(2, 3, 64)
    assert torch.equal(zero(x), x)  # identity at start
    assert not torch.equal(kaiming(x), x)


def test_lora_init_is_loralibs_mergedlinear():
    """Their LoRA is loralib's MergedLinear(r=64, enable_lora=[True, False, True]): one
    stacked (2r, C) A drawn kaiming-uniform, B zero. Ours draws each part's (r, C) A the same
    way: with the same seed, the same numbers."""
    C, r = 48, 64
    ours = LoRAQKV(C, rank=r, parts=(0, 2))
    theirs_A = torch.empty(2 * r, C)
    torch.manual_seed(5)
    nn.init.kaiming_uniform_(theirs_A, a=math.sqrt(5))
    torch.manual_seed(5)
    ours.reset_lora()
    assert torch.equal(ours.lora_A.detach(), theirs_A.view(2, r, C))
    assert not ours.lora_B.any()
    assert ours.scaling == 1 / r  # lora_alpha=1


@pytest.mark.parametrize('cls', [Mona, MonaReference])
def test_mona_init_matches_the_authors(cls):
    """Their Mona after their backbone init: Linear trunc-normal 0.02 with zero bias, the
    depthwise and 1x1 convs at torch's default (kaiming-uniform), LayerNorm (1, 0), gamma 1e-6,
    gammax 1; no zero anywhere."""
    torch.manual_seed(0)
    m = cls(1536)
    _check_trunc_normal(m.project1.weight)
    _check_trunc_normal(m.project2.weight)
    assert not m.project1.bias.any() and not m.project2.bias.any()
    assert torch.equal(m.norm.weight, torch.ones(1536)) and not m.norm.bias.any()
    assert torch.allclose(m.gamma, torch.full((1536, ), 1e-6)) and (m.gammax == 1).all()
    for conv in list(m.adapter_conv.convs) + [m.adapter_conv.projector]:
        bound = 1 / math.sqrt(conv.weight[0].numel())  # kaiming_uniform(a=sqrt(5)), fan-in
        for t in (conv.weight, conv.bias):
            assert t.all() and t.abs().max() <= bound
        assert conv.weight.abs().max() > 0.9 * bound  # drawn over the whole range


EXPECTED_INIT = {'adapter': 'trunc_normal', 'adaptformer': 'trunc_normal', 'lorand': 'kaiming'}


@pytest.mark.parametrize('folder', sorted(EXPECTED_INIT))
def test_paper_configs_start_as_the_authors(folder):
    paths = sorted(glob.glob(osp.join(CONFIGS, 'mm*', folder, '*.py')))
    assert len(paths) == 6  # COCO, VOC, ADE20K, three classification sets
    paths += glob.glob(osp.join(CONFIGS, 'mm*', 'mimi', f'*-{folder}-mimi_*.py'))
    for p in paths:
        peft = Config.fromfile(p).model.backbone.peft
        assert peft.get('init') == EXPECTED_INIT[folder], p


# ---------------------------------------------------------------- item 5: frozen_stages
#: (trained_backbone_num, backbone_params_num) printed by their VOC runs (RetinaNet, Swin-L,
#: out_indices=(1, 2, 3), frozen_stages=1)
AUTHORS_VOC_LOGS = {
    'mona': (5_267_712, 200_265_492),
    'adapter': (4_659_456, 199_657_236),
    'adaptformer': (2_329_728, 197_327_508),
    'lora': (4_620_288, 199_618_068),
}


def _voc_backbone(method, **override):
    cfg = Config.fromfile(osp.join(
        CONFIGS, 'mmdet', method, f'retinanet_swin-l-p4-w7-{method}_fpn_8xb2-4e_voc0712.py'))
    kwargs = {k: v for k, v in cfg.model.backbone.items() if k not in ('type', 'init_cfg')}
    kwargs.update(override)
    return PEFTSwinTransformer(codebase='mmdet', **kwargs)


def _counts(bb):
    bb.train()  # where the upstream Swin freezes its stages
    return (sum(p.numel() for p in bb.parameters() if p.requires_grad),
            sum(p.numel() for p in bb.parameters()))


@pytest.mark.parametrize('method', sorted(AUTHORS_VOC_LOGS))
def test_voc_configs_train_what_the_authors_logs_count(method):
    bb = _voc_backbone(method)
    assert bb.frozen_stages == 0  # their frozen_stages=1: the patch embedding only
    assert _counts(bb) == AUTHORS_VOC_LOGS[method]
    assert not any(p.requires_grad for p in bb.patch_embed.parameters())


def test_voc_full_freezes_only_the_patch_embedding():
    """Their Full VOC run: SwinTransformer with frozen_stages=1, everything else trains."""
    bb = _voc_backbone('full').train()
    frozen = {n for n, p in bb.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in bb.named_parameters() if n.startswith('patch_embed.')}


class _Log:
    """Collect what the current MMLogger writes."""

    def __init__(self, tmp_path, name):
        self.path = tmp_path / f'{name}.txt'
        self.logger = MMLogger.get_instance(name, log_file=str(self.path))

    def __enter__(self):
        logger_context(self.logger).__enter__()
        return self

    def __exit__(self, *exc):
        return False

    def warnings(self):
        """The frozen_stages warnings written so far."""
        return [ln for ln in self.path.read_text().splitlines()
                if 'WARNING' in ln and 'frozen_stages=' in ln]


def test_porting_their_frozen_stages_1_warns_with_the_count(tmp_path):
    with _Log(tmp_path, 'mona_mm_test_frozen_l') as log:
        bb = _voc_backbone('mona', frozen_stages=1)  # their line, copied as is
    per_mona = 133 * 192 + 9728
    trainable, _ = _counts(bb)
    assert trainable == 5_267_712 - 4 * per_mona  # stage 0's four Monas are frozen
    assert not any(p.requires_grad for p in bb.stages[0].parameters())
    (line, ) = log.warnings()
    assert f'{4 * per_mona:,} of the 5,267,712 parameters Mona trains stay frozen' in line
    assert 'frozen_stages=1 freezes the patch embedding and stage 0' in line
    assert 'their frozen_stages=1 is frozen_stages=0 here' in line


@pytest.mark.parametrize('codebase,frozen,stages,theirs', [
    ('mmdet', 2, 'stages 0-1', 1), ('mmseg', 1, 'stage 0', 0),
    ('mmpretrain', 0, 'stage 0', -1), ('mmpretrain', 3, 'stages 0-3', 1)])
def test_frozen_stages_warning_per_codebase(tmp_path, codebase, frozen, stages, theirs):
    with _Log(tmp_path, f'mona_mm_test_frozen_{codebase}_{frozen}') as log:
        bb = PEFTSwinTransformer(codebase=codebase, arch=NANO, frozen_stages=frozen,
                                 out_indices=(0, 1, 2, 3))
    before = sum(p.numel() for p in bb.parameters() if p.requires_grad)
    after, _ = _counts(bb)
    (line, ) = log.warnings()
    assert f'{before - after:,} of the {before:,} parameters Mona trains' in line
    assert f'freezes the patch embedding and {stages}' in line
    assert f'their frozen_stages={frozen} is frozen_stages={theirs} here' in line


@pytest.mark.parametrize('peft', ['Mona', 'Fixed'])
def test_no_warning_when_nothing_the_method_trains_is_frozen(tmp_path, peft):
    with _Log(tmp_path, f'mona_mm_test_frozen_none_{peft}') as log:
        PEFTSwinTransformer(arch=NANO, frozen_stages=0)  # patch embedding only
        PEFTSwinTransformer(arch=NANO, peft=peft, frozen_stages=-1)
        if peft == 'Fixed':
            PEFTSwinTransformer(arch=NANO, peft=peft, frozen_stages=2)
    assert not log.warnings()


# ---------------------------------------------------------------- item 4: recipes
def _lrs(cfg, base_lr, epoch_length, iters):
    """The lr of every iteration under ``cfg.param_scheduler`` (mmengine, as the runner
    steps it: after each iteration, every scheduler in order)."""
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base_lr)
    schedulers = []
    for s in cfg.param_scheduler:
        s = dict(s)
        cls = PARAM_SCHEDULERS.get(s.pop('type'))
        if s.pop('convert_to_iter_based', False):
            schedulers.append(cls.build_iter_from_epoch(opt, epoch_length=epoch_length, **s))
        else:
            schedulers.append(cls(opt, **s))
    out = []
    for _ in range(iters):
        out.append(opt.param_groups[0]['lr'])
        for s in schedulers:
            s.step()
    return out


def test_classification_schedule_is_mmcvs_cosine_with_warmup():
    """mmcv: CosineAnnealing(by_epoch=False, min_lr_ratio=1e-2) over all iterations, times
    the linear warmup factor (from 1e-3) over the first 20 epochs."""
    cfg = Config.fromfile(osp.join(CONFIGS, 'mmpretrain', 'mona',
                                   'swin-l-p4-w7-mona_1xb16-100e_flowers102-224.py'))
    assert cfg.train_cfg.max_epochs == 100 and cfg.train_cfg.val_interval == 1
    L, base = 64, cfg.optim_wrapper.optimizer.lr
    T, W = 100 * L, 20 * L
    ours = _lrs(cfg, base, L, T)
    for t in range(T):
        regular = base * 0.01 + base * 0.99 * (1 + math.cos(math.pi * t / T)) / 2
        mmcv = regular * (1 - (1 - t / W) * (1 - 1e-3)) if t < W else regular
        # LinearLR reaches 1 one iteration before mmcv's warmup ends (end - 1), and the
        # chained cosine with a minimum drifts a little from mmcv's closed form
        assert ours[t] == pytest.approx(mmcv, rel=2e-3 if t < W else 1e-3), t
    assert ours[-1] == pytest.approx(base * 0.01, rel=1e-3)


def test_ade20k_schedule_is_mmcvs_poly_with_warmup():
    cfg = Config.fromfile(osp.join(CONFIGS, 'mmseg', 'mona',
                                   'upernet_swin-l-p4-w7-mona_8xb2-160k_ade20k-512x512.py'))
    T, W, base = 160000, 1500, cfg.optim_wrapper.optimizer.lr
    ours = _lrs(cfg, base, None, 3000)
    for t in range(3000):
        k = 1 - (1 - t / W) * (1 - 1e-6) if t < W else 1.0
        assert ours[t] == pytest.approx(base * (1 - t / T) * k, rel=1e-6), t
    # the lr their Mona log prints at "Iter [50/160000]" (0-based iteration 49)
    assert f'{ours[49]:.3e}' == '9.797e-06'


def test_coco_warmup_is_mmcvs():
    """mmcv: linear warmup over 500 iterations from 0.001, times the step policy."""
    cfg = Config.fromfile(osp.join(CONFIGS, 'mmdet', 'mona',
                                   'cascade-mask-rcnn_swin-b-p4-w7-mona_fpn_8xb2-3x_coco.py'))
    cfg.param_scheduler = [s for s in cfg.param_scheduler if not s.get('by_epoch', True)]
    base = cfg.optim_wrapper.optimizer.lr
    ours = _lrs(cfg, base, None, 700)
    for t in range(700):
        k = 1 - (1 - t / 500) * (1 - 0.001) if t < 500 else 1.0
        assert ours[t] == pytest.approx(base * k, rel=1e-9), t


def _mmcv_weight_decay(cfg, name, module, param_name):
    """mmcv 1.x DefaultOptimizerConstructor's rule (custom keys first, then norm layer,
    depthwise conv (dwconv_decay_mult 1), bias), the one their classification runs used."""
    pw, wd = cfg.optim_wrapper.paramwise_cfg, cfg.optim_wrapper.optimizer.weight_decay
    keys = {k: v for k, v in pw.get('custom_keys', {}).items() if k != '.adapter_conv.convs.'}
    for key in sorted(sorted(keys), key=len, reverse=True):
        if key in name:
            return wd * keys[key].get('decay_mult', 1.)
    if isinstance(module, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)):
        return wd * pw.get('norm_decay_mult', 1.)
    if isinstance(module, nn.Conv2d) and module.in_channels == module.groups:
        return wd
    if param_name == 'bias':
        return wd * pw.get('bias_decay_mult', 1.)
    return wd


@pytest.mark.parametrize('peft', ['Mona', 'Full'])
def test_classification_weight_decay_is_the_authors(peft):
    cfg = Config.fromfile(osp.join(CONFIGS, 'mmpretrain', 'mona',
                                   'swin-l-p4-w7-mona_1xb16-100e_flowers102-224.py'))
    model = nn.Module()
    model.backbone = PEFTSwinTransformer(codebase='mmpretrain', arch=NANO, peft=peft,
                                         out_indices=(3, ), pad_small_map=True)
    model.head = nn.Linear(256, 102)
    optim_cfg = dict(cfg.optim_wrapper, type='OptimWrapper')  # no AMP on the CPU
    groups = build_optim_wrapper(model, optim_cfg).optimizer.param_groups
    decay = {id(p): g['weight_decay'] for g in groups for p in g['params']}
    modules = dict(model.named_modules())
    checked = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mod_name, _, pname = name.rpartition('.')
        expected = _mmcv_weight_decay(cfg, '.' + name, modules[mod_name], pname)
        assert decay[id(p)] == pytest.approx(expected), name
        checked.add((type(modules[mod_name]).__name__, pname, expected))
    # what the rule has to tell apart is there: decayed depthwise-conv biases, undecayed
    # biases and norms (Mona), undecayed relative position tables (Full)
    if peft == 'Mona':
        assert ('Conv2d', 'bias', 0.05) in checked and ('Conv2d', 'bias', 0.0) in checked
        assert ('LayerNorm', 'weight', 0.0) in checked and ('Mona', 'gamma', 0.05) in checked
    else:
        assert ('WindowMSA', 'relative_position_bias_table', 0.0) in checked


def test_recipe_fields():
    cls = Config.fromfile(osp.join(CONFIGS, 'mmpretrain', 'full',
                                   'swin-l-p4-w7-full_1xb16-100e_voc2007-224.py'))
    assert cls.model.backbone.drop_path_rate == 0.3
    assert cls.model.backbone.pretrained_out_norm is False
    assert cls.optim_wrapper.type == 'AmpOptimWrapper'
    assert cls.optim_wrapper.clip_grad == dict(max_norm=5.0)
    assert [t['type'] for t in cls.train_pipeline] == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'PackInputs']
    assert 'backend' not in cls.train_pipeline[1]  # cv2 / bilinear, as mmcls 0.x
    voc = Config.fromfile(osp.join(CONFIGS, 'mmdet', 'mona',
                                   'retinanet_swin-l-p4-w7-mona_fpn_8xb2-4e_voc0712.py'))
    assert voc.optim_wrapper.type == 'AmpOptimWrapper'
    assert [s['type'] for s in voc.param_scheduler] == ['MultiStepLR']  # no warmup
    for ds in voc.train_dataloader.dataset.dataset.datasets:
        assert 'bbox_min_size' not in ds.filter_cfg  # small boxes train, as in mmdet 2.x
