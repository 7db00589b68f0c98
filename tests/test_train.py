"""amr train: outputs, determinism, resume after a hard kill, the resume guard (configuration and
code), DDP on gloo, and the training stage of the pipeline with `-S` overrides."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from projectkit import apply_overrides, copy_project, project_env, run_stage
from trainkit import make_packed_splits, schedule, tiny_system, tiny_train

TESTS_DIR = Path(__file__).parent
REPO = TESTS_DIR.parent

# Runs one stage in a fresh interpreter (like a real `amr train`), so that a crash can be an
# abrupt os._exit / SIGKILL and the resumed run starts from nothing but the files on disk. The
# faults are injected here, by wrapping two functions of amr.engine.train: `crash_after` ends the
# process right after an epoch's checkpoints are on disk, `kill_at` (epoch, step) kills it with
# SIGKILL after that optimiser step.
TRAIN_SCRIPT = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
from trainkit import schedule, tiny_system, tiny_train
import amr.engine.train as engine
from amr.engine.train import train_stage
crash_after, kill_at = {crash_after!r}, {kill_at!r}
if crash_after:
    save = engine._save_checkpoints
    def save_then_exit(out_dir, trainee, run_record, state, *rest):
        save(out_dir, trainee, run_record, state, *rest)
        if state.epoch == crash_after:
            os._exit(70)
    engine._save_checkpoints = save_then_exit
if kill_at:
    one_epoch = engine.train_one_epoch
    def one_epoch_then_kill(*args):
        def on_step(step):
            if (args[8] + 1, step) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return one_epoch(*args, on_step=on_step)
    engine.train_one_epoch = one_epoch_then_kill
torch.set_num_threads(1)
train_stage(tiny_system(), tiny_train(), schedule({epochs}), "pretrain", {train!r}, {val!r}, {out!r},
            seed=7, progress="plain", restart_on_mismatch={restart_on_mismatch})
"""


def run_training(splits, out, epochs=2, crash_after=None, kill_at=None, code_root=REPO,
                 restart_on_mismatch=False):
    env = project_env(code_root)
    script = TRAIN_SCRIPT.format(tests=str(TESTS_DIR), epochs=epochs, out=str(out), crash_after=crash_after,
                                 kill_at=tuple(int(x) for x in kill_at.split(":")) if kill_at else None,
                                 train=str(splits["clotho_train"]), val=str(splits["clotho_val"]),
                                 restart_on_mismatch=restart_on_mismatch)
    return subprocess.run([sys.executable, "-c", script], cwd=code_root, env=env,
                          capture_output=True, text=True, timeout=300)


def checkpoint_digest(path):
    from amr.engine.checkpoint import load_checkpoint, state_digest

    return state_digest(load_checkpoint(path)["model"])


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return make_packed_splits(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def straight_run(splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    proc = run_training(splits, out, epochs=2)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_outputs_of_a_stage(straight_run):
    out, proc = straight_run
    # plain (non-TTY) progress: one line per epoch
    epoch_lines = [line for line in proc.stdout.splitlines() if line.startswith("pretrain epoch")]
    assert len(epoch_lines) == 2 and "R1@0.7" in epoch_lines[0]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_done"] == 2 and metrics["best_epoch"] in (1, 2)
    assert set(metrics["best"]) >= {"R1@0.5", "R1@0.7", "mAP", "mAP@0.5", "mAP@0.75"}

    info = json.loads((out / "system_info.json").read_text())
    assert info["trainable_parameters"] > 0 and info["frozen_parameters"] == 0
    assert info["ensemble"] is False and info["members"] == 1
    assert info["loss_function"] and all(isinstance(t, str) for t in info["loss_function"])
    # what produced the weights: the code digest, the configuration, the software
    from amr.engine.identity import TRAINING_ENTRY
    from amr.util.codegraph import code_digest

    assert info["code_digest"] == code_digest([TRAINING_ENTRY]) and len(info["code_digest"]) == 64
    assert info["config"]["system"]["backbone"]["hidden_dim"] == 16
    assert info["config"]["train"]["batch_size"] == 8 and info["config"]["schedule"]["epochs"] == 2
    assert info["software"]["torch"] == torch.__version__

    last = torch.load(out / "last.pt", weights_only=True)
    best = torch.load(out / "best.pt", weights_only=True)
    assert last["epoch"] == 2 and {"optimizer", "rng", "best", "config_hash"} <= set(last)
    assert last["identity"]["code"] == info["code_digest"]
    assert best["system_config"]["name"] == tiny_system().name
    assert best["epoch"] == metrics["best_epoch"]

    live = out / "dvclive"
    assert json.loads((live / "metrics.json").read_text())["step"] == 1
    tsv = (live / "plots" / "metrics" / "val" / "R1@0.7.tsv").read_text().splitlines()
    assert len(tsv) == 3  # header + one row per epoch
    assert not list(out.glob(".*.tmp"))  # no temporary checkpoint left behind


def _assert_same_run(out, straight):
    assert checkpoint_digest(out / "last.pt") == checkpoint_digest(straight / "last.pt")
    assert checkpoint_digest(out / "best.pt") == checkpoint_digest(straight / "best.pt")
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((straight / "metrics.json").read_text())
    assert a["best"] == b["best"] and a["best_epoch"] == b["best_epoch"]


def test_killed_run_resumes_to_identical_weights(splits, straight_run, tmp_path):
    straight, _ = straight_run
    out = tmp_path / "run"
    crashed = run_training(splits, out, epochs=2, crash_after=1)
    assert crashed.returncode == 70, crashed.stderr
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1

    resumed = run_training(splits, out, epochs=2)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    _assert_same_run(out, straight)
    # the epoch logged before the crash appears once in the dvclive history
    tsv = (out / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in tsv[1:]] == ["0", "1"]


def test_kill_9_in_the_middle_of_an_epoch_resumes_to_identical_weights(splits, straight_run, tmp_path):
    straight, _ = straight_run
    out = tmp_path / "run"
    killed = run_training(splits, out, epochs=2, kill_at="2:2")  # SIGKILL after step 2 of epoch 2
    assert killed.returncode == -9, killed.stderr
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    resumed = run_training(splits, out, epochs=2)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "at epoch 2/2" in resumed.stdout
    _assert_same_run(out, straight)


def test_more_epochs_extend_a_finished_run(splits, straight_run, tmp_path):
    straight, _ = straight_run
    out = tmp_path / "run"
    assert run_training(splits, out, epochs=1).returncode == 0
    again = run_training(splits, out, epochs=1)
    assert "already trained for 1 epochs" in again.stdout
    extended = run_training(splits, out, epochs=2)
    assert extended.returncode == 0 and "resuming" in extended.stdout
    _assert_same_run(out, straight)


def test_fewer_epochs_than_trained_are_not_taken_from_a_longer_run(splits, straight_run, tmp_path):
    """A 2-epoch run asked again for 1 epoch: its weights and best epoch saw an epoch that was
    not asked for. Refused by hand; a pipeline stage trains the 1-epoch run from scratch."""
    out, one_epoch = tmp_path / "run", tmp_path / "one"
    shutil.copytree(straight_run[0], out)
    refused = run_training(splits, out, epochs=1)
    assert refused.returncode != 0
    assert "epochs: 2 trained -> 1 asked" in refused.stderr and "--restart" in refused.stderr
    restarted = run_training(splits, out, epochs=1, restart_on_mismatch=True)
    assert restarted.returncode == 0, restarted.stderr
    assert "starting over" in restarted.stdout
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert run_training(splits, one_epoch, epochs=1).returncode == 0
    _assert_same_run(out, one_epoch)


def test_changed_config_is_refused_and_restart_starts_over(splits, straight_run, tmp_path):
    from amr.engine.train import TrainError, train_stage

    out = tmp_path / "run"
    shutil.copytree(straight_run[0], out)
    with pytest.raises(TrainError) as err:
        train_stage(tiny_system(), tiny_train(), schedule(2, lr=5e-4), "pretrain", splits["clotho_train"],
                    splits["clotho_val"], out, seed=7, progress="none")
    message = str(err.value)
    assert "last.pt" in message and "lr: 0.0001 -> 0.0005" in message and "--restart" in message

    summary = train_stage(tiny_system(), tiny_train(), schedule(1), "pretrain", splits["clotho_train"],
                          splits["clotho_val"], out, seed=7, restart=True, progress="none")
    assert summary["epochs_done"] == 1
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1


# ------------------------------------------------------------------ code provenance
def _patch(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text()
    assert text.count(old) == 1, f"{rel}: {old!r} not found once"
    path.write_text(text.replace(old, new))


def test_a_code_change_restarts_the_run_and_a_comment_does_not(splits, straight_run, tmp_path):
    """The identity of a run includes the digest of the code it executes: a semantic change in
    amr/model (the PReLU's initial slope) trains from scratch; a comment edit resumes."""
    code = copy_project(tmp_path / "code")
    out = tmp_path / "run"
    shutil.copytree(straight_run[0], out)
    straight_digest = checkpoint_digest(out / "best.pt")

    _patch(code, "amr/model/transformer.py", "import torch\n", "import torch  # a comment only\n")
    same = run_training(splits, out, epochs=2, code_root=code)
    assert same.returncode == 0, same.stderr
    assert "already trained for 2 epochs" in same.stdout
    assert checkpoint_digest(out / "best.pt") == straight_digest

    _patch(code, "amr/model/transformer.py", '{"prelu": nn.PReLU,', '{"prelu": lambda: nn.PReLU(init=0.2),')
    refused = run_training(splits, out, epochs=2, code_root=code)
    assert refused.returncode != 0 and "code:" in refused.stderr and "--restart" in refused.stderr
    restarted = run_training(splits, out, epochs=2, code_root=code, restart_on_mismatch=True)
    assert restarted.returncode == 0, restarted.stderr
    assert "starting over" in restarted.stdout and "code:" in restarted.stdout
    assert len([ln for ln in restarted.stdout.splitlines() if ln.startswith("pretrain epoch")]) == 2
    assert checkpoint_digest(out / "best.pt") != straight_digest
    info = json.loads((out / "system_info.json").read_text())
    straight_info = json.loads((straight_run[0] / "system_info.json").read_text())
    assert info["code_digest"] != straight_info["code_digest"]


def test_finetune_starts_from_pretrained_weights(splits, straight_run, tmp_path):
    import dataclasses

    from amr.engine.train import TrainError, train_stage

    init = straight_run[0] / "best.pt"
    with pytest.raises(TrainError, match="no epoch"):  # zero epochs: nothing would be selected
        train_stage(tiny_system(), tiny_train(), schedule(0), "finetune", splits["castella_val"],
                    splits["castella_val"], tmp_path / "zero", init_from=init, progress="none")

    summary = train_stage(tiny_system(), tiny_train(), schedule(1), "finetune", splits["castella_val"],
                          splits["castella_val"], tmp_path / "ft", init_from=init, seed=7,
                          progress="none")
    assert summary["stage"] == "finetune" and summary["epochs_done"] == 1
    ckpt = torch.load(tmp_path / "ft" / "last.pt", weights_only=True)
    assert ckpt["identity"]["init_from"]["file"] == "best.pt"
    assert ckpt["identity"]["init_from"]["weights_sha256"] == checkpoint_digest(init)

    wider = tiny_system()
    wider = dataclasses.replace(wider, backbone=dataclasses.replace(wider.backbone, hidden_dim=24))
    with pytest.raises(TrainError, match="do not fit"):
        train_stage(wider, tiny_train(), schedule(1), "finetune", splits["castella_val"],
                    splits["castella_val"], tmp_path / "bad", init_from=init, progress="none")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, splits, out, results):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DVC_NO_ANALYTICS="1")
    sys.path.insert(0, str(TESTS_DIR))
    from amr.engine.train import train_stage

    torch.set_num_threads(1)
    summary = train_stage(tiny_system(), tiny_train(), schedule(1), "pretrain", splits["clotho_train"],
                          splits["clotho_val"], out, seed=7, progress="none")
    Path(results, f"rank{rank}.json").write_text(json.dumps(summary))


def test_ddp_gloo_two_ranks_end_identical(splits, tmp_path):
    import torch.multiprocessing as mp

    out, results = tmp_path / "ddp", tmp_path / "results"
    results.mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), splits, str(out), str(results)), nprocs=2,
             join=True)
    summaries = [json.loads((results / f"rank{r}.json").read_text()) for r in range(2)]
    assert summaries[0]["weights_sha256"] == summaries[1]["weights_sha256"]
    assert summaries[0]["weights_sha256"] == checkpoint_digest(out / "last.pt")
    assert summaries[0]["best"] == summaries[1]["best"]  # rank 0's validation, broadcast
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["identity"]["world_size"] == 2 and len(ckpt["rng"]) == 2


def test_cli_rejects_unknown_system(splits, tmp_path, capsys):
    from amr.cli import main as amr_main

    assert amr_main(["train", "--system", "nope", "--stage", "pretrain", "--train", str(splits["clotho_train"]),
                     "--val", str(splits["clotho_val"]), "--out", str(tmp_path / "x")]) == 2
    assert "unknown system 'nope'" in capsys.readouterr().err


def test_cli_trains_from_a_params_file(splits, tmp_path, capsys):
    import argparse

    from amr.cli import train as train_command

    params = tmp_path / "params.yaml"
    params.write_text(
        "model: {hidden_dim: 16, heads: 2, ffn_dim: 32, num_queries: 4}\n"
        "train: {pretrain: {epochs: 3}, batch_size: 8, threads: 1, device: cpu}\n"
        "systems: {baseline: {}}\n"
    )
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(["--params", str(params), "--system", "baseline", "--stage",
                              "pretrain", "--train", str(splits["clotho_train"]), "--val",
                              str(splits["clotho_val"]), "--out", str(tmp_path / "run"),
                              "--epochs", "1", "--progress", "plain"])
    assert train_command.run(args) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["best_epoch"] == 1 and "R1@0.7" in final
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert ckpt["system_config"]["backbone"]["hidden_dim"] == 16
    assert ckpt["schedule"]["epochs"] == 1  # --epochs wins over the file
    assert ckpt["schedule"]["lr"] == 1e-4  # the report's pre-training lr, not given in the file


# ------------------------------------------------------------------ the pipeline's training stage
def test_training_stage_records_what_dvc_set(splits, tmp_path):
    """`dvc exp run -S` on keys the demo preset sets reaches the stage's run and its records."""
    root = copy_project(tmp_path / "project")
    features = root / "data" / "features"
    features.mkdir(parents=True)
    for packed, split in [("pretrain_train", "clotho_train"), ("pretrain_val", "clotho_val"),
                          ("finetune_train", "castella_val"), ("finetune_val", "castella_val")]:
        shutil.copy(splits[split], features / f"{packed}.h5")
    apply_overrides(root / "params.yaml", [
        "train.batch_size=4", "model.hidden_dim=16", "model.heads=2", "model.ffn_dim=32",
        "cascade.ffn_dim=16", "cascade.heads=2", "train.pretrain.epochs=1",
        "train.finetune.epochs=1", "model.cpu_kernels=native", "train.threads=1",
    ])
    pre = run_stage(root, "train", "--system", "slot3", "--stage", "pretrain")
    assert pre.returncode == 0, pre.stderr
    fine = run_stage(root, "train", "--system", "slot3", "--stage", "finetune", "--seed", "42")
    assert fine.returncode == 0, fine.stderr
    run = root / "runs" / "finetune" / "slot3" / "seed-42"
    info = json.loads((run / "system_info.json").read_text())
    assert info["config"]["train"]["batch_size"] == 4
    assert info["config"]["system"]["backbone"]["hidden_dim"] == 16
    assert info["config"]["schedule"] == {"epochs": 1, "lr": 0.001}
    assert info["config"]["system"]["backbone"]["cpu_kernels"] == "native"
    assert info["selective_scan"] and set(info["selective_scan"]) <= {"amr C kernel (CPU)", "amr torch ops"}
    assert info["config"]["seed"] == 42
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["train_config"]["batch_size"] == 4 and best["schedule"]["epochs"] == 1


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path):
    """Checkpoints hold plain values only: the RNG states go through torch.load(weights_only=True)
    and restore every generator exactly."""
    import random

    import numpy as np

    from amr.engine.checkpoint import atomic_save, capture_rng_state, restore_rng_state

    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.standard_normal()  # a cached Gaussian is part of numpy's state
    atomic_save({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3))
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    again = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


def test_a_pickled_checkpoint_of_an_older_amr_is_replaced_or_refused_clearly(splits, straight_run, tmp_path):
    """last.pt with pickled objects (an older format) is refused by the weights-only load with
    a message naming the file and the fix; a pipeline stage (restart on mismatch) trains again."""
    import numpy as np

    out = tmp_path / "run"
    shutil.copytree(straight_run[0], out)
    old = torch.load(out / "last.pt", weights_only=True)
    old["rng"] = [{"numpy": np.random.get_state()}]  # format 2 stored numpy's state as is
    torch.save(old, out / "last.pt")
    refused = run_training(splits, out, epochs=2)
    assert refused.returncode != 0
    assert "last.pt: holds pickled Python objects" in refused.stderr and "--restart" in refused.stderr
    again = run_training(splits, out, epochs=2, restart_on_mismatch=True)
    assert again.returncode == 0, again.stderr
    assert "starting over" in again.stdout
    assert checkpoint_digest(out / "best.pt") == checkpoint_digest(straight_run[0] / "best.pt")
