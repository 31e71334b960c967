"""build_method: the method a (resolved) TrainConfig dict names, built from its settings."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import torch

from fastclr.methods.base import Method
from fastclr.methods.defaults import METHOD_NAMES

# method name -> (module of fastclr.methods, class); imported on use (swav needs newer ops).
CLASSES = {
    "simclr": ("simclr", "SimCLR"),
    "moco": ("moco", "MoCo"),
    "byol": ("byol", "BYOL"),
    "simsiam": ("simsiam", "SimSiam"),
    "swav": ("swav", "SwAV"),
}
assert tuple(CLASSES) == METHOD_NAMES


def method_class(name: str) -> type[Method]:
    if name not in CLASSES:
        raise ValueError(f"method={name!r}: choose one of {', '.join(METHOD_NAMES)}")
    module, cls = CLASSES[name]
    return getattr(importlib.import_module(f"fastclr.methods.{module}"), cls)


def build_method(config: Mapping[str, Any]) -> Method:
    """The method `config["method"]` (default simclr: configs written before --method existed)
    built from the config's settings, in channels_last format."""
    method = method_class(config.get("method") or "simclr")(config)
    return method.to(memory_format=torch.channels_last)
