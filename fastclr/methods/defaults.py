"""Each method's paper settings, and which TrainConfig fields it reads (no torch: the CLI's --help
and config checks import this without building anything).

Optimizer, base lr (for batch 256, scaled by batch/256), weight decay and warmup are the papers'
ImageNet values; a method's own fields (temperature, queue, momentum, heads) are in `settings`.
`None` in settings means "derived at build time" (proj_hidden None: the backbone's feature width).
Fields in EVERY_METHOD are read by every method; a method listing one only sets its own default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METHOD_NAMES = ("simclr", "moco", "byol", "simsiam", "swav")


@dataclass(frozen=True)
class MethodDefaults:
    paper: str
    optimizer: str
    lr: float  # base lr for batch 256
    weight_decay: float
    warmup_epochs: float
    settings: dict[str, Any] = field(default_factory=dict)  # method-specific TrainConfig fields


DEFAULTS: dict[str, MethodDefaults] = {
    "simclr": MethodDefaults(
        paper="Chen et al. 2020, A Simple Framework for Contrastive Learning (SimCLR)",
        optimizer="lars", lr=0.3, weight_decay=1e-6, warmup_epochs=10,
        settings={"temperature": 0.2, "loss": "ntxent", "proj_dim": 128, "proj_layers": 2,
                  "proj_hidden": None, "proj_last_bn": False},
    ),
    "moco": MethodDefaults(
        paper="Chen et al. 2020, Improved Baselines with Momentum Contrastive Learning (MoCo v2)",
        optimizer="sgd", lr=0.03, weight_decay=1e-4, warmup_epochs=0,
        settings={"temperature": 0.2, "queue_size": 65536, "target_momentum": 0.999,
                  "bn_splits": 1, "proj_dim": 128, "proj_layers": 2, "proj_hidden": None},
    ),
    "byol": MethodDefaults(
        paper="Grill et al. 2020, Bootstrap Your Own Latent (BYOL)",
        optimizer="lars", lr=0.2, weight_decay=1.5e-6, warmup_epochs=10,
        settings={"target_momentum": 0.996, "proj_dim": 256, "proj_layers": 2,
                  "proj_hidden": 4096, "pred_hidden": 4096, "pred_lr_scale": 0.0,
                  # asymmetric views (Grill et al. 2020, table 6): blur 1.0 / 0.1, solarize 0 / 0.2
                  "view_blur_p": (1.0, 0.1), "view_solarize_p": (0.0, 0.2)},
    ),
    "simsiam": MethodDefaults(
        paper="Chen & He 2021, Exploring Simple Siamese Representation Learning (SimSiam)",
        optimizer="sgd", lr=0.05, weight_decay=1e-4, warmup_epochs=0,
        settings={"proj_dim": 2048, "proj_layers": 3, "proj_hidden": 2048, "pred_hidden": 512,
                  "pred_lr_scale": 1.0},
    ),
    "swav": MethodDefaults(
        paper="Caron et al. 2020, Unsupervised Learning of Visual Features by Contrasting Cluster "
        "Assignments (SwAV)",
        optimizer="lars", lr=0.3, weight_decay=1e-6, warmup_epochs=10,
        settings={"temperature": 0.1, "queue_size": 0, "prototypes": 3000,
                  "sinkhorn_epsilon": 0.05, "sinkhorn_iterations": 3,
                  "freeze_prototypes_steps": None, "proj_dim": 128, "proj_layers": 2,
                  "proj_hidden": 2048, "local_size": None},
    ),
}  # fmt: skip

# Per-view augmentation: the loader's views, so every method reads them; byol has its own default.
EVERY_METHOD = frozenset({"view_blur_p", "view_solarize_p"})
# Fields some methods read and others do not: given to a method that ignores them, an error.
METHOD_FIELDS = sorted(
    {name for d in DEFAULTS.values() for name in d.settings}
    - set.intersection(*(set(d.settings) for d in DEFAULTS.values()))
    - EVERY_METHOD
)


def users_of(name: str) -> list[str]:
    """The methods that read TrainConfig field `name` (for EVERY_METHOD fields: those with a
    default of their own)."""
    return [method for method, d in DEFAULTS.items() if name in d.settings]


def defaults_text(name: str) -> str:
    """'simclr 0.2, moco 0.2, swav 0.1' for the --help of field `name` (a tuple as '1.0,0.1', as
    the flag takes it)."""
    parts = []
    for method in users_of(name):
        value = DEFAULTS[method].settings[name]
        if value is None:
            value = "(derived)"
        elif isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        parts.append(f"{method} {value}")
    return ", ".join(parts)
