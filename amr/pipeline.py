"""Where the pipeline's outputs live, and the feature-import step shared by the DVC stages.

One place for every path the stages in ``stages/`` and ``dvc.yaml`` use, so that the DAG,
the tables and the packager agree on them.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from amr.config import ConfigError, DataConfig

DEMO_DIR = Path("data/demo")
FEATURES_DIR = Path("data/features")
RUNS_DIR = Path("runs")
PREDICTIONS_DIR = Path("predictions")
METRICS_DIR = Path("metrics")
REPORTS_DIR = Path("reports")
SUBMISSION_DIR = Path("submission/build")

# packed splits: name -> (dataset, split)
SPLITS = {
    "pretrain_train": ("pretrain", "train"),
    "pretrain_val": ("pretrain", "val"),
    "finetune_train": ("finetune", "train"),
    "finetune_val": ("finetune", "val"),
    "finetune_test": ("finetune", "test"),
    "evaluation": ("evaluation", "queries"),
}
# packed split -> the stage/role using it
PREDICT_SPLITS = {"test": "finetune_test", "evaluation": "evaluation"}


def packed(name: str) -> Path:
    return FEATURES_DIR / f"{name}.h5"


def ground_truth(name: str) -> Path:
    """The annotation file of a packed split, copied unchanged (scored against raw windows)."""
    return FEATURES_DIR / f"{name}.jsonl"


def run_dir(stage: str, system: str, seed: int | None = None) -> Path:
    base = RUNS_DIR / stage / system
    return base if seed is None else base / f"seed-{seed}"


def predictions(system: str, split: str, seed: int | None = None) -> Path:
    base = PREDICTIONS_DIR / system
    return (base if seed is None else base / f"seed-{seed}") / f"{split}.jsonl"


def metrics_file(system: str) -> Path:
    return METRICS_DIR / f"{system}.json"


# ---------------------------------------------------------------------------------------------
# Feature import
# ---------------------------------------------------------------------------------------------
@dataclass
class SplitSource:
    annotations: Path
    audio_dir: Path
    text_dir: Path


def _resolve(root: Path, value: str, what: str) -> Path:
    if not value:
        raise ConfigError(f"params.yaml: {what} is empty; give a file or folder (absolute or repo-relative)")
    path = Path(value)
    return path if path.is_absolute() else root / path


def layout_from_params(local, root: Path) -> dict[str, SplitSource]:
    """The six splits of a ``data.local``-shaped block, paths resolved against ``root``."""
    out = {}
    for name, (dataset, split) in SPLITS.items():
        block = getattr(local, dataset)
        where = f"data.local.{dataset}"
        out[name] = SplitSource(
            _resolve(root, getattr(block, split), f"{where}.{split}"),
            _resolve(root, block.audio_dir, f"{where}.audio_dir"),
            _resolve(root, block.text_dir, f"{where}.text_dir"),
        )
    return out


def demo_layout(demo_dir: Path) -> dict[str, SplitSource]:
    """The splits written by :func:`amr.data.demo.make_demo_dataset`."""
    def src(dataset: str, file: str) -> SplitSource:
        d = demo_dir / dataset
        return SplitSource(d / file, d / "audio", d / "text")

    return {
        "pretrain_train": src("clotho_moment", "train.jsonl"),
        "pretrain_val": src("clotho_moment", "val.jsonl"),
        "finetune_train": src("castella", "train.jsonl"),
        "finetune_val": src("castella", "val.jsonl"),
        "finetune_test": src("castella", "test.jsonl"),
        "evaluation": src("evaluation", "queries.jsonl"),
    }


def pack_all(layout: dict[str, SplitSource], data_cfg: DataConfig, out_dir: Path,
             feature_source: str) -> dict[str, dict]:
    """Pack every split into ``out_dir`` and copy its annotation file beside it."""
    from amr.data.pack import pack_split, summary_line

    out_dir.mkdir(parents=True, exist_ok=True)
    reports = {}
    for name, src in layout.items():
        report = pack_split(src.annotations, src.audio_dir, src.text_dir, out_dir / f"{name}.h5",
                            data_cfg, name=name, feature_source=feature_source)
        shutil.copyfile(src.annotations, out_dir / f"{name}.jsonl")
        print(summary_line(report), flush=True)
        reports[name] = report
    return reports
