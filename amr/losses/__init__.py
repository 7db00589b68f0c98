"""Layer 6, training objectives: the DETR set criterion (``criterion``) and the report's terms
(saliency, re-ranking, boundary contrast, denoising).

May import: amr.util, amr.config, amr.model.
"""
from __future__ import annotations


def build_criterion(cfg):
    """The training objective of a system: a :class:`~amr.losses.criterion.SetCriterion`."""
    from amr.losses.criterion import SetCriterion

    return SetCriterion(cfg)
