"""``params.yaml`` → typed configuration objects.

Layout of the file (see the file itself for every knob):

- ``profile``: ``demo`` or ``paper``; ``profiles.<name>`` is deep-merged over the rest, so the
  report's values stay in the main body and the demo profile only shrinks sizes and epochs.
- ``data``: the model-facing data knobs (:class:`~amr.config.DataConfig`) plus where features
  come from (``source``, ``demo``, ``local``, ``download``).
- ``model``, ``loss``, ``matcher``: the shared detector (report §2).
- one section per component (``coarse``, ``rerank``, ``mamba``, ``boundary_contrast``, ``dn``,
  ``cascade``): its knobs. Whether a system uses it is decided in ``systems`` only.
- ``systems``: slot name → per-component overrides (at least ``enabled: true``); a system's
  configuration is the component section deep-merged with its override. Components a system
  does not enable keep their dataclass defaults, so a system reads only the sections it uses.
- ``saliency_proposals``, ``ensemble``, ``train``, ``inference``, ``submission``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from amr.config import (
    BackboneConfig,
    BoundaryContrastConfig,
    CascadeConfig,
    CoarseConfig,
    ConfigError,
    DataConfig,
    DenoisingConfig,
    EnsembleConfig,
    InferenceConfig,
    LossWeights,
    MambaConfig,
    MatcherCosts,
    RerankConfig,
    SaliencyProposalsConfig,
    SystemConfig,
    TrainConfig,
    deep_merge,
    from_dict,
    load_yaml,
)

COMPONENT_TYPES = {
    "coarse": CoarseConfig,
    "rerank": RerankConfig,
    "mamba": MambaConfig,
    "boundary_contrast": BoundaryContrastConfig,
    "dn": DenoisingConfig,
    "cascade": CascadeConfig,
}
COMPONENTS = tuple(COMPONENT_TYPES)
SOURCE_KEYS = ("source", "demo", "local", "download")


# ---------------------------------------------------------------------------------------------
# Where the features come from
# ---------------------------------------------------------------------------------------------
@dataclass
class PretrainFiles:
    train: str = ""
    val: str = ""
    audio_dir: str = ""
    text_dir: str = ""


@dataclass
class FinetuneFiles:
    train: str = ""
    val: str = ""
    test: str = ""
    audio_dir: str = ""
    text_dir: str = ""


@dataclass
class EvaluationFiles:
    queries: str = ""
    audio_dir: str = ""
    text_dir: str = ""


@dataclass
class LocalSource:
    """Feature directories in the official layout that the user already has."""

    pretrain: PretrainFiles = field(default_factory=PretrainFiles)
    finetune: FinetuneFiles = field(default_factory=FinetuneFiles)
    evaluation: EvaluationFiles = field(default_factory=EvaluationFiles)


@dataclass
class DemoSource:
    """The embedded synthetic dataset (``amr demo-data``)."""

    seed: int = 0
    sizes: dict = field(default_factory=dict)  # overrides of amr.data.demo.DemoSizes


@dataclass
class RemoteFile:
    """One file to fetch.

    Inside a record: ``name`` (the record's file key) and optionally ``md5``; the URL is built
    from ``zenodo_url``. Under ``data.download.files``: ``url``, ``dest`` and optionally ``md5``
    and ``name`` (default: the URL's last path segment).
    """

    name: str = ""
    url: str = ""
    md5: str = ""  # hex; empty: a record file's md5 is read from the record listing
    dest: str = ""  # ``files`` entries only: folder below the download folder


@dataclass
class ZenodoRecord:
    """One Zenodo record; its archives are unpacked into ``<folder>/<dest>``."""

    id: int = 0
    dest: str = ""
    files: list[RemoteFile] = field(default_factory=list)  # empty: every listed file matching glob
    glob: str = "*"  # which of the record's files to take when ``files`` is empty
    parts: str = ""  # glob: these files are the parts of ONE archive, joined in name order


@dataclass
class DownloadSource:
    """Official archives (Zenodo records) and annotation files, fetched and unpacked."""

    folder: str = "data/download"
    zenodo_url: str = "https://zenodo.org"
    retries: int = 3  # extra attempts after a transient network error (each resumes)
    retry_delay_s: float = 2.0  # first back-off; doubles per attempt
    timeout_s: float = 60.0  # per network read
    records: list[ZenodoRecord] = field(default_factory=list)
    files: list[RemoteFile] = field(default_factory=list)  # plain URLs (annotation files)
    layout: LocalSource = field(default_factory=LocalSource)  # where the unpacked files land


@dataclass
class DataSource:
    source: str = "demo"  # demo | download | local
    demo: DemoSource = field(default_factory=DemoSource)
    local: LocalSource = field(default_factory=LocalSource)
    download: DownloadSource = field(default_factory=DownloadSource)


# ---------------------------------------------------------------------------------------------
# Slot 4 (inference-time fusion)
# ---------------------------------------------------------------------------------------------
@dataclass
class FusionConfig:
    base: str = "slot3"  # the trained system whose seeds are fused
    ensemble: bool = True  # pool all seeds of ``ensemble.seeds``; False: the first seed only
    saliency_proposals: bool = True


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def load_raw_params(path: str | Path = "params.yaml", profile: str | None = None) -> dict:
    """The params file with its active profile (or ``profile``) merged in."""
    raw = load_yaml(path)
    profile = profile or raw.get("profile", "paper")
    profiles = raw.get("profiles") or {}
    if profile not in profiles:
        raise ConfigError(f"{path}: profile {profile!r} is not defined under 'profiles:' "
                          f"(defined: {sorted(profiles)})")
    merged = deep_merge({k: v for k, v in raw.items() if k != "profiles"}, profiles[profile] or {})
    merged["profile"] = profile
    return merged


class Params:
    """Typed view of a params file. Build once; hand the pieces to library code."""

    def __init__(self, raw: dict, path: str | Path = "params.yaml"):
        self.path = Path(path)
        self.raw = raw
        self.profile: str = raw.get("profile", "paper")
        data = raw.get("data") or {}
        self.data = from_dict(DataConfig, {k: v for k, v in data.items() if k not in SOURCE_KEYS}, "data")
        self.source = from_dict(DataSource, {k: v for k, v in data.items() if k in SOURCE_KEYS}, "data")
        self.train = from_dict(TrainConfig, raw.get("train"), "train")
        self.ensemble = from_dict(EnsembleConfig, raw.get("ensemble"), "ensemble")
        self.saliency_proposals = from_dict(SaliencyProposalsConfig, raw.get("saliency_proposals"),
                                            "saliency_proposals")
        self.inference = from_dict(InferenceConfig, raw.get("inference"), "inference")
        self.systems: dict = raw.get("systems") or {}
        if not self.systems:
            raise ConfigError(f"{self.path}: no 'systems:' map")

    @classmethod
    def load(cls, path: str | Path = "params.yaml", profile: str | None = None) -> "Params":
        return cls(load_raw_params(path, profile), path)

    # -- systems ------------------------------------------------------------------------------
    def trained_systems(self) -> list[str]:
        return [n for n, s in self.systems.items() if "fuse" not in (s or {})]

    def fused_systems(self) -> list[str]:
        return [n for n, s in self.systems.items() if "fuse" in (s or {})]

    def _system_entry(self, name: str) -> dict:
        if name not in self.systems:
            raise ConfigError(f"{self.path}: unknown system {name!r}; systems: {sorted(self.systems)}")
        return self.systems[name] or {}

    def system(self, name: str) -> SystemConfig:
        """The detector configuration of one trained system."""
        entry = self._system_entry(name)
        if "fuse" in entry:
            raise ConfigError(f"system {name!r} is a fusion of trained systems, not a model")
        unknown = sorted(set(entry) - set(COMPONENTS))
        if unknown:
            raise ConfigError(f"systems.{name}: unknown component(s) {unknown}; known: {list(COMPONENTS)}")
        kwargs = {
            "name": name,
            "data": self.data,
            "backbone": from_dict(BackboneConfig, self.raw.get("model"), "model"),
            "loss": from_dict(LossWeights, self.raw.get("loss"), "loss"),
            "matcher": from_dict(MatcherCosts, self.raw.get("matcher"), "matcher"),
        }
        for comp in COMPONENTS:
            override = entry.get(comp) or {}
            if not isinstance(override, dict):
                raise ConfigError(f"systems.{name}.{comp}: expected a mapping such as {{enabled: true}}")
            cls = COMPONENT_TYPES[comp]
            if override.get("enabled", False):
                merged = deep_merge(self.raw.get(comp) or {}, override)
                kwargs[comp] = from_dict(cls, merged, f"{comp} (systems.{name})")
            else:
                kwargs[comp] = cls()
        return SystemConfig(**kwargs)

    def fusion(self, name: str) -> FusionConfig:
        entry = self._system_entry(name)
        if "fuse" not in entry:
            raise ConfigError(f"system {name!r} is a trained model, not a fusion")
        return from_dict(FusionConfig, entry["fuse"], f"systems.{name}.fuse")

    def seeds(self, name: str) -> list[int]:
        """Seeds a trained system is fine-tuned with: every ensemble seed for a fused base."""
        for fused in self.fused_systems():
            if self.fusion(fused).base == name:
                return list(self.ensemble.seeds)
        return [self.train.seed]

    def fusion_members(self, name: str) -> list[int]:
        f = self.fusion(name)
        seeds = self.seeds(f.base)
        return seeds if f.ensemble else seeds[:1]
