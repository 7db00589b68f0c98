"""Typed configuration: the one place where raw ``params.yaml`` is read.

Every knob of the technical report lives in ``params.yaml``; this module turns it into
dataclasses once, and every other module receives these objects, never the raw dict.
Defaults are the report's values (the ``paper`` profile).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A params file or override does not fit the typed configuration."""


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    feature_dim: int = 768  # audio embedding width (one vector per clip_length seconds)
    text_dim: int = 768  # text token-state width
    max_audio_frames: int = 300  # L: longer recordings are truncated
    max_text_tokens: int = 32
    clip_length: float = 1.0  # seconds per audio frame
    max_windows: int = 5  # GT windows per query seen per epoch (re-sampled each epoch)
    max_gt_length: float = 1500.0  # GT windows longer than this are dropped (official filter)
    strict: bool = True  # False: skip broken feature files and list them instead of failing


# ---------------------------------------------------------------------------------------------
# Model and its components (report §2.2 – §3.5)
# ---------------------------------------------------------------------------------------------
@dataclass
class BackboneConfig:
    hidden_dim: int = 256
    input_proj_layers: int = 2
    input_dropout: float = 0.5
    dropout: float = 0.1
    # dropout on attention probabilities (QD-DETR: 0.1). Off by default: on CPU it forces the
    # unfused attention path (~10x slower, B·heads·L² memory); residual/FFN dropout stays on
    attention_dropout: float = 0.0
    heads: int = 8
    ffn_dim: int = 1024
    t2v_layers: int = 2  # text-to-audio cross-attention encoder
    encoder_layers: int = 2  # audio self-attention encoder (replaced by Mamba when enabled)
    decoder_layers: int = 2  # conditional-DETR decoder
    num_queries: int = 10
    use_tef: bool = True  # append [t/T, (t+1)/T] to each audio frame


@dataclass
class LossWeights:
    span_l1: float = 10.0
    span_giou: float = 1.0
    label: float = 4.0
    background_weight: float = 0.1  # cross-entropy weight of the background class
    saliency: float = 1.0
    saliency_margin: float = 0.2
    aux: bool = True  # the same matched loss on the intermediate decoder layer


@dataclass
class MatcherCosts:
    span_l1: float = 10.0
    span_giou: float = 1.0
    label: float = 4.0


@dataclass
class CoarseConfig:  # §3.1, training only
    enabled: bool = False
    gamma: float = 0.25
    pool: int = 2


@dataclass
class RerankConfig:  # §3.2
    enabled: bool = False
    weight: float = 0.5
    alpha: float = 1.0  # inference blend; 1.0 = pass-through


@dataclass
class MambaConfig:  # §2.2, replaces the self-attention audio encoder
    enabled: bool = False
    depth: int = 1
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    chunk: int = 8  # CPU scan: time steps per recomputed chunk (speed/memory trade-off only)
    # CPU scan: a C kernel (built once with the system compiler, cached) for scans large enough
    # to matter; the eager chunked scan otherwise. Same results either way
    compile_cpu_scan: bool = True


@dataclass
class BoundaryContrastConfig:  # §3.3, Eq. (4)
    enabled: bool = False
    k: int = 3
    tau: float = 0.1
    weight: float = 0.2


@dataclass
class DenoisingConfig:  # §3.4, DN-DETR, training only
    enabled: bool = False
    copies: int = 5
    sigma: float = 0.05
    weight: float = 1.0


@dataclass
class CascadeConfig:  # §3.5, Eq. (6)
    enabled: bool = False
    kappa: float = 0.05
    margin: int = 10  # frames added on each side of the predicted interval
    heads: int = 4
    ffn_dim: int = 512
    max_crop: int = 401  # rows of the learnable intra-crop position embedding
    weight: float = 1.0
    detach_memory: bool = True


@dataclass
class SystemConfig:
    """Everything that defines one trainable detector (a slot or an ablation variant)."""

    name: str = "baseline"
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    matcher: MatcherCosts = field(default_factory=MatcherCosts)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    mamba: MambaConfig = field(default_factory=MambaConfig)
    boundary_contrast: BoundaryContrastConfig = field(default_factory=BoundaryContrastConfig)
    dn: DenoisingConfig = field(default_factory=DenoisingConfig)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)


# ---------------------------------------------------------------------------------------------
# Training and inference
# ---------------------------------------------------------------------------------------------
@dataclass
class StageConfig:
    epochs: int = 200
    lr: float = 1e-4


@dataclass
class TrainConfig:
    pretrain: StageConfig = field(default_factory=lambda: StageConfig(200, 1e-4))
    finetune: StageConfig = field(default_factory=lambda: StageConfig(200, 8e-5))
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    batch_size: int = 32
    seed: int = 2023
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads; 0 = torch default
    cpu_keep_freed_memory: bool = True  # glibc keeps freed activations for reuse (speed only)
    amp: bool = False  # mixed precision on CUDA only
    eval_batch_size: int = 64


@dataclass
class SaliencyProposalsConfig:  # §3.6
    enabled: bool = True
    threshold: float = 0.5
    top_k: int = 10


@dataclass
class EnsembleConfig:
    seeds: list[int] = field(default_factory=lambda: [2023, 42])


@dataclass
class InferenceConfig:
    max_windows: int = 10  # windows written per query
    clamp_slack: float = 2.0  # clamp ends to duration + slack (GT ends can exceed duration)


# ---------------------------------------------------------------------------------------------
# DCASE submission package (SPEC §5): the ``submission:`` block of params.yaml
# ---------------------------------------------------------------------------------------------
@dataclass
class AffiliationConfig:
    abbreviation: str = ""  # institute abbreviation, e.g. "KAIST"
    institute: str = ""
    department: str = ""
    location: str = ""


@dataclass
class AuthorConfig:
    lastname: str = ""
    firstname: str = ""
    email: str = ""
    corresponding: bool = False
    affiliation: AffiliationConfig = field(default_factory=AffiliationConfig)


# Free-text system descriptions may be one string or a list of strings; both go to the meta
# file unchanged.
Description = str | list[str]


@dataclass
class SubmittedSystemConfig:
    """One submitted system; its position in ``SubmissionConfig.systems`` is its number k."""

    run: str = ""  # the pipeline system (key of ``systems:``) whose outputs are submitted
    name: str = ""
    abbreviation: str = ""  # at most 10 characters
    audio_models: Description = "M2D-CLAP (frozen)"
    text_models: Description = "BERT (M2D-CLAP text branch, frozen)"
    llms: Description = "none"  # written as ``LLMs`` in the meta file
    data_augmentation: Description = "none"
    external_data_resources: Description = "M2D-CLAP pre-trained weights; Clotho-Moment"
    audio_captions: Description = "none"


def _report_systems() -> list[SubmittedSystemConfig]:
    return [
        SubmittedSystemConfig("slot1", "M2D base + coarse + rerank", "M2Dbase"),
        SubmittedSystemConfig("slot2", "+ Mamba + boundary contrast + DN", "M2DMamba"),
        SubmittedSystemConfig("slot3", "+ cascade refinement", "M2DCascade"),
        SubmittedSystemConfig("slot4", "+ 2-seed ensemble + saliency proposals", "M2DEnsSal"),
    ]


@dataclass
class SubmissionConfig:
    """Team and system information for the DCASE zip; nothing here is repeated elsewhere.

    File names use the corresponding author's lastname and affiliation abbreviation
    (``<Lastname>_<INST>_task6``); ``file_lastname`` / ``file_institute`` override them when
    those contain characters a DCASE label cannot hold (only ASCII letters, digits for INST).
    Parameter counts, loss terms, the ensemble flag and development-testing results come from
    the runs, not from here.
    """

    title: str = ""
    abstract: str = ""
    authors: list[AuthorConfig] = field(default_factory=list)
    file_lastname: str = ""
    file_institute: str = ""
    report_pdf: str = ""  # path to the technical report; empty: generate a short one
    systems: list[SubmittedSystemConfig] = field(default_factory=_report_systems)


# ---------------------------------------------------------------------------------------------
# Generic dict <-> dataclass conversion (strict: unknown keys are errors)
# ---------------------------------------------------------------------------------------------
def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def from_dict(cls: type, raw: dict | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw``; unknown keys and wrong types raise ConfigError."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(names)}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        value, tp, key = raw[f.name], hints[f.name], f"{where}.{f.name}".lstrip(".")
        if _is_dataclass_type(tp):
            kwargs[f.name] = from_dict(tp, value, key)
        else:
            kwargs[f.name] = _coerce(value, tp, key)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if _is_dataclass_type(tp):  # e.g. the items of list[AuthorConfig]
        return from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    # typing.Union[...] or PEP 604 ``a | b`` (whose origin is types.UnionType)
    if origin is typing.Union or getattr(origin, "__name__", "") == "UnionType":
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} does not fit {tp}")
    return value


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def config_hash(obj: Any) -> str:
    """Stable short hash of a config (dataclass or dict), e.g. to guard resumed training."""
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    try:
        with path.open() as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_submission_config(params_path: str | Path) -> SubmissionConfig:
    """The ``submission:`` block of a params file as a :class:`SubmissionConfig`."""
    raw = load_yaml(params_path)
    if "submission" not in raw:
        raise ConfigError(f"{params_path}: no 'submission:' block (team and system information)")
    return from_dict(SubmissionConfig, raw["submission"], "submission")
