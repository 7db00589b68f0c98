"""DCASE 2026 Task 6 submission: package the zip, write meta files and a report, validate."""
from amr.reporting.submission.meta import (
    SubmissionError,
    SystemInfo,
    build_meta,
    read_metrics,
    read_system_info,
)
from amr.reporting.submission.package import SystemInputs, build_submission
from amr.reporting.submission.report_pdf import render_report, write_report_pdf
from amr.reporting.submission.validate import read_eval_list, validate_submission

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
