"""Stage `package`: the DCASE submission zip, validated before the pipeline may succeed."""
import argparse
from dataclasses import dataclass

from amr.config.schema import SubmissionConfig
from amr.pipeline.stage import stage_main
from amr.reporting.systems import SystemRuns, system_runs


@dataclass(frozen=True)
class Job:
    team: SubmissionConfig
    submitted: tuple[SystemRuns, ...]  # in submission order
    table: tuple[SystemRuns, ...]  # Table-1 rows for the generated report


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__)


def configure(params, args) -> Job:
    team = params.submission
    return Job(team, tuple(system_runs(params, entry.run) for entry in team.systems),
               tuple(system_runs(params, n) for n in params.system_names()))


def run(job: Job) -> None:
    import sys

    from amr.config.paths import (
        METRICS_DIR,
        PREDICT_SPLITS,
        SUBMISSION_DIR,
        ground_truth,
        metrics_file,
    )
    from amr.reporting.submission.package import SystemInputs, build_submission
    from amr.reporting.submission.validate import validate_submission
    from amr.reporting.systems import table1

    inputs = [SystemInputs(runs.name, runs.evaluation_predictions, metrics_file(runs.name),
                           METRICS_DIR / f"{runs.name}.info.json") for runs in job.submitted]
    table = table1(list(job.table), "")
    rows = [{"system": r.label, **r.metrics, "marks": r.marks} for r in table.rows]
    eval_list = ground_truth(PREDICT_SPLITS["evaluation"])
    from amr.config.paths import FEATURES_DIR
    from amr.util.io import read_json

    zip_path = build_submission(inputs, job.team, eval_list, SUBMISSION_DIR, table_rows=rows,
                                table_notes=table.note, features=read_json(FEATURES_DIR / "extractor.json"))
    problems = validate_submission(zip_path, eval_list)
    if problems:
        print(f"{zip_path}: INVALID submission", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        raise SystemExit(1)
    print(f"{zip_path}: valid, {len(inputs)} systems")


if __name__ == "__main__":
    stage_main(parser(), configure, run)
