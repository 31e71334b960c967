"""`fastclr export --checkpoint C`: the backbone as a state_dict that plain torchvision loads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LOAD_RECIPE = """\
load it with torchvision alone:
    import torch, torchvision
    model = torchvision.models.{arch}()
{stem_lines}    model.fc = torch.nn.Identity()  # features h [B, {width}]; or keep a new fc to fine-tune
    model.load_state_dict(torch.load("{path}", weights_only=True))"""

CIFAR_STEM_LINES = """\
    model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write the trained backbone as a torchvision ResNet state_dict"
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a run folder (--out of fastclr train: its newest readable checkpoint) or one of "
        "its checkpoint-*.pt files",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="file to write (default: backbone-<arch>.pt next to the checkpoint)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastclr.checkpoint import atomic_save
    from fastclr.eval.backbone import load_trained_model, torchvision_state_dict

    model, config, checkpoint = load_trained_model(args.checkpoint)
    if checkpoint != Path(args.checkpoint):
        print(f"exporting {checkpoint}", file=sys.stderr)
    output = Path(args.output or checkpoint.with_name(f"backbone-{config['arch']}.pt"))
    atomic_save(torchvision_state_dict(model.backbone), output, flag="--output")
    print(f"wrote {output} ({config['arch']}, {config['stem']} stem)")
    print(
        LOAD_RECIPE.format(
            arch=config["arch"],
            stem_lines=CIFAR_STEM_LINES if config["stem"] == "cifar" else "",
            width=model.feature_dim,
            path=output,
        )
    )
    return 0
