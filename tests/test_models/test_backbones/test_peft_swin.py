import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mona_mm.models import (Mona, PEFTSwinTransformer, iter_adapters, replace_adapter)
from mona_mm.utils import count_trainable
from tests.conftest import NANO


def _nano(**kw):
    return PEFTSwinTransformer(arch=NANO, **kw)


@pytest.mark.parametrize('arch,expected', [('base', 3_667_456), ('large', 5_267_712)])
def test_published_trainable_counts(arch, expected):
    bb = PEFTSwinTransformer(arch=arch)
    assert count_trainable(bb)['backbone_trainable'] == expected
    # and they are exactly the Monas: two per block
    adapters = list(iter_adapters(bb))
    assert len(adapters) == 2 * 24
    assert all(isinstance(a, Mona) for _, a in adapters)


def test_only_adapters_train_even_after_train():
    bb = _nano()
    for mode_switch in (lambda m: m.train(), lambda m: m.eval().train(), lambda m: m):
        mode_switch(bb)
        trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
        assert trainable and all('.adapters.' in n for n in trainable)
        expected = {n for n, p in bb.named_parameters() if '.adapters.' in n}
        assert trainable == expected
    # patch embedding, output norms, attention and MLP are frozen
    assert not bb.patch_embed.projection.weight.requires_grad
    assert not bb.norm3.weight.requires_grad


def test_gradients_reach_only_adapters():
    torch.manual_seed(0)
    bb = _nano().train()
    outs = bb(torch.randn(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    for n, p in bb.named_parameters():
        if '.adapters.' in n:
            assert p.grad is not None, n
        else:
            assert p.grad is None, n


def test_outputs_out_indices_and_shapes():
    bb = _nano(out_indices=(0, 2)).eval()
    outs = bb(torch.randn(1, 3, 64, 96))
    assert isinstance(outs, list) and len(outs) == 2  # mmdet's Swin returns a list
    assert outs[0].shape == (1, 32, 16, 24)
    assert outs[1].shape == (1, 128, 4, 6)


def test_two_monas_per_block_at_the_right_points():
    bb = _nano()
    block = bb.stages[1].blocks[0]
    assert set(block.adapters.keys()) == {'post_attn', 'post_mlp'}
    assert block.adapters['post_attn'].in_dims == 64


def test_mona_placement_in_forward():
    """The block computes x=x+attn(norm1(x)); x=mona1(x); x=x+mlp(norm2(x)); x=mona2(x)."""
    torch.manual_seed(0)
    bb = _nano(drop_path_rate=0.0).eval()
    block = bb.stages[0].blocks[1]
    for a in block.adapters.values():
        with torch.no_grad():
            a.gamma.fill_(0.3)
    x = torch.randn(2, 16 * 16, 32)
    hw = (16, 16)
    out = block(x, hw)
    ref = x + block.attn(block.norm1(x), hw)
    ref = block.adapters['post_attn'](ref, hw)
    # (calling block.norm2 directly would run the post_attn adapter hooked on it)
    norm2 = block.norm2
    ref = ref + block.ffn.layers(F.layer_norm(ref, (32, ), norm2.weight, norm2.bias, norm2.eps))
    ref = block.adapters['post_mlp'](ref, hw)
    torch.testing.assert_close(out, ref)


def test_frozen_stages_freeze_adapters_too():
    bb = _nano(frozen_stages=1).train()
    assert not any(p.requires_grad for p in bb.stages[0].parameters())
    assert not bb.stages[0].training
    assert any(p.requires_grad for p in bb.stages[1].parameters())


def test_with_cp_same_outputs_and_grads():
    torch.manual_seed(0)
    a = _nano(drop_path_rate=0.0).train()
    b = _nano(drop_path_rate=0.0, with_cp=True).train()
    b.load_state_dict(a.state_dict())
    for m in (a, b):  # no dropout randomness
        for mod in m.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = 0.0
    x = torch.randn(1, 3, 32, 32)
    la = sum(o.sum() for o in a(x))
    lb = sum(o.sum() for o in b(x))
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb)
    ga = dict(a.named_parameters())
    for n, p in b.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, ga[n].grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('peft', ['Mona', 'AdaptFormer', 'LoRA', 'Full'])
def test_recompute_same_outputs_and_grads(peft):
    """Recomputed parts give bit-identical results, dropout and drop path included (the
    RNG state is replayed), for every adapter point kind."""
    kw = dict(arch=NANO, peft=dict(type=peft), drop_path_rate=0.3)
    torch.manual_seed(0)
    a = PEFTSwinTransformer(**kw).train()
    b = PEFTSwinTransformer(**kw, recompute=('adapters', 'attn', 'ffn')).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 64)
    losses = []
    for m in (a, b):
        torch.manual_seed(1)
        loss = sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in m(x))
        loss.backward()
        losses.append(loss)
    assert torch.equal(losses[0], losses[1])
    ga = dict(a.named_parameters())
    grads = [(n, p.grad, ga[n].grad) for n, p in b.named_parameters() if p.requires_grad]
    assert grads
    for n, gb, g in grads:
        assert torch.equal(gb, g), n


def _saved_numel(model, x):
    total = []

    def pack(t):
        total.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(total)


def test_recompute_keeps_less_for_the_backward():
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    sizes = {parts: _saved_numel(_nano(recompute=parts).train(), x)
             for parts in ((), ('adapters', ), ('adapters', 'ffn'), ('adapters', 'attn', 'ffn'))}
    assert sizes[()] > sizes[('adapters', )] > sizes[('adapters', 'ffn')] > \
        sizes[('adapters', 'attn', 'ffn')]
    # nothing is recomputed (or kept) without gradients
    with torch.no_grad():
        assert _saved_numel(_nano(recompute=('adapters', )), x) == 0


def test_recompute_rejects_unknown_parts():
    with pytest.raises(ValueError, match="cannot recompute \\['mlp'\\].*'adapters'"):
        _nano(recompute=('adapters', 'mlp'))
    assert _nano(recompute='adapters').recompute == ('adapters', )


def test_drop_path_rate_reaches_blocks():
    bb = _nano(drop_path_rate=0.3)
    last = bb.stages[-1].blocks[-1]
    assert abs(last.ffn.dropout_layer.drop_prob - 0.3) < 1e-6


def test_full_and_fixed_methods():
    full = _nano(peft=dict(type='Full'))
    assert all(p.requires_grad for p in full.parameters())
    assert not list(iter_adapters(full))
    fixed = _nano(peft=dict(type='Fixed'))
    assert not any(p.requires_grad for p in fixed.parameters())


def test_adapters_can_be_listed_measured_and_replaced():
    bb = _nano()
    name, adapter = next(iter_adapters(bb))
    assert adapter.hidden_dims == 64
    smaller = Mona(adapter.in_dims, hidden_dims=8)
    old = replace_adapter(bb, name, smaller)
    assert old is adapter
    assert dict(iter_adapters(bb))[name] is smaller
    bb(torch.randn(1, 3, 32, 32))  # still runs


@pytest.mark.parametrize('bad,match', [
    (dict(arch='huge'), 'Unknown Swin arch'),
    (dict(arch=dict(embed_dims=32)), 'needs'),
    (dict(arch='tiny', embed_dims=64), 'not both'),
    (dict(arch='tiny', peft=dict(type='NoSuchMethod')), 'NoSuchMethod'),
])
def test_bad_arguments_have_clear_errors(bad, match):
    with pytest.raises((ValueError, TypeError, KeyError), match=match):
        PEFTSwinTransformer(**bad)


def test_custom_arch_and_hidden_dims():
    bb = PEFTSwinTransformer(arch=dict(embed_dims=48, depths=(1, 1, 1, 1),
                                       num_heads=(1, 2, 4, 8)),
                             peft=dict(type='Mona', hidden_dims=16))
    dims = [48, 96, 192, 384]
    expected = sum(2 * (sum(p.numel() for p in Mona(c, 16).parameters())) for c in dims)
    assert count_trainable(bb)['backbone_trainable'] == expected
    copy.deepcopy(bb)  # picklable/copyable like any mm model


def test_mmdet_style_arch_arguments_and_mmpretrain_img_size():
    bb = PEFTSwinTransformer(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                             convert_weights=True)
    assert bb.stages[0].blocks[0].norm1.normalized_shape[0] == 32
    assert len(bb.stages[2].blocks) == 2
    bb = PEFTSwinTransformer(arch='tiny', img_size=224, out_indices=(3, ))
    assert bb.out_indices == (3, )


@pytest.mark.parametrize('peft', ['Full', 'Fixed', 'BitFit'])
def test_methods_that_change_no_block_build_any_upstream_norms(peft):
    # mmpretrain's own Swin test builds BN block norms: Full (and any method that only picks
    # what trains) must build whatever upstream builds, and equal it
    from mmpretrain.models.backbones import SwinTransformer
    kw = dict(arch=dict(embed_dims=32, depths=(2, 2), num_heads=(1, 2)), img_size=64,
              out_indices=(1, ), stage_cfgs=dict(block_cfgs=dict(norm_cfg=dict(type='BN'))))
    torch.manual_seed(0)
    ref = SwinTransformer(**kw)
    ours = PEFTSwinTransformer(codebase='mmpretrain', peft=peft, **kw)
    assert isinstance(ours.stages[0].blocks[0].norm1, nn.BatchNorm2d)
    assert ours.state_dict().keys() == ref.state_dict().keys()
