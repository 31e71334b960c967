"""Run: one training run's parts (loader, model, optimizer, schedule), where it stands, and its folder.

`Run.start(cfg, env)` checks everything that can refuse the run first (the folder, the checkpoint to
resume and whether it fits this config), and only then writes <out>/config.json, builds the parts
and loads the checkpoint. `run.save(...)` writes a checkpoint. Every read and write of the run
folder happens here.

With env.world_size > 1: the projection head's BN becomes SyncBatchNorm (SimCLR's global BN), the
model is wrapped in DDP, each rank loads its own shard of every global batch, and only rank 0 writes
config.json and checkpoints (checkpoints hold every rank's RNG state, so a mid-epoch resume redraws
each rank's augmentations exactly).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fastclr import checkpoint
from fastclr.distributed.batchnorm import convert_sync_batchnorm
from fastclr.distributed.env import DistEnv
from fastclr.errors import UsageError
from fastclr.methods.registry import build_method
from fastclr.optim import build_optimizer, build_schedule
from fastclr.run_lock import hold_run_folder
from fastclr.train.config import TrainConfig
from fastclr.train.logging import RunLogger
from fastclr.train.seeding import seed_everything

# Fields that fix the network's shapes: a checkpoint with different values cannot be resumed.
SHAPE_FIELDS = (
    "method", "arch", "stem", "proj_dim", "proj_layers", "proj_hidden", "pred_hidden",
    "prototypes", "queue_size", "image_size", "proj_last_bn",
)  # fmt: skip
# What checkpoints written before a shape field existed hold for it (the one fixed value then;
# proj_last_bn: SimCLR's head had no output BN, the other methods never read the field).
SHAPE_FIELDS_BEFORE = {"method": "simclr", "proj_layers": 2, "proj_last_bn": None}
SHAPE_FIELDS_BEFORE_BY_METHOD = {"simclr": {"proj_last_bn": False}}
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


class NonFiniteLossError(RuntimeError):
    """The loss or the weights became NaN or Inf; the message says what to try."""


def resolve_device(cfg: TrainConfig, env: DistEnv) -> torch.device:
    """--device, with a bare "cuda" meaning this rank's GPU; "auto": the device env chose."""
    if cfg.device == "auto":
        return torch.device(env.device)
    device = torch.device(cfg.device)
    if device.type == "cuda" and device.index is None and env.world_size > 1:
        device = torch.device("cuda", env.local_rank)
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def augment_config(cfg: TrainConfig):
    """The data's default augmentation for cfg.image_size with cfg.crop_scale as the crop floor
    and cfg.flip_p as the flip probability, and the views the method trains on: cfg.views global
    views, cfg.local_views small ones of side cfg.local_size (default: AugmentConfig's, 96/224 of the image size as SwAV's 224 + 96 px
    crops), and the global views' own blur and solarization probabilities (cfg.view_blur_p,
    cfg.view_solarize_p: BYOL's asymmetric views). The view fields are passed only when they
    differ from the two-view default."""
    from fastclr.data import AugmentConfig

    default = AugmentConfig.for_image_size(cfg.image_size)
    views: dict[str, Any] = {}  # the fields that differ from the default
    if cfg.views != 2:
        views["num_views"] = cfg.views
    if cfg.local_views:
        views["local_views"] = cfg.local_views
    if cfg.local_size is not None:
        views["local_size"] = cfg.local_size
    if cfg.crop_scale is not None:
        views["scale"] = (cfg.crop_scale, default.scale[1])
    if cfg.flip_p is not None:
        views["flip_p"] = cfg.flip_p
    for name in ("view_blur_p", "view_solarize_p"):
        if getattr(cfg, name) is not None:
            views[name] = getattr(cfg, name)
    return dataclasses.replace(default, **views)


def find_resume_state(cfg: TrainConfig) -> tuple[Path, dict[str, Any]] | None:
    """(path, state) of the checkpoint to continue from, or None to start fresh.

    The main rank has already refused folders this run would mix with (check_run_folder)."""
    if cfg.resume == "none":
        return None
    if cfg.resume == "auto":
        return checkpoint.load_latest(cfg.out)
    return checkpoint.load_resume_checkpoint(cfg.resume)


def check_resumable(cfg: TrainConfig, state: dict[str, Any]) -> None:
    """UsageError if the checkpoint cannot continue under `cfg`: another network, or another
    global batch (which changes the steps per epoch, the position inside the epoch and the
    learning-rate schedule, so the checkpoint's step count would mean something else)."""
    method = state["config"].get("method", SHAPE_FIELDS_BEFORE["method"])
    before = {**SHAPE_FIELDS_BEFORE, **SHAPE_FIELDS_BEFORE_BY_METHOD.get(method, {})}
    saved = {**before, **state["config"]}
    different = [f for f in SHAPE_FIELDS if saved.get(f) != getattr(cfg, f)]
    if different:
        details = ", ".join(f"{f}: {saved.get(f)} -> {getattr(cfg, f)}" for f in different)
        same_flag = (
            ", or --no-proj-last-bn to continue it with its head"
            if different == ["proj_last_bn"] and saved["proj_last_bn"] is False
            else ""
        )
        raise UsageError(
            f"cannot resume {cfg.out}: the checkpoint's network differs ({details}); "
            f"pass --out NEW_FOLDER (or --resume none) to train a new model{same_flag}"
        )
    if saved.get("batch_size") != cfg.batch_size:
        raise UsageError(
            f"cannot resume {cfg.out} with --batch-size {cfg.batch_size}: it was trained with "
            f"--batch-size {saved.get('batch_size')} (its step count, place in the epoch and "
            f"learning-rate schedule depend on it); pass --batch-size {saved.get('batch_size')} "
            "to continue it, or --out NEW_FOLDER to train with the new batch size"
        )


def weights_finite(model: nn.Module) -> bool:
    """Whether every parameter is finite: one fused norm pass and one host sync."""
    norms = torch._foreach_norm([p.detach() for p in model.parameters()])
    return bool(torch.stack(norms).isfinite().all())


class Run:
    """What one run trains and where it stands.

    Parts: loader, raw_model (the fastclr.methods Method), model (what steps call: compiled and/or DDP),
    optimizer, schedule, scaler, amp (autocast context or a null one), memory_format.
    Position: step (optimizer steps done), epoch, step_in_epoch; resume_rng: this rank's RNG state
    to restore after redrawing the first `step_in_epoch` batches of a resumed epoch (else None).
    """

    def __init__(self, cfg: TrainConfig, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg, env)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.amp_dtype = AUTOCAST_DTYPES[self.precision]
        self.logger = RunLogger(self.out, enabled=env.is_main, tensorboard=cfg.tensorboard)
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.resume_rng: dict[str, Any] | None = None
        self.last_checkpoint = "none (no checkpoint written yet)"
        self.held = contextlib.ExitStack()  # the run folder's lock, on the main rank

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.logger.close()
        self.held.close()

    @classmethod
    def start(cls, cfg: TrainConfig, env: DistEnv) -> Run:
        """Lock the folder, check, then write config.json and build; resume if a checkpoint says
        so. Use as `with Run.start(cfg, env) as run:` so the lock is released at the end.

        One run per folder: the main rank, the only writer, holds <out>/fastclr.lock (its pid and
        host) for the whole run; a second run into the same folder is refused meanwhile.
        """
        held = contextlib.ExitStack()
        created = not Path(cfg.out).exists()
        if env.is_main:
            held.enter_context(hold_run_folder(cfg.out))
        try:
            run = cls._start_holding_folder(cfg, env)
        except BaseException:
            held.close()
            if created and env.is_main:  # a refused run leaves no folder it made for its lock
                with contextlib.suppress(OSError):
                    Path(cfg.out).rmdir()  # only if empty: nothing of another run is lost
            raise
        run.held = held
        return run

    @classmethod
    def _start_holding_folder(cls, cfg: TrainConfig, env: DistEnv) -> Run:
        if (
            env.is_main
        ):  # checkpoints of another run, or only unreadable ones: refuse, write nothing
            checkpoint.check_run_folder(cfg.out, cfg.resume)
        if cfg.batch_size % env.world_size:
            raise UsageError(
                f"--batch-size {cfg.batch_size} does not divide among {env.world_size} ranks: "
                f"pass a multiple of {env.world_size}"
            )
        found = find_resume_state(cfg)
        if found is not None:
            check_resumable(cfg, found[1])
        run = cls(cfg, env)
        if run.precision in ("bf16", "fp16") and run.device.type == "cpu":
            run.logger.print(
                "note: CPU autocast is slow here (no bf16/fp16 units); --precision fp32 is faster"
            )
        if env.is_main:  # only after every check passed: a refused run leaves the folder as it was
            run.out.mkdir(parents=True, exist_ok=True)
            (run.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        run.build()
        if found is not None:
            run.load(*found)
        return run

    def build(self) -> None:
        """Loader, model, optimizer, schedule, scaler; the same initial weights on every rank."""
        from fastclr.data import build_train_loader

        cfg, device, world_size = self.cfg, self.device, self.env.world_size
        self.loader = build_train_loader(
            cfg.data,
            batch_size=cfg.batch_size // world_size,
            image_size=cfg.image_size,
            loader=cfg.loader,
            device=device,
            dtype=self.amp_dtype or torch.float32,
            seed=cfg.seed,
            rank=self.env.rank,
            world_size=world_size,
            strict=False,
            augment=augment_config(cfg),
            **({} if cfg.workers is None else {"num_workers": cfg.workers}),
        )
        self.steps_per_epoch = len(self.loader)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.stop_at = (
            min(self.total_steps, cfg.max_steps) if cfg.max_steps > 0 else self.total_steps
        )
        seed_everything(cfg.seed)  # the initial weights: the same seed on every rank
        raw_model = build_method({**cfg.to_dict(), "steps_per_epoch": self.steps_per_epoch})
        raw_model.check_data(self.loader.num_images, cfg.batch_size)
        if not cfg.channels_last:
            raw_model = raw_model.to(memory_format=torch.contiguous_format)
        if world_size > 1:  # the heads' BN sees the whole batch (SimCLR's global BN)
            for name in raw_model.global_bn:
                setattr(raw_model, name, convert_sync_batchnorm(getattr(raw_model, name), device))
        self.raw_model = raw_model.to(device)
        self.optimizer = build_optimizer(
            cfg.optimizer, raw_model, lr=cfg.lr, weight_decay=cfg.weight_decay,
            momentum=cfg.momentum, fixed_lr=raw_model.fixed_lr_parameters(),
            fixed_lr_scale=raw_model.fixed_lr_scale,
        )  # fmt: skip
        self.schedule = build_schedule(
            base_lr=cfg.lr,
            batch_size=cfg.batch_size,
            epochs=cfg.epochs,
            steps_per_epoch=self.steps_per_epoch,
            warmup_epochs=cfg.warmup_epochs,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        if cfg.compile:  # the encoders only: the methods' steps hold queues, collectives, ints
            for name, module in raw_model.named_children():
                if name.endswith("backbone"):
                    module.compile()  # in place: state_dict keys unchanged
        model: nn.Module = raw_model
        if world_size > 1:
            device_ids = [device.index] if device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=device_ids, gradient_as_bucket_view=True
            )
        self.model = model
        self.amp = (
            torch.autocast(device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    def load(self, path: Path, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimizer, scaler, position and RNG state."""
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        rng_states = state["rng"]
        # Another world size: each rank's stream cannot be matched; rank 0's is the best guess.
        same_world = len(rng_states) == self.env.world_size
        self.resume_rng = rng_states[self.env.rank] if same_world else rng_states[0]
        self.last_checkpoint = str(path)
        self.logger.print(f"resumed from step {self.step} (epoch {self.epoch + 1}) in {self.out}")

    def skip_trained_batches(self, batches: Iterator[Any]) -> None:
        """In a resumed epoch: draw the batches the checkpoint had trained on (the same (seed,
        epoch) redraws the same ones), then restore the RNGs as they were when it was written."""
        if self.step_in_epoch == 0:
            return
        for _ in range(self.step_in_epoch):
            next(batches)
        checkpoint.restore_rng_state(self.resume_rng)

    def nonfinite_message(self, what: str) -> str:
        cfg, epoch = self.cfg, (self.step - 1) // self.steps_per_epoch  # the last step's epoch
        temperature = (
            f", a higher --temperature (now {cfg.temperature})"
            if cfg.temperature is not None
            else ""
        )
        return (
            f"{what} at step {self.step} (epoch {epoch + 1}); training stopped. The last good "
            f"checkpoint is {self.last_checkpoint}. Try: a lower --lr (now {cfg.lr}), "
            f"--precision fp32 (now {cfg.precision}){temperature}, or a longer --warmup-epochs "
            f"(now {cfg.warmup_epochs})."
        )

    def save(self, epoch: int, step_in_epoch: int) -> None:
        """Checkpoint the run at (epoch, step_in_epoch). Collective: every rank calls it."""
        # A finite loss was computed before the last update: check the updated weights too, so
        # no checkpoint ever holds NaN/Inf.
        if not weights_finite(self.raw_model):
            raise NonFiniteLossError(self.nonfinite_message("the weights became NaN/Inf"))
        rng = gather_rng_states(self.env)
        if self.env.is_main:
            path = checkpoint.save_checkpoint(
                {
                    "model": self.raw_model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "step": self.step,
                    "epoch": epoch,
                    "step_in_epoch": step_in_epoch,
                    "rng": rng,
                    "config": self.cfg.to_dict(),
                },
                self.out,
                self.step,
                keep=self.cfg.keep_checkpoints,
            )
            self.last_checkpoint = str(path)


def gather_rng_states(env: DistEnv) -> list[dict[str, Any]]:
    """Every rank's RNG state (checkpointed by rank 0): a mid-epoch resume needs all of them."""
    state = checkpoint.capture_rng_state()
    if env.world_size == 1:
        return [state]
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, state)
    return gathered
