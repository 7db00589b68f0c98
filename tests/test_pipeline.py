"""dvc.yaml is derived and honest: its stages follow `systems:`, each stage's deps cover every
project file its script can execute, its params are exactly what its script reads, and DVC
re-runs a stage when (and only when) one of those changes."""
import copy
import json
import modulefinder
import shutil
from pathlib import Path

import pytest
import yaml
from projectkit import copy_project, dvc, git, run_stage

from amr.config.params import Params
from amr.pipeline import dag
from amr.reporting import ablations

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stages():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_dvc_yaml_is_what_the_code_and_params_derive(params):
    assert dag.stale_stages(params) == "", "run `amr pipeline sync`"


# ------------------------------------------------------------------ deps: the import graph
class ProjectModules(modulefinder.ModuleFinder):
    """The standard library's import walker, limited to this project's packages."""

    def import_hook(self, name, caller=None, fromlist=None, level=-1):
        if level <= 0 and name.split(".")[0] not in ("amr", "stages"):
            return None
        return super().import_hook(name, caller, fromlist, level)


def imported_files(script: Path) -> set[str]:
    finder = ProjectModules(path=[str(ROOT)])
    finder.run_script(str(script))
    files = {Path(m.__file__).resolve() for m in finder.modules.values() if m.__file__}
    return {f.relative_to(ROOT).as_posix() for f in files if f.is_relative_to(ROOT)}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", sorted(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]))
def test_stage_deps_cover_every_module_its_script_imports(stages, name):
    stage = stages[name]
    script = stage["cmd"].split()[2].replace(".", "/") + ".py"  # python -m stages.<x> ...
    files = imported_files(ROOT / script)
    assert script in files and len(files) > 5
    missing = sorted(f for f in files if not covered(f, stage["deps"]))
    assert missing == [], f"{name}: project modules its script imports but dvc.yaml does not list"


def test_training_deps_include_the_c_kernels_and_the_matcher(stages):
    deps = stages["pretrain-slot3"]["deps"]
    for path in ("amr/kernels/selective_scan_cpu.c", "amr/kernels/dropout_cpu.c", "amr/model/spans.py",
                 "amr/config/schema.py", "amr/config/params.py", "amr/evaluation/metrics.py", "amr/util/io.py", "stages/train.py"):
        assert covered(path, deps), path
    for path in ("amr/model/spans.py", "amr/data/dataset.py", "amr/evaluation/prediction_files.py"):
        assert covered(path, stages["predict-baseline"]["deps"]), path


# ------------------------------------------------------------------ params: what configure reads
def _perturbed(value):
    """A different value of the same kind (None when there is no safe one)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return value + [max(value) + 1]
    return None


def _leaf_paths(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaf_paths(value, prefix + (key,))
    else:
        yield prefix


def _jobs(params, specs):
    out = {}
    for spec in specs:
        module = dag.load_script(spec.script)
        args = module.parser().parse_args(spec.configure_argv())
        try:
            out[spec.name] = module.configure(params, args)
        except Exception as exc:  # noqa: BLE001 - a changed value may make configure refuse
            out[spec.name] = f"error: {exc}"
    return out


def test_a_stage_declares_every_key_that_changes_what_it_gets(params, raw):
    """Change each leaf of params.yaml in turn: every stage whose configured job changes must
    declare that key (else DVC would not re-run it), and no stage may declare a key that never
    changes its job."""
    specs = dag.stage_specs(params)
    declared = {spec.name: dag.stage_reads(params, spec) for spec in specs}
    reference = _jobs(params, specs)
    changers: dict[str, set] = {name: set() for name in declared}
    tried = set()
    for path in _leaf_paths(raw):
        node = raw
        for key in path:
            node = node[key]
        new = _perturbed(node)
        if new is None:
            continue
        edited = copy.deepcopy(raw)
        target = edited
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = new
        try:
            changed = Params(edited)
        except Exception:  # noqa: BLE001 - not a valid configuration: nothing runs
            continue
        key = ".".join(path)
        tried.add(key)
        for name, job in _jobs(changed, specs).items():
            if job != reference[name]:
                changers[name].add(key)
                assert covered(key.replace(".", "/"), [d.replace(".", "/") for d in declared[name]]), \
                    f"{key} changes what stage {name} gets but is not among its params {declared[name]}"
    for name, keys in declared.items():
        unused = [d for d in keys if any(k == d or k.startswith(d + ".") for k in tried)
                  and not any(k == d or k.startswith(d + ".") for k in changers[name])]
        assert unused == [], f"stage {name} declares params that change nothing it gets"


def test_only_the_slot3_branch_reads_the_cascade(stages):
    readers = {name for name, st in stages.items()
               if any(p == "cascade" or p.startswith("cascade.kappa") for p in st.get("params", []))}
    assert readers == {"pretrain-slot3", "finetune-slot3"}


# ------------------------------------------------------------------ experiments: -S overrides
def _overridden(tmp_path, overrides: list[str]) -> Params:
    from projectkit import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_bytes((ROOT / "params.yaml").read_bytes())
    apply_overrides(path, overrides)  # exactly what `dvc exp run -S` writes
    return Params.load(path)


@pytest.mark.parametrize("variant", [v for v in ablations.GRID if v.overrides], ids=lambda v: v.name)
def test_every_table2_row_runs_against_the_committed_dvc_yaml(tmp_path, params, variant):
    """A queued experiment cannot run `amr pipeline sync`: under each row's overrides the derived
    dvc.yaml is the committed one (stable declarations), so every stage's start check passes."""
    changed = _overridden(tmp_path, variant.overrides)
    assert dag.stale_stages(changed) == ""
    assert dag.build(changed) == dag.build(params)


def test_a_declared_superset_passes_an_undeclared_read_stops(tmp_path, params):
    # a stage declaring more than it reads and executes is honest (DVC re-runs it too often)
    root = copy_project(tmp_path / "project")
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    pipeline["stages"]["pretrain-baseline"]["params"].append("cascade")
    pipeline["stages"]["pretrain-baseline"]["deps"].append("amr/engine/fuse.py")
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    assert dag.stale_stages(params, root / "dvc.yaml", root) == ""
    # the baseline switching the coarse branch on reads `coarse`, which its stages do not declare
    more = _overridden(tmp_path, ["++systems.baseline.coarse.enabled=true"])
    difference = dag.stale_stages(more)
    assert "pretrain-baseline: ['coarse']" in difference and "finetune-baseline: ['coarse']" in difference
    with pytest.raises(dag.PipelineError, match="amr pipeline sync"):
        dag.check(more)


def test_an_undeclared_code_dep_stops(tmp_path):
    root = copy_project(tmp_path / "project")
    stages = yaml.safe_load((root / "dvc.yaml").read_text())
    stages["stages"]["predict-baseline"]["deps"].remove("amr/model/spans.py")
    (root / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    difference = dag.stale_stages(Params.load(root / "params.yaml"), root / "dvc.yaml", root)
    assert difference == "stages that execute or read what they do not declare predict-baseline: ['amr/model/spans.py']"


# ------------------------------------------------------------------ one definition of a system
def test_a_new_system_in_params_yaml_gets_all_its_stages(raw):
    edited = copy.deepcopy(raw)
    edited["systems"]["slot2b"] = {"coarse": {"enabled": True}, "mamba": {"enabled": True}}
    built = dag.build(Params(edited))["stages"]
    for stage in ("pretrain-slot2b", "finetune-slot2b", "predict-slot2b", "evaluate-slot2b"):
        assert stage in built
    assert sorted(built["pretrain-slot2b"]["params"]) == sorted(
        [p for p in built["pretrain-baseline"]["params"] if p != "systems.baseline"]
        + ["coarse", "mamba", "systems.slot2b"])
    assert "metrics/slot2b.json" in built["tables"]["deps"]
    assert "runs/finetune/slot2b/seed-${train.seed}" in str(built["finetune-slot2b"]["outs"])
    # a system that becomes a fusion's base is fine-tuned once per ensemble seed
    edited["systems"]["slot4"]["fuse"]["base"] = "slot2b"
    built = dag.build(Params(edited))["stages"]
    assert built["finetune-slot2b"]["matrix"] == {"seed": "${ensemble.seeds}"}
    assert "matrix" not in built["finetune-slot3"]


def test_a_stage_refuses_to_run_when_dvc_yaml_is_stale(tmp_path):
    root = copy_project(tmp_path / "project")
    text = (root / "params.yaml").read_text()
    new_system = "  slot2b:\n    coarse: {enabled: true}\n  slot4:\n"
    (root / "params.yaml").write_text(text.replace("  slot4:\n", new_system))
    proc = run_stage(root, "evaluate", "--system", "baseline")
    assert proc.returncode != 0
    assert "missing stages" in proc.stderr and "pretrain-slot2b" in proc.stderr
    assert "amr pipeline sync" in proc.stderr

    from amr.cli import main as amr_main

    assert amr_main(["pipeline", "check", "--params", str(root / "params.yaml"),
                     "--dvc-yaml", str(root / "dvc.yaml")]) == 1
    assert amr_main(["pipeline", "sync", "--params", str(root / "params.yaml"),
                     "--dvc-yaml", str(root / "dvc.yaml")]) == 0
    assert "pretrain-slot2b" in yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


# ------------------------------------------------------------------ DVC itself
def _placeholders(root: Path, stages: dict) -> None:
    """An empty stand-in for every out and data dep, so that DVC can record the pipeline."""
    paths = []
    for name, stage in stages.items():
        seeds = ["2023", "42"] if "matrix" in stage else [None]
        for seed in seeds:
            for entry in stage.get("deps", []) + stage.get("outs", []) + stage.get("metrics", []) \
                    + stage.get("plots", []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                paths.append(path.replace("${item.seed}", seed or "").replace("${train.seed}", "2023"))
    for path in paths:
        target = root / path
        if target.exists():
            continue
        if Path(path).suffix:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path)
        else:
            target.mkdir(parents=True, exist_ok=True)
            (target / "placeholder").write_text(path)


def _changed(root: Path) -> set[str]:
    proc = dvc(root, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout or "{}"))


@pytest.fixture(scope="module")
def recorded_project(tmp_path_factory, stages):
    root = copy_project(tmp_path_factory.mktemp("dvc") / "project")
    git(root, "init", "-q")
    _placeholders(root, stages)
    proc = dvc(root, "commit", "-f", "-q")
    assert proc.returncode == 0, proc.stderr
    assert _changed(root) == set()
    return root


def _with_change(root: Path, path: str, edit):
    original = (root / path).read_text()
    (root / path).write_text(edit(original))
    try:
        return _changed(root)
    finally:
        (root / path).write_text(original)


def test_dvc_reruns_every_stage_that_executes_a_changed_module(recorded_project, stages):
    def expected(module):
        return {n for n, st in stages.items() if covered(module, st["deps"])}

    changed = _with_change(recorded_project, "amr/model/spans.py", lambda t: t + "\nMATCHER_CHANGED = 1\n")
    training = {n for n in stages if n.startswith(("pretrain-", "finetune-"))}
    assert training <= {n.split("@")[0] for n in changed}
    assert {n.split("@")[0] for n in changed} == expected("amr/model/spans.py")
    changed = _with_change(recorded_project, "amr/engine/fuse.py", lambda t: t + "\nFUSION_CHANGED = 1\n")
    assert {n.split("@")[0] for n in changed} == expected("amr/engine/fuse.py") == {"fuse-slot4"}
    # the analysis stage draws saliency rescaled as the fusion rescales it: one module for both
    changed = _with_change(recorded_project, "amr/model/saliency.py", lambda t: t + "\nRESCALE_CHANGED = 1\n")
    assert {"fuse-slot4", "analysis"} <= {n.split("@")[0] for n in changed} == expected("amr/model/saliency.py")


def test_dvc_reruns_only_the_stages_that_read_a_changed_param(recorded_project):
    changed = _with_change(recorded_project, "params.yaml",
                           lambda t: t.replace("  kappa: 0.05\n", "  kappa: 0.1\n"))
    assert changed == {"pretrain-slot3", "finetune-slot3@2023", "finetune-slot3@42"}
    changed = _with_change(recorded_project, "params.yaml",
                           lambda t: t.replace("  threshold: 0.5\n", "  threshold: 0.3\n"))
    assert changed == {"fuse-slot4"}
    changed = _with_change(recorded_project, "params.yaml",
                           lambda t: t.replace("  batch_size: 16 ", "  batch_size: 8 "))
    assert {n.split("@")[0] for n in changed} == {
        f"{kind}-{s}" for kind in ("pretrain", "finetune") for s in ("baseline", "slot1", "slot2", "slot3")
    } | {"tables"}  # the table caption names the budget: "demo + train.batch_size=8"
    shutil.rmtree(recorded_project / ".dvc" / "tmp", ignore_errors=True)


@pytest.mark.parametrize("edit", [("  rerank_alpha: 1.0 ", "  rerank_alpha: 0.5 "),
                                  ("  max_windows: 10\n", "  max_windows: 5\n"),
                                  ("  clamp_slack: 2.0\n", "  clamp_slack: 1.0\n")],
                         ids=["rerank_alpha", "max_windows", "clamp_slack"])
def test_scoring_settings_never_retrain(recorded_project, edit):
    """Model selection scores with a fixed rule (amr.engine.loop.SELECTION_SCORING), so every
    inference.* knob only re-writes predictions and what reads them (docs/architecture.md)."""
    old, new = edit
    assert old in (recorded_project / "params.yaml").read_text()
    changed = {n.split("@")[0] for n in _with_change(recorded_project, "params.yaml",
                                                     lambda t: t.replace(old, new))}
    assert changed, "the edit re-ran nothing"
    # dvc status lists the stages whose own inputs changed; evaluation follows their outputs
    assert all(n.startswith(("predict-", "fuse-")) for n in changed), changed
