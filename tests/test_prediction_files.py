"""Predictions JSONL + saliency npz: the files `amr predict` writes and `amr fuse` reads."""
import numpy as np
import pytest

from amr.evaluation.prediction_files import (
    PredictionFileError,
    read_predictions,
    read_saliency,
    saliency_path,
    write_predictions,
    write_saliency,
)


def test_saliency_path_sits_next_to_the_predictions(tmp_path):
    assert saliency_path(tmp_path / "m.jsonl") == tmp_path / "m.saliency.npz"
    assert saliency_path(tmp_path / "m") == tmp_path / "m.saliency.npz"


def test_roundtrip(tmp_path):
    records = [{"qid": "q1", "pred_relevant_windows": [[0, 1, 0.5]]}, {"qid": 2}]
    write_predictions(tmp_path / "p.jsonl", records)
    assert read_predictions(tmp_path / "p.jsonl") == records

    path = saliency_path(tmp_path / "p.jsonl")
    write_saliency(path, {"q1": np.array([0.25, -1.0]), "q/2": np.zeros(3, np.float16)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl", "p.saliency.npz"]
    saliency = read_saliency(path)
    assert sorted(saliency) == ["q/2", "q1"]
    assert all(a.dtype == np.float32 for a in saliency.values())
    np.testing.assert_array_equal(saliency["q1"], [0.25, -1.0])


@pytest.mark.parametrize("content, message", [
    (None, "predictions file"), (b"{not json\n", "not valid JSON"), (b'{"a": 1}\n', "'qid'"),
])
def test_bad_predictions_name_the_file(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PredictionFileError, match=message) as info:
        read_predictions(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content, message", [
    (None, "not found"), (b"garbage", "cannot read"), (b"PK\x03\x04broken", "cannot read"),
])
def test_bad_saliency_names_the_file(tmp_path, content, message):
    path = tmp_path / "p.saliency.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PredictionFileError, match=message) as info:
        read_saliency(path)
    assert str(info.value).startswith(f"{path}: ")
