import json
from pathlib import Path

import pytest

from amr.data.annotations import DataError, Query, read_annotations

FIXTURES = Path(__file__).parent / "fixtures"


def test_reads_real_castella_lines():
    queries = read_annotations(FIXTURES / "castella_train_slice.jsonl")
    assert len(queries) == 12
    bogus = next(q for q in queries if q.qid == "67AE9ZKvECs_1")
    assert bogus == Query(
        "67AE9ZKvECs_1", "Birds chirp while something makes a scraping sound", "67AE9ZKvECs",
        299.0,
        [(206.0, 209.0), (221.0, 223.0), (283.0, 285.0), (299.0, 4800.0), (255.0, 258.0),
         (266.0, 270.0)],
    )


def test_blind_evaluation_list_has_no_windows():
    queries = read_annotations(FIXTURES / "dcase2026_evaluation_slice.jsonl")
    assert [q.qid for q in queries][:1] == ["dcase2026_evaluation_q001"]
    assert all(q.windows is None for q in queries)
    assert queries[0].duration == 66.0


def test_numeric_qid_and_extra_keys(tmp_path):
    path = tmp_path / "clotho.jsonl"
    path.write_text(json.dumps({"qid": 32694, "query": "a toilet", "duration": 60,
                                "vid": "Singapore_0.0_60.0",
                                "relevant_windows": [[41.1, 48.1]], "fg_dB": 0.7}) + "\n\n")
    (q,) = read_annotations(path)
    assert q.qid == "32694" and q.windows == [(41.1, 48.1)]


GOOD = {"qid": "a_1", "query": "a dog barks", "duration": 30, "vid": "a",
        "relevant_windows": [[1, 2]]}


def _with(**changes):
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...})


@pytest.mark.parametrize(
    "line, expected",
    [
        (_with(vid=...), "missing key 'vid'"),
        (_with(qid=...), "missing key 'qid'"),
        (_with(duration="300"), "key 'duration'"),
        (_with(duration=True), "key 'duration'"),
        (_with(duration=-1), "key 'duration'"),
        (_with(vid=""), "key 'vid'"),
        (_with(relevant_windows=[[1]]), "key 'relevant_windows': window 0"),
        (_with(relevant_windows=[[1, 2], [1, "x"]]), "key 'relevant_windows': window 1"),
        (_with(relevant_windows=[1, 2]), "key 'relevant_windows': window 0"),
        (_with(relevant_windows="1-2"), "key 'relevant_windows' must be a list"),
        ('{"qid": "a_2", "query": ', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (_with(qid="a_0"), "duplicate qid 'a_0' (first on line 1)"),
    ],
)
def test_malformed_line_names_file_line_and_key(tmp_path, line, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(_with(qid="a_0") + "\n" + line + "\n")
    with pytest.raises(DataError) as err:
        read_annotations(path)
    message = str(err.value)
    assert message.startswith(f"{path}:2: ")
    assert expected in message


def test_missing_or_empty_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_annotations(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no queries"):
        read_annotations(tmp_path / "empty.jsonl")
