"""The valid values of params.yaml's knobs: one table beside the dataclasses of :mod:`amr.config.schema`.

:func:`amr.config.schema.from_dict` checks every value it reads against :data:`FIELDS` (its dataclass
and field name), and :class:`amr.config.params.Params` checks the relations between knobs of different
fields (:data:`RELATIONS`) once all sections are read, so a value that cannot run stops the
loading of params.yaml, naming the key, the value and what is allowed, before any data is read.
"""
from __future__ import annotations

from dataclasses import dataclass

# the choices of the knobs that name one (params.yaml documents each)
ACTIVATIONS = ("prelu", "relu", "gelu")
ATTENTION_INITS = ("multihead", "linear")
REFINE_INITS = ("random", "zero")
T2V_RESIDUALS = ("qd_detr", "postnorm")
SALIENCY_WINDOWS = ("first", "all")
MAMBA_INITS = ("xavier", "mamba_ssm")
CPU_KERNELS = ("auto", "native", "torch")
EXECUTORS = ("slurm", "local")


@dataclass(frozen=True)
class Bound:
    """A numeric range; ``None`` leaves a side open-ended."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed
    high_open: bool = False

    def admits(self, value) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


@dataclass(frozen=True)
class OneOf:
    values: tuple

    def admits(self, value) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class NonEmpty:
    def admits(self, value) -> bool:
        return bool(value)

    def describe(self) -> str:
        return "text (not empty)"


@dataclass(frozen=True)
class Either:
    """Any of several constraints (e.g. 0 meaning "off", else at least 12)."""

    options: tuple

    def admits(self, value) -> bool:
        return any(o.admits(value) for o in self.options)

    def describe(self) -> str:
        return " or ".join(o.describe() for o in self.options)


COUNT = Bound(1)  # how many of something: layers, heads, epochs, windows, frames
NON_NEGATIVE = Bound(0)  # loss weights, costs, decays, slacks, seeds
POSITIVE = Bound(0, low_open=True)  # learning rates, temperatures, lengths in seconds
PROBABILITY = Bound(0, 1, high_open=True)  # dropout rates: 1 would drop everything
UNIT = Bound(0, 1)  # blends and thresholds on [0, 1] scores
OPEN_UNIT = Bound(0, 1, True, True)  # confidence levels, FDR levels
NON_EMPTY = NonEmpty()

# dataclass name -> field -> constraint (fields left out take any value of their type)
FIELDS: dict[str, dict[str, object]] = {
    "DataConfig": {"feature_dim": COUNT, "text_dim": COUNT, "max_audio_frames": COUNT,
                   "max_text_tokens": COUNT, "clip_length": POSITIVE, "max_windows": COUNT,
                   "max_gt_length": POSITIVE},
    "DataSource": {"source": OneOf(("demo", "download", "local", "extract")),
                   "length_tolerance_s": NON_NEGATIVE},
    "DemoSource": {"seed": NON_NEGATIVE},
    "DemoSizes": {**{name: NON_NEGATIVE for name in (
        "clotho_train_queries", "clotho_val_queries", "castella_train_queries", "castella_val_queries",
        "castella_test_queries", "evaluation_queries", "end_overruns_per_split", "frame_mismatches_per_split",
        "bogus_windows")},
        "clotho_duration": Bound(20), "castella_min_duration": Bound(20), "castella_max_duration": Bound(20),
        "duration_skew": POSITIVE, "max_queries_per_recording": Bound(1, 5),
        "event_types": Either((Bound(0, 0), Bound(12)))},
    "DownloadSource": {"retries": NON_NEGATIVE, "timeout_s": POSITIVE},
    "ExtractSource": {"backend": OneOf(("m2d", "plugin", "test")), "device": OneOf(("auto", "cpu", "cuda")),
                      "batch_size": COUNT, "workers": NON_NEGATIVE},
    "BackboneConfig": {"hidden_dim": COUNT, "input_proj_layers": COUNT, "input_dropout": PROBABILITY,
                       "dropout": PROBABILITY, "attention_dropout": PROBABILITY, "heads": COUNT,
                       "ffn_dim": COUNT, "activation": OneOf(ACTIVATIONS),
                       "cpu_kernels": OneOf(CPU_KERNELS), "t2v_layers": COUNT,
                       "encoder_layers": COUNT, "decoder_layers": COUNT, "num_queries": COUNT,
                       "attention_init": OneOf(ATTENTION_INITS), "refine_init": OneOf(REFINE_INITS),
                       "t2v_residual": OneOf(T2V_RESIDUALS)},
    "LossWeights": {"span_l1": NON_NEGATIVE, "span_giou": NON_NEGATIVE, "label": NON_NEGATIVE,
                    "background_weight": NON_NEGATIVE, "saliency": NON_NEGATIVE, "saliency_margin": NON_NEGATIVE,
                    "saliency_windows": OneOf(SALIENCY_WINDOWS), "saliency_pairs": NON_NEGATIVE},
    "MatcherCosts": {"span_l1": NON_NEGATIVE, "span_giou": NON_NEGATIVE, "label": NON_NEGATIVE},
    "CoarseConfig": {"gamma": NON_NEGATIVE, "pool": COUNT},
    "RerankConfig": {"weight": NON_NEGATIVE},
    "MambaConfig": {"depth": COUNT, "d_state": COUNT, "d_conv": COUNT, "expand": COUNT, "chunk": COUNT,
                    "init": OneOf(MAMBA_INITS)},
    "BoundaryContrastConfig": {"k": COUNT, "tau": POSITIVE, "weight": NON_NEGATIVE},
    "DenoisingConfig": {"copies": COUNT, "sigma": NON_NEGATIVE, "weight": NON_NEGATIVE},
    "CascadeConfig": {"kappa": NON_NEGATIVE, "margin": NON_NEGATIVE, "heads": COUNT, "ffn_dim": COUNT,
                      "max_crop": COUNT, "weight": NON_NEGATIVE},
    "ScheduleConfig": {"epochs": COUNT, "lr": POSITIVE},
    "TrainConfig": {"weight_decay": NON_NEGATIVE, "grad_clip": NON_NEGATIVE, "batch_size": COUNT,
                    "seed": NON_NEGATIVE, "device": OneOf(("auto", "cpu", "cuda")), "threads": NON_NEGATIVE,
                    "eval_batch_size": COUNT},
    "SaliencyProposalsConfig": {"threshold": UNIT, "top_k": COUNT},
    "EnsembleConfig": {"seeds": NON_NEGATIVE},  # each seed
    "InferenceConfig": {"max_windows": COUNT, "clamp_slack": NON_NEGATIVE, "rerank_alpha": UNIT},
    "AnalysisConfig": {"seed": NON_NEGATIVE, "resamples": COUNT, "confidence": OPEN_UNIT, "fdr": OPEN_UNIT,
                       "timelines": NON_NEGATIVE},
    "ClusterConfig": {"executor": OneOf(EXECUTORS), "gpus": NON_NEGATIVE, "cpus": COUNT,
                      "mem_gb": COUNT, "time_min": COUNT, "git_remote": NON_EMPTY, "workdir": NON_EMPTY},
}


def check_field(owner: str, name: str, value, key: str) -> str | None:
    """The reason ``value`` of ``owner.name`` (at params key ``key``) cannot run, else None.
    A list is checked item by item."""
    constraint = FIELDS.get(owner, {}).get(name)
    if constraint is None:
        return None
    for item in value if isinstance(value, list) else [value]:
        if not constraint.admits(item):
            kind = ""
            if isinstance(constraint, (Bound, Either)):
                kind = "an integer " if isinstance(item, int) else "a number "
            return f"{key}: {item!r} is not allowed; expected {kind}{constraint.describe()}"
    return None


def _divides(part_key: str, whole_key: str):
    def check(value) -> str | None:
        part, whole = value(part_key), value(whole_key)
        if whole % part:
            return (f"{part_key}: {part} does not divide {whole_key} {whole}; every attention head "
                    "takes an equal share of the width")
        return None
    return check


def _multiple_of_four(value) -> str | None:
    width = value("model.hidden_dim")
    if width % 4:
        return (f"model.hidden_dim: {width} is not a multiple of 4; the sine encodings of the "
                "(centre, width) anchors split the width in four")
    return None


def _durations(value) -> str | None:
    low, high = value("data.demo.sizes.castella_min_duration"), value("data.demo.sizes.castella_max_duration")
    if low > high:
        return (f"data.demo.sizes.castella_min_duration: {low} is above castella_max_duration {high}")
    return None


# relations between knobs: each gets ``value(key)`` and returns the reason they cannot run
RELATIONS = (_divides("model.heads", "model.hidden_dim"), _divides("cascade.heads", "model.hidden_dim"),
             _multiple_of_four, _durations)
