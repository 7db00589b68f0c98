"""Detector outputs -> prediction records (SPEC §4, the official baseline's post-processing).

Spans are normalised by the number of frames T, so windows in seconds are
``(c ± w/2) × T × clip_length``. Scores are the foreground probability, blended with the
re-ranking score when that component is on (``inference.rerank_alpha``; α = 1 keeps p_fg).
"""
from __future__ import annotations

import numpy as np
import torch

from amr.config.schema import InferenceConfig, SystemConfig
from amr.model.spans import cw_to_se


def window_scores(out: dict, cfg: SystemConfig, rerank_alpha: float = 1.0) -> torch.Tensor:
    p_fg = out["pred_logits"].float().softmax(-1)[..., 0]
    if cfg.rerank.enabled and "rerank_scores" in out:
        return rerank_alpha * p_fg + (1.0 - rerank_alpha) * out["rerank_scores"].float()
    return p_fg


def final_spans(out: dict, cfg: SystemConfig) -> torch.Tensor:
    if cfg.cascade.enabled and "refined_spans" in out:
        return out["refined_spans"]
    return out["pred_spans"]


def rank_windows(
    starts: np.ndarray, ends: np.ndarray, scores: np.ndarray, upper: float, clip: float, max_windows: int
) -> list[list[float]]:
    """Sort by score (stable), round to whole clips, clamp to [0, upper], drop empty, keep top-k."""
    order = np.argsort(-scores, kind="stable")
    starts = np.clip(np.round(starts[order] / clip) * clip, 0.0, upper)
    ends = np.clip(np.round(ends[order] / clip) * clip, 0.0, upper)
    scores = scores[order]
    keep = ends > starts
    windows = [[float(s), float(e), float(p)] for s, e, p in zip(starts[keep], ends[keep], scores[keep])]
    if not windows:  # every window collapsed: emit the best one as a single clip
        start = float(min(starts[0], max(upper - clip, 0.0)))
        windows = [[start, start + clip, float(scores[0])]]
    return windows[:max_windows]


@torch.no_grad()
def predict_windows(
    out: dict,
    batch: dict,
    cfg: SystemConfig,
    inference: InferenceConfig = InferenceConfig(),
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """-> prediction records (docs/interfaces.md) and per-qid saliency logits of real frames."""
    max_windows, clamp_slack = inference.max_windows, inference.clamp_slack
    clip = float(cfg.data.clip_length)
    lengths = batch["lengths"] if "lengths" in batch else batch["audio_mask"].sum(1)
    lengths = lengths.detach().cpu().double().numpy()
    se = cw_to_se(final_spans(out, cfg).detach().double()).cpu().numpy()  # (B, Q, 2), fraction of T
    scores = window_scores(out, cfg, inference.rerank_alpha).detach().double().cpu().numpy()
    saliency = out["saliency"].detach().float().cpu().numpy()
    durations = batch["duration"]
    records, saliency_by_qid = [], {}
    for i, qid in enumerate(batch["qid"]):
        duration = float(durations[i])
        seconds = se[i] * lengths[i] * clip
        windows = rank_windows(seconds[:, 0], seconds[:, 1], scores[i], duration + clamp_slack, clip, max_windows)
        records.append({
            "qid": qid,
            "query": batch["query"][i],
            "vid": batch["vid"][i],
            "duration": int(duration) if duration.is_integer() else duration,  # as annotated
            "pred_relevant_windows": windows,
        })
        saliency_by_qid[qid] = saliency[i, : int(lengths[i])].astype(np.float32)
    return records, saliency_by_qid
