"""A missing pretrained file that the config names itself (not in the MONA_MM_PRETRAINED
folder, e.g. an upstream config's ``pretrain/...``) gets the overrides that help, not the
environment variable, which cannot move it."""
import pytest

from mona_mm.utils.pretrained import ENV_VAR, missing_pretrained_message
from tests.conftest import NANO


@pytest.mark.parametrize('env', [None, '/weights'])
def test_hard_coded_path_names_the_overrides(monkeypatch, env):
    from mona_mm.models import PEFTSwinTransformer
    if env:
        monkeypatch.setenv(ENV_VAR, env)
    else:
        monkeypatch.delenv(ENV_VAR, raising=False)
    path = 'pretrain/swin_large_patch4_window7_224_22k.pth'
    backbone = PEFTSwinTransformer(arch=NANO, init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(FileNotFoundError) as err:
        backbone.init_weights()
    msg = str(err.value)
    assert f'checkpoint {path} does not exist (the config names this path itself, so '\
        f'{ENV_VAR} does not change it)' in msg
    assert '--cfg-options model.backbone.init_cfg.checkpoint=/path/to/' \
        'swin_large_patch4_window7_224_22k.pth' in msg
    assert 'model.backbone.init_cfg=None (and model.pretrained=None where' in msg
    assert f'export {ENV_VAR}' not in msg and f'point {ENV_VAR}' not in msg
    assert "Microsoft's Swin Transformer release v1.0.0" in msg  # the source, as before
    # in the folder the variable names (the shipped configs): the variable is the fix
    msg = missing_pretrained_message(f'{env or "data/pretrained"}/x.pth')
    assert f'point {ENV_VAR} at the folder' in msg and 'init_cfg.checkpoint' not in msg
