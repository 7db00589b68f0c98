"""A project copy holding what the analysis stage reads: development-testing ground truth (the
shipped CASTELLA validation slice), predictions and saliency of every system of params.yaml
(derived from the shipped baseline predictions, each slot answering more queries with a GT
window), and the evaluate stage's outputs written by the real evaluation code."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from projectkit import copy_project

FIXTURES = Path(__file__).parent / "fixtures"
SYSTEMS = {"baseline": 0, "slot1": 40, "slot2": 80, "slot3": 120, "slot4": 160}  # queries improved


def improved(records: list[dict], gt: dict[str, dict], count: int, seed: int) -> list[dict]:
    """The first ``count`` queries of a seeded order get a GT window as their top-1."""
    order = np.random.default_rng(seed).permutation(len(records))[:count]
    out = [json.loads(json.dumps(r)) for r in records]
    for i in order:
        s, e = gt[out[i]["qid"]]["relevant_windows"][0]
        out[i]["pred_relevant_windows"] = [[float(s), float(e), 1.0]] + out[i]["pred_relevant_windows"][:9]
    return out


def build(root: Path, params) -> Path:
    from amr.config.paths import PREDICT_SPLITS, ground_truth, run_dir
    from amr.evaluation.prediction_files import saliency_path, write_predictions, write_saliency
    from amr.reporting.systems import evaluate_system, system_runs

    copy_project(root)
    gt_path = root / ground_truth(PREDICT_SPLITS["test"])
    gt_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(FIXTURES / "castella_val_release.jsonl", gt_path)
    gt = {json.loads(line)["qid"]: json.loads(line) for line in gt_path.read_text().splitlines()}
    base = [json.loads(line) for line in (FIXTURES / "baseline_castella_val_preds.jsonl").read_text().splitlines()]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for name in params.system_names():
            runs = system_runs(params, name)
            for k, (label, path) in enumerate(runs.test_predictions):
                write_predictions(path, improved(base, gt, SYSTEMS[name] - 20 * k, seed=k))
                if not runs.fused:
                    rng = np.random.default_rng(k)
                    write_saliency(saliency_path(path), {q: rng.normal(size=int(d["duration"]))
                                                         for q, d in gt.items()})
            for system, seed in runs.members:
                info = run_dir("finetune", system, seed) / "system_info.json"
                info.parent.mkdir(parents=True, exist_ok=True)
                info.write_text(json.dumps({"trainable_parameters": 10, "frozen_parameters": 0,
                                            "loss_function": "L"}))
            evaluate_system(runs)
    finally:
        os.chdir(cwd)
    return root
