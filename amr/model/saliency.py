"""Saliency-as-proposals (report §3.6): the saliency head's per-frame logits, rescaled per
recording, read as moments (runs of frames above a threshold). Plain numpy: slot-4 fusion and the
analysis figures use it without torch."""
from __future__ import annotations

import numpy as np


def rescaled_saliency(logits: np.ndarray) -> np.ndarray:
    """rho_t = sigmoid(r_t) / max_t' sigmoid(r_t'), computed in log space.

    Log space keeps the ratio exact for very negative logits, where sigmoid underflows to 0
    and a plain division would give 0/0.
    """
    r = np.asarray(logits, dtype=np.float64).reshape(-1)
    if r.size == 0:
        return r
    log_sigmoid = -np.logaddexp(0.0, -r)
    return np.exp(log_sigmoid - log_sigmoid.max())


def saliency_proposals(
    logits: np.ndarray,
    threshold: float = 0.5,
    top_k: int = 10,
    clip_length: float = 1.0,
) -> list[list[float]]:
    """Contiguous runs of frames with rho_t >= threshold, as ``[start_s, end_s, mean rho]``.

    Frame t covers ``[t, t + 1) * clip_length`` seconds. The ``top_k`` runs with the highest
    score are returned best first; equal scores keep time order (stable sort).
    """
    rho = rescaled_saliency(logits)
    if rho.size == 0 or not np.all(np.isfinite(rho)):
        return []
    above = rho >= threshold
    # run boundaries: +1 where a run starts, -1 one past where it ends
    edges = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)  # exclusive frame index
    runs = [
        [float(s * clip_length), float(e * clip_length), float(rho[s:e].mean())]
        for s, e in zip(starts, ends)
    ]
    order = sorted(range(len(runs)), key=lambda i: -runs[i][2])  # sorted() is stable
    return [runs[i] for i in order[: max(top_k, 0)]]
