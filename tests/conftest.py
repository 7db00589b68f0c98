"""Fixtures shared by the test modules: the repository's params.yaml, raw and loaded."""
from pathlib import Path

import pytest

from amr.config.params import Params, read_params_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw():
    return read_params_file(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def params(raw):
    return Params(raw)
