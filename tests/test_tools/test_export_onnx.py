"""tools/deployment/export_onnx.py: the ONNX file of every checkpoint kind (full, MiMi-pruned,
re-parameterised, adapter-only + its base) gives, under onnxruntime, what the trained model
gives in eager PyTorch (within 1e-4, fp32), at the export size and, where the file is dynamic,
at other heights and widths; a model that does not export dynamically is exported for a fixed
size and says so; bad input gets one clear error and never replaces a good file.

Models are the tiny demo ones with random weights, perturbed so that every adapter changes
the output (an export that lost one would differ); the tool runs in this process.
"""
import importlib.util
import os
import os.path as osp
import re
import runpy
import sys
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

ort = pytest.importorskip('onnxruntime')  # the deploy extra: mona_mm[deploy]
onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxscript')

from mona_mm.pruning import STRUCTURE_META_KEY, get_structure, prune_adapters  # noqa: E402
from mona_mm.models.peft.base import iter_adapters  # noqa: E402
from mona_mm.utils import (build_model_from_cfg, make_adapter_checkpoint,  # noqa: E402
                           save_checkpoint_file)
from tests.conftest import ROOT  # noqa: E402

TOOL = osp.join(ROOT, 'tools', 'deployment', 'export_onnx.py')
REPARAM = osp.join(ROOT, 'tools', 'model_converters', 'reparameterize.py')
DEMO = osp.join(ROOT, 'configs', 'demo')
VIT = osp.join(DEMO, 'vit-nano-mona_1xb32-10e_shapes-cls.py')
VIT_MIMI = osp.join(DEMO, 'vit-nano-mona-mimi_1xb32-4e_shapes-cls.py')
VIT_BASE = osp.join(DEMO, 'vit-nano_1xb32-20e_shapes-cls.py')
SWIN = osp.join(DEMO, 'swin-nano-mona_1xb32-10e_shapes-cls.py')
SEGFORMER = osp.join(DEMO, 'segformer_mit-nano-mona_1xb4-2k_shapes-ade-128x128.py')
MASK_RCNN = osp.join(DEMO, 'mask-rcnn_r18-mona_fpn_1xb4-4e_shapes.py')
ATOL = 1e-4


@pytest.fixture(scope='module')
def tool():
    """The tool as a module (its imports of torch and the OpenMMLab packages paid once);
    one torch thread, as ``run_tool`` gives the tools (the machine's cores are shared)."""
    spec = importlib.util.spec_from_file_location('_mona_tools_export_onnx', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield module
    torch.set_num_threads(threads)


def _perturb(model: nn.Module, seed: int, trainable_only: bool = False) -> nn.Module:
    """Noise on the weights (all, or those the PEFT method trains) as training would leave
    them: Mona's tiny initial scales (gamma 1e-6, projections of std 0.02) would otherwise
    hide an adapter the export lost."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad or not trainable_only:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model.eval()


def _trained(config: str, seed: int = 0) -> nn.Module:
    return _perturb(build_model_from_cfg(Config.fromfile(config), pretrained=False), seed)


def _save_full(model: nn.Module, path, meta=None) -> str:
    save_checkpoint_file({'state_dict': model.state_dict(), 'meta': meta or {}}, str(path))
    return str(path)


def _run(tool, capsys, *argv) -> str:
    """The tool's main in this process; its printed lines (stdout)."""
    capsys.readouterr()
    tool.main([str(a) for a in argv])
    return capsys.readouterr().out


def _printed_diffs(out: str) -> list:
    line = next(ln for ln in out.splitlines() if 'max abs diff' in ln)
    return [float(d) for d in re.findall(r'([0-9.]+e[-+][0-9]+) at', line)]


def _onnx_vs_eager(path, module, shapes, forward=lambda m, x: m(x)) -> dict:
    """Max abs difference of onnxruntime (CPU) against ``module`` per input size, over all
    outputs (shapes must agree)."""
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    generator = torch.Generator().manual_seed(7)
    diffs = {}
    for h, w in shapes:
        x = torch.randn(1, 3, h, w, generator=generator)
        with torch.no_grad():
            expected = forward(module, x)
        expected = [expected] if torch.is_tensor(expected) else list(expected)
        got = session.run(None, {'inputs': x.numpy()})
        assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
        diffs[(h, w)] = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
    return diffs


def _input_dims(path) -> list:
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type
    return [d.dim_param or d.dim_value for d in dims.shape.dim]


def _tensor_mode(model, x):
    return model(x, mode='tensor')


def test_classifier_whole_model_dynamic(tool, tmp_path, capsys):
    """(a) mmpretrain ImageClassifier, whole model (the default part): class scores of the
    trained (not re-parameterised) model at the export size and at two other sizes."""
    model = _trained(VIT)
    ckpt = _save_full(model, tmp_path / 'vit.pth')
    out = tmp_path / 'cls.onnx'
    printed = _run(tool, capsys, VIT, ckpt, '--out', out, '--shape', 64, 64)
    assert 'full checkpoint; re-parameterised 8 Mona' in printed
    assert 'the model, opset' in printed and 'with dynamic height/width' in printed
    assert 'outputs cls_score' in printed
    diffs = _printed_diffs(printed)
    assert len(diffs) == 2 and max(diffs) <= ATOL  # the tool checked two sizes
    dims = _input_dims(out)
    assert dims[:2] == [1, 3] and all(isinstance(d, str) for d in dims[2:])  # H, W symbolic
    # sizes the tool did not check, non-square, against the model before re-parameterising
    got = _onnx_vs_eager(out, model, [(64, 64), (112, 48), (80, 128)], _tensor_mode)
    assert max(got.values()) <= ATOL, got
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.export_onnx')]


def test_segmentor_whole_model_dynamic(tool, tmp_path, capsys):
    """(b) mmseg EncoderDecoder (SegFormer, MiT backbone): decode-head logits, dynamic."""
    model = _trained(SEGFORMER)
    ckpt = _save_full(model, tmp_path / 'segformer.pth')
    out = tmp_path / 'seg.onnx'
    printed = _run(tool, capsys, SEGFORMER, ckpt, '--out', out, '--shape', 64, 64)
    assert 'exporting the model (mmseg)' in printed and 'outputs seg_logits' in printed
    assert 'with dynamic height/width' in printed
    assert max(_printed_diffs(printed)) <= ATOL
    got = _onnx_vs_eager(out, model, [(64, 64), (96, 128)], _tensor_mode)
    assert max(got.values()) <= ATOL, got


def test_mimi_pruned_and_deploy_checkpoints_backbone_fixed(tool, tmp_path, capsys):
    """(c) A MiMi-pruned checkpoint (narrower adapters, one removed entirely) and its
    re-parameterised form from tools/model_converters/reparameterize.py, the backbone,
    --no-dynamic: fixed-size files with the pruned model's features."""
    model = _trained(VIT_MIMI)
    generator = torch.Generator().manual_seed(3)
    adapters = list(iter_adapters(model))
    keep = {name: torch.randperm(a.hidden_dims, generator=generator)[:a.hidden_dims // 3]
            for name, a in adapters}
    keep[adapters[0][0]] = torch.zeros(0, dtype=torch.long)  # vanishes: a bias remains
    prune_adapters(model, keep)
    ckpt = _save_full(model, tmp_path / 'pruned.pth',
                      {STRUCTURE_META_KEY: dict(structure=get_structure(model))})
    out = tmp_path / 'pruned.onnx'
    printed = _run(tool, capsys, VIT_MIMI, ckpt, '--out', out, '--part', 'backbone',
                   '--shape', 64, 64, '--no-dynamic')
    assert 'full, MiMi-pruned checkpoint; re-parameterised 7 Mona' in printed
    assert 'the backbone' in printed and 'fixed 64x64 height/width' in printed
    assert max(_printed_diffs(printed)) <= ATOL
    assert _input_dims(out) == [1, 3, 64, 64]
    got = _onnx_vs_eager(out, model.backbone, [(64, 64)])
    assert max(got.values()) <= ATOL, got
    # the deploy form of the same checkpoint: nothing left to fold, the same features
    deploy = tmp_path / 'deploy.pth'
    with mock.patch.object(sys, 'argv', [REPARAM, VIT_MIMI, ckpt, str(deploy)]):
        runpy.run_path(REPARAM, run_name='__main__')
    out = tmp_path / 'deploy.onnx'
    printed = _run(tool, capsys, VIT_MIMI, deploy, '--out', out, '--part', 'backbone',
                   '--shape', 64, 64, '--no-dynamic')
    assert 'full, MiMi-pruned, re-parameterised checkpoint; re-parameterised 0 Mona' in printed
    got = _onnx_vs_eager(out, model.backbone, [(64, 64)])
    assert max(got.values()) <= ATOL, got


def test_adapter_only_checkpoint_with_its_base(tool, tmp_path, capsys):
    """(d) An adapter-only checkpoint composed with --base-checkpoint: the file is the
    trained model (base backbone + trained adapters and head), dynamic although exported at
    the ViT's own img_size (where it skips resizing its position embedding)."""
    base_model = _trained(VIT_BASE, seed=1)
    base = _save_full(base_model, tmp_path / 'base.pth')
    cfg = Config.fromfile(VIT)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=base)
    model = build_model_from_cfg(cfg)
    model.init_weights()  # loads the base (and records it, with its digest)
    _perturb(model, seed=2, trainable_only=True)
    adapters = tmp_path / 'adapters.pth'
    save_checkpoint_file(make_adapter_checkpoint(model), str(adapters))
    out = tmp_path / 'adapters.onnx'
    printed = _run(tool, capsys, VIT, adapters, '--base-checkpoint', base, '--out', out,
                   '--shape', 112, 112)
    assert 'adapter-only checkpoint; re-parameterised 8 Mona' in printed
    assert 'with dynamic height/width' in printed and max(_printed_diffs(printed)) <= ATOL
    got = _onnx_vs_eager(out, model, [(112, 112), (48, 96)], _tensor_mode)
    assert max(got.values()) <= ATOL, got


class _FlattenHead(nn.Module):
    """A module whose Linear fixes the flattened size: it runs at 8x8 only."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_not_dynamic_falls_back_to_fixed_and_says_so(tool, tmp_path, capsys):
    path = tmp_path / 'fixed' / 'm.onnx'
    path.parent.mkdir()
    dynamic, diffs, reason = tool.export_checked(_FlattenHead().eval(), str(path), (8, 8))
    printed = capsys.readouterr().out
    assert not dynamic and 'does not run at 16x16' in reason
    assert f'dynamic height/width: not supported for this model ({reason})' in printed
    assert 'exporting for fixed 8x8' in printed
    assert list(diffs) == [(8, 8)] and diffs[(8, 8)] <= ATOL
    assert _input_dims(path) == [1, 3, 8, 8] and os.listdir(path.parent) == ['m.onnx']


def test_difference_above_tolerance_fails_and_keeps_the_old_file(tool, tmp_path, capsys):
    ckpt = _save_full(_trained(VIT), tmp_path / 'vit.pth')
    out = tmp_path / 'cls.onnx'
    out.write_bytes(b'the last good export')
    with pytest.raises(SystemExit) as err:
        _run(tool, capsys, VIT, ckpt, '--out', out, '--shape', 32, 32, '--no-dynamic',
             '--atol', 1e-12)
    assert re.search(r'onnxruntime differs .* by [0-9.e-]+ at 1x3x32x32: above --atol 1e-12; '
                     r'nothing written to', str(err.value))
    assert out.read_bytes() == b'the last good export'
    assert sorted(os.listdir(tmp_path)) == ['cls.onnx', 'vit.pth']  # no temp file left


def test_missing_deploy_extra_is_named_with_the_install(tool, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import fails as if absent
    with pytest.raises(SystemExit) as err:
        tool.main([VIT, str(tmp_path / 'never_read.pth')])
    message = str(err.value)
    assert 'needs onnxruntime' in message and 'onnx,' not in message
    assert 'pip install mona_mm[deploy]' in message and 'requirements/deploy.txt' in message


def test_two_stage_detector_exports_only_its_backbone(tool, tmp_path):
    with pytest.raises(SystemExit) as err:
        tool.main([MASK_RCNN, str(tmp_path / 'never_read.pth'), '--part', 'model'])
    assert 'MaskRCNN' in str(err.value) and 'use --part backbone' in str(err.value)


def test_unknown_part_is_refused(tool, capsys):
    with pytest.raises(SystemExit) as err:
        tool.main([VIT, 'x.pth', '--part', 'neck'])
    assert err.value.code == 2
    assert "argument --part: invalid choice: 'neck'" in capsys.readouterr().err


@pytest.mark.parametrize('argv, message', [
    (['--batch-size', '0'], '--batch-size must be >= 1'),
    (['--shape', '0', '64'], '--shape needs two positive sizes'),
    (['--atol', 'nan'], '--atol must be >= 0'),
])
def test_bad_arguments_are_refused(tool, capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        tool.main([VIT, 'x.pth', *argv])
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_the_dynamic_check_uses_another_height_and_width(tool):
    assert tool.second_shape((64, 64)) == (96, 80)
    assert tool.second_shape((224, 224)) == (336, 288)


def test_families_known_to_export_fixed_size_are_not_tried(tool):
    """Swin's dynamic export takes minutes to hours (and was wrong): the tool goes straight
    to the fixed size for it, whole model or backbone, and tries the others."""
    swin = build_model_from_cfg(Config.fromfile(SWIN), pretrained=False)
    for module in (tool.TensorForward(swin), swin.backbone):
        assert tool.known_fixed_size(module).startswith('Swin:')
    vit = build_model_from_cfg(Config.fromfile(VIT), pretrained=False)
    assert tool.known_fixed_size(tool.TensorForward(vit)) is None
    assert tool.known_fixed_size(vit.backbone) is None
