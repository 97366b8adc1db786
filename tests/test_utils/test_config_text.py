"""Config text stored in checkpoints is read as data: the literal form mmengine writes is
accepted (and re-rendered so mmengine's later ``Config.fromstring`` executes only our text);
anything else is refused before any library executes it."""
import pytest
import torch
from mmengine.config import Config

import mona_mm  # noqa: F401
from mona_mm.utils import (CheckpointError, UnsafeConfigError, load_checkpoint_file,
                           parse_config_text, safe_config_text)
from tests.conftest import ROOT

CONFIGS = [
    'configs/demo/cascade-mask-rcnn_swin-nano-mona_fpn_1xb4-4e_shapes.py',
    'configs/demo/upernet_vit-nano-mona_1xb4-2k_shapes-ade-128x128.py',
    'configs/demo/swin-nano-mona-mimi_1xb32-4e_shapes-cls.py',
]

#: each creates MARKER if executed as Python (mmengine's Config.fromstring execs config text)
PAYLOADS = {
    'statement': "import os\nos.system('touch MARKER')\nmodel = dict(type='X')\n",
    'call in a value': "model = dict(type=__import__('os').system('touch MARKER'))\n",
    'attribute': "model = dict(type=open('MARKER', 'w').name)\n",
    'lambda': "model = dict(type=(lambda: open('MARKER', 'w'))())\n",
    'comprehension': "x = [open('MARKER', 'w') for _ in 'a']\n",
    'f-string': "x = f\"{open('MARKER', 'w')}\"\n",
    'base file': "_base_ = ['MARKER_BASE.py']\n",
    'custom import': "custom_imports = dict(imports=['antigravity_not_imported'])\n",
    'shadowed builtin': "dict = open\nx = dict('MARKER', 'w')\n",
    'set of sets (substitution)': "x = {{'$NOPE:__import__(\"os\").system(\"touch MARKER\")'}}\n",
}


@pytest.mark.parametrize('config', CONFIGS)
def test_real_configs_round_trip(config):
    cfg = Config.fromfile(f'{ROOT}/{config}')
    text = safe_config_text(cfg.pretty_text)
    assert '{' not in text and '}' not in text
    assert Config.fromstring(text, '.py').to_dict() == \
        Config.fromstring(cfg.pretty_text, '.py').to_dict()


def test_values_survive_rendering():
    odd = {'a b': 1, 'class': 2, 3: (1, )}
    text = ("x = dict(s='{{ fileDirname }} {{$HOME:x}} \\\\ \\'q', n=-1.5e-3, t=(), e=[], "
            f"b=True, z=None, f=float('inf'), c=1j)\ny = {odd!r}\n")
    parsed = parse_config_text(text)
    assert parsed['x']['s'] == "{{ fileDirname }} {{$HOME:x}} \\ 'q"
    assert parsed['y'] == odd
    again = Config.fromstring(safe_config_text(text), '.py')
    assert again.x.s == parsed['x']['s']  # mmengine's substitutions did not touch it
    assert again.x.f == float('inf') and again.x.t == () and again.x.c == 1j
    assert dict(again.y) == odd


@pytest.mark.parametrize('name', sorted(PAYLOADS))
def test_code_is_refused_without_running(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'MARKER_BASE.py').write_text("import os\nos.system('touch MARKER')\n")
    with pytest.raises(UnsafeConfigError):
        parse_config_text(PAYLOADS[name])
    assert not (tmp_path / 'MARKER').exists()


@pytest.mark.parametrize('where', [('meta', 'cfg'), ('meta', 'config'),
                                   ('message_hub', 'runtime_info', 'cfg')])
def test_checkpoint_loads_refuse_code_in_config_text(where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = {'meta': {}, 'message_hub': {'runtime_info': {}},
            'state_dict': {'w': torch.ones(1)}}
    parent = ckpt
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = PAYLOADS['call in a value']
    torch.save(ckpt, tmp_path / 'evil.pth')
    with pytest.raises(CheckpointError, match='mmengine would execute it'):
        load_checkpoint_file(str(tmp_path / 'evil.pth'))
    # the same file with plain data loads, its text replaced by our rendering
    parent[where[-1]] = "model = dict(type='X', depth=3)\n"
    torch.save(ckpt, tmp_path / 'good.pth')
    loaded = load_checkpoint_file(str(tmp_path / 'good.pth'))
    node = loaded
    for key in where:
        node = node[key]
    assert node == "model = dict(type='X', depth=3)\n"
    assert not (tmp_path / 'MARKER').exists()
