"""Removing neurons == zeroing them, for every adapter type, also when none is left (the
output bias stays); optimizer state is sliced; global vs local selection on a case with a
known answer; vanished adapters cost no FLOPs; structures round-trip through state dicts."""
from collections import OrderedDict

import pytest
import torch

from mona_mm.models import PEFTSwinTransformer, iter_adapters
from mona_mm.models.peft.base import BaseAdapter, BiasAdapter
from mona_mm.pruning import (adapter_param_total, apply_structure, get_structure,
                             neuron_scores, prune_adapters, select_keep)
from tests.conftest import NANO

METHODS = {'Mona': dict(hidden_dims=16), 'MonaReference': dict(hidden_dims=16),
           'Adapter': dict(hidden_dims=16), 'AdaptFormer': dict(hidden_dims=16),
           'LoRA': dict(rank=8), 'LoRand': dict()}


def _model(method):
    torch.manual_seed(0)
    bb = PEFTSwinTransformer(arch=NANO, peft=dict(type=method, **METHODS[method]),
                             drop_path_rate=0.0).eval()
    with torch.no_grad():  # zero-initialised parts must matter too
        for n, p in bb.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return bb


def _zero_neurons(bb, name, drop):
    adapter = bb.get_submodule(name)
    dims = adapter.hidden_param_dims()
    params = dict(adapter.named_parameters())
    with torch.no_grad():
        for pname, ds in dims.items():
            for d in ds:
                params[pname].index_fill_(d, drop, 0.0)


def _forward(bb, x):
    with torch.no_grad():
        return bb(x)


@pytest.mark.parametrize('method', sorted(METHODS))
def test_prune_equals_zeroing(method):
    """Removing neurons == zeroing exactly those neurons, also for an adapter left with none
    (its output bias stays: Mona's project2.bias, Adapter's / AdaptFormer's scaled up.bias);
    in float64 so that 1e-6 leaves no room for anything but rounding."""
    bb = _model(method).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    names = [n for n, _ in iter_adapters(bb)]
    g = torch.Generator().manual_seed(1)
    keep, drops = {}, {}
    for i, n in enumerate(names):
        m = bb.get_submodule(n).hidden_dims
        perm = torch.randperm(m, generator=g)
        k = 0 if i in (1, 4) else max(1, m // 3)  # two adapters vanish completely
        keep[n], drops[n] = perm[:k].sort().values, perm[k:]
    zeroed = _model(method).double()
    for n in names:
        _zero_neurons(zeroed, n, drops[n])
    expected = sum(bb.get_submodule(n).param_count(keep[n].numel()) for n in names)
    before_params = adapter_param_total(bb)
    prune_adapters(bb, keep)
    for a, b in zip(_forward(bb, x), _forward(zeroed, x)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert adapter_param_total(bb) == expected < before_params
    structure = get_structure(bb)
    assert structure[names[1]] == structure[names[4]] == 0
    assert all(structure[n] == keep[n].numel() for n in names)
    left = {n[len(names[1]) + 1:] for n, _ in bb.named_parameters()
            if n.startswith(names[1] + '.')}
    if method in ('Mona', 'MonaReference', 'Adapter', 'AdaptFormer'):
        # the output bias is what is left: a trainable bias-only adapter of width 0
        assert isinstance(bb.get_submodule(names[1]), BiasAdapter) and left == {'bias'}
    elif method == 'LoRA':  # the plain frozen qkv Linear again
        assert left == {'weight', 'bias'}
        assert not any(p.requires_grad for n, p in bb.named_parameters()
                       if n.startswith(names[1] + '.'))
    else:  # LoRand: no bias, removed
        assert left == set()
    # and only adapter parameters still train
    assert all(('.adapters.' in n or 'lora_' in n) for n, p in bb.named_parameters()
               if p.requires_grad)


@pytest.mark.parametrize('method', sorted(METHODS))
def test_param_count_at_a_width_is_what_the_pruned_adapter_holds(method):
    bb = _model(method)
    for name, adapter in list(iter_adapters(bb))[:3]:
        m = adapter.hidden_dims
        for w in (0, 1, m // 2, m):
            new = adapter.keep_neurons(torch.arange(w))
            held = new.param_count() if isinstance(new, BaseAdapter) else 0
            assert adapter.param_count(w) == held, (name, w)


@pytest.mark.parametrize('method', sorted(METHODS))
def test_structure_round_trips_through_a_saved_state_dict(method, tmp_path):
    """Partly pruned and vanished adapters: the state dict (its record) rebuilds the same
    structure in a freshly built model, which then computes the same outputs."""
    bb = _model(method)
    names = [n for n, _ in iter_adapters(bb)]
    prune_adapters(bb, {names[0]: torch.tensor([1, 3]), names[2]: torch.arange(0),
                        names[5]: torch.arange(0), names[6]: torch.tensor([0])})
    torch.save(bb.state_dict(), tmp_path / 'sd.pth')
    torch.manual_seed(123)  # other weights everywhere
    fresh = PEFTSwinTransformer(arch=NANO, peft=dict(type=method, **METHODS[method]),
                                drop_path_rate=0.0).eval()
    fresh.load_state_dict(torch.load(tmp_path / 'sd.pth'), strict=True)
    assert get_structure(fresh) == get_structure(bb)
    assert [type(m) for _, m in iter_adapters(fresh)] == [type(m) for _, m in iter_adapters(bb)]
    assert adapter_param_total(fresh) == adapter_param_total(bb)
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(_forward(fresh, x), _forward(bb, x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the same through apply_structure and a state dict without its record
    other = _model(method)
    apply_structure(other, get_structure(bb))
    other.load_state_dict(OrderedDict(bb.state_dict()), strict=True)
    for a, b in zip(_forward(other, x), _forward(bb, x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_mona_slices_every_part_consistently():
    bb = _model('Mona')
    name, mona = next(iter_adapters(bb))
    keep = torch.tensor([1, 5, 7])
    prune_adapters(bb, {name: keep})
    new = bb.get_submodule(name)
    assert new.project1.weight.shape == (3, mona.in_dims)
    assert new.project2.weight.shape == (mona.in_dims, 3)
    for conv in new.adapter_conv.convs:
        assert conv.weight.shape[0] == 3 and conv.groups == 3 and conv.in_channels == 3
    assert new.adapter_conv.projector.weight.shape == (3, 3, 1, 1)
    torch.testing.assert_close(new.adapter_conv.projector.weight[:, :, 0, 0],
                               mona.adapter_conv.projector.weight[keep][:, keep, 0, 0])


def test_mona_score_counts_owned_weights_normalised():
    bb = _model('Mona')
    _, mona = next(iter_adapters(bb))
    i = 3
    P = mona.adapter_conv.projector.weight[:, :, 0, 0]
    owned = [mona.project1.weight[i], mona.project2.weight[:, i], P[i], P[:, i]]
    owned += [c.weight[i].flatten() for c in mona.adapter_conv.convs]
    mass = sum(t.abs().sum() for t in owned) - P[i, i].abs()  # row and column share (i, i)
    count = sum(t.numel() for t in owned) - 1
    s = neuron_scores(mona, 'mimi')
    torch.testing.assert_close(s[i], (mass / count).detach(), rtol=1e-5, atol=1e-7)
    assert torch.allclose(neuron_scores(mona, 'mimi_unnormalized')[i], mass.detach(), rtol=1e-5)


def test_global_vs_local_known_answer():
    # adapter a: large weights everywhere; adapter b: tiny -> global empties b first
    scores = {'a': torch.tensor([5., 6., 7., 8.]), 'b': torch.tensor([0.1, 0.2, 0.3, 0.4])}
    g = select_keep(scores, rho=0.5, selection='global')
    assert g['a'].tolist() == [0, 1, 2, 3] and g['b'].tolist() == []
    local = select_keep(scores, rho=0.5, selection='local')
    assert local['a'].tolist() == [2, 3] and local['b'].tolist() == [2, 3]
    floor = select_keep(scores, rho=0.5, selection='global', min_neurons=1)
    assert floor['b'].tolist() == [3] and floor['a'].tolist() == [1, 2, 3]


def _trained_adamw(bb):
    """An AdamW over the trainable parameters of ``bb`` after two steps (state populated)."""
    opt = torch.optim.AdamW([p for p in bb.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        sum(o.square().mean() for o in bb(torch.randn(2, 3, 32, 32))).backward()
        opt.step()
    return opt


def test_optimizer_state_is_sliced_not_reset():
    bb = _model('Adapter').train()
    opt = _trained_adamw(bb)
    name, adapter = next(iter_adapters(bb))
    old_down = adapter.down.weight
    old_state = {k: v.clone() for k, v in opt.state[old_down].items()}
    keep = torch.tensor([0, 2, 9])
    prune_adapters(bb, {name: keep}, opt)
    new_down = bb.get_submodule(name).down.weight
    assert old_down not in opt.state and new_down in opt.state
    assert any(new_down is p for g in opt.param_groups for p in g['params'])
    st = opt.state[new_down]
    torch.testing.assert_close(st['exp_avg'], old_state['exp_avg'][keep])
    torch.testing.assert_close(st['exp_avg_sq'], old_state['exp_avg_sq'][keep])
    assert st['step'] == old_state['step']
    # training goes on with the same optimizer
    opt.zero_grad()
    sum(o.square().mean() for o in bb(torch.randn(2, 3, 32, 32))).backward()
    opt.step()


def test_vanished_adapter_costs_no_flops():
    from mmengine.analysis import FlopAnalyzer
    x = torch.randn(1, 3, 64, 64)

    def flops(m):
        fa = FlopAnalyzer(m.eval(), (x, ))
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        return fa.total()

    bb = _model('Mona')
    base = flops(PEFTSwinTransformer(arch=NANO, peft=dict(type='Fixed')))
    full = flops(bb)
    biases = sum(a.project2.bias.numel() for _, a in iter_adapters(bb))
    prune_adapters(bb, {n: torch.tensor([], dtype=torch.long) for n, _ in iter_adapters(bb)})
    assert flops(bb) == base < full  # a bias add counts no FLOPs, as upstream's own adds
    assert adapter_param_total(bb) == biases  # what is left: every Mona's project2.bias


def test_vanished_adapter_bias_keeps_training_with_its_optimizer_state():
    bb = _model('AdaptFormer').train()
    opt = _trained_adamw(bb)
    name, adapter = next(iter_adapters(bb))
    old_bias = adapter.up.bias
    old_state = {k: v.clone() for k, v in opt.state[old_bias].items()}
    prune_adapters(bb, {name: torch.arange(0)}, opt)
    new = bb.get_submodule(name)
    assert isinstance(new, BiasAdapter) and new.scale == adapter.scale
    assert new.bias.requires_grad and torch.equal(new.bias, old_bias)
    assert any(new.bias is p for g in opt.param_groups for p in g['params'])
    assert old_bias not in opt.state
    for k, v in old_state.items():
        torch.testing.assert_close(opt.state[new.bias][k], v)
    before = new.bias.detach().clone()
    opt.zero_grad()
    sum(o.square().mean() for o in bb(torch.randn(2, 3, 32, 32))).backward()
    opt.step()
    assert not torch.equal(new.bias, before)


def test_apply_structure_replays_shapes():
    bb = _model('Mona')
    names = [n for n, _ in iter_adapters(bb)]
    prune_adapters(bb, {names[0]: torch.tensor([2, 4]), names[3]: torch.tensor([], dtype=torch.long)})
    fresh = _model('Mona')
    apply_structure(fresh, get_structure(bb))
    fresh.load_state_dict(bb.state_dict())
    assert get_structure(fresh) == get_structure(bb)
    with pytest.raises(KeyError, match='does not have'):
        apply_structure(fresh, {'backbone.nope': 3})
