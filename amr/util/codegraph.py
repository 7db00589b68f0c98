"""Which project files a script can execute, and a digest of their code.

The import graph is read from the source, not from a run: every ``import`` statement counts,
including those inside functions, and so does every package ``__init__.py`` on the way. A
module's resources count too: a string literal in it that names a file beside it (the C kernel
sources that :mod:`amr.kernels.native` compiles).

Two users: :mod:`amr.pipeline.dag` lists these files as a stage's DVC deps, so that a change to any of
them re-runs the stage; training records :func:`code_digest` of them, so that a run resumes only
with the code that started it.

Every stage process checks dvc.yaml and so walks the graph of every stage script. What a source
file imports, names and means is a function of its bytes alone, so it is parsed once per file
content: kept in this process and on disk (``$XDG_CACHE_HOME/amr/codegraph``), keyed by the
sha256 of the file, its module name and this module's own source (a change to how files are
read here makes new keys). An unreadable or unwritable cache is parsed around, never trusted.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from amr.util.io import user_cache_dir

ROOT = Path(__file__).resolve().parents[2]  # the folder holding amr/ (and, in a checkout, stages/)
PROJECT_PACKAGES = ("amr", "stages")


def _module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterable[str]:
    """Absolute names of every module an AST may import (``from a import b`` yields a, a.b)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


_FACTS: dict[tuple, dict] = {}  # (path, mtime, size, module) -> what the file imports, names, means
_SELF = hashlib.sha256(Path(__file__).read_bytes()).digest()  # the reader's version, in every key


def _parse_facts(data: bytes, path: Path, module: str) -> dict:
    """Module names the source may import, the file names it mentions, and the sha256 of its
    semantics (its syntax tree without docstrings)."""
    tree = ast.parse(data, filename=str(path))
    names = list(_imported_names(tree, module, path.name == "__init__.py"))
    strings = [node.value for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str)
               and "/" not in node.value and "." in node.value and len(node.value) < 100]
    return {"names": names, "strings": strings,
            "semantic": hashlib.sha256(_without_docstrings(tree)).hexdigest()}


def _file_facts(path: Path, module: str) -> dict:
    """:func:`_parse_facts` of one source file: from this process's memory while the file's
    mtime and size stand, else from the disk cache under its content key, else parsed."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, module)
    if key not in _FACTS:
        data = path.read_bytes()
        digest = hashlib.sha256(_SELF + module.encode() + b"\0" + data).hexdigest()
        cached = user_cache_dir("codegraph") / digest[:2] / f"{digest}.json"
        try:
            facts = json.loads(cached.read_text(encoding="utf-8"))
            if set(facts) != {"names", "strings", "semantic"}:
                raise ValueError(f"{cached}: not a codegraph entry")
        except (OSError, ValueError):
            facts = _parse_facts(data, path, module)
            _store(cached, json.dumps(facts))
        _FACTS[key] = facts
    return _FACTS[key]


def _store(path: Path, text: str) -> None:
    """Write a cache entry whole or not at all (temp file + rename); a cache that cannot be
    written is only slower."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def project_files(entries: Iterable[str | Path], root: Path = ROOT) -> list[Path]:
    """``entries`` and every project file they can execute, sorted, relative to ``root``."""
    root = Path(root).resolve()
    todo = [(root / e).resolve() if not Path(e).is_absolute() else Path(e) for e in entries]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (an entry or a module of the import graph)")
        seen.add(path)
        if path.suffix != ".py":
            continue
        facts = _file_facts(path, _module_name(root, path))
        for name in facts["names"]:
            if name.split(".")[0] not in PROJECT_PACKAGES:
                continue
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # each package on the way runs its __init__
                found = _module_file(root, ".".join(parts[:depth]))
                if found is not None:
                    todo.append(found)
        for value in facts["strings"]:  # resources: files beside the module that it names
            sibling = path.parent / value
            if sibling.is_file() and sibling.suffix != ".py":
                todo.append(sibling)
    return sorted(p.relative_to(root) for p in seen)


def _without_docstrings(tree: ast.Module) -> bytes:
    """The dump of ``tree`` with every docstring removed: comments and layout are not in a
    syntax tree, so only a change in what the code does changes it."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


def _semantic_digest(root: Path, rel: Path) -> bytes:
    """Python: the sha256 of its syntax tree without docstrings; any other file: of its bytes."""
    path = root / rel
    if path.suffix != ".py":
        return hashlib.sha256(path.read_bytes()).digest()
    return bytes.fromhex(_file_facts(path, _module_name(root, path))["semantic"])


def code_digest(entries: Iterable[str | Path], root: Path = ROOT) -> str:
    """sha256 over the code of :func:`project_files` (names + semantics): the same for a
    comment or docstring edit, different for any change in what the code does."""
    root = Path(root).resolve()
    h = hashlib.sha256()
    for rel in project_files(entries, root):
        h.update(rel.as_posix().encode() + b"\0")
        h.update(_semantic_digest(root, rel))
    return h.hexdigest()
