"""The demo dataset: official layout, determinism, planted faults, and that it can be learned.

Learnability is shown with a non-learned oracle that knows the hidden words-to-audio mapping
(re-derived here from the seed through the module's private function): it must score far above
random windows with the official metric, and far above itself fed the wrong query's text.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from amr.cli import main as amr_main
from amr.data.demo import DemoSizes, _query_signature, make_demo_dataset, synthesise_features
from amr.evaluation.metrics import evaluate_predictions

SEED = 7
SIZES = DemoSizes(
    clotho_train_queries=24, clotho_val_queries=8, castella_train_queries=30,
    castella_val_queries=12, castella_test_queries=120, evaluation_queries=15,
    castella_max_duration=200, end_overruns_per_split=2, frame_mismatches_per_split=3,
)
SPLIT_FILES = {
    "clotho_moment/train": "clotho_moment/train.jsonl",
    "clotho_moment/val": "clotho_moment/val.jsonl",
    "castella/train": "castella/train.jsonl",
    "castella/val": "castella/val.jsonl",
    "castella/test": "castella/test.jsonl",
    "evaluation": "evaluation/queries.jsonl",
}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _audio(root: Path, dataset: str, vid: str) -> np.ndarray:
    with np.load(root / dataset / "audio" / f"{vid}.npz") as npz:
        assert npz.files == ["features"]
        return npz["features"]


def _text(root: Path, dataset: str, qid: str) -> np.ndarray:
    with np.load(root / dataset / "text" / f"qid{qid}.npz") as npz:
        assert npz.files == ["last_hidden_state"]
        return npz["last_hidden_state"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("demo") / "out"
    return root, make_demo_dataset(root, seed=SEED, sizes=SIZES)


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------
def test_layout_keys_dtypes_and_shapes(demo):
    root, manifest = demo
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert manifest["seed"] == SEED and manifest["sizes"]["castella_test_queries"] == 120
    all_vids: dict[str, str] = {}
    for split, rel in SPLIT_FILES.items():
        dataset = split.split("/")[0]
        records = _read_jsonl(root / rel)
        assert manifest["splits"][split]["annotations"] == rel
        assert manifest["splits"][split]["queries"] == len(records)
        assert len({r["qid"] for r in records}) == len(records)
        mismatched = set(manifest["faults"].get(split, {})
                         .get("recording_length_differs_from_duration", {}).get("ids", []))
        for r in records:
            assert isinstance(r["duration"], int) and isinstance(r["qid"], str)
            audio = _audio(root, dataset, r["vid"])
            assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[1] == 768
            expected_diff = {-1, 1} if r["vid"] in mismatched else {0}
            assert audio.shape[0] - r["duration"] in expected_diff
            text = _text(root, dataset, r["qid"])
            assert text.dtype == np.float32 and text.shape[1] == 768
            assert text.shape[0] == len(re.findall(r"[a-z0-9]+", r["query"].lower())) + 2
            assert np.isfinite(audio).all() and np.isfinite(text).all()
            # a vid belongs to one recording: same duration wherever it is used
            assert all_vids.setdefault(r["vid"], f"{dataset}:{r['duration']}") == \
                f"{dataset}:{r['duration']}"
    for dataset in ("clotho_moment", "castella", "evaluation"):  # no stray feature files
        vids = {v for v, d in all_vids.items() if d.startswith(dataset + ":")}
        assert {p.stem for p in (root / dataset / "audio").glob("*.npz")} == vids


def test_clotho_like_splits(demo):
    root, _ = demo
    for split in ("train", "val"):
        records = _read_jsonl(root / f"clotho_moment/{split}.jsonl")
        assert len(records) == getattr(SIZES, f"clotho_{split}_queries")
        assert len({r["vid"] for r in records}) == len(records)  # one query per recording
        for r in records:
            assert r["qid"].isdigit() and r["duration"] == 60
            assert re.fullmatch(r"[A-Za-z]+_\d+\.0_\d+\.0", r["vid"])
            [[start, end]] = r["relevant_windows"]
            assert 0 <= start < end <= 60 and isinstance(r["fg_dB"], float)


def test_castella_like_splits(demo):
    root, _ = demo
    lengths = []
    for split in ("train", "val", "test"):
        records = _read_jsonl(root / f"castella/{split}.jsonl")
        assert len(records) == getattr(SIZES, f"castella_{split}_queries")
        per_vid: dict[str, list[dict]] = {}
        for r in records:
            per_vid.setdefault(r["vid"], []).append(r)
            assert SIZES.castella_min_duration <= r["duration"] <= SIZES.castella_max_duration
            assert r["relevant_windows"] and all(
                isinstance(x, int) for w in r["relevant_windows"] for x in w)
            lengths += [e - s for s, e in r["relevant_windows"] if e - s <= 1500]
        for vid, rs in per_vid.items():
            assert re.fullmatch(r"[A-Za-z0-9_-]{11}", vid)
            assert 1 <= len(rs) <= 5
            assert [r["qid"] for r in rs] == [f"{vid}_{k}" for k in range(1, len(rs) + 1)]
            assert len({r["query"] for r in rs}) == len(rs)  # several distinct events
        assert any(len(rs) > 1 for rs in per_vid.values())
        assert any(len(r["relevant_windows"]) > 1 for r in records)
    assert min(lengths) >= 1 and min(lengths) <= 3 and max(lengths) >= 30  # short and long


def test_evaluation_list_is_blind(demo):
    root, _ = demo
    records = _read_jsonl(root / "evaluation/queries.jsonl")
    assert len(records) == SIZES.evaluation_queries
    for i, r in enumerate(records, start=1):
        assert list(r) == ["qid", "query", "duration", "vid"]
        assert r["qid"] == f"dcase2026_evaluation_q{i:03d}"
        assert re.fullmatch(r"dcase2026_evaluation_audio_\d{3}", r["vid"])
    assert not any("relevant_windows" in line for line in
                   (root / "evaluation/queries.jsonl").read_text().splitlines())


# ---------------------------------------------------------------------------------------------
# Planted faults
# ---------------------------------------------------------------------------------------------
def test_planted_faults_are_present_and_counted(demo):
    root, manifest = demo
    for split in ("castella/train", "castella/val", "castella/test", "evaluation"):
        records = _read_jsonl(root / SPLIT_FILES[split])
        dataset = split.split("/")[0]
        faults = manifest["faults"][split]
        vids = {r["vid"]: r["duration"] for r in records}
        mismatched = [v for v, d in vids.items() if _audio(root, dataset, v).shape[0] != d]
        assert sorted(mismatched) == sorted(faults["recording_length_differs_from_duration"]["ids"])
        assert len(mismatched) == faults["recording_length_differs_from_duration"]["count"] == 3
        if split == "evaluation":
            assert set(faults) == {"recording_length_differs_from_duration"}
            continue
        windows = [(r["qid"], s, e, r["duration"]) for r in records for s, e in r["relevant_windows"]]
        bogus = [w for w in windows if w[2] - w[1] > 1500]
        overruns = [w for w in windows if w[2] > w[3]]
        assert [w[0] for w in bogus] == faults["window_longer_than_max_gt_length"]["ids"]
        assert sorted(w[0] for w in overruns) == sorted(faults["window_end_past_duration"]["ids"])
        assert len(overruns) == faults["window_end_past_duration"]["count"]
        small = [w for w in overruns if w not in bogus]
        assert len(small) == SIZES.end_overruns_per_split
        assert all(1 <= e - d <= 2 for _, _, e, d in small)
        if split == "castella/train":
            [(_, start, end, duration)] = bogus
            assert (start, end) == (duration, 4800)  # like the real [299, 4800]
        else:
            assert bogus == []


def test_packs_like_real_data_with_the_same_fault_counts(demo, tmp_path):
    from amr.config.schema import DataConfig
    from amr.data.pack import pack_split

    root, manifest = demo
    report = pack_split(root / "castella/train.jsonl", root / "castella/audio",
                        root / "castella/text", tmp_path / "train.h5", DataConfig())
    assert report["manifest"]["counts"]["queries"] == SIZES.castella_train_queries
    for kind, planted in manifest["faults"]["castella/train"].items():
        assert report["fault_counts"][kind] == planted["count"], kind


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------
def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    small = DemoSizes(clotho_train_queries=6, clotho_val_queries=3, castella_train_queries=8,
                      castella_val_queries=4, castella_test_queries=4, evaluation_queries=4,
                      castella_max_duration=90)
    make_demo_dataset(tmp_path / "a", 3, small)
    make_demo_dataset(tmp_path / "b", 3, small)
    first = _all_files(tmp_path / "a")
    second = _all_files(tmp_path / "b")
    assert first.keys() == second.keys() and first == second  # JSONL and npz, byte for byte
    npz = [k for k in first if k.endswith(".npz")]
    assert len(npz) > 40

    make_demo_dataset(tmp_path / "c", 4, small)
    other = _all_files(tmp_path / "c")
    for rel in SPLIT_FILES.values():
        assert other[rel] != first[rel]
    a = _audio(tmp_path / "a", "evaluation", "dcase2026_evaluation_audio_001")
    c = _audio(tmp_path / "c", "evaluation", "dcase2026_evaluation_audio_001")
    assert a.shape != c.shape or not np.allclose(a, c)

    # a rerun into the same OUT replaces the previous demo dataset
    make_demo_dataset(tmp_path / "a", 3, small)
    assert _all_files(tmp_path / "a") == first


def test_refuses_foreign_directory_and_bad_arguments(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        make_demo_dataset(tmp_path, 0, DemoSizes(castella_train_queries=1))
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="seed"):
        make_demo_dataset(tmp_path / "x", -1)
    with pytest.raises(ValueError, match="castella_min_duration"):
        make_demo_dataset(tmp_path / "x", 0, DemoSizes(castella_min_duration=400))


# ---------------------------------------------------------------------------------------------
# Learnability
# ---------------------------------------------------------------------------------------------
def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _oracle_windows(frames: np.ndarray, signature: np.ndarray) -> list[list[float]]:
    """Frames whose direction matches the signature, as runs ranked by total match."""
    unit = frames / (np.linalg.norm(frames, axis=1, keepdims=True) + 1e-5)
    match = unit @ signature
    runs = _runs(match > max(0.5 * match.max(), 0.15))
    ranked = sorted(([float(s), float(e), float(match[s:e].sum())] for s, e in runs),
                    key=lambda w: -w[2])
    return ranked[:10] or [[0.0, float(len(match)), 0.0]]


def _oracle_predictions(root: Path, dataset: str, records: list[dict], text_of) -> list[dict]:
    return [{"qid": r["qid"], "pred_relevant_windows": _oracle_windows(
        _audio(root, dataset, r["vid"]), _query_signature(SEED, text_of(r)))} for r in records]


def test_oracle_with_hidden_mapping_beats_random_and_needs_the_text(demo):
    root, _ = demo
    records = _read_jsonl(root / "castella/test.jsonl")
    oracle = evaluate_predictions(_oracle_predictions(root, "castella", records,
                                                      lambda r: r["query"]), records)

    rng = np.random.default_rng(0)
    random_preds = []
    for r in records:
        centre, width = rng.uniform(0, r["duration"]), rng.uniform(1, r["duration"] / 2)
        random_preds.append({"qid": r["qid"], "pred_relevant_windows": [
            [max(0.0, centre - width / 2), min(r["duration"], centre + width / 2), 1.0]]})
    random = evaluate_predictions(random_preds, records)

    # the same oracle reading another query of the recording (or of the split) instead
    by_vid: dict[str, list[str]] = {}
    for r in records:
        by_vid.setdefault(r["vid"], []).append(r["query"])

    def wrong_text(r):
        others = [q for q in by_vid[r["vid"]] if q != r["query"]]
        return others[0] if others else records[(records.index(r) + 7) % len(records)]["query"]

    wrong = evaluate_predictions(_oracle_predictions(root, "castella", records, wrong_text), records)
    assert oracle["R1@0.5"] > 80 and oracle["R1@0.7"] > 70 and oracle["mAP"] > 60, oracle
    assert random["R1@0.5"] < 15, random
    assert wrong["R1@0.5"] < 20, wrong


def test_clotho_like_split_is_learnable(demo):
    root, _ = demo
    records = _read_jsonl(root / "clotho_moment/train.jsonl")
    scores = evaluate_predictions(_oracle_predictions(root, "clotho_moment", records,
                                                      lambda r: r["query"]), records)
    assert scores["R1@0.5"] > 80, scores


# ---------------------------------------------------------------------------------------------
# Features for a given annotation file
# ---------------------------------------------------------------------------------------------
ANNOTATIONS = [
    {"qid": "vidA_1", "query": "A man speaks while a dog barks", "duration": 120, "vid": "vidA",
     "relevant_windows": [[10, 25], [60, 64], [115, 122]]},
    {"qid": "vidA_2", "query": "Zorblax whirrs", "duration": 120, "vid": "vidA",  # unknown words
     "relevant_windows": [[30, 40], [119, 4800]]},
    {"qid": "vidB_1", "query": "Rain falls on a tin roof", "duration": 75, "vid": "vidB",
     "relevant_windows": [[0, 75]]},
    {"qid": "blind_1", "query": "Glass shatters", "duration": 90, "vid": "vidC"},
]


def test_synthesise_features_for_given_annotations(tmp_path):
    path = tmp_path / "ann.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ANNOTATIONS))
    summary = synthesise_features(path, tmp_path / "audio", tmp_path / "text", seed=SEED)
    assert summary["audio_files"] == 3 and summary["text_files"] == 4
    assert summary["skipped_windows"] == 1 and summary["hidden_windows"] == 1
    assert sorted(p.name for p in (tmp_path / "audio").iterdir()) == \
        ["vidA.npz", "vidB.npz", "vidC.npz"]
    assert sorted(p.name for p in (tmp_path / "text").iterdir()) == \
        ["qidblind_1.npz", "qidvidA_1.npz", "qidvidA_2.npz", "qidvidB_1.npz"]
    for r in ANNOTATIONS:
        frames = np.load(tmp_path / "audio" / f"{r['vid']}.npz")["features"]
        assert frames.dtype == np.float32 and frames.shape == (r["duration"], 768)
        text = np.load(tmp_path / "text" / f"qid{r['qid']}.npz")["last_hidden_state"]
        assert text.dtype == np.float32 and text.shape[1] == 768
        if "relevant_windows" not in r:
            continue
        # grounded: the query's signature sounds inside its (valid, clipped) windows only
        unit = frames / np.linalg.norm(frames, axis=1, keepdims=True)
        match = unit @ _query_signature(SEED, r["query"])
        inside = np.zeros(len(match), bool)
        for s, e in r["relevant_windows"]:
            if e - s <= 1500:
                inside[s:min(e, len(match))] = True
        assert match[inside].mean() > 0.3
        if (~inside).any():
            assert match[~inside].mean() < 0.1


def test_cli_writes_demo_dataset_and_annotated_features(tmp_path, capsys):
    args = ["demo-data", str(tmp_path / "demo"), "--seed", "1", "--clotho-train-queries", "3",
            "--clotho-val-queries", "2", "--castella-train-queries", "4", "--castella-val-queries",
            "2", "--castella-test-queries", "2", "--evaluation-queries", "2",
            "--castella-max-duration", "80"]
    assert amr_main(args) == 0
    manifest = json.loads((tmp_path / "demo/manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["splits"]["castella/train"]["queries"] == 4
    assert "castella/train:window_longer_than_max_gt_length=1" in capsys.readouterr().out

    path = tmp_path / "ann.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ANNOTATIONS))
    assert amr_main(["demo-data", str(tmp_path / "feat"), "--annotations", str(path)]) == 0
    assert len(list((tmp_path / "feat/audio").glob("*.npz"))) == 3
    assert len(list((tmp_path / "feat/text").glob("qid*.npz"))) == 4

    path.write_text('{"qid": "x", "query": "q"}\n')
    assert amr_main(["demo-data", str(tmp_path / "bad"), "--annotations", str(path)]) == 2
    assert f"{path}:1" in capsys.readouterr().err
