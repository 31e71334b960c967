"""Markdown tables of a static-analysis result document, for bench/results/static/<triton>/ and for
`fastclr bench report`."""

import json
from pathlib import Path

HEADLINE = {"rows": 8192, "dim": 128, "precision": "bf16", "cc": 90}
ESTIMATE_NOTE = (
    "Times are ESTIMATES of the roofline model in docs/static-analysis.md (±30-50%), computed from "
    "the compiled code, never measured on a GPU; everything else is read from the compiled code."
)


def pick_order(row: dict) -> tuple[float, float]:
    """Sort key of the model's pick: serialized H100 estimate, then instructions per element."""
    return row["estimate"]["H100 SXM"]["serialized_us"], row["instructions_per_element"]


def _compiles(env: dict) -> str:
    stats = env.get("compiles", {})
    return f"{stats.get('total', '?')} Triton compiles, {stats.get('cached', '?')} from the cache"


def _kib(value: int) -> str:
    return f"{value / 1024:.1f}"


def _occ(row: dict) -> str:
    if "occupancy" not in row:
        return ""
    return f"{100 * row['occupancy']:.1f}% ({row['ctas_per_sm']} CTA, {row['limiter']})"


def headline_rows(document: dict) -> list[dict]:
    """The predicted picks (and all kept configs) at 2N = 8192, D = 128, bf16, sm_90."""
    return [
        row
        for row in document["triton"]
        if all(row.get(key) == value for key, value in HEADLINE.items()) and row.get("estimate")
    ]


def headline_lines(document: dict) -> list[str]:
    lines = [
        "| kernel | config | model's pick | instr/elem | MUFU.EX2/elem | regs | spill B | "
        "occupancy | MMA | est. H100 overlapped / serialized µs | est. H200 µs | est. floor µs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(
        headline_rows(document),
        key=lambda r: (r["kernel"] != "forward", *pick_order(r)),
    ):
        if not row["kept"]:
            continue
        h100, h200 = row["estimate"]["H100 SXM"], row["estimate"]["H200"]
        lines.append(
            f"| {row['kernel']} | {row['config']} | {'**yes**' if row.get('predicted_pick') else ''}"
            f" | {row['instructions_per_element']} | {row['mufu_ex2_per_element']} | "
            f"{row['registers']} | {row['spill_bytes']} | {_occ(row)} | {row['mma']} | "
            f"{h100['overlapped_us']:.1f} / {h100['serialized_us']:.1f} | "
            f"{h200['overlapped_us']:.1f} / {h200['serialized_us']:.1f} | "
            f"{row['estimate_floor_us']['H100 SXM']:.1f} |"
        )
    return lines


def large_d_lines(document: dict) -> list[str]:
    """Backward tensor FLOPs per C²·D at large D (bf16, sm_90, from the compiled code): the fused
    kernel, where every output slice recomputes the scores, against the large-D path."""
    rows = [
        r
        for r in document["triton"]
        if r["kept"] and r["cc"] == 90 and r["precision"] == "bf16" and "tensor_flops_per_c2d" in r
    ]
    dims = sorted({r["dim"] for r in rows if r["kernel"] == "weights"})
    if not dims:
        return []
    lines = [
        "## Large D: backward tensor FLOPs per C²·D (bf16, sm_90, kept configs)",
        "",
        "| D | fused backward (recomputes the scores per output slice) | large-D path used from "
        "D = 512 (weights kernel + one matmul) |",
        "|---|---|---|",
    ]
    for dim in dims:

        def spread(kernel: str, dim: int = dim) -> str:
            values = sorted(
                {
                    r["tensor_flops_per_c2d"]
                    for r in rows
                    if r["kernel"] == kernel and r["dim"] == dim
                }
            )
            if not values:
                return "not analysed"
            low, high = values[0], values[-1]
            return f"{low:g}" if low == high else f"{low:g}–{high:g}"

        lines.append(f"| {dim} | {spread('backward')} | {spread('weights')} |")
    return [*lines, ""]


def summary_lines(document: dict) -> list[str]:
    rows = [r for r in document["triton"] if r["kept"]]
    failed = sorted(
        {
            f"{r['arch']} {r['kernel']} {r['precision']} D={r['dim']} {r['config']}"
            for r in rows
            if "error" in r
        }
    )
    unfit = sorted(
        {
            f"{r['arch']} {r['kernel']} {r['precision']} D={r['dim']} {r['config']}"
            for r in rows
            if "error" not in r and not r["fits"]
        }
    )
    spilling = sorted(
        {
            f"{r['arch']} {r['kernel']} {r['precision']} D={r['dim']} {r['config']} "
            f"({r['spill_bytes']} B)"
            for r in rows
            if r.get("spill_bytes") and r["dim"] <= 256
        }
    )
    lines = [
        f"- kept configs analysed: {len({(r['cc'], r['kernel'], r['precision'], r['dim'], r['config']) for r in rows})} "
        f"(kernel × precision × D × config × arch); compile failures: {len(failed)}; "
        f"not fitting shared memory: {len(unfit)}; spilling at D ≤ 256: {len(spilling)}",
    ]
    lines += [f"  - fails to compile: {item}" for item in failed]
    lines += [f"  - does not fit: {item}" for item in unfit]
    lines += [f"  - spills: {item}" for item in spilling]
    return lines


def full_table_lines(document: dict) -> list[str]:
    lines = []
    seen = set()
    for cc in sorted({r["cc"] for r in document["triton"]}):
        lines += [
            f"### sm_{cc}",
            "",
            "| kernel | precision | D | config | kept | regs | spill B | smem KiB | fits | occupancy "
            "| MMA | instr/elem | MUFU.EX2/elem |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in document["triton"]:
            key = (row["cc"], row["kernel"], row["precision"], row["dim"], row["config"])
            if row["cc"] != cc or key in seen:
                continue
            seen.add(key)
            if "error" in row:
                lines.append(
                    f"| {row['kernel']} | {row['precision']} | {row['dim']} | {row['config']} | "
                    f"{'yes' if row['kept'] else 'no'} | compile error: {row['error'][:80]} "
                    "| | | | | | | |"
                )
                continue
            lines.append(
                f"| {row['kernel']} | {row['precision']} | {row['dim']} | {row['config']} | "
                f"{'yes' if row['kept'] else 'no'} | {row['registers']} | {row['spill_bytes']} | "
                f"{_kib(row['shared_bytes'])} | {'yes' if row['fits'] else '**no**'} | {_occ(row)} "
                f"| {row['mma']} | {row.get('instructions_per_element', '')} | "
                f"{row.get('mufu_ex2_per_element', '')} |"
            )
        lines.append("")
    return lines


def cuda_lines(document: dict) -> list[str]:
    if not document.get("cuda"):
        return []
    from fastclr.bench.static.cuda_ext import ESTIMATE_DIM, ESTIMATE_ROWS, REFERENCE_ESTIMATE_US

    lines = [
        "## CUDA extension (csrc/, nvcc -Xptxas -v)",
        "",
        "64×64 score tile, 4 warps; variant 16-byte = cp.async tile copies (the host's choice when "
        "every row is 16-byte aligned), element-wise = the fallback. smem = static + dynamic. "
        f"Per-element counts at D = {ESTIMATE_DIM} are LOWER BOUNDS (its per-thread element loops "
        "are counted once). Global loads: LDGSTS/LDG of 16 bytes vs narrower, in the whole kernel "
        "(in the column loop).",
        "",
        "| arch | kernel | dtype | variant | regs | spill B | smem KiB | occupancy | MMA | "
        "instr/elem ≥ | MUFU.EX2/elem ≥ | 16-byte loads | narrower loads |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in document["cuda"]:
        if "error" in row:
            lines.append(f"| {row['arch']} | {row['source']} | | | compile error | | | | | | | | |")
            continue
        loads = row.get("global_loads", {})
        loop_loads = row.get("hot_loop_global_loads") or {}
        lines.append(
            f"| {row['arch']} | {row['kernel']} | {row['dtype']} | {row.get('variant', '')} | "
            f"{row.get('registers')} | {row.get('spill_bytes')} | "
            f"{_kib(row.get('shared_bytes', row.get('shared_static', 0)))} | {_occ(row)} | "
            f"{row['mma']} | {row.get('instructions_per_element_at_least', '')} | "
            f"{row.get('mufu_ex2_per_element_at_least', '')} | "
            f"{loads.get('16-byte', '')} ({loop_loads.get('16-byte', '')}) | "
            f"{loads.get('narrower', '')} ({loop_loads.get('narrower', '')}) |"
        )
    lines += [
        "",
        *cuda_estimate_lines(document, ESTIMATE_ROWS, ESTIMATE_DIM, REFERENCE_ESTIMATE_US),
    ]
    return lines + [""]


def cuda_estimate_lines(
    document: dict, rows: int, dim: int, reference_us: tuple[float, float]
) -> list[str]:
    """Forward + backward ESTIMATES of the CUDA backend's 16-byte variant on sm_90 beside the plain
    reference's, per dtype."""
    found: dict[str, dict] = {}
    for row in document["cuda"]:
        if row.get("cc") == 90 and row.get("variant") == "16-byte" and row.get("estimate_at_least"):
            found.setdefault(row["dtype"], {})[row["kernel"]] = row["estimate_at_least"]
    if not found:
        return []
    low, high = reference_us
    lines = [
        f"### CUDA backend ESTIMATE at 2N = {rows}, D = {dim}, sm_90 (H100 SXM), 16-byte variant",
        "",
        "ESTIMATED µs of the roofline model (docs/static-analysis.md), from lower-bound instruction "
        "counts and without memory latency: lower bounds of the model, never measured. Reference: "
        "the plain PyTorch loss's ESTIMATE (~15 passes over C×C, docs/static-analysis.md).",
        "",
        "| dtype | est. forward µs (overlapped / serialized) | est. backward µs | "
        "est. forward + backward µs (serialized) | est. plain reference µs | below the reference? |",
        "|---|---|---|---|---|---|",
    ]
    for dtype in ("bf16", "fp16", "fp32"):
        kernels = found.get(dtype, {})
        if set(kernels) != {"forward", "backward"}:
            continue
        fwd, bwd = kernels["forward"]["H100 SXM"], kernels["backward"]["H100 SXM"]
        total = fwd["serialized_us"] + bwd["serialized_us"]
        # The CUDA figure is a lower bound: "below" says only that the model does not rule it out.
        verdict = "lower bound below" if total < low else ("no" if total > high else "overlaps")
        lines.append(
            f"| {dtype} | ≥ {fwd['overlapped_us']:.0f} / {fwd['serialized_us']:.0f} | "
            f"≥ {bwd['overlapped_us']:.0f} / {bwd['serialized_us']:.0f} | ≥ {total:.0f} | "
            f"{low:.0f}–{high:.0f} | {verdict} |"
        )
    return lines


def markdown(document: dict) -> str:
    env = document["env"]
    lines = [
        f"# Static analysis of the NT-Xent kernels (triton {env['triton']})",
        "",
        f"Generated by `fastclr bench static` on {env['timestamp']} in {env.get('wall_s', '?')} s "
        f"({_compiles(env)}); "
        f"ptxas: {env['ptxas']}; nvcc: {env.get('nvcc', 'not run')}. Compiled ahead of time for "
        "each architecture without a GPU. " + ESTIMATE_NOTE,
        "",
        *summary_lines(document),
        "",
        "## 2N = 8192, D = 128, bf16, sm_90 (H100 / H200): ESTIMATED times",
        "",
        '"model\'s pick" is the kept config with the lowest serialized estimate (within 5%: the '
        "fewest instructions per element): a guess at what the autotuner picks on the GPU, not a "
        "measurement. The NT-Xent kernels split each row block's columns over several programs "
        "(kernels/configs.py column_splits), so co-resident CTAs overlap one another's MMA waits.",
        "",
        *headline_lines(document),
        "",
        *large_d_lines(document),
        "## Every analysed config (2N does not change the compiled code)",
        "",
        "instr/elem and MUFU.EX2/elem: SASS instructions (per thread) in the hot loop per score "
        "element; smem = dynamic + static shared memory; fits = within the arch's per-block opt-in "
        "limit; occupancy = resident warps / max, with the limiting resource.",
        "",
        *full_table_lines(document),
        *cuda_lines(document),
    ]
    return "\n".join(lines)


def write(document: dict, folder: Path) -> tuple[Path, Path]:
    """static.json and static.md under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "static.json", folder / "static.md"
    json_path.write_text(json.dumps(document, indent=1) + "\n")
    md_path.write_text(markdown(document) + "\n")
    return json_path, md_path


def report_section(static_dir: Path) -> str:
    """The summary and headline table of the newest triton version's results under
    bench/results/static/, for `fastclr bench report` ('' when there are none)."""
    found = sorted(Path(static_dir).glob("*/static.json"), key=lambda p: _version(p.parent.name))
    if not found:
        return ""
    document = json.loads(found[-1].read_text())
    lines = [
        "",
        f"## Static analysis (compiled code, no GPU; triton {document['env']['triton']})",
        "",
        ESTIMATE_NOTE + f" Full tables: {found[-1].with_suffix('.md').as_posix()}.",
        "",
        summary_lines(document)[0],
        "",
        *headline_lines(document),
        "",
    ]
    return "\n".join(lines)


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in name.split("."))
