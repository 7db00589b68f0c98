"""Development-testing evaluation of pipeline systems: metrics files DVC tracks as metrics."""
from __future__ import annotations

import statistics

from amr.io import read_json, write_json
from amr.metrics import evaluate_predictions, load_jsonl
from amr.params import Params
from amr.pipeline import METRICS_DIR, PREDICT_SPLITS, ground_truth, metrics_file, predictions, run_dir

METRIC_KEYS = ("R1@0.5", "R1@0.7", "mAP", "mAP@0.5", "mAP@0.75")


def system_members(params: Params, system: str) -> list[tuple[str, int]]:
    """(trained system, seed) pairs whose weights make up ``system``."""
    if system in params.fused_systems():
        base = params.fusion(system).base
        return [(base, s) for s in params.fusion_members(system)]
    return [(system, s) for s in params.seeds(system)]


def system_info(params: Params, system: str) -> dict:
    """Parameter counts, loss terms and ensemble flag of a system, read from its training runs."""
    members = system_members(params, system)
    infos = [read_json(run_dir("finetune", name, seed) / "system_info.json") for name, seed in members]
    if system not in params.fused_systems():
        infos = infos[:1]  # extra seeds of a trained system are separate models, not one system
    return {
        "trainable_parameters": sum(i["trainable_parameters"] for i in infos),
        "frozen_parameters": sum(i["frozen_parameters"] for i in infos),
        "loss_function": infos[0]["loss_function"],
        "ensemble": len(infos) > 1,
        "members": len(infos),
    }


def evaluate_system(params: Params, system: str) -> dict:
    """Write ``metrics/<system>.json`` (+ details, per-seed spread, system info); return metrics."""
    gt = load_jsonl(ground_truth(PREDICT_SPLITS["test"]))
    if system in params.fused_systems():
        runs = {"fused": predictions(system, "test")}
    else:
        runs = {f"seed {s}": predictions(system, "test", s) for s in params.seeds(system)}
    results = {name: evaluate_predictions(load_jsonl(p), gt, details=True) for name, p in runs.items()}
    primary = next(iter(results.values()))
    headline = {k: primary[k] for k in METRIC_KEYS}
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    write_json(metrics_file(system), headline)
    write_json(METRICS_DIR / f"{system}.details.json", primary)
    spread = {
        k: {"mean": round(statistics.mean(r[k] for r in results.values()), 2),
            "sd": round(statistics.stdev(r[k] for r in results.values()), 2) if len(results) > 1 else None}
        for k in METRIC_KEYS
    }
    write_json(METRICS_DIR / f"{system}.seeds.json",
               {"seeds": {n: {k: r[k] for k in METRIC_KEYS} for n, r in results.items()}, "spread": spread})
    write_json(METRICS_DIR / f"{system}.info.json", system_info(params, system))
    return headline


def system_label(params: Params, system: str) -> str:
    """A readable label derived from the system's definition in params.yaml."""
    if system in params.fused_systems():
        f = params.fusion(system)
        parts = [f"{len(params.fusion_members(system))}-seed ensemble" if f.ensemble else "single seed"]
        if f.saliency_proposals:
            parts.append("saliency proposals")
        return f"{system}: {f.base} + " + " + ".join(parts)
    enabled = [name for name, comp in (params.systems[system] or {}).items() if comp.get("enabled")]
    return f"{system}: " + (" + ".join(enabled) if enabled else "QD-DETR")


def table1(params: Params):
    """Table 1: every system of params.yaml on development-testing, best per column in bold."""
    from amr.tables import Row, Table

    rows = []
    for system in params.systems:
        metrics = read_json(metrics_file(system))
        seeds = read_json(METRICS_DIR / f"{system}.seeds.json")
        rows.append(Row(system_label(params, system), metrics, seeds["spread"] if len(seeds["seeds"]) > 1 else None))
    caption = f"Results on development-testing ({params.profile} profile, {params.source.source} data)"
    return Table(caption, rows)


def r1_by_length_rows(params: Params) -> list[dict]:
    """R1@0.7 per GT-window-length bucket and system (for the bar chart)."""
    rows = []
    for system in params.systems:
        details = read_json(METRICS_DIR / f"{system}.details.json")
        for bucket, scores in details["by_gt_length"].items():
            rows.append({"label": f"{system} | {bucket}", "system": system, "bucket": bucket,
                         "R1@0.7": scores.get("R1@0.7", 0.0),
                         "queries": scores.get("num_queries", 0)})
    return rows


def training_curves(params: Params, system: str, stage: str = "finetune") -> list[dict]:
    """Per-epoch scalars of a system's (primary-seed) run, merged from its dvclive files."""
    import csv

    seed = params.seeds(system)[0] if stage == "finetune" else None
    root = run_dir(stage, system, seed) / "dvclive" / "plots" / "metrics"
    by_step: dict[int, dict] = {}
    for tsv in sorted(root.rglob("*.tsv")):
        name = tsv.relative_to(root).with_suffix("").as_posix()
        with tsv.open(newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                step = int(row["step"])
                value = row[tsv.stem] if tsv.stem in row else row[list(row)[-1]]
                by_step.setdefault(step, {"epoch": step + 1})[name] = float(value)
    return [by_step[s] for s in sorted(by_step)]
