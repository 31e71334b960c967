"""`fastclr eval knn|linear --checkpoint C [--data D]`: top-1 of a trained, frozen backbone."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a trained backbone: weighted kNN or a linear probe (top-1)"
    )
    modes = parser.add_subparsers(dest="eval_mode", metavar="MODE", required=True)
    knn = modes.add_parser("knn", help="weighted kNN (cosine, InstDisc voting) on frozen features")
    linear = modes.add_parser("linear", help="logistic-regression probe on frozen features")
    for sub in (knn, linear):
        sub.add_argument("--checkpoint", required=True, help="a checkpoint-*.pt of fastclr train")
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
            "--batch-size", type=int, default=512, help="feature extraction batch (default: 512)"
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


def run(args: argparse.Namespace) -> int:
    import torch

    from fastclr.checkpoint import CorruptCheckpointError
    from fastclr.data import load_eval_split
    from fastclr.eval import extract_features, knn_top1, linear_probe_top1
    from fastclr.eval.backbone import load_trained_model

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    try:
        model, config = load_trained_model(args.checkpoint, device)
    except (FileNotFoundError, CorruptCheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    data = args.data or config["data"]
    size = args.image_size or config["image_size"]
    splits = {}
    for split in ("train", "val"):
        images, labels = load_eval_split(
            data, image_size=size, split=split, max_images=args.max_images
        )
        if (labels < 0).any():
            print(f"error: {data} has unlabelled images in its {split} split", file=sys.stderr)
            return 2
        model = model.to(memory_format=torch.channels_last)
        amp = torch.bfloat16 if device.type == "cuda" else None
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
