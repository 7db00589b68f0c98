"""Small file helpers: the one atomic writer (temp file in the same folder + rename) and
JSON/JSONL reading and writing.

Every output of the pipeline goes through :func:`atomic_path`, so that a kill or power loss at
any moment leaves either the previous complete file or the new one, never a torn file.
"""
from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

from amr.util.errors import AmrError


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path`` for the caller to write; on success the file is
    flushed to disk and renamed over ``path``, on any exception it is removed.

    The temporary file exists (empty) when the block starts; its hidden name is unique per
    process and call. The folder of ``path`` is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write into someone else's file; mode 0o666 lets the umask decide, as open()
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (the directory entry); not supported on every platform."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/amr/<parts>`` (``~/.cache/amr/...``): what can be rebuilt from its key
    (compiled kernels, parsed source facts), shared by every checkout and experiment workspace."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root, "amr", *parts)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def write_jsonl(path: str | Path, rows) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


class MissingInputError(AmrError, FileNotFoundError):
    """A file a step reads is not there (typically: the step that writes it has not run)."""


def require(path: str | Path, what: str = "input") -> Path:
    """``path`` when it exists, else MissingInputError naming it."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: {what} not found; run the step that writes it first "
                                "(`dvc repro` runs them in order)")
    return path


def read_json(path: str | Path):
    return json.loads(require(path).read_text(encoding="utf-8-sig"))


def iter_jsonl(path: str | Path, error: type[Exception] = ValueError, what: str = "file"):
    """Yield ``(where, record)`` for each non-blank line of a JSONL file; ``where`` is
    ``path:line`` for error messages. A missing file, non-UTF-8 text or a line that is not a
    JSON object raises ``error`` naming the file (and line). A UTF-8 byte-order mark (what Excel
    and Windows editors write first) is skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise error(f"{where}: expected a JSON object")
        yield where, record
