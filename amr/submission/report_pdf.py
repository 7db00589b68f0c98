"""A short technical-report PDF (title, authors, abstract, results table) with no dependency.

Used when no technical report is given: DCASE requires the report in the zip to hold at least
the title, authors and abstract. :class:`PdfWriter` is a minimal PDF 1.4 writer (catalog, page
tree, standard Type 1 fonts, one text content stream per page, exact xref byte offsets).
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

from amr.config import AuthorConfig

PAGE_WIDTH, PAGE_HEIGHT = 595, 842  # A4 in points
MARGIN = 64
FONTS = {  # resource name -> standard Type 1 font (no embedding needed)
    "F1": "Helvetica",
    "F2": "Helvetica-Bold",
    "F3": "Helvetica-Oblique",
    "F4": "Courier",
}
TABLE_COLUMNS = (("R1@.5", "R1@0.5"), ("R1@.7", "R1@0.7"), ("mAP", "mAP"),
                 ("m@.5", "mAP@0.5"), ("m@.75", "mAP@0.75"))


# Symbols common in reports that WinAnsi lacks, spelled out instead of shown as '?'.
_SPELLED = {"≤": "<=", "≥": ">=", "≈": "~", "−": "-", "→": "->", "×": "x", "κ": "kappa",
            "σ": "sigma", "τ": "tau", "γ": "gamma", "α": "alpha", "λ": "lambda"}


def _to_winansi(text: str) -> bytes:
    """Text in the fonts' WinAnsi encoding; characters outside it are spelled out, lose their
    accents or become '?' (the report is ASCII-heavy; a stray symbol must not break the file)."""
    out = bytearray()
    for ch in "".join(_SPELLED.get(c, c) for c in text):
        try:
            out += ch.encode("cp1252")
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore")
            out += base or b"?"
    return bytes(out)


def _pdf_string(text: str) -> str:
    """A PDF literal string, kept 7-bit: delimiters escaped, other bytes as octal escapes."""
    parts = []
    for byte in _to_winansi(text):
        ch = chr(byte)
        if ch in "\\()":
            parts.append("\\" + ch)
        elif 32 <= byte < 127:
            parts.append(ch)
        else:
            parts.append(f"\\{byte:03o}")
    return "(" + "".join(parts) + ")"


def text_width(text: str, size: float, font: str = "F1") -> float:
    """Width in points. Courier is exact (600/1000 em); Helvetica uses per-class widths
    rounded UP from its metrics, so wrapped lines never run past the margin."""
    if font == "F4":
        return 0.6 * size * len(text)
    em = 0.0
    for ch in text:
        if ch in "ijl.,;:'|!":
            em += 0.28
        elif ch in "fIrt -()[]/":
            em += 0.34
        elif ch.isupper() or ch in "mwW@%":
            em += 0.84
        else:
            em += 0.56
    if font == "F2":
        em *= 1.08  # bold glyphs are a little wider
    return em * size


def wrap(text: str, size: float, width: float, font: str = "F1") -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if line and text_width(candidate, size, font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


class PdfWriter:
    """Pages of positioned text lines, serialised as a valid PDF 1.4 file."""

    def __init__(self, title: str = ""):
        self.title = title
        self.pages: list[list[str]] = []
        self.new_page()

    def new_page(self) -> None:
        self.pages.append([])

    def text(self, x: float, y: float, text: str, size: float, font: str = "F1") -> None:
        self.pages[-1].append(
            f"BT /{font} {size:g} Tf {x:.2f} {y:.2f} Td {_pdf_string(text)} Tj ET")

    def to_bytes(self) -> bytes:
        font_ids = {name: 3 + i for i, name in enumerate(FONTS)}
        info_id = 3 + len(FONTS)
        first_page = info_id + 1
        page_ids = [first_page + 2 * i for i in range(len(self.pages))]
        objects: dict[int, bytes] = {
            1: b"<< /Type /Catalog /Pages 2 0 R >>",
            2: ("<< /Type /Pages /Kids [" + " ".join(f"{p} 0 R" for p in page_ids)
                + f"] /Count {len(page_ids)} >>").encode(),
            info_id: f"<< /Title {_pdf_string(self.title)} /Producer (amr) >>".encode(),
        }
        for name, base in FONTS.items():
            objects[font_ids[name]] = (f"<< /Type /Font /Subtype /Type1 /BaseFont /{base} "
                                       "/Encoding /WinAnsiEncoding >>").encode()
        fonts = " ".join(f"/{name} {oid} 0 R" for name, oid in font_ids.items())
        for page_id, lines in zip(page_ids, self.pages):
            content = ("\n".join(lines) + "\n").encode("ascii")
            objects[page_id] = (
                f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] "
                f"/Resources << /Font << {fonts} >> >> /Contents {page_id + 1} 0 R >>").encode()
            objects[page_id + 1] = (f"<< /Length {len(content)} >>\nstream\n".encode()
                                    + content + b"endstream")

        # The binary comment line marks the file as binary for transfer tools.
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = {}
        for oid in sorted(objects):
            offsets[oid] = len(out)
            out += f"{oid} 0 obj\n".encode() + objects[oid] + b"\nendobj\n"
        xref_at = len(out)
        size = max(objects) + 1
        out += f"xref\n0 {size}\n".encode() + b"0000000000 65535 f \n"
        for oid in range(1, size):
            out += f"{offsets[oid]:010d} 00000 n \n".encode()  # each entry exactly 20 bytes
        out += (f"trailer\n<< /Size {size} /Root 1 0 R /Info {info_id} 0 R >>\n"
                f"startxref\n{xref_at}\n%%EOF\n").encode()
        return bytes(out)


class _Flow:
    """Top-to-bottom text placement with page breaks."""

    def __init__(self, pdf: PdfWriter):
        self.pdf, self.y = pdf, PAGE_HEIGHT - MARGIN

    def line(self, text: str, size: float, font: str = "F1", gap: float = 1.35,
             center: bool = False) -> None:
        if self.y - size * gap < MARGIN:
            self.pdf.new_page()
            self.y = PAGE_HEIGHT - MARGIN
        self.y -= size * gap
        x = MARGIN
        if center:
            x = max(MARGIN, (PAGE_WIDTH - text_width(text, size, font)) / 2)
        self.pdf.text(x, self.y, text, size, font)

    def paragraph(self, text: str, size: float, font: str = "F1", center: bool = False) -> None:
        for line in wrap(text, size, PAGE_WIDTH - 2 * MARGIN, font):
            self.line(line, size, font, center=center)

    def space(self, points: float) -> None:
        self.y -= points


def results_table(rows: list[dict], name_width: int = 44) -> list[str]:
    """Fixed-width lines of Table 1: system name, then the five metrics (×100)."""
    def fit(name: str) -> str:
        return name if len(name) <= name_width else name[: name_width - 3] + "..."

    header = f"{'System':<{name_width}}" + "".join(f"{h:>8}" for h, _ in TABLE_COLUMNS)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = "".join(f"{row[key]:>8.2f}" for _, key in TABLE_COLUMNS)
        lines.append(f"{fit(str(row['system'])):<{name_width}}{cells}")
    return lines


def render_report(title: str, authors: list[AuthorConfig], abstract: str,
                  table_rows: list[dict]) -> bytes:
    """The report as PDF bytes. ``table_rows``: ``{"system": name, "R1@0.5": .., "R1@0.7": ..,
    "mAP": .., "mAP@0.5": .., "mAP@0.75": ..}`` (×100)."""
    pdf = PdfWriter(title)
    flow = _Flow(pdf)
    flow.paragraph(title, 15, "F2", center=True)
    flow.space(6)
    flow.paragraph(", ".join(f"{a.firstname} {a.lastname}" for a in authors), 11, center=True)
    affiliations = []
    for a in authors:
        aff = a.affiliation
        entry = ", ".join(x for x in (aff.institute, aff.department, aff.location) if x)
        if entry and entry not in affiliations:
            affiliations.append(entry)
    for entry in affiliations:
        flow.paragraph(entry, 10, "F3", center=True)
    flow.paragraph(", ".join(a.email for a in authors if a.email), 10, "F4", center=True)
    flow.space(14)
    flow.line("ABSTRACT", 11, "F2", center=True)
    flow.space(2)
    flow.paragraph(abstract, 10)
    if table_rows:
        flow.space(14)
        flow.paragraph("Table 1: Results on the development-testing split (CASTELLA test), "
                       "x100. R1: Recall1 at IoU 0.5 / 0.7; mAP over IoU 0.50:0.95; "
                       "m@: mAP at one IoU.", 9, "F3")
        flow.space(4)
        for line in results_table(table_rows):
            flow.line(line, 8.5, "F4", gap=1.3)
    return pdf.to_bytes()


def write_report_pdf(path: str | Path, title: str, authors: list[AuthorConfig], abstract: str,
                     table_rows: list[dict]) -> Path:
    path = Path(path)
    path.write_bytes(render_report(title, authors, abstract, table_rows))
    return path
