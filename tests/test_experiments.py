"""Table 2 as DVC experiments, with DVC itself: rows queued by `amr ablations`, run by DVC's queue
in a committed project at a tiny budget, read back into Table 2."""
import json

import pytest
import yaml
from projectkit import dvc, git, project_env, tiny_project

from amr.reporting import ablations

# one row of each kind the grid holds, on the tiny project's systems
KINDS = [
    ablations.Variant("off", "g1", "slot 1 without rerank", "slot1", ["systems.slot1.rerank.enabled=false"]),
    ablations.Variant("system-knob", "g1", "slot 1, γc=0.5", "slot1", ["++systems.slot1.coarse.gamma=0.5"]),
    ablations.Variant("section-knob", "g2", "κ=0.10", "slot3", ["cascade.kappa=0.1"]),
    ablations.Variant("inference", "g3", "τs=0.3", "slot4", ["saliency_proposals.threshold=0.3"]),
    ablations.Variant("slot1", "g1", "slot 1", "slot1", bold=True, same_as="slot1"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A committed tiny project after `dvc repro`: what a user has before queueing Table 2."""
    root = tiny_project(tmp_path_factory.mktemp("exp") / "project")
    proc = dvc(root, "repro", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    git(root, "add", "-A")
    git(root, "commit", "-qm", "pipeline results")
    return root


def _locked_outs(text: str) -> dict:
    """stage -> md5 of its outputs, from a dvc.lock text."""
    lock = yaml.safe_load(text)["stages"]
    return {name: [o.get("md5") for o in stage.get("outs", [])] for name, stage in lock.items()}


# about 6 minutes (a tiny `dvc repro`, then four queued rows): outside the default suite;
# `pytest -m slow tests/test_experiments.py` runs it, and CI's .ci/check_table2.sh runs every row
@pytest.mark.slow
def test_every_kind_of_table2_row_runs_in_the_queue(trained, monkeypatch):
    monkeypatch.chdir(trained)
    for key, value in project_env(trained).items():
        monkeypatch.setenv(key, value)
    commands = ablations.queue(KINDS)
    assert [c[c.index("-n") + 1] for c in commands] == ["off", "system-knob", "section-knob", "inference"]
    proc = dvc(trained, "exp", "run", "--run-all", "-j", "1", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dvc.yaml is out of date" not in proc.stdout + proc.stderr

    shown = ablations.exp_show_json()
    experiments, _ = ablations.experiments_by_name(shown)
    assert set(experiments) == {"off", "system-knob", "section-knob", "inference"}
    params = {name: exp["params"]["params.yaml"]["data"] for name, exp in experiments.items()}
    # each experiment records its overrides
    assert params["off"]["systems"]["slot1"]["rerank"]["enabled"] is False
    assert params["system-knob"]["systems"]["slot1"]["coarse"]["gamma"] == 0.5
    assert params["section-knob"]["cascade"]["kappa"] == 0.1
    assert params["inference"]["saliency_proposals"]["threshold"] == 0.3
    for name, exp in experiments.items():
        assert ablations._metrics_of(exp, next(v.system for v in KINDS if v.name == name)), name

    # what re-ran: training only where the row changes a trained system
    base = _locked_outs(git(trained, "show", "HEAD:dvc.lock").stdout)
    changed = {name: {s for s, outs in _locked_outs(git(trained, "show", f"{exp['rev']}:dvc.lock").stdout).items()
                      if outs != base.get(s)} for name, exp in experiments.items()}
    assert {"pretrain-slot1", "finetune-slot1"} <= changed["off"] and "finetune-slot2" not in changed["off"]
    assert {"pretrain-slot1", "finetune-slot1"} <= changed["system-knob"]
    assert {"pretrain-slot3", "finetune-slot3@2023", "finetune-slot3@42"} <= changed["section-knob"]
    assert not {s for s in changed["section-knob"] if s.endswith(("slot1", "slot2"))}
    assert not {s for s in changed["inference"] if s.startswith(("pretrain", "finetune", "predict"))}

    # Table 2 from the experiments: own runs with an interval against the selected row, reuse marked
    from amr.config.schema import AnalysisConfig

    table = ablations.collect(shown, KINDS, query_results=ablations.git_query_results,
                              analysis=AnalysisConfig(resamples=200))
    rows = {r.label: r for r in table.rows}
    assert rows["slot 1"].run == "reuses Table 1: slot1" and rows["slot 1"].metrics["R1@0.7"] is not None
    for label in ("slot 1 without rerank", "slot 1, γc=0.5"):
        assert rows[label].run in ("off", "system-knob")
        assert rows[label].marks["R1@0.7"].startswith(" (Δ "), label
    assert all(set(r.metrics) >= {"R1@0.5", "R1@0.7", "mAP"} for r in table.rows)
    json.dumps([r.metrics for r in table.rows])  # plain numbers
