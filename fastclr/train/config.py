"""TrainConfig: every setting of `fastclr train`, as one dataclass, and the one place it is resolved.

Precedence, lowest first: the defaults below < a --config YAML/JSON file < command-line flags
(`config_from_args`). Every value is checked (type, range, choices) as it is layered, and a bad one
raises `fastclr.errors.UsageError` naming the flag or the file key and the fix, before any data is
loaded. `resolve_config` then fills what depends on the data, the optimizer and the launch: the
image size, crop floor, the method's per-view blur and solarization (BYOL's asymmetric views; no
blur below 96 px), learning rate, weight decay, stem, and the resume rule of a restarted worker
group. The resolved config is written to <out>/config.json and stored in every checkpoint.

--gpus and --nproc are fields (a config file may set them); the other multi-node flags (--nnodes,
--rdzv-endpoint, --max-restarts) belong to the launcher, fastclr.distributed.launch. The defaults
train on scikit-learn's digits on a 2-core CPU in a few minutes; each field's help gives the value
recommended for real runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastclr.errors import UsageError
from fastclr.methods.defaults import (
    DEFAULTS,
    METHOD_FIELDS,
    METHOD_NAMES,
    defaults_text,
    users_of,
)

# The CPU demo preset, for settings left unset with --data digits. The digits are 8x8 originals,
# so 8 px loses nothing and trains ~4x faster than 16 px. A run of minutes needs gentler crops
# and a higher LARS rate than SimCLR's 100-epoch ImageNet values to lift kNN above the random-init
# encoder: 8 epochs of SimCLR reach kNN 88.9-93.1 (+7.5 to +13.1 over the random init, 5 seeds)
# with crops >= 50% of the area, 87.5 with >= 25% (tests/test_train_learning.py).
DIGITS_PRESET = {"image_size": 8, "crop_scale": 0.5}
# Per method, on digits, in place of the paper's ImageNet settings. MoCo's queue of 65536 does not
# fit 1,437 images, and at SGD 0.03 with a key momentum of 0.999 its loss stays at chance for
# tens of epochs; with these, 30 epochs lift kNN over the random init on every seed measured
# (docs/methods.md, "Learning on digits"; fastclr/configs/moco-v2-digits.yaml). SwAV's 3000
# prototypes are twice the images, and at LARS 0.3 / tau 0.1 its loss hardly leaves chance in
# 30 epochs; with 30 prototypes, tau 0.2 and MoCo's LARS 2.0, 50 epochs lift kNN on every seed
# and instruction set measured (fastclr/configs/swav-digits.yaml). BYOL and SimSiam lower kNN at
# every rate tried with their predictor on the schedule and with flipped digits (a mirrored digit
# is another shape); with the predictor held at 10x the peak lr and no flips, 30 epochs lift it
# (fastclr/configs/byol-digits.yaml, simsiam-digits.yaml). "lr" and "weight_decay" apply only
# with the preset's optimizer (the method's own unless it names one).
DIGITS_METHOD_PRESET: dict[str, dict[str, Any]] = {
    "simclr": {"lr": 4.0},
    "moco": {"optimizer": "lars", "lr": 2.0, "queue_size": 1024, "target_momentum": 0.99},
    "byol": {"lr": 4.0, "target_momentum": 0.99, "proj_hidden": 512, "proj_dim": 128,
             "pred_hidden": 512, "pred_lr_scale": 10.0, "flip_p": 0.0},
    "simsiam": {"lr": 0.1, "weight_decay": 5e-4, "proj_hidden": 512, "proj_dim": 512,
                "pred_hidden": 128, "pred_lr_scale": 10.0, "flip_p": 0.0, "crop_scale": 0.8},
    "swav": {"lr": 2.0, "temperature": 0.2, "prototypes": 30},
}  # fmt: skip
LOSS_BACKENDS = ("auto", "reference", "chunked", "triton", "cuda")  # fastclr.ops.backends + auto

METHOD_OPTIMIZERS = ", ".join(f"{m} {d.optimizer}" for m, d in DEFAULTS.items())
METHOD_LRS = ", ".join(f"{m} {d.lr:g}" for m, d in DEFAULTS.items())
METHOD_DECAYS = ", ".join(f"{m} {d.weight_decay:g}" for m, d in DEFAULTS.items())
METHOD_WARMUPS = ", ".join(f"{m} {d.warmup_epochs:g}" for m, d in DEFAULTS.items())

Check = tuple[Callable[[Any], bool], str]  # (is the value in range, what the range is)


def _opt(default: Any, help: str, check: Check | None = None, **argparse_kwargs: Any) -> Any:  # noqa: A002
    return field(default=default, metadata={"help": help, "check": check, **argparse_kwargs})


def _at_least(low: float) -> Check:
    return (lambda v: v >= low), f">= {low:g}"


POSITIVE: Check = ((lambda v: v > 0 and math.isfinite(v)), "> 0 and finite")
PROBABILITY: Check = ((lambda v: 0 <= v <= 1), "in [0, 1]")
PER_VIEW_FIELDS = ("view_blur_p", "view_solarize_p")  # one probability per global view


def _known_arch(name: str) -> bool:
    from fastclr.backbones import check_arch  # torchvision: imported only when checking

    check_arch(name)  # a UsageError listing close matches if unknown
    return True


ARCH_CHECK: Check = (_known_arch, "a torchvision classification model or timm:NAME")


@dataclass
class TrainConfig:
    # data
    data: str = _opt(
        "digits",
        "dataset: digits | synthetic[:N] | cifar10:PATH | an image folder "
        "(PATH/train/<class>/*, optional PATH/val/<class>/*). Recommended: your data",
    )
    image_size: int | None = _opt(
        None,
        "training side in pixels; default: 8 for digits (its 8x8 originals), 32 CIFAR/synthetic, "
        "and for folders the standard size (32..224) at or above the median side of a sample of "
        "their images. Recommended: 224 for ImageNet, 32 for CIFAR",
        _at_least(1),
    )
    loader: str = _opt(
        "auto",
        "augmentation: auto (DALI if installed, on the GPU for a CUDA run) | dali | dali-gpu | "
        "dali-cpu | torch. Recommended: auto",
        choices=("auto", "dali", "dali-gpu", "dali-cpu", "torch"),
    )
    crop_scale: float | None = _opt(
        None,
        "smallest random-resized-crop area, as a fraction of the image; default: 0.5 for "
        "digits (short demo runs; simsiam 0.8), else 0.08. Recommended: 0.08 (SimCLR) for long "
        "runs",
        ((lambda v: 0 < v <= 1), "in (0, 1]"),
    )
    flip_p: float | None = _opt(
        None,
        "horizontal flip probability of each view; default: 0.5 (SimCLR's), 0 for byol and "
        "simsiam on digits. Recommended: 0 where a mirror image is another thing (text, digits)",
        PROBABILITY,
    )
    workers: int | None = _opt(
        None, "data loader worker processes per rank; default: the loader's choice", _at_least(0)
    )
    view_blur_p: tuple[float, ...] | None = _opt(
        None,
        "Gaussian blur probability of each global view, comma-separated, one per --views (e.g. "
        f"1.0,0.1); default: {defaults_text('view_blur_p')} (Grill et al. 2020, table 6), other "
        "methods 0.5 for every view; below 96 px no blur for any method unless given (the "
        "papers' CIFAR runs). Local views keep the data's blur",
        PROBABILITY,
        metavar="P1,P2",
    )
    view_solarize_p: tuple[float, ...] | None = _opt(
        None,
        "solarization probability of each global view, comma-separated, one per --views (e.g. "
        f"0.0,0.2); default: {defaults_text('view_solarize_p')} (Grill et al. 2020, table 6; at "
        "every image size), the other methods none",
        PROBABILITY,
        metavar="P1,P2",
    )
    # method
    method: str = _opt(
        "simclr",
        "self-supervised method: simclr (Chen et al. 2020) | moco (MoCo v2) | byol | simsiam | "
        "swav; each brings its paper's optimizer, lr, heads and temperature (docs/methods.md)",
        choices=METHOD_NAMES,
    )
    views: int = _opt(
        2,
        "global views per image (same size); simclr: V > 2 trains multi-view SimCLR through "
        "sup_con; swav: its global crops; the other methods take exactly 2. Recommended: 2",
        ((lambda v: v >= 2), ">= 2"),
    )
    loss: str | None = _opt(
        None,
        "simclr only: ntxent (default) | supcon (supervised contrastive, Khosla et al. 2020: "
        "needs labelled data)",
        choices=("ntxent", "supcon"),
    )
    local_views: int = _opt(
        0,
        "swav only: small multi-crop views per image, after the global ones. Recommended: 6 "
        "(SwAV's 2x224 + 6x96)",
        _at_least(0),
    )
    local_size: int | None = _opt(
        None,
        "swav only: side of the local views in pixels; default 96/224 of --image-size",
        _at_least(1),
    )
    temperature: float | None = _opt(
        None,
        f"softmax temperature; default: {defaults_text('temperature')} (swav 0.2 on digits). "
        "Recommended: simclr "
        "0.1 (ImageNet, batch >= 1024), 0.2-0.5 (CIFAR)",
        POSITIVE,
    )
    queue_size: int | None = _opt(
        None,
        f"moco: negatives in the queue; swav: stored embeddings added to Sinkhorn's batch (0 = "
        f"none); default: {defaults_text('queue_size')} (moco 1024 on digits). Recommended: swav "
        "3840 below batch 1024",
        _at_least(0),
    )
    target_momentum: float | None = _opt(
        None,
        f"momentum of the key/target encoder (byol: its starting value, rising to 1 along a "
        f"cosine); default: {defaults_text('target_momentum')} (moco, byol 0.99 on digits)",
        ((lambda v: 0 <= v < 1), "in [0, 1)"),
    )
    bn_splits: int | None = _opt(
        None,
        f"moco: groups with BatchNorm statistics of their own in each encoder pass, the keys "
        f"shuffled across groups (shuffle BN on one process: a positive key must not share BN "
        f"statistics with its query); default: {defaults_text('bn_splits')}",
        _at_least(1),
    )
    pred_hidden: int | None = _opt(
        None,
        f"predictor hidden width; default: {defaults_text('pred_hidden')} (byol 512, simsiam 128 "
        "on digits)",
        _at_least(1),
    )
    pred_lr_scale: float | None = _opt(
        None,
        "byol, simsiam: train the predictor at this multiple of the schedule's peak lr, held "
        "fixed (no warmup or decay); 0: on the schedule with the rest; default: byol 0 (its "
        "paper), simsiam 1 (its paper's fix_pred_lr), both 10 on digits",
        ((lambda v: 0 <= v < math.inf), ">= 0 and finite"),
    )
    prototypes: int | None = _opt(
        None,
        f"swav: number of prototypes; default: {defaults_text('prototypes')} (30 on digits)",
        _at_least(1),
    )
    sinkhorn_epsilon: float | None = _opt(
        None,
        f"swav: Sinkhorn-Knopp entropy regularization; default: "
        f"{defaults_text('sinkhorn_epsilon')}",
        POSITIVE,
    )
    sinkhorn_iterations: int | None = _opt(
        None,
        f"swav: Sinkhorn-Knopp iterations; default: {defaults_text('sinkhorn_iterations')}",
        _at_least(1),
    )
    freeze_prototypes_steps: int | None = _opt(
        None,
        "swav: steps at the start with the prototypes frozen; default: the first epoch (SwAV's "
        "ImageNet recipe: 313)",
        _at_least(0),
    )
    # model
    arch: str = _opt(
        "resnet18",
        "backbone: any torchvision classification model (resnet50, wide_resnet50_2, "
        "resnext50_32x4d, convnext_tiny, efficientnet_b0, vit_b_16, ...) or timm:NAME with timm "
        "installed. Recommended: resnet50",
        ARCH_CHECK,
    )
    stem: str = _opt(
        "auto",
        "first layer of the ResNet family: auto (cifar for <= 64 px) | cifar | imagenet; other "
        "models keep their own. Recommended: auto",
        choices=("auto", "cifar", "imagenet"),
    )
    proj_dim: int | None = _opt(
        None,
        f"projection output width; default: {defaults_text('proj_dim')}",
        _at_least(1),
    )
    proj_layers: int | None = _opt(
        None,
        f"projection head layers; default: {defaults_text('proj_layers')}. simclr: 2 (SimCLR "
        "v1) or 3 (SimCLR v2, when fine-tuning from the head's first layer as v2 does)",
        _at_least(1),
    )
    proj_last_bn: bool | None = _opt(
        None,
        "a BN on the projection head's output (its last Linear without bias), as SimCLR's code "
        f"(google-research/simclr) and lightly have; default: {defaults_text('proj_last_bn')} "
        "(on digits: kNN +1.8 points at 3 epochs, the same at 8; docs/methods-peers.md)",
    )
    proj_hidden: int | None = _opt(
        None,
        f"projection head hidden width; default: {defaults_text('proj_hidden')} ((derived): "
        "the backbone's feature width, 2048 for resnet50)",
        _at_least(1),
    )
    # optimization
    epochs: int = _opt(
        10, "training epochs. Recommended: 100 (ImageNet), 500-1000 (CIFAR)", _at_least(1)
    )
    batch_size: int = _opt(
        64,
        "global batch (all GPUs together), at least 2: NT-Xent needs the other images of the "
        "batch as negatives. Recommended: 4096 (ImageNet), 512-1024 (CIFAR)",
        ((lambda v: v >= 2), ">= 2 (NT-Xent needs another image in the batch as a negative)"),
    )
    optimizer: str | None = _opt(
        None,
        f"lars | sgd | adamw; default: the method's ({METHOD_OPTIMIZERS}; moco lars on digits)",
        choices=("lars", "sgd", "adamw"),
    )
    lr: float | None = _opt(
        None,
        f"base learning rate for batch 256, scaled by batch/256; default: the method's with its "
        f"optimizer ({METHOD_LRS}; on digits, the short demo: simclr and byol 4.0, moco and "
        "swav 2.0 with lars, simsiam 0.1 with sgd), else per optimizer: lars 0.3, sgd 0.06, adamw "
        "1e-3. Recommended: simclr 0.3 (lars, ImageNet), 1.0 (CIFAR)",
        POSITIVE,
    )
    weight_decay: float | None = _opt(
        None,
        f"weight decay; default: the method's with its optimizer ({METHOD_DECAYS}; simsiam 5e-4 "
        "on digits), else per optimizer: lars 1e-6, sgd 5e-4, adamw 1e-6",
        ((lambda v: 0 <= v < math.inf), ">= 0 and finite"),
    )
    momentum: float = _opt(
        0.9, "momentum of lars and sgd. Recommended: 0.9", ((lambda v: 0 <= v < 1), "in [0, 1)")
    )
    warmup_epochs: float | None = _opt(
        None,
        f"linear warmup epochs (at most a tenth of the run); default: the method's "
        f"({METHOD_WARMUPS})",
        ((lambda v: 0 <= v < math.inf), ">= 0 and finite"),
    )
    loss_backend: str = _opt(
        "auto",
        "auto | reference | chunked | triton | cuda. Recommended: auto",
        choices=LOSS_BACKENDS,
    )
    # execution
    precision: str = _opt(
        "auto",
        "auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32. Recommended: auto",
        choices=("auto", "bf16", "fp16", "fp32"),
    )
    device: str = _opt(
        "auto",
        "auto | cpu | cuda | cuda:N. Recommended: auto",
        ((lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None),
         "one of auto, cpu, cuda, cuda:N"),
    )  # fmt: skip
    compile: bool = _opt(
        False, "torch.compile the backbones (not the heads). Recommended: on for long GPU runs"
    )
    channels_last: bool = _opt(True, "channels_last memory format. Recommended: on")
    gpus: int = _opt(
        0,
        "GPU workers on this node, one per GPU (NCCL); 0 or 1: one process. "
        "Recommended: all GPUs of the node",
        _at_least(0),
    )
    nproc: int = _opt(
        0,
        "CPU worker processes (gloo), for tests or machines without GPUs; 0 or 1: one process",
        _at_least(0),
    )
    seed: int = _opt(
        0, "random seed (each rank derives its own). Recommended: any fixed value", _at_least(0)
    )
    # bookkeeping
    out: str = _opt("runs/simclr", "run folder: config.json, log.jsonl, checkpoints")
    resume: str = _opt(
        "auto",
        "auto (continue the newest good checkpoint in --out, if any) | none | PATH. "
        "Recommended: auto",
    )
    checkpoint_every: int = _opt(
        500,
        "also checkpoint every K steps (0 = only at epoch ends). Recommended: 500",
        _at_least(0),
    )
    keep_checkpoints: int = _opt(3, "checkpoints kept in --out. Recommended: 3", _at_least(1))
    log_every: int = _opt(
        10,
        "steps between logged losses (each is a host sync). Recommended: 10-50",
        _at_least(1),
    )
    max_steps: int = _opt(0, "stop after this many steps in total (0 = no limit)", _at_least(0))
    knn_k: int = _opt(
        200, "kNN monitor neighbours (min with the labelled set). Recommended: 200", _at_least(1)
    )
    knn_temperature: float = _opt(
        0.1, "kNN vote temperature (InstDisc). Recommended: 0.1", POSITIVE
    )
    knn_max_images: int = _opt(
        10000,
        "images per kNN split at most (an evenly spaced subset). Recommended: 10000",
        _at_least(1),
    )
    knn_every: int = _opt(
        1, "epochs between kNN evaluations (0 = off). Recommended: 1", _at_least(0)
    )
    tensorboard: bool = _opt(
        False,
        "also log loss, lr, images/s and kNN as TensorBoard scalars in <out>/tensorboard (needs "
        "`pip install tensorboard`)",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, checked_value(f.name, getattr(self, f.name), f"{f.name}="))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        unknown = sorted(set(values) - FIELDS.keys())
        if unknown:
            raise UsageError(
                f"unknown config keys {unknown}: the known keys are the flags of `fastclr train` "
                "with dashes written as underscores"
            )
        return cls(**values)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _kind(name: str) -> type:
    annotation = str(FIELDS[name].type)
    for kind in (tuple, bool, int, float):
        if kind.__name__ in annotation:
            return kind
    return str


def checked_value(name: str, value: Any, origin: str) -> Any:
    """`value` for field `name` if its type, range and choices are right (an int for a float field
    becomes a float); else UsageError. origin: how the user wrote it, e.g. "--epochs " or
    "epochs: in run.yaml, "."""
    f = FIELDS[name]
    optional = "None" in str(f.type)
    if value is None and optional:
        return value
    kind, check, choices = _kind(name), f.metadata["check"], f.metadata.get("choices")
    if kind is tuple:
        return _checked_numbers(value, check, origin)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    expected = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        hint = " (quoted in the file? write it without quotes)" if isinstance(value, str) else ""
        raise UsageError(
            f"{origin}{value!r}: must be {expected[kind]}{hint}, not {type(value).__name__}"
            + (" or unset" if optional else "")
        )
    if kind is str and not value:
        raise UsageError(f"{origin}{value!r}: must not be empty")
    if choices is not None and value not in choices:
        raise UsageError(f"{origin}{value!r}: choose one of {', '.join(choices)}")
    if check is not None and not check[0](value):
        raise UsageError(f"{origin}{value!r}: must be {check[1]}")
    return value


def _checked_numbers(value: Any, check: Check, origin: str) -> tuple[float, ...]:
    """A tuple field's value: text "1.0,0.1" (a flag), or a list or tuple of numbers (a file,
    config.json, Python), as a tuple of floats each passing `check`; else UsageError."""
    if isinstance(value, (list, tuple)):
        shown = ",".join(str(v) for v in value)
    else:
        shown = value if isinstance(value, str) else repr(value)
    if isinstance(value, str):
        try:
            numbers = [float(part) for part in value.split(",")]
        except ValueError:
            numbers = None
    elif isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        numbers = [float(v) for v in value]
    else:
        numbers = None
    if not numbers:
        raise UsageError(
            f"{origin}{shown}: must be comma-separated numbers, one per global view (e.g. 1.0,0.1)"
        )
    if not all(check[0](v) for v in numbers):
        raise UsageError(f"{origin}{shown}: each value must be {check[1]}")
    return tuple(numbers)


def _yaml_loader():
    """yaml.SafeLoader that also reads YAML 1.2 floats such as 1e-3 (YAML 1.1 wants 1.0e-3 and
    would read `lr: 1e-3` as the text '1e-3')."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or JSON config file into a dict of TrainConfig fields (dashes in
    keys become underscores). Every problem is a UsageError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file; check the path") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--config {path}: cannot read it ({error})") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.load(text, Loader=_yaml_loader()) or {}  # noqa: S506 (safe loader)
        except yaml.YAMLError as error:
            where = getattr(error, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise UsageError(
                f"--config {path}: not valid YAML{at} ({problem}); fix the file"
            ) from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(
                f"--config {path}: not valid JSON at line {error.lineno}, column {error.colno} "
                f"({error.msg}); fix the file, or name it .yaml for YAML"
            ) from None
    if not isinstance(values, dict):
        raise UsageError(
            f"--config {path}: expected a mapping of settings (key: value lines), "
            f"got {type(values).__name__}"
        )
    return {str(key).replace("-", "_"): value for key, value in values.items()}


RECIPES = Path(__file__).resolve().parents[1] / "configs"  # fastclr/configs/NAME.yaml


def recipe_names() -> list[str]:
    return sorted(path.stem for path in RECIPES.glob("*.yaml"))


def find_config_file(name: str) -> Path:
    """--config NAME: a file path, or the name of a paper recipe in fastclr/configs."""
    path = Path(name).expanduser()
    if path.exists() or path.suffix in (".yaml", ".yml", ".json"):
        return path
    recipe = RECIPES / f"{name}.yaml"
    if recipe.is_file():
        return recipe
    raise UsageError(
        f"--config {name}: no such file and no recipe of that name; pass a YAML/JSON file or "
        f"one of the recipes: {', '.join(recipe_names())}"
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, plus --config. Unset flags stay off the namespace
    (argparse.SUPPRESS) so that a config file's values are not overwritten."""
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="YAML or JSON file of settings, or a paper recipe's name ("
        + ", ".join(recipe_names())
        + "; fastclr/configs); flags override it",
    )
    for f in dataclasses.fields(TrainConfig):
        meta = {k: v for k, v in f.metadata.items() if k not in ("help", "check")}
        help_text = f.metadata["help"]
        if f.default is not None:
            help_text += f" (default: {f.default})"
        flag = "--" + f.name.replace("_", "-")
        kind = _kind(f.name)
        if kind is tuple:  # text "1.0,0.1": checked_value parses it and names the flag if bad
            parser.add_argument(flag, type=str, default=argparse.SUPPRESS, help=help_text, **meta)
        elif kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                help=help_text,
            )  # fmt: skip
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text, **meta)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the --config file, then the flags given on the command line; every value
    checked where it came from."""
    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    if config_file:
        config_file = find_config_file(config_file)
        for name, value in load_config_file(config_file).items():
            if name not in FIELDS:
                TrainConfig.from_dict({name: value})  # raises: names the unknown key
            values[name] = checked_value(name, value, f"{name}: in {config_file}, ")
    for name, value in vars(args).items():
        if name in FIELDS:
            values[name] = checked_value(name, value, f"--{name.replace('_', '-')} ")
    return TrainConfig.from_dict(values)


def check_tensorboard(wanted: bool) -> None:
    """UsageError if --tensorboard is asked for and tensorboard is not installed."""
    import importlib.util

    if wanted and importlib.util.find_spec("tensorboard") is None:
        raise UsageError(
            "--tensorboard needs the tensorboard package: pip install tensorboard (or "
            "'fastclr[tensorboard]'), or leave --tensorboard off (log.jsonl has every figure)"
        )


def resolve_config(
    cfg: TrainConfig, restart_count: int | None = None
) -> tuple[TrainConfig, list[str]]:
    """Fill the data-, optimizer- and launch-dependent settings so the saved config says what ran.

    Returns (resolved config, notes): each note says how a default was derived from the data, for
    the run to print. Idempotent: resolving a resolved config changes nothing and notes nothing.
    restart_count: how often the worker group was restarted (default: TORCHELASTIC_RESTART_COUNT).
    A restarted group continues from the newest checkpoint in --out whatever --resume said (none,
    or the PATH the first attempt started from); with no checkpoint there yet it keeps --resume.
    """
    from fastclr.checkpoint import list_checkpoints
    from fastclr.data import AugmentConfig
    from fastclr.data.sources import default_image_size_choice
    from fastclr.model import resolve_stem
    from fastclr.optim import OPTIMIZER_DEFAULTS

    check_device(cfg.device)
    check_data(cfg.data)
    check_tensorboard(cfg.tensorboard)
    check_method_settings(cfg)
    check_per_view_settings(cfg)
    values, notes = cfg.to_dict(), []
    method = DEFAULTS[cfg.method]
    digits = DIGITS_METHOD_PRESET.get(cfg.method, {}) if cfg.data == "digits" else {}
    for name, default in method.settings.items():
        if values[name] is None:
            values[name] = digits.get(name, default)
    optimizer = values["optimizer"] = cfg.optimizer or digits.get("optimizer") or method.optimizer
    if optimizer == method.optimizer:
        base_lr, weight_decay = method.lr, method.weight_decay
    else:
        base_lr, weight_decay = OPTIMIZER_DEFAULTS[optimizer]
    if values["warmup_epochs"] is None:
        values["warmup_epochs"] = float(method.warmup_epochs)
    if cfg.data == "digits":
        preset = {**DIGITS_PRESET, **digits}
        values["crop_scale"] = cfg.crop_scale or preset["crop_scale"]
        values["image_size"] = cfg.image_size or preset["image_size"]
        if cfg.flip_p is None and "flip_p" in preset:
            values["flip_p"] = preset["flip_p"]
        if optimizer == digits.get("optimizer", method.optimizer):
            base_lr = digits.get("lr", base_lr)
            weight_decay = digits.get("weight_decay", weight_decay)
    if values["image_size"] is None:
        values["image_size"], note = default_image_size_choice(cfg.data)
        if note:
            notes.append(f"{note}; pass --image-size to choose another")
    small = not AugmentConfig.for_image_size(values["image_size"]).is_large
    if cfg.view_blur_p is None and values["view_blur_p"] is not None and small:
        # The method's per-view blur follows the data's: none for small images (as the papers'
        # CIFAR runs); its solarization stays asymmetric at every size.
        values["view_blur_p"] = (0.0,) * cfg.views
    values["stem"] = resolve_stem(cfg.stem, values["image_size"], cfg.arch)
    values["lr"] = base_lr if cfg.lr is None else cfg.lr
    values["weight_decay"] = weight_decay if cfg.weight_decay is None else cfg.weight_decay
    if restart_count is None:
        restart_count = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restart_count > 0 and cfg.resume != "auto" and list_checkpoints(cfg.out):
        values["resume"] = "auto"
        notes.append(
            f"restart {restart_count} of the worker group: resuming from the newest checkpoint "
            f"in {cfg.out} (--resume was {cfg.resume})"
        )
    return TrainConfig(**values), notes


def check_method_settings(cfg: TrainConfig) -> None:
    """UsageError for a setting given that --method does not read (never silently dropped)."""
    for name in METHOD_FIELDS:
        value = getattr(cfg, name)
        if value is not None and name not in DEFAULTS[cfg.method].settings:
            flag = "--" + name.replace("_", "-")
            users = ", ".join(users_of(name))
            raise UsageError(
                f"{flag} {value}: --method {cfg.method} does not use it (it is a setting of "
                f"{users}); drop {flag}, or pass --method {users_of(name)[0]}"
            )
    if cfg.views != 2 and cfg.method not in ("simclr", "swav"):
        raise UsageError(
            f"--views {cfg.views}: --method {cfg.method} trains on exactly 2 views; drop --views "
            "(multi-view training: --method simclr or swav)"
        )
    if cfg.local_views and cfg.method != "swav":
        raise UsageError(
            f"--local-views {cfg.local_views}: only --method swav uses multi-crop local views; "
            "drop --local-views"
        )


def check_per_view_settings(cfg: TrainConfig) -> None:
    """UsageError for per-view probabilities not one per global view."""
    for name in PER_VIEW_FIELDS:
        values = getattr(cfg, name)
        if values is not None and len(values) != cfg.views:
            flag = "--" + name.replace("_", "-")
            raise UsageError(
                f"{flag} {','.join(f'{v:g}' for v in values)}: {len(values)} value(s) for "
                f"--views {cfg.views}; pass {cfg.views} comma-separated probabilities, one per "
                "global view"
            )


def check_data(data: str) -> None:
    """UsageError if --data is neither a built-in dataset nor an existing folder."""
    builtin = data in ("digits", "skimage", "synthetic") or data.startswith(
        ("synthetic:", "cifar10:")
    )
    if not builtin and not Path(data).expanduser().is_dir():
        raise UsageError(
            f"--data {data}: no such folder; pass an image folder (PATH/train/<class>/*.jpg or "
            "PATH/<class>/*.jpg) or digits | synthetic[:N] | skimage | cifar10:PATH"
        )


def check_device(device: str) -> None:
    """UsageError if --device names a GPU this machine does not have."""
    if not device.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if count == 0:
        raise UsageError(
            f"--device {device}: no CUDA GPU is visible here (torch.cuda.is_available() is "
            "False); use --device cpu, or --device auto to take a GPU when there is one"
        )
    if index >= count:
        raise UsageError(f"--device {device}: this machine has {count} GPU(s), cuda:0..{count - 1}")
