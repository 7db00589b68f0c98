"""What a training run is: everything that changes its weights, hashed to guard resuming.

A run resumes from ``last.pt`` only when its identity is unchanged: the same system and training
configuration, data, initial weights, seed, world size and code. The code enters as the digest
of every project file the training library can execute (:func:`amr.util.codegraph.code_digest` from
``amr/engine/train.py``), so a semantic change anywhere in the model, losses, matcher, data pipeline or
training loop starts the run over, while a comment or docstring edit does not. (The syntax tree's
printed form belongs to the Python version, so another Python minor version starts over too.)
"""
from __future__ import annotations

import json
from pathlib import Path

from amr.config.schema import ScheduleConfig, SystemConfig, TrainConfig, config_hash, to_dict
from amr.engine.checkpoint import load_checkpoint, state_digest
from amr.engine.loop import TrainError
from amr.util.codegraph import code_digest

# everything a training run executes is reachable from the training library's module
TRAINING_ENTRY = Path(__file__).resolve().with_name("train.py")


def data_identity(path: Path) -> dict:
    """Name + content checksum recorded by `amr pack` (moving the file keeps the identity)."""
    import h5py

    if not path.is_file():
        raise TrainError(f"{path}: packed split not found; create it with `amr pack`")
    with h5py.File(path, "r") as h5:
        manifest = json.loads(h5.attrs["manifest"])
    return {"file": path.name, "checksum": manifest.get("checksum_sha256"),
            "queries": manifest.get("counts", {}).get("queries")}


def init_identity(init_from: Path | None) -> dict | None:
    """The initial weights of a fine-tuning run, by content."""
    if init_from is None:
        return None
    ckpt = load_checkpoint(init_from)
    return {"file": init_from.name, "config_hash": ckpt.get("config_hash"),
            "epoch": ckpt.get("epoch"), "weights_sha256": state_digest(ckpt["model"])}


def run_identity(
    system_cfg: SystemConfig, train_cfg: TrainConfig, schedule: ScheduleConfig, stage: str,
    train_h5: Path, val_h5: Path, init_from: Path | None, seed: int, world_size: int,
) -> dict:
    """Everything that changes the trained weights, except the number of epochs.

    Epochs are left out on purpose: re-running with more epochs extends a finished run.
    Device, threads and the evaluation batch size only change speed, so they are left out too.
    """
    return {
        "system": to_dict(system_cfg),
        "stage": stage,
        "lr": schedule.lr,
        "weight_decay": train_cfg.weight_decay,
        "grad_clip": train_cfg.grad_clip,
        "batch_size": train_cfg.batch_size,
        "amp": train_cfg.amp,
        "seed": seed,
        "world_size": world_size,
        "train_data": data_identity(train_h5),
        "val_data": data_identity(val_h5),
        "init_from": init_identity(init_from),
        "code": code_digest([TRAINING_ENTRY]),
    }


def identity_hash(identity: dict) -> str:
    return config_hash(identity)
