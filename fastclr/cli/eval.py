"""`fastclr eval knn|linear|finetune --checkpoint C [--data D]`: top-1 of a trained backbone, frozen
(kNN, linear probe) or fine-tuned with labels against the same network from scratch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fastclr.cli.finetune import DEFAULTS as FINETUNE_DEFAULTS
from fastclr.cli.finetune import add_finetune_parser, run_finetune
from fastclr.errors import UsageError

if TYPE_CHECKING:
    import torch

RECOMMENDED = {"k": 200, "temperature": 0.1, "epochs": 100, "lr": 1e-2}
RECOMMENDED_FINETUNE = {
    **RECOMMENDED,
    "epochs": FINETUNE_DEFAULTS["epochs"],
    "lr": FINETUNE_DEFAULTS["lr"],
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a trained backbone: weighted kNN, a linear probe, or fine-tuning vs scratch",
    )
    modes = parser.add_subparsers(dest="eval_mode", metavar="MODE", required=True)
    knn = modes.add_parser("knn", help="weighted kNN (cosine, InstDisc voting) on frozen features")
    linear = modes.add_parser("linear", help="logistic-regression probe on frozen features")
    finetune = add_finetune_parser(modes)
    for sub in (knn, linear, finetune):
        sub.add_argument(
            "--checkpoint",
            required=True,
            help="a run folder (--out of fastclr train: its newest readable checkpoint) or one "
            "of its checkpoint-*.pt files",
        )
        sub.add_argument(
            "--data",
            default=None,
            help="labelled data with train and val splits (default: the run's --data)",
        )
        sub.add_argument(
            "--image-size", type=int, default=None, help="side in pixels (default: the run's)"
        )
        sub.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
        sub.add_argument(
            "--batch-size",
            type=int,
            default=512,
            help="feature extraction batch (default: 512; finetune: the training batch, 128)",
        )
        sub.add_argument(
            "--max-images",
            type=int,
            default=None,
            help="images per split at most, an evenly spaced subset (default: all)",
        )
    knn.add_argument("--k", type=int, default=200, help="neighbours. Recommended: 200 (default)")
    knn.add_argument(
        "--temperature",
        type=float,
        default=0.1,
        help="vote temperature. Recommended: 0.1 (default)",
    )
    linear.add_argument(
        "--epochs",
        type=int,
        default=100,
        help="probe epochs over the features. Recommended: 100 (default)",
    )
    linear.add_argument("--lr", type=float, default=1e-2, help="AdamW lr (default: 1e-2)")
    linear.add_argument(
        "--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default: 1e-4)"
    )
    parser.set_defaults(func=run)


def resolve_device(name: str) -> torch.device:
    """--device auto | cpu | cuda | cuda:N as a torch.device; UsageError if it cannot run here."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r} is not a device here: pass auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"--device {name}: torch sees no CUDA GPU on this machine: pass --device cpu (or auto)"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
            f"numbered from 0: pass --device cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
        )
    return device


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse values that would run but mean nothing (k 0 scored as 10%, a probe of 0 epochs)."""
    at_least_one = ["batch_size", "max_images", "image_size"]
    at_least_one += ["k"] if args.eval_mode == "knn" else ["epochs"]
    above_zero = "temperature" if args.eval_mode == "knn" else "lr"
    values = {name: getattr(args, name) for name in at_least_one}
    bad = [(name, "at least 1") for name, v in values.items() if v is not None and v < 1]
    bad += [(above_zero, "> 0")] if not getattr(args, above_zero) > 0 else []
    if args.eval_mode == "linear" and not args.weight_decay >= 0:
        bad.append(("weight_decay", ">= 0"))
    if bad:
        name, bound = bad[0]
        recommended = RECOMMENDED_FINETUNE if args.eval_mode == "finetune" else RECOMMENDED
        hint = f"; recommended: {recommended[name]}" if name in recommended else ""
        flag = "--" + name.replace("_", "-")
        raise UsageError(f"{flag} must be {bound}, got {getattr(args, name)}{hint}")


def load_split(data: str, split: str, image_size: int, max_images: int | None):
    """(images [M, 3, S, S], labels [M]) of a labelled split; UsageError naming --data if not."""
    from fastclr.data import load_eval_split

    try:
        images, labels = load_eval_split(
            data, image_size=image_size, split=split, max_images=max_images
        )
    except ValueError as error:  # the data layer's messages name the path and the fix
        raise UsageError(f"--data {data}: {error}") from error
    if (labels < 0).any():
        raise UsageError(
            f"--data {data} has unlabelled images in its {split} split: evaluation needs class "
            "folders (PATH/train/<class>/*, PATH/val/<class>/*)"
        )
    return images, labels


def run(args: argparse.Namespace) -> int:
    check_arguments(args)  # before the heavy imports: a bad value fails at once

    import torch

    from fastclr.eval import extract_features, knn_top1, linear_probe_top1
    from fastclr.eval.backbone import load_trained_model

    device = resolve_device(args.device)
    model, config, checkpoint = load_trained_model(args.checkpoint, device)
    if checkpoint != Path(args.checkpoint):
        print(f"evaluating {checkpoint}", file=sys.stderr)
    data = args.data or config["data"]
    size = args.image_size or config["image_size"]
    if args.eval_mode == "finetune":
        from fastclr.eval.finetune import LabelledSplits

        train, val = (load_split(data, split, size, args.max_images) for split in ("train", "val"))
        return run_finetune(args, model, config, LabelledSplits(*train, *val), device, checkpoint)
    model = model.to(memory_format=torch.channels_last)
    amp = torch.bfloat16 if device.type == "cuda" else None
    splits = {}
    for split in ("train", "val"):
        images, labels = load_split(data, split, size, args.max_images)
        features = extract_features(
            model.backbone, images, device=device, batch_size=args.batch_size, autocast_dtype=amp
        )
        splits[split] = (features, labels)
    (train_x, train_y), (val_x, val_y) = splits["train"], splits["val"]
    if args.eval_mode == "knn":
        top1 = knn_top1(train_x, train_y, val_x, val_y, k=args.k, temperature=args.temperature)
        what = f"kNN (k={min(args.k, len(train_y))}, T={args.temperature})"
    else:
        top1 = linear_probe_top1(
            train_x,
            train_y,
            val_x,
            val_y,
            epochs=args.epochs,
            lr=args.lr,
            weight_decay=args.weight_decay,
        )
        what = f"linear probe ({args.epochs} epochs)"
    print(
        f"{what} top-1 on {data} val: {top1:.2f}% "
        f"({len(train_y)} train / {len(val_y)} val images, {config['arch']} at {size}px)"
    )
    return 0
