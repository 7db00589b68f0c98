"""``amr ablations queue|table``: the report's Table 2 as DVC experiments."""
from __future__ import annotations

HELP = ("Queue the Table-2 grid as DVC experiments (`queue`, then `dvc queue start -j N`) or "
        "collect `dvc exp show --json` into Table 2 (`table`: Markdown, CSV, LaTeX).")


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    q = sub.add_parser("queue", help="queue every Table-2 row that needs its own run")
    q.add_argument("--dry-run", action="store_true", help="print the dvc commands only")
    q.add_argument("--dvc", help="dvc executable (default: on PATH, else beside this Python)")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra -S override for every row, e.g. a smaller budget "
                        "(--set train.finetune.epochs=1); repeatable")
    t = sub.add_parser("table", help="collect the experiments into reports/table2.{md,csv,tex}")
    t.add_argument("--exp-json", help="read this `dvc exp show --json` output instead of running dvc")
    t.add_argument("--out", default="reports/table2", help="output stem (default reports/table2)")
    t.add_argument("--dvc", help="dvc executable (default: on PATH, else beside this Python)")
    t.add_argument("--params", default="params.yaml",
                   help="params file whose analysis: section sets the resampling (default params.yaml)")


def run(args) -> int:
    import json
    from pathlib import Path

    from amr import ablations
    from amr.tables import to_markdown, write_table

    if args.action == "queue":
        cmds = ablations.queue(dvc=args.dvc, dry_run=args.dry_run, extra=args.set)
        print(f"{len(cmds)} experiment(s) queued of {len(ablations.GRID)} rows "
              "(the others reuse a Table-1 system or another row); run them with "
              "`dvc queue start -j N`, then `amr ablations table`")
        return 0
    from amr.params import Params

    data = json.loads(Path(args.exp_json).read_text()) if args.exp_json else ablations.exp_show_json(args.dvc)
    table = ablations.collect(data, query_results=ablations.git_query_results,
                              analysis=Params.load(args.params).analysis)
    paths = write_table(table, args.out)
    print(to_markdown(table))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
