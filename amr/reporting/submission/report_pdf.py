"""A short technical-report PDF (title, authors, abstract, Table 1), laid out with fpdf2.

Used when no technical report is given: DCASE requires the report in the zip to hold at least
the title, authors and abstract. The file is byte-identical for the same inputs (fixed
creation date and file id), so the zip's DVC hash is stable.
"""
from __future__ import annotations

import datetime
import unicodedata
from pathlib import Path

from amr.config.schema import AuthorConfig

TABLE_COLUMNS = (("R1@.5", "R1@0.5"), ("R1@.7", "R1@0.7"), ("mAP", "mAP"),
                 ("m@.5", "mAP@0.5"), ("m@.75", "mAP@0.75"))
FIXED_DATE = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)

# Symbols common in reports that the PDF core fonts (Latin-1) lack, spelled out.
_SPELLED = {"≤": "<=", "≥": ">=", "≈": "~", "−": "-", "–": "-", "—": "-", "→": "->", "×": "x",
            "Δ": "delta ", "κ": "kappa", "σ": "sigma", "τ": "tau", "γ": "gamma", "α": "alpha",
            "λ": "lambda", "‘": "'", "’": "'", "“": '"', "”": '"'}


def latin1(text: str) -> str:
    """Text the core fonts can show: symbols spelled out, other characters without their
    accents, or '?' (a stray symbol must not break the report)."""
    out = []
    for ch in "".join(_SPELLED.get(c, c) for c in str(text)):
        try:
            ch.encode("latin-1")
            out.append(ch)
        except UnicodeEncodeError:
            out.append(unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode() or "?")
    return "".join(out)


def render_report(title: str, authors: list[AuthorConfig], abstract: str,
                  table_rows: list[dict], notes: str = "") -> bytes:
    """The report as PDF bytes. ``table_rows``: ``{"system": name, "R1@0.5": .., "R1@0.7": ..,
    "mAP": .., "mAP@0.5": .., "mAP@0.75": .., "marks": {metric: mark}}`` (×100; ``marks``
    optional, e.g. ``*`` for a significant difference); ``notes`` explain the marks."""
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.file_id = lambda: -1  # no random file id: the same inputs give the same bytes
    pdf.set_title(latin1(title))
    pdf.set_author(latin1(", ".join(f"{a.firstname} {a.lastname}" for a in authors)))
    pdf.set_margins(22, 22)
    pdf.add_page()
    width = pdf.epw
    line = {"new_x": XPos.LMARGIN, "new_y": YPos.NEXT}

    pdf.set_font("Helvetica", "B", 15)
    pdf.multi_cell(width, 7, latin1(title), align="C", **line)
    pdf.ln(3)
    pdf.set_font("Helvetica", "", 11)
    pdf.multi_cell(width, 5.5, latin1(", ".join(f"{a.firstname} {a.lastname}" for a in authors)),
                   align="C", **line)
    affiliations = []
    for a in authors:
        aff = a.affiliation
        entry = ", ".join(x for x in (aff.institute, aff.department, aff.location) if x)
        if entry and entry not in affiliations:
            affiliations.append(entry)
    pdf.set_font("Helvetica", "I", 10)
    for entry in affiliations:
        pdf.multi_cell(width, 5, latin1(entry), align="C", **line)
    pdf.set_font("Courier", "", 9.5)
    pdf.multi_cell(width, 5, latin1(", ".join(a.email for a in authors if a.email)), align="C", **line)
    pdf.ln(6)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(width, 6, "ABSTRACT", align="C", **line)
    pdf.set_font("Helvetica", "", 10)
    pdf.multi_cell(width, 5, latin1(abstract), align="J", **line)
    if table_rows:
        pdf.ln(6)
        pdf.set_font("Helvetica", "I", 9)
        pdf.multi_cell(width, 4.5, "Table 1: Results on the development-testing split (CASTELLA "
                       "test), x100. R1: Recall1 at IoU 0.5 / 0.7; mAP over IoU 0.50:0.95; m@: "
                       "mAP at one IoU.", **line)
        pdf.ln(2)
        pdf.set_font("Helvetica", "", 8.5)
        with pdf.table(col_widths=(46,) + (11,) * len(TABLE_COLUMNS), line_height=5,
                       text_align=("LEFT",) + ("RIGHT",) * len(TABLE_COLUMNS),
                       first_row_as_headings=True) as table:
            table.row(["System", *(h for h, _ in TABLE_COLUMNS)])
            for row in table_rows:
                marks = row.get("marks") or {}
                table.row([latin1(row["system"])]
                          + [f"{row[key]:.2f}{marks.get(key, '')}" for _, key in TABLE_COLUMNS])
        if notes:
            pdf.ln(2)
            pdf.set_font("Helvetica", "I", 8.5)
            pdf.multi_cell(width, 4.2, latin1(notes), **line)
    return bytes(pdf.output())


def write_report_pdf(path: str | Path, title: str, authors: list[AuthorConfig], abstract: str,
                     table_rows: list[dict], notes: str = "") -> Path:
    from amr.util.io import write_bytes_atomic

    path = Path(path)
    write_bytes_atomic(path, render_report(title, authors, abstract, table_rows, notes))
    return path
