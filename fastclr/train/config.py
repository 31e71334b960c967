"""TrainConfig: every setting of `fastclr train`, as one dataclass.

--gpus and --nproc are fields (a config file may set them); the other multi-node flags (--nnodes,
--rdzv-endpoint, --max-restarts) belong to the launcher, fastclr.distributed.launch.

Precedence, lowest first: the defaults below < a --config YAML/JSON file < command-line flags.
The resolved config is written to <out>/config.json and stored in every checkpoint. The defaults
train on scikit-learn's digits on a 2-core CPU in a few minutes; each field's help gives the value
recommended for real runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _opt(default: Any, help: str, **argparse_kwargs: Any) -> Any:  # noqa: A002
    return field(default=default, metadata={"help": help, **argparse_kwargs})


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
        "training side in pixels; default: 8 for digits (its 8x8 originals), else the data's "
        "own (32 CIFAR/synthetic, 224 folders). Recommended: 224 for ImageNet, 32 for CIFAR",
    )
    loader: str = _opt(
        "auto",
        "augmentation: auto (DALI if installed, on the GPU for a CUDA run) | dali | dali-gpu | "
        "dali-cpu | torch. Recommended: auto",
        choices=("auto", "dali", "dali-gpu", "dali-cpu", "torch"),
    )
    crop_scale: float | None = _opt(
        None,
        "smallest random-resized-crop area, as a fraction of the image; default: 0.25 for "
        "digits (short demo runs), else 0.08. Recommended: 0.08 (SimCLR) for long runs",
    )
    workers: int | None = _opt(
        None, "data loader worker processes per rank; default: the loader's choice"
    )
    # model
    arch: str = _opt(
        "resnet18",
        "backbone: resnet18 | resnet50. Recommended: resnet50",
        choices=("resnet18", "resnet50"),
    )
    stem: str = _opt(
        "auto",
        "first layer: auto (cifar for <= 64 px) | cifar | imagenet. Recommended: auto",
        choices=("auto", "cifar", "imagenet"),
    )
    proj_dim: int = _opt(128, "projection output width. Recommended: 128")
    # optimization
    epochs: int = _opt(10, "training epochs. Recommended: 100 (ImageNet), 500-1000 (CIFAR)")
    batch_size: int = _opt(
        64, "global batch (all GPUs together). Recommended: 4096 (ImageNet), 512-1024 (CIFAR)"
    )
    optimizer: str = _opt(
        "lars", "lars | sgd | adamw. Recommended: lars", choices=("lars", "sgd", "adamw")
    )
    lr: float | None = _opt(
        None,
        "base learning rate for batch 256, scaled by batch/256; default per optimizer: "
        "lars 0.3 (4.0 for the short digits demo), sgd 0.06, adamw 1e-3. "
        "Recommended: 0.3 (lars, ImageNet), 1.0 (lars, CIFAR)",
    )
    weight_decay: float | None = _opt(
        None, "weight decay; default per optimizer: lars 1e-6, sgd 5e-4, adamw 1e-6"
    )
    momentum: float = _opt(0.9, "momentum of lars and sgd. Recommended: 0.9")
    warmup_epochs: float = _opt(
        10.0, "linear warmup epochs (at most a tenth of the run). Recommended: 10"
    )
    temperature: float = _opt(
        0.2, "NT-Xent temperature. Recommended: 0.1 (ImageNet, batch >= 1024), 0.2-0.5 (CIFAR)"
    )
    loss_backend: str = _opt(
        "auto", "auto | reference | chunked | triton | cuda. Recommended: auto"
    )
    # execution
    precision: str = _opt(
        "auto",
        "auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32. Recommended: auto",
        choices=("auto", "bf16", "fp16", "fp32"),
    )
    device: str = _opt("auto", "auto | cpu | cuda | cuda:N. Recommended: auto")
    compile: bool = _opt(False, "torch.compile the model. Recommended: on for long GPU runs")
    channels_last: bool = _opt(True, "channels_last memory format. Recommended: on")
    gpus: int = _opt(
        0,
        "GPU workers on this node, one per GPU (NCCL); 0 or 1: one process. "
        "Recommended: all GPUs of the node",
    )
    nproc: int = _opt(
        0, "CPU worker processes (gloo), for tests or machines without GPUs; 0 or 1: one process"
    )
    seed: int = _opt(0, "random seed (each rank derives its own). Recommended: any fixed value")
    # bookkeeping
    out: str = _opt("runs/simclr", "run folder: config.json, log.jsonl, checkpoints")
    resume: str = _opt(
        "auto",
        "auto (continue the newest good checkpoint in --out, if any) | none | PATH. "
        "Recommended: auto",
    )
    checkpoint_every: int = _opt(
        500, "also checkpoint every K steps (0 = only at epoch ends). Recommended: 500"
    )
    keep_checkpoints: int = _opt(3, "checkpoints kept in --out. Recommended: 3")
    log_every: int = _opt(
        10, "steps between logged losses (each is a host sync). Recommended: 10-50"
    )
    max_steps: int = _opt(0, "stop after this many steps in total (0 = no limit)")
    knn_k: int = _opt(200, "kNN monitor neighbours (min with the labelled set). Recommended: 200")
    knn_temperature: float = _opt(0.1, "kNN vote temperature (InstDisc). Recommended: 0.1")
    knn_max_images: int = _opt(
        10000, "images per kNN split at most (an evenly spaced subset). Recommended: 10000"
    )
    knn_every: int = _opt(1, "epochs between kNN evaluations (0 = off). Recommended: 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown config keys {unknown}: the known keys are the flags of `fastclr train` "
                "with dashes written as underscores"
            )
        return cls(**values)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or JSON config file into a dict of TrainConfig fields."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of settings, got {type(values)}")
    return {key.replace("-", "_"): value for key, value in values.items()}


# Fields whose flags the launcher's parser defines (fastclr.distributed.launch.add_launch_arguments).
LAUNCHER_FLAGS = ("gpus", "nproc")


def _flag_type(annotation: str):
    if "bool" in annotation:
        return None
    if "int" in annotation:
        return int
    if "float" in annotation:
        return float
    return str


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field except LAUNCHER_FLAGS, plus --config. Unset flags stay off
    the namespace (argparse.SUPPRESS) so that a config file's values are not overwritten."""
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="YAML or JSON file of settings; flags override it",
    )
    for f in dataclasses.fields(TrainConfig):
        if f.name in LAUNCHER_FLAGS:
            continue
        meta = dict(f.metadata)
        help_text = meta.pop("help")
        if f.default is not None:
            help_text += f" (default: {f.default})"
        flag = "--" + f.name.replace("_", "-")
        kind = _flag_type(str(f.type))
        if kind is None:
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text, **meta)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the --config file, then the flags given on the command line."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    # None: a launcher flag left unset (the launcher's parser defaults them to None).
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return TrainConfig.from_dict(values)
