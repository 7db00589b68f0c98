"""Tiny packed demo splits and a tiny-width system for the training / inference tests."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from amr.config.schema import DataConfig, ScheduleConfig, SystemConfig, TrainConfig

TINY_SIZES = dict(
    clotho_train_queries=24, clotho_val_queries=8, castella_train_queries=8,
    castella_val_queries=6, castella_test_queries=4, evaluation_queries=5,
    castella_min_duration=30, castella_max_duration=60, max_queries_per_recording=2,
)


def make_packed_splits(root: Path) -> dict[str, Path]:
    """Demo data -> packed HDF5 splits: clotho_train, clotho_val, castella_val, evaluation."""
    from amr.data.demo import DemoSizes, make_demo_dataset
    from amr.data.pack import pack_split

    demo = root / "demo"
    manifest = make_demo_dataset(demo, seed=3, sizes=DemoSizes(**TINY_SIZES))
    wanted = {
        "clotho_train": "clotho_moment/train",
        "clotho_val": "clotho_moment/val",
        "castella_val": "castella/val",
        "evaluation": next(k for k in manifest["splits"] if k.startswith("evaluation")),
    }
    out = {}
    for name, split in wanted.items():
        info = manifest["splits"][split]
        out[name] = root / f"{name}.h5"
        pack_split(demo / info["annotations"], demo / info["audio_dir"], demo / info["text_dir"],
                   out[name], DataConfig(), name=name)
        out[name + "_jsonl"] = demo / info["annotations"]
    return out


def tiny_system(name: str = "slot3") -> SystemConfig:
    """The named slot with every width shrunk so that a CPU epoch takes well under a second."""
    from model_batches import report_systems

    cfg = report_systems()[name]
    return dataclasses.replace(
        cfg,
        backbone=dataclasses.replace(cfg.backbone, hidden_dim=16, heads=2, ffn_dim=32, num_queries=4,
                                     input_dropout=0.1),
        cascade=dataclasses.replace(cfg.cascade, heads=2, ffn_dim=16, max_crop=401),
        mamba=dataclasses.replace(cfg.mamba, d_state=4, expand=1),
        dn=dataclasses.replace(cfg.dn, copies=2),
    )


def tiny_train() -> TrainConfig:
    return TrainConfig(batch_size=8, threads=1, device="cpu", eval_batch_size=16)


def schedule(epochs: int = 2, lr: float = 1e-4) -> ScheduleConfig:
    return ScheduleConfig(epochs, lr)
