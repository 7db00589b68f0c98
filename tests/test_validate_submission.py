"""The submission validator: a valid zip passes; each broken rule is reported with its file."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from amr.cli import main as amr_main
from amr.config.schema import (
    AffiliationConfig,
    AuthorConfig,
    SubmissionConfig,
    SubmittedSystemConfig,
)
from amr.reporting.submission import SystemInputs, build_submission, validate_submission

EVAL_LIST = Path(__file__).parent / "fixtures" / "eval_list.jsonl"
PDF = "task6/Choi_KAIST_task6.technical_report.pdf"
OUT1 = "task6/Choi_KAIST_task6_1/Choi_KAIST_task6_1.output.jsonl"
META1 = "task6/Choi_KAIST_task6_1/Choi_KAIST_task6_1.meta.yaml"
META2 = "task6/Choi_KAIST_task6_2/Choi_KAIST_task6_2.meta.yaml"


@pytest.fixture(scope="module")
def valid_zip(tmp_path_factory) -> Path:
    """Two systems built by the packager from small hand-made run files."""
    root = tmp_path_factory.mktemp("submission")
    records = [json.loads(line) for line in EVAL_LIST.read_text().splitlines() if line.strip()]
    systems = []
    for run in ("slot1", "slot2"):
        preds = root / f"{run}.jsonl"
        preds.write_text("".join(json.dumps({**r, "pred_relevant_windows": [
            [2.0, 9.0, 0.8], [20.0, 31.0, 0.6], [40.0, 44.0, 0.2]]}) + "\n" for r in records))
        (root / f"{run}.metrics.json").write_text(json.dumps(
            {"R1@0.5": 47.07, "R1@0.7": 29.55, "mAP": 24.3, "mAP@0.5": 41.27, "mAP@0.75": 23.45}))
        (root / f"{run}.info.json").write_text(json.dumps(
            {"trainable_parameters": 7_000_000, "frozen_parameters": 0,
             "loss_function": ["span_l1", "label"], "ensemble": False, "members": 1}))
        systems.append(SystemInputs(run, preds, root / f"{run}.metrics.json",
                                    root / f"{run}.info.json"))
    kaist = AffiliationConfig("KAIST", "Korea Advanced Institute of Science and Technology",
                              "Mechanical Engineering", "Daejeon, South Korea")
    team = SubmissionConfig(
        title="A title", abstract="An abstract.",
        authors=[AuthorConfig("Choi", "Seungdeok", "choi@example.org", True, kaist)],
        systems=[SubmittedSystemConfig("slot1", "base", "M2Dbase"),
                 SubmittedSystemConfig("slot2", "mamba", "M2DMamba")])
    return build_submission(systems, team, EVAL_LIST, root / "out")


def members_of(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rewrite(valid_zip: Path, tmp_path: Path, edit, name: str = "Choi_KAIST_task6.zip",
            compression=zipfile.ZIP_DEFLATED) -> Path:
    """A copy of the valid zip with its members changed by ``edit(members)`` (in place)."""
    members = members_of(valid_zip)
    edit(members)
    target = tmp_path / name
    with zipfile.ZipFile(target, "w", compression=compression) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return target


def edit_lines(member: str, change):
    """An edit applying ``change(list_of_decoded_lines)`` to an output JSONL member."""
    def edit(members):
        lines = [json.loads(x) for x in members[member].decode().splitlines()]
        change(lines)
        members[member] = "".join(
            (x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()
    return edit


def edit_meta(member: str, change):
    def edit(members):
        meta = yaml.safe_load(members[member])
        change(meta)
        members[member] = yaml.safe_dump(meta, sort_keys=False).encode()
    return edit


def rename(old: str, new: str):
    def edit(members):
        members[new] = members.pop(old)
    return edit


def assert_reported(problems: list[str], member: str, rule: str, detail: str = "") -> None:
    hits = [p for p in problems if p.startswith(f"{member}: [{rule}]") and detail in p]
    assert hits, f"no [{rule}] problem for {member} containing {detail!r} in:\n" + \
        "\n".join(problems)


def test_valid_zip_passes(valid_zip, capsys):
    assert validate_submission(valid_zip, EVAL_LIST) == []
    assert amr_main(["validate-submission", str(valid_zip), "--eval-list", str(EVAL_LIST)]) == 0
    assert "valid" in capsys.readouterr().out


def test_lenient_on_what_the_spec_does_not_fix(valid_zip, tmp_path):
    def loosen(members):
        # no compression (below), CRLF and no final newline, other key order, int seconds,
        # extra meta keys, descriptions as lists, explicit directory entries
        lines = [json.loads(x) for x in members[OUT1].decode().splitlines()]
        out = []
        for rec in lines:
            windows = [[int(s), int(e)] for s, e in rec["pred_relevant_windows"]]
            out.append(json.dumps({"pred_relevant_windows": windows, "duration": rec["duration"],
                                   "vid": rec["vid"], "query": rec["query"], "qid": rec["qid"]}))
        members[OUT1] = "\r\n".join(out).encode()
        meta = yaml.safe_load(members[META1])
        meta["system"]["model"]["audio_models"] = ["M2D-CLAP", "BERT"]
        meta["system"]["description"] = "extra information"
        members[META1] = yaml.safe_dump(meta).encode()
        members["task6/"] = b""
        members["task6/Choi_KAIST_task6_1/"] = b""
    zip_path = rewrite(valid_zip, tmp_path, loosen, compression=zipfile.ZIP_STORED)
    assert validate_submission(zip_path, EVAL_LIST) == []


BROKEN = {
    # archive layout and names
    "stray-root": (lambda m: m.update({"README.txt": b"hi"}), "README.txt", "layout", "stray"),
    "stray-macos": (lambda m: m.update({"__MACOSX/task6/._x": b""}), "__MACOSX/task6/._x",
                    "layout", "outside the single top folder"),
    "stray-top": (lambda m: m.update({"task6/notes.txt": b"x"}), "task6/notes.txt", "layout",
                  "stray file directly in task6/"),
    "stray-system": (lambda m: m.update({"task6/Choi_KAIST_task6_1/model.pt": b"x"}),
                     "task6/Choi_KAIST_task6_1/model.pt", "layout", "stray file"),
    "nested": (lambda m: m.update({"task6/Choi_KAIST_task6_1/sub/x.jsonl": b"x"}),
               "task6/Choi_KAIST_task6_1/sub/x.jsonl", "layout", "nested too deep"),
    "wrong-top-folder": (rename(META2, META2.replace("task6/", "Task6/", 1)),
                         META2.replace("task6/", "Task6/", 1), "layout", "single top folder"),
    "pdf-name": (rename(PDF, "task6/report.technical_report.pdf"),
                 "task6/report.technical_report.pdf", "pdf-name", PDF),
    "pdf-missing": (lambda m: m.pop(PDF), PDF, "pdf", "missing"),
    "pdf-not-pdf": (lambda m: m.update({PDF: b"<html>"}), PDF, "pdf", "%PDF"),
    "meta-missing": (lambda m: m.pop(META2), META2, "layout", "missing"),
    "output-file-name": (rename(OUT1, OUT1.replace(".output.jsonl", ".jsonl")),
                         OUT1.replace(".output.jsonl", ".jsonl"), "layout", "stray file"),
    "label-k-5": (lambda m: m.update({"task6/Choi_KAIST_task6_5/Choi_KAIST_task6_5.meta.yaml":
                                      b""}),
                  "task6/Choi_KAIST_task6_5/Choi_KAIST_task6_5.meta.yaml", "label", "k = 1..4"),
    "label-prefix": (lambda m: m.update({
        k.replace("Choi_KAIST_task6_2", "Kim_KAIST_task6_2"): m.pop(k)
        for k in [k for k in m if "task6_2" in k]}),
        "task6/Kim_KAIST_task6_2/", "label", "differs from the zip name's 'Choi_KAIST'"),
    # output lines
    "line-missing": (edit_lines(OUT1, lambda ls: ls.pop(5)), OUT1, "qids",
                     "missing: 'dcase2026_evaluation_q006'"),
    "line-count": (edit_lines(OUT1, lambda ls: ls.pop(5)), OUT1, "lines",
                   "176 lines; expected 177"),
    "order": (edit_lines(OUT1, lambda ls: ls.insert(0, ls.pop(3))), OUT1, "order", "line 1"),
    "duplicate": (edit_lines(OUT1, lambda ls: ls.__setitem__(4, ls[3])), OUT1, "qids",
                  "more than one line"),
    "unknown-qid": (edit_lines(OUT1, lambda ls: ls[2].update(qid="q_unknown")), OUT1, "qids",
                    "'q_unknown'"),
    "bad-json": (edit_lines(OUT1, lambda ls: ls.__setitem__(9, "{not json")), OUT1, "json",
                 "line 10"),
    "extra-key": (edit_lines(OUT1, lambda ls: ls[0].update(pred_saliency_scores=[])), OUT1,
                  "keys", "line 1: unexpected key(s) ['pred_saliency_scores']"),
    "missing-key": (edit_lines(OUT1, lambda ls: ls[1].pop("vid")), OUT1, "keys",
                    "line 2: missing key(s) ['vid']"),
    "qid-type": (edit_lines(OUT1, lambda ls: ls[0].update(qid=1)), OUT1, "types",
                 "line 1: 'qid' must be a string"),
    "duration-type": (edit_lines(OUT1, lambda ls: ls[0].update(duration="66")), OUT1, "types",
                      "line 1: 'duration' must be a number"),
    "duration-changed": (edit_lines(OUT1, lambda ls: ls[0].update(duration=67)), OUT1,
                         "copied-fields", "line 1: 'duration'"),
    "query-changed": (edit_lines(OUT1, lambda ls: ls[2].update(query="other")), OUT1,
                      "copied-fields", "line 3: 'query'"),
    "vid-changed": (edit_lines(OUT1, lambda ls: ls[2].update(vid="other")), OUT1,
                    "copied-fields", "line 3: 'vid'"),
    "windows-type": (edit_lines(OUT1, lambda ls: ls[0].update(pred_relevant_windows="1-5")),
                     OUT1, "types", "'pred_relevant_windows' must be a list"),
    "no-window": (edit_lines(OUT1, lambda ls: ls[0].update(pred_relevant_windows=[])), OUT1,
                  "window-count", "line 1: 0 windows"),
    "eleven-windows": (edit_lines(OUT1, lambda ls: ls[0].update(
        pred_relevant_windows=[[1.0, 2.0]] * 11)), OUT1, "window-count", "11 windows"),
    "start-after-end": (edit_lines(OUT1, lambda ls: ls[0].update(
        pred_relevant_windows=[[9.0, 2.0]])), OUT1, "window", "start must be < end"),
    "end-past-duration": (edit_lines(OUT1, lambda ls: ls[0].update(
        pred_relevant_windows=[[60.0, 68.5]])), OUT1, "window", "end > duration + 2"),
    "negative-start": (edit_lines(OUT1, lambda ls: ls[0].update(
        pred_relevant_windows=[[-1.0, 5.0]])), OUT1, "window", "start < 0"),
    "scored-window": (edit_lines(OUT1, lambda ls: ls[0].update(
        pred_relevant_windows=[[1.0, 5.0, 0.9]])), OUT1, "window", "not a [start, end] pair"),
    "nan-window": (edit_lines(OUT1, lambda ls: ls[0].update(
        pred_relevant_windows=[[1.0, float("nan")]])), OUT1, "window", "finite numbers"),
    # meta files
    "meta-yaml": (lambda m: m.update({META1: b"submission: [unclosed"}), META1, "yaml", "parse"),
    "meta-missing-field": (edit_meta(META1, lambda d: d["system"]["model"].pop("LLMs")), META1,
                           "meta-field", "system.model.LLMs is missing"),
    "meta-missing-section": (edit_meta(META1, lambda d: d.pop("results")), META1, "meta-field",
                             "results is missing"),
    "meta-param-type": (edit_meta(META1, lambda d: d["system"]["model"].update(
        trainable_parameters="7M")), META1, "meta-type", "trainable_parameters must be"),
    "meta-param-float": (edit_meta(META1, lambda d: d["system"]["model"].update(
        freezed_parameters=1.5)), META1, "meta-type", "freezed_parameters must be"),
    "meta-ensemble": (edit_meta(META1, lambda d: d["system"].update(ensemble="no")), META1,
                      "meta-type", "system.ensemble must be true/false"),
    "meta-loss": (edit_meta(META1, lambda d: d["system"]["model"].update(loss_function=3)),
                  META1, "meta-type", "loss_function"),
    "meta-abbreviation": (edit_meta(META1, lambda d: d["submission"].update(
        abbreviation="ElevenChars")), META1, "meta-abbreviation", "11 characters"),
    "meta-label": (edit_meta(META1, lambda d: d["submission"].update(
        label="Choi_KAIST_task6_2")), META1, "meta-label", "does not match its folder"),
    "meta-result-range": (edit_meta(META1, lambda d: d["results"]["development_testing"].update(
        {"Recall1@0.7": 2955})), META1, "meta-results", "Recall1@0.7 must be a number in [0, 100]"),
    "meta-result-missing": (edit_meta(META1, lambda d: d["results"]["development_testing"].pop(
        "Recall1@0.5")), META1, "meta-field", "Recall1@0.5 is missing"),
    "meta-authors-empty": (edit_meta(META1, lambda d: d["submission"].update(authors=[])),
                           META1, "meta-authors", "non-empty list"),
    "meta-author-key": (edit_meta(META1, lambda d: d["submission"]["authors"][0].pop("email")),
                        META1, "meta-field", "submission.authors[0].email is missing"),
    "meta-affiliation": (edit_meta(META1, lambda d: d["submission"]["authors"][0][
        "affiliation"].pop("location")), META1, "meta-field", "affiliation.location is missing"),
    "meta-corresponding": (edit_meta(META1, lambda d: d["submission"]["authors"][0].update(
        corresponding="yes")), META1, "meta-type", "corresponding must be true/false"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_variant_is_rejected(case, valid_zip, tmp_path):
    edit, member, rule, detail = BROKEN[case]
    problems = validate_submission(rewrite(valid_zip, tmp_path, edit), EVAL_LIST)
    assert_reported(problems, member, rule, detail)


def test_zip_name_must_match(valid_zip, tmp_path):
    problems = validate_submission(rewrite(valid_zip, tmp_path, lambda m: None,
                                           name="submission (1).zip"), EVAL_LIST)
    assert_reported(problems, "submission (1).zip", "zip-name")
    problems = validate_submission(rewrite(valid_zip, tmp_path, lambda m: None,
                                           name="Kim_SNU_task6.zip"), EVAL_LIST)
    assert_reported(problems, "task6/Choi_KAIST_task6_1/", "label", "'Kim_SNU'")
    assert_reported(problems, PDF, "pdf-name", "Kim_SNU_task6.technical_report.pdf")


def test_more_than_four_systems(valid_zip, tmp_path):
    def add_systems(members):
        for k in (3, 4):
            for old in (OUT1, META1):
                members[old.replace("_task6_1", f"_task6_{k}")] = members[old]
        members[OUT1.replace("KAIST", "KAISTX")] = members[OUT1]
        members[META1.replace("KAIST", "KAISTX")] = members[META1]
    problems = validate_submission(rewrite(valid_zip, tmp_path, add_systems), EVAL_LIST)
    assert_reported(problems, "task6/", "systems", "5 systems; at most 4")


def test_not_a_zip(tmp_path):
    bad = tmp_path / "Choi_KAIST_task6.zip"
    bad.write_bytes(b"PK but not really")
    assert_reported(validate_submission(bad, EVAL_LIST), bad.name, "zip", "not a readable zip")


def test_every_problem_is_reported_and_cli_fails(valid_zip, tmp_path, capsys):
    def break_three(members):
        members["README.txt"] = b"x"
        members[PDF] = b"nope"
        meta = yaml.safe_load(members[META2])
        meta["system"]["ensemble"] = 1
        members[META2] = yaml.safe_dump(meta).encode()
    zip_path = rewrite(valid_zip, tmp_path, break_three)
    problems = validate_submission(zip_path, EVAL_LIST)
    assert len(problems) == 3
    assert_reported(problems, "README.txt", "layout")
    assert_reported(problems, PDF, "pdf")
    assert_reported(problems, META2, "meta-type", "ensemble")
    assert amr_main(["validate-submission", str(zip_path), "--eval-list", str(EVAL_LIST)]) == 1
    out = capsys.readouterr().out
    assert "INVALID, 3 problem(s)" in out and "README.txt: [layout]" in out
    assert amr_main(["validate-submission", str(zip_path), "--eval-list",
                     str(tmp_path / "absent.jsonl")]) == 2


def test_systematic_fault_is_counted_not_flooded(valid_zip, tmp_path):
    def keep_scores(lines):
        for rec in lines:
            rec["pred_relevant_windows"] = [[s, e, 0.5] for s, e in rec["pred_relevant_windows"]]
    problems = validate_submission(rewrite(valid_zip, tmp_path, edit_lines(OUT1, keep_scores)),
                                   EVAL_LIST)
    window_lines = [p for p in problems if p.startswith(f"{OUT1}: [window]")]
    assert len(window_lines) == 21  # 20 shown + one line counting the rest (177 × 3 in all)
    assert window_lines[-1].endswith(f"… and {177 * 3 - 20} more problem(s) of this rule")
