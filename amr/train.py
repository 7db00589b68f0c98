"""One training stage (report §2.4): pre-train on Clotho-Moment or fine-tune on CASTELLA.

``train_stage`` runs the epochs of one stage, validates after each with the official metrics,
keeps ``best.pt`` (highest val R1@0.7) and ``last.pt`` (everything needed to resume), and logs
per-epoch scalars with dvclive. Re-running the same call after an interruption continues from
``last.pt``; a run whose configuration differs is refused rather than silently mixed.

Determinism: the same seed, data and configuration give bit-identical weights on CPU, whether
the run was interrupted or not. Every source of randomness is either seeded per epoch (data
order, DataLoader worker seeds, window re-sampling) or checkpointed (python / numpy / torch
global RNG states, which drive dropout and denoising noise).

Run under ``torchrun --nproc_per_node N`` it trains with DistributedDataParallel: each rank
sees 1/N of every epoch, so the effective batch is N x batch_size. Only rank 0 validates and
writes files; the other ranks wait at a barrier.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from amr.config import SystemConfig, TrainConfig, config_hash, to_dict
from amr.training.checkpoint import (
    atomic_save,
    capture_rng_state,
    describe_differences,
    load_checkpoint,
    restore_rng_state,
    weights_digest,
)
from amr.training.cpu_memory import keep_freed_memory
from amr.training.distributed import DistContext, setup
from amr.training.progress import MetricLog, make_reporter

STAGES = ("pretrain", "finetune")
PRIMARY_METRIC = "R1@0.7"
CHECKPOINT_FORMAT = 1
# Fault injection for the resume tests: exit abruptly (no cleanup, like kill -9) right after
# the checkpoint of this epoch (1-based) is on disk.
CRASH_AFTER_EPOCH_ENV = "AMR_CRASH_AFTER_EPOCH"


class TrainError(RuntimeError):
    """A training run that cannot start as asked; the message says why and what to do."""


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
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True)


def _worker_init(worker_id: int) -> None:
    # torch already seeds each worker from the (per-epoch seeded) loader generator;
    # derive python/numpy seeds from it so that they are per-epoch deterministic too
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


# ---------------------------------------------------------------------------------------------
# Run identity (what must match to resume)
# ---------------------------------------------------------------------------------------------
def _data_identity(path: Path) -> dict:
    """Name + content checksum recorded by `amr pack` (moving the file keeps the identity)."""
    import h5py

    if not path.is_file():
        raise TrainError(f"{path}: packed split not found; create it with `amr pack`")
    with h5py.File(path, "r") as h5:
        manifest = json.loads(h5.attrs["manifest"])
    return {"file": path.name, "checksum": manifest.get("checksum_sha256"),
            "queries": manifest.get("counts", {}).get("queries")}


def run_identity(
    system_cfg: SystemConfig, train_cfg: TrainConfig, stage: str, train_h5: Path, val_h5: Path,
    init_from: Path | None, seed: int, world_size: int,
) -> dict:
    """Everything that changes the trained weights, except the number of epochs.

    Epochs are left out on purpose: re-running with more epochs extends a finished run.
    Device, threads and the evaluation batch size only change speed, so they are left out too.
    """
    stage_cfg = getattr(train_cfg, stage)
    return {
        "system": to_dict(system_cfg),
        "stage": stage,
        "lr": stage_cfg.lr,
        "weight_decay": train_cfg.weight_decay,
        "grad_clip": train_cfg.grad_clip,
        "batch_size": train_cfg.batch_size,
        "amp": train_cfg.amp,
        "seed": seed,
        "world_size": world_size,
        "train_data": _data_identity(train_h5),
        "val_data": _data_identity(val_h5),
        "init_from": _init_identity(init_from),
    }


def _init_identity(init_from: Path | None) -> dict | None:
    if init_from is None:
        return None
    ckpt = load_checkpoint(init_from)
    return {"file": init_from.name, "config_hash": ckpt.get("config_hash"),
            "epoch": ckpt.get("epoch")}


# ---------------------------------------------------------------------------------------------
# Model / loss helpers
# ---------------------------------------------------------------------------------------------
def build_optimizer(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW (§2.4). On CPU the fused implementation: one kernel per step instead of ~10 small
    ops per parameter tensor (same update rule; its state dict loads either way)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type == "cpu" or None)


def weighted_total(terms: dict[str, torch.Tensor], weight_dict: dict[str, float]) -> torch.Tensor:
    """sum_k weight_dict[k] * terms[k]; a term without a weight is reported, not optimised."""
    weighted = [weight_dict[k] * v for k, v in terms.items() if k in weight_dict]
    if not weighted:
        raise TrainError(
            f"the criterion returned no weighted term (terms {sorted(terms)}, weights "
            f"{sorted(weight_dict)})"
        )
    return torch.stack([w.float() for w in weighted]).sum()


def enabled_loss_terms(weight_dict: dict[str, float], seen_terms) -> list[str]:
    return sorted(k for k in seen_terms if weight_dict.get(k, 0) != 0)


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


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------
def train_stage(
    system_cfg: SystemConfig,
    train_cfg: TrainConfig,
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

    Files in ``out_dir``: ``best.pt``, ``last.pt``, ``metrics.json``, ``system_info.json``,
    ``dvclive/``. ``progress``: ``auto`` (bar on a terminal, else one line per epoch),
    ``plain``, ``rich`` or ``none``. A ``last.pt`` of the same configuration is resumed; one of
    another configuration is refused, or with ``restart_on_mismatch`` discarded.
    """
    from amr.data import MomentDataset, collate_moments
    from amr.metrics import evaluate_predictions
    from amr.model import build_criterion, build_model, count_parameters
    from amr.predict import eval_loader, ground_truth_records, run_inference

    if stage not in STAGES:
        raise TrainError(f"stage must be one of {STAGES}, got {stage!r}")
    stage_cfg = getattr(train_cfg, stage)
    seed = train_cfg.seed if seed is None else int(seed)
    train_h5, val_h5, out_dir = Path(train_h5), Path(val_h5), Path(out_dir)
    init_from = Path(init_from) if init_from else None
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"

    ctx = setup(train_cfg.device)
    try:
        if train_cfg.threads > 0:
            torch.set_num_threads(train_cfg.threads)
        if ctx.device.type == "cpu" and train_cfg.cpu_keep_freed_memory:
            keep_freed_memory()
        enable_determinism(ctx.device)

        # --- resume or fresh start ------------------------------------------------------
        if ctx.is_main:
            if restart:
                _clear_run_dir(out_dir)
            for stale in out_dir.glob(".*.tmp"):  # left by a kill in the middle of a save
                stale.unlink(missing_ok=True)
        ctx.barrier()
        identity = run_identity(system_cfg, train_cfg, stage, train_h5, val_h5, init_from,
                                seed, ctx.world_size)
        run_hash = config_hash(identity)
        resume = load_checkpoint(last_path) if last_path.is_file() else None
        if resume is not None and resume.get("config_hash") != run_hash and restart_on_mismatch:
            # a pipeline re-runs a stage because its inputs changed: start over, do not refuse
            if ctx.is_main:
                print(f"{last_path}: configuration changed, starting over", flush=True)
                _clear_run_dir(out_dir)
            ctx.barrier()
            resume = None
        if resume is not None and resume.get("config_hash") != run_hash:
            raise TrainError(
                f"{last_path}: written by a run with another configuration, so it cannot be "
                f"resumed; differences (saved -> now): "
                f"{describe_differences(resume.get('identity', {}), identity)}. To start "
                f"over, delete {out_dir} or pass --restart"
            )

        # --- data -------------------------------------------------------------------------
        seed_everything(seed)
        train_set = MomentDataset(train_h5, system_cfg.data, train=True, seed=seed,
                                  in_memory=in_memory)
        sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                     shuffle=True, seed=seed, drop_last=False)
        loader_generator = torch.Generator()
        train_loader = DataLoader(
            train_set, batch_size=train_cfg.batch_size, sampler=sampler, num_workers=workers,
            collate_fn=collate_moments, generator=loader_generator, worker_init_fn=_worker_init,
            pin_memory=ctx.device.type == "cuda", persistent_workers=False,
        )
        # every rank checks the validation split (metadata only), so that a bad one stops all
        val_set = MomentDataset(val_h5, system_cfg.data, train=False, seed=seed)
        gt = ground_truth_records(val_set)
        if not gt:
            raise TrainError(f"{val_h5}: no query has a window, so it cannot validate; "
                             "pass a split with ground truth as --val")
        val_loader = eval_loader(val_set, train_cfg.eval_batch_size, workers)

        # --- model, loss, optimiser --------------------------------------------------------
        model = build_model(system_cfg)
        criterion = build_criterion(system_cfg)
        if init_from is not None and resume is None:
            _load_init_weights(model, init_from)
        model.to(ctx.device)
        criterion.to(ctx.device)
        params = [p for m in (model, criterion) for p in m.parameters() if p.requires_grad]
        optimizer = build_optimizer(params, stage_cfg.lr, train_cfg.weight_decay, ctx.device)

        start_epoch, best = 0, {"epoch": None, "score": -math.inf, "metrics": None}
        history: list[dict] = []
        if resume is not None:
            model.load_state_dict(resume["model"])
            if resume.get("criterion") is not None:
                criterion.load_state_dict(resume["criterion"])
            optimizer.load_state_dict(resume["optimizer"])
            start_epoch, best, history = resume["epoch"], resume["best"], resume.get("history", [])

        counts = count_parameters(model)  # the criterion holds no parameters of its own
        trainable, frozen = counts["trainable"], counts["total"] - counts["trainable"]
        train_model = model
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            # components can be inactive in a step (e.g. no target window for a branch)
            train_model = DistributedDataParallel(
                model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        criterion_params = [p for p in criterion.parameters() if p.requires_grad]  # rarely any

        # --- outputs ----------------------------------------------------------------------
        reporter = metric_log = None
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            if resume is not None and start_epoch < stage_cfg.epochs:
                print(f"resuming {last_path} at epoch {start_epoch + 1}/{stage_cfg.epochs}",
                      flush=True)
            elif resume is not None:
                print(f"{last_path}: already trained for {start_epoch} epochs "
                      f"(>= {stage_cfg.epochs}); nothing to do", flush=True)
            metric_log = MetricLog(out_dir / "dvclive", start_epoch)
            reporter = make_reporter(True, stage_cfg.epochs, start_epoch, stage, progress)
        else:
            reporter = make_reporter(False, stage_cfg.epochs, start_epoch, stage, progress)
        seen_terms: set[str] = set()
        if resume is not None:
            seen_terms.update(resume.get("loss_terms", []))

        # --- random state: set last, so that nothing above (model building, loggers) can
        # shift it between a straight run and a resumed one
        if resume is not None:
            rng_states = resume["rng"]
            restore_rng_state(rng_states[ctx.rank] if ctx.rank < len(rng_states) else rng_states[0])
        else:
            # per-rank stream for dropout / denoising noise; rank 0 keeps the plain seed
            seed_everything(seed + ctx.rank)

        # --- epochs -----------------------------------------------------------------------
        crash_after = int(os.environ.get(CRASH_AFTER_EPOCH_ENV, "0") or 0)
        try:
            for epoch in range(start_epoch, stage_cfg.epochs):
                t0 = time.perf_counter()
                train_set.set_epoch(epoch)
                sampler.set_epoch(epoch)
                loader_generator.manual_seed(seed * 100_003 + epoch)
                reporter.start_epoch(epoch, len(train_loader))
                train_means = train_one_epoch(
                    train_model, criterion, train_loader, optimizer, params, train_cfg, ctx,
                    reporter, epoch,
                )
                seen_terms.update(k for k in train_means if k != "loss")

                # validation on rank 0; the others wait
                if ctx.is_main:
                    records, _ = run_inference(model, val_loader, system_cfg, None, ctx.device,
                                               train_cfg.amp)
                    metrics = evaluate_predictions(records, gt)
                    improved = metrics[PRIMARY_METRIC] > best["score"]
                    if improved:
                        best = {"epoch": epoch + 1, "score": metrics[PRIMARY_METRIC],
                                "metrics": metrics}
                    history.append({"epoch": epoch + 1,
                                    "seconds": round(time.perf_counter() - t0, 3),
                                    "train": train_means, "val": metrics})
                    metric_log.log_epoch(epoch, {
                        **{f"train/{k}": v for k, v in train_means.items()},
                        **{f"val/{k}": v for k, v in metrics.items()},
                    })
                ctx.barrier()

                # checkpoints: every rank hands its RNG state to rank 0
                rng_states = ctx.gather_objects(capture_rng_state())
                if ctx.is_main:
                    common = {
                        "format": CHECKPOINT_FORMAT,
                        "model": _cpu_state(model),
                        "system_config": to_dict(system_cfg),
                        "train_config": to_dict(train_cfg),
                        "stage": stage,
                        "seed": seed,
                        "config_hash": run_hash,
                        "identity": identity,
                        "epoch": epoch + 1,
                        "loss_terms": sorted(seen_terms),
                    }
                    if improved:
                        atomic_save({**common, "metrics": metrics}, best_path)
                    atomic_save({
                        **common,
                        "criterion": _cpu_state(criterion) if criterion_params else None,
                        "optimizer": optimizer.state_dict(),
                        "rng": rng_states,
                        "best": best,
                        "history": history,
                    }, last_path)
                    summary = _summary(stage, seed, epoch + 1, stage_cfg.epochs, best, history)
                    _write_json(out_dir / "metrics.json", summary)
                    reporter.end_epoch(
                        epoch, _epoch_line(stage, epoch, stage_cfg.epochs, train_means, metrics, best),
                        info=f"R1@0.7 {metrics[PRIMARY_METRIC]:.2f} (best {best['score']:.2f})",
                    )
                ctx.barrier()
                if crash_after and epoch + 1 == crash_after:
                    os._exit(70)
        finally:
            reporter.close()
            if metric_log is not None:
                metric_log.close()

        # --- final files --------------------------------------------------------------------
        summary = None
        if ctx.is_main:
            if not best_path.is_file():
                raise TrainError(f"{out_dir}: no epoch was run (epochs = {stage_cfg.epochs})")
            summary = _summary(stage, seed, max(stage_cfg.epochs, start_epoch), stage_cfg.epochs,
                               best, history)
            _write_json(out_dir / "metrics.json", summary)
            _write_json(out_dir / "system_info.json", {
                "trainable_parameters": trainable,
                "frozen_parameters": frozen,
                "loss_function": enabled_loss_terms(criterion.weight_dict, seen_terms),
                "ensemble": False,
                "members": 1,
            })
        summary = ctx.broadcast_object(summary)
        # DDP keeps replicas in lockstep; check it rather than trust it (cheap, once per run)
        digest = weights_digest(model)
        digests = ctx.gather_objects(digest)
        if ctx.is_main and len(set(digests)) != 1:
            raise TrainError(f"replicas ended with different weights on ranks: {digests}")
        return {**summary, "weights_sha256": digest}
    finally:
        ctx.close()


def train_one_epoch(
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    train_cfg: TrainConfig,
    ctx: DistContext,
    reporter,
    epoch: int,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean weighted loss and mean of every term."""
    from amr.predict import autocast_context, move_batch

    criterion_params = [p for p in criterion.parameters() if p.requires_grad]
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    for batch in loader:
        batch = move_batch(batch, ctx.device)
        with autocast_context(ctx.device, train_cfg.amp):
            out = model(batch)
            terms = criterion(out, batch)
            loss = weighted_total(terms, criterion.weight_dict)
        if not torch.isfinite(loss):
            raise TrainError(
                f"epoch {epoch + 1}: the loss is {loss.item()} (terms "
                f"{ {k: float(v) for k, v in terms.items()} }); lower the learning rate or "
                "check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if ctx.distributed and criterion_params:  # DDP only synchronises the model's grads
            _average_gradients(criterion_params, ctx.world_size)
        if train_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
        optimizer.step()
        steps += 1
        values = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        reporter.step(values)
    return {k: v / max(steps, 1) for k, v in sums.items()}


def _average_gradients(params, world_size: int) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _clear_run_dir(out_dir: Path) -> None:
    for name in ("last.pt", "best.pt", "metrics.json", "system_info.json"):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "dvclive", ignore_errors=True)


def _summary(stage, seed, epochs_done, epochs, best, history) -> dict:
    return {
        "stage": stage,
        "seed": seed,
        "epochs_done": epochs_done,
        "epochs": epochs,
        "best_epoch": best["epoch"],
        "best": best["metrics"],
        "primary_metric": PRIMARY_METRIC,
        "last": history[-1]["val"] if history else None,
        "seconds": round(sum(h["seconds"] for h in history), 3),
    }


def _epoch_line(stage, epoch, epochs, train_means, metrics, best) -> str:
    return (
        f"{stage} epoch {epoch + 1}/{epochs}  loss {train_means.get('loss', float('nan')):.4f}  "
        f"val R1@0.5 {metrics['R1@0.5']:.2f} R1@0.7 {metrics['R1@0.7']:.2f} "
        f"mAP {metrics['mAP']:.2f}  best R1@0.7 {best['score']:.2f} (epoch {best['epoch']})"
    )


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
