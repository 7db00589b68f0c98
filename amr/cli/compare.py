"""``amr compare PRED_A PRED_B GT``: paired significance of two prediction files."""
from __future__ import annotations

HELP = ("Compare two prediction files query by query on the same ground truth: B - A per "
        "metric with a paired bootstrap interval, exact McNemar (R1) or sign-flip (AP) p-values "
        "and Benjamini-Hochberg q-values; prints a table and one JSON line.")


def add_arguments(parser) -> None:
    from amr.config.schema import AnalysisConfig

    defaults = AnalysisConfig()
    parser.add_argument("predictions_a", metavar="PRED_A", help="predictions JSONL (the reference)")
    parser.add_argument("predictions_b", metavar="PRED_B", help="predictions JSONL compared with A")
    parser.add_argument("ground_truth", metavar="GT", help="annotation JSONL (qid, relevant_windows)")
    parser.add_argument("--resamples", type=int, default=defaults.resamples,
                        help=f"bootstrap and sign-flip resamples (default {defaults.resamples})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"resampling seed (default {defaults.seed})")
    parser.add_argument("--confidence", type=float, default=defaults.confidence,
                        help=f"bootstrap interval level (default {defaults.confidence})")
    parser.add_argument("--fdr", type=float, default=defaults.fdr,
                        help=f"BH level marked significant (default {defaults.fdr})")


def run(args) -> int:
    import json
    from pathlib import Path

    from amr.config.schema import AnalysisConfig
    from amr.evaluation.analysis.queries import query_table
    from amr.evaluation.analysis.report import SystemResults, significance, significance_display
    from amr.evaluation.metrics import load_jsonl
    from amr.evaluation.prediction_files import read_predictions

    a_name, b_name = "A", "B"
    cfg = AnalysisConfig(seed=args.seed, resamples=args.resamples, confidence=args.confidence,
                         fdr=args.fdr, against=[])
    cfg.validate([a_name, b_name])
    gt = load_jsonl(args.ground_truth)
    systems = {name: SystemResults(name, {name: query_table(read_predictions(path), gt)})
               for name, path in ((a_name, args.predictions_a), (b_name, args.predictions_b))}
    table = significance(systems, [(b_name, a_name)], cfg)
    print(f"A = {args.predictions_a}\nB = {args.predictions_b}\n"
          f"{int(table['queries'].iloc[0])} queries of {Path(args.ground_truth).name}; "
          f"Δ = B − A (points); * q < {cfg.fdr:g} (BH over the {len(table)} tests)\n")
    print(significance_display(table, cfg).drop(columns=["Comparison", "Seed sd"])
          .rename(columns={"Value": "B", "Against": "A"})
          .to_markdown(index=False, disable_numparse=True))
    summary = {row.metric: {"a": round(row.against_value, 4), "b": round(row.value, 4),
                            "delta": round(row.delta, 4), "ci": [round(row.ci_low, 4), round(row.ci_high, 4)],
                            "test": row.test, "p": row.p, "q": row.q, "significant": bool(row.significant)}
               for row in table.itertuples(index=False)}
    print(json.dumps({"queries": int(table["queries"].iloc[0]), "resamples": cfg.resamples,
                      "seed": cfg.seed, "metrics": summary}))
    return 0
