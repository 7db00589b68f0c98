"""How well a model ranks its own windows, beside the official metrics: the diagnostics that tell
a detector whose windows are good but whose scores do not order them (a collapsed class head)
from one that finds nothing.

Per query of the ground truth (its top ``TOP`` windows, each with the IoU of its best GT window):

- ``rank_spearman``: Spearman correlation between the windows' scores and their IoUs (average
  ranks for ties; 0 for a query whose scores or IoUs are all equal: no ranking information);
- ``score_spread``: the standard deviation of the window scores within the query;
- ``oracle_R1@0.5``: whether any of the windows reaches IoU 0.5 (what a perfect re-ranking of
  them would score at R1@0.5);

each averaged over the queries (the oracle in %, like R1); plain numpy, so scoring needs no
torch. ``memory_variation`` is measured on the model: the mean frame-to-frame change of the encoder memory, ||m_t+1 - m_t|| / mean ||m_t||
over a recording's real frames, averaged over recordings (0: the same vector at every frame).
"""
from __future__ import annotations

import numpy as np

TOP = 10
IOU_THRESHOLD = 0.5
# a run's within-query score spread below this fraction of the best it has had is a collapse
COLLAPSE_FRACTION = 0.1
DIAGNOSTICS = ("rank_spearman", "score_spread", "oracle_R1@0.5", "memory_variation")


def window_ious(windows: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(W, 2) predicted and (G, 2) GT windows in seconds -> (W,) IoU of each with its best GT."""
    starts = np.maximum(windows[:, None, 0], gt[None, :, 0])
    ends = np.minimum(windows[:, None, 1], gt[None, :, 1])
    inter = np.clip(ends - starts, 0.0, None)
    union = (windows[:, 1] - windows[:, 0])[:, None] + (gt[:, 1] - gt[:, 0])[None] - inter
    return (inter / np.maximum(union, 1e-12)).max(1)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (``scipy.stats.rankdata``'s default), in
    numpy: importing scipy.stats would cost every training and evaluation stage a second."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]  # first position of each run of ties
    group = np.cumsum(starts) - 1
    bounds = np.r_[np.flatnonzero(starts), len(values)]  # each group's [first, end) positions
    ranks = np.empty(len(values))
    ranks[order] = 0.5 * (bounds[group] + bounds[group + 1] + 1)
    return ranks


def spearman(scores: np.ndarray, ious: np.ndarray) -> float:
    if len(scores) < 2 or np.ptp(scores) == 0 or np.ptp(ious) == 0:
        return 0.0
    return float(np.corrcoef(average_ranks(scores), average_ranks(ious))[0, 1])


def ranking_diagnostics(records: list[dict], gt: list[dict]) -> dict[str, float]:
    """``rank_spearman``, ``score_spread`` and ``oracle_R1@0.5`` of prediction records
    (``pred_relevant_windows`` [[start, end, score], ...], best first) against GT records."""
    truth = {g["qid"]: np.asarray(g["relevant_windows"], dtype=float).reshape(-1, 2) for g in gt}
    rho, spread, oracle = [], [], []
    for record in records:
        if record["qid"] not in truth or not record["pred_relevant_windows"]:
            continue
        windows = np.asarray(record["pred_relevant_windows"], dtype=float)[:TOP]
        ious = window_ious(windows[:, :2], truth[record["qid"]])
        rho.append(spearman(windows[:, 2], ious))
        spread.append(float(windows[:, 2].std()))
        oracle.append(float(ious.max() >= IOU_THRESHOLD))
    if not rho:
        return {"rank_spearman": 0.0, "score_spread": 0.0, "oracle_R1@0.5": 0.0}
    return {"rank_spearman": round(float(np.mean(rho)), 4), "score_spread": round(float(np.mean(spread)), 4),
            "oracle_R1@0.5": round(100 * float(np.mean(oracle)), 2)}


def memory_variation(memory, mask):
    """(B, L, d) memory and (B, L) real-frame mask -> (B,) mean ||m_t+1 - m_t|| / mean ||m_t||
    over each recording's real frames."""
    mask = mask.bool()
    steps = (memory[:, 1:] - memory[:, :-1]).norm(dim=-1)
    both = (mask[:, 1:] & mask[:, :-1]).to(memory.dtype)
    change = (steps * both).sum(1) / both.sum(1).clamp(min=1)
    size = (memory.norm(dim=-1) * mask).sum(1) / mask.sum(1).clamp(min=1)
    return change / size.clamp(min=1e-12)


class MemoryProbe:
    """Records :func:`memory_variation` of every batch a model encodes while attached (a forward
    hook on its audio encoder, whose output is [global token | frames])."""

    def __init__(self, model):
        self.values: list = []
        self._handle = model.audio_encoder.register_forward_hook(self._record)

    def _record(self, module, inputs, output) -> None:
        mask = inputs[2]  # (B, 1 + L): the global token, then the frames
        self.values.append(memory_variation(output[:, 1:].detach().float(), mask[:, 1:]).cpu())

    def mean(self) -> float:
        import torch

        return round(float(torch.cat(self.values).mean()), 4) if self.values else 0.0

    def close(self) -> None:
        self._handle.remove()


def collapse_warning(history: list[dict]) -> str | None:
    """A warning naming the epoch when the latest validation's score spread fell below
    ``COLLAPSE_FRACTION`` of the best the run has had (``history``: the run's epochs, each with
    its ``val`` metrics)."""
    spreads = [(h["epoch"], h["val"].get("score_spread")) for h in history if h.get("val")]
    spreads = [(e, s) for e, s in spreads if s is not None]
    if len(spreads) < 2:
        return None
    epoch, latest = spreads[-1]
    best_epoch, best = max(spreads[:-1], key=lambda item: item[1])
    if latest < COLLAPSE_FRACTION * best:
        return (f"warning: epoch {epoch}: the window scores collapsed (within-query score spread "
                f"{latest:.4f}, below {COLLAPSE_FRACTION:g} x the {best:.4f} of epoch {best_epoch}); "
                "its scores no longer rank its windows")
    return None
