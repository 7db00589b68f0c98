"""The per-system meta file (SPEC §5) from the team config and the files the runs wrote.

Team and descriptive fields come from ``params.yaml`` (:class:`amr.config.schema.SubmissionConfig`);
parameter counts, loss terms, the ensemble flag and development-testing recalls come from the
training stage's system-info JSON and the evaluation stage's metrics JSON. Nothing is typed
twice.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from amr.config.schema import AuthorConfig, SubmissionConfig, SubmittedSystemConfig
from amr.evaluation.metrics import HEADLINE_METRICS
from amr.reporting.submission.validate import (
    ABBREVIATION_MAX,
    MAX_SYSTEMS,
    TEAM_PATTERN,
    team_prefix,
)
from amr.util.errors import AmrError

METRIC_KEYS = HEADLINE_METRICS


class SubmissionError(AmrError, ValueError):
    """An input of the submission package is unusable; the message names the file or key."""


@dataclass
class SystemInfo:
    """What the training stage records about one system (``system_info.json``)."""

    trainable_parameters: int
    frozen_parameters: int
    loss_function: list[str]
    ensemble: bool
    members: int


def _read_json_object(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SubmissionError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SubmissionError(f"{path}: {what} must be a JSON object")
    return data


def read_metrics(path: str | Path) -> dict[str, float]:
    """Development-testing metrics ``{"R1@0.5", "R1@0.7", "mAP", "mAP@0.5", "mAP@0.75"}``
    (×100)."""
    data = _read_json_object(Path(path), "metrics JSON")
    metrics = {}
    for key in METRIC_KEYS:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not 0 <= value <= 100:
            raise SubmissionError(f"{path}: key '{key}' must be a number in [0, 100] "
                                  f"(metrics ×100), got {value!r}")
        metrics[key] = float(value)
    return metrics


def read_system_info(path: str | Path) -> SystemInfo:
    data = _read_json_object(Path(path), "system-info JSON")
    for key in ("trainable_parameters", "frozen_parameters", "members"):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SubmissionError(f"{path}: key '{key}' must be a non-negative integer, "
                                  f"got {value!r}")
    losses = data.get("loss_function")
    if not (isinstance(losses, list) and losses and all(isinstance(x, str) and x for x in losses)):
        raise SubmissionError(f"{path}: key 'loss_function' must be a non-empty list of "
                              f"loss-term names, got {losses!r}")
    if not isinstance(data.get("ensemble"), bool):
        raise SubmissionError(f"{path}: key 'ensemble' must be true/false, "
                              f"got {data.get('ensemble')!r}")
    if data["members"] < 1 or data["ensemble"] != (data["members"] > 1):
        raise SubmissionError(f"{path}: 'ensemble' is {data['ensemble']} but 'members' is "
                              f"{data['members']}; an ensemble has more than one member")
    return SystemInfo(data["trainable_parameters"], data["frozen_parameters"], list(losses),
                      data["ensemble"], data["members"])


# --- team -----------------------------------------------------------------------------------
def corresponding_author(team: SubmissionConfig) -> AuthorConfig:
    for author in team.authors:
        if author.corresponding:
            return author
    raise SubmissionError("params.yaml submission.authors: no author has corresponding: true")


def team_file_prefix(team: SubmissionConfig) -> str:
    """``<Lastname>_<INST>`` of the file names: the corresponding author's lastname and
    affiliation abbreviation, unless ``file_lastname`` / ``file_institute`` override them."""
    author = corresponding_author(team)
    prefix = team_prefix(team.file_lastname or author.lastname,
                         team.file_institute or author.affiliation.abbreviation)
    if not TEAM_PATTERN.match(prefix):
        raise SubmissionError(
            f"params.yaml submission: file-name prefix {prefix!r} is not <Lastname>_<INST> "
            "with ASCII letters (INST: letters/digits); set submission.file_lastname / "
            "submission.file_institute to a plain spelling")
    return prefix


def check_team(team: SubmissionConfig) -> None:
    """Raise one SubmissionError listing every missing or malformed team/system field."""
    problems = []
    for key in ("title", "abstract"):
        if not getattr(team, key).strip():
            problems.append(f"submission.{key} is empty")
    if not team.authors:
        problems.append("submission.authors is empty; add at least the corresponding author")
    for i, author in enumerate(team.authors):
        for key in ("lastname", "firstname", "email"):
            if not getattr(author, key).strip():
                problems.append(f"submission.authors[{i}].{key} is empty")
        if author.email and "@" not in author.email:
            problems.append(f"submission.authors[{i}].email {author.email!r} is not an address")
        for key in ("abbreviation", "institute", "department", "location"):
            if not getattr(author.affiliation, key).strip():
                problems.append(f"submission.authors[{i}].affiliation.{key} is empty")
    if team.authors and not any(a.corresponding for a in team.authors):
        problems.append("submission.authors: no author has corresponding: true")
    if not 1 <= len(team.systems) <= MAX_SYSTEMS:
        problems.append(f"submission.systems holds {len(team.systems)} systems; 1 to "
                        f"{MAX_SYSTEMS} allowed")
    runs = [s.run for s in team.systems]
    for i, system in enumerate(team.systems):
        where = f"submission.systems[{i}]"
        for key in ("run", "name", "abbreviation"):
            if not getattr(system, key).strip():
                problems.append(f"{where}.{key} is empty")
        if len(system.abbreviation) > ABBREVIATION_MAX:
            problems.append(f"{where}.abbreviation {system.abbreviation!r} is longer than "
                            f"{ABBREVIATION_MAX} characters")
        if runs.count(system.run) > 1:
            problems.append(f"{where}.run {system.run!r} is submitted more than once")
        for key in ("audio_models", "text_models", "llms", "data_augmentation",
                    "external_data_resources", "audio_captions"):
            if not _filled(getattr(system, key)):
                problems.append(f"{where}.{key} is empty (write 'none' if nothing)")
    if not problems and team.authors:
        try:
            team_file_prefix(team)
        except SubmissionError as exc:
            problems.append(str(exc))
    if problems:
        raise SubmissionError("params.yaml: the submission block is incomplete:\n  "
                              + "\n  ".join(problems))


def _filled(value: str | list[str]) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return bool(value) and all(isinstance(v, str) and v.strip() for v in value)


# --- the meta file --------------------------------------------------------------------------
def author_entry(author: AuthorConfig) -> dict:
    a = author.affiliation
    return {
        "lastname": author.lastname,
        "firstname": author.firstname,
        "email": author.email,
        "corresponding": author.corresponding,
        "affiliation": {"abbreviation": a.abbreviation, "institute": a.institute,
                        "department": a.department, "location": a.location},
    }


def build_meta(label: str, system: SubmittedSystemConfig, team: SubmissionConfig,
               info: SystemInfo, metrics: dict[str, float]) -> dict:
    """The meta mapping of SPEC §5, in the specification's key order."""
    return {
        "submission": {
            "label": label,
            "name": system.name,
            "abbreviation": system.abbreviation,
            "authors": [author_entry(a) for a in team.authors],
        },
        "system": {
            "model": {
                "audio_models": system.audio_models,
                "text_models": system.text_models,
                "LLMs": system.llms,
                "trainable_parameters": info.trainable_parameters,
                "freezed_parameters": info.frozen_parameters,
                "loss_function": list(info.loss_function),
            },
            "dataset": {
                "data_augmentation": system.data_augmentation,
                "external_data_resources": system.external_data_resources,
                "audio_captions": system.audio_captions,
            },
            "ensemble": info.ensemble,
        },
        "results": {
            "development_testing": {
                "Recall1@0.7": round(metrics["R1@0.7"], 2),
                "Recall1@0.5": round(metrics["R1@0.5"], 2),
            }
        },
    }


def dump_meta(meta: dict) -> str:
    import yaml

    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False,
                          width=100)
