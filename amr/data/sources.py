"""Where the features come from: the six splits of a dataset layout, packed into HDF5.

``data.source`` picks the layout: the embedded demo data, feature folders the user has
(``data.local``) or the unpacked official archives (``data.download.layout``).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from amr.config import ConfigError, DataConfig
from amr.pipeline import SPLITS


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
