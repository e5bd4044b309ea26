"""RepOptSGD / RepOptAdamW: torch's rule without mults, the official rule with them."""
import copy

import pytest
import torch
from torch import nn

from rep_mm.optim import RepOptAdamW, RepOptSGD


def make_model():
    torch.manual_seed(0)
    # no conv bias: a bias before a train-mode BN has a zero true gradient (rounding noise)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(),
                         nn.LazyLinear(5))


def step_n(model, optimizer, steps=3):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 3, 6, 6, generator=gen)
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.fixture
def models():
    model = make_model()
    model(torch.randn(1, 3, 6, 6))  # materialise the lazy layer
    return model, copy.deepcopy(model)


SGD = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
ADAMW = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)


@pytest.mark.parametrize('cls,torch_cls,kwargs', [(RepOptSGD, torch.optim.SGD, SGD),
                                                  (RepOptSGD, torch.optim.SGD,
                                                   dict(lr=0.1, momentum=0.9, dampening=0.1)),
                                                  (RepOptAdamW, torch.optim.AdamW, ADAMW)])
@pytest.mark.parametrize('foreach', [True, False])
def test_without_mults_equals_torch(models, cls, torch_cls, kwargs, foreach):
    ours, theirs = models
    step_n(ours, cls(ours.parameters(), foreach=foreach, **kwargs))
    step_n(theirs, torch_cls(theirs.parameters(), foreach=foreach, **kwargs))
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def official_sgd_step(params, grads, mults, bufs, lr, momentum, wd):
    """The reference rule written per tensor: d_p = g*M + wd*p; buf; nesterov."""
    for p, g, m, i in zip(params, grads, mults, range(len(params))):
        d_p = g * m + wd * p
        bufs[i] = d_p.clone() if bufs[i] is None else bufs[i] * momentum + d_p
        p -= lr * (d_p + momentum * bufs[i])


@pytest.mark.parametrize('foreach', [True, False])
def test_sgd_with_mults_follows_the_official_rule(models, foreach):
    model, reference = models
    mults = {p: torch.rand_like(p) + 0.5 for p in model.parameters() if p.ndim > 1}
    opt = RepOptSGD(model.parameters(), grad_mult_map=mults, foreach=foreach, **SGD)
    ref_params = [p.detach().clone() for p in reference.parameters()]
    bufs = [None] * len(ref_params)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(4, 3, 6, 6, generator=gen)
        opt.zero_grad()
        model(x).square().mean().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        # multiplied gradients serve as the work buffer; the others stay untouched
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads)
                   if p not in mults)
        official_sgd_step(ref_params, grads,
                          [mults.get(p, torch.ones_like(p)) for p in model.parameters()], bufs,
                          SGD['lr'], SGD['momentum'], SGD['weight_decay'])
    for a, b in zip(model.parameters(), ref_params):
        torch.testing.assert_close(a.detach(), b, rtol=1e-6, atol=1e-7)


def test_adamw_with_mults_foreach_equals_loop(models):
    a, b = models
    mults_a = {p: torch.rand_like(p) + 0.5 for p in a.parameters() if p.ndim > 1}
    mults_b = {q: mults_a[p].clone() for p, q in zip(a.parameters(), b.parameters())
               if p in mults_a}
    step_n(a, RepOptAdamW(a.parameters(), grad_mult_map=mults_a, foreach=True, **ADAMW))
    step_n(b, RepOptAdamW(b.parameters(), grad_mult_map=mults_b, foreach=False, **ADAMW))
    plain = copy.deepcopy(models[1])
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    # and the mults did act: without them the result differs
    step_n(plain, torch.optim.AdamW(plain.parameters(), **ADAMW))
    assert (plain[0].weight - a[0].weight).abs().max() > 1e-3


def test_state_dict_round_trip_continues_identically(models):
    a, b = models
    opt_a = RepOptSGD(a.parameters(), **SGD)
    step_n(a, opt_a, 2)
    b.load_state_dict(a.state_dict())
    opt_b = RepOptSGD(b.parameters(), **SGD)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as from a file: no aliasing
    step_n(a, opt_a, 2)
    step_n(b, opt_b, 2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert 'grad_mult_map' not in opt_a.state_dict()


def test_bad_maps_and_options_are_refused(models):
    model, other = models
    weight = next(model.parameters())
    with pytest.raises(TypeError, match='keyed by the parameters themselves'):
        RepOptSGD(model.parameters(), lr=0.1, grad_mult_map=[(weight, weight)])
    with pytest.raises(ValueError, match='not optimised by this optimizer'):
        RepOptSGD(model.parameters(), lr=0.1,
                  grad_mult_map={next(other.parameters()): torch.ones_like(weight)})
    with pytest.raises(ValueError, match='differs from its parameter shape'):
        RepOptSGD(model.parameters(), lr=0.1, grad_mult_map={weight: torch.ones(3)})
    with pytest.raises(ValueError, match='neither amsgrad nor maximize'):
        RepOptAdamW(model.parameters(), amsgrad=True)
