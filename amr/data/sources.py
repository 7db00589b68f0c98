"""Where the features come from: the six splits of a dataset layout, packed into HDF5.

``data.source`` picks the layout: the embedded demo data, feature folders the user has
(``data.local``), the unpacked official archives (``data.download.layout``) or the features
extracted from audio (``data.extract``). Each layout comes with a description of the extractor
that made its features (:func:`describe_features`), stored in every packed manifest and in
``data/features/extractor.json`` for the submission's meta files.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from amr.config.schema import ConfigError, DataConfig
from amr.config.paths import SPLITS


@dataclass
class SplitSource:
    annotations: Path
    audio_dir: Path
    text_dir: Path


def resolve(root: Path, value: str, what: str) -> Path:
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
            resolve(root, getattr(block, split), f"{where}.{split}"),
            resolve(root, block.audio_dir, f"{where}.audio_dir"),
            resolve(root, block.text_dir, f"{where}.text_dir"),
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


def extract_layout(extract, root: Path) -> dict[str, SplitSource]:
    """The splits of ``data.extract``: its annotation files, the extracted feature folders."""
    folder = resolve(root, extract.folder, "data.extract.folder")
    out = {}
    for name, (dataset, split) in SPLITS.items():
        block = getattr(extract, dataset)
        out[name] = SplitSource(resolve(root, getattr(block, split), f"data.extract.{dataset}.{split}"),
                                folder / dataset / "audio", folder / dataset / "text")
    return out


OFFICIAL_FEATURES = "MS-CLAP 2023 (official DCASE 2026 Task 6 features, Zenodo)"


def describe_features(source, root: Path) -> dict:
    """Which extractor made the features of ``source`` (a :class:`amr.config.schema.DataSource`):
    ``name``, ``backend``, ``checkpoint_sha256`` and the meta file's ``audio_models`` /
    ``text_models`` wording."""
    import json

    sha = ""
    if source.source == "extract":
        marker = resolve(root, source.extract.folder, "data.extract.folder") / "extractor.json"
        try:
            made = json.loads(marker.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{marker}: no extractor record ({exc}); run the "
                              "extract-features stage first") from None
        name, backend, sha = made["name"], made["backend"], made["checkpoint_sha256"]
    elif source.source == "demo":
        name, backend = f"synthetic demo features (amr.data.demo, seed {source.demo.seed})", "demo"
    elif source.source == "download":
        name, backend = source.download.layout.extractor or OFFICIAL_FEATURES, "download"
    else:
        name, backend = source.local.extractor or "not stated (data.local.extractor)", "local"
    weights = f"; checkpoint sha256 {sha}" if sha else ""
    return {"source": source.source, "backend": backend, "name": name, "checkpoint_sha256": sha,
            "audio_models": f"audio features (frozen): {name}{weights}",
            "text_models": f"text token features (frozen): {name}{weights}"}


def pack_all(layout: dict[str, SplitSource], data_cfg: DataConfig, out_dir: Path,
             extractor: dict, length_tolerance_s: float = 2.0) -> dict[str, dict]:
    """Pack every split into ``out_dir``, copy its annotation file beside it and record the
    extractor in ``out_dir/extractor.json``."""
    from amr.data.pack import pack_split, summary_line
    from amr.util.io import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    reports = {}
    for name, src in layout.items():
        report = pack_split(src.annotations, src.audio_dir, src.text_dir, out_dir / f"{name}.h5",
                            data_cfg, name=name, feature_source=extractor["name"],
                            extractor=extractor, length_tolerance_s=length_tolerance_s)
        shutil.copyfile(src.annotations, out_dir / f"{name}.jsonl")
        print(summary_line(report), flush=True)
        reports[name] = report
    write_json(out_dir / "extractor.json", extractor)
    return reports
