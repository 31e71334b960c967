"""The methods' pieces against formulas written from the papers: MoCo's InfoNCE and queue, the
momentum update and BYOL's rate, BYOL's and SimSiam's losses and stop-gradients, multi-view and
supervised SimCLR, and the loading of checkpoints written before --method existed."""

import math

import pytest
import torch
import torch.nn.functional as F

from fastclr.checkpoint import save_checkpoint
from fastclr.errors import UsageError
from fastclr.eval.backbone import load_trained_model
from fastclr.methods.byol import normalized_mse
from fastclr.methods.moco import MoCo, info_nce
from fastclr.methods.momentum import cosine_momentum, ema_update, momentum_copy
from fastclr.methods.registry import build_method
from fastclr.methods.simsiam import negative_cosine
from fastclr.model import SimCLRModel
from fastclr.ops import nt_xent, sup_con

TINY = {"arch": "resnet18", "stem": "cifar", "image_size": 8, "proj_hidden": 16, "pred_hidden": 8}


def views(batch: int, count: int = 2) -> list[torch.Tensor]:
    return [torch.randn(batch, 3, 8, 8) for _ in range(count)]


def test_info_nce_is_moco_loss_in_float64():
    b, k, d, tau = 5, 7, 3, 0.2
    q, key, queue = (F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1) for n in (b, b, k))
    expected = []
    for i in range(b):
        pos = math.exp(float(q[i] @ key[i]) / tau)
        neg = sum(math.exp(float(q[i] @ queue[j]) / tau) for j in range(k))
        expected.append(-math.log(pos / (pos + neg)))
    got = info_nce(q.float(), key.float(), queue.float(), tau)
    assert got.item() == pytest.approx(sum(expected) / b, rel=1e-5)


def test_moco_queue_takes_the_newest_keys_and_wraps():
    moco = MoCo({**TINY, "queue_size": 6, "temperature": 0.2, "target_momentum": 0.9})
    before = moco.queue.clone()
    x = views(2)
    loss = moco(x, torch.zeros(2, dtype=torch.long), 0)
    keys = moco._keys.clone()  # [4, D]: both views' keys
    loss.backward()
    moco.after_step(0, 10)
    assert torch.equal(moco.queue[:4], keys) and torch.equal(moco.queue[4:], before[4:])
    assert moco.queue_ptr.item() == 4
    moco(views(2), torch.zeros(2, dtype=torch.long), 1)
    keys = moco._keys.clone()
    moco.after_step(1, 10)  # slots 4, 5, 0, 1
    assert torch.equal(moco.queue[[4, 5, 0, 1]], keys) and moco.queue_ptr.item() == 2


def test_moco_refuses_a_queue_larger_than_the_dataset():
    moco = MoCo({**TINY, "queue_size": 100})
    with pytest.raises(UsageError, match="--queue-size 100 is larger than the dataset"):
        moco.check_data(num_images=99, batch_size=8)
    moco.check_data(num_images=100, batch_size=8)


def test_ema_update_and_byol_rate():
    online = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    target = momentum_copy(online)
    assert not any(p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for t, o, p in zip(target.parameters(), old, online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * o + 0.1 * p)
    assert cosine_momentum(0.996, 0, 100) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 50, 100) == pytest.approx(0.998)
    assert cosine_momentum(0.996, 100, 100) == pytest.approx(1.0)


def test_byol_and_simsiam_losses_and_stop_gradient():
    p, z = torch.randn(6, 5, requires_grad=True), torch.randn(6, 5, requires_grad=True)
    cos = F.cosine_similarity(p.double(), z.double(), dim=1)
    assert normalized_mse(p, z).item() == pytest.approx((2 - 2 * cos).mean().item(), rel=1e-6)
    loss = negative_cosine(p, z)
    assert loss.item() == pytest.approx(-cos.mean().item(), rel=1e-6)
    loss.backward()
    assert z.grad is None and p.grad is not None  # sg(z): no gradient to the target branch


@pytest.mark.parametrize("method", ["byol", "moco"])
def test_target_encoders_get_no_gradient(method):
    model = build_method({**TINY, "method": method, "queue_size": 8})
    model(views(3), torch.zeros(3, dtype=torch.long), 0).backward()
    for name, param in model.named_parameters():
        target = name.startswith(("key_", "target_"))
        assert (param.grad is None) == target, name


def test_simclr_multi_view_and_supcon_use_sup_con():
    torch.manual_seed(0)
    model = build_method({**TINY, "method": "simclr", "proj_hidden": None, "temperature": 0.3})
    model.eval()  # BN from running statistics: the same rows in every forward
    x = views(4, 3)
    with torch.no_grad():
        z = model.head(model.backbone(torch.cat(x)))
        z_views = z.unflatten(0, (3, 4)).transpose(0, 1)
        multi = sup_con(z_views, torch.arange(4), 0.3)
        labels = torch.tensor([0, 1, 0, 1])
        supervised = sup_con(z_views, labels, 0.3)
        two = nt_xent(*z[:8].chunk(2), 0.3)
        torch.testing.assert_close(model(x, labels, 0), multi)
        torch.testing.assert_close(model(x[:2], labels, 0), two)
        model.loss_kind = "supcon"
        torch.testing.assert_close(model(x, labels, 0), supervised)
        model._labels_checked = False  # checked once per run: as in a fresh run
        with pytest.raises(UsageError, match="--loss supcon needs class labels"):
            model(x, torch.tensor([0, -1, 0, 1]), 0)


def test_simsiam_predictor_is_the_fixed_lr_group():
    from fastclr.optim import build_optimizer

    model = build_method({**TINY, "method": "simsiam"})
    optimizer = build_optimizer(
        "sgd", model, lr=0.1, weight_decay=1e-4, fixed_lr=model.fixed_lr_parameters()
    )
    fixed = {id(p) for g in optimizer.param_groups if g.get("fixed_lr") for p in g["params"]}
    assert fixed == {id(p) for p in model.predictor.parameters()}
    everything = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert everything == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("method", ["byol", "simsiam"])
def test_pred_lr_scale_holds_the_predictor_at_that_multiple_of_the_peak(method):
    from fastclr.optim import build_optimizer
    from fastclr.train.epoch import set_learning_rate

    model = build_method({**TINY, "method": method, "pred_lr_scale": 10.0})
    optimizer = build_optimizer(
        "lars", model, lr=0.1, weight_decay=1e-6, fixed_lr=model.fixed_lr_parameters(),
        fixed_lr_scale=model.fixed_lr_scale,
    )  # fmt: skip
    set_learning_rate(optimizer, lr=0.03, peak_lr=0.2)  # mid-schedule: 0.03 of a 0.2 peak
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    predictor = {id(p) for p in model.predictor.parameters()}
    assert [lrs[i] for i in predictor] == pytest.approx([2.0] * len(predictor))
    assert {lr for i, lr in lrs.items() if i not in predictor} == {0.03}
    assert len(lrs) == sum(p.requires_grad for p in model.parameters())  # not the target


def test_byol_predictor_follows_the_schedule_unless_given_a_scale():
    assert build_method({**TINY, "method": "byol"}).fixed_lr_parameters() == []  # the paper
    assert (
        build_method({**TINY, "method": "byol", "pred_lr_scale": 0.0}).fixed_lr_parameters() == []
    )
    simsiam = build_method({**TINY, "method": "simsiam"})  # the paper's fix_pred_lr: 1 x the peak
    assert simsiam.fixed_lr_scale == 1.0 and simsiam.fixed_lr_parameters()
    scheduled = build_method({**TINY, "method": "simsiam", "pred_lr_scale": 0.0})  # its ablation
    assert scheduled.fixed_lr_parameters() == []


def test_fixed_lr_groups_of_checkpoints_before_the_scale_stay_at_the_peak():
    from fastclr.train.epoch import set_learning_rate

    weight = torch.nn.Parameter(torch.ones(2, 2))
    optimizer = torch.optim.SGD([{"params": [weight], "fixed_lr": True}], lr=0.1)  # no scale key
    set_learning_rate(optimizer, lr=0.01, peak_lr=0.1)
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_checkpoint_from_before_methods_loads_as_simclr(tmp_path):
    old = SimCLRModel("resnet18", "cifar", 128, 2, 8)
    config = {"arch": "resnet18", "stem": "cifar", "proj_dim": 128, "image_size": 8}
    save_checkpoint({"model": old.state_dict(), "config": config, "step": 1}, tmp_path, 1)
    model, _, _ = load_trained_model(tmp_path)
    assert model.name == "simclr"
    for name, tensor in old.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_simclr_head_ends_in_batch_norm_with_proj_last_bn_as_simclrs_code():
    """google-research/simclr's projection head: the last Linear has no bias and a BN follows."""
    from fastclr.train.config import TrainConfig, resolve_config

    resolved, _ = resolve_config(TrainConfig(data="synthetic:24"), restart_count=0)
    assert resolved.proj_last_bn is False  # the default: SimCLR v1's head, as before
    without = build_method({**resolved.to_dict(), **TINY}).head.net
    assert isinstance(without[-1], torch.nn.Linear) and without[-1].bias is not None
    head = build_method({**resolved.to_dict(), **TINY, "proj_last_bn": True}).head.net
    assert isinstance(head[-1], torch.nn.BatchNorm1d) and head[-2].bias is None
    z = head(torch.randn(37, head[0].in_features))  # train mode: batch statistics
    torch.testing.assert_close(z.mean(0), torch.zeros(z.shape[1]), atol=1e-5, rtol=0)


def test_resuming_a_run_from_before_the_heads_batch_norm_names_the_flag(tmp_path):
    from fastclr.train.config import TrainConfig, resolve_config
    from fastclr.train.run import check_resumable

    cfg, _ = resolve_config(
        TrainConfig(data="synthetic:24", out=str(tmp_path), proj_last_bn=True), restart_count=0
    )
    old = {k: v for k, v in cfg.to_dict().items() if k != "proj_last_bn"}  # written before it
    with pytest.raises(UsageError, match="proj_last_bn: False -> True.*--no-proj-last-bn"):
        check_resumable(cfg, {"config": old})
    default, _ = resolve_config(
        TrainConfig(data="synthetic:24", out=str(tmp_path)), restart_count=0
    )
    check_resumable(default, {"config": old})  # the old head, the default: resumes
    moco, _ = resolve_config(TrainConfig(data="synthetic:24", method="moco", queue_size=16),
                             restart_count=0)  # fmt: skip
    check_resumable(moco, {"config": {k: v for k, v in moco.to_dict().items()
                                      if k != "proj_last_bn"}})  # fmt: skip  # never read by MoCo
