"""The optimised Mona equals the reference (outputs and gradients, float32: rtol 1e-5,
atol 1e-5), and re-parameterised models equal the unmerged ones."""
import pytest
import torch

from mona_mm.models import (Mona, MonaDeploy, MonaReference, PEFTSwinTransformer,
                            reparameterize)
from mona_mm.pruning import prune_adapters
from tests.conftest import NANO

TOL = dict(rtol=1e-5, atol=1e-5)


def _pair(C=48, m=16, ks=(3, 5, 7)):
    torch.manual_seed(0)
    ref = MonaReference(C, m, ks, dropout=0.0)
    fast = Mona(C, m, ks, dropout=0.0)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.mark.parametrize('hw,ks', [((7, 7), (3, 5, 7)), ((5, 11), (3, 5, 7)), ((6, 6), (3, 5))])
def test_fast_equals_reference_forward_and_backward(hw, ks):
    ref, fast = _pair(ks=ks)
    x = torch.randn(2, hw[0] * hw[1], 48)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr, hw), fast(xf, hw)
    torch.testing.assert_close(yf, yr, **TOL)
    g = torch.randn_like(yr)
    yr.backward(g)
    yf.backward(g)
    torch.testing.assert_close(xf.grad, xr.grad, **TOL)
    pr = dict(ref.named_parameters())
    for n, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, pr[n].grad, **TOL, msg=n)


def test_same_keys_and_count_as_reference():
    ref, fast = _pair()
    assert list(ref.state_dict()) == list(fast.state_dict())


def test_deploy_equals_mona():
    ref, fast = _pair()
    x = torch.randn(2, 49, 48)
    dep = fast.to_deploy().eval()
    assert isinstance(dep, MonaDeploy)
    torch.testing.assert_close(dep(x, (7, 7)), ref.eval()(x, (7, 7)), **TOL)


@pytest.mark.parametrize('method', ['Mona', 'MonaReference', 'LoRA'])
def test_reparameterized_model_equals_unmerged(method):
    torch.manual_seed(0)
    kw = dict(rank=8) if method == 'LoRA' else dict(hidden_dims=16)
    bb = PEFTSwinTransformer(arch=NANO, peft=dict(type=method, **kw)).eval()
    with torch.no_grad():
        for p in bb.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    # a MiMi-vanished adapter and a shrunk one are handled too
    from mona_mm.models import iter_adapters
    names = [n for n, _ in iter_adapters(bb)]
    prune_adapters(bb, {names[0]: torch.tensor([], dtype=torch.long),
                        names[1]: torch.tensor([0, 3, 5])})
    x = torch.randn(1, 3, 64, 64)
    before = bb(x)
    done = reparameterize(bb)
    assert sum(done.values()) == len(names) - 1
    for a, b in zip(bb(x), before):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _saved(fn):
    """``fn()`` and ``{storage pointer: numel}`` of what autograd keeps for its backward."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, seen


@pytest.mark.parametrize('amp', [False, True])
@pytest.mark.parametrize('x_grad', [True, False])
def test_scaled_norm_down_equals_autograd(amp, x_grad):
    """The fused down-projection gives autograd's outputs and gradients (fp32 and under
    bf16 autocast) while keeping no C-wide tensor of its own for the backward."""
    from mona_mm.models.peft.mona import ScaledNormDown, _scaled_norm
    torch.manual_seed(0)
    C, m = 96, 16
    params = [torch.randn(C) * 0.5 + 1, torch.randn(C) * 0.1, torch.randn(C) * 0.1,
              torch.randn(C) * 0.5 + 1, torch.randn(m, C) * 0.1, torch.randn(m)]
    x = torch.randn(2, 49, C)
    grad_out = torch.randn(2, 49, m)
    results = []
    for fused in (False, True):
        leaves = [p.clone().requires_grad_() for p in params]
        xi = x.clone().requires_grad_(x_grad)
        nw, nb, g, gx, w, b = leaves

        def run():
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
                if fused:
                    return ScaledNormDown.apply(xi, nw, nb, g, gx, w, b, 1e-5)
                return torch.nn.functional.linear(_scaled_norm(xi, nw, nb, g, gx, 1e-5), w, b)

        out, saved = _saved(run)
        out.backward(grad_out.to(out.dtype))
        results.append((out, saved, [t.grad for t in ([xi] if x_grad else []) + leaves]))
    (ref_out, ref_saved, ref_grads), (out, saved, grads) = results
    assert out.dtype == ref_out.dtype
    torch.testing.assert_close(out, ref_out, **TOL)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4 if amp else 1e-5)
    # autograd keeps x and the normed input of the linear; the fused function only x
    token_sized = lambda saved: [p for p, n in saved.items() if n == x.numel()]  # noqa: E731
    assert len(token_sized(ref_saved)) == 2
    assert len(token_sized(saved)) == 1


def test_mona_stores_less_than_reference():
    ref, fast = _pair()
    x = torch.randn(2, 49, 48, requires_grad=True)
    _, ref_saved = _saved(lambda: ref(x, (7, 7)))
    _, fast_saved = _saved(lambda: fast(x, (7, 7)))
    assert sum(fast_saved.values()) < sum(ref_saved.values())
