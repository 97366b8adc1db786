"""The ResNet family (ResNet, ResNetV1c/V1d, ResNeXt of mmdet, mmseg, mmpretrain) with PEFT:
Full is the installed upstream class bit for bit (the codebases' default configs included);
Mona sits after each block's residual on the NCHW map and trains alone, with frozen
BatchNorms keeping their statistics; methods without a point here are refused; pretrained
files of the usual layouts load with every tensor equal."""
import importlib

import pytest
import torch
import torch.nn as nn

from mona_mm.models import PEFTBackbone, is_peft_backbone, iter_adapters
from mona_mm.utils.adapter_checkpoint import trained_keys

BN = dict(type='BN', requires_grad=True)
# (id, codebase, class, kwargs): each codebase's default ResNet of its standard configs
# (mmdet's Mask R-CNN, mmseg's FCN/PSPNet ResNetV1c with dilations, mmpretrain's classifier),
# BasicBlocks, ResNeXt, deep stems, checkpointed blocks
CASES = [
    ('mmdet-r50-maskrcnn', 'mmdet', 'ResNet',
     dict(depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
          norm_cfg=BN, norm_eval=True, style='pytorch')),
    ('mmdet-r18-cp', 'mmdet', 'ResNet', dict(depth=18, with_cp=True, out_indices=(1, 3))),
    ('mmdet-x50', 'mmdet', 'ResNeXt', dict(depth=50, groups=32, base_width=4)),
    ('mmdet-r50v1d-caffe', 'mmdet', 'ResNetV1d', dict(depth=50, style='caffe')),
    ('mmseg-r50v1c-fcn', 'mmseg', 'ResNetV1c',
     dict(depth=50, num_stages=4, out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4),
          strides=(1, 2, 1, 1), norm_cfg=BN, norm_eval=False, style='pytorch',
          contract_dilation=True)),
    ('mmseg-r18', 'mmseg', 'ResNet', dict(depth=18)),
    ('mmpretrain-r50-cls', 'mmpretrain', 'ResNet',
     dict(depth=50, num_stages=4, out_indices=(3, ), style='pytorch', drop_path_rate=0.1)),
    ('mmpretrain-x50', 'mmpretrain', 'ResNeXt', dict(depth=50, groups=32, width_per_group=4)),
    ('mmpretrain-r18v1d', 'mmpretrain', 'ResNetV1d', dict(depth=18, frozen_stages=2)),
]
SIZE = (2, 3, 64, 64)


def _cls(codebase, name):
    return getattr(importlib.import_module(f'{codebase}.models.backbones'), name)


def _pair(case, peft='Full'):
    _, codebase, name, kwargs = case
    torch.manual_seed(0)
    upstream = _cls(codebase, name)(**kwargs)
    ours = PEFTBackbone(dict(type=_cls(codebase, name), **kwargs), peft=peft)
    missing, unexpected = ours.load_state_dict(upstream.state_dict(), strict=False)
    assert not unexpected and all('.adapters.' in k for k in missing)
    return upstream, ours


def _loss(outs):
    return sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_full_is_the_upstream_class_bit_for_bit(case):
    upstream, ours = _pair(case)
    assert isinstance(ours, _cls(case[1], case[2])) and is_peft_backbone(ours)
    assert list(ours.state_dict()) == list(upstream.state_dict())
    x = torch.randn(*SIZE)
    for mode in ('train', 'eval'):
        for m in (upstream, ours):
            m.train(mode == 'train')
            m.zero_grad()
        torch.manual_seed(1)
        a = upstream(x)
        _loss(a).backward()
        torch.manual_seed(1)
        b = ours(x)
        _loss(b).backward()
        assert len(a) == len(b) and all(torch.equal(i, j) for i, j in zip(a, b))
        theirs = dict(upstream.named_parameters())
        for n, p in ours.named_parameters():
            assert p.requires_grad == theirs[n].requires_grad, n
            assert (p.grad is None) == (theirs[n].grad is None), n
            if p.grad is not None:
                assert torch.equal(p.grad, theirs[n].grad), n
        # BatchNorm modes and running statistics as upstream's
        assert [m.training for m in ours.modules()] == [m.training for m in upstream.modules()]
        for (k, v), w in zip(ours.state_dict().items(), upstream.state_dict().values()):
            assert torch.equal(v, w), k


@pytest.mark.parametrize('case', [CASES[0], CASES[5], CASES[6]], ids=lambda c: c[0])
def test_mona_after_each_block_trains_alone(case):
    upstream, model = _pair(case, peft='Mona')
    blocks = [n for n, m in model.named_modules()
              if n.count('.') == 1 and n.startswith('layer')]
    assert [n.rsplit('.adapters', 1)[0] for n, _ in iter_adapters(model)] == blocks
    # the adapter sits on the block's output channels (Bottleneck conv3 / BasicBlock conv2)
    for name, adapter in iter_adapters(model):
        block = model.get_submodule(name.rsplit('.adapters', 1)[0])
        width = (block.conv3 if hasattr(block, 'conv3') else block.conv2).out_channels
        assert adapter.project1.in_features == width
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if 'running' in k}
    x = torch.randn(*SIZE)
    outs = model(x)
    _loss(outs).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all('.adapters.' in n for n in trainable)
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable
    # a frozen BatchNorm is frozen state: eval mode, statistics unchanged by training
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())
    # with fresh Monas the features differ from the plain backbone's (the adapters act)
    upstream.eval()
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x)[-1], upstream(x)[-1])


def test_norm_tuning_and_bitfit_train_the_batchnorms_and_save_their_statistics():
    case = CASES[5]
    for peft, wanted in (('NormTuning', ('weight', 'bias')), ('BitFit', ('bias', ))):
        _, model = _pair(case, peft=peft)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
        assert trainable == {f'{b}.{w}' for b in bns for w in wanted}
        model.train()
        assert all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        before = model.bn1.running_mean.clone()
        model(torch.randn(*SIZE))
        assert not torch.equal(model.bn1.running_mean, before)  # updated, as upstream
        holder = nn.Module()
        holder.backbone = model
        keys = trained_keys(holder)
        assert 'backbone.bn1.running_mean' in keys and 'backbone.bn1.num_batches_tracked' in keys
        assert 'backbone.conv1.weight' not in keys


@pytest.mark.parametrize('peft,message', [
    ('Adapter', r"puts adapters at \('attn_out', 'mlp_out'\), but this backbone's blocks "
     r"offer only \('post_mlp',\)"),
    ('AdaptFormer', r"offer only \('post_mlp',\)"),
    ('LoRA', r'LoRA needs a qkv projection; ResNet blocks name none \(a residual CNN block '
     r'has no attention\)'),
])
def test_methods_without_a_point_are_refused(peft, message):
    with pytest.raises(ValueError, match=message):
        PEFTBackbone(dict(type='mmdet.ResNet', depth=18), peft=peft)


@pytest.mark.parametrize('prefix', [None, 'backbone'])
def test_pretrained_layouts_load_every_tensor(tmp_path, prefix):
    # torchvision's layout (a classifier: fc.* besides the backbone) and a whole model's
    # state dict (mmpretrain classifier, mmdet detector: backbone.*)
    src = _cls('mmdet', 'ResNet')(depth=18)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
        for m in src.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
    sd = dict(src.state_dict(), **{'fc.weight': torch.randn(10, 512), 'fc.bias': torch.zeros(10)})
    if prefix:
        sd = {f'{prefix}.{k}': v for k, v in sd.items()}
    path = tmp_path / 'resnet18.pth'
    torch.save({'state_dict': sd} if prefix else sd, path)
    init_cfg = dict(type='Pretrained', checkpoint=str(path))
    if prefix:
        init_cfg['prefix'] = prefix
    for codebase in ('mmdet', 'mmseg', 'mmpretrain'):
        ours = PEFTBackbone(dict(type=_cls(codebase, 'ResNet'), depth=18, init_cfg=init_cfg),
                            peft='Mona')
        ours.init_weights()
        own = ours.state_dict()
        for k, v in src.state_dict().items():
            assert torch.equal(own[k], v), (codebase, k)
    # mmseg's own idiom: `pretrained=` on the backbone
    ours = PEFTBackbone(dict(type='mmseg.ResNet', depth=18, pretrained=str(path)), peft='Mona')
    if prefix is None:
        ours.init_weights()
        assert all(torch.equal(ours.state_dict()[k], v) for k, v in src.state_dict().items())
