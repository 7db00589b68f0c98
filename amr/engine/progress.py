"""What a training run tells the outside world: a terminal progress bar or plain log lines,
and per-epoch metrics in dvclive's layout (read by ``dvc exp show`` / ``dvc plots``).
"""
from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path


def _format_terms(terms: dict[str, float], limit: int) -> str:
    return " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in list(terms.items())[:limit])


class _NullReporter:
    """Used on ranks other than 0: they train silently."""

    def start_epoch(self, epoch: int, steps: int) -> None: ...
    def step(self, terms: dict[str, float]) -> None: ...
    def end_epoch(self, epoch: int, line: str, info: str = "") -> None: ...
    def close(self) -> None: ...


class PlainReporter:
    """One line per epoch (CI, DVC, redirected output)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def start_epoch(self, epoch: int, steps: int) -> None:
        self._t0 = time.perf_counter()

    def step(self, terms: dict[str, float]) -> None:
        pass

    def end_epoch(self, epoch: int, line: str, info: str = "") -> None:
        print(f"{line}  {time.perf_counter() - self._t0:.1f}s", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichReporter:
    """Two bars on a terminal: epochs (with the latest val R1@0.7) and steps (with the loss)."""

    def __init__(self, total_epochs: int, start_epoch: int, stage: str):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self.progress.start()
        self.epochs = self.progress.add_task(
            f"{stage} epoch", total=total_epochs, completed=start_epoch, info=""
        )
        self.steps = self.progress.add_task("step", total=1, info="")

    def start_epoch(self, epoch: int, steps: int) -> None:
        self.progress.reset(self.steps, total=steps, info="")

    def step(self, terms: dict[str, float]) -> None:
        self.progress.update(self.steps, advance=1, info=_format_terms(terms, limit=3))

    def end_epoch(self, epoch: int, line: str, info: str = "") -> None:
        self.progress.update(self.epochs, advance=1, info=info)
        self.progress.console.print(line)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(is_main: bool, total_epochs: int, start_epoch: int, stage: str, mode: str = "auto"):
    """``auto``: a rich bar when stdout is a terminal, else plain lines; ``plain``; ``none``."""
    if not is_main or mode == "none":
        return _NullReporter()
    if mode == "rich" or (mode == "auto" and sys.stdout.isatty()):
        return RichReporter(total_epochs, start_epoch, stage)
    return PlainReporter()


class MetricLog:
    """Per-epoch scalars through dvclive, one step per epoch (step = epoch index).

    dvclive is kept offline and out of git: no analytics, no Studio, no experiment commit, and
    no dvc.yaml of its own (the pipeline's dvc.yaml declares ``<dir>/metrics.json`` and
    ``<dir>/plots/metrics``). On resume, rows of epochs that are about to be re-run (an epoch
    logged before a kill but not checkpointed) are dropped so every step appears once.
    """

    def __init__(self, directory: str | Path, start_epoch: int):
        os.environ.setdefault("DVC_NO_ANALYTICS", "1")
        os.environ.setdefault("DVC_STUDIO_OFFLINE", "true")
        from dvclive import Live

        self.directory = Path(directory)
        resume = start_epoch > 0
        if resume:
            _drop_steps_from(self.directory / "plots" / "metrics", start_epoch)
        self.live = Live(
            dir=str(self.directory), resume=resume, save_dvc_exp=False, dvcyaml=False, report=None
        )
        self.live.step = start_epoch

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.live.step = epoch
        for name, value in metrics.items():
            self.live.log_metric(name, float(value))
        self.live.next_step()

    def close(self) -> None:
        self.live.end()


def _drop_steps_from(plots_dir: Path, first_dropped: int) -> None:
    if not plots_dir.is_dir():
        return
    for tsv in plots_dir.rglob("*.tsv"):
        with tsv.open(newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            continue
        col = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if len(r) > col and int(r[col]) < first_dropped]
        if len(kept) != len(rows):
            with tsv.open("w", newline="") as fh:
                csv.writer(fh, delimiter="\t", lineterminator="\n").writerows(kept)
