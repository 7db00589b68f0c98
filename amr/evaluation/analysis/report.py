"""Significance and strata tables: every comparison of params.yaml's ``analysis:`` tested
query by query, Benjamini-Hochberg over the whole family, seed spread beside each difference.

Differences are ``system - against`` in points (×100, like the metrics). Each test draws from
its own generator, seeded by ``analysis.seed`` and the test's name, so adding a comparison
leaves the others' numbers unchanged.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from amr.config.schema import AnalysisConfig
from amr.evaluation.analysis.queries import ALL, HIT_METRICS, METRIC_COLUMNS, paired, strata
from amr.evaluation.analysis.stats import (
    benjamini_hochberg,
    bootstrap_interval,
    mcnemar_exact,
    sign_flip_test,
)
from amr.util.io import require

STRATA_METRICS = ("R1@0.7", "R1@0.5", "mAP")


@dataclass(frozen=True)
class SystemResults:
    """The per-query results of one system: its runs (first = headline) and seed spread."""

    name: str
    runs: dict  # run label -> query table (amr.evaluation.analysis.queries)
    spread: dict | None = None  # metric -> {"mean", "sd"} over seeds; None for a single run

    @property
    def headline(self) -> pd.DataFrame:
        return next(iter(self.runs.values()))


def rng_for(cfg: AnalysisConfig, *name: str) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, zlib.crc32("|".join(name).encode())])


def paired_test(a: pd.DataFrame, b: pd.DataFrame, metric: str, cfg: AnalysisConfig, *name: str) -> dict:
    """Paired test and bootstrap interval of ``b - a`` (points) for one metric."""
    column = METRIC_COLUMNS[metric]
    va, vb = a[column].to_numpy(), b[column].to_numpy()
    rng = rng_for(cfg, *name, metric)
    ci = bootstrap_interval(va, vb, cfg.resamples, rng, cfg.confidence)
    if metric in HIT_METRICS:
        test, p = "McNemar (exact)", mcnemar_exact(va, vb)
    else:
        test, p = "sign-flip", sign_flip_test(va, vb, cfg.resamples, rng)
    return {"delta": 100 * ci.delta, "ci_low": 100 * ci.low, "ci_high": 100 * ci.high,
            "test": test, "p": p}


def significance(systems: dict[str, SystemResults], comparisons: list[tuple[str, str]],
                 cfg: AnalysisConfig) -> pd.DataFrame:
    """One row per comparison and metric; ``q`` is BH-adjusted over every row."""
    rows = []
    for system, against in comparisons:
        base, other = paired(_all(systems[against].headline), _all(systems[system].headline),
                             f"{system} vs {against}")
        sds = [s.spread for s in (systems[system], systems[against]) if s.spread]
        for metric, column in METRIC_COLUMNS.items():
            sd = max((s[metric]["sd"] for s in sds), default=None)
            result = paired_test(base, other, metric, cfg, system, against)
            rows.append({"system": system, "against": against, "metric": metric,
                         "value": 100 * other[column].mean(), "against_value": 100 * base[column].mean(),
                         **result, "queries": len(base), "seed_sd": sd,
                         "below_seed_sd": None if sd is None else bool(abs(result["delta"]) < sd)})
    table = pd.DataFrame(rows)
    if len(table):
        table["q"] = benjamini_hochberg(table["p"].to_numpy())
        table["significant"] = table["q"] < cfg.fdr
        table["fdr"] = cfg.fdr
    return table


def marks_against_previous(path, order: list[str]) -> tuple[dict[str, dict[str, str]], str]:
    """From a significance CSV: system -> {metric: "*"} where its difference to the system
    before it in ``order`` is significant, and the note that explains the mark."""
    table = pd.read_csv(require(path, "significance table"))
    previous = dict(zip(order[1:], order[:-1]))
    marks: dict[str, dict[str, str]] = {}
    for row in table.itertuples(index=False):
        if previous.get(row.system) == row.against and row.significant:
            marks.setdefault(row.system, {})[row.metric] = "*"
    fdr = f"{table['fdr'].iloc[0]:g}" if len(table) else ""
    note = (f"* the difference to the row above is significant (paired test on the queries, "
            f"Benjamini-Hochberg q < {fdr} over all tests of reports/significance.md).")
    return marks, note


def strata_table(systems: dict[str, SystemResults], order: list[str], cfg: AnalysisConfig) -> pd.DataFrame:
    """R1@0.7, R1@0.5 and mAP per stratum and system, with the difference to the previous
    system (bootstrap interval) on the same queries."""
    groups = {name: strata(systems[name].headline) for name in order}
    rows = []
    for (kind, stratum) in groups[order[0]]:
        for i, name in enumerate(order):
            rows_of = groups[name][(kind, stratum)].set_index("qid")
            row = {"stratification": kind, "stratum": stratum, "system": name, "queries": len(rows_of)}
            for metric in STRATA_METRICS:
                row[metric] = 100 * rows_of[METRIC_COLUMNS[metric]].mean() if len(rows_of) else np.nan
            row["against"] = order[i - 1] if i else ""
            if i and len(rows_of):
                previous = groups[order[i - 1]][(kind, stratum)].set_index("qid").loc[rows_of.index]
                for metric in STRATA_METRICS:
                    column = METRIC_COLUMNS[metric]
                    ci = bootstrap_interval(previous[column].to_numpy(), rows_of[column].to_numpy(),
                                            cfg.resamples, rng_for(cfg, name, order[i - 1], kind, stratum, metric),
                                            cfg.confidence)
                    row |= {f"Δ{metric}": 100 * ci.delta, f"Δ{metric} low": 100 * ci.low,
                            f"Δ{metric} high": 100 * ci.high}
            rows.append(row)
    return pd.DataFrame(rows)


def seed_spread(systems: dict[str, SystemResults]) -> pd.DataFrame:
    """Mean ± sd over seeds per metric, for the systems with several seeds."""
    rows = [{"system": s.name, "seeds": len(s.runs), "metric": m, "mean": v["mean"], "sd": v["sd"]}
            for s in systems.values() if s.spread for m, v in s.spread.items()]
    return pd.DataFrame(rows, columns=["system", "seeds", "metric", "mean", "sd"])


def _all(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["subset"] == ALL]


# ---------------------------------------------------------------------------------------------
# Rendering: Markdown (with how to read it), CSV (every number in full), LaTeX
# ---------------------------------------------------------------------------------------------
def _interval(delta: float, low: float, high: float) -> str:
    return "–" if pd.isna(delta) else f"{delta:+.2f} [{low:+.2f}, {high:+.2f}]"


def significance_display(table: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    level = f"{100 * cfg.confidence:g}%"
    return pd.DataFrame({
        "Comparison": table["system"] + " vs " + table["against"],
        "Metric": table["metric"],
        "Value": table["value"].map("{:.2f}".format),
        "Against": table["against_value"].map("{:.2f}".format),
        f"Δ [{level} CI]": [_interval(*r) for r in table[["delta", "ci_low", "ci_high"]].itertuples(index=False)],
        "Test": table["test"],
        "p": table["p"].map("{:.2g}".format),
        "q (BH)": table["q"].map("{:.2g}".format),
        "Seed sd": table["seed_sd"].map(lambda v: "–" if pd.isna(v) else f"{v:.2f}"),
        "Mark": [("*" if s else "") + ("~" if b is True else "")
                 for s, b in zip(table["significant"], table["below_seed_sd"])],
    })


def significance_markdown(table: pd.DataFrame, spread: pd.DataFrame, cfg: AnalysisConfig) -> str:
    text = [
        "**Paired significance on development-testing**", "",
        f"Δ = system − against, in points, with a paired bootstrap {100 * cfg.confidence:g}% interval "
        f"({cfg.resamples} resamples of the queries). p: exact McNemar test on the queries where "
        "exactly one system has an R1 hit; paired sign-flip randomisation test for the AP metrics. "
        f"q: Benjamini–Hochberg over all {len(table)} tests. `*`: q < {cfg.fdr:g}. `~`: |Δ| is "
        "smaller than the seed-to-seed sd of a compared system (a difference one re-training can "
        "undo).", "",
        significance_display(table, cfg).to_markdown(index=False, disable_numparse=True), "",
    ]
    if len(spread):
        text += ["**Seed spread** (mean ± sd over the seeds of a system)", "",
                 spread.assign(**{"mean ± sd": [f"{m:.2f} ± {s:.2f}" for m, s in zip(spread["mean"], spread["sd"])]})
                 [["system", "seeds", "metric", "mean ± sd"]].to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(text)


def strata_display(table: pd.DataFrame) -> pd.DataFrame:
    out = table[["stratification", "stratum", "system", "queries"]].copy()
    for metric in STRATA_METRICS:
        out[metric] = table[metric].map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")
        if f"Δ{metric}" in table:
            out[f"Δ{metric} vs previous"] = [
                _interval(*r) for r in table[[f"Δ{metric}", f"Δ{metric} low", f"Δ{metric} high"]].itertuples(index=False)]
    return out


def strata_markdown(table: pd.DataFrame, cfg: AnalysisConfig) -> str:
    text = ["**Results by stratum on development-testing**", "",
            "Each cell: the metric on the stratum's queries (`queries`), and the difference to the "
            f"system before it with a paired bootstrap {100 * cfg.confidence:g}% interval. GT-window "
            "length scores each query against its windows of that length only (as `amr evaluate "
            "--details`); the other strata split the queries.", ""]
    display = strata_display(table)
    for kind, rows in display.groupby("stratification", sort=False):
        text += [f"*By {kind}*", "", rows.drop(columns="stratification").to_markdown(
            index=False, disable_numparse=True), ""]
    return "\n".join(text)


def write_report(stem, table: pd.DataFrame, display: pd.DataFrame, markdown: str, caption: str) -> list:
    """``<stem>.md`` (``markdown``), ``.csv`` (``table``, every number in full), ``.tex``."""
    from pathlib import Path

    from amr.util.io import write_text_atomic

    stem = Path(stem)
    latex = display.to_latex(index=False, caption=caption, escape=True)
    for symbol, tex in (("Δ", r"$\Delta$"), ("±", r"$\pm$"), ("−", "-"), ("–", "--")):
        latex = latex.replace(symbol, tex)
    paths = []
    for ext, text in (("md", markdown), ("csv", table.to_csv(index=False, lineterminator="\n")),
                      ("tex", latex)):
        write_text_atomic(stem.with_suffix(f".{ext}"), text)
        paths.append(stem.with_suffix(f".{ext}"))
    return paths
