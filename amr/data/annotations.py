"""Annotation JSONL (one query per line): ``qid, query, duration, vid[, relevant_windows]``.

Parsing is strict: any malformed line raises :class:`DataError` naming ``file:line`` and the
offending key, so a broken annotation file is fixed at its source instead of half-loaded.
Content faults that are part of the real data (bogus windows, ends past the duration) are
NOT errors here; :mod:`amr.data.pack` cleans and counts them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from amr.util.errors import AmrError
from amr.util.io import iter_jsonl


class DataError(AmrError, ValueError):
    """Input data (annotations or features) that cannot be used; the message names the file."""


@dataclass
class Query:
    qid: str
    query: str
    vid: str
    duration: float  # seconds, as annotated
    windows: list[tuple[float, float]] | None  # seconds; None for the blind evaluation list


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_query(record: object, where: str) -> Query:
    """Validate one decoded JSON line; ``where`` is ``file:line`` for error messages."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("qid", "query", "vid", "duration"):
        if key not in record:
            raise DataError(f"{where}: missing key '{key}'")
    qid = record["qid"]
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or str(qid) == "":
        raise DataError(f"{where}: key 'qid' must be a non-empty string, got {qid!r}")
    for key in ("query", "vid"):
        if not isinstance(record[key], str) or not record[key]:
            raise DataError(f"{where}: key '{key}' must be a non-empty string, got {record[key]!r}")
    duration = record["duration"]
    if not _is_number(duration) or duration <= 0:
        raise DataError(f"{where}: key 'duration' must be a positive number, got {duration!r}")

    windows = record.get("relevant_windows")
    if windows is not None:
        if not isinstance(windows, list):
            raise DataError(f"{where}: key 'relevant_windows' must be a list, got {windows!r}")
        for i, w in enumerate(windows):
            if not (isinstance(w, list) and len(w) == 2 and all(_is_number(x) for x in w)):
                raise DataError(
                    f"{where}: key 'relevant_windows': window {i} is not a [start, end] pair "
                    f"of numbers: {w!r}"
                )
        windows = [(float(s), float(e)) for s, e in windows]
    return Query(str(qid), record["query"], record["vid"], float(duration), windows)


def read_annotations(path: str | Path) -> list[Query]:
    """All queries of an annotation file, in file order. Blank lines are ignored."""
    queries: list[Query] = []
    first_line: dict[str, str] = {}
    for where, record in iter_jsonl(path, DataError, "annotation file"):
        q = parse_query(record, where)
        if q.qid in first_line:
            raise DataError(
                f"{where}: key 'qid': duplicate qid {q.qid!r} (first on line {first_line[q.qid]})"
            )
        first_line[q.qid] = where.rsplit(":", 1)[1]
        queries.append(q)
    if not queries:
        raise DataError(f"{path}: annotation file holds no queries")
    return queries
