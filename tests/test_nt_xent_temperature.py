"""A temperature tensor that requires grad gets its true gradient dL/dtau in every backend.

The memory-efficient backends derive it from the gradient of the normalized rows,
dL/dtau = -(1/(2 tau)) sum_i <ẑ_i, dL/dẑ_i> (fastclr/ops/function.py); every check here compares
with PyTorch's own autograd of the float64 reference, or runs gradcheck in float64. Triton runs
through the interpreter without a GPU (conftest.py); the `gpu` tests add the CUDA backend.
"""

import pytest
import torch
from torch import nn

from fastclr import NTXentLoss
from fastclr.errors import UsageError
from fastclr.ops import chunked
from fastclr.ops.backends import BACKENDS
from fastclr.ops.nt_xent import nt_xent
from fastclr.ops.reference import nt_xent_reference
from tests.loss_cases import (
    reference_temperature_grads,
    usable_backends,
)

CPU = torch.device("cpu")
CPU_BACKENDS = usable_backends(CPU, torch.float32)


def rows_and_grads(z1, z2, temperature: float, upstream, backend: str, dtype=torch.float32):
    """Per-row losses and the gradients of sum(upstream * rows) w.r.t. z1, z2 and a Parameter tau."""
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    tau = nn.Parameter(torch.tensor(temperature, dtype=dtype, device=z1.device))
    rows = nt_xent(a, b, tau, reduction="none", backend=backend)
    ga, gb, gtau = torch.autograd.grad((rows * upstream.to(rows)).sum(), [a, b, tau])
    assert gtau.shape == () and gtau.dtype == dtype
    return rows, ga, gb, gtau


def assert_matches_float64(z1, z2, temperature: float, backend: str) -> None:
    upstream = torch.randn(2 * z1.shape[0], device=z1.device)
    exact = reference_temperature_grads(z1.cpu(), z2.cpu(), temperature, upstream.cpu())
    ours = [
        t.detach().double().cpu() for t in rows_and_grads(z1, z2, temperature, upstream, backend)
    ]
    # Value and z-gradient tolerances as in test_nt_xent_correctness.py. dL/dtau is a sum over
    # rows of g_i (E_P[cos] - cos_pos) / tau^2: its fp32 error grows with sum |g_i| / tau^2.
    atol = 2e-5 / temperature
    shortest = min(torch.cat([z1, z2]).norm(dim=1).min().item(), 1.0)
    tau_atol = 1e-5 * upstream.abs().sum().item() / temperature**2
    for mine, truth, tol in zip(
        ours, exact, (atol, atol / shortest, atol / shortest, tau_atol), strict=True
    ):
        torch.testing.assert_close(mine, truth, atol=tol, rtol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    ("n", "d", "temperature"), [(1, 3, 0.5), (3, 1, 0.07), (17, 33, 0.3), (40, 5, 2.5)]
)
def test_parameter_temperature_matches_float64(backend, n, d, temperature) -> None:
    assert_matches_float64(torch.randn(n, d), torch.randn(n, d), temperature, backend)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_gradcheck_float64_with_temperature(backend, reduction, monkeypatch) -> None:
    """gradcheck of z1, z2 and tau together, with chunked row blocks (3 rows) that do not divide
    the 10 rows."""
    monkeypatch.setattr(chunked, "BLOCK_BUDGET_BYTES", 3 * (3 * 4 * 10))  # 3 rows of 10 cols
    assert chunked.rows_per_block(10) == 3
    z1 = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    for value in (0.15, 0.7, 3.0):
        tau = torch.tensor(value, dtype=torch.float64, requires_grad=True)

        def loss(a, b, t):
            return nt_xent(a, b, t, reduction=reduction, backend=backend)

        assert torch.autograd.gradcheck(loss, (z1, z2, tau))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_temperature_gradient_at_most_twice_torchs_error(dtype) -> None:
    # dL/dtau is one number: one draw compares two single samples of an error, and torch's can be
    # tiny by luck (about 1 draw in 40 in bf16). The median over draws carries the rule.
    n, d, temperature = 29, 48, 0.2
    mine, torchs, exacts = [], [], []
    for _ in range(9):
        z1, z2 = torch.randn(n, d).to(dtype), torch.randn(n, d).to(dtype)
        upstream = torch.randn(2 * n)
        exact = reference_temperature_grads(z1, z2, temperature, upstream)[3]
        ours = rows_and_grads(z1, z2, temperature, upstream, "chunked")[3]
        tau = nn.Parameter(torch.tensor(temperature))
        rows = nt_xent_reference(z1, z2, tau, reduction="none")
        (torch_grad,) = torch.autograd.grad((rows * upstream.to(rows.dtype)).sum(), [tau])
        mine.append((ours.double() - exact).abs())
        torchs.append((torch_grad.double() - exact).abs())
        exacts.append(exact.abs())
    my_err, torch_err = torch.stack(mine).median(), torch.stack(torchs).median()
    one_rounding = torch.finfo(dtype).eps * torch.stack(exacts).median()
    assert my_err <= 2 * torch_err + one_rounding + 1e-6, (my_err, torch_err, one_rounding)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_temperature_alone_requires_grad(backend) -> None:
    """Only tau is a leaf (frozen features): its gradient still comes out, for "mean"."""
    z1, z2 = torch.randn(6, 7), torch.randn(6, 7)
    tau = nn.Parameter(torch.tensor(0.4))
    (gtau,) = torch.autograd.grad(nt_xent(z1, z2, tau, backend=backend), [tau])
    exact = reference_temperature_grads(z1, z2, 0.4, torch.full((12,), 1 / 12))[3]
    torch.testing.assert_close(gtau.double(), exact, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_log_temperature_parametrization(backend) -> None:
    """tau = exp(log_tau), the usual way to keep a learnable temperature positive: autograd
    chains dL/dtau through exp."""
    z1, z2 = torch.randn(9, 4), torch.randn(9, 4)
    log_tau = nn.Parameter(torch.tensor(-1.2))
    (grad,) = torch.autograd.grad(nt_xent(z1, z2, log_tau.exp(), backend=backend), [log_tau])
    tau = log_tau.exp().item()
    exact = reference_temperature_grads(z1, z2, tau, torch.full((18,), 1 / 18))[3] * tau
    torch.testing.assert_close(grad.double(), exact, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_global_negatives_without_a_process_group_give_the_same_gradient(backend) -> None:
    z1, z2 = torch.randn(5, 3), torch.randn(5, 3)
    grads = []
    for gather in (False, True):
        tau = nn.Parameter(torch.tensor(0.3))
        loss = nt_xent(z1, z2, tau, backend=backend, gather_distributed=gather)
        grads.append(torch.autograd.grad(loss, [tau])[0])
    assert torch.equal(grads[0], grads[1])


def test_tensor_without_grad_is_a_float() -> None:
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    for tau in (torch.tensor(0.2), torch.tensor([0.2]), torch.tensor(0.2, dtype=torch.float64)):
        assert torch.equal(nt_xent(z1, z2, tau), nt_xent(z1, z2, 0.2))


def test_module_registers_a_parameter_and_an_optimizer_learns_it() -> None:
    tau = nn.Parameter(torch.tensor(0.5))
    module = NTXentLoss(temperature=tau, backend="chunked")
    assert module.temperature is tau
    assert [p for p in module.parameters()] == [tau]
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    module(z1, z2).backward()
    exact = reference_temperature_grads(z1, z2, 0.5, torch.full((16,), 1 / 16))[3]
    torch.testing.assert_close(tau.grad.double(), exact, atol=1e-5, rtol=1e-4)
    torch.optim.SGD(module.parameters(), lr=0.01).step()
    assert tau.item() == pytest.approx(0.5 - 0.01 * tau.grad.item(), rel=1e-6)
    assert "learnable" in repr(module)


def test_module_registers_a_plain_tensor_as_a_buffer() -> None:
    module = NTXentLoss(temperature=torch.tensor(0.2))
    assert list(module.parameters()) == []
    assert "temperature" in module.state_dict()
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    assert torch.equal(module(z1, z2), nt_xent(z1, z2, 0.2))
    assert isinstance(NTXentLoss(0.2).temperature, float)


def test_a_learnable_temperature_driven_out_of_range_is_refused_with_the_fix() -> None:
    tau = nn.Parameter(torch.tensor(-0.01))
    with pytest.raises(UsageError, match=r"temperature must be finite and > 0.*log_tau\.exp\(\)"):
        nt_xent(torch.randn(4, 3), torch.randn(4, 3), tau)


class StandInExtension:
    """The compiled CUDA extension's two entry points, computed by the chunked spec in fp32 on the
    CPU, checking the arguments that fastclr/ops/cuda_backend.py passes to the real one."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def forward_rows(self, zr, zc, row_ids, inv_temp):
        assert type(inv_temp) is float and zr.is_contiguous() and zc.is_contiguous()
        self.calls.append("forward_rows")
        return [t.float() for t in chunked.forward_rows(zr, zc, row_ids, inv_temp)]

    def backward_rows(self, zr, zc, row_ids, lse_c, lse_neg_c, g_c, inv_temp):
        assert type(inv_temp) is float
        assert lse_c.dtype == lse_neg_c.dtype == g_c.dtype == torch.float32
        self.calls.append("backward_rows")
        return chunked.backward_rows(zr, zc, row_ids, lse_c, lse_neg_c, g_c, inv_temp).float()


def test_cuda_backend_python_path_with_a_stand_in_extension(monkeypatch) -> None:
    """Without a GPU: the cuda backend's wrappers, the custom ops and the temperature gradient, with
    only the compiled extension stood in (the `gpu` test below runs the real one)."""
    from fastclr.ops import cuda_backend

    extension = StandInExtension()
    monkeypatch.setattr(cuda_backend, "availability", lambda device, dtype: None)
    monkeypatch.setattr(cuda_backend, "load_extension", lambda: extension)
    assert_matches_float64(torch.randn(13, 6), torch.randn(13, 6), 0.2, "cuda")
    assert extension.calls == ["forward_rows", "backward_rows"]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["chunked", "triton", "cuda"])
@pytest.mark.parametrize(
    ("n", "d", "temperature"), [(1, 5, 0.5), (37, 3, 0.07), (300, 200, 0.2), (129, 64, 1.5)]
)
def test_gpu_parameter_temperature_matches_float64(backend, n, d, temperature) -> None:
    cuda = torch.device("cuda")
    reason = BACKENDS[backend].unavailable_reason(cuda, torch.float32)
    if reason is not None:
        pytest.skip(reason)
    assert_matches_float64(
        torch.randn(n, d, device=cuda), torch.randn(n, d, device=cuda), temperature, backend
    )
