"""The analysis figures (PNG, matplotlib without a display): the forest plot of the
differences, R1@0.7 by stratum, and timelines of a few development-testing queries."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from amr.evaluation.analysis.queries import ALL

DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from amr.util.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=DPI, metadata={"Software": None})  # same bytes every run
    _pyplot().close(fig)
    return path


def forest_plot(significance: pd.DataFrame, path: Path, confidence: float) -> Path:
    """One panel per metric: each comparison's difference with its interval; filled markers
    are significant after BH."""
    plt = _pyplot()
    metrics = list(dict.fromkeys(significance["metric"]))
    labels = list(dict.fromkeys(significance["system"] + " vs " + significance["against"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics) + 1.5, 0.45 * len(labels) + 1.4),
                             sharey=True, squeeze=False)
    y = {label: len(labels) - 1 - i for i, label in enumerate(labels)}
    for ax, metric in zip(axes[0], metrics):
        rows = significance[significance["metric"] == metric]
        for r in rows.itertuples(index=False):
            yy = y[f"{r.system} vs {r.against}"]
            color = "tab:blue" if r.delta >= 0 else "tab:red"
            ax.plot([r.ci_low, r.ci_high], [yy, yy], color=color, lw=1.6)
            ax.plot([r.delta], [yy], "o", color=color, mfc=color if r.significant else "white", ms=6)
        ax.axvline(0, color="0.4", lw=0.8, ls="--")
        ax.set_title(metric)
        ax.set_xlabel("Δ (points)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(list(y.values()), list(y))
    fig.suptitle(f"Paired differences with {100 * confidence:g}% bootstrap intervals "
                 "(filled: significant after BH)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def strata_plot(strata: pd.DataFrame, path: Path, metric: str = "R1@0.7") -> Path:
    """One panel per stratification: the metric per stratum, one bar per system."""
    plt = _pyplot()
    kinds = list(dict.fromkeys(strata["stratification"]))
    systems = list(dict.fromkeys(strata["system"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.6), sharey=True, squeeze=False)
    width = 0.8 / len(systems)
    for ax, kind in zip(axes[0], kinds):
        rows = strata[strata["stratification"] == kind]
        stratum_names = list(dict.fromkeys(rows["stratum"]))
        x = np.arange(len(stratum_names))
        for i, system in enumerate(systems):
            values = rows[rows["system"] == system].set_index("stratum").reindex(stratum_names)
            ax.bar(x + (i - (len(systems) - 1) / 2) * width, values[metric].fillna(0), width, label=system)
        counts = rows.drop_duplicates("stratum").set_index("stratum")["queries"]
        ax.set_xticks(x, [f"{s}\n(n={counts[s]})" for s in stratum_names], fontsize=8)
        ax.set_title(f"by {kind}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return _save(fig, path)


def choose_queries(table: pd.DataFrame, ground_truth: dict[str, dict], count: int,
                   rng: np.random.Generator) -> list[str]:
    """``count`` qids drawn in turn from: hit / miss (top-1 IoU >= 0.7 / < 0.5) × short / long
    moment (every GT window <= 10 s / one > 30 s); a drawn group that is empty is skipped."""
    rows = table[table["subset"] == ALL].set_index("qid")
    lengths = {q: [e - s for s, e in ground_truth[q]["relevant_windows"]] for q in rows.index}
    short = {q for q, ls in lengths.items() if ls and max(ls) <= 10}
    long = {q for q, ls in lengths.items() if any(v > 30 for v in ls)}
    hit = set(rows.index[rows["IoU"] >= 0.7])
    miss = set(rows.index[rows["IoU"] < 0.5])
    groups = [sorted(hit & short), sorted(miss & short), sorted(hit & long), sorted(miss & long)]
    chosen: list[str] = []
    while len(chosen) < count and any(set(g) - set(chosen) for g in groups):
        for group in groups:
            left = [q for q in group if q not in chosen]
            if left and len(chosen) < count:
                chosen.append(left[int(rng.integers(len(left)))])
    return chosen


def timelines(qids: list[str], ground_truth: dict[str, dict], predictions: dict[str, dict[str, dict]],
              saliency: dict[str, dict], path: Path, clip_length: float = 1.0) -> Path:
    """One panel per query: GT windows shaded, each system's top-3 windows in its own lane
    (darker = higher rank) over its saliency curve (rescaled to the lane)."""
    from amr.model.saliency import rescaled_saliency

    plt = _pyplot()
    systems = list(predictions)
    fig, axes = plt.subplots(len(qids), 1, figsize=(10, 0.55 * len(systems) * len(qids) + 1.0 * len(qids)),
                             squeeze=False)
    for ax, qid in zip(axes[:, 0], qids):
        gt = ground_truth[qid]
        duration = float(gt.get("duration") or max(e for _, e in gt["relevant_windows"]))
        for s, e in gt["relevant_windows"]:
            ax.axvspan(s, e, color="tab:green", alpha=0.25, lw=0)
        for lane, system in enumerate(reversed(systems)):
            curve = saliency.get(system, {}).get(qid)
            if curve is not None:
                rho = rescaled_saliency(curve)
                t = (np.arange(len(rho)) + 0.5) * clip_length
                ax.fill_between(t, lane - 0.4, lane - 0.4 + 0.8 * rho, color="0.75", lw=0, step="mid")
            windows = predictions[system][qid]["pred_relevant_windows"][:3]
            for rank, w in reversed(list(enumerate(windows))):
                ax.plot([w[0], w[1]], [lane, lane], lw=5 - rank, solid_capstyle="butt",
                        color=("tab:blue", "tab:orange", "tab:purple")[rank], alpha=1 - 0.25 * rank)
        ax.set_yticks(range(len(systems)), list(reversed(systems)), fontsize=8)
        ax.set_xlim(0, duration)
        ax.set_ylim(-0.6, len(systems) - 0.4)
        text = gt.get("query", "")
        ax.set_title(f"{qid}: {text[:90]}", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time (s) — green: GT windows; bars: top-1 (blue), 2, 3; grey: saliency")
    fig.tight_layout()
    return _save(fig, path)
