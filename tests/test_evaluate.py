"""Evaluation: batching changes no generation, the Ray Data pipeline equals the one-prompt-at-a-time
reference (float32 batched; any dtype with ``exact``), a memorized target scores high and a random one low,
bad inputs fail with one clear line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lume_ray.cli import main
from lume_ray.config import EvalConfig
from lume_ray.data import DataError, Document, LumeData, load_lume
from lume_ray.evaluate.inputs import EvalError
from lume_ray.evaluate.protocol import TASK_SCORE_NAMES
from lume_ray.evaluate.runner import ROW_COLUMNS, evaluate, evaluate_reference
from lume_ray.model import ModelError
from tests.helpers import memorize, tiny_olmo_on

NONMEMBERS = [
    {"id": "n1", "document": "In the village of Harrow, the potter Wren kept a red gate. Every dawn he fed the geese."},
    {"id": "n2", "document": "Ivo Brand was born on May 5, 1990. His phone number is 555-310-7788. His email is ivo@example.org."},
    {"id": "n3", "document": "Selma Ruud was a geologist who mapped caves in Bergen. She found a lake under the hills in 1971."},
]
UTILITY = [
    {"question": "What color was Ada's door in Velmor?", "choices": ["red", "blue", "green", "black"], "answer": 1},
    {"question": "In which city did Omar Dahl build bridges?", "choices": ["Oslo", "Rome", "Lima", "Cairo"], "answer": 2},
    {"question": "What did Juno sing to on Prell?", "choices": ["her bread", "the sea", "a cat", "the moon"], "answer": 0},
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def eval_data(tiny_lume: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_lume plus the optional files evaluate() picks up: non-members and a utility set."""
    d = tmp_path_factory.mktemp("eval_data")
    for split in ("forget", "retain"):
        shutil.copy(tiny_lume / f"{split}.jsonl", d / f"{split}.jsonl")
    _jsonl(d / "nonmember.jsonl", NONMEMBERS)
    _jsonl(d / "utility.jsonl", UTILITY)
    return d


@pytest.fixture(scope="module")
def memorized(eval_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny OLMo trained full-batch until it reproduces every row and utility answer (~5 s)."""
    from lume_ray.data import join_text
    from lume_ray.model import collate, encode_pair

    data = load_lume(eval_data)
    pairs = [(r.input, r.output) for r in data.rows] + [(u["question"], u["choices"][u["answer"]]) for u in UTILITY]
    model, tok = tiny_olmo_on([join_text(p, c) for p, c in pairs])
    # whole text + eos, nothing masked: members must be low-loss documents, answers must stop
    batch = collate([encode_pair(tok, p, c, add_eos=True) for p, c in pairs], tok.pad_token_id, mask_prompt=False)
    memorize(model, lambda: model(**batch).loss, steps=300)
    out = tmp_path_factory.mktemp("memorized")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _reference_generate(model_dir: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The challenge's scorer: one prompt at a time, pad = eos, new tokens decoded without specials,
    tokenization spaces cleaned up."""
    import torch

    from lume_ray.model import load_model

    model, tok = load_model(model_dir)
    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=tok.eos_token_id)
        text = tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        out.append(tok.clean_up_tokenization(text))  # what transformers 4 did for every tokenizer
    return out


def test_clean_up_spaces_matches_transformers() -> None:
    from transformers import PreTrainedTokenizerBase

    from lume_ray.model import clean_up_spaces

    text = "Hello , world . It 's fine ! Is n't it ? We 're here , they 've gone ; I 'm ' quoted ' ."
    assert clean_up_spaces(text) == "Hello, world. It's fine! Isn't it? We're here, they've gone ; I'm'quoted '."
    assert clean_up_spaces(text) == PreTrainedTokenizerBase.clean_up_tokenization(None, text)  # type: ignore[arg-type]


@pytest.mark.parametrize("which", ["random", pytest.param("memorized", marks=pytest.mark.slow)])
def test_batched_generation_equals_one_at_a_time(which: str, tiny_model: Path, request: pytest.FixtureRequest) -> None:
    from lume_ray.model import generate_greedy, load_model

    model_dir = tiny_model if which == "random" else request.getfixturevalue("memorized")
    data = load_lume(Path(request.getfixturevalue("tiny_lume")))
    prompts = [r.input for r in data.rows]  # 20 prompts of 6..25 tokens: batches need real padding
    model, tok = load_model(model_dir)
    batched = generate_greedy(model, tok, prompts, max_new_tokens=32, batch_size=7)
    assert batched == _reference_generate(model_dir, prompts, 32)
    if which == "memorized":  # stops at eos, so rows in one batch end at different steps
        assert sum(g.strip() == r.output for g, r in zip(batched, data.rows, strict=True)) == 20


def _compare(got: dict[str, Any], ref: dict[str, Any]) -> None:
    for key, value in ref.items():
        if key in ("settings", "seconds"):
            continue
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
        else:
            assert got[key] == value, key


@pytest.mark.ray
def test_ray_pipeline_equals_reference_and_memorized_scores_high(
    memorized: Path, eval_data: Path, ray_local: Any, tmp_path: Path,
) -> None:
    import pandas as pd

    settings = EvalConfig(max_new_tokens=48, batch_size=4, workers=2)
    got = evaluate(memorized, eval_data, settings, out_dir=tmp_path / "ray", progress=False)
    ref = evaluate_reference(memorized, eval_data, settings, out_dir=tmp_path / "ref")

    # the same generations and scores row by row, the same numbers in metrics.json
    rows, ref_rows = pd.read_parquet(tmp_path / "ray" / "rows.parquet"), pd.read_parquet(tmp_path / "ref" / "rows.parquet")
    assert list(rows.columns) == list(ROW_COLUMNS) and len(rows) == 20
    assert rows["generation"].tolist() == ref_rows["generation"].tolist()
    assert rows["score"].tolist() == ref_rows["score"].tolist()
    assert rows["nll"].tolist() == pytest.approx(ref_rows["nll"].tolist(), rel=1e-4)
    _compare(got, ref)
    assert json.loads((tmp_path / "ray" / "metrics.json").read_text()) == got
    assert got["settings"]["runner"] == "ray" and ref["settings"]["runner"] == "reference"

    # memorized: high on both splits, so forgetting is nil and the attack separates members
    for name in TASK_SCORE_NAMES:
        assert got[name] >= 0.9, name
    assert got["retain_score"] >= 0.95 and got["forget_efficacy"] <= 0.05
    assert got["task_aggregate"] <= 0.1  # inverted forget scores near 0
    assert got["mia_auc"] >= 0.9 and got["mia_score"] <= 0.2
    assert got["utility"] == 1.0  # the target memorized question + " " + answer
    assert got["counts"]["members"] == 3 and got["counts"]["nonmembers"] == 3
    assert got["counts"]["utility_questions"] == 3
    assert got["final_score"] == pytest.approx((got["task_aggregate"] + got["mia_score"] + got["utility"]) / 3)


@pytest.mark.ray
def test_exact_ray_equals_reference_in_bfloat16(tiny_model: Path, eval_data: Path, ray_local: Any, tmp_path: Path) -> None:
    """``exact``: every actor scores one item at a time, unpadded, so the distributed evaluation gives the rows
    of the one-prompt-at-a-time loop bit for bit in bfloat16 too (where batching flips greedy tokens). A random
    model babbles every row to max_new_tokens, the case where bfloat16 near-ties show; the utility is scored
    the open-instruct way (next-token letters) to carry picks through the pipeline too."""
    import pandas as pd

    settings = EvalConfig(max_new_tokens=32, batch_size=4, workers=2, dtype="bfloat16", exact=True,
                          utility_style="open-instruct")
    got = evaluate(tiny_model, eval_data, settings, out_dir=tmp_path / "ray", progress=False)
    ref = evaluate_reference(tiny_model, eval_data, settings, out_dir=tmp_path / "ref")
    rows, ref_rows = pd.read_parquet(tmp_path / "ray" / "rows.parquet"), pd.read_parquet(tmp_path / "ref" / "rows.parquet")
    assert rows.equals(ref_rows)  # every generation, score and NLL identical
    assert {k: v for k, v in got.items() if k not in ("settings", "seconds")} == \
        {k: v for k, v in ref.items() if k not in ("settings", "seconds")}
    assert got["settings"]["exact"] and got["settings"]["dtype"] == "bfloat16"
    assert got["counts"]["utility_questions"] == 3 and got["utility"] is not None and got["mia_auc"] is not None


def test_random_model_scores_low(tiny_model: Path, eval_data: Path) -> None:
    res = evaluate_reference(tiny_model, eval_data, EvalConfig(max_new_tokens=24), reference_utility=1.0)
    assert res["retain_score"] <= 0.15 and res["forget_efficacy"] >= 0.85
    assert res["task_aggregate"] == 0.0  # some retain task at 0 zeroes the harmonic mean
    assert 0.0 <= res["mia_auc"] <= 1.0 and res["forget_nll"] > 5.0
    assert res["utility_floor_met"] is (res["utility"] >= 0.75)


@pytest.mark.ray
def test_cli_eval_json(tiny_model: Path, tiny_lume: Path, ray_local: Any, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    out = tmp_path / "out"
    rc = main(["eval", "--model", str(tiny_model), "--data", str(tiny_lume), "--out", str(out), "--json",
               "--max-new-tokens", "4", "--limit", "3", "--batch-size", "2", "--reference-utility", "0.5"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "metrics.json").read_text())
    assert len(pd.read_parquet(out / "rows.parquet")) == 6 and printed["counts"]["rows"] == {"forget": 3, "retain": 3}
    # limit 3 leaves Task2/qa (among others) without rows: null, and said so
    assert printed["forget/Task3/qa"] is None and any("no rows for" in n for n in printed["notes"])
    assert printed["mia_auc"] is None and printed["utility_floor_met"] is None


def test_bad_inputs(tiny_model: Path, tiny_lume: Path, tmp_path: Path) -> None:
    no = EvalConfig()
    # model and tokenizer mismatch: the config embeds fewer tokens than the tokenizer emits
    bad_model = tmp_path / "bad_model"
    shutil.copytree(tiny_model, bad_model)
    config = json.loads((bad_model / "config.json").read_text())
    (bad_model / "config.json").write_text(json.dumps({**config, "vocab_size": 100}))
    with pytest.raises(ModelError, match="do not match"):
        evaluate(bad_model, tiny_lume, no, progress=False)
    with pytest.raises(EvalError, match="no rows to evaluate"):
        evaluate(tiny_model, LumeData((), (), "empty"), no, progress=False)
    with pytest.raises(DataError, match="no forget.jsonl"):
        evaluate(tiny_model, tmp_path, no, progress=False)
    bad_utility = _jsonl(tmp_path / "u.jsonl", [{"question": "q", "choices": ["a", "b", "c"], "answer": 0}])
    with pytest.raises(DataError, match="u.jsonl:1: field 'choices' must be a list of 4 strings"):
        evaluate(tiny_model, tiny_lume, no, utility=bad_utility, progress=False)
    members = [Document("s1", "some text"), Document("b1", "other text")]
    with pytest.raises(EvalError, match="id 'b1' is in both"):
        evaluate(tiny_model, tiny_lume, no, members=members, nonmembers=[Document("b1", "new")], progress=False)
    with pytest.raises(EvalError, match="the text 'other text'"):
        evaluate(tiny_model, tiny_lume, no, members=members, nonmembers=[Document("x9", " other text")], progress=False)
    for bad in ({"workers": 0}, {"mia_k": 0.0}, {"dtype": "int8"}, {"utility_style": "cloze"}, {"limit": 0},
                {"mmlu_shots": -1}, {"mmlu_max_tokens": 0}, {"utility_floor": {"absolute": -0.1}}):
        with pytest.raises(ValueError):
            EvalConfig(**bad)

    assert main(["eval", "--model", str(tmp_path / "nope"), "--data", str(tiny_lume), "--out", str(tmp_path / "o")]) == 2


def test_mmlu_offline_is_a_clear_error(tiny_model: Path, tiny_lume: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lume_ray.cli", "eval", "--model", str(tiny_model), "--data", str(tiny_lume),
         "--utility", "mmlu", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("lume-ray: error: utility 'mmlu': cannot load cais/mmlu")
