"""EVA-02 (mmpretrain ``ViTEVA02``) and BEiT (mmpretrain ``BEiTViT``, mmseg ``BEiT`` and
``MAE``) with PEFT: Full is the installed upstream class bit for bit; the ``stream`` point (Mona
after the attention residual of blocks that add the stream back in their own code, with one
drop path for both branches) is checked by hand; every method trains only its parameters (LoRA
refused on BEiT, naming why); pretrained files load every tensor."""
import types

import pytest
import torch
import torch.nn as nn
from mmpretrain.models.backbones import BEiTViT, ViTEVA02
from mmseg.models.backbones import BEiT, MAE

from mona_mm.models import PEFTBackbone, iter_adapters, replace_adapter
from tests.test_models.test_backbones.peft_checks import (assert_same_outputs_and_gradients,
                                                        trainable_after_a_step, upstream_and_ours)

PRETRAIN_ARCH = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
MMSEG = dict(img_size=64, patch_size=16, embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2,
             out_indices=(0, 1), drop_path_rate=0.1)
CASES = [
    ('eva02', ViTEVA02, dict(arch=PRETRAIN_ARCH, img_size=64, patch_size=16, out_type='featmap',
                             out_indices=(0, 1), drop_path_rate=0.1)),
    ('beit-mmpretrain-layer-scale', BEiTViT,
     dict(arch=PRETRAIN_ARCH, img_size=64, patch_size=16, out_type='featmap', out_indices=(0, 1),
          drop_path_rate=0.1, layer_scale_init_value=0.1)),
    ('beit-mmpretrain-no-scale', BEiTViT,
     dict(arch=PRETRAIN_ARCH, img_size=64, patch_size=16, out_type='featmap',
          layer_scale_init_value=0.0)),
    ('beit-mmseg', BEiT, MMSEG),
    ('mae-mmseg', MAE, MMSEG),
]
SIZE = (2, 3, 64, 64)


def _pair(case, peft='Full'):
    return upstream_and_ours(case[1], case[2], peft)


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_full_is_the_upstream_class_bit_for_bit(case):
    upstream, ours = _pair(case)
    assert isinstance(ours, case[1]) and list(ours.state_dict()) == list(upstream.state_dict())
    assert_same_outputs_and_gradients(upstream, ours, torch.randn(*SIZE))


class Double(nn.Module):
    """A stand-in adapter with a known effect: twice its input."""

    def forward(self, x, hw_shape):
        return 2 * x


def _eva02_doubled(block, x, patch_resolution):
    x = 2 * (x + block.drop_path(block.attn(block.norm1(x), patch_resolution)))
    return 2 * (x + block.drop_path(block.mlp(block.norm2(x))))


def _beit_mmpretrain_doubled(block, x, rel_pos_bias):
    g1 = 1 if block.gamma_1 is None else block.gamma_1
    g2 = 1 if block.gamma_2 is None else block.gamma_2
    x = 2 * (x + block.drop_path(g1 * block.attn(block.ln1(x), rel_pos_bias=rel_pos_bias)))
    return 2 * (x + block.drop_path(g2 * block.ffn(block.ln2(x))))


def _beit_mmseg_doubled(block, x):
    x = 2 * (x + block.drop_path(block.gamma_1 * block.attn(block.norm1(x))))
    return 2 * (x + block.drop_path(block.gamma_2 * block.ffn(block.norm2(x))))


BY_HAND = {ViTEVA02: _eva02_doubled, BEiTViT: _beit_mmpretrain_doubled,
           BEiT: _beit_mmseg_doubled, MAE: _beit_mmseg_doubled}


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_mona_stream_points_by_hand(case):
    upstream, ours = _pair(case, peft='Mona')
    assert len(list(iter_adapters(ours))) == 4
    for name, _ in list(iter_adapters(ours)):
        replace_adapter(ours, name, Double())
    for block in upstream.layers:
        block.forward = types.MethodType(BY_HAND[case[1]], block)
    upstream.eval()
    ours.eval()
    x = torch.randn(*SIZE)
    with torch.no_grad():
        for a, b in zip(ours(x), upstream(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize('case', [CASES[0], CASES[1], CASES[3]], ids=lambda c: c[0])
@pytest.mark.parametrize('peft', ['Mona', 'Adapter', 'AdaptFormer', 'LoRA', 'LoRAND', 'BitFit',
                                  'NormTuning', 'Partial'])
def test_each_method_trains_only_its_parameters(case, peft):
    if peft == 'LoRA' and case[1] is not ViTEVA02:
        with pytest.raises(ValueError, match=r"LoRA needs a qkv projection; BEiT blocks name "
                           r"none \(with q and v biases .* never run"):
            _pair(case, peft=peft)
        return
    _, model = _pair(case, peft=peft)
    trainable = trainable_after_a_step(model, torch.randn(*SIZE))
    if peft not in ('BitFit', 'NormTuning', 'Partial'):
        assert all('.adapters.' in n or 'lora_' in n for n in trainable)


@pytest.mark.parametrize('case', [CASES[0], CASES[3]], ids=lambda c: c[0])
def test_pretrained_file_loads_every_tensor(tmp_path, case):
    _, cls, kwargs = case
    src = cls(**kwargs)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / 'backbone.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, path)
    ours = PEFTBackbone(dict(type=cls, **kwargs, init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix='backbone')), peft='Mona')
    ours.init_weights()
    own = ours.state_dict()
    for k, v in src.state_dict().items():
        assert torch.equal(own[k], v), k


@pytest.mark.parametrize('case', [CASES[1], CASES[3]], ids=lambda c: c[0])
def test_checkpoints_of_another_size_are_resized_as_upstream_does(tmp_path, case):
    # a checkpoint trained at 64 px into a 96-px model: upstream resizes the position
    # embedding (mmpretrain) or the relative position tables (mmseg) when loading; so do we
    _, cls, kwargs = case
    src = cls(**kwargs)
    path = tmp_path / 'small.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, path)
    big = dict(kwargs, img_size=96)
    torch.manual_seed(0)
    upstream = cls(**big)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    if hasattr(upstream, 'resize_rel_pos_embed'):
        sd = upstream.resize_rel_pos_embed(sd)
    upstream.load_state_dict(sd, strict=False)
    ours = PEFTBackbone(dict(type=cls, **big, init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix='backbone')), peft='Mona')
    ours.init_weights()
    theirs = upstream.state_dict()
    resized = [k for k, v in src.state_dict().items() if v.shape != theirs[k].shape]
    assert resized
    for k, v in theirs.items():
        if k in src.state_dict():
            assert torch.equal(ours.state_dict()[k], v), k
