"""NT-Xent's primitives (fastclr/ops/chunked.py, the ones the kernels implement) are the family's
(fastclr/ops/family.py) at labels = image index, count 1, dL/dpos = -dL/dlse: the mapping a kernel
generalization follows. Checked on rectangular row sets (multi-GPU form) with odd sizes."""

import pytest
import torch
import torch.nn.functional as F

from fastclr.ops import chunked
from fastclr.ops.family import AnchorStats, family_backward_rows, family_forward_rows


@pytest.mark.parametrize("c,d,block", [(2, 3, None), (14, 5, 3), (30, 8, None)])
def test_nt_xent_primitives_are_the_family_special_case(c, d, block):
    zc = F.normalize(torch.randn(c, d, dtype=torch.float64), dim=1)
    row_ids = torch.randperm(c)[: max(1, c // 2 + 1)]
    zr, labels = zc[row_ids], torch.arange(c) % (c // 2)
    inv_temp = 1 / 0.3
    lse, pos, _ = chunked.forward_rows(zr, zc, row_ids, inv_temp, block)
    f_lse, f_pos, count = family_forward_rows(
        zr, zc, labels[row_ids], labels, inv_temp, row_ids=row_ids, block=block
    )
    torch.testing.assert_close(f_lse, lse)
    torch.testing.assert_close(f_pos, pos)
    assert (count == 1).all()

    lse_c, _, lse_neg_c = chunked.forward_rows(zc, zc, torch.arange(c), inv_temp)
    g_c = torch.randn(c, dtype=torch.float64)
    grad = chunked.backward_rows(zr, zc, row_ids, lse_c, lse_neg_c, g_c, inv_temp, block)
    ones = torch.ones(c, dtype=torch.int64)
    columns = AnchorStats(lse_c, g_c, -g_c, ones)
    rows = AnchorStats(lse_c[row_ids], g_c[row_ids], -g_c[row_ids], ones[row_ids])
    f_grad, _, _ = family_backward_rows(
        zr, zc, labels[row_ids], labels, inv_temp, rows, columns, row_ids=row_ids, block=block
    )
    torch.testing.assert_close(f_grad, grad)
