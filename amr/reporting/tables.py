"""Result tables (report Table 1 / Table 2) as Markdown, CSV and LaTeX, written by pandas like the
analysis tables; the best value per column (Table 1) or the selected row (Table 2) in bold."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from amr.evaluation.metrics import HEADLINE_METRICS

_SHORT = {"R1@0.5": "R1@.5", "R1@0.7": "R1@.7", "mAP@0.5": "m@.5", "mAP@0.75": "m@.75"}
COLUMNS = [(key, _SHORT.get(key, key)) for key in HEADLINE_METRICS]  # (metric, column header)


@dataclass
class Row:
    label: str
    metrics: dict  # metric key -> value (None when missing)
    spread: dict | None = None  # metric key -> {"mean", "sd"} over seeds
    bold: bool = False  # the whole row in bold (Table 2: selected configuration)
    group: str = ""  # Table 2 group heading
    marks: dict = field(default_factory=dict)  # metric key -> mark after the value (significance)
    run: str = ""  # Table 2: the experiment behind the row, or which run it reuses


@dataclass
class Table:
    title: str
    rows: list[Row] = field(default_factory=list)
    bold_best: bool = True  # bold the best value per column (Table 1)
    note: str = ""  # below the Markdown table (e.g. what the marks mean)

    def best(self) -> dict:
        out = {}
        for key, _ in COLUMNS:
            values = [r.metrics.get(key) for r in self.rows if r.metrics.get(key) is not None]
            out[key] = max(values) if values else None
        return out

    @property
    def has_runs(self) -> bool:
        return any(r.run for r in self.rows)


def _cell(row: Row, key: str) -> str:
    value = row.metrics.get(key)
    text = "–" if value is None else f"{value:.2f}{row.marks.get(key, '')}"
    if row.spread and row.spread.get(key, {}).get("sd") is not None:
        text += f" ({row.spread[key]['mean']:.2f} ± {row.spread[key]['sd']:.2f})"
    return text


def _is_bold(table: Table, row: Row, key: str, best: dict) -> bool:
    return row.bold or (table.bold_best and row.metrics.get(key) is not None and row.metrics.get(key) == best[key])


def _display(table: Table, bold, text=str, heading=str) -> pd.DataFrame:
    """The table as displayed: one string per cell, group headings as rows of their own.
    ``bold``/``heading`` wrap a cell in the target format's markup; ``text`` escapes."""
    best = table.best()
    header = ["System"] + [h for _, h in COLUMNS] + (["Run"] if table.has_runs else [])
    rows, group = [], None
    for row in table.rows:
        if row.group and row.group != group:
            group = row.group
            rows.append([heading(text(group))] + [""] * (len(header) - 1))
        cells = [bold(text(_cell(row, k))) if _is_bold(table, row, k, best) else text(_cell(row, k))
                 for k, _ in COLUMNS]
        label = bold(text(row.label)) if row.bold else text(row.label)
        rows.append([label, *cells] + ([text(row.run)] if table.has_runs else []))
    return pd.DataFrame(rows, columns=header)


def to_markdown(table: Table) -> str:
    frame = _display(table, bold=lambda t: f"**{t}**", heading=lambda t: f"*{t}*")
    align = ("left",) + ("right",) * len(COLUMNS) + (("left",) if table.has_runs else ())
    lines = [f"**{table.title}**", "", frame.to_markdown(index=False, disable_numparse=True, colalign=align)]
    if any(r.spread and any(v.get("sd") is not None for v in r.spread.values()) for r in table.rows):
        lines += ["", "Values in parentheses: mean ± sd over the system's seeds."]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    best = table.best()

    def number(value) -> str:
        return "" if value is None else f"{value:.2f}"

    records = []
    for row in table.rows:
        spread = row.spread or {}
        record = {"group": row.group, "system": row.label}
        record.update({k: number(row.metrics.get(k)) for k, _ in COLUMNS})
        record.update({f"{k} mean": number(spread.get(k, {}).get("mean")) for k, _ in COLUMNS})
        record.update({f"{k} sd": number(spread.get(k, {}).get("sd")) for k, _ in COLUMNS})
        record["bold"] = ";".join(k for k, _ in COLUMNS if _is_bold(table, row, k, best))
        record.update({f"{k} mark": row.marks.get(k, "").strip() for k, _ in COLUMNS
                       if any(r.marks.get(k) for r in table.rows)})
        if table.has_runs:
            record["run"] = row.run
        records.append(record)
    return pd.DataFrame(records).to_csv(index=False, lineterminator="\n")


def tex_escape(text: str) -> str:
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("κ", r"$\kappa$"), ("σ", r"$\sigma$"), ("γ", r"$\gamma$"), ("τ", r"$\tau$"),
                 ("Δ", r"$\Delta$")]:
        text = text.replace(a, b)
    return text


def to_latex(table: Table) -> str:
    frame = _display(table, bold=lambda t: rf"\textbf{{{t}}}", text=tex_escape,
                     heading=lambda t: rf"\emph{{{t}}}")
    frame.columns = [tex_escape(c) for c in frame.columns]
    latex = frame.to_latex(index=False, escape=False, caption=tex_escape(table.title), position="t",
                           column_format="l" + "r" * len(COLUMNS) + ("l" if table.has_runs else ""))
    return latex.replace("\\begin{table}[t]\n", "\\begin{table}[t]\n\\centering\n", 1)


def write_table(table: Table, stem) -> list:
    """Write ``<stem>.md``, ``.csv`` and ``.tex``; return the paths."""
    from pathlib import Path

    from amr.util.io import write_text_atomic

    stem = Path(stem)
    paths = []
    for ext, render in (("md", to_markdown), ("csv", to_csv), ("tex", to_latex)):
        path = stem.with_suffix(f".{ext}")
        write_text_atomic(path, render(table))
        paths.append(path)
    return paths
