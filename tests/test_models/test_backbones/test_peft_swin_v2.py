"""Swin V2 (mmpretrain's ``SwinTransformerV2``, post-norm blocks) with PEFT: Full is the
installed upstream class bit for bit; the ``post_residual`` and ``parallel``-with-``source``
points rewrite the stream where the spec says; every method but LoRA trains only its own
parameters; pretrained files load with every tensor equal."""
import types

import pytest
import torch
import torch.nn as nn
from mmengine.runner import load_checkpoint
from mmpretrain.models.backbones import SwinTransformerV2

from mona_mm.models import (PEFTSwinTransformer, PEFTSwinTransformerV2, is_peft_backbone,
                            iter_adapters, replace_adapter)

ARCH = dict(embed_dims=32, depths=(2, 2), num_heads=(1, 2), extra_norm_every_n_blocks=0)
# (id, constructor kwargs, input size): windows, padding, absolute embedding, per-stage and
# pretrained window sizes, extra norms, frozen stages, checkpointed blocks, a default arch
CASES = [
    ('w4', dict(arch=ARCH, img_size=64, window_size=4, out_indices=(0, 1),
                drop_path_rate=0.2), (2, 3, 64, 64)),
    ('w8-pad-abs', dict(arch=ARCH, img_size=64, window_size=8, pad_small_map=True,
                        use_abs_pos_embed=True, out_indices=(1, ), drop_path_rate=0.2),
     (1, 3, 70, 90)),
    ('per-stage-pretrained-windows-extra-norm',
     dict(arch=dict(ARCH, extra_norm_every_n_blocks=1), img_size=64, window_size=[4, 2],
          pretrained_window_sizes=[2, 2], out_indices=(0, 1), drop_path_rate=0.1),
     (2, 3, 64, 64)),
    ('frozen-with-cp', dict(arch=ARCH, img_size=64, window_size=4, frozen_stages=0,
                            with_cp=True, out_indices=(0, 1)), (2, 3, 64, 64)),
    ('tiny-default', dict(arch='tiny', img_size=256), (1, 3, 256, 256)),
]
_BUFFERS = ('relative_position_index', 'relative_coords_table')


def _pair(kwargs, peft='Full'):
    torch.manual_seed(0)
    upstream = SwinTransformerV2(**kwargs)
    ours = PEFTSwinTransformerV2(peft=peft, **kwargs)
    # upstream's own load hook drops the re-computed buffers (its strict load of its own
    # state dict fails the same way), so they and the new adapters are the keys left out
    missing, unexpected = ours.load_state_dict(upstream.state_dict(), strict=False)
    assert not unexpected and all(k.endswith(_BUFFERS) or '.adapters.' in k for k in missing)
    return upstream, ours


def _run(model, x, seed):
    torch.manual_seed(seed)
    outs = model(x)
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)
    loss.backward()
    return outs


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_full_is_the_upstream_class_bit_for_bit(case):
    _, kwargs, size = case
    upstream, ours = _pair(kwargs)
    assert isinstance(ours, SwinTransformerV2) and is_peft_backbone(ours)
    assert list(ours.state_dict()) == list(upstream.state_dict())
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in upstream.named_modules()]
    x = torch.randn(*size)
    for mode in ('train', 'eval'):
        getattr(upstream, mode)()
        getattr(ours, mode)()
        upstream.zero_grad()
        ours.zero_grad()
        a, b = _run(upstream, x, 1), _run(ours, x, 1)
        assert all(torch.equal(i, j) for i, j in zip(a, b)) and len(a) == len(b)
        grads = {n: p.grad for n, p in upstream.named_parameters() if p.grad is not None}
        assert grads
        for n, p in ours.named_parameters():
            assert (p.grad is None) == (n not in grads), n
            if p.grad is not None:
                assert torch.equal(p.grad, grads[n]), n
        assert [p.requires_grad for p in ours.parameters()] == \
            [p.requires_grad for p in upstream.parameters()]


def test_full_builds_what_upstream_builds_with_bn_norms():
    # the upstream test file's norm_eval case: BN norms in the blocks
    kw = dict(arch='b', img_size=256, norm_eval=True, norm_cfg=dict(type='BN'),
              stage_cfgs=dict(block_cfgs=dict(norm_cfg=dict(type='BN'))))
    ours = PEFTSwinTransformerV2(peft='Full', **kw).train()
    assert isinstance(ours.stages[0].blocks[0].norm1, nn.BatchNorm2d)
    assert all(not m.training for m in ours.modules() if isinstance(m, nn.BatchNorm2d))


class Double(nn.Module):
    """A stand-in adapter with a known effect: twice its input."""

    def forward(self, x, hw_shape):
        return 2 * x


def _doubled(model):
    for name, _ in list(iter_adapters(model)):
        replace_adapter(model, name, Double())
    return model.eval()


def _by_hand(upstream, block_forward):
    for stage in upstream.stages:
        for block in stage.blocks:
            block.forward = types.MethodType(block_forward, block)
    upstream.eval()  # (upstream's train() returns None)
    return upstream


def _end(block, x):
    return block.norm3(x) if block.extra_norm else x


# what each method's points do in a post-norm block, written out (adapter = x -> 2x)
BY_HAND = {
    # Mona: after each residual add (the stream), as on V1
    'Mona': lambda b, x, hw: _end(b, 2 * (lambda s: s + b.norm2(b.ffn(s)))(
        2 * (x + b.norm1(b.attn(x, hw))))),
    # Adapter: on the attention output and the MLP output, before the closing norms
    'Adapter': lambda b, x, hw: _end(b, (lambda s: s + b.norm2(2 * b.ffn(s)))(
        x + b.norm1(2 * b.attn(x, hw)))),
    # AdaptFormer: beside the MLP, reading its input (the stream), added after norm2
    'AdaptFormer': lambda b, x, hw: _end(b, (lambda s: s + b.norm2(b.ffn(s)) + 2 * s)(
        x + b.norm1(b.attn(x, hw)))),
}


@pytest.mark.parametrize('method', sorted(BY_HAND))
@pytest.mark.parametrize('extra_norm', [0, 1])
def test_adapter_points_of_post_norm_blocks(method, extra_norm):
    kw = dict(arch=dict(ARCH, extra_norm_every_n_blocks=extra_norm), img_size=64,
              window_size=4, out_indices=(0, 1))
    upstream, ours = _pair(kw, peft=method)
    ours = _doubled(ours)
    upstream = _by_hand(upstream, BY_HAND[method])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours(x), upstream(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('method', ['Mona', 'Adapter', 'AdaptFormer', 'LoRAND', 'BitFit',
                                    'NormTuning', 'Partial'])
def test_each_method_trains_only_its_parameters(method):
    kw = dict(arch=ARCH, img_size=64, window_size=4, out_indices=(0, 1))
    upstream, model = _pair(kw, peft=method)
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and len(trainable) < len(list(model.parameters()))
    if method in ('Mona', 'Adapter', 'AdaptFormer', 'LoRAND'):
        assert all('.adapters.' in n for n in trainable)
        assert len(list(iter_adapters(model))) == 4 * (2 if method != 'AdaptFormer' else 1)
    _run(model, torch.randn(2, 3, 64, 64), 0)
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable


def test_lora_is_refused_naming_why():
    with pytest.raises(ValueError, match=r"LoRA needs a qkv projection; Swin V2 blocks name "
                       r"none \(Swin V2's window attention reads attn\.w_msa\.qkv\.weight .*"
                       r'never runs\)'):
        PEFTSwinTransformerV2(peft='LoRA', arch=ARCH, img_size=64, window_size=4,
                              out_indices=(1, ))


def test_pretrained_file_loads_every_tensor(tmp_path):
    # mmpretrain's Swin V2 checkpoints (its own layout), as a classifier's state dict
    kw = dict(arch=ARCH, img_size=64, window_size=4, out_indices=(0, 1))
    src = SwinTransformerV2(**kw)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / 'swinv2.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in src.state_dict().items()},
                'meta': {}}, path)
    ours = PEFTSwinTransformerV2(peft='Mona', init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix='backbone'), **kw)
    ours.init_weights()
    own = ours.state_dict()
    for k, v in src.state_dict().items():
        assert torch.equal(own[k], v), k
    # the same file through mmengine's load_checkpoint into a plain module
    again = PEFTSwinTransformerV2(peft='Mona', **kw)
    load_checkpoint(again, str(path), revise_keys=[(r'^backbone\.', '')])
    assert all(torch.equal(again.state_dict()[k], v) for k, v in src.state_dict().items())
    # and a V2 file given to the V1 class is refused, naming the V2 type
    with pytest.raises(ValueError, match='Swin V2 checkpoint.*PEFTSwinTransformerV2'):
        PEFTSwinTransformer(codebase='mmpretrain', peft='Mona', arch=dict(
            embed_dims=32, depths=(2, 2), num_heads=(1, 2)), img_size=64, out_indices=(1, ),
            init_cfg=dict(
                type='Pretrained', checkpoint=str(path), prefix='backbone')).init_weights()
