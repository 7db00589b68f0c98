"""Stage `features`: import features (demo / local / download) and pack every split to HDF5."""
import argparse
from dataclasses import dataclass
from pathlib import Path

from amr.config import DataConfig, DataSource
from amr.dag import stage_main


@dataclass(frozen=True)
class Job:
    source: DataSource
    data: DataConfig


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__)


def configure(params, args) -> Job:
    return Job(params.source, params.data)


def run(job: Job) -> None:
    from amr.data.sources import demo_layout, layout_from_params, pack_all
    from amr.pipeline import DEMO_DIR, FEATURES_DIR

    root, source = Path.cwd(), job.source
    if source.source == "demo":
        from amr.data.demo import make_demo_dataset

        make_demo_dataset(DEMO_DIR, seed=source.demo.seed, sizes=source.demo.sizes)
        layout, label = demo_layout(DEMO_DIR), f"demo (seed {source.demo.seed})"
    elif source.source == "local":
        layout, label = layout_from_params(source.local, root), "local"
    elif source.source == "download":
        from amr.data.download import fetch_all

        fetch_all(source.download, root)
        layout, label = layout_from_params(source.download.layout, root), "download"
    else:
        raise SystemExit(f"params.yaml: data.source must be demo, local or download, not {source.source!r}")
    pack_all(layout, job.data, FEATURES_DIR, feature_source=label)


if __name__ == "__main__":
    stage_main(parser(), configure, run)
