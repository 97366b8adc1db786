"""Pretrained Swin weights in every supported layout load bit-exactly (tests build them)."""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from mona_mm.models import PEFTSwinTransformer
from tests.conftest import NANO


def _official_from_mmdet(sd):
    """Independent inverse of the official->mmdet conversion (Microsoft's key names and
    its x0,x1,x2,x3 patch-merging channel order)."""
    perm = [0, 2, 1, 3]  # official chunk k' holds unfold position perm[k']
    out = OrderedDict()
    for k, v in sd.items():
        if k.startswith('norm') and k[4].isdigit():
            if k.startswith('norm3.'):
                out['norm.' + k.split('.', 1)[1]] = v
            continue
        nk = k.replace('stages.', 'layers.').replace('attn.w_msa.', 'attn.')
        nk = nk.replace('ffn.layers.0.0.', 'mlp.fc1.').replace('ffn.layers.1.', 'mlp.fc2.')
        nk = nk.replace('patch_embed.projection.', 'patch_embed.proj.')
        if 'downsample.reduction' in k:
            o, i4 = v.shape
            c = i4 // 4
            v = torch.stack([v.reshape(o, c, 4)[:, :, perm[j]] for j in range(4)], 1)
            v = v.reshape(o, i4)
        elif 'downsample.norm' in k:
            c = v.shape[0] // 4
            v = torch.stack([v.reshape(c, 4)[:, perm[j]] for j in range(4)], 0).reshape(-1)
        out[nk] = v
    # what the release also carries: attention masks of shifted blocks and the 22K head
    out['layers.0.blocks.1.attn_mask'] = torch.zeros(4, 49, 49)
    out['head.weight'] = torch.randn(10, 256)
    out['head.bias'] = torch.zeros(10)
    return out


@pytest.fixture
def source():
    torch.manual_seed(3)
    src = PEFTSwinTransformer(arch=NANO, peft=dict(type='Full'))
    with torch.no_grad():  # make every tensor distinctive, norms included
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return src


def _non_adapter(sd):
    return {k: v for k, v in sd.items() if '.adapters.' not in k}


def _assert_loaded(model, ref_sd, skip=()):
    got = model.state_dict()
    checked = 0
    for k, v in _non_adapter(got).items():
        if k in skip:
            continue
        assert torch.equal(v, ref_sd[k]), f'{k} not loaded bit-exactly'
        checked += 1
    assert checked > 50


def _build_pretrained(path, **kw):
    m = PEFTSwinTransformer(arch=NANO, init_cfg=dict(type='Pretrained', checkpoint=str(path)),
                            **kw)
    m.init_weights()
    return m


def test_official_release_layout(tmp_path, source, caplog):
    path = tmp_path / 'swin_official.pth'
    torch.save({'model': _official_from_mmdet(source.state_dict())}, path)
    before = {k: v.clone() for k, v in
              PEFTSwinTransformer(arch=NANO).state_dict().items() if '.adapters.' in k}
    m = _build_pretrained(path)
    # the release has one final norm (-> norm3); norm0..2 stay initialised
    skip = {f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')}
    _assert_loaded(m, source.state_dict(), skip=skip)
    assert len(before) > 0


def test_official_layout_gives_same_features(tmp_path, source):
    path = tmp_path / 'swin_official.pth'
    torch.save({'model': _official_from_mmdet(source.state_dict())}, path)
    m = _build_pretrained(path, peft=dict(type='Fixed'), out_indices=(3, )).eval()
    src = PEFTSwinTransformer(arch=NANO, peft=dict(type='Fixed'), out_indices=(3, )).eval()
    src.load_state_dict(source.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(m(x)[0], src(x)[0])


def test_mmpretrain_checkpoint(tmp_path):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        clf = MODELS.build(dict(type='ImageClassifier',
        backbone=dict(type='SwinTransformer', arch=dict(NANO, depths=list(NANO['depths']),
                                                        num_heads=list(NANO['num_heads'])),
                      img_size=64, out_indices=(3, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=4, in_channels=256)))
    with torch.no_grad():
        for p in clf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / 'mmpretrain_swin.pth'
    torch.save({'state_dict': clf.state_dict(), 'meta': {}}, path)
    ref = {k[len('backbone.'):]: v for k, v in clf.state_dict().items()
           if k.startswith('backbone.')}
    m = _build_pretrained(path, out_indices=(3, ))
    _assert_loaded(m, ref)


@pytest.mark.parametrize('with_prefix', [True, False])
def test_mmdet_backbone_checkpoint(tmp_path, with_prefix):
    from mmdet.models.backbones import SwinTransformer
    torch.manual_seed(0)
    det_bb = SwinTransformer(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
    with torch.no_grad():
        for p in det_bb.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    prefix = 'backbone.' if with_prefix else ''
    sd = {prefix + k: v for k, v in det_bb.state_dict().items()}
    if with_prefix:
        sd['neck.lateral_convs.0.conv.weight'] = torch.zeros(8, 32, 1, 1)
    path = tmp_path / 'mmdet_swin.pth'
    torch.save({'state_dict': sd, 'meta': {}}, path)
    m = _build_pretrained(path, peft=dict(type='Fixed'))
    _assert_loaded(m, det_bb.state_dict())
    x = torch.randn(1, 3, 64, 64)
    m.eval()
    det_bb.eval()  # mmdet's train() returns None, so not chained
    for a, b in zip(m(x), det_bb(x)):
        torch.testing.assert_close(a, b)


def test_log_line_reports_counts(tmp_path, source):
    path = tmp_path / 'swin_official.pth'
    torch.save({'model': _official_from_mmdet(source.state_dict())}, path)
    logger = MMLogger.get_instance('mona_mm_test_log', log_file=str(tmp_path / 'log.txt'))
    with logger_context(logger):
        _build_pretrained(path)
    text = (tmp_path / 'log.txt').read_text()
    line = [ln for ln in text.splitlines() if 'tensors loaded' in ln]
    assert len(line) == 1, text
    n_adapter = sum(1 for k in PEFTSwinTransformer(arch=NANO).state_dict() if '.adapters.' in k)
    assert f'{n_adapter} adapter tensors newly initialised (expected)' in line[0]
    assert 'norm0.weight' in line[0]  # missing keys are named
    assert "Microsoft's Swin layout" in line[0]


class logger_context:
    """Make ``logger`` the current MMLogger instance for the block."""

    def __init__(self, logger):
        self.logger = logger

    def __enter__(self):
        MMLogger._instance_dict.move_to_end(self.logger.instance_name)

    def __exit__(self, *exc):
        return False


def test_wrong_arch_names_the_keys(tmp_path, source):
    path = tmp_path / 'nano.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    m = PEFTSwinTransformer(arch=dict(embed_dims=48, depths=(2, 2, 2, 2),
                                      num_heads=(1, 2, 4, 8)),
                            init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match=r'does not fit this backbone.*patch_embed.projection'):
        m.init_weights()
    deeper = PEFTSwinTransformer(arch=dict(NANO, depths=(2, 2, 4, 2)),
                                 init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match=r'stages.2.blocks.2.*missing from checkpoint'):
        deeper.init_weights()


class _Detector(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = PEFTSwinTransformer(arch=NANO)
        self.neck = nn.Linear(4, 4)


@pytest.mark.parametrize('layout', ['official', 'mmdet_detector'])
def test_load_from_whole_model(tmp_path, source, layout):
    """``load_from`` on the whole model (what Runner.load_checkpoint does: the hook, then
    mmengine's loader) also understands the layouts."""
    from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

    from mona_mm.engine import BackboneCheckpointHook
    if layout == 'official':
        ckpt = {'model': _official_from_mmdet(source.state_dict())}
        skip = {f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')}
    else:
        ckpt = {'state_dict': {'backbone.' + k: v for k, v in source.state_dict().items()},
                'meta': {}}
        skip = set()
    path = tmp_path / 'ckpt.pth'
    torch.save(ckpt, path)
    det = _Detector()
    checkpoint = _load_checkpoint(str(path), map_location='cpu')
    runner = type('R', (), {'logger': MMLogger.get_current_instance(), 'model': det})()
    BackboneCheckpointHook().after_load_checkpoint(runner, checkpoint)
    _load_checkpoint_to_model(det, checkpoint, strict=False)
    _assert_loaded(det.backbone, source.state_dict(), skip=skip)
