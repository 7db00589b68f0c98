"""DCASE 2026 Task 6 submission: package the zip, write meta files and a report, validate."""
from amr.submission.meta import (
    SubmissionError,
    SystemInfo,
    build_meta,
    read_metrics,
    read_system_info,
)
from amr.submission.package import SystemInputs, build_submission
from amr.submission.report_pdf import render_report, write_report_pdf
from amr.submission.validate import read_eval_list, validate_submission

__all__ = [
    "SubmissionError",
    "SystemInfo",
    "SystemInputs",
    "build_meta",
    "build_submission",
    "read_eval_list",
    "read_metrics",
    "read_system_info",
    "render_report",
    "validate_submission",
    "write_report_pdf",
]
