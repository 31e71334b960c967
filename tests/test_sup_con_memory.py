"""The family's spec never holds a C x C matrix: peak resident memory of forward+backward of
sup_con and clip_loss at M = 4096 rows, D = 64 on CPU, measured in a fresh subprocess as the growth
of the high-water mark (VmHWM) over the inputs' footprint, with a 4 MiB row-block budget (the method of test_nt_xent_memory.py),
with a positive control: the same measurement sees the float64 oracle's matrix."""

import json
import subprocess
import sys
import textwrap

import pytest

PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    import torch.nn.functional as F
    from fastclr.ops import clip_loss, family, sup_con

    def high_water_bytes():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    def oracle(z, labels):
        zh = F.normalize(z, dim=1)
        sim = zh @ zh.T / 0.1
        eye = torch.eye(len(z), dtype=torch.bool)
        log_prob = sim.masked_fill(eye, float("-inf")).log_softmax(1)
        positive = (labels[:, None] == labels[None, :]) & ~eye
        return -(torch.where(positive, log_prob, 0.0).sum(1) / positive.sum(1)).mean()

    torch.set_num_threads(2)
    member, m, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    family.BLOCK_BUDGET_BYTES = 4 * 2**20  # tiles of 32 x 4096 here: the extra is O(block * M)
    z = torch.randn(m, d, requires_grad=True)
    other = torch.randn(m, d, requires_grad=True)
    labels = torch.randint(0, 100, (m,))
    labels[:4] = torch.tensor([0, 0, 1, 1])  # the warm-up rows need a positive
    run = {
        "sup_con": lambda k: sup_con(z[:k], labels[:k]),
        "clip_loss": lambda k: clip_loss(z[:k], other[:k], torch.tensor(10.0, requires_grad=True)),
        "oracle": lambda k: oracle(z[:k], torch.zeros(k, dtype=torch.long)),
    }[member]
    run(4).backward()  # import and allocator warm-up
    before = high_water_bytes()
    run(m).backward()
    print(json.dumps({"extra_bytes": high_water_bytes() - before}))
    """
)


def peak_extra_bytes(member: str, m: int, d: int) -> int:
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, member, str(m), str(d)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])["extra_bytes"]


@pytest.mark.slow
@pytest.mark.parametrize("member", ["sup_con", "clip_loss"])
def test_peak_memory_is_far_below_one_matrix(member: str) -> None:
    m, d = 4096, 64
    matrix_bytes = m * m * 4  # one fp32 [M, M] matrix: 64 MiB
    extra = peak_extra_bytes(member, m, d)
    print(
        f"{member} peak extra: {extra / 2**20:.0f} MiB vs one MxM fp32 {matrix_bytes / 2**20:.0f}"
    )
    assert extra < matrix_bytes / 4


@pytest.mark.slow
def test_peak_measurement_sees_the_oracle_matrix() -> None:
    m = 2048
    assert peak_extra_bytes("oracle", m, 64) > m * m * 4
