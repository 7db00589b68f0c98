"""Check a DCASE 2026 Task 6 submission zip against SPEC §5 and report every problem found.

Each problem is one line ``<file inside the zip>: [<rule>] <what is wrong>`` so that a user can
fix them all in one pass. The checks are strict on what the specification fixes (layout, names,
keys, window rules, meta fields) and lenient on what it does not (compression method, key
order, trailing newline, extra meta keys, int vs float seconds).
"""
from __future__ import annotations

import json
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from amr.util.io import iter_jsonl

# --- format constants (SPEC §5), shared with the packager -----------------------------------
TOP_FOLDER = "task6"
TEAM_PATTERN = re.compile(r"^([A-Za-z]+)_([A-Za-z0-9]+)$")
LABEL_PATTERN = re.compile(r"^([A-Za-z]+_[A-Za-z0-9]+)_task6_([1-4])$")
ZIP_NAME_PATTERN = re.compile(r"^([A-Za-z]+_[A-Za-z0-9]+)_task6\.zip$")
MAX_SYSTEMS = 4
MAX_WINDOWS = 10
END_SLACK = 2.0  # window ends may exceed the duration by this much (GT ends do, SPEC §1)
ABBREVIATION_MAX = 10
OUTPUT_KEYS = ("qid", "query", "vid", "duration", "pred_relevant_windows")
AUTHOR_KEYS = ("lastname", "firstname", "email", "corresponding", "affiliation")
AFFILIATION_KEYS = ("abbreviation", "institute", "department", "location")
MODEL_TEXT_KEYS = ("audio_models", "text_models", "LLMs")
DATASET_KEYS = ("data_augmentation", "external_data_resources", "audio_captions")
RESULT_KEYS = ("Recall1@0.7", "Recall1@0.5")



def team_prefix(lastname: str, institute: str) -> str:
    return f"{lastname}_{institute}"


def zip_name(prefix: str) -> str:
    return f"{prefix}_task6.zip"


def label_for(prefix: str, k: int) -> str:
    return f"{prefix}_task6_{k}"


def report_member(prefix: str) -> str:
    return f"{TOP_FOLDER}/{prefix}_task6.technical_report.pdf"


def output_member(label: str) -> str:
    return f"{TOP_FOLDER}/{label}/{label}.output.jsonl"


def meta_member(label: str) -> str:
    return f"{TOP_FOLDER}/{label}/{label}.meta.yaml"


# --- the evaluation list --------------------------------------------------------------------
@dataclass(frozen=True)
class EvalQuery:
    qid: str
    query: str
    vid: str
    duration: int | float


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_eval_list(path: str | Path) -> list[EvalQuery]:
    """The blind evaluation queries in file order, values exactly as written (duration kept
    int when it is int, so that the submitted lines copy it unchanged)."""
    queries: list[EvalQuery] = []
    seen: set[str] = set()
    for where, rec in iter_jsonl(path, ValueError, "evaluation list (give --eval-list)"):
        for key in ("qid", "query", "vid"):
            if not isinstance(rec.get(key), str) or not rec[key]:
                raise ValueError(f"{where}: key '{key}' must be a non-empty string")
        if not _is_number(rec.get("duration")) or rec["duration"] <= 0:
            raise ValueError(f"{where}: key 'duration' must be a positive number")
        if rec["qid"] in seen:
            raise ValueError(f"{where}: duplicate qid {rec['qid']!r}")
        seen.add(rec["qid"])
        queries.append(EvalQuery(rec["qid"], rec["query"], rec["vid"], rec["duration"]))
    if not queries:
        raise ValueError(f"{path}: the evaluation list holds no queries")
    return queries


# --- window rule, shared with the packager --------------------------------------------------
def window_problem(window, duration: float) -> str | None:
    """Why ``window`` is not a valid submitted ``[start, end]`` pair, or None."""
    if not isinstance(window, list) or len(window) != 2:
        return f"{window!r} is not a [start, end] pair"
    start, end = window
    if not (_is_number(start) and _is_number(end)):
        return f"{window!r}: start and end must be finite numbers"
    if start < 0:
        return f"{window!r}: start < 0"
    if start >= end:
        return f"{window!r}: start must be < end"
    if end > duration + END_SLACK:
        return f"{window!r}: end > duration + {END_SLACK:g} ({duration} + {END_SLACK:g})"
    return None


# --- the checks -----------------------------------------------------------------------------
class _Problems(list):
    """Problem lines; past ``LIMIT`` of one rule in one file the rest are only counted, so a
    systematic fault (e.g. every window keeps its score) does not bury the other problems."""

    LIMIT = 20

    def __init__(self):
        super().__init__()
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, member: str, rule: str, detail: str) -> None:
        key = (member, rule)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] <= self.LIMIT:
            self.append(f"{member}: [{rule}] {detail}")

    def result(self) -> list[str]:
        more = [f"{member}: [{rule}] … and {n - self.LIMIT} more problem(s) of this rule"
                for (member, rule), n in self.counts.items() if n > self.LIMIT]
        return list(self) + more


def validate_submission(zip_path: str | Path, eval_list: str | Path) -> list[str]:
    """Every problem of the submission zip (empty list: valid). Raises ValueError only when
    the evaluation list itself cannot be read."""
    zip_path = Path(zip_path)
    queries = read_eval_list(eval_list)
    problems = _Problems()
    name = zip_path.name

    match = ZIP_NAME_PATTERN.match(name)
    expected_prefix = match.group(1) if match else None
    if not match:
        problems.add(name, "zip-name", "zip must be named <Lastname>_<INST>_task6.zip "
                     "(ASCII letters; INST letters/digits)")
    try:
        archive = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        problems.add(name, "zip", "file not found")
        return problems.result()
    except zipfile.BadZipFile as exc:
        problems.add(name, "zip", f"not a readable zip archive ({exc})")
        return problems.result()

    with archive:
        infos = archive.infolist()
        files = [i.filename for i in infos if not i.is_dir()]
        layout = _check_layout(files, expected_prefix, problems)
        for label, k in layout.labels:
            out_name, meta_name = output_member(label), meta_member(label)
            if out_name in layout.present:
                _check_output(out_name, _read(archive, out_name, problems), queries, problems)
            if meta_name in layout.present:
                _check_meta(meta_name, _read(archive, meta_name, problems), label, problems)
        if layout.report is not None:
            data = _read(archive, layout.report, problems)
            if data is not None and not data.startswith(b"%PDF"):
                problems.add(layout.report, "pdf", "technical report does not start with %PDF")
    return problems.result()


def _read(archive: zipfile.ZipFile, member: str, problems: _Problems) -> bytes | None:
    try:
        return archive.read(member)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, RuntimeError, ValueError) as exc:
        problems.add(member, "zip", f"cannot be extracted ({exc})")
        return None


@dataclass
class _Layout:
    labels: list[tuple[str, int]]  # (label, k) of the system folders, sorted by k
    present: set[str]
    report: str | None  # the technical report member, when present


def _check_layout(files: list[str], expected_prefix: str | None, problems: _Problems) -> _Layout:
    present = set(files)
    for member in sorted({f for f in files if files.count(f) > 1}):
        problems.add(member, "layout", "appears more than once in the archive")

    # System folders first: their labels tell the team prefix when the zip name does not.
    folders: dict[str, list[str]] = {}
    top_files: list[str] = []
    for member in files:
        parts = member.split("/")
        if "\\" in member:
            problems.add(member, "layout", "path uses backslashes; zip paths must use '/'")
        elif parts[0] != TOP_FOLDER:
            problems.add(member, "layout", f"stray file outside the single top folder "
                         f"'{TOP_FOLDER}/' (everything must be under {TOP_FOLDER}/)")
        elif len(parts) == 2:
            top_files.append(member)
        elif len(parts) == 3:
            folders.setdefault(parts[1], []).append(member)
        else:
            problems.add(member, "layout", f"stray file nested too deep; expected "
                         f"{TOP_FOLDER}/<label>/<label>.output.jsonl or .meta.yaml")

    labels: list[tuple[str, int]] = []
    prefixes: set[str] = set()
    for folder in sorted(folders):
        m = LABEL_PATTERN.match(folder)
        if not m:
            for member in folders[folder]:
                problems.add(member, "label", f"folder '{folder}' is not a system label "
                             "<Lastname>_<INST>_task6_<k> (k = 1..4; ^[A-Za-z]+_[A-Za-z0-9]+"
                             "_task6_[1-4]$)")
            continue
        prefix, k = m.group(1), int(m.group(2))
        prefixes.add(prefix)
        if expected_prefix is not None and prefix != expected_prefix:
            problems.add(f"{TOP_FOLDER}/{folder}/", "label", f"label prefix '{prefix}' differs "
                         f"from the zip name's '{expected_prefix}'")
        labels.append((folder, k))
        wanted = {output_member(folder), meta_member(folder)}
        for member in sorted(set(folders[folder]) - wanted):
            problems.add(member, "layout", f"stray file; a system folder holds only "
                         f"{folder}.output.jsonl and {folder}.meta.yaml")
        for member in sorted(wanted - set(folders[folder])):
            problems.add(member, "layout", "missing")
    labels.sort(key=lambda item: item[1])
    if len(prefixes) > 1:
        problems.add(f"{TOP_FOLDER}/", "label", f"system labels use different team prefixes "
                     f"{sorted(prefixes)}; all must be <Lastname>_<INST>")
    if not labels:
        problems.add(f"{TOP_FOLDER}/", "systems", "no system folder <label>/ found (1 to 4 needed)")
    if len(labels) > MAX_SYSTEMS:
        problems.add(f"{TOP_FOLDER}/", "systems", f"{len(labels)} systems; at most {MAX_SYSTEMS}")

    prefix = expected_prefix or (next(iter(prefixes)) if len(prefixes) == 1 else None)
    report = report_member(prefix) if prefix else None
    report_pattern = report or f"{TOP_FOLDER}/<Lastname>_<INST>_task6.technical_report.pdf"
    pdfs = [f for f in top_files if f.endswith(".technical_report.pdf")]
    for member in top_files:
        if member == report:
            continue
        if member in pdfs:
            problems.add(member, "pdf-name", f"technical report must be named {report_pattern}")
        else:
            problems.add(member, "layout", f"stray file directly in {TOP_FOLDER}/; only the "
                         "technical report PDF and system folders belong there")
    if report is None or report not in present:
        problems.add(report_pattern, "pdf", "technical report PDF missing")
        report = None
    return _Layout(labels, present, report)


def _check_output(member: str, data: bytes | None, queries: list[EvalQuery],
                  problems: _Problems) -> None:
    if data is None:
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add(member, "encoding", f"not UTF-8 text ({exc})")
        return
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing newline(s) are fine
        lines.pop()
    by_qid = {q.qid: q for q in queries}
    seen_qids: list[str] = []
    for number, line in enumerate(lines, start=1):
        where = f"line {number}"
        if not line.strip():
            problems.add(member, "lines", f"{where}: blank line; one JSON object per query")
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.add(member, "json", f"{where}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(rec, dict):
            problems.add(member, "json", f"{where}: expected a JSON object")
            continue
        missing = [k for k in OUTPUT_KEYS if k not in rec]
        extra = sorted(set(rec) - set(OUTPUT_KEYS))
        if missing:
            problems.add(member, "keys", f"{where}: missing key(s) {missing}")
        if extra:
            problems.add(member, "keys", f"{where}: unexpected key(s) {extra}; "
                         f"allowed: {list(OUTPUT_KEYS)}")
        for key in ("qid", "query", "vid"):
            if key in rec and not isinstance(rec[key], str):
                problems.add(member, "types", f"{where}: '{key}' must be a string, "
                             f"got {rec[key]!r}")
        if "duration" in rec and not _is_number(rec["duration"]):
            problems.add(member, "types", f"{where}: 'duration' must be a number, "
                         f"got {rec['duration']!r}")
        qid = rec.get("qid")
        expected = by_qid.get(qid) if isinstance(qid, str) else None
        if isinstance(qid, str):
            seen_qids.append(qid)
        if expected is not None:
            for key in ("query", "vid", "duration"):
                if key in rec and rec[key] != getattr(expected, key):
                    problems.add(member, "copied-fields", f"{where}: '{key}' of qid {qid!r} "
                                 f"is {rec[key]!r}; the evaluation list has "
                                 f"{getattr(expected, key)!r}")
        if "pred_relevant_windows" in rec:
            duration = expected.duration if expected is not None else rec.get("duration")
            _check_windows(member, where, rec["pred_relevant_windows"], duration, problems)

    _check_query_coverage(member, seen_qids, len(lines), queries, problems)


def _check_windows(member: str, where: str, windows, duration, problems: _Problems) -> None:
    if not isinstance(windows, list):
        problems.add(member, "types", f"{where}: 'pred_relevant_windows' must be a list, "
                     f"got {windows!r}")
        return
    if not 1 <= len(windows) <= MAX_WINDOWS:
        problems.add(member, "window-count", f"{where}: {len(windows)} windows; "
                     f"1 to {MAX_WINDOWS} required")
    for i, window in enumerate(windows):
        if _is_number(duration):
            why = window_problem(window, duration)
        elif not (isinstance(window, list) and len(window) == 2):
            why = f"{window!r} is not a [start, end] pair"
        else:
            why = None
        if why:
            problems.add(member, "window", f"{where}: window {i}: {why}")


def _check_query_coverage(member: str, seen: list[str], n_lines: int,
                          queries: list[EvalQuery], problems: _Problems) -> None:
    expected = [q.qid for q in queries]
    if n_lines != len(expected):
        problems.add(member, "lines", f"{n_lines} lines; expected {len(expected)} "
                     "(one per evaluation query)")
    known = set(expected)
    counts: dict[str, int] = {}
    for qid in seen:
        counts[qid] = counts.get(qid, 0) + 1
    missing = [q for q in expected if q not in counts]
    unknown = [q for q in seen if q not in known]
    duplicated = sorted(q for q, c in counts.items() if c > 1)
    if missing:
        problems.add(member, "qids", f"{len(missing)} evaluation qid(s) missing: "
                     f"{_preview(missing)}")
    if unknown:
        problems.add(member, "qids", f"{len(unknown)} qid(s) not in the evaluation list: "
                     f"{_preview(unknown)}")
    if duplicated:
        problems.add(member, "qids", f"qid(s) on more than one line: {_preview(duplicated)}")
    if not (missing or unknown or duplicated) and seen != expected:
        line = next(i for i, (a, b) in enumerate(zip(seen, expected), start=1) if a != b)
        problems.add(member, "order", f"lines are not in evaluation-list order: line {line} "
                     f"has qid {seen[line - 1]!r}, expected {expected[line - 1]!r}")


def _preview(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def _check_meta(member: str, data: bytes | None, label: str, problems: _Problems) -> None:
    if data is None:
        return
    try:
        meta = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.add(member, "yaml", "does not parse as YAML (" + " ".join(str(exc).split())
                     + ")")
        return
    if not isinstance(meta, dict):
        problems.add(member, "yaml", "top level must be a mapping")
        return
    check = _MetaChecker(member, problems)

    sub = check.mapping(meta, "", "submission")
    if sub is not None:
        if check.text(sub, "submission", "label") is not None and sub["label"] != label:
            problems.add(member, "meta-label", f"submission.label {sub['label']!r} does not "
                         f"match its folder {label!r}")
        check.text(sub, "submission", "name")
        abbreviation = check.text(sub, "submission", "abbreviation")
        if abbreviation is not None and len(abbreviation) > ABBREVIATION_MAX:
            problems.add(member, "meta-abbreviation", f"submission.abbreviation "
                         f"{abbreviation!r} has {len(abbreviation)} characters; at most "
                         f"{ABBREVIATION_MAX}")
        check.authors(sub)

    system = check.mapping(meta, "", "system")
    if system is not None:
        model = check.mapping(system, "system", "model")
        if model is not None:
            for key in MODEL_TEXT_KEYS:
                check.description(model, "system.model", key)
            for key in ("trainable_parameters", "freezed_parameters"):
                check.count(model, "system.model", key)
            check.loss_function(model, "system.model", "loss_function")
        dataset = check.mapping(system, "system", "dataset")
        if dataset is not None:
            for key in DATASET_KEYS:
                check.description(dataset, "system.dataset", key)
        if check.present(system, "system", "ensemble") and not isinstance(system["ensemble"], bool):
            problems.add(member, "meta-type", f"system.ensemble must be true/false, "
                         f"got {system['ensemble']!r}")

    results = check.mapping(meta, "", "results")
    if results is not None:
        dev = check.mapping(results, "results", "development_testing")
        if dev is not None:
            for key in RESULT_KEYS:
                if not check.present(dev, "results.development_testing", key):
                    continue
                value = dev[key]
                if not _is_number(value) or not 0 <= value <= 100:
                    problems.add(member, "meta-results", f"results.development_testing.{key} "
                                 f"must be a number in [0, 100] (×100 scale), got {value!r}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class _MetaChecker:
    """Small helpers that add a problem and return None when a meta field is wrong."""

    def __init__(self, member: str, problems: _Problems):
        self.member, self.problems = member, problems

    def present(self, parent: dict, where: str, key: str) -> bool:
        if key not in parent or parent[key] is None:
            self.problems.add(self.member, "meta-field", f"{_join(where, key)} is missing or empty")
            return False
        return True

    def mapping(self, parent: dict, where: str, key: str) -> dict | None:
        if not self.present(parent, where, key):
            return None
        value, path = parent[key], _join(where, key)
        if not isinstance(value, dict):
            self.problems.add(self.member, "meta-type", f"{path} must be a mapping")
            return None
        return value

    def text(self, parent: dict, where: str, key: str) -> str | None:
        if not self.present(parent, where, key):
            return None
        value, path = parent[key], _join(where, key)
        if not isinstance(value, str) or not value.strip():
            self.problems.add(self.member, "meta-type", f"{path} must be a non-empty string, "
                              f"got {value!r}")
            return None
        return value

    def description(self, parent: dict, where: str, key: str) -> None:
        """Free text: a non-empty string or a list of non-empty strings."""
        if not self.present(parent, where, key):
            return
        value, path = parent[key], _join(where, key)
        ok = (isinstance(value, str) and value.strip()) or (
            isinstance(value, list) and value
            and all(isinstance(v, str) and v.strip() for v in value))
        if not ok:
            self.problems.add(self.member, "meta-type", f"{path} must be a non-empty string "
                              f"or list of strings (write 'none' if nothing), got {value!r}")

    def count(self, parent: dict, where: str, key: str) -> None:
        if not self.present(parent, where, key):
            return
        value, path = parent[key], _join(where, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.problems.add(self.member, "meta-type", f"{path} must be a non-negative "
                              f"integer, got {value!r}")

    def loss_function(self, parent: dict, where: str, key: str) -> None:
        self.description(parent, where, key)

    def authors(self, sub: dict) -> None:
        if not self.present(sub, "submission", "authors"):
            return
        authors = sub["authors"]
        if not isinstance(authors, list) or not authors:
            self.problems.add(self.member, "meta-authors", "submission.authors must be a "
                              "non-empty list")
            return
        corresponding = 0
        for i, author in enumerate(authors):
            path = f"submission.authors[{i}]"
            if not isinstance(author, dict):
                self.problems.add(self.member, "meta-authors", f"{path} must be a mapping")
                continue
            for key in ("lastname", "firstname", "email"):
                self.text(author, path, key)
            if isinstance(author.get("email"), str) and "@" not in author["email"]:
                self.problems.add(self.member, "meta-authors", f"{path}.email "
                                  f"{author['email']!r} is not an e-mail address")
            if self.present(author, path, "corresponding"):
                if not isinstance(author["corresponding"], bool):
                    self.problems.add(self.member, "meta-type", f"{path}.corresponding must be "
                                      f"true/false, got {author['corresponding']!r}")
                elif author["corresponding"]:
                    corresponding += 1
            affiliation = self.mapping(author, path, "affiliation")
            if affiliation is not None:
                for key in AFFILIATION_KEYS:
                    self.text(affiliation, f"{path}.affiliation", key)
        if corresponding == 0:
            self.problems.add(self.member, "meta-authors", "no author has corresponding: true")
