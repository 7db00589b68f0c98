"""Slot-4 inference-time aggregation (report §3.6): score-level ensemble + saliency-as-proposals.

Both schemes only pool scored windows and re-sort them; spans are never averaged, because the
decoder slots of independently trained models are not aligned (an average of two spans is a
midpoint that matches no real event).

Order of the pool, which decides ties under the stable sort: every member's decoder windows
(members in the order given, each in its own rank order), then every member's saliency
proposals (same member order, best first).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from amr.config.schema import SaliencyProposalsConfig
from amr.evaluation.prediction_files import (
    read_predictions,
    read_saliency,
    saliency_path,
    write_predictions,
)
from amr.model.saliency import saliency_proposals
from amr.util.errors import AmrError


class FusionError(AmrError, ValueError):
    """Member predictions that cannot be fused; the message names the file and the fix."""


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------
def pool_windows(window_lists: list[list[list[float]]], keep: int = 10) -> list[list[float]]:
    """Concatenate scored windows in the given order, stable-sort by score, keep the best."""
    pooled = [list(map(float, w)) for windows in window_lists for w in windows]
    pooled.sort(key=lambda w: -w[2])  # list.sort is stable: ties keep pool order
    return pooled[:keep]


def fuse_predictions(
    members: list[list[dict]],
    saliencies: list[dict[str, np.ndarray]] | None = None,
    proposals: SaliencyProposalsConfig | None = None,
    keep: int = 10,
    clip_length: float = 1.0,
    member_names: list[str] | None = None,
) -> list[dict]:
    """Fuse the prediction records of ``members`` (each a list of predictions-JSONL records).

    With ``proposals`` (None: decoder windows only), each member's saliency runs join the pool;
    ``saliencies[m][qid]`` holds member m's per-frame saliency logits. Output records follow the
    query order of the first member and copy its ``qid, query, vid, duration``.
    """
    if not members:
        raise FusionError("fuse: no member predictions given; pass at least one --member")
    names = member_names or [f"member {i}" for i in range(len(members))]
    use_saliency = proposals is not None
    if use_saliency and (saliencies is None or len(saliencies) != len(members)):
        raise FusionError(
            "fuse: saliency proposals are enabled but not every member has saliency arrays; "
            "provide <member>.saliency.npz for each member or disable them (--no-saliency)"
        )

    by_qid = [_index_by_qid(records, name) for records, name in zip(members, names)]
    reference_qids = list(by_qid[0])
    for index, name in zip(by_qid[1:], names[1:]):
        if set(index) != set(reference_qids):
            missing = sorted(set(reference_qids) - set(index))[:5]
            extra = sorted(set(index) - set(reference_qids))[:5]
            raise FusionError(
                f"{name}: its queries differ from {names[0]} (missing e.g. {missing}, extra "
                f"e.g. {extra}); fuse predictions of the same split only"
            )

    fused = []
    for qid in reference_qids:
        decoder = [_scored_windows(index[qid], name) for index, name in zip(by_qid, names)]
        runs = []
        if use_saliency:
            for sal, name in zip(saliencies, names):
                if qid not in sal:
                    raise FusionError(
                        f"{name}: no saliency array for qid {qid!r}; re-run `amr predict` "
                        "for this member, or disable saliency proposals (--no-saliency)"
                    )
                runs.append(
                    saliency_proposals(sal[qid], proposals.threshold, proposals.top_k, clip_length)
                )
        windows = pool_windows(decoder + runs, keep)
        base = by_qid[0][qid]
        fused.append(
            {
                "qid": base["qid"],
                "query": base.get("query"),
                "vid": base.get("vid"),
                "duration": base.get("duration"),
                "pred_relevant_windows": windows,
            }
        )
    return fused


def _index_by_qid(records: list[dict], name: str) -> dict[str, dict]:
    index: dict[str, dict] = {}
    for record in records:
        qid = str(record["qid"])
        if qid in index:
            raise FusionError(f"{name}: qid {qid!r} appears twice; each query needs one line")
        index[qid] = record
    return index


def _scored_windows(record: dict, name: str) -> list[list[float]]:
    windows = record.get("pred_relevant_windows")
    if not isinstance(windows, list) or not windows:
        raise FusionError(f"{name}: qid {record['qid']!r} has no pred_relevant_windows")
    for w in windows:
        if not (isinstance(w, (list, tuple)) and len(w) == 3 and all(_finite(x) for x in w)):
            raise FusionError(
                f"{name}: qid {record['qid']!r}: window {w!r} is not [start, end, score]; "
                "fusion needs scored windows as written by `amr predict`"
            )
    return [list(map(float, w)) for w in windows]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def fuse_files(
    member_paths: list[str | Path],
    out_path: str | Path,
    proposals: SaliencyProposalsConfig | None = None,
    keep: int = 10,
    clip_length: float = 1.0,
) -> list[dict]:
    """Read member predictions (+ their ``.saliency.npz`` with ``proposals``), fuse, write
    ``out_path``."""
    members = [read_predictions(p) for p in member_paths]
    saliencies = [read_saliency(saliency_path(p)) for p in member_paths] if proposals else None
    fused = fuse_predictions(
        members, saliencies, proposals, keep, clip_length, member_names=[str(p) for p in member_paths]
    )
    write_predictions(out_path, fused)
    return fused
