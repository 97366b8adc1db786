"""Pretrained loading into the Swin of every codebase and into both ViTs: Microsoft's release,
mmpretrain's ``prefix=`` idiom, mmseg's ``pretrained=``, another window size, ``attn_mask``
buffers, mmpretrain v1 names, absolute position embeddings of another grid, and one clear
error when nothing matches."""
import pytest
import torch

from mona_mm.models import PEFTSwinTransformer, PEFTVisionTransformer
from tests.test_models.test_backbones.test_pretrained_loading import _official_from_mmdet

NANO = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
CODEBASES = ('mmdet', 'mmseg', 'mmpretrain')


def _swin(codebase, **kw):
    # (mmpretrain's Swin only pads maps smaller than the window when told to)
    arch = dict(arch=dict(NANO), pad_small_map=True) if codebase == 'mmpretrain' \
        else dict(NANO)
    kw.setdefault('out_indices', (3, ))
    return PEFTSwinTransformer(codebase=codebase, **arch, **kw)


@pytest.fixture(scope='module')
def source():
    torch.manual_seed(3)
    src = _swin('mmdet', peft=dict(type='Full'))
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return src.eval()


def _features(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)[-1]


def _pretrained(codebase, path, **kw):
    m = _swin(codebase, peft=dict(type='Fixed'),
              init_cfg=dict(type='Pretrained', checkpoint=str(path), **kw.pop('ckpt_kw', {})),
              **kw)
    m.init_weights()
    return m


@pytest.mark.parametrize('codebase', CODEBASES)
def test_microsoft_release_into_every_codebase(tmp_path, source, codebase):
    path = tmp_path / 'official.pth'
    torch.save({'model': _official_from_mmdet(source.state_dict())}, path)
    m = _pretrained(codebase, path)
    # every tensor of the release is loaded exactly (its one final norm is the last out norm)
    got = m.state_dict()
    checked = 0
    for k, v in source.state_dict().items():
        if k.startswith(('norm0.', 'norm1.', 'norm2.')) or k not in got:
            continue
        assert torch.equal(got[k], v), (codebase, k)
        checked += 1
    assert checked == len([k for k in got if '.adapters.' not in k])
    x = torch.randn(1, 3, 64, 64)
    ref = _features(source, x)
    # mmpretrain's Swin skips the shift where the map equals the window (pad_small_map=False)
    same_net = _swin(codebase, peft=dict(type='Fixed'))
    same_net.load_state_dict(source.state_dict(), strict=False)
    torch.testing.assert_close(_features(m, x), _features(same_net, x))
    if codebase != 'mmpretrain':
        torch.testing.assert_close(_features(m, x), ref)


@pytest.mark.parametrize('codebase', CODEBASES)
def test_prefix_idiom_and_no_match_errors(tmp_path, source, codebase):
    sd = {'backbone.' + k: v for k, v in source.state_dict().items()}
    sd['head.fc.weight'] = torch.zeros(4, 256)
    path = tmp_path / 'clf.pth'
    torch.save({'state_dict': sd, 'meta': {}}, path)
    m = _pretrained(codebase, path, ckpt_kw=dict(prefix='backbone'))
    assert torch.equal(m.stages[2].blocks[1].attn.w_msa.qkv.weight,
                       source.stages[2].blocks[1].attn.w_msa.qkv.weight)
    with pytest.raises(ValueError, match="no key starts with prefix 'encoder.'"):
        _pretrained(codebase, path, ckpt_kw=dict(prefix='encoder'))
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(8, 3, 3, 3)}}, other)
    with pytest.raises(ValueError, match=r'matches no tensor.*conv1.weight'):
        _pretrained(codebase, other)


def test_mmseg_pretrained_argument_loads(tmp_path, source):
    path = tmp_path / 'bb.pth'
    torch.save(source.state_dict(), path)
    m = _swin('mmseg', peft=dict(type='Fixed'), pretrained=str(path))
    m.init_weights()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_features(m, x), _features(source, x))


@pytest.mark.parametrize('codebase', CODEBASES)
def test_window_size_change_and_attn_masks(tmp_path, source, codebase):
    sd = dict(source.state_dict())
    sd['stages.0.blocks.1.attn_mask'] = torch.zeros(4, 49, 49)  # swin2mmseg / mmcls 0.x files
    path = tmp_path / 'w7.pth'
    torch.save({'state_dict': sd}, path)
    m = _pretrained(codebase, path, window_size=12)
    table = m.stages[0].blocks[0].attn.w_msa.relative_position_bias_table
    assert table.shape == (23 * 23, 1)
    src_table = source.stages[0].blocks[0].attn.w_msa.relative_position_bias_table
    assert not torch.equal(table[:1], torch.zeros_like(table[:1]))
    assert abs(table.mean() - src_table.mean()) < 0.5  # resized, not re-initialised
    assert torch.equal(m.stages[1].blocks[0].attn.w_msa.qkv.weight,
                       source.stages[1].blocks[0].attn.w_msa.qkv.weight)


def test_mmpretrain_v1_final_norm_name(tmp_path, source):
    sd = {k: v for k, v in source.state_dict().items() if not k.startswith('norm3.')}
    sd['norm.weight'] = source.norm3.weight
    sd['norm.bias'] = source.norm3.bias
    path = tmp_path / 'v1.pth'
    torch.save({'state_dict': sd}, path)
    for codebase in CODEBASES:
        m = _pretrained(codebase, path)
        assert torch.equal(m.norm3.weight, source.norm3.weight), codebase


@pytest.mark.parametrize('codebase', CODEBASES)
def test_absolute_position_embedding_is_resized(tmp_path, codebase):
    kw = dict(use_abs_pos_embed=True, peft=dict(type='Full'))
    size = 'img_size' if codebase == 'mmpretrain' else 'pretrain_img_size'
    src = _swin(codebase, **kw, **{size: 64})
    with torch.no_grad():
        src.absolute_pos_embed.normal_()
    path = tmp_path / 'abs.pth'
    torch.save(src.state_dict(), path)
    m = _pretrained(codebase, path, use_abs_pos_embed=True, **{size: 96})
    assert m.absolute_pos_embed.shape[1] == 24 * 24
    assert m.absolute_pos_embed.abs().sum() > 0


def test_mmpretrain_vit_checkpoint_into_mmseg_vit(tmp_path):
    torch.manual_seed(0)
    src = PEFTVisionTransformer(codebase='mmpretrain', peft=dict(type='Full'),
                                arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                          feedforward_channels=128),
                                img_size=64, patch_size=16, out_type='featmap',
                                final_norm=False)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / 'vit.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in src.state_dict().items()}}, path)
    kw = dict(patch_size=16, embed_dims=32, patch_bias=True, num_layers=2, num_heads=2, mlp_ratio=4,
              out_indices=(1, ), peft=dict(type='Fixed'),
              init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    m = PEFTVisionTransformer(codebase='mmseg', img_size=64, **kw)
    m.init_weights()
    x = torch.randn(1, 3, 64, 64)
    src.eval()
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x)[0], src(x)[0], rtol=1e-4, atol=1e-4)
    # every tensor is loaded exactly (mmpretrain's attention names -> torch's)
    assert torch.equal(m.layers[1].attn.attn.in_proj_weight, src.layers[1].attn.qkv.weight)
    assert torch.equal(m.layers[1].attn.attn.out_proj.bias, src.layers[1].attn.proj.bias)
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(8, 3, 3, 3)}}, other)
    bad = PEFTVisionTransformer(codebase='mmseg', img_size=64, **dict(
        kw, init_cfg=dict(type='Pretrained', checkpoint=str(other))))
    with pytest.raises(ValueError, match='matches no tensor'):
        bad.init_weights()
    # another input size: mmseg's ViT resizes the position embedding as its init does
    big = PEFTVisionTransformer(codebase='mmseg', img_size=96, **kw)
    big.init_weights()
    assert big.pos_embed.shape == (1, 1 + 36, 32)


def test_swin_v2_checkpoint_is_refused(tmp_path):
    from mmpretrain.models.backbones import SwinTransformerV2
    v2 = SwinTransformerV2(arch=dict(NANO, extra_norm_every_n_blocks=0), img_size=64,
                           window_size=4)
    path = tmp_path / 'v2.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in v2.state_dict().items()}}, path)
    for codebase in CODEBASES:
        with pytest.raises(ValueError, match='Swin V2 checkpoint.*PEFTSwinTransformerV2'):
            _pretrained(codebase, path)


def test_vit_position_embedding_of_another_grid(tmp_path):
    kw = dict(arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
              patch_size=16, peft=dict(type='Full'), codebase='mmpretrain')
    src = PEFTVisionTransformer(img_size=96, **kw)  # 6x6 grid + cls
    with torch.no_grad():
        src.pos_embed.normal_()
    path = tmp_path / 'vit96.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in src.state_dict().items()}}, path)
    m = PEFTVisionTransformer(img_size=64, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                                         prefix='backbone'), **kw)
    m.init_weights()
    assert m.pos_embed.shape == (1, 1 + 16, 32)
    assert torch.equal(m.pos_embed[:, 0], src.pos_embed[:, 0])  # the cls token's own entry
