"""Counting training memory: saved activations and parameter/gradient/optimizer state."""
import torch
import torch.nn as nn

from mona_mm.models import PEFTSwinTransformer
from mona_mm.utils import saved_activation_bytes, training_state_bytes
from tests.conftest import NANO


def test_saved_bytes_of_a_known_graph():
    lin = nn.Linear(8, 4)
    x = torch.randn(16, 8, requires_grad=True)
    # addmm keeps its input x (16x8 floats) for the weight gradient; the weight is not
    # counted (a parameter) and nothing else is saved
    assert saved_activation_bytes(lin, lambda: lin(x)) == 16 * 8 * 4
    lin.requires_grad_(False)
    # a frozen weight needs no input for its gradient: nothing is kept
    assert saved_activation_bytes(lin, lambda: lin(x)) == 0
    # gelu keeps its input; a view of the same storage counts once
    assert saved_activation_bytes(lin, lambda: torch.nn.functional.gelu(x) + x.view(-1).sum()
                                  ) == 16 * 8 * 4


def test_training_state_bytes():
    lin = nn.Linear(8, 4)  # 36 parameters
    lin.bias.requires_grad_(False)
    st = training_state_bytes(lin.parameters())
    assert st == dict(weights=36 * 4, grads=32 * 4, optimizer=32 * 2 * 4)


def test_mona_keeps_less_than_full_and_lowmem_less_still():
    x = torch.randn(1, 3, 64, 64)

    def total(**kw):
        torch.manual_seed(0)
        bb = PEFTSwinTransformer(arch=NANO, **kw).train()
        return saved_activation_bytes(bb, lambda: bb(x)), training_state_bytes(bb.parameters())

    full_act, full_state = total(peft=dict(type='Full'))
    mona_act, mona_state = total(peft=dict(type='Mona'))
    low_act, _ = total(peft=dict(type='Mona'), recompute=('adapters', ))
    ref_act, _ = total(peft=dict(type='MonaReference'))
    assert low_act < mona_act < ref_act
    assert mona_state['optimizer'] < full_state['optimizer']
    assert full_state['weights'] < mona_state['weights']  # the adapters add weights
