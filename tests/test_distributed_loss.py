"""Global-negatives NT-Xent on real process groups (gloo, 2 CPU processes, no mocks).

Every case compares a 2-rank run with ONE process on the concatenated global batch (float64 reference):
  - the loss value each rank returns (the global value for mean/sum, the local rows for none);
  - the z-gradients: for "none" under a random upstream gradient they equal the single-process ones;
    for "mean"/"sum" they are W x the single-process ones (DDP divides by W);
  - parameter gradients of a small MLP under DDP equal the single-process ones.
All cases run inside one spawn of 2 workers (process start dominates: ~10 s); each case is then its own
test. Inputs are fresh random draws; the seed is printed in every failure.
"""

import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

from fastclr.distributed.batchnorm import convert_sync_batchnorm
from fastclr.ops import nt_xent
from fastclr.ops.backends import BACKENDS
from fastclr.ops.global_negatives import nt_xent_global
from fastclr.ops.reference import nt_xent_reference
from fastclr.optim import build_optimizer
from tests.rank_checks import run_on_ranks

WORLD = 2
SEED = int.from_bytes(os.urandom(4), "little")
CPU = torch.device("cpu")
# Backends usable on CPU; triton only through the interpreter (conftest sets TRITON_INTERPRET=1).
CPU_BACKENDS = [
    name
    for name, b in BACKENDS.items()
    if name in ("chunked", "triton") and b.unavailable_reason(CPU, torch.float32) is None
]
REDUCTIONS = ("mean", "sum", "none")


def exact_dtype(backend: str) -> torch.dtype:
    """float64 where the backend takes it (exact comparisons), else float32."""
    usable = (
        backend == "reference" or BACKENDS[backend].unavailable_reason(CPU, torch.float64) is None
    )
    return torch.float64 if usable else torch.float32


def case_table() -> dict[str, tuple]:
    """name -> (check function name, arguments after (seed, rank)). Same on every process."""
    cases = {}
    for backend in CPU_BACKENDS + ["reference"]:
        # (n per rank, D, dtype, temperature): odd sizes; fp32 is the trainer's compute path.
        shapes = [(1, 1, exact_dtype(backend), 0.5), (5, 3, exact_dtype(backend), 0.1)]
        shapes.append((7, 16, torch.float32, 0.2))
        for reduction in REDUCTIONS:
            for n, d, dtype, tau in shapes:
                name = f"{backend}-{reduction}-n{n}-d{d}-{str(dtype)[6:]}"
                cases[name] = ("check_loss_case", (backend, reduction, n, d, dtype, tau))
    for backend in CPU_BACKENDS + ["reference"]:
        for reduction in REDUCTIONS:
            cases[f"tau-{backend}-{reduction}"] = ("check_temperature_case", (backend, reduction))
    for backend in CPU_BACKENDS:
        for reduction in ("mean", "sum"):
            cases[f"ddp-{backend}-{reduction}"] = ("check_ddp_case", (backend, reduction))
    for backend in CPU_BACKENDS:
        cases[f"train-steps-{backend}"] = ("check_train_steps", (backend,))
    cases["uneven-batches"] = ("check_uneven_batches", ())
    return cases


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, msg=None, floor: float = 0.0
):
    """float64: near-exact. float32: relative to the tensor's scale (fp32 accumulation over C
    columns; a "sum" gradient is C times a "mean" one), and to `floor` where the exact value is
    a cancellation of larger terms (see inverse_norm)."""
    scale = float(expected.detach().abs().max()) if expected.numel() else 1.0
    scale = max(scale, floor, 1.0)
    if dtype == torch.float64:
        tol = {"rtol": 1e-9, "atol": 1e-11 * scale}
    else:
        tol = {"rtol": 1e-4, "atol": 1e-5 * scale}
    torch.testing.assert_close(actual.detach(), expected.detach().to(actual.dtype), **tol, msg=msg)


def global_inputs(seed: int, n: int, d: int, dtype: torch.dtype):
    """The same global batch on every rank: z1, z2 [W*n, d] and an upstream gradient [2*W*n]."""
    gen = torch.Generator().manual_seed(seed)
    z1 = torch.randn(WORLD * n, d, generator=gen, dtype=torch.float64)
    z2 = torch.randn(WORLD * n, d, generator=gen, dtype=torch.float64)
    upstream = torch.randn(2 * WORLD * n, generator=gen, dtype=torch.float64)
    return z1.to(dtype), z2.to(dtype), upstream


def inverse_norm(z: torch.Tensor) -> float:
    """max over rows of 1 / |z_i|: the size, relative to dL/d(z_i / |z_i|), of the terms that the
    normalization's backward subtracts, (g - (g.u) u) / |z_i|. At D = 1 they cancel exactly (the
    gradient is 0: a unit vector in 1-D has no tangent), and in fp32 what is left is their rounding,
    which a row of norm 0.02 makes 50 times larger than an ulp of g."""
    return float((1 / z.detach().double().norm(dim=1)).max())


def local_ids(rank: int, n: int) -> torch.Tensor:
    rows = torch.arange(n) + rank * n
    return torch.cat([rows, rows + WORLD * n])


def check_loss_case(
    seed: int, rank: int, backend: str, reduction: str, n: int, d: int, dtype, temperature
):
    z1, z2, upstream = global_inputs(seed + n * 1000 + d, n, d, dtype)
    ids = local_ids(rank, n)
    # One process, the whole global batch, float64 oracle.
    a = z1.detach().double().requires_grad_()
    b = z2.detach().double().requires_grad_()
    ref = nt_xent_reference(a, b, temperature, reduction)
    weight = upstream if reduction == "none" else torch.ones((), dtype=torch.float64)
    ref_ga, ref_gb = torch.autograd.grad((ref * weight).sum(), [a, b])
    # This rank's share, through the public API.
    mine = slice(rank * n, (rank + 1) * n)
    la = z1[mine].clone().requires_grad_()
    lb = z2[mine].clone().requires_grad_()
    loss = nt_xent(
        la, lb, temperature, reduction=reduction, backend=backend, gather_distributed=True
    )
    local_weight = upstream[ids].to(loss.dtype) if reduction == "none" else 1.0
    (loss * local_weight).sum().backward()
    expect_value = ref[ids] if reduction == "none" else ref
    assert_close(loss.double(), expect_value, dtype)
    scale = 1.0 if reduction == "none" else WORLD  # raw z-gradient before DDP's division by W
    assert_close(la.grad.double(), scale * ref_ga[mine], dtype, floor=inverse_norm(la))
    assert_close(lb.grad.double(), scale * ref_gb[mine], dtype, floor=inverse_norm(lb))


def check_temperature_case(seed: int, rank: int, backend: str, reduction: str):
    """A learnable tau: each rank's share of dL/dtau, summed over ranks, is the gradient of the sum
    over ranks of what they differentiate (as for z): W x the single-process one for mean/sum
    (DDP's average removes the W), the single-process one for "none" under an upstream gradient."""
    n, d, temperature = 3, 4, 0.3
    dtype = exact_dtype(backend)
    z1, z2, upstream = global_inputs(seed + 5, n, d, dtype)
    ids = local_ids(rank, n)
    a, b = z1.detach().double(), z2.detach().double()
    tau64 = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
    ref = nt_xent_reference(a, b, tau64, reduction)
    weight = upstream if reduction == "none" else torch.ones((), dtype=torch.float64)
    (ref_gtau,) = torch.autograd.grad((ref * weight).sum(), [tau64])
    mine = slice(rank * n, (rank + 1) * n)
    tau = nn.Parameter(torch.tensor(temperature, dtype=dtype))
    loss = nt_xent(
        z1[mine], z2[mine], tau, reduction=reduction, backend=backend, gather_distributed=True
    )
    local_weight = upstream[ids].to(loss.dtype) if reduction == "none" else 1.0
    (loss * local_weight).sum().backward()
    total = tau.grad.detach().clone()
    dist.all_reduce(total)
    scale = 1.0 if reduction == "none" else WORLD
    assert_close(total.double(), scale * ref_gtau, dtype)


def projection_head(seed: int, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 5)).to(dtype)


def check_ddp_case(seed: int, rank: int, backend: str, reduction: str):
    n, temperature = 4, 0.3
    gen = torch.Generator().manual_seed(seed + 7)
    dtype = exact_dtype(backend)
    x1 = torch.randn(WORLD * n, 6, generator=gen, dtype=dtype)
    x2 = torch.randn(WORLD * n, 6, generator=gen, dtype=dtype)
    single = projection_head(seed, dtype)
    nt_xent_reference(single(x1), single(x2), temperature, reduction).backward()
    model = nn.parallel.DistributedDataParallel(
        projection_head(seed, dtype), gradient_as_bucket_view=True
    )
    mine = slice(rank * n, (rank + 1) * n)
    z1, z2 = model(torch.cat([x1[mine], x2[mine]])).chunk(2)
    loss = nt_xent_global(z1, z2, temperature, reduction, backend)
    loss.backward()
    expected = nt_xent_reference(single(x1), single(x2), temperature, reduction)
    assert_close(loss, expected, dtype)
    for (name, p), q in zip(model.module.named_parameters(), single.parameters(), strict=True):
        assert_close(p.grad, q.grad, dtype, msg=name)


def bn_head(seed: int, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5)
    ).to(dtype)


def check_train_steps(seed: int, rank: int, backend: str):
    """3 LARS steps of a BN head: 2 ranks (global BN, DDP, global negatives) == 1 process."""
    n, steps, temperature = 4, 3, 0.2
    dtype = exact_dtype(backend)
    gen = torch.Generator().manual_seed(seed + 11)
    batches = torch.randn(steps, 2, WORLD * n, 6, generator=gen, dtype=dtype)
    single = bn_head(seed, dtype)
    model = nn.parallel.DistributedDataParallel(
        convert_sync_batchnorm(bn_head(seed, dtype), CPU), gradient_as_bucket_view=True
    )
    mine = slice(rank * n, (rank + 1) * n)
    for net, rows in ((single, slice(None)), (model, mine)):
        optimizer = build_optimizer("lars", net, lr=0.5, weight_decay=1e-4)
        for x1, x2 in batches:
            z1, z2 = net(torch.cat([x1[rows], x2[rows]])).chunk(2)
            loss = nt_xent(z1, z2, temperature, backend=backend, gather_distributed=net is model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    expected = single.state_dict()
    for name, value in model.module.state_dict().items():
        assert_close(value, expected[name], dtype, msg=name)


def check_uneven_batches(seed: int, rank: int):
    z = torch.randn(3 + rank, 4)
    with pytest.raises(ValueError, match="same z1/z2 shape"):
        nt_xent(z, z, gather_distributed=True)


@pytest.fixture(scope="module")
def results() -> list[dict[str, str | None]]:
    checks = {name: (globals()[check], args) for name, (check, args) in case_table().items()}
    return run_on_ranks(checks, seed=SEED, world=WORLD)


@pytest.mark.parametrize("case", list(case_table()))
def test_two_ranks_equal_one_process(results, case):
    for rank, outcome in enumerate(results):
        assert outcome[case] is None, f"rank {rank}, seed {SEED}:\n{outcome[case]}"


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("backend", CPU_BACKENDS + ["reference"])
def test_without_process_group_equals_single_process(backend, reduction):
    z1, z2 = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(10) if reduction == "none" else torch.ones(())
    one = nt_xent(z1, z2, 0.2, reduction=reduction, backend=backend)
    (g1,) = torch.autograd.grad((one * upstream).sum(), z1)
    many = nt_xent(z1, z2, 0.2, reduction=reduction, backend=backend, gather_distributed=True)
    (g2,) = torch.autograd.grad((many * upstream).sum(), z1)
    assert torch.equal(one, many) and torch.equal(g1, g2)
