"""Budget presets: ``paper`` (the report's recipe) and ``demo`` (the whole DAG on a laptop CPU).

A preset sets the compute budget only: widths, epochs, learning rates, batch size and CPU
threads. Every component, loss and inference knob is the same in both, so a demo run
exercises exactly the paper's systems.

``params.yaml`` holds the values that run; a preset is applied by writing it there:

- ``amr profile``: which preset the file's values are (or how they differ from the nearest one);
- ``amr profile NAME``: write preset ``NAME`` into params.yaml (in place, comments kept);
- ``amr profile NAME --set-args``: the same change as ``-S key=value`` arguments, for
  ``dvc exp run $(amr profile paper --set-args)``.

``NAME`` is ``paper``, ``demo`` or a YAML file of ``key: value`` (dotted or nested keys).
The paper values are the dataclass defaults of :mod:`amr.config.schema` (one place for the report's
numbers); the demo values are below.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from amr.config.schema import ConfigError

DEMO = {
    # widths: a quarter of the report's (256 / 1024 / 8 heads; cascade FFN 512)
    "model.hidden_dim": 64,
    "model.ffn_dim": 256,
    "model.heads": 4,
    "cascade.ffn_dim": 128,
    # the fused attention path: attention dropout costs the demo's attention encoder 1.4x a step
    "model.attention_dropout": 0.0,
    # dense saliency supervision: every window and every (inside, outside) pair, where the authors
    # label the first window and draw 2 pairs; at the demo's few hundred steps the baseline learns
    # twice as much with it (docs/model.md, three seeds)
    "loss.saliency_windows": "all",
    "loss.saliency_pairs": 0,
    # mamba-ssm's state-space initialisation: with the authors' xavier draw of A_log and
    # dt_proj.weight the Mamba systems barely learn in the demo's steps (docs/model.md)
    "mamba.init": "mamba_ssm",
    # few steps on little data: fewer epochs, higher learning rates than the report's
    "train.pretrain.epochs": 6,
    "train.pretrain.lr": 1.0e-3,
    "train.finetune.epochs": 20,
    "train.finetune.lr": 1.0e-3,
    "train.batch_size": 16,  # at 8 one seed in three collapses to flat scores (docs/model.md)
    "train.threads": 2,
}
PRESET_NAMES = ("paper", "demo")


def paper_preset() -> dict:
    """The report's values of the demo preset's keys: the defaults of amr.config.schema."""
    from amr.config.schema import SCHEDULES, SECTION_TYPES, TrainConfig

    out = {}
    for key in DEMO:
        section, _, rest = key.partition(".")
        if section == "train":
            stage, _, leaf = rest.partition(".")
            out[key] = getattr(SCHEDULES[stage], leaf) if stage in SCHEDULES else getattr(TrainConfig(), rest)
            continue
        node = SECTION_TYPES[section]()
        for name in rest.split("."):
            node = getattr(node, name)
        out[key] = node
    return out


def load_preset(name: str) -> dict:
    """``paper``, ``demo`` or a YAML preset file -> {dotted key: value}."""
    if name == "paper":
        return paper_preset()
    if name == "demo":
        return dict(DEMO)
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"preset {name!r}: not one of {list(PRESET_NAMES)} and no such file")
    from amr.config.files import read_params_file

    return _flatten(read_params_file(path))


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------------------------------------
# Which preset a configuration is
# ---------------------------------------------------------------------------------------------
def differences(params, preset: dict) -> dict:
    """{key: value in params} for the preset keys whose value differs from the preset's."""
    return {k: params.value(k) for k, v in preset.items() if params.value(k) != v}


def budget_label(params) -> str:
    """``demo``, ``paper``, or the nearest preset and what differs: ``demo + train.batch_size=8``."""
    best_name, best_diff = None, None
    for name in PRESET_NAMES:
        diff = differences(params, load_preset(name))
        if best_diff is None or len(diff) < len(best_diff):
            best_name, best_diff = name, diff
    if not best_diff:
        return best_name
    return best_name + " + " + ", ".join(f"{k}={format_value(v)}" for k, v in best_diff.items())


# ---------------------------------------------------------------------------------------------
# Writing a preset into params.yaml
# ---------------------------------------------------------------------------------------------
def format_value(value) -> str:
    """A YAML scalar that every YAML reader (1.1 and 1.2) reads back as the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        if e and "." not in mantissa:  # YAML 1.1 needs a dot for an exponent float: 8.0e-05
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, str):
        # a plain word that YAML 1.1 reads back as itself (not yes/no/null/...) goes unquoted
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) and yaml.safe_load(value) == value:
            return value
        return json.dumps(value)
    raise ConfigError(f"cannot write {value!r} as a preset value")


def set_args(preset: dict) -> list[str]:
    """``-S key=value`` arguments of ``dvc exp run`` that apply ``preset``."""
    args = []
    for key, value in preset.items():
        args += ["-S", f"{key}={format_value(value)}"]
    return args


_PLAIN_SCALAR = re.compile(r"[^,\]\}#\s](?:[^,\]\}#]*[^,\]\}#\s])?")


def write_preset(path: str | Path, preset: dict) -> list[str]:
    """Set each key of ``preset`` in the YAML file ``path``, changing only those values' text
    (comments, order and layout stay). Returns the keys whose value changed."""
    from ruamel.yaml import YAML

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    tree = YAML().load(text)
    edits = []  # (line, column, old text, new text)
    for key, value in preset.items():
        *parents, last = key.split(".")
        node = tree
        for name in parents:
            node = node.get(name) if hasattr(node, "get") else None
        if not hasattr(node, "lc") or last not in node:
            raise ConfigError(f"{path}: has no key {key}; add it to the file first")
        line, column = node.lc.value(last)
        match = _PLAIN_SCALAR.match(lines[line], column)
        if match is None or isinstance(node[last], (dict, list)):
            raise ConfigError(f"{path}:{line + 1}: {key} is not a plain scalar")
        new = format_value(value)
        old = node[last]
        same = old == value and all(isinstance(old, t) == isinstance(value, t) for t in (bool, float))
        if not same:
            edits.append((line, column, match.group(0), new, key))
    for line, column, old, new, _ in sorted(edits, reverse=True):  # right to left per line
        lines[line] = lines[line][:column] + new + lines[line][column + len(old):]
    if edits:
        from amr.util.io import write_text_atomic

        write_text_atomic(path, "".join(lines))
    return [key for *_, key in edits]
