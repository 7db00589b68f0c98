"""Loss terms: values on hand-made cases, masking, edge cases, criterion bookkeeping."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from model_batches import small_config

from amr.losses.boundary_contrast import boundary_contrast_loss, boundary_frames
from amr.losses.criterion import SetCriterion, span_losses
from amr.losses.denoising import denoising_losses
from amr.losses.rerank import rerank_loss
from amr.losses.saliency import margin_ranking, saliency_loss

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# saliency
# ---------------------------------------------------------------------------------------------
PAIRS = torch.tensor([[[1, 0], [2, 3]]])  # (inside, outside) frames of a query with frames 1-2 labelled
ALL_VALID = torch.ones(1, 2, dtype=torch.bool)


def test_margin_ranking_is_zero_only_when_inside_frames_lead_by_the_margin():
    good = torch.tensor([[0.0, 0.3, 0.25, 0.05]])
    assert margin_ranking(good, PAIRS, ALL_VALID, 0.2) == 0
    bad = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    # both pairs violate by 1.2: summed, divided by queries x pairs, QD-DETR's factor 2
    assert margin_ranking(bad, PAIRS, ALL_VALID, 0.2).item() == pytest.approx(2 * 1.2)
    # a query without an outside frame has no valid pair and adds nothing
    assert margin_ranking(bad, PAIRS, torch.tensor([[True, False]]), 0.2).item() == pytest.approx(1.2)


def test_without_sampled_pairs_the_margin_term_takes_every_pair():
    from amr.losses.saliency import margin_ranking_all_pairs

    labels = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    bad = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert margin_ranking_all_pairs(bad, labels, mask, 0.2).item() == pytest.approx(2 * 1.2)
    no_pairs = torch.zeros(1, 0, 2, dtype=torch.long), torch.zeros(1, 0, dtype=torch.bool)
    every = saliency_loss(bad, labels, mask, 0.2, *no_pairs)
    sampled = saliency_loss(bad, labels, mask, 0.2, PAIRS, ALL_VALID)
    assert every.item() == pytest.approx(sampled.item())  # here each pair violates by the same


def test_saliency_loss_ignores_padded_frames():
    labels = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, False, False]])
    scores = torch.tensor([[0.1, 0.9, 0.7, -0.2, 0.0, 0.0]])
    neg = torch.tensor([[0.2, 0.1, 0.0, 0.3, 0.0, 0.0]])
    ref = saliency_loss(scores, labels, mask, 0.2, PAIRS, ALL_VALID, neg)
    garbage = scores.clone()
    garbage[0, 4:] = 50.0
    neg_garbage = neg.clone()
    neg_garbage[0, 4:] = 50.0
    assert saliency_loss(garbage, labels, mask, 0.2, PAIRS, ALL_VALID, neg_garbage) == pytest.approx(ref.item())


def test_negative_query_term_punishes_high_scores_with_the_wrong_text():
    labels = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    scores = torch.tensor([[-1.0, 2.0, 2.0, -1.0]])
    low = saliency_loss(scores, labels, mask, 0.2, PAIRS, ALL_VALID, torch.full((1, 4), -3.0))
    high = saliency_loss(scores, labels, mask, 0.2, PAIRS, ALL_VALID, torch.full((1, 4), 3.0))
    assert high > low + 1.0
    assert torch.isfinite(saliency_loss(scores, labels, mask, 0.2, PAIRS, ALL_VALID))  # no negative pass


def test_saliency_loss_with_no_positive_frames_is_finite():
    scores = torch.randn(2, 5, requires_grad=True)
    pairs, valid = torch.zeros(2, 2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.bool)
    loss = saliency_loss(scores, torch.zeros(2, 5), torch.ones(2, 5, dtype=torch.bool), 0.2, pairs, valid,
                         torch.randn(2, 5))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()


# ---------------------------------------------------------------------------------------------
# boundary contrast
# ---------------------------------------------------------------------------------------------
def brute_force_boundary(audio, text, windows, lengths, k, tau):
    """Eq. (4) written out with Python loops over boundary sides, with the authors' rules: no
    span narrower than 2 frames or recording shorter than 2K + 2, K inside frames counted from
    the boundary inwards (past the span's other end if it is short)."""
    losses = []
    for b, spans in enumerate(windows):
        n = lengths[b]
        if n < 2 * k + 2:
            continue
        for s, e in spans:
            if e - s < 2:
                continue
            for inside, outside in (
                ([t for t in range(s, s + k) if t < n], [t for t in range(s - k, s) if t >= 0]),
                ([t for t in range(e - k, e) if t >= 0], [t for t in range(e, e + k) if t < n]),
            ):
                if not outside:
                    continue
                pooled = F.normalize(audio[b, inside].mean(0), dim=-1)
                pos = (pooled @ text[b]) / tau
                neg = audio[b, outside] @ text[b] / tau
                losses.append(torch.logsumexp(torch.cat([pos[None], neg]), 0) - pos)
    return torch.stack(losses).mean()


def to_spans(windows, lengths, width):
    spans = torch.zeros(len(windows), width, 2)
    mask = torch.zeros(len(windows), width, dtype=torch.bool)
    for b, ws in enumerate(windows):
        for j, (s, e) in enumerate(ws):
            spans[b, j] = torch.tensor([(s + e) / 2 / lengths[b], (e - s) / lengths[b]])
            mask[b, j] = True
    return spans, mask


def test_boundary_contrast_matches_eq4_including_edges_and_short_spans():
    torch.manual_seed(0)
    lengths = [20, 12, 7]
    # a span at the start edge, a 1-frame span (skipped), a 2-frame span (< K), one ending at the
    # edge; a recording shorter than 2K + 2 (skipped)
    windows = [[(0, 6), (9, 10), (14, 16)], [(5, 12)], [(2, 5)]]
    audio = F.normalize(torch.randn(2, 20, 8), dim=-1)
    text = F.normalize(torch.randn(2, 8), dim=-1)
    spans, mask = to_spans(windows, lengths, 3)
    audio = F.normalize(torch.randn(3, 20, 8), dim=-1)
    text = F.normalize(torch.randn(3, 8), dim=-1)
    got = boundary_contrast_loss(audio, text, spans, mask, torch.tensor(lengths), 3, 0.1)
    expected = brute_force_boundary(audio, text, windows, lengths, 3, 0.1)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_boundary_contrast_without_outside_frames_is_finite_zero():
    audio = F.normalize(torch.randn(1, 10, 8), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(1, 8), dim=-1)
    spans, mask = to_spans([[(0, 10)]], [10], 1)  # the whole recording: no outside frame
    loss = boundary_contrast_loss(audio, text, spans, mask, torch.tensor([10]), 3, 0.1)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(audio.grad).all()


def test_boundary_frames_clip_to_each_recording():
    spans, mask = to_spans([[(0, 2)], [(6, 8)]], [10, 8], 1)
    inside, inside_ok, outside, outside_ok = boundary_frames(spans, mask, torch.tensor([10, 8]), 3)
    assert inside[0, 0, 0][inside_ok[0, 0, 0]].tolist() == [0, 1, 2]  # K frames, past a short span
    assert not outside_ok[0, 0, 0].any()  # start at the edge
    assert outside[0, 0, 1][outside_ok[0, 0, 1]].tolist() == [2, 3, 4]
    assert not outside_ok[1, 0, 1].any()  # end at the recording's own end
    assert outside[1, 0, 0][outside_ok[1, 0, 0]].tolist() == [5, 4, 3]


# ---------------------------------------------------------------------------------------------
# re-ranking, denoising, matched spans
# ---------------------------------------------------------------------------------------------
def test_rerank_loss_is_bce_against_matched_queries():
    scores = torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.8, 0.5]])
    indices = [(torch.tensor([0]), torch.tensor([0])), (torch.tensor([1, 2]), torch.tensor([0, 1]))]
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    assert rerank_loss(scores, indices).item() == pytest.approx(F.binary_cross_entropy(scores, target).item())


def test_denoising_loss_is_zero_for_perfect_reconstruction():
    spans = torch.tensor([[[0.5, 0.2], [0.2, 0.1]]])
    dn = {
        "pred_spans": spans.repeat(1, 2, 1),
        "pred_logits": torch.tensor([[[10.0, -10.0]] * 4]),
        "valid": torch.tensor([[True, False, True, False]]),
        "target_index": torch.tensor([0, 1, 0, 1]),
    }
    weights = torch.tensor([1.0, 0.1])
    # padding slots are background (the authors' label loss over every slot)
    dn["pred_logits"] = torch.tensor([[[10.0, -10.0], [-10.0, 10.0], [10.0, -10.0], [-10.0, 10.0]]])
    terms = denoising_losses(dn, spans, weights)
    assert terms["span"].item() == pytest.approx(0.0, abs=1e-7)
    assert terms["giou"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["label"].item() < 1e-6
    dn["pred_spans"] = dn["pred_spans"] + 0.05
    assert denoising_losses(dn, spans, weights)["span"].item() == pytest.approx(0.05, rel=1e-4)
    # a padding slot called foreground costs its class weight's share
    dn["pred_logits"] = torch.tensor([[[10.0, -10.0]] * 4])
    assert denoising_losses(dn, spans, weights)["label"].item() == pytest.approx(2 * 0.1 * 20 / 2.2, rel=1e-3)


def test_span_losses_follow_the_indices():
    pred = torch.tensor([[[0.5, 0.2], [0.1, 0.1]]])
    target = torch.tensor([[[0.1, 0.1], [0.5, 0.2]]])
    matched = [(torch.tensor([0, 1]), torch.tensor([1, 0]))]
    l1, giou = span_losses(pred, target, matched)
    assert l1.item() == pytest.approx(0.0) and giou.item() == pytest.approx(0.0, abs=1e-6)
    swapped = [(torch.tensor([0, 1]), torch.tensor([0, 1]))]
    assert span_losses(pred, target, swapped)[0] > 0.1


def test_label_loss_weights_background_by_0_1():
    criterion = SetCriterion(small_config())
    logits = torch.zeros(1, 3, 2)  # p = 0.5 everywhere: CE = log 2 per query
    indices = [(torch.tensor([1]), torch.tensor([0]))]
    expected = (1.0 + 0.1 + 0.1) * math.log(2) / 3
    assert criterion.label_loss(logits, indices).item() == pytest.approx(expected)


def test_weight_dict_follows_the_components():
    base = SetCriterion(small_config()).weight_dict
    assert base == {
        "loss_span": 10.0, "loss_giou": 1.0, "loss_label": 4.0, "loss_saliency": 1.0,
        "loss_span_aux0": 10.0, "loss_giou_aux0": 1.0, "loss_label_aux0": 4.0,
    }
    full = SetCriterion(small_config(coarse=True, rerank=True, boundary_contrast=True, dn=True, cascade=True))
    w = full.weight_dict
    assert w["loss_span_coarse"] == 2.5 and w["loss_label_coarse"] == 1.0
    assert w["loss_rerank"] == 0.5 and w["loss_boundary"] == 0.2
    assert w["loss_dn_span"] == 10.0 and "loss_dn_giou_aux0" not in w  # the last layer only
    assert w["loss_cascade_span"] == 10.0 and w["loss_cascade_giou"] == 1.0
    cfg = small_config()
    cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, aux=False))
    assert not any("aux" in k for k in SetCriterion(cfg).weight_dict)
