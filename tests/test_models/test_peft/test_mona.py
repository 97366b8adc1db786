import pytest
import torch
import torch.nn.functional as F

from mona_mm.models.peft import Mona


def _reference_mona(m: Mona, x: torch.Tensor, hw) -> torch.Tensor:
    """Re-statement of REFERENCE.md's formula with plain torch ops (eval mode, no dropout)."""
    B, N, C = x.shape
    H, W = hw
    x1 = F.layer_norm(x, (C, ), m.norm.weight, m.norm.bias, m.norm.eps) * m.gamma + x * m.gammax
    h = x1 @ m.project1.weight.t() + m.project1.bias
    h = h.transpose(1, 2).reshape(B, -1, H, W)
    dw = []
    for conv in m.adapter_conv.convs:
        k = conv.kernel_size[0]
        dw.append(F.conv2d(h, conv.weight, conv.bias, padding=k // 2, groups=h.shape[1]))
    h = (dw[0] + dw[1] + dw[2]) / 3 + h
    p = m.adapter_conv.projector
    h = h + F.conv2d(h, p.weight, p.bias)
    h = h.reshape(B, -1, N).transpose(1, 2)
    h = F.gelu(h)
    return x + h @ m.project2.weight.t() + m.project2.bias


@pytest.mark.parametrize('C', [32, 96, 128, 192, 1536])
def test_parameter_count(C):
    m = Mona(C)
    assert sum(p.numel() for p in m.parameters()) == 133 * C + 9728
    assert m.hidden_dims == 64


def test_defaults_and_init():
    torch.manual_seed(0)
    m = Mona(256)
    assert m.kernel_sizes == (3, 5, 7)
    assert m.dropout.p == 0.1
    assert torch.all(m.gamma == 1e-6) and torch.all(m.gammax == 1.0)
    assert torch.all(m.project1.bias == 0) and torch.all(m.project2.bias == 0)
    # trunc-normal std 0.02: nothing beyond 2 std, sample std close to 0.02
    w = m.project1.weight
    assert w.abs().max() <= 2.0  # timm-style bounds (-2, 2), as the authors used
    assert abs(w.std().item() - 0.02) < 0.003
    assert torch.all(m.norm.weight == 1) and torch.all(m.norm.bias == 0)
    # convs keep PyTorch's default (kaiming-uniform): not zero
    assert all(c.weight.abs().sum() > 0 for c in m.adapter_conv.convs)


@pytest.mark.parametrize('hw', [(7, 7), (5, 9)])
def test_forward_matches_formula(hw):
    torch.manual_seed(0)
    m = Mona(48, hidden_dims=16).eval()
    with torch.no_grad():  # make the scaled-norm branch matter
        m.gamma.uniform_(-1, 1)
        m.gammax.uniform_(0.5, 1.5)
    x = torch.randn(2, hw[0] * hw[1], 48)
    torch.testing.assert_close(m(x, hw), _reference_mona(m, x, hw), rtol=1e-5, atol=1e-5)


def test_dropout_active_in_train_mode():
    torch.manual_seed(0)
    m = Mona(32, hidden_dims=8, dropout=0.5)
    x = torch.randn(1, 16, 32)
    m.train()
    a, b = m(x, (4, 4)), m(x, (4, 4))
    assert not torch.allclose(a, b)
    m.eval()
    torch.testing.assert_close(m(x, (4, 4)), m(x, (4, 4)))
