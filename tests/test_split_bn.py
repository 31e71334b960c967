"""Split BatchNorm (MoCo's shuffle BN on one process) against per-group nn.BatchNorm2d in float64:
outputs, gradients, running statistics; the conversion of a ResNet; MoCo's shuffled keys."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastclr.checkpoint import save_checkpoint
from fastclr.errors import UsageError
from fastclr.eval.backbone import load_trained_model
from fastclr.methods.moco import MoCo
from fastclr.methods.registry import build_method
from fastclr.methods.split_bn import SplitBatchNorm2d, split_batchnorm

TINY = {"arch": "resnet18", "stem": "cifar", "image_size": 8, "proj_hidden": 16, "queue_size": 8}


def reference_groups(x: torch.Tensor, splits: int, bn: nn.BatchNorm2d):
    """Each torch.tensor_split group through its own copy of `bn` (one rank each): outputs, copies."""
    copies = [nn.BatchNorm2d(bn.num_features, dtype=x.dtype) for _ in range(splits)]
    outputs = []
    for copy, group in zip(copies, x.tensor_split(splits), strict=True):
        copy.load_state_dict(bn.state_dict())
        outputs.append(copy(group))
    return torch.cat(outputs), copies


@pytest.mark.parametrize(("rows", "splits"), [(12, 4), (11, 3), (9, 4), (8, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_split_batch_norm_is_one_batch_norm_per_group(rows, splits, channels_last):
    torch.manual_seed(rows * 10 + splits)
    bn = nn.BatchNorm2d(5, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.normal_(), bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    split = SplitBatchNorm2d(5, splits, dtype=torch.float64)
    split.load_state_dict(bn.state_dict())
    x = torch.randn(rows, 5, 3, 2, dtype=torch.float64) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_ref = x.detach().clone().requires_grad_()
    x = x.requires_grad_()
    expected, copies = reference_groups(x_ref, splits, bn)
    got = split(x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(got)
    (got * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    expected_weight_grad = sum(c.weight.grad for c in copies)
    torch.testing.assert_close(split.weight.grad, expected_weight_grad, rtol=1e-10, atol=1e-12)
    # Running statistics: the mean of what each group's BN would hold (the ranks' average).
    mean = torch.stack([c.running_mean for c in copies]).mean(0)
    var = torch.stack([c.running_var for c in copies]).mean(0)
    torch.testing.assert_close(split.running_mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(split.running_var, var, rtol=1e-12, atol=1e-12)
    assert split.num_batches_tracked.item() == 1
    # Eval: BatchNorm2d from the running statistics.
    split.eval(), bn.eval()
    bn.load_state_dict(split.state_dict())
    torch.testing.assert_close(split(x.detach()), bn(x.detach()), rtol=0, atol=0)


def test_split_batch_norm_refuses_groups_of_one_row():
    with pytest.raises(ValueError, match="5 rows cannot make 3 groups of >= 2"):
        SplitBatchNorm2d(2, 3)(torch.randn(5, 2, 1, 1))


def test_split_batchnorm_converts_every_bn_and_keeps_the_tensors():
    model = build_method({**TINY, "method": "simclr"}).backbone
    before = model.state_dict(keep_vars=True)
    split_batchnorm(model, 4)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(type(m) is SplitBatchNorm2d and m.num_splits == 4 for m in bns)
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(before)
    assert all(after[name] is tensor for name, tensor in before.items())


def test_moco_keys_are_unshuffled_to_their_images():
    """With split BN the key pass sees the batch permuted; each key must come back to its row.
    In eval mode BN uses running statistics, so a key depends on its image alone."""
    moco = MoCo({**TINY, "bn_splits": 2}).eval()
    x = torch.randn(6, 3, 8, 8)
    expected = F.normalize(moco.key_head(moco.key_backbone(x)), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(moco._keys_of(x, step=3), expected, rtol=1e-5, atol=1e-6)


def test_moco_key_groups_are_shuffled_in_training():
    """In training a key's BN statistics come from a shuffled group, not its query's: keys differ
    from the unshuffled grouping's but are a function of the step (resume is exact)."""
    torch.manual_seed(0)
    moco = MoCo({**TINY, "bn_splits": 2})
    x = torch.randn(8, 3, 8, 8)
    with torch.no_grad():
        in_order = F.normalize(moco.key_head(moco.key_backbone(x)), dim=1)
        shuffled = moco._keys_of(x, step=5)
        again = moco._keys_of(x, step=5)
    assert not torch.allclose(shuffled, in_order, atol=1e-4)
    torch.testing.assert_close(shuffled, again, rtol=0, atol=0)


def test_moco_refuses_more_bn_groups_than_pairs_of_rows():
    moco = MoCo({**TINY, "bn_splits": 8})
    with pytest.raises(UsageError, match="--bn-splits 8 needs >= 2 images per BN group"):
        moco.check_data(num_images=100, batch_size=7)
    moco.check_data(num_images=100, batch_size=8)


def test_a_trained_moco_encoder_loads_with_plain_batch_norm(tmp_path):
    """Fine-tuning trains the loaded backbone: it must not keep MoCo's training-only split BN."""
    config = {**TINY, "method": "moco", "bn_splits": 2}
    moco = build_method(config)
    save_checkpoint({"model": moco.state_dict(), "config": config, "step": 1}, tmp_path, 1)
    loaded, _, _ = load_trained_model(tmp_path)
    assert not any(isinstance(m, SplitBatchNorm2d) for m in loaded.modules())
    for name, tensor in moco.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
