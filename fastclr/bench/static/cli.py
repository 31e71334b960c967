"""`fastclr bench static`: arguments and the run (registered by fastclr/cli/bench.py)."""

import argparse
import sys
from pathlib import Path

from fastclr.errors import UsageError

DEFAULT_OUT = Path("bench/results/static")


def _ints(name: str, text: str, allowed: tuple[int, ...] | None = None) -> tuple[int, ...]:
    try:
        values = tuple(int(part.removeprefix("sm_").removeprefix("sm")) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--{name} takes comma-separated integers, got {text!r}") from None
    if allowed is not None and any(v not in allowed for v in values):
        raise UsageError(f"--{name} {text}: choose from {','.join(map(str, allowed))}")
    return values


def _names(name: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(text.split(","))
    bad = [v for v in values if v not in allowed]
    if bad:
        raise UsageError(f"--{name} {','.join(bad)}: choose from {','.join(allowed)}")
    return values


def add_parser(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "static",
        help="compile the Triton kernels (and the CUDA extension) for sm_80/86/89/90 without a GPU: "
        "registers, spills, shared memory, occupancy, hot-loop SASS per score element, ESTIMATED "
        "times; writes bench/results/static/<triton version>/static.{json,md}",
    )
    parser.add_argument("--arch", default="80,86,89,90", help="compute capabilities (default: all)")
    parser.add_argument(
        "--kernel",
        default="forward,backward,weights",
        help="default: the NT-Xent forward, backward and the backward's large-D weights kernel "
        "(D >= 512); family_forward,family_backward: the loss-family kernels (SupCon case)",
    )
    parser.add_argument(
        "--precision",
        default="bf16,fp16,fp32-tf32,fp32-tf32x3",
        help="operand precisions (default: all four)",
    )
    parser.add_argument("--dim", default="64,128,256,2048", help="feature dims D (default: all)")
    parser.add_argument("--rows", default="8192,65536", help="batch sizes 2N (default: both)")
    parser.add_argument(
        "--all-configs",
        action="store_true",
        help="also compile the configs the shared-memory prune drops (shows why)",
    )
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA extension (nvcc)")
    parser.add_argument(
        "--jobs", type=int, default=2, help="compile processes (default 2: one per CI core)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for static.json/static.md (default: bench/results/static/<triton version>, "
        "or its partial/ subfolder when the selection is not the full one)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="compile cache (default: $FASTCLR_STATIC_CACHE or ~/.cache/fastclr/static)",
    )


def run(args: argparse.Namespace) -> int:
    from fastclr.bench.static import analysis, render
    from fastclr.bench.static.arches import ARCHES
    from fastclr.bench.static.cases import ALL_KERNELS, PRECISIONS, Selection

    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    dims = _ints("dim", args.dim)
    rows = _ints("rows", args.rows)
    if any(d < 1 for d in dims) or any(r < 2 or r % 2 for r in rows):
        raise UsageError("--dim needs D >= 1 and --rows an even 2N >= 2")
    selection = Selection(
        arches=_ints("arch", args.arch, tuple(ARCHES)),
        kernels=_names("kernel", args.kernel, ALL_KERNELS),
        precisions=_names("precision", args.precision, tuple(PRECISIONS)),
        dims=dims,
        rows=rows,
        all_configs=args.all_configs,
    )
    import triton

    document = analysis.run(
        selection,
        jobs=args.jobs,
        cache_dir=args.cache_dir,
        with_cuda=not args.no_cuda,
        log=lambda text: print(text, file=sys.stderr, flush=True),
    )
    out = args.out or DEFAULT_OUT / triton.__version__
    if args.out is None and selection != Selection():
        out = out / "partial"  # the committed full results stay whole
    json_path, md_path = render.write(document, out)
    print("\n".join(render.summary_lines(document)))
    print("\n".join(render.headline_lines(document)))
    print(f"wrote {json_path} and {md_path} ({document['env']['wall_s']} s)")
    return 0
