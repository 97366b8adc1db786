"""Bad configuration values give one clear error at construction, naming the field and what
is valid: the ``peft`` field (a bare method name is accepted), method hyper-parameters, and
the Swin / ViT stage and layer arguments the upstream classes take badly."""
import re

import pytest
import torch

from mona_mm.models import PEFTSwinTransformer, PEFTVisionTransformer, build_peft_method
from mona_mm.registry import PEFT_METHODS
from tests.conftest import NANO

METHODS = sorted(PEFT_METHODS.module_dict)


def _layout(bb):
    """What a built backbone is: its parameters, their shapes and which of them train."""
    return [(n, tuple(p.shape), p.requires_grad) for n, p in bb.named_parameters()]


# ------------------------------------------------------------------ 1. peft as a name
@pytest.mark.parametrize('name', METHODS)
def test_peft_given_as_a_name_equals_the_dict(name):
    torch.manual_seed(0)
    by_name = PEFTSwinTransformer(arch=NANO, peft=name)
    torch.manual_seed(0)
    by_dict = PEFTSwinTransformer(arch=NANO, peft=dict(type=name))
    assert type(by_name.peft_method) is type(by_dict.peft_method)
    assert _layout(by_name) == _layout(by_dict)
    for (k, a), (_, b) in zip(by_name.state_dict().items(), by_dict.state_dict().items()):
        assert torch.equal(a, b), k


def test_peft_name_in_vit_and_full_is_the_upstream_model():
    vit = PEFTVisionTransformer(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                          feedforward_channels=64), img_size=32,
                                patch_size=8, peft='Mona')
    assert type(vit.peft_method).__name__ == 'MonaMethod'
    full = PEFTSwinTransformer(arch=NANO, peft='Full')
    assert not any('adapters' in n for n, _ in full.named_parameters())
    assert all(p.requires_grad for p in full.parameters())


def test_bad_peft_values_name_the_choices():
    with pytest.raises(KeyError, match=r"'Monaa' is not a registered PEFT method; known: "
                       r".*'Mona'"):
        build_peft_method('Monaa')
    with pytest.raises(KeyError, match='peft has no `type`'):
        build_peft_method(dict(hidden_dims=8))
    with pytest.raises(TypeError, match=r"peft must be a method name, a dict with `type` or "
                       r"None, got int 3"):
        build_peft_method(3)
    with pytest.raises(TypeError, match=r"Mona: unknown argument\(s\) \['rank'\]; it takes "
                       r"\['hidden_dims', 'kernel_sizes', 'dropout'\]"):
        build_peft_method(dict(type='Mona', rank=4))
    with pytest.raises(TypeError, match=r"Full: unknown argument\(s\) \['rank'\]; it takes "
                       'no arguments'):
        build_peft_method(dict(type='Full', rank=4))


# ------------------------------------------------------------------ 2. method arguments
BAD_METHOD_ARGS = [
    # (method, field, bad value, what the message says is valid)
    ('Mona', 'hidden_dims', 0, 'a positive int'),
    ('Mona', 'hidden_dims', -8, 'a positive int'),
    ('Mona', 'hidden_dims', 8.0, 'a positive int'),
    ('Mona', 'hidden_dims', True, 'a positive int'),
    ('Mona', 'kernel_sizes', (3, 4), 'a non-empty sequence of odd positive ints'),
    ('Mona', 'kernel_sizes', (), 'a non-empty sequence of odd positive ints'),
    ('Mona', 'kernel_sizes', (-3, ), 'a non-empty sequence of odd positive ints'),
    ('Mona', 'kernel_sizes', 3, 'a non-empty sequence of odd positive ints'),
    ('Mona', 'dropout', 1.0, r'a probability in \[0, 1\)'),
    ('Mona', 'dropout', -0.1, r'a probability in \[0, 1\)'),
    ('MonaReference', 'kernel_sizes', (2, ), 'a non-empty sequence of odd positive ints'),
    ('MonaReference', 'hidden_dims', 0, 'a positive int'),
    ('Adapter', 'hidden_dims', 0, 'a positive int'),
    ('Adapter', 'hidden_dims', 16.5, 'a positive int'),
    ('Adapter', 'dropout', 1.5, r'a probability in \[0, 1\)'),
    ('AdaptFormer', 'hidden_dims', -1, 'a positive int'),
    ('AdaptFormer', 'scale', 0, 'a finite number > 0'),
    ('AdaptFormer', 'scale', -0.1, 'a finite number > 0'),
    ('AdaptFormer', 'dropout', 1, r'a probability in \[0, 1\)'),
    ('LoRA', 'rank', 0, 'a positive int'),
    ('LoRA', 'rank', -4, 'a positive int'),
    ('LoRA', 'rank', 4.0, 'a positive int'),
    ('LoRA', 'alpha', 0, 'a finite number > 0'),
    ('LoRA', 'alpha', float('nan'), 'a finite number > 0'),
    ('LoRA', 'parts', 'qq', "distinct letters of 'qkv'"),
    ('LoRA', 'parts', '', "distinct letters of 'qkv'"),
    ('LoRand', 'branches', 0, 'a positive int'),
    ('LoRand', 'inner', 0, 'a positive int'),
    ('LoRand', 'inner', -2, 'a positive int'),
    ('Partial', 'num_blocks', 0, 'a positive int'),
    ('Partial', 'num_blocks', 1.5, 'a positive int'),
]


@pytest.mark.parametrize('method,field,value,valid', BAD_METHOD_ARGS)
def test_bad_method_arguments_fail_at_construction(method, field, value, valid):
    pattern = rf'^{method}: {field} must be {valid}.*\(got {re.escape(repr(value))}\)$'
    with pytest.raises(ValueError, match=pattern):
        build_peft_method(dict(type=method, **{field: value}))
    with pytest.raises(ValueError, match=pattern):  # and so does the backbone
        PEFTSwinTransformer(arch=NANO, peft=dict(type=method, **{field: value}))


def test_mona_kernel_message_as_documented():
    with pytest.raises(ValueError) as err:
        build_peft_method(dict(type='Mona', kernel_sizes=(3, 4)))
    assert str(err.value) == ('Mona: kernel_sizes must be a non-empty sequence of odd '
                              'positive ints, e.g. (3, 5, 7) (got (3, 4))')


def test_valid_method_arguments_still_build():
    mona = build_peft_method(dict(type='Mona', hidden_dims=8, kernel_sizes=[3, 5],
                                  dropout=0.0))
    assert mona.kernel_sizes == (3, 5) and mona.hidden_dims == 8
    lora = build_peft_method(dict(type='LoRA', rank=2, alpha=2.0, parts=['q', 'k']))
    assert lora.parts == (0, 1)
    assert build_peft_method(dict(type='AdaptFormer', scale=0.5)).scale == 0.5
    bb = PEFTSwinTransformer(arch=NANO, peft=dict(type='Partial', num_blocks=8))
    assert any(p.requires_grad for p in bb.stages[0].parameters())


def test_partial_with_more_blocks_than_the_backbone():
    with pytest.raises(ValueError, match=r"^Partial: num_blocks must be at most the "
                       r"backbone's 8 blocks \(got 9\)$"):
        PEFTSwinTransformer(arch=NANO, peft=dict(type='Partial', num_blocks=9))


# ------------------------------------------------------------------ 3. Swin arguments
SWIN = ('mmdet', 'mmseg', 'mmpretrain')


def _swin(codebase, **kw):
    kw.setdefault('arch', dict(NANO))
    return PEFTSwinTransformer(codebase=codebase, peft='Full', **kw)


@pytest.mark.parametrize('codebase', SWIN)
@pytest.mark.parametrize('out_indices', [(4, ), (0, 5), (), (-1, ), 3, (0.0, )])
def test_swin_out_indices_out_of_range(codebase, out_indices):
    with pytest.raises(ValueError, match=rf'^PEFTSwinTransformer \({codebase}\): out_indices '
                       r'must be a non-empty sequence of stage indices in \[0, 4\) .*\(got '
                       + re.escape(repr(out_indices)) + r'\)$'):
        _swin(codebase, out_indices=out_indices)


@pytest.mark.parametrize('codebase,top', [('mmdet', 4), ('mmseg', 4), ('mmpretrain', 3)])
def test_swin_frozen_stages_range(codebase, top):
    for bad in (top + 1, -2, 1.0):
        with pytest.raises(ValueError, match=rf'^PEFTSwinTransformer \({codebase}\): '
                           rf'frozen_stages must be an int from -1 \(nothing frozen\) to '
                           rf'{top} \(all 4 stages frozen\) \(got {bad!r}\)$'):
            _swin(codebase, frozen_stages=bad)
    # the upstream meaning of the valid extremes is kept: everything frozen, train() works
    bb = _swin(codebase, frozen_stages=top, out_indices=(0, 1, 2, 3)).train()
    assert not any(p.requires_grad for n, p in bb.named_parameters())
    small = dict(pad_small_map=True) if codebase == 'mmpretrain' else {}
    assert len(_swin(codebase, frozen_stages=-1, out_indices=(1, 3), **small)(
        torch.randn(1, 3, 64, 64))) == 2


@pytest.mark.parametrize('codebase', SWIN)
def test_swin_depths_and_heads_of_different_lengths(codebase):
    for depths, heads in [((2, 2, 2), (1, 2, 4, 8)), ((2, 2, 2, 2), (1, 2)),
                          ((), ())]:
        arch = dict(embed_dims=32, depths=depths, num_heads=heads)
        with pytest.raises(ValueError, match=r'must give depths and num_heads as non-empty '
                           r'sequences of the same length, one entry per stage \(got '
                           + re.escape(f'depths={depths!r}, num_heads={heads!r})')):
            _swin(codebase, arch=arch, out_indices=(0, ))


def test_swin_depths_and_heads_as_mmdet_arguments():
    with pytest.raises(ValueError, match=r'^PEFTSwinTransformer \(mmdet\): depths/num_heads '
                       'must give'):
        PEFTSwinTransformer(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4),
                            peft='Full')
    # five stages need five strides (mmdet/mmseg default to four)
    with pytest.raises(ValueError, match=r'strides needs an entry per stage, 5 for '
                       r'depths=\(1, 1, 1, 1, 1\) \(got strides=\(4, 2, 2, 2\)\)'):
        PEFTSwinTransformer(embed_dims=16, depths=(1, ) * 5, num_heads=(1, ) * 5,
                            out_indices=(4, ), peft='Full')


@pytest.mark.parametrize('codebase', SWIN)
def test_swin_heads_must_divide_the_stage_channels(codebase):
    arch = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 6))
    with pytest.raises(ValueError, match=r'num_heads\[3\]=6 must divide the 256 channels of '
                       r'stage 3'):
        _swin(codebase, arch=arch)


# ------------------------------------------------------------------ 3. ViT arguments
TINY_VIT = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)


def _vit(codebase, **kw):
    if codebase == 'mmpretrain':
        kw.setdefault('arch', dict(TINY_VIT))
    else:
        kw = dict(dict(embed_dims=32, num_layers=2, num_heads=2), **kw)
    return PEFTVisionTransformer(codebase=codebase, img_size=32, patch_size=8, peft='Full',
                                 **kw)


@pytest.mark.parametrize('out_indices', [2, [0, 2], [], (2, )])
def test_mmpretrain_vit_out_indices(out_indices):
    # what upstream accepts and never outputs (index == num_layers, nothing)
    with pytest.raises(ValueError, match=r'^PEFTVisionTransformer \(mmpretrain\): '
                       r'out_indices must be a layer index or a non-empty sequence of them, '
                       r'each in \[-2, 2\) for 2 layers \(got '
                       + re.escape(repr(out_indices)) + r'\)$'):
        _vit('mmpretrain', out_indices=out_indices)


@pytest.mark.parametrize('out_indices', [-3, (5, ), 3, 1.0, None, [0, 'x']])
def test_vit_out_indices_upstream_refuses_keep_its_exception(out_indices):
    # what the installed upstream class refuses itself raises the same exception type here
    from mmpretrain.models.backbones import VisionTransformer
    kw = dict(arch=dict(TINY_VIT), img_size=32, patch_size=8, out_indices=out_indices)
    with pytest.raises(Exception) as upstream:
        VisionTransformer(**kw)
    with pytest.raises(type(upstream.value)):
        _vit('mmpretrain', out_indices=out_indices)


@pytest.mark.parametrize('out_indices', [1., 'a', None])
def test_mmseg_vit_out_indices_upstream_refuses_keep_its_exception(out_indices):
    from mmseg.models.backbones import VisionTransformer
    kw = dict(embed_dims=32, num_layers=2, num_heads=2, img_size=32, patch_size=8,
              out_indices=out_indices)
    with pytest.raises(TypeError, match='out_indices must be type of int, list or tuple'):
        VisionTransformer(**kw)
    with pytest.raises(TypeError, match='out_indices must be type of int, list or tuple'):
        _vit('mmseg', out_indices=out_indices)


def test_mmpretrain_vit_negative_indices_are_valid():
    x = torch.randn(1, 3, 32, 32)
    ref = _vit('mmpretrain', out_indices=[0, 1], out_type='featmap').eval()
    for given in (-1, [-2, -1], (-2, -1), (0, -1)):  # a tuple failed upstream (TypeError)
        bb = _vit('mmpretrain', out_indices=given, out_type='featmap').eval()
        bb.load_state_dict(ref.state_dict())
        outs = bb(x)
        assert len(outs) == (1 if given == -1 else 2)
        torch.testing.assert_close(outs[-1], ref(x)[-1])


def test_mmpretrain_vit_frozen_stages_and_heads():
    for bad in (3, -2):
        with pytest.raises(ValueError, match=r'^PEFTVisionTransformer \(mmpretrain\): '
                           r'frozen_stages must be an int from -1 \(nothing frozen\) to 2 '
                           rf'\(all layers frozen\) \(got {bad}\)$'):
            _vit('mmpretrain', frozen_stages=bad)
    bb = _vit('mmpretrain', frozen_stages=2).train()
    assert not any(p.requires_grad for p in bb.layers.parameters())
    with pytest.raises(ValueError, match=r'num_heads=3 must divide embed_dims=32'):
        _vit('mmpretrain', arch=dict(TINY_VIT, num_heads=3))


@pytest.mark.parametrize('out_indices', [2, -2, [2], [-1], [], (0, 5), [0.5]])
def test_mmseg_vit_out_indices(out_indices):
    # what upstream accepts and never outputs
    with pytest.raises(ValueError, match=r'^PEFTVisionTransformer \(mmseg\): out_indices '
                       r'must be -1 \(the last layer\), a layer index in \[0, 2\) or a '
                       r'non-empty list of them .*\(got ' + re.escape(repr(out_indices))
                       + r'\)$'):
        _vit('mmseg', out_indices=out_indices)


def test_mmseg_vit_valid_out_indices():
    x = torch.randn(1, 3, 32, 32)
    assert len(_vit('mmseg', out_indices=-1)(x)) == 1
    assert len(_vit('mmseg', out_indices=[0, 1])(x)) == 2
    assert len(_vit('mmseg', out_indices=[], out_origin=True)(x)) == 1
