"""``amr pipeline sync|check``: dvc.yaml derived from params.yaml and the stage scripts."""
from __future__ import annotations

HELP = ("Write dvc.yaml from params.yaml (its systems) and stages/*.py (what each stage imports "
        "and reads): `sync`; or only check that it is up to date: `check` (exit 1 when not).")


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["sync", "check"])
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--dvc-yaml", default="dvc.yaml", help="pipeline file (default: %(default)s)")


def run(args) -> int:
    import sys
    from pathlib import Path

    from amr.config.params import Params
    from amr.pipeline import dag

    params = Params.load(args.params)
    if args.action == "check":
        try:
            dag.check(params, args.dvc_yaml)
        except dag.PipelineError as exc:  # exit 1: out of date (2: the params do not load)
            print(f"error: {exc}", file=sys.stderr)
            return 1
        exact = Path(args.dvc_yaml).read_text(encoding="utf-8") == dag.expected_text(params)
        print(f"{args.dvc_yaml}: up to date" if exact else
              f"{args.dvc_yaml}: declares at least what every stage executes and reads "
              "(`amr pipeline sync` would rewrite it exactly)")
        return 0
    changed = dag.sync(params, args.dvc_yaml)
    stages = len(dag.build(params)["stages"])
    print(f"{args.dvc_yaml}: {'written' if changed else 'already up to date'} ({stages} stages)")
    return 0
