"""amr train: outputs, determinism, resume after a hard kill, the resume guard, DDP on gloo."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainkit import make_packed_splits, tiny_system, tiny_train

TESTS_DIR = Path(__file__).parent
REPO = TESTS_DIR.parent

# Runs one stage in a fresh interpreter (like a real `amr train`), so that a crash can be an
# abrupt os._exit and the resumed run starts from nothing but the files on disk.
TRAIN_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from trainkit import tiny_system, tiny_train
from amr.train import train_stage
torch.set_num_threads(1)
train_stage(tiny_system(), tiny_train({epochs}), "pretrain", {train!r}, {val!r}, {out!r},
            seed=7, progress="plain")
"""


def run_training(splits, out, epochs=2, crash_after=None):
    env = {k: v for k, v in os.environ.items() if k != "AMR_CRASH_AFTER_EPOCH"}
    env["DVC_NO_ANALYTICS"] = "1"
    if crash_after is not None:
        env["AMR_CRASH_AFTER_EPOCH"] = str(crash_after)
    script = TRAIN_SCRIPT.format(tests=str(TESTS_DIR), epochs=epochs, out=str(out),
                                 train=str(splits["clotho_train"]), val=str(splits["clotho_val"]))
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def checkpoint_digest(path):
    from amr.training.checkpoint import load_checkpoint, state_digest

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

    last = torch.load(out / "last.pt", weights_only=False)
    best = torch.load(out / "best.pt", weights_only=False)
    assert last["epoch"] == 2 and {"optimizer", "rng", "best", "config_hash"} <= set(last)
    assert best["system_config"]["name"] == tiny_system().name
    assert best["epoch"] == metrics["best_epoch"]

    live = out / "dvclive"
    assert json.loads((live / "metrics.json").read_text())["step"] == 1
    tsv = (live / "plots" / "metrics" / "val" / "R1@0.7.tsv").read_text().splitlines()
    assert len(tsv) == 3  # header + one row per epoch
    assert not list(out.glob(".*.tmp"))  # no temporary checkpoint left behind


def test_killed_run_resumes_to_identical_weights(splits, straight_run, tmp_path):
    straight, _ = straight_run
    out = tmp_path / "run"
    crashed = run_training(splits, out, epochs=2, crash_after=1)
    assert crashed.returncode == 70, crashed.stderr
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 1

    resumed = run_training(splits, out, epochs=2)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert checkpoint_digest(out / "last.pt") == checkpoint_digest(straight / "last.pt")
    assert checkpoint_digest(out / "best.pt") == checkpoint_digest(straight / "best.pt")
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((straight / "metrics.json").read_text())
    assert a["best"] == b["best"] and a["best_epoch"] == b["best_epoch"]
    # the epoch logged before the crash appears once in the dvclive history
    tsv = (out / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in tsv[1:]] == ["0", "1"]


def test_changed_config_is_refused_and_restart_starts_over(splits, straight_run, tmp_path):
    import shutil

    from amr.train import TrainError, train_stage

    out = tmp_path / "run"
    shutil.copytree(straight_run[0], out)
    train_cfg = tiny_train(2)
    train_cfg.pretrain.lr = 5e-4
    with pytest.raises(TrainError) as err:
        train_stage(tiny_system(), train_cfg, "pretrain", splits["clotho_train"],
                    splits["clotho_val"], out, seed=7, progress="none")
    message = str(err.value)
    assert "last.pt" in message and "lr: 0.0001 -> 0.0005" in message and "--restart" in message

    summary = train_stage(tiny_system(), tiny_train(1), "pretrain", splits["clotho_train"],
                          splits["clotho_val"], out, seed=7, restart=True, progress="none")
    assert summary["epochs_done"] == 1
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 1


def test_finetune_starts_from_pretrained_weights(splits, straight_run, tmp_path):
    from amr.train import TrainError, train_stage

    init = straight_run[0] / "best.pt"
    train_cfg = tiny_train(0)  # zero epochs is refused: nothing would be selected
    with pytest.raises(TrainError, match="no epoch"):
        train_stage(tiny_system(), train_cfg, "finetune", splits["castella_val"],
                    splits["castella_val"], tmp_path / "zero", init_from=init, progress="none")

    summary = train_stage(tiny_system(), tiny_train(1), "finetune", splits["castella_val"],
                          splits["castella_val"], tmp_path / "ft", init_from=init, seed=7,
                          progress="none")
    assert summary["stage"] == "finetune" and summary["epochs_done"] == 1
    ckpt = torch.load(tmp_path / "ft" / "last.pt", weights_only=False)
    assert ckpt["identity"]["init_from"]["file"] == "best.pt"

    wider = tiny_system()
    wider.backbone.hidden_dim = 24
    with pytest.raises(TrainError, match="do not fit"):
        train_stage(wider, tiny_train(1), "finetune", splits["castella_val"],
                    splits["castella_val"], tmp_path / "bad", init_from=init, progress="none")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, splits, out, results):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DVC_NO_ANALYTICS="1")
    sys.path.insert(0, str(TESTS_DIR))
    from amr.train import train_stage

    torch.set_num_threads(1)
    summary = train_stage(tiny_system(), tiny_train(1), "pretrain", splits["clotho_train"],
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
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["identity"]["world_size"] == 2 and len(ckpt["rng"]) == 2


def test_cli_rejects_unknown_system(splits, tmp_path, capsys):
    import argparse

    from amr.commands import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(["--system", "nope", "--stage", "pretrain", "--train",
                              str(splits["clotho_train"]), "--val", str(splits["clotho_val"]),
                              "--out", str(tmp_path / "x")])
    assert train_command.run(args) == 2
    assert "unknown system 'nope'" in capsys.readouterr().err


def test_cli_trains_from_a_params_file(splits, tmp_path, capsys):
    import argparse

    from amr.commands import train as train_command

    params = tmp_path / "params.yaml"
    params.write_text(
        "profile: paper\nprofiles: {paper: {}}\n"
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
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert ckpt["system_config"]["backbone"]["hidden_dim"] == 16
    assert ckpt["train_config"]["pretrain"]["epochs"] == 1  # --epochs overrides the file
