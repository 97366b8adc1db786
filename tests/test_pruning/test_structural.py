"""Removing neurons == zeroing them, for every adapter type; optimizer state is sliced;
global vs local selection on a case with a known answer; vanished adapters cost nothing."""
import pytest
import torch

from mona_mm.models import PEFTSwinTransformer, iter_adapters
from mona_mm.pruning import (adapter_param_total, apply_structure, get_structure,
                             neuron_scores, prune_adapters, select_keep)
from tests.conftest import NANO

METHODS = {'Mona': dict(hidden_dims=16), 'Adapter': dict(hidden_dims=16),
           'AdaptFormer': dict(hidden_dims=16), 'LoRA': dict(rank=8), 'LoRand': dict()}


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


@pytest.mark.parametrize('method', sorted(METHODS))
def test_prune_equals_zeroing(method):
    bb = _model(method)
    x = torch.randn(2, 3, 64, 64)
    names = [n for n, _ in iter_adapters(bb)]
    g = torch.Generator().manual_seed(1)
    keep, drops = {}, {}
    for i, n in enumerate(names):
        m = bb.get_submodule(n).hidden_dims
        perm = torch.randperm(m, generator=g)
        k = 0 if i == 1 else max(1, m // 3)  # one adapter vanishes completely
        keep[n], drops[n] = perm[:k].sort().values, perm[k:]
    zeroed = _model(method)
    for n in names:
        _zero_neurons(zeroed, n, drops[n])
    with torch.no_grad():  # a vanished adapter is the identity: its output bias goes too
        for p in zeroed.get_submodule(names[1]).parameters():
            if p.requires_grad:
                p.zero_()
    before_params = adapter_param_total(bb)
    prune_adapters(bb, keep)
    for a, b in zip(bb(x), zeroed(x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert adapter_param_total(bb) < before_params
    structure = get_structure(bb)
    assert structure[names[1]] == 0
    assert all(structure[n] == keep[n].numel() for n in names)
    # the vanished adapter has no parameters left anywhere
    assert not any(n.startswith(names[1] + '.') for n, _ in bb.named_parameters()
                   if '.lora_' in n or '.adapters.' in n)
    # and only adapter parameters still train
    assert all(('.adapters.' in n or 'lora_' in n) for n, p in bb.named_parameters()
               if p.requires_grad)


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


def test_optimizer_state_is_sliced_not_reset():
    bb = _model('Adapter').train()
    params = [p for p in bb.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        sum(o.square().mean() for o in bb(torch.randn(2, 3, 32, 32))).backward()
        opt.step()
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
    prune_adapters(bb, {n: torch.tensor([], dtype=torch.long) for n, _ in iter_adapters(bb)})
    assert flops(bb) == base < full
    assert adapter_param_total(bb) == 0


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
