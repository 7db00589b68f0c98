"""One training stage (report §2.4): pre-train on Clotho-Moment or fine-tune on CASTELLA.

``train_stage`` runs the epochs of one stage, validates after each with the official metrics,
keeps ``best.pt`` (highest val R1@0.7) and ``last.pt`` (everything needed to resume), and logs
per-epoch scalars with dvclive. Re-running the same call after an interruption continues from
``last.pt``; a run whose identity differs (configuration, data, initial weights or code, see
:mod:`amr.engine.identity`) is refused rather than silently mixed, or with
``restart_on_mismatch`` (the pipeline) started over.

Determinism: the same seed, data, configuration and code give bit-identical weights on CPU,
whether the run was interrupted or not. Every source of randomness is either seeded per epoch
(data order, DataLoader worker seeds, window re-sampling) or checkpointed (python / numpy / torch
global RNG states, which drive dropout and denoising noise).

Run under ``torchrun --nproc_per_node N`` it trains with DistributedDataParallel: each rank
sees 1/N of every epoch, so the effective batch is N x batch_size. Only rank 0 validates and
writes files; the other ranks wait at a barrier.
"""
from __future__ import annotations

import math
import os
import platform
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from amr.config.schema import ScheduleConfig, SystemConfig, TrainConfig, to_dict
from amr.engine.checkpoint import (
    PickledCheckpointError,
    atomic_save,
    capture_rng_state,
    describe_differences,
    load_checkpoint,
    restore_rng_state,
    weights_digest,
)
from amr.engine.cpu_memory import keep_freed_memory
from amr.engine.distributed import DistContext, setup
from amr.engine.identity import identity_hash, run_identity
from amr.engine.loop import (
    TrainError,
    build_optimizer,
    enabled_loss_terms,
    train_one_epoch,
    validate,
)
from amr.engine.progress import MetricLog, make_reporter
from amr.evaluation.ranking import collapse_warning
from amr.util.io import write_json

STAGES = ("pretrain", "finetune")
PRIMARY_METRIC = "R1@0.7"
CHECKPOINT_FORMAT = 3  # 3: plain values only (weights-only loadable)
__all__ = ["STAGES", "TrainError", "train_stage"]


# ---------------------------------------------------------------------------------------------
# Seeding
# ---------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def enable_determinism(device: torch.device) -> None:
    if device.type == "cuda":
        # cuBLAS needs a fixed workspace to be deterministic; must be set before its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        # a few CUDA kernels (scatter/index_add backward) have no deterministic version: warn
        torch.set_deterministic_debug_mode("warn")
    else:
        torch.set_deterministic_debug_mode("error")
    # = use_deterministic_algorithms(True[, warn_only]) without its import of torch._inductor
    # (seconds per stage), whose setting only matters to torch.compile, which amr does not use


def _worker_init(worker_id: int) -> None:
    # torch already seeds each worker from the (per-epoch seeded) loader generator;
    # derive python/numpy seeds from it so that they are per-epoch deterministic too
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


# ---------------------------------------------------------------------------------------------
# The pieces of a run
# ---------------------------------------------------------------------------------------------
@dataclass
class Progress:
    """Where a run stands; saved in ``last.pt`` and restored on resume."""

    epoch: int = 0  # epochs done
    best: dict = field(default_factory=lambda: {"epoch": None, "score": -math.inf, "metrics": None})
    history: list = field(default_factory=list)
    loss_terms: set = field(default_factory=set)


@dataclass
class Loaders:
    train_set: object
    sampler: DistributedSampler
    train: DataLoader
    generator: torch.Generator
    val: DataLoader
    gt: list[dict]


@dataclass
class Trainee:
    """The model being trained, its criterion and optimiser (``train_model``: the DDP wrapper
    when distributed, else the model itself)."""

    model: torch.nn.Module
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: list  # what the optimiser updates and the gradient clip covers
    train_model: torch.nn.Module


def _resume_or_start(ctx: DistContext, out_dir: Path, identity: dict, run_hash: str, epochs: int,
                     restart: bool, restart_on_mismatch: bool) -> dict | None:
    """``last.pt`` when it continues this run; None for a fresh start (clearing the folder
    on ``restart``, or on a changed identity with ``restart_on_mismatch``).

    A run trained for more than ``epochs`` is not this run: its weights and its best epoch
    saw epochs that were not asked for, and cannot be taken back.
    """
    last_path = out_dir / "last.pt"
    if ctx.is_main:
        if restart:
            _clear_run_dir(out_dir)
        for stale in out_dir.glob(".*.tmp"):  # left by a kill in the middle of a save
            stale.unlink(missing_ok=True)
    ctx.barrier()
    try:
        resume = load_checkpoint(last_path) if last_path.is_file() else None
    except PickledCheckpointError as exc:
        if not restart_on_mismatch:
            raise TrainError(str(exc)) from None
        resume, differences = {}, "written by an older amr, with pickled objects"
    else:
        if resume is None:
            return None
        if resume.get("config_hash") != run_hash:
            differences = describe_differences(resume.get("identity", {}), identity)
        elif resume["epoch"] > epochs:
            differences = f"epochs: {resume['epoch']} trained -> {epochs} asked"
        else:
            return resume
    if restart_on_mismatch:
        # a pipeline re-runs a stage because its inputs changed: start over, do not refuse
        if ctx.is_main:
            print(f"{last_path}: the run changed ({differences}); starting over", flush=True)
            _clear_run_dir(out_dir)
        ctx.barrier()
        return None
    raise TrainError(
        f"{last_path}: written by another run, so it cannot be resumed; differences "
        f"(saved -> now): {differences}. To start over, delete {out_dir} or pass --restart"
    )


def _loaders(system_cfg: SystemConfig, train_cfg: TrainConfig, train_h5: Path, val_h5: Path,
             seed: int, ctx: DistContext, workers: int, in_memory: bool) -> Loaders:
    from amr.data.dataset import MomentDataset, collate_moments, eval_loader
    from amr.engine.predict import ground_truth_records

    seed_everything(seed)
    train_set = MomentDataset(train_h5, system_cfg.data, train=True, seed=seed, in_memory=in_memory,
                              saliency_windows=system_cfg.loss.saliency_windows,
                              saliency_pairs=system_cfg.loss.saliency_pairs)
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=seed, drop_last=False)
    generator = torch.Generator()
    train_loader = DataLoader(
        train_set, batch_size=train_cfg.batch_size, sampler=sampler, num_workers=workers,
        collate_fn=collate_moments, generator=generator, worker_init_fn=_worker_init,
        pin_memory=ctx.device.type == "cuda", persistent_workers=False,
    )
    # every rank checks the validation split (metadata only), so that a bad one stops all
    val_set = MomentDataset(val_h5, system_cfg.data, train=False, seed=seed)
    gt = ground_truth_records(val_set)
    if not gt:
        raise TrainError(f"{val_h5}: no query has a window, so it cannot validate; "
                         "pass a split with ground truth as --val")
    return Loaders(train_set, sampler, train_loader, generator,
                   eval_loader(val_set, train_cfg.eval_batch_size, workers), gt)


def _load_init_weights(model: torch.nn.Module, path: Path) -> None:
    """Fine-tuning starts from the pre-trained model weights only (no optimiser, no RNG)."""
    ckpt = load_checkpoint(path)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise TrainError(
            f"{path}: its weights do not fit this system ({exc}); initialise from a "
            "checkpoint of the same system (same --system)"
        ) from None


def _trainee(system_cfg: SystemConfig, train_cfg: TrainConfig, schedule: ScheduleConfig,
             ctx: DistContext, init_from: Path | None, resume: dict | None) -> tuple[Trainee, Progress]:
    """Model, criterion and AdamW: fresh (from ``init_from`` when fine-tuning) or resumed."""
    from amr.losses import build_criterion
    from amr.model import build_model

    model = build_model(system_cfg)
    criterion = build_criterion(system_cfg)
    if init_from is not None and resume is None:
        _load_init_weights(model, init_from)
    model.to(ctx.device)
    criterion.to(ctx.device)
    params = [p for m in (model, criterion) for p in m.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, schedule.lr, train_cfg.weight_decay, ctx.device)
    state = Progress()
    if resume is not None:
        model.load_state_dict(resume["model"])
        if resume.get("criterion") is not None:
            criterion.load_state_dict(resume["criterion"])
        optimizer.load_state_dict(resume["optimizer"])
        state = Progress(resume["epoch"], resume["best"], resume.get("history", []),
                         set(resume.get("loss_terms", [])))
    train_model = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # components can be inactive in a step (e.g. no target window for a branch)
        train_model = DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    return Trainee(model, criterion, optimizer, params, train_model), state


def _save_checkpoints(out_dir: Path, trainee: Trainee, run_record: dict, state: Progress,
                      metrics: dict, improved: bool, rng_states: list) -> None:
    """``best.pt`` when the epoch improved, and ``last.pt`` (all that resuming needs)."""
    common = {**run_record, "model": _cpu_state(trainee.model), "epoch": state.epoch,
              "loss_terms": sorted(state.loss_terms)}
    if improved:
        atomic_save({**common, "metrics": metrics}, out_dir / "best.pt")
    has_params = any(p.requires_grad for p in trainee.criterion.parameters())  # rarely any
    atomic_save({
        **common,
        "criterion": _cpu_state(trainee.criterion) if has_params else None,
        "optimizer": trainee.optimizer.state_dict(),
        "rng": rng_states,
        "best": state.best,
        "history": state.history,
    }, out_dir / "last.pt")


def _system_info(trainee: Trainee, run_record: dict, state: Progress) -> dict:
    """``system_info.json``: what the submission needs, and what produced these weights."""
    from amr.model import count_parameters
    from amr.model.detector import cpu_kernels_in_use
    from amr.model.mamba import scan_paths

    counts = count_parameters(trainee.model)  # the criterion holds no parameters of its own
    return {
        "trainable_parameters": counts["trainable"],
        "frozen_parameters": counts["total"] - counts["trainable"],
        "loss_function": enabled_loss_terms(trainee.criterion.weight_dict, state.loss_terms),
        "ensemble": False,
        "members": 1,
        # enough to tell two runs apart, and to run one again
        "code_digest": run_record["identity"]["code"],
        "config_hash": run_record["config_hash"],
        "config": {"system": run_record["system_config"], "train": run_record["train_config"],
                   "schedule": run_record["schedule"], "stage": run_record["stage"],
                   "seed": run_record["seed"]},
        "software": {"python": platform.python_version(), "torch": torch.__version__,
                     "mamba_ssm": _installed_version("mamba-ssm")},
        # how this process ran the Mamba scans (empty without Mamba): mamba-ssm's CUDA kernel,
        # amr's C kernel or amr's torch ops
        "selective_scan": scan_paths(trainee.model),
        # model.cpu_kernels as it ran on this machine: native (C kernels) or torch
        "cpu_kernels": cpu_kernels_in_use(trainee.model),
    }


def _kernels_line(model: torch.nn.Module, choice: str) -> str:
    """Which CPU kernels run (model.cpu_kernels), and why when ``auto`` fell back to torch."""
    from amr.kernels import native
    from amr.model.detector import cpu_kernels_in_use

    used = cpu_kernels_in_use(model)
    line = f"CPU kernels: {used} (model.cpu_kernels: {choice})"
    if used == "torch" and choice != "torch" and native.build_error() is not None:
        line += f"; the C kernels did not build: {str(native.build_error()).splitlines()[0]}"
    return line


def _installed_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _clear_run_dir(out_dir: Path) -> None:
    for name in ("last.pt", "best.pt", "metrics.json", "system_info.json"):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "dvclive", ignore_errors=True)


def _summary(stage, seed, epochs_done, epochs, progress: Progress) -> dict:
    return {
        "stage": stage,
        "seed": seed,
        "epochs_done": epochs_done,
        "epochs": epochs,
        "best_epoch": progress.best["epoch"],
        "best": progress.best["metrics"],
        "primary_metric": PRIMARY_METRIC,
        "last": progress.history[-1]["val"] if progress.history else None,
        "seconds": round(sum(h["seconds"] for h in progress.history), 3),
    }


def _epoch_line(stage, epoch, epochs, train_means, metrics, best) -> str:
    return (
        f"{stage} epoch {epoch + 1}/{epochs}  loss {train_means.get('loss', float('nan')):.4f}  "
        f"val R1@0.5 {metrics['R1@0.5']:.2f} R1@0.7 {metrics['R1@0.7']:.2f} "
        f"mAP {metrics['mAP']:.2f}  best R1@0.7 {best['score']:.2f} (epoch {best['epoch']})"
    )


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------
def train_stage(
    system_cfg: SystemConfig,
    train_cfg: TrainConfig,
    schedule: ScheduleConfig,
    stage: str,
    train_h5: str | Path,
    val_h5: str | Path,
    out_dir: str | Path,
    init_from: str | Path | None = None,
    seed: int | None = None,
    restart: bool = False,
    workers: int = 0,
    in_memory: bool = False,
    progress: str = "auto",
    restart_on_mismatch: bool = False,
) -> dict:
    """Train one stage; return the final summary (also written to ``out_dir/metrics.json``).

    Files in ``out_dir``: ``best.pt``, ``last.pt``, ``metrics.json``, ``system_info.json``
    (parameter counts, loss terms, and the run's configuration and code digest), ``dvclive/``.
    ``progress``: ``auto`` (bar on a terminal, else one line per epoch), ``plain``, ``rich`` or
    ``none``.
    """
    if stage not in STAGES:
        raise TrainError(f"stage must be one of {STAGES}, got {stage!r}")
    seed = train_cfg.seed if seed is None else int(seed)
    train_h5, val_h5, out_dir = Path(train_h5), Path(val_h5), Path(out_dir)
    init_from = Path(init_from) if init_from else None

    ctx = setup(train_cfg.device)
    try:
        if train_cfg.threads > 0:
            torch.set_num_threads(train_cfg.threads)
        if ctx.device.type == "cpu" and train_cfg.cpu_keep_freed_memory:
            keep_freed_memory()
        enable_determinism(ctx.device)

        identity = run_identity(system_cfg, train_cfg, schedule, stage, train_h5, val_h5, init_from,
                                seed, ctx.world_size)
        run_record = {
            "format": CHECKPOINT_FORMAT,
            "system_config": to_dict(system_cfg),
            "train_config": to_dict(train_cfg),
            "schedule": to_dict(schedule),
            "stage": stage,
            "seed": seed,
            "config_hash": identity_hash(identity),
            "identity": identity,
        }
        resume = _resume_or_start(ctx, out_dir, identity, run_record["config_hash"], schedule.epochs,
                                  restart, restart_on_mismatch)
        loaders = _loaders(system_cfg, train_cfg, train_h5, val_h5, seed, ctx, workers, in_memory)
        trainee, state = _trainee(system_cfg, train_cfg, schedule, ctx, init_from, resume)

        metric_log = None
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            if ctx.device.type == "cpu":
                print(_kernels_line(trainee.model, system_cfg.backbone.cpu_kernels), flush=True)
            if resume is not None and state.epoch < schedule.epochs:
                print(f"resuming {out_dir / 'last.pt'} at epoch {state.epoch + 1}/{schedule.epochs}",
                      flush=True)
            elif resume is not None:
                print(f"{out_dir / 'last.pt'}: already trained for {state.epoch} epochs; "
                      "nothing to do", flush=True)
            metric_log = MetricLog(out_dir / "dvclive", state.epoch)
        reporter = make_reporter(ctx.is_main, schedule.epochs, state.epoch, stage, progress)

        # random state: set last, so that nothing above (model building, loggers) can shift it
        # between a straight run and a resumed one
        if resume is not None:
            rng_states = resume["rng"]
            restore_rng_state(rng_states[ctx.rank] if ctx.rank < len(rng_states) else rng_states[0])
        else:
            # per-rank stream for dropout / denoising noise; rank 0 keeps the plain seed
            seed_everything(seed + ctx.rank)

        try:
            for epoch in range(state.epoch, schedule.epochs):
                t0 = time.perf_counter()
                loaders.train_set.set_epoch(epoch)
                loaders.sampler.set_epoch(epoch)
                loaders.generator.manual_seed(seed * 100_003 + epoch)
                reporter.start_epoch(epoch, len(loaders.train))
                train_means = train_one_epoch(trainee.train_model, trainee.criterion, loaders.train,
                                              trainee.optimizer, trainee.params, train_cfg, ctx, reporter,
                                              epoch)
                state.loss_terms.update(k for k in train_means if k != "loss")
                state.epoch = epoch + 1

                improved, metrics = False, None
                if ctx.is_main:  # validation on rank 0; the others wait
                    metrics = validate(trainee.model, loaders.val, system_cfg, loaders.gt, ctx.device,
                                       train_cfg.amp, stage)
                    improved = metrics[PRIMARY_METRIC] > state.best["score"]
                    if improved:
                        state.best = {"epoch": epoch + 1, "score": metrics[PRIMARY_METRIC],
                                      "metrics": metrics}
                    state.history.append({"epoch": epoch + 1, "seconds": round(time.perf_counter() - t0, 3),
                                          "train": train_means, "val": metrics})
                    warning = collapse_warning(state.history)
                    if warning:
                        print(f"{stage} {warning}", flush=True)
                    metric_log.log_epoch(epoch, {**{f"train/{k}": v for k, v in train_means.items()},
                                                 **{f"val/{k}": v for k, v in metrics.items()}})
                ctx.barrier()

                rng_states = ctx.gather_objects(capture_rng_state())  # every rank's, to rank 0
                if ctx.is_main:
                    _save_checkpoints(out_dir, trainee, run_record, state, metrics, improved, rng_states)
                    write_json(out_dir / "metrics.json",
                               _summary(stage, seed, epoch + 1, schedule.epochs, state))
                    reporter.end_epoch(
                        epoch, _epoch_line(stage, epoch, schedule.epochs, train_means, metrics, state.best),
                        info=f"R1@0.7 {metrics[PRIMARY_METRIC]:.2f} (best {state.best['score']:.2f})",
                    )
                ctx.barrier()
        finally:
            reporter.close()
            if metric_log is not None:
                metric_log.close()

        summary = None
        if ctx.is_main:
            if not (out_dir / "best.pt").is_file():
                raise TrainError(f"{out_dir}: no epoch was run (epochs = {schedule.epochs})")
            summary = _summary(stage, seed, max(schedule.epochs, state.epoch), schedule.epochs, state)
            write_json(out_dir / "metrics.json", summary)
            write_json(out_dir / "system_info.json", _system_info(trainee, run_record, state))
        summary = ctx.broadcast_object(summary)
        # DDP keeps replicas in lockstep; check it rather than trust it (cheap, once per run)
        digest = weights_digest(trainee.model)
        digests = ctx.gather_objects(digest)
        if ctx.is_main and len(set(digests)) != 1:
            raise TrainError(f"replicas ended with different weights on ranks: {digests}")
        return {**summary, "weights_sha256": digest}
    finally:
        ctx.close()
