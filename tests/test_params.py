"""params.yaml → typed configs, the dvc.yaml param declarations, Table 1/2 rendering."""
import copy
from pathlib import Path

import pytest
import yaml

from amr import ablations
from amr.config import ConfigError
from amr.params import COMPONENTS, Params
from amr.tables import Row, Table, to_csv, to_latex, to_markdown

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params():
    return Params.load(ROOT / "params.yaml")


def test_systems_are_cumulative(params):
    enabled = {s: {c for c in COMPONENTS if getattr(params.system(s), c).enabled} for s in params.trained_systems()}
    assert enabled["baseline"] == set()
    assert enabled["slot1"] == {"coarse", "rerank"}
    assert enabled["slot2"] == enabled["slot1"] | {"mamba", "boundary_contrast", "dn"}
    assert enabled["slot3"] == enabled["slot2"] | {"cascade"}
    assert params.fused_systems() == ["slot4"]


def load_profile(tmp_path, name):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profile"] = name
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return Params.load(path)


def test_report_values_in_paper_profile(tmp_path):
    p = load_profile(tmp_path, "paper")
    s = p.system("slot3")
    assert (s.backbone.hidden_dim, s.backbone.heads, s.backbone.ffn_dim, s.backbone.num_queries) == (256, 8, 1024, 10)
    assert (s.loss.span_l1, s.loss.span_giou, s.loss.label, s.loss.saliency) == (10, 1, 4, 1)
    assert (s.loss.background_weight, s.loss.saliency_margin) == (0.1, 0.2)
    assert (s.coarse.gamma, s.rerank.weight, s.rerank.alpha) == (0.25, 0.5, 1.0)
    assert (s.mamba.depth, s.mamba.d_state, s.mamba.d_conv, s.mamba.expand) == (1, 16, 4, 2)
    assert (s.boundary_contrast.k, s.boundary_contrast.tau, s.boundary_contrast.weight) == (3, 0.1, 0.2)
    assert (s.dn.copies, s.dn.sigma, s.dn.weight) == (5, 0.05, 1.0)
    assert (s.cascade.kappa, s.cascade.margin, s.cascade.heads, s.cascade.weight) == (0.05, 10, 4, 1.0)
    assert (p.train.pretrain.epochs, p.train.pretrain.lr, p.train.finetune.epochs, p.train.finetune.lr) == (200, 1e-4, 200, 8e-5)
    assert (p.train.weight_decay, p.train.grad_clip, p.train.batch_size, p.train.seed) == (1e-4, 0.1, 32, 2023)
    assert p.ensemble.seeds == [2023, 42]
    assert (p.saliency_proposals.threshold, p.saliency_proposals.top_k) == (0.5, 10)
    assert (s.data.max_audio_frames, s.data.max_text_tokens, s.data.max_windows) == (300, 32, 5)


def test_demo_profile_keeps_every_component(params, tmp_path):
    assert params.profile == "demo"
    paper = load_profile(tmp_path, "paper")
    for system in params.trained_systems():
        for c in COMPONENTS:
            assert getattr(params.system(system), c).enabled == getattr(paper.system(system), c).enabled
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    demo = raw["profiles"]["demo"]
    assert "systems" not in demo, "the demo profile must not change which components a system uses"


def test_disabled_components_keep_defaults_and_overrides_are_scoped(params):
    raw = copy.deepcopy(params.raw)
    raw["cascade"]["kappa"] = 0.1
    raw["systems"]["slot1"]["coarse"]["gamma"] = 0.5
    p = Params(raw)
    assert p.system("slot3").cascade.kappa == 0.1
    assert p.system("slot1").cascade.enabled is False and p.system("slot1").cascade.kappa == 0.05
    assert p.system("slot1").coarse.gamma == 0.5
    assert p.system("slot2").coarse.gamma == 0.25


def test_bad_params_are_named(params):
    raw = copy.deepcopy(params.raw)
    raw["cascade"]["kapa"] = 0.1
    with pytest.raises(ConfigError, match="unknown key"):
        Params(raw).system("slot3")
    raw = copy.deepcopy(params.raw)
    raw["systems"]["slot1"]["cascde"] = {"enabled": True}
    with pytest.raises(ConfigError, match="systems.slot1: unknown component"):
        Params(raw).system("slot1")
    raw = copy.deepcopy(params.raw)
    raw["train"]["batch_size"] = "big"
    with pytest.raises(ConfigError, match="train.batch_size: expected an integer"):
        Params(raw)


def test_seeds_follow_the_ensemble(params):
    raw = copy.deepcopy(params.raw)
    raw["ensemble"]["seeds"] = [1, 2, 3]
    p = Params(raw)
    assert p.seeds("slot3") == [1, 2, 3] and p.fusion_members("slot4") == [1, 2, 3]
    assert p.seeds("slot1") == [p.train.seed]


# ------------------------------------------------------------------ dvc.yaml declarations
def _stage_params(stage):
    out = []
    for p in stage.get("params", []):
        out.extend(p if isinstance(p, list) else [p])
    return out


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_training_stages_declare_exactly_their_components(params, kind):
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for system in params.trained_systems():
        declared = set(_stage_params(stages[f"{kind}-{system}"]))
        enabled = {c for c in COMPONENTS if getattr(params.system(system), c).enabled}
        assert {c for c in COMPONENTS if c in declared} == enabled, system
        assert f"systems.{system}" in declared and f"train.{kind}" in declared
        assert not any(d.startswith("systems.") and d != f"systems.{system}" for d in declared)


def test_no_stage_outside_slot3_and_slot4_reads_the_cascade(params):
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    readers = {name for name, st in stages.items() if "cascade" in _stage_params(st)}
    assert readers == {"pretrain-slot3", "finetune-slot3"}


# ------------------------------------------------------------------ Table 2 grid
def test_grid_has_the_reports_21_rows_in_6_groups():
    assert len(ablations.GRID) == 21
    assert len({v.group for v in ablations.GRID}) == 6
    assert len({v.name for v in ablations.GRID}) == 21
    assert sum(v.bold for v in ablations.GRID) == 6


def _apply(raw, override):
    key, value = override.lstrip("+").split("=", 1)
    node = raw
    *path, last = key.split(".")
    for k in path:
        node = node.setdefault(k, {})
    if not override.startswith("+"):
        assert last in node, f"{override}: key does not exist (use ++ to add it)"
    node[last] = yaml.safe_load(value)


@pytest.mark.parametrize("variant", [v for v in ablations.GRID if v.same_as is None], ids=lambda v: v.name)
def test_every_queued_row_yields_a_valid_config(params, variant):
    raw = copy.deepcopy(params.raw)
    for o in variant.overrides:
        _apply(raw, o)
    p = Params(raw)
    if variant.system in p.fused_systems():
        p.fusion(variant.system)
    else:
        p.system(variant.system)
    # overrides never touch another trained system
    for other in params.trained_systems():
        if other != variant.system:
            assert p.system(other) == params.system(other)


def test_queue_commands_skip_reused_rows():
    cmds = ablations.queue_commands()
    assert len(cmds) == sum(v.same_as is None for v in ablations.GRID)
    assert all(c[:4] == ["dvc", "exp", "run", "--queue"] for c in cmds)


def test_collect_reads_exp_show_json():
    m = {"R1@0.5": 1.0, "R1@0.7": 2.0, "mAP": 3.0, "mAP@0.5": 4.0, "mAP@0.75": 5.0}
    slot1 = {"metrics/slot1.json": {"data": dict(m, **{"R1@0.7": 9.0})}}
    data = [
        {"rev": "workspace", "data": {}},
        {"rev": "abc", "name": "main", "data": {"metrics": slot1},
         "experiments": [
             {"name": "t2-coarse025-norerank", "executor": {"state": "success"}, "revs": [
                 {"rev": "def", "name": "t2-coarse025-norerank", "data": {"metrics": {"metrics/slot1.json": {"data": m}}}}]},
             {"name": "t2-dn-sigma003", "executor": {"state": "running"}, "revs": [
                 {"rev": "ghi", "name": "t2-dn-sigma003", "data": {"metrics": {"metrics/slot2.json": {"data": m}}}}]},
         ]},
    ]
    table = ablations.collect(data)
    rows = {r.label: r for r in table.rows}
    assert rows["γc=0.25, no rerank"].metrics["R1@0.7"] == 2.0
    assert rows["γc=0.25, + rerank"].metrics["R1@0.7"] == 9.0 and rows["γc=0.25, + rerank"].bold
    assert rows["σ=0.03"].metrics == {}  # still running: its base commit's metrics are not its own


# ------------------------------------------------------------------ rendering
def test_table_marks_best_per_column_and_spread():
    t = Table("T", [Row("a", {"R1@0.5": 1.0, "R1@0.7": 5.0, "mAP": 1, "mAP@0.5": 1, "mAP@0.75": 1}),
                    Row("b", {"R1@0.5": 2.0, "R1@0.7": 4.0, "mAP": 1, "mAP@0.5": 1, "mAP@0.75": 1},
                        spread={"R1@0.7": {"mean": 3.0, "sd": 1.41}})])
    md = to_markdown(t)
    assert "| a | 1.00 | **5.00** |" in md
    assert "| b | **2.00** | 4.00 (3.00 ± 1.41) |" in md
    assert "\\textbf{5.00}" in to_latex(t)
    csv_text = to_csv(t)
    assert csv_text.splitlines()[0].startswith("group,system,R1@0.5")
    assert ",b,2.00,4.00," in csv_text


def test_reused_rows_are_really_identical(params):
    """γc=0 without rerank is slot 1 with both components off: the baseline system."""
    import dataclasses

    raw = copy.deepcopy(params.raw)
    _apply(raw, "systems.slot1.coarse.enabled=false")
    _apply(raw, "systems.slot1.rerank.enabled=false")
    stripped = dataclasses.replace(Params(raw).system("slot1"), name="baseline")
    assert stripped == params.system("baseline")
