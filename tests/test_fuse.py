"""Slot-4 fusion: saliency-as-proposals and score-level pooling (report §3.6)."""
import json
import math

import numpy as np
import pytest

from amr.config.schema import SaliencyProposalsConfig
from amr.engine.fuse import FusionError, fuse_files, fuse_predictions
from amr.evaluation.prediction_files import saliency_path
from amr.model.saliency import rescaled_saliency, saliency_proposals


def logit(p):
    return math.log(p / (1 - p))


def logits_for_rho(rho):
    """Logits whose sigmoid is proportional to ``rho`` (max sigmoid 0.8)."""
    return np.array([logit(0.8 * r) for r in rho], dtype=np.float32)


def record(qid, windows, duration=60):
    return {"qid": qid, "query": f"q {qid}", "vid": "v", "duration": duration,
            "pred_relevant_windows": windows}


def test_rescaled_saliency_max_is_one_and_survives_underflow():
    rho = rescaled_saliency(np.array([-2000.0, -1990.0, -2010.0]))
    assert rho.max() == 1.0
    assert np.all(np.isfinite(rho)) and rho[0] > 0 and rho[1] == 1.0
    np.testing.assert_allclose(rescaled_saliency(logits_for_rho([0.25, 1.0, 0.5])), [0.25, 1.0, 0.5],
                               rtol=1e-6)


def test_runs_at_both_edges_and_single_frame_run():
    # frames:       0    1    2    3    4    5    6
    rho = [1.0, 0.6, 0.1, 0.5, 0.2, 0.7, 0.9]
    props = saliency_proposals(logits_for_rho(rho), threshold=0.5, top_k=10, clip_length=1.0)
    # runs: [0,2) mean .8 ; [3,4) .5 (single frame, == threshold counts) ; [5,7) mean .8
    assert [p[:2] for p in props] == [[0.0, 2.0], [5.0, 7.0], [3.0, 4.0]]
    np.testing.assert_allclose([p[2] for p in props], [0.8, 0.8, 0.5], rtol=1e-5)


def test_clip_length_scales_seconds():
    props = saliency_proposals(logits_for_rho([0.1, 1.0, 1.0, 0.1]), clip_length=2.0)
    assert props == [[2.0, 6.0, pytest.approx(1.0)]]


def test_ties_keep_time_order_and_top_k_cuts():
    rho = [1.0, 0.1, 1.0, 0.1, 1.0, 0.1, 0.7]
    props = saliency_proposals(logits_for_rho(rho), threshold=0.5, top_k=2)
    assert [p[:2] for p in props] == [[0.0, 1.0], [2.0, 3.0]]
    assert saliency_proposals(logits_for_rho(rho), top_k=0) == []


def test_all_below_threshold_gives_no_proposals():
    assert saliency_proposals(logits_for_rho([0.3, 1.0, 0.2]), threshold=1.01) == []
    assert saliency_proposals(np.zeros(0, dtype=np.float32)) == []


def test_two_members_pooled_without_averaging_and_stable_on_ties():
    a = [record("x", [[0, 10, 0.9], [20, 30, 0.5]])]
    b = [record("x", [[2, 12, 0.8], [40, 50, 0.5], [5, 6, 0.95]])]
    fused = fuse_predictions([a, b], None, None, keep=10)
    windows = fused[0]["pred_relevant_windows"]
    # every window is one of the inputs (no averaged spans), sorted by score, ties in pool order
    assert windows == [[5, 6, 0.95], [0, 10, 0.9], [2, 12, 0.8], [20, 30, 0.5], [40, 50, 0.5]]
    assert fused[0]["query"] == "q x" and fused[0]["duration"] == 60


def test_keep_limits_and_saliency_proposals_merged_after_decoder_on_ties():
    a = [record("x", [[0, 10, 0.9], [20, 30, 0.4]])]
    sal = {"x": logits_for_rho([0.1] * 5 + [1.0, 1.0] + [0.1] * 3)}  # one run [5, 7), score 1.0
    cfg = SaliencyProposalsConfig(threshold=0.5, top_k=10)
    fused = fuse_predictions([a], [sal], cfg, keep=2)
    assert fused[0]["pred_relevant_windows"] == [[5.0, 7.0, pytest.approx(1.0)], [0, 10, 0.9]]

    tie = [record("x", [[0, 10, 1.0]])]
    fused = fuse_predictions([tie], [sal], cfg, keep=10)
    assert fused[0]["pred_relevant_windows"][0] == [0, 10, 1.0]  # decoder first on equal score


def test_mismatched_members_and_missing_saliency_are_errors():
    a = [record("x", [[0, 1, 0.5]])]
    b = [record("y", [[0, 1, 0.5]])]
    with pytest.raises(FusionError, match="differ"):
        fuse_predictions([a, b], None, None)
    with pytest.raises(FusionError, match="saliency"):
        fuse_predictions([a], [{}], SaliencyProposalsConfig())
    with pytest.raises(FusionError, match="start, end, score"):
        fuse_predictions([[record("x", [[0, 1]])]], None, None)


def main(argv):
    from amr.cli import main as amr_main

    return amr_main(["fuse", *argv])


def test_files_roundtrip_and_cli(tmp_path):
    p1, p2 = tmp_path / "m1.jsonl", tmp_path / "m2.jsonl"
    p1.write_text(json.dumps(record("q1", [[0, 4, 0.3]])) + "\n"
                  + json.dumps(record("q2", [[1, 2, 0.2]])) + "\n")
    p2.write_text(json.dumps(record("q2", [[3, 9, 0.6]])) + "\n"
                  + json.dumps(record("q1", [[8, 9, 0.1]])) + "\n")
    for p in (p1, p2):
        np.savez(saliency_path(p), q1=logits_for_rho([1.0, 0.2, 0.2]), q2=logits_for_rho([0.2, 0.2, 1.0]))
    assert saliency_path(p1).name == "m1.saliency.npz"

    fused = fuse_files([p1, p2], tmp_path / "f.jsonl", SaliencyProposalsConfig(top_k=1))
    assert [r["qid"] for r in fused] == ["q1", "q2"]  # first member's order
    assert fused[0]["pred_relevant_windows"][0][:2] == [0.0, 1.0]  # saliency run, rho 1.0

    out = tmp_path / "cli.jsonl"
    rc = main(["--member", str(p1), "--member", str(p2), "--no-saliency", "--keep", "1",
               "--out", str(out)])
    assert rc == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["pred_relevant_windows"] for r in lines] == [[[0, 4, 0.3]], [[3, 9, 0.6]]]

    rc = main(["--member", str(tmp_path / "absent.jsonl"), "--out", str(out)])
    assert rc == 2


@pytest.mark.parametrize("broken, content", [
    ("m.jsonl", None), ("m.jsonl", b"[1, 2]\n"), ("m.saliency.npz", None),
    ("m.saliency.npz", b"garbage"),
])
def test_cli_names_a_missing_or_bad_member_file(tmp_path, capsys, broken, content):
    member = tmp_path / "m.jsonl"
    member.write_text(json.dumps(record("q1", [[0, 4, 0.3]])) + "\n")
    np.savez(saliency_path(member), q1=logits_for_rho([1.0, 0.2]))
    path = tmp_path / broken
    path.unlink()
    if content is not None:
        path.write_bytes(content)
    assert main(["--member", str(member), "--out", str(tmp_path / "f.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and err.count("\n") == 1
    assert not (tmp_path / "f.jsonl").exists()
