"""SAM's image encoder (mmpretrain ``ViTSAM``, (B, H, W, C) maps) with PEFT: Full is the
installed upstream class bit for bit (windowed and global attention, relative positions, the
channel-reduction neck); Mona sits after each residual on the block's map (checked by hand);
every method trains only its parameters; pretrained files load every tensor."""
import types

import pytest
import torch
import torch.nn as nn
from mmpretrain.models.backbones import ViTSAM
from mmpretrain.models.backbones.vit_sam import window_partition, window_unpartition

from mona_mm.models import PEFTBackbone, iter_adapters, replace_adapter
from tests.test_models.test_backbones.peft_checks import (assert_same_outputs_and_gradients,
                                                        trainable_after_a_step, upstream_and_ours)

ARCH = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64,
            global_attn_indexes=[1, 3])
CASES = [
    ('windowed-relpos-neck', dict(arch=ARCH, img_size=64, patch_size=8, window_size=3,
                                  out_channels=16, drop_path_rate=0.1)),
    ('global-abs-only', dict(arch=ARCH, img_size=64, patch_size=8, window_size=0,
                             use_rel_pos=False, out_channels=0, out_indices=(1, 3))),
]
SIZE = (2, 3, 64, 64)


def _pair(kwargs, peft='Full'):
    return upstream_and_ours(ViTSAM, kwargs, peft)


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_full_is_the_upstream_class_bit_for_bit(case):
    upstream, ours = _pair(case[1])
    assert isinstance(ours, ViTSAM) and list(ours.state_dict()) == list(upstream.state_dict())
    assert_same_outputs_and_gradients(upstream, ours, torch.randn(*SIZE))


class Double(nn.Module):
    """A stand-in adapter with a known effect: twice its input (checks the grid too)."""

    def forward(self, x, hw_shape):
        assert x.dim() == 3 and x.shape[1] == hw_shape[0] * hw_shape[1]
        return 2 * x


def _sam_block_doubled(block, x):
    # the upstream block's forward with the stream doubled after each residual add
    shortcut = x
    x = block.ln1(x)
    if block.window_size > 0:
        H, W = x.shape[1], x.shape[2]
        x, pad_hw = window_partition(x, block.window_size)
    x = block.attn(x)
    if block.window_size > 0:
        x = window_unpartition(x, block.window_size, pad_hw, (H, W))
    x = 2 * (shortcut + x)
    return 2 * block.ffn(block.ln2(x), identity=x)


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_mona_points_by_hand(case):
    upstream, ours = _pair(case[1], peft='Mona')
    assert len(list(iter_adapters(ours))) == 8
    for name, _ in list(iter_adapters(ours)):
        replace_adapter(ours, name, Double())
    for block in upstream.layers:
        block.forward = types.MethodType(_sam_block_doubled, block)
    upstream.eval()
    ours.eval()
    x = torch.randn(*SIZE)
    with torch.no_grad():
        for a, b in zip(ours(x), upstream(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize('peft', ['Mona', 'Adapter', 'AdaptFormer', 'LoRA', 'LoRAND',
                                  'BitFit', 'NormTuning', 'Partial'])
def test_each_method_trains_only_its_parameters(peft):
    _, model = _pair(CASES[0][1], peft=peft)
    trainable = trainable_after_a_step(model, torch.randn(*SIZE))
    if peft not in ('BitFit', 'NormTuning', 'Partial'):
        assert all('.adapters.' in n or 'lora_' in n for n in trainable)


def test_pretrained_file_loads_every_tensor(tmp_path):
    kwargs = CASES[0][1]
    src = ViTSAM(**kwargs)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / 'sam.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, path)
    ours = PEFTBackbone(dict(type=ViTSAM, **kwargs, init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix='backbone')), peft='Mona')
    ours.init_weights()
    own = ours.state_dict()
    assert all(torch.equal(own[k], v) for k, v in src.state_dict().items())
