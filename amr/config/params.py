"""``params.yaml`` -> typed configuration: the one loader, with one merge rule.

Layout of the file (the file itself documents every knob):

- ``data``: the model-facing data knobs (:class:`~amr.config.schema.DataConfig`) and where the features
  come from (``source`` and its ``demo`` / ``local`` / ``download`` blocks).
- ``model``, ``loss``, ``matcher``: the shared detector (report §2).
- one section per component (``coarse``, ``rerank``, ``mamba``, ``boundary_contrast``, ``dn``,
  ``cascade``): its knobs, whichever system uses it. Whether a system uses it is said in
  ``systems`` only.
- ``systems``: name -> definition. A trained system lists the components it switches on
  (``slot1: {coarse: {enabled: true}, rerank: {enabled: true}}``); a fused system (slot 4) is
  ``{fuse: {base, ensemble, saliency_proposals}}``.
- ``saliency_proposals``, ``ensemble``, ``train`` (with ``train.pretrain`` and
  ``train.finetune``), ``inference``, ``submission``, ``analysis``.
- ``cluster``: where ``amr ablations submit`` runs Table 2; no stage reads it.

The values in the file are the values that run. The one merge rule: a system may set a knob of a
component it enables (``systems.slot1.coarse.gamma: 0.5``), and that value wins over the
component section (``coarse.gamma``) for that system only. Budget presets (``demo``,
``paper``) are written into the file by ``amr profile``; nothing is merged in at load time.

Every accessor records the params keys it reads. :mod:`amr.pipeline.dag` runs each stage's
``configure`` on a recording copy, so a stage declares exactly the keys its script reads.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from amr.config.files import read_params_file, set_key
from amr.config.schema import (
    COMPONENT_TYPES,
    COMPONENTS,
    SCHEDULES,
    SECTION_TYPES,
    AnalysisConfig,
    ClusterConfig,
    ConfigError,
    DataConfig,
    DataSource,
    EnsembleConfig,
    FusionConfig,
    InferenceConfig,
    LeafReader,
    SaliencyProposalsConfig,
    ScheduleConfig,
    SubmissionConfig,
    SystemConfig,
    TrainConfig,
    from_dict,
)

# sections no stage reads: where experiments run, not what they compute (changing them re-runs
# nothing)
NOT_STAGE_PARAMS = ("cluster",)
SOURCE_KEYS = tuple(f.name for f in dataclasses.fields(DataSource))  # data.source and its blocks
TOP_LEVEL = ("data", "train", "systems", *SECTION_TYPES)


def load_submission(path: str | Path) -> SubmissionConfig:
    """The ``submission:`` block of a params file (or of a team file holding only that block),
    for ``amr package`` outside the pipeline."""
    raw = read_params_file(path)
    if "submission" not in raw:
        raise ConfigError(f"{path}: no 'submission:' block (team and system information)")
    return from_dict(SubmissionConfig, raw["submission"], "submission")



class Params:
    """Typed view of a params file. Build once; hand the typed pieces to library code."""

    def __init__(self, raw: dict, path: str | Path = "params.yaml", on_leaf: LeafReader | None = None):
        self.path = Path(path)
        self._raw = raw
        self._reads: set[str] | None = None  # None: not recording
        unknown = sorted(set(raw) - set(TOP_LEVEL))
        if unknown:
            hint = ("; budget presets are written into the file with `amr profile NAME`"
                    if {"profile", "profiles"} & set(unknown) else "")
            raise ConfigError(f"{self.path}: unknown top-level key(s) {unknown}; known: "
                              f"{sorted(TOP_LEVEL)}{hint}")
        data = _mapping(raw.get("data"), "data")
        self._data = from_dict(DataConfig, {k: v for k, v in data.items() if k not in SOURCE_KEYS},
                               "data", on_leaf)
        self._source = from_dict(DataSource, {k: v for k, v in data.items() if k in SOURCE_KEYS},
                                 "data", on_leaf)
        train = _mapping(raw.get("train"), "train")
        self._train = from_dict(TrainConfig, {k: v for k, v in train.items() if k not in SCHEDULES},
                                "train", on_leaf)
        self._schedules = {}
        for stage, default in SCHEDULES.items():
            given = _mapping(train.get(stage), f"train.{stage}")
            parsed = from_dict(ScheduleConfig, given, f"train.{stage}", on_leaf)
            self._schedules[stage] = dataclasses.replace(default, **{k: getattr(parsed, k) for k in given})
        self._sections = {}
        for name, cls in SECTION_TYPES.items():
            section = _mapping(raw.get(name), name)
            if name in COMPONENT_TYPES and "enabled" in section:
                raise ConfigError(f"{name}.enabled: a component is switched on per system "
                                  f"(systems.<name>.{name}.enabled), not in its section")
            # component leaves are recorded per system that reads them (see _build_system)
            self._sections[name] = from_dict(cls, section, name,
                                             None if name in COMPONENT_TYPES else on_leaf)
        self._systems = self._build_systems(raw.get("systems"), on_leaf)
        self._check_relations()

    def _check_relations(self) -> None:
        """Knobs that must fit together (amr.config.constraints.RELATIONS), and in every trained
        system, whose own knobs may override a section's (a system's cascade heads divide the
        width)."""
        from amr.config.constraints import RELATIONS

        for relation in RELATIONS:
            problem = relation(self.value)
            if problem:
                raise ConfigError(problem)
        for name, cfg in self._systems.items():
            if isinstance(cfg, SystemConfig) and cfg.cascade.enabled and cfg.backbone.hidden_dim % cfg.cascade.heads:
                raise ConfigError(f"systems.{name}.cascade.heads: {cfg.cascade.heads} does not divide "
                                  f"model.hidden_dim {cfg.backbone.hidden_dim}")

    @classmethod
    def load(cls, path: str | Path = "params.yaml", preset: str | None = None) -> "Params":
        """Read ``path``; with ``preset`` (``paper``, ``demo`` or a preset file), its budget
        values replace the file's (what ``amr profile`` would write), in memory only."""
        raw = read_params_file(path)
        if preset is not None:
            from amr.config.presets import load_preset

            raw = copy.deepcopy(raw)
            for key, value in load_preset(preset).items():
                set_key(raw, key, value)
        return cls(raw, path)

    # -- recording what a stage reads ----------------------------------------------------------
    def recording(self) -> "Params":
        """A copy that records every key its accessors read (see :meth:`reads`)."""
        clone = copy.copy(self)
        clone._reads = set()
        return clone

    def reads(self) -> list[str]:
        """The keys read so far, sorted: a mapping whose every key was read stands for them
        (``data``), and a read key covers its children (``train.pretrain``)."""
        keys = set(self._reads or ())
        changed = True
        while changed:  # lift fully read mappings to their parent key, bottom up
            changed = False
            for key in sorted({k.rsplit(".", 1)[0] for k in keys if "." in k}, key=lambda k: -k.count(".")):
                node = self._raw
                for name in key.split("."):
                    node = node.get(name) if isinstance(node, dict) else None
                if isinstance(node, dict) and node and key not in keys \
                        and all(f"{key}.{child}" in keys for child in node):
                    keys.add(key)
                    changed = True
        return sorted(k for k in keys if not any(k.startswith(p + ".") for p in keys))

    def _read(self, *keys: str) -> None:
        if self._reads is not None:
            self._reads.update(keys)

    # -- sections ------------------------------------------------------------------------------
    @property
    def data(self) -> DataConfig:
        self._read(*(f"data.{f.name}" for f in dataclasses.fields(DataConfig)))
        return self._data

    @property
    def source(self) -> DataSource:
        self._read(*(f"data.{k}" for k in SOURCE_KEYS))
        return self._source

    @property
    def train(self) -> TrainConfig:
        self._read(*(f"train.{f.name}" for f in dataclasses.fields(TrainConfig)))
        return self._train

    def schedule(self, stage: str) -> ScheduleConfig:
        if stage not in self._schedules:
            raise ConfigError(f"unknown training stage {stage!r}; known: {sorted(self._schedules)}")
        self._read(f"train.{stage}")
        return self._schedules[stage]

    def _section(self, name: str):
        self._read(name)
        return self._sections[name]

    @property
    def ensemble(self) -> EnsembleConfig:
        return self._section("ensemble")

    @property
    def inference(self) -> InferenceConfig:
        return self._section("inference")

    @property
    def saliency_proposals(self) -> SaliencyProposalsConfig:
        return self._section("saliency_proposals")

    @property
    def analysis(self) -> AnalysisConfig:
        return self._section("analysis")

    @property
    def cluster(self) -> ClusterConfig:
        return self._section("cluster")

    @property
    def submission(self) -> SubmissionConfig:
        team = self._section("submission")
        for i, entry in enumerate(team.systems):
            if entry.run not in self._systems:
                raise ConfigError(f"submission.systems[{i}].run: {entry.run!r} is not a system; "
                                  f"systems: {sorted(self._systems)}")
        return team

    def value(self, key: str):
        """The typed value of one dotted key, e.g. ``model.hidden_dim`` or ``train.pretrain.lr``."""
        section, _, rest = key.partition(".")
        if section == "train" and rest.split(".")[0] in self._schedules:
            stage, _, rest = rest.partition(".")
            node = self._schedules[stage]
        elif section == "train":
            node = self._train
        elif section == "data":
            model_facing = {f.name for f in dataclasses.fields(DataConfig)}
            node = self._data if rest.split(".")[0] in model_facing else self._source
        elif section in self._sections:
            node = self._sections[section]
        else:
            raise ConfigError(f"{key}: not a params key")
        for name in rest.split(".") if rest else ():
            if not dataclasses.is_dataclass(node) or name not in {f.name for f in dataclasses.fields(node)}:
                raise ConfigError(f"{key}: not a params key")
            node = getattr(node, name)
        self._read(key)
        return node

    # -- systems -------------------------------------------------------------------------------
    # Which systems exist and which one a fusion pools is the pipeline's shape: dvc.yaml encodes
    # it, so reading it is not recorded (a stage checks that dvc.yaml matches it, amr.pipeline.dag).
    def system_names(self) -> list[str]:
        return list(self._systems)

    def trained_systems(self) -> list[str]:
        return [n for n, s in self._systems.items() if isinstance(s, SystemConfig)]

    def fused_systems(self) -> list[str]:
        return [n for n, s in self._systems.items() if isinstance(s, FusionConfig)]

    def fusion_base(self, name: str) -> str:
        return self._get_system(name, FusionConfig).base

    def system(self, name: str) -> SystemConfig:
        """The detector configuration of one trained system.

        Records the sections of every component the system names (``systems.<name>.<comp>``),
        switched on or off: an experiment that switches one off (``-S
        systems.slot1.rerank.enabled=false``) then reads a subset of what dvc.yaml declares,
        so the declared params stay the same under such overrides."""
        cfg = self._get_system(name, SystemConfig)
        named = self._raw["systems"][name] or {}
        self._read(*(f"data.{f.name}" for f in dataclasses.fields(DataConfig)),
                   "model", "loss", "matcher", f"systems.{name}",
                   *(c for c in COMPONENTS if c in named or getattr(cfg, c).enabled))
        return cfg

    def components(self, name: str) -> list[str]:
        """The components trained system ``name`` switches on (reads ``systems.<name>`` only)."""
        cfg = self._get_system(name, SystemConfig)
        self._read(f"systems.{name}")
        return [c for c in COMPONENTS if getattr(cfg, c).enabled]

    def fusion(self, name: str) -> FusionConfig:
        cfg = self._get_system(name, FusionConfig)
        self._read(f"systems.{name}")
        return cfg

    def seeds(self, name: str) -> list[int]:
        """Seeds a trained system is fine-tuned with: every ensemble seed for a fusion's base."""
        if any(self._systems[f].base == name for f in self.fused_systems()):
            self._read("ensemble.seeds")
            return list(self._sections["ensemble"].seeds)
        self._read("train.seed")
        return [self._train.seed]

    def fusion_members(self, name: str) -> list[int]:
        fusion = self.fusion(name)
        seeds = self.seeds(fusion.base)
        return seeds if fusion.ensemble else seeds[:1]

    def _get_system(self, name: str, kind: type):
        if name not in self._systems:
            raise ConfigError(f"{self.path}: unknown system {name!r}; systems: {sorted(self._systems)}")
        cfg = self._systems[name]
        if not isinstance(cfg, kind):
            what = "a fusion of trained systems, not a model" if kind is SystemConfig else \
                "a trained model, not a fusion"
            raise ConfigError(f"system {name!r} is {what}")
        return cfg

    def _build_systems(self, systems, on_leaf: LeafReader | None) -> dict:
        if not isinstance(systems, dict) or not systems:
            raise ConfigError(f"{self.path}: no 'systems:' map (name -> components)")
        built: dict = {}
        for name, entry in systems.items():
            entry = _mapping(entry, f"systems.{name}")
            if "fuse" in entry:
                if set(entry) != {"fuse"}:
                    raise ConfigError(f"systems.{name}: a fused system has only 'fuse:', got {sorted(entry)}")
                built[name] = from_dict(FusionConfig, entry["fuse"], f"systems.{name}.fuse", on_leaf)
            else:
                built[name] = self._build_system(name, entry, on_leaf)
        for name, cfg in built.items():
            if isinstance(cfg, FusionConfig) and not isinstance(built.get(cfg.base), SystemConfig):
                trained = sorted(n for n, c in built.items() if isinstance(c, SystemConfig))
                raise ConfigError(f"systems.{name}.fuse.base: {cfg.base!r} is not a trained system; "
                                  f"trained: {trained}")
        return built

    def _build_system(self, name: str, entry: dict, on_leaf: LeafReader | None) -> SystemConfig:
        unknown = sorted(set(entry) - set(COMPONENTS))
        if unknown:
            raise ConfigError(f"systems.{name}: unknown component(s) {unknown}; known: {list(COMPONENTS)}")
        components = {}
        for comp, cls in COMPONENT_TYPES.items():
            override = _mapping(entry.get(comp), f"systems.{name}.{comp}")
            if not override.get("enabled", False):
                if set(override) - {"enabled"}:
                    raise ConfigError(
                        f"systems.{name}.{comp}: sets {sorted(set(override) - {'enabled'})} but "
                        f"{comp} is not enabled for {name}; add 'enabled: true' or remove them")
                if on_leaf is not None and "enabled" in override:
                    on_leaf(f"systems.{name}.{comp}.enabled", cls, "enabled")
                components[comp] = cls()
                continue
            section = _mapping(self._raw.get(comp), comp)
            where = f"{comp} (with systems.{name}.{comp})"
            components[comp] = from_dict(cls, {**section, **override}, where)
            if on_leaf is not None:  # the system's own value wins: record where each one came from
                for key in {**section, **override}:
                    on_leaf(f"systems.{name}.{comp}.{key}" if key in override else f"{comp}.{key}", cls, key)
        return SystemConfig(
            name=name, data=self._data, backbone=self._sections["model"],
            loss=self._sections["loss"], matcher=self._sections["matcher"], **components,
        )


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value
