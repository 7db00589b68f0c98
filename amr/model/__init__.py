"""Layer 5, the detector: QD-DETR with the report's components (``detector``), its layers
(``transformer``, ``mamba``, ``cascade``, ``heads``, ``denoising``, ``position``), span geometry
(``spans``), the Hungarian matcher (``matcher``), saliency runs (``saliency``) and the
post-processing of outputs into windows (``postprocess``). Systems are defined in params.yaml
only (``systems:``), read by :mod:`amr.config.params`.

May import: amr.util, amr.config, amr.kernels.
"""
from __future__ import annotations


def build_model(cfg):
    """The detector of a system: a :class:`~amr.model.detector.MomentDetector`."""
    from amr.model.detector import MomentDetector

    return MomentDetector(cfg)


def count_parameters(model) -> dict[str, int]:
    params = list(model.parameters())
    return {
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
    }
