"""The official DCASE 2026 Task 6 moment-retrieval metrics (SPEC §3), exactly.

R1@θ: the first LISTED window of each query against its best-matching GT window.
mAP: per query, the first 10 listed windows, stably sorted by score, greedily matched to GT
windows at each IoU threshold 0.50:0.05:0.95, VOC all-point interpolated AP; mean over queries.

Every floating-point step mirrors the reference scorer (same formulas, same numpy reductions in
the same order), so results agree to the last printed digit. The greedy matching is vectorised
over queries and thresholds; only the final per-(query, threshold) sums stay scalar, because
their summation order decides the last bit.
"""
from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass

import numpy as np

from amr.util.errors import AmrError

IOU_THRESHOLDS = [float(f"{t:.2f}") for t in np.linspace(0.5, 0.95, 10)]
R1_THRESHOLDS = [0.5, 0.7]
MAX_PRED_WINDOWS = 10
GT_LENGTH_RANGE = (0.0, 1500.0)  # keep GT windows with min < e - s <= max
LENGTH_BUCKETS = {"short (<=10s)": (0.0, 10.0), "middle (10-30s)": (10.0, 30.0), "long (>30s)": (30.0, 1500.0)}
COUNT_BUCKETS = {"1 window": (1, 1), "2-5 windows": (2, 5), ">5 windows": (6, 10**9)}


class MetricsError(AmrError, ValueError):
    """Predictions and ground truth do not fit together (e.g. a GT query without prediction)."""


def _round(x: float) -> float:
    return float(f"{x:.2f}")


# ---------------------------------------------------------------------------------------------
# IoU, as in the reference scorer
# ---------------------------------------------------------------------------------------------
def iou_cross(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU with the true union: (..., P, 2) x (..., G, 2) -> (..., P, G)."""
    areas1 = pred[..., 1] - pred[..., 0]
    areas2 = gt[..., 1] - gt[..., 0]
    left = np.maximum(pred[..., :, None, 0], gt[..., None, :, 0])
    right = np.minimum(pred[..., :, None, 1], gt[..., None, :, 1])
    inter = np.clip(right - left, 0, None)
    union = areas1[..., :, None] + areas2[..., None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def iou_paired_hull(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of paired windows over their hull (max end - min start); 0 where the hull is 0."""
    inter = np.maximum(0, np.minimum(pred[:, 1], gt[:, 1]) - np.maximum(pred[:, 0], gt[:, 0]))
    union = np.maximum(pred[:, 1], gt[:, 1]) - np.minimum(pred[:, 0], gt[:, 0])
    return np.divide(inter, union, out=np.zeros_like(inter), where=union != 0)


# ---------------------------------------------------------------------------------------------
# Input preparation
# ---------------------------------------------------------------------------------------------
@dataclass
class _Query:
    qid: str
    gt: np.ndarray  # (G, 2) GT windows kept by the length filter
    top1: np.ndarray  # (2,) first listed predicted window
    preds: np.ndarray  # (P, 2) up to 10 windows per prediction line, stably sorted by score


def _windows_with_scores(windows: list, qid: str) -> list[tuple[float, float, float]]:
    kept = windows[:MAX_PRED_WINDOWS]
    n = len(kept)
    out = []
    for i, w in enumerate(kept):
        if not isinstance(w, (list, tuple)) or len(w) < 2:
            raise MetricsError(f"qid {qid}: window {w!r} is not [start, end] or [start, end, score]")
        score = float(w[2]) if len(w) >= 3 else float(n - i)  # no score -> rank scores
        out.append((float(w[0]), float(w[1]), score))
    return out


def _prepare(predictions: list[dict], ground_truth: list[dict], length_range=GT_LENGTH_RANGE,
             gt_filter=None) -> list[_Query]:
    lo, hi = length_range
    gt_by_qid: dict[str, np.ndarray] = OrderedDict()
    for d in ground_truth:
        windows = [w for w in d.get("relevant_windows") or [] if lo < (w[1] - w[0]) <= hi]
        if windows and (gt_filter is None or gt_filter(d, windows)):
            gt_by_qid[str(d["qid"])] = np.asarray(windows, dtype=float).reshape(-1, 2)

    # Several lines for one qid: windows pool (each line cut to 10), R1 takes the last line.
    windows_by_qid: dict[str, list] = defaultdict(list)
    top1_by_qid: dict[str, list] = OrderedDict()
    for d in predictions:
        qid = str(d["qid"])
        if qid not in gt_by_qid:
            continue
        listed = d.get("pred_relevant_windows") or []
        if not listed:
            raise MetricsError(f"qid {qid}: prediction has no window")
        windows_by_qid[qid].extend(_windows_with_scores(listed, qid))
        top1_by_qid[qid] = listed[0][:2]

    missing = [q for q in gt_by_qid if q not in top1_by_qid]
    if missing:
        raise MetricsError(
            f"{len(missing)} ground-truth quer{'y has' if len(missing) == 1 else 'ies have'} no "
            f"prediction, e.g. {', '.join(missing[:5])}"
        )
    queries = []
    for qid, top1 in top1_by_qid.items():
        scored = windows_by_qid[qid]
        order = sorted(range(len(scored)), key=lambda i: -scored[i][2])  # stable
        preds = np.asarray([scored[i][:2] for i in order], dtype=float).reshape(-1, 2)
        queries.append(_Query(qid, gt_by_qid[qid], np.asarray(top1, dtype=float), preds))
    return queries


# ---------------------------------------------------------------------------------------------
# R1 and AP
# ---------------------------------------------------------------------------------------------
def _top1_iou(queries: list[_Query]) -> np.ndarray:
    """IoU of each query's first listed window with its best-matching GT window: (Q,)."""
    top1 = np.stack([q.top1 for q in queries])
    chosen = []
    for q, p in zip(queries, top1):
        ious = iou_cross(p[None], q.gt)[0]
        chosen.append(q.gt[int(np.argmax(ious))])
    return iou_paired_hull(top1, np.stack(chosen))


def _recall_at_one(queries: list[_Query], thresholds) -> dict[float, float]:
    if not queries:
        return {t: float("nan") for t in thresholds}
    ious = _top1_iou(queries)
    return {t: float(np.mean(ious >= t)) for t in thresholds}


def _match(preds: np.ndarray, gts: np.ndarray, counts: np.ndarray, thresholds: np.ndarray):
    """Greedy matching for queries with the same number of GT windows.

    preds (n, P, 2) padded, counts (n,) real predictions per query, gts (n, G, 2).
    Returns tp, fp of shape (n, T, P).
    """
    n, P, _ = preds.shape
    G = gts.shape[1]
    T = len(thresholds)
    iou = iou_cross(preds, gts)  # (n, P, G)
    order = np.argsort(iou, axis=-1)[..., ::-1]  # best GT first, ties as the reference scorer
    tp = np.zeros((n, T, P))
    fp = np.zeros((n, T, P))
    locked = np.zeros((n, T, G), dtype=bool)
    rows = np.arange(n)
    for p in range(P):
        undecided = np.repeat((p < counts)[:, None], T, axis=1)  # (n, T)
        for j in range(G):
            g = order[:, p, j]  # (n,)
            value = iou[rows, p, g][:, None]  # (n, 1)
            below = undecided & (value < thresholds[None, :])
            is_locked = locked[rows, :, g]
            hit = undecided & ~below & ~is_locked
            fp[:, :, p][below] = 1
            tp[:, :, p][hit] = 1
            locked[rows, :, g] |= hit
            undecided &= ~(below | hit)
        fp[:, :, p][undecided] = 1  # ran out of GT windows
    return tp, fp


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    mprecision = np.hstack([[0], precision, [0]])
    mrecall = np.hstack([[0], recall, [1]])
    mprecision = np.maximum.accumulate(mprecision[::-1])[::-1]  # precision envelope
    idx = np.where(mrecall[1::] != mrecall[0:-1])[0] + 1
    return np.sum((mrecall[idx] - mrecall[idx - 1]) * mprecision[idx])


def _average_precision(queries: list[_Query], thresholds) -> np.ndarray:
    """AP per query and threshold: (Q, T), rows in the order of ``queries``."""
    thr = np.asarray(thresholds, dtype=float)
    ap = np.zeros((len(queries), len(thr)))
    groups: dict[int, list[int]] = defaultdict(list)
    for i, q in enumerate(queries):
        groups[len(q.gt)].append(i)
    for G, members in groups.items():
        P = max(len(queries[i].preds) for i in members)
        preds = np.zeros((len(members), P, 2))
        counts = np.zeros(len(members), dtype=int)
        for k, i in enumerate(members):
            m = len(queries[i].preds)
            preds[k, :m] = queries[i].preds
            counts[k] = m
        gts = np.stack([queries[i].gt for i in members])
        tp, fp = _match(preds, gts, counts, thr)
        tp_cum = np.cumsum(tp, axis=2)
        fp_cum = np.cumsum(fp, axis=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = tp_cum / (tp_cum + fp_cum)
        recall = tp_cum / float(G)
        for k, i in enumerate(members):
            m = counts[k]
            for t in range(len(thr)):
                ap[i, t] = _interpolated_ap(precision[k, t, :m], recall[k, t, :m])
    return ap


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
# the official scorer's five numbers, in its order: every table and metrics file uses these keys
HEADLINE_METRICS = ("R1@0.5", "R1@0.7", "mAP", "mAP@0.5", "mAP@0.75")


def _scores(queries: list[_Query], details: bool) -> dict:
    r1 = _recall_at_one(queries, IOU_THRESHOLDS if details else R1_THRESHOLDS)
    ap = _average_precision(queries, IOU_THRESHOLDS)
    ap_thds = ap.mean(0) if len(queries) else np.full(len(IOU_THRESHOLDS), np.nan)
    out = {
        "R1@0.5": _round(100 * r1[0.5]),
        "R1@0.7": _round(100 * r1[0.7]),
        "mAP": _round(100 * np.mean(ap_thds)),
        "mAP@0.5": _round(100 * ap_thds[0]),
        "mAP@0.75": _round(100 * ap_thds[5]),
    }
    if details:
        out["num_queries"] = len(queries)
        out["R1"] = {f"{t:.2f}": _round(100 * r1[t]) for t in IOU_THRESHOLDS}
        out["mAP_at"] = {f"{t:.2f}": _round(100 * v) for t, v in zip(IOU_THRESHOLDS, ap_thds)}
    return out


def evaluate_predictions(predictions: list[dict], ground_truth: list[dict], details: bool = False) -> dict:
    """Official metrics (×100, 2 decimals): R1@0.5, R1@0.7, mAP, mAP@0.5, mAP@0.75.

    With ``details``: R1 and mAP at every threshold, and breakdowns by GT-window length and by
    number of GT windows per query. Raises MetricsError if a GT query has no prediction.
    """
    queries = _prepare(predictions, ground_truth)
    out = _scores(queries, details)
    if details:
        by_length = {}
        for name, rng in LENGTH_BUCKETS.items():
            subset = _prepare(predictions, ground_truth, length_range=rng)
            by_length[name] = _scores(subset, True) if subset else {"num_queries": 0}
        by_count = {}
        for name, (lo, hi) in COUNT_BUCKETS.items():
            subset = _prepare(predictions, ground_truth,
                              gt_filter=lambda d, w, lo=lo, hi=hi: lo <= len(w) <= hi)
            by_count[name] = _scores(subset, True) if subset else {"num_queries": 0}
        out["by_gt_length"] = by_length
        out["by_gt_count"] = by_count
    return out


PER_QUERY_COLUMNS = ("qid", "R1@0.5", "R1@0.7", "IoU", "AP", "AP@0.5", "AP@0.75", "gt_windows")


def per_query_results(predictions: list[dict], ground_truth: list[dict],
                      length_range=GT_LENGTH_RANGE) -> dict[str, np.ndarray]:
    """The official metrics query by query (0/1 hits and APs, not ×100), in GT order.

    ``R1@θ``: the top-1 window's hit; ``IoU``: its IoU; ``AP``: AP averaged over the ten IoU
    thresholds; ``AP@0.5`` / ``AP@0.75``: AP at one threshold; ``gt_windows``: GT windows kept.
    Rows follow the predictions file. The column means are the official R1@θ, mAP, mAP@0.5
    and mAP@0.75 (÷100). With
    ``length_range``, only GT windows of that length count (the ``--details`` length buckets).
    """
    queries = _prepare(predictions, ground_truth, length_range=length_range)
    if not queries:
        return {c: np.zeros(0, dtype=object if c == "qid" else float) for c in PER_QUERY_COLUMNS}
    iou = _top1_iou(queries)
    ap = _average_precision(queries, IOU_THRESHOLDS)
    return {
        "qid": np.array([q.qid for q in queries], dtype=object),
        "R1@0.5": (iou >= 0.5).astype(float),
        "R1@0.7": (iou >= 0.7).astype(float),
        "IoU": iou,
        "AP": ap.mean(1),
        "AP@0.5": ap[:, 0],
        "AP@0.75": ap[:, 5],
        "gt_windows": np.array([len(q.gt) for q in queries], dtype=float),
    }


def load_jsonl(path) -> list[dict]:
    """Records of a predictions or annotation JSONL file; each must have a ``qid``."""
    from amr.util.io import iter_jsonl

    rows = []
    for where, record in iter_jsonl(path, MetricsError):
        if "qid" not in record:
            raise MetricsError(f"{where}: expected an object with key 'qid'")
        rows.append(record)
    return rows
