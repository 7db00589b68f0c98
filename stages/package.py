"""Stage `package`: the DCASE submission zip, validated before the pipeline may succeed."""
import sys

from amr.config import from_dict, SubmissionConfig
from amr.evaluation import table1
from amr.params import Params
from amr.pipeline import METRICS_DIR, PREDICT_SPLITS, SUBMISSION_DIR, ground_truth, metrics_file, predictions
from amr.submission.package import SystemInputs, build_submission
from amr.submission.validate import validate_submission


def evaluation_predictions(params: Params, system: str):
    if system in params.fused_systems():
        return predictions(system, "evaluation")
    return predictions(system, "evaluation", params.seeds(system)[0])


def main() -> None:
    params = Params.load()
    team = from_dict(SubmissionConfig, params.raw.get("submission"), "submission")
    runs = [s.run for s in team.systems]
    inputs = [SystemInputs(run, evaluation_predictions(params, run), metrics_file(run),
                           METRICS_DIR / f"{run}.info.json") for run in runs]
    rows = [{"system": r.label, **r.metrics} for r in table1(params).rows]
    eval_list = ground_truth(PREDICT_SPLITS["evaluation"])
    zip_path = build_submission(inputs, team, eval_list, SUBMISSION_DIR, table_rows=rows)
    problems = validate_submission(zip_path, eval_list)
    if problems:
        print(f"{zip_path}: INVALID submission", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        raise SystemExit(1)
    print(f"{zip_path}: valid, {len(runs)} systems")


if __name__ == "__main__":
    main()
