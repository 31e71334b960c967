"""`fastclr bench gpu`: the GPU acceptance run, one command from a bare GPU machine to a results folder.

Stages, in order (one module each; every stage < 5 min on an H100, the whole run <= 10 min):

    env        versions, device name, clocks and memory              (environment_stage.py)
    gpu-tests  pytest -m gpu tests/; if it fails, the measuring stages are not run (gpu_tests.py)
    loss-bf16  the loss grid of bench/ (correctness-gated timing, peak memory) in one dtype
    loss-fp16    (loss.py, through bench/conftest.py's harness in a pytest subprocess)
    loss-fp32
    family     sup_con, DCL, DCLW, CLIP (default backend) vs pytorch-metric-learning, lightly and
               OpenCLIP: checked, then time and peak memory, M 4096 and 16384, bf16 and fp32
               (loss.py runs bench/test_bench_family.py; a peer that does not import: its cases
               are recorded as unavailable, with the reason, in the stage record)
    budget     largest 2N whose forward+backward fits 1 GiB and the whole device, up to 2^20
    train      ResNet-50 training step images/s: eager, torch.compile, torchvision loader (train.py)
    data       DALI GPU augmentation images/s, or why DALI does not import           (data.py)
    report     bench/results/REPORT.md with PNG plots and the static estimates     (report_stage.py)

runner.py runs them: each stage's outcome (status, seconds, error, what it wrote) is a JSON file
bench/results/<device>/acceptance/<stage>.json; a stage whose record says it finished is skipped on
the next run unless --force, so a run cut short resumes where it stopped. A stage that fails records
its error and the run goes on (except after gpu-tests: a fast kernel that is wrong is worthless).
`--dry-run` runs every stage, writer and the report on the CPU at tiny sizes (tests/ runs it).
"""

# The stages in run order (runner.STAGES holds them; named here so the CLI needs no torch import).
STAGE_NAMES = (
    "env",
    "gpu-tests",
    "loss-bf16",
    "loss-fp16",
    "loss-fp32",
    "family",
    "budget",
    "train",
    "data",
    "report",
)
