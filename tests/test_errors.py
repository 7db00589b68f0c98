"""A broken input ends a stage (or an `amr` command) with one `error: ...` line naming the
file or key, never a traceback: the user has something to fix, not a bug to report."""
import json

import pytest
from projectkit import copy_project, run_stage


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project before any stage ran: every stage's input is missing."""
    return copy_project(tmp_path_factory.mktemp("errors") / "project")


def assert_one_error_line(proc, *words: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


STAGES = [  # (script, arguments, what the message must name)
    ("train", ["--system", "baseline", "--stage", "pretrain"], "pretrain_train.h5"),
    ("train", ["--system", "slot1", "--stage", "finetune", "--seed", "2023"], "finetune_train.h5"),
    ("predict", ["--system", "baseline", "--seed", "2023"], "best.pt"),
    ("fuse", ["--system", "slot4"], "predictions/slot3"),
    ("evaluate", ["--system", "slot2"], "finetune_test"),
    ("analysis", [], "metrics/"),
    ("tables", [], "reports/significance.csv"),
    ("package", [], "reports/significance.csv"),
]


@pytest.mark.parametrize("script,args,named", STAGES, ids=[f"{s[0]}-{i}" for i, s in enumerate(STAGES)])
def test_a_stage_with_a_missing_input_says_which(project, script, args, named):
    assert_one_error_line(run_stage(project, script, *args), named)


def test_the_features_stage_with_an_unset_local_folder_says_which(tmp_path):
    from projectkit import apply_overrides

    root = copy_project(tmp_path / "project")
    apply_overrides(root / "params.yaml", ["data.source=local"])
    assert_one_error_line(run_stage(root, "features"), "data.local.pretrain.train")


@pytest.mark.parametrize("command", [
    ["evaluate", "missing.jsonl", "missing-gt.jsonl"],
    ["train", "--params", "missing-params.yaml", "--system", "baseline", "--stage", "pretrain",
     "--train", "t.h5", "--val", "v.h5", "--out", "out"],
])
def test_amr_commands_end_with_one_error_line(tmp_path, command):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "amr", *command], cwd=tmp_path, capture_output=True, text=True)
    assert_one_error_line(proc, "missing")


def test_a_broken_annotation_file_is_named_with_its_line(tmp_path):
    import subprocess
    import sys

    gt = tmp_path / "gt.jsonl"
    gt.write_text(json.dumps({"qid": "a", "relevant_windows": [[0, 1]]}) + "\n{not json\n")
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"qid": "a", "pred_relevant_windows": [[0, 1, 0.5]]}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "amr", "evaluate", str(preds), str(gt)],
                          capture_output=True, text=True)
    assert_one_error_line(proc, f"{gt}:2")


BAD_VALUES = [  # one bad value at a time in params.yaml
    ("model.hidden_dim", "abc"), ("cascade.kapa", 0.1), ("train.batch_size", 0), ("cascade.kappa", -0.1),
    ("dn.sigma", -1), ("model.heads", 5), ("model.dropout", 1.5), ("train.pretrain.lr", -1e-3),
    ("data.max_audio_frames", 0), ("mamba.d_state", 0), ("model.num_queries", 0), ("train.device", "tpu"),
]


@pytest.mark.parametrize("key,value", BAD_VALUES, ids=[k for k, _ in BAD_VALUES])
def test_a_bad_value_stops_the_training_stage_before_any_data_is_read(project, tmp_path, key, value):
    """The project copy holds no data at all: the error must come from loading params.yaml."""
    from projectkit import apply_overrides

    root = copy_project(tmp_path / "project")
    apply_overrides(root / "params.yaml", [f"++{key}={json.dumps(value)}"])
    named = key.rsplit(".", 1) if key == "cascade.kapa" else [key]  # unknown: "cascade: unknown key(s) ['kapa']"
    assert_one_error_line(run_stage(root, "train", "--system", "slot3", "--stage", "pretrain"), *named)
