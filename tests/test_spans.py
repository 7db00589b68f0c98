import itertools

import pytest
import torch

from amr.config.schema import MatcherCosts
from amr.model.matcher import HungarianMatcher
from amr.model.spans import (
    cw_to_se,
    generalized_temporal_iou,
    paired_generalized_iou,
    se_to_cw,
    temporal_iou,
)


def test_cw_se_round_trip():
    se = torch.tensor([[0.1, 0.3], [0.0, 1.0], [0.5, 0.5]])
    cw = se_to_cw(se)
    assert torch.allclose(cw, torch.tensor([[0.2, 0.2], [0.5, 1.0], [0.5, 0.0]]))
    assert torch.allclose(cw_to_se(cw), se)


def test_iou_and_giou_hand_values():
    a = torch.tensor([[0.0, 0.4]])
    b = torch.tensor([[0.2, 0.6], [0.5, 0.7], [0.0, 0.4]])
    assert torch.allclose(temporal_iou(a, b), torch.tensor([[1 / 3, 0.0, 1.0]]))
    # disjoint: iou 0, enclosing 0.7, union 0.6 -> giou = -(0.1 / 0.7)
    assert torch.allclose(generalized_temporal_iou(a, b), torch.tensor([[1 / 3, -0.1 / 0.7, 1.0]]))
    assert torch.allclose(paired_generalized_iou(a.expand(3, 2), b), torch.tensor([1 / 3, -0.1 / 0.7, 1.0]))


def test_iou_is_batched_over_leading_dims():
    a = torch.rand(4, 3, 2).sort(-1).values
    b = torch.rand(4, 5, 2).sort(-1).values
    batched = temporal_iou(a, b)
    assert batched.shape == (4, 3, 5)
    for i in range(4):
        assert torch.allclose(batched[i], temporal_iou(a[i], b[i]))


def brute_force_cost(logits, spans, tgt, costs):
    p = logits.softmax(-1)[:, 0]
    c = costs.span_l1 * torch.cdist(spans, tgt, p=1)
    c = c - costs.span_giou * generalized_temporal_iou(cw_to_se(spans), cw_to_se(tgt)) - costs.label * p[:, None]
    return c


def test_matcher_is_optimal_and_ignores_padding():
    torch.manual_seed(0)
    B, Q, W = 3, 6, 4
    logits = torch.randn(B, Q, 2)
    spans = torch.rand(B, Q, 2) * 0.5 + 0.1
    targets = torch.rand(B, W, 2) * 0.5 + 0.1
    mask = torch.tensor([[True, True, False, False], [True, True, True, True], [False] * 4])
    targets[~mask] = 99.0  # garbage in padding must not matter
    out = HungarianMatcher(MatcherCosts())(logits, spans, targets, mask)
    assert len(out) == B
    assert out[2][0].numel() == 0
    for b, (rows, cols) in enumerate(out[:2]):
        n = int(mask[b].sum())
        assert sorted(cols.tolist()) == list(range(n))
        cost = brute_force_cost(logits[b], spans[b], targets[b, :n], MatcherCosts())
        best = min(sum(cost[r, c] for r, c in zip(perm, range(n))) for perm in itertools.permutations(range(Q), n))
        assert sum(cost[r, c] for r, c in zip(rows.tolist(), cols.tolist())) == pytest.approx(float(best), abs=1e-5)


def test_matcher_prefers_the_exact_span():
    logits = torch.zeros(1, 3, 2)
    spans = torch.tensor([[[0.2, 0.1], [0.7, 0.2], [0.5, 0.5]]])
    targets = torch.tensor([[[0.7, 0.2]]])
    rows, cols = HungarianMatcher()(logits, spans, targets, torch.ones(1, 1, dtype=torch.bool))[0]
    assert rows.tolist() == [1] and cols.tolist() == [0]
