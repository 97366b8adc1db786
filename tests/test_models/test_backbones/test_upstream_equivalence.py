"""With ``peft=dict(type='Full')`` a PEFT backbone is the installed upstream class: every
constructor argument, defaults, outputs and gradients bit for bit, train()/eval(), checkpoint
loading and layer depths. Checked for mmdet's, mmseg's and mmpretrain's Swin and for
mmpretrain's and mmseg's ViT."""
import inspect

import pytest
import torch

from mona_mm.models import PEFTSwinTransformer, PEFTVisionTransformer, is_peft_backbone
from mona_mm.models.backbones.codebase import import_class
from mona_mm.models.backbones.peft_swin import SWIN_CLASSES
from mona_mm.models.backbones.peft_vit import VIT_CLASSES

NANO = dict(embed_dims=32, depths=(2, 2), num_heads=(1, 2))
VIT_NANO = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)

# (id, upstream class path, builder, small constructor kwargs, input sizes)
CASES = [
    ('mmdet-swin-w7', SWIN_CLASSES['mmdet'], PEFTSwinTransformer,
     dict(NANO, out_indices=(0, 1), strides=(4, 2), drop_path_rate=0.2), 'mmdet'),
    ('mmdet-swin-w12-abs', SWIN_CLASSES['mmdet'], PEFTSwinTransformer,
     dict(NANO, out_indices=(0, 1), strides=(4, 2), window_size=12, use_abs_pos_embed=True,
          pretrain_img_size=64, drop_path_rate=0.2), 'mmdet'),
    ('mmseg-swin-w7', SWIN_CLASSES['mmseg'], PEFTSwinTransformer,
     dict(NANO, out_indices=(0, 1), strides=(4, 2), drop_path_rate=0.2), 'mmseg'),
    ('mmpretrain-swin-w7', SWIN_CLASSES['mmpretrain'], PEFTSwinTransformer,
     dict(arch=dict(NANO), out_indices=(0, 1), drop_path_rate=0.2), 'mmpretrain'),
    ('mmpretrain-swin-w12-pad', SWIN_CLASSES['mmpretrain'], PEFTSwinTransformer,
     dict(arch=dict(NANO), out_indices=(1, ), window_size=12, pad_small_map=True,
          drop_path_rate=0.2), 'mmpretrain'),
    ('mmpretrain-vit', VIT_CLASSES['mmpretrain'], PEFTVisionTransformer,
     dict(arch=dict(VIT_NANO), img_size=64, patch_size=16, out_type='featmap',
          drop_path_rate=0.2, out_indices=(0, 1)), 'mmpretrain'),
    ('mmpretrain-vit-cls-prenorm', VIT_CLASSES['mmpretrain'], PEFTVisionTransformer,
     dict(arch=dict(VIT_NANO), img_size=64, patch_size=16, pre_norm=True,
          layer_scale_init_value=0.1, drop_path_rate=0.2), 'mmpretrain'),
    ('mmseg-vit', VIT_CLASSES['mmseg'], PEFTVisionTransformer,
     dict(img_size=64, patch_size=16, embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2,
          out_indices=(0, 1), drop_path_rate=0.2), 'mmseg'),
]
SIZES = [(2, 3, 64, 64), (1, 3, 70, 90)]


def _ids(cases):
    return [c[0] for c in cases]


def _pair(case, **extra):
    _, path, builder, kwargs, codebase = case
    upstream_cls = import_class(path)
    torch.manual_seed(0)
    upstream = upstream_cls(**kwargs, **extra)
    ours = builder(codebase=codebase, peft=dict(type='Full'), **kwargs, **extra)
    ours.load_state_dict(upstream.state_dict(), strict=True)
    return upstream, ours


def _run(model, x, seed):
    torch.manual_seed(seed)
    outs = model(x)
    loss = sum((o.float() * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)
    loss.backward()
    return outs


@pytest.mark.parametrize('case', CASES, ids=_ids(CASES))
def test_full_is_the_upstream_class_bit_for_bit(case):
    upstream, ours = _pair(case)
    assert isinstance(ours, type(upstream)) and is_peft_backbone(ours)
    assert list(ours.state_dict()) == list(upstream.state_dict())
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in upstream.named_modules()]
    # mmdet's and mmseg's Swin add the absolute position embedding without resizing it
    sizes = SIZES[:1] if case[3].get('use_abs_pos_embed') and case[4] != 'mmpretrain' \
        else SIZES
    for size in sizes:
        x = torch.randn(*size)
        for mode in ('train', 'eval'):
            getattr(upstream, mode)()
            getattr(ours, mode)()
            upstream.zero_grad()
            ours.zero_grad()
            out_u, out_o = _run(upstream, x, 1), _run(ours, x, 1)
            assert type(out_u) is type(out_o) and len(out_u) == len(out_o)
            for a, b in zip(out_u, out_o):
                assert torch.equal(a, b), (size, mode)
            grads = dict(upstream.named_parameters())
            for n, p in ours.named_parameters():
                g = grads[n].grad
                assert (p.grad is None) == (g is None), n
                if g is not None:
                    assert torch.equal(p.grad, g), (n, size, mode)


@pytest.mark.parametrize('case', CASES, ids=_ids(CASES))
def test_every_upstream_argument_is_accepted_with_its_default(case):
    _, path, builder, kwargs, codebase = case
    upstream_cls = import_class(path)
    params = inspect.signature(upstream_cls.__init__).parameters
    defaults = {n: p.default for n, p in params.items()
                if n != 'self' and p.default is not inspect.Parameter.empty}
    explicit = dict(defaults, **kwargs)
    if 'arch' in kwargs or 'embed_dims' in kwargs:  # keep the small arch
        for k in ('embed_dims', 'depths', 'num_heads', 'num_layers', 'feedforward_channels',
                  'mlp_ratio'):
            if k in kwargs:
                explicit[k] = kwargs[k]
    ours = builder(codebase=codebase, peft=dict(type='Full'), **explicit)
    torch.manual_seed(0)
    upstream = upstream_cls(**explicit)
    for name in defaults:
        if hasattr(upstream, name) and not isinstance(getattr(upstream, name), torch.nn.Module):
            assert repr(getattr(ours, name)) == repr(getattr(upstream, name)), name


@pytest.mark.parametrize('case', CASES, ids=_ids(CASES))
def test_upstream_defaults_and_train_eval(case):
    _, path, builder, kwargs, codebase = case
    params = inspect.signature(import_class(path).__init__).parameters
    upstream, ours = _pair(case, **(dict(frozen_stages=1) if 'frozen_stages' in params else {}))
    assert ours.out_indices == upstream.out_indices
    # a parameter frozen by hand stays frozen through train()/eval(), as upstream
    name = [n for n, _ in upstream.named_parameters()][-1]
    for m in (upstream, ours):
        dict(m.named_parameters())[name].requires_grad_(False)
        m.eval()
        m.train()  # (mmseg's train() returns None)
    flags_u = {n: p.requires_grad for n, p in upstream.named_parameters()}
    flags_o = {n: p.requires_grad for n, p in ours.named_parameters()}
    assert flags_u == flags_o and not flags_o[name]
    modes_u = {n: m.training for n, m in upstream.named_modules()}
    modes_o = {n: m.training for n, m in ours.named_modules()}
    assert modes_u == modes_o


def test_mmpretrain_get_layer_depth_is_upstream():
    for case in CASES:
        if case[4] != 'mmpretrain':
            continue
        upstream, ours = _pair(case)
        for n, _ in upstream.named_parameters():
            assert ours.get_layer_depth('backbone.' + n, 'backbone.') == \
                upstream.get_layer_depth('backbone.' + n, 'backbone.')


def test_mmpretrain_swin_defaults_are_mmpretrains():
    ours = PEFTSwinTransformer(codebase='mmpretrain', arch='tiny', peft=dict(type='Full'))
    assert ours.out_indices == (3, ) and type(ours).__mro__[2].__module__.startswith(
        'mmpretrain')
    assert not ours.stages[0].blocks[0].attn.pad_small_map


def test_swin_v2_config_is_refused_not_built_as_v1():
    with pytest.raises(ValueError, match="Swin V2 one .*type='mona_mm.PEFTSwinTransformerV2'"):
        PEFTSwinTransformer(codebase='mmpretrain', arch='tiny', window_size=[8, 8, 8, 8])
