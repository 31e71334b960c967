"""Bad input raises an error that names the argument and the fix."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from fastclr import NTXentLoss
from fastclr.errors import UsageError
from fastclr.ops.nt_xent import nt_xent

Z = torch.randn(4, 8)


@pytest.mark.parametrize(
    ("z1", "z2", "error", "match"),
    [
        (Z, torch.randn(5, 8), ValueError, "same shape"),
        (Z, torch.randn(4, 9), ValueError, "same shape"),
        (torch.randn(4, 8, 2), torch.randn(4, 8, 2), ValueError, "z1 must be 2-D.*flatten"),
        (torch.randn(8), torch.randn(8), ValueError, "z1 must be 2-D"),
        (Z, torch.randn(4), ValueError, "z2 must be 2-D"),
        (torch.randn(0, 8), torch.randn(0, 8), ValueError, "N = 0"),
        (torch.randn(4, 0), torch.randn(4, 0), ValueError, "D = 0"),
        (Z, Z.double(), TypeError, "cast both to one dtype"),
        (Z.long(), Z.long(), TypeError, "z1 has dtype torch.int64.*float"),
        (Z, Z.bool(), TypeError, "z2 has dtype torch.bool"),
        (Z.numpy(), Z, TypeError, "z1 must be a torch.Tensor"),
    ],
)
def test_bad_projections(z1, z2, error, match) -> None:
    with pytest.raises(error, match=match) as caught:
        nt_xent(z1, z2)
    assert isinstance(caught.value, UsageError)


def test_different_devices() -> None:
    meta = torch.randn(4, 8, device="meta")
    with pytest.raises(ValueError, match="z1 is on cpu but z2 is on meta: move both"):
        nt_xent(Z, meta)


@pytest.mark.parametrize(
    "temperature",
    [
        0.0,
        -0.1,
        float("nan"),
        float("inf"),
        np.float32("nan"),
        np.float64(-1),
        torch.tensor(0.0),
        torch.tensor(float("inf")),
    ],
    ids=[
        "0",
        "negative",
        "nan",
        "inf",
        "np.float32-nan",
        "np.float64-negative",
        "tensor-0",
        "tensor-inf",
    ],
)
def test_bad_temperature_value(temperature) -> None:
    with pytest.raises(UsageError, match="temperature must be finite and > 0"):
        nt_xent(Z, Z, temperature)
    with pytest.raises(UsageError, match="temperature must be finite and > 0"):
        NTXentLoss(temperature)


@pytest.mark.parametrize(
    "temperature",
    [
        "0.5",
        None,
        True,
        np.bool_(True),
        0.5j,
        np.complex64(0.5),
        torch.tensor(True),
        torch.tensor(0.5j),
    ],
    ids=[
        "str",
        "None",
        "bool",
        "np.bool_",
        "complex",
        "np.complex64",
        "bool-tensor",
        "complex-tensor",
    ],
)
def test_bad_temperature_type(temperature) -> None:
    """A UsageError (the CLI's one-line error) that `except TypeError` also catches."""
    with pytest.raises(UsageError, match="temperature must be a (real )?number") as caught:
        nt_xent(Z, Z, temperature)
    assert isinstance(caught.value, TypeError)
    with pytest.raises(UsageError, match="temperature must be a"):
        NTXentLoss(temperature)


@pytest.mark.parametrize(
    "temperature",
    [np.float32(0.5), np.float16(0.5), np.float64(0.5), Fraction(1, 2), torch.tensor([0.5])],
    ids=["np.float32", "np.float16", "np.float64", "Fraction", "1-element-tensor"],
)
def test_any_real_scalar_temperature_is_accepted(temperature) -> None:
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    assert torch.equal(nt_xent(z1, z2, temperature), nt_xent(z1, z2, 0.5))
    assert torch.equal(NTXentLoss(temperature)(z1, z2), nt_xent(z1, z2, 0.5))
    assert torch.equal(nt_xent(z1, z2, np.int64(1)), nt_xent(z1, z2, 1.0))


def test_temperature_tensor_with_many_elements() -> None:
    with pytest.raises(
        UsageError, match=r"temperature must be a scalar, got a tensor of shape \(2,\)"
    ):
        nt_xent(Z, Z, torch.tensor([0.1, 0.2]))


def test_tensor_temperature_is_accepted() -> None:
    assert torch.equal(nt_xent(Z, Z.flip(0), torch.tensor(0.2)), nt_xent(Z, Z.flip(0), 0.2))


def test_unknown_reduction() -> None:
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\)"):
        nt_xent(Z, Z, reduction="avg")


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="backend must be 'auto' or one of .*'chunked'"):
        nt_xent(Z, Z, backend="flash")


def test_module_checks_its_arguments_at_construction() -> None:
    with pytest.raises(UsageError, match="backend must be 'auto' or one of .*'chunked'.*'bogus'"):
        NTXentLoss(backend="bogus")
    with pytest.raises(UsageError, match="reduction must be one of"):
        NTXentLoss(reduction="avg")
    # A known backend not usable here is only known to be unusable once the tensors are seen.
    module = NTXentLoss(backend="cuda")
    with pytest.raises(UsageError, match="backend='cuda' is not usable"):
        module(Z, Z)


def test_unusable_backend_says_which_are_usable() -> None:
    with pytest.raises(
        UsageError, match=r"backend='cuda' is not usable .*Usable here: \[.*'chunked'"
    ):
        nt_xent(Z, Z, backend="cuda")


def test_gather_distributed_without_a_process_group_is_the_local_loss() -> None:
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    torch.testing.assert_close(nt_xent(z1, z2, gather_distributed=True), nt_xent(z1, z2))
