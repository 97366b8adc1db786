"""torch.compile sees whole graphs: no graph break of ours for any method on any backbone
family, in training mode (the graph AOTAutograd differentiates) and in eval mode; with
recomputation and after MiMi pruning; and compiled results equal eager ones.

"Ours" is a method's count minus the ``Full`` count of the same backbone (upstream's own
breaks). That count is zero too: the numpy scalars of mmpretrain's ViT and mmdet's PVT, where
upstream breaks every block's graph, are Python numbers in a PEFT backbone (same values).
"""
import pytest
import torch
import torch._dynamo as dynamo

from mona_mm.models import PEFTBackbone
from mona_mm.models.peft.base import iter_adapters
from mona_mm.models.peft.names import METHOD_TYPES
from mona_mm.pruning import apply_structure, get_structure
from tests.test_models.test_backbones.peft_checks import weighted_loss

SWIN = dict(embed_dims=32, depths=(1, 1), num_heads=(1, 2), strides=(4, 2), out_indices=(0, 1))
VIT = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
MMSEG_VIT = dict(img_size=32, patch_size=8, embed_dims=32, num_layers=2, num_heads=2,
                 mlp_ratio=2, out_indices=(0, 1), drop_path_rate=0.1)
#: family -> (backbone config, input H x W): every family with a spec, tiny, with drop path
#: where the family has it (its branch is where upstream broke graphs)
FAMILIES = {
    'swin-mmdet': (dict(type='mmdet.SwinTransformer', **SWIN, drop_path_rate=0.1), (64, 64)),
    'swin-mmseg': (dict(type='mmseg.SwinTransformer', **SWIN), (64, 64)),
    'swin-mmpretrain': (dict(type='mmpretrain.SwinTransformer', img_size=56, out_indices=(0, 1),
                             arch=dict(embed_dims=32, depths=(1, 1), num_heads=(1, 2)),
                             drop_path_rate=0.1), (56, 56)),
    'swinv2': (dict(type='mmpretrain.SwinTransformerV2', img_size=64, window_size=4,
                    arch=dict(embed_dims=32, depths=(1, 1), num_heads=(1, 2),
                              extra_norm_every_n_blocks=0),
                    out_indices=(0, 1), drop_path_rate=0.1), (64, 64)),
    'vit-mmpretrain': (dict(type='mmpretrain.VisionTransformer', arch=VIT, img_size=32,
                            patch_size=8, out_type='featmap', drop_path_rate=0.1), (32, 32)),
    'vit-mmseg': (dict(type='mmseg.VisionTransformer', **MMSEG_VIT), (32, 32)),
    'convnext': (dict(type='mmpretrain.ConvNeXt', arch=dict(depths=[1, 1], channels=[16, 32]),
                      out_indices=(0, 1), drop_path_rate=0.1), (32, 32)),
    'resnet-mmdet': (dict(type='mmdet.ResNet', depth=18, out_indices=(3, )), (32, 32)),
    'resnetv1c-mmseg': (dict(type='mmseg.ResNetV1c', depth=18, out_indices=(3, )), (32, 32)),
    'resnext-mmpretrain': (dict(type='mmpretrain.ResNeXt', depth=50, groups=4,
                                width_per_group=4, stem_channels=16, base_channels=16),
                           (32, 32)),
    'mit': (dict(type='mmseg.MixVisionTransformer', embed_dims=16, num_layers=[1, 1, 1, 1],
                 num_heads=[1, 1, 2, 2], drop_path_rate=0.1, out_indices=(1, 3)), (64, 64)),
    'pvt': (dict(type='mmdet.PyramidVisionTransformer', embed_dims=16, num_layers=[1, 1, 1, 1],
                 num_heads=[1, 2, 5, 8], drop_path_rate=0.1), (64, 64)),
    'pvtv2': (dict(type='mmdet.PyramidVisionTransformerV2', embed_dims=16,
                   num_layers=[1, 1, 1, 1], num_heads=[1, 2, 5, 8], drop_path_rate=0.1),
              (64, 64)),
    'sam': (dict(type='mmpretrain.ViTSAM', img_size=64, patch_size=8, window_size=3,
                 arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64,
                           global_attn_indexes=[1]),
                 out_channels=16, drop_path_rate=0.1), (64, 64)),
    'eva02': (dict(type='mmpretrain.ViTEVA02', arch=VIT, img_size=32, patch_size=8,
                   out_type='featmap', drop_path_rate=0.1), (32, 32)),
    'beit-mmpretrain': (dict(type='mmpretrain.BEiTViT', arch=VIT, img_size=32, patch_size=8,
                             out_type='featmap', drop_path_rate=0.1,
                             layer_scale_init_value=0.1), (32, 32)),
    'beit-mmseg': (dict(type='mmseg.BEiT', **MMSEG_VIT), (32, 32)),
    'mae-mmseg': (dict(type='mmseg.MAE', **MMSEG_VIT), (32, 32)),
    'hivit': (dict(type='mmpretrain.HiViT', arch=dict(embed_dims=32, depths=[1, 4], num_heads=2),
                   img_size=32, patch_size=8, inner_patches=2, drop_path_rate=0.1), (32, 32)),
}
METHODS = tuple(METHOD_TYPES.values())  # the paper's ten, Full first
#: The methods that add modules (the others only choose what trains: Full's graph in eval)
ADAPTER_METHODS = ('Adapter', 'LoRA', 'AdaptFormer', 'LoRand', 'Mona')


def graph_breaks(model, x) -> int:
    """Graph breaks torch.compile meets in ``model(x)`` (in the model's current mode, with
    gradients recorded: the graph AOTAutograd differentiates)."""
    dynamo.reset()
    try:
        return dynamo.explain(model)(x).graph_break_count
    finally:
        dynamo.reset()


def _build(family, method, **kw):
    cfg, _ = FAMILIES[family]
    return PEFTBackbone(dict(cfg), peft=method, **kw)


def _input(family, batch=2):
    torch.manual_seed(1)
    return torch.randn(batch, 3, *FAMILIES[family][1])


@pytest.mark.parametrize('family', FAMILIES)
def test_no_graph_breaks_of_ours_for_any_method(family):
    x = _input(family)
    full = _build(family, 'Full').train()
    upstream = graph_breaks(full, x)
    with torch.no_grad():
        upstream_eval = graph_breaks(full.eval(), x)
    ours, refused = {}, []
    for method in METHODS[1:]:
        try:
            model = _build(family, method)
        except ValueError as e:  # a method that does not apply says why at build
            assert 'offer' in str(e) or 'qkv' in str(e), str(e)
            refused.append(method)
            continue
        ours[method, 'train'] = graph_breaks(model.train(), x) - upstream
        if method in ADAPTER_METHODS:  # inference (Mona's fused projection: another path)
            with torch.no_grad():
                ours[method, 'eval'] = graph_breaks(model.eval(), x) - upstream_eval
    assert upstream == upstream_eval == 0, f'upstream {family} breaks its own graph'
    assert ours and all(n == 0 for n in ours.values()), ours
    assert 'Mona' not in refused


@pytest.mark.parametrize('family,parts', [('swin-mmdet', ('adapters', 'attn', 'ffn')),
                                          ('vit-mmpretrain', ('adapters', 'attn', 'ffn')),
                                          ('resnet-mmdet', ('adapters', ))])
def test_recomputation_compiles_without_breaks(family, parts):
    model = _build(family, 'Mona', recompute=parts).train()
    assert graph_breaks(model, _input(family)) == 0


def _pruned(family='swin-mmdet'):
    """A Mona backbone after MiMi-style pruning: one adapter gone (its bias only), the
    others narrower."""
    torch.manual_seed(0)
    model = _build(family, dict(type='Mona', hidden_dims=8))
    structure = get_structure(model)
    names = sorted(structure)
    apply_structure(model, {n: 0 if i == 0 else 3 for i, n in enumerate(names)})
    assert get_structure(model)[names[0]] == 0 and get_structure(model)[names[1]] == 3
    return model


def test_pruned_model_compiles_without_breaks():
    assert graph_breaks(_pruned().train(), _input('swin-mmdet')) == 0


def _eager_and_compiled(model, x, backend, steps=1):
    """Outputs and gradients of ``model`` eager and compiled from the same weights (dropout
    off: inductor draws its own random numbers)."""
    results = []
    for compiled in (False, True):
        dynamo.reset()
        fn = torch.compile(model, backend=backend) if compiled else model
        model.zero_grad()
        out = fn(x)
        weighted_loss(out).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append(([o.detach() for o in out], grads))
    dynamo.reset()
    return results


def _no_dropout(model):
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.
        if hasattr(m, 'drop_prob'):
            m.drop_prob = 0.
    return model


@pytest.mark.parametrize('family,backend,recompute', [
    ('pruned', 'inductor', ()), ('vit-mmpretrain', 'inductor', ()),
    ('swin-mmdet', 'inductor', ('adapters', )), ('swin-mmdet', 'aot_eager', ()),
    ('resnet-mmdet', 'aot_eager', ())])
def test_compiled_equals_eager(family, backend, recompute):
    """Outputs and the gradients of every trainable tensor of a compiled Mona backbone equal
    eager ones to float32 rounding, in training mode: inductor (generated kernels) for the
    token layout with extra tokens, for a pruned model with a vanished adapter and for
    recomputed adapters; the traced forward and backward graphs (``aot_eager``) for the
    window and NCHW layouts."""
    if family == 'pruned':
        model, x = _pruned(), _input('swin-mmdet')
    else:
        torch.manual_seed(0)
        model, x = _build(family, 'Mona', recompute=recompute), _input(family)
    for _, adapter in iter_adapters(model):  # zero-initialised up-projections test nothing
        for p in adapter.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.05)
    _no_dropout(model.train())
    (eager, eager_grads), (comp, comp_grads) = _eager_and_compiled(model, x, backend)
    for a, b in zip(eager, comp):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert eager_grads and set(eager_grads) == set(comp_grads)
    for name, g in eager_grads.items():
        torch.testing.assert_close(comp_grads[name], g, rtol=1e-4, atol=1e-5, msg=name)
