"""nt_xent under torch.compile: the batch size may change and shapes may be dynamic; values and
gradients equal eager's.

The backends' primitives are torch.library custom ops with fake implementations
(fastclr/ops/primitives.py): the compiler sees opaque ops with symbolic shapes. `fullgraph=True`
asserts that a float temperature compiles without a graph break. Triton runs through the
interpreter without a GPU (conftest.py).
"""

import getpass
import os
import tempfile

import pytest
import torch
from torch import nn

from fastclr.ops.backends import BACKENDS
from fastclr.ops.nt_xent import nt_xent
from tests.loss_cases import usable_backends

FUSED_BACKENDS = [
    b for b in usable_backends(torch.device("cpu"), torch.float32) if b != "reference"
]
BATCH_SIZES = (32, 48, 33)


@pytest.fixture(scope="module", autouse=True)
def inductor_cache_per_cpu_capability():
    """One on-disk inductor cache per CPU kernel set. torch 2.14.1 does not key its cached C++
    kernels on ATEN_CPU_CAPABILITY: on an AVX-512 machine, a run under ATEN_CPU_CAPABILITY=avx2
    after a default run reused the other's kernels and wrote out of bounds (garbage row indices,
    "double free or corruption")."""
    capability = torch.backends.cpu.get_cpu_capability()
    name = f"fastclr-inductor-{getpass.getuser()}-{capability}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), name))
        yield


@pytest.fixture(autouse=True)
def fresh_compiler_caches():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_() for t in tensors]


def value_and_grads(loss_fn, inputs: list[torch.Tensor], upstream=None):
    value = loss_fn(*inputs)
    weighted = value if upstream is None else (value * upstream).sum()
    return (value.detach(), *torch.autograd.grad(weighted, inputs))


def assert_compiled_equals_eager(backend: str, dynamic, device: str = "cpu") -> None:
    def loss(a, b):
        return nt_xent(a, b, 0.2, backend=backend)

    compiled = torch.compile(loss, dynamic=dynamic, fullgraph=True)
    for n in BATCH_SIZES:
        z1, z2 = torch.randn(n, 16, device=device), torch.randn(n, 16, device=device)
        ours = value_and_grads(compiled, leaves(z1, z2))
        eager = value_and_grads(loss, leaves(z1, z2))
        for mine, expected in zip(ours, eager, strict=True):
            torch.testing.assert_close(mine, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("dynamic", [None, True])
def test_compiled_loss_survives_a_changing_batch_size(backend: str, dynamic) -> None:
    assert_compiled_equals_eager(backend, dynamic)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_compiled_loss_survives_a_changing_batch_size(backend: str) -> None:
    reason = BACKENDS[backend].unavailable_reason(torch.device("cuda"), torch.float32)
    if reason is not None:
        pytest.skip(reason)
    assert_compiled_equals_eager(backend, True, "cuda")


def test_compiled_per_row_losses_with_a_learnable_temperature() -> None:
    """reduction="none" under a random upstream gradient, and tau an nn.Parameter (its value is
    read on the host: one graph break, no recompilation as it changes)."""

    def loss(a, b, tau):
        return nt_xent(a, b, tau, reduction="none", backend="chunked")

    compiled = torch.compile(loss, dynamic=True)
    for n, temperature in zip(BATCH_SIZES, (0.3, 0.1, 0.7), strict=True):
        z1, z2 = torch.randn(n, 8), torch.randn(n, 8)
        tau = nn.Parameter(torch.tensor(temperature))
        upstream = torch.randn(2 * n)
        ours = value_and_grads(compiled, [*leaves(z1, z2), tau], upstream)
        eager = value_and_grads(loss, [*leaves(z1, z2), tau], upstream)
        # The compiled normalization rounds differently from eager's: fp32 noise scaled by 1/tau
        # in the logits, and dL/dtau sums 2n terms of size |g_i| / tau^2.
        atol = 2e-5 / temperature
        tau_atol = 1e-6 * upstream.abs().sum().item() / temperature**2
        for mine, expected, tol in zip(ours, eager, (atol, atol, atol, tau_atol), strict=True):
            torch.testing.assert_close(mine, expected, atol=tol, rtol=1e-5)
