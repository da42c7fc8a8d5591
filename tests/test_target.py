"""Embedded target: save/load round trip, loading rules, and one real (very small) build that memorizes."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lume_ray.cli import main
from lume_ray.data import load_lume
from lume_ray.model import ModelError, load_model, load_tokenizer
from lume_ray.synth import write_dataset
from lume_ray.target import PRESETS, build_target, tiny_olmo, train_tokenizer


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 4 documents per task: 20 forget + 20 retain rows (Task2 documents carry five questions), 6 non-members,
    # 20 utility questions.
    return write_dataset(tmp_path_factory.mktemp("target") / "data", docs_per_task=4, seed=0)


@pytest.fixture(scope="module")
def built(small_data: Path) -> tuple[Path, dict[str, Any]]:
    out = small_data.parent / "target"
    return out, build_target(out, small_data, preset="test", seed=0, progress=False)


def test_save_load_round_trip_identical_logits(tmp_path: Path, tiny_lume: Path) -> None:
    data = load_lume(tiny_lume)
    tok = train_tokenizer([r.input + " " + r.output for r in data.rows], PRESETS["test"].vocab_size)
    model = tiny_olmo(tok, PRESETS["test"], seed=1).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model(tmp_path)
    ids = torch.tensor([tok(data.forget[0].input)["input_ids"]])
    assert loaded_tok(data.forget[0].input)["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert type(loaded).__name__ == "OlmoForCausalLM" and not loaded.training


def test_missing_model_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such-model"
    with pytest.raises(ModelError, match=str(missing)):
        load_model(missing)
    assert main(["target", "build", str(tmp_path / "t"), "--data", str(tmp_path / "nodata")]) == 2


def test_trust_remote_code_is_off_by_default(tmp_path: Path) -> None:
    for fn in (load_model, load_tokenizer):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False
    # A directory whose config asks for its own Python code: refused unless asked, and the code never runs.
    marker = tmp_path / "remote-code-ran"
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "lume-custom", "architectures": ["CustomLM"],
        "auto_map": {"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomLM"},
    }))
    (tmp_path / "custom.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ModelError, match=str(tmp_path)):
        load_model(tmp_path, with_tokenizer=False)
    assert not marker.exists()


@pytest.mark.slow
def test_tiny_build_memorizes(built: tuple[Path, dict[str, Any]], small_data: Path) -> None:
    out, manifest = built
    mem, mia = manifest["memorization"], manifest["mia"]
    for split in ("forget", "retain"):
        assert mem[split]["sc_rougeL_recall"] >= 0.9, (split, mem[split])
        assert mem[split]["qa_exact_match"] >= 0.8, (split, mem[split])
    assert mia["nonmember_nll"] > mia["member_nll"] + 1.0, mia
    assert manifest["data"]["fingerprint"] == load_lume(small_data).fingerprint()
    assert set(manifest["data"]["files"]) == {"utility.jsonl", "member.jsonl", "nonmember.jsonl"}
    # The measurements are the evaluation's own metrics (evaluate_loaded): every registered metric is recorded, and
    # the manifest's summaries are views of them.
    from lume_ray.evaluate.metrics import METRICS

    metrics = manifest["metrics"]
    assert set(METRICS) <= set(metrics) and metrics["counts"]["rows"] == {
        split: len(load_lume(small_data).split(split)) for split in ("forget", "retain")}
    assert (metrics["mia_auc"], metrics["member_nll"], metrics["nonmember_nll"]) == (
        mia["auc"], mia["member_nll"], mia["nonmember_nll"])
    assert metrics["utility"] == manifest["utility_accuracy"] is not None
    for split in ("forget", "retain"):
        assert mem[split]["by_task"] == {k.split("/", 1)[1]: v for k, v in metrics.items()
                                         if k.startswith(f"{split}/") and v is not None}
    assert mia["auc"] > 0.9  # the loss attack separates members from the unseen non-members
    # A normal HF directory: from_pretrained and the project's loader both read it.
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(out)
    model, tok = load_model(out)
    assert sum(p.numel() for p in hf.parameters()) == manifest["parameters"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    # The saved model reproduces a memorized row with the project's own greedy decoding.
    from lume_ray.model import generate_greedy

    row = next(r for r in load_lume(small_data).forget if r.id.endswith("qa1"))
    assert generate_greedy(model, tok, [row.input], max_new_tokens=16)[0].strip() == row.output


@pytest.mark.slow
def test_rebuild_is_cached(built: tuple[Path, dict[str, Any]], small_data: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    out, manifest = built
    weights = out / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert main(["target", "build", str(out), "--data", str(small_data), "--preset", "test"]) == 0
    assert "cached" in capsys.readouterr().out
    assert weights.stat().st_mtime_ns == stamp
    assert build_target(out, small_data, preset="test", progress=False) == manifest
    # Another seed is another input: not a cache hit (checked without training: a 1-epoch rebuild).
    other = build_target(out.parent / "other", small_data, preset="test", seed=1, epochs=1, progress=False)
    assert other["inputs_hash"] != manifest["inputs_hash"] and other["training"]["epochs_run"] == 1


def test_build_refuses_foreign_directory(tmp_path: Path, small_data: Path) -> None:
    (tmp_path / "keep.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="not a target build"):
        build_target(tmp_path, small_data, preset="test", progress=False)
    assert (tmp_path / "keep.txt").read_text() == "user file"
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        build_target(tmp_path / "t", small_data, preset="huge", progress=False)
