"""The report's table of the loss family against the peers' implementations (bench/
test_bench_family.py, `fastclr bench gpu`'s family stage): per member, size and dtype, the median
time and peak extra memory of fastclr's forward+backward and of the peer's, and their ratios."""

from fastclr.bench.report_inputs import FAMILY, Run


def family_records(runs: list[Run], slug: str) -> dict[tuple, dict[str, dict]]:
    """(member, rows, dim, dtype) -> side -> the newest record on one device; a skip never hides
    a measurement."""
    table: dict[tuple, dict[str, dict]] = {}
    for run in runs:
        if run.env["device_slug"] != slug or run.schema != FAMILY:
            continue
        for r in run.results:
            sides = table.setdefault((r["member"], r["rows"], r["dim"], r["dtype"]), {})
            old = sides.get(r["side"])
            if old is None or r["status"] == "ok" or old["status"] != "ok":
                sides[r["side"]] = r
    return table


def family_lines(runs: list[Run], slug: str) -> list[str]:
    from fastclr.bench.report import format_bytes, format_ratio, format_seconds

    table = family_records(runs, slug)
    if not table:
        return []

    def shown(record: dict | None, key: str) -> tuple[str, float | None]:
        if record is None:
            return "—", None
        if record["status"] != "ok":
            return record["status"], None
        value = record["time"]["median_s"] if key == "time" else record.get("peak_bytes")
        if value is None:
            return "—", None
        return (format_seconds if key == "time" else format_bytes)(value), value

    lines = [
        "### Loss family against the peers (forward+backward)",
        "",
        "fastclr's default backend (\"auto\") against the peer's own implementation on the same "
        "inputs, checked against it before timing. Ratios: peer / fastclr (above 1: fastclr is "
        "faster or uses less memory).",
        "",
        "| member | peer | M | D | dtype | backend | time fastclr | time peer | time ratio "
        "| memory fastclr | memory peer | memory ratio | note |",
        "|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (member, rows, dim, dtype), sides in sorted(table.items()):
        mine, theirs = sides.get("fastclr"), sides.get("peer")
        cells = []
        for key in ("time", "memory"):
            (a, x), (b, y) = shown(mine, key), shown(theirs, key)
            cells += [a, b, format_ratio(y / x) if x and y else "—"]
        notes = {r.get("reason") or r.get("error") for r in (mine, theirs) if r}
        note = "; ".join(sorted(n.splitlines()[0][:100] for n in notes if n))
        any_side = mine or theirs
        lines.append(
            f"| {member} | {any_side.get('peer', '—')} | {rows} | {dim} | {dtype} | "
            f"{(mine or {}).get('backend', '—')} | "
            + " | ".join(cells)
            + f" | {note.replace('|', '/')} |"
        )
    return [*lines, ""]
