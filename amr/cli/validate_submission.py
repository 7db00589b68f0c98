"""``amr validate-submission``: check a DCASE Task 6 submission zip and list every problem."""
from __future__ import annotations

import argparse
import sys

HELP = "Check a DCASE Task 6 submission zip against the specification; exit 0 only if valid."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("zip", help="the submission zip, <Lastname>_<INST>_task6.zip")
    parser.add_argument("--eval-list", required=True,
                        help="the blind evaluation list (dcase2026_evaluation.jsonl)")


def run(args: argparse.Namespace) -> int:
    from amr.reporting.submission import validate_submission

    try:
        problems = validate_submission(args.zip, args.eval_list)
    except ValueError as exc:  # the evaluation list itself is unreadable
        print(f"amr validate-submission: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"{args.zip}: INVALID, {len(problems)} problem(s):")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"{args.zip}: valid")
    return 0
