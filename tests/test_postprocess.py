"""Post-processing of detector outputs into prediction records (SPEC §4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from model_batches import small_config, with_switches

from amr.config.schema import InferenceConfig
from amr.model.postprocess import predict_windows


def logits_for(p_fg: list[float]) -> torch.Tensor:
    p = torch.tensor(p_fg)
    return torch.stack([torch.log(p), torch.log(1 - p)], -1)[None]


def one_query(spans, p_fg, length=100, duration=100.0, **extra):
    out = {
        "pred_logits": logits_for(p_fg),
        "pred_spans": torch.tensor([spans], dtype=torch.float32),
        "saliency": torch.arange(length + 5, dtype=torch.float32)[None],
        **extra,
    }
    batch = {
        "qid": ["q1"], "query": ["a dog barks"], "vid": ["v1"],
        "duration": torch.tensor([duration]), "lengths": torch.tensor([length]),
        "audio_mask": torch.arange(length + 5)[None] < length,
    }
    return out, batch


def test_windows_are_seconds_sorted_by_foreground_probability():
    out, batch = one_query([[0.5, 0.2], [0.205, 0.1], [0.9, 0.12]], [0.3, 0.9, 0.6], length=50, duration=50.0)
    records, saliency = predict_windows(out, batch, small_config())
    (record,) = records
    assert record["qid"] == "q1" and record["vid"] == "v1" and record["query"] == "a dog barks"
    assert record["duration"] == 50
    windows = record["pred_relevant_windows"]
    assert [w[:2] for w in windows] == [[8.0, 13.0], [42.0, 48.0], [20.0, 30.0]]  # 7.75-12.75 -> 8-13
    assert [w[2] for w in windows] == pytest.approx([0.9, 0.6, 0.3])
    assert saliency["q1"].dtype == np.float32 and saliency["q1"].shape == (50,)


def test_clamp_to_duration_plus_slack_and_drop_empty_windows():
    # spans past the end, a zero-length one after rounding, one before the start
    out, batch = one_query([[0.99, 0.2], [0.5, 0.001], [0.01, 0.1]], [0.9, 0.8, 0.7], length=100, duration=95.0)
    windows = predict_windows(out, batch, small_config(), InferenceConfig(clamp_slack=2.0))[0][0]["pred_relevant_windows"]
    assert [w[:2] for w in windows] == [[89.0, 97.0], [0.0, 6.0]]


def test_at_least_one_window_and_at_most_max_windows():
    out, batch = one_query([[0.5, 0.001]] * 3, [0.2, 0.7, 0.4])
    windows = predict_windows(out, batch, small_config())[0][0]["pred_relevant_windows"]
    assert len(windows) == 1 and windows[0][1] - windows[0][0] == 1.0
    assert windows[0][2] == pytest.approx(0.7)

    spans = [[0.05 + 0.09 * i, 0.05] for i in range(10)]
    out, batch = one_query(spans, [0.5 + 0.01 * i for i in range(10)])
    records, _ = predict_windows(out, batch, small_config(), InferenceConfig(max_windows=3))
    windows = records[0]["pred_relevant_windows"]
    assert len(windows) == 3 and windows[0][2] == pytest.approx(0.59)


def test_ties_keep_query_order():
    out, batch = one_query([[0.1, 0.1], [0.5, 0.1], [0.8, 0.1]], [0.5, 0.5, 0.5])
    windows = predict_windows(out, batch, small_config())[0][0]["pred_relevant_windows"]
    assert [w[0] for w in windows] == [5.0, 45.0, 75.0]


def test_rerank_blend_and_refined_spans():
    cfg = small_config(rerank=True, cascade=True)
    refined = torch.tensor([[[0.3, 0.2], [0.7, 0.2]]])
    out, batch = one_query([[0.5, 0.2], [0.5, 0.4]], [0.8, 0.6],
                           rerank_scores=torch.tensor([[0.0, 1.0]]), refined_spans=refined)
    windows = predict_windows(out, batch, cfg)[0][0]["pred_relevant_windows"]
    assert [w[:2] for w in windows] == [[20.0, 40.0], [60.0, 80.0]]  # refined spans, α = 1
    windows = predict_windows(out, batch, cfg, InferenceConfig(rerank_alpha=0.5))[0][0]["pred_relevant_windows"]
    assert [w[2] for w in windows] == pytest.approx([0.8, 0.4])  # 0.5·0.6 + 0.5·1 first
    assert windows[0][:2] == [60.0, 80.0]
    cfg = with_switches(cfg, cascade=False)
    windows = predict_windows(out, batch, cfg, InferenceConfig(rerank_alpha=0.5))[0][0]["pred_relevant_windows"]
    assert windows[0][:2] == [30.0, 70.0]
