"""Budget presets: written into params.yaml (comments kept), the same as `-S` arguments, and
named in the tables."""
import re
from pathlib import Path

import pytest
import yaml
from projectkit import apply_overrides

from amr.cli import main as amr_main
from amr.config import presets as profiles
from amr.config.params import Params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes((ROOT / "params.yaml").read_bytes())
    return path


def test_paper_preset_is_the_reports_recipe():
    paper = profiles.paper_preset()
    assert paper["model.hidden_dim"] == 256 and paper["model.heads"] == 8 and paper["model.ffn_dim"] == 1024
    assert paper["train.pretrain.epochs"] == 200 and paper["train.pretrain.lr"] == 1e-4
    assert paper["train.finetune.epochs"] == 200 and paper["train.finetune.lr"] == 8e-5
    assert paper["train.batch_size"] == 32 and paper["cascade.ffn_dim"] == 512
    assert set(paper) == set(profiles.DEMO)


def test_writing_a_preset_changes_only_its_values(params_file):
    committed = params_file.read_text()
    changed = profiles.write_preset(params_file, profiles.paper_preset())
    assert sorted(changed) == sorted(profiles.DEMO)
    paper = Params.load(params_file)
    assert profiles.budget_label(paper) == "paper"
    assert {k: paper.value(k) for k in profiles.DEMO} == profiles.paper_preset()
    before, after = committed.splitlines(), params_file.read_text().splitlines()
    assert len(before) == len(after)
    differing = [a for a, b in zip(before, after) if a != b]
    assert len(differing) == len(profiles.DEMO)  # one line per preset key, comments intact
    assert all("# preset (paper" in line for line in after if line in differing)
    assert profiles.write_preset(params_file, profiles.paper_preset()) == []  # idempotent

    profiles.write_preset(params_file, profiles.load_preset("demo"))
    assert params_file.read_text() == committed


def test_set_args_through_dvc_equal_writing_the_preset(params_file, tmp_path):
    written = tmp_path / "written.yaml"
    written.write_bytes(params_file.read_bytes())
    profiles.write_preset(written, profiles.paper_preset())
    args = profiles.set_args(profiles.paper_preset())
    apply_overrides(params_file, [a for a in args if a != "-S"])  # what dvc exp run -S does
    via_dvc, via_file = Params.load(params_file), Params.load(written)
    for system in via_file.trained_systems():
        assert via_dvc.system(system) == via_file.system(system)
    assert via_dvc.train == via_file.train
    assert via_dvc.schedule("finetune") == via_file.schedule("finetune")


def test_budget_label_names_what_differs_from_the_nearest_preset(params_file):
    apply_overrides(params_file, ["train.batch_size=8"])
    assert profiles.budget_label(Params.load(params_file)) == "demo + train.batch_size=8"


def test_the_comments_name_the_papers_values():
    text = (ROOT / "params.yaml").read_text()
    lines = text.splitlines()
    from ruamel.yaml import YAML

    tree = YAML().load(text)
    for key, value in profiles.paper_preset().items():
        node = tree
        *parents, last = key.split(".")
        for name in parents:
            node = node[name]
        line = lines[node.lc.value(last)[0]]
        match = re.search(r"# preset \(paper ([^)]+)\)", line)
        assert match, f"{key}: its line lacks '# preset (paper VALUE)': {line!r}"
        assert yaml.safe_load(match.group(1)) == value, key


def test_float_values_read_back_the_same_in_yaml_1_1():
    for value in (8e-05, 1e-4, 0.001, 1e-10, 2.5, 1e20):
        assert yaml.safe_load(profiles.format_value(value)) == value


def test_profile_command(params_file, capsys):
    assert amr_main(["profile", "--params", str(params_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{params_file}: demo") and "model.hidden_dim" in out
    assert amr_main(["profile", "paper", "--set-args"]) == 0
    out = capsys.readouterr().out.split()
    assert out[:2] == ["-S", "model.hidden_dim=256"] and "train.finetune.lr=8.0e-05" in out
    assert amr_main(["profile", "paper", "--params", str(params_file)]) == 0
    assert f"{len(profiles.DEMO)} value(s) changed" in capsys.readouterr().out
    assert profiles.budget_label(Params.load(params_file)) == "paper"
    assert amr_main(["profile", "nope", "--params", str(params_file)]) == 2
