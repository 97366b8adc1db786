"""Adapter-only checkpoints name their pretrained backbone by content: the digest of its
backbone tensors is recorded beside the path, a different file is refused naming both
digests (unless forced), and the converters record the base the weights were trained on."""
import os.path as osp
import runpy
import shutil
import sys
from unittest import mock

import pytest
import torch
from mmengine.runner import load_checkpoint

from mona_mm.models import PEFTSwinTransformer
from mona_mm.models.backbones.injection import RECORD_KEY, base_digest, extract_state_dict
from mona_mm.utils import (load_adapter_checkpoint, load_checkpoint_file,
                           make_adapter_checkpoint, save_checkpoint_file)
from tests.conftest import NANO, ROOT, logged_lines
from tests.test_engine.test_checkpoint_records import _out
from tests.test_engine.test_mimi_pruning_hook import ToyDetector, _runner

CLS = f'{ROOT}/configs/demo/swin-nano-mona_1xb32-10e_shapes-cls.py'
TOOLS = osp.join(ROOT, 'tools', 'model_converters')


def _base(path, seed, backbone=None, **kw):
    """A pretrained (Full) nano Swin saved as a plain backbone checkpoint, and the digest
    ``backbone`` (default: a ToyDetector's) records for it: that of its frozen tensors."""
    torch.manual_seed(seed)
    src = PEFTSwinTransformer(arch=NANO, peft='Full', **kw)
    sd = {k: v for k, v in src.state_dict().items()}
    save_checkpoint_file({'state_dict': sd}, str(path))
    backbone = backbone or ToyDetector().backbone
    digest, keys = backbone.peft_base_digest(sd)
    assert keys and digest == base_digest({k: sd[k] for k in keys})
    return str(path), digest


def _bump(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)


_logged = logged_lines


def _trained(tmp_path, base):
    """A Mona ToyDetector tuned on ``base`` and its adapter-only checkpoint."""
    model = ToyDetector()
    model.backbone.init_cfg = dict(type='Pretrained', checkpoint=base)
    model.init_weights()
    _bump(model)
    ckpt = str(tmp_path / 'adapters.pth')
    save_checkpoint_file(make_adapter_checkpoint(model), ckpt)
    return model, ckpt


def test_records_carry_the_base_digest(tmp_path):
    """Adapter-only and full state dicts record dict(checkpoint, prefix, sha256): the digest
    of the base's frozen backbone tensors, which re-saving the same tensors, or the run's own
    full checkpoint (adapters, head and all), keeps."""
    base, digest = _base(tmp_path / 'a.pth', 1)
    model, ckpt = _trained(tmp_path, base)
    record = load_checkpoint_file(ckpt)['state_dict']._metadata['backbone'][RECORD_KEY]
    assert record['base'] == dict(checkpoint=base, prefix=None, sha256=digest)
    assert model.state_dict()._metadata['backbone'][RECORD_KEY]['base']['sha256'] == digest
    # another container, or the whole trained model: same frozen tensors, same digest
    plain = tmp_path / 'plain.pth'
    torch.save(dict(load_checkpoint_file(base)['state_dict']), plain)
    full = tmp_path / 'full.pth'
    torch.save({'state_dict': dict(model.state_dict())}, full)
    for path in (plain, full):
        tensors = extract_state_dict(torch.load(path))
        assert model.backbone.peft_base_digest(tensors)[0] == digest


def test_replaced_base_is_refused_naming_both_digests(tmp_path):
    """`make demo` rewriting the pretrained file: the adapters no longer fit it. Every loader
    (mmengine's load_checkpoint, load_adapter_checkpoint) refuses, naming both digests; the
    original passed explicitly composes exactly; force_base composes the other file."""
    base, digest = _base(tmp_path / 'a.pth', 1)
    model, ckpt = _trained(tmp_path, base)
    ref = _out(model)
    keep = str(tmp_path / 'original.pth')
    shutil.copy(base, keep)
    _, other = _base(tmp_path / 'a.pth', 2)  # replaced in place
    assert other != digest
    for load in (lambda m: load_checkpoint(m, ckpt, map_location='cpu'),
                 lambda m: load_adapter_checkpoint(m, ckpt)):
        with pytest.raises(ValueError, match=f'sha256 {other[:16]}.*records {digest[:16]}'):
            load(ToyDetector())
    fresh = ToyDetector()
    load_adapter_checkpoint(fresh, ckpt, base_checkpoint=keep)  # same tensors, moved
    torch.testing.assert_close(_out(fresh), ref, rtol=0, atol=0)
    assert fresh.backbone.peft_base == dict(checkpoint=keep, prefix=None, sha256=digest)
    forced = ToyDetector()
    with _logged() as lines:
        load_adapter_checkpoint(forced, ckpt, force_base=True)
    assert any('anyway' in line and other[:16] in line for line in lines)
    assert not torch.equal(_out(forced), ref)


def test_conflicting_override_refused_unless_forced(tmp_path):
    base, digest = _base(tmp_path / 'a.pth', 1)
    other, other_digest = _base(tmp_path / 'b.pth', 2)
    _, ckpt = _trained(tmp_path, base)
    with pytest.raises(ValueError, match=rf'given base {other}.*{other_digest[:16]}.*'
                       rf'{digest[:16]}.*force_base=True'):
        load_adapter_checkpoint(ToyDetector(), ckpt, base_checkpoint=other)
    forced = ToyDetector()
    load_adapter_checkpoint(forced, ckpt, base_checkpoint=other, force_base=True)
    assert forced.backbone.peft_base['sha256'] == other_digest


def test_record_without_digest_composes_with_a_warning(tmp_path):
    base, _ = _base(tmp_path / 'a.pth', 1)
    model, ckpt = _trained(tmp_path, base)
    old = load_checkpoint_file(ckpt)
    old['state_dict']._metadata['backbone'][RECORD_KEY]['base'].pop('sha256')
    old['meta']['mona_mm'].pop('base_sha256')
    legacy = str(tmp_path / 'legacy.pth')
    save_checkpoint_file(old, legacy)
    fresh = ToyDetector()
    with _logged() as lines:
        load_checkpoint(fresh, legacy, map_location='cpu')
    assert any('records no digest' in line for line in lines)
    torch.testing.assert_close(_out(fresh), _out(model), rtol=0, atol=0)


def test_hook_records_the_digest_and_resume_refuses_a_replaced_base(tmp_path):
    base, digest = _base(tmp_path / 'a.pth', 1)
    r = _runner(tmp_path / 'wd', dict(type='mona_mm.AdapterCheckpointHook'), max_epochs=1,
                name='dg1')
    r.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=base)
    r.train()
    ckpt = str(tmp_path / 'wd' / 'epoch_1.pth')
    meta = load_checkpoint_file(ckpt)
    assert meta['state_dict']._metadata['backbone'][RECORD_KEY]['base']['sha256'] == digest
    assert meta['meta']['mona_mm']['base_sha256'] == digest
    _, other = _base(tmp_path / 'a.pth', 2)
    with pytest.raises(ValueError, match=f'{other[:16]}.*{digest[:16]}'):
        load_checkpoint(ToyDetector(), ckpt, map_location='cpu')


def test_frozen_tensors_missing_from_the_base_travel_and_no_false_missing_keys(
        tmp_path, capsys):
    """A detection Swin (a norm per output stage) tuned on a classifier's backbone (only
    the last norm): the norms the base lacks travel in the adapter-only file, so base + file
    is the trained model exactly and mmengine reports no missing keys."""
    model = ToyDetector()
    base, _ = _base(tmp_path / 'cls.pth', 1, out_indices=(3, ))
    model.backbone = PEFTSwinTransformer(arch=NANO, peft=dict(type='Mona', hidden_dims=16),
                                         out_indices=(0, 1, 2, 3), drop_path_rate=0.)
    model.backbone.init_cfg = dict(type='Pretrained', checkpoint=base)
    model.init_weights()
    _bump(model)
    with torch.no_grad():  # frozen, not in the base: whatever the build gave them
        model.backbone.norm0.weight.normal_()
    ckpt = str(tmp_path / 'adapters.pth')
    save_checkpoint_file(make_adapter_checkpoint(model), ckpt)
    saved = load_checkpoint_file(ckpt)['state_dict']
    assert {f'backbone.norm{i}.{p}' for i in range(4) for p in ('weight', 'bias')} & \
        set(saved) == {f'backbone.norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')}
    fresh = ToyDetector()
    fresh.backbone = PEFTSwinTransformer(arch=NANO, peft=dict(type='Mona', hidden_dims=16),
                                         out_indices=(0, 1, 2, 3), drop_path_rate=0.)
    capsys.readouterr()
    with _logged() as lines:
        load_checkpoint(fresh, ckpt, map_location='cpu')
    text = capsys.readouterr().out + '\n'.join(lines)
    assert 'missing keys' not in text and 'missing (kept initialised)' not in text, text
    want = model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in fresh.state_dict().items())


def _tool(name, *args):
    """A converter in this process (mmdet/mmpretrain imports paid once)."""
    path = osp.join(TOOLS, name)
    with mock.patch.object(sys, 'argv', [path, *map(str, args)]):
        runpy.run_path(path, run_name='__main__')


def test_converters_take_the_base_the_weights_were_trained_on(tmp_path, capsys):
    """Trained with init_cfg overridden to A, exported with a config naming B: the export
    records A (and its digest); --base-checkpoint B is refused naming both digests unless
    --force-base; merge refuses B too and takes A from the record."""
    from mmengine.config import Config

    from mona_mm.utils import build_model_from_cfg
    cfg = Config.fromfile(CLS)
    model = build_model_from_cfg(cfg, pretrained=False)
    kw = dict(codebase='mmpretrain', out_indices=(3, ), backbone=model.backbone)
    a, digest_a = _base(tmp_path / 'a.pth', 1, **kw)
    b, digest_b = _base(tmp_path / 'b.pth', 2, **kw)
    model.backbone.init_cfg = dict(type='Pretrained', checkpoint=a)  # --cfg-options
    model.init_weights()
    _bump(model)
    full = str(tmp_path / 'full.pth')
    save_checkpoint_file(dict(meta=dict(), state_dict=model.state_dict()), full)
    config = tmp_path / 'shipped.py'  # the shipped config: its init_cfg names B
    config.write_text(f'_base_ = {CLS!r}\nmodel = dict(backbone=dict(init_cfg=dict('
                      f"type='Pretrained', checkpoint={b!r})))\n")
    out = tmp_path / 'exported.pth'
    _tool('export_adapters.py', config, full, out)
    record = load_checkpoint_file(str(out))['state_dict']._metadata['backbone'][RECORD_KEY]
    assert record['base']['checkpoint'] == a and record['base']['sha256'] == digest_a
    with pytest.raises(ValueError, match=f'{digest_b[:16]}.*{digest_a[:16]}.*--force-base'):
        _tool('export_adapters.py', config, full, tmp_path / 'x.pth', '--base-checkpoint', b)
    _tool('export_adapters.py', config, full, tmp_path / 'forced.pth', '--base-checkpoint', b,
          '--force-base')
    forced = load_checkpoint_file(str(tmp_path / 'forced.pth'))['meta']['mona_mm']
    assert forced['base_checkpoint'] == b and forced['base_sha256'] == digest_b
    # merge: the recorded base (A), not the config's (B); a conflicting B only when forced
    with pytest.raises(ValueError, match=f'{digest_b[:16]}.*{digest_a[:16]}'):
        _tool('merge_adapters.py', config, out, tmp_path / 'm.pth', '--base-checkpoint', b)
    merged = tmp_path / 'merged.pth'
    _tool('merge_adapters.py', config, out, merged)
    sd = load_checkpoint_file(str(merged))['state_dict']
    want = model.state_dict()
    assert set(sd) == set(want) and all(torch.equal(sd[k], want[k]) for k in want)
    _tool('merge_adapters.py', config, out, tmp_path / 'mf.pth', '--base-checkpoint', b,
          '--force-base')
