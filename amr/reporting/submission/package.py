"""Build the DCASE 2026 Task 6 submission zip (SPEC §5) from the pipeline's output files.

Layout::

    <Lastname>_<INST>_task6.zip
      task6/<Lastname>_<INST>_task6.technical_report.pdf
      task6/<label>/<label>.output.jsonl     one line per evaluation query, list order
      task6/<label>/<label>.meta.yaml        label = <Lastname>_<INST>_task6_<k>, k = 1..4

Submitted lines copy ``qid, query, vid, duration`` from the evaluation list; only the windows
come from the predictions (scores dropped, rank order kept, seconds rounded as SPEC §4).
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

from amr.config.schema import SubmissionConfig
from amr.reporting.submission.meta import (
    METRIC_KEYS,
    SubmissionError,
    build_meta,
    check_team,
    dump_meta,
    read_metrics,
    read_system_info,
    team_file_prefix,
)
from amr.reporting.submission.report_pdf import render_report
from amr.reporting.submission.validate import (
    END_SLACK,
    MAX_WINDOWS,
    EvalQuery,
    label_for,
    meta_member,
    output_member,
    read_eval_list,
    report_member,
    window_problem,
    zip_name,
)
from amr.util.io import iter_jsonl, write_bytes_atomic

ROUND_TO = 1.0  # seconds: windows are rounded to whole audio clips (1-s frames, SPEC §4)


@dataclass
class SystemInputs:
    """The files one pipeline system wrote; ``run`` is its key in ``submission.systems[*].run``
    (name, abbreviation and descriptions come from there)."""

    run: str
    predictions: Path  # predictions JSONL on the evaluation list
    metrics: Path  # development-testing metrics JSON
    system_info: Path  # system-info JSON of the training stage


def round_window(start: float, end: float, duration: float) -> list[float]:
    """Snap to whole clips, clamp to ``[0, duration + END_SLACK]`` (never tighter: GT ends can
    pass the duration), and widen a window that rounding collapsed to one clip."""
    limit = duration + END_SLACK
    start = min(max(round(start / ROUND_TO) * ROUND_TO, 0.0), limit)
    end = min(max(round(end / ROUND_TO) * ROUND_TO, 0.0), limit)
    if end <= start:
        end = min(start + ROUND_TO, limit)
        start = end - ROUND_TO
    return [float(start), float(end)]


def read_predictions(path: str | Path) -> dict[str, tuple[str, list]]:
    """``qid -> ("file:line", pred_relevant_windows)`` of a predictions JSONL file."""
    records: dict[str, tuple[str, list]] = {}
    for where, rec in iter_jsonl(path, SubmissionError, "predictions file"):
        if "qid" not in rec or "pred_relevant_windows" not in rec:
            raise SubmissionError(f"{where}: expected an object with 'qid' and "
                                  "'pred_relevant_windows'")
        qid = str(rec["qid"])
        if qid in records:
            raise SubmissionError(f"{where}: qid {qid!r} already at {records[qid][0]}")
        records[qid] = (where, rec["pred_relevant_windows"])
    return records


def submitted_windows(windows, query: EvalQuery, where: str) -> list[list[float]]:
    """The at most 10 best-first ``[start, end]`` pairs of one prediction record."""
    if not isinstance(windows, list) or not windows:
        raise SubmissionError(f"{where}: qid {query.qid!r} has no predicted window; every "
                              "evaluation query needs at least one (none is invented here)")
    out = []
    for i, window in enumerate(windows[:MAX_WINDOWS]):
        if not (isinstance(window, list) and len(window) in (2, 3)
                and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                        and math.isfinite(x) for x in window)):
            raise SubmissionError(f"{where}: qid {query.qid!r} window {i} is not "
                                  f"[start, end(, score)] of finite numbers: {window!r}")
        pair = round_window(window[0], window[1], query.duration)
        why = window_problem(pair, query.duration)
        if why:  # only when the duration is shorter than one clip
            raise SubmissionError(f"{where}: qid {query.qid!r} window {i}: {why}")
        out.append(pair)
    return out


def output_lines(predictions: Path, queries: list[EvalQuery]) -> str:
    """The ``.output.jsonl`` text: one line per evaluation query, in the list's order."""
    records = read_predictions(predictions)
    wanted = [q.qid for q in queries]
    missing = [q for q in wanted if q not in records]
    extra = sorted(set(records) - set(wanted))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} evaluation qid(s) missing: {missing[:5]}")
        if extra:
            parts.append(f"{len(extra)} qid(s) not in the evaluation list: {extra[:5]}")
        raise SubmissionError(f"{predictions}: predictions do not cover the evaluation list "
                              f"exactly; " + "; ".join(parts))
    lines = []
    for q in queries:
        where, windows = records[q.qid]
        lines.append(json.dumps({
            "qid": q.qid, "query": q.query, "vid": q.vid, "duration": q.duration,
            "pred_relevant_windows": submitted_windows(windows, q, where),
        }, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def _ordered_inputs(systems: list[SystemInputs], team: SubmissionConfig) -> list[SystemInputs]:
    by_run = {}
    for s in systems:
        if s.run in by_run:
            raise SubmissionError(f"system {s.run!r} given twice")
        by_run[s.run] = s
    configured = [s.run for s in team.systems]
    unknown = sorted(set(by_run) - set(configured))
    missing = [r for r in configured if r not in by_run]
    if unknown or missing:
        raise SubmissionError(
            f"the systems given {sorted(by_run)} do not match params.yaml "
            f"submission.systems[*].run {configured}: "
            + (f"not configured {unknown}; " if unknown else "")
            + (f"no files given for {missing}" if missing else ""))
    return [by_run[r] for r in configured]


def with_feature_models(team: SubmissionConfig, features: dict | None) -> SubmissionConfig:
    """Systems whose ``audio_models`` / ``text_models`` are empty get the description of the
    extractor that made the features (``amr.data.sources.describe_features``); without that
    record they say so."""
    if not features:
        unknown = "not stated (no extractor record of the features; set it in params.yaml)"
        features = {"audio_models": unknown, "text_models": unknown}
    systems = [dataclasses.replace(s, audio_models=s.audio_models or features["audio_models"],
                                   text_models=s.text_models or features["text_models"])
               for s in team.systems]
    return dataclasses.replace(team, systems=systems)


def build_submission(systems: list[SystemInputs], team: SubmissionConfig, eval_list: Path,
                     out_dir: Path, report_pdf: Path | None = None,
                     table_rows: list[dict] | None = None, table_notes: str = "",
                     features: dict | None = None) -> Path:
    """Write ``<out_dir>/<Lastname>_<INST>_task6.zip`` atomically and return its path.

    System k is ``team.systems[k-1]``; ``systems`` supplies the files of each configured run.
    ``report_pdf`` (else ``team.report_pdf``) is copied; when neither is set a short report
    is generated with Table 1 from ``table_rows`` (default: one row per submitted system from
    its metrics; extra rows such as the baseline may be passed in; ``table_notes`` below it).
    ``features`` (the packed features' ``extractor.json``) fills the systems' empty
    ``audio_models`` / ``text_models``.
    """
    team = with_feature_models(team, features)
    check_team(team)
    prefix = team_file_prefix(team)
    queries = read_eval_list(eval_list)
    ordered = _ordered_inputs(systems, team)

    members: dict[str, bytes] = {}
    rows = []
    for k, (config, inputs) in enumerate(zip(team.systems, ordered), start=1):
        label = label_for(prefix, k)
        metrics = read_metrics(inputs.metrics)
        info = read_system_info(inputs.system_info)
        members[output_member(label)] = output_lines(inputs.predictions, queries).encode()
        members[meta_member(label)] = dump_meta(
            build_meta(label, config, team, info, metrics)).encode()
        rows.append({"system": config.name, **{m: metrics[m] for m in METRIC_KEYS}})

    pdf_path = report_pdf or (Path(team.report_pdf) if team.report_pdf else None)
    if pdf_path is not None:
        try:
            pdf = Path(pdf_path).read_bytes()
        except FileNotFoundError:
            raise SubmissionError(f"{pdf_path}: technical report PDF not found") from None
        if not pdf.startswith(b"%PDF"):
            raise SubmissionError(f"{pdf_path}: not a PDF file (does not start with %PDF)")
    else:
        for row in table_rows or []:
            missing = [k for k in ("system", *METRIC_KEYS) if k not in row]
            if missing:
                raise SubmissionError(f"table row {row!r} lacks {missing}")
        pdf = render_report(team.title, team.authors, team.abstract,
                            table_rows if table_rows is not None else rows, table_notes)
    members = {report_member(prefix): pdf, **members}

    target = Path(out_dir) / zip_name(prefix)
    _write_zip_atomically(target, members)
    return target


def _write_zip_atomically(target: Path, members: dict[str, bytes]) -> None:
    """Build the zip in memory and write it atomically: a reader (or an upload) never sees a
    half-written zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            # fixed timestamp: the same inputs give a byte-identical zip (stable DVC hash)
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    write_bytes_atomic(target, buffer.getvalue())
