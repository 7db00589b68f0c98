"""Stage `package`: the DCASE submission zip, validated before the pipeline may succeed."""
import argparse
from dataclasses import dataclass

from amr.config import SubmissionConfig
from amr.dag import stage_main
from amr.evaluation import SystemRuns, system_runs


@dataclass(frozen=True)
class Job:
    team: SubmissionConfig
    submitted: tuple  # (run name, evaluation predictions) per submitted system
    table: tuple[SystemRuns, ...]  # Table-1 rows for the generated report


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__)


def configure(params, args) -> Job:
    from amr.pipeline import predictions

    team = params.submission
    submitted = []
    for entry in team.systems:
        if entry.run in params.fused_systems():
            submitted.append((entry.run, predictions(entry.run, "evaluation")))
        else:
            submitted.append((entry.run, predictions(entry.run, "evaluation", params.seeds(entry.run)[0])))
    table = tuple(system_runs(params, n) for n in params.system_names())
    return Job(team, tuple(submitted), table)


def run(job: Job) -> None:
    import sys

    from amr.evaluation import table1
    from amr.pipeline import METRICS_DIR, PREDICT_SPLITS, SUBMISSION_DIR, ground_truth, metrics_file
    from amr.submission.package import SystemInputs, build_submission
    from amr.submission.validate import validate_submission

    inputs = [SystemInputs(name, preds, metrics_file(name), METRICS_DIR / f"{name}.info.json")
              for name, preds in job.submitted]
    rows = [{"system": r.label, **r.metrics} for r in table1(list(job.table), "").rows]
    eval_list = ground_truth(PREDICT_SPLITS["evaluation"])
    zip_path = build_submission(inputs, job.team, eval_list, SUBMISSION_DIR, table_rows=rows)
    problems = validate_submission(zip_path, eval_list)
    if problems:
        print(f"{zip_path}: INVALID submission", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        raise SystemExit(1)
    print(f"{zip_path}: valid, {len(inputs)} systems")


if __name__ == "__main__":
    stage_main(parser(), configure, run)
