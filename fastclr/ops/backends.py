"""Registry of loss backends: what each needs, whether it is usable here, and what "auto" picks.

A memory-efficient backend is a module exposing `forward_rows` and `backward_rows` (the contract in
fastclr/ops/chunked.py) and an availability check `(device, dtype) -> None | reason`. Backends are
imported lazily: `import fastclr` never imports triton or compiles CUDA.
"""

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch

from fastclr.errors import UsageError

Availability = Callable[[torch.device, torch.dtype], "str | None"]


# The loss family's members (fastclr/ops/family.py). A backend declares the ones it implements; a
# member it lacks runs on the chunked spec under backend="auto" and is refused when named.
MEMBERS = ("nt_xent", "nt_xent_negatives", "dcl", "sup_con", "clip_loss")
NT_XENT_ONLY = ("nt_xent",)


@dataclass(frozen=True)
class Backend:
    name: str
    summary: str
    module: str | None  # primitives module; None for the reference, which is not row-blocked
    members: tuple[str, ...] = NT_XENT_ONLY
    # Module with the family's family_forward_rows / family_backward_rows (fastclr/ops/family.py's
    # signatures) when the backend implements members beyond nt_xent.
    family_module: str | None = None

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def load_family(self) -> ModuleType:
        if self.family_module is None:
            raise UsageError(f"the {self.name} backend implements no loss-family member")
        return importlib.import_module(self.family_module)

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """None when usable for tensors of this device and dtype, else why not."""
        if self.module is None:
            return None
        try:
            module = self.load()
        except ImportError as err:
            return f"cannot import {self.module}: {err}"
        check = getattr(module, "availability", None)
        return check(device, dtype) if check is not None else None


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("reference", "plain PyTorch, builds the 2N x 2N matrix (the oracle)", None),
        Backend(
            "chunked",
            "PyTorch row blocks, O(N*D) memory, any device",
            "fastclr.ops.chunked",
            MEMBERS,
            "fastclr.ops.family",
        ),
        Backend(
            "triton",
            "fused Triton kernels, O(N*D) memory",
            "fastclr.ops.triton_backend",
            MEMBERS,
            "fastclr.ops.family_triton",
        ),
        Backend("cuda", "fused CUDA C++ kernels, O(N*D) memory", "fastclr.ops.cuda_backend"),
    )
}

# Fused backends "auto" tries for CUDA tensors, best first. The CPU path is always "chunked":
# fp32 accumulation and bounded memory at every size.
AUTO_CUDA_ORDER = ("triton", "cuda", "chunked")


def interpreting_triton() -> bool:
    """Whether Triton kernels run through its CPU interpreter (TRITON_INTERPRET=1, read by triton
    at its first import). kernels/configs.py keeps its own copy: kernels never import fastclr."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_name(name: str) -> None:
    """Raise UsageError unless `name` is "auto" or a registered backend (usable here or not)."""
    if name != "auto" and name not in BACKENDS:
        raise UsageError(f"backend must be 'auto' or one of {tuple(BACKENDS)}, got {name!r}")


def resolve(name: str, device: torch.device, dtype: torch.dtype) -> Backend:
    """The Backend to run for `name` ("auto" or a registered name) on tensors of device/dtype.

    Raises UsageError for an unknown name or a backend not usable here, naming the usable ones.
    """
    check_name(name)
    if name == "auto":
        order = AUTO_CUDA_ORDER if device.type == "cuda" else ("chunked",)
        for candidate in order:
            if BACKENDS[candidate].unavailable_reason(device, dtype) is None:
                return BACKENDS[candidate]
        return BACKENDS["reference"]
    backend = BACKENDS[name]
    reason = backend.unavailable_reason(device, dtype)
    if reason is not None:
        usable = [n for n, b in BACKENDS.items() if b.unavailable_reason(device, dtype) is None]
        raise UsageError(
            f"backend={name!r} is not usable for {dtype} tensors on {device}: {reason}. "
            f"Usable here: {usable} (or backend='auto')"
        )
    return backend


@torch.compiler.assume_constant_result
def _resolved_or_error(name: str, device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    # torch.compile evaluates this once while tracing and keeps the result as a constant: the
    # registry imports modules, which the compiler does not trace. An error is returned, not
    # raised, so that it reaches the caller as itself.
    try:
        return resolve(name, device, dtype).name, ""
    except UsageError as err:
        return "", str(err)


def resolve_name(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """resolve(name, device, dtype).name, read by torch.compile as a constant (no graph break)."""
    chosen, error = _resolved_or_error(name, device, dtype)
    if error:
        raise UsageError(error)
    return chosen


def usability_report(device: torch.device, dtype: torch.dtype) -> dict[str, str | None]:
    """name -> None if usable on device/dtype, else the reason (for `fastclr info`)."""
    return {name: b.unavailable_reason(device, dtype) for name, b in BACKENDS.items()}


def member_unavailable_reason(backend: str, member: str) -> str | None:
    """None when `backend` implements the family member `member`, else why not (no device check)."""
    if member in BACKENDS[backend].members:
        return None
    return (
        f"the {backend} backend has no {member} kernels (it implements "
        f"{', '.join(BACKENDS[backend].members)}; the triton and chunked backends implement every "
        "member)"
    )


def resolve_member(member: str, name: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend name to run family member `member` with: "auto" takes the best usable backend
    that implements it (the chunked spec at least); a named backend that lacks it is a UsageError."""
    check_name(name)
    if name == "auto":
        order = AUTO_CUDA_ORDER if device.type == "cuda" else ("chunked",)
        for candidate in order:
            backend = BACKENDS[candidate]
            if member in backend.members and backend.unavailable_reason(device, dtype) is None:
                return candidate
        return "chunked"
    reason = member_unavailable_reason(name, member)
    if reason is not None:
        raise UsageError(
            f"backend={name!r} cannot compute {member}: {reason}; use backend='auto' or 'chunked'"
        )
    return resolve(name, device, dtype).name


def family_primitives(name: str) -> ModuleType:
    """The module holding backend `name`'s family_forward_rows / family_backward_rows (a name
    resolve_member returned)."""
    return BACKENDS[name].load_family()


def member_report() -> dict[str, dict[str, str | None]]:
    """backend name -> {member: None if implemented, else why not} (for `fastclr info`)."""
    return {name: {m: member_unavailable_reason(name, m) for m in MEMBERS} for name in BACKENDS}
