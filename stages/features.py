"""Stage `features`: import features (demo / local / download / extract) and pack every split to HDF5."""
import argparse
from dataclasses import dataclass
from pathlib import Path

from amr.config.schema import DataConfig, DataSource
from amr.pipeline.stage import stage_main


@dataclass(frozen=True)
class Job:
    source: DataSource
    data: DataConfig


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__)


def configure(params, args) -> Job:
    return Job(params.source, params.data)


def run(job: Job) -> None:
    from amr.config.paths import DEMO_DIR, FEATURES_DIR
    from amr.data.sources import (
        demo_layout,
        describe_features,
        extract_layout,
        layout_from_params,
        pack_all,
    )

    root, source = Path.cwd(), job.source
    if source.source == "demo":
        from amr.data.demo import make_demo_dataset

        make_demo_dataset(DEMO_DIR, seed=source.demo.seed, sizes=source.demo.sizes)
        layout = demo_layout(DEMO_DIR)
    elif source.source == "local":
        layout = layout_from_params(source.local, root)
    elif source.source == "download":  # fetched by the download stage
        layout = layout_from_params(source.download.layout, root)
    elif source.source == "extract":  # written by the extract-features stage
        layout = extract_layout(source.extract, root)
    else:
        raise SystemExit("params.yaml: data.source must be demo, local, download or extract, "
                         f"not {source.source!r}")
    pack_all(layout, job.data, FEATURES_DIR, describe_features(source, root),
             source.length_tolerance_s)

if __name__ == "__main__":
    stage_main(parser(), configure, run)
