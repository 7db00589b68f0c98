"""Typed configuration: the dataclasses that mirror ``params.yaml``, and strict dict -> dataclass
conversion.

Every knob of the technical report lives in ``params.yaml``; :mod:`amr.config.params` (the one loader)
turns it into these objects once, and every other module receives them, never the raw dict.
The dataclasses are frozen: a loaded value cannot be overwritten afterwards (use
``dataclasses.replace`` to derive a variant explicitly). Defaults are the report's values (the
``paper`` preset, :mod:`amr.config.presets`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from amr.util.errors import AmrError


class ConfigError(AmrError, ValueError):
    """A params file or override does not fit the typed configuration."""


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
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
# Where the features come from (``data.source`` and its blocks)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoSizes:
    """How much demo data to write; defaults keep ten short CPU training runs feasible."""

    clotho_train_queries: int = 400
    clotho_val_queries: int = 100
    castella_train_queries: int = 300
    castella_val_queries: int = 150
    castella_test_queries: int = 200
    evaluation_queries: int = 100
    clotho_duration: int = 60
    castella_min_duration: int = 60
    castella_max_duration: int = 300
    duration_skew: float = 2.5  # > 1 favours short recordings (mean ~129 s with the defaults)
    max_queries_per_recording: int = 5
    end_overruns_per_split: int = 4  # CASTELLA-like splits: a window end past the duration
    frame_mismatches_per_split: int = 4  # CASTELLA-like splits and evaluation: T = duration ± 1
    bogus_windows: int = 1  # CASTELLA-like train: an extra window [duration, 4800]
    event_types: int = 0  # use the first N of EVENT_TYPES (0: all); fewer types learn faster

    def validate(self) -> None:
        """The checks params.yaml's loading makes (amr.config.constraints), for sizes built in code."""
        from amr.config.constraints import check_field

        for f in dataclasses.fields(self):
            problem = check_field("DemoSizes", f.name, getattr(self, f.name), f"DemoSizes.{f.name}")
            if problem:
                raise ConfigError(problem)
        if self.castella_min_duration > self.castella_max_duration:
            raise ConfigError(f"DemoSizes: castella_min_duration {self.castella_min_duration} is above "
                              f"castella_max_duration {self.castella_max_duration}")


@dataclass(frozen=True)
class PretrainFiles:
    train: str = ""
    val: str = ""
    audio_dir: str = ""
    text_dir: str = ""


@dataclass(frozen=True)
class FinetuneFiles:
    train: str = ""
    val: str = ""
    test: str = ""
    audio_dir: str = ""
    text_dir: str = ""


@dataclass(frozen=True)
class EvaluationFiles:
    queries: str = ""
    audio_dir: str = ""
    text_dir: str = ""


@dataclass(frozen=True)
class LocalSource:
    """Feature directories in the official layout that the user already has."""

    pretrain: PretrainFiles = field(default_factory=PretrainFiles)
    finetune: FinetuneFiles = field(default_factory=FinetuneFiles)
    evaluation: EvaluationFiles = field(default_factory=EvaluationFiles)
    # what made the features, written into the packed manifest and the meta file
    # (e.g. "M2D-CLAP 2025, checkpoint-30.pth"); empty: "not stated" (download: official MS-CLAP)
    extractor: str = ""


@dataclass(frozen=True)
class DemoSource:
    """The embedded synthetic dataset (``amr demo-data``)."""

    seed: int = 0
    sizes: DemoSizes = field(default_factory=DemoSizes)


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class ZenodoRecord:
    """One Zenodo record; its archives are unpacked into ``<folder>/<dest>``."""

    id: int = 0
    dest: str = ""
    files: list[RemoteFile] = field(default_factory=list)  # empty: every listed file matching glob
    glob: str = "*"  # which of the record's files to take when ``files`` is empty
    parts: str = ""  # glob: these files are the parts of ONE archive, joined in name order


@dataclass(frozen=True)
class DownloadSource:
    """Official archives (Zenodo records) and annotation files, fetched and unpacked."""

    folder: str = "data/download"
    zenodo_url: str = "https://zenodo.org"
    retries: int = 3  # extra attempts after a transient network error (each resumes)
    timeout_s: float = 60.0  # per network read
    records: list[ZenodoRecord] = field(default_factory=list)
    files: list[RemoteFile] = field(default_factory=list)  # plain URLs (annotation files)
    layout: LocalSource = field(default_factory=LocalSource)  # where the unpacked files land


@dataclass(frozen=True)
class M2DBackendConfig:
    """The user's clone of the M2D repository and the M2D-CLAP checkpoint (SPEC §2.1)."""

    repo: str = ""  # folder holding examples/portable_m2d.py
    checkpoint: str = ""  # e.g. .../m2d_clap_vit_base-80x1001p16x16p16kpBpTI-2025/checkpoint-30.pth


@dataclass(frozen=True)
class PluginBackendConfig:
    """Another extractor: ``factory`` is ``module:callable``, called with ``device`` and
    ``max_text_tokens`` (see :mod:`amr.extract.backends`)."""

    factory: str = ""
    path: str = ""  # folder put first on sys.path before importing (empty: none)
    checkpoint: str = ""  # weights file, hashed for provenance (empty: none)


@dataclass(frozen=True)
class ExtractPretrain:
    train: str = ""
    val: str = ""
    audio: list[str] = field(default_factory=list)  # folders (audio files or *.tar shards), tars


@dataclass(frozen=True)
class ExtractFinetune:
    train: str = ""
    val: str = ""
    test: str = ""
    audio: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExtractEvaluation:
    queries: str = ""
    audio: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExtractSource:
    """Features extracted from raw audio + annotation files (``data.source: extract``)."""

    backend: str = "m2d"  # m2d | plugin | test (deterministic, no weights: tests and CI)
    m2d: M2DBackendConfig = field(default_factory=M2DBackendConfig)
    plugin: PluginBackendConfig = field(default_factory=PluginBackendConfig)
    pretrain: ExtractPretrain = field(default_factory=ExtractPretrain)
    finetune: ExtractFinetune = field(default_factory=ExtractFinetune)
    evaluation: ExtractEvaluation = field(default_factory=ExtractEvaluation)
    folder: str = "data/extracted"  # <folder>/<dataset>/{audio,text}/*.npz (a DVC stage output)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    batch_size: int = 256  # 1-s windows per encoder call
    workers: int = 2  # decoding processes (0: decode in the main process)


@dataclass(frozen=True)
class DataSource:
    source: str = "demo"  # demo | download | local | extract
    demo: DemoSource = field(default_factory=DemoSource)
    local: LocalSource = field(default_factory=LocalSource)
    download: DownloadSource = field(default_factory=DownloadSource)
    extract: ExtractSource = field(default_factory=ExtractSource)
    # strict packing fails when a recording's T * clip_length differs from its annotated
    # duration by more than this (the real data differs by up to 2 s, SPEC §1)
    length_tolerance_s: float = 2.0


# ---------------------------------------------------------------------------------------------
# Model and its components (report §2.2 – §3.5)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackboneConfig:
    hidden_dim: int = 256
    input_proj_layers: int = 2
    input_dropout: float = 0.5
    dropout: float = 0.1
    # dropout on attention probabilities (QD-DETR: 0.1). On CPU it forces the unfused attention
    # path (~10x slower, B·heads·L² memory), so the demo preset turns it off
    attention_dropout: float = 0.1
    heads: int = 8
    ffn_dim: int = 1024
    # FFN activation of the T2V, encoder and decoder layers: QD-DETR builds its transformer with
    # activation='prelu', one nn.PReLU (a single slope) per layer
    activation: str = "prelu"  # prelu | relu | gelu
    # CPU kernels (dropout masks, Mamba's scan and conv): `native` builds C kernels with the system
    # compiler at first use; `torch` needs no compiler; `auto`: native where the compiler builds
    # them, else torch. Same results either way, speed only
    cpu_kernels: str = "auto"  # auto | native | torch
    # initialisation where the report is silent; the defaults are the authors' (QD-DETR's code).
    # multihead: each attention layer starts as nn.MultiheadAttention (one xavier draw over the
    # fused (3d x d) input projection, zero biases) and the decoder's attention outputs as
    # conditional DETR's (zero bias); linear: every projection an nn.Linear, xavier weight and
    # nn.Linear's own bias
    attention_init: str = "multihead"  # multihead | linear
    # last layer of the anchor-refinement MLP: random (QD-DETR zeroes it, then its xavier pass
    # draws the weight again) | zero (later decoder layers start at the previous layer's anchors)
    refine_init: str = "random"  # random | zero
    # the T2V layer's FFN residual: qd_detr (QD-DETR's and the authors': added to the stream
    # before norm1) | postnorm (added after it, like every other layer)
    t2v_residual: str = "qd_detr"  # qd_detr | postnorm
    t2v_layers: int = 2  # text-to-audio cross-attention encoder
    encoder_layers: int = 2  # audio self-attention encoder (replaced by Mamba when enabled)
    decoder_layers: int = 2  # conditional-DETR decoder
    num_queries: int = 10
    use_tef: bool = True  # append [t/T, (t+1)/T] to each audio frame




@dataclass(frozen=True)
class LossWeights:
    span_l1: float = 10.0
    span_giou: float = 1.0
    label: float = 4.0
    background_weight: float = 0.1  # cross-entropy weight of the background class
    saliency: float = 1.0
    saliency_margin: float = 0.2
    # the saliency targets, where the report is silent; the defaults are the authors' loader's
    # (QD-DETR's): the frames of the query's first window, and 2 sampled (inside, outside) frame
    # pairs for the margin term. all: the frames every window overlaps; 0 pairs: every pair
    saliency_windows: str = "first"  # first | all
    saliency_pairs: int = 2
    aux: bool = True  # the same matched loss on the intermediate decoder layer


@dataclass(frozen=True)
class MatcherCosts:
    span_l1: float = 10.0
    span_giou: float = 1.0
    label: float = 4.0


@dataclass(frozen=True)
class CoarseConfig:  # §3.1, training only
    enabled: bool = False
    gamma: float = 0.25
    pool: int = 2


@dataclass(frozen=True)
class RerankConfig:  # §3.2
    enabled: bool = False
    weight: float = 0.5


@dataclass(frozen=True)
class MambaConfig:  # §2.2, replaces the self-attention audio encoder
    enabled: bool = False
    depth: int = 1
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    chunk: int = 8  # CPU scan: time steps per recomputed chunk (speed/memory trade-off only)
    # the authors' model-wide xavier pass also redraws A_log and dt_proj.weight (every state then
    # starts near A = -1); mamba_ssm keeps mamba-ssm's own (A = -1 ... -N, dt in [1e-3, 0.1])
    init: str = "xavier"  # xavier | mamba_ssm


@dataclass(frozen=True)
class BoundaryContrastConfig:  # §3.3, Eq. (4)
    enabled: bool = False
    k: int = 3
    tau: float = 0.1
    weight: float = 0.2


@dataclass(frozen=True)
class DenoisingConfig:  # §3.4, DN-DETR, training only
    enabled: bool = False
    copies: int = 5
    sigma: float = 0.05
    weight: float = 1.0


@dataclass(frozen=True)
class CascadeConfig:  # §3.5, Eq. (6)
    enabled: bool = False
    kappa: float = 0.05
    margin: int = 10  # frames added on each side of the predicted interval
    heads: int = 4
    ffn_dim: int = 512
    max_crop: int = 401  # rows of the learnable intra-crop position embedding
    weight: float = 1.0
    detach_memory: bool = True


@dataclass(frozen=True)
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


# the switchable components of SystemConfig (each has ``enabled``), in the report's order
COMPONENTS = ("coarse", "rerank", "mamba", "boundary_contrast", "dn", "cascade")
COMPONENT_TYPES = {name: type(getattr(SystemConfig(), name)) for name in COMPONENTS}


# ---------------------------------------------------------------------------------------------
# Training and inference
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleConfig:
    """The schedule of one training stage (``train.pretrain`` / ``train.finetune``)."""

    epochs: int = 200
    lr: float = 1e-4


@dataclass(frozen=True)
class TrainConfig:
    """Knobs shared by both training stages (``train:`` without its two schedules)."""

    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    batch_size: int = 32
    seed: int = 2023
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads; 0 = torch default
    cpu_keep_freed_memory: bool = True  # glibc keeps freed activations for reuse (speed only)
    amp: bool = False  # mixed precision on CUDA only
    eval_batch_size: int = 64


# the report's schedules (§2.4): 200 epochs each, pre-training at 1e-4, fine-tuning at 8e-5
SCHEDULES = {"pretrain": ScheduleConfig(200, 1e-4), "finetune": ScheduleConfig(200, 8e-5)}


@dataclass(frozen=True)
class SaliencyProposalsConfig:  # §3.6; whether slot 4 uses them: systems.<name>.fuse
    threshold: float = 0.5
    top_k: int = 10


@dataclass(frozen=True)
class EnsembleConfig:
    seeds: list[int] = field(default_factory=lambda: [2023, 42])


@dataclass(frozen=True)
class InferenceConfig:
    max_windows: int = 10  # windows written per query
    clamp_slack: float = 2.0  # clamp ends to duration + slack (GT ends can exceed duration)
    # §3.2: score = α p_fg + (1 - α) rerank score, for systems with re-ranking; 1.0 = p_fg
    rerank_alpha: float = 1.0


@dataclass(frozen=True)
class FusionConfig:
    """Slot 4 (report §3.6): a system that fuses the seeds of a trained one at inference."""

    base: str = "slot3"  # the trained system whose seeds are fused
    ensemble: bool = True  # pool all seeds of ``ensemble.seeds``; False: the first seed only
    saliency_proposals: bool = True  # add each member's saliency runs (knobs: saliency_proposals)


# ---------------------------------------------------------------------------------------------
# Significance, strata and figures (the ``analysis`` stage)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComparisonConfig:
    system: str = ""  # compared ...
    against: str = ""  # ... with this one: differences are system - against


@dataclass(frozen=True)
class AnalysisConfig:
    seed: int = 0  # seeds the resampling and the choice of the queries drawn as timelines
    resamples: int = 10000  # bootstrap and sign-flip resamples per test
    confidence: float = 0.95  # of the paired bootstrap intervals
    fdr: float = 0.05  # Benjamini-Hochberg level: q below it is marked significant
    against_previous: bool = True  # each system against the one before it in ``systems:``
    against: list[str] = field(default_factory=lambda: ["baseline"])  # each system against these
    pairs: list[ComparisonConfig] = field(default_factory=list)  # further comparisons
    timelines: int = 4  # development-testing queries drawn for the timeline figure

    def validate(self, systems: list[str]) -> None:
        """The systems it names exist (its numbers are checked on loading, amr.config.constraints)."""
        from amr.config.constraints import check_field

        for f in dataclasses.fields(self):  # also for a config built in code (amr compare)
            problem = check_field("AnalysisConfig", f.name, getattr(self, f.name), f"analysis.{f.name}")
            if problem:
                raise ConfigError(problem)
        named = [("analysis.against", n) for n in self.against] + [
            (f"analysis.pairs[{i}]", n) for i, p in enumerate(self.pairs) for n in (p.system, p.against)]
        for where, name in named:
            if name not in systems:
                raise ConfigError(f"{where}: {name!r} is not a system; systems: {systems}")

    def comparisons(self, systems: list[str]) -> list[tuple[str, str]]:
        """(system, against) pairs in a fixed order, each once: against the previous system,
        against each reference, then the extra pairs."""
        self.validate(systems)
        out: list[tuple[str, str]] = []
        for i, name in enumerate(systems):
            if self.against_previous and i > 0:
                out.append((name, systems[i - 1]))
            out += [(name, ref) for ref in self.against if ref != name]
        out += [(p.system, p.against) for p in self.pairs]
        return list(dict.fromkeys(pair for pair in out if pair[0] != pair[1]))


# ---------------------------------------------------------------------------------------------
# DCASE submission package (SPEC §5): the ``submission:`` block of params.yaml
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AffiliationConfig:
    abbreviation: str = ""  # institute abbreviation, e.g. "KAIST"
    institute: str = ""
    department: str = ""
    location: str = ""


@dataclass(frozen=True)
class AuthorConfig:
    lastname: str = ""
    firstname: str = ""
    email: str = ""
    corresponding: bool = False
    affiliation: AffiliationConfig = field(default_factory=AffiliationConfig)


# Free-text system descriptions may be one string or a list of strings; both go to the meta
# file unchanged.
Description = str | list[str]


@dataclass(frozen=True)
class SubmittedSystemConfig:
    """One submitted system; its position in ``SubmissionConfig.systems`` is its number k."""

    run: str = ""  # the pipeline system (key of ``systems:``) whose outputs are submitted
    name: str = ""
    abbreviation: str = ""  # at most 10 characters
    # empty: what made the packed features (data/features/extractor.json), so the meta file
    # names the extractor actually used
    audio_models: Description = ""
    text_models: Description = ""
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


@dataclass(frozen=True)
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
# Where Table 2 runs (``amr ablations submit``): no stage reads this, so it re-runs nothing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterConfig:
    executor: str = "slurm"  # slurm | local (jobs as processes on this machine)
    partition: str = ""  # SLURM partition; "" = the cluster's default
    gpus: int = 1  # GPUs per job; one job runs one experiment
    cpus: int = 8  # CPU cores per job
    mem_gb: int = 32  # memory per job
    time_min: int = 1440  # wall-clock limit per job, minutes
    git_remote: str = "origin"  # jobs clone this remote and push their experiments to it
    workdir: str = "runs/cluster"  # job clones (<workdir>/<row>) and logs (<workdir>/logs)



# sections that are one dataclass each (``data`` and ``train`` are split in two, see Params)
SECTION_TYPES: dict[str, type] = {
    "model": BackboneConfig,
    "loss": LossWeights,
    "matcher": MatcherCosts,
    **COMPONENT_TYPES,
    "saliency_proposals": SaliencyProposalsConfig,
    "ensemble": EnsembleConfig,
    "inference": InferenceConfig,
    "submission": SubmissionConfig,
    "analysis": AnalysisConfig,
    "cluster": ClusterConfig,
}


# ---------------------------------------------------------------------------------------------
# Generic dict <-> dataclass conversion (strict: unknown keys are errors)
# ---------------------------------------------------------------------------------------------
# Called once per leaf of the raw dict that a dataclass field consumes: (dotted path, class,
# field name). Lets a test prove that every leaf of params.yaml is read by exactly one field.
LeafReader = typing.Callable[[str, type, str], None]


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def from_dict(cls: type, raw: dict | None, where: str = "", on_leaf: LeafReader | None = None) -> Any:
    """Build dataclass ``cls`` from ``raw``; unknown keys and wrong types raise ConfigError.

    ``where`` is the dotted path of ``raw`` in the params file, for messages (and ``on_leaf``).
    """
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
    from amr.config.constraints import check_field

    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        key = f"{where}.{f.name}".lstrip(".")
        kwargs[f.name] = _coerce(raw[f.name], hints[f.name], key, on_leaf, (cls, f.name))
        problem = check_field(cls.__name__, f.name, kwargs[f.name], key)  # the valid range, or choices
        if problem:
            raise ConfigError(problem)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str, on_leaf: LeafReader | None, owner: tuple[type, str]) -> Any:
    if _is_dataclass_type(tp):  # a nested section, or the items of e.g. list[AuthorConfig]
        return from_dict(tp, value, key, on_leaf)
    origin = typing.get_origin(tp)
    if origin is list and _is_dataclass_type(typing.get_args(tp)[0]):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if not value and on_leaf is not None:  # an empty list is a leaf of its own
            on_leaf(key, *owner)
        return [from_dict(typing.get_args(tp)[0], v, f"{key}[{i}]", on_leaf) for i, v in enumerate(value)]
    if on_leaf is not None:
        on_leaf(key, *owner)
    return _coerce_leaf(value, tp, key)


def _coerce_leaf(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
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
        return [_coerce_leaf(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    # typing.Union[...] or PEP 604 ``a | b`` (whose origin is types.UnionType)
    if origin is typing.Union or getattr(origin, "__name__", "") == "UnionType":
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce_leaf(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} does not fit {tp}")
    raise ConfigError(f"{key}: no conversion for type {tp}")  # a field type this module lacks


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def config_hash(obj: Any) -> str:
    """Stable short hash of a config (dataclass or dict), e.g. to guard resumed training."""
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
