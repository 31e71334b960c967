"""Reading bench/results/ for `fastclr bench report`: every results file, checked before it is used.

    fastclr-bench/1         loss suite (bench/conftest.py's harness)       -> Run
    fastclr-bench-train/1   training-step images/s                         -> Run
    fastclr-bench-data/1    loader images/s                                -> Run
    fastclr-bench-family/1  loss family vs the peers (bench/test_bench_family.py) -> Run
    fastclr-acceptance/1    one stage of `fastclr bench gpu`               -> Stage record (dict)
    static/**               `fastclr bench static`'s figures (rendered by fastclr/bench/static/render.py)

A JSON file that does not parse, or a results file with a key missing or of the wrong type, is a
`UsageError` naming the file and what is wrong: a report silently built without it would be stale.
JSON files of other schemas (pytest-benchmark's own, say) are not results and are left alone.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from fastclr.errors import UsageError

LOSS, TRAIN, DATA = "fastclr-bench/1", "fastclr-bench-train/1", "fastclr-bench-data/1"
FAMILY = "fastclr-bench-family/1"
ACCEPTANCE = "fastclr-acceptance/1"
STATIC_DIR = "static"

NUMBER = (int, float)
ENV_KEYS = {"timestamp": str, "device_slug": str, "device": str, "device_type": str}
# Keys every record of a schema must have, and their types (None allowed where a tuple has it).
RECORD_KEYS = {
    LOSS: {"suite": str, "impl": str, "status": str},
    TRAIN: {"arch": str, "batch_size": int},
    DATA: {"case": str},
    FAMILY: {"member": str, "side": str, "rows": int, "dim": int, "dtype": str, "status": str},
}
LOSS_CASE_KEYS = {"mode": str, "rows": int, "dim": int, "dtype": str}
OK_KEYS = {
    LOSS: {"time": dict},
    TRAIN: {"images_per_s": NUMBER},
    DATA: {"images_per_s": NUMBER},
    FAMILY: {"time": dict},
}


@dataclass
class Run:
    path: Path
    schema: str
    env: dict
    settings: dict
    results: list[dict]


def _check(path: Path, where: str, mapping: dict, keys: dict) -> None:
    for key, kind in keys.items():
        if key not in mapping:
            raise UsageError(f"{path}: {where} has no {key!r}: not a complete results file; "
                             "delete it or re-run the benchmark that wrote it")  # fmt: skip
        if not isinstance(mapping[key], kind) or isinstance(mapping[key], bool):
            got = type(mapping[key]).__name__
            raise UsageError(f"{path}: {where}[{key!r}] is {got} {mapping[key]!r}, expected "
                             f"{getattr(kind, '__name__', 'a number')}; fix or delete the file")  # fmt: skip


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}); it may be cut short: "
            "delete it or re-run the benchmark that wrote it"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(
            f"{path}: cannot read it ({err}); fix its permissions or delete it"
        ) from None


def check_run(path: Path, data: dict) -> Run:
    """A results file of a known schema as a Run; UsageError naming what is missing or wrong."""
    schema = data["schema"]
    _check(path, "the file", data, {"env": dict, "results": list})
    _check(path, "env", data["env"], ENV_KEYS)
    for i, record in enumerate(data["results"]):
        if not isinstance(record, dict):
            raise UsageError(f"{path}: results[{i}] is not an object; fix or delete the file")
        _check(path, f"results[{i}]", record, RECORD_KEYS[schema])
        if schema == LOSS and record["suite"] != "budget":
            _check(path, f"results[{i}]", record, LOSS_CASE_KEYS)
        if record.get("status", "ok") == "ok":
            _check(path, f"results[{i}]", record, OK_KEYS[schema])
            if schema in (LOSS, FAMILY):
                _check(path, f"results[{i}]['time']", record["time"], {"median_s": NUMBER})
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    return Run(path, schema, data["env"], settings, data["results"])


def load(results_dir: Path) -> tuple[list[Run], list[dict]]:
    """(results runs oldest first, acceptance stage records) under `results_dir`; static/ belongs
    to `fastclr bench static` and is rendered by fastclr/bench/static/render.py."""
    runs, stages = [], []
    for path in sorted(Path(results_dir).rglob("*.json")):
        if STATIC_DIR in path.relative_to(results_dir).parts[:1]:
            continue
        data = read_json(path)
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema in RECORD_KEYS:
            runs.append(check_run(path, data))
        elif schema == ACCEPTANCE:
            _check(path, "the record", data, {"stage": str, "status": str})
            stages.append({**data, "path": str(path)})
    return sorted(runs, key=lambda run: run.env["timestamp"]), stages
