"""SegFormer's MiT (mmseg ``MixVisionTransformer``) and PVT v1/v2 (mmdet) with PEFT: Full is the
installed upstream class bit for bit (the codebases' default small configs); every method
builds its adapters on the spatial-reduction blocks and trains only them; LoRA starts as the
plain model (the reduced keys and values included); pretrained files load every tensor."""
import pytest
import torch
from mmdet.models.backbones import PyramidVisionTransformer, PyramidVisionTransformerV2
from mmseg.models.backbones import MixVisionTransformer

from mona_mm.models import PEFTBackbone, is_peft_backbone, iter_adapters
from tests.test_models.test_backbones.peft_checks import (assert_same_outputs_and_gradients,
                                                        trainable_after_a_step, upstream_and_ours)

# (id, class, kwargs): mmseg's segformer_mit-b0 backbone, a MiT with checkpointed blocks and
# dropout, mmdet's PVT-tiny and PVTv2-b0 (narrowed where noted to keep the test small)
CASES = [
    ('mit-b0', MixVisionTransformer,
     dict(in_channels=3, embed_dims=32, num_stages=4, num_layers=[2, 2, 2, 2],
          num_heads=[1, 2, 5, 8], patch_sizes=[7, 3, 3, 3], sr_ratios=[8, 4, 2, 1],
          out_indices=(0, 1, 2, 3), mlp_ratio=4, qkv_bias=True, drop_rate=0.0,
          attn_drop_rate=0.0, drop_path_rate=0.1)),
    ('mit-cp-dropout', MixVisionTransformer,
     dict(embed_dims=16, num_layers=[1, 2, 1, 1], num_heads=[1, 1, 2, 2], with_cp=True,
          drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.2, out_indices=(1, 3))),
    ('pvt-tiny-narrow', PyramidVisionTransformer,
     dict(embed_dims=16, num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8],
          drop_path_rate=0.1)),
    ('pvtv2-b0', PyramidVisionTransformerV2,
     dict(embed_dims=32, num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8],
          drop_path_rate=0.1)),
]
SIZE = (2, 3, 64, 64)


def _pair(case, peft='Full'):
    return upstream_and_ours(case[1], case[2], peft)


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_full_is_the_upstream_class_bit_for_bit(case):
    upstream, ours = _pair(case)
    assert isinstance(ours, case[1]) and is_peft_backbone(ours)
    assert list(ours.state_dict()) == list(upstream.state_dict())
    assert_same_outputs_and_gradients(upstream, ours, torch.randn(*SIZE))


ADAPTERS = {'Mona': 2, 'Adapter': 2, 'AdaptFormer': 1, 'LoRAND': 2}


@pytest.mark.parametrize('case', [CASES[0], CASES[2], CASES[3]], ids=lambda c: c[0])
@pytest.mark.parametrize('peft', ['Mona', 'Adapter', 'AdaptFormer', 'LoRA', 'LoRAND',
                                  'BitFit', 'NormTuning', 'Partial'])
def test_each_method_trains_only_its_parameters(case, peft):
    _, model = _pair(case, peft=peft)
    blocks = model.peft_blocks
    assert len(blocks) == 8 and all(type(model.get_submodule(b)).__name__ in (
        'TransformerEncoderLayer', 'PVTEncoderLayer') for b in blocks)
    if peft in ADAPTERS:
        assert len(list(iter_adapters(model))) == ADAPTERS[peft] * len(blocks)
    trainable = trainable_after_a_step(model, torch.randn(*SIZE))
    if peft in ADAPTERS or peft == 'LoRA':
        assert all('.adapters.' in n or 'lora_' in n for n in trainable)


@pytest.mark.parametrize('case', [CASES[0], CASES[3]], ids=lambda c: c[0])
def test_lora_starts_as_the_plain_model(case):
    # LoRA's update is merged into the attention's in_proj_weight: with B = 0 the queries and
    # the spatially reduced keys and values are exactly the upstream ones
    upstream, lora = _pair(case, peft='LoRA')
    assert len(list(iter_adapters(lora))) == 8
    upstream.eval()
    lora.eval()
    x = torch.randn(*SIZE)
    with torch.no_grad():
        for a, b in zip(upstream(x), lora(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # kernels differ


@pytest.mark.parametrize('case', [CASES[0], CASES[3]], ids=lambda c: c[0])
def test_pretrained_file_loads_every_tensor(tmp_path, case):
    # the codebase's layout (mmseg's converted SegFormer files, mmdet's PVT), as a whole
    # model's state dict
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
