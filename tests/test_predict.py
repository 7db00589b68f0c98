"""amr predict: scored windows JSONL + saliency npz for any split, including the blind list."""
import json

import h5py
import numpy as np
import pytest
import torch
from trainkit import make_packed_splits, tiny_system


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return make_packed_splits(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from amr.config.schema import to_dict
    from amr.engine.checkpoint import atomic_save
    from amr.model import build_model

    torch.manual_seed(0)
    cfg = tiny_system()
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    atomic_save({"model": build_model(cfg).state_dict(), "system_config": to_dict(cfg)}, path)
    return path


def frames_per_query(h5_path):
    with h5py.File(h5_path, "r") as h5:
        qids = [q.decode() for q in h5["query/qid"][:]]
        rec = h5["query/recording"][:]
        lengths = np.diff(h5["audio/offsets"][:])
    return {qid: int(lengths[r]) for qid, r in zip(qids, rec)}


def run_cli(argv):
    from amr.cli import main as amr_main

    return amr_main(["predict", *argv])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("split", ["castella_val", "evaluation"])
def test_predictions_and_saliency_follow_the_formats(split, splits, checkpoint, tmp_path, capsys):
    out = tmp_path / "pred.jsonl"
    assert run_cli(["--checkpoint", str(checkpoint), "--data", str(splits[split]),
                    "--out", str(out), "--batch-size", "3", "--device", "cpu"]) == 0
    assert "queries/s" in capsys.readouterr().out

    records = read_jsonl(out)
    annotations = read_jsonl(splits[split + "_jsonl"])
    assert [r["qid"] for r in records] == [a["qid"] for a in annotations]  # every query, in order
    frames = frames_per_query(splits[split])
    for rec, ann in zip(records, annotations):
        assert (rec["query"], rec["vid"], rec["duration"]) == (ann["query"], ann["vid"], ann["duration"])
        windows = rec["pred_relevant_windows"]
        assert 1 <= len(windows) <= 10
        assert all(len(w) == 3 and w[0] < w[1] for w in windows)
        scores = [w[2] for w in windows]
        assert scores == sorted(scores, reverse=True)  # best first

    with np.load(tmp_path / "pred.saliency.npz") as sal:
        assert sorted(sal.files) == sorted(frames)
        for qid, n in frames.items():
            assert sal[qid].shape == (n,) and sal[qid].dtype == np.float32


def test_predict_is_deterministic_and_scores_with_gt(splits, checkpoint, tmp_path, capsys):
    from amr.engine.predict import predict_split

    a = predict_split(checkpoint, splits["castella_val"], tmp_path / "a.jsonl", batch_size=4,
                      device="cpu", gt_path=splits["castella_val_jsonl"])
    predict_split(checkpoint, splits["castella_val"], tmp_path / "again.jsonl", batch_size=4,
                  device="cpu")
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "again.jsonl").read_text()

    # batch composition (padding) changes scores by float rounding only
    predict_split(checkpoint, splits["castella_val"], tmp_path / "b.jsonl", batch_size=2,
                  device="cpu")
    for ra, rb in zip(read_jsonl(tmp_path / "a.jsonl"), read_jsonl(tmp_path / "b.jsonl")):
        wa, wb = np.array(ra["pred_relevant_windows"]), np.array(rb["pred_relevant_windows"])
        assert ra["qid"] == rb["qid"] and wa.shape == wb.shape
        np.testing.assert_allclose(wa[:, 2], wb[:, 2], atol=1e-5)
    assert set(a["metrics"]) >= {"R1@0.5", "R1@0.7", "mAP", "mAP@0.5", "mAP@0.75"}
    assert a["queries_per_s"] > 0


def test_predictions_feed_fusion(splits, checkpoint, tmp_path):
    from amr.config.schema import SaliencyProposalsConfig
    from amr.engine.fuse import fuse_files
    from amr.engine.predict import predict_split

    pred = tmp_path / "m.jsonl"
    predict_split(checkpoint, splits["evaluation"], pred, device="cpu")
    fused = fuse_files([pred, pred], tmp_path / "f.jsonl", SaliencyProposalsConfig())
    assert len(fused) == len(read_jsonl(pred))
    assert all(1 <= len(r["pred_relevant_windows"]) <= 10 for r in fused)


def test_bad_checkpoint_is_a_clear_error(splits, tmp_path, capsys):
    missing = tmp_path / "none.pt"
    assert run_cli(["--checkpoint", str(missing), "--data", str(splits["evaluation"]),
                    "--out", str(tmp_path / "p.jsonl")]) == 2
    assert f"{missing}: checkpoint not found" in capsys.readouterr().err

    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    assert run_cli(["--checkpoint", str(foreign), "--data", str(splits["evaluation"]),
                    "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "system_config" in capsys.readouterr().err
