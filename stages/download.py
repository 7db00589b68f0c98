"""Stage `download`: fetch and unpack the official feature archives and annotation files
(``data.source: download``) into ``data.download.folder``, a tracked output."""
import argparse
from dataclasses import dataclass
from pathlib import Path

from amr.config.schema import DownloadSource
from amr.pipeline.stage import stage_main


@dataclass(frozen=True)
class Job:
    download: DownloadSource


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__)


def configure(params, args) -> Job:
    return Job(params.value("data.download"))


def run(job: Job) -> None:
    from amr.data.download import fetch_all

    fetch_all(job.download, Path.cwd())


if __name__ == "__main__":
    stage_main(parser(), configure, run)
