"""Data layer: the real LUME files load exactly; every kind of bad input fails with a clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lume_ray.cli import main
from lume_ray.data import DataError, load_documents, load_lume, load_utility, summarize
from tests.helpers import SHARED_LUME, write_tiny_lume


@pytest.mark.skipif(not SHARED_LUME.is_dir(), reason="../shared/lume not present")
def test_real_lume_counts() -> None:
    data = load_lume(SHARED_LUME)
    assert len(data.forget) == 2732 and len(data.retain) == 2734
    assert len({r.doc_id for r in data.forget}) == 866
    assert len({r.doc_id for r in data.retain}) == 867
    counts = {(t["split"], t["task"], t["kind"]): t["rows"] for t in summarize(data)}
    assert counts[("forget", "Task1", "sc")] == 243 and counts[("forget", "Task2", "qa")] == 1250
    assert counts[("forget", "Task3", "sc")] == 373 and counts[("retain", "Task3", "qa")] == 371
    assert counts[("retain", "Task1", "sc")] == 246 and counts[("retain", "Task2", "sc")] == 250
    # Task2 documents carry five questions, the others one.
    t2 = [r for r in data.forget if r.task == "Task2" and r.kind == "qa"]
    assert {r.id[-3:] for r in t2} == {"qa0", "qa1", "qa2", "qa3", "qa4"}


def test_tiny_lume_roundtrip_and_parquet(tmp_path: Path) -> None:
    d = write_tiny_lume(tmp_path / "jsonl")
    data = load_lume(d)
    assert len(data.forget) == 10 and data.forget[2].kind == "sc" and data.forget[2].doc_id == "b1"
    import pandas as pd

    pq = tmp_path / "pq"
    pq.mkdir()
    for split in ("forget", "retain"):
        pd.read_json(d / f"{split}.jsonl", lines=True, dtype=False).to_parquet(pq / f"{split}.parquet")
    assert load_lume(pq).rows == data.rows


def _write(d: Path, split: str, lines: list[str]) -> None:
    (d / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines))


GOOD = json.dumps({"id": "d1sc1", "input": "a", "output": "b", "task": "Task1"})


@pytest.mark.parametrize(
    ("forget_lines", "retain_lines", "expected"),
    [
        (["{not json"], [GOOD], r"forget\.jsonl:1: malformed JSON"),
        ([json.dumps({"id": "d1sc1", "input": "a", "task": "Task1"})], [GOOD], r"forget\.jsonl:1: missing field 'output'"),
        ([json.dumps({"id": "d1sc1", "input": "a", "output": "b", "task": "Task9"})], [GOOD],
         r"forget\.jsonl:1: field 'task': unknown task 'Task9' \(valid: Task1, Task2, Task3\)"),
        ([json.dumps({"id": "d1xx1", "input": "a", "output": "b", "task": "Task1"})], [GOOD],
         r"forget\.jsonl:1: field 'id': 'd1xx1' does not end in sc<N> or qa<N>"),
        ([], [GOOD], r"split 'forget' is empty"),
        ([GOOD], [GOOD], r"document 'd1' is in both forget and retain"),
        ([GOOD, GOOD], [json.dumps({"id": "d2sc1", "input": "a", "output": "b", "task": "Task1"})],
         r"forget\.jsonl:2: field 'id': duplicate id 'd1sc1'"),
    ],
)
def test_bad_input_errors(tmp_path: Path, forget_lines, retain_lines, expected: str) -> None:
    _write(tmp_path, "forget", forget_lines)
    _write(tmp_path, "retain", retain_lines)
    with pytest.raises(DataError, match=expected):
        load_lume(tmp_path)


def test_cli_inspect_json_and_error_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_tiny_lume(tmp_path / "ok")
    assert main(["data", "inspect", str(d), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    forget_all = next(c for c in out["counts"] if c["split"] == "forget" and c["task"] == "all")
    assert forget_all == {"split": "forget", "task": "all", "kind": "all", "rows": 10, "documents": 3}
    bad = tmp_path / "bad"
    bad.mkdir()
    _write(bad, "forget", ["{oops"])
    _write(bad, "retain", [GOOD])
    assert main(["data", "inspect", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lume-ray: error:") and "forget.jsonl:1" in err and "\n" not in err


def test_documents_and_utility_validation(tmp_path: Path) -> None:
    docs = tmp_path / "m.jsonl"
    docs.write_text(json.dumps({"id": "a", "document": "text"}) + "\n")
    assert load_documents(docs)[0].document == "text"
    util = tmp_path / "u.jsonl"
    util.write_text(json.dumps({"question": "q", "choices": ["a", "b", "c", "d"], "answer": 2}) + "\n")
    assert load_utility(util)[0].answer == 2
    util.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0}) + "\n")
    with pytest.raises(DataError, match=r"u\.jsonl:1: field 'choices' must be a list of 4 strings"):
        load_utility(util)
    util.write_text(json.dumps({"question": "q", "choices": ["a", "b", "c", "d"], "answer": 7}) + "\n")
    with pytest.raises(DataError, match=r"field 'answer' must be an integer 0..3"):
        load_utility(util)
