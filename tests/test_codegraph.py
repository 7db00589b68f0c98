"""The code graph of a stage script, and its on-disk cache of parsed source facts."""
from __future__ import annotations

from pathlib import Path

import pytest

from amr.util import codegraph


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A stage script importing amr.model, which names a C source beside it; a fresh cache and
    an empty in-process memory (each test is a new process as far as the cache can tell)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(codegraph, "_FACTS", {})
    root = tmp_path / "project"
    (root / "stages").mkdir(parents=True)
    (root / "amr").mkdir()
    (root / "stages" / "train.py").write_text('"""Train."""\nfrom amr.model import build\n')
    (root / "amr" / "__init__.py").write_text("")
    (root / "amr" / "model.py").write_text('SOURCE = "kernel.c"\n\ndef build():\n    return 1\n')
    (root / "amr" / "kernel.c").write_text("int f(void) { return 1; }\n")
    (root / "amr" / "unused.py").write_text("X = 2\n")
    return root


def _graph(root: Path):
    return codegraph.project_files(["stages/train.py"], root), codegraph.code_digest(["stages/train.py"], root)


def _cache_entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "amr" / "codegraph").rglob("*.json"))


def test_a_new_process_takes_the_parsed_facts_from_the_cache(project, tmp_path, monkeypatch):
    files, digest = _graph(project)
    assert [f.as_posix() for f in files] == ["amr/__init__.py", "amr/kernel.c", "amr/model.py", "stages/train.py"]
    assert len(_cache_entries(tmp_path)) == 3  # the three Python files, once each

    monkeypatch.setattr(codegraph, "_FACTS", {})  # a new process
    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed a file whose facts are cached")
    monkeypatch.setattr(codegraph.ast, "parse", no_parsing)
    assert _graph(project) == (files, digest)


def test_an_edit_is_parsed_anew_and_a_docstring_edit_keeps_the_digest(project, tmp_path, monkeypatch):
    files, digest = _graph(project)
    monkeypatch.setattr(codegraph, "_FACTS", {})
    (project / "stages" / "train.py").write_text('"""Train the model."""\nfrom amr.model import build\n')
    assert _graph(project) == (files, digest)  # docstrings are not what the code does

    monkeypatch.setattr(codegraph, "_FACTS", {})
    (project / "stages" / "train.py").write_text('"""Train."""\nfrom amr.unused import X\n')
    new_files, new_digest = _graph(project)
    assert [f.as_posix() for f in new_files] == ["amr/__init__.py", "amr/unused.py", "stages/train.py"]
    assert new_digest != digest


def test_a_torn_cache_entry_is_parsed_around_and_rewritten(project, tmp_path, monkeypatch):
    files, digest = _graph(project)
    for entry in _cache_entries(tmp_path):
        entry.write_text('{"names": ["amr.unused"')  # cut short
    monkeypatch.setattr(codegraph, "_FACTS", {})
    assert _graph(project) == (files, digest)
    assert all(entry.read_text().endswith("}") for entry in _cache_entries(tmp_path))


def test_an_unwritable_cache_only_costs_the_parsing(project, tmp_path, monkeypatch):
    expected = _graph(project)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setattr(codegraph, "_FACTS", {})
    assert _graph(project) == expected
