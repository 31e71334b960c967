"""LARS against a plain per-parameter implementation; the lr schedule at known steps."""

import math

import pytest
import torch
from torch import nn

from fastclr.optim import (
    LARS,
    OPTIMIZER_DEFAULTS,
    WarmupCosine,
    build_optimizer,
    build_schedule,
    param_groups,
    scaled_lr,
    warmup_steps_for,
)


def reference_lars_step(params, grads, bufs, *, lr, momentum, weight_decay, eta, adapt):
    """SimCLR's LARS written out one tensor at a time, with Python floats."""
    for p, g, buf in zip(params, grads, bufs, strict=True):
        g = g.clone()
        if adapt:
            g = g + weight_decay * p
            w_norm, g_norm = p.norm().item(), g.norm().item()
            trust = eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
            g = g * trust
        buf.mul_(momentum).add_(g)
        p.sub_(lr * buf)


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, bias=False), nn.BatchNorm2d(5), nn.Flatten(), nn.Linear(5 * 4 * 4, 7)
    ).double()


def test_param_groups_exclude_bn_and_biases():
    net = small_net()
    adapted, excluded = param_groups(net, weight_decay=1e-6)
    assert adapted["lars_adapt"] and adapted["weight_decay"] == 1e-6
    assert not excluded["lars_adapt"] and excluded["weight_decay"] == 0.0
    assert {p.ndim for p in adapted["params"]} == {2, 4}  # conv and linear weights
    assert len(excluded["params"]) == 3  # BN weight, BN bias, Linear bias
    assert all(p.ndim == 1 for p in excluded["params"])


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_lars_matches_per_parameter_reference(weight_decay):
    seed = torch.seed()
    print("seed", seed)
    net = small_net()
    with torch.no_grad():
        net[0].weight[0].zero_()  # a zero-norm slice is fine; a zero tensor below hits trust = 1
        net[3].bias.zero_()
    zero_weight = nn.Parameter(torch.zeros(4, 3, dtype=torch.float64))
    params = [*net.parameters(), zero_weight]
    ref_params = [p.detach().clone() for p in params]
    ref_bufs = [torch.zeros_like(p) for p in params]
    groups = param_groups(net, weight_decay)
    groups[0]["params"].append(zero_weight)
    opt = LARS(groups, lr=0.7, momentum=0.9, weight_decay=weight_decay, trust_coefficient=0.001)
    adapt = [p.ndim > 1 for p in params]
    for step in range(4):
        grads = [torch.randn_like(p) for p in params]
        if step == 1:
            grads[0].zero_()  # zero gradient: trust ratio 1, no NaN
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        for flag in (True, False):
            idx = [i for i, a in enumerate(adapt) if a == flag]
            reference_lars_step(
                [ref_params[i] for i in idx],
                [grads[i] for i in idx],
                [ref_bufs[i] for i in idx],
                lr=0.7,
                momentum=0.9,
                weight_decay=weight_decay,
                eta=0.001,
                adapt=flag,
            )
        for p, ref in zip(params, ref_params, strict=True):
            torch.testing.assert_close(p.detach(), ref, rtol=1e-12, atol=1e-12)
            assert torch.isfinite(p).all()
    # the raw gradient is left alone (decay and trust applied out of place)
    assert torch.equal(params[-1].grad, grads[-1])


def test_lars_moves_adapted_weights_by_trust_ratio():
    """One step from zero momentum moves w by lr * eta * ||w|| (decay off): the LARS invariant."""
    w = nn.Parameter(torch.randn(16, 8, dtype=torch.float64))
    w.grad = torch.randn_like(w) * 1e3
    before = w.detach().clone()
    LARS([w], lr=0.5, weight_decay=0.0).step()
    moved = (w.detach() - before).norm().item()
    assert moved == pytest.approx(0.5 * 0.001 * before.norm().item(), rel=1e-9)


def test_schedule_known_values():
    sched = WarmupCosine(peak_lr=1.0, warmup_steps=10, total_steps=110)
    assert sched(0) == pytest.approx(0.1)
    assert sched(4) == pytest.approx(0.5)
    assert sched(9) == pytest.approx(1.0)
    assert sched(10) == pytest.approx(1.0)
    assert sched(60) == pytest.approx(0.5)
    assert sched(109) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert sched(110) == pytest.approx(0.0)
    no_warmup = WarmupCosine(peak_lr=2.0, warmup_steps=0, total_steps=4)
    assert [no_warmup(s) for s in range(4)] == pytest.approx([2.0, 1.7071068, 1.0, 0.2928932])


def test_linear_scaling_and_warmup_length():
    assert scaled_lr(0.3, 4096) == pytest.approx(4.8)
    assert scaled_lr(0.3, 256) == pytest.approx(0.3)
    assert warmup_steps_for(10, epochs=100, steps_per_epoch=50) == 500  # 10 epochs
    assert warmup_steps_for(10, epochs=800, steps_per_epoch=50) == 500  # still 10 epochs
    assert warmup_steps_for(10, epochs=5, steps_per_epoch=20) == 10  # a tenth of a short run
    sched = build_schedule(base_lr=0.3, batch_size=512, epochs=5, steps_per_epoch=20)
    assert (sched.peak_lr, sched.warmup_steps, sched.total_steps) == (pytest.approx(0.6), 10, 100)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(peak_lr=1.0, warmup_steps=5, total_steps=4)


@pytest.mark.parametrize("name", sorted(OPTIMIZER_DEFAULTS))
def test_build_optimizer_decays_only_weights(name):
    net = small_net()
    opt = build_optimizer(name, net, lr=0.1, weight_decay=1e-4)
    decays = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for p in net.parameters():
        assert decays[id(p)] == (1e-4 if p.ndim > 1 else 0.0)
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer("adam", net, lr=0.1, weight_decay=0.0)
