"""Per method: the trainable set is exactly the intended one, and its size follows from the
method's definition (derived here independently of the implementation)."""
import pytest
import torch
import torch.nn as nn

from mona_mm.models import PEFTSwinTransformer, merge_lora
from mona_mm.utils import count_trainable
from tests.conftest import NANO

LARGE = dict(dims=[192, 384, 768, 1536], depths=[2, 2, 18, 2], heads=[6, 12, 24, 48])
W = 7  # window size


def _blocks(arch=LARGE):
    for C, d, h in zip(arch['dims'], arch['depths'], arch['heads']):
        for _ in range(d):
            yield C, h


def _bitfit(arch=LARGE):
    n = arch['dims'][0] * 2  # patch_embed conv bias + its norm bias
    for C, h in _blocks(arch):
        # qkv, proj, fc1, fc2 biases + norm1/norm2 biases + relative position table
        n += 3 * C + C + 4 * C + C + 2 * C + (2 * W - 1)**2 * h
    n += sum(4 * C for C in arch['dims'][:-1])  # patch-merging norms (on 4C)
    n += sum(arch['dims'])  # output norms
    return n


def _norm(arch=LARGE):
    n = 2 * arch['dims'][0] + sum(4 * C for C, _ in _blocks(arch))
    n += sum(2 * 4 * C for C in arch['dims'][:-1]) + sum(2 * C for C in arch['dims'])
    return n


def _partial1(arch=LARGE):
    C, h = arch['dims'][-1], arch['heads'][-1]
    return (3 * C * C + 3 * C) + (C * C + C) + (2 * W - 1)**2 * h + 4 * C + \
        (4 * C * C + 4 * C) + (4 * C * C + C)


EXPECTED_LARGE = {
    'Fixed': 0,
    'BitFit': _bitfit(),
    'NormTuning': _norm(),
    'Partial': _partial1(),
    'Adapter': 4_659_456,  # published
    'AdaptFormer': 2_329_728,  # published
    'LoRA': 4_620_288,  # published
    'Mona': 5_267_712,  # published
    'LoRand': sum(2 * (2 * 4 * (C * 8 + 64 + 8 * C // 2)) for C, _ in _blocks()),
}


@pytest.fixture(scope='module')
def large_total():
    return count_trainable(PEFTSwinTransformer(arch='large', peft=dict(type='Full')))


@pytest.mark.parametrize('method', sorted(EXPECTED_LARGE))
def test_swin_large_trainable_counts(method):
    bb = PEFTSwinTransformer(arch='large', peft=dict(type=method))
    assert count_trainable(bb)['backbone_trainable'] == EXPECTED_LARGE[method]


def test_full_trains_everything(large_total):
    assert large_total['backbone_trainable'] == large_total['backbone_total'] > 190_000_000


def _trainable(method, **kw):
    bb = PEFTSwinTransformer(arch=NANO, peft=dict(type=method, **kw)).train()
    return {n for n, p in bb.named_parameters() if p.requires_grad}, bb


def test_trainable_sets_are_exactly_the_intended_ones():
    names, bb = _trainable('BitFit')
    assert names == {n for n, _ in bb.named_parameters() if n.endswith('bias')
                     or n.endswith('relative_position_bias_table')}
    names, bb = _trainable('NormTuning')
    ln = {n + '.' + p for n, m in bb.named_modules() if isinstance(m, nn.LayerNorm)
          for p in ('weight', 'bias')}
    assert names == ln
    names, bb = _trainable('Partial')
    assert names == {'stages.3.blocks.1.' + n for n, _ in bb.stages[3].blocks[1].named_parameters()}
    names, bb = _trainable('LoRA')
    assert names and all(n.split('.')[-1] in ('lora_A', 'lora_B') for n in names)
    assert not bb.stages[0].blocks[0].attn.w_msa.qkv.weight.requires_grad
    for method, points in (('Adapter', {'attn_out', 'mlp_out'}),
                           ('AdaptFormer', {'mlp_parallel'}), ('LoRand', {'attn_out', 'mlp_out'}),
                           ('Mona', {'post_attn', 'post_mlp'})):
        names, bb = _trainable(method)
        assert names == {n for n, _ in bb.named_parameters() if '.adapters.' in n}
        assert set(bb.stages[0].blocks[0].adapters) == points


@pytest.mark.parametrize('method', ['Adapter', 'AdaptFormer', 'LoRA', 'LoRand'])
def test_fresh_zero_init_adapters_keep_pretrained_function(method):
    """Adapters whose last layer starts at zero leave the network unchanged at step 0."""
    torch.manual_seed(0)
    ref = PEFTSwinTransformer(arch=NANO, peft=dict(type='Fixed')).eval()
    bb = PEFTSwinTransformer(arch=NANO, peft=dict(type=method)).eval()
    bb.load_state_dict(ref.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(ref(x), bb(x)):
        torch.testing.assert_close(a, b)


def test_lora_merge_same_outputs():
    torch.manual_seed(0)
    bb = PEFTSwinTransformer(arch=NANO, peft=dict(type='LoRA', rank=4, alpha=8)).eval()
    with torch.no_grad():
        for n, p in bb.named_parameters():
            if n.endswith('lora_B'):
                p.normal_(0, 0.5)
    x = torch.randn(2, 3, 64, 64)
    before = bb(x)
    assert merge_lora(bb) == 8
    assert not any('lora_' in n for n, _ in bb.named_parameters())
    for a, b in zip(before, bb(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_lora_rejects_bad_parts():
    with pytest.raises(ValueError, match="letters of 'qkv'"):
        PEFTSwinTransformer(arch=NANO, peft=dict(type='LoRA', parts='qx'))


def test_lora_keeps_pretrained_keys():
    bb = PEFTSwinTransformer(arch=NANO, peft=dict(type='LoRA'))
    keys = set(bb.state_dict())
    assert 'stages.0.blocks.0.attn.w_msa.qkv.weight' in keys
    assert 'stages.0.blocks.0.attn.w_msa.qkv.lora_A' in keys
