"""The report's Table 2 as DVC experiments: queue the grid, collect ``dvc exp show --json``.

Every row is a set of ``-S`` overrides of one system in params.yaml. Overrides are scoped to
the system (``systems.slot1.coarse.gamma``), so an experiment re-trains only that system's
branch; rows that only change inference (saliency threshold, slot-4 decomposition) touch only
the fusion stage. Rows identical to a Table-1 system (or to another row) are not run again.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field

from amr.reporting.tables import Row, Table


@dataclass
class Variant:
    name: str  # experiment name (dvc exp run -n)
    group: str
    label: str
    system: str  # whose metrics the row reports
    overrides: list[str] = field(default_factory=list)
    bold: bool = False  # the configuration the report selected
    same_as: str | None = None  # reuse: a Table-1 system name, or another row's name


G1 = "Coarse-aux γc × span-rerank (slot 1)"
G2 = "Mamba depth N / conv width (slot 1 + Mamba, no BC/DN)"
G3 = "DN noise scale σ (slot 2)"
G4 = "Cascade bound κ (slot 3)"
G5 = "Saliency threshold τs (slot-3 seed model, no ensemble)"
G6 = "Slot-4 decomposition"

_NO_BC_DN = ["systems.slot2.boundary_contrast.enabled=false", "systems.slot2.dn.enabled=false"]
_SINGLE = ["systems.slot4.fuse.ensemble=false"]

GRID: list[Variant] = [
    # slot 1 without its two components is the baseline system, trained identically
    Variant("t2-coarse0-norerank", G1, "γc=0, no rerank", "slot1", same_as="baseline"),
    Variant("t2-coarse025-norerank", G1, "γc=0.25, no rerank", "slot1",
            ["systems.slot1.rerank.enabled=false"]),
    Variant("t2-coarse050-norerank", G1, "γc=0.50, no rerank", "slot1",
            ["++systems.slot1.coarse.gamma=0.5", "systems.slot1.rerank.enabled=false"]),
    Variant("t2-coarse025-rerank", G1, "γc=0.25, + rerank", "slot1", bold=True, same_as="slot1"),
    Variant("t2-mamba-n2-conv4", G2, "N=2, conv 4", "slot2", ["++systems.slot2.mamba.depth=2", *_NO_BC_DN]),
    Variant("t2-mamba-n2-conv2", G2, "N=2, conv 2", "slot2",
            ["++systems.slot2.mamba.depth=2", "++systems.slot2.mamba.d_conv=2", *_NO_BC_DN]),
    Variant("t2-mamba-n1-conv4", G2, "N=1, conv 4", "slot2", [*_NO_BC_DN], bold=True),
    Variant("t2-mamba-n1-conv2", G2, "N=1, conv 2", "slot2", ["++systems.slot2.mamba.d_conv=2", *_NO_BC_DN]),
    Variant("t2-dn-sigma003", G3, "σ=0.03", "slot2", ["++systems.slot2.dn.sigma=0.03"]),
    Variant("t2-dn-sigma005", G3, "σ=0.05", "slot2", bold=True, same_as="slot2"),
    Variant("t2-dn-sigma010", G3, "σ=0.10", "slot2", ["++systems.slot2.dn.sigma=0.1"]),
    Variant("t2-cascade-kappa010", G4, "κ=0.10", "slot3", ["++systems.slot3.cascade.kappa=0.1"]),
    Variant("t2-cascade-kappa003", G4, "κ=0.03", "slot3", ["++systems.slot3.cascade.kappa=0.03"]),
    Variant("t2-cascade-kappa005", G4, "κ=0.05", "slot3", bold=True, same_as="slot3"),
    Variant("t2-saliency-tau03", G5, "τs=0.3", "slot4", [*_SINGLE, "saliency_proposals.threshold=0.3"]),
    Variant("t2-saliency-tau05", G5, "τs=0.5", "slot4", [*_SINGLE], bold=True),
    Variant("t2-saliency-tau07", G5, "τs=0.7", "slot4", [*_SINGLE, "saliency_proposals.threshold=0.7"]),
    Variant("t2-slot3-nofusion", G6, "slot 3 (no fusion)", "slot3", same_as="slot3"),
    Variant("t2-ensemble-only", G6, "+2-seed ensemble", "slot4", ["systems.slot4.fuse.saliency_proposals=false"]),
    Variant("t2-saliency-only", G6, "+saliency only", "slot4", same_as="t2-saliency-tau05"),
    Variant("t2-both", G6, "+both (slot 4)", "slot4", bold=True, same_as="slot4"),
]


def find_dvc() -> str:
    """The dvc executable: on PATH, else beside this Python (an unactivated virtualenv)."""
    import shutil
    import sys
    from pathlib import Path

    found = shutil.which("dvc") or shutil.which("dvc", path=str(Path(sys.executable).parent))
    if not found:
        raise FileNotFoundError("dvc not found on PATH nor beside this Python; install it (pip install dvc)")
    return found


def queue_commands(grid: list[Variant] = GRID, dvc: str = "dvc", extra: list[str] = ()) -> list[list[str]]:
    """The ``dvc exp run --queue`` command of every row that needs its own run; ``extra``
    overrides go into every row (e.g. a smaller budget: ``train.finetune.epochs=1``)."""
    commands = []
    for v in grid:
        if v.same_as is not None:
            continue
        cmd = [dvc, "exp", "run", "--queue", "-n", v.name]
        for o in [*v.overrides, *extra]:
            cmd += ["-S", o]
        commands.append(cmd)
    return commands


def queue(grid: list[Variant] = GRID, dvc: str | None = None, dry_run: bool = False,
          extra: list[str] = ()) -> list[list[str]]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    commands = queue_commands(grid, dvc or ("dvc" if dry_run else find_dvc()), extra)
    for cmd in commands:
        print(" ".join(cmd), flush=True)
        if not dry_run:
            subprocess.run(cmd, check=True, env=env)
    return commands


def _metrics_of(entry_data: dict, system: str) -> dict | None:
    for path, content in (entry_data.get("metrics") or {}).items():
        if path.replace("\\", "/").endswith(f"metrics/{system}.json"):
            return (content or {}).get("data")
    return None


def experiments_by_name(exp_show: list[dict]) -> tuple[dict[str, dict], dict]:
    """(experiment name -> its data, baseline commit data) from ``dvc exp show --json``."""
    by_name, baseline = {}, None
    for entry in exp_show:
        if entry.get("rev") != "workspace" and baseline is None:
            baseline = entry.get("data") or {}
        for exp in entry.get("experiments") or []:
            # queued or running experiments show their base commit's metrics: not results yet
            if (exp.get("executor") or {}).get("state", "success") != "success":
                continue
            for rev in exp.get("revs") or []:
                name = rev.get("name") or exp.get("name")
                if name and not rev.get("error"):
                    by_name[name] = {**(rev.get("data") or {}), "rev": rev.get("rev")}
    return by_name, baseline or {}


def collect(exp_show: list[dict], grid: list[Variant] = GRID, title: str = "Ablations on development-testing",
            query_results=None, analysis=None) -> Table:
    """Table 2 from ``dvc exp show --json`` output; missing runs show as empty cells.

    With ``query_results(rev, system)`` (per-query results of a system in an experiment's
    commit, ``rev`` None for the workspace; None when absent), each row's R1@0.7 gets the
    difference to its group's selected (bold) row with a paired bootstrap interval, drawn as
    ``analysis`` (an AnalysisConfig) says."""
    by_name, baseline = experiments_by_name(exp_show)
    rows_by_name: dict[str, Row] = {}
    source: dict[str, tuple[str | None, str] | None] = {}  # row -> (rev, system) of its run
    table = Table(title, bold_best=False)
    for v in grid:
        if v.same_as in rows_by_name:
            metrics = rows_by_name[v.same_as].metrics
            source[v.name] = source[v.same_as]
            run = f"reuses {rows_by_name[v.same_as].label}"
        elif v.same_as is not None:
            metrics = _metrics_of(baseline, v.same_as)
            source[v.name] = (None, v.same_as)
            run = f"reuses Table 1: {v.same_as}"
        else:
            metrics = _metrics_of(by_name.get(v.name, {}), v.system)
            source[v.name] = (by_name[v.name]["rev"], v.system) if v.name in by_name else None
            run = v.name if v.name in by_name else f"{v.name} (not run)"
        row = Row(v.label, metrics or {}, bold=v.bold, group=v.group, run=run)
        rows_by_name[v.name] = row
        table.rows.append(row)
    if query_results is not None:
        _mark_differences(grid, rows_by_name, source, query_results, analysis)
        table.note = ("In parentheses: R1@0.7 minus the group's selected (bold) row on the same "
                      "development-testing queries, with a paired bootstrap "
                      f"{100 * analysis.confidence:g}% interval; an interval without 0 is above "
                      "the noise of the query sample (not of the training seed).")
    return table


def write_table2(exp_show: list[dict], analysis, grid: list[Variant] = GRID,
                 out: str = "reports/table2") -> tuple[Table, list]:
    """Table 2 from ``dvc exp show --json``, each row's R1@0.7 against its group's selected row
    (read from the experiments' commits, resampled as ``analysis`` says), written as
    ``out``.{md,csv,tex}."""
    from amr.reporting.tables import write_table

    table = collect(exp_show, grid, query_results=git_query_results, analysis=analysis)
    return table, write_table(table, out)


def _mark_differences(grid, rows_by_name, source, query_results, analysis) -> None:
    from amr.evaluation.analysis.queries import ALL, paired
    from amr.evaluation.analysis.report import rng_for
    from amr.evaluation.analysis.stats import bootstrap_interval

    def r1(name):
        where = source.get(name)
        table = query_results(*where) if where else None
        return None if table is None else table[table["subset"] == ALL]

    selected = {v.group: v.name for v in grid if v.bold}
    for v in grid:
        reference = selected.get(v.group)
        if v.bold or reference is None or source.get(v.name) == source.get(reference):
            continue
        mine, theirs = r1(v.name), r1(reference)
        if mine is None or theirs is None:
            continue
        base, other = paired(theirs, mine, f"{v.name} vs {reference}")
        ci = bootstrap_interval(base["R1@0.7"].to_numpy(), other["R1@0.7"].to_numpy(), analysis.resamples,
                                rng_for(analysis, v.name, reference, "R1@0.7"), analysis.confidence)
        rows_by_name[v.name].marks["R1@0.7"] = (f" (Δ {100 * ci.delta:+.2f} [{100 * ci.low:+.2f}, "
                                                 f"{100 * ci.high:+.2f}])")


def git_query_results(rev: str | None, system: str):
    """Per-query results of ``system`` in commit ``rev`` (None: the workspace), or None."""
    import io
    from pathlib import Path

    from amr.config.paths import query_results
    from amr.evaluation.analysis.queries import read_query_table

    path = query_results(system)
    if rev is None:
        return next(iter(read_query_table(path).values())) if Path(path).is_file() else None
    shown = subprocess.run(["git", "show", f"{rev}:{path.as_posix()}"], capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    return next(iter(read_query_table(io.StringIO(shown.stdout)).values()))


def exp_show_json(dvc: str | None = None) -> list[dict]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run([dvc or find_dvc(), "exp", "show", "--json"], check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(out.stdout)
