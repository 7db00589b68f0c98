"""``amr ablations queue|table|submit|collect``: the report's Table 2 as DVC experiments."""
from __future__ import annotations

HELP = ("Queue the Table-2 grid as DVC experiments (`queue`, then `dvc exp run --run-all -j N`) or "
        "collect `dvc exp show --json` into Table 2 (`table`: Markdown, CSV, LaTeX); on a cluster, "
        "one job per row (`submit`, settings in params.yaml `cluster:`), then `collect`.")


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
    s = sub.add_parser("submit", help="one cluster job per row that needs its own run; each runs "
                       "its experiment in a clone of the git remote and pushes it (params.yaml cluster:)")
    s.add_argument("--executor", choices=["slurm", "local"],
                   help="slurm: sbatch jobs; local: processes on this machine (default: cluster.executor)")
    s.add_argument("--rows", nargs="+", metavar="NAME", help="only these rows (default: every row)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra -S override for every row; repeatable")
    s.add_argument("--wait", action="store_true",
                   help="wait for the jobs and report each row (exit 1 when one failed)")
    c = sub.add_parser("collect", help="pull the rows' experiments from the git remote, then write "
                       "reports/table2.{md,csv,tex} as `table` does")
    c.add_argument("--rows", nargs="+", metavar="NAME", help="only pull these rows (default: every row)")
    for p in (s, c):
        p.add_argument("--params", default="params.yaml",
                       help="params file with the cluster: section (default params.yaml)")
    c.add_argument("--out", default="reports/table2", help="output stem (default reports/table2)")


def run(args) -> int:
    import json
    import sys
    from pathlib import Path

    from amr.reporting import ablations

    if args.action in ("submit", "collect"):
        from amr.pipeline.cluster import ClusterError

        try:
            return _on_cluster(args)
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.action == "queue":
        cmds = ablations.queue(dvc=args.dvc, dry_run=args.dry_run, extra=args.set)
        print(f"{len(cmds)} experiment(s) queued of {len(ablations.GRID)} rows "
              "(the others reuse a Table-1 system or another row); run them with "
              "`dvc exp run --run-all -j 1`, then `amr ablations table`")
        return 0
    from amr.config.params import Params

    data = json.loads(Path(args.exp_json).read_text()) if args.exp_json else ablations.exp_show_json(args.dvc)
    table, paths = ablations.write_table2(data, Params.load(args.params).analysis, out=args.out)
    _print_table(table, paths)
    return 0


def _print_table(table, paths) -> None:
    from amr.reporting.tables import to_markdown

    print(to_markdown(table))
    print("wrote " + ", ".join(str(p) for p in paths))


def _on_cluster(args) -> int:
    from amr.pipeline import cluster

    if args.action == "collect":
        _print_table(*cluster.collect(rows=args.rows, params_path=args.params, out=args.out))
        return 0
    submitted = cluster.submit(rows=args.rows, executor=args.executor, extra=args.set,
                               params_path=args.params)
    if not args.wait:
        print(f"{len(submitted)} job(s) submitted; when they have ended: `amr ablations collect`")
        return 0
    failed = cluster.wait(submitted)
    print(f"{len(submitted) - len(failed)} of {len(submitted)} row(s) pushed"
          + (f"; failed: {', '.join(failed)}" if failed else "; now: `amr ablations collect`"))
    return 1 if failed else 0
