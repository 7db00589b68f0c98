"""Stage `tables`: Table 1 (Markdown, CSV, LaTeX) and the per-length R1@0.7 data for plots."""
import csv

from amr.evaluation import r1_by_length_rows, table1, training_curves
from amr.params import Params
from amr.pipeline import REPORTS_DIR
from amr.tables import write_table


def main() -> None:
    params = Params.load()
    REPORTS_DIR.mkdir(exist_ok=True)
    for path in write_table(table1(params), REPORTS_DIR / "table1"):
        print(f"wrote {path}")
    rows = r1_by_length_rows(params)
    with open(REPORTS_DIR / "r1_by_length.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    curves_dir = REPORTS_DIR / "curves"
    curves_dir.mkdir(exist_ok=True)
    for system in params.trained_systems():
        rows = training_curves(params, system)
        columns = sorted({k for r in rows for k in r}, key=lambda k: (k != "epoch", k))
        with open(curves_dir / f"{system}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    print((REPORTS_DIR / "table1.md").read_text())


if __name__ == "__main__":
    main()
