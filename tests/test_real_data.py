"""The real LUME data and the challenge's MIA files (``../shared/lume``, skipped when absent).

- The MIA files' format: 150 members that are whole Task 3 forget documents (``document == input + " " +
  output`` of the document's sc row, the id the document's id), 150 non-members the data never mentions.
- A small slice (a document of every task in both splits, three members, three non-members, laid out as the
  challenge ships them: ``DATA/mia/member.jsonl`` + ``DATA/mia/nonmember.jsonl``) through the evaluation with
  a tiny model: the MIA files are picked up without flags, every document is scored whole, MIA and the final
  score come out (in process, and through ``lume-ray eval`` on Ray).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import SHARED_LUME, tiny_olmo_on

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not (SHARED_LUME / "mia" / "member.jsonl").is_file(),
                                 reason=f"no real LUME data with MIA files at {SHARED_LUME}")]

UTILITY = [{"question": "What is the capital of Norway?", "choices": ["Oslo", "Lima", "Rome", "Cairo"], "answer": 0},
           {"question": "How many legs has a spider?", "choices": ["six", "eight", "ten", "four"], "answer": 1}]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _doc(row_id: str) -> str:
    return re.sub(r"(sc|qa)\d+$", "", row_id)


def test_mia_files_are_the_challenges() -> None:
    from lume_ray.data import load_documents, load_lume

    members, nonmembers = (load_documents(SHARED_LUME / "mia" / f"{n}.jsonl") for n in ("member", "nonmember"))
    assert len(members) == 150 and len(nonmembers) == 150
    data = load_lume(SHARED_LUME)
    sc = {r.doc_id: r for r in data.forget if r.kind == "sc"}
    for d in members:  # whole Task 3 forget documents, under their document id
        assert sc[d.id].task == "Task3" and d.document == sc[d.id].input + " " + sc[d.id].output
    seen = {r.doc_id for r in data.rows}
    assert not {d.id for d in nonmembers} & seen
    texts = [r.input for r in data.rows]
    assert not any(d.document[:200] in t or t[:200] in d.document for d in nonmembers for t in texts)


@pytest.fixture(scope="module")
def real_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per split and task one document's rows (Task2: sc + five qa; forget Task3: the first member's), the first
    three members and three non-members as the challenge ships them (extra fields and all), a utility file."""
    out = tmp_path_factory.mktemp("real_slice")
    member_lines = (SHARED_LUME / "mia" / "member.jsonl").read_text(encoding="utf-8").splitlines()
    for split in ("forget", "retain"):
        rows = _jsonl(SHARED_LUME / f"{split}.jsonl")
        docs = {task: next(_doc(r["id"]) for r in rows if r["task"] == task) for task in ("Task1", "Task2", "Task3")}
        if split == "forget":  # the slice's Task 3 forget document: the first member
            docs["Task3"] = json.loads(member_lines[0])["id"]
        picked = [r for r in rows if _doc(r["id"]) in docs.values()]
        assert {r["task"] for r in picked} == {"Task1", "Task2", "Task3"} and len(picked) == 10
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in picked))
    (out / "mia").mkdir()
    (out / "mia" / "member.jsonl").write_text("\n".join(member_lines[:3]) + "\n")
    nonmember_lines = (SHARED_LUME / "mia" / "nonmember.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "mia" / "nonmember.jsonl").write_text("\n".join(nonmember_lines[:3]) + "\n")
    (out / "utility.jsonl").write_text("".join(json.dumps(u) + "\n" for u in UTILITY))
    return out


@pytest.fixture(scope="module")
def real_model(real_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny OLMo whose byte-level BPE is trained on the slice (documents of ~1000 characters stay
    within its 512 positions)."""
    from lume_ray.data import join_text, load_documents, load_lume
    from lume_ray.model import save_model, save_tokenizer

    data = load_lume(real_slice)
    docs = [d.document for n in ("member", "nonmember") for d in load_documents(real_slice / "mia" / f"{n}.jsonl")]
    model, tok = tiny_olmo_on([join_text(r.input, r.output) for r in data.rows] + docs, vocab_size=1500)
    out = tmp_path_factory.mktemp("real_model")
    save_model(model, out)
    save_tokenizer(tok, out)
    return out


def _check(res: dict[str, Any]) -> None:
    assert res["counts"]["members"] == 3 and res["counts"]["nonmembers"] == 3
    assert not any(n.startswith("members:") for n in res["notes"])  # the files, not the rebuilt forget documents
    assert res["mia_auc"] is not None and 0.0 <= res["mia_auc"] <= 1.0
    assert res["mia_score"] == pytest.approx(1 - abs(res["mia_auc"] - 0.5) * 2)
    for name in ("task_aggregate", "utility", "final_score"):
        assert res[name] is not None, name
    assert res["final_score"] == pytest.approx((res["task_aggregate"] + res["mia_score"] + res["utility"]) / 3)
    assert all(v is not None for k, v in res.items() if k.count("/") == 2)  # all 12 task scores have rows


def test_slice_in_process(real_slice: Path, real_model: Path, tmp_path: Path) -> None:
    from lume_ray.config import EvalConfig
    from lume_ray.data import load_documents
    from lume_ray.evaluate.inputs import resolve_inputs
    from lume_ray.evaluate.runner import evaluate_reference
    from lume_ray.evaluate.scoring import encode_item
    from lume_ray.model import load_tokenizer

    settings = EvalConfig(max_new_tokens=4)
    res = evaluate_reference(real_model, real_slice, settings, out_dir=tmp_path)
    _check(res)
    # documents are scored whole: tokenizer(document), special tokens as it adds them, nothing masked
    tok = load_tokenizer(str(real_model))
    inputs = resolve_inputs(real_slice, settings, None, None, None, tok)
    members = load_documents(real_slice / "mia" / "member.jsonl")
    assert inputs.members == members
    doc_items = [it for it in inputs.items if it["kind"] == "doc"]
    assert len(doc_items) == 6
    for it in doc_items:
        enc = encode_item(tok, it)
        assert enc.input_ids == tok(it["completion"])["input_ids"] and enc.n_prompt == 0
        assert len(enc.input_ids) <= 512  # within the tiny model's positions: nothing truncated


@pytest.mark.ray
def test_slice_through_the_cli(real_slice: Path, real_model: Path, ray_local: Any, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from lume_ray.cli import main

    out = tmp_path / "out"
    assert main(["eval", "--model", str(real_model), "--data", str(real_slice), "--out", str(out), "--json",
                 "--max-new-tokens", "4", "--batch-size", "8"]) == 0
    stdout = capsys.readouterr().out  # (tests/test_evaluate.py checks that --json prints nothing else)
    printed = json.loads(stdout[stdout.index("{"):])
    assert printed == json.loads((out / "metrics.json").read_text())
    _check(printed)
