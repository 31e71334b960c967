"""fastclr: fast, memory-efficient, verified SimCLR training.

The losses load on first use (PEP 562): `import fastclr`, as the `fastclr` command does to parse its
flags, does not import torch, so `fastclr train --help` and a bad flag answer at once.
"""

__version__ = "0.1.0"

_LOSSES = {
    "ClipLoss": "fastclr.loss",
    "DCLLoss": "fastclr.loss",
    "DCLWLoss": "fastclr.loss",
    "NTXentLoss": "fastclr.loss",
    "SupConLoss": "fastclr.loss",
    "clip_loss": "fastclr.ops",
    "nt_xent": "fastclr.ops",
    "sup_con": "fastclr.ops",
}

__all__ = ["__version__", *_LOSSES]


def __getattr__(name: str):
    if name not in _LOSSES:
        raise AttributeError(f"module 'fastclr' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LOSSES[name]), name)
    globals()[name] = value  # later lookups find it without __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
