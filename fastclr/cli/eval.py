"""`fastclr eval knn|linear|finetune --checkpoint C [--data D]`: top-1 of a trained backbone, frozen
(kNN, linear probe) or fine-tuned with labels against the same network from scratch."""

from __future__ import annotations

import argparse
import sys

from fastclr.cli.finetune import add_finetune_parser, run_finetune


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a trained backbone: weighted kNN or a linear probe (top-1)"
    )
    modes = parser.add_subparsers(dest="eval_mode", metavar="MODE", required=True)
    knn = modes.add_parser("knn", help="weighted kNN (cosine, InstDisc voting) on frozen features")
    linear = modes.add_parser("linear", help="logistic-regression probe on frozen features")
    finetune = add_finetune_parser(modes)
    for sub in (knn, linear, finetune):
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

    from fastclr.data import load_eval_split
    from fastclr.eval import extract_features, knn_top1, linear_probe_top1
    from fastclr.eval.backbone import load_trained_model
    from fastclr.train.checkpoint import CorruptCheckpointError

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
    if args.eval_mode == "finetune":
        from fastclr.eval.finetune import LabelledSplits

        (train_x, train_y), (val_x, val_y) = (
            load_eval_split(data, image_size=size, split=split, max_images=args.max_images)
            for split in ("train", "val")
        )
        args.checkpoint_path = args.checkpoint
        splits = LabelledSplits(train_x, train_y, val_x, val_y)
        return run_finetune(args, model, config, splits, device)
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
