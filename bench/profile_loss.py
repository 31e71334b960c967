"""Where one loss call's time goes: host (Python, dispatch, launches) against device (kernels).

    python bench/profile_loss.py --rows 4096 --dim 128 --dtype bfloat16 --impls triton,cuda,reference

Per implementation, forward+backward on the benchmarks' inputs (fastclr/bench/impls.py):
  wall     median seconds of one call with a synchronize after it (what the benchmarks time);
  host     median seconds the host spends issuing one call, no synchronize: when host > kernels,
           the GPU waits on Python and the call is host-bound;
  kernels  device seconds of its kernels per call (torch.profiler), and launches per call;
then the profiler's top operators by host time. Not a benchmark (no correctness check, few calls):
a diagnosis of the small sizes, where the fused backends lost to the reference on an H200.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from fastclr.bench import impls


def median_seconds(call, calls: int, sync: bool) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    torch.cuda.synchronize()
    return statistics.median(times)


def kernel_time(call, calls: int) -> tuple[float, float, str]:
    """(device seconds per call, kernel launches per call, top-operator table)."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    device_s = sum(e.device_time_total for e in kernels) * 1e-6 / calls
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    return device_s, len(kernels) / calls, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096, help="2N (default 4096)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dtype", choices=sorted(impls.DTYPES), default="bfloat16")
    parser.add_argument("--impls", default="triton,cuda,reference")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    device = torch.device("cuda")
    z1, z2 = impls.make_projections(args.rows, args.dim, impls.DTYPES[args.dtype], device, seed=0)
    rows, tables = [], []
    for name in args.impls.split(","):
        step = impls.loss_step(impls.build_loss(name), z1, z2, "fwd+bwd")
        median_seconds(step, 10, sync=True)  # warm-up: compile, autotune, allocator
        wall = median_seconds(step, args.calls, sync=True)
        host = median_seconds(step, args.calls, sync=False)
        device_s, launches, table = kernel_time(step, 10)
        rows.append({"impl": name, "wall_s": wall, "host_s": host, "kernels_s": device_s,
                     "launches": launches})  # fmt: skip
        tables.append(f"== {name}: top operators by host time (10 calls)\n{table}")
    print("\n".join(tables))
    print(f"\n2N={args.rows} D={args.dim} {args.dtype}, fwd+bwd, {torch.cuda.get_device_name()}")
    print(f"{'impl':<12}{'wall ms':>10}{'host ms':>10}{'kernels ms':>12}{'launches':>10}")
    for r in rows:
        print(
            f"{r['impl']:<12}{r['wall_s'] * 1e3:>10.3f}{r['host_s'] * 1e3:>10.3f}"
            f"{r['kernels_s'] * 1e3:>12.3f}{r['launches']:>10.1f}"
        )
    if args.out:
        args.out.write_text(json.dumps({"rows": args.rows, "dim": args.dim, "dtype": args.dtype,
                                        "results": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
