"""Checkpoints of the Mona authors' code (github.com/Leiyi-Hu/mona) load, adapters included,
into the Swin of every codebase, by every way of loading; and ``pretrained_out_norm``.

The authors' key layout is stated here independently: a skeleton of their Swin
(``swin_transformer_{mona,adapter,adaptformer,lora}.py``: Microsoft's names, out norms
``norm0..norm3``, adapters ``my_module_1``/``my_module_2``, loralib's ``MergedLinear``) gives
the exact key set and shapes a checkpoint of theirs has, and their block forward is re-stated
to check where each of their adapters sits.
"""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MMLogger

from mona_mm.models import PEFTSwinTransformer
from tests.conftest import NANO
from tests.test_models.test_backbones.test_pretrained_loading import (_official_from_mmdet,
                                                                      logger_context)

CODEBASES = ('mmdet', 'mmseg', 'mmpretrain')
LORA = dict(type='LoRA', rank=8)  # theirs is r=64; the mapping does not depend on it
METHODS = dict(Mona=dict(type='Mona'), Adapter=dict(type='Adapter'),
               AdaptFormer=dict(type='AdaptFormer'), LoRA=LORA)
ALL_OUT = (0, 1, 2, 3)  # their Swin has norm0..norm3 (out_indices default)


# ------------------------------------------------------------------ their modules, re-stated
class _TheirMonaOp(nn.Module):

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, kernel_size=3, padding=1, groups=c)
        self.conv2 = nn.Conv2d(c, c, kernel_size=5, padding=2, groups=c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=7, padding=3, groups=c)
        self.projector = nn.Conv2d(c, c, kernel_size=1)

    def forward(self, x):
        x = (self.conv1(x) + self.conv2(x) + self.conv3(x)) / 3.0 + x
        return x + self.projector(x)


class _TheirMona(nn.Module):

    def __init__(self, dim):
        super().__init__()
        self.project1 = nn.Linear(dim, 64)
        self.project2 = nn.Linear(64, dim)
        self.dropout = nn.Dropout(p=0.1)
        self.adapter_conv = _TheirMonaOp(64)
        self.norm = nn.LayerNorm(dim)
        self.gamma = nn.Parameter(torch.ones(dim) * 1e-6)
        self.gammax = nn.Parameter(torch.ones(dim))

    def forward(self, x, hw):
        identity = x
        x = self.norm(x) * self.gamma + x * self.gammax
        p1 = self.project1(x)
        b, n, c = p1.shape
        p1 = p1.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)
        p1 = self.adapter_conv(p1).permute(0, 2, 3, 1).reshape(b, n, c)
        return identity + self.project2(self.dropout(F.gelu(p1)))


class _TheirAdapter(nn.Module):
    """Their Adapter (``residual``) and AdaptFormer's adapter (scaled by 0.1, no residual)."""

    def __init__(self, dim, residual):
        super().__init__()
        self.project1 = nn.Linear(dim, 64)
        self.project2 = nn.Linear(64, dim)
        self.dropout = nn.Dropout(p=0.1)
        self.residual = residual

    def forward(self, x):
        out = self.project2(self.dropout(F.gelu(self.project1(x))))
        return x + out if self.residual else out * 0.1


class _TheirMergedLinear(nn.Linear):
    """loralib's MergedLinear(dim, 3 dim, r, enable_lora=[True, False, True]), unmerged."""

    def __init__(self, dim, r):
        super().__init__(dim, 3 * dim)
        self.r = r
        self.lora_A = nn.Parameter(torch.zeros(2 * r, dim))
        self.lora_B = nn.Parameter(torch.zeros(2 * dim, r))

    def forward(self, x):
        dim = self.in_features
        result = F.linear(x, self.weight, self.bias)
        after_a = F.linear(x, self.lora_A)
        after_b = F.conv1d(after_a.transpose(-2, -1), self.lora_B.unsqueeze(-1),
                           groups=2).transpose(-2, -1)
        pad = torch.cat([after_b[..., :dim], torch.zeros_like(after_b[..., :dim]),
                         after_b[..., dim:]], -1)  # zero_pad: q and v rows
        return result + pad * (1 / self.r)  # lora_alpha 1


class _TheirBlock(nn.Module):

    def __init__(self, dim, heads, method, r):
        super().__init__()
        window = 7
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1)**2, heads))
        coords = torch.stack(torch.meshgrid([torch.arange(window)] * 2, indexing='ij'))
        coords = coords.flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.attn.register_buffer('relative_position_index',
                                  rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.attn.qkv = _TheirMergedLinear(dim, r) if method == 'LoRA' else \
            nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, 4 * dim)
        self.mlp.fc2 = nn.Linear(4 * dim, dim)
        self.method = method
        if method == 'Mona':
            self.my_module_1 = _TheirMona(dim)
            self.my_module_2 = _TheirMona(dim)
        elif method == 'Adapter':
            self.my_module_1 = _TheirAdapter(dim, residual=True)
            self.my_module_2 = _TheirAdapter(dim, residual=True)
        elif method == 'AdaptFormer':
            self.my_module_1 = _TheirAdapter(dim, residual=False)

    def forward_one_window(self, x):
        """Their block forward for a 7x7 map and shift 0 (one window, no mask, no pad)."""
        B, N, C = x.shape
        a = self.attn
        shortcut = x
        qkv = a.qkv(self.norm1(x)).reshape(B, N, 3, self.heads, C // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q * (C // self.heads)**-0.5) @ k.transpose(-2, -1)
        bias = a.relative_position_bias_table[a.relative_position_index.view(-1)]
        attn = (attn + bias.view(N, N, -1).permute(2, 0, 1)).softmax(-1)
        x = a.proj((attn @ v).transpose(1, 2).reshape(B, N, C))
        if self.method == 'Adapter':
            x = self.my_module_1(x)
        x = shortcut + x
        if self.method == 'Mona':
            x = self.my_module_1(x, (7, 7))
        identity = x
        y = self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))
        if self.method == 'Adapter':
            y = self.my_module_2(y)
        x = identity + y
        if self.method == 'AdaptFormer':
            x = x + self.my_module_1(identity)
        if self.method == 'Mona':
            x = self.my_module_2(x, (7, 7))
        return x


class _TheirSwin(nn.Module):
    """Module names and shapes of their ``SwinTransformer_<method>`` (patch_norm, no ape)."""

    def __init__(self, method, r=LORA['rank']):
        super().__init__()
        dim = NANO['embed_dims']
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.patch_embed.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(NANO['depths'], NANO['num_heads'])):
            c = dim * 2**i
            layer = nn.Module()
            layer.blocks = nn.ModuleList(_TheirBlock(c, heads, method, r) for _ in range(depth))
            if i < len(NANO['depths']) - 1:
                layer.downsample = nn.Module()
                layer.downsample.reduction = nn.Linear(4 * c, 2 * c, bias=False)
                layer.downsample.norm = nn.LayerNorm(4 * c)
            self.layers.append(layer)
        for i in ALL_OUT:
            self.add_module(f'norm{i}', nn.LayerNorm(dim * 2**i))


# ------------------------------------------------------------------ their layout, from ours
_OURS_TO_THEIRS = {
    'Mona': dict(post_attn='my_module_1', post_mlp='my_module_2'),
    'Adapter': dict(attn_out='my_module_1', mlp_out='my_module_2'),
    'AdaptFormer': dict(mlp_parallel='my_module_1'),
}
_INNER = {'convs.0.': 'conv1.', 'convs.1.': 'conv2.', 'convs.2.': 'conv3.', 'down.': 'project1.',
          'up.': 'project2.'}


def _to_authors(sd, method):
    """A state dict of our mmdet Swin (out_indices 0..3) in the authors' layout."""
    plain = {k: v for k, v in sd.items()
             if '.adapters.' not in k and not (k.startswith('norm') and k[4].isdigit())}
    out = _official_from_mmdet(plain)
    for k in [k for k in out if k.startswith('head.') or k.endswith('attn_mask')]:
        del out[k]  # the release's extras: their detection-style Swin has neither
    for k, v in sd.items():
        if k.startswith('norm') and k[4].isdigit():
            out[k] = v
        elif '.adapters.' in k:
            block, rest = k.split('.adapters.')
            point, inner = rest.split('.', 1)
            for ours, theirs in _INNER.items():
                inner = inner.replace(ours, theirs)
            block = block.replace('stages.', 'layers.')
            out[f'{block}.{_OURS_TO_THEIRS[method][point]}.{inner}'] = v
    for k in [k for k in out if k.endswith(('lora_A', 'lora_B'))]:
        v = out[k]  # ours (2, r, C) / (2, C, r) -> theirs (2r, C) / (2C, r)
        out[k] = v.reshape(-1, v.shape[-1])
    return out


# ------------------------------------------------------------------ fixtures and helpers
def _swin(codebase, peft, **kw):
    # (mmpretrain's Swin only pads maps smaller than the window when told to)
    arch = dict(arch=dict(NANO), pad_small_map=True) if codebase == 'mmpretrain' \
        else dict(NANO)
    kw.setdefault('out_indices', ALL_OUT)
    return PEFTSwinTransformer(codebase=codebase, peft=peft, **arch, **kw)


_SOURCES = {}


def _source(method):
    """Our mmdet Swin with every tensor (adapters and norms included) made distinctive."""
    if method not in _SOURCES:
        torch.manual_seed(7)
        src = _swin('mmdet', METHODS[method])
        with torch.no_grad():
            for p in src.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        _SOURCES[method] = src.eval()
    return _SOURCES[method]


def _authors_checkpoint(method, whole_model):
    sd = _to_authors(_source(method).state_dict(), method)
    if not whole_model:
        return sd  # a backbone alone
    sd = OrderedDict(('backbone.' + k, v) for k, v in sd.items())
    sd['neck.fpn_convs.0.conv.weight'] = torch.zeros(8, 32, 3, 3)
    sd['bbox_head.retina_cls.weight'] = torch.zeros(9, 8, 3, 3)
    return {'meta': {'mmdet_version': '2.11.0'}, 'state_dict': sd}  # mmcv 1.x save


def _ours_from_own_layout(codebase, method):
    ref = _swin(codebase, METHODS[method])
    ref.load_state_dict(_source(method).state_dict())
    return ref.eval()


def _assert_same(model, ref):
    got, want = model.state_dict(), ref.state_dict()
    assert list(got) == list(want)
    for k, v in want.items():
        assert torch.equal(got[k], v), k
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        for a, b in zip(model(x), ref(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


class _Detector(nn.Module):

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Module()


# ------------------------------------------------------------------ the layout itself
@pytest.mark.parametrize('method', list(METHODS))
def test_written_checkpoint_has_exactly_their_keys(method):
    theirs = _TheirSwin(method).state_dict()
    ckpt = _to_authors(_source(method).state_dict(), method)
    assert {k: tuple(v.shape) for k, v in ckpt.items()} == \
        {k: tuple(v.shape) for k, v in theirs.items()}


@pytest.mark.parametrize('codebase', CODEBASES)
@pytest.mark.parametrize('method', ['Mona', 'Adapter', 'LoRA'])
def test_their_block_forward_is_reproduced(codebase, method):
    """Their block (re-stated, loaded with their names, strictly) and ours, loaded from the
    same checkpoint, compute the same: each of their adapters is at its place here."""
    their = _TheirSwin(method)
    ckpt = _to_authors(_source(method).state_dict(), method)
    index = 'layers.0.blocks.0.attn.relative_position_index'
    assert torch.equal(their.state_dict()[index], ckpt[index])  # Microsoft's = mmdet's
    their.load_state_dict(ckpt, strict=True)
    their.eval()
    model = _swin(codebase, METHODS[method])
    model.load_state_dict(_to_authors(_source(method).state_dict(), method))
    model.eval()
    x = torch.randn(2, 49, NANO['embed_dims'])
    with torch.no_grad():
        want = their.layers[0].blocks[0].forward_one_window(x)
        got = model.stages[0].blocks[0](x, (7, 7))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - x).abs().max() > 1e-2  # the block (and its adapters) did something


# ------------------------------------------------------------------ every way of loading
@pytest.mark.parametrize('codebase', CODEBASES)
@pytest.mark.parametrize('way', ['load_state_dict', 'load_state_dict_whole_model',
                                 'init_cfg', 'init_cfg_whole_model', 'load_from'])
def test_authors_mona_checkpoint_loads(tmp_path, codebase, way):
    ref = _ours_from_own_layout(codebase, 'Mona')
    whole = way != 'load_state_dict' and way != 'init_cfg'
    ckpt = _authors_checkpoint('Mona', whole)
    if way == 'load_state_dict':
        model = _swin(codebase, METHODS['Mona'])
        result = model.load_state_dict(ckpt, strict=False)
        assert result.missing_keys == [] and result.unexpected_keys == []
    elif way == 'load_state_dict_whole_model':
        det = _Detector(_swin(codebase, METHODS['Mona']))
        result = det.load_state_dict(ckpt['state_dict'], strict=False)
        assert result.missing_keys == []
        assert all(not k.startswith('backbone.') for k in result.unexpected_keys)
        model = det.backbone
    elif way.startswith('init_cfg'):
        path = tmp_path / 'theirs.pth'
        torch.save(ckpt, path)
        model = _swin(codebase, METHODS['Mona'],
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        model.init_weights()
    else:  # what Runner.load_checkpoint does for `load_from`: the hook, then mmengine
        from mmengine.runner.checkpoint import _load_checkpoint_to_model

        from mona_mm.engine import BackboneCheckpointHook
        det = _Detector(_swin(codebase, METHODS['Mona']))
        runner = type('R', (), {'logger': MMLogger.get_current_instance(), 'model': det})()
        BackboneCheckpointHook().after_load_checkpoint(runner, ckpt)
        _load_checkpoint_to_model(det, ckpt, strict=False)
        model = det.backbone
    _assert_same(model, ref)


def test_backbone_only_file_through_load_from():
    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    from mona_mm.engine import BackboneCheckpointHook
    ckpt = {'state_dict': _authors_checkpoint('Mona', whole_model=False)}
    det = _Detector(_swin('mmdet', METHODS['Mona']))
    runner = type('R', (), {'logger': MMLogger.get_current_instance(), 'model': det})()
    BackboneCheckpointHook().after_load_checkpoint(runner, ckpt)
    _load_checkpoint_to_model(det, ckpt, strict=False)
    _assert_same(det.backbone, _ours_from_own_layout('mmdet', 'Mona'))


@pytest.mark.parametrize('codebase', CODEBASES)
@pytest.mark.parametrize('method', ['Adapter', 'AdaptFormer', 'LoRA'])
def test_authors_baseline_checkpoints_load(tmp_path, codebase, method):
    path = tmp_path / 'theirs.pth'
    torch.save(_authors_checkpoint(method, whole_model=True), path)
    model = _swin(codebase, METHODS[method],
                  init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    _assert_same(model, _ours_from_own_layout(codebase, method))


def test_log_says_the_adapters_were_loaded(tmp_path):
    path = tmp_path / 'theirs.pth'
    torch.save(_authors_checkpoint('Mona', whole_model=True), path)
    logger = MMLogger.get_instance('mona_mm_test_authors', log_file=str(tmp_path / 'log.txt'))
    with logger_context(logger):
        _swin('mmdet', METHODS['Mona'],
              init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()
    text = (tmp_path / 'log.txt').read_text()
    line = [ln for ln in text.splitlines() if 'tensors loaded' in ln]
    assert len(line) == 1, text
    n_adapter = sum(1 for k in _source('Mona').state_dict() if '.adapters.' in k)
    assert f'{n_adapter} adapter tensors loaded' in line[0]
    assert 'newly initialised' not in line[0] and 'missing' not in line[0]
    assert "Mona adapters of the Mona authors' code" in line[0]


def test_adaptformer_difference_is_warned(tmp_path):
    path = tmp_path / 'theirs.pth'
    torch.save(_authors_checkpoint('AdaptFormer', whole_model=True), path)
    logger = MMLogger.get_instance('mona_mm_test_authors_af',
                                   log_file=str(tmp_path / 'log.txt'))
    with logger_context(logger):
        _swin('mmdet', METHODS['AdaptFormer'],
              init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()
    assert 'reads norm2(x)' in (tmp_path / 'log.txt').read_text()


# ------------------------------------------------------------------ clear refusals
@pytest.mark.parametrize('peft,match', [
    (dict(type='Adapter'), r"Mona adapters of the Mona authors'.*peft='Adapter'.*"
     r"peft=dict\(type='Mona', hidden_dims=64\)"),
    (dict(type='Full'), r"peft='Full'.*type='Mona'"),
    (dict(type='Mona', hidden_dims=32), r'checkpoint \(64, 32\) vs model \(32, 32\).*'
     r'hidden_dims=64'),
])
def test_authors_mona_into_another_method_is_refused(peft, match):
    ckpt = _authors_checkpoint('Mona', whole_model=False)
    with pytest.raises(ValueError, match=match):
        _swin('mmdet', peft).load_state_dict(ckpt, strict=False)


def test_authors_lora_into_another_rank_is_refused():
    ckpt = _authors_checkpoint('LoRA', whole_model=False)
    with pytest.raises(ValueError, match=r"LoRA of the Mona authors'.*rank=8, alpha=1"):
        _swin('mmdet', dict(type='LoRA', rank=4)).load_state_dict(ckpt, strict=False)


# ------------------------------------------------------------------ odd layouts
def test_our_adapter_names_in_microsoft_layout_are_not_garbled():
    """swin_converter would read ``post_attn.`` as an attention key."""
    src = _source('Mona')
    sd = _to_authors(src.state_dict(), 'Mona')
    sd = OrderedDict((k, v) for k, v in sd.items() if '.my_module_' not in k)
    for k, v in src.state_dict().items():
        if '.adapters.' in k:
            sd[k.replace('stages.', 'layers.', 1)] = v
    model = _swin('mmdet', METHODS['Mona'])
    result = model.load_state_dict(sd, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    _assert_same(model, _ours_from_own_layout('mmdet', 'Mona'))


@pytest.mark.parametrize('codebase', CODEBASES)
def test_their_absolute_position_map_loads(codebase):
    size = 'img_size' if codebase == 'mmpretrain' else 'pretrain_img_size'
    kw = {size: 64, 'use_abs_pos_embed': True}
    sd = _to_authors(_source('Mona').state_dict(), 'Mona')
    sd['absolute_pos_embed'] = torch.randn(1, NANO['embed_dims'], 16, 16)  # (1, C, H, W)
    model = _swin(codebase, METHODS['Mona'], **kw)
    model.load_state_dict(sd, strict=False)
    torch.testing.assert_close(model.absolute_pos_embed,
                               sd['absolute_pos_embed'].flatten(2).transpose(1, 2))


# ------------------------------------------------------------------ pretrained_out_norm
def _no_adapters(sd):
    return OrderedDict((k, v) for k, v in sd.items() if '.adapters.' not in k)


@pytest.mark.parametrize('codebase', CODEBASES)
@pytest.mark.parametrize('way', ['init_cfg', 'load_state_dict'])
def test_pretrained_out_norm(tmp_path, codebase, way):
    src = _source('Mona')
    # norm3 -> the release's final `norm`
    release = _official_from_mmdet(_no_adapters(src.state_dict()))
    path = tmp_path / 'release.pth'
    torch.save({'model': release}, path)
    for flag in (True, False):
        if way == 'init_cfg':
            model = _swin(codebase, dict(type='Fixed'), pretrained_out_norm=flag,
                          init_cfg=dict(type='Pretrained', checkpoint=str(path)))
            model.init_weights()
        else:
            model = _swin(codebase, dict(type='Fixed'), pretrained_out_norm=flag)
            model.load_state_dict(release, strict=False)
        assert torch.equal(model.stages[3].blocks[1].attn.w_msa.qkv.weight,
                           src.stages[3].blocks[1].attn.w_msa.qkv.weight)
        if flag:  # today's behaviour: the final norm is the last out norm
            assert torch.equal(model.norm3.weight, src.norm3.weight)
            assert torch.equal(model.norm3.bias, src.norm3.bias)
        else:  # the authors': a fresh LayerNorm
            assert torch.equal(model.norm3.weight, torch.ones(256))
            assert torch.equal(model.norm3.bias, torch.zeros(256))


def test_pretrained_out_norm_is_logged_and_keeps_own_out_norms(tmp_path):
    src = _source('Mona')
    path = tmp_path / 'release.pth'
    torch.save({'model': _official_from_mmdet(_no_adapters(src.state_dict()))}, path)
    logger = MMLogger.get_instance('mona_mm_test_out_norm', log_file=str(tmp_path / 'log.txt'))
    with logger_context(logger):
        _swin('mmdet', dict(type='Fixed'), pretrained_out_norm=False,
              init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()
    assert 'final `norm` not loaded (pretrained_out_norm=False)' in \
        (tmp_path / 'log.txt').read_text()
    # norm<i> of a checkpoint in this layout (and the authors' norm0..3) load either way
    model = _swin('mmdet', METHODS['Mona'], pretrained_out_norm=False)
    model.load_state_dict(_authors_checkpoint('Mona', whole_model=False))
    assert torch.equal(model.norm3.weight, src.norm3.weight)
    with pytest.raises(TypeError, match='pretrained_out_norm must be True or False'):
        _swin('mmdet', METHODS['Mona'], pretrained_out_norm='no')
