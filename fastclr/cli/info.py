"""`fastclr info`: versions, the device, and which loss backends are usable here (and why not)."""

import argparse
import platform


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="print versions, the GPU if any, and which loss backends are usable here"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from fastclr import __version__
    from fastclr.bench.environment import package_version
    from fastclr.ops.backends import member_report, usability_report

    def version(name: str) -> str:
        return package_version(name) or "not installed"

    print(f"fastclr       {__version__}")
    print(f"python        {platform.python_version()}")
    print(f"torch         {torch.__version__} (CUDA build {torch.version.cuda or 'none'})")
    print(f"torchvision   {version('torchvision')}")
    print(f"triton        {version('triton')}")
    print_dali(package_version)
    if torch.cuda.is_available():
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(device)
        print(f"device        {name} (driver CUDA {torch.version.cuda})")
    else:
        device = torch.device("cpu")
        print("device        cpu (no CUDA device visible)")
    print(f"loss backends for {device.type} tensors:")
    for dtype in (torch.float32, torch.bfloat16):
        for name, reason in usability_report(device, dtype).items():
            status = "usable" if reason is None else f"unavailable: {reason}"
            print(f"  {name:<10} {str(dtype).removeprefix('torch.'):<9} {status}")
    print("loss family members per backend (others fall back to chunked with backend='auto'):")
    for name, members in member_report().items():
        have = [member for member, reason in members.items() if reason is None]
        print(f"  {name:<10} {', '.join(have) or 'none'}")
    return 0


def print_dali(package_version) -> None:
    """Which DALI wheels are installed (CUDA 13 and/or 12 builds) and whether DALI loads here."""
    from fastclr.data.dali_pipeline import (
        DALI_INSTALL_HINT,
        DALI_WHEELS,
        dali_unavailable_reason,
    )

    installed = {name: package_version(name) for name in DALI_WHEELS}
    installed = {name: v for name, v in installed.items() if v is not None}
    if not installed:
        print(f"nvidia-dali   not installed ({DALI_INSTALL_HINT})")
        return
    reason = dali_unavailable_reason()
    loads = "loads" if reason is None else f"does not load: {reason}"
    for name, installed_version in installed.items():
        drivers, extra = DALI_WHEELS[name]
        print(f"nvidia-dali   {installed_version} ({name}, for {drivers}; {extra}); {loads}")
    if len(installed) > 1:
        print("              both DALI builds are installed and share one module: uninstall one")
