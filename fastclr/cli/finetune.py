"""`fastclr eval finetune --checkpoint C [--data D]`: the pretrained backbone fine-tuned with labels,
against the same network from random initialization; curves as JSON lines and one PNG."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULTS = {"epochs": 10, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "min_crop_scale": 0.5}


def add_finetune_parser(modes: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `finetune` to the `fastclr eval` modes; the shared flags (--checkpoint, --data, ...)
    are added by fastclr/cli/eval.py."""
    parser = modes.add_parser(
        "finetune",
        help="fine-tune backbone + linear head with labels, against the same network from scratch",
    )
    parser.add_argument(
        "--epochs", type=int, default=DEFAULTS["epochs"], help="epochs. Recommended: 10 (default)"
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=DEFAULTS["lr"],
        help="SGD lr at batch 256, scaled by batch/256, cosine decay. Recommended: 0.1 (default)",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=DEFAULTS["weight_decay"],
        help="Recommended: 5e-4 (default)",
    )
    parser.add_argument(
        "--min-crop-scale",
        type=float,
        default=DEFAULTS["min_crop_scale"],
        help="smallest random crop area, fraction of the image. Recommended: 0.5 (default)",
    )
    parser.add_argument("--no-flip", action="store_true", help="no horizontal flips (e.g. digits)")
    parser.add_argument(
        "--no-scratch", action="store_true", help="skip the from-scratch baseline run"
    )
    parser.add_argument("--seed", type=int, default=0, help="data order, crops and head init")
    parser.add_argument(
        "--out",
        default=None,
        help="folder for finetune.jsonl and finetune.png (default: <checkpoint's run>/finetune)",
    )
    # The shared --batch-size (added by eval.py) is the training batch here. Recommended: 128.
    parser.set_defaults(batch_size=DEFAULTS["batch_size"])
    return parser


def run_finetune(
    args: argparse.Namespace, model, config: dict, splits, device, checkpoint: Path
) -> int:
    """Fine-tune `model.backbone` (and a fresh copy unless --no-scratch) on `splits`; print a table."""
    import torch

    from fastclr.backbones import build_backbone
    from fastclr.eval.finetune import FinetuneConfig, finetune
    from fastclr.plots import plot_finetune_curves

    cfg = FinetuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        base_lr=args.lr,
        weight_decay=args.weight_decay,
        min_crop_scale=args.min_crop_scale,
        flip=not args.no_flip,
        seed=args.seed,
    )
    splits.check(args.data or config["data"])
    runs = {"pretrained": model.backbone}
    if not args.no_scratch:
        torch.manual_seed(args.seed)  # the scratch network's init is part of the experiment
        scratch, _ = build_backbone(config["arch"], config["stem"], config.get("image_size"))
        runs["scratch"] = scratch
    out = Path(args.out) if args.out else checkpoint.parent / "finetune"
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for name, backbone in runs.items():
        print(f"fine-tuning {name} {config['arch']} for {cfg.epochs} epochs ...", flush=True)
        records += finetune(backbone, model.feature_dim, splits, cfg, device=device, run=name)
    with open(out / "finetune.jsonl", "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)
    title = f"fine-tune vs scratch: {config['arch']} on {args.data or config['data']}"
    png = plot_finetune_curves(records, out / "finetune.png", title)
    print(format_table(records))
    print(f"curves: {out / 'finetune.jsonl'}, {png}")
    return 0


def format_table(records: list[dict]) -> str:
    """Final-epoch train/val loss and accuracy of each run, one row each."""
    last = {}
    for record in records:
        last[record["run"]] = record
    lines = [f"{'run':<11} {'epochs':>6} {'train loss':>10} {'train top-1':>11} "
             f"{'val loss':>9} {'val top-1':>9}"]  # fmt: skip
    for run, r in last.items():
        lines.append(
            f"{run:<11} {r['epoch']:>6} {r['train_loss']:>10.4f} {r['train_acc']:>10.2f}% "
            f"{r['val_loss']:>9.4f} {r['val_acc']:>8.2f}%"
        )
    return "\n".join(lines)
