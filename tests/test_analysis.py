"""Per-query results, prediction checks and the paired tests of the analysis stage."""
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from amr.evaluation.analysis.queries import (
    official_means,
    query_table,
    read_query_table,
    strata,
    write_query_table,
)
from amr.evaluation.analysis.stats import (
    benjamini_hochberg,
    bootstrap_interval,
    mcnemar_exact,
    sign_flip_test,
)
from amr.evaluation.metrics import LENGTH_BUCKETS, evaluate_predictions, load_jsonl
from amr.evaluation.prediction_files import PredictionFileError, read_predictions

FIXTURES = Path(__file__).parent / "fixtures"
PREDS = FIXTURES / "baseline_castella_val_preds.jsonl"
GT = FIXTURES / "castella_val_release.jsonl"


@pytest.fixture(scope="module")
def baseline_table():
    return query_table(read_predictions(PREDS), load_jsonl(GT))


# ------------------------------------------------------------------ per-query results
def test_per_query_results_average_to_the_official_metrics(baseline_table, tmp_path):
    official = evaluate_predictions(load_jsonl(PREDS), load_jsonl(GT), details=True)
    assert official_means(baseline_table) == {k: official[k] for k in official_means(baseline_table)}
    assert official_means(baseline_table)["R1@0.7"] == 16.19
    for name in LENGTH_BUCKETS:  # the --details length buckets, query by query
        rows = baseline_table[baseline_table["subset"] == name]
        assert len(rows) == official["by_gt_length"][name]["num_queries"]
        assert round(100 * rows["R1@0.7"].mean(), 2) == official["by_gt_length"][name]["R1@0.7"]
        assert round(100 * rows["AP"].mean(), 2) == official["by_gt_length"][name]["mAP"]
    # written and read back exactly
    write_query_table(tmp_path / "q.csv", {"seed 1": baseline_table, "seed 2": baseline_table.iloc[::-1]})
    back = read_query_table(tmp_path / "q.csv")
    assert list(back) == ["seed 1", "seed 2"]
    assert np.array_equal(back["seed 1"]["AP"].to_numpy(), baseline_table["AP"].to_numpy())
    assert back["seed 1"]["qid"].tolist() == baseline_table["qid"].tolist()


def test_strata_partition_the_queries(baseline_table):
    groups = strata(baseline_table)
    everyone = (baseline_table["subset"] == "all").sum()
    for kind in ("GT windows per query", "recording duration"):
        assert sum(len(rows) for (k, _), rows in groups.items() if k == kind) == everyone


# ------------------------------------------------------------------ predictions are checked
@pytest.mark.parametrize("window, message", [
    ([1.0, 5.0, float("nan")], "NaN or infinity"),
    ([1.0, float("inf"), 0.5], "NaN or infinity"),
    ([5.0, 1.0, 0.5], "ends before it starts"),
    ([1.0, "5", 0.5], "not \\[start, end\\]"),
])
def test_bad_windows_are_refused_naming_qid_and_line(tmp_path, window, message):
    lines = [json.dumps({"qid": "q1", "pred_relevant_windows": [[0, 1, 0.9]]}),
             json.dumps({"qid": "q2", "pred_relevant_windows": [[0, 1, 0.9], window]})]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PredictionFileError, match=rf"p\.jsonl:2: qid q2: window 1 .*{message}"):
        read_predictions(path)


def test_a_qid_twice_is_refused(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"qid": q, "pred_relevant_windows": [[0, 1, 0.5]]}) + "\n"
                            for q in ("a", "b", "a")))
    with pytest.raises(PredictionFileError, match=r"p\.jsonl:3: qid a again \(first at .*p\.jsonl:1\)"):
        read_predictions(path)


def test_evaluate_cli_refuses_bad_predictions(tmp_path, capsys):
    from amr.cli import main

    path = tmp_path / "p.jsonl"
    path.write_text(PREDS.read_text().replace("[0.0, 11.0, 0.9833]", "[0.0, 11.0, NaN]", 1))
    assert main(["evaluate", str(path), str(GT)]) == 2
    assert "p.jsonl:1: qid rqfQRErjfk8_1: window 0" in capsys.readouterr().err


# ------------------------------------------------------------------ the paired tests
def test_mcnemar_is_the_exact_binomial_test_of_discordant_queries():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, 120)
    b = np.where(rng.random(120) < 0.3, 1 - a, a)
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    assert mcnemar_exact(a, b) == stats.binomtest(only_b, only_a + only_b, 0.5).pvalue
    assert mcnemar_exact(b, a) == mcnemar_exact(a, b)


def test_identical_systems_give_p_one_and_a_zero_width_interval(baseline_table):
    rows = baseline_table[baseline_table["subset"] == "all"]
    rng = np.random.default_rng(0)
    assert mcnemar_exact(rows["R1@0.7"], rows["R1@0.7"]) == 1.0
    assert sign_flip_test(rows["AP"], rows["AP"], 500, rng) == 1.0
    ci = bootstrap_interval(rows["AP"], rows["AP"], 500, rng)
    assert (ci.delta, ci.low, ci.high) == (0.0, 0.0, 0.0)


def test_a_system_better_on_200_of_300_queries_is_significant():
    a, b = np.zeros(300), np.zeros(300)
    b[:200] = 1
    assert mcnemar_exact(a, b) < 1e-6
    # the randomisation test cannot go below 1/(resamples + 1): no resample is as extreme
    assert sign_flip_test(a, b, 2000, np.random.default_rng(0)) == 1 / 2001
    ci = bootstrap_interval(a, b, 2000, np.random.default_rng(0))
    assert ci.delta == pytest.approx(2 / 3) and 0.6 < ci.low < ci.delta < ci.high < 0.73


def test_sign_flip_p_value_of_a_small_difference_is_not_small():
    rng = np.random.default_rng(5)
    a = rng.random(200)
    b = a + rng.normal(0, 0.1, 200)
    assert sign_flip_test(a, b, 2000, np.random.default_rng(0)) > 0.05


def test_resampling_is_reproducible_with_its_seed():
    rng = np.random.default_rng(9)
    a, b = rng.random(150), rng.random(150)
    first = bootstrap_interval(a, b, 3000, np.random.default_rng(42)), sign_flip_test(a, b, 3000, np.random.default_rng(42))
    again = bootstrap_interval(a, b, 3000, np.random.default_rng(42)), sign_flip_test(a, b, 3000, np.random.default_rng(42))
    other = bootstrap_interval(a, b, 3000, np.random.default_rng(43))
    assert first == again and other != first[0]


def test_benjamini_hochberg_equals_scipy():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    expected = np.array([0.01, 0.04, 0.084, 0.084, 0.084, 0.1, 0.10571429, 0.216, 0.216, 0.216])
    assert np.allclose(benjamini_hochberg(p), expected)
    assert np.array_equal(benjamini_hochberg(p), stats.false_discovery_control(p))


# ------------------------------------------------------------------ the analysis stage
def test_analysis_stage_writes_tables_and_figures(tmp_path, params):
    import pandas as pd
    from analysis_project import build
    from projectkit import run_stage

    root = build(tmp_path / "project", params)
    proc = run_stage(root, "analysis")
    assert proc.returncode == 0, proc.stderr
    reports = root / "reports"
    for name in ("significance", "strata"):
        for ext in ("md", "csv", "tex"):
            assert (reports / f"{name}.{ext}").stat().st_size > 0
    for figure in ("differences", "r1_by_stratum", "timelines"):
        assert (reports / "figures" / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"

    table = pd.read_csv(reports / "significance.csv")
    comparisons = params.analysis.comparisons(params.system_names())
    assert list(dict.fromkeys(zip(table["system"], table["against"]))) == comparisons
    assert np.allclose(table["q"], stats.false_discovery_control(table["p"]))
    # one row recomputed from the per-query files the evaluate stage wrote
    a = read_query_table(root / "metrics/slot1.queries.csv")["seed 2023"]
    b = read_query_table(root / "metrics/slot2.queries.csv")["seed 2023"]
    a, b = a[a["subset"] == "all"], b[b["subset"] == "all"]
    row = table[(table["system"] == "slot2") & (table["against"] == "slot1") & (table["metric"] == "R1@0.7")].iloc[0]
    assert row["p"] == pytest.approx(mcnemar_exact(a["R1@0.7"], b.set_index("qid").loc[a["qid"], "R1@0.7"]))
    assert row["delta"] == pytest.approx(100 * (b["R1@0.7"].mean() - a["R1@0.7"].mean()))
    assert row["ci_low"] < row["delta"] < row["ci_high"] and row["significant"]
    # seed spread: slot3 has two seeds, and its sd stands beside its comparisons
    assert "slot3    | 2" in (reports / "significance.md").read_text()
    assert table[table["system"] == "slot3"]["seed_sd"].notna().all()

    strata_rows = pd.read_csv(reports / "strata.csv")
    assert set(strata_rows["stratification"]) == {"GT-window length", "GT windows per query", "recording duration"}
    baseline = strata_rows[strata_rows["system"] == "baseline"]
    assert baseline[baseline["stratification"] == "recording duration"]["queries"].sum() == 352


# ------------------------------------------------------------------ amr compare
def test_compare_prints_a_table_and_one_json_line(tmp_path, capsys):
    from amr.cli import main

    shifted = tmp_path / "b.jsonl"
    lines = PREDS.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r in records[::3]:  # every third query: top-1 moved to the end
        r["pred_relevant_windows"] = r["pred_relevant_windows"][1:] + r["pred_relevant_windows"][:1]
    shifted.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["compare", str(PREDS), str(PREDS), str(GT), "--resamples", "300"]) == 0
    same = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(m["p"] == 1.0 and m["ci"] == [0.0, 0.0] for m in same["metrics"].values())
    assert main(["compare", str(PREDS), str(shifted), str(GT), "--resamples", "300"]) == 0
    out = capsys.readouterr().out
    assert "| R1@0.7" in out
    result = json.loads(out.strip().splitlines()[-1])
    official = evaluate_predictions(load_jsonl(shifted), load_jsonl(GT))
    assert round(result["metrics"]["R1@0.7"]["b"], 2) == official["R1@0.7"]
    assert result["metrics"]["R1@0.7"]["delta"] < 0 and result["metrics"]["mAP"]["p"] == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(PREDS.read_text().replace("[0.0, 11.0, 0.9833]", "[11.0, 0.0, 0.9833]", 1))
    assert main(["compare", str(PREDS), str(bad), str(GT)]) == 2
    assert "bad.jsonl:1: qid rqfQRErjfk8_1" in capsys.readouterr().err


def test_table1_marks_significant_differences_to_the_row_above(tmp_path, params, monkeypatch):
    from analysis_project import build

    from amr.reporting.analysis import run_analysis
    from amr.reporting.systems import system_runs, table1
    from amr.reporting.tables import to_markdown

    root = build(tmp_path / "project", params)
    monkeypatch.chdir(root)
    systems = [system_runs(params, n) for n in params.system_names()]
    cfg = params.analysis.__class__(resamples=200, timelines=0)
    run_analysis(systems, cfg.comparisons(params.system_names()), cfg, 1.0)
    table = table1(systems, "t")
    assert table.rows[0].marks == {}  # the first row has nothing above it
    assert all(row.marks == {m: "*" for m in ("R1@0.5", "R1@0.7", "mAP", "mAP@0.5", "mAP@0.75")}
               for row in table.rows[1:])  # each slot answers 40 more queries exactly
    text = to_markdown(table)
    assert "*" in text.splitlines()[5] and "Benjamini-Hochberg q < 0.05" in text


def test_table2_rows_get_the_paired_interval_against_their_selected_row(baseline_table):
    from analysis_project import improved

    from amr.config.schema import AnalysisConfig
    from amr.reporting import ablations

    records = read_predictions(PREDS)
    gt = {d["qid"]: d for d in load_jsonl(GT)}
    better = query_table(improved(records, gt, 60, seed=0), load_jsonl(GT))
    m = {"R1@0.5": 1.0, "R1@0.7": 2.0, "mAP": 3.0, "mAP@0.5": 4.0, "mAP@0.75": 5.0}
    data = [{"rev": "workspace", "data": {}},
            {"rev": "abc", "data": {"metrics": {"metrics/slot1.json": {"data": m}}}, "experiments": [
                {"name": "t2-coarse025-norerank", "executor": {"state": "success"}, "revs": [
                    {"rev": "def", "name": "t2-coarse025-norerank",
                     "data": {"metrics": {"metrics/slot1.json": {"data": m}}}}]}]}]
    files = {(None, "slot1"): baseline_table, ("def", "slot1"): better}
    table = ablations.collect(data, query_results=lambda rev, system: files.get((rev, system)),
                              analysis=AnalysisConfig(resamples=500))
    rows = {r.label: r for r in table.rows}
    mark = rows["γc=0.25, no rerank"].marks["R1@0.7"]  # against "γc=0.25, + rerank" = slot1
    delta = 100 * (better.query("subset == 'all'")["R1@0.7"].mean() - baseline_table.query("subset == 'all'")["R1@0.7"].mean())
    assert mark.startswith(f" (Δ {delta:+.2f} [")
    low, high = (float(x) for x in mark.split("[")[1].rstrip("])").split(", "))
    assert 0 < low < delta < high
    assert rows["γc=0.25, + rerank"].marks == {} and rows["σ=0.03"].marks == {}  # selected; not run
    assert "paired bootstrap 95% interval" in table.note
