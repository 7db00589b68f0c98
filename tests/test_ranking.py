"""Ranking diagnostics (amr.evaluation.ranking): they tell a detector whose windows are good but
whose scores do not order them from one that ranks them, and warn when scores collapse."""
import numpy as np
import pytest
import torch

from amr.evaluation.ranking import (
    average_ranks,
    collapse_warning,
    memory_variation,
    ranking_diagnostics,
)

GT = [{"qid": "a", "vid": "v", "duration": 100.0, "relevant_windows": [[10.0, 14.0]]},
      {"qid": "b", "vid": "v", "duration": 100.0, "relevant_windows": [[50.0, 52.0], [80.0, 90.0]]}]
# IoU with the best GT window: 1.0, 0.5, 0.0 for "a"; 1.0, 0.0 for "b"
WINDOWS = {"a": [[10.0, 14.0], [10.0, 12.0], [30.0, 40.0]], "b": [[80.0, 90.0], [0.0, 5.0]]}


def records(scores: dict[str, list[float]]) -> list[dict]:
    return [{"qid": q, "vid": "v", "pred_relevant_windows": [w + [s] for w, s in zip(WINDOWS[q], scores[q])]}
            for q in WINDOWS]


def test_scores_in_iou_order_rank_perfectly_and_reversed_scores_rank_backwards():
    good = ranking_diagnostics(records({"a": [0.9, 0.5, 0.1], "b": [0.8, 0.2]}), GT)
    assert good["rank_spearman"] == 1.0
    assert good["oracle_R1@0.5"] == 100.0
    bad = ranking_diagnostics(records({"a": [0.1, 0.5, 0.9], "b": [0.2, 0.8]}), GT)
    assert bad["rank_spearman"] == -1.0
    assert bad["oracle_R1@0.5"] == 100.0  # the same windows: a perfect re-ranking would find them
    assert bad["score_spread"] == good["score_spread"] > 0


def test_flat_scores_carry_no_ranking_and_no_spread():
    flat = ranking_diagnostics(records({"a": [0.3, 0.3, 0.3], "b": [0.3, 0.3]}), GT)
    assert flat == {"rank_spearman": 0.0, "score_spread": 0.0, "oracle_R1@0.5": 100.0}


def test_oracle_counts_queries_with_a_window_at_iou_half():
    miss = [{"qid": "a", "vid": "v", "pred_relevant_windows": [[30.0, 40.0, 0.9], [60.0, 70.0, 0.1]]}]
    assert ranking_diagnostics(miss + records({"a": [1, 0, 0], "b": [1, 0]})[1:], GT)["oracle_R1@0.5"] == 50.0


def test_memory_variation_is_zero_for_a_constant_memory_and_ignores_padding():
    memory = torch.ones(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    assert memory_variation(memory, mask).tolist() == [0.0, 0.0]
    memory[1, 3:] = 100.0  # padding frames: not counted
    assert memory_variation(memory, mask).tolist() == [0.0, 0.0]
    memory[0, 1::2] = -1.0  # alternating +1 / -1: each step moves twice the norm
    assert memory_variation(memory, mask)[0].item() == pytest.approx(2.0)


def test_a_collapse_warning_names_the_epoch():
    history = [{"epoch": 1, "val": {"score_spread": 0.20}}, {"epoch": 2, "val": {"score_spread": 0.15}}]
    assert collapse_warning(history) is None
    history.append({"epoch": 3, "val": {"score_spread": 0.01}})
    warning = collapse_warning(history)
    assert warning.startswith("warning: epoch 3:") and "0.2000 of epoch 1" in warning
    assert collapse_warning(history[:1]) is None  # nothing to compare with yet


def test_average_ranks_are_scipys_rankdata():
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 64, 333):
        for distinct in (2, 5, 1000):  # many ties, some, almost none
            values = rng.integers(0, distinct, n).astype(float)
            assert np.array_equal(average_ranks(values), rankdata(values)), (n, distinct)
