"""Our types resolve from the mmdet, mmseg and mmpretrain scopes as ``mona_mm.<Type>``."""
import pytest
from mmengine.registry import DefaultScope

from mona_mm.models import PEFTSwinTransformer, is_peft_backbone
from tests.conftest import NANO


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_build_from_downstream_scope(scope):
    import importlib
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        bb = registry.build(dict(type='mona_mm.PEFTSwinTransformer', arch=NANO))
    # the scope's own Swin, adapters added
    assert is_peft_backbone(bb) and type(bb).__mro__[2].__module__.split('.')[0] == scope
    assert registry.get('mona_mm.PEFTSwinTransformer') is PEFTSwinTransformer


def test_registries_are_children_of_mmengine_root():
    from mmengine.registry import MODELS as ROOT

    from mona_mm.registry import MODELS
    assert MODELS.parent is ROOT
    assert MODELS.scope == 'mona_mm'
    assert 'mona_mm' in ROOT.children
