"""The official metrics: published numbers, hand-computed cases, and a naive re-derivation."""
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from amr.evaluation.metrics import MetricsError, evaluate_predictions, load_jsonl

FIXTURES = Path(__file__).parent / "fixtures"


def gt(qid, windows):
    return {"qid": qid, "vid": "v", "duration": 300, "query": "q", "relevant_windows": windows}


def pred(qid, windows):
    return {"qid": qid, "pred_relevant_windows": windows}


def score(preds, gts, **kw):
    return evaluate_predictions(preds, gts, **kw)


# ------------------------------------------------------------------ the published numbers
def test_official_baseline_validation_numbers():
    preds = load_jsonl(FIXTURES / "baseline_castella_val_preds.jsonl")
    gts = load_jsonl(FIXTURES / "castella_val_release.jsonl")
    assert score(preds, gts) == {
        "R1@0.5": 27.56, "R1@0.7": 16.19, "mAP": 11.44, "mAP@0.5": 24.02, "mAP@0.75": 10.26,
    }


def test_cli_prints_one_json_object_and_exits_zero():
    out = subprocess.run(
        [sys.executable, "-m", "amr", "evaluate",
         str(FIXTURES / "baseline_castella_val_preds.jsonl"), str(FIXTURES / "castella_val_release.jsonl")],
        capture_output=True, text=True, check=True,
    )
    result = json.loads(out.stdout)
    assert list(result) == ["R1@0.5", "R1@0.7", "mAP", "mAP@0.5", "mAP@0.75"]
    assert result["R1@0.7"] == 16.19


def test_cli_missing_prediction_exits_2_with_count_and_qids(tmp_path):
    gts = load_jsonl(FIXTURES / "castella_val_release.jsonl")
    preds = load_jsonl(FIXTURES / "baseline_castella_val_preds.jsonl")[3:]
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in preds))
    out = subprocess.run(
        [sys.executable, "-m", "amr", "evaluate", str(p), str(FIXTURES / "castella_val_release.jsonl")],
        capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert "3 ground-truth queries have no prediction" in out.stderr
    assert gts[0]["qid"] in out.stderr


# ------------------------------------------------------------------ hand-computed cases
def test_perfect_prediction():
    r = score([pred("a", [[0, 10, 0.9]])], [gt("a", [[0, 10]])])
    assert r == {"R1@0.5": 100.0, "R1@0.7": 100.0, "mAP": 100.0, "mAP@0.5": 100.0, "mAP@0.75": 100.0}


def test_r1_uses_list_order_and_ties_keep_list_order_for_ap():
    # equal scores: the stable sort keeps [20, 30] first -> FP then TP -> AP 0.5
    r = score([pred("a", [[20, 30, 0.5], [0, 10, 0.5]])], [gt("a", [[0, 10]])])
    assert (r["R1@0.5"], r["mAP"]) == (0.0, 50.0)
    # higher score on the second window: AP sorts by score, R1 still takes the first listed
    r = score([pred("a", [[20, 30, 0.4], [0, 10, 0.5]])], [gt("a", [[0, 10]])])
    assert (r["R1@0.5"], r["mAP"]) == (0.0, 100.0)


def test_duplicate_windows_match_one_gt_only():
    # second copy finds its GT locked -> false positive after the TP: AP stays 1
    r = score([pred("a", [[0, 10, 0.9], [0, 10, 0.8]])], [gt("a", [[0, 10]])])
    assert r["mAP"] == 100.0
    # duplicate first (FP-free) but a real second GT missed entirely -> recall 0.5
    r = score([pred("a", [[0, 10, 0.9], [0, 10, 0.8]])], [gt("a", [[0, 10], [50, 60]])])
    assert r["mAP"] == 50.0


def test_unmatched_gt_windows_cap_recall():
    r = score([pred("a", [[0, 10, 0.9]])], [gt("a", [[0, 10], [20, 30]])])
    assert (r["R1@0.7"], r["mAP"]) == (100.0, 50.0)


def test_two_element_windows_get_rank_scores():
    r = score([pred("a", [[20, 30], [0, 10]])], [gt("a", [[0, 10]])])
    assert (r["R1@0.5"], r["mAP"]) == (0.0, 50.0)


def test_zero_length_and_too_long_gt_windows_are_dropped():
    gts = [gt("a", [[5, 5], [0, 10]]), gt("b", [[5, 5]]), gt("c", [[0, 1600]])]
    # b and c have no valid window: no prediction needed for them
    r = score([pred("a", [[0, 10, 1.0]])], gts)
    assert r["mAP"] == 100.0
    # a zero-length prediction never matches
    r = score([pred("a", [[3, 3, 1.0]])], gts)
    assert r == {"R1@0.5": 0.0, "R1@0.7": 0.0, "mAP": 0.0, "mAP@0.5": 0.0, "mAP@0.75": 0.0}


def test_iou_thresholds():
    # IoU 0.8: hits at 0.50 ... 0.80 (7 of 10 thresholds)
    r = score([pred("a", [[0, 8, 1.0]])], [gt("a", [[0, 10]])], details=True)
    assert (r["R1@0.5"], r["R1@0.7"], r["mAP"], r["mAP@0.5"], r["mAP@0.75"]) == (100.0, 100.0, 70.0, 100.0, 100.0)
    assert r["R1"]["0.85"] == 0.0 and r["mAP_at"]["0.80"] == 100.0


def test_only_first_ten_windows_count_for_ap():
    windows = [[100 + i, 101 + i, 1.0] for i in range(10)] + [[0, 10, 1.0]]
    r = score([pred("a", windows)], [gt("a", [[0, 10]])])
    assert r["mAP"] == 0.0


def test_mean_over_queries():
    gts = [gt("a", [[0, 10]]), gt("b", [[0, 10]])]
    r = score([pred("a", [[0, 10, 1]]), pred("b", [[50, 60, 1]])], gts)
    assert (r["R1@0.7"], r["mAP"]) == (50.0, 50.0)


def test_missing_prediction_raises():
    with pytest.raises(MetricsError, match="1 ground-truth query has no prediction, e.g. b"):
        score([pred("a", [[0, 1, 1]])], [gt("a", [[0, 1]]), gt("b", [[0, 1]])])


def test_details_breakdowns():
    gts = [gt("short", [[0, 5]]), gt("long", [[0, 100]]), gt("many", [[i * 20, i * 20 + 15] for i in range(7)])]
    preds = [pred("short", [[0, 5, 1]]), pred("long", [[200, 250, 1]]), pred("many", [[0, 15, 1]])]
    r = score(preds, gts, details=True)
    assert r["by_gt_length"]["short (<=10s)"]["R1@0.7"] == 100.0
    assert r["by_gt_length"]["long (>30s)"]["R1@0.7"] == 0.0
    assert r["by_gt_length"]["middle (10-30s)"]["num_queries"] == 1
    assert r["by_gt_count"][">5 windows"]["num_queries"] == 1
    assert r["by_gt_count"]["1 window"]["R1@0.7"] == 50.0
    assert r["by_gt_count"]["2-5 windows"] == {"num_queries": 0}


# ------------------------------------------------------------------ naive re-derivation
def naive_metrics(preds, gts):
    """SPEC §3 written as plainly as possible, one query and one threshold at a time."""
    def iou(a, b):
        inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
        union = (a[1] - a[0]) + (b[1] - b[0]) - inter
        return inter / union if union else 0.0

    gtd = {}
    for d in gts:
        w = [x for x in d["relevant_windows"] if 0 < x[1] - x[0] <= 1500]
        if w:
            gtd[d["qid"]] = w
    pd = {d["qid"]: d["pred_relevant_windows"] for d in preds if d["qid"] in gtd}
    thds = [0.5 + 0.05 * i for i in range(10)]
    r1 = {0.5: 0, 0.7: 0}
    ap_sum = [0.0] * 10
    for qid, windows in pd.items():
        g = gtd[qid]
        top = windows[0]
        best = max(iou(top, x) for x in g)
        for t in r1:
            r1[t] += best >= t
        kept = windows[:10]
        scored = [(w[0], w[1], w[2] if len(w) > 2 else len(kept) - i) for i, w in enumerate(kept)]
        scored = sorted(scored, key=lambda w: -w[2])
        for ti, t in enumerate(thds):
            t = round(t, 2)
            locked, tps = set(), []
            for w in scored:
                # GT visiting order for equal IoUs is the reference scorer's: numpy's argsort, reversed
                values = np.array([iou(w, x) for x in g])
                ious = [(values[j], j) for j in np.argsort(values)[::-1]]
                hit = False
                for v, j in ious:
                    if v < t:
                        break
                    if j in locked:
                        continue
                    locked.add(j)
                    hit = True
                    break
                tps.append(hit)
            prec, rec, tp = [], [], 0
            for k, h in enumerate(tps, 1):
                tp += h
                prec.append(tp / k)
                rec.append(tp / len(g))
            mp = [0.0] + prec + [0.0]
            mr = [0.0] + rec + [1.0]
            for i in range(len(mp) - 2, -1, -1):
                mp[i] = max(mp[i], mp[i + 1])
            ap_sum[ti] += sum((mr[i] - mr[i - 1]) * mp[i] for i in range(1, len(mr)) if mr[i] != mr[i - 1])
    n = len(pd)
    aps = [a / n for a in ap_sum]
    return {"R1@0.5": 100 * r1[0.5] / n, "R1@0.7": 100 * r1[0.7] / n, "mAP": 100 * sum(aps) / 10,
            "mAP@0.5": 100 * aps[0], "mAP@0.75": 100 * aps[5]}


@pytest.mark.parametrize("seed", range(6))
def test_matches_naive_derivation_on_random_predictions(seed):
    rng = random.Random(seed)
    gts, preds = [], []
    for q in range(60):
        dur = rng.randint(30, 300)
        g = []
        for _ in range(rng.choice([1, 1, 2, 3, 7])):
            s = rng.randint(0, dur - 2)
            g.append([s, min(dur + 2, s + rng.randint(1, 60))])
        gts.append(gt(f"q{q}", g))
        p = []
        for _ in range(rng.randint(1, 12)):
            if g and rng.random() < 0.5:  # near a GT window, with coarse scores (ties)
                s, e = rng.choice(g)
                s = s + rng.randint(-3, 3)
                w = [s, max(s + 1, e + rng.randint(-3, 3))]
            else:
                s = rng.randint(0, dur)
                w = [s, s + rng.randint(0, 40)]
            if rng.random() < 0.9:
                w.append(rng.choice([0.1, 0.5, 0.5, 0.9, rng.random()]))
            p.append(w)
        if any(len(w) == 2 for w in p):
            p = [w[:2] for w in p]  # a line either has scores or not
        preds.append(pred(f"q{q}", p))
    ours = score(preds, gts)
    ref = naive_metrics(preds, gts)
    for k in ours:
        assert ours[k] == pytest.approx(ref[k], abs=0.006), k


def test_castella_test_sized_scoring_is_fast():
    rng = random.Random(0)
    gts, preds = [], []
    for q in range(1347):
        g = [[i * 30, i * 30 + rng.randint(1, 25)] for i in range(rng.randint(1, 8))]
        gts.append(gt(f"q{q}", g))
        preds.append(pred(f"q{q}", [[s, s + rng.randint(1, 40), rng.random()]
                                    for s in (rng.randint(0, 250) for _ in range(10))]))
    t0 = time.perf_counter()
    score(preds, gts)
    assert time.perf_counter() - t0 < 2.0
