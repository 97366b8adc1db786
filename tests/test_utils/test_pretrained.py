"""The pretrained files the configs read are listed (README, table, check tool), and a
missing one is one clear error naming MONA_MM_PRETRAINED and where to get it."""
import glob
import os.path as osp
import re

import pytest
import torch

from mona_mm.utils.pretrained import ENV_VAR, PRETRAINED
from tests.conftest import NANO, PY, ROOT, run_tool


def _config_files():
    """Every checkpoint file name the shipped configs (not the demo's own) mention."""
    names = set()
    for path in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True):
        if '/demo/' not in path:
            names.update(re.findall(r'[\w.-]+\.pth', open(path).read()))
    return names


def test_every_config_file_is_listed():
    assert _config_files() == set(PRETRAINED)


def test_readme_lists_every_file_with_its_source():
    readme = open(osp.join(ROOT, 'README.md')).read()
    section = readme.split('### Pretrained weights', 1)[1].split('\n## ', 1)[0]
    for name, entry in PRETRAINED.items():
        assert name in section, name
        source = entry['source'].split(' (')[0]
        assert source in section, source
        if entry['sha256_prefix']:
            assert entry['sha256_prefix'] in section
    assert ENV_VAR in section and 'check_pretrained.py' in section


@pytest.mark.parametrize('env', [None, '/nowhere/weights'])
def test_missing_file_names_the_variable_and_source(monkeypatch, env):
    from mona_mm.models import PEFTSwinTransformer
    if env:
        monkeypatch.setenv(ENV_VAR, env)
    else:
        monkeypatch.delenv(ENV_VAR, raising=False)
    path = f'{env or "data/pretrained"}/swin_large_patch4_window7_224_22k.pth'
    backbone = PEFTSwinTransformer(arch=NANO, init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(FileNotFoundError) as err:
        backbone.init_weights()
    msg = str(err.value)
    assert path in msg and ENV_VAR in msg and 'section "Pretrained weights"' in msg
    assert (f'{ENV_VAR}={env}' if env else f'{ENV_VAR} is not set') in msg
    assert "Microsoft's Swin Transformer release v1.0.0" in msg


def test_check_tool(tmp_path):
    vit = 'vit-base-p14_dinov2-pre_3rdparty_20230426-ba246503.pth'
    torch.save({'state_dict': {}}, tmp_path / vit)  # not the release: digest mismatch
    torch.save({'state_dict': {}}, tmp_path / 'swin_tiny_patch4_window7_224.pth')
    tool = osp.join(ROOT, 'tools', 'misc', 'check_pretrained.py')
    with pytest.raises(AssertionError) as err:
        run_tool([PY, tool, '--dir', str(tmp_path)], cwd=tmp_path)
    out = str(err.value)
    assert 'exited 1' in out and 'sha256 MISMATCH (its release: ba246503...)' in out
    assert 'swin_tiny_patch4_window7_224.pth: found (no digest recorded for it)' in out
    assert 'swin_large_patch4_window7_224_22k.pth: MISSING' in out
    (tmp_path / vit).unlink()
    out = run_tool([PY, tool, '--dir', str(tmp_path)], cwd=tmp_path)  # missing is fine...
    with pytest.raises(AssertionError, match='exited 1'):  # ...unless required
        run_tool([PY, tool, '--dir', str(tmp_path), '--require', vit], cwd=tmp_path)
