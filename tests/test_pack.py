import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from amr.config.schema import DataConfig
from amr.data.annotations import DataError
from amr.data.pack import pack_split, report_path

FIXTURES = Path(__file__).parent / "fixtures"
DIM = 16
CFG = DataConfig(feature_dim=DIM, text_dim=DIM, max_audio_frames=25, max_text_tokens=32)


def write_split(root: Path, records: list[dict], frames: dict[str, int], tokens: int = 6):
    """Annotation JSONL + random npz features (frames[vid] rows per recording) under root."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "text").mkdir(exist_ok=True)
    (root / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for vid, n in frames.items():
        np.savez(root / "audio" / f"{vid}.npz",
                 features=rng.standard_normal((n, DIM)).astype(np.float32))
    for r in records:
        n = r.get("_tokens", tokens)
        np.savez(root / "text" / f"qid{r['qid']}.npz",
                 last_hidden_state=rng.standard_normal((n, DIM)).astype(np.float32))
    return root / "ann.jsonl", root / "audio", root / "text"


def q(qid, vid, duration, windows, **extra):
    return {"qid": qid, "query": f"sound {qid}", "duration": duration, "vid": vid,
            "relevant_windows": windows, **extra}


HAND_BUILT = [
    q("a_1", "a", 20, [[2, 5], [10, 12]]),
    q("a_2", "a", 20, [[15, 22]]),  # end past duration and past the 20 frames: clipped
    q("b_1", "b", 31, [[0, 1600], [3, 6], [20, 29]], _tokens=40),  # too long; past truncation
    q("b_2", "b", 31, [[8, 8], [9, 7]]),  # start >= end twice: no valid window left
    q("c_1", "c", 10, [[1, 2], [-1, 3], [12, 13]]),  # T = 12 != 10; start < 0
]
HAND_FRAMES = {"a": 20, "b": 30, "c": 12}


@pytest.fixture
def packed(tmp_path):
    ann, audio, text = write_split(tmp_path / "in", HAND_BUILT, HAND_FRAMES)
    out = tmp_path / "out" / "toy_train.h5"
    report = pack_split(ann, audio, text, out, CFG)
    return out, report, (ann, audio, text)


def test_every_fault_counted_and_listed(packed):
    out, report, _ = packed
    assert report_path(out) == out.with_name("toy_train.report.json")
    assert json.loads(report_path(out).read_text()) == json.loads(json.dumps(report))
    counts, faults = report["fault_counts"], report["faults"]
    assert counts == {
        "window_start_not_before_end": 2,
        "window_longer_than_max_gt_length": 1,
        "window_end_past_duration": 3,  # a_2 [15, 22], b_1 [0, 1600], c_1 [12, 13]
        "window_start_before_zero": 1,
        "window_end_past_features": 2,  # a_2 clipped to 20, b_1 [20, 29] to the 25 kept frames
        "window_start_past_features": 1,  # c_1 [12, 13] starts at the last frame's end
        "query_without_valid_window": 1,
        "recording_length_differs_from_duration": 2,
        "recording_length_mismatch": 0,  # c (+2 s) is within the 2-s tolerance
        "recording_truncated": 1,
        "query_text_truncated": 1,
        "recording_skipped": 0,
        "query_skipped": 0,
    }
    assert faults["window_longer_than_max_gt_length"] == [{"qid": "b_1", "window": [0, 1600]}]
    assert faults["query_without_valid_window"] == ["b_2"]
    assert report["recording_length_minus_duration_s"] == {"+2": 1, "-1": 1}
    assert report["manifest"]["counts"] == {
        "queries": 5, "trainable_queries": 4, "recordings": 3,
        "frames": 20 + 25 + 12, "text_tokens": 4 * 6 + 32, "windows": 2 + 1 + 2 + 0 + 2,
    }


def test_hdf5_holds_cleaned_windows_and_truncated_features(packed):
    out, _, (ann, audio, text) = packed
    with h5py.File(out, "r") as h5:
        manifest = json.loads(h5.attrs["manifest"])
        assert manifest["dims"] == {"audio": DIM, "text": DIM}
        assert [s.decode() for s in h5["query/qid"][:]] == ["a_1", "a_2", "b_1", "b_2", "c_1"]
        wo = h5["query/window_offsets"][:]
        windows = h5["query/windows"][:]
        per_query = [windows[wo[i]: wo[i + 1]].tolist() for i in range(5)]
        assert per_query == [
            [[2, 5], [10, 12]], [[15, 20]], [[3, 6], [20, 25]], [], [[1, 2], [0, 3]]
        ]
        assert h5["query/trainable"][:].tolist() == [True, True, True, False, True]
        assert h5["query/has_gt"][:].all()
        ao = h5["audio/offsets"][:]
        b = h5["query/recording"][2]
        source = np.load(audio / "b.npz")["features"]
        np.testing.assert_array_equal(h5["audio/features"][ao[b]: ao[b + 1]], source[:25])
        to = h5["text/offsets"][:]
        assert to[3] - to[2] == 32


def test_real_castella_slice_reproduces_spec_faults(tmp_path):
    """Real lines, demo-style features (T == duration): SPEC's fault counts, by hand-check."""
    ann = FIXTURES / "castella_train_slice.jsonl"
    records = [json.loads(line) for line in ann.read_text().splitlines()]
    frames = {r["vid"]: int(r["duration"]) for r in records}
    ann, audio, text = write_split(tmp_path, records, frames)
    cfg = DataConfig(feature_dim=DIM, text_dim=DIM)
    report = pack_split(ann, audio, text, tmp_path / "slice.h5", cfg)
    counts = report["fault_counts"]
    ends_past = sum(e > r["duration"] for r in records for _, e in r["relevant_windows"])
    assert counts["window_end_past_duration"] == ends_past == 9
    assert report["faults"]["window_longer_than_max_gt_length"] == [
        {"qid": "67AE9ZKvECs_1", "window": [299.0, 4800.0]}
    ]
    assert report["faults"]["window_start_past_features"] == [
        {"qid": "3d3ICRqm6p4_3", "window": [299.0, 300.0]},
        {"qid": "5XEmMTFXTic_1", "window": [126.0, 127.0]},
    ]
    assert report["faults"]["query_without_valid_window"] == ["3d3ICRqm6p4_3"]
    assert counts["recording_length_differs_from_duration"] == 0
    assert report["manifest"]["counts"]["queries"] == 12  # nothing dropped


def _break(path: Path, how: str):
    key = "features" if path.parent.name == "audio" else "last_hidden_state"
    if how == "missing":
        path.unlink()
    elif how == "nan":
        array = np.load(path)[key]
        array[1, 2] = np.nan
        np.savez(path, **{key: array})
    elif how == "wrong_dim":
        np.savez(path, **{key: np.zeros((5, DIM + 1), np.float32)})
    elif how == "empty":
        np.savez(path, **{key: np.zeros((0, DIM), np.float32)})
    elif how == "wrong_key":
        np.savez(path, other=np.zeros((5, DIM), np.float32))
    elif how == "not_npz":
        path.write_bytes(b"garbage")


@pytest.mark.parametrize("how", ["missing", "nan", "wrong_dim", "empty", "wrong_key", "not_npz"])
@pytest.mark.parametrize("which", ["audio/b.npz", "text/qidc_1.npz"])
def test_broken_feature_file_strict_and_lenient(tmp_path, how, which):
    ann, audio, text = write_split(tmp_path / "in", HAND_BUILT, HAND_FRAMES)
    broken = tmp_path / "in" / which
    _break(broken, how)
    out = tmp_path / "split.h5"
    with pytest.raises(DataError, match=re.escape(str(broken))):
        pack_split(ann, audio, text, out, CFG)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch

    report = pack_split(ann, audio, text, out, DataConfig(**{**CFG.__dict__, "strict": False}))
    counts = report["fault_counts"]
    if which.startswith("audio"):
        (skipped,) = report["faults"]["recording_skipped"]
        assert skipped["vid"] == "b" and skipped["qids"] == ["b_1", "b_2"]
        assert skipped["file"] == str(broken)
        assert report["manifest"]["counts"]["queries"] == 3
        assert report["manifest"]["counts"]["recordings"] == 2
    else:
        assert [s["qid"] for s in report["faults"]["query_skipped"]] == ["c_1"]
        assert counts["recording_skipped"] == 0
        assert report["manifest"]["counts"]["queries"] == 4
    with h5py.File(out, "r") as h5:
        assert len(h5["query/qid"]) == report["manifest"]["counts"]["queries"]


def test_checksum_follows_inputs(tmp_path):
    ann, audio, text = write_split(tmp_path / "in", HAND_BUILT, HAND_FRAMES)

    def checksum():
        return pack_split(ann, audio, text, tmp_path / "s.h5", CFG)["manifest"]["checksum_sha256"]

    first = checksum()
    assert checksum() == first
    features = np.load(audio / "a.npz")["features"]
    features[0, 0] += 1.0
    np.savez(audio / "a.npz", features=features)
    second = checksum()
    assert second != first
    ann.write_text(ann.read_text().replace("sound a_1", "a louder sound"))
    assert checksum() not in (first, second)


def _cli(argv):
    from amr.cli import main as amr_main

    return amr_main(["pack", *argv])


def test_pack_command(tmp_path, capsys):
    ann, audio, text = write_split(tmp_path / "in", HAND_BUILT, HAND_FRAMES)
    out = tmp_path / "castella_train.h5"
    common = [str(ann), "--audio-dir", str(audio), "--text-dir", str(text), "--out", str(out),
              "--feature-dim", str(DIM), "--text-dim", str(DIM), "--max-audio-frames", "25"]
    assert _cli(common) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and line.startswith("castella_train: packed 5/5 queries (4 trainable)")
    assert "window_longer_than_max_gt_length=1" in line
    assert (tmp_path / "castella_train.report.json").is_file()

    (text / "qida_2.npz").unlink()
    assert _cli(common) == 2
    assert "qida_2.npz: feature file not found" in capsys.readouterr().err
    assert _cli(common + ["--no-strict"]) == 0
    assert "query_skipped=1" in capsys.readouterr().out


@pytest.mark.parametrize("frames", [5, 4 * 299])
def test_frame_count_far_from_the_duration_fails_strict(tmp_path, frames):
    records = [q("x_1", "x", 299, [[1, 2]]), q("y_1", "y", 60, [[1, 2]])]
    cfg = DataConfig(feature_dim=DIM, text_dim=DIM, max_audio_frames=2000)
    ann, audio, text = write_split(tmp_path / "in", records, {"x": frames, "y": 62})
    with pytest.raises(DataError, match=rf"x\.npz: {frames} frames .* 299 s"):
        pack_split(ann, audio, text, tmp_path / "strict.h5", cfg)
    assert not (tmp_path / "strict.h5").exists()
    lenient = DataConfig(feature_dim=DIM, text_dim=DIM, max_audio_frames=2000, strict=False)
    report = pack_split(ann, audio, text, tmp_path / "lenient.h5", lenient)
    assert [f["vid"] for f in report["faults"]["recording_length_mismatch"]] == ["x"]
    assert [f["qids"] for f in report["faults"]["recording_skipped"]] == [["x_1"]]
    assert report["manifest"]["counts"]["recordings"] == 1  # y (+2 s) is within the tolerance


def test_files_saved_with_a_utf8_byte_order_mark_pack_and_score(tmp_path):
    """Excel and Windows editors start UTF-8 files with a byte-order mark: annotation and
    prediction files that have one are read as if they had none."""
    from amr.evaluation.metrics import evaluate_predictions, load_jsonl
    from amr.evaluation.prediction_files import read_predictions

    ann, audio, text = write_split(tmp_path, HAND_BUILT, HAND_FRAMES)
    plain = pack_split(ann, audio, text, tmp_path / "plain.h5", CFG)
    ann.write_bytes(b"\xef\xbb\xbf" + ann.read_bytes())
    with_mark = pack_split(ann, audio, text, tmp_path / "bom.h5", CFG)
    assert with_mark["manifest"]["counts"] == plain["manifest"]["counts"]
    assert with_mark["fault_counts"] == plain["fault_counts"]

    predictions = tmp_path / "preds.jsonl"
    lines = [json.dumps({"qid": r["qid"], "pred_relevant_windows": [[2.0, 5.0, 0.9]]}) for r in HAND_BUILT]
    predictions.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    scored = evaluate_predictions(read_predictions(predictions), load_jsonl(ann))
    assert scored["R1@0.5"] > 0  # a_1 [2, 5] is found
