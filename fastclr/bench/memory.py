"""Peak extra memory of one loss call, on GPU and on CPU.

GPU: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus what was allocated
before the call: every byte the caching allocator handed out during the call, not the cache it keeps.

CPU: torch keeps no statistics for CPU tensors, and tracemalloc cannot see them (they come from
c10's allocator, not Python's); the profiler's memory events attribute allocations to operators
without a usable timeline. So the CPU figure is the peak resident set of a worker subprocess:
  - the worker runs with glibc's mmap threshold pinned at 64 KiB (MALLOC_MMAP_THRESHOLD_, set again
    with mallopt), so every buffer above 64 KiB is its own mapping and returns to the OS when freed:
    RSS follows the live buffers, and no freed-but-retained heap block hides a later allocation;
  - it runs the call once first (lazy initialisation, BLAS scratch, compilation), then calls
    malloc_trim(0), resets the kernel's high-water mark by writing "5" to /proc/self/clear_refs,
    reads VmRSS, runs the call and reports VmHWM - VmRSS from /proc/self/status: the peak of the
    pages the call touched beyond what was resident before it (inputs excluded, gradients counted);
  - it is a separate process because the pinned threshold makes large allocations slower: the
    process that times keeps glibc's default policy.
This counts everything the call makes the OS provide (tensors, BLAS scratch, Python objects), in
pages. Linux with glibc only; elsewhere the CPU peak is reported as unmeasured. `self_test` checks
that the probe sees two live buffers and does not count a freed one.

The worker speaks JSON lines on stdin/stdout: `python -m fastclr.bench.memory --serve`.
"""

import ctypes
import gc
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

MMAP_THRESHOLD_BYTES = 64 * 1024
REPLY_PREFIX = "fastclr-memory "
CLEAR_REFS = Path("/proc/self/clear_refs")


def is_out_of_memory(err: BaseException | None) -> bool:
    """Out of memory, also when wrapped (torch.compile re-raises backend errors as its own)."""
    while err is not None:
        if isinstance(err, torch.cuda.OutOfMemoryError):
            return True
        text = str(err).lower()
        if "out of memory" in text or "can't allocate memory" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


def cuda_peak_bytes(call: Callable[[], object], device: torch.device) -> int:
    """Peak bytes the CUDA caching allocator handed out during `call`, beyond what was live before."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = call()
    torch.cuda.synchronize(device)
    del result
    return torch.cuda.max_memory_allocated(device) - before


def rss_unavailable_reason() -> str | None:
    """None if the peak-RSS probe works in this process's environment, else why not."""
    if not sys.platform.startswith("linux"):
        return f"peak RSS needs Linux /proc (this is {sys.platform})"
    if not os.access(CLEAR_REFS, os.W_OK):
        return f"cannot write {CLEAR_REFS} to reset the RSS high-water mark"
    try:
        glibc = hasattr(ctypes.CDLL("libc.so.6"), "malloc_trim")
    except OSError:
        glibc = False
    if not glibc:
        return "needs glibc (malloc_trim, MALLOC_MMAP_THRESHOLD_)"
    return None


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} missing from /proc/self/status")


def peak_rss_bytes(call: Callable[[], object]) -> int:
    """Peak resident bytes `call` adds to this process (see the module docstring: run it in a
    process whose mmap threshold is pinned, after one warm-up call)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    gc.collect()
    libc.malloc_trim(0)
    CLEAR_REFS.write_text("5")
    before = _status_bytes("VmRSS")
    result = call()
    del result
    return _status_bytes("VmHWM") - before


@dataclass
class BudgetSearch:
    """Largest row count whose forward+backward fits `budget_bytes`, trying `rows` in order."""

    budget_bytes: int
    largest_rows: int | None = None
    limited_by: str = "cap"  # "budget", "out of memory", "time", "predicted", or "cap" (grid end)
    probes: list[dict] = field(default_factory=list)

    def run(self, rows: list[int], measure: Callable[[int], tuple[int | None, float, str]]) -> None:
        """measure(rows) -> (peak bytes or None, seconds of one call, "" or why it stopped)."""
        for count in rows:
            peak, seconds, stop = measure(count)
            self.probes.append({"rows": count, "peak_bytes": peak, "seconds": seconds})
            if stop in ("out of memory", "predicted"):
                self.limited_by = stop
                return
            if peak is None or peak > self.budget_bytes:
                self.limited_by = "budget"
                return
            self.largest_rows = count
            if stop:
                self.limited_by = stop
                return

    def within(self, budget_bytes: int) -> tuple[int | None, str, int | None]:
        """(largest rows, what limited it, its peak bytes) for a budget at most the searched one:
        the probes are read again, stopping at the first over `budget_bytes`."""
        largest, peak, limited_by = None, None, self.limited_by
        for probe in self.probes:
            if probe["peak_bytes"] is None:  # out of memory, or predicted too big
                break
            if probe["peak_bytes"] > budget_bytes:
                limited_by = "budget"
                break
            largest, peak = probe["rows"], probe["peak_bytes"]
        return largest, limited_by, peak


def worker_call(request: dict) -> Callable[[], object]:
    """The call a request names, on CPU tensors, run once already (warm)."""
    from fastclr.bench import impls

    dtype = impls.DTYPES[request["dtype"]]
    cpu = torch.device("cpu")
    z1, z2 = impls.make_projections(request["rows"], request["dim"], dtype, cpu, request["seed"])
    loss = impls.build_loss(request["impl"], request["temperature"])
    call = impls.loss_step(loss, z1, z2, request["mode"])
    call()
    return call


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none): what a CPU run may still use."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def handle(request: dict) -> dict:
    """One worker request -> its JSON reply."""
    from fastclr.bench import impls

    op = request["op"]
    if op == "selftest":
        return self_test_in_process()
    if op == "peak":
        call = worker_call(request)
        samples = [peak_rss_bytes(call) for _ in range(2)]
        return {"peak_bytes": max(samples), "samples": samples}
    if op == "search":
        search = BudgetSearch(request["budget_bytes"])
        limit = request["memory_limit_bytes"]

        def measure(rows: int) -> tuple[int | None, float, str]:
            if impls.estimated_bytes(request["impl"], rows, request["dim"]) > limit:
                return None, 0.0, "predicted"
            call = worker_call({**request, "rows": rows, "mode": "fwd+bwd"})
            start = time.perf_counter()
            peak = peak_rss_bytes(call)
            seconds = time.perf_counter() - start
            return peak, seconds, "time" if seconds > request["max_call_s"] else ""

        search.run(request["rows"], measure)
        return {
            "largest_rows": search.largest_rows,
            "limited_by": search.limited_by,
            "probes": search.probes,
        }
    raise ValueError(f"unknown op {op!r}")


def self_test_in_process() -> dict:
    """Two 32 MiB buffers alive at once and a 16 MiB one freed before them: expect 64 MiB."""
    mib = 2**20

    def call() -> object:
        freed = torch.ones(16 * mib // 4)
        del freed
        a = torch.ones(32 * mib // 4)
        b = torch.ones(32 * mib // 4)
        return a.sum() + b.sum()

    call()
    return {"peak_bytes": peak_rss_bytes(call), "expected_bytes": 64 * mib}


def serve() -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, MMAP_THRESHOLD_BYTES)  # M_MMAP_THRESHOLD; also disables its dynamic growth
    torch.set_num_threads(int(os.environ.get("FASTCLR_BENCH_THREADS", torch.get_num_threads())))
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = handle(json.loads(line))
        except Exception as err:  # the reply names the failure; the worker keeps serving
            reply = {"error": f"{type(err).__name__}: {err}"}
        sys.stdout.write(REPLY_PREFIX + json.dumps(reply) + "\n")
        sys.stdout.flush()


class RssWorker:
    """Client of one `--serve` worker process, started on first use and kept for the session."""

    def __init__(self, timeout_s: float = 900.0) -> None:
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._log_fd, self._log_path = tempfile.mkstemp(prefix="fastclr-memory-", suffix=".log")
        self._buffer = b""

    def _start(self) -> subprocess.Popen:
        env = dict(
            os.environ,
            MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD_BYTES),
            CUDA_VISIBLE_DEVICES="",
            FASTCLR_BENCH_THREADS=str(torch.get_num_threads()),
        )
        return subprocess.Popen(
            [sys.executable, "-m", "fastclr.bench.memory", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_fd,
            env=env,
        )

    def request(self, payload: dict) -> dict:
        """Send one request and wait for its reply; raises RuntimeError if the worker fails."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc, self._buffer = self._start(), b""
        self._proc.stdin.write((json.dumps(payload) + "\n").encode())
        self._proc.stdin.flush()
        deadline = time.monotonic() + self.timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            while True:
                line, sep, rest = self._buffer.partition(b"\n")
                if sep:
                    self._buffer = rest
                    text = line.decode(errors="replace")
                    if text.startswith(REPLY_PREFIX):
                        reply = json.loads(text[len(REPLY_PREFIX) :])
                        if "error" in reply:
                            raise RuntimeError(f"memory worker: {reply['error']}")
                        return reply
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(timeout=left):
                    self.stop()
                    raise RuntimeError(f"memory worker gave no reply in {self.timeout_s:.0f} s")
                chunk = os.read(self._proc.stdout.fileno(), 65536)
                if not chunk:
                    code = self._proc.wait()
                    self._proc = None
                    raise RuntimeError(f"memory worker exited ({code}): {self.log_tail()}")
                self._buffer += chunk

    def log_tail(self, chars: int = 2000) -> str:
        return Path(self._log_path).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """End the worker (a later request starts a new one)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        os.close(self._log_fd)
        Path(self._log_path).unlink(missing_ok=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["--serve"]:
        sys.exit("usage: python -m fastclr.bench.memory --serve  (JSON requests on stdin)")
    serve()
