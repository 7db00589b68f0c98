"""DETR-style set criterion: Hungarian matching, then named UNWEIGHTED loss terms.

``criterion(out, batch)`` returns ``{name: tensor}``; ``criterion.weight_dict[name]`` scales
each term and the training objective is Σ weight · term. Terms (when their parts are present):

    loss_span, loss_giou, loss_label, loss_saliency     Eq. (1), last decoder layer
    loss_{span,giou,label}_aux0                          the intermediate decoder layer
    loss_{span,giou,label}_coarse                        Eq. (2), weights × γ_c
    loss_rerank                                          Eq. (3)
    loss_boundary                                        Eq. (4)
    loss_dn_{span,giou,label}                            §3.4, weights × dn.weight, last layer
    loss_cascade_{span,giou}                             §3.5, same indices, weights × cascade.weight

Component weights multiply the base coefficients (λ1, λg, λc) of the terms they reuse, so a
component "weight 1.0" means its loss counts as much as the detector's own matched loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amr.config.schema import SystemConfig
from amr.losses.boundary_contrast import boundary_contrast_loss
from amr.losses.denoising import denoising_losses
from amr.losses.rerank import rerank_loss
from amr.losses.saliency import saliency_loss
from amr.model.matcher import HungarianMatcher
from amr.model.spans import cw_to_se, paired_generalized_iou

FOREGROUND, BACKGROUND = 0, 1

Indices = list[tuple[torch.Tensor, torch.Tensor]]


def matched_pairs(pred_spans, target_spans, indices: Indices):
    """Matched (prediction, target) spans of the whole batch, each (n, 2)."""
    batch = torch.cat([torch.full_like(rows, b) for b, (rows, _) in enumerate(indices)])
    rows = torch.cat([rows for rows, _ in indices])
    cols = torch.cat([cols for _, cols in indices])
    device = pred_spans.device
    return pred_spans[batch.to(device), rows.to(device)], target_spans[batch.to(device), cols.to(device)]


def span_losses(pred_spans, target_spans, indices: Indices) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean L1 on (c, w) and mean (1 - gIoU) over matched pairs (zero when nothing matched)."""
    pred, target = matched_pairs(pred_spans, target_spans, indices)
    if pred.shape[0] == 0:
        zero = pred_spans.sum() * 0.0
        return zero, zero
    l1 = F.l1_loss(pred, target)
    giou = (1 - paired_generalized_iou(cw_to_se(pred), cw_to_se(target))).mean()
    return l1, giou


class SetCriterion(nn.Module):
    def __init__(self, cfg: SystemConfig):
        super().__init__()
        self.cfg = cfg
        self.matcher = HungarianMatcher(cfg.matcher)
        class_weight = torch.ones(2)
        class_weight[BACKGROUND] = cfg.loss.background_weight
        self.register_buffer("class_weight", class_weight)
        self.aux_layers = cfg.backbone.decoder_layers - 1 if cfg.loss.aux else 0
        self.weight_dict = self._weights(cfg)

    @staticmethod
    def _weights(cfg: SystemConfig) -> dict[str, float]:
        lw = cfg.loss
        base = {"span": lw.span_l1, "giou": lw.span_giou, "label": lw.label}
        aux = [f"_aux{i}" for i in range(cfg.backbone.decoder_layers - 1)] if lw.aux else []
        weights = {f"loss_{k}{s}": v for s in ["", *aux] for k, v in base.items()}
        weights["loss_saliency"] = lw.saliency
        if cfg.coarse.enabled:
            weights.update({f"loss_{k}_coarse": cfg.coarse.gamma * v for k, v in base.items()})
        if cfg.rerank.enabled:
            weights["loss_rerank"] = cfg.rerank.weight
        if cfg.boundary_contrast.enabled:
            weights["loss_boundary"] = cfg.boundary_contrast.weight
        if cfg.dn.enabled:
            weights.update({f"loss_dn_{k}": cfg.dn.weight * v for k, v in base.items()})
        if cfg.cascade.enabled:
            weights["loss_cascade_span"] = cfg.cascade.weight * lw.span_l1
            weights["loss_cascade_giou"] = cfg.cascade.weight * lw.span_giou
        return weights

    def label_loss(self, logits, indices: Indices) -> torch.Tensor:
        """Cross-entropy fg/bg over all queries; unmatched queries are background (weight 0.1)."""
        target = torch.full(logits.shape[:2], BACKGROUND, dtype=torch.long, device=logits.device)
        for b, (rows, _) in enumerate(indices):
            target[b, rows.to(logits.device)] = FOREGROUND
        # QD-DETR averages the class-weighted per-query losses over all queries
        per_query = F.cross_entropy(logits.transpose(1, 2), target, self.class_weight, reduction="none")
        return per_query.mean()

    def detection_losses(self, out: dict, spans, span_mask, suffix: str = "") -> tuple[dict, Indices]:
        indices = self.matcher(out["pred_logits"], out["pred_spans"], spans, span_mask)
        l1, giou = span_losses(out["pred_spans"], spans, indices)
        terms = {f"loss_span{suffix}": l1, f"loss_giou{suffix}": giou,
                 f"loss_label{suffix}": self.label_loss(out["pred_logits"], indices)}
        return terms, indices

    def forward(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        spans, span_mask = batch["spans"], batch["span_mask"].bool()
        audio_mask = batch["audio_mask"].bool()
        terms, indices = self.detection_losses(out, spans, span_mask)
        for i, aux in enumerate(out["aux_outputs"][: self.aux_layers]):
            terms.update(self.detection_losses(aux, spans, span_mask, f"_aux{i}")[0])
        terms["loss_saliency"] = saliency_loss(
            out["saliency"], batch["saliency"], audio_mask, self.cfg.loss.saliency_margin,
            batch["saliency_pairs"], batch["saliency_pairs_valid"], out.get("saliency_neg"),
        )

        if "coarse" in out and self.cfg.coarse.enabled:
            coarse = out["coarse"]
            coarse_spans = spans * coarse["span_scale"][:, None, None]
            terms.update(self.detection_losses(coarse, coarse_spans, span_mask, "_coarse")[0])
        if "rerank_scores" in out and self.cfg.rerank.enabled:
            terms["loss_rerank"] = rerank_loss(out["rerank_scores"], indices)
        if "boundary_audio" in out and self.cfg.boundary_contrast.enabled:
            bc = self.cfg.boundary_contrast
            terms["loss_boundary"] = boundary_contrast_loss(
                out["boundary_audio"], out["boundary_text"], spans, span_mask, audio_mask.sum(1), bc.k, bc.tau
            )
        if "dn" in out and self.cfg.dn.enabled:  # the last decoder layer only, as the authors'
            terms.update({f"loss_dn_{k}": v
                          for k, v in denoising_losses(out["dn"], spans, self.class_weight).items()})
        if "refined_spans" in out and self.cfg.cascade.enabled:
            l1, giou = span_losses(out["refined_spans"], spans, indices)
            terms["loss_cascade_span"], terms["loss_cascade_giou"] = l1, giou
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weight_dict[k] * v for k, v in terms.items())
