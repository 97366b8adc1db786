"""Adapters on the ViT family (mmpretrain's and mmseg's VisionTransformer) and on ConvNeXt,
through the same spec-driven injection as Swin."""
import pytest
import torch

from mona_mm.models import (LoRAMultiheadAttention, LoRAQKV, Mona, MonaDeploy, MonaReference,
                            PEFTBackbone, PEFTVisionTransformer, iter_adapters, merge_lora,
                            reparameterize)
from mona_mm.pruning import prune_adapters
from mona_mm.utils import count_trainable

VIT = dict(arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
           img_size=64, patch_size=16)
MMSEG_VIT = dict(img_size=64, patch_size=16, embed_dims=32, num_layers=2, num_heads=2,
                 mlp_ratio=2, out_indices=(0, 1))
METHODS = ['Full', 'Fixed', 'BitFit', 'NormTuning', 'Partial', 'Adapter', 'AdaptFormer',
           'LoRA', 'LoRand', 'Mona']


def test_mona_vit_b16_trainable_count():
    bb = PEFTVisionTransformer(arch='b', codebase='mmpretrain')
    assert count_trainable(bb)['backbone_trainable'] == 2_684_928 == 24 * (133 * 768 + 9728)
    assert len(list(iter_adapters(bb))) == 24
    assert not bb.cls_token.requires_grad and not bb.pos_embed.requires_grad


@pytest.mark.parametrize('cls', [Mona, MonaReference])
def test_extra_tokens_take_the_token_wise_path(cls):
    """Grid tokens: Mona on the grid alone. Each extra token: Mona on that token alone as a
    1x1 map (each depthwise conv sees only its centre tap), independent of the grid."""
    torch.manual_seed(0)
    mona = cls(16, 8).eval()
    with torch.no_grad():
        mona.gamma.fill_(0.5)
        for c in mona.adapter_conv.convs:
            c.bias.normal_()
    extra, grid = torch.randn(2, 3, 16), torch.randn(2, 20, 16)
    out = mona(torch.cat([extra, grid], 1), (4, 5))
    torch.testing.assert_close(out[:, 3:], mona(grid, (4, 5)))
    for i in range(3):
        torch.testing.assert_close(out[:, i:i + 1], mona(extra[:, i:i + 1], (1, 1)))
    # the 1x1 path really is the centre tap: it differs from skipping the convs
    conv = mona.adapter_conv
    h = mona.project1(mona.norm(extra) * mona.gamma + extra * mona.gammax)
    centre = sum(c.weight[:, 0, c.kernel_size[0] // 2, c.kernel_size[0] // 2] * h + c.bias
                 for c in conv.convs) / 3 + h
    centre = centre + torch.nn.functional.linear(centre, conv.projector.weight[:, :, 0, 0],
                                                 conv.projector.bias)
    torch.testing.assert_close(out[:, :3], extra + mona.project2(torch.nn.functional.gelu(
        centre)))
    deploy = MonaDeploy.from_mona(mona).eval()
    torch.testing.assert_close(deploy(torch.cat([extra, grid], 1), (4, 5)), out, rtol=1e-5,
                               atol=1e-5)


def _step(bb, x):
    bb.train()
    loss = sum(o.float().square().mean() for o in bb(x))
    if loss.requires_grad:  # (Fixed: nothing trains)
        loss.backward()


@pytest.mark.parametrize('codebase,kw', [('mmpretrain', VIT), ('mmseg', MMSEG_VIT)],
                         ids=['mmpretrain', 'mmseg'])
@pytest.mark.parametrize('method', METHODS)
def test_every_method_on_both_vits(codebase, kw, method):
    torch.manual_seed(0)
    bb = PEFTVisionTransformer(codebase=codebase, peft=dict(type=method), **kw)
    x = torch.randn(2, 3, 64, 80)  # 4 x 5 patches, not the pretraining grid
    _step(bb, x)
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    for n, p in bb.named_parameters():
        assert (p.grad is not None) == (n in trainable) or n not in trainable, n
    if method in ('Adapter', 'AdaptFormer', 'LoRand', 'Mona', 'LoRA'):
        assert trainable and all(
            any(s in n for s in ('.adapters.', 'lora_')) for n in trainable), method
        assert all(bb.get_parameter(n).grad is not None for n in trainable), method
    if method == 'Mona':
        assert len(list(iter_adapters(bb))) == 2 * 2
    if method == 'Partial':
        assert trainable and all(n.startswith('layers.1.') for n in trainable)


def _vit_with_active_monas():
    bb = PEFTVisionTransformer(codebase='mmpretrain', **VIT)
    bb.eval()
    for _, a in iter_adapters(bb):  # gamma starts at 1e-6: make the scaled norm matter
        with torch.no_grad():
            a.gamma.fill_(0.3)
    return bb


def test_mona_points_on_mmpretrain_vit_block():
    """x = x + attn(ln1(x)); x = mona1(x); x = x + ffn(ln2(x)); x = mona2(x)."""
    torch.manual_seed(0)
    bb = _vit_with_active_monas()
    x = torch.randn(1, 3, 64, 64)
    tokens = {}
    bb.layers[1].register_forward_pre_hook(lambda m, a: tokens.setdefault('in', a[0]))
    bb.layers[1].register_forward_hook(lambda m, a, o: tokens.setdefault('out', o))
    bb(x)
    blk, t = bb.layers[1], tokens['in']
    ref = t + blk.attn(blk.ln1(t))
    ref = blk.adapters['post_attn'](ref, (4, 4))
    # (calling blk.ln2 directly would run the post_attn adapter hooked on it)
    ref = ref + blk.ffn.layers(torch.nn.functional.layer_norm(
        ref, (32, ), blk.ln2.weight, blk.ln2.bias, blk.ln2.eps))
    ref = blk.adapters['post_mlp'](ref, (4, 4))
    torch.testing.assert_close(tokens['out'], ref)


def test_lora_targets_vit_qkv_and_merges():
    torch.manual_seed(0)
    a = PEFTVisionTransformer(codebase='mmpretrain', peft=dict(type='LoRA', rank=4), **VIT)
    assert isinstance(a.layers[0].attn.qkv, LoRAQKV)
    b = PEFTVisionTransformer(codebase='mmseg', peft=dict(type='LoRA', rank=4), **MMSEG_VIT)
    assert isinstance(b.layers[0].attn.attn, LoRAMultiheadAttention)
    for bb in (a, b):
        for _, lora in iter_adapters(bb):
            with torch.no_grad():
                lora.lora_B.normal_()
        bb.eval()
        x = torch.randn(1, 3, 64, 64)
        before = bb(x)
        assert merge_lora(bb) == 2
        for o1, o2 in zip(before, bb(x)):
            torch.testing.assert_close(o1, o2, rtol=1e-4, atol=1e-5)


def test_mimi_prunes_vit_monas_structurally():
    torch.manual_seed(0)
    bb = PEFTVisionTransformer(codebase='mmpretrain', **VIT)
    bb.eval()
    x = torch.randn(1, 3, 64, 64)
    names = [n for n, _ in iter_adapters(bb)]
    keep = {names[0]: torch.arange(0, 64, 2), names[1]: torch.arange(0)}
    # pruning == zeroing every weight the removed neurons own (an emptied adapter keeps only its output bias)
    with torch.no_grad():
        for n, idx in keep.items():
            a = bb.get_submodule(n)
            drop = torch.tensor([i for i in range(64) if i not in set(idx.tolist())])
            params = dict(a.named_parameters())
            for pname, dims in a.hidden_param_dims().items():
                for d in dims:
                    params[pname].index_fill_(d, drop, 0.0)
            if idx.numel() == 0:
                for p in a.parameters():
                    p.zero_()
    ref = bb(x)
    prune_adapters(bb, keep)
    assert bb.get_submodule(names[0]).hidden_dims == 32
    assert bb.get_submodule(names[1]).hidden_dims == 0  # emptied: keeps only its bias
    for o1, o2 in zip(ref, bb(x)):
        torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-6)


def test_convnext_one_mona_after_each_block():
    torch.manual_seed(0)
    bb = PEFTBackbone(dict(type='mmpretrain.ConvNeXt', arch=dict(depths=[1, 1, 2, 1],
                                                              channels=[16, 32, 48, 64])),
                      peft=dict(type='Mona', hidden_dims=8))
    adapters = dict(iter_adapters(bb))
    assert sorted(adapters) == sorted(f'stages.{i}.{j}.adapters.post_mlp'
                                      for i, d in enumerate([1, 1, 2, 1]) for j in range(d))
    expected = sum(sum(p.numel() for p in Mona(c, 8).parameters())
                   for c in (16, 32, 48, 48, 64))
    assert count_trainable(bb)['backbone_trainable'] == expected
    _step(bb, torch.randn(2, 3, 64, 64))
    # the adapter really runs on the block's NCHW map
    bb.eval()
    blk = bb.stages[2][0]
    x = torch.randn(1, 48, 4, 4)
    ref_blk = blk.adapters['post_mlp']
    with torch.no_grad():
        ref_blk.gamma.fill_(0.3)
    y = blk(x)
    del blk.adapters['post_mlp']
    plain = blk(x)
    tokens = plain.flatten(2).transpose(1, 2)
    torch.testing.assert_close(
        y, ref_blk(tokens, (4, 4)).transpose(1, 2).reshape(1, 48, 4, 4))
    with pytest.raises(ValueError, match="offer only \\('post_mlp',\\)"):
        PEFTBackbone(dict(type='mmpretrain.ConvNeXt', arch='tiny'), peft=dict(type='Adapter'))


def test_peft_backbone_wrapper_is_the_upstream_class():
    from mmpretrain.models.backbones import VisionTransformer
    bb = PEFTBackbone(dict(type='mmpretrain.VisionTransformer', **VIT))
    assert isinstance(bb, VisionTransformer)
    assert len(list(iter_adapters(bb))) == 4
    with pytest.raises(KeyError, match='no adapter spec'):
        PEFTBackbone(dict(type='mmpretrain.DeiT3', arch='s'))


def test_reparameterize_vit():
    torch.manual_seed(0)
    bb = _vit_with_active_monas()
    x = torch.randn(1, 3, 64, 48)
    ref = bb(x)
    assert reparameterize(bb)['mona'] == 4
    torch.testing.assert_close(bb(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('codebase,kw', [('mmpretrain', VIT), ('mmseg', MMSEG_VIT)],
                         ids=['mmpretrain', 'mmseg'])
def test_vit_recompute_is_bit_identical(codebase, kw):
    kw = dict(kw, codebase=codebase, drop_path_rate=0.3)
    torch.manual_seed(0)
    a = PEFTVisionTransformer(**kw)
    b = PEFTVisionTransformer(**kw, recompute=('adapters', 'attn', 'ffn'))
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 64)
    losses = []
    for m in (a, b):
        m.train()
        torch.manual_seed(1)
        loss = sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in m(x))
        loss.backward()
        losses.append(loss)
    assert torch.equal(losses[0], losses[1])
    ga = dict(a.named_parameters())
    for n, p in b.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.grad, ga[n].grad), n


def test_vit_adapter_only_checkpoint_round_trip(tmp_path):
    from mona_mm.utils import load_adapter_checkpoint, make_adapter_checkpoint

    class Classifier(torch.nn.Module):

        def __init__(self, init_cfg=None):
            super().__init__()
            self.backbone = PEFTVisionTransformer(codebase='mmpretrain', init_cfg=init_cfg,
                                                  **VIT)
            self.head = torch.nn.Linear(32, 3)

        def init_weights(self):
            self.backbone.init_weights()

        def forward(self, x):
            return self.head(self.backbone(x)[-1])

    torch.manual_seed(0)
    pre = PEFTVisionTransformer(codebase='mmpretrain', peft=dict(type='Full'), **VIT)
    path = tmp_path / 'vit.pth'
    torch.save({'state_dict': pre.state_dict()}, path)
    model = Classifier(dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    ckpt = make_adapter_checkpoint(model)
    assert all('.adapters.' in k or k.startswith('head.') for k in ckpt['state_dict'])
    torch.save(ckpt, tmp_path / 'adapters.pth')
    fresh = Classifier()
    load_adapter_checkpoint(fresh, str(tmp_path / 'adapters.pth'))
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(x), model(x))


def test_deit_distillation_token_is_an_extra_token():
    torch.manual_seed(0)
    bb = PEFTBackbone(dict(type='mmpretrain.DistilledVisionTransformer', **VIT,
                           out_type='featmap'))
    grids = []
    for _, a in iter_adapters(bb):
        a.register_forward_pre_hook(lambda m, args: grids.append((args[0].shape[1], args[1])))
    bb.eval()
    out = bb(torch.randn(1, 3, 64, 80))
    assert out[-1].shape == (1, 32, 4, 5)
    assert grids and all(n == 2 + 4 * 5 and hw == (4, 5) for n, hw in grids)


@pytest.mark.parametrize('out_type', ['raw', 'cls_token', 'featmap', 'avg_featmap'])
def test_vit_out_types(out_type):
    bb = PEFTVisionTransformer(codebase='mmpretrain', out_type=out_type, **VIT)
    bb.eval()
    out = bb(torch.randn(1, 3, 64, 64))[-1]
    expected = {'raw': (1, 17, 32), 'cls_token': (1, 32), 'featmap': (1, 32, 4, 4),
                'avg_featmap': (1, 32)}[out_type]
    assert out.shape == expected
