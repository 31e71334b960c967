"""Stage `report`: bench/results/REPORT.md and its PNG plots from everything under the results
folder (fastclr/bench/report.py), the acceptance records and the static estimates included."""

from fastclr.bench.acceptance.context import Context


def run(ctx: Context) -> dict:
    from fastclr.bench.report import generate

    outcome = generate(ctx.results_dir)
    return {
        "markdown": str(outcome.markdown),
        "plots": [str(p) for p in outcome.plots],
        "warnings": outcome.warnings,
    }


def summary(result: dict) -> str:
    warnings = f"; {'; '.join(result['warnings'])}" if result["warnings"] else ""
    return f"{result['markdown']} + {len(result['plots'])} plots{warnings}"
