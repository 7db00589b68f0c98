"""Reading a params file, and setting a dotted key in its raw mapping (used by the loader and the
presets)."""
from __future__ import annotations

from pathlib import Path

from amr.config.schema import ConfigError


def read_params_file(path: str | Path) -> dict:
    """The raw mapping of a params file; a missing file or bad YAML names the file.

    Read as YAML 1.2, like DVC reads it, so that both see the same values: ``dvc exp run -S
    lr=8e-5`` writes ``8e-05``, a float in YAML 1.2 but a string in YAML 1.1."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            data = YAML(typ="safe", pure=True).load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def set_key(raw: dict, key: str, value) -> None:
    """Set dotted ``key`` (``train.pretrain.lr``) in a nested mapping, creating mappings."""
    *parents, last = key.split(".")
    node = raw
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {name!r} is not a mapping")
    node[last] = value
