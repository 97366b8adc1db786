"""Checks every backbone family's tests share: build the installed upstream class and ours from
the same seed, compare Full with upstream bit for bit, and a method's training step."""
import torch

from mona_mm.models import PEFTBackbone


def upstream_and_ours(cls, kwargs, peft='Full'):
    """The upstream backbone and ``PEFTBackbone`` of it with ``peft``, holding the same weights
    (only the method's own tensors left out)."""
    torch.manual_seed(0)
    upstream = cls(**kwargs)
    ours = PEFTBackbone(dict(type=cls, **kwargs), peft=peft)
    missing, unexpected = ours.load_state_dict(upstream.state_dict(), strict=False)
    assert not unexpected and all('.adapters.' in k or 'lora_' in k for k in missing)
    return upstream, ours


def weighted_loss(outs):
    """A loss every output element reaches with its own weight."""
    return sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)


def assert_same_outputs_and_gradients(upstream, ours, x):
    """In train and eval mode, from the same RNG state: equal outputs and equal gradients."""
    for mode in (True, False):
        for m in (upstream, ours):
            m.train(mode)
            m.zero_grad()
        torch.manual_seed(1)
        a = upstream(x)
        weighted_loss(a).backward()
        torch.manual_seed(1)
        b = ours(x)
        weighted_loss(b).backward()
        assert len(a) == len(b) and all(torch.equal(i, j) for i, j in zip(a, b))
        theirs = dict(upstream.named_parameters())
        for n, p in ours.named_parameters():
            assert (p.grad is None) == (theirs[n].grad is None), n
            if p.grad is not None:
                assert torch.equal(p.grad, theirs[n].grad), n


def trainable_after_a_step(model, x):
    """Train one forward/backward; assert exactly the trainable parameters got gradients (and
    not all parameters train); return their names."""
    model.train()
    weighted_loss(model(x)).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and len(trainable) < len(list(model.parameters()))
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable
    return trainable
