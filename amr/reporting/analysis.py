"""The analysis stage's work on the pipeline's files: per-query results of every system in,
significance and strata tables and figures out."""
from __future__ import annotations

from pathlib import Path

from amr.config.paths import (
    FIGURES_DIR,
    METRICS_DIR,
    PREDICT_SPLITS,
    SIGNIFICANCE,
    STRATA,
    ground_truth,
    predictions,
    query_results,
)
from amr.config.schema import AnalysisConfig
from amr.evaluation.analysis import figures, report
from amr.evaluation.analysis.queries import read_query_table
from amr.evaluation.metrics import load_jsonl
from amr.evaluation.prediction_files import read_predictions, read_saliency, saliency_path
from amr.reporting.systems import SystemRuns
from amr.util.io import read_json


def load_results(runs: SystemRuns) -> report.SystemResults:
    seeds = read_json(METRICS_DIR / f"{runs.name}.seeds.json")
    tables = read_query_table(query_results(runs.name))
    return report.SystemResults(runs.name, tables, seeds["spread"] if len(seeds["seeds"]) > 1 else None)


def run_analysis(systems: list[SystemRuns], comparisons: list[tuple[str, str]], cfg: AnalysisConfig,
                 clip_length: float) -> list[Path]:
    results = {runs.name: load_results(runs) for runs in systems}
    order = [runs.name for runs in systems]
    significance = report.significance(results, comparisons, cfg)
    spread = report.seed_spread(results)
    strata = report.strata_table(results, order, cfg)
    paths = report.write_report(SIGNIFICANCE, significance, report.significance_display(significance, cfg),
                                report.significance_markdown(significance, spread, cfg),
                                "Paired significance on development-testing")
    paths += report.write_report(STRATA, strata, report.strata_display(strata), report.strata_markdown(strata, cfg),
                                 "Results by stratum on development-testing")
    paths.append(figures.forest_plot(significance, FIGURES_DIR / "differences.png", cfg.confidence))
    paths.append(figures.strata_plot(strata, FIGURES_DIR / "r1_by_stratum.png"))
    if cfg.timelines:
        gt = {str(d["qid"]): d for d in load_jsonl(ground_truth(PREDICT_SPLITS["test"]))}
        last = results[order[-1]].headline
        qids = figures.choose_queries(last, gt, cfg.timelines, report.rng_for(cfg, "timelines"))
        preds, saliency = {}, {}
        for runs in systems:
            preds[runs.name] = {str(r["qid"]): r for r in read_predictions(runs.test_predictions[0][1])}
            system, seed = runs.members[0]
            path = saliency_path(predictions(system, "test", seed))
            if path.is_file():
                saliency[runs.name] = read_saliency(path)
        paths.append(figures.timelines(qids, gt, preds, saliency, FIGURES_DIR / "timelines.png", clip_length))
    return paths
