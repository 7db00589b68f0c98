"""Stage `tables`: Table 1 (Markdown, CSV, LaTeX), the per-length R1@0.7 data and the training
curves for `dvc plots`."""
import argparse
from dataclasses import dataclass

from amr.pipeline.stage import stage_main
from amr.reporting.systems import SystemRuns, system_runs


@dataclass(frozen=True)
class Job:
    systems: tuple[SystemRuns, ...]  # Table-1 rows, in params.yaml order
    caption: str


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__)


def configure(params, args) -> Job:
    from amr.config.presets import budget_label

    caption = (f"Results on development-testing ({budget_label(params)} budget, "
               f"{params.value('data.source')} data)")
    return Job(tuple(system_runs(params, n) for n in params.system_names()), caption)


def run(job: Job) -> None:
    from amr.config.paths import REPORTS_DIR
    from amr.reporting.systems import r1_by_length_rows, table1, training_curves
    from amr.reporting.tables import write_table

    for path in write_table(table1(list(job.systems), job.caption), REPORTS_DIR / "table1"):
        print(f"wrote {path}")
    write_csv(REPORTS_DIR / "r1_by_length.csv", r1_by_length_rows(list(job.systems)))
    for runs in job.systems:
        if not runs.fused:
            rows = training_curves(runs.curve_run)
            write_csv(REPORTS_DIR / "curves" / f"{runs.name}.csv", rows,
                      sorted({k for r in rows for k in r}, key=lambda k: (k != "epoch", k)))
    print((REPORTS_DIR / "table1.md").read_text())


def write_csv(path, rows: list[dict], columns: list[str] | None = None) -> None:
    import csv

    from amr.util.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns or list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    stage_main(parser(), configure, run)
