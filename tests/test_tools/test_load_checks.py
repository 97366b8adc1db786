"""No silent random weights: ``mona_mm.apis.init_model``, ``tools/test.py`` (and
``tools/infer.py``, through ``init_model``) refuse a checkpoint that matches no tensor of the
model, or leaves a head or the adapters of the config untrained, naming the tensors. The
checkpoints that fit (full, adapter-only + base, MiMi-pruned, deploy) are in test_infer.py."""
import os
import os.path as osp
import runpy
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from mona_mm.apis import init_model
from mona_mm.utils import (CheckpointFitError, build_model_from_cfg, checkpoint_must_fit,
                           make_adapter_checkpoint, save_checkpoint_file)
from tests.conftest import PY, ROOT

CLS = osp.join(ROOT, 'configs', 'demo', 'swin-nano-mona_1xb32-10e_shapes-cls.py')
TEST = osp.join(ROOT, 'tools', 'test.py')
FIVE = {'model.head.num_classes': 5}


def _save(peft: dict, path) -> str:
    """A checkpoint of the demo classifier (4 classes) built with ``peft``, as a runner saves
    it (state dict with the backbone's record)."""
    cfg = Config.fromfile(CLS)
    cfg.model.backbone.peft = peft
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg, pretrained=False)
    save_checkpoint_file({'state_dict': model.state_dict(), 'meta': {}}, str(path))
    return str(path), model


def test_head_of_another_shape_is_refused_naming_both_shapes(tmp_path):
    full, model = _save(dict(type='Mona'), tmp_path / 'mona.pth')
    assert init_model(CLS, full).checkpoint_kind == 'full'  # its own config: fine
    with pytest.raises(CheckpointFitError) as err:
        init_model(CLS, full, cfg_options=FIVE)
    msg = str(err.value)
    assert msg.startswith(f'{full} does not fit this model')
    assert 'head.fc.weight: checkpoint (4, 256), model (5, 256)' in msg
    assert 'head.fc.bias: checkpoint (4,), model (5,)' in msg
    # adapter-only on its base: the same refusal (torch's loader, not mmengine's)
    adapters = str(tmp_path / 'adapters.pth')
    save_checkpoint_file(make_adapter_checkpoint(model, base_checkpoint=full), adapters)
    assert init_model(CLS, adapters).checkpoint_kind == 'adapter-only'
    with pytest.raises(CheckpointFitError, match=r'head\.fc\.weight: checkpoint \(4, 256\)'):
        init_model(CLS, adapters, cfg_options=FIVE)


def test_bitfit_checkpoint_on_a_mona_config_names_the_untrained_adapters(tmp_path):
    bitfit, _ = _save(dict(type='BitFit'), tmp_path / 'bitfit.pth')
    with pytest.raises(CheckpointFitError) as err:
        init_model(CLS, bitfit)
    msg = str(err.value)
    assert 'the 256 tensors of 16 adapters of peft=Mona(' in msg
    assert 'backbone.stages.0.blocks.0.adapters.post_attn' in msg
    assert 'the checkpoint was trained with peft=BitFit()' in msg
    assert 'Use the config the checkpoint was trained with' in msg
    # with its own config it loads
    init_model(CLS, bitfit, cfg_options={'model.backbone.peft': dict(type='BitFit')})


def test_checkpoint_of_another_model_matches_no_tensor(tmp_path):
    other = str(tmp_path / 'resnet.pth')
    torch.save({'state_dict': {'conv1.weight': torch.zeros(8, 3, 7, 7),
                               'fc.weight': torch.zeros(4, 8)}}, other)
    with pytest.raises(CheckpointFitError, match=r"matches no tensor of this model "
                       r"\(ImageClassifier\).*first keys are \['conv1\.weight', 'fc\.weight'\]"):
        init_model(CLS, other)


def test_torch_load_state_dict_is_checked_too():
    """Any loader: plain ``load_state_dict(strict=False)``, and later loads are not watched."""
    model = build_model_from_cfg(Config.fromfile(CLS), pretrained=False)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith('head.')}
    with checkpoint_must_fit(model, 'no-head.pth'):
        with pytest.raises(CheckpointFitError, match=r'2 are missing from it \(head\.fc\.'
                           r'weight, head\.fc\.bias\)'):
            model.load_state_dict(sd, strict=False)
        model.load_state_dict(sd, strict=False)  # a second load: not checked
    model.load_state_dict(sd, strict=False)  # hooks gone


def test_test_tool_exits_with_the_message(shapes_workspace, tmp_path):
    other = str(tmp_path / 'other.pth')
    torch.save({'state_dict': {'fc.weight': torch.zeros(4, 8)}}, other)
    proc = subprocess.run([PY, TEST, CLS, other, '--work-dir', str(tmp_path / 'wd')],
                          cwd=shapes_workspace, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'))
    assert proc.returncode != 0
    assert f'CheckpointFitError: {other} matches no tensor of this model' in proc.stdout, \
        proc.stdout[-3000:]
    assert 'Epoch(test)' not in proc.stdout  # refused before the first test batch


def test_test_tool_refuses_a_head_of_another_shape(shapes_workspace, tmp_path, monkeypatch):
    """In process: the runner's own load (``load_from``, with the config's hooks)."""
    full, _ = _save(dict(type='Mona'), tmp_path / 'mona.pth')
    monkeypatch.chdir(shapes_workspace)
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setattr(sys, 'argv', [TEST, CLS, full, '--work-dir', str(tmp_path / 'wd'),
                                      '--cfg-options', 'model.head.num_classes=5'])
    from mmengine.registry import DefaultScope
    # the tool's runner sets the default scope; the context restores the previous one so
    # later tests that build models in the current scope are not affected
    with DefaultScope.overwrite_default_scope('mmengine'), \
            pytest.raises(CheckpointFitError, match=r'head\.fc\.weight: checkpoint \(4, 256\), '
                          r'model \(5, 256\)'):
        runpy.run_path(TEST, run_name='__main__')


def test_export_refuses_a_checkpoint_that_leaves_the_adapters_untrained(tmp_path):
    """export_adapters.py would otherwise write the config's freshly initialised adapters."""
    from unittest import mock
    bitfit, _ = _save(dict(type='BitFit'), tmp_path / 'bitfit.pth')
    tool = osp.join(ROOT, 'tools', 'model_converters', 'export_adapters.py')
    out = tmp_path / 'adapters.pth'
    with mock.patch.object(sys, 'argv', [tool, CLS, bitfit, str(out),
                                         '--base-checkpoint', bitfit]):
        with pytest.raises(CheckpointFitError, match='adapters of peft=Mona'):
            runpy.run_path(tool, run_name='__main__')
    assert not out.exists()
