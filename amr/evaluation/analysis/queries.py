"""Per-query results: the official metrics query by query, with the strata each query is in.

One table per prediction file: a row per (subset, query). Subset ``all`` scores every query
against all its GT windows (its column means are the official metrics); each GT-window-length
subset (``amr evaluate --details``'s buckets) scores the queries that have windows of that
length against those windows only, as the official breakdown does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from amr.evaluation.metrics import COUNT_BUCKETS, LENGTH_BUCKETS, per_query_results
from amr.util.io import require

ALL = "all"
# official metric -> per-query column whose mean it is (÷100)
METRIC_COLUMNS = {"R1@0.5": "R1@0.5", "R1@0.7": "R1@0.7", "mAP": "AP", "mAP@0.5": "AP@0.5",
                  "mAP@0.75": "AP@0.75"}
HIT_METRICS = ("R1@0.5", "R1@0.7")  # 0/1 per query: McNemar; the others: sign-flip test
DURATION_BUCKETS = {"<=2 min": (0.0, 120.0), "2-4 min": (120.0, 240.0), ">4 min": (240.0, float("inf"))}


def query_table(predictions: list[dict], ground_truth: list[dict]) -> pd.DataFrame:
    """Columns: subset, qid, R1@0.5, R1@0.7, IoU, AP, AP@0.5, AP@0.75, gt_windows, duration."""
    durations = {str(d["qid"]): float(d.get("duration", np.nan)) for d in ground_truth}
    frames = []
    for subset, length_range in {ALL: None, **LENGTH_BUCKETS}.items():
        kwargs = {} if length_range is None else {"length_range": length_range}
        frame = pd.DataFrame(per_query_results(predictions, ground_truth, **kwargs))
        frame.insert(0, "subset", subset)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table["duration"] = table["qid"].map(durations)
    return table


def official_means(table: pd.DataFrame) -> dict[str, float]:
    """The official metrics (×100, 2 decimals) of the ``all`` rows of a query table."""
    rows = table[table["subset"] == ALL]
    return {metric: float(f"{100 * rows[column].mean():.2f}") for metric, column in METRIC_COLUMNS.items()}


def strata(table: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """(stratification, stratum) -> its rows: GT-window length (the ``--details`` buckets),
    number of GT windows and recording duration."""
    rows = table[table["subset"] == ALL]
    out = {("GT-window length", name): table[table["subset"] == name] for name in LENGTH_BUCKETS}
    for name, (lo, hi) in COUNT_BUCKETS.items():
        out[("GT windows per query", name)] = rows[rows["gt_windows"].between(lo, hi)]
    for name, (lo, hi) in DURATION_BUCKETS.items():
        out[("recording duration", name)] = rows[(rows["duration"] > lo) & (rows["duration"] <= hi)]
    return out


def write_query_table(path: str | Path, tables: dict[str, pd.DataFrame]) -> None:
    """One CSV for a system: ``tables`` maps run label (``seed 2023``, ``fused``) to its table.
    Floats are written in full (round-trip) precision, so that means are exact on reading."""
    from amr.util.io import atomic_path

    frame = pd.concat([t.assign(run=label) for label, t in tables.items()], ignore_index=True)
    frame = frame[["run", *[c for c in frame.columns if c != "run"]]]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format=None, lineterminator="\n")


def read_query_table(path: str | Path) -> dict[str, pd.DataFrame]:
    """Run label -> query table, in file order (the first run is the system's headline)."""
    source = require(path, "per-query results") if isinstance(path, (str, Path)) else path  # or a text stream
    frame = pd.read_csv(source, dtype={"qid": str, "run": str, "subset": str})
    return {label: group.drop(columns="run").reset_index(drop=True)
            for label, group in frame.groupby("run", sort=False)}


def paired(table_a: pd.DataFrame, table_b: pd.DataFrame, what: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of two tables of the same subset on the same queries, in the same order."""
    a = table_a.set_index("qid")
    b = table_b.set_index("qid")
    if set(a.index) != set(b.index):
        only = sorted(set(a.index) ^ set(b.index))
        raise ValueError(f"{what}: the two systems are scored on different queries, e.g. {only[:5]}")
    return a, b.loc[a.index]
