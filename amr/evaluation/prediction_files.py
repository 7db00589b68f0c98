"""The files `amr predict` writes and `amr fuse` reads: ``PRED.jsonl`` (one record per query,
scored windows best first) and ``PRED.saliency.npz`` beside it (per-frame saliency logits,
float32, key = qid)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from amr.util.errors import AmrError
from amr.util.io import atomic_path, iter_jsonl, write_jsonl


class PredictionFileError(AmrError, ValueError):
    """A predictions or saliency file that is missing or unreadable; the message names it."""


def saliency_path(predictions_path: str | Path) -> Path:
    """``PRED.jsonl`` -> ``PRED.saliency.npz`` (the file `amr predict` writes next to it)."""
    p = Path(predictions_path)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(stem + ".saliency.npz")


def read_predictions(path: str | Path) -> list[dict]:
    """The records of a predictions file, each checked by :func:`check_prediction`; a qid on
    two lines is an error too (the official scorer's result is undefined for both)."""
    records = []
    first_line: dict[str, str] = {}
    for where, record in iter_jsonl(
        path, PredictionFileError, "predictions file (create it with `amr predict`)"
    ):
        check_prediction(where, record)
        qid = str(record["qid"])
        if qid in first_line:
            raise PredictionFileError(f"{where}: qid {qid} again (first at {first_line[qid]}); "
                                      "write one line per query")
        first_line[qid] = where
        records.append(record)
    return records


def check_prediction(where: str, record: dict) -> None:
    """Raise PredictionFileError naming ``where`` (``path:line``) and the qid unless every
    listed window is ``[start, end]`` or ``[start, end, score]`` of finite numbers with
    ``start <= end``."""
    if "qid" not in record:
        raise PredictionFileError(f"{where}: expected a JSON object with a 'qid'")
    qid = record["qid"]
    windows = record.get("pred_relevant_windows")
    if windows is None:
        return
    if not isinstance(windows, list):
        raise PredictionFileError(f"{where}: qid {qid}: pred_relevant_windows is not a list")
    for i, w in enumerate(windows):
        what = f"{where}: qid {qid}: window {i} {w!r}"
        if not isinstance(w, list) or len(w) not in (2, 3) \
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in w):
            raise PredictionFileError(f"{what} is not [start, end] or [start, end, score] numbers")
        if not all(math.isfinite(v) for v in w):
            raise PredictionFileError(f"{what} holds NaN or infinity")
        if w[1] < w[0]:
            raise PredictionFileError(f"{what} ends before it starts")


def write_predictions(path: str | Path, records: list[dict]) -> None:
    write_jsonl(path, records)


def read_saliency(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise PredictionFileError(
            f"{path}: saliency file not found; `amr predict` writes it next to the "
            "predictions, or disable saliency proposals (--no-saliency)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: np.asarray(npz[key]) for key in npz.files}
    except Exception as exc:  # numpy and zipfile raise several types for a damaged file
        raise PredictionFileError(
            f"{path}: cannot read saliency arrays ({type(exc).__name__}: {exc}); re-run "
            "`amr predict` to write it again"
        ) from None


def write_saliency(path: str | Path, saliency: dict[str, np.ndarray]) -> None:
    """One float32 array per qid; written through an open file so numpy adds no suffix."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{qid: np.asarray(v, dtype=np.float32) for qid, v in saliency.items()})
