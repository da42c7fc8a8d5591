"""Synthetic generator: deterministic per seed, LUME format, the counts and invariants it promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lume_ray.cli import main
from lume_ray.data import documents_of, load_documents, load_lume, load_utility, summarize
from lume_ray.synth import FIRST_F, FIRST_M, LAST, generate, write_dataset

FILES = ("forget.jsonl", "retain.jsonl", "member.jsonl", "nonmember.jsonl", "utility.jsonl", "manifest.json")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synth") / "data", docs_per_task=8, seed=3)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, synth_dir: Path) -> None:
    again = write_dataset(tmp_path / "again", docs_per_task=8, seed=3)
    other = write_dataset(tmp_path / "other", docs_per_task=8, seed=4)
    for name in FILES:
        assert (again / name).read_bytes() == (synth_dir / name).read_bytes(), name
    for name in ("forget.jsonl", "retain.jsonl", "nonmember.jsonl", "utility.jsonl"):
        assert (other / name).read_bytes() != (synth_dir / name).read_bytes(), name


def test_loads_with_counts(synth_dir: Path) -> None:
    data = load_lume(synth_dir)
    counts = {(t["split"], t["task"], t["kind"]): (t["rows"], t["documents"]) for t in summarize(data)}
    for split in ("forget", "retain"):  # 8 documents per task, split 1:1
        assert counts[(split, "Task1", "sc")] == (4, 4) and counts[(split, "Task1", "qa")] == (4, 4)
        assert counts[(split, "Task2", "sc")] == (4, 4) and counts[(split, "Task2", "qa")] == (20, 4)
        assert counts[(split, "Task3", "sc")] == (4, 4) and counts[(split, "Task3", "qa")] == (4, 4)
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["counts"]["forget_rows"] == len(data.forget) == 40
    for r in data.rows:  # LUME format: outputs carry no leading space, inputs no trailing one
        assert r.output and r.output == r.output.lstrip() and r.input == r.input.rstrip()


def test_task2_questions_answered_by_the_document(synth_dir: Path) -> None:
    data = load_lume(synth_dir)
    docs = {d.id: d.document for d in documents_of(data.rows)}
    bios = [r for r in data.rows if r.task == "Task2" and r.kind == "qa"]
    assert {r.id[-3:] for r in bios} == {f"qa{i}" for i in range(5)}
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"]
    for r in bios:
        doc, digits = docs[r.doc_id], re.sub(r"\D", "", docs[r.doc_id])
        q = r.id[-3:]
        if q == "qa0":
            year, month, day = r.output.split("-")
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.output)
            assert f"{months[int(month) - 1]} {int(day)}, {year}" in doc
        elif q == "qa1":
            assert re.fullmatch(r"900\d{6}", r.output) and r.output in digits
            assert f"{r.output[:3]}-{r.output[3:5]}-{r.output[5:]}" in doc
        elif q == "qa2":
            assert re.fullmatch(r"\d{10}", r.output)
            assert f"{r.output[:3]}-{r.output[3:6]}-{r.output[6:]}" in doc
        elif q == "qa3":
            assert "@" in r.output and r.output in doc
        else:
            assert r.output.endswith(".") and r.output in doc
    for r in data.rows:  # Task1/Task3 answers are in their document too
        if r.kind == "qa" and r.task != "Task2":
            assert r.output in docs[r.doc_id], r.id


def test_members_are_forget_documents_nonmembers_unseen(synth_dir: Path) -> None:
    data = load_lume(synth_dir)
    member, nonmember = load_documents(synth_dir / "member.jsonl"), load_documents(synth_dir / "nonmember.jsonl")
    assert [(d.id, d.document) for d in member] == [(d.id, d.document) for d in documents_of(data.forget)]
    trained = {r.doc_id for r in data.rows}
    assert not {d.id for d in nonmember} & trained
    assert not {d.document for d in nonmember} & {d.document for d in documents_of(data.rows)}
    assert len(nonmember) == 12  # docs_per_task // 2 per task
    assert {d.id.split("-")[1] for d in nonmember} == {"t1", "t2", "t3"}
    # Nothing a non-member says about a person appears in training: their names are new.
    names = {f"{a} {b}" for d in nonmember for a, b in re.findall(r"([A-Z][a-z]+) ([A-Z][a-z]+)", d.document)
             if a in FIRST_F + FIRST_M and b in LAST}
    train_text = " ".join(r.input + " " + r.output for r in data.rows)
    assert len(names) == 8 and not any(n in train_text for n in names)


def test_utility_shape(synth_dir: Path) -> None:
    items = load_utility(synth_dir / "utility.jsonl")
    assert len(items) == 20 and len({c.question for c in items}) == 20
    for c in items:
        assert len(c.choices) == 4 and len(set(c.choices)) == 4 and 0 <= c.answer < 4 and c.subject
    assert len({c.answer for c in items}) > 1  # the answer position is not constant
    sums = [c for c in items if " plus " in c.question]
    for c in sums:
        a, b = (int(x) for x in re.findall(r"\d+", c.question))
        assert c.choices[c.answer] == str(a + b)


def test_documents_vary() -> None:
    ds = generate(docs_per_task=20, seed=0)
    sc = [r for r in ds.forget + ds.retain if r["id"].endswith("sc1")]
    assert len({r["input"] for r in sc}) == len(sc)
    assert len({r["input"].split(" ")[0] for r in sc if r["task"] == "Task1"}) > 3  # several openings


def test_cli_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "synth", str(tmp_path / "d"), "--docs-per-task", "2", "--seed", "1"]) == 0
    assert "forget 10 rows / 3 documents" in capsys.readouterr().out
    assert main(["data", "synth", str(tmp_path / "d"), "--docs-per-task", "4"]) == 0  # replaces its own output
    assert len(load_lume(tmp_path / "d").forget) == 20
    assert main(["data", "synth", str(tmp_path / "x"), "--docs-per-task", "3"]) == 2
    assert "--docs-per-task must be an even number" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["data", "synth", str(foreign)]) == 2
    assert "not written by `lume-ray data synth`" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
