"""The detector, its criterion and the submitted systems (slots) as configurations."""
from __future__ import annotations

import dataclasses

from amr.config import COMPONENTS, ConfigError, SystemConfig

# report §3: every slot is a strict superset of the previous one
DEFAULT_SYSTEMS: dict[str, list[str]] = {
    "baseline": [],
    "slot1": ["coarse", "rerank"],
    "slot2": ["coarse", "rerank", "mamba", "boundary_contrast", "dn"],
    "slot3": ["coarse", "rerank", "mamba", "boundary_contrast", "dn", "cascade"],
}


def build_model(cfg: SystemConfig):
    from amr.model.detector import MomentDetector

    return MomentDetector(cfg)


def build_criterion(cfg: SystemConfig):
    from amr.losses.criterion import SetCriterion

    return SetCriterion(cfg)


def with_components(base: SystemConfig, enabled: list[str], name: str) -> SystemConfig:
    """A copy of ``base`` with exactly the listed components switched on."""
    unknown = sorted(set(enabled) - set(COMPONENTS))
    if unknown:
        raise ConfigError(f"systems.{name}: unknown component(s) {unknown}; known: {list(COMPONENTS)}")
    switches = {c: dataclasses.replace(getattr(base, c), enabled=c in enabled) for c in COMPONENTS}
    return dataclasses.replace(base, name=name, **switches)


def slot_configs(
    base: SystemConfig | None = None, systems: dict[str, list[str]] | None = None
) -> dict[str, SystemConfig]:
    """One SystemConfig per system: ``base`` knobs with each system's component switches."""
    base = base or SystemConfig()
    systems = DEFAULT_SYSTEMS if systems is None else systems
    return {name: with_components(base, list(enabled), name) for name, enabled in systems.items()}


def count_parameters(model) -> dict[str, int]:
    params = list(model.parameters())
    return {
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
    }


__all__ = ["build_model", "build_criterion", "slot_configs", "with_components", "count_parameters", "COMPONENTS"]
