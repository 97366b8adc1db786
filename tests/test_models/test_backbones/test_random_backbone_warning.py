"""A PEFT backbone that starts training with frozen random weights says so, once; the
README's one-name slugs build the methods they name."""
import logging

import pytest
import torch
from mmengine.optim import build_optim_wrapper

from mona_mm.models import PEFTSwinTransformer
from mona_mm.models.backbones.injection import build_peft_method, peft_method_config
from mona_mm.registry import PEFT_METHODS
from mona_mm.utils import save_checkpoint_file
from tests.conftest import NANO, logged_lines


def _warnings():
    return logged_lines(logging.WARNING)


def _random_backbone_warnings(lines):
    return [line for line in lines if 'NO pretrained weights' in line]


def _step(bb):
    """What a runner does: train(), then forward in training mode."""
    bb.train()
    bb(torch.randn(1, 3, 32, 32))


def test_mona_without_pretrained_weights_warns_once_naming_the_fix():
    bb = PEFTSwinTransformer(arch=NANO, peft='Mona')
    with _warnings() as lines:
        bb.eval()
        bb(torch.randn(1, 3, 32, 32))  # inference says nothing
        assert not _random_backbone_warnings(lines)
        _step(bb)
        _step(bb)
    found = _random_backbone_warnings(lines)
    assert len(found) == 1, lines
    assert "init_cfg=dict(type='Pretrained'" in found[0] and 'load_from' in found[0]
    assert 'frozen random backbone' in found[0]
    assert bb.peft_pretrained_source is None


def test_no_warning_for_full_or_loaded_weights(tmp_path):
    torch.manual_seed(0)
    src = PEFTSwinTransformer(arch=NANO, peft='Full')
    path = str(tmp_path / 'swin.pth')
    save_checkpoint_file({'state_dict': dict(src.state_dict())}, path)
    pretrained = PEFTSwinTransformer(
        arch=NANO, peft='Mona', init_cfg=dict(type='Pretrained', checkpoint=path))
    pretrained.init_weights()
    state_dict = PEFTSwinTransformer(arch=NANO, peft='Mona')
    state_dict.load_state_dict(src.state_dict(), strict=False)  # load_from / resume
    # the runner's order: the optimizer constructor calls train() before any weights load
    late = PEFTSwinTransformer(arch=NANO, peft='Mona')
    with _warnings() as lines:
        build_optim_wrapper(late, dict(constructor='mona_mm.PEFTOptimWrapperConstructor',
                                       optimizer=dict(type='AdamW', lr=1e-3)))
        late.load_state_dict(src.state_dict(), strict=False)  # load_from, after train()
        for bb in (src, pretrained, state_dict, late):
            _step(bb)
    assert not _random_backbone_warnings(lines), lines
    assert pretrained.peft_pretrained_source == path
    assert state_dict.peft_pretrained_source == 'state dict'


def test_the_first_train_after_loading_checks_and_compiled_forwards_never_recompile_for_it():
    """Under torch.compile the check is not traced (its flag would be a guard: a second
    compile of every forward); the loop's train() says it instead."""
    torch._dynamo.reset()
    compiles = []

    def backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    bb = PEFTSwinTransformer(arch=NANO, peft='Mona')
    fn = torch.compile(bb, backend=backend)
    x = torch.randn(1, 3, 32, 32)
    with _warnings() as lines:
        bb.train()
        fn(x)
        fn(x)
        bb.eval()
        bb.train()
        fn(x)
    assert len(_random_backbone_warnings(lines)) == 1, lines
    assert len(compiles) == 1


@pytest.mark.parametrize('given,expected', [
    ('mona', dict(type='Mona')),
    (dict(type='mona', hidden_dims=16), dict(type='Mona', hidden_dims=16)),
    ('norm-tuning', dict(type='NormTuning')),
    (dict(type='partial-2'), dict(type='Partial', num_blocks=2)),
])
def test_slugs_build_the_registered_method(given, expected):
    method = build_peft_method(given)
    assert type(method) is PEFT_METHODS.get(expected['type'])
    config = peft_method_config(given)
    assert {k: config[k] for k in expected} == expected


def test_slug_backbone_matches_registered_one():
    by_slug = PEFTSwinTransformer(arch=NANO, peft=dict(type='mona'))
    by_name = PEFTSwinTransformer(arch=NANO, peft='Mona')  # registered names keep working
    assert by_slug.peft_cfg == by_name.peft_cfg
    assert type(by_slug.peft_method) is type(by_name.peft_method)


def test_unknown_name_lists_both_spellings():
    with pytest.raises(KeyError, match=r"'monaa' is not a registered PEFT method; known: "
                       r".*'Mona'.*'NormTuning'.*slugs.*'norm-tuning'.*'mona'"):
        build_peft_method('monaa')
