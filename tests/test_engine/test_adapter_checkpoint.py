"""Adapter-only checkpoints: the runner saves just the trained part, resume works from them,
and pretrained backbone + adapter file == the trained model (also after merging)."""
import subprocess
import sys

import torch

from mona_mm.utils import (adapter_state_dict, is_adapter_checkpoint, load_adapter_checkpoint,
                           save_checkpoint_file, trained_keys)
from tests.conftest import NANO, ROOT
from tests.test_engine.test_mimi_pruning_hook import ToyDetector, _runner


def _pretrained(tmp_path):
    torch.manual_seed(7)
    from mona_mm.models import PEFTSwinTransformer
    src = PEFTSwinTransformer(arch=NANO, peft=dict(type='Full'))
    path = tmp_path / 'pretrained_swin.pth'
    save_checkpoint_file({'state_dict': src.state_dict()}, str(path))
    return str(path), src


def test_trained_keys_are_adapters_and_head():
    model = ToyDetector()
    keys = trained_keys(model)
    assert keys == {k for k in model.state_dict() if '.adapters.' in k or k.startswith('head.')}


def test_runner_writes_adapter_only_and_resumes(tmp_path):
    path, src = _pretrained(tmp_path)
    hook = dict(type='mona_mm.AdapterCheckpointHook')
    r = _runner(tmp_path / 'wd', hook, max_epochs=1, name='ad1')
    r.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=path)
    r.train()
    ckpt = tmp_path / 'wd' / 'epoch_1.pth'
    assert is_adapter_checkpoint(str(ckpt))
    sd = torch.load(ckpt, map_location='cpu')['state_dict']
    assert set(sd) == trained_keys(r.model)
    assert all(torch.equal(r.model.backbone.state_dict()[k], v) for k, v in src.state_dict().items()
               if k in r.model.backbone.state_dict() and '.adapters.' not in k)
    # pretrained backbone + adapter file == the trained model
    fresh = ToyDetector().eval()
    load_adapter_checkpoint(fresh, str(ckpt))
    x = [torch.randn(3, 32, 32) for _ in range(2)]
    r.model.eval()
    torch.testing.assert_close(fresh(x, [torch.tensor(0.)] * 2), r.model(x, [torch.tensor(0.)] * 2))
    # resume from the adapter-only checkpoint (backbone comes from init_cfg again)
    r2 = _runner(tmp_path / 'wd', hook, max_epochs=2, resume=True, name='ad2')
    r2.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=path)
    r2.train()
    assert r2.train_loop.epoch == 2


def test_merge_tool_writes_plain_full_checkpoint(tmp_path, shapes_workspace):
    """merge_adapters.py: config + adapter-only checkpoint -> a plain full checkpoint."""
    cfg = f'{ROOT}/configs/demo/swin-nano-mona_1xb32-10e_shapes-cls.py'
    from mmengine.config import Config

    from mona_mm.utils import build_model_from_cfg, make_adapter_checkpoint
    c = Config.fromfile(cfg)
    path, _ = _pretrained(tmp_path)
    c.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=path)
    model = build_model_from_cfg(c)
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    adapters = tmp_path / 'adapters.pth'
    torch.save(make_adapter_checkpoint(model), adapters)
    out = tmp_path / 'merged.pth'
    subprocess.run([sys.executable, f'{ROOT}/tools/model_converters/merge_adapters.py', cfg,
                    str(adapters), str(out)], check=True, cwd=shapes_workspace,
                   env={'PYTHONPATH': ROOT, 'PATH': '/usr/bin:/bin'})
    merged = torch.load(out, map_location='cpu')['state_dict']
    assert not is_adapter_checkpoint(str(out))
    full = model.state_dict()
    assert set(merged) == set(full)
    assert all(torch.equal(merged[k], full[k]) for k in full)
    assert len(adapter_state_dict(model)) < len(full)


def test_adapter_only_load_logs_a_summary(tmp_path):
    """Loading an adapter-only checkpoint (runner load_from, inferencers: mmengine's
    load_checkpoint) logs what came from where in a few short lines, not the names of every
    tensor the base supplied."""
    import logging

    from mmengine.logging import MMLogger
    from mmengine.runner import load_checkpoint

    from mona_mm.utils import make_adapter_checkpoint
    path, _ = _pretrained(tmp_path)
    model = ToyDetector()
    model.backbone.init_cfg = dict(type='Pretrained', checkpoint=path)
    model.init_weights()
    adapters = tmp_path / 'adapters.pth'
    save_checkpoint_file(make_adapter_checkpoint(model), str(adapters))
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.INFO:
                lines.extend(record.getMessage().splitlines())

    logger = MMLogger.get_current_instance()
    keep = Keep()
    logger.addHandler(keep)
    try:
        load_checkpoint(ToyDetector(), str(adapters))
    finally:
        logger.removeHandler(keep)
    text = '\n'.join(lines)
    assert 'missing keys' not in text and 'unexpected key' not in text, text
    # short lines, however long the temporary folder's name is
    assert max(len(line.replace(str(tmp_path), 'DIR')) for line in lines) < 200, text
    assert 'adapter-only checkpoint composed with its pretrained backbone' in text
    assert 'adapter tensors loaded' in text
