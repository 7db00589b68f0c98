"""The submission packager: layout, copied fields, rounding, meta values, report PDF, errors."""
from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import pytest
import yaml

from amr.cli import main as amr_main
from amr.config.params import load_submission
from amr.config.schema import (
    AffiliationConfig,
    AuthorConfig,
    DataSource,
    LocalSource,
    SubmissionConfig,
    SubmittedSystemConfig,
)
from amr.reporting.submission import (
    SubmissionError,
    SystemInputs,
    build_submission,
    validate_submission,
)
from amr.reporting.submission.package import round_window
from amr.reporting.submission.report_pdf import render_report

EVAL_LIST = Path(__file__).parent / "fixtures" / "eval_list.jsonl"
METRICS = {"R1@0.5": 48.4, "R1@0.7": 31.03, "mAP": 25.82, "mAP@0.5": 43.33, "mAP@0.75": 24.94}


def eval_records() -> list[dict]:
    return [json.loads(line) for line in EVAL_LIST.read_text().splitlines() if line.strip()]


def make_team(**overrides) -> SubmissionConfig:
    kaist = AffiliationConfig("KAIST", "Korea Advanced Institute of Science and Technology",
                              "Mechanical Engineering", "Daejeon, South Korea")
    team = SubmissionConfig(
        title="Multi-signal cascaded grounding for audio moment retrieval",
        abstract="We describe a QD-DETR system with frozen M2D-CLAP features.",
        authors=[AuthorConfig("Choi", "Seungdeok", "choi@example.org", True, kaist),
                 AuthorConfig("Park", "Yong-Hwa", "park@example.org", False, kaist)],
        systems=[SubmittedSystemConfig("slot1", "M2D base + coarse + rerank", "M2Dbase"),
                 SubmittedSystemConfig("slot3", "+ cascade refinement", "M2DCascade")],
    )
    return dataclasses.replace(team, **overrides)


def write_run(folder: Path, run: str, windows_for=None, records=None,
              ensemble=False) -> SystemInputs:
    """Predictions in REVERSED list order with 12 scored windows each, plus metrics and info."""
    folder.mkdir(parents=True, exist_ok=True)
    records = eval_records() if records is None else records
    lines = []
    for i, rec in enumerate(reversed(records)):
        if windows_for is not None:
            windows = windows_for(rec)
        else:
            windows = [[j * 2.3 + i % 5, j * 2.3 + i % 5 + 4.6, 1.0 - j / 20] for j in range(12)]
        lines.append(json.dumps({**rec, "pred_relevant_windows": windows}))
    (folder / f"{run}.jsonl").write_text("\n".join(lines) + "\n")
    (folder / f"{run}.metrics.json").write_text(json.dumps(METRICS))
    info = {"trainable_parameters": 7_512_345, "frozen_parameters": 0,
            "loss_function": ["span_l1", "span_giou", "label", "saliency"],
            "ensemble": ensemble, "members": 2 if ensemble else 1}
    (folder / f"{run}.info.json").write_text(json.dumps(info))
    return SystemInputs(run, folder / f"{run}.jsonl", folder / f"{run}.metrics.json",
                        folder / f"{run}.info.json")


def build_valid(tmp_path: Path) -> Path:
    systems = [write_run(tmp_path / "runs", "slot1"), write_run(tmp_path / "runs", "slot3",
                                                               ensemble=True)]
    return build_submission(systems, make_team(), EVAL_LIST, tmp_path / "out")


def test_layout_and_names(tmp_path):
    zip_path = build_valid(tmp_path)
    assert zip_path.name == "Choi_KAIST_task6.zip"
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(archive.namelist())
    assert names == [
        "task6/Choi_KAIST_task6.technical_report.pdf",
        "task6/Choi_KAIST_task6_1/Choi_KAIST_task6_1.meta.yaml",
        "task6/Choi_KAIST_task6_1/Choi_KAIST_task6_1.output.jsonl",
        "task6/Choi_KAIST_task6_2/Choi_KAIST_task6_2.meta.yaml",
        "task6/Choi_KAIST_task6_2/Choi_KAIST_task6_2.output.jsonl",
    ]
    assert validate_submission(zip_path, EVAL_LIST) == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == [zip_path.name]  # no temp left


def test_output_lines_follow_the_evaluation_list(tmp_path):
    records = eval_records()
    altered = [dict(r, query=r["query"].upper(), duration=float(r["duration"]) + 0.5)
               for r in records]  # what predictions say about a query is never copied
    run = write_run(tmp_path, "slot1", records=altered)
    zip_path = build_submission([run], make_team(systems=make_team().systems[:1]), EVAL_LIST,
                                tmp_path / "out")
    with zipfile.ZipFile(zip_path) as archive:
        text = archive.read("task6/Choi_KAIST_task6_1/Choi_KAIST_task6_1.output.jsonl").decode()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == len(records) == 177
    for line, rec in zip(lines, records):
        assert {k: line[k] for k in ("qid", "query", "vid", "duration")} == \
            {k: rec[k] for k in ("qid", "query", "vid", "duration")}
        assert type(line["duration"]) is type(rec["duration"])
        windows = line["pred_relevant_windows"]
        assert 1 <= len(windows) <= 10
        assert all(len(w) == 2 and w[0] == int(w[0]) and w[1] == int(w[1]) for w in windows)
    # the last list query was the first prediction line (i = 0): windows j*2.3 .. +4.6, rounded
    assert lines[-1]["pred_relevant_windows"][:3] == [[0.0, 5.0], [2.0, 7.0], [5.0, 9.0]]


def test_round_window():
    assert round_window(3.2, 3.4, 60) == [3.0, 4.0]  # collapsed by rounding: one clip wide
    assert round_window(-1.6, 10.6, 60) == [0.0, 11.0]
    assert round_window(55.0, 90.0, 60) == [55.0, 62.0]  # clamp at duration + 2, not tighter
    assert round_window(70.0, 80.0, 60) == [61.0, 62.0]


def test_meta_values_come_from_config_and_runs(tmp_path):
    zip_path = build_valid(tmp_path)
    with zipfile.ZipFile(zip_path) as archive:
        meta1, meta2 = (yaml.safe_load(archive.read(f"task6/{label}/{label}.meta.yaml"))
                        for label in ("Choi_KAIST_task6_1", "Choi_KAIST_task6_2"))
    assert list(meta1) == ["submission", "system", "results"]
    assert meta1["submission"]["label"] == "Choi_KAIST_task6_1"
    assert meta2["submission"]["abbreviation"] == "M2DCascade"
    assert meta1["submission"]["authors"][0] == {
        "lastname": "Choi", "firstname": "Seungdeok", "email": "choi@example.org",
        "corresponding": True,
        "affiliation": {"abbreviation": "KAIST",
                        "institute": "Korea Advanced Institute of Science and Technology",
                        "department": "Mechanical Engineering",
                        "location": "Daejeon, South Korea"}}
    model = meta1["system"]["model"]
    assert model["trainable_parameters"] == 7_512_345 and model["freezed_parameters"] == 0
    assert model["loss_function"] == ["span_l1", "span_giou", "label", "saliency"]
    assert model["LLMs"] == "none"
    assert meta1["system"]["ensemble"] is False and meta2["system"]["ensemble"] is True
    assert meta1["results"] == {"development_testing": {"Recall1@0.7": 31.03,
                                                        "Recall1@0.5": 48.4}}
    assert model["audio_models"].startswith("not stated")  # build_valid gives no extractor


def test_meta_names_the_feature_extractor(tmp_path):
    from amr.data.sources import describe_features
    from amr.reporting.submission.package import with_feature_models

    source = DataSource(source="local", local=LocalSource(extractor="M2D-CLAP 2025 (ours)"))
    features = describe_features(source, tmp_path)
    team = with_feature_models(make_team(), features)
    assert all("M2D-CLAP 2025 (ours)" in s.audio_models and "M2D-CLAP 2025 (ours)" in s.text_models
               for s in team.systems)
    given = dataclasses.replace(make_team().systems[0], audio_models="my encoder")
    team = with_feature_models(dataclasses.replace(make_team(), systems=[given]), features)
    assert team.systems[0].audio_models == "my encoder"  # an explicit description is kept


def test_build_is_deterministic(tmp_path):
    first = build_valid(tmp_path / "a").read_bytes()
    assert build_valid(tmp_path / "b").read_bytes() == first


def pdf_text(pdf: bytes) -> tuple[dict, str, int]:
    """(document info, text of every page, page count), read back with pypdf."""
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf), strict=True)
    return dict(reader.metadata or {}), "\n".join(p.extract_text() for p in reader.pages), len(reader.pages)


def test_generated_report_pdf(tmp_path):
    zip_path = build_valid(tmp_path)
    with zipfile.ZipFile(zip_path) as archive:
        pdf = archive.read("task6/Choi_KAIST_task6.technical_report.pdf")
    assert pdf.startswith(b"%PDF-")
    info, text, _ = pdf_text(pdf)
    assert info["/Title"] == "Multi-signal cascaded grounding for audio moment retrieval"
    assert info["/Author"] == "Seungdeok Choi, Yong-Hwa Park"
    assert "Multi-signal cascaded grounding for audio moment retrieval" in text
    assert "Seungdeok Choi, Yong-Hwa Park" in text
    assert "ABSTRACT\nWe describe a QD-DETR system with frozen M2D-CLAP features." in text
    assert "M2D base + coarse + rerank 48.40 31.03 25.82 43.33 24.94" in text


def test_report_pdf_table_marks_unicode_and_pages():
    long_abstract = " ".join(["word"] * 3000)
    rows = [{"system": "baseline", "R1@0.5": 25.61, "R1@0.7": 13.59, "mAP": 12.06, "mAP@0.5": 23.6,
             "mAP@0.75": 10.72},
            {"system": "slot1: γc ≤ 0.5", "R1@0.5": 28.1, "R1@0.7": 16.0, "mAP": 13.0, "mAP@0.5": 25.0,
             "mAP@0.75": 11.0, "marks": {"R1@0.7": "*"}}]
    pdf = render_report("Brackets (a) and back\\slash ≤ é", [], long_abstract, rows,
                        "* significant against the row above")
    info, text, pages = pdf_text(pdf)
    assert info["/Title"] == "Brackets (a) and back\\slash <= é"
    assert pages > 1
    assert "baseline 25.61 13.59 12.06 23.60 10.72" in text
    assert "slot1: gammac <= 0.5 28.10 16.00* 13.00 25.00 11.00" in text
    assert "* significant against the row above" in text
    assert render_report("t", [], "a", rows) == render_report("t", [], "a", rows)  # no date, no random id


def test_given_report_pdf_is_copied(tmp_path):
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.5\nreal report\n%%EOF\n")
    systems = [write_run(tmp_path / "runs", "slot1"), write_run(tmp_path / "runs", "slot3")]
    zip_path = build_submission(systems, make_team(), EVAL_LIST, tmp_path / "out", report)
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.read("task6/Choi_KAIST_task6.technical_report.pdf") == report.read_bytes()
    report.write_text("not a pdf")
    with pytest.raises(SubmissionError, match=r"report\.pdf: not a PDF"):
        build_submission(systems, make_team(), EVAL_LIST, tmp_path / "out", report)


def test_missing_and_extra_qids_are_errors(tmp_path):
    records = eval_records()
    run = write_run(tmp_path, "slot1", records=records[:100] + records[101:])
    team = make_team(systems=make_team().systems[:1])
    with pytest.raises(SubmissionError, match=r"slot1\.jsonl.*missing.*dcase2026_evaluation_q101"):
        build_submission([run], team, EVAL_LIST, tmp_path / "out")
    run = write_run(tmp_path, "slot1", records=records + [dict(records[0], qid="stray_q")])
    with pytest.raises(SubmissionError, match=r"slot1\.jsonl.*not in the evaluation list.*stray_q"):
        build_submission([run], team, EVAL_LIST, tmp_path / "out")
    assert not (tmp_path / "out" / "Choi_KAIST_task6.zip").exists()


def test_query_without_a_window_is_an_error(tmp_path):
    target = "dcase2026_evaluation_q007"
    run = write_run(tmp_path, "slot1", windows_for=lambda r: [] if r["qid"] == target
                    else [[1.0, 5.0, 0.9]])
    team = make_team(systems=make_team().systems[:1])
    with pytest.raises(SubmissionError, match=rf"slot1\.jsonl:\d+: qid '{target}' has no "
                                              "predicted window"):
        build_submission([run], team, EVAL_LIST, tmp_path / "out")


def test_bad_window_values_are_errors(tmp_path):
    run = write_run(tmp_path, "slot1", windows_for=lambda r: [[1.0, float("nan"), 0.5]])
    with pytest.raises(SubmissionError, match="not \\[start, end\\(, score\\)\\] of finite"):
        build_submission([run], make_team(systems=make_team().systems[:1]), EVAL_LIST,
                         tmp_path / "out")


def test_team_and_run_file_errors(tmp_path):
    runs = [write_run(tmp_path, "slot1"), write_run(tmp_path, "slot3")]
    team = make_team()
    team = make_team(
        title="", authors=[dataclasses.replace(team.authors[0], corresponding=False), team.authors[1]],
        systems=[team.systems[0], dataclasses.replace(team.systems[1], abbreviation="ElevenChars")])
    with pytest.raises(SubmissionError) as err:
        build_submission(runs, team, EVAL_LIST, tmp_path / "out")
    message = str(err.value)
    assert "no author has corresponding" in message
    assert "systems[1].abbreviation 'ElevenChars'" in message
    assert "submission.title is empty" in message

    team = make_team()
    team = make_team(authors=[dataclasses.replace(team.authors[0], lastname="van Dijk"), team.authors[1]])
    with pytest.raises(SubmissionError, match="file_lastname"):
        build_submission(runs, team, EVAL_LIST, tmp_path / "out")
    team = dataclasses.replace(team, file_lastname="vanDijk")
    assert build_submission(runs, team, EVAL_LIST, tmp_path / "out").name == \
        "vanDijk_KAIST_task6.zip"

    with pytest.raises(SubmissionError, match=r"no files given for \['slot3'\]"):
        build_submission(runs[:1], make_team(), EVAL_LIST, tmp_path / "out")

    info = json.loads(runs[0].system_info.read_text())
    runs[0].system_info.write_text(json.dumps({**info, "ensemble": True, "members": 1}))
    with pytest.raises(SubmissionError, match=r"slot1\.info\.json: 'ensemble' is True"):
        build_submission(runs, make_team(), EVAL_LIST, tmp_path / "out")
    runs[0].system_info.write_text(json.dumps({**info, "trainable_parameters": 7.5}))
    with pytest.raises(SubmissionError, match="trainable_parameters' must be a non-negative int"):
        build_submission(runs, make_team(), EVAL_LIST, tmp_path / "out")
    runs[0].system_info.write_text(json.dumps(info))
    runs[0].metrics.write_text(json.dumps({k: v for k, v in METRICS.items() if k != "R1@0.7"}))
    with pytest.raises(SubmissionError, match=r"slot1\.metrics\.json: key 'R1@0.7'"):
        build_submission(runs, make_team(), EVAL_LIST, tmp_path / "out")


PARAMS = """
submission:
  title: A title
  abstract: An abstract.
  authors:
    - lastname: Choi
      firstname: Seungdeok
      email: choi@example.org
      corresponding: true
      affiliation: {abbreviation: KAIST, institute: KAIST, department: ME, location: Daejeon}
  systems:
    - {run: slot1, name: M2D base, abbreviation: M2Dbase, audio_models: [M2D-CLAP]}
    - {run: slot3, name: cascade, abbreviation: M2DCascade}
"""


def test_params_block_loads_into_config(tmp_path):
    (tmp_path / "params.yaml").write_text(PARAMS)
    team = load_submission(tmp_path / "params.yaml")
    assert team.authors[0].affiliation.abbreviation == "KAIST"
    assert team.systems[0].audio_models == ["M2D-CLAP"]
    assert [s.run for s in team.systems] == ["slot1", "slot3"]


def test_cli_package_builds_and_validates(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text(PARAMS)
    runs = [write_run(tmp_path / "runs", "slot1"), write_run(tmp_path / "runs", "slot3")]
    args = ["package", "--params", str(tmp_path / "params.yaml"), "--eval-list", str(EVAL_LIST),
            "--out", str(tmp_path / "out")]
    for r in runs:
        args += ["--system", f"{r.run}={r.predictions},{r.metrics},{r.system_info}"]
    assert amr_main(args) == 0
    assert "Choi_KAIST_task6.zip: valid" in capsys.readouterr().out

    manifest = {r.run: {"predictions": f"runs/{r.run}.jsonl",
                        "metrics": f"runs/{r.run}.metrics.json",
                        "system_info": f"runs/{r.run}.info.json"} for r in runs}
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    args = ["package", "--team", str(tmp_path / "params.yaml"), "--eval-list", str(EVAL_LIST),
            "--out", str(tmp_path / "out2"), "--manifest", str(tmp_path / "manifest.yaml")]
    assert amr_main(args) == 0

    assert amr_main(args[:-2] + ["--system", "slot1=only_one_path.jsonl"]) == 2
    assert "expected RUN=PRED.jsonl,METRICS.json,INFO.json" in capsys.readouterr().err


def test_cli_package_renames_an_invalid_zip(tmp_path, monkeypatch, capsys):
    import amr.reporting.submission

    (tmp_path / "params.yaml").write_text(PARAMS)
    runs = [write_run(tmp_path / "runs", "slot1"), write_run(tmp_path / "runs", "slot3")]
    monkeypatch.setattr(amr.reporting.submission, "validate_submission",
                        lambda zip_path, eval_list: ["task6/x: [layout] stray file"])
    args = ["package", "--params", str(tmp_path / "params.yaml"), "--eval-list", str(EVAL_LIST),
            "--out", str(tmp_path / "out")]
    for r in runs:
        args += ["--system", f"{r.run}={r.predictions},{r.metrics},{r.system_info}"]
    assert amr_main(args) == 1
    assert "task6/x: [layout] stray file" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Choi_KAIST_task6.zip.invalid"]
