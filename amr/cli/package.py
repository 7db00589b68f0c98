"""``amr package``: build the DCASE submission zip, then validate it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Build the DCASE Task 6 submission zip (outputs, meta files, report) and validate it."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", "--team", dest="params", default="params.yaml",
                        help="params file whose 'submission:' block holds team and system "
                             "information (default: params.yaml)")
    parser.add_argument("--eval-list", required=True,
                        help="the blind evaluation list (dcase2026_evaluation.jsonl)")
    parser.add_argument("--system", action="append", default=[], metavar="RUN=PRED,METRICS,INFO",
                        help="files of one submitted run: predictions JSONL on the evaluation "
                             "list, development-testing metrics JSON, system-info JSON "
                             "(repeat per system; RUN = submission.systems[*].run)")
    parser.add_argument("--manifest",
                        help="JSON/YAML mapping RUN -> {predictions, metrics, system_info} "
                             "(paths relative to the manifest), instead of --system")
    parser.add_argument("--report-pdf",
                        help="technical report PDF (default: submission.report_pdf; when both "
                             "are empty a short report is generated)")
    parser.add_argument("--table-rows",
                        help="JSON list of Table 1 rows {system, R1@0.5, R1@0.7, mAP, mAP@0.5, "
                             "mAP@0.75} for the generated report (default: the submitted "
                             "systems)")
    parser.add_argument("--features", default="data/features/extractor.json",
                        help="the packed features' extractor record, which fills empty "
                             "audio_models / text_models (default: data/features/extractor.json "
                             "when present)")
    parser.add_argument("--out", default="submission", help="output folder (default: submission)")


def parse_system_arg(text: str):
    from amr.reporting.submission import SubmissionError, SystemInputs

    run, sep, paths = text.partition("=")
    parts = paths.split(",")
    if not sep or not run or len(parts) != 3 or not all(parts):
        raise SubmissionError(f"--system {text!r}: expected RUN=PRED.jsonl,METRICS.json,INFO.json")
    return SystemInputs(run, *(Path(p) for p in parts))


def read_manifest(path: str | Path):
    import json

    import yaml

    from amr.reporting.submission import SubmissionError, SystemInputs

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except FileNotFoundError:
        raise SubmissionError(f"{path}: manifest not found") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SubmissionError(f"{path}: manifest does not parse ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise SubmissionError(f"{path}: manifest must map RUN -> {{predictions, metrics, "
                              "system_info}}")
    systems = []
    for run, entry in data.items():
        keys = ("predictions", "metrics", "system_info")
        if not isinstance(entry, dict) or sorted(entry) != sorted(keys) \
                or not all(isinstance(entry[k], str) for k in keys):
            raise SubmissionError(f"{path}: entry {run!r} must have exactly the path keys "
                                  f"{list(keys)}")
        systems.append(SystemInputs(str(run), *(path.parent / entry[k] for k in keys)))
    return systems


def run(args: argparse.Namespace) -> int:
    import json

    from amr.config.params import load_submission
    from amr.config.schema import ConfigError
    from amr.reporting.submission import SubmissionError, build_submission, validate_submission

    try:
        team = load_submission(args.params)
        systems = [parse_system_arg(s) for s in args.system]
        if args.manifest:
            systems += read_manifest(args.manifest)
        if not systems:
            raise SubmissionError("no systems given: use --system RUN=PRED,METRICS,INFO "
                                  "(repeated) or --manifest")
        table_rows = None
        if args.table_rows:
            try:
                table_rows = json.loads(Path(args.table_rows).read_text(encoding="utf-8"))
            except (FileNotFoundError, json.JSONDecodeError) as exc:
                raise SubmissionError(f"{args.table_rows}: cannot read table rows ({exc})")
            if not isinstance(table_rows, list):
                raise SubmissionError(f"{args.table_rows}: expected a JSON list of rows")
        features = None
        if args.features and Path(args.features).is_file():
            features = json.loads(Path(args.features).read_text(encoding="utf-8"))
        zip_path = build_submission(
            systems, team, Path(args.eval_list), Path(args.out),
            Path(args.report_pdf) if args.report_pdf else None, table_rows, features)
        problems = validate_submission(zip_path, args.eval_list)
    except (ConfigError, SubmissionError, ValueError) as exc:
        print(f"amr package: {exc}", file=sys.stderr)
        return 2
    if problems:
        # Renamed so that nothing named like a submission is left to upload by mistake.
        invalid = zip_path.with_name(zip_path.name + ".invalid")
        zip_path.replace(invalid)
        print(f"amr package: the built zip is NOT valid (kept as {invalid}):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{zip_path}: valid ({len(systems)} system(s))")
    return 0
