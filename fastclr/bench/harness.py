"""The loss benchmark harness behind bench/ (pytest-benchmark): a correctness gate before every
timing, peak extra memory, and the results file. bench/conftest.py holds only the pytest hooks and
fixtures that hand a `BenchSession` to the suites; `fastclr bench gpu` runs those suites with its own
grid through their options. What is measured, and at which sizes: fastclr/bench/settings.py.

Every case, before it is timed: value and gradient of the mean loss against the oracle on the same
inputs (the float64 reference while it fits: 2N <= 4096 on CPU, 16384 on GPU; the chunked backend in
fp32 beyond), relative error within TOLERANCE[dtype] or 2x the reference's own error in that dtype.
A wrong implementation fails the test and is never timed. Times: pytest-benchmark's clock on CPU;
CUDA events around each call on GPU (L2 flushed before each, median of many). Memory: see
fastclr/bench/memory.py (CUDA allocator peak on GPU, peak RSS of a worker process on CPU).
A timing run rewrites its results file after every case, so a run killed midway keeps what it
measured; past --bench-deadline-s the remaining cases are recorded as skipped ("deadline").
"""

import gc
import os
import secrets
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from fastclr.bench import environment, impls, memory, results
from fastclr.bench.settings import MIB, BudgetCase, LossCase, make_settings

SCHEMA = "fastclr-bench/1"


def summarize(times: list[float]) -> dict:
    """Median and spread of per-call seconds."""
    ordered = sorted(times)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median_s": statistics.median(ordered),
        "iqr_s": q3 - q1,
        "q1_s": q1,
        "q3_s": q3,
        "mean_s": statistics.fmean(ordered),
        "stddev_s": statistics.stdev(ordered) if len(ordered) >= 2 else 0.0,
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "rounds": len(ordered),
    }


class BenchSession:
    """State shared by the benchmark tests of one pytest session."""

    def __init__(self, config: pytest.Config, default_results_dir: Path) -> None:
        self.config = config
        self.settings = make_settings(config, default_results_dir)
        self.started = time.monotonic()
        self.seed = config.getoption("bench_seed", None)
        if self.seed is None:
            self.seed = secrets.randbits(31)
        self.records: list[dict] = []
        self.saved_to: Path | None = None
        self._env: dict | None = None
        self._worker: memory.RssWorker | None = None
        self._inputs_key: tuple | None = None
        self._inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._oracle: tuple | None = None
        self._checked: dict[str, tuple] = {}  # impl -> (loss fn, value err, grad err, seconds)
        self._reference_error: float | None = None
        self._too_slow: dict[tuple, int] = {}  # (impl, mode, dtype, dim) -> rows that took too long
        self._no_fit: dict[tuple, int] = {}  # (impl, dtype, dim) -> rows that ran out of memory
        self._searches: dict[tuple, memory.BudgetSearch] = {}  # (impl, dim, dtype) -> search
        self._budget_timed: dict[tuple, dict] = {}  # (impl, dim, dtype, rows) -> its record

    @property
    def device(self) -> torch.device:
        return self.settings.device

    @property
    def env(self) -> dict:
        if self._env is None:
            self._env = environment.collect(self.device)
        return self._env

    # -- inputs and the oracle ----------------------------------------------------------------

    def inputs(self, rows: int, dim: int, dtype: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The input set of (rows, dim, dtype): fresh per session, shared by every implementation."""
        key = (rows, dim, dtype)
        if key != self._inputs_key:
            self._inputs = self._oracle = None
            self._checked.clear()
            self._reference_error = None
            self.release()
            seed = impls.case_seed(self.seed, rows, dim, impls.DTYPES[dtype])
            self._inputs = impls.make_projections(rows, dim, impls.DTYPES[dtype], self.device, seed)
            self._inputs_key = key
        return self._inputs

    def oracle(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        if self._oracle is None:
            z1, z2 = self._inputs
            self._oracle = impls.oracle(
                z1,
                z2,
                impls.TEMPERATURE,
                self.settings.dense_limit,
                self.settings.oracle_block_bytes,
            )
        return self._oracle

    def tolerance(self, rows: int, dtype: torch.dtype) -> float:
        """TOLERANCE[dtype], or twice torch's own error in this dtype where the reference fits."""
        bound = impls.TOLERANCE[dtype]
        if dtype == torch.float32 or rows > self.settings.dense_limit:
            return bound
        if self._reference_error is None:
            value, grad, _ = self.oracle()
            scale = impls.GRAD_SCALE.get(dtype, 1.0)
            got_value, got_grad = impls.value_and_grad(
                impls.build_loss("reference"), *self._inputs, grad_scale=scale
            )
            self._reference_error = max(
                impls.relative_error(got_value, value), impls.relative_error(got_grad, grad)
            )
        return max(bound, 2 * self._reference_error)

    def checked_loss(self, case: LossCase) -> tuple:
        """Build the implementation and check value and gradient against the oracle (once per
        input set; fwd and fwd+bwd share it). Fails the test when it is wrong."""
        if case.impl in self._checked:
            return self._checked[case.impl]
        z1, z2 = self._inputs
        loss = impls.build_loss(case.impl)
        start = time.perf_counter()
        scale = impls.GRAD_SCALE.get(impls.DTYPES[case.dtype], 1.0)
        value, grad = impls.value_and_grad(loss, z1, z2, grad_scale=scale)
        self.synchronize()
        seconds = time.perf_counter() - start
        want_value, want_grad, method = self.oracle()
        value_err = impls.relative_error(value, want_value)
        grad_err = impls.relative_error(grad, want_grad)
        tol = self.tolerance(case.rows, impls.DTYPES[case.dtype])
        assert value_err <= tol and grad_err <= tol, (
            f"{case.id} disagrees with the {method}: relative error of the value {value_err:.2e}, "
            f"of the gradient {grad_err:.2e}, allowed {tol:.1e} (seed {self.seed}); not timed"
        )
        self._checked[case.impl] = (loss, value_err, grad_err, tol, method, seconds)
        return self._checked[case.impl]

    # -- guards ---------------------------------------------------------------------------------

    def skip_reason(self, case: LossCase, guarded: bool = True) -> tuple[str, str] | None:
        """(status, reason) when the case must not run here, else None. Unguarded: only whether
        the implementation is usable at all."""
        reason = impls.unavailable_reason(case.impl, self.device, impls.DTYPES[case.dtype])
        if reason is not None:
            return "unavailable", reason
        deadline = self.settings.deadline_s
        if deadline is not None and time.monotonic() - self.started > deadline:
            return (
                "deadline",
                f"not started: the run passed its {deadline:g} s (--bench-deadline-s)",
            )
        if not guarded:
            return None
        slow = self._too_slow.get((case.impl, case.mode, case.dtype, case.dim))
        if slow is not None and case.rows > slow:
            return "too slow", (
                f"one call at 2N={slow} took over {self.settings.max_call_s:g} s "
                "(--bench-max-call-s)"
            )
        no_fit = self._no_fit.get((case.impl, case.dtype, case.dim))
        if no_fit is not None and case.rows >= no_fit:
            return "out of memory", f"ran out of memory at 2N={no_fit}"
        limit = self.settings.memory_limit_bytes
        if limit is not None and case.impl != impls.FLOOR:
            need = impls.estimated_bytes(case.impl, case.rows, case.dim)
            if need > limit:
                return "predicted too big", (
                    f"would need ~{need / 2**30:.1f} GiB, over half the available memory"
                )
        return None

    def skip(self, case: LossCase, suite: str, status: str, reason: str) -> None:
        self.record(case, suite, status=status, reason=reason)
        pytest.skip(f"{case.id}: {reason}")

    # -- measurement ----------------------------------------------------------------------------

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def release(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def peak_bytes(self, case: LossCase, call) -> tuple[int | None, str]:
        """(peak extra bytes of one call, how it was measured)."""
        if self.device.type == "cuda":
            return memory.cuda_peak_bytes(call, self.device), "cuda max_memory_allocated"
        if memory.rss_unavailable_reason() is not None:
            return None, memory.rss_unavailable_reason()
        reply = self.worker.request(
            {
                "op": "peak",
                "impl": case.impl,
                "mode": case.mode,
                "rows": case.rows,
                "dim": case.dim,
                "dtype": case.dtype,
                "seed": self.seed,
                "temperature": impls.TEMPERATURE,
            }
        )
        return reply["peak_bytes"], "peak RSS of a worker process (VmHWM, mmap threshold 64 KiB)"

    @property
    def worker(self) -> memory.RssWorker:
        if self._worker is None:
            self._worker = memory.RssWorker()
        return self._worker

    def call_seconds(self, call) -> float:
        start = time.perf_counter()
        result = call()
        self.synchronize()
        del result
        return time.perf_counter() - start

    def time_call(self, benchmark, call, rounds: int) -> tuple[dict | None, dict | None, str]:
        """(device time stats, pytest-benchmark wall stats, timer) of `rounds` calls."""
        if self.device.type != "cuda":
            benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)
            if not benchmark.enabled:
                return None, None, "perf_counter"
            wall = summarize(list(benchmark.stats.stats.data))
            return wall, wall, "perf_counter"
        # Device time of each call between CUDA events; the 256 MiB write before each call
        # evicts the inputs from L2 so that no call is timed from a warm cache.
        flush = torch.empty(256 * MIB, dtype=torch.int8, device=self.device)
        pairs = []

        def timed() -> None:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            result = call()
            end.record()
            torch.cuda.synchronize(self.device)
            del result
            pairs.append((start, end))

        def flush_l2() -> None:
            flush.zero_()

        benchmark.pedantic(timed, setup=flush_l2, rounds=rounds, iterations=1)
        if not benchmark.enabled:
            return None, None, "cuda events"
        device_times = summarize([s.elapsed_time(e) / 1e3 for s, e in pairs])
        return device_times, summarize(list(benchmark.stats.stats.data)), "cuda events"

    def measure(
        self, benchmark, case: LossCase, suite: str, peak: int | None = None, guarded: bool = True
    ) -> None:
        """Check `case`, then measure its peak memory and time; record and attach the result.
        `peak`: already measured (the budget search); unguarded: run even past the size guards."""
        if case.impl in impls.PEER_MODULES:
            pytest.importorskip(impls.PEER_MODULES[case.impl])
        skip = self.skip_reason(case, guarded)
        if skip is not None:
            self.skip(case, suite, *skip)
        _ = self.env  # the session's environment and timestamp: taken at its first measurement
        z1, z2 = self.inputs(case.rows, case.dim, case.dtype)
        info: dict = {}
        try:
            if case.impl == impls.FLOOR:
                step = impls.floor_step(
                    torch.cat([z1, z2]), case.mode, max_square_bytes=self.floor_square_bytes()
                )
                call, scale = step.call, step.scale
                info["floor_method"] = step.method
            else:
                loss, value_err, grad_err, tol, method, first_s = self.checked_loss(case)
                info.update(
                    value_rel_err=value_err,
                    grad_rel_err=grad_err,
                    tolerance=tol,
                    oracle=method,
                    first_call_s=first_s,
                )
                call, scale = impls.loss_step(loss, z1, z2, case.mode), 1.0
            warm_s = self.call_seconds(call)
            if warm_s * scale > self.settings.max_call_s:
                self._too_slow[(case.impl, case.mode, case.dtype, case.dim)] = case.rows
            if self.settings.full and case.impl != impls.FLOOR:
                if peak is None:
                    peak, info["memory_method"] = self.peak_bytes(case, call)
                else:
                    info["memory_method"] = "from the budget search"
            # Many rounds of a fast call; at least min_rounds unless that would take minutes.
            rounds = self.settings.min_rounds
            if warm_s * scale > self.settings.max_call_s:
                rounds = 1
            elif warm_s * rounds > 3 * self.settings.max_call_s:
                rounds = 3
            if self.settings.full:
                wanted = self.settings.target_s / max(warm_s, 1e-6)
                rounds = int(min(self.settings.max_rounds, max(rounds, wanted)))
            device_stats, wall, timer = self.time_call(benchmark, call, rounds)
        except Exception as err:
            if not memory.is_out_of_memory(err):
                raise
            del err
            self._no_fit[(case.impl, case.dtype, case.dim)] = case.rows
            self.release()
            self.skip(case, suite, "out of memory", "out of memory")
        if device_stats is not None and scale != 1.0:
            device_stats = {
                k: v * scale if k.endswith("_s") else v for k, v in device_stats.items()
            }
        info.update(peak_bytes=peak, timer=timer)
        record = self.record(case, suite, status="ok", time=device_stats, wall=wall, **info)
        benchmark.extra_info.update(record)

    def floor_square_bytes(self) -> int:
        """How large a [block, C] product operand the floor may allocate."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return free // 4
        return (self.settings.memory_limit_bytes or 2**30) // 4

    def largest_batch(self, benchmark, case: BudgetCase, suite: str) -> None:
        """Largest 2N whose forward+backward fits the memory budget; then check and time it there.
        One doubling search against the largest budget serves every budget of an (impl, D, dtype),
        and a size already timed for a smaller budget is not timed again."""
        probe = LossCase(case.impl, "fwd+bwd", self.settings.budget_rows[0], case.dim, case.dtype)
        if case.impl in impls.PEER_MODULES:
            pytest.importorskip(impls.PEER_MODULES[case.impl])
        skip = self.skip_reason(probe, guarded=False)
        if skip is not None:
            self.skip(probe, suite, *skip)
        _ = self.env
        key = (case.impl, case.dim, case.dtype)
        if key not in self._searches:
            self._searches[key] = self.search_budget(case, max(self.settings.budgets))
        search = self._searches[key]
        largest_rows, limited_by, peak = search.within(case.budget_bytes)
        budget = {
            "budget_bytes": case.budget_bytes,
            "largest_rows": largest_rows,
            "limited_by": limited_by,
            "probes": search.probes,
        }
        benchmark.extra_info.update(budget)
        if largest_rows is None:
            self.record(probe, suite, status="no fit", reason="smallest size over budget", **budget)
            pytest.skip(f"{case.id}: not even 2N={probe.rows} fits {case.budget_bytes} B")
        timed = self._budget_timed.get((*key, largest_rows))
        if timed is not None:  # this size was timed for a smaller budget: the same measurement
            self.records.append({**timed, **budget})
        else:
            largest = LossCase(case.impl, "fwd+bwd", largest_rows, case.dim, case.dtype)
            self.measure(benchmark, largest, suite, peak=peak, guarded=False)
            self.records[-1].update(budget)
            self._budget_timed[(*key, largest_rows)] = self.records[-1]
        if self.settings.full:
            self.save()

    def search_budget(self, case: BudgetCase, budget_bytes: int) -> memory.BudgetSearch:
        rows = list(self.settings.budget_rows)
        if self.device.type != "cuda":
            if memory.rss_unavailable_reason() is not None:
                pytest.skip(f"{case.id}: {memory.rss_unavailable_reason()}")
            reply = self.worker.request(
                {
                    "op": "search",
                    "impl": case.impl,
                    "rows": rows,
                    "dim": case.dim,
                    "dtype": case.dtype,
                    "seed": self.seed,
                    "temperature": impls.TEMPERATURE,
                    "budget_bytes": budget_bytes,
                    "memory_limit_bytes": self.settings.memory_limit_bytes or 2**62,
                    "max_call_s": self.settings.max_call_s,
                }
            )
            search = memory.BudgetSearch(budget_bytes)
            search.largest_rows = reply["largest_rows"]
            search.limited_by = reply["limited_by"]
            search.probes = reply["probes"]
            return search

        def measure(count: int) -> tuple[int | None, float, str]:
            self._inputs_key = None
            z1, z2 = self.inputs(count, case.dim, case.dtype)
            call = None
            try:
                call = impls.loss_step(impls.build_loss(case.impl), z1, z2, "fwd+bwd")
                seconds = self.call_seconds(call)
                peak = memory.cuda_peak_bytes(call, self.device)
            except Exception as err:
                if not memory.is_out_of_memory(err):
                    raise
                return None, 0.0, "out of memory"
            finally:
                del call, z1, z2
                self.release()
            return peak, seconds, "time" if seconds > self.settings.max_call_s else ""

        search = memory.BudgetSearch(budget_bytes)
        search.run(rows, measure)
        self._inputs_key = None
        return search

    # -- results --------------------------------------------------------------------------------

    def record(self, case: LossCase, suite: str, **fields) -> dict:
        record = {
            "suite": suite,
            **asdict(case),
            "temperature": impls.TEMPERATURE,
            "flops": impls.flops(case.rows, case.dim, case.mode),
            **fields,
        }
        stats = record.get("time")
        if stats:
            record["tflops"] = record["flops"] / stats["median_s"] / 1e12
        self.records.append(record)
        if self.settings.full:
            self.save()  # after every case: a run killed midway keeps what it measured
        return record

    def save(self) -> None:
        env = {**self.env, "load_average_end": list(os.getloadavg())}
        settings = {
            "seed": self.seed,
            "budgets_bytes": list(self.settings.budgets),
            "max_call_s": self.settings.max_call_s,
            "dense_limit": self.settings.dense_limit,
            "temperature": impls.TEMPERATURE,
        }
        path = results.results_path(
            self.settings.results_dir, env, prefix=self.settings.results_prefix
        )
        self.saved_to = results.write(path, SCHEMA, env, self.records, settings)

    def finish(self) -> None:
        if self._worker is not None:
            self._worker.close()
        if self.settings.full and self.records:
            self.save()


SESSION = pytest.StashKey[BenchSession]()
