"""Result tables (report Table 1 / Table 2) as Markdown, CSV and LaTeX, best per column in bold."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

COLUMNS = [("R1@0.5", "R1@.5"), ("R1@0.7", "R1@.7"), ("mAP", "mAP"), ("mAP@0.5", "m@.5"), ("mAP@0.75", "m@.75")]


@dataclass
class Row:
    label: str
    metrics: dict  # metric key -> value (None when missing)
    spread: dict | None = None  # metric key -> {"mean", "sd"} over seeds
    bold: bool = False  # the whole row in bold (Table 2: selected configuration)
    group: str = ""  # Table 2 group heading
    marks: dict = field(default_factory=dict)  # metric key -> mark after the value (significance)


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


def _cell(row: Row, key: str) -> str:
    value = row.metrics.get(key)
    text = "–" if value is None else f"{value:.2f}{row.marks.get(key, '')}"
    if row.spread and row.spread.get(key, {}).get("sd") is not None:
        text += f" ({row.spread[key]['mean']:.2f} ± {row.spread[key]['sd']:.2f})"
    return text


def _is_bold(table: Table, row: Row, key: str, best: dict) -> bool:
    return row.bold or (table.bold_best and row.metrics.get(key) is not None and row.metrics.get(key) == best[key])


def to_markdown(table: Table) -> str:
    best = table.best()
    lines = [f"**{table.title}**", "", "| System | " + " | ".join(h for _, h in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    group = None
    for row in table.rows:
        if row.group and row.group != group:
            group = row.group
            lines.append(f"| *{group}* |" + " |" * len(COLUMNS))
        cells = [f"**{_cell(row, k)}**" if _is_bold(table, row, k, best) else _cell(row, k) for k, _ in COLUMNS]
        label = f"**{row.label}**" if row.bold else row.label
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if any(r.spread and any(v.get("sd") is not None for v in r.spread.values()) for r in table.rows):
        lines += ["", "Values in parentheses: mean ± sd over the system's seeds."]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["group", "system"] + [k for k, _ in COLUMNS]
    header += [f"{k} mean" for k, _ in COLUMNS] + [f"{k} sd" for k, _ in COLUMNS] + ["bold"]
    writer.writerow(header)
    best = table.best()
    for row in table.rows:
        spread = row.spread or {}
        writer.writerow(
            [row.group, row.label]
            + ["" if row.metrics.get(k) is None else f"{row.metrics[k]:.2f}" for k, _ in COLUMNS]
            + ["" if spread.get(k, {}).get("mean") is None else f"{spread[k]['mean']:.2f}" for k, _ in COLUMNS]
            + ["" if spread.get(k, {}).get("sd") is None else f"{spread[k]['sd']:.2f}" for k, _ in COLUMNS]
            + [";".join(k for k, _ in COLUMNS if _is_bold(table, row, k, best))]
        )
    return buf.getvalue()


def _tex_escape(text: str) -> str:
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("κ", r"$\kappa$"), ("σ", r"$\sigma$"), ("γ", r"$\gamma$"), ("τ", r"$\tau$")]:
        text = text.replace(a, b)
    return text


def to_latex(table: Table) -> str:
    best = table.best()
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex_escape(table.title)}}}",
             r"\begin{tabular}{l" + "r" * len(COLUMNS) + "}", r"\toprule",
             "System & " + " & ".join(_tex_escape(h) for _, h in COLUMNS) + r" \\", r"\midrule"]
    group = None
    for row in table.rows:
        if row.group and row.group != group:
            group = row.group
            lines.append(rf"\multicolumn{{{len(COLUMNS) + 1}}}{{l}}{{\emph{{{_tex_escape(group)}}}}} \\")
        cells = []
        for k, _ in COLUMNS:
            c = _tex_escape(_cell(row, k))
            cells.append(rf"\textbf{{{c}}}" if _is_bold(table, row, k, best) else c)
        label = _tex_escape(row.label)
        lines.append((rf"\textbf{{{label}}}" if row.bold else label) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(table: Table, stem) -> list:
    """Write ``<stem>.md``, ``.csv`` and ``.tex``; return the paths."""
    from pathlib import Path

    from amr.io import write_text_atomic

    stem = Path(stem)
    paths = []
    for ext, render in (("md", to_markdown), ("csv", to_csv), ("tex", to_latex)):
        path = stem.with_suffix(f".{ext}")
        write_text_atomic(path, render(table))
        paths.append(path)
    return paths
