"""Development-testing evaluation of pipeline systems: metrics files DVC tracks as metrics.

:func:`system_runs` is the one place that turns a system of params.yaml into the files that
make it up; the functions after it work on that description only.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from amr.config.paths import (
    METRICS_DIR,
    PREDICT_SPLITS,
    ground_truth,
    metrics_file,
    predictions,
    query_results,
    run_dir,
)
from amr.evaluation.metrics import HEADLINE_METRICS, evaluate_predictions, load_jsonl
from amr.util.io import read_json, write_json

METRIC_KEYS = HEADLINE_METRICS


@dataclass(frozen=True)
class SystemRuns:
    """The files of one pipeline system (a trained system, or a fusion of one's seeds)."""

    name: str
    label: str  # readable, derived from the system's definition
    fused: bool
    test_predictions: tuple[tuple[str, Path], ...]  # ("seed N" or "fused", predictions JSONL)
    members: tuple[tuple[str, int], ...]  # (trained system, seed) whose weights make it up

    @property
    def evaluation_predictions(self) -> Path:
        """What is submitted for the blind evaluation list: the fused file, or the first seed's."""
        if self.fused:
            return predictions(self.name, "evaluation")
        return predictions(self.name, "evaluation", self.members[0][1])

    @property
    def curve_run(self) -> Path:
        """The fine-tuning run whose training curve stands for this system (its first seed)."""
        system, seed = self.members[0]
        return run_dir("finetune", system, seed)


def system_runs(params, name: str) -> SystemRuns:
    """Describe system ``name`` of a :class:`~amr.config.params.Params` (reads only what it needs)."""
    if name in params.fused_systems():
        fusion = params.fusion(name)
        seeds = params.fusion_members(name)
        parts = [f"{len(seeds)}-seed ensemble" if fusion.ensemble else "single seed"]
        if fusion.saliency_proposals:
            parts.append("saliency proposals")
        return SystemRuns(name, f"{name}: {fusion.base} + " + " + ".join(parts), True,
                          (("fused", predictions(name, "test")),),
                          tuple((fusion.base, s) for s in seeds))
    seeds = params.seeds(name)
    components = params.components(name)
    return SystemRuns(name, f"{name}: " + (" + ".join(components) if components else "QD-DETR"), False,
                      tuple((f"seed {s}", predictions(name, "test", s)) for s in seeds),
                      tuple((name, s) for s in seeds))


def system_info(runs: SystemRuns) -> dict:
    """Parameter counts, loss terms and ensemble flag of a system, read from its training runs."""
    infos = [read_json(run_dir("finetune", name, seed) / "system_info.json") for name, seed in runs.members]
    if not runs.fused:
        infos = infos[:1]  # extra seeds of a trained system are separate models, not one system
    return {
        "trainable_parameters": sum(i["trainable_parameters"] for i in infos),
        "frozen_parameters": sum(i["frozen_parameters"] for i in infos),
        "loss_function": infos[0]["loss_function"],
        "ensemble": len(infos) > 1,
        "members": len(infos),
    }


def evaluate_system(runs: SystemRuns) -> dict:
    """Write ``metrics/<system>.json`` (+ details, per-seed spread, per-query results, system
    info); return metrics."""
    from amr.evaluation.analysis.queries import query_table, write_query_table
    from amr.evaluation.prediction_files import read_predictions
    from amr.evaluation.ranking import ranking_diagnostics

    gt = load_jsonl(ground_truth(PREDICT_SPLITS["test"]))
    predicted = {label: read_predictions(path) for label, path in runs.test_predictions}
    results = {label: evaluate_predictions(records, gt, details=True) for label, records in predicted.items()}
    write_query_table(query_results(runs.name),
                      {label: query_table(records, gt) for label, records in predicted.items()})
    primary = next(iter(results.values()))
    headline = {k: primary[k] for k in METRIC_KEYS}
    write_json(metrics_file(runs.name), headline)
    # how the headline run ranks its own windows (amr.evaluation.ranking), beside the official breakdowns
    ranking = ranking_diagnostics(next(iter(predicted.values())), gt)
    write_json(METRICS_DIR / f"{runs.name}.details.json", {**primary, "ranking": ranking})
    spread = {
        k: {"mean": round(statistics.mean(r[k] for r in results.values()), 2),
            "sd": round(statistics.stdev(r[k] for r in results.values()), 2) if len(results) > 1 else None}
        for k in METRIC_KEYS
    }
    write_json(METRICS_DIR / f"{runs.name}.seeds.json",
               {"seeds": {n: {k: r[k] for k in METRIC_KEYS} for n, r in results.items()}, "spread": spread})
    write_json(METRICS_DIR / f"{runs.name}.info.json", system_info(runs))
    return headline


def table1(systems: list[SystemRuns], caption: str):
    """Table 1: every system on development-testing, best per column in bold, ``*`` where the
    difference to the row above is significant (the analysis stage's tests)."""
    from amr.config.paths import SIGNIFICANCE
    from amr.evaluation.analysis.report import marks_against_previous
    from amr.reporting.tables import Row, Table

    marks, note = marks_against_previous(SIGNIFICANCE.with_suffix(".csv"), [r.name for r in systems])
    rows = []
    for runs in systems:
        metrics = read_json(metrics_file(runs.name))
        seeds = read_json(METRICS_DIR / f"{runs.name}.seeds.json")
        rows.append(Row(runs.label, metrics, seeds["spread"] if len(seeds["seeds"]) > 1 else None,
                        marks=marks.get(runs.name, {})))
    return Table(caption, rows, note=note)


def r1_by_length_rows(systems: list[SystemRuns]) -> list[dict]:
    """R1@0.7 per GT-window-length bucket and system (for the bar chart)."""
    rows = []
    for runs in systems:
        details = read_json(METRICS_DIR / f"{runs.name}.details.json")
        for bucket, scores in details["by_gt_length"].items():
            rows.append({"label": f"{runs.name} | {bucket}", "system": runs.name, "bucket": bucket,
                         "R1@0.7": scores.get("R1@0.7", 0.0),
                         "queries": scores.get("num_queries", 0)})
    return rows


def training_curves(run: Path) -> list[dict]:
    """Per-epoch scalars of a training run, merged from its dvclive files."""
    import csv

    root = Path(run) / "dvclive" / "plots" / "metrics"
    by_step: dict[int, dict] = {}
    for tsv in sorted(root.rglob("*.tsv")):
        name = tsv.relative_to(root).with_suffix("").as_posix()
        with tsv.open(newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                step = int(row["step"])
                value = row[tsv.stem] if tsv.stem in row else row[list(row)[-1]]
                by_step.setdefault(step, {"epoch": step + 1})[name] = float(value)
    return [by_step[s] for s in sorted(by_step)]
