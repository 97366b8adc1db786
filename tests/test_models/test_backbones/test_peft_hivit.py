"""HiViT (mmpretrain ``HiViT``) with PEFT: Full is the installed upstream class bit for bit
(upstream's default structure, its tiny config, relative position bias, layer scale, dropouts,
two stages); adapters sit in the main-stage blocks only, at the points the spec names (checked
by hand with stand-in adapters, on the H/16 x W/16 grid of non-square inputs too); every method
trains only its parameters (LoRA through the ``qkv`` layer the attention calls); a pretrained
file loads every tensor."""
import types

import pytest
import torch
import torch.nn as nn
from mmpretrain.models.backbones import HiViT

from mona_mm.models import PEFTBackbone, iter_adapters, replace_adapter
from tests.test_models.test_backbones.peft_checks import (assert_same_outputs_and_gradients,
                                                        trainable_after_a_step, upstream_and_ours)

# depths[-1] - 1 (upstream's only working out index) must not be an early block's index
SMALL = dict(embed_dims=32, depths=[1, 1, 7], num_heads=2)
CASES = [
    # upstream's defaults (arch 'base': depths [2, 2, 24], ape, no rpe) at width 32
    ('default-structure', dict(arch=dict(embed_dims=32, depths=[2, 2, 24], num_heads=2),
                               img_size=64), (2, 3, 64, 64)),
    # mmpretrain's configs/_base_/models/hivit/tiny_224.py backbone, at 64 px
    ('tiny-config', dict(arch='tiny', img_size=64, ape=True, rpe=True, drop_path_rate=0.05),
     (1, 3, 64, 64)),
    ('rpe-layer-scale-dropout', dict(arch=SMALL, img_size=64, ape=False, rpe=True,
                                     layer_scale_init_value=0.1, drop_rate=0.1,
                                     attn_drop_rate=0.1, drop_path_rate=0.1, qkv_bias=False,
                                     patch_norm=False), (2, 3, 64, 64)),
    # two stages, a padded overlapping stem, a non-square input (position embedding resized)
    ('two-stages-non-square', dict(arch=dict(embed_dims=32, depths=[1, 4], num_heads=2),
                                   img_size=32, patch_size=8, inner_patches=2, kernel_size=5,
                                   pad_size=1, stem_mlp_ratio=2., mlp_ratio=2.,
                                   drop_path_rate=0.1), (2, 3, 32, 48)),
]


def _pair(case, peft='Full'):
    return upstream_and_ours(HiViT, case[1], peft)


def _main_blocks(model):
    return [(f'blocks.{i}', b) for i, b in enumerate(model.blocks)
            if getattr(b, 'attn', None) is not None]


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_full_is_the_upstream_class_bit_for_bit(case):
    upstream, ours = _pair(case)
    assert isinstance(ours, HiViT) and list(ours.state_dict()) == list(upstream.state_dict())
    assert ours.peft_blocks == [n for n, _ in _main_blocks(upstream)]
    assert_same_outputs_and_gradients(upstream, ours, torch.randn(*case[2]))


class Double(nn.Module):
    """A stand-in adapter with a known effect: twice its input; records the grids it gets."""

    def __init__(self, grids):
        super().__init__()
        self.grids = grids

    def forward(self, x, hw_shape):
        assert x.dim() == 3 and x.shape[1] == hw_shape[0] * hw_shape[1]
        self.grids.append(tuple(hw_shape))
        return 2 * x


def _gammas(block):
    return (1 if block.gamma_1 is None else block.gamma_1,
            1 if block.gamma_2 is None else block.gamma_2)


def _mona_doubled(block, x, rpe_index=None, mask=None):
    # the upstream main block with the stream doubled after each residual add
    g1, g2 = _gammas(block)
    x = 2 * (x + block.drop_path(g1 * block.attn(block.norm1(x), rpe_index, mask)))
    return 2 * (x + block.drop_path(g2 * block.mlp(block.norm2(x))))


def _adapter_doubled(block, x, rpe_index=None, mask=None):
    # Adapter: the attention and MLP outputs doubled (before the layer scale)
    g1, g2 = _gammas(block)
    x = x + block.drop_path(g1 * 2 * block.attn(block.norm1(x), rpe_index, mask))
    return x + block.drop_path(g2 * 2 * block.mlp(block.norm2(x)))


def _adaptformer_doubled(block, x, rpe_index=None, mask=None):
    # AdaptFormer: twice the MLP's input added beside the MLP
    g1, g2 = _gammas(block)
    x = x + block.drop_path(g1 * block.attn(block.norm1(x), rpe_index, mask))
    h = block.norm2(x)
    return x + block.drop_path(g2 * (block.mlp(h) + 2 * h))


BY_HAND = dict(Mona=(_mona_doubled, ('post_attn', 'post_mlp')),
               Adapter=(_adapter_doubled, ('attn_out', 'mlp_out')),
               AdaptFormer=(_adaptformer_doubled, ('mlp_parallel', )))


@pytest.mark.parametrize('peft', list(BY_HAND))
@pytest.mark.parametrize('case', [CASES[2], CASES[3]], ids=lambda c: c[0])
def test_points_by_hand(case, peft):
    forward, points = BY_HAND[peft]
    upstream, ours = _pair(case, peft=peft)
    main = [n for n, _ in _main_blocks(upstream)]
    # the main-stage blocks only: the MLP-only early blocks take no adapters
    assert [n for n, _ in iter_adapters(ours)] == \
        [f'{b}.adapters.{p}' for b in main for p in points]
    grids = []
    for name, _ in list(iter_adapters(ours)):
        replace_adapter(ours, name, Double(grids))
    for _, block in _main_blocks(upstream):
        block.forward = types.MethodType(forward, block)
    upstream.eval()
    ours.eval()
    x = torch.randn(*case[2])
    with torch.no_grad():
        expected, got = upstream(x), ours(x)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
    assert len(got) == len(expected) == 1
    # the main grid (of a non-square input too): H / patch x W / patch
    patch = case[1].get('patch_size', 16)
    assert set(grids) == {(x.shape[2] // patch, x.shape[3] // patch)}
    assert len(grids) == len(main) * len(points)


@pytest.mark.parametrize('peft', ['Mona', 'Adapter', 'AdaptFormer', 'LoRA', 'LoRAND',
                                  'BitFit', 'NormTuning', 'Partial'])
def test_each_method_trains_only_its_parameters(peft):
    case = CASES[2]  # without qkv bias: LoRA wraps a bias-free qkv layer
    _, model = _pair(case, peft=peft)
    trainable = trainable_after_a_step(model, torch.randn(*case[2]))
    if peft not in ('BitFit', 'NormTuning', 'Partial'):
        assert all('.adapters.' in n or 'lora_' in n for n in trainable)
        assert all(n.split('.')[1] in {b.split('.')[1] for b in model.peft_blocks}
                   for n in trainable)
    if peft == 'LoRA':  # the attention calls the wrapped qkv layer: q and v of every block
        assert len(trainable) == 2 * len(model.peft_blocks)
    if peft == 'Partial':
        assert trainable == {n for n, _ in model.named_parameters()
                             if n.startswith(model.peft_blocks[-1] + '.')}


def test_lora_with_qkv_bias_changes_the_output():
    case = CASES[0]
    upstream, ours = _pair(case, peft='LoRA')
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if 'lora_' in name:
                p.normal_()
    upstream.eval()
    ours.eval()
    x = torch.randn(*case[2])
    with torch.no_grad():
        assert not torch.allclose(upstream(x)[0], ours(x)[0])


def test_pretrained_file_loads_every_tensor(tmp_path):
    kwargs = CASES[2][1]
    src = HiViT(**kwargs)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / 'hivit.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, path)
    ours = PEFTBackbone(dict(type=HiViT, **kwargs, init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix='backbone')), peft='Mona')
    ours.init_weights()
    own = ours.state_dict()
    for k, v in src.state_dict().items():
        assert torch.equal(own[k], v), k
    assert ours.peft_pretrained_source == str(path)
