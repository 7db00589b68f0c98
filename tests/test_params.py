"""params.yaml -> typed configs: one loader, one merge rule, no dead or doubled knobs; Table 2."""
import copy
import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import yaml

import amr.config.schema
from amr.config import presets as profiles
from amr.config.params import Params
from amr.config.schema import COMPONENTS, ConfigError
from amr.reporting import ablations
from amr.reporting.tables import Row, Table, to_csv, to_latex, to_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_systems_are_cumulative(params):
    enabled = {s: {c for c in COMPONENTS if getattr(params.system(s), c).enabled} for s in params.trained_systems()}
    assert enabled["baseline"] == set()
    assert enabled["slot1"] == {"coarse", "rerank"}
    assert enabled["slot2"] == enabled["slot1"] | {"mamba", "boundary_contrast", "dn"}
    assert enabled["slot3"] == enabled["slot2"] | {"cascade"}
    assert params.fused_systems() == ["slot4"]


def test_report_values_in_paper_preset():
    p = Params.load(ROOT / "params.yaml", preset="paper")
    s = p.system("slot3")
    assert (s.backbone.hidden_dim, s.backbone.heads, s.backbone.ffn_dim, s.backbone.num_queries) == (256, 8, 1024, 10)
    assert (s.loss.span_l1, s.loss.span_giou, s.loss.label, s.loss.saliency) == (10, 1, 4, 1)
    assert (s.loss.background_weight, s.loss.saliency_margin) == (0.1, 0.2)
    assert (s.coarse.gamma, s.rerank.weight, p.inference.rerank_alpha) == (0.25, 0.5, 1.0)
    # where the report is silent: the authors' code
    assert (s.backbone.attention_init, s.backbone.refine_init, s.mamba.init) == ("multihead", "random", "xavier")
    assert (s.loss.saliency_windows, s.loss.saliency_pairs, s.backbone.attention_dropout) == ("first", 2, 0.1)
    assert (s.mamba.depth, s.mamba.d_state, s.mamba.d_conv, s.mamba.expand) == (1, 16, 4, 2)
    assert (s.boundary_contrast.k, s.boundary_contrast.tau, s.boundary_contrast.weight) == (3, 0.1, 0.2)
    assert (s.dn.copies, s.dn.sigma, s.dn.weight) == (5, 0.05, 1.0)
    assert (s.cascade.kappa, s.cascade.margin, s.cascade.heads, s.cascade.weight) == (0.05, 10, 4, 1.0)
    assert (p.schedule("pretrain").epochs, p.schedule("pretrain").lr) == (200, 1e-4)
    assert (p.schedule("finetune").epochs, p.schedule("finetune").lr) == (200, 8e-5)
    assert (p.train.weight_decay, p.train.grad_clip, p.train.batch_size, p.train.seed) == (1e-4, 0.1, 32, 2023)
    assert p.ensemble.seeds == [2023, 42]
    assert (p.saliency_proposals.threshold, p.saliency_proposals.top_k) == (0.5, 10)
    assert (s.data.max_audio_frames, s.data.max_text_tokens, s.data.max_windows) == (300, 32, 5)


def test_the_file_holds_the_demo_preset_and_both_presets_keep_every_component(params):
    assert profiles.budget_label(params) == "demo"
    paper = Params.load(ROOT / "params.yaml", preset="paper")
    assert profiles.budget_label(paper) == "paper"
    for system in params.trained_systems():
        for c in COMPONENTS:
            assert getattr(params.system(system), c).enabled == getattr(paper.system(system), c).enabled
    assert not any(k.startswith("systems") for k in profiles.DEMO)


def test_no_profile_is_merged_at_load_time(raw):
    """What the file says is what runs: an edited key is the value (issue: ignored -S)."""
    for key, value in [("train.batch_size", 8), ("model.hidden_dim", 32), ("train.finetune.epochs", 2),
                       ("model.cpu_kernels", "native")]:
        edited = copy.deepcopy(raw)
        node = edited
        *parents, last = key.split(".")
        for name in parents:
            node = node[name]
        node[last] = value
        assert Params(edited).value(key) == value
    for stale in ({"profile": "demo"}, {"profiles": {"demo": {}}}):
        with pytest.raises(ConfigError, match="amr profile"):
            Params({**raw, **stale})


def test_a_system_value_wins_over_the_component_section_for_that_system_only(raw):
    edited = copy.deepcopy(raw)
    edited["cascade"]["kappa"] = 0.1
    edited["coarse"]["gamma"] = 0.3
    edited["systems"]["slot1"]["coarse"]["gamma"] = 0.5
    p = Params(edited)
    assert p.system("slot3").cascade.kappa == 0.1
    assert p.system("slot1").cascade == amr.config.schema.CascadeConfig()  # not enabled: the defaults
    assert p.system("slot1").coarse.gamma == 0.5  # systems.slot1.coarse.gamma wins for slot1
    assert p.system("slot2").coarse.gamma == 0.3  # the section's value everywhere else
    leaves = {}
    Params(edited, on_leaf=lambda path, cls, name: leaves.setdefault(path, set()).add((cls, name)))
    assert leaves["systems.slot1.coarse.gamma"] == {(amr.config.schema.CoarseConfig, "gamma")}


def test_bad_params_are_named(raw):
    def broken(change):
        edited = copy.deepcopy(raw)
        change(edited)
        return edited

    with pytest.raises(ConfigError, match=r"cascade.*unknown key\(s\) \['kapa'\]"):
        Params(broken(lambda r: r["cascade"].update(kapa=0.1)))
    with pytest.raises(ConfigError, match="systems.slot1: unknown component"):
        Params(broken(lambda r: r["systems"]["slot1"].update(cascde={"enabled": True})))
    with pytest.raises(ConfigError, match="train.batch_size: expected an integer"):
        Params(broken(lambda r: r["train"].update(batch_size="big")))
    with pytest.raises(ConfigError, match=r"train.pretrain.*unknown key\(s\) \['epoch'\]"):
        Params(broken(lambda r: r["train"]["pretrain"].update(epoch=3)))
    with pytest.raises(ConfigError, match="unknown top-level key"):
        Params(broken(lambda r: r.update(casacde={"kappa": 0.1})))
    # a knob under a component the system does not switch on would do nothing: refused
    with pytest.raises(ConfigError, match=r"systems.slot1.mamba: sets \['depth'\] but mamba is not enabled"):
        Params(broken(lambda r: r["systems"]["slot1"].update(mamba={"depth": 2})))
    # whether slot 4 adds saliency proposals is said once, in systems.slot4.fuse
    with pytest.raises(ConfigError, match=r"saliency_proposals: unknown key\(s\) \['enabled'\]"):
        Params(broken(lambda r: r["saliency_proposals"].update(enabled=False)))
    with pytest.raises(ConfigError, match="cascade.enabled: a component is switched on per system"):
        Params(broken(lambda r: r["cascade"].update(enabled=True)))
    with pytest.raises(ConfigError, match="fuse.base: 'slot9' is not a trained system"):
        Params(broken(lambda r: r["systems"]["slot4"]["fuse"].update(base="slot9")))
    with pytest.raises(ConfigError, match=r"submission.systems\[0\].run: 'slot9' is not a system"):
        Params(broken(lambda r: r["submission"].update(systems=[{"run": "slot9"}]))).submission


def test_seeds_follow_the_ensemble(raw):
    edited = copy.deepcopy(raw)
    edited["ensemble"]["seeds"] = [1, 2, 3]
    p = Params(edited)
    assert p.seeds("slot3") == [1, 2, 3] and p.fusion_members("slot4") == [1, 2, 3]
    assert p.seeds("slot1") == [p.train.seed]


# ------------------------------------------------------------------ no dead or doubled knobs
def _leaves(tree, prefix=""):
    """Dotted paths of the leaves of a YAML tree (lists of mappings by index, other lists whole)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        for i, value in enumerate(tree):
            yield from _leaves(value, f"{prefix[:-1]}[{i}].")
    else:
        yield prefix[:-1]


def test_every_leaf_of_params_yaml_is_read_by_exactly_one_config_field(raw):
    read_by: dict[str, set] = {}
    Params(raw, on_leaf=lambda path, cls, name: read_by.setdefault(path, set()).add((cls, name)))
    leaves = set(_leaves(raw))
    assert leaves - set(read_by) == set(), "leaves no config field reads"
    assert set(read_by) - leaves == set()
    doubled = {path: fields for path, fields in read_by.items() if len(fields) != 1}
    assert doubled == {}


def test_every_leaf_of_params_yaml_is_used_by_a_pipeline_stage(params, raw):
    from amr.config.params import NOT_STAGE_PARAMS
    from amr.pipeline import dag

    declared = set()
    for spec in dag.stage_specs(params):
        declared.update(dag.stage_reads(params, spec))
    unused = [leaf for leaf in _leaves(raw)
              if not any(leaf == d or leaf.startswith(d + ".") or leaf.startswith(d + "[") for d in declared)]
    # only the sections that say where experiments run, and no stage reads them: changing them
    # re-runs nothing
    assert unused == [f"{section}.{key}" for section in NOT_STAGE_PARAMS for key in raw[section]]


def test_loaded_configs_cannot_be_overwritten():
    classes = [c for _, c in inspect.getmembers(amr.config.schema, inspect.isclass)
               if dataclasses.is_dataclass(c) and c.__module__ == "amr.config.schema"]
    assert len(classes) > 20
    assert [c.__name__ for c in classes if not c.__dataclass_params__.frozen] == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        Params.load(ROOT / "params.yaml").train.batch_size = 8


# ------------------------------------------------------------------ -S overrides reach the stage
@pytest.mark.parametrize("override, read", [
    ("train.batch_size=8", lambda job: job.train.batch_size),
    ("model.hidden_dim=32", lambda job: job.system.backbone.hidden_dim),
    ("train.finetune.epochs=2", lambda job: job.schedule.epochs),
    ("model.cpu_kernels=native", lambda job: job.system.backbone.cpu_kernels),
])
def test_a_dvc_set_param_reaches_the_training_job(tmp_path, override, read):
    """`dvc exp run -S KEY=VALUE` on a key the demo preset sets changes what training gets."""
    import argparse

    from projectkit import apply_overrides

    from amr.pipeline import dag

    path = tmp_path / "params.yaml"
    path.write_bytes((ROOT / "params.yaml").read_bytes())
    apply_overrides(path, [override])
    train = dag.load_script("train")
    args = argparse.Namespace(system="slot3", stage="finetune", seed=2023)
    before = read(train.configure(Params.load(ROOT / "params.yaml"), args))
    after = read(train.configure(Params.load(path), args))
    expected = yaml.safe_load(override.split("=", 1)[1])
    assert after == expected and before != expected


def test_values_written_by_dvc_set_param_read_back_as_dvc_reads_them(tmp_path):
    """DVC writes `-S train.finetune.lr=8e-5` as `8e-05`: a float for DVC (YAML 1.2), so for us."""
    from projectkit import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_bytes((ROOT / "params.yaml").read_bytes())
    apply_overrides(path, ["train.finetune.lr=8e-5"])
    assert "8e-05" in path.read_text()
    assert Params.load(path).schedule("finetune").lr == 8e-5


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
def test_every_queued_row_yields_a_valid_config(raw, params, variant):
    edited = copy.deepcopy(raw)
    for o in variant.overrides:
        _apply(edited, o)
    p = Params(edited)
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
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in to_markdown(t).splitlines() if line.startswith("| a ") or line.startswith("| b ")}
    assert cells["a"][:2] == ["1.00", "**5.00**"]
    assert cells["b"][:2] == ["**2.00**", "4.00 (3.00 ± 1.41)"]
    assert "\\textbf{5.00}" in to_latex(t)
    csv_text = to_csv(t)
    assert csv_text.splitlines()[0].startswith("group,system,R1@0.5")
    assert ",b,2.00,4.00," in csv_text


def test_reused_rows_are_really_identical(raw, params):
    """γc=0 without rerank is slot 1 with both components off: the baseline system."""
    edited = copy.deepcopy(raw)
    _apply(edited, "systems.slot1.coarse.enabled=false")
    _apply(edited, "systems.slot1.rerank.enabled=false")
    stripped = dataclasses.replace(Params(edited).system("slot1"), name="baseline")
    assert stripped == params.system("baseline")


# ------------------------------------------------------------------ valid ranges (amr.config.constraints)
SECTION_OF = {  # dataclass -> where params.yaml holds one
    "DataConfig": "data", "DataSource": "data", "DemoSource": "data.demo", "DemoSizes": "data.demo.sizes",
    "DownloadSource": "data.download", "ExtractSource": "data.extract", "BackboneConfig": "model",
    "LossWeights": "loss", "MatcherCosts": "matcher", "CoarseConfig": "coarse", "RerankConfig": "rerank",
    "MambaConfig": "mamba", "BoundaryContrastConfig": "boundary_contrast", "DenoisingConfig": "dn",
    "CascadeConfig": "cascade", "ScheduleConfig": "train.finetune", "TrainConfig": "train",
    "SaliencyProposalsConfig": "saliency_proposals", "EnsembleConfig": "ensemble", "InferenceConfig": "inference",
    "AnalysisConfig": "analysis", "ClusterConfig": "cluster",
}


def _bad_value(constraint, current):
    from amr.config import constraints as c

    if isinstance(constraint, c.OneOf):
        return "bogus"
    if isinstance(constraint, c.NonEmpty):
        return ""
    if isinstance(constraint, c.Either):
        return -1
    low = constraint.low if constraint.low is not None else constraint.high
    below = constraint.low is not None
    bad = (low if constraint.low_open else low - 1) if below else (low if constraint.high_open else low + 1)
    bad = type(current)(bad) if isinstance(current, (int, float)) and not isinstance(current, bool) else bad
    if isinstance(current, list):
        return [bad]
    return bad


CHECKED = [(owner, name) for owner, fields in __import__("amr.config.constraints", fromlist=["FIELDS"]).FIELDS.items()
           for name in fields]


@pytest.mark.parametrize("owner,name", CHECKED, ids=[f"{o}.{n}" for o, n in CHECKED])
def test_every_constrained_knob_refuses_a_bad_value_naming_the_key(raw, params, owner, name):
    from amr.config import constraints

    key = f"{SECTION_OF[owner]}.{name}"
    current = Params(raw).value(key)
    bad = _bad_value(constraints.FIELDS[owner][name], current)
    edited = copy.deepcopy(raw)
    _apply(edited, f"++{key}={json.dumps(bad)}")
    with pytest.raises(ConfigError) as error:
        Params(edited)
    assert str(error.value).startswith(f"{key}: ") and "not allowed" in str(error.value), error.value


@pytest.mark.parametrize("key,value,named", [
    ("model.heads", 5, "model.heads: 5 does not divide model.hidden_dim 64"),
    ("cascade.heads", 3, "cascade.heads: 3 does not divide model.hidden_dim 64"),
    ("model.hidden_dim", 66, "model.hidden_dim"),
    ("data.demo.sizes.castella_min_duration", 150, "castella_min_duration: 150 is above"),
])
def test_knobs_that_must_fit_together(raw, key, value, named):
    edited = copy.deepcopy(raw)
    _apply(edited, f"++{key}={value}")
    if key == "model.hidden_dim":
        _apply(edited, "model.heads=2")
        _apply(edited, "cascade.heads=2")
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        Params(edited)
