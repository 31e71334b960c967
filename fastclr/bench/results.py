"""The one writer of benchmark results files: bench/results/<device-slug>/<prefix><UTC time>.json.

Every suite (loss, train, data) and every stage of `fastclr bench gpu` writes through `write`, so
each file has the same envelope, `{"schema", "env", "settings", "results"}`, where env is
`environment.collect(...)`'s record of the device, versions and time. Writes are atomic (a temporary
file renamed over the target), so a run killed mid-write leaves the previous version of the file
whole, and a writer may call `write` again after every new record to lose nothing on a crash.
"""

import json
import math
import os
from pathlib import Path


def stamp(timestamp: str) -> str:
    """'2026-11-23T11:10:57+00:00' -> '20261123T111057Z' (file names sort by time)."""
    return timestamp.replace(":", "").replace("-", "").replace("+0000", "Z")


def results_path(results_dir: Path, env: dict, prefix: str = "") -> Path:
    """Where a run that began at env["timestamp"] on env["device_slug"] writes its results."""
    return Path(results_dir) / env["device_slug"] / f"{prefix}{stamp(env['timestamp'])}.json"


def json_safe(value):
    """Non-finite floats become null (JSON has no NaN/Infinity), also inside lists and dicts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, payload: dict) -> Path:
    """Write `payload` to `path` atomically (creating its folder); returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(json_safe(payload), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def write(
    path: Path, schema: str, env: dict, results: list[dict], settings: dict | None = None
) -> Path:
    """One results file: the envelope every reader (`fastclr bench report`) expects."""
    payload = {"schema": schema, "env": env, "settings": settings or {}, "results": results}
    return write_json(path, payload)
