"""Stage `analysis`: paired significance of the configured comparisons (BH over all tests),
seed spread, results by stratum, and the figures, from the per-query results of `evaluate`."""
import argparse
from dataclasses import dataclass

from amr.config.schema import AnalysisConfig
from amr.pipeline.stage import stage_main
from amr.reporting.systems import SystemRuns, system_runs


@dataclass(frozen=True)
class Job:
    systems: tuple[SystemRuns, ...]  # in params.yaml order: "previous" follows it
    comparisons: tuple[tuple[str, str], ...]  # (system, against)
    analysis: AnalysisConfig
    clip_length: float


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__)


def configure(params, args) -> Job:
    names = params.system_names()
    analysis = params.analysis
    return Job(tuple(system_runs(params, n) for n in names), tuple(analysis.comparisons(names)),
               analysis, params.value("data.clip_length"))


def run(job: Job) -> None:
    from amr.reporting.analysis import run_analysis

    for path in run_analysis(list(job.systems), list(job.comparisons), job.analysis, job.clip_length):
        print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    stage_main(parser(), configure, run)
