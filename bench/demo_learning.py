"""Does training learn? Development-testing metrics of the trained systems of a finished
`dvc repro` against an untrained slot-3 model and a duration prior, on the same split.

The duration prior predicts, for every query, the 10 most frequent normalised training windows
(5 % bins) scaled to the recording's length: what a model knowing only where moments usually
are would answer. Beside R1 and mAP, how each ranks its own windows (amr.evaluation.ranking):
within-query Spearman(score, IoU), the top-10 oracle R1@0.5 and the share of it the top-1
window reaches (R1@0.5 / oracle). Run from the repository root after `dvc repro`.
"""
import json
from collections import Counter

import numpy as np
import torch

from amr.config.params import Params
from amr.config.paths import PREDICT_SPLITS, ground_truth, metrics_file, packed
from amr.data.dataset import MomentDataset, eval_loader
from amr.engine.predict import run_inference
from amr.evaluation.metrics import evaluate_predictions, load_jsonl
from amr.evaluation.ranking import ranking_diagnostics
from amr.model import build_model
from amr.util.io import read_json

KEYS = ("R1@0.5", "R1@0.7", "mAP")
RANKING = ("rank_spearman", "oracle_R1@0.5", "top1/oracle")


def scored(records: list[dict], gt: list[dict]) -> dict:
    return with_ratio({**evaluate_predictions(records, gt), **ranking_diagnostics(records, gt)})


def with_ratio(m: dict) -> dict:
    oracle = m.get("oracle_R1@0.5") or 0.0
    return {**m, "top1/oracle": round(m["R1@0.5"] / oracle, 2) if oracle else 0.0}


def duration_prior(train: MomentDataset, test: MomentDataset) -> list[dict]:
    frames = np.diff(train.audio_offsets)
    bins = Counter()
    for row in train.rows:
        n = frames[train.recording[row]]
        for s, e in train.windows[train.window_offsets[row]: train.window_offsets[row + 1]]:
            bins[(round(s / n * 20) / 20, round(e / n * 20) / 20)] += 1
    top = [(s, e, c) for (s, e), c in bins.most_common() if e > s][:10]
    test_frames = np.diff(test.audio_offsets)
    return [{"qid": qid, "pred_relevant_windows": [[round(s * n), round(e * n), c] for s, e, c in top]}
            for qid, n in ((q, test_frames[test.recording[r]]) for r, q in enumerate(test.qids))]


def main() -> None:
    params = Params.load()
    cfg = params.system("slot3")
    split = PREDICT_SPLITS["test"]
    gt = load_jsonl(ground_truth(split))
    test = MomentDataset(packed(split), cfg.data, train=False)
    torch.manual_seed(params.train.seed)
    untrained_model = build_model(cfg).eval()
    untrained, _ = run_inference(untrained_model, eval_loader(test, params.train.eval_batch_size), cfg)
    train = MomentDataset(packed("finetune_train"), cfg.data, train=True)
    rows = {
        "untrained slot3": scored(untrained, gt),
        "duration prior": scored(duration_prior(train, test), gt),
    }
    for system in params.system_names():
        details = metrics_file(system).with_suffix(".details.json")
        rows[f"trained {system}"] = with_ratio({**read_json(metrics_file(system)),
                                                **read_json(details).get("ranking", {})})
    columns = KEYS + RANKING
    print(f"{'development-testing':<22}" + "".join(f"{k:>15}" for k in columns))
    for name, m in rows.items():
        print(f"{name:<22}" + "".join(f"{m.get(k, float('nan')):>15.2f}" for k in columns))
    print(json.dumps({name: {k: m.get(k) for k in columns} for name, m in rows.items()}))


if __name__ == "__main__":
    main()
