"""What every stage of the acceptance run gets: where to write, which sizes, and the device."""

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fastclr.errors import UsageError

SCHEMA = "fastclr-acceptance/1"


@dataclass(frozen=True)
class Sizes:
    """The sizes of one run: the real ones on a GPU, tiny ones for --dry-run on a CPU."""

    loss_rows: tuple[int, ...]
    loss_dims: tuple[int, ...]
    loss_impls: tuple[str, ...]
    loss_target_s: float  # seconds spent timing one case
    loss_max_call_s: float
    family_members: tuple[str, ...]  # the family-vs-peers stage (bench/test_bench_family.py)
    family_rows: tuple[int, ...]
    family_dtypes: tuple[str, ...]
    family_deadline_s: float
    budget_mib: str  # --bench-budget-mib: "1024,device"
    budget_max_rows: int
    budget_dtypes: tuple[str, ...]
    budget_impls: tuple[str, ...]
    stage_deadline_s: float  # a pytest stage stops starting cases after this
    stage_timeout_s: float  # and is killed after this
    gpu_tests_timeout_s: float  # the GPU tests' limit (they build the CUDA extension first)
    arch: str
    image_size: int
    batch_range: tuple[int, int]  # largest-batch search: first and last power of two
    warmup_steps: int
    timed_steps: int
    compile_model: bool
    loader_steps: int
    loader_workers: int
    data_batches: int
    gpu_test_workers: int  # pytest-xdist workers for the GPU tests (1: none); compiling dominates
    compile_skip_reason: str = ""  # why compile_model is off, recorded in the train results


GPU_SIZES = Sizes(
    loss_rows=(1024, 4096, 8192, 16384, 65536),
    loss_dims=(128, 2048),
    loss_impls=("reference", "reference-compiled", "chunked", "triton", "cuda", "matmul-floor"),
    loss_target_s=0.25,
    loss_max_call_s=2.0,
    family_members=("sup_con", "dcl", "dclw", "clip"),
    family_rows=(4096, 16384),
    family_dtypes=("bfloat16", "float32"),
    family_deadline_s=100.0,
    budget_mib="1024,device",
    budget_max_rows=2**20,
    budget_dtypes=("bfloat16",),  # fp32 doubles the stage (a chunked fp32 oracle at 2^20 rows)
    budget_impls=("reference", "chunked", "triton", "cuda"),
    stage_deadline_s=240.0,
    stage_timeout_s=290.0,
    gpu_tests_timeout_s=290.0,
    arch="resnet50",
    image_size=224,
    batch_range=(64, 4096),
    warmup_steps=3,
    timed_steps=10,
    compile_model=True,
    loader_steps=3,
    loader_workers=16,
    data_batches=10,
    gpu_test_workers=8,
)

# One device lease (this workplace lends 15 device-minutes a session, at most 10 a call): the
# headline cases only, 466 s on an H200 (2026-11-30; the GPU tests 168 s of it). D = 128 (SimCLR's
# projection width), 2N from 4096 up; no torch.compile (the compiled reference and the compiled
# ResNet-50 take minutes to build); one family size; 2N <= 2^18 in the budget search; a fixed
# training batch instead of the search.
LEASE_SIZES = replace(
    GPU_SIZES,
    loss_rows=(4096, 8192, 16384, 65536),  # 8192: where the static model's estimates are
    loss_dims=(128,),
    loss_impls=("reference", "chunked", "triton", "cuda", "matmul-floor"),
    loss_target_s=0.1,
    family_rows=(16384,),
    family_dtypes=("bfloat16",),
    family_deadline_s=40.0,
    # fastclr's backends first, and a cap whose fp32 chunked oracle takes seconds, not minutes
    # (at 2^20 rows it alone outlasted the stage on an H200).
    budget_max_rows=2**18,
    budget_impls=("triton", "cuda", "reference"),
    stage_deadline_s=45.0,
    stage_timeout_s=120.0,
    gpu_tests_timeout_s=240.0,
    batch_range=(256, 256),
    compile_model=False,
    compile_skip_reason="--lease: torch.compile of ResNet-50 takes minutes",
    loader_steps=3,
    data_batches=5,
)

DRY_SIZES = Sizes(
    loss_rows=(64,),
    loss_dims=(16,),
    loss_impls=("reference", "chunked", "triton", "cuda", "matmul-floor"),
    loss_target_s=0.01,
    loss_max_call_s=2.0,
    family_members=("dcl", "clip"),  # each measured case spawns a memory probe (~5 s on 2 cores)
    family_rows=(64,),
    family_dtypes=("float32",),
    family_deadline_s=60.0,
    budget_mib="1,device",
    budget_max_rows=256,
    budget_dtypes=("float32",),
    budget_impls=("reference", "chunked"),
    stage_deadline_s=60.0,
    stage_timeout_s=240.0,
    gpu_tests_timeout_s=240.0,
    arch="resnet18",  # the code path of ResNet-50's; bf16 ResNet-50 takes ~10 s a step on a CPU
    image_size=8,
    batch_range=(2, 2),
    warmup_steps=1,
    timed_steps=1,
    compile_model=False,
    compile_skip_reason="dry run: torch.compile of ResNet-50 takes minutes on a CPU",
    loader_steps=1,
    loader_workers=0,
    data_batches=1,
    gpu_test_workers=1,
)


@dataclass(frozen=True)
class Context:
    """One acceptance run. results_dir: bench/results (or --results); repo: the fastclr checkout
    whose tests/ and bench/ the stages run."""

    dry_run: bool
    device: torch.device
    results_dir: Path
    repo: Path
    sizes: Sizes

    @property
    def device_dir(self) -> Path:
        from fastclr.bench import environment

        return self.results_dir / environment.device_slug(self.device)

    @property
    def records_dir(self) -> Path:
        return self.device_dir / "acceptance"


def make_context(
    dry_run: bool, results_dir: Path | None, repo: Path, lease: bool = False
) -> Context:
    """The run's context; UsageError when there is no GPU (and no --dry-run) or no checkout.
    lease: LEASE_SIZES instead of GPU_SIZES (a dry run always has DRY_SIZES)."""
    if dry_run and lease:
        raise UsageError("--lease and --dry-run: choose one (a dry run has its own tiny sizes)")
    if not dry_run and not torch.cuda.is_available():
        raise UsageError(
            "no CUDA device visible (torch.cuda.is_available() is False): run it on a GPU "
            "machine, or pass --dry-run to check every stage on the CPU at tiny sizes"
        )
    repo = Path(repo)
    if not (repo / "bench" / "conftest.py").is_file() or not (repo / "tests").is_dir():
        raise UsageError(
            f"--repo {repo} is not a fastclr checkout (no bench/conftest.py or tests/): run it "
            "from the checkout's root or pass --repo"
        )
    if results_dir is None:  # a dry run's tiny figures stay out of the checkout's results
        results_dir = Path(tempfile.mkdtemp(prefix="fastclr-dry-run-")) if dry_run else None
        results_dir = results_dir or repo / "bench" / "results"
    device = torch.device("cpu" if dry_run else "cuda")
    sizes = DRY_SIZES if dry_run else LEASE_SIZES if lease else GPU_SIZES
    return Context(dry_run, device, Path(results_dir), repo, sizes)
